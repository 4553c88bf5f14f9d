//! Short-lived credentials end to end: the webhook mints access tokens (from a key, or from the metadata
//! server, or by Workload Identity Federation), writes them into every managed Secret, refreshes them before they expire, and retries and
//! reports a failing token endpoint. The endpoints run on loopback; the key is made at test time.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::StatusCode;
use k8s_openapi::api::core::v1::Secret;
use pullsecret_injector::provisioning::{KubePullSecrets, ProvisionerOptions};
use pullsecret_injector::serving::Metrics;
use serde_json::json;
use support::fake_api::FakeApi;
use support::gcp::{
    Canned, WIF_AUDIENCE, credential_config, federation_endpoints, key_json, keys, metadata_server,
    token_endpoint,
};
use support::{KubeletDir, TestOptions, TestServer};

const SECRET: &str = "gcr-pull";
const CONVERGE: Duration = Duration::from_secs(15);

struct Harness {
    api: FakeApi,
    server: TestServer,
    _provisioner: KubePullSecrets,
    _temp: tempfile::TempDir,
}

impl Harness {
    async fn start(credentials: &str, key_json: Option<&str>) -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let key_dir = KubeletDir::create(
            &temp.path().join("credentials/gcp"),
            &[("key.json", key_json.unwrap_or("{}").as_bytes())],
        );
        let credentials = credentials.replace(
            "KEY_FILE",
            &format!("{}/key.json", key_dir.path().display()),
        );
        let config = format!(
            "registries:\n- name: gcp\n  preset: gcp\n  secretName: {SECRET}\n  credentials: {credentials}\nprovisioning: {{budget: 1s}}\n"
        );
        let api = FakeApi::start(&[SECRET]).await;
        let metrics = Arc::new(Metrics::new());
        let options = ProvisionerOptions {
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_millis(400),
            max_writes_per_second: 200,
            foreign_recheck: Duration::from_secs(3600),
            reload_poll: Duration::from_secs(3600),
            health: support::offline_health(),
        };
        let provisioner = KubePullSecrets::start(api.client(), metrics.clone(), options);
        let server = TestServer::start_with(TestOptions {
            metrics: Some(metrics),
            ..TestOptions::new(&config, Arc::new(provisioner.clone()))
        })
        .await;
        Self {
            api,
            server,
            _provisioner: provisioner,
            _temp: temp,
        }
    }

    /// A Pod CREATE in `namespace`, which exists first, as in a real cluster.
    async fn admit(&self, namespace: &str) -> serde_json::Value {
        self.api.ensure_namespace(namespace);
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": format!("uid-{namespace}"),
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "eu.gcr.io/acme/app:1"}]}}
            }
        });
        let mut conn = self.server.client.connect().await.expect("connect");
        let reply = conn
            .review(serde_json::to_vec(&review).expect("json"))
            .await;
        assert_eq!(reply.status, 200);
        reply.json()
    }

    fn login(&self, namespace: &str) -> Option<(String, String)> {
        let secret: Secret = self.api.secret(namespace, SECRET)?;
        let bytes = &secret.data.as_ref()?.get(".dockerconfigjson")?.0;
        let config: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let entry = &config["auths"]["eu.gcr.io"];
        let entry = if entry.is_null() {
            &config["auths"]["*.gcr.io"]
        } else {
            entry
        };
        Some((
            entry["username"].as_str()?.to_owned(),
            entry["password"].as_str()?.to_owned(),
        ))
    }

    /// Waits for a newer token in every namespace, written in place (same Secret UIDs).
    /// `meanwhile` runs once the first tokens are recorded. The tokens live a few seconds, so a
    /// refresh arrives within the wait only because it is scheduled from their real expiry (the
    /// schedule itself, "before expiry" for every jitter, is tested in `tests/gcp_auth.rs` without
    /// a clock).
    async fn assert_refreshed_in_place(&self, namespaces: &[&str], meanwhile: impl FnOnce()) {
        let first = token_number(&self.login(namespaces[0]).expect("login").1).expect("numbered");
        let uids: Vec<_> = namespaces
            .iter()
            .map(|ns| self.api.secret(ns, SECRET).expect("Secret").metadata.uid)
            .collect();
        meanwhile();
        for ns in namespaces {
            assert!(
                self.login_becomes(ns, |_, p| token_number(p).is_some_and(|n| n > first))
                    .await,
                "{ns}: the token was never refreshed"
            );
        }
        for (ns, uid) in namespaces.iter().zip(uids) {
            assert_eq!(
                self.api.secret(ns, SECRET).expect("Secret").metadata.uid,
                uid,
                "{ns}: updated in place"
            );
        }
    }

    async fn login_becomes(&self, namespace: &str, check: impl Fn(&str, &str) -> bool) -> bool {
        self.api
            .wait_for(CONVERGE, |_| {
                self.login(namespace).is_some_and(|(u, p)| check(&u, &p))
            })
            .await
    }
}

