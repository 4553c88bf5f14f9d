//! Pull Secret provisioning, end to end: AdmissionReviews over real TLS into the webhook, whose
//! provisioner talks to an in-process fake Kubernetes API that keeps state, enforces the chart's RBAC
//! and injects faults. Each test is one named scenario; every one ends by checking that no request
//! left the RBAC rules.

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use pullsecret_injector::provisioning::{KubePullSecrets, ProvisionerOptions};
use pullsecret_injector::serving::Metrics;
use serde_json::json;
use support::fake_api::{FakeApi, Fault, SECRETS};
use support::{KubeletDir, TestOptions, TestServer};
use tempfile::TempDir;

const SECRET: &str = "gcr-pull";
/// Long enough for a convergence that works; only a broken test waits this long.
const CONVERGE: Duration = Duration::from_secs(10);

struct Harness {
    api: Arc<FakeApi>,
    server: TestServer,
    provisioner: KubePullSecrets,
    key_dir: KubeletDir,
    key: String,
    _temp: TempDir,
}

fn test_options() -> ProvisionerOptions {
    ProvisionerOptions {
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(400),
        max_writes_per_second: 200,
        foreign_recheck: Duration::from_secs(3600),
        reload_poll: Duration::from_secs(3600),
        health: support::offline_health(),
    }
}

impl Harness {
    async fn start(budget: &str) -> Self {
        let api = Arc::new(FakeApi::start(&[SECRET]).await);
        Self::start_against(api, budget).await
    }

