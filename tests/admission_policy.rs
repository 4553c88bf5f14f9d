//! The chart's ValidatingAdmissionPolicy, evaluated in-process the way the API server applies it,
//! against Secret writes by the injector's ServiceAccount and by other users.
//!
//! Inputs: the goldens `tests/fixtures/chart/<mode>.yaml` (see `tests/chart_wiring.rs`), which
//! render the policy for one (`helm`), two (`existing`) and four (`certManager`) registries. The
//! expected Secret names, skip list and ServiceAccount come from the same goldens' ConfigMap (read
//! with the binary's config parser) and ServiceAccount, so the policy is checked against what the
//! binary will write.
//!
//! CEL: the expressions are compiled and run with the `cel` crate (cel-rust, from crates.io), not
//! with Kubernetes' own CEL environment (cel-go, typed objects from the OpenAPI schema, the
//! Kubernetes function libraries). What the crate evaluates here as the API server does: `==`,
//! `!`, `&&`, `in` on a list and on a map's keys, `has()` on a field, map indexing, string `+` and
//! `?:`, with a missing field an error unless guarded by `has()`. The objects are bound as plain
//! JSON maps rather than typed objects. Kubernetes-only functions (`authorizer`, `quantity`,
//! `url`, the `strings`/`lists`/`sets` libraries, regex `matches`, ...) are not evaluated, so
//! `policy_stays_within_the_evaluated_subset` fails when an expression uses any function beyond
//! the subset above: the policy must stay simple enough for both evaluators.
//!
//! The API server's procedure, as modelled: a request is matched by `matchConstraints` (operation
//! and resource); every `matchCondition` must be true for the policy to apply (false: the request
//! is not this policy's business); then each validation must be true. A false validation denies
//! with its `messageExpression` (or `message`); an error anywhere denies too (`failurePolicy:
//! Fail`). The binding must say `validationActions: [Deny]`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use serde::Deserialize;
use serde_json::{Value, json};

const MODES: &[&str] = &["helm", "certManager", "existing"];
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// A namespace the injector acts in (in no golden's skip list).
const APP_NAMESPACE: &str = "team-a";

/// Functions and operators (as cel-rust names them) the policy may use: the subset that the crate
/// and Kubernetes evaluate alike. `has()` is a macro, expanded before this list is consulted.
const EVALUATED_SUBSET: &[&str] = &[
    "_==_", "_!=_", "!_", "_&&_", "_||_", "@in", "_?_:_", "_+_", "_[_]",
];

fn load(mode: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chart")
        .join(format!("{mode}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); generate it with `UPDATE_GOLDEN=1 bash .ci/helm-checks.sh`",
            path.display()
        )
    });
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("a golden document is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn one<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str, mode: &str) -> T {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "[{mode}] expected exactly one {kind}");
    serde_json::from_value(found[0].clone())
        .unwrap_or_else(|e| panic!("[{mode}] {kind} does not deserialize: {e}"))
}

/// What the golden says the policy must allow.
struct Expected {
    mode: &'static str,
    username: String,
    secret_names: Vec<String>,
    skip_namespaces: Vec<String>,
    release_namespace: String,
}

/// The policy as the API server holds it: compiled expressions.
#[derive(Clone)]
struct Policy {
    operations: BTreeSet<String>,
    resources: BTreeSet<String>,
    api_groups: BTreeSet<String>,
    fail_closed: bool,
    match_conditions: Vec<(String, Arc<cel::Program>)>,
    validations: Vec<Validation>,
}

#[derive(Clone)]
struct Validation {
    expression: String,
    program: Arc<cel::Program>,
    message: Option<String>,
    message_expression: Option<Arc<cel::Program>>,
    message_source: Option<String>,
}

fn compile(env: &cel::Env, mode: &str, what: &str, source: &str) -> Arc<cel::Program> {
    Arc::new(
        env.compile(source)
            .unwrap_or_else(|e| panic!("[{mode}] {what} {source:?} does not compile: {e}")),
    )
}

