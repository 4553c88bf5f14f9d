//! Wiring checks for the Helm chart (charts/pullsecret-injector).
//!
//! The inputs are the goldens `tests/fixtures/chart/<mode>.yaml`, one per certificate mode, which
//! `.ci/helm-checks.sh` renders with `helm template psi charts/pullsecret-injector --namespace
//! pullsecret-injector` (values: `tests/fixtures/chart/values/`) and keeps in sync with the chart
//! (`UPDATE_GOLDEN=1 bash .ci/helm-checks.sh` rewrites them). Generated certificate material is
//! replaced there by a fixed base64 placeholder.
//!
//! The checks tie the chart to the binary: the container args must parse with the binary's CLI,
//! the ConfigMap must be accepted by the binary's config parser, every path the binary reads
//! must be mounted, and the webhook, Service and container ports must lead to the same listener.
//! Each test collects every problem of every mode and fails once, naming object and defect.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The goldens: one per certificate mode, and `federation` (helm certificates, keyless registries).
const MODES: &[&str] = &["helm", "certManager", "existing", "federation"];
const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-node-lease"];
const NAME_SCOPED_VERBS: &[&str] = &["get", "patch", "list", "watch"];
/// The binary's metadata-only watch of Namespaces (which exist, which are terminating, their labels).
const NAMESPACE_VERBS: [&str; 2] = ["list", "watch"];
const NON_ROOT_UID: i64 = 65532;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chart")
}

/// One rendered golden: all its objects, as JSON values.
struct Golden {
    mode: &'static str,
    objects: Vec<Value>,
}

impl Golden {
    fn load(mode: &'static str) -> Golden {
        let path = fixtures_dir().join(format!("{mode}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {} ({e}); generate it with `UPDATE_GOLDEN=1 bash .ci/helm-checks.sh`",
                path.display()
            )
        });
        let mut objects = Vec::new();
        for (i, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let value = Value::deserialize(document).unwrap_or_else(|e| {
                panic!("{}: document {i} is not valid YAML: {e}", path.display())
            });
            if !value.is_null() {
                objects.push(value);
            }
        }
        assert!(!objects.is_empty(), "{}: no objects", path.display());
        Golden { mode, objects }
    }

    fn all() -> Vec<Golden> {
        MODES.iter().map(|mode| Golden::load(mode)).collect()
    }

    fn raw(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// Every object of `kind`, deserialized into its k8s-openapi type.
    fn typed<T: DeserializeOwned>(&self, kind: &str) -> Vec<T> {
        self.raw(kind)
            .into_iter()
            .map(|v| {
                serde_json::from_value(v.clone()).unwrap_or_else(|e| {
                    panic!(
                        "[{}] {kind}/{}: does not deserialize: {e}",
                        self.mode, v["metadata"]["name"]
                    )
                })
            })
            .collect()
    }

    /// The single object of `kind`.
    fn one<T: DeserializeOwned>(&self, kind: &str) -> T {
        let mut all = self.typed::<T>(kind);
        assert_eq!(
            all.len(),
            1,
            "[{}] expected exactly one {kind}, found {}",
            self.mode,
            all.len()
        );
        all.remove(0)
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        self.typed::<Secret>("Secret")
            .into_iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
    }

    fn deployment(&self) -> Deployment {
        self.one("Deployment")
    }

    fn pod_spec(&self) -> PodSpec {
        let d = self.deployment();
        d.spec
            .template
            .spec
            .unwrap_or_else(|| panic!("[{}] Deployment has no pod template spec", self.mode))
    }

    fn container(&self) -> Container {
        let pod = self.pod_spec();
        assert_eq!(
            pod.containers.len(),
            1,
            "[{}] Deployment: expected one container",
            self.mode
        );
        pod.containers.into_iter().next().unwrap()
    }

    fn release_namespace(&self) -> String {
        self.deployment()
            .metadata
            .namespace
            .unwrap_or_else(|| panic!("[{}] Deployment has no metadata.namespace", self.mode))
    }

    /// The text of config.yaml in the chart's ConfigMap.
    fn config_text(&self) -> String {
        let cm: ConfigMap = self.one("ConfigMap");
        cm.data
            .and_then(|d| d.get(&self.config_file_name()).cloned())
            .unwrap_or_else(|| {
                panic!(
                    "[{}] ConfigMap has no key {:?} (the file --config names)",
                    self.mode,
                    self.config_file_name()
                )
            })
    }

    fn config(&self) -> Value {
        serde_norway::from_str(&self.config_text())
            .unwrap_or_else(|e| panic!("[{}] ConfigMap config.yaml is not YAML: {e}", self.mode))
    }

    fn args(&self) -> Vec<String> {
        self.container().args.unwrap_or_default()
    }

    fn config_file_name(&self) -> String {
        let config = arg_value(&self.args(), "--config")
            .unwrap_or_else(|| panic!("[{}] container args have no --config", self.mode));
        Path::new(&config)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The values file this golden was rendered with, if any.
    fn values(&self) -> Value {
        let path = fixtures_dir()
            .join("values")
            .join(format!("{}.yaml", self.mode));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            }
            Err(_) => Value::Null,
        }
    }
}

/// Value of `--flag value` or `--flag=value` in an argument list.
fn arg_value(args: &[String], flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&prefix).map(str::to_owned)
        }
    })
}