fn token_number(password: &str) -> Option<u64> {
    password.rsplit('-').next()?.parse().ok()
}

fn warnings(response: &serde_json::Value) -> String {
    response["response"]["warnings"].to_string()
}

#[tokio::test]
async fn access_tokens_are_written_and_refreshed_before_expiry_in_every_namespace() {
    // 8 s tokens are refreshed at about a quarter of their life (see AccessToken::refresh_at).
    let (endpoint, token_uri) = token_endpoint(0, 8).await;
    let key = key_json(&keys()[0].private_pem, Some(&token_uri));
    let h = Harness::start(
        "{gcpJsonKey: {file: KEY_FILE, mode: accessToken}}",
        Some(&key),
    )
    .await;

    let namespaces = ["tok-a", "tok-b"];
    for ns in namespaces {
        let response = h.admit(ns).await;
        assert!(
            !warnings(&response).contains("not ready"),
            "{}",
            warnings(&response)
        );
        let (username, password) = h.login(ns).expect("Secret with a login");
        assert_eq!(username, "oauth2accesstoken");
        assert!(
            password.starts_with("ya29.test-token-"),
            "the password is a token, not the key"
        );
    }
    // The token lives 8 s; its replacement must land well before that.
    h.assert_refreshed_in_place(&namespaces, || {}).await;
    // The key itself never leaves the injector's namespace.
    for secret in h.api.secrets_named(SECRET) {
        let data = String::from_utf8_lossy(&secret.data.expect("data")[".dockerconfigjson"].0)
            .into_owned();
        assert!(
            !data.contains("PRIVATE KEY") && !data.contains("_json_key"),
            "{data}"
        );
    }
    assert!(endpoint.issued.load(Ordering::SeqCst) >= 2);
    let metrics = h.server.metrics().await;
    let remaining = metrics
        .lines()
        .find(|l| {
            l.starts_with("pullsecret_injector_access_token_remaining_seconds{registry=\"gcp\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no remaining-lifetime gauge: {metrics}"));
    assert!(remaining > 0.0 && remaining <= 8.0, "{remaining}");
    assert!(h.api.rbac_violations().is_empty());
}

#[tokio::test]
async fn token_endpoint_failures_are_retried_and_surfaced() {
    let (endpoint, token_uri) = token_endpoint(0, 3600).await;
    for _ in 0..4 {
        endpoint
            .canned
            .lock()
            .expect("lock")
            .push_back(Canned::Status(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":"backend_error"}"#.into(),
            ));
    }
    let key = key_json(&keys()[0].private_pem, Some(&token_uri));
    let h = Harness::start(
        "{gcpJsonKey: {file: KEY_FILE, mode: accessToken}}",
        Some(&key),
    )
    .await;

    // Until a token exists, Pods are admitted with the reference and told why the Secret is not there.
    let response = h.admit("tok-fail").await;
    let said = warnings(&response);
    assert!(
        h.login("tok-fail").is_some() || said.contains("not ready"),
        "{said}"
    );

    assert!(
        h.login_becomes("tok-fail", |u, p| u == "oauth2accesstoken"
            && p.starts_with("ya29.test-token-"))
            .await
    );
    let metrics = h.server.metrics().await;
    let failures = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "pullsecret_injector_access_token_refresh_failures_total{registry=\"gcp\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no failure counter: {metrics}"));
    assert_eq!(failures, 4, "each failed attempt is counted");
}

#[tokio::test]
async fn wrong_key_is_reported_by_the_endpoint_and_nothing_is_written() {
    // The endpoint verifies with key 1; the file holds key 0.
    let (_endpoint, token_uri) = token_endpoint(1, 3600).await;
    let key = key_json(&keys()[0].private_pem, Some(&token_uri));
    let h = Harness::start(
        "{gcpJsonKey: {file: KEY_FILE, mode: accessToken}}",
        Some(&key),
    )
    .await;
    let response = h.admit("tok-wrong").await;
    let said = warnings(&response);
    assert!(said.contains("not ready"), "{said}");
    let failing = support::eventually(CONVERGE, || async {
        h.server
            .metrics()
            .await
            .contains("pullsecret_injector_access_token_refresh_failures_total{registry=\"gcp\"}")
    })
    .await;
    assert!(failing);
    assert!(
        h.api.secret("tok-wrong", SECRET).is_none(),
        "no Secret without a token"
    );
}

