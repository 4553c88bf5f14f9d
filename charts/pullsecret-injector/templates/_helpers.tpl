{{/*
Chart name.
*/}}
{{- define "pullsecret-injector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: "<release>-<chart>" unless the release name already contains the chart name.
*/}}
{{- define "pullsecret-injector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pullsecret-injector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pullsecret-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pullsecret-injector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pullsecret-injector.labels" -}}
helm.sh/chart: {{ include "pullsecret-injector.chart" . }}
{{ include "pullsecret-injector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pullsecret-injector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pullsecret-injector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pullsecret-injector.image" -}}
{{- $repository := required "image.repository is required: no pullsecret-injector image is published yet. Build one from the repository and push it to a registry your nodes can pull from (README.md, section \"Build the image\": docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/pullsecret-injector:0.1.0 --push .), then pass --set image.repository=REGISTRY/pullsecret-injector --set image.tag=0.1.0" .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The host patterns of each preset, as JSON: the binary's own expansion (GCP_HOST_PATTERNS in
src/config.rs; tests/chart_wiring.rs compares them). The ConfigMap passes `preset` to the binary as
it is; NOTES.txt shows the hosts.
*/}}
{{- define "pullsecret-injector.presetHosts" -}}
{"gcp": ["gcr.io", "*.gcr.io", "*-docker.pkg.dev", "docker.*.rep.pkg.dev"]}
{{- end }}

{{/*
Fixed paths of the binary's interface (see the container args in deployment.yaml).
*/}}
{{- define "pullsecret-injector.configDir" -}}/etc/pullsecret-injector/config{{- end }}
{{- define "pullsecret-injector.tlsDir" -}}/etc/pullsecret-injector/tls{{- end }}
{{- define "pullsecret-injector.credentialsDir" -}}/etc/pullsecret-injector/credentials{{- end }}

{{/*
Where a registry entry's CA bundle (caBundle) is mounted: <caDir>/<registry name>/.
*/}}
{{- define "pullsecret-injector.caDir" -}}/etc/pullsecret-injector/registry-ca{{- end }}

