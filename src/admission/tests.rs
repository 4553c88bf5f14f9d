use serde_json::{Value, json};

use super::*;
use crate::provisioning::ReferenceOnly;

/// The same registries, with credentials: the registry check is on for them.
fn checked_config() -> Config {
    Config::from_yaml_str(
        "registries:\n\
         - {name: gcp, preset: gcp, secretName: gcr-pull, credentials: {dockerConfigJson: {file: /unused/config.json}}}\n\
         skipNamespaces: [kube-system]\n",
    )
    .expect("valid test config")
}

fn config() -> Config {
    Config::from_yaml_str(
        "registries:\n\
         - {name: gcp, preset: gcp, secretName: gcr-pull}\n\
         - {name: harbor, hosts: ['harbor.example.com:8443'], secretName: harbor-pull}\n\
         skipNamespaces: [kube-system]\n",
    )
    .expect("valid test config")
}

fn review_json(operation: &str, resource: &str, sub: Option<&str>, object: Value) -> Vec<u8> {
    let mut request = json!({
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": resource},
        "namespace": "team-a",
        "operation": operation,
        "object": object,
    });
    if let Some(sub) = sub {
        request["subResource"] = sub.into();
    }
    serde_json::to_vec(
        &json!({"apiVersion": envelope::API_VERSION, "kind": envelope::KIND, "request": request}),
    )
    .expect("json")
}

fn gcr_pod() -> Value {
    json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "gcr.io/p/a"}]}})
}

async fn review_of(body: &[u8]) -> Result<Answer, AdmissionError> {
    review(body, &config(), &ReferenceOnly, None).await
}

fn response_of(answer: &Answer) -> Value {
    serde_json::from_slice(&answer.to_json()).expect("response json")
}