fn load_policy(mode: &'static str) -> (Policy, Expected, Vec<String>) {
    let objects = load(mode);
    let vap: ValidatingAdmissionPolicy = one(&objects, "ValidatingAdmissionPolicy", mode);
    let binding: ValidatingAdmissionPolicyBinding =
        one(&objects, "ValidatingAdmissionPolicyBinding", mode);
    let binding_spec = binding.spec;
    assert_eq!(
        Some(&binding_spec.policy_name),
        vap.metadata.name.as_ref(),
        "[{mode}] the binding names another policy"
    );
    assert_eq!(
        binding_spec.validation_actions,
        ["Deny"],
        "[{mode}] the binding must deny"
    );
    assert!(
        binding_spec.match_resources.is_none() && binding_spec.param_ref.is_none(),
        "[{mode}] the binding must apply everywhere, without parameters"
    );

    let spec = vap.spec.expect("policy has a spec");
    let env = cel::Env::stdlib();
    let rules = spec
        .match_constraints
        .and_then(|m| m.resource_rules)
        .unwrap_or_default();
    assert_eq!(rules.len(), 1, "[{mode}] expected one resource rule");
    let rule = &rules[0];
    let set = |v: &Option<Vec<String>>| -> BTreeSet<String> {
        v.clone().unwrap_or_default().into_iter().collect()
    };
    let match_conditions = spec
        .match_conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let program = compile(&env, mode, "matchCondition", &c.expression);
            (c.expression, program)
        })
        .collect();
    let validations = spec
        .validations
        .unwrap_or_default()
        .into_iter()
        .map(|v| Validation {
            program: compile(&env, mode, "validation", &v.expression),
            message_expression: v
                .message_expression
                .as_deref()
                .map(|m| compile(&env, mode, "messageExpression", m)),
            message: v.message,
            message_source: v.message_expression,
            expression: v.expression,
        })
        .collect();
    let policy = Policy {
        operations: set(&rule.operations),
        resources: set(&rule.resources),
        api_groups: set(&rule.api_groups),
        fail_closed: spec.failure_policy.as_deref().unwrap_or("Fail") == "Fail",
        match_conditions,
        validations,
    };

    let cm: ConfigMap = one(&objects, "ConfigMap", mode);
    let text = cm
        .data
        .and_then(|d| d.get("config.yaml").cloned())
        .expect("ConfigMap has config.yaml");
    let config = pullsecret_injector::config::Config::from_yaml_str(&text)
        .unwrap_or_else(|e| panic!("[{mode}] config.yaml is rejected by the binary: {e}"));
    let sa: ServiceAccount = one(&objects, "ServiceAccount", mode);
    let release_namespace = sa.metadata.namespace.clone().expect("SA namespace");
    let expected = Expected {
        mode,
        username: format!(
            "system:serviceaccount:{release_namespace}:{}",
            sa.metadata.name.clone().expect("SA name")
        ),
        secret_names: config
            .registries
            .iter()
            .map(|r| r.secret_name.clone())
            .collect(),
        skip_namespaces: config.skip_namespaces.clone(),
        release_namespace,
    };
    let sources =
        policy
            .match_conditions
            .iter()
            .map(|(s, _)| s.clone())
            .chain(policy.validations.iter().flat_map(|v| {
                std::iter::once(v.expression.clone()).chain(v.message_source.clone())
            }))
            .collect();
    (policy, expected, sources)
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// matchConstraints or a matchCondition leave the request alone.
    NotMatched,
    Allowed,
    /// The messages of the failing validations (or of the errors).
    Denied(Vec<String>),
}

/// One Secret write, as the admission chain sees it.
struct Request {
    username: String,
    operation: &'static str,
    namespace: String,
    secret: Value,
    /// The Secret before an UPDATE; the same as `secret` when not given.
    old_secret: Option<Value>,
}

impl Request {
    fn activation(&self) -> cel::Context<'static, 'static> {
        let name = self.secret["metadata"]["name"].clone();
        let request = json!({
            "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": name,
            "namespace": self.namespace,
            "operation": self.operation,
            "userInfo": {"username": self.username, "groups": ["system:authenticated"]},
            "dryRun": false,
        });
        let namespace_object = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": self.namespace,
                "labels": {"kubernetes.io/metadata.name": self.namespace},
            },
        });
        let mut object = self.secret.clone();
        object["metadata"]["namespace"] = json!(self.namespace);
        let old_object = if self.operation == "UPDATE" {
            let mut old = self
                .old_secret
                .clone()
                .unwrap_or_else(|| self.secret.clone());
            old["metadata"]["namespace"] = json!(self.namespace);
            old
        } else {
            Value::Null
        };
        let mut ctx = cel::Context::default();
        for (name, value) in [
            ("request", request),
            ("object", object),
            ("oldObject", old_object),
            ("namespaceObject", namespace_object),
            ("params", Value::Null),
        ] {
            ctx.add_variable(name, value)
                .expect("JSON binds as a CEL value");
        }
        ctx
    }
}

