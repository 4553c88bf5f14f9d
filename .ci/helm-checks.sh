#!/usr/bin/env bash
# Checks for the Helm chart charts/pullsecret-injector. Run from the repository root:
#
#   bash .ci/helm-checks.sh                 # run every check
#   UPDATE_GOLDEN=1 bash .ci/helm-checks.sh # rewrite tests/fixtures/chart/<mode>.yaml from the chart
#
# What it checks (each line of output is one check; the last line is "helm-checks: N passed, M failed"):
#   1. helm lint --strict, once per certificate mode (helm = the default values + a dummy key; every
#      mode names an image), and NOTES.txt renders (helm install --dry-run=client) with the
#      how-to-check instructions.
#   2. helm template per mode (fixed release "psi", namespace "pullsecret-injector"), generated
#      certificate material (tls.crt / tls.key / ca.crt / caBundle) replaced by a fixed placeholder,
#      compared with the goldens tests/fixtures/chart/<mode>.yaml (tests/chart_wiring.rs reads them).
#      Rendering twice must give the same normalised output (nothing random left unmasked).
#   3. helm mode reuses the TLS Secret of a previous release through `lookup` (rendered with
#      --dry-run=server against a local fake API server that holds such a Secret), and generates a
#      new one when the stored Secret is incomplete.
#   4. Bad values fail `helm template` with a message that says what is wrong; so do the default values
#      without image.repository (no image is published), for `helm install` too.
#   5. The rendered manifests are valid Kubernetes objects, without a cluster:
#      a. `kubectl apply --dry-run=client --validate=false` against a loopback fake API server that
#         only answers discovery (so kubectl can build its REST mappings: every apiVersion/kind must
#         exist, with the right scope) and 404 for every object. It must send no write request.
#         Why not kubectl's own schema validation: kubectl validates client-side only with the
#         server's OpenAPI v2 document, which it downloads as protobuf from /openapi/v2 and which
#         exists nowhere offline; --validate=false is the only way kubectl runs without an API
#         server's schema, so the schema part is done by (b).
#      b. Strict JSON-schema validation (unknown fields are errors) of every built-in object against
#         the Kubernetes 1.30 (the chart's kubeVersion floor) and 1.33 schemas shipped in the PyPI
#         package kubernetes-validate (installed in a cached venv). The CRD kinds (cert-manager
#         Issuer/Certificate, prometheus-operator ServiceMonitor) have no schema offline: they are
#         checked against strict hand-written subsets of their CRDs (the fields this chart uses).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -f ../shared/tools/k8s-tools.sh ]; then
  echo "helm-checks: ../shared/tools/k8s-tools.sh not found (run from the repository root, with shared/ beside it)" >&2
  exit 1
fi
TOOLS_BIN="$(bash ../shared/tools/k8s-tools.sh)"
export PATH="$TOOLS_BIN:$PATH"

CHART=charts/pullsecret-injector
FIXTURES=tests/fixtures/chart
VALUES=$FIXTURES/values
RELEASE=psi
NAMESPACE=pullsecret-injector
MODES=(helm certManager existing federation)
# base64 of "normalised by .ci/helm-checks.sh": still valid base64, so the goldens parse as Secrets.
PLACEHOLDER=bm9ybWFsaXNlZCBieSAuY2kvaGVsbS1jaGVja3Muc2g=
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/pullsecret-injector-ci"
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"

TMP="$(mktemp -d)"
FAKE_PID=""
cleanup() {
  if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
# Keep helm away from the user's repositories, plugins and registry logins.
export HELM_CONFIG_HOME="$TMP/helm/config" HELM_CACHE_HOME="$TMP/helm/cache" HELM_DATA_HOME="$TMP/helm/data"

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "ok   - $1"; }
fail() {
  FAILED=$((FAILED + 1)); echo "FAIL - $1"
  if [ -n "${2:-}" ] && [ -s "$2" ]; then sed 's/^/       | /' "$2" | head -n 80; fi
}

# No image is published: every render names one (a documentation registry, never pulled).
IMAGE_ARGS="--set image.repository=registry.example.com/pullsecret-injector"
# Extra helm arguments of each certificate mode.
mode_args() {
  case "$1" in
    helm) echo "$IMAGE_ARGS --set-file registries[0].gcpJsonKey.value=$VALUES/dummy-key.json" ;;
    certManager) echo "$IMAGE_ARGS -f $VALUES/certManager.yaml" ;;
    existing) echo "$IMAGE_ARGS -f $VALUES/existing.yaml" ;;
    federation) echo "$IMAGE_ARGS -f $VALUES/federation.yaml" ;;
    *) echo "unknown mode $1" >&2; return 1 ;;
  esac
}

