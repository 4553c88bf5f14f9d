# Sourced by benches/load.sh (not run): a scratch directory with
# cleanup, free ports, the inputs a webhook needs (dev certificates, a service-account key made
# now, a config with a gcpJsonKey credential), the fake API and the webhook processes.
#
# The sourcing script sets HARNESS (its name, for messages) and EX (the examples directory), and
# runs from the repository root.

TMP=$(mktemp -d "${TMPDIR:-/tmp}/psi-$HARNESS.XXXXXX")
PIDS=()
harness_cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap harness_cleanup EXIT
trap 'exit 130' INT TERM

# A port nothing listens on, other than the ports given.
free_port() { # [taken-port...]
  local port taken
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 20000))
    for taken in "$@"; do [ "$port" = "$taken" ] && continue 2; done
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "$HARNESS: no free port found" >&2
  return 1
}

# Certificates from `binary dev-certs`, the key and the config, all under $TMP.
write_inputs() { # binary
  "$1" dev-certs --out "$TMP/certs" >/dev/null
  mkdir -p "$TMP/credentials" "$TMP/config"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/sa.pem" 2>/dev/null
  local private_key
  private_key=$(awk '{printf "%s\\n", $0}' "$TMP/sa.pem")
  cat >"$TMP/credentials/key.json" <<EOF
{
  "type": "service_account",
  "project_id": "acme-prod",
  "private_key_id": "0123456789abcdef0123456789abcdef01234567",
  "private_key": "$private_key",
  "client_email": "puller@acme-prod.iam.gserviceaccount.com",
  "client_id": "104",
  "auth_uri": "https://accounts.google.com/o/oauth2/auth",
  "token_uri": "https://oauth2.googleapis.com/token"
}
EOF
  cat >"$TMP/config/config.yaml" <<EOF
registries:
  - name: gcp
    preset: gcp
    secretName: gcr-pull
    credentials:
      gcpJsonKey: { file: $TMP/credentials/key.json }
skipNamespaces: [kube-system, kube-node-lease]
# The load test talks to this machine only: no registry check of the preset's real hosts.
healthCheck: { enabled: false }
provisioning:
  budget: 2s
EOF
}

# examples/fake_api_server with a kubeconfig in $TMP; sets FAKE_PID and STATS_URL. The arguments are
# the namespaces that exist from the start (Secrets are only written into existing namespaces).
start_fake_api() { # [namespace...]
  local ns_args=() ns
  for ns in "$@"; do ns_args+=(--namespace "$ns"); done
  "$EX/fake_api_server" --kubeconfig "$TMP/kubeconfig" "${ns_args[@]}" gcr-pull >"$TMP/fake.log" 2>&1 &
  FAKE_PID=$!
  PIDS+=("$FAKE_PID")
  for _ in $(seq 1 100); do grep -q '^STATS_URL=' "$TMP/fake.log" 2>/dev/null && break; sleep 0.1; done
  STATS_URL=$(sed -n 's/^STATS_URL=//p' "$TMP/fake.log")
  [ -n "$STATS_URL" ] || { echo "$HARNESS: fake API did not start:" >&2; cat "$TMP/fake.log" >&2; exit 1; }
}

# `binary serve` against the fake API, in this shell (so that cleanup waits for it); its pid is $!.
# SERVER_WRAPPER, if set, is a command line (split at spaces) that runs the server, e.g. valgrind.
start_webhook() { # binary port log-file [RUST_LOG]
  # shellcheck disable=SC2086
  env -u KUBERNETES_SERVICE_HOST -u KUBERNETES_SERVICE_PORT KUBECONFIG="$TMP/kubeconfig" RUST_LOG="${4:-info}" \
    ${SERVER_WRAPPER:-} "$1" serve --config "$TMP/config/config.yaml" --tls-dir "$TMP/certs" --listen "127.0.0.1:$2" \
    >"$3" 2>&1 &
  PIDS+=($!)
}

# examples/noop_webhook on the same certificates, in this shell; its pid is $!.
start_noop() { # port log-file
  # shellcheck disable=SC2086
  ${SERVER_WRAPPER:-} "$EX/noop_webhook" --tls-dir "$TMP/certs" --listen "127.0.0.1:$1" >"$2" 2>&1 &
  PIDS+=($!)
}

# "utime stime" of a process in clock ticks: fields 14 and 15 of /proc/<pid>/stat, counted after
# the command name, which may hold spaces.
cpu_ticks_split() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }
# Their sum.
cpu_ticks() { cpu_ticks_split "$1" | awk '{print $1 + $2}'; }
CLK_TCK=$(getconf CLK_TCK)

# Waits until https://127.0.0.1:<port><path> answers; shows the logs and exits otherwise.
wait_https() { # port path log-file...
  local port=$1 path=$2
  shift 2
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null --cacert "$TMP/certs/ca.crt" "https://127.0.0.1:$port$path"; then return 0; fi
    sleep 0.1
  done
  echo "$HARNESS: nothing answers on 127.0.0.1:$port" >&2
  cat "$@" >&2
  exit 1
}