    /// Another injector replica (own key volume, same key) against an existing API.
    async fn start_against(api: Arc<FakeApi>, budget: &str) -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let key = support::service_account_key("k1");
        Self::start_with_key(api, budget, temp, key).await
    }

    async fn start_with_key(api: Arc<FakeApi>, budget: &str, temp: TempDir, key: String) -> Self {
        Self::start_with_config(api, budget, temp, key, "").await
    }

    /// `extra` is appended to the config (namespace rules).
    async fn start_with_config(
        api: Arc<FakeApi>,
        budget: &str,
        temp: TempDir,
        key: String,
        extra: &str,
    ) -> Self {
        let key_dir = KubeletDir::create(
            &temp.path().join("credentials/gcp"),
            &[("key.json", key.as_bytes())],
        );
        let config = format!(
            "registries:\n- name: gcp\n  preset: gcp\n  secretName: {SECRET}\n  credentials:\n    gcpJsonKey: {{file: {}/key.json}}\nprovisioning: {{budget: {budget}}}\n{extra}",
            key_dir.path().display()
        );
        let metrics = Arc::new(Metrics::new());
        let provisioner = KubePullSecrets::start(api.client(), metrics.clone(), test_options());
        let server = TestServer::start_with(TestOptions {
            metrics: Some(metrics),
            ..TestOptions::new(&config, Arc::new(provisioner.clone()))
        })
        .await;
        // The provisioner watches the managed Secret name from the start.
        assert!(
            api.wait_for(CONVERGE, |a| a.active_watches_on(SECRETS) >= 1)
                .await,
            "no watch opened"
        );
        Self {
            api,
            server,
            provisioner,
            key_dir,
            key,
            _temp: temp,
        }
    }

    /// A Pod CREATE in `namespace` as it stands: a forged review can name any namespace.
    async fn admit_as_is(&self, namespace: &str) -> serde_json::Value {
        let mut conn = self.server.client.connect().await.expect("connect");
        let reply = conn.review(pod_review(namespace, false)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }

    /// Secret requests (any verb) in one namespace.
    fn secret_requests_in(&self, namespace: &str) -> usize {
        self.api
            .requests()
            .iter()
            .filter(|r| r.is_secret() && r.namespace.as_deref() == Some(namespace))
            .count()
    }

    /// A Pod CREATE in `namespace`, which exists first, as in a real cluster.
    async fn admit(&self, namespace: &str, dry_run: bool) -> serde_json::Value {
        self.api.ensure_namespace(namespace);
        let mut conn = self.server.client.connect().await.expect("connect");
        let reply = conn.review(pod_review(namespace, dry_run)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let response = reply.json();
        assert_eq!(response["response"]["allowed"], true, "{response}");
        response
    }

    fn secret(&self, namespace: &str) -> Option<Secret> {
        self.api.secret(namespace, SECRET)
    }

    /// Waits until the webhook has counted `count` credential reloads of the gcp entry with
    /// `result`; fails the test with the metrics page otherwise.
    async fn await_credential_reloads(&self, result: &str, count: u32) {
        let line = format!(
            "pullsecret_injector_credential_reloads_total{{registry=\"gcp\",result=\"{result}\"}} {count}"
        );
        let seen = support::eventually(CONVERGE, || async {
            self.server.metrics().await.contains(&line)
        })
        .await;
        assert!(seen, "no {line:?} in {}", self.server.metrics().await);
    }

    async fn secret_appears(&self, namespace: &str) -> bool {
        self.api
            .wait_for(CONVERGE, |a| a.secret(namespace, SECRET).is_some())
            .await
    }

    /// Secret API calls other than the provisioner's cluster-wide list/watch (`count` counts Secret
    /// requests only).
    fn point_calls(&self) -> usize {
        ["get", "create", "patch", "update", "delete"]
            .iter()
            .map(|v| self.api.count(v))
            .sum()
    }

    fn assert_no_rbac_violation(&self) {
        let violations = self.api.rbac_violations();
        assert!(
            violations.is_empty(),
            "requests outside the RBAC rules: {violations:#?}"
        );
        for request in self.api.requests() {
            assert!(
                ["get", "create", "patch", "list", "watch"].contains(&request.verb.as_str()),
                "unexpected verb {} on {}",
                request.verb,
                request.path
            );
        }
    }
}

fn pod_review(namespace: &str, dry_run: bool) -> Vec<u8> {
    let uid = format!("uid-{namespace}-{}", rand_suffix());
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "dryRun": dry_run,
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "api-", "namespace": namespace},
                "spec": {"containers": [{"name": "api", "image": "europe-west1-docker.pkg.dev/acme-prod/apps/api:1.8.0"}]}
            }
        }
    }))
    .expect("json")
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn warnings(response: &serde_json::Value) -> Vec<String> {
    response["response"]["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn injects_reference(response: &serde_json::Value) -> bool {
    support::decoded_patch(response).is_some_and(|patch| {
        serde_json::to_string(&patch)
            .unwrap_or_default()
            .contains(SECRET)
    })
}

fn docker_config(secret: &Secret) -> serde_json::Value {
    let bytes = &secret.data.as_ref().expect("data")[".dockerconfigjson"].0;
    serde_json::from_slice(bytes).expect("dockerconfigjson is JSON")
}

#[tokio::test]
async fn first_pod_creates_the_secret_before_the_answer() {
    let h = Harness::start("2s").await;
    let response = h.admit("team-a", false).await;
    assert!(injects_reference(&response));
    assert!(
        !warnings(&response).iter().any(|w| w.contains("not ready")),
        "{:?}",
        warnings(&response)
    );
    // Created before the webhook answered: no waiting here.
    let secret = h
        .secret("team-a")
        .expect("Secret exists when the answer arrives");
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let labels = secret.metadata.labels.clone().expect("labels");
    assert_eq!(
        labels["app.kubernetes.io/managed-by"],
        "pullsecret-injector"
    );
    assert_eq!(labels["pullsecret-injector.io/registry"], "gcp");
    let hash = &secret.metadata.annotations.as_ref().expect("annotations")["pullsecret-injector.io/content-hash"];
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");
    assert_eq!(h.api.count("create"), 1);
    h.assert_no_rbac_violation();
}

#[tokio::test]
async fn json_key_is_written_byte_exact_as_kubectl_would() {
    let h = Harness::start("2s").await;
    h.admit("team-a", false).await;
    let config = docker_config(&h.secret("team-a").expect("Secret"));
    // kubectl create secret docker-registry gcr-pull --docker-server=HOST \
    //   --docker-username=_json_key --docker-password="$(cat key.json)"
    let password = h.key.trim_end_matches('\n');
    let kubectl_entry = json!({
        "username": "_json_key",
        "password": password,
        "auth": base64::engine::general_purpose::STANDARD.encode(format!("_json_key:{password}")),
    });
    let auths = config["auths"].as_object().expect("auths");
    let hosts: Vec<&str> = auths.keys().map(String::as_str).collect();
    assert_eq!(
        hosts,
        [
            "*-docker.pkg.dev",
            "*.gcr.io",
            "docker.*.rep.pkg.dev",
            "gcr.io"
        ]
    );
    for (host, entry) in auths {
        assert_eq!(entry, &kubectl_entry, "{host}");
    }
    // The private key's \n escapes reach the registry as they are in the file.
    let written = auths["gcr.io"]["password"].as_str().expect("password");
    assert_eq!(written.as_bytes(), password.as_bytes());
    assert!(written.contains("\\n"), "escaped newlines survive");
    h.assert_no_rbac_violation();
}

#[tokio::test]
async fn second_pod_in_a_served_namespace_makes_no_api_call() {
    let h = Harness::start("2s").await;
    h.admit("team-a", false).await;
    h.api.reset_log();
    for _ in 0..20 {
        let response = h.admit("team-a", false).await;
        assert!(injects_reference(&response));
    }
    assert_eq!(h.point_calls(), 0, "{:#?}", h.api.requests());
    assert!(h.provisioner.is_known_good("team-a", SECRET));
    h.assert_no_rbac_violation();
}

#[tokio::test]
async fn dry_run_gets_the_patch_and_writes_nothing() {
    let h = Harness::start("2s").await;
    h.api.reset_log();
    let response = h.admit("team-dry", true).await;
    assert!(injects_reference(&response));
    assert_eq!(h.point_calls(), 0, "{:#?}", h.api.requests());
    assert!(h.secret("team-dry").is_none());
    h.assert_no_rbac_violation();
}

#[tokio::test]
async fn foreign_secret_is_untouched_and_still_referenced() {
    let h = Harness::start("2s").await;
    h.api.put_namespace("team-own", &[]);
    let mut foreign = Secret::default();
    foreign.metadata.name = Some(SECRET.into());
    foreign.metadata.namespace = Some("team-own".into());
    foreign.type_ = Some("kubernetes.io/dockerconfigjson".into());
    foreign.data = Some(
        [(
            ".dockerconfigjson".to_owned(),
            k8s_openapi::ByteString(br#"{"auths":{"gcr.io":{"auth":"dXNlcjpwYXNz"}}}"#.to_vec()),
        )]
        .into(),
    );
    let before = h.api.put_secret(foreign);

    let first = h.admit("team-own", false).await;
    assert!(injects_reference(&first), "the user's Secret is referenced");
    assert!(
        warnings(&first)
            .iter()
            .any(|w| w.contains("not managed by pullsecret-injector")),
        "{:?}",
        warnings(&first)
    );
    let second = h.admit("team-own", false).await;
    assert!(injects_reference(&second));
    assert!(
        !warnings(&second).iter().any(|w| w.contains("not managed")),
        "warned once: {:?}",
        warnings(&second)
    );

    let after = h.secret("team-own").expect("still there");
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "untouched"
    );
    assert_eq!(after.data, before.data);
    assert_eq!(h.api.writes(), 0);
    h.assert_no_rbac_violation();
}

/// A fault scenario: the API misbehaves beyond the 300 ms budget, the Pod is admitted with the
/// reference and a warning, and the background retry makes the Secret exist.
struct FaultScenario {
    name: &'static str,
    namespace: &'static str,
    fault: Fault,
}

#[tokio::test]
async fn api_faults_admit_with_a_warning_and_the_retry_converges() {
    let h = Harness::start("300ms").await;
    let scenarios = [
        FaultScenario {
            name: "500 on create",
            namespace: "fault-500",
            fault: Fault::status(500)
                .on_verb("create")
                .in_namespace("fault-500")
                .times(6),
        },
        FaultScenario {
            name: "503 on the read",
            namespace: "fault-503",
            fault: Fault::status(503)
                .on_verb("list")
                .in_namespace("fault-503")
                .times(6),
        },
        FaultScenario {
            name: "API slower than the budget",
            namespace: "fault-slow",
            fault: Fault::delay(Duration::from_secs(2))
                .on_verb("list")
                .in_namespace("fault-slow")
                .times(1),
        },
    ];
    for scenario in scenarios {
        h.api.inject(scenario.fault);
        // Not a speed check: the slow scenario holds the API 5 s, so an answer before 4 s shows
        // the webhook did not wait for it.
        let started = std::time::Instant::now();
        let response = h.admit(scenario.namespace, false).await;
        assert!(
            injects_reference(&response),
            "{}: the Pod still gets the reference",
            scenario.name
        );
        assert!(
            warnings(&response)
                .iter()
                .any(|w| w.contains("is not ready yet")),
            "{}: {:?}",
            scenario.name,
            warnings(&response)
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{}: answered within the budget, took {:?}",
            scenario.name,
            started.elapsed()
        );
        assert!(
            h.secret_appears(scenario.namespace).await,
            "{}: background retry never converged",
            scenario.name
        );
    }
    let metrics = h.server.metrics().await;
    assert!(
        metrics.contains("pullsecret_injector_provisioning_pending_total{registry=\"gcp\"} 3"),
        "{metrics}"
    );
    h.assert_no_rbac_violation();
}

#[tokio::test]
async fn api_down_then_back_converges() {
    let h = Harness::start("300ms").await;
    h.api.set_down(true);
    let response = h.admit("team-outage", false).await;
    assert!(injects_reference(&response));
    assert!(
        warnings(&response)
            .iter()
            .any(|w| w.contains("is not ready yet")),
        "{:?}",
        warnings(&response)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.api.set_down(false);
    assert!(
        h.secret_appears("team-outage").await,
        "no Secret after the API came back"
    );
    h.assert_no_rbac_violation();
}

#[tokio::test]
async fn two_hundred_concurrent_pods_in_a_new_namespace_cause_one_write() {
    let h = Harness::start("5s").await;
    h.api.put_namespace("team-burst", &[]);
    h.api.reset_log();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let client = support::TlsClient::new(h.server.app.local_addr(), h.server.ca.cert_pem());
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connect().await.expect("connect");
            conn.review(pod_review("team-burst", false)).await.json()
        }));
    }
    for task in tasks {
        let response = task.await.expect("task");
        assert!(injects_reference(&response));
        assert!(
            !warnings(&response).iter().any(|w| w.contains("not ready")),
            "{:?}",
            warnings(&response)
        );
    }
    assert_eq!(h.api.writes(), 1, "{:#?}", h.api.requests());
    assert_eq!(h.api.count("create"), 1);
    h.assert_no_rbac_violation();
}