fn port_of(listen: &str) -> Option<i32> {
    listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// Collects problems; `finish` fails the test listing all of them.
#[derive(Default)]
struct Problems(Vec<String>);

/// `check!(problems, mode, condition, "format", args...)`: records the message when the condition
/// is false (the message is only built then).
macro_rules! check {
    ($p:expr, $mode:expr, $ok:expr, $($msg:tt)+) => {
        if !$ok {
            $p.0.push(format!("[{}] {}", $mode, format!($($msg)+)));
        }
    };
}

impl Problems {
    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} problem(s):\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

#[test]
fn every_golden_parses_into_kubernetes_types() {
    for g in Golden::all() {
        // Deserializing is the check: every built-in kind into its k8s-openapi type.
        let _: Deployment = g.one("Deployment");
        let _: Service = g.one("Service");
        let _: ServiceAccount = g.one("ServiceAccount");
        let _: ConfigMap = g.one("ConfigMap");
        let _: Vec<Secret> = g.typed("Secret");
        let _: MutatingWebhookConfiguration = g.one("MutatingWebhookConfiguration");
        let _: ClusterRole = g.one("ClusterRole");
        let _: ClusterRoleBinding = g.one("ClusterRoleBinding");
        let _: PodDisruptionBudget = g.one("PodDisruptionBudget");
        // Evaluated in tests/admission_policy.rs.
        let _: ValidatingAdmissionPolicy = g.one("ValidatingAdmissionPolicy");
        let _: ValidatingAdmissionPolicyBinding = g.one("ValidatingAdmissionPolicyBinding");
        let _: Vec<NetworkPolicy> = g.typed("NetworkPolicy");
        let known = [
            "Deployment",
            "Service",
            "ServiceAccount",
            "ConfigMap",
            "Secret",
            "MutatingWebhookConfiguration",
            "ClusterRole",
            "ClusterRoleBinding",
            "PodDisruptionBudget",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "NetworkPolicy",
            // CRD kinds, left as JSON values.
            "Issuer",
            "Certificate",
            "ServiceMonitor",
        ];
        for o in &g.objects {
            let kind = o["kind"].as_str().unwrap_or_default();
            assert!(
                known.contains(&kind),
                "[{}] unexpected kind {kind:?} in the golden",
                g.mode
            );
        }
    }
}

#[test]
fn webhook_reaches_the_container_through_the_service() {
    let mut p = Problems::default();
    for g in Golden::all() {
        let m = g.mode;
        let svc: Service = g.one("Service");
        let svc_name = svc.metadata.name.clone().unwrap_or_default();
        let svc_ns = svc.metadata.namespace.clone().unwrap_or_default();
        let svc_spec = svc.spec.clone().unwrap_or_default();
        let mwc: MutatingWebhookConfiguration = g.one("MutatingWebhookConfiguration");
        let hooks = mwc.webhooks.unwrap_or_default();
        check!(
            p,
            m,
            hooks.len() == 1,
            "MutatingWebhookConfiguration: expected 1 webhook, found {}",
            hooks.len()
        );
        let Some(hook) = hooks.first() else { continue };
        let Some(target) = hook.client_config.service.as_ref() else {
            check!(
                p,
                m,
                false,
                "webhook {}: clientConfig has no service",
                hook.name
            );
            continue;
        };
        check!(
            p,
            m,
            hook.client_config.url.is_none(),
            "webhook {}: clientConfig.url must not be set",
            hook.name
        );
        check!(
            p,
            m,
            target.name == svc_name,
            "webhook {}: clientConfig.service.name {:?} != Service {:?}",
            hook.name,
            target.name,
            svc_name
        );
        check!(
            p,
            m,
            target.namespace == svc_ns,
            "webhook {}: clientConfig.service.namespace {:?} != Service namespace {:?}",
            hook.name,
            target.namespace,
            svc_ns
        );
        check!(
            p,
            m,
            target.path.as_deref() == Some("/mutate"),
            "webhook {}: clientConfig.service.path is {:?}, the binary serves POST /mutate",
            hook.name,
            target.path
        );
        let port = target.port.unwrap_or(443);
        check!(
            p,
            m,
            port == 443,
            "webhook {}: clientConfig.service.port is {port}, expected 443",
            hook.name
        );
        let svc_port = svc_spec.ports.iter().flatten().find(|sp| sp.port == port);
        let Some(svc_port) = svc_port else {
            check!(
                p,
                m,
                false,
                "Service {svc_name}: no port {port} (the webhook's clientConfig.service.port)"
            );
            continue;
        };

        let container = g.container();
        let ports = container.ports.clone().unwrap_or_default();
        let target_port = match &svc_port.target_port {
            Some(IntOrString::String(name)) => ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some(name.as_str())),
            Some(IntOrString::Int(n)) => ports.iter().find(|cp| cp.container_port == *n),
            None => ports.iter().find(|cp| cp.container_port == port),
        };
        check!(
            p,
            m,
            svc_port.target_port == Some(IntOrString::String("https".into())),
            "Service {svc_name}: port {port} targetPort is {:?}, expected the named port \"https\"",
            svc_port.target_port
        );
        let Some(target_port) = target_port else {
            check!(
                p,
                m,
                false,
                "Service {svc_name}: targetPort {:?} matches no containerPort",
                svc_port.target_port
            );
            continue;
        };
        check!(
            p,
            m,
            target_port.container_port == 8443,
            "Deployment: containerPort https is {}, expected 8443",
            target_port.container_port
        );
        let listen = arg_value(&g.args(), "--listen");
        check!(
            p,
            m,
            listen.as_deref().and_then(port_of) == Some(target_port.container_port),
            "Deployment: --listen {:?} does not listen on the Service's target containerPort {}",
            listen,
            target_port.container_port
        );

        // The Service selects the Deployment's Pods.
        let d = g.deployment();
        let selector = svc_spec.selector.clone().unwrap_or_default();
        check!(
            p,
            m,
            labels_match(&selector, &pod_labels(&d)),
            "Service {svc_name}: selector {selector:?} does not select the Deployment's pod labels"
        );

        // Metrics, when enabled: --metrics-listen, containerPort "metrics" and the Service port
        // agree.
        if let Some(metrics) = arg_value(&g.args(), "--metrics-listen") {
            let mp = ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some("metrics"));
            check!(
                p,
                m,
                mp.map(|cp| cp.container_port) == port_of(&metrics),
                "Deployment: --metrics-listen {metrics} does not match containerPort \"metrics\" {:?}",
                mp.map(|cp| cp.container_port)
            );
            let sp = svc_spec
                .ports
                .iter()
                .flatten()
                .find(|sp| sp.name.as_deref() == Some("metrics"));
            check!(
                p,
                m,
                sp.is_some_and(|sp| sp.target_port == Some(IntOrString::String("metrics".into()))),
                "Service {svc_name}: no port \"metrics\" targeting the container's metrics port"
            );
        }

        // CA trust: caBundle from the chart (helm, existing) or injected by cert-manager.
        if m == "certManager" {
            let annotations = mwc.metadata.annotations.clone().unwrap_or_default();
            let inject = annotations
                .get("cert-manager.io/inject-ca-from")
                .cloned()
                .unwrap_or_default();
            let cert_names: Vec<String> = g
                .raw("Certificate")
                .iter()
                .map(|c| {
                    format!(
                        "{}/{}",
                        c["metadata"]["namespace"].as_str().unwrap_or(""),
                        c["metadata"]["name"].as_str().unwrap_or("")
                    )
                })
                .collect();
            check!(
                p,
                m,
                cert_names.contains(&inject),
                "MutatingWebhookConfiguration: cert-manager.io/inject-ca-from {inject:?} names none of the Certificates {cert_names:?}"
            );
        } else {
            check!(
                p,
                m,
                hook.client_config
                    .ca_bundle
                    .as_ref()
                    .is_some_and(|b| !b.0.is_empty()),
                "webhook {}: clientConfig.caBundle is empty",
                hook.name
            );
        }
    }
    p.finish();
}

#[test]
fn container_args_parse_with_the_binary_cli() {
    let mut p = Problems::default();
    for g in Golden::all() {
        let args = g.args();
        // The container runs the image's ENTRYPOINT with these args appended.
        let parsed = pullsecret_injector::cli::Cli::try_parse_from(
            image_entrypoint().into_iter().chain(args.iter().cloned()),
        );
        check!(
            p,
            g.mode,
            parsed.is_ok(),
            "Deployment: container args {args:?} are rejected by the binary's CLI: {}",
            parsed.as_ref().err().unwrap()
        );
        check!(
            p,
            g.mode,
            args.first().map(String::as_str) != Some("serve"),
            "Deployment: the image's ENTRYPOINT already says `serve`; args must not repeat it: {args:?}"
        );
        for flag in ["--config", "--tls-dir", "--listen", "--log-format"] {
            check!(
                p,
                g.mode,
                arg_value(&args, flag).is_some(),
                "Deployment: container args lack {flag}: {args:?}"
            );
        }
        check!(
            p,
            g.mode,
            arg_value(&args, "--log-format").as_deref() == Some("json"),
            "Deployment: --log-format should be json: {args:?}"
        );
        let env: Vec<String> = g
            .container()
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.name)
            .collect();
        for var in [
            "PULLSECRET_INJECTOR_CONFIG",
            "PULLSECRET_INJECTOR_TLS_DIR",
            "PULLSECRET_INJECTOR_LISTEN",
            "PULLSECRET_INJECTOR_LOG_FORMAT",
        ] {
            check!(
                p,
                g.mode,
                !env.iter().any(|e| e == var),
                "Deployment: {var} is set in env; the chart passes args"
            );
        }
    }
    p.finish();
}

