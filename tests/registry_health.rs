//! Credential health against real registries: the distribution registry (Debian's
//! `docker-registry`) with htpasswd auth and an in-process Bearer token server, both on loopback
//! TLS with certificates made now. Reviews go over TLS into the webhook, whose provisioner talks to
//! the fake Kubernetes API; the registry check runs in its background, and its results show in the
//! metric, the state and the warnings of the next Pods.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pullsecret_injector::provisioning::health::HealthOptions;
use pullsecret_injector::provisioning::registry_check::{
    self, BasicLogin, CheckClient, CheckStatus,
};
use pullsecret_injector::provisioning::{KubePullSecrets, ProvisionerOptions};
use pullsecret_injector::serving::Metrics;
use serde_json::json;
use support::fake_api::FakeApi;
use support::registry::{DistributionRegistry, TokenRegistry, TokenReply};
use support::{KubeletDir, TestOptions, TestServer};
use tempfile::TempDir;

const SECRET: &str = "lab-pull";
const USER: &str = "ci";
const PASSWORD: &str = "right-horse-battery-staple";
const WRONG_PASSWORD: &str = "wrong-password-0451";
/// Long enough for a check that works; only a broken test waits this long.
const CONVERGE: Duration = Duration::from_secs(20);

struct Webhook {
    api: Arc<FakeApi>,
    server: TestServer,
    provisioner: KubePullSecrets,
    credentials: KubeletDir,
    _temp: TempDir,
}

impl Webhook {
    /// The webhook with one `basicAuth` entry `lab` for `hosts`; `extra` goes under the entry.
    async fn start(hosts: &[String], password: &str, extra: &str, health: HealthOptions) -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let credentials = KubeletDir::create(
            &temp.path().join("credentials/lab"),
            &[
                ("username", USER.as_bytes()),
                ("password", password.as_bytes()),
            ],
        );
        let hosts = hosts
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "registries:\n- name: lab\n  hosts: [{hosts}]\n  secretName: {SECRET}\n  credentials:\n    basicAuth: {{usernameFile: {dir}/username, passwordFile: {dir}/password}}\n{extra}",
            dir = credentials.path().display()
        );
        let api = Arc::new(FakeApi::start(&[SECRET]).await);
        let metrics = Arc::new(Metrics::new());
        let provisioner = KubePullSecrets::start(
            api.client(),
            metrics.clone(),
            ProvisionerOptions {
                retry_initial: Duration::from_millis(50),
                retry_max: Duration::from_millis(400),
                reload_poll: Duration::from_millis(500),
                health,
                ..ProvisionerOptions::default()
            },
        );
        let server = TestServer::start_with(TestOptions {
            metrics: Some(metrics),
            ..TestOptions::new(&config, Arc::new(provisioner.clone()))
        })
        .await;
        Self {
            api,
            server,
            provisioner,
            credentials,
            _temp: temp,
        }
    }

    /// A Pod CREATE pulling `image`; the answer's warnings.
    async fn admit(&self, image: &str) -> Vec<String> {
        self.api.ensure_namespace("team-a");
        self.admit_in("team-a", image).await
    }

    /// A Pod CREATE naming `namespace` as it stands: a forged review can name any.
    async fn admit_in(&self, namespace: &str, image: &str) -> Vec<String> {
        let mut conn = self.server.client.connect().await.expect("connect");
        let reply = conn.review(pod_review(namespace, image)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let response = reply.json();
        assert_eq!(response["response"]["allowed"], true, "{response}");
        response["response"]["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .map(|w| w.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for a check of `host` with this status; fails with what is there otherwise.
    async fn await_status(&self, host: &str, status: CheckStatus) -> String {
        let health = self.provisioner.registry_health().clone();
        let reached = support::eventually(CONVERGE, || {
            let health = health.clone();
            async move { health.last("lab", host).is_some_and(|h| h.status == status) }
        })
        .await;
        let last = health.last("lab", host);
        assert!(reached, "no {status:?} for {host}; last: {last:?}");
        last.map(|h| h.detail).unwrap_or_default()
    }

    fn set_password(&mut self, password: &str) {
        self.credentials.update(&[
            ("username", USER.as_bytes()),
            ("password", password.as_bytes()),
        ]);
    }
}

fn test_health() -> HealthOptions {
    HealthOptions {
        tick: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        ..HealthOptions::default()
    }
}

fn ca_file_line(registry_ca: &std::path::Path) -> String {
    format!("  caFile: {}\n", registry_ca.display())
}

fn pod_review(namespace: &str, image: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{}", std::process::id()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "api-", "namespace": namespace},
                "spec": {"containers": [{"name": "api", "image": image}]}
            }
        }
    }))
    .expect("json")
}