#[tokio::test]
async fn two_injector_replicas_racing_end_with_one_secret_and_no_error() {
    let a = Harness::start("5s").await;
    let b = Harness::start_with_key(
        a.api.clone(),
        "5s",
        tempfile::tempdir().expect("tempdir"),
        a.key.clone(),
    )
    .await;
    for round in 0..5 {
        let namespace = format!("race-{round}");
        let (ra, rb) = tokio::join!(a.admit(&namespace, false), b.admit(&namespace, false));
        for response in [ra, rb] {
            assert!(injects_reference(&response));
            assert!(
                !warnings(&response)
                    .iter()
                    .any(|w| w.contains("not ready") || w.contains("not managed")),
                "{:?}",
                warnings(&response)
            );
        }
        let secrets: Vec<Secret> = a
            .api
            .secrets_named(SECRET)
            .into_iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(&namespace))
            .collect();
        assert_eq!(secrets.len(), 1);
        assert_eq!(
            docker_config(&secrets[0])["auths"]["gcr.io"]["username"],
            "_json_key"
        );
    }
    let created = a
        .api
        .requests()
        .iter()
        .filter(|r| r.is_secret() && r.verb == "create" && r.status == 201)
        .count();
    assert_eq!(created, 5, "one successful create per namespace");
    a.assert_no_rbac_violation();
}

