#!/usr/bin/env bash
# The test suite, with what it needs beyond Rust: the registry-check tests run Debian's
# docker-registry (the CNCF distribution registry) with htpasswd auth, whose bcrypt lines come from
# apache2-utils' htpasswd. Installs them when missing (apt-get, as root or through sudo), then runs
# `cargo test --locked` with any extra arguments: `bash tests/run.sh --test registry_health`.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
if [ ${#missing[@]} -gt 0 ]; then
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo)
  if command -v apt-get >/dev/null 2>&1 && { [ ${#as_root[@]} -eq 0 ] || command -v sudo >/dev/null 2>&1; }; then
    echo "tests/run.sh: installing ${missing[*]}" >&2
    "${as_root[@]}" apt-get update
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  else
    echo "tests/run.sh: the registry-check tests need ${missing[*]} (Debian and Ubuntu packages); install them and run again" >&2
    exit 1
  fi
fi

exec cargo test --locked "$@"