#[test]
fn webhook_rules_and_policies() {
    let mut p = Problems::default();
    for g in Golden::all() {
        let m = g.mode;
        let mwc: MutatingWebhookConfiguration = g.one("MutatingWebhookConfiguration");
        for hook in mwc.webhooks.unwrap_or_default() {
            let n = hook.name.clone();
            check!(
                p,
                m,
                hook.side_effects == "NoneOnDryRun",
                "webhook {n}: sideEffects is {:?}, expected NoneOnDryRun",
                hook.side_effects
            );
            check!(
                p,
                m,
                hook.failure_policy.as_deref() == Some("Ignore"),
                "webhook {n}: failurePolicy is {:?}, the default values must give Ignore",
                hook.failure_policy
            );
            check!(
                p,
                m,
                hook.admission_review_versions == ["v1"],
                "webhook {n}: admissionReviewVersions is {:?}, expected [v1]",
                hook.admission_review_versions
            );
            check!(
                p,
                m,
                hook.timeout_seconds.is_some_and(|t| (1..=30).contains(&t)),
                "webhook {n}: timeoutSeconds {:?} outside 1..=30",
                hook.timeout_seconds
            );
            check!(
                p,
                m,
                hook.reinvocation_policy.as_deref() == Some("IfNeeded"),
                "webhook {n}: reinvocationPolicy is {:?}, expected IfNeeded",
                hook.reinvocation_policy
            );
            check!(
                p,
                m,
                hook.match_policy.as_deref() == Some("Equivalent"),
                "webhook {n}: matchPolicy is {:?}, expected Equivalent",
                hook.match_policy
            );
            let rules = hook.rules.clone().unwrap_or_default();
            check!(
                p,
                m,
                rules.len() == 1,
                "webhook {n}: expected exactly one rule, found {}",
                rules.len()
            );
            for r in &rules {
                let ops = r.operations.clone().unwrap_or_default();
                check!(
                    p,
                    m,
                    ops == ["CREATE"],
                    "webhook {n}: operations are {ops:?}, expected exactly [CREATE]"
                );
                let res = r.resources.clone().unwrap_or_default();
                check!(
                    p,
                    m,
                    res == ["pods"],
                    "webhook {n}: resources are {res:?}, expected exactly [pods]"
                );
                let groups = r.api_groups.clone().unwrap_or_default();
                check!(
                    p,
                    m,
                    groups == [""],
                    "webhook {n}: apiGroups are {groups:?}, expected the core group [\"\"]"
                );
                let versions = r.api_versions.clone().unwrap_or_default();
                check!(
                    p,
                    m,
                    versions == ["v1"],
                    "webhook {n}: apiVersions are {versions:?}, expected [v1]"
                );
                check!(
                    p,
                    m,
                    r.scope.as_deref() == Some("Namespaced"),
                    "webhook {n}: scope is {:?}, expected Namespaced",
                    r.scope
                );
            }

            // The opt-out label is honoured before the API server calls the webhook.
            let config = g.config();
            let opt_out = config["optOut"]["label"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let object_exprs = hook
                .object_selector
                .clone()
                .and_then(|s| s.match_expressions)
                .unwrap_or_default();
            check!(
                p,
                m,
                object_exprs.iter().any(|e| e.key == opt_out
                    && e.operator == "NotIn"
                    && e.values.as_deref() == Some(&["true".to_string()][..])),
                "webhook {n}: objectSelector does not exclude Pods labelled {opt_out}=true: {object_exprs:?}"
            );
        }
    }
    p.finish();
}

#[test]
fn namespace_selector_excludes_system_and_release_namespaces() {
    let mut p = Problems::default();
    for g in Golden::all() {
        let release_ns = g.release_namespace();
        let mwc: MutatingWebhookConfiguration = g.one("MutatingWebhookConfiguration");
        for hook in mwc.webhooks.unwrap_or_default() {
            let exprs = hook
                .namespace_selector
                .clone()
                .and_then(|s| s.match_expressions)
                .unwrap_or_default();
            let excluded: BTreeSet<String> = exprs
                .iter()
                .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
                .flat_map(|e| e.values.clone().unwrap_or_default())
                .collect();
            for ns in SYSTEM_NAMESPACES
                .iter()
                .map(|s| s.to_string())
                .chain([release_ns.clone()])
            {
                check!(
                    p,
                    g.mode,
                    excluded.contains(&ns),
                    "webhook {}: namespaceSelector does not exclude namespace {ns:?} (kubernetes.io/metadata.name NotIn {excluded:?})",
                    hook.name
                );
            }
            // Everything the config skips is also excluded before the API server calls the webhook.
            for ns in g.config()["skipNamespaces"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                check!(
                    p,
                    g.mode,
                    excluded.contains(ns),
                    "webhook {}: skipNamespaces has {ns:?} but the namespaceSelector does not exclude it",
                    hook.name
                );
            }
        }
        let config = g.config();
        let skip_ns: Vec<&str> = config["skipNamespaces"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        check!(
            p,
            g.mode,
            skip_ns.contains(&release_ns.as_str()),
            "ConfigMap: skipNamespaces {skip_ns:?} does not contain the release namespace {release_ns:?}"
        );
    }
    p.finish();
}

/// Label sets that probe a selector: one that meets every requirement it states (matchLabels, In
/// with its first value, Exists) and, for each requirement, one that breaks just that requirement.
fn probe_label_sets(selector: &LabelSelector) -> Vec<BTreeMap<String, String>> {
    let labels = selector.match_labels.clone().unwrap_or_default();
    let exprs = selector.match_expressions.clone().unwrap_or_default();
    let mut meets = labels.clone();
    for e in &exprs {
        let first = e.values.iter().flatten().next().cloned();
        match (e.operator.as_str(), first) {
            ("In", Some(v)) => {
                meets.insert(e.key.clone(), v);
            }
            ("Exists", _) => {
                meets.insert(e.key.clone(), "x".into());
            }
            _ => {}
        }
    }
    let mut sets = vec![BTreeMap::new(), meets.clone()];
    for key in labels.keys() {
        let mut broken = meets.clone();
        broken.remove(key);
        sets.push(broken);
    }
    for e in &exprs {
        let mut broken = meets.clone();
        match e.operator.as_str() {
            "In" | "Exists" => {
                broken.remove(&e.key);
            }
            // A value the NotIn lists, or the label DoesNotExist forbids.
            _ => {
                let v = e.values.iter().flatten().next().cloned();
                broken.insert(e.key.clone(), v.unwrap_or_else(|| "x".into()));
            }
        }
        sets.push(broken);
    }
    sets
}

/// The webhook's namespaceSelector and the binary's config (skipNamespaces, namespaceSelector) are
/// rendered from the same values and must select the same namespaces: read the config with the
/// binary's own parser, split the webhook's selector into its `kubernetes.io/metadata.name NotIn`
/// skip list and the rest, compare both halves, then compare the two decisions on probe namespaces.
#[test]
fn config_and_webhook_select_the_same_namespaces() {
    const NAME_LABEL: &str = "kubernetes.io/metadata.name";
    let mut p = Problems::default();
    let mut opt_in_modes = 0;
    for g in Golden::all() {
        let m = g.mode;
        let config = match pullsecret_injector::config::Config::from_yaml_str(&g.config_text()) {
            Ok(config) => config,
            Err(err) => {
                check!(
                    p,
                    m,
                    false,
                    "ConfigMap config.yaml is rejected by the binary: {err}"
                );
                continue;
            }
        };
        let mwc: MutatingWebhookConfiguration = g.one("MutatingWebhookConfiguration");
        for hook in mwc.webhooks.unwrap_or_default() {
            let n = &hook.name;
            let Some(selector) = hook.namespace_selector.clone() else {
                check!(p, m, false, "webhook {n}: no namespaceSelector");
                continue;
            };
            let (skips, rest): (Vec<_>, Vec<_>) = selector
                .match_expressions
                .clone()
                .unwrap_or_default()
                .into_iter()
                .partition(|e| e.key == NAME_LABEL && e.operator == "NotIn");
            let webhook_skips: BTreeSet<String> = skips
                .into_iter()
                .flat_map(|e| e.values.unwrap_or_default())
                .collect();
            let config_skips: BTreeSet<String> = config.skip_namespaces.iter().cloned().collect();
            check!(
                p,
                m,
                webhook_skips == config_skips,
                "webhook {n}: namespaceSelector skips {webhook_skips:?}, the config skips {config_skips:?}"
            );
            let opt_in = LabelSelector {
                match_labels: selector.match_labels.clone().filter(|l| !l.is_empty()),
                match_expressions: Some(rest).filter(|r| !r.is_empty()),
            };
            let webhook_opt_in = if opt_in == LabelSelector::default() {
                None
            } else {
                match kube::core::Selector::try_from(opt_in.clone()) {
                    Ok(s) => Some(s),
                    Err(err) => {
                        check!(
                            p,
                            m,
                            false,
                            "webhook {n}: namespaceSelector {opt_in:?}: {err}"
                        );
                        continue;
                    }
                }
            };
            opt_in_modes += usize::from(webhook_opt_in.is_some());
            check!(
                p,
                m,
                webhook_opt_in == config.namespace_selector,
                "webhook {n}: opt-in part of the namespaceSelector {webhook_opt_in:?} differs from the config's namespaceSelector {:?}",
                config.namespace_selector
            );

            // The same decision for namespaces inside and outside the skip list, with label sets
            // that meet or break each requirement. The API server matches the webhook's selector
            // against the namespace's labels, which always include kubernetes.io/metadata.name.
            let whole = match kube::core::Selector::try_from(selector.clone()) {
                Ok(s) => s,
                Err(err) => {
                    check!(
                        p,
                        m,
                        false,
                        "webhook {n}: namespaceSelector does not parse: {err}"
                    );
                    continue;
                }
            };
            let mut names: Vec<String> = config_skips.iter().cloned().collect();
            names.extend(["default".to_string(), "team-a".to_string()]);
            let (mut eligible, mut ineligible) = (0, 0);
            for ns in &names {
                for labels in probe_label_sets(&opt_in) {
                    let binary = config.namespace_is_eligible(ns, &labels);
                    let mut with_name = labels.clone();
                    with_name.insert(NAME_LABEL.into(), ns.clone());
                    let api_server = kube::core::SelectorExt::matches(&whole, &with_name);
                    check!(
                        p,
                        m,
                        binary == api_server,
                        "namespace {ns} with labels {labels:?}: the binary says eligible={binary}, the webhook's namespaceSelector matches={api_server}"
                    );
                    if binary {
                        eligible += 1;
                    } else {
                        ineligible += 1;
                    }
                }
            }
            check!(
                p,
                m,
                eligible > 0 && ineligible > 0,
                "the probe namespaces were all eligible or all not ({eligible} / {ineligible}): the comparison proves nothing"
            );
        }
    }
    // The goldens cover the opt-in selector (certManager: webhook.namespaceSelector.optIn; existing:
    // namespaceSelector with matchLabels and matchExpressions) and its absence (helm).
    assert!(
        opt_in_modes >= 2,
        "expected at least two goldens with an opt-in namespaceSelector, found {opt_in_modes}"
    );
    p.finish();
}

/// When enabled, the NetworkPolicy selects the webhook Pods and lets in exactly the configured
/// sources on ports the container really listens on: the API server on the port the Service
/// targets, the kubelet on the probes' port, the metrics scrapers on the metrics port.
#[test]
fn network_policy_ports_match_the_container_ports() {
    let mut p = Problems::default();
    let mut rendered = 0;
    for g in Golden::all() {
        let m = g.mode;
        let values = g.values();
        let enabled = values["networkPolicy"]["enabled"].as_bool() == Some(true);
        let policies: Vec<NetworkPolicy> = g.typed("NetworkPolicy");
        check!(
            p,
            m,
            policies.len() == usize::from(enabled),
            "networkPolicy.enabled={enabled} but {} NetworkPolicy objects are rendered",
            policies.len()
        );
        let Some(np) = policies.into_iter().next() else {
            continue;
        };
        rendered += 1;
        let spec = np.spec.unwrap_or_default();
        let selector = spec
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone())
            .unwrap_or_default();
        check!(
            p,
            m,
            labels_match(&selector, &pod_labels(&g.deployment())),
            "NetworkPolicy: podSelector {selector:?} does not select the Deployment's Pods"
        );
        check!(
            p,
            m,
            spec.policy_types.as_deref() == Some(&["Ingress".to_string()][..]),
            "NetworkPolicy: policyTypes {:?}, expected [Ingress]",
            spec.policy_types
        );

        let container = g.container();
        let ports = container.ports.clone().unwrap_or_default();
        // A NetworkPolicy port (a container port's name or number) to the container port number.
        let resolve = |port: &IntOrString| match port {
            IntOrString::String(name) => ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .map(|cp| cp.container_port),
            IntOrString::Int(n) => ports
                .iter()
                .find(|cp| cp.container_port == *n)
                .map(|cp| cp.container_port),
        };
        // (container port, peer) for every rule, as JSON peers for comparison with the values.
        let mut allowed: Vec<(i32, Value)> = Vec::new();
        for (i, rule) in spec.ingress.clone().unwrap_or_default().iter().enumerate() {
            let from = rule.from.clone().unwrap_or_default();
            check!(
                p,
                m,
                !from.is_empty(),
                "NetworkPolicy ingress rule {i}: no `from`, so it lets in every source"
            );
            let rule_ports = rule.ports.clone().unwrap_or_default();
            check!(
                p,
                m,
                !rule_ports.is_empty(),
                "NetworkPolicy ingress rule {i}: no `ports`, so it opens every port"
            );
            for port in &rule_ports {
                check!(
                    p,
                    m,
                    port.protocol.as_deref() == Some("TCP") && port.end_port.is_none(),
                    "NetworkPolicy ingress rule {i}: port {port:?} should be one TCP port"
                );
                let Some(number) = port.port.as_ref().and_then(&resolve) else {
                    check!(
                        p,
                        m,
                        false,
                        "NetworkPolicy ingress rule {i}: port {:?} is none of the container's ports {:?}",
                        port.port,
                        ports
                            .iter()
                            .map(|cp| (&cp.name, cp.container_port))
                            .collect::<Vec<_>>()
                    );
                    continue;
                };
                for peer in &from {
                    allowed.push((number, serde_json::to_value(peer).unwrap()));
                }
            }
        }
        let ip_blocks = |key: &str| -> Vec<Value> {
            values["networkPolicy"][key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|cidr| serde_json::json!({"ipBlock": {"cidr": cidr}}))
                .collect()
        };
        let peers_on = |port: i32| -> Vec<&Value> {
            allowed
                .iter()
                .filter(|(n, _)| *n == port)
                .map(|(_, peer)| peer)
                .collect()
        };

        // The API server: on the container port the Service's webhook port targets.
        let svc: Service = g.one("Service");
        let webhook_port = svc
            .spec
            .and_then(|s| s.ports)
            .unwrap_or_default()
            .into_iter()
            .find(|sp| sp.port == 443)
            .and_then(|sp| sp.target_port)
            .and_then(|tp| resolve(&tp));
        let api_server = ip_blocks("apiServerCIDRs");
        check!(
            p,
            m,
            !api_server.is_empty(),
            "networkPolicy.apiServerCIDRs is empty in the values"
        );
        match webhook_port {
            None => check!(
                p,
                m,
                false,
                "the Service's port 443 targets no container port"
            ),
            Some(port) => {
                for peer in &api_server {
                    check!(
                        p,
                        m,
                        peers_on(port).contains(&peer),
                        "NetworkPolicy: the API server source {peer} is not let in on the webhook port {port}"
                    );
                }
            }
        }

        // The kubelet: on the probes' port.
        let kubelet = ip_blocks("kubeletCIDRs");
        check!(
            p,
            m,
            !kubelet.is_empty(),
            "the NetworkPolicy golden should set networkPolicy.kubeletCIDRs"
        );
        for probe in [&container.liveness_probe, &container.readiness_probe] {
            let port = probe
                .as_ref()
                .and_then(|pr| pr.http_get.as_ref())
                .and_then(|h| resolve(&h.port));
            let Some(port) = port else {
                check!(
                    p,
                    m,
                    false,
                    "a probe's port is none of the container's ports"
                );
                continue;
            };
            for peer in &kubelet {
                check!(
                    p,
                    m,
                    peers_on(port).contains(&peer),
                    "NetworkPolicy: the kubelet source {peer} is not let in on the probe port {port}"
                );
            }
        }

        // The metrics scrapers: on the port --metrics-listen binds.
        let metrics_from: Vec<Value> = values["networkPolicy"]["metricsFrom"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let metrics_port = arg_value(&g.args(), "--metrics-listen")
            .as_deref()
            .and_then(port_of);
        check!(
            p,
            m,
            metrics_port.is_some() && !metrics_from.is_empty(),
            "the NetworkPolicy golden should serve metrics and set networkPolicy.metricsFrom"
        );
        if let Some(port) = metrics_port {
            for peer in &metrics_from {
                check!(
                    p,
                    m,
                    peers_on(port).contains(&peer),
                    "NetworkPolicy: the metrics source {peer} is not let in on the metrics port {port}"
                );
            }
        }

        // Nothing else: every (port, peer) is one of the above.
        for (port, peer) in &allowed {
            let expected = (Some(*port) == webhook_port
                && (api_server.contains(peer) || kubelet.contains(peer)))
                || (Some(*port) == metrics_port && metrics_from.contains(peer));
            check!(
                p,
                m,
                expected,
                "NetworkPolicy lets {peer} in on port {port}, which no value asks for"
            );
        }
    }
    assert!(
        rendered > 0,
        "no golden enables networkPolicy: the NetworkPolicy is not checked"
    );
    p.finish();
}

#[test]
fn cluster_role_grants_only_what_the_binary_needs() {
    let mut p = Problems::default();
    for g in Golden::all() {
        let m = g.mode;
        let role: ClusterRole = g.one("ClusterRole");
        let role_name = role.metadata.name.clone().unwrap_or_default();
        let config = g.config();
        let secret_names: BTreeSet<String> = config["registries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["secretName"].as_str().map(str::to_owned))
            .collect();
        check!(
            p,
            m,
            !secret_names.is_empty(),
            "ConfigMap: no registry secretName"
        );

        let mut create_unscoped = false;
        let mut scoped_verbs = BTreeSet::new();
        let mut namespace_rules = 0;
        let mut event_rules = 0;
        for (i, rule) in role.rules.clone().unwrap_or_default().iter().enumerate() {
            let groups = rule.api_groups.clone().unwrap_or_default();
            let resources = rule.resources.clone().unwrap_or_default();
            let names: BTreeSet<String> = rule
                .resource_names
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            let all = groups
                .iter()
                .chain(&resources)
                .chain(&rule.verbs)
                .chain(&names);
            check!(
                p,
                m,
                !all.clone().any(|s| s.contains('*')),
                "ClusterRole {role_name} rule {i}: wildcard in {rule:?}"
            );
            check!(
                p,
                m,
                rule.non_resource_urls.is_none(),
                "ClusterRole {role_name} rule {i}: nonResourceURLs granted"
            );
            if groups == [""] && resources == ["namespaces"] {
                // The namespace watch: exactly list and watch, on every namespace.
                let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
                check!(
                    p,
                    m,
                    verbs == BTreeSet::from(NAMESPACE_VERBS) && names.is_empty(),
                    "ClusterRole {role_name} rule {i}: namespaces must get exactly {NAMESPACE_VERBS:?} without resourceNames, got {:?} on {names:?}",
                    rule.verbs
                );
                namespace_rules += 1;
                continue;
            }
            if groups == [""] && resources == ["events"] {
                // The registry check's Events: create only, in any namespace.
                check!(
                    p,
                    m,
                    rule.verbs == ["create"] && names.is_empty(),
                    "ClusterRole {role_name} rule {i}: events must get exactly [\"create\"] without resourceNames, got {:?} on {names:?}",
                    rule.verbs
                );
                event_rules += 1;
                continue;
            }
            check!(
                p,
                m,
                groups == [""] && resources == ["secrets"],
                "ClusterRole {role_name} rule {i}: grants {groups:?}/{resources:?}; only core secrets, the namespace watch and Event creation are allowed"
            );
            for verb in &rule.verbs {
                if verb == "create" {
                    check!(
                        p,
                        m,
                        names.is_empty(),
                        "ClusterRole {role_name} rule {i}: create with resourceNames never matches (RBAC cannot scope create by name)"
                    );
                    create_unscoped |= names.is_empty();
                } else if NAME_SCOPED_VERBS.contains(&verb.as_str()) {
                    check!(
                        p,
                        m,
                        names == secret_names,
                        "ClusterRole {role_name} rule {i}: {verb} must be limited to resourceNames {secret_names:?} (the registries' secretNames), got {names:?}"
                    );
                    scoped_verbs.insert(verb.clone());
                } else {
                    check!(
                        p,
                        m,
                        false,
                        "ClusterRole {role_name} rule {i}: verb {verb:?} is not needed by the binary"
                    );
                }
            }
        }
        check!(
            p,
            m,
            create_unscoped,
            "ClusterRole {role_name}: no rule grants create on secrets"
        );
        check!(
            p,
            m,
            namespace_rules == 1,
            "ClusterRole {role_name}: expected one rule for the namespace list/watch, found {namespace_rules}"
        );
        check!(
            p,
            m,
            event_rules == 1,
            "ClusterRole {role_name}: expected one rule for creating Events, found {event_rules}"
        );
        let missing: Vec<_> = NAME_SCOPED_VERBS
            .iter()
            .filter(|v| !scoped_verbs.contains(**v))
            .collect();
        check!(
            p,
            m,
            missing.is_empty(),
            "ClusterRole {role_name}: verbs {missing:?} on the pull Secrets are missing"
        );

        // The binding gives the role to the Deployment's ServiceAccount.
        let binding: ClusterRoleBinding = g.one("ClusterRoleBinding");
        check!(
            p,
            m,
            binding.role_ref.kind == "ClusterRole" && binding.role_ref.name == role_name,
            "ClusterRoleBinding: roleRef {:?} is not ClusterRole {role_name}",
            binding.role_ref
        );
        let sa: ServiceAccount = g.one("ServiceAccount");
        let sa_name = sa.metadata.name.clone().unwrap_or_default();
        let subjects = binding.subjects.clone().unwrap_or_default();
        check!(
            p,
            m,
            subjects.len() == 1
                && subjects[0].kind == "ServiceAccount"
                && subjects[0].name == sa_name
                && subjects[0].namespace.as_deref() == Some(g.release_namespace().as_str()),
            "ClusterRoleBinding: subjects {subjects:?} are not exactly ServiceAccount {sa_name} in the release namespace"
        );
        let pod = g.pod_spec();
        check!(
            p,
            m,
            pod.service_account_name.as_deref() == Some(sa_name.as_str()),
            "Deployment: serviceAccountName {:?} is not the chart's ServiceAccount {sa_name:?}",
            pod.service_account_name
        );
        check!(
            p,
            m,
            pod.automount_service_account_token == Some(true),
            "Deployment: automountServiceAccountToken must be true (the webhook talks to the API server)"
        );
    }
    p.finish();
}

#[test]
fn config_map_is_accepted_by_the_binary() {
    let mut p = Problems::default();
    for g in Golden::all() {
        let text = g.config_text();
        match pullsecret_injector::config::Config::from_yaml_str(&text) {
            Ok(_) => {}
            Err(err) => check!(
                p,
                g.mode,
                false,
                "ConfigMap config.yaml is rejected by the binary: {err}\n---\n{text}"
            ),
        }
    }
    p.finish();
}

/// Every string under a registry's `credentials` whose key names a file (`file`,
/// `usernameFile`, ...).
fn credential_files(config: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, registry: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match v.as_str() {
                        Some(path) if k == "file" || k.ends_with("File") => {
                            out.push((registry.to_owned(), path.to_owned()))
                        }
                        _ => walk(v, registry, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, registry, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for r in config["registries"].as_array().into_iter().flatten() {
        walk(
            &r["credentials"],
            r["name"].as_str().unwrap_or("?"),
            &mut out,
        );
    }
    out
}

#[test]
fn volumes_cover_config_tls_and_credentials() {
    let mut p = Problems::default();
    for g in Golden::all() {
        let m = g.mode;
        let pod = g.pod_spec();
        let container = g.container();
        let mounts = container.volume_mounts.clone().unwrap_or_default();
        let volumes = pod.volumes.clone().unwrap_or_default();
        for mount in &mounts {
            check!(
                p,
                m,
                mount.sub_path.is_none() && mount.sub_path_expr.is_none(),
                "Deployment: volumeMount {} uses subPath; kubelet's updates would never reach the process",
                mount.name
            );
            check!(
                p,
                m,
                volumes.iter().any(|v| v.name == mount.name),
                "Deployment: volumeMount {} has no volume",
                mount.name
            );
        }
        // The mount whose directory holds `path` (longest prefix), with the path relative to it.
        let mount_for = |path: &str| {
            mounts
                .iter()
                .filter_map(|mt| {
                    let dir = mt.mount_path.trim_end_matches('/');
                    let rest = path.strip_prefix(dir)?.strip_prefix('/')?;
                    Some((mt, rest.to_owned()))
                })
                .max_by_key(|(mt, _)| mt.mount_path.len())
        };
        let volume = |name: &str| volumes.iter().find(|v| v.name == name).cloned();

        // --config: a directory mount of the chart's ConfigMap that holds the file.
        let args = g.args();
        let config_path = arg_value(&args, "--config").unwrap_or_default();
        match mount_for(&config_path) {
            None => check!(
                p,
                m,
                false,
                "Deployment: no volumeMount covers --config {config_path}"
            ),
            Some((mount, rest)) => {
                let cm: ConfigMap = g.one("ConfigMap");
                let source = volume(&mount.name).and_then(|v| v.config_map);
                check!(
                    p,
                    m,
                    source.as_ref().map(|s| s.name.as_str()) == cm.metadata.name.as_deref(),
                    "Deployment: volume {} mounted for --config is not the chart's ConfigMap {:?}",
                    mount.name,
                    cm.metadata.name
                );
                check!(
                    p,
                    m,
                    cm.data.as_ref().is_some_and(|d| d.contains_key(&rest)),
                    "ConfigMap {:?}: no key {rest:?} for --config {config_path}",
                    cm.metadata.name
                );
            }
        }

        // --tls-dir: a directory mount of the serving-certificate Secret.
        let tls_dir = arg_value(&args, "--tls-dir").unwrap_or_default();
        let tls_mount = mounts
            .iter()
            .find(|mt| mt.mount_path.trim_end_matches('/') == tls_dir.trim_end_matches('/'));
        let tls_secret_name = tls_mount
            .and_then(|mt| volume(&mt.name))
            .and_then(|v| v.secret)
            .and_then(|s| s.secret_name);
        check!(
            p,
            m,
            tls_secret_name.is_some(),
            "Deployment: --tls-dir {tls_dir} is not a Secret volume mount"
        );
        let tls_secret_name = tls_secret_name.unwrap_or_default();
        match m {
            "helm" | "federation" => match g.secret(&tls_secret_name) {
                None => check!(
                    p,
                    m,
                    false,
                    "Secret {tls_secret_name} (mounted at --tls-dir) is not rendered in helm mode"
                ),
                Some(s) => {
                    let data = s.data.unwrap_or_default();
                    for key in ["tls.crt", "tls.key", "ca.crt"] {
                        check!(
                            p,
                            m,
                            data.get(key).is_some_and(|b| !b.0.is_empty()),
                            "Secret {tls_secret_name}: no {key}"
                        );
                    }
                    check!(
                        p,
                        m,
                        s.type_.as_deref() == Some("kubernetes.io/tls"),
                        "Secret {tls_secret_name}: type {:?}, expected kubernetes.io/tls",
                        s.type_
                    );
                }
            },
            "certManager" => {
                let issued: Vec<&str> = g
                    .raw("Certificate")
                    .iter()
                    .filter_map(|c| c["spec"]["secretName"].as_str())
                    .collect();
                check!(
                    p,
                    m,
                    issued.contains(&tls_secret_name.as_str()),
                    "Deployment: TLS Secret {tls_secret_name} is issued by no cert-manager Certificate ({issued:?})"
                );
            }
            _ => {
                let want = g.values()["certificates"]["existingSecret"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                check!(
                    p,
                    m,
                    !want.is_empty() && tls_secret_name == want,
                    "Deployment: TLS Secret {tls_secret_name:?} is not certificates.existingSecret {want:?}"
                );
            }
        }

        // Every credential file named in the config lies in a mounted Secret that has that key.
        let config = g.config();
        let files = credential_files(&config);
        for (registry, path) in &files {
            let Some((mount, rest)) = mount_for(path) else {
                check!(
                    p,
                    m,
                    false,
                    "registry {registry}: credential file {path} is under no volumeMount"
                );
                continue;
            };
            let mounted = volume(&mount.name);
            // A federation's credential config: a key of the chart's ConfigMap (no secret in it).
            if let Some(source) = mounted.as_ref().and_then(|v| v.config_map.as_ref()) {
                let cm: ConfigMap = g.one("ConfigMap");
                check!(
                    p,
                    m,
                    Some(&source.name) == cm.metadata.name.as_ref()
                        && cm.data.as_ref().is_some_and(|d| d.contains_key(&rest)),
                    "registry {registry}: the ConfigMap has no key {rest:?} (config reads {path})"
                );
                continue;
            }
            // A federation's subject token: a projected ServiceAccount token of that file name.
            if let Some(projected) = mounted.as_ref().and_then(|v| v.projected.as_ref()) {
                let projects_it = projected.sources.iter().flatten().any(|s| {
                    s.service_account_token
                        .as_ref()
                        .is_some_and(|t| t.path == rest)
                });
                check!(
                    p,
                    m,
                    projects_it,
                    "registry {registry}: volume {} projects no ServiceAccount token to {rest:?} (for {path})",
                    mount.name
                );
                continue;
            }
            let Some(secret) = mounted.and_then(|v| v.secret) else {
                check!(
                    p,
                    m,
                    false,
                    "registry {registry}: volume {} holding {path} is not a Secret",
                    mount.name
                );
                continue;
            };
            let secret_name = secret.secret_name.clone().unwrap_or_default();
            // With items, the file name maps to a key; without, the key is the file name.
            let key = match &secret.items {
                Some(items) => match items.iter().find(|it| it.path == rest) {
                    Some(it) => it.key.clone(),
                    None => {
                        check!(
                            p,
                            m,
                            false,
                            "registry {registry}: volume {} projects no item to {rest:?} (for {path})",
                            mount.name
                        );
                        continue;
                    }
                },
                None => rest.clone(),
            };
            if let Some(s) = g.secret(&secret_name) {
                let has = s.data.as_ref().is_some_and(|d| d.contains_key(&key))
                    || s.string_data.as_ref().is_some_and(|d| d.contains_key(&key));
                check!(
                    p,
                    m,
                    has,
                    "registry {registry}: Secret {secret_name} has no key {key:?} (config reads {path})"
                );
            } else {
                // A Secret made outside the chart: its key is at least projected explicitly, so a
                // missing key stops the Pod at start instead of failing at the first request.
                check!(
                    p,
                    m,
                    secret.items.is_some(),
                    "registry {registry}: external Secret {secret_name} is mounted without items; the key {key:?} is not checked"
                );
            }
        }
        // Every registry CA bundle named in the config lies in a mounted ConfigMap that projects it.
        for r in config["registries"].as_array().into_iter().flatten() {
            let Some(path) = r["caFile"].as_str() else {
                continue;
            };
            let name = r["name"].as_str().unwrap_or("?");
            let projected = mount_for(path).and_then(|(mount, rest)| {
                let source = volume(&mount.name)?.config_map?;
                source
                    .items
                    .unwrap_or_default()
                    .iter()
                    .any(|item| item.path == rest)
                    .then_some(())
            });
            check!(
                p,
                m,
                projected.is_some(),
                "registry {name}: caFile {path} is not a projected key of a mounted ConfigMap"
            );
        }
        // And nothing is mounted for registries without credentials.
        let registries_with_files: BTreeSet<&str> = files.iter().map(|(r, _)| r.as_str()).collect();
        for r in config["registries"].as_array().into_iter().flatten() {
            let name = r["name"].as_str().unwrap_or("?");
            let has_credentials = !r["credentials"].is_null();
            check!(
                p,
                m,
                has_credentials == registries_with_files.contains(name),
                "registry {name}: credentials block and credential files disagree: {}",
                r["credentials"]
            );
        }
    }
    p.finish();
}

/// Keyless on any cluster: every federation registry's subject token file, whether the credential
/// config in the ConfigMap names it or the inline fields do, is a projected ServiceAccount token
/// of the provider's audience, short-lived; the credential configs parse with the binary and hold
/// no secret.
#[test]
fn federation_mounts_the_projected_token_where_the_credential_config_names_it() {
    use pullsecret_injector::provisioning::gcp_auth::ExternalAccount;
    let g = Golden::load("federation");
    let cm: ConfigMap = g.one("ConfigMap");
    let data = cm.data.clone().unwrap_or_default();
    let pod = g.pod_spec();
    let mounts = g.container().volume_mounts.unwrap_or_default();
    let volumes = pod.volumes.unwrap_or_default();
    let config_dir = format!(
        "{}/",
        arg_value(&g.args(), "--config")
            .and_then(|c| c.rsplit_once('/').map(|(dir, _)| dir.to_owned()))
            .unwrap_or_default()
    );
    let mut checked = 0;
    for r in g.config()["registries"].as_array().into_iter().flatten() {
        let name = r["name"].as_str().unwrap_or("?");
        let federation = &r["credentials"]["gcpWorkloadIdentityFederation"];
        if federation.is_null() {
            continue;
        }
        let (audience, token_file) = match federation["credentialConfigFile"].as_str() {
            Some(file) => {
                let key = file.strip_prefix(&config_dir).unwrap_or(file);
                let text = data
                    .get(key)
                    .unwrap_or_else(|| panic!("{name}: no ConfigMap key {key}"));
                assert!(
                    !text.contains("private_key") && !text.contains("client_secret"),
                    "{name}: a secret in the ConfigMap"
                );
                let account = ExternalAccount::parse(text.as_bytes())
                    .unwrap_or_else(|e| panic!("{name}: the binary refuses {key}: {e}"));
                (
                    account.audience().to_owned(),
                    account.subject_token_file().display().to_string(),
                )
            }
            None => (
                federation["audience"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                federation["subjectTokenFile"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
        };
        let (dir, file_name) = token_file.rsplit_once('/').expect("absolute path");
        let mount = mounts
            .iter()
            .find(|m| m.mount_path == dir)
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {dir}"));
        assert!(
            mount.read_only == Some(true) && mount.sub_path.is_none(),
            "{name}"
        );
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .expect("volume");
        let token = volume
            .projected
            .as_ref()
            .and_then(|p| p.sources.as_ref())
            .and_then(|s| s.iter().find_map(|s| s.service_account_token.clone()))
            .unwrap_or_else(|| panic!("{name}: {dir} is not a projected ServiceAccount token"));
        assert_eq!(token.path, file_name, "{name}");
        assert_eq!(
            token.audience.as_deref(),
            Some(format!("https:{audience}").as_str()),
            "{name}: the provider's default allowed audience"
        );
        let expiration = token.expiration_seconds.unwrap_or(3600);
        assert!(
            (600..=3600).contains(&expiration),
            "{name}: expirationSeconds {expiration}"
        );
        checked += 1;
    }
    assert_eq!(
        checked, 3,
        "the federation golden has three federation registries"
    );
    // Nothing of a key anywhere: no Secret carries credentials for these registries.
    for secret in g.typed::<Secret>("Secret") {
        let name = secret.metadata.name.unwrap_or_default();
        assert!(name.ends_with("-tls"), "unexpected Secret {name}");
    }
}

#[test]
fn pods_are_hardened_and_drain_gracefully() {
    let mut p = Problems::default();
    for g in Golden::all() {
        let m = g.mode;
        let pod = g.pod_spec();
        let psc = pod.security_context.clone().unwrap_or_default();
        check!(
            p,
            m,
            psc.run_as_non_root == Some(true),
            "Deployment: pod securityContext.runAsNonRoot is not true"
        );
        check!(
            p,
            m,
            psc.run_as_user == Some(NON_ROOT_UID),
            "Deployment: pod securityContext.runAsUser is {:?}, expected {NON_ROOT_UID}",
            psc.run_as_user
        );
        check!(
            p,
            m,
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()) == Some("RuntimeDefault"),
            "Deployment: pod seccompProfile is not RuntimeDefault"
        );

        let c = g.container();
        let sc = c.security_context.clone().unwrap_or_default();
        check!(
            p,
            m,
            sc.run_as_non_root == Some(true),
            "Deployment: container securityContext.runAsNonRoot is not true"
        );
        check!(
            p,
            m,
            sc.run_as_user == Some(NON_ROOT_UID),
            "Deployment: container runAsUser is {:?}, expected {NON_ROOT_UID}",
            sc.run_as_user
        );
        check!(
            p,
            m,
            sc.read_only_root_filesystem == Some(true),
            "Deployment: container readOnlyRootFilesystem is not true"
        );
        check!(
            p,
            m,
            sc.allow_privilege_escalation == Some(false),
            "Deployment: container allowPrivilegeEscalation is not false"
        );
        check!(
            p,
            m,
            sc.privileged != Some(true),
            "Deployment: container is privileged"
        );
        let drop = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.clone())
            .unwrap_or_default();
        check!(
            p,
            m,
            drop.iter().any(|d| d == "ALL"),
            "Deployment: container capabilities.drop is {drop:?}, expected ALL"
        );
        let added = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.add.clone())
            .unwrap_or_default();
        check!(
            p,
            m,
            added.is_empty(),
            "Deployment: container adds capabilities {added:?}"
        );
        check!(
            p,
            m,
            sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()) == Some("RuntimeDefault"),
            "Deployment: container seccompProfile is not RuntimeDefault"
        );

        // Probes: HTTPS on the webhook port; liveness /healthz, readiness /readyz.
        for (kind, probe, path) in [
            ("liveness", &c.liveness_probe, "/healthz"),
            ("readiness", &c.readiness_probe, "/readyz"),
        ] {
            let get = probe.as_ref().and_then(|p| p.http_get.clone());
            check!(
                p,
                m,
                get.as_ref().is_some_and(|h| {
                    h.path.as_deref() == Some(path)
                        && h.scheme.as_deref() == Some("HTTPS")
                        && (h.port == IntOrString::String("https".into())
                            || h.port == IntOrString::Int(8443))
                }),
                "Deployment: {kind}Probe should be GET {path} over HTTPS on port https, got {get:?}"
            );
        }
        // Graceful stop: a built-in sleep (no shell in the image) shorter than the grace period.
        let sleep = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref())
            .map(|s| s.seconds);
        let exec = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.exec.as_ref());
        check!(
            p,
            m,
            exec.is_none(),
            "Deployment: preStop uses exec, impossible in a distroless image"
        );
        let grace = pod.termination_grace_period_seconds.unwrap_or(30);
        check!(
            p,
            m,
            sleep.is_some_and(|s| s > 0 && s < grace),
            "Deployment: preStop.sleep.seconds {sleep:?} must be set and shorter than terminationGracePeriodSeconds {grace}"
        );

        // The PodDisruptionBudget covers the Deployment's Pods.
        let pdb: PodDisruptionBudget = g.one("PodDisruptionBudget");
        let selector = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.match_labels.clone())
            .unwrap_or_default();
        check!(
            p,
            m,
            labels_match(&selector, &pod_labels(&g.deployment())),
            "PodDisruptionBudget: selector {selector:?} does not select the Deployment's Pods"
        );
        // ...and lets a drain evict one healthy Pod: more than one replica, and a budget below it.
        let replicas = g.deployment().spec.replicas.unwrap_or(1);
        let pdb_spec = pdb.spec.clone().unwrap_or_default();
        let evictable = match (&pdb_spec.min_available, &pdb_spec.max_unavailable) {
            (Some(IntOrString::Int(min)), _) => *min < replicas,
            (None, Some(IntOrString::Int(max))) => *max >= 1,
            (None, None) => true,
            other => {
                panic!("[{m}] PodDisruptionBudget: a percentage {other:?} is not checked here")
            }
        };
        check!(
            p,
            m,
            replicas > 1 && evictable,
            "PodDisruptionBudget: with {replicas} replicas, {pdb_spec:?} blocks node drains"
        );
    }
    p.finish();
}

/// `priorityClassName` from the values reaches the Pods (the certManager golden sets one).
#[test]
fn priority_class_name_reaches_the_pods() {
    let values: Value = serde_norway::from_str(
        &std::fs::read_to_string(fixtures_dir().join("values/certManager.yaml"))
            .expect("read certManager values"),
    )
    .expect("values are YAML");
    let wanted = values["priorityClassName"]
        .as_str()
        .expect("the certManager values set priorityClassName");
    let golden = Golden::load("certManager");
    assert_eq!(
        golden.pod_spec().priority_class_name.as_deref(),
        Some(wanted)
    );
    // The default leaves it to the cluster's default PriorityClass.
    assert_eq!(Golden::load("helm").pod_spec().priority_class_name, None);
}

/// NOTES.txt shows each preset as its hosts; they must be the hosts the binary expands it to.
#[test]
fn chart_preset_hosts_are_the_binarys() {
    let helpers = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/pullsecret-injector/templates/_helpers.tpl"
    ))
    .expect("read _helpers.tpl");
    let start = "{{- define \"pullsecret-injector.presetHosts\" -}}";
    let body = helpers
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("{{- end }}"))
        .map(|(body, _)| body.trim())
        .expect("_helpers.tpl defines pullsecret-injector.presetHosts");
    let presets: BTreeMap<String, Vec<String>> =
        serde_json::from_str(body).expect("presetHosts is a JSON object of host lists");
    assert_eq!(
        presets.keys().collect::<Vec<_>>(),
        ["gcp"],
        "the binary knows preset gcp only"
    );
    assert_eq!(
        presets["gcp"],
        pullsecret_injector::config::GCP_HOST_PATTERNS
    );
}

