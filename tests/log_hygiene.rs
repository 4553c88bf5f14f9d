//! No credential ever reaches the logs.
//!
//! The provisioning path runs end to end (TLS webhook → `KubePullSecrets` → in-process fake
//! Kubernetes API) with a process-wide tracing subscriber at TRACE for every crate (kube, hyper-util,
//! tower, rustls through the `log` bridge, the injector itself), writing JSON and text into two
//! in-memory buffers, through: the first Pod that creates the Secrets (a GCP JSON key, a basic-auth
//! pair, a `.dockerconfigjson`, and Workload Identity Federation whose subject token file appears
//! late, whose first exchange STS refuses and whose first impersonation IAM refuses), key and
//! password rotation, invalid key files (one carries a
//! fresh private key, one is garbage with a secret in it), API 500 faults on create and on the
//! rotation's update, a foreign Secret whose data the injector reads, and a config reload refused
//! because credentials were pasted into it inline (a password and a key's JSON text in fields of the
//! wrong type, and the key as a mapping of unknown keys). Then the captured logs must
//! contain no 40-character slice of any credential in any of the forms it could take: raw, JSON
//! escaped, Rust `Debug` escaped, and base64 where the wire carries it.
//!
//! A control case at the end logs every needle on purpose, through the same subscriber, in both
//! formats and from another thread, and requires the same scan to find each: a scan that could not
//! find a leak would prove nothing.
//!
//! One test function: the subscriber and the buffers are process-wide.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use pullsecret_injector::provisioning::health::HealthOptions;
use pullsecret_injector::provisioning::registry_check::CheckStatus;
use pullsecret_injector::provisioning::{KubePullSecrets, ProvisionerOptions};
use pullsecret_injector::serving::Metrics;
use pullsecret_injector::serving::ServerOptions;
use serde_json::json;
use support::fake_api::{self, FakeApi, Fault};
use support::load::pod_review;
use support::registry::{ISSUED_TOKEN, TokenRegistry};
use support::{KubeletDir, TestOptions, TestServer, eventually};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const CONVERGE: Duration = Duration::from_secs(10);
/// A leak is any logged run of this many characters of a secret.
const SLICE: usize = 40;

// ---------------------------------------------------------------------------------------------
// Capture
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for SharedBuf {
    type Writer = SharedBuf;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl SharedBuf {
    fn snapshot(&self) -> Vec<u8> {
        self.0.lock().expect("log buffer").clone()
    }
    fn len(&self) -> usize {
        self.0.lock().expect("log buffer").len()
    }
}

struct Capture {
    json: SharedBuf,
    text: SharedBuf,
}

/// Installs, once, the process-wide subscriber: TRACE for every target, the binary's two formats
/// (JSON flattened as `--log-format json`, and text), span open/close events included, plus the
/// `log` → `tracing` bridge (`try_init`) so crates that use `log` (rustls) are captured too.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let json = SharedBuf::default();
        let text = SharedBuf::default();
        tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::TRACE)
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
                    .with_writer(json.clone()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
                    .with_writer(text.clone()),
            )
            .try_init()
            .expect("the only subscriber of this test binary");
        Capture { json, text }
    })
}

// ---------------------------------------------------------------------------------------------
// Needles
// ---------------------------------------------------------------------------------------------

/// Every secret the scenario handles, by name, with the forms in which it could be logged.
#[derive(Default)]
struct Needles {
    /// name → the strings to look for (a 40-character slice of any is a leak).
    by_name: Vec<(String, Vec<String>)>,
}

impl Needles {
    /// A secret string as it is, as a JSON string body, as a Rust `Debug` string body, and as that
    /// `Debug` body inside a JSON log line.
    fn add(&mut self, name: &str, secret: &str) {
        let json = serde_json::to_string(secret).expect("json");
        let debug = format!("{secret:?}");
        let debug_in_json = serde_json::to_string(&debug[1..debug.len() - 1]).expect("json");
        let forms = vec![
            secret.to_owned(),
            json[1..json.len() - 1].to_owned(),
            debug[1..debug.len() - 1].to_owned(),
            debug_in_json[1..debug_in_json.len() - 1].to_owned(),
        ];
        self.by_name.push((name.to_owned(), forms));
    }