#[tokio::test]
async fn key_rotation_updates_every_namespace_in_place() {
    let mut h = Harness::start("2s").await;
    let namespaces = ["rot-a", "rot-b", "rot-c"];
    for ns in namespaces {
        h.admit(ns, false).await;
    }
    let before: Vec<Secret> = namespaces
        .iter()
        .map(|ns| h.secret(ns).expect("Secret"))
        .collect();

    let new_key = support::service_account_key("k2");
    h.key_dir.update(&[("key.json", new_key.as_bytes())]);
    let expected_password = new_key.trim_end_matches('\n').to_owned();
    let rotated = h
        .api
        .wait_for(CONVERGE, |api| {
            namespaces.iter().all(|ns| {
                api.secret(ns, SECRET).is_some_and(|s| {
                    docker_config(&s)["auths"]["gcr.io"]["password"] == expected_password.as_str()
                })
            })
        })
        .await;
    assert!(rotated, "not every namespace got the new key");
    for (ns, old) in namespaces.iter().zip(&before) {
        let new = h.secret(ns).expect("Secret");
        assert_eq!(
            new.metadata.uid, old.metadata.uid,
            "{ns}: updated in place, not recreated"
        );
        assert_ne!(
            new.metadata.annotations, old.metadata.annotations,
            "{ns}: hash annotation follows the content"
        );
    }
    assert_eq!(h.api.count("delete"), 0);
    // Steady state again: a Pod in a rotated namespace costs nothing.
    h.api.reset_log();
    h.admit("rot-a", false).await;
    assert_eq!(h.point_calls(), 0);
    h.key = new_key;
    h.assert_no_rbac_violation();
}

