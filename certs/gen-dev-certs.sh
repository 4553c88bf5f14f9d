#!/usr/bin/env bash
# Makes a development CA and a serving certificate with openssl, for localhost/127.0.0.1 and the
# in-cluster Service names. Same output as `pullsecret-injector dev-certs` (which needs no openssl).
#   certs/gen-dev-certs.sh [OUT_DIR] [SERVICE] [NAMESPACE]
set -euo pipefail
out="${1:-certs/dev}"; service="${2:-pullsecret-injector}"; namespace="${3:-pullsecret-injector}"
mkdir -p "$out"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/CN=pullsecret-injector dev CA" -keyout "$tmp/ca.key" -out "$out/ca.crt" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
cat > "$tmp/leaf.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1,DNS:${service},DNS:${service}.${namespace},DNS:${service}.${namespace}.svc,DNS:${service}.${namespace}.svc.cluster.local
EXT
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=${service}.${namespace}.svc" \
  -keyout "$out/tls.key" -out "$tmp/leaf.csr" 2>/dev/null
openssl x509 -req -in "$tmp/leaf.csr" -CA "$out/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial -days 365 \
  -extfile "$tmp/leaf.ext" -out "$out/tls.crt" 2>/dev/null
chmod 600 "$out/tls.key"
echo "wrote $out/ca.crt, $out/tls.crt, $out/tls.key"
