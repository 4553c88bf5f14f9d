# Build: `cargo build --profile dist --locked`, the shipped binary's profile that CI builds too.
# The build stage runs on the build machine's own platform and cross-compiles for the target
# (linux/amd64 or linux/arm64), so an arm64 image needs no emulation:
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/pullsecret-injector:0.1.0 --push .
#
# docker.io/library/rust:1.89-bookworm
FROM --platform=$BUILDPLATFORM docker.io/library/rust:1.89-bookworm@sha256:948f9b08a66e7fe01b03a98ef1c7568292e07ec2e4fe90d88c07bb14563c84ff AS build
ARG TARGETARCH
# Debian's triplet-named gcc links for each target (and builds ring's C); on the build machine's own
# architecture it is the native gcc the image already has.
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) target=x86_64-unknown-linux-gnu; gcc=gcc-x86-64-linux-gnu ;; \
      arm64) target=aarch64-unknown-linux-gnu; gcc=gcc-aarch64-linux-gnu ;; \
      *) echo "unsupported TARGETARCH '$TARGETARCH': build for linux/amd64 or linux/arm64" >&2; exit 1 ;; \
    esac; \
    if [ "$TARGETARCH" != "$(dpkg --print-architecture)" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends "$gcc" "libc6-dev-$TARGETARCH-cross"; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    rustup target add "$target"; \
    echo "$target" > /rust-target
WORKDIR /src

# Dependencies first, from the manifest and lock file alone with stub targets: this layer is reused
# until Cargo.toml or Cargo.lock changes, so a source change rebuilds only this crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/admission.rs \
 && cargo build --profile dist --locked --target "$(cat /rust-target)" --bin pullsecret-injector \
 && rm -rf src

# Then the real source. Its files may be older than the stub's build, so they are touched for cargo
# to see them as changed.
COPY src ./src
RUN find src -name '*.rs' -exec touch {} + \
 && cargo build --profile dist --locked --target "$(cat /rust-target)" --bin pullsecret-injector \
 && install -D -m 0755 "target/$(cat /rust-target)/dist/pullsecret-injector" /out/pullsecret-injector

# Run: glibc and CA roots only, no shell, non-root. Same Debian release (glibc) as the build stage.
# gcr.io/distroless/cc-debian12:nonroot
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /out/pullsecret-injector /usr/local/bin/pullsecret-injector
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/pullsecret-injector", "serve"]