#[tokio::test]
async fn invalid_new_key_is_refused_and_the_old_one_stays() {
    let mut h = Harness::start("2s").await;
    h.admit("team-a", false).await;
    let before = h.secret("team-a").expect("Secret");
    h.key_dir
        .update(&[("key.json", b"{\"type\": \"authorized_user\"}")]);
    h.await_credential_reloads("failure", 1).await;
    let response = h.admit("team-b", false).await;
    assert!(
        !warnings(&response).iter().any(|w| w.contains("not ready")),
        "{:?}",
        warnings(&response)
    );
    assert_eq!(h.secret("team-a").expect("Secret").data, before.data);
    assert_eq!(
        h.secret("team-b").expect("Secret").data,
        before.data,
        "new namespaces get the last good key"
    );
    h.assert_no_rbac_violation();
}

#[tokio::test]
async fn deleted_managed_secret_comes_back() {
    let h = Harness::start("2s").await;
    h.admit("team-a", false).await;
    assert!(h.api.delete_secret("team-a", SECRET));
    assert!(
        h.secret_appears("team-a").await,
        "deleted managed Secret was not recreated"
    );
    let restored = h.secret("team-a").expect("Secret");
    assert_eq!(
        docker_config(&restored)["auths"]["gcr.io"]["username"],
        "_json_key"
    );
    h.assert_no_rbac_violation();
}

#[tokio::test]
async fn registry_without_credentials_only_injects_the_reference() {
    let api = FakeApi::start(&[SECRET]).await;
    api.put_namespace("team-a", &[]);
    let provisioner =
        KubePullSecrets::start(api.client(), Arc::new(Metrics::new()), test_options());
    let server =
        TestServer::start_with(TestOptions::new(support::GCP_CONFIG, Arc::new(provisioner))).await;
    let mut conn = server.client.connect().await.expect("connect");
    let response = conn.review(pod_review("team-a", false)).await.json();
    assert!(injects_reference(&response));
    assert!(
        api.requests()
            .iter()
            .all(|r| r.verb == "list" || r.verb == "watch"),
        "{:#?}",
        api.requests()
    );
    assert_eq!(api.writes(), 0);
}