render() { # render MODE OUT [extra helm args...]
  local mode=$1 out=$2; shift 2
  # shellcheck disable=SC2046
  helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" $(mode_args "$mode") "$@" >"$out"
}

normalise() { # replace generated certificate material with the placeholder
  sed -E "s#^([[:space:]]*(tls\\.crt|tls\\.key|ca\\.crt|caBundle):[[:space:]]*)[^[:space:]].*\$#\\1${PLACEHOLDER}#" "$1"
}

# ---------------------------------------------------------------------------------------------
# 1. helm lint --strict
for mode in "${MODES[@]}"; do
  # shellcheck disable=SC2046
  if helm lint --strict "$CHART" --namespace "$NAMESPACE" $(mode_args "$mode") >"$TMP/lint.log" 2>&1; then
    pass "helm lint --strict ($mode)"
  else
    fail "helm lint --strict ($mode)" "$TMP/lint.log"
  fi
done

# NOTES.txt (helm template does not render it): it must render and tell how to check the result.
for mode in "${MODES[@]}"; do
  # shellcheck disable=SC2046
  if helm install "$RELEASE" "$CHART" --dry-run=client --namespace "$NAMESPACE" $(mode_args "$mode") \
    >"$TMP/notes.log" 2>&1 \
    && grep -q "kubectl -n psi-smoke-test get secret gcr-pull" "$TMP/notes.log" \
    && grep -q "admission warning" "$TMP/notes.log"; then
    pass "NOTES.txt renders and explains how to check the injection ($mode)"
  else
    fail "NOTES.txt renders and explains how to check the injection ($mode)" "$TMP/notes.log"
  fi
  # preset gcp is shown as the hosts it stands for (the certManager values add one more).
  if [ "$mode" = certManager ]; then
    want='  - gcp: Secret "gcr-pull" for images on gcr.io, *.gcr.io, *-docker.pkg.dev, docker.*.rep.pkg.dev, europe-west4-docker.pkg.dev (preset gcp + hosts)'
  else
    want='  - gcp: Secret "gcr-pull" for images on gcr.io, *.gcr.io, *-docker.pkg.dev, docker.*.rep.pkg.dev (preset gcp)'
  fi
  if grep -qxF -- "$want" "$TMP/notes.log"; then
    pass "NOTES.txt names the hosts of preset gcp ($mode)"
  else
    echo "no line: $want" >>"$TMP/notes.log"
    fail "NOTES.txt names the hosts of preset gcp ($mode)" "$TMP/notes.log"
  fi
done

# ---------------------------------------------------------------------------------------------
# 2. goldens
for mode in "${MODES[@]}"; do
  golden="$FIXTURES/$mode.yaml"
  if ! render "$mode" "$TMP/$mode.raw.yaml" 2>"$TMP/render.log"; then
    fail "helm template ($mode)" "$TMP/render.log"
    continue
  fi
  normalise "$TMP/$mode.raw.yaml" >"$TMP/$mode.yaml"
  if [ "${UPDATE_GOLDEN:-}" = "1" ]; then
    cp "$TMP/$mode.yaml" "$golden"
    pass "golden $golden rewritten (UPDATE_GOLDEN=1)"
  elif [ ! -f "$golden" ]; then
    fail "golden $golden is missing (run UPDATE_GOLDEN=1 bash .ci/helm-checks.sh)"
  elif diff -u "$golden" "$TMP/$mode.yaml" >"$TMP/diff.log"; then
    pass "helm template ($mode) matches $golden"
  else
    fail "helm template ($mode) differs from $golden (if intended: UPDATE_GOLDEN=1 bash .ci/helm-checks.sh)" "$TMP/diff.log"
  fi
done

if render helm "$TMP/again.raw.yaml" 2>"$TMP/render.log" && normalise "$TMP/again.raw.yaml" >"$TMP/again.yaml" \
  && [ -f "$TMP/helm.yaml" ] && diff -u "$TMP/helm.yaml" "$TMP/again.yaml" >"$TMP/diff.log"; then
  pass "helm template is deterministic once certificate material is normalised"