/// The Dockerfile's ENTRYPOINT (exec form), as the argv the container starts with.
fn image_entrypoint() -> Vec<String> {
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("read Dockerfile");
    let line = dockerfile
        .lines()
        .rev()
        .find(|line| line.starts_with("ENTRYPOINT"))
        .expect("the Dockerfile has an ENTRYPOINT");
    let argv: Vec<String> = serde_json::from_str(line.trim_start_matches("ENTRYPOINT").trim())
        .expect("ENTRYPOINT is in exec form");
    assert_eq!(
        argv.last().map(String::as_str),
        Some("serve"),
        "ENTRYPOINT runs `serve`: {argv:?}"
    );
    argv
}

/// The shell commands of a Markdown file's `sh` blocks, continuation lines joined, one list per block.
fn shell_blocks(markdown: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    let mut pending = String::new();
    for line in markdown.lines() {
        let trimmed = line.trim();
        match current.as_mut() {
            None if trimmed == "```sh" => current = Some(Vec::new()),
            None => {}
            Some(_) if trimmed == "```" => blocks.push(current.take().unwrap_or_default()),
            Some(commands) => {
                let code = trimmed.split(" #").next().unwrap_or_default().trim();
                if code.starts_with('#') || code.is_empty() {
                    continue;
                }
                match code.strip_suffix('\\') {
                    Some(head) => pending.push_str(head),
                    None => {
                        pending.push_str(code);
                        commands.push(std::mem::take(&mut pending));
                    }
                }
            }
        }
    }
    blocks
}