/// The steady state answers "ready" without asking anyone; it must stop doing so the moment the
/// credentials change. After a key rotation whose rewrite the API refuses, a Pod in a namespace
/// served a moment ago is told its Secret is not ready yet, and once the API recovers it is ready
/// again with the new key.
#[tokio::test]
async fn a_rotation_the_api_refuses_is_not_reported_ready() {
    let mut h = Harness::start("300ms").await;
    h.admit("team-a", false).await;
    for _ in 0..3 {
        let response = h.admit("team-a", false).await;
        assert!(
            !warnings(&response).iter().any(|w| w.contains("not ready")),
            "{:?}",
            warnings(&response)
        );
    }

    h.api
        .inject(Fault::status(500).on_verb("patch").in_namespace("team-a"));
    let new_key = support::service_account_key("k2");
    h.key_dir.update(&[("key.json", new_key.as_bytes())]);
    h.await_credential_reloads("success", 2).await;
    let response = h.admit("team-a", false).await;
    assert!(
        warnings(&response)
            .iter()
            .any(|w| w.contains("is not ready yet")),
        "the old Secret was reported ready: {:?}",
        warnings(&response)
    );

    h.api.clear_faults();
    let expected_password = new_key.trim_end_matches('\n').to_owned();
    let rotated = h
        .api
        .wait_for(CONVERGE, |api| {
            api.secret("team-a", SECRET).is_some_and(|s| {
                docker_config(&s)["auths"]["gcr.io"]["password"] == expected_password.as_str()
            })
        })
        .await;
    assert!(rotated, "the rewrite never converged");
    let ready_again = support::eventually(CONVERGE, || async {
        let response = h.admit("team-a", false).await;
        !warnings(&response).iter().any(|w| w.contains("not ready"))
    })
    .await;
    assert!(ready_again, "never ready again after the rewrite");
    h.assert_no_rbac_violation();
}

/// A forged review whose namespace is not a namespace name (percent-encoded, with a slash or a
/// query, uppercase) is refused with 400 before anything reaches the Kubernetes API.
#[tokio::test]
async fn forged_namespaces_get_400_and_no_api_request() {
    let h = Harness::start("2s").await;
    h.api.reset_log();
    for namespace in [
        "kube%2Dsystem",
        "a/b",
        "a?b",
        "team-a/secrets?fieldSelector=metadata.name%3Dgcr-pull",
        "Team-A",
        "..",
    ] {
        let mut conn = h.server.client.connect().await.expect("connect");
        let reply = conn.review(pod_review(namespace, false)).await;
        assert_eq!(reply.status, 400, "{namespace:?}: {}", reply.text());
        assert!(
            reply.text().contains("is not a valid namespace name"),
            "{namespace:?}: {}",
            reply.text()
        );
    }
    assert_eq!(
        h.point_calls(),
        0,
        "API requests after forged reviews: {:#?}",
        h.api.requests()
    );
    assert!(h.api.all_secrets().is_empty(), "{:#?}", h.api.all_secrets());
    // A real review still works afterwards.
    let response = h.admit("team-a", false).await;
    assert!(injects_reference(&response), "{response}");
    h.assert_no_rbac_violation();
}

// ---------------------------------------------------------------------------------------------
// Which namespaces get a Secret
// ---------------------------------------------------------------------------------------------

fn not_provisioned(response: &serde_json::Value) -> bool {
    warnings(response)
        .iter()
        .any(|w| w.contains("is not provisioned here"))
}

/// A review for a namespace that does not exist: the Pod gets the reference as the rules say, with
/// a warning; no API request, no Secret, nothing remembered.
#[tokio::test]
async fn a_review_for_a_namespace_that_does_not_exist_writes_nothing_and_leaves_no_state() {
    let h = Harness::start("300ms").await;
    h.api.reset_log();
    let response = h.admit_as_is("ghost").await;
    assert!(injects_reference(&response), "{response}");
    assert!(not_provisioned(&response), "{:?}", warnings(&response));
    assert_eq!(h.point_calls(), 0, "{:#?}", h.api.requests());
    assert!(h.api.all_secrets().is_empty());
    assert_eq!(h.provisioner.remembered_states(), 0);
    h.assert_no_rbac_violation();
}

