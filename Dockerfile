# syntax=docker/dockerfile:1
# Build: the same `cargo build --release --locked` that CI runs.
FROM docker.io/library/rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pullsecret-injector \
 && install -D -m 0755 target/release/pullsecret-injector /out/pullsecret-injector

# Run: glibc and CA roots only, no shell, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/pullsecret-injector /usr/local/bin/pullsecret-injector
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/pullsecret-injector", "serve"]