#[tokio::test]
async fn create_gets_a_base64_json_patch_and_a_warning() {
    use base64::Engine as _;
    let answer = review_of(&review_json("CREATE", "pods", None, gcr_pod()))
        .await
        .expect("review");
    assert_eq!(answer.outcome, Outcome::Patched);
    let response = response_of(&answer);
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(response["response"]["uid"], "u-1");
    assert_eq!(response["response"]["allowed"], true);
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(
            response["response"]["patch"]
                .as_str()
                .expect("patch is a string"),
        )
        .expect("base64");
    let patch: Value = serde_json::from_slice(&patch).expect("patch json");
    assert_eq!(
        patch,
        json!([{"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "gcr-pull"}]}])
    );
    let warnings = response["response"]["warnings"]
        .as_array()
        .expect("warnings");
    assert_eq!(
        warnings,
        &[json!(
            "pullsecret-injector: added imagePullSecret \"gcr-pull\" (host pattern \"gcr.io\") for image gcr.io/p/a"
        )]
    );
}

/// The response is what kube's own types read: the API server's view of it, in Rust.
#[tokio::test]
async fn the_response_is_read_by_kube_admission_types() {
    use kube::core::DynamicObject;
    use kube::core::admission::AdmissionReview;
    let denied = Answer {
        uid: "u-\"\\\n\u{0}\u{1f600}".into(),
        namespace: "team-a".into(),
        dry_run: false,
        outcome: Outcome::Denied,
        patch: None,
        warnings: vec!["w \"quoted\" \u{e9}".into()],
        denial: Some("not \"ready\"\n".into()),
        injected: Vec::new(),
        reason: None,
    };
    let patched = review_of(&review_json("CREATE", "pods", None, gcr_pod()))
        .await
        .expect("review");
    for answer in [denied, patched] {
        use base64::Engine as _;
        let mut json = response_of(&answer);
        // kube reads `patch` as a list of byte values; the API server (Go's `[]byte`) as base64.
        let patch = json["response"]
            .as_object_mut()
            .and_then(|r| r.remove("patch"))
            .map(|text| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.as_str().expect("base64 text"))
                    .expect("base64");
                serde_json::from_slice::<json_patch::Patch>(&bytes).expect("patch")
            });
        assert_eq!(patch, answer.patch);
        // kube's type requires `status`, which Go's leaves optional and an allowed answer omits.
        if json["response"].get("status").is_none() {
            json["response"]["status"] = json!({});
        }
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_value(json).expect("kube reads the response");
        let response = review.response.expect("response");
        assert_eq!(response.uid, answer.uid);
        assert_eq!(response.allowed, answer.denial.is_none());
        assert_eq!(
            response.result.message,
            answer.denial.clone().unwrap_or_default()
        );
        assert_eq!(response.warnings.unwrap_or_default(), answer.warnings);
    }
}

#[tokio::test]
async fn non_create_operations_pass_through_unchanged() {
    for (operation, resource, sub) in [
        ("UPDATE", "pods", None),
        ("DELETE", "pods", None),
        ("CONNECT", "pods", Some("exec")),
        ("CREATE", "pods", Some("binding")),
        ("CREATE", "configmaps", None),
    ] {
        let answer = review_of(&review_json(operation, resource, sub, gcr_pod()))
            .await
            .expect("review");
        assert_eq!(
            answer.outcome,
            Outcome::Ignored,
            "{operation} {resource} {sub:?}"
        );
        let response = response_of(&answer);
        assert_eq!(response["response"]["allowed"], true);
        assert!(response["response"].get("patch").is_none());
        assert!(response["response"].get("patchType").is_none());
    }
}

#[tokio::test]
async fn bad_envelopes_are_errors() {
    let pod_in = |namespace: &str, object: Value| {
        let mut body: Value =
            serde_json::from_slice(&review_json("CREATE", "pods", None, object)).expect("json");
        body["request"]["namespace"] = namespace.into();
        serde_json::to_vec(&body).expect("json")
    };
    let named =
        |name: &str, generate: &str| json!({"metadata": {"name": name, "generateName": generate}});
    let cases: Vec<(&str, Vec<u8>, AdmissionError)> = vec![
        ("not json", b"{".to_vec(), AdmissionError::Malformed(String::new())),
        ("v1beta1", br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}"#.to_vec(), AdmissionError::UnsupportedVersion("admission.k8s.io/v1beta1".into())),
        ("no apiVersion", br#"{"kind":"AdmissionReview","request":{"uid":"u"}}"#.to_vec(), AdmissionError::UnsupportedVersion(String::new())),
        ("wrong kind", br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod","request":{"uid":"u"}}"#.to_vec(), AdmissionError::UnsupportedKind("Pod".into())),
        ("no request", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), AdmissionError::MissingRequest),
        ("no uid", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#.to_vec(), AdmissionError::MissingUid),
        ("empty uid", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#.to_vec(), AdmissionError::MissingUid),
        ("containers not a list", review_json("CREATE", "pods", None, json!({"spec": {"containers": "gcr.io/x"}})), AdmissionError::InvalidPod(String::new())),
        ("a Pod that is a JSON array", review_json("CREATE", "pods", None, json!([{"name": "p"}])), AdmissionError::InvalidPod(String::new())),
        ("percent-encoded namespace", pod_in("kube%2Dsystem", gcr_pod()), AdmissionError::InvalidNamespace(String::new())),
        ("namespace with a slash and a query", pod_in("team-a/secrets?fieldSelector=x", gcr_pod()), AdmissionError::InvalidNamespace(String::new())),
        ("uppercase namespace", pod_in("Team-A", gcr_pod()), AdmissionError::InvalidNamespace(String::new())),
        ("no namespace on a Pod", pod_in("", gcr_pod()), AdmissionError::MissingNamespace),
        ("Pod name with a slash", pod_in("team-a", named("a/b", "")), AdmissionError::InvalidPodName(String::new())),
        ("generateName with a dot-dash", pod_in("team-a", named("", "web/")), AdmissionError::InvalidPodName(String::new())),
        // serde refuses a known field given twice; Go would take the last one.
        ("two uid keys", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","uid":"b"}}"#.to_vec(), AdmissionError::Malformed(String::new())),
    ];
    for (name, body, expected) in cases {
        let error = review_of(&body).await.expect_err(name);
        assert_eq!(
            std::mem::discriminant(&error),
            std::mem::discriminant(&expected),
            "{name}: {error}"
        );
    }
    // A namespace that is not valid is refused even when the request is not about a Pod.
    let mut configmap: Value =
        serde_json::from_slice(&review_json("CREATE", "configmaps", None, json!({})))
            .expect("json");
    configmap["request"]["namespace"] = "a?b".into();
    assert!(matches!(
        review_of(&serde_json::to_vec(&configmap).expect("json")).await,
        Err(AdmissionError::InvalidNamespace(_))
    ));
}

/// serde's behaviour for keys given twice: refused for a field the webhook reads, the last value in
/// a map (labels), ignored in fields it skips.
#[tokio::test]
async fn duplicate_keys_follow_serde() {
    let text = |pod: &str| {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","resource":{{"group":"","resource":"pods"}},"namespace":"team-a","operation":"CREATE","userInfo":{{"a":1,"a":2}},"object":{pod}}}}}"#
        )
    };
    let opted_out_last = text(
        r#"{"metadata":{"labels":{"pullsecret-injector.io/skip":"false","pullsecret-injector.io/skip":"true"}},"spec":{"containers":[{"image":"gcr.io/p/a"}]}}"#,
    );
    let answer = review_of(opted_out_last.as_bytes()).await.expect("review");
    assert_eq!(
        answer.outcome,
        Outcome::Skipped,
        "the last label value counts"
    );
    let two_specs = text(r#"{"spec":{},"spec":{"containers":[{"image":"gcr.io/p/a"}]}}"#);
    let error = review_of(two_specs.as_bytes())
        .await
        .expect_err("two specs");
    assert!(
        error.to_string().contains("duplicate field `spec`"),
        "{error}"
    );
}

#[tokio::test]
async fn the_order_of_request_fields_does_not_matter() {
    let fields = [
        r#""uid":"u""#,
        r#""resource":{"group":"","version":"v1","resource":"pods"}"#,
        r#""namespace":"team-a""#,
        r#""operation":"CREATE""#,
        r#""object":{"spec":{"containers":[{"name":"a","image":"gcr.io/p/a"}]}}"#,
    ];
    for rotation in 0..fields.len() {
        let mut order = fields.to_vec();
        order.rotate_left(rotation);
        let body = format!(
            r#"{{"request":{{{}}},"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}}"#,
            order.join(",")
        );
        let answer = review_of(body.as_bytes()).await.expect("review");
        assert_eq!(answer.outcome, Outcome::Patched, "{body}");
    }
}

#[tokio::test]
async fn ephemeral_containers_are_warned_about_never_patched() {
    let pod = json!({"spec": {
        "imagePullSecrets": [{"name": "gcr-pull"}],
        "containers": [{"name": "a", "image": "nginx"}],
        "ephemeralContainers": [
            {"name": "d", "image": "gcr.io/p/debug"},
            {"name": "h", "image": "harbor.example.com:8443/t/debug"}]}});
    let answer = review_of(&review_json(
        "UPDATE",
        "pods",
        Some("ephemeralcontainers"),
        pod,
    ))
    .await
    .expect("review");
    assert_eq!(answer.outcome, Outcome::Unchanged);
    assert!(answer.patch.is_none());
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    assert_eq!(
        answer.warnings[0],
        "pullsecret-injector: harbor.ex...43/t/debug may fail to pull: Secret \"harbor-pull\" is not in this Pod's imagePullSecrets"
    );
}

#[test]
fn timeout_query_is_read() {
    let cases = [
        (Some("timeout=10s"), Some(Duration::from_secs(10))),
        (Some("a=b&timeout=5s"), Some(Duration::from_secs(5))),
        (Some("timeout=soon"), None),
        (None, None),
    ];
    for (query, expected) in cases {
        assert_eq!(timeout_from_query(query), expected, "{query:?}");
    }
}

#[test]
fn budget_fits_inside_the_api_server_timeout() {
    let config = config();
    let cases = [
        (None, Duration::from_secs(2)),
        (Some(Duration::from_secs(10)), Duration::from_secs(2)),
        (Some(Duration::from_secs(1)), Duration::from_millis(500)),
        (Some(Duration::from_millis(100)), Duration::ZERO),
    ];
    for (timeout, expected) in cases {
        assert_eq!(
            provisioning_budget(&config, timeout),
            expected,
            "{timeout:?}"
        );
    }
}

#[test]
fn warnings_keep_the_secret_and_both_ends_of_a_long_image() {
    let long = format!(
        "europe-west1-docker.pkg.dev/acme-prod/{}/app:v1.2.3",
        "team".repeat(30)
    );
    let message = image_warning("added imagePullSecret \"gcr-pull\" for image ", &long, "");
    let mut warnings = Vec::new();
    push_warning(&mut warnings, message);
    let warning = &warnings[0];
    assert!(warning.chars().count() <= MAX_WARNING_CHARS, "{warning}");
    assert!(warning.contains("\"gcr-pull\""), "{warning}");
    assert!(warning.contains("europe-west1-docker"), "{warning}");
    assert!(warning.ends_with("/app:v1.2.3"), "{warning}");
    assert!(warning.contains("..."), "{warning}");
    // A short image is kept whole.
    assert_eq!(
        image_warning("x ", "gcr.io/p/a:1", " y"),
        "x gcr.io/p/a:1 y"
    );
}

#[test]
fn other_long_warnings_are_cut_at_the_end() {
    for (message, expect_cut) in [
        ("short".to_owned(), false),
        ("x".repeat(MAX_WARNING_CHARS - WARNING_PREFIX.len()), false),
        ("x".repeat(MAX_WARNING_CHARS), true),
        ("é".repeat(MAX_WARNING_CHARS), true),
    ] {
        let mut warnings = Vec::new();
        push_warning(&mut warnings, message.clone());
        let warning = &warnings[0];
        assert!(warning.starts_with(WARNING_PREFIX));
        assert!(warning.chars().count() <= MAX_WARNING_CHARS, "{warning}");
        assert_eq!(warning.ends_with("..."), expect_cut, "{warning}");
    }
    let mut warnings = Vec::new();
    for i in 0..MAX_WARNINGS + 5 {
        push_warning(&mut warnings, format!("w{i}"));
    }
    assert_eq!(warnings.len(), MAX_WARNINGS);
}

mod decision_table {
    use super::*;
    use crate::admission::decision::{ContainerSet, Skip, decide};
    use crate::admission::envelope::PodView;

    struct Case {
        name: &'static str,
        namespace: &'static str,
        pod: Value,
        /// The `imagePullSecrets` the Pod must have after the patch (None: no patch at all).
        expect_after: Option<Value>,
        expect_skip: Option<Skip>,
        expect_invalid: usize,
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    }

    fn case(name: &'static str, pod: Value, expect_after: Option<Value>) -> Case {
        Case {
            name,
            namespace: "team-a",
            pod,
            expect_after,
            expect_skip: None,
            expect_invalid: 0,
        }
    }

    fn run(case: &Case, config: &Config) {
        let text = case.pod.to_string();
        let view: PodView<'_> = serde_json::from_str(&text).expect("pod view");
        let decision = decide(config, case.namespace, &view, ContainerSet::PodCreate);
        assert_eq!(decision.skip, case.expect_skip, "{}: skip", case.name);
        assert_eq!(
            decision.invalid_images.len(),
            case.expect_invalid,
            "{}: invalid images {:?}",
            case.name,
            decision.invalid_images
        );
        match (decision.patch(), &case.expect_after) {
            (None, None) => {}
            (Some(patch), Some(expected)) => {
                let mut pod = case.pod.clone();
                json_patch::patch(&mut pod, &patch)
                    .unwrap_or_else(|e| panic!("{}: patch fails: {e}", case.name));
                assert_eq!(&pod["spec"]["imagePullSecrets"], expected, "{}", case.name);
                // Applying the patch must leave everything else as it was.
                let mut without = pod.clone();
                let mut original = case.pod.clone();
                for value in [&mut without, &mut original] {
                    value["spec"]
                        .as_object_mut()
                        .map(|s| s.remove("imagePullSecrets"));
                }
                assert_eq!(
                    without, original,
                    "{}: only imagePullSecrets changes",
                    case.name
                );
            }
            (got, expected) => panic!("{}: patch {got:?}, expected {expected:?}", case.name),
        }
    }

    #[test]
    fn decision_table() {
        let config = config();
        let gcr = Some(json!([{"name": "gcr-pull"}]));
        let cases = [
            case(
                "absent field gets the whole array",
                pod(json!({"containers": [{"name": "a", "image": "eu.gcr.io/p/app:1"}]})),
                gcr.clone(),
            ),
            case(
                "null field is replaced by the array",
                pod(
                    json!({"imagePullSecrets": null, "containers": [{"name": "a", "image": "gcr.io/p/app"}]}),
                ),
                gcr.clone(),
            ),
            case(
                "existing entries stay first, ours is appended",
                pod(
                    json!({"imagePullSecrets": [{"name": "my-own-creds"}], "containers": [{"name": "a", "image": "gcr.io/p/app"}]}),
                ),
                Some(json!([{"name": "my-own-creds"}, {"name": "gcr-pull"}])),
            ),
            case(
                "empty array is appended to",
                pod(
                    json!({"imagePullSecrets": [], "containers": [{"name": "a", "image": "gcr.io/p/app"}]}),
                ),
                gcr.clone(),
            ),
            case(
                "already listed: no patch, never twice",
                pod(
                    json!({"imagePullSecrets": [{"name": "gcr-pull"}], "containers": [{"name": "a", "image": "gcr.io/p/app"}]}),
                ),
                None,
            ),
            case(
                "several images of one registry add one entry",
                pod(
                    json!({"containers": [{"name": "a", "image": "gcr.io/p/a"}, {"name": "b", "image": "eu.gcr.io/p/b"}, {"name": "c", "image": "europe-west1-docker.pkg.dev/p/r/c:1"}]}),
                ),
                gcr.clone(),
            ),
            case(
                "init container image counts",
                pod(
                    json!({"initContainers": [{"name": "m", "image": "docker.europe-west1.rep.pkg.dev/p/r/m"}], "containers": [{"name": "a", "image": "nginx:1.27"}]}),
                ),
                gcr.clone(),
            ),
            case(
                "image volume counts",
                pod(
                    json!({"containers": [{"name": "a", "image": "nginx"}], "volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "models", "image": {"reference": "europe-west1-docker.pkg.dev/p/r/models:v1", "pullPolicy": "IfNotPresent"}}]}),
                ),
                gcr.clone(),
            ),
            case(
                "two registries, in order of first use",
                pod(
                    json!({"imagePullSecrets": [{"name": "mine"}], "containers": [{"name": "a", "image": "harbor.example.com:8443/team/a:1"}, {"name": "b", "image": "gcr.io/p/b"}]}),
                ),
                Some(json!([{"name": "mine"}, {"name": "harbor-pull"}, {"name": "gcr-pull"}])),
            ),
            case(
                "one of two already listed: only the other is appended",
                pod(
                    json!({"imagePullSecrets": [{"name": "harbor-pull"}], "containers": [{"name": "a", "image": "harbor.example.com:8443/team/a:1"}, {"name": "b", "image": "gcr.io/p/b"}]}),
                ),
                Some(json!([{"name": "harbor-pull"}, {"name": "gcr-pull"}])),
            ),
            case(
                "no match: no patch",
                pod(
                    json!({"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "europe-west1-maven.pkg.dev/p/r/b"}, {"name": "c", "image": "harbor.example.com/team/c"}]}),
                ),
                None,
            ),
            Case {
                expect_skip: Some(Skip::OptOutLabel("pullsecret-injector.io/skip".into())),
                ..case(
                    "opted out by label",
                    json!({"metadata": {"labels": {"pullsecret-injector.io/skip": "true"}}, "spec": {"containers": [{"name": "a", "image": "gcr.io/p/a"}]}}),
                    None,
                )
            },
            Case {
                expect_skip: Some(Skip::OptOutAnnotation("pullsecret-injector.io/skip".into())),
                ..case(
                    "opted out by annotation",
                    json!({"metadata": {"annotations": {"pullsecret-injector.io/skip": "True"}}, "spec": {"containers": [{"name": "a", "image": "gcr.io/p/a"}]}}),
                    None,
                )
            },
            case(
                "opt-out key with another value does not opt out",
                json!({"metadata": {"labels": {"pullsecret-injector.io/skip": "false"}, "annotations": {"pullsecret-injector.io/skip": "no"}}, "spec": {"containers": [{"name": "a", "image": "gcr.io/p/a"}]}}),
                gcr.clone(),
            ),
            Case {
                namespace: "kube-system",
                expect_skip: Some(Skip::Namespace),
                ..case(
                    "skipped namespace",
                    pod(json!({"containers": [{"name": "a", "image": "gcr.io/p/a"}]})),
                    None,
                )
            },
            Case {
                expect_invalid: 2,
                ..case(
                    "invalid image is reported, valid ones still count",
                    pod(
                        json!({"containers": [{"name": "a", "image": "gcr.io/p/App"}, {"name": "b", "image": ""}, {"name": "c", "image": "gcr.io/p/c"}]}),
                    ),
                    gcr.clone(),
                )
            },
            Case {
                expect_invalid: 1,
                ..case(
                    "a digest the kubelet refuses gets no Secret",
                    pod(
                        json!({"containers": [{"name": "a", "image": "gcr.io/p/a@md5:d41d8cd98f00b204e9800998ecf8427e"}]}),
                    ),
                    None,
                )
            },
            Case {
                expect_invalid: 1,
                ..case(
                    "missing image is reported",
                    pod(json!({"containers": [{"name": "a"}]})),
                    None,
                )
            },
            case(
                "pod without spec: nothing to do",
                json!({"metadata": {"name": "p"}}),
                None,
            ),
            case(
                "ephemeral containers on create are not considered",
                pod(
                    json!({"containers": [{"name": "a", "image": "nginx"}], "ephemeralContainers": [{"name": "d", "image": "gcr.io/p/debug"}]}),
                ),
                None,
            ),
        ];
        for case in &cases {
            run(case, &config);
        }
    }

    #[test]
    fn required_records_why() {
        let config = config();
        let image = "eu.gcr.io/p/app@sha256:4b6e0d4f5f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f";
        let text = pod(json!({"imagePullSecrets": [{"name": "gcr-pull"}], "containers": [{"name": "a", "image": image}]})).to_string();
        let view: PodView<'_> = serde_json::from_str(&text).expect("view");
        let decision = decide(&config, "team-a", &view, ContainerSet::PodCreate);
        assert_eq!(decision.required.len(), 1);
        let required = &decision.required[0];
        assert_eq!(required.registry.name, "gcp");
        assert_eq!(required.pattern.as_str(), "*.gcr.io");
        assert_eq!(required.image, image, "the image as the Pod writes it");
        assert!(required.already_listed);
        assert!(decision.patch().is_none());
    }
}

/// A namespace where the provisioner will not write still gets the patch the rules give, with a
/// warning that says why the Secret is not there.
#[tokio::test]
async fn an_ineligible_namespace_gets_the_patch_and_a_warning() {
    struct NotHere;
    impl PullSecrets for NotHere {
        fn ensure<'a>(
            &'a self,
            _request: EnsureRequest<'a>,
        ) -> futures::future::BoxFuture<'a, EnsureOutcome> {
            Box::pin(std::future::ready(EnsureOutcome::NotEligible {
                reason: "namespace team-a does not exist".into(),
            }))
        }
    }
    let answer = review(
        &review_json("CREATE", "pods", None, gcr_pod()),
        &config(),
        &NotHere,
        None,
    )
    .await
    .expect("review");
    assert_eq!(answer.outcome, Outcome::Patched);
    assert!(answer.patch.is_some());
    assert!(
        answer.warnings.iter().any(|w| w
            == "pullsecret-injector: pull Secret \"gcr-pull\" is not provisioned here: namespace team-a does not exist"),
        "{:?}",
        answer.warnings
    );
}

/// Reports one registry check per host and records the hosts admission says Pods use.
struct CheckedHosts {
    health: Vec<(&'static str, crate::provisioning::health::HostHealth)>,
    seen: std::sync::Mutex<Vec<(String, String, String)>>,
}

impl PullSecrets for CheckedHosts {
    fn ready_now(&self, _request: &EnsureRequest<'_>) -> Option<EnsureOutcome> {
        Some(EnsureOutcome::Ready)
    }

    fn ensure<'a>(
        &'a self,
        _request: EnsureRequest<'a>,
    ) -> futures::future::BoxFuture<'a, EnsureOutcome> {
        Box::pin(std::future::ready(EnsureOutcome::Ready))
    }

    fn saw_image_host(
        &self,
        registry: &crate::config::Registry,
        host: &str,
        repository: &str,
        namespace: &str,
    ) {
        assert_eq!(namespace, "team-a");
        self.seen.lock().expect("lock").push((
            registry.name.clone(),
            host.to_owned(),
            repository.to_owned(),
        ));
    }

    fn credential_health(
        &self,
        _registry: &crate::config::Registry,
        host: &str,
    ) -> Option<crate::provisioning::health::HostHealth> {
        self.health
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, health)| health.clone())
    }
}

#[tokio::test]
async fn a_pod_on_a_host_whose_registry_rejected_the_credentials_is_warned_and_its_hosts_recorded()
{
    use crate::provisioning::health::HostHealth;
    use crate::provisioning::registry_check::CheckStatus;
    let three_minutes_ago = std::time::SystemTime::now() - Duration::from_secs(200);
    let checks = CheckedHosts {
        health: vec![
            (
                "europe-west1-docker.pkg.dev",
                HostHealth {
                    status: CheckStatus::Rejected,
                    detail: "403: Permission \"artifactregistry.repositories.downloadArtifacts\" denied on resource \"projects/acme/locations/europe-west1/repositories/app\"".into(),
                    repository: Some("acme/app/api".into()),
                    checked_at: three_minutes_ago,
                },
            ),
            (
                "us-docker.pkg.dev",
                HostHealth {
                    status: CheckStatus::Unreachable,
                    detail: "503: down".into(),
                    repository: None,
                    checked_at: three_minutes_ago,
                },
            ),
            (
                "gcr.io",
                HostHealth {
                    status: CheckStatus::Ok,
                    detail: String::new(),
                    repository: None,
                    checked_at: three_minutes_ago,
                },
            ),
        ],
        seen: std::sync::Mutex::new(Vec::new()),
    };
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "image": "europe-west1-docker.pkg.dev/acme/app/api:1"},
        {"name": "b", "image": "us-docker.pkg.dev/acme/app/worker:1"},
        {"name": "c", "image": "gcr.io/acme/tool:2"},
        {"name": "d", "image": "europe-west1-docker.pkg.dev/acme/app/other:1"},
    ]}});
    let answer = review(
        &review_json("CREATE", "pods", None, pod),
        &checked_config(),
        &checks,
        None,
    )
    .await
    .expect("review");
    assert_eq!(answer.outcome, Outcome::Patched);
    let rejected: Vec<&String> = answer
        .warnings
        .iter()
        .filter(|w| w.contains("rejected the credentials"))
        .collect();
    // Only the host whose check was rejected: unreachable does not blame the credential.
    assert_eq!(rejected.len(), 1, "{:#?}", answer.warnings);
    let warning = rejected[0];
    assert!(
        warning.starts_with(
            "pullsecret-injector: registry europe-west1-docker.pkg.dev rejected the credentials of \"gcr-pull\" 3m ago (403"
        ),
        "{warning}"
    );
    assert!(warning.ends_with("; pulls will fail"), "{warning}");
    assert!(warning.contains("downloadArtifacts\" denied"), "{warning}");
    assert!(
        warning.chars().count() <= MAX_DETAILED_WARNING_CHARS,
        "{warning}"
    );
    let seen = checks.seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        [
            ("gcp", "europe-west1-docker.pkg.dev", "acme/app/api"),
            ("gcp", "us-docker.pkg.dev", "acme/app/worker"),
            ("gcp", "gcr.io", "acme/tool"),
        ]
        .map(|(r, h, p)| (r.to_owned(), h.to_owned(), p.to_owned()))
    );

    // An entry without the check (no credentials) records nothing and is never warned.
    checks.seen.lock().expect("lock").clear();
    let unchecked = review(
        &review_json(
            "CREATE",
            "pods",
            None,
            json!({"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "a", "image": "europe-west1-docker.pkg.dev/acme/app/api:1"},
            ]}}),
        ),
        &config(),
        &checks,
        None,
    )
    .await
    .expect("review");
    assert!(
        !unchecked
            .warnings
            .iter()
            .any(|w| w.contains("rejected the credentials")),
        "{:#?}",
        unchecked.warnings
    );
    assert!(checks.seen.lock().expect("lock").is_empty());

    // A dry run records nothing (no side effect) but is warned the same.
    checks.seen.lock().expect("lock").clear();
    let mut dry = review_json(
        "CREATE",
        "pods",
        None,
        json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "europe-west1-docker.pkg.dev/acme/app/api:1"},
        ]}}),
    );
    let mut value: Value = serde_json::from_slice(&dry).expect("json");
    value["request"]["dryRun"] = true.into();
    dry = serde_json::to_vec(&value).expect("json");
    let answer = review(&dry, &checked_config(), &checks, None)
        .await
        .expect("review");
    assert!(answer.dry_run);
    assert!(
        answer
            .warnings
            .iter()
            .any(|w| w.contains("rejected the credentials")),
        "{:#?}",
        answer.warnings
    );
    assert!(checks.seen.lock().expect("lock").is_empty());

    // The rejection was a 403 for acme/app/api: a Pod pulling another repository of that host is
    // not told its pulls will fail.
    let other = json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "d", "image": "europe-west1-docker.pkg.dev/acme/app/other:1"},
    ]}});
    let answer = review(
        &review_json("CREATE", "pods", None, other),
        &checked_config(),
        &checks,
        None,
    )
    .await
    .expect("review");
    assert!(
        !answer
            .warnings
            .iter()
            .any(|w| w.contains("rejected the credentials")),
        "{:#?}",
        answer.warnings
    );
}

#[test]
fn rejection_warnings_keep_their_ending_and_shorten_the_registry_text() {
    let cases = [
        (
            "r.example.com",
            "401: authentication required",
            "registry r.example.com rejected the credentials of \"s\" 45s ago (401: authentication required); pulls will fail",
        ),
        (
            "r.example.com",
            "",
            "registry r.example.com rejected the credentials of \"s\" 45s ago; pulls will fail",
        ),
    ];
    for (host, detail, expected) in cases {
        let text = rejection_warning(host, "s", Duration::from_secs(45), detail);
        assert_eq!(text, expected);
    }
    let long = format!("403: {}", "denied ".repeat(60));
    let text = rejection_warning("r.example.com", "s", Duration::from_secs(45), &long);
    assert!(
        text.starts_with(
            "registry r.example.com rejected the credentials of \"s\" 45s ago (403: denied denied"
        ),
        "{text}"
    );
    assert!(text.ends_with("...); pulls will fail"), "{text}");
    assert_eq!(
        text.chars().count() + WARNING_PREFIX.len(),
        MAX_DETAILED_WARNING_CHARS
    );
    assert_eq!(short_age(Duration::from_secs(7300)), "2h");
}