/// A namespace the watch delivers only after the first Pod's budget (a watch restarting, or slowed
/// by the API server): that Pod is told the Secret is not provisioned, keeps the reference, and the
/// Secret follows once the watch shows the namespace, with no other Pod. Nothing is written before.
#[tokio::test]
async fn a_namespace_the_watch_delivers_after_the_first_pod_still_gets_its_secret() {
    let h = Harness::start("300ms").await;
    h.api.reset_log();
    let response = h.admit_as_is("late").await;
    assert!(injects_reference(&response), "{response}");
    assert!(not_provisioned(&response), "{:?}", warnings(&response));
    assert_eq!(h.point_calls(), 0, "{:#?}", h.api.requests());
    h.api.ensure_namespace("late");
    assert!(h.secret_appears("late").await, "{:#?}", h.api.requests());
    assert_eq!(h.api.all_secrets().len(), 1);
    h.assert_no_rbac_violation();
}

/// With an opt-in selector, a namespace outside it gets nothing written; one inside it does. A
/// namespace in the skip list is left alone entirely; a terminating one gets no write.
#[tokio::test]
async fn only_eligible_namespaces_get_a_secret() {
    let api = Arc::new(FakeApi::start(&[SECRET]).await);
    let h = Harness::start_with_config(
        api,
        "300ms",
        tempfile::tempdir().expect("tempdir"),
        support::service_account_key("k1"),
        "skipNamespaces: [platform]\nnamespaceSelector:\n  matchLabels: {pullsecret-injector.io/inject: enabled}\n",
    )
    .await;
    h.api
        .put_namespace("opted-in", &[("pullsecret-injector.io/inject", "enabled")]);
    h.api.put_namespace("not-opted-in", &[]);
    h.api
        .put_namespace("platform", &[("pullsecret-injector.io/inject", "enabled")]);
    h.api
        .put_namespace("leaving", &[("pullsecret-injector.io/inject", "enabled")]);
    h.api.terminate_namespace("leaving");
    h.api.reset_log();

    let response = h.admit_as_is("opted-in").await;
    assert!(injects_reference(&response));
    assert!(h.secret("opted-in").is_some(), "{:?}", warnings(&response));

    for namespace in ["not-opted-in", "leaving"] {
        let response = h.admit_as_is(namespace).await;
        assert!(
            not_provisioned(&response),
            "{namespace}: {:?}",
            warnings(&response)
        );
        assert_eq!(h.secret_requests_in(namespace), 0, "{namespace}");
        assert!(h.secret(namespace).is_none(), "{namespace}");
    }
    let response = h.admit_as_is("platform").await;
    assert!(
        !injects_reference(&response),
        "a skipped namespace is left alone"
    );
    assert_eq!(h.secret_requests_in("platform"), 0);
    assert_eq!(
        h.provisioner.remembered_states(),
        1,
        "only opted-in is remembered"
    );
    h.assert_no_rbac_violation();
}

/// 20,000 distinct made-up namespaces, all at once: no API request at all, and the provisioner
/// remembers nothing of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_made_up_namespaces_cause_no_api_call_and_no_state() {
    use pullsecret_injector::provisioning::{EnsureOutcome, EnsureRequest, PullSecrets as _};
    let h = Harness::start("2s").await;
    // One real namespace served first: the baseline the made-up ones must not add to.
    h.admit("team-a", false).await;
    assert!(h.secret_appears("team-a").await);
    let baseline = h.provisioner.remembered_states();
    h.api.reset_log();
    let config = pullsecret_injector::config::Config::from_yaml_str(&format!(
        "registries:\n- name: gcp\n  preset: gcp\n  secretName: {SECRET}\n  credentials:\n    gcpJsonKey: {{file: /unused/key.json}}\n"
    ))
    .expect("config");
    let registry = &config.registries[0];
    let names: Vec<String> = (0..20_000).map(|i| format!("made-up-{i}")).collect();
    let outcomes = futures::future::join_all(names.iter().map(|namespace| {
        h.provisioner.ensure(EnsureRequest {
            namespace,
            registry,
            dry_run: false,
            budget: Duration::from_millis(200),
        })
    }))
    .await;
    let not_eligible = outcomes
        .iter()
        .filter(|o| matches!(o, EnsureOutcome::NotEligible { .. }))
        .count();
    assert_eq!(not_eligible, names.len(), "{:?}", outcomes.first());
    assert_eq!(
        h.point_calls(),
        0,
        "API requests: {}",
        h.api.requests().len()
    );
    assert_eq!(h.api.writes(), 0);
    assert_eq!(h.provisioner.remembered_states(), baseline);
}