else
  fail "helm template is deterministic once certificate material is normalised" "$TMP/diff.log"
fi

# The ValidatingAdmissionPolicy is on by default (in every golden) and can be turned off.
if render helm "$TMP/nopolicy.yaml" --set admissionPolicy.enabled=false 2>"$TMP/render.log" \
  && ! grep -qE '^kind: ValidatingAdmissionPolicy(Binding)?$' "$TMP/nopolicy.yaml" \
  && [ "$(grep -cE '^kind: ValidatingAdmissionPolicy(Binding)?$' "$TMP/helm.raw.yaml")" = 2 ]; then
  pass "admissionPolicy.enabled=false leaves out the ValidatingAdmissionPolicy and its binding"
else
  fail "admissionPolicy.enabled=false leaves out the ValidatingAdmissionPolicy and its binding" "$TMP/render.log"
fi

# One replica: no PodDisruptionBudget, which would block every node drain (minAvailable 1) or protect
# nothing; the golden with three replicas has one.
if render helm "$TMP/single.yaml" --set replicaCount=1 2>"$TMP/render.log" \
  && ! grep -qE '^kind: PodDisruptionBudget$' "$TMP/single.yaml" \
  && grep -qE '^kind: PodDisruptionBudget$' "$TMP/existing.raw.yaml"; then
  pass "replicaCount=1 renders no PodDisruptionBudget (node drains are not blocked)"
else
  fail "replicaCount=1 renders no PodDisruptionBudget (node drains are not blocked)" "$TMP/render.log"
fi

# ---------------------------------------------------------------------------------------------
# Fake API server (loopback only) for sections 3 and 5a. It answers discovery for the kinds below
# (Kubernetes 1.33 built-ins, plus the cert-manager and prometheus-operator CRDs), GET of the objects
# in $TMP/objects.json, 404 for any other object, and records every request in $TMP/requests.log.
cat >"$TMP/fake_apiserver.py" <<'PY'
import json, sys, threading, http.server

RESOURCES = {  # groupVersion -> [(plural, Kind, namespaced)]
    "v1": [("configmaps", "ConfigMap", True), ("secrets", "Secret", True), ("services", "Service", True),
           ("serviceaccounts", "ServiceAccount", True), ("pods", "Pod", True), ("namespaces", "Namespace", False),
           ("endpoints", "Endpoints", True), ("persistentvolumeclaims", "PersistentVolumeClaim", True)],
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True),
                ("daemonsets", "DaemonSet", True), ("replicasets", "ReplicaSet", True)],
    "batch/v1": [("jobs", "Job", True), ("cronjobs", "CronJob", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "rbac.authorization.k8s.io/v1": [("clusterroles", "ClusterRole", False), ("clusterrolebindings", "ClusterRoleBinding", False),
                                     ("roles", "Role", True), ("rolebindings", "RoleBinding", True)],
    "admissionregistration.k8s.io/v1": [("mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False),
                                        ("validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False),
                                        ("validatingadmissionpolicies", "ValidatingAdmissionPolicy", False),
                                        ("validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding", False)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True), ("ingresses", "Ingress", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "cert-manager.io/v1": [("issuers", "Issuer", True), ("clusterissuers", "ClusterIssuer", False),
                           ("certificates", "Certificate", True)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True), ("podmonitors", "PodMonitor", True)],
}
objects = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else {}
log = open(sys.argv[1], "a", buffering=1)

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def not_found(self):
        self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                         "code": 404, "message": "not found (fake API server)"})
    def do_GET(self):
        log.write("GET %s\n" % self.path)
        path = self.path.split("?")[0]
        if path == "/version":
            return self.reply(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"})
        if path == "/api":
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        if path == "/apis":
            groups = []
            for gv in RESOURCES:
                if "/" in gv:
                    g, v = gv.split("/")
                    ver = {"groupVersion": gv, "version": v}
                    groups.append({"name": g, "versions": [ver], "preferredVersion": ver})
            return self.reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        for gv, resources in RESOURCES.items():
            if path == ("/api/v1" if gv == "v1" else "/apis/" + gv):
                return self.reply(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                    {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
                     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                    for plural, kind, namespaced in resources]})
        if path in objects:
            return self.reply(200, objects[path])
        return self.not_found()
    def write(self):
        log.write("%s %s\n" % (self.command, self.path))
        self.reply(405, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 405,
                         "message": "the fake API server accepts no writes"})
    do_POST = do_PUT = do_PATCH = do_DELETE = write

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY

start_fake_apiserver() { # start_fake_apiserver OBJECTS_JSON: (re)start it, write $TMP/kubeconfig
  if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; FAKE_PID=""; fi
  : >"$TMP/requests.log"; : >"$TMP/fake.port"
  python3 "$TMP/fake_apiserver.py" "$TMP/requests.log" "$1" >"$TMP/fake.port" 2>"$TMP/fake.log" &
  FAKE_PID=$!
  for _ in $(seq 1 100); do
    [ -s "$TMP/fake.port" ] && break
    sleep 0.1
  done
  [ -s "$TMP/fake.port" ] || { cat "$TMP/fake.log" >&2; return 1; }
  cat >"$TMP/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "http://127.0.0.1:$(head -n1 "$TMP/fake.port")"}}]
users: [{name: nobody, user: {}}]
contexts: [{name: fake, context: {cluster: fake, user: nobody, namespace: $NAMESPACE}}]
current-context: fake
EOF
}

# ---------------------------------------------------------------------------------------------
# 3. helm mode: lookup reuses the previous TLS Secret, regenerates an incomplete one
TLS_SECRET="$RELEASE-pullsecret-injector-tls"
SECRET_PATH="/api/v1/namespaces/$NAMESPACE/secrets/$TLS_SECRET"
b64() { printf '%s' "$1" | base64 | tr -d '\n'; }
# Ownership metadata, or helm refuses to "import" the Secret into the release.
HELM_OWNED="\"labels\": {\"app.kubernetes.io/managed-by\": \"Helm\"}, \"annotations\": {\"meta.helm.sh/release-name\": \"$RELEASE\", \"meta.helm.sh/release-namespace\": \"$NAMESPACE\"}"
OLD_CRT=$(b64 "previous-release-tls.crt"); OLD_KEY=$(b64 "previous-release-tls.key"); OLD_CA=$(b64 "previous-release-ca.crt")
cat >"$TMP/objects-full.json" <<EOF
{"$SECRET_PATH": {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
  "metadata": {"name": "$TLS_SECRET", "namespace": "$NAMESPACE", $HELM_OWNED},
  "data": {"tls.crt": "$OLD_CRT", "tls.key": "$OLD_KEY", "ca.crt": "$OLD_CA"}}}
EOF
cat >"$TMP/objects-partial.json" <<EOF
{"$SECRET_PATH": {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
  "metadata": {"name": "$TLS_SECRET", "namespace": "$NAMESPACE", $HELM_OWNED},
  "data": {"tls.crt": "$OLD_CRT", "tls.key": "$OLD_KEY"}}}
EOF
if start_fake_apiserver "$TMP/objects-full.json" \
  && render helm "$TMP/reuse.yaml" --dry-run=server --disable-openapi-validation --kubeconfig "$TMP/kubeconfig" 2>"$TMP/render.log"; then
  if grep -qE "^  tls\\.crt: $OLD_CRT\$" "$TMP/reuse.yaml" && grep -qE "^  tls\\.key: $OLD_KEY\$" "$TMP/reuse.yaml" \
    && grep -qE "^  ca\\.crt: $OLD_CA\$" "$TMP/reuse.yaml" && grep -qE "^      caBundle: $OLD_CA\$" "$TMP/reuse.yaml" \
    && grep -q "GET $SECRET_PATH" "$TMP/requests.log"; then
    pass "helm mode reuses the existing TLS Secret and CA via lookup (caBundle stays the same across upgrades)"
  else
    { echo "rendered Secret / caBundle:"; grep -E "(tls\\.crt|tls\\.key|ca\\.crt|caBundle):" "$TMP/reuse.yaml" | cut -c1-100
      echo "requests:"; cat "$TMP/requests.log"; } >"$TMP/why.log"
    fail "helm mode reuses the existing TLS Secret and CA via lookup" "$TMP/why.log"
  fi
else
  fail "helm mode reuses the existing TLS Secret and CA via lookup (render against the fake API server)" "$TMP/render.log"
fi
if start_fake_apiserver "$TMP/objects-partial.json" \
  && render helm "$TMP/regen.yaml" --dry-run=server --disable-openapi-validation --kubeconfig "$TMP/kubeconfig" 2>"$TMP/render.log" \
  && ! grep -q "$OLD_CRT" "$TMP/regen.yaml" && grep -qE "^  ca\\.crt: LS0t" "$TMP/regen.yaml"; then
  pass "helm mode generates a new certificate when the stored TLS Secret lacks ca.crt"