fn rejected_warnings(warnings: &[String]) -> Vec<&String> {
    warnings
        .iter()
        .filter(|w| w.contains("rejected the credentials"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_password_is_ok_on_the_distribution_registry() {
    let registry = DistributionRegistry::start(USER, PASSWORD).await;
    let host = registry.host();
    let webhook = Webhook::start(
        std::slice::from_ref(&host),
        PASSWORD,
        &ca_file_line(&registry.ca_file()),
        test_health(),
    )
    .await;
    let warnings = webhook.admit(&format!("{host}/team/app:1")).await;
    assert!(rejected_warnings(&warnings).is_empty(), "{warnings:?}");
    webhook.await_status(&host, CheckStatus::Ok).await;
    let metrics = webhook.server.metrics().await;
    for (status, value) in [("ok", 1), ("rejected", 0), ("unreachable", 0)] {
        let line = format!(
            "pullsecret_injector_registry_credential_status{{registry=\"lab\",host=\"{host}\",status=\"{status}\"}} {value}"
        );
        assert!(metrics.contains(&line), "no {line} in {metrics}");
    }
    assert!(
        metrics.contains(&format!(
            "pullsecret_injector_registry_credential_last_check_timestamp_seconds{{registry=\"lab\",host=\"{host}\"}}"
        )),
        "{metrics}"
    );
    let warnings = webhook.admit(&format!("{host}/team/app:2")).await;
    assert!(rejected_warnings(&warnings).is_empty(), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_rejected_with_the_registry_text_the_next_pod_is_warned_and_an_event_posted()
 {
    let registry = DistributionRegistry::start(USER, PASSWORD).await;
    let host = registry.host();
    let webhook = Webhook::start(
        std::slice::from_ref(&host),
        WRONG_PASSWORD,
        &ca_file_line(&registry.ca_file()),
        test_health(),
    )
    .await;
    // The first Pod is admitted at once: admission never waits on the registry.
    let first = webhook.admit(&format!("{host}/team/app:1")).await;
    assert!(rejected_warnings(&first).is_empty(), "{first:?}");
    let detail = webhook.await_status(&host, CheckStatus::Rejected).await;
    // distribution's own text for a refused basic auth.
    assert_eq!(detail, "401: authentication required");
    let next = webhook.admit(&format!("{host}/team/app:1")).await;
    let rejected = rejected_warnings(&next);
    assert_eq!(rejected.len(), 1, "{next:?}");
    assert!(
        rejected[0].starts_with(&format!(
            "pullsecret-injector: registry {host} rejected the credentials of \"{SECRET}\" "
        )),
        "{}",
        rejected[0]
    );
    assert!(
        rejected[0].ends_with("ago (401: authentication required); pulls will fail"),
        "{}",
        rejected[0]
    );
    // One Warning Event on the pull Secret, in the namespace of the Pod that used the host.
    let posted = webhook
        .api
        .wait_for(CONVERGE, |a| !a.events().is_empty())
        .await;
    assert!(posted, "no Event posted");
    let events = webhook.api.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["metadata"]["namespace"], "team-a");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "RegistryRejectedCredentials");
    assert_eq!(
        event["involvedObject"],
        json!({"apiVersion": "v1", "kind": "Secret", "name": SECRET, "namespace": "team-a"})
    );
    let message = event["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("registry {host} rejected the credentials of registry entry \"lab\" (401: authentication required)")),
        "{message}"
    );
    assert!(!message.contains(WRONG_PASSWORD), "{message}");
    assert!(
        webhook.api.rbac_violations().is_empty(),
        "{:#?}",
        webhook.api.rbac_violations()
    );
}

/// The key that lacks the IAM binding: the token server answers 403 with the permission it misses.
/// With the host in probeHosts it is checked at start, so the metric shows it and the very first Pod
/// is warned, before any Pod could fail to pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_repository_whose_token_server_denies_the_permission_warns_the_first_pod_of_it() {
    let registry = TokenRegistry::start(USER, PASSWORD).await;
    registry.script([TokenReply::Status(
        403,
        r#"{"errors":[{"code":"DENIED","message":"Permission \"artifactregistry.repositories.downloadArtifacts\" denied on resource \"projects/acme/locations/europe-west1/repositories/app\" (or it may not exist)"}]}"#,
    )]);
    let ca = registry.ca_file();
    let host = registry.host();
    let webhook = Webhook::start(
        std::slice::from_ref(&host),
        PASSWORD,
        &format!(
            "{}  probeHosts: [\"{host}/acme/app/api\"]\n",
            ca_file_line(&ca)
        ),
        test_health(),
    )
    .await;
    let detail = webhook.await_status(&host, CheckStatus::Rejected).await;
    assert!(
        detail.starts_with(
            "403: Permission \"artifactregistry.repositories.downloadArtifacts\" denied"
        ),
        "{detail}"
    );
    let metrics = webhook.server.metrics().await;
    let line = format!(
        "pullsecret_injector_registry_credential_status{{registry=\"lab\",host=\"{host}\",status=\"rejected\"}} 1"
    );
    assert!(metrics.contains(&line), "no {line} in {metrics}");
    let first = webhook.admit(&format!("{host}/acme/app/api:1")).await;
    let rejected = rejected_warnings(&first);
    assert_eq!(rejected.len(), 1, "{first:?}");
    assert!(
        rejected[0].contains(
            "(403: Permission \"artifactregistry.repositories.downloadArtifacts\" denied"
        ),
        "{}",
        rejected[0]
    );
    assert!(
        rejected[0].ends_with("; pulls will fail"),
        "{}",
        rejected[0]
    );
    // Checked once, before any Pod, for pull access to the listed repository; no Pod had used it
    // yet, so no namespace for an Event.
    assert_eq!(registry.scopes(), ["repository:acme/app/api:pull"]);
    assert!(webhook.api.events().is_empty());
    // The 403 was about that repository: a Pod pulling another one of the host is not warned.
    let other = webhook.admit(&format!("{host}/acme/app/worker:1")).await;
    assert!(rejected_warnings(&other).is_empty(), "{other:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_is_ok_again_after_the_next_check() {
    let registry = DistributionRegistry::start(USER, PASSWORD).await;
    let host = registry.host();
    let mut webhook = Webhook::start(
        std::slice::from_ref(&host),
        WRONG_PASSWORD,
        &ca_file_line(&registry.ca_file()),
        test_health(),
    )
    .await;
    webhook.admit(&format!("{host}/team/app:1")).await;
    webhook.await_status(&host, CheckStatus::Rejected).await;
    // The interval is minutes: the new credentials themselves start the next check.
    webhook.set_password(PASSWORD);
    webhook.await_status(&host, CheckStatus::Ok).await;
    let warnings = webhook.admit(&format!("{host}/team/app:1")).await;
    assert!(rejected_warnings(&warnings).is_empty(), "{warnings:?}");
}

/// The namespace of the first Pod on a host comes from its review, which may be forged: a
/// namespace the watch never showed gets no Event, though the check runs and later Pods are warned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_namespace_gets_no_event() {
    let registry = DistributionRegistry::start(USER, PASSWORD).await;
    let host = registry.host();
    let webhook = Webhook::start(
        std::slice::from_ref(&host),
        WRONG_PASSWORD,
        &ca_file_line(&registry.ca_file()),
        test_health(),
    )
    .await;
    webhook
        .admit_in("ghost", &format!("{host}/team/app:1"))
        .await;
    webhook.await_status(&host, CheckStatus::Rejected).await;
    let next = webhook.admit(&format!("{host}/team/app:1")).await;
    assert_eq!(rejected_warnings(&next).len(), 1, "{next:?}");
    assert!(
        webhook.api.events().is_empty(),
        "{:#?}",
        webhook.api.events()
    );
    let created = webhook
        .api
        .requests()
        .iter()
        .filter(|r| r.resource == "events")
        .count();
    assert_eq!(created, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_down_is_unreachable_and_no_warning_blames_the_credential() {
    let mut registry = DistributionRegistry::start(USER, PASSWORD).await;
    let host = registry.host();
    let ca = registry.ca_file();
    registry.stop();
    let webhook = Webhook::start(
        std::slice::from_ref(&host),
        PASSWORD,
        &ca_file_line(&ca),
        test_health(),
    )
    .await;
    webhook.admit(&format!("{host}/team/app:1")).await;
    let detail = webhook.await_status(&host, CheckStatus::Unreachable).await;
    assert!(!detail.is_empty());
    let warnings = webhook.admit(&format!("{host}/team/app:1")).await;
    assert!(rejected_warnings(&warnings).is_empty(), "{warnings:?}");
    assert!(
        webhook.api.events().is_empty(),
        "{:#?}",
        webhook.api.events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_never_used_by_a_pod_is_never_probed() {
    let used = TokenRegistry::start(USER, PASSWORD).await;
    let unused = TokenRegistry::start(USER, PASSWORD).await;
    // Both registries' certificates, so that only "never used" keeps the second one unprobed.
    let temp = tempfile::tempdir().expect("tempdir");
    let ca = temp.path().join("ca.crt");
    std::fs::write(&ca, format!("{}{}", used.certs.ca_pem, unused.certs.ca_pem)).expect("ca");
    let webhook = Webhook::start(
        &[used.host(), unused.host(), "*.lab.example.test".to_owned()],
        PASSWORD,
        &ca_file_line(&ca),
        test_health(),
    )
    .await;
    webhook.admit(&format!("{}/team/app:1", used.host())).await;
    webhook.await_status(&used.host(), CheckStatus::Ok).await;
    assert!(used.token_requests() >= 1);
    // Some ticks later, still nothing for the other host (nor for the wildcard pattern).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(unused.v2_requests(), 0);
    assert_eq!(unused.token_requests(), 0);
    assert_eq!(webhook.provisioner.registry_health().hosts_seen(), 1);
    assert_eq!(webhook.provisioner.registry_health().checks_started(), 1);
    assert!(
        webhook
            .provisioner
            .registry_health()
            .last("lab", &unused.host())
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_pods_check_each_host_once_and_remember_a_bounded_set_of_hosts() {
    let registry = TokenRegistry::start(USER, PASSWORD).await;
    let ca = registry.ca_file();
    // The token server answers slowly at first: every Pod arrives while the first check is in flight.
    registry.script([TokenReply::Slow(Duration::from_millis(800))]);
    let health = HealthOptions {
        max_hosts: 8,
        timeout: Duration::from_secs(5),
        ..test_health()
    };
    // 127.0.0.2-254 on port 9: nothing listens there, and it stays on the loopback.
    let webhook = Webhook::start(
        &[registry.host(), "127.0.0.*:9".to_owned()],
        PASSWORD,
        &ca_file_line(&ca),
        health,
    )
    .await;
    let images: Vec<String> = (0..500)
        .map(|i| {
            if i % 2 == 0 {
                format!("{}/team/app:{i}", registry.host())
            } else {
                format!("127.0.0.{}:9/team/app:{i}", 2 + i % 250)
            }
        })
        .collect();
    let webhook = Arc::new(webhook);
    let mut tasks = Vec::new();
    for chunk in images.chunks(50) {
        let webhook = webhook.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for image in chunk {
                webhook.admit(&image).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("admissions");
    }
    webhook
        .await_status(&registry.host(), CheckStatus::Ok)
        .await;
    let health = webhook.provisioner.registry_health();
    assert_eq!(health.hosts_seen(), 8, "the set of hosts is bounded");
    let settled = support::eventually(CONVERGE, || async {
        (0..250).all(|i| {
            let host = format!("127.0.0.{}:9", 2 + i);
            health.last("lab", &host).is_none()
                || health
                    .last("lab", &host)
                    .is_some_and(|h| h.status == CheckStatus::Unreachable)
        }) && health.checks_started() == 8
    })
    .await;
    assert!(settled, "checks started: {}", health.checks_started());
    // 250 Pods on the token registry's host: one check, one token request, two /v2/ requests.
    assert_eq!(registry.token_requests(), 1);
    assert_eq!(registry.v2_requests(), 2);
}

/// The Bearer flow against the scripted token server, one check per scripted answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_flow_classifies_each_token_server_answer() {
    let registry = TokenRegistry::start(USER, PASSWORD).await;
    let client = CheckClient::new(
        Some(registry.certs.ca_pem.as_bytes()),
        Duration::from_millis(700),
    )
    .expect("client");
    let right = BasicLogin {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    let wrong = BasicLogin {
        username: USER.into(),
        password: WRONG_PASSWORD.into(),
    };
    let cases: Vec<(&str, Option<TokenReply>, &BasicLogin, CheckStatus, &str)> = vec![
        ("200 with a token", None, &right, CheckStatus::Ok, ""),
        (
            "401 for a wrong password",
            None,
            &wrong,
            CheckStatus::Rejected,
            "401: incorrect username or password",
        ),
        (
            "403 with a permission text",
            Some(TokenReply::Status(
                403,
                r#"{"errors":[{"code":"DENIED","message":"Permission \"artifactregistry.repositories.downloadArtifacts\" denied"}]}"#,
            )),
            &right,
            CheckStatus::Rejected,
            "403: Permission \"artifactregistry.repositories.downloadArtifacts\" denied",
        ),
        (
            "503",
            Some(TokenReply::Status(503, "maintenance")),
            &right,
            CheckStatus::Unreachable,
            "token server answered 503: maintenance",
        ),
        (
            "slow",
            Some(TokenReply::Slow(Duration::from_secs(3))),
            &right,
            CheckStatus::Unreachable,
            "no answer within",
        ),
        (
            "reset",
            Some(TokenReply::Reset),
            &right,
            CheckStatus::Unreachable,
            "token server",
        ),
    ];
    for (name, reply, login, status, detail) in cases {
        if let Some(reply) = reply {
            registry.script([reply]);
        }
        let result =
            registry_check::check(&client, &registry.host(), Some("team/app"), login).await;
        assert_eq!(result.status, status, "{name}: {result:?}");
        assert!(result.detail.contains(detail), "{name}: {result:?}");
        assert!(!result.detail.contains(PASSWORD), "{name}: {result:?}");
    }
    // A registry with a certificate of another CA is unreachable, and no credential is sent.
    let other = CheckClient::new(
        Some(support::registry::TestCerts::new().ca_pem.as_bytes()),
        Duration::from_secs(2),
    )
    .expect("client");
    let before = registry.token_requests();
    let result = registry_check::check(&other, &registry.host(), None, &right).await;
    assert_eq!(result.status, CheckStatus::Unreachable, "{result:?}");
    assert_eq!(registry.token_requests(), before);
}