/// A namespace that answers 403 ends its flight: no retry afterwards. The next Pod there starts a
/// new one, which succeeds once the API allows it.
#[tokio::test]
async fn a_namespace_answering_403_ends_the_flight_and_the_next_pod_starts_another() {
    let h = Harness::start("500ms").await;
    h.api.inject(
        Fault::status(403)
            .on_resource(SECRETS)
            .in_namespace("locked")
            .times(1),
    );
    let response = h.admit("locked", false).await;
    assert!(injects_reference(&response));
    assert!(
        warnings(&response).iter().any(|w| w.contains("403")),
        "{:?}",
        warnings(&response)
    );
    let after_first = h.secret_requests_in("locked");
    assert_eq!(
        after_first,
        1,
        "one request, refused: {:#?}",
        h.api.requests()
    );
    // Longer than several retry delays of the test options (50 ms doubling to 400 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        h.secret_requests_in("locked"),
        after_first,
        "retried after a 403"
    );
    assert!(h.secret("locked").is_none());
    h.admit("locked", false).await;
    assert!(h.secret_appears("locked").await, "the next Pod's flight");
}

/// A deleted namespace is forgotten.
#[tokio::test]
async fn a_deleted_namespace_is_forgotten() {
    let h = Harness::start("2s").await;
    for namespace in ["team-a", "team-b"] {
        h.admit(namespace, false).await;
        assert!(h.secret_appears(namespace).await);
    }
    assert_eq!(h.provisioner.remembered_states(), 2);
    assert!(h.api.delete_namespace("team-b"));
    let forgotten = support::eventually(CONVERGE, || async {
        h.provisioner.remembered_states() == 1
    })
    .await;
    assert!(forgotten, "{} states", h.provisioner.remembered_states());
    assert!(h.provisioner.is_known_good("team-a", SECRET));
}

/// A Secret named like a managed one but of another type is never read (every read lists by name
/// and type) and never written; the Pod references it and the user is warned.
#[tokio::test]
async fn a_secret_of_another_type_with_a_managed_name_is_never_read_or_written() {
    use std::collections::BTreeMap;
    let h = Harness::start("2s").await;
    h.api.ensure_namespace("kube-public-ish");
    let token = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(SECRET.to_owned()),
            namespace: Some("kube-public-ish".to_owned()),
            // Even with the managed-by label: the type decides.
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "pullsecret-injector".to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/service-account-token".to_owned()),
        data: Some(BTreeMap::from([(
            "token".to_owned(),
            k8s_openapi::ByteString(b"a-long-lived-token".to_vec()),
        )])),
        ..Default::default()
    };
    let before = h.api.put_secret(token);
    h.api.reset_log();
    let response = h.admit("kube-public-ish", false).await;
    assert!(injects_reference(&response));
    assert!(
        warnings(&response)
            .iter()
            .any(|w| w.contains("is not managed by pullsecret-injector")),
        "{:?}",
        warnings(&response)
    );
    let requests: Vec<_> = h
        .api
        .requests()
        .into_iter()
        .filter(|r| r.is_secret() && r.namespace.as_deref() == Some("kube-public-ish"))
        .collect();
    for request in &requests {
        match request.verb.as_str() {
            "list" => assert!(
                request
                    .query
                    .contains("type%3Dkubernetes.io%2Fdockerconfigjson")
                    || request
                        .query
                        .contains("type=kubernetes.io/dockerconfigjson"),
                "a list without the type: {}",
                request.query
            ),
            "create" => assert_eq!(request.status, 409, "{request:?}"),
            other => panic!("{other} on the foreign Secret: {request:?}"),
        }
    }
    let after = h.secret("kube-public-ish").expect("still there");
    assert_eq!(after.type_, before.type_);
    assert_eq!(after.data, before.data);
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    h.assert_no_rbac_violation();
}