impl Policy {
    fn admit(&self, req: &Request) -> Outcome {
        if !self.operations.contains(req.operation)
            || !self.resources.contains("secrets")
            || !self.api_groups.contains("")
        {
            return Outcome::NotMatched;
        }
        let ctx = req.activation();
        let mut errors = Vec::new();
        for (source, program) in &self.match_conditions {
            match program.execute(&ctx) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => return Outcome::NotMatched,
                other => errors.push(format!("matchCondition {source}: {other:?}")),
            }
        }
        if !errors.is_empty() {
            return if self.fail_closed {
                Outcome::Denied(errors)
            } else {
                Outcome::NotMatched
            };
        }
        let mut denials = Vec::new();
        for v in &self.validations {
            match v.program.execute(&ctx) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => {
                    let from_expression =
                        v.message_expression
                            .as_ref()
                            .and_then(|m| match m.execute(&ctx) {
                                Ok(cel::Value::String(s)) => Some(s.to_string()),
                                _ => None,
                            });
                    denials.push(
                        from_expression
                            .or_else(|| v.message.clone())
                            .unwrap_or_else(|| format!("failed expression: {}", v.expression)),
                    );
                }
                other => denials.push(format!("ERROR in {}: {other:?}", v.expression)),
            }
        }
        if denials.is_empty() {
            Outcome::Allowed
        } else {
            Outcome::Denied(denials)
        }
    }
}

fn pull_secret(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": DOCKER_CONFIG_JSON,
        "metadata": {"name": name, "labels": {MANAGED_BY: "pullsecret-injector"}},
        "data": {".dockerconfigjson": "e30="},
    })
}

/// What each case expects: allowed, not matched, or denied with a message holding every one of
/// these parts.
#[derive(Debug)]
enum Want {
    Allowed,
    NotMatched,
    Denied(Vec<String>),
}

struct Case {
    what: String,
    request: Request,
    want: Want,
}

fn cases(e: &Expected) -> Vec<Case> {
    let sa = e.username.clone();
    let first = e.secret_names[0].clone();
    let req = |username: &str, operation, namespace: &str, secret: Value| Request {
        username: username.to_string(),
        operation,
        namespace: namespace.to_string(),
        secret,
        old_secret: None,
    };
    let mut cases = Vec::new();
    for name in &e.secret_names {
        for op in ["CREATE", "UPDATE"] {
            cases.push(Case {
                what: format!("the injector {op}s its pull Secret {name}"),
                request: req(&sa, op, APP_NAMESPACE, pull_secret(name)),
                want: Want::Allowed,
            });
        }
    }
    let mut token = pull_secret(&first);
    token["type"] = json!("kubernetes.io/service-account-token");
    cases.push(Case {
        what: format!("the injector creates a service-account-token Secret named {first}"),
        request: req(&sa, "CREATE", APP_NAMESPACE, token.clone()),
        want: Want::Denied(vec![format!(
            "{DOCKER_CONFIG_JSON}, not kubernetes.io/service-account-token"
        )]),
    });
    let mut opaque = pull_secret(&first);
    opaque["type"] = json!("Opaque");
    cases.push(Case {
        what: format!("the injector patches {first} into an Opaque Secret"),
        request: req(&sa, "UPDATE", APP_NAMESPACE, opaque),
        want: Want::Denied(vec![format!("{DOCKER_CONFIG_JSON}, not Opaque")]),
    });
    let mut untyped = pull_secret(&first);
    untyped.as_object_mut().unwrap().remove("type");
    cases.push(Case {
        what: "the injector creates a Secret without a type".into(),
        request: req(&sa, "CREATE", APP_NAMESPACE, untyped),
        want: Want::Denied(vec![format!("{DOCKER_CONFIG_JSON}, not (none)")]),
    });
    cases.push(Case {
        what: "the injector creates a pull Secret under a name no registry has".into(),
        request: req(&sa, "CREATE", APP_NAMESPACE, pull_secret("stolen-pull")),
        want: Want::Denied(vec![format!(
            "({}), not stolen-pull",
            e.secret_names.join(", ")
        )]),
    });
    let mut unlabelled = pull_secret(&first);
    unlabelled["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    cases.push(Case {
        what: "the injector creates a pull Secret without labels".into(),
        request: req(&sa, "CREATE", APP_NAMESPACE, unlabelled),
        want: Want::Denied(vec![format!("{MANAGED_BY}=pullsecret-injector")]),
    });
    let mut other_label = pull_secret(&first);
    other_label["metadata"]["labels"] = json!({"team": "platform"});
    cases.push(Case {
        what: "the injector patches a pull Secret without the managed-by label".into(),
        request: req(&sa, "UPDATE", APP_NAMESPACE, other_label),
        want: Want::Denied(vec![format!("{MANAGED_BY}=pullsecret-injector")]),
    });
    let mut helm_owned = pull_secret(&first);
    helm_owned["metadata"]["labels"][MANAGED_BY] = json!("Helm");
    cases.push(Case {
        what: "the injector writes a pull Secret managed by someone else".into(),
        request: req(&sa, "UPDATE", APP_NAMESPACE, helm_owned),
        want: Want::Denied(vec![format!("{MANAGED_BY}=pullsecret-injector")]),
    });
    let mut unmanaged = pull_secret(&first);
    unmanaged["metadata"]["labels"] = json!({"team": "platform"});
    cases.push(Case {
        what: format!(
            "the injector takes over an unmanaged Secret {first} by patching the label in"
        ),
        request: Request {
            old_secret: Some(unmanaged),
            ..req(&sa, "UPDATE", APP_NAMESPACE, pull_secret(&first))
        },
        want: Want::Denied(vec!["may only update Secrets it already manages".into()]),
    });
    cases.push(Case {
        what: format!(
            "a stolen token creates a service-account-token Secret {first} in kube-system"
        ),
        request: req(&sa, "CREATE", "kube-system", token.clone()),
        want: Want::Denied(vec![
            "not kubernetes.io/service-account-token".into(),
            "namespace kube-system, which it skips".into(),
        ]),
    });
    for ns in [&e.release_namespace, &e.skip_namespaces[0]] {
        cases.push(Case {
            what: format!("the injector writes its pull Secret into skipped namespace {ns}"),
            request: req(&sa, "CREATE", ns, pull_secret(&first)),
            want: Want::Denied(vec![format!("namespace {ns}, which it skips")]),
        });
    }
    for other in [
        "alice".to_string(),
        format!("system:serviceaccount:{APP_NAMESPACE}:psi-pullsecret-injector"),
        format!("{sa}-2"),
    ] {
        cases.push(Case {
            what: format!("{other} creates a service-account-token Secret in kube-system"),
            request: req(&other, "CREATE", "kube-system", token.clone()),
            want: Want::NotMatched,
        });
        cases.push(Case {
            what: format!("{other} updates an Opaque Secret"),
            request: req(
                &other,
                "UPDATE",
                APP_NAMESPACE,
                json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "app-config"}}),
            ),
            want: Want::NotMatched,
        });
    }
    cases.push(Case {
        what: "the injector deletes a Secret (not a write the policy covers)".into(),
        request: req(&sa, "DELETE", APP_NAMESPACE, token),
        want: Want::NotMatched,
    });
    cases
}