    fn add_with_base64(&mut self, name: &str, secret: &str) {
        self.add(name, secret);
        self.add(
            &format!("base64 of {name}"),
            &base64::engine::general_purpose::STANDARD.encode(secret),
        );
    }

    /// The key file: the whole JSON, each line of the PEM body, base64 of the JSON, and the
    /// dockerconfigjson `auth` field (base64 of `_json_key:<key>`).
    fn add_key(&mut self, name: &str, key_json: &str, private_key_pem: &str) {
        let trimmed = key_json.trim_end_matches('\n');
        self.add_with_base64(&format!("{name} JSON"), trimmed);
        let body: String = private_key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        self.add(&format!("{name} PEM body"), &body);
        for (i, line) in private_key_pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= SLICE)
            .enumerate()
        {
            self.add(&format!("{name} PEM line {i}"), line);
        }
        self.add(
            &format!("{name} auth field"),
            &base64::engine::general_purpose::STANDARD.encode(format!("_json_key:{trimmed}")),
        );
    }

    fn total(&self) -> usize {
        self.by_name.iter().map(|(_, f)| f.len()).sum()
    }
}

/// Finds every needle with a 40-character slice in `log`. Windows of 32 bytes taken every 8 bytes
/// of each needle form go into a map, and every 32-byte window of the log is looked up: any logged
/// run of 40 characters of a needle contains one of its aligned 32-byte windows. A hit counts when
/// the bytes around it extend the match to at least 40.
fn leaks(log: &[u8], needles: &Needles) -> Vec<(String, String)> {
    const W: usize = 32;
    const STRIDE: usize = SLICE - W;
    // window → (needle index, needle form, offset of the window in the form)
    type Hits<'a> = Vec<(usize, &'a [u8], usize)>;
    let mut windows: HashMap<&[u8], Hits<'_>> = HashMap::new();
    for (index, (_, forms)) in needles.by_name.iter().enumerate() {
        for form in forms {
            let bytes = form.as_bytes();
            assert!(bytes.len() >= SLICE, "needle {index} shorter than {SLICE}");
            let mut start = 0;
            while start + W <= bytes.len() {
                windows
                    .entry(&bytes[start..start + W])
                    .or_default()
                    .push((index, bytes, start));
                start += STRIDE;
            }
        }
    }
    let mut found: HashSet<usize> = HashSet::new();
    let mut examples = Vec::new();
    if log.len() >= W {
        for at in 0..=log.len() - W {
            let Some(candidates) = windows.get(&log[at..at + W]) else {
                continue;
            };
            for &(index, form, offset) in candidates {
                if found.contains(&index) {
                    continue;
                }
                let left = (1..=offset.min(at))
                    .take_while(|k| log[at - k] == form[offset - k])
                    .count();
                let right = (0..)
                    .take_while(|k| {
                        at + W + k < log.len()
                            && offset + W + k < form.len()
                            && log[at + W + k] == form[offset + W + k]
                    })
                    .count();
                if left + W + right >= SLICE {
                    found.insert(index);
                    let from = at.saturating_sub(120);
                    let to = (at + W + 120).min(log.len());
                    examples.push((
                        needles.by_name[index].0.clone(),
                        String::from_utf8_lossy(&log[from..to]).into_owned(),
                    ));
                }
            }
        }
    }
    examples
}

// ---------------------------------------------------------------------------------------------
// Scenario
// ---------------------------------------------------------------------------------------------

fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{label}-{nanos:x}-{}", "Zq9".repeat(12))
}