else
  fail "helm mode generates a new certificate when the stored TLS Secret lacks ca.crt" "$TMP/render.log"
fi

# ---------------------------------------------------------------------------------------------
# 4. bad values must fail with a clear message
expect_failure() { # expect_failure DESCRIPTION 'substring|substring...' helm-args... (the image is set first)
  local what=$1 wanted=$2; shift 2
  # shellcheck disable=SC2086
  if helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" $IMAGE_ARGS "$@" >"$TMP/bad.out" 2>"$TMP/bad.err"; then
    echo "helm template succeeded, expected a failure" >"$TMP/bad.err"
    fail "bad values rejected: $what" "$TMP/bad.err"
    return
  fi
  local sub
  IFS='|' read -r -a subs <<<"$wanted"
  for sub in "${subs[@]}"; do
    if ! grep -qF -- "$sub" "$TMP/bad.err"; then
      echo "stderr does not contain: $sub" >>"$TMP/bad.err"
      fail "bad values rejected: $what" "$TMP/bad.err"
      return
    fi
  done
  pass "bad values rejected: $what"
}
KEY=(--set-file "registries[0].gcpJsonKey.value=$VALUES/dummy-key.json")
expect_failure "no image.repository (no image is published)" \
  "image.repository is required|README.md, section \"Build the image\"|docker buildx build --platform linux/amd64,linux/arm64|--set image.repository=REGISTRY/pullsecret-injector" \
  "${KEY[@]}" --set image.repository=
if helm install "$RELEASE" "$CHART" --dry-run=client --namespace "$NAMESPACE" "${KEY[@]}" >"$TMP/bad.out" 2>"$TMP/bad.err"; then
  echo "helm install succeeded with the default values' image" >"$TMP/bad.err"
  fail "helm install without image.repository stops and says how to build the image" "$TMP/bad.err"
elif grep -qF 'image.repository is required' "$TMP/bad.err" && grep -qF 'Build the image' "$TMP/bad.err"; then
  pass "helm install without image.repository stops and says how to build the image"
else
  fail "helm install without image.repository stops and says how to build the image" "$TMP/bad.err"
fi
expect_failure "registry without hosts and without preset" \
  "/registries/0|missing property 'hosts'" \
  --set 'registries[0].name=harbor' --set 'registries[0].secretName=harbor-pull'
expect_failure "registry with an empty hosts list and no preset" \
  "/registries/1/hosts|minItems" \
  -f /dev/stdin <<<'registries: [{name: gcp, preset: gcp, secretName: gcr-pull}, {name: harbor, secretName: harbor-pull, hosts: []}]'
expect_failure "webhook.failurePolicy=Ignor" "/webhook/failurePolicy|'Ignore', 'Fail'" "${KEY[@]}" --set webhook.failurePolicy=Ignor
expect_failure "failureMode=maybe" "/failureMode|'allow', 'deny'" "${KEY[@]}" --set failureMode=maybe
expect_failure "webhook.timeoutSeconds=31" "/webhook/timeoutSeconds|maximum" "${KEY[@]}" --set webhook.timeoutSeconds=31
expect_failure "webhook.timeoutSeconds=0" "/webhook/timeoutSeconds|minimum" "${KEY[@]}" --set webhook.timeoutSeconds=0
expect_failure "secretName that is not a DNS-1123 subdomain" "/registries/0/secretName|does not match pattern" \
  "${KEY[@]}" --set 'registries[0].secretName=GCR_Pull'
expect_failure "registry name with upper case" "/registries/0/name|does not match pattern" \
  -f /dev/stdin <<<'registries: [{name: GCP, preset: gcp, secretName: gcr-pull}]'
expect_failure "unknown certificates.mode" "/certificates/mode|'helm', 'certManager', 'existing'" \
  "${KEY[@]}" --set certificates.mode=selfSigned
expect_failure "unknown preset" "/registries/0/preset|'gcp'" \
  -f /dev/stdin <<<'registries: [{name: ecr, preset: aws, secretName: ecr-pull}]'