#[tokio::test]
async fn workload_identity_takes_tokens_from_the_metadata_server() {
    let (metadata, base_url) = metadata_server().await;
    metadata.numbered.store(true, Ordering::SeqCst);
    metadata.lifetime_secs.store(8, Ordering::SeqCst);
    metadata.fail_next.store(2, Ordering::SeqCst);
    let h = Harness::start(
        &format!("{{gcpWorkloadIdentity: {{metadataUrl: \"{base_url}\"}}}}"),
        None,
    )
    .await;

    h.admit("wi-a").await;
    let ok = h.login_becomes("wi-a", |_, _| true).await;
    assert!(
        ok,
        "no Secret from the metadata server's token: {} {:#?} md={}",
        h.server.metrics().await,
        h.api.requests(),
        metadata.requests.load(Ordering::SeqCst)
    );
    let (username, password) = h.login("wi-a").expect("login");
    assert_eq!(username, "oauth2accesstoken");
    assert!(password.starts_with("ya29.md-default-"), "{password}");
    let first = token_number(&password).expect("numbered");
    assert!(
        h.login_becomes("wi-a", |_, p| token_number(p).is_some_and(|n| n > first))
            .await,
        "never refreshed"
    );
    assert!(
        metadata.requests.load(Ordering::SeqCst) >= 4,
        "two failures, then tokens"
    );
    assert!(
        h.server.metrics().await.contains(
            "pullsecret_injector_access_token_refresh_failures_total{registry=\"gcp\"} 2"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Workload Identity Federation: no key anywhere

/// A projected ServiceAccount token volume, as the kubelet keeps it.
fn subject_token_volume(temp: &tempfile::TempDir, token: Option<&str>) -> (KubeletDir, PathBuf) {
    let files: Vec<(&str, &[u8])> = token.map(|t| ("token", t.as_bytes())).into_iter().collect();
    let volume = KubeletDir::create(&temp.path().join("sa-token"), &files);
    let path = volume.path().join("token");
    (volume, path)
}

fn federation_file_credentials() -> &'static str {
    "{gcpWorkloadIdentityFederation: {credentialConfigFile: KEY_FILE}}"
}

async fn refresh_failures(h: &Harness) -> u64 {
    h.server
        .metrics()
        .await
        .lines()
        .find(|l| {
            l.starts_with(
                "pullsecret_injector_access_token_refresh_failures_total{registry=\"gcp\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A federation that cannot get a token: the failure is counted, the Pod is admitted with the
/// reference and told why, and no Secret is written.
async fn assert_counted_and_nothing_written(h: &Harness, namespace: &str) {
    let response = h.admit(namespace).await;
    let said = warnings(&response);
    assert!(said.contains("not ready"), "{said}");
    let counted = support::eventually(CONVERGE, || async { refresh_failures(h).await >= 2 }).await;
    assert!(counted, "failures are retried and counted");
    assert!(
        h.api.secret(namespace, SECRET).is_none(),
        "no Secret without a token"
    );
    assert!(h.api.secrets_named(SECRET).is_empty());
}

#[tokio::test]
async fn federation_writes_impersonated_tokens_and_rewrites_them_in_place_before_expiry() {
    let (fed, base) = federation_endpoints().await;
    fed.iam_lifetime_secs.store(8, Ordering::SeqCst);
    let temp = tempfile::tempdir().expect("tempdir");
    let (mut volume, token_file) = subject_token_volume(&temp, Some("sa-token-generation-1"));
    let config = credential_config(&base, WIF_AUDIENCE, &token_file, Some(3600));
    let h = Harness::start(federation_file_credentials(), Some(&config)).await;

    let namespaces = ["wif-a", "wif-b"];
    for ns in namespaces {
        h.admit(ns).await;
        assert!(
            h.login_becomes(ns, |u, p| u == "oauth2accesstoken"
                && p.starts_with("ya29.impersonated-"))
                .await,
            "{ns}: no Secret with an impersonated token"
        );
    }
    // The kubelet rotates the projected token; the next exchange must send the new one.
    h.assert_refreshed_in_place(&namespaces, || {
        volume.update(&[("token", b"sa-token-generation-2")]);
    })
    .await;
    let subjects = fed.subject_tokens.lock().expect("lock").clone();
    assert_eq!(
        subjects.first().map(String::as_str),
        Some("sa-token-generation-1")
    );
    assert_eq!(
        subjects.last().map(String::as_str),
        Some("sa-token-generation-2"),
        "the rotated token is sent: {subjects:?}"
    );
    // Every impersonation carried the federated token of the exchange just before it.
    for auth in fed.iam_authorizations.lock().expect("lock").iter() {
        assert!(auth.starts_with("Bearer ya29.federated-"), "{auth}");
    }
    // Neither the subject token nor the federated token reaches a pull Secret.
    for secret in h.api.secrets_named(SECRET) {
        let data = String::from_utf8_lossy(&secret.data.expect("data")[".dockerconfigjson"].0)
            .into_owned();
        assert!(
            !data.contains("sa-token") && !data.contains("federated"),
            "{data}"
        );
    }
    assert!(h.api.rbac_violations().is_empty());
}

#[tokio::test]
async fn federation_without_impersonation_refreshes_the_sts_token_before_it_expires() {
    let (fed, base) = federation_endpoints().await;
    fed.sts_lifetime_secs.store(8, Ordering::SeqCst);
    let temp = tempfile::tempdir().expect("tempdir");
    let (_volume, token_file) = subject_token_volume(&temp, Some("sa-token"));
    // The inline form, with the STS endpoint on loopback.
    let credentials = format!(
        "{{gcpWorkloadIdentityFederation: {{audience: \"{WIF_AUDIENCE}\", subjectTokenFile: {}, tokenUrl: \"{base}/v1/token\"}}}}",
        token_file.display()
    );
    let h = Harness::start(&credentials, None).await;

    h.admit("wif-sts").await;
    assert!(
        h.login_becomes("wif-sts", |u, p| u == "oauth2accesstoken"
            && p.starts_with("ya29.federated-"))
            .await
    );
    // Scheduled from STS's `expires_in` (8 s), not from an hour.
    h.assert_refreshed_in_place(&["wif-sts"], || {}).await;
    assert!(fed.iam_authorizations.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn federation_with_a_wrong_audience_is_counted_and_writes_no_secret() {
    let (fed, base) = federation_endpoints().await;
    let temp = tempfile::tempdir().expect("tempdir");
    let (_volume, token_file) = subject_token_volume(&temp, Some("sa-token"));
    let wrong = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/home-lab/providers/other-cluster";
    let config = credential_config(&base, wrong, &token_file, Some(3600));
    let h = Harness::start(federation_file_credentials(), Some(&config)).await;
    assert_counted_and_nothing_written(&h, "wif-audience").await;
    assert_eq!(fed.federated_issued.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn federation_refused_by_iam_is_counted_and_writes_no_secret() {
    let (fed, base) = federation_endpoints().await;
    fed.iam_forbidden.store(true, Ordering::SeqCst);
    let temp = tempfile::tempdir().expect("tempdir");
    let (_volume, token_file) = subject_token_volume(&temp, Some("sa-token"));
    let config = credential_config(&base, WIF_AUDIENCE, &token_file, Some(3600));
    let h = Harness::start(federation_file_credentials(), Some(&config)).await;
    assert_counted_and_nothing_written(&h, "wif-iam").await;
    assert!(fed.federated_issued.load(Ordering::SeqCst) >= 2);
    assert_eq!(fed.impersonated_issued.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn federation_retries_a_missing_subject_token_until_the_file_appears() {
    let (fed, base) = federation_endpoints().await;
    let temp = tempfile::tempdir().expect("tempdir");
    let (mut volume, token_file) = subject_token_volume(&temp, None);
    let config = credential_config(&base, WIF_AUDIENCE, &token_file, Some(3600));
    let h = Harness::start(federation_file_credentials(), Some(&config)).await;
    assert_counted_and_nothing_written(&h, "wif-late").await;
    assert!(fed.exchanges.lock().expect("lock").is_empty());

    volume.update(&[("token", b"sa-token-late")]);
    assert!(
        h.login_becomes("wif-late", |u, p| u == "oauth2accesstoken"
            && p.starts_with("ya29.impersonated-"))
            .await,
        "no Secret once the token file appeared"
    );
    assert_eq!(*fed.subject_tokens.lock().expect("lock"), ["sa-token-late"]);
}