/// A service-account key file with a key made now: (file text, private key PEM).
fn service_account_key(key_id: &str, with_email: bool) -> (String, String) {
    let private_key = rcgen::KeyPair::generate().expect("key").serialize_pem();
    let mut key = json!({
        "type": "service_account",
        "project_id": "acme-prod",
        "private_key_id": key_id,
        "private_key": private_key,
        "client_id": "104",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    if with_email {
        key["client_email"] = "puller@acme-prod.iam.gserviceaccount.com".into();
    }
    (
        serde_json::to_string_pretty(&key).expect("json") + "\n",
        private_key,
    )
}

fn docker_config_bytes(secret: &Secret) -> Vec<u8> {
    secret.data.as_ref().expect("data")[".dockerconfigjson"]
        .0
        .clone()
}

fn test_options() -> ProvisionerOptions {
    ProvisionerOptions {
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(400),
        max_writes_per_second: 200,
        // Zero: a foreign Secret is read again (a full GET, data included) on every Pod, so the
        // scenario takes the path where its credentials enter this process.
        foreign_recheck: Duration::ZERO,
        // reload_poll: the default (30 s) backs up the file watch and never fires in a test.
        health: support::offline_health(),
        ..ProvisionerOptions::default()
    }
}

const IMAGES: [&str; 4] = [
    "europe-west1-docker.pkg.dev/acme-prod/apps/api:1.8.0",
    "registry.corp.example:5000/team/app:2",
    "quay.io/acme/tool:3",
    "registry.wif.example/team/job:4",
];
const SECRETS: [&str; 4] = ["gcr-pull", "corp-pull", "quay-pull", "wif-pull"];

async fn admit(server: &TestServer, namespace: &str) -> serde_json::Value {
    admit_images(server, namespace, &IMAGES).await
}

async fn admit_images(server: &TestServer, namespace: &str, images: &[&str]) -> serde_json::Value {
    let mut conn = server.client.connect().await.expect("connect");
    let uid = format!("uid-{namespace}");
    let reply = conn.review(pod_review(&uid, namespace, images)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let response = reply.json();
    assert_eq!(response["response"]["allowed"], true, "{response}");
    response
}

async fn wait_metric(server: &TestServer, needle: &str) {
    let seen = eventually(CONVERGE, || async {
        server.metrics().await.contains(needle)
    })
    .await;
    assert!(
        seen,
        "metric {needle} never appeared: {}",
        server.metrics().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_the_logs_at_trace_level() {
    let capture = capture();
    let mut needles = Needles::default();
    let temp = tempfile::tempdir().expect("tempdir");

    // --- Credential sources
    let (key1, pem1) = service_account_key("k1", true);
    needles.add_key("key 1", &key1, &pem1);
    let mut key_dir = KubeletDir::create(
        &temp.path().join("credentials/gcp"),
        &[("key.json", key1.as_bytes())],
    );
    let username = "robot$ci";
    let password1 = unique("basic-password-1");
    needles.add_with_base64("basic password 1", &password1);
    needles.add(
        "basic auth 1",
        &base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password1}")),
    );
    let mut basic_dir = KubeletDir::create(
        &temp.path().join("credentials/corp"),
        &[
            ("username", username.as_bytes()),
            ("password", password1.as_bytes()),
        ],
    );
    let quay_password = unique("quay-password");
    let quay_auth =
        base64::engine::general_purpose::STANDARD.encode(format!("acme+bot:{quay_password}"));
    let quay_config = format!(
        "{{\"auths\":{{\"quay.io\":{{\"username\":\"acme+bot\",\"password\":\"{quay_password}\",\"auth\":\"{quay_auth}\"}}}}}}"
    );
    needles.add_with_base64("quay password", &quay_password);
    needles.add("quay auth", &quay_auth);
    needles.add_with_base64("quay .dockerconfigjson", &quay_config);
    let quay_dir = KubeletDir::create(
        &temp.path().join("credentials/quay"),
        &[(".dockerconfigjson", quay_config.as_bytes())],
    );

    // Workload Identity Federation: the subject token file is not there yet.
    let (federation, federation_base) = support::gcp::federation_endpoints().await;
    let tag = format!(".{}", unique("tag").replace('-', ""));
    *federation.token_tag.lock().expect("lock") = tag;
    for n in 1..=6 {
        needles.add_with_base64(
            &format!("federated token {n}"),
            &federation.federated_token(n),
        );
        let token = federation.impersonated_token(n);
        needles.add_with_base64(&format!("impersonated token {n}"), &token);
        needles.add(
            &format!("impersonated token {n} auth field"),
            &base64::engine::general_purpose::STANDARD.encode(format!("oauth2accesstoken:{token}")),
        );
    }
    let subject_token = format!("eyJhbGciOiJSUzI1NiJ9.{}.sig", unique("subject-token"));
    needles.add_with_base64("subject token", &subject_token);
    let mut token_dir = KubeletDir::create(&temp.path().join("sa-token"), &[]);
    let credential_config = support::gcp::credential_config(
        &federation_base,
        support::gcp::WIF_AUDIENCE,
        &token_dir.path().join("token"),
        Some(3600),
    );
    let wif_dir = KubeletDir::create(
        &temp.path().join("credentials/wif"),
        &[("credential-config.json", credential_config.as_bytes())],
    );
    federation.sts_canned.lock().expect("lock").push_back(support::gcp::Canned::Status(
        axum::http::StatusCode::BAD_REQUEST,
        json!({"error": "invalid_grant", "error_description": "The audience in ID Token does not match the expected audience."}).to_string(),
    ));
    federation
        .iam_fail_next
        .store(1, std::sync::atomic::Ordering::SeqCst);

    let config = format!(
        "registries:
- name: gcp
  preset: gcp
  secretName: gcr-pull
  credentials:
    gcpJsonKey: {{file: {gcp}/key.json}}
- name: corp
  hosts: [\"registry.corp.example:5000\"]
  secretName: corp-pull
  credentials:
    basicAuth: {{usernameFile: {corp}/username, passwordFile: {corp}/password}}
- name: quay
  hosts: [quay.io]
  secretName: quay-pull
  credentials:
    dockerConfigJson: {{file: {quay}/.dockerconfigjson}}
- name: wif
  hosts: [registry.wif.example]
  secretName: wif-pull
  credentials:
    gcpWorkloadIdentityFederation: {{credentialConfigFile: {wif}/credential-config.json}}
provisioning: {{budget: 2s}}
",
        gcp = key_dir.path().display(),
        corp = basic_dir.path().display(),
        quay = quay_dir.path().display(),
        wif = wif_dir.path().display(),
    );

    // --- The webhook with the provisioner against the fake API
    let api = Arc::new(FakeApi::start(&SECRETS).await);
    let metrics = Arc::new(Metrics::new());
    let provisioner = KubePullSecrets::start(api.client(), metrics.clone(), test_options());
    let mut server = TestServer::start_with(TestOptions {
        metrics: Some(metrics),
        server: relaxed_timeouts(),
        ..TestOptions::new(&config, Arc::new(provisioner.clone()))
    })
    .await;
    assert!(
        api.wait_for(CONVERGE, |a| a.active_watches_on(fake_api::SECRETS)
            >= SECRETS.len())
            .await,
        "watches not opened"
    );
    // The scenario's namespaces exist before their Pods, as in a real cluster.
    for namespace in ["team-a", "fault-500", "team-own"] {
        api.ensure_namespace(namespace);
    }

    // The federation fails on the missing subject token file; then the kubelet writes it.
    wait_metric(
        &server,
        "pullsecret_injector_access_token_refresh_failures_total{registry=\"wif\"}",
    )
    .await;
    token_dir.update(&[("token", subject_token.as_bytes())]);

    // 1. The first Pod creates the Secrets (the federation's once STS and IAM have given in).
    admit(&server, "team-a").await;
    assert!(
        api.wait_for(CONVERGE, |a| SECRETS
            .iter()
            .all(|n| a.secret("team-a", n).is_some()))
            .await,
        "team-a never got every Secret"
    );
    assert!(
        federation
            .impersonated_issued
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
            && federation.iam_authorizations.lock().expect("lock").len() >= 2,
        "the federation went through its refusals"
    );
    for name in SECRETS {
        let secret = api.secret("team-a", name).expect("Secret created");
        let bytes = docker_config_bytes(&secret);
        let text = String::from_utf8(bytes).expect("utf8");
        needles.add_with_base64(&format!("{name} .dockerconfigjson v1"), &text);
    }

    // 2. Rotation of the key and of the password, the update failing twice with 500 first.
    api.inject(
        Fault::status(500)
            .on_verb("patch")
            .in_namespace("team-a")
            .times(2),
    );
    let (key2, pem2) = service_account_key("k2", true);
    needles.add_key("key 2", &key2, &pem2);
    key_dir.update(&[("key.json", key2.as_bytes())]);
    let password2 = unique("basic-password-2");
    needles.add_with_base64("basic password 2", &password2);
    needles.add(
        "basic auth 2",
        &base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password2}")),
    );
    basic_dir.update(&[
        ("username", username.as_bytes()),
        ("password", password2.as_bytes()),
    ]);
    let key2_password = key2.trim_end_matches('\n').to_owned();
    let rotated = api
        .wait_for(CONVERGE, |api| {
            let gcp = api
                .secret("team-a", "gcr-pull")
                .map(|s| docker_config_bytes(&s));
            let corp = api
                .secret("team-a", "corp-pull")
                .map(|s| docker_config_bytes(&s));
            gcp.is_some_and(|b| {
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
                v["auths"]["gcr.io"]["password"] == key2_password.as_str()
            }) && corp.is_some_and(|b| String::from_utf8_lossy(&b).contains(&password2))
        })
        .await;
    assert!(rotated, "rotation did not reach team-a");
    for name in ["gcr-pull", "corp-pull"] {
        let text = String::from_utf8(docker_config_bytes(
            &api.secret("team-a", name).expect("Secret"),
        ))
        .expect("utf8");
        needles.add_with_base64(&format!("{name} .dockerconfigjson v2"), &text);
    }

    // 3. Invalid key files: a key without client_email (it carries a new private key), then garbage
    // with a secret in it. Both are refused; the error must not echo them.
    let (key3, pem3) = service_account_key("k3", false);
    needles.add_key("refused key 3", &key3, &pem3);
    key_dir.update(&[("key.json", key3.as_bytes())]);
    wait_metric(
        &server,
        "pullsecret_injector_credential_reloads_total{registry=\"gcp\",result=\"failure\"} 1",
    )
    .await;
    let garbage = format!("not json at all {}", unique("garbage-secret"));
    needles.add("garbage key file", &garbage);
    key_dir.update(&[("key.json", garbage.as_bytes())]);
    wait_metric(
        &server,
        "pullsecret_injector_credential_reloads_total{registry=\"gcp\",result=\"failure\"} 2",
    )
    .await;
    let empty_password = "";
    basic_dir.update(&[
        ("username", username.as_bytes()),
        ("password", empty_password.as_bytes()),
    ]);
    wait_metric(
        &server,
        "pullsecret_injector_credential_reloads_total{registry=\"corp\",result=\"failure\"} 1",
    )
    .await;

    // 4. API faults on create: 500 three times, then it works (a new namespace, the last good key).
    api.inject(
        Fault::status(500)
            .on_verb("create")
            .in_namespace("fault-500")
            .times(3),
    );
    admit(&server, "fault-500").await;
    assert!(
        api.wait_for(CONVERGE, |a| SECRETS
            .iter()
            .all(|n| a.secret("fault-500", n).is_some()))
            .await,
        "fault-500 never converged"
    );

    // 5. A foreign Secret, whose data the injector reads when it looks at it.
    let foreign_password = unique("foreign-password");
    let foreign_auth =
        base64::engine::general_purpose::STANDARD.encode(format!("someone:{foreign_password}"));
    let foreign_config = format!("{{\"auths\":{{\"gcr.io\":{{\"auth\":\"{foreign_auth}\"}}}}}}");
    needles.add_with_base64("foreign password", &foreign_password);
    needles.add("foreign auth", &foreign_auth);
    needles.add_with_base64("foreign .dockerconfigjson", &foreign_config);
    let mut foreign = Secret::default();
    foreign.metadata.name = Some("gcr-pull".into());
    foreign.metadata.namespace = Some("team-own".into());
    foreign.type_ = Some("kubernetes.io/dockerconfigjson".into());
    foreign.data = Some(
        [(
            ".dockerconfigjson".to_owned(),
            k8s_openapi::ByteString(foreign_config.clone().into_bytes()),
        )]
        .into(),
    );
    api.put_secret(foreign);
    let response = admit(&server, "team-own").await;
    assert!(
        response
            .to_string()
            .contains("not managed by pullsecret-injector"),
        "{response}"
    );

    // 6. Forged reviews: namespaces that would reach an API path (percent-encoded, with a slash and
    // a query that would turn the Secret GET into a list) are refused with 400; a namespace that
    // does not exist gets no request. Nothing the API could answer with reaches the logs.
    for forged in [
        "kube%2Dsystem",
        "team-a/secrets?fieldSelector=metadata.name%3Dgcr-pull",
        "team-a/secrets",
    ] {
        let mut conn = server.client.connect().await.expect("connect");
        let reply = conn
            .review(pod_review(
                &format!("uid-forged-{}", forged.len()),
                forged,
                &IMAGES,
            ))
            .await;
        assert_eq!(reply.status, 400, "{forged}: {}", reply.text());
    }
    let response = admit(&server, "made-up-namespace").await;
    assert!(
        response["response"]["warnings"]
            .to_string()
            .contains("is not provisioned here"),
        "{response}"
    );

    // 7. A config reload to an invalid config with credentials pasted inline, in fields of the
    // wrong type: a password where basicAuth's mapping belongs, a key's JSON text where
    // gcpJsonKey's mapping belongs, and the same key as a flow mapping (its keys unknown there).
    // The reload is refused and logged at ERROR; the log must name the fields, not the values.
    let inline_password = unique("inline-password");
    needles.add("inline password", &inline_password);
    let (inline_key, inline_pem) = service_account_key("inline", true);
    needles.add_key("inline key", &inline_key, &inline_pem);
    let inline_key_text = serde_json::to_string(&inline_key).expect("key as a YAML string");
    let inline_key_mapping = serde_json::to_string(
        &serde_json::from_str::<serde_json::Value>(&inline_key).expect("key JSON"),
    )
    .expect("key as a flow mapping");
    let pasted = format!(
        "registries:
- name: corp
  hosts: [\"registry.corp.example:5000\"]
  secretName: corp-pull
  credentials:
    basicAuth: \"{username}:{inline_password}\"
- name: gcp
  preset: gcp
  secretName: gcr-pull
  credentials:
    gcpJsonKey: {inline_key_text}
- name: gcp-mapping
  hosts: [gcr.example]
  secretName: gcr-mapping-pull
  credentials:
    gcpJsonKey: {inline_key_mapping}
"
    );
    server
        .config_dir
        .update(&[("config.yaml", pasted.as_bytes())]);
    wait_metric(
        &server,
        "pullsecret_injector_config_reloads_total{result=\"failure\"} 1",
    )
    .await;

    // 9. The registry check of a basic-auth credential against a Bearer token server: a wrong
    //    password (rejected), then the right one (a token issued and shown to the registry).
    let registry = TokenRegistry::start("robot", &unique("probe-password-right")).await;
    let probe_right = registry.password();
    let probe_wrong = unique("probe-password-wrong");
    for (name, password) in [("probe right", &probe_right), ("probe wrong", &probe_wrong)] {
        needles.add(name, password);
        needles.add(
            &format!("probe basic auth ({name})"),
            &base64::engine::general_purpose::STANDARD.encode(format!("robot:{password}")),
        );
    }
    needles.add("issued registry token", ISSUED_TOKEN);
    let mut probe_dir = KubeletDir::create(
        &temp.path().join("credentials/probe"),
        &[("username", b"robot"), ("password", probe_wrong.as_bytes())],
    );
    let probe_ca = temp.path().join("probe-ca.crt");
    std::fs::write(&probe_ca, &registry.certs.ca_pem).expect("ca");
    let probe_config = format!(
        "registries:\n- name: probe\n  hosts: [\"{host}\"]\n  secretName: probe-pull\n  caFile: {ca}\n  credentials:\n    basicAuth: {{usernameFile: {dir}/username, passwordFile: {dir}/password}}\n",
        host = registry.host(),
        ca = probe_ca.display(),
        dir = probe_dir.path().display(),
    );
    let probe_api = Arc::new(FakeApi::start(&["probe-pull"]).await);
    probe_api.ensure_namespace("team-a");
    let probe_provisioner = KubePullSecrets::start(
        probe_api.client(),
        Arc::new(Metrics::new()),
        ProvisionerOptions {
            health: HealthOptions {
                tick: Duration::from_millis(100),
                timeout: Duration::from_secs(5),
                ..HealthOptions::default()
            },
            ..test_options()
        },
    );
    let probe_server = TestServer::start_with(TestOptions {
        server: relaxed_timeouts(),
        ..TestOptions::new(&probe_config, Arc::new(probe_provisioner.clone()))
    })
    .await;
    let image = format!("{}/team/app:1", registry.host());
    let probe_status = |status: CheckStatus| {
        let health = probe_provisioner.registry_health().clone();
        let host = registry.host();
        eventually(CONVERGE, move || {
            let last = health.last("probe", &host);
            async move { last.is_some_and(|h| h.status == status) }
        })
    };
    admit_images(&probe_server, "team-a", &[&image]).await;
    assert!(
        probe_status(CheckStatus::Rejected).await,
        "no rejected check"
    );
    let warned = admit_images(&probe_server, "team-a", &[&image]).await;
    assert!(
        warned.to_string().contains("rejected the credentials"),
        "{warned}"
    );
    probe_dir.update(&[("username", b"robot"), ("password", probe_right.as_bytes())]);
    assert!(
        probe_status(CheckStatus::Ok).await,
        "no ok check after rotation"
    );
    assert!(registry.token_requests() >= 2 && registry.v2_requests() >= 3);
    probe_provisioner.stop();

    // Let background work (retries, watches) settle and log what it logs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    provisioner.stop();

    // --- The scan
    let json_log = capture.json.snapshot();
    let text_log = capture.text.snapshot();
    let json_text = String::from_utf8_lossy(&json_log);
    // The capture saw the scenario: the injector's own events and a third-party crate's.
    for expected in [
        "pull Secret created",
        "pull Secret updated",
        "new credentials refused",
        "not managed by pullsecret-injector",
        "admission review answered",
        "new config refused",
        // The federation's failures were logged, naming the file and the audience.
        "cannot use the subject token file",
        "token exchange for audience //iam.googleapis.com/projects/123456789012",
        "HTTP 403: PERMISSION_DENIED",
        "registry check changed state",
        // The refused config's error was logged, naming its fields.
        "registries[0].credentials.basicAuth: expected a mapping, found a string",
        "registries[1].credentials.gcpJsonKey: expected a mapping, found a string",
        "registries[2].credentials.gcpJsonKey.file: is required",
    ] {
        assert!(
            json_text.contains(expected),
            "the capture missed {expected:?}: is TRACE capture working?"
        );
    }
    let mut targets: HashMap<String, usize> = HashMap::new();
    for line in json_text.lines() {
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
            let target = event["target"].as_str().unwrap_or("?");
            let crate_name = target.split("::").next().unwrap_or(target).to_owned();
            *targets.entry(crate_name).or_default() += 1;
        }
    }
    println!(
        "captured {} KB JSON, {} KB text; events by crate: {targets:?}; {} needle forms",
        json_log.len() / 1024,
        text_log.len() / 1024,
        needles.total()
    );
    assert!(
        targets.contains_key("kube_client") || targets.contains_key("kube"),
        "no kube-client event at TRACE: {targets:?}"
    );

    let mut found = leaks(&json_log, &needles);
    found.extend(leaks(&text_log, &needles));
    assert!(
        found.is_empty(),
        "credentials in the logs:\n{}",
        found
            .iter()
            .map(|(name, context)| format!("- {name}: ...{context}..."))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // --- Control: the same scan finds each needle once it is logged on purpose.
    let json_start = capture.json.len();
    let text_start = capture.text.len();
    for (i, (name, forms)) in needles.by_name.iter().enumerate() {
        let secret = forms[0].clone();
        match i % 3 {
            0 => tracing::info!(leaked = %secret, "control: {name}"),
            1 => tracing::debug!(leaked = ?secret, "control: {name}"),
            _ => {
                // From another thread, at TRACE, inside a span.
                let name = name.clone();
                std::thread::spawn(move || {
                    let span = tracing::trace_span!("control", leaked = %secret);
                    let _entered = span.enter();
                    tracing::trace!("control: {name}");
                })
                .join()
                .expect("thread");
            }
        }
    }
    let json_control = capture.json.snapshot()[json_start..].to_vec();
    let text_control = capture.text.snapshot()[text_start..].to_vec();
    for (log, format) in [(json_control, "json"), (text_control, "text")] {
        let seen: HashSet<String> = leaks(&log, &needles)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let missed: Vec<&str> = needles
            .by_name
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| !seen.contains(*name))
            .collect();
        assert!(
            missed.is_empty(),
            "control ({format}): needles logged on purpose were not found: {missed:?}"
        );
    }
    let _ = std::io::stdout().flush();
}

/// Header-read and handshake timeouts no stall of a loaded two-core machine reaches (the harness
/// default of 500 ms is for the tests about those timeouts): a connection killed between its
/// handshake and its first request would count as a failed admission request here.
fn relaxed_timeouts() -> ServerOptions {
    ServerOptions {
        header_read_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(5),
        ..ServerOptions::default()
    }
}