expect_failure "misspelt top-level value" "failurPolicy" "${KEY[@]}" --set failurPolicy=Fail
expect_failure "federation credentialConfig that is not an external_account config" \
  "registries[0] (gcp)|create-cred-config" \
  -f /dev/stdin <<<'registries: [{name: gcp, preset: gcp, secretName: gcr-pull, gcpWorkloadIdentityFederation: {credentialConfig: "{\"type\": \"service_account\"}"}}]'
expect_failure "federation credential config without credential_source.file" \
  "registries[0] (gcp): the credential config has no credential_source.file" \
  -f /dev/stdin <<<'registries: [{name: gcp, preset: gcp, secretName: gcr-pull, gcpWorkloadIdentityFederation: {credentialConfig: "{\"type\": \"external_account\", \"audience\": \"a\", \"credential_source\": {\"url\": \"http://x\"}}"}}]'
expect_failure "federation with both credentialConfig and inline fields" "credentialConfig or audience" \
  -f /dev/stdin <<<'registries: [{name: gcp, preset: gcp, secretName: gcr-pull, gcpWorkloadIdentityFederation: {credentialConfig: "{}", serviceAccount: a@b.iam.gserviceaccount.com}}]'
expect_failure "federation without credentialConfig or audience" "needs credentialConfig" \
  -f /dev/stdin <<<'registries: [{name: gcp, preset: gcp, secretName: gcr-pull, gcpWorkloadIdentityFederation: {serviceAccount: a@b.iam.gserviceaccount.com}}]'
expect_failure "federation audience that is not a provider" "/registries/0/gcpWorkloadIdentityFederation/audience|does not match pattern" \
  -f /dev/stdin <<<'registries: [{name: gcp, preset: gcp, secretName: gcr-pull, gcpWorkloadIdentityFederation: {audience: "projects/my-project/pools/p"}}]'
expect_failure "projected token shorter than the API server allows" "/registries/0/gcpWorkloadIdentityFederation/tokenExpirationSeconds|minimum" \
  -f /dev/stdin <<<'registries: [{name: gcp, preset: gcp, secretName: gcr-pull, gcpWorkloadIdentityFederation: {audience: "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/pool/providers/prov", tokenExpirationSeconds: 60}}]'
expect_failure "default values without a GCP key" \
  "--set-file registries[0].gcpJsonKey.value=key.json|gcpJsonKey.existingSecret"
expect_failure "two credential sources on one registry" "registries[0] (gcp)|at most one credential source" \
  "${KEY[@]}" --set 'registries[0].basicAuth.username=u' --set 'registries[0].basicAuth.password=p'
expect_failure "two registries with the same secretName" "secretName \"gcr-pull\" is already used" \
  -f /dev/stdin <<<'registries: [{name: gcp, preset: gcp, secretName: gcr-pull}, {name: other, hosts: [r.example.com], secretName: gcr-pull}]'
expect_failure "second registry without name" "registries[1].name is required" \
  -f /dev/stdin <<<'registries: [{name: gcp, preset: gcp, secretName: gcr-pull}, {hosts: [r.example.com], secretName: r-pull}]'
expect_failure "basicAuth without password" "registries[0] (harbor): basicAuth needs username and password" \
  -f /dev/stdin <<<'registries: [{name: harbor, hosts: [h.example.com], secretName: h-pull, basicAuth: {username: u}}]'
expect_failure "provisioning.budget not shorter than webhook.timeoutSeconds" "provisioning.budget (5s) must be shorter" \
  "${KEY[@]}" --set provisioning.budget=5s
expect_failure "provisioning.budget above the binary's 25s limit" "at most 25s" \
  "${KEY[@]}" --set webhook.timeoutSeconds=30 --set provisioning.budget=26s
expect_failure "provisioning.budget of zero" "must be above 0" "${KEY[@]}" --set provisioning.budget=0s
expect_failure "certificates.mode=existing without existingSecret" "needs certificates.existingSecret" \
  "${KEY[@]}" --set certificates.mode=existing
expect_failure "certificates.mode=existing without caBundle" "needs certificates.caBundle" \
  "${KEY[@]}" --set certificates.mode=existing --set certificates.existingSecret=my-tls
expect_failure "ServiceMonitor without the metrics port" "needs metrics.enabled=true" \
  "${KEY[@]}" --set metrics.enabled=false --set metrics.serviceMonitor.enabled=true
expect_failure "PodDisruptionBudget minAvailable not below replicaCount" \
  "podDisruptionBudget.minAvailable (2) must be less than replicaCount (2)" \
  "${KEY[@]}" --set podDisruptionBudget.minAvailable=2