{{/*
Name of the kubernetes.io/tls Secret holding the serving certificate.
*/}}
{{- define "pullsecret-injector.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "existing" }}
{{- required (printf "certificates.mode=existing needs certificates.existingSecret: the name of a kubernetes.io/tls Secret in namespace %q holding tls.crt and tls.key" .Release.Namespace) .Values.certificates.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "pullsecret-injector.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Namespaces the injector leaves alone, as a JSON list: kube-system, kube-node-lease, skipNamespaces,
webhook.excludeNamespaces (an older name for the same thing) and the release namespace (deduplicated,
order kept). The one list behind the config's skipNamespaces, the webhook's namespaceSelector and the
ValidatingAdmissionPolicy, so they cannot disagree.
*/}}
{{- define "pullsecret-injector.skipNamespaces" -}}
{{- $all := concat (list "kube-system" "kube-node-lease") (.Values.skipNamespaces | default list) (.Values.webhook.excludeNamespaces | default list) (list .Release.Namespace) }}
{{- toJson (uniq $all) }}
{{- end }}

{{/*
The opt-in namespace selector, as a JSON object with matchLabels and/or matchExpressions ({} = no
opt-in: every namespace not skipped): namespaceSelector, plus matchLabels
pullsecret-injector.io/inject=enabled when webhook.namespaceSelector.optIn is true. The one selector
behind the config's namespaceSelector and the webhook's namespaceSelector.
*/}}
{{- define "pullsecret-injector.namespaceSelector" -}}
{{- $given := .Values.namespaceSelector | default dict }}
{{- $labels := dict }}
{{- range $k, $v := ($given.matchLabels | default dict) }}
{{- $_ := set $labels $k (toString $v) }}
{{- end }}
{{- if (.Values.webhook.namespaceSelector | default dict).optIn }}
{{- $key := "pullsecret-injector.io/inject" }}
{{- if and (hasKey $labels $key) (ne (get $labels $key) "enabled") }}
{{- fail (printf "webhook.namespaceSelector.optIn=true selects %s=enabled, but namespaceSelector.matchLabels sets %s=%q: drop one of them" $key $key (get $labels $key)) }}
{{- end }}
{{- $_ := set $labels $key "enabled" }}
{{- end }}
{{- $out := dict }}
{{- if $labels }}
{{- $_ := set $out "matchLabels" $labels }}
{{- end }}
{{- $exprs := list }}
{{- range $i, $e := ($given.matchExpressions | default list) }}
{{- $where := printf "namespaceSelector.matchExpressions[%d] (key %q)" $i $e.key }}
{{- if and (has $e.operator (list "In" "NotIn")) (not $e.values) }}
{{- fail (printf "%s: operator %s needs a non-empty values list" $where $e.operator) }}
{{- end }}
{{- if and (has $e.operator (list "Exists" "DoesNotExist")) $e.values }}
{{- fail (printf "%s: operator %s takes no values" $where $e.operator) }}
{{- end }}
{{- $x := dict "key" $e.key "operator" $e.operator }}
{{- if $e.values }}
{{- $_ := set $x "values" $e.values }}
{{- end }}
{{- $exprs = append $exprs $x }}
{{- end }}
{{- if $exprs }}
{{- $_ := set $out "matchExpressions" $exprs }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Normalised registries, as a JSON list. Each item:
  name, secretName, hosts, preset   - copied from values
  kind                              - "gcpJsonKey" | "basicAuth" | "dockerConfigJson" | "gcpWorkloadIdentity"
                                      | "gcpWorkloadIdentityFederation" | "" (no credentials)
  mount                             - whether a credential Secret is mounted (false for the keyless kinds)
  sourceSecret                      - Secret mounted at credentials/<name>/ ("" when kind is "")
  createSecret                      - true when the chart creates sourceSecret from inline values
  data                              - {key: plain text} for the Secret the chart creates
  keys                              - keys of sourceSecret that are mounted (volume items)
  volumeName, mountPath
  credentials                       - the `credentials` block of the binary's config
  configFiles                       - {key: text} added to the config ConfigMap (a federation's credential config)
  projectedToken                    - gcpWorkloadIdentityFederation: the projected ServiceAccount token
                                      {volumeName, mountPath, path, audience, expirationSeconds}; else {}
All value errors that JSON schema cannot express (duplicates, two credential sources, missing
inline value) fail here with a message naming the registry.
*/}}
{{- define "pullsecret-injector.registries" -}}
{{- $root := . }}
{{- $fullname := include "pullsecret-injector.fullname" . }}
{{- $credDir := include "pullsecret-injector.credentialsDir" . }}
{{- $out := list }}
{{- $names := dict }}
{{- $secretNames := dict }}
{{- if not .Values.registries }}
{{- fail "registries is empty: configure at least one registry (see values.yaml)" }}
{{- end }}
{{- range $i, $entry := .Values.registries }}
{{- $r := $entry }}
{{- if and (eq $i 0) (not (hasKey $entry "name")) }}
{{- /* A nameless first entry is the default gcp entry of values.yaml, so that
       `--set-file registries[0].gcpJsonKey.value=key.json` alone (which replaces the whole list) works. */}}
{{- $r = dict "name" "gcp" "preset" "gcp" "secretName" "gcr-pull" "gcpJsonKey" (dict "key" "key.json") }}
{{- range $k, $v := $entry }}
{{- $_ := set $r $k $v }}
{{- end }}
{{- end }}
{{- $name := required (printf "registries[%d].name is required" $i) $r.name }}
{{- $where := printf "registries[%d] (%s)" $i $name }}
{{- $secretName := required (printf "%s: secretName is required" $where) $r.secretName }}
{{- if not (or $r.hosts $r.preset) }}
{{- fail (printf "%s: set hosts (a list of registry host patterns) or preset (gcp)" $where) }}
{{- end }}
{{- if hasKey $names $name }}
{{- fail (printf "%s: the name %q is used by more than one registry" $where $name) }}
{{- end }}
{{- $_ := set $names $name true }}
{{- if hasKey $secretNames $secretName }}
{{- fail (printf "%s: secretName %q is already used by registry %q; each registry needs its own pull Secret" $where $secretName (get $secretNames $secretName)) }}
{{- end }}
{{- $_ := set $secretNames $secretName $name }}
{{- $kinds := list }}
{{- range $k := list "gcpJsonKey" "basicAuth" "dockerConfigJson" "gcpWorkloadIdentity" "gcpWorkloadIdentityFederation" }}
{{- if or (get $r $k) (and (eq $k "gcpWorkloadIdentity") (kindIs "map" (get $r $k))) }}
{{- $kinds = append $kinds $k }}
{{- end }}
{{- end }}
{{- if gt (len $kinds) 1 }}
{{- fail (printf "%s: set at most one credential source, got %s" $where (join ", " $kinds)) }}
{{- end }}
{{- $mountPath := printf "%s/%s" $credDir $name }}
{{- $item := dict "name" $name "secretName" $secretName "hosts" ($r.hosts | default list) "preset" ($r.preset | default "") "kind" "" "mount" false "sourceSecret" "" "createSecret" false "data" dict "keys" list "volumeName" (printf "cred-%s" $name | trunc 63 | trimSuffix "-") "mountPath" $mountPath "credentials" dict "configFiles" dict "projectedToken" dict }}
{{- if hasKey $r "healthCheck" }}
{{- $_ := set $item "healthCheck" $r.healthCheck }}
{{- end }}
{{- if $r.probeHosts }}
{{- $_ := set $item "probeHosts" $r.probeHosts }}
{{- end }}
{{- with $r.caBundle }}
{{- $cm := required (printf "%s: caBundle needs existingConfigMap, a ConfigMap in namespace %q holding the registry's CA certificates (PEM)" $where $root.Release.Namespace) .existingConfigMap }}
{{- $caKey := .key | default "ca.crt" }}
{{- $caDir := printf "%s/%s" (include "pullsecret-injector.caDir" $root) $name }}
{{- $_ := set $item "ca" (dict "configMap" $cm "key" $caKey "volumeName" (printf "ca-%s" $name | trunc 63 | trimSuffix "-") "mountPath" $caDir "file" (printf "%s/%s" $caDir $caKey)) }}
{{- end }}
{{- $generated := printf "%s-%s-credentials" $fullname $name }}
{{- if $r.gcpJsonKey }}
{{- $c := $r.gcpJsonKey }}
{{- $_ := set $item "kind" "gcpJsonKey" }}
{{- $_ := set $item "mount" true }}
{{- $mode := $c.mode | default "jsonKey" }}
{{- if not (has $mode (list "jsonKey" "accessToken")) }}
{{- fail (printf "%s: gcpJsonKey.mode must be jsonKey or accessToken, got %q" $where $mode) }}
{{- end }}
{{- if $c.existingSecret }}
{{- $key := $c.key | default "key.json" }}
{{- $_ := set $item "sourceSecret" $c.existingSecret }}
{{- $_ := set $item "keys" (list $key) }}
{{- $_ := set $item "credentials" (dict "gcpJsonKey" (dict "file" (printf "%s/%s" $mountPath $key) "mode" $mode)) }}
{{- else }}
{{- $value := required (printf "%s: gcpJsonKey needs the service-account JSON key: pass --set-file registries[%d].gcpJsonKey.value=key.json, or set registries[%d].gcpJsonKey.existingSecret to a Secret in namespace %q holding key.json (or set registries[%d].gcpJsonKey=null to only inject the reference)" $where $i $i $root.Release.Namespace $i) $c.value }}
{{- $_ := set $item "sourceSecret" $generated }}
{{- $_ := set $item "createSecret" true }}
{{- $_ := set $item "data" (dict "key.json" $value) }}
{{- $_ := set $item "keys" (list "key.json") }}
{{- $_ := set $item "credentials" (dict "gcpJsonKey" (dict "file" (printf "%s/key.json" $mountPath) "mode" $mode)) }}
{{- end }}
{{- else if $r.basicAuth }}
{{- $c := $r.basicAuth }}
{{- $_ := set $item "kind" "basicAuth" }}
{{- $_ := set $item "mount" true }}
{{- if $c.existingSecret }}
{{- $u := $c.usernameKey | default "username" }}
{{- $p := $c.passwordKey | default "password" }}
{{- $_ := set $item "sourceSecret" $c.existingSecret }}
{{- $_ := set $item "keys" (list $u $p) }}
{{- $_ := set $item "credentials" (dict "basicAuth" (dict "usernameFile" (printf "%s/%s" $mountPath $u) "passwordFile" (printf "%s/%s" $mountPath $p))) }}
{{- else }}
{{- $u := required (printf "%s: basicAuth needs username and password, or existingSecret" $where) $c.username }}
{{- $p := required (printf "%s: basicAuth needs username and password, or existingSecret" $where) $c.password }}
{{- $_ := set $item "sourceSecret" $generated }}
{{- $_ := set $item "createSecret" true }}
{{- $_ := set $item "data" (dict "username" $u "password" $p) }}
{{- $_ := set $item "keys" (list "username" "password") }}
{{- $_ := set $item "credentials" (dict "basicAuth" (dict "usernameFile" (printf "%s/username" $mountPath) "passwordFile" (printf "%s/password" $mountPath))) }}
{{- end }}
{{- else if $r.dockerConfigJson }}
{{- $c := $r.dockerConfigJson }}
{{- $_ := set $item "kind" "dockerConfigJson" }}
{{- $_ := set $item "mount" true }}
{{- if $c.existingSecret }}
{{- $key := $c.key | default ".dockerconfigjson" }}
{{- $_ := set $item "sourceSecret" $c.existingSecret }}
{{- $_ := set $item "keys" (list $key) }}
{{- $_ := set $item "credentials" (dict "dockerConfigJson" (dict "file" (printf "%s/%s" $mountPath $key))) }}
{{- else }}
{{- $value := required (printf "%s: dockerConfigJson needs value (--set-file registries[%d].dockerConfigJson.value=config.json) or existingSecret" $where $i) $c.value }}
{{- $_ := set $item "sourceSecret" $generated }}
{{- $_ := set $item "createSecret" true }}
{{- $_ := set $item "data" (dict ".dockerconfigjson" $value) }}
{{- $_ := set $item "keys" (list ".dockerconfigjson") }}
{{- $_ := set $item "credentials" (dict "dockerConfigJson" (dict "file" (printf "%s/.dockerconfigjson" $mountPath))) }}
{{- end }}
{{- else if kindIs "map" $r.gcpWorkloadIdentity }}
{{- /* Keyless: tokens from the GKE metadata server for this chart's ServiceAccount, which
       serviceAccount.annotations binds to a Google service account. Nothing to mount. */}}
{{- $c := $r.gcpWorkloadIdentity }}
{{- $_ := set $item "kind" "gcpWorkloadIdentity" }}
{{- $wi := dict }}
{{- if $c.serviceAccount }}{{- $_ := set $wi "serviceAccount" $c.serviceAccount }}{{- end }}
{{- if $c.metadataUrl }}{{- $_ := set $wi "metadataUrl" $c.metadataUrl }}{{- end }}
{{- $_ := set $item "credentials" (dict "gcpWorkloadIdentity" $wi) }}
{{- else if $r.gcpWorkloadIdentityFederation }}
{{- /* Keyless on any cluster: the projected ServiceAccount token is exchanged at Google's STS.
       The credential config holds no secret: it goes into the config ConfigMap, and the token is
       mounted at the path it names. */}}
{{- $c := $r.gcpWorkloadIdentityFederation }}
{{- $_ := set $item "kind" "gcpWorkloadIdentityFederation" }}
{{- $audience := "" }}
{{- $file := "" }}
{{- if $c.credentialConfig }}
{{- if or $c.audience $c.serviceAccount $c.tokenLifetime }}
{{- fail (printf "%s: gcpWorkloadIdentityFederation takes credentialConfig or audience (with serviceAccount, tokenLifetime), not both" $where) }}
{{- end }}
{{- $cfg := fromJson $c.credentialConfig }}
{{- if or (hasKey $cfg "Error") (ne (toString $cfg.type) "external_account") }}
{{- fail (printf "%s: gcpWorkloadIdentityFederation.credentialConfig must be the JSON that `gcloud iam workload-identity-pools create-cred-config` writes (\"type\": \"external_account\"): --set-file registries[%d].gcpWorkloadIdentityFederation.credentialConfig=credential-config.json" $where $i) }}
{{- end }}
{{- $audience = required (printf "%s: the credential config has no audience" $where) $cfg.audience }}
{{- $file = dig "credential_source" "file" "" $cfg }}
{{- if not $file }}
{{- fail (printf "%s: the credential config has no credential_source.file: create it with --credential-source-file=/var/run/secrets/pullsecret-injector/wif/%s/token" $where $name) }}
{{- end }}
{{- $key := printf "federation-%s.json" $name }}
{{- $_ := set $item "configFiles" (dict $key $c.credentialConfig) }}
{{- $_ := set $item "credentials" (dict "gcpWorkloadIdentityFederation" (dict "credentialConfigFile" (printf "%s/%s" (include "pullsecret-injector.configDir" $root) $key))) }}
{{- else }}
{{- $audience = required (printf "%s: gcpWorkloadIdentityFederation needs credentialConfig (the create-cred-config output) or audience (the provider: //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER)" $where) $c.audience }}
{{- $file = printf "/var/run/secrets/pullsecret-injector/wif/%s/token" $name }}
{{- $f := dict "audience" $audience "subjectTokenFile" $file }}
{{- if $c.serviceAccount }}{{- $_ := set $f "serviceAccount" $c.serviceAccount }}{{- end }}
{{- if $c.tokenLifetime }}{{- $_ := set $f "tokenLifetime" (toString $c.tokenLifetime) }}{{- end }}
{{- $_ := set $item "credentials" (dict "gcpWorkloadIdentityFederation" $f) }}
{{- end }}
{{- if or (not (isAbs $file)) (eq (dir $file) "/") (hasPrefix "/etc/pullsecret-injector/" $file) }}
{{- fail (printf "%s: the subject token file must be an absolute path in a directory of its own, outside /etc/pullsecret-injector (e.g. /var/run/secrets/pullsecret-injector/wif/%s/token)" $where $name) }}
{{- end }}
{{- $tokenAudience := $c.tokenAudience | default (printf "https:%s" $audience) }}
{{- $_ := set $item "projectedToken" (dict "volumeName" (printf "wif-token-%s" $name | trunc 63 | trimSuffix "-") "mountPath" (dir $file) "path" (base $file) "audience" $tokenAudience "expirationSeconds" (int ($c.tokenExpirationSeconds | default 600))) }}
{{- end }}
{{- $out = append $out $item }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Budget ("2s", "1500ms") in milliseconds: above 0, at most 25s (the binary's own limit), and
shorter than webhook.timeoutSeconds.
*/}}
{{- define "pullsecret-injector.validateBudget" -}}
{{- $b := toString .Values.provisioning.budget }}
{{- $ms := 0 }}
{{- if hasSuffix "ms" $b }}
{{- $ms = trimSuffix "ms" $b | atoi }}
{{- else if hasSuffix "s" $b }}
{{- $ms = mul (trimSuffix "s" $b | atoi) 1000 }}
{{- end }}
{{- if or (le (int $ms) 0) (gt (int $ms) 25000) }}
{{- fail (printf "provisioning.budget (%s) must be above 0 and at most 25s (the binary's limit)" $b) }}
{{- end }}
{{- if ge (int $ms) (mul (int .Values.webhook.timeoutSeconds) 1000 | int) }}
{{- fail (printf "provisioning.budget (%s) must be shorter than webhook.timeoutSeconds (%ds): the API server gives up on the webhook after timeoutSeconds" $b (int .Values.webhook.timeoutSeconds)) }}
{{- end }}
{{- end }}