/// Every case whose outcome differs from what it wants, described.
fn mismatches(policy: &Policy, e: &Expected) -> Vec<String> {
    let mut out = Vec::new();
    for case in cases(e) {
        let got = policy.admit(&case.request);
        let ok = match (&case.want, &got) {
            (Want::Allowed, Outcome::Allowed) | (Want::NotMatched, Outcome::NotMatched) => true,
            (Want::Denied(parts), Outcome::Denied(messages)) => {
                let all = messages.join(" | ");
                !all.contains("ERROR") && parts.iter().all(|p| all.contains(p.as_str()))
            }
            _ => false,
        };
        if !ok {
            out.push(format!(
                "[{}] {}: want {:?}, got {got:?}",
                e.mode, case.what, case.want
            ));
        }
    }
    out
}

#[test]
fn policy_allows_only_the_injectors_own_pull_secrets() {
    let mut problems = Vec::new();
    let mut two_or_more = false;
    for mode in MODES {
        let (policy, expected, _) = load_policy(mode);
        two_or_more |= expected.secret_names.len() >= 2;
        problems.extend(mismatches(&policy, &expected));
    }
    assert!(
        two_or_more,
        "no golden configures two registries: the per-name cases prove little"
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// The case table is sharp enough: drop any one validation, or the matchCondition, and some case
/// gets a different outcome. So an edit that weakens an expression fails the test above.
#[test]
fn every_expression_is_load_bearing() {
    for mode in MODES {
        let (policy, expected, _) = load_policy(mode);
        assert!(
            mismatches(&policy, &expected).is_empty(),
            "[{mode}] the policy itself fails its cases"
        );
        for i in 0..policy.validations.len() {
            let mut weaker = policy.clone();
            let dropped = weaker.validations.remove(i);
            assert!(
                !mismatches(&weaker, &expected).is_empty(),
                "[{mode}] without validation {:?} every case still passes",
                dropped.expression
            );
        }
        let mut everyone = policy.clone();
        everyone.match_conditions.clear();
        assert!(
            !mismatches(&everyone, &expected).is_empty(),
            "[{mode}] without the matchCondition every case still passes"
        );
    }
}

#[test]
fn policy_stays_within_the_evaluated_subset() {
    let allowed_variables = [
        "request",
        "object",
        "oldObject",
        "namespaceObject",
        "params",
    ];
    let env = cel::Env::stdlib();
    for mode in MODES {
        let (_, _, sources) = load_policy(mode);
        for source in sources {
            let program = env.compile(&source).expect("compiles (checked above)");
            let refs = program.references();
            for f in refs.functions() {
                assert!(
                    EVALUATED_SUBSET.contains(&f),
                    "[{mode}] {source:?} calls {f:?}, which this test does not evaluate as Kubernetes does"
                );
            }
            for v in refs.variables() {
                assert!(
                    allowed_variables.contains(&v),
                    "[{mode}] {source:?} reads variable {v:?}, which this test does not bind"
                );
            }
        }
    }
}

/// The MutatingWebhookConfiguration's `matchConditions`, against Pod CREATEs: the webhook's own Pods
/// (the golden Deployment's template, in the release namespace) are not sent to it; every other Pod
/// is, labelled or not, and no condition errs (an error would fail or skip the call by
/// `failurePolicy`).
#[test]
fn webhook_match_conditions_skip_only_the_webhooks_own_pods() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::apps::v1::Deployment;

    let env = cel::Env::stdlib();
    for mode in MODES {
        let objects = load(mode);
        let webhook: MutatingWebhookConfiguration =
            one(&objects, "MutatingWebhookConfiguration", mode);
        let deployment: Deployment = one(&objects, "Deployment", mode);
        let release_namespace = deployment.metadata.namespace.clone().expect("namespace");
        let own_labels = deployment
            .spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .expect("the Deployment's Pod template has labels");
        let conditions: Vec<(String, cel::Program)> = webhook
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .flat_map(|w| w.match_conditions.unwrap_or_default())
            .map(|c| {
                let program = env.compile(&c.expression).unwrap_or_else(|e| {
                    panic!("[{mode}] matchCondition {:?} does not compile: {e}", c.name)
                });
                for f in program.references().functions() {
                    assert!(
                        EVALUATED_SUBSET.contains(&f),
                        "[{mode}] matchCondition {:?} calls {f:?}, not evaluated as Kubernetes does",
                        c.name
                    );
                }
                (c.name, program)
            })
            .collect();
        assert!(
            !conditions.is_empty(),
            "[{mode}] the webhook has no matchConditions"
        );

        let pod = |labels: Option<Value>| {
            let mut metadata = json!({"name": "p"});
            if let Some(labels) = labels {
                metadata["labels"] = labels;
            }
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                   "spec": {"containers": [{"name": "a", "image": "gcr.io/p/a"}]}})
        };
        let own = json!(own_labels);
        let mut other_instance = own.clone();
        other_instance["app.kubernetes.io/instance"] = json!("another-release");
        let mut name_only = json!({});
        name_only["app.kubernetes.io/name"] = own["app.kubernetes.io/name"].clone();
        let cases = [
            (
                "the webhook's own Pod",
                &release_namespace[..],
                pod(Some(own.clone())),
                false,
            ),
            (
                "the same labels in another namespace",
                APP_NAMESPACE,
                pod(Some(own)),
                true,
            ),
            (
                "a Pod without labels, release namespace",
                &release_namespace[..],
                pod(None),
                true,
            ),
            ("a Pod without labels", APP_NAMESPACE, pod(None), true),
            ("empty labels", APP_NAMESPACE, pod(Some(json!({}))), true),
            (
                "another release's Pod",
                &release_namespace[..],
                pod(Some(other_instance)),
                true,
            ),
            (
                "only the name label",
                &release_namespace[..],
                pod(Some(name_only)),
                true,
            ),
        ];
        for (what, namespace, object, called) in cases {
            let mut ctx = cel::Context::default();
            let request = json!({
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            });
            ctx.add_variable("request", request).expect("binds");
            ctx.add_variable("object", object).expect("binds");
            ctx.add_variable("oldObject", Value::Null).expect("binds");
            let mut all_true = true;
            for (name, program) in &conditions {
                match program.execute(&ctx) {
                    Ok(cel::Value::Bool(b)) => all_true &= b,
                    other => panic!("[{mode}] {what}: matchCondition {name:?} gave {other:?}"),
                }
            }
            assert_eq!(
                all_true, called,
                "[{mode}] {what} in {namespace}: the webhook is called = {all_true}, want {called}"
            );
        }
    }
}