expect_failure "preStop sleep as long as the grace period" "must be less than terminationGracePeriodSeconds" \
  "${KEY[@]}" --set preStopSleepSeconds=30
expect_failure "namespaceSelector with an unknown operator" "/namespaceSelector/matchExpressions/0/operator|'In', 'NotIn', 'Exists', 'DoesNotExist'" \
  "${KEY[@]}" -f /dev/stdin <<<'namespaceSelector: {matchExpressions: [{key: team, operator: Near, values: [a]}]}'
expect_failure "namespaceSelector In without values" "namespaceSelector.matchExpressions[0] (key \"team\"): operator In needs a non-empty values list" \
  "${KEY[@]}" -f /dev/stdin <<<'namespaceSelector: {matchExpressions: [{key: team, operator: In}]}'
expect_failure "namespaceSelector Exists with values" "operator Exists takes no values" \
  "${KEY[@]}" -f /dev/stdin <<<'namespaceSelector: {matchExpressions: [{key: team, operator: Exists, values: [a]}]}'
expect_failure "webhook.namespaceSelector.optIn against namespaceSelector.matchLabels" \
  "optIn=true selects pullsecret-injector.io/inject=enabled|sets pullsecret-injector.io/inject=\"off\"" \
  "${KEY[@]}" --set webhook.namespaceSelector.optIn=true -f /dev/stdin <<<'namespaceSelector: {matchLabels: {pullsecret-injector.io/inject: "off"}}'
expect_failure "NetworkPolicy without the API server's CIDRs" "needs networkPolicy.apiServerCIDRs" \
  "${KEY[@]}" --set networkPolicy.enabled=true
expect_failure "NetworkPolicy with a CIDR that is not one" "/networkPolicy/apiServerCIDRs/0|does not match pattern" \
  "${KEY[@]}" --set networkPolicy.enabled=true --set 'networkPolicy.apiServerCIDRs[0]=api.example.com'

# ---------------------------------------------------------------------------------------------
# 5a. kubectl apply --dry-run=client against the discovery-only fake API server
echo '{}' >"$TMP/objects-none.json"
if start_fake_apiserver "$TMP/objects-none.json"; then
  for mode in "${MODES[@]}"; do
    [ -f "$TMP/$mode.raw.yaml" ] || { fail "kubectl apply --dry-run=client ($mode): nothing rendered"; continue; }
    : >"$TMP/requests.log"
    expected=$(grep -c '^kind: ' "$TMP/$mode.raw.yaml" || true)
    if kubectl --kubeconfig "$TMP/kubeconfig" --cache-dir "$TMP/kube-cache" apply --dry-run=client --validate=false \
      -o name -f "$TMP/$mode.raw.yaml" >"$TMP/kubectl.out" 2>"$TMP/kubectl.err"; then
      got=$(grep -c . "$TMP/kubectl.out" || true)
      writes=$(grep -cvE '^GET ' "$TMP/requests.log" || true)
      if [ "$got" = "$expected" ] && [ "$writes" = "0" ]; then
        pass "kubectl apply --dry-run=client ($mode): $got objects mapped and applied (offline)"
      else
        { echo "expected $expected objects, kubectl printed $got; write requests: $writes"; cat "$TMP/kubectl.out"; grep -vE '^GET ' "$TMP/requests.log" || true; } >"$TMP/why.log"
        fail "kubectl apply --dry-run=client ($mode)" "$TMP/why.log"
      fi
    else
      fail "kubectl apply --dry-run=client ($mode)" "$TMP/kubectl.err"
    fi
  done
else
  fail "start the fake API server for kubectl" "$TMP/fake.log"
fi

# ---------------------------------------------------------------------------------------------
# 5b. strict schema validation (kubernetes-validate) of the rendered objects
VENV="$CACHE_DIR/venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV" >"$TMP/venv.log" 2>&1 \
    && "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE" >>"$TMP/venv.log" 2>&1 \
    || true
fi
cat >"$TMP/validate.py" <<'PY'
import sys, yaml, jsonschema, kubernetes_validate

def strict(props, required=()):
    return {"type": "object", "additionalProperties": False, "properties": props, "required": list(required)}