/// The value of `-n NS` / `--namespace NS` / `--namespace=NS` in one command.
fn namespace_flag(command: &str) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    words.iter().enumerate().find_map(|(i, w)| match *w {
        "-n" | "--namespace" => words.get(i + 1).map(|s| s.to_string()),
        _ => w.strip_prefix("--namespace=").map(str::to_owned),
    })
}

/// No image is published: values.yaml has no default, and every install the READMEs show names one.
/// A Secret can only be created in a namespace that exists, so each snippet that makes one creates
/// its namespace first.
#[test]
fn install_snippets_set_the_image_and_create_the_namespace_first() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let values: Value = serde_norway::from_str(
        &std::fs::read_to_string(root.join("charts/pullsecret-injector/values.yaml"))
            .expect("read values.yaml"),
    )
    .expect("values.yaml is YAML");
    assert_eq!(
        values["image"]["repository"], "",
        "values.yaml must not default to an image that is not published"
    );

    let mut problems = Vec::new();
    let (mut installs, mut secrets) = (0, 0);
    for file in ["README.md", "charts/pullsecret-injector/README.md"] {
        let text = std::fs::read_to_string(root.join(file)).expect("read README");
        for block in shell_blocks(&text) {
            let mut namespaces = BTreeSet::new();
            for command in &block {
                if let Some(ns) = command.strip_prefix("kubectl create namespace ") {
                    namespaces.insert(ns.trim().to_owned());
                }
                if command.starts_with("helm install")
                    || command.starts_with("helm upgrade --install")
                {
                    installs += 1;
                    if !command.contains("image.repository=") {
                        problems.push(format!("{file}: `{command}` does not set image.repository"));
                    }
                }
                if command.contains(" create secret ") {
                    secrets += 1;
                    match namespace_flag(command) {
                        Some(ns) if namespaces.contains(&ns) => {}
                        Some(ns) => problems.push(format!(
                            "{file}: `{command}` comes before `kubectl create namespace {ns}` in its block"
                        )),
                        None => problems.push(format!("{file}: `{command}` names no namespace")),
                    }
                }
            }
        }
    }
    assert!(
        installs >= 4 && secrets >= 3,
        "found {installs} installs and {secrets} Secrets"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