STR, BOOL, INT = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}
STRS = {"type": "array", "items": STR}
STRMAP = {"type": "object", "additionalProperties": STR}
META = strict({"name": STR, "namespace": STR, "labels": STRMAP, "annotations": STRMAP}, ["name"])
ISSUER_REF = strict({"group": STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "name": STR}, ["name"])
def crd(api, kind, spec):
    return strict({"apiVersion": {"const": api}, "kind": {"const": kind}, "metadata": META, "spec": spec},
                  ["apiVersion", "kind", "metadata", "spec"])
# Hand-written strict subsets of the upstream CRDs (cert-manager v1, prometheus-operator v1): the
# fields this chart uses, with their upstream names and types.
CRDS = {
    ("cert-manager.io/v1", "Issuer"): crd("cert-manager.io/v1", "Issuer", {
        "type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
        "properties": {"selfSigned": strict({"crlDistributionPoints": STRS}),
                       "ca": strict({"secretName": STR, "crlDistributionPoints": STRS}, ["secretName"])}}),
    ("cert-manager.io/v1", "Certificate"): crd("cert-manager.io/v1", "Certificate", strict({
        "secretName": STR, "commonName": STR, "dnsNames": STRS, "isCA": BOOL,
        "duration": STR, "renewBefore": STR, "issuerRef": ISSUER_REF,
        "usages": {"type": "array", "items": {"enum": ["signing", "digital signature", "content commitment",
            "key encipherment", "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
            "decipher only", "any", "server auth", "client auth", "code signing", "email protection", "s/mime",
            "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
            "microsoft sgc", "netscape sgc"]}},
        "privateKey": strict({"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": INT,
                              "encoding": {"enum": ["PKCS1", "PKCS8"]}, "rotationPolicy": {"enum": ["Never", "Always"]}}),
    }, ["secretName", "issuerRef"])),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): crd("monitoring.coreos.com/v1", "ServiceMonitor", strict({
        "namespaceSelector": strict({"any": BOOL, "matchNames": STRS}),
        "selector": strict({"matchLabels": STRMAP, "matchExpressions": {"type": "array"}}),
        "endpoints": {"type": "array", "minItems": 1, "items": strict({
            "port": STR, "path": STR, "scheme": {"enum": ["http", "https"]}, "interval": STR, "scrapeTimeout": STR})},
    }, ["selector", "endpoints"])),
}

errors = 0
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for doc in docs:
    name = "%s/%s" % (doc.get("kind"), doc.get("metadata", {}).get("name"))
    key = (doc.get("apiVersion"), doc.get("kind"))
    try:
        if key in CRDS:
            jsonschema.Draft7Validator(CRDS[key]).validate(doc)
        else:
            for version in sys.argv[2:]:
                kubernetes_validate.validate(doc, version, strict=True)
    except jsonschema.ValidationError as e:
        errors += 1
        where = "/".join(str(p) for p in e.absolute_path)
        print("%s: %s: %s" % (name, where or "<root>", e.message[:300]))
    except kubernetes_validate.SchemaNotFoundError as e:
        errors += 1
        print("%s: %s" % (name, e.message))
print("%d objects, %d invalid" % (len(docs), errors))
sys.exit(1 if errors else 0)
PY
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  for mode in "${MODES[@]}"; do
    [ -f "$TMP/$mode.raw.yaml" ] || { fail "schema validation ($mode): nothing rendered"; continue; }
    if "$VENV/bin/python" "$TMP/validate.py" "$TMP/$mode.raw.yaml" 1.30.0 1.33.0 >"$TMP/validate.log" 2>&1; then
      pass "strict schema validation, Kubernetes 1.30 and 1.33 ($mode): $(tail -n1 "$TMP/validate.log")"
    else
      fail "strict schema validation, Kubernetes 1.30 and 1.33 ($mode)" "$TMP/validate.log"
    fi
  done
  # The validator must catch what it is meant to catch.
  printf 'apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: "443", targetPort: https}]\n  selectr: {}\n' >"$TMP/broken.yaml"
  if "$VENV/bin/python" "$TMP/validate.py" "$TMP/broken.yaml" 1.33.0 >"$TMP/validate.log" 2>&1; then
    fail "strict schema validation rejects a broken Service (typo'd field, string port)" "$TMP/validate.log"
  else
    pass "strict schema validation rejects a broken Service (typo'd field, string port)"
  fi
else
  fail "install $KUBERNETES_VALIDATE into $VENV for schema validation" "$TMP/venv.log"
fi

echo "helm-checks: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
