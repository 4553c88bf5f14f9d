//! Provisioning cost of the release webhook, end to end (`cargo bench --bench provisioning`):
//!
//! 1. API calls per Pod in steady state: 1,000 reviews in a namespace whose Secret is known good
//!    (target 0).
//! 2. Memory growth with 10,000 known namespaces: the webhook's RSS before and after one review in
//!    each of 10,000 new namespaces, each of which makes it create the pull Secret (target
//!    <= +4 MiB), then a second pass over the same 10,000 namespaces (target 0 API calls). The
//!    "before" RSS is taken after the steady-state phase ran over the same 16 connections, and
//!    before any larger burst: glibc keeps the freed buffers of a burst of connections and would
//!    hide growth that comes after it.
//! 3. Writes for 200 concurrent Pods in a new namespace: 200 connections opened first, then 200
//!    reviews released at once (target exactly 1 write: one flight per (Secret, namespace)).
//!
//! The webhook is the real binary (`pullsecret-injector serve`, this package's bin, built by cargo
//! for the bench), a child process with a GCP service-account key as its credential source; it
//! reaches the test suite's fake Kubernetes API (tests/support/fake_api.rs: RBAC on, request log)
//! through a kubeconfig. The fake API and the HTTPS clients run in this process, so their memory is
//! not in the webhook's RSS.

#[path = "support/json.rs"]
mod json;
use json::compact;

#[path = "../tests/support/fake_api.rs"]
mod fake_api;
#[path = "../tests/support/tls_client.rs"]
#[allow(dead_code)]
mod tls_client;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fake_api::FakeApi;
use tls_client::TlsClient;

const SECRET: &str = "gcr-pull";
const STEADY_REVIEWS: usize = 1_000;
const BURST: usize = 200;
const NAMESPACES: usize = 10_000;
const CONCURRENCY: usize = 16;

struct Webhook {
    child: Child,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Webhook {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
    fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The review with every `"namespace":"..."` set to `ns` (compact JSON).
fn review_in(template: &[u8], ns: &str) -> Bytes {
    let text = std::str::from_utf8(template).expect("utf8");
    let mut out = String::with_capacity(text.len() + 16);
    let needle = "\"namespace\":\"";
    let mut rest = text;
    while let Some(i) = rest.find(needle) {
        out.push_str(&rest[..i + needle.len()]);
        rest = &rest[i + needle.len()..];
        let end = rest.find('"').expect("closing quote");
        out.push_str(ns);
        rest = &rest[end..];
    }
    out.push_str(rest);
    Bytes::from(out)
}

fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
         current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
    )
}

fn service_account_key() -> String {
    let private_key = rcgen::KeyPair::generate().expect("key").serialize_pem();
    serde_json::to_string_pretty(&serde_json::json!({
        "type": "service_account",
        "project_id": "acme-prod",
        "private_key_id": "k1",
        "private_key": private_key,
        "client_email": "puller@acme-prod.iam.gserviceaccount.com",
        "client_id": "104",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    .expect("json")
        + "\n"
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

struct Setup {
    _temp: tempfile::TempDir,
    config: PathBuf,
    tls_dir: PathBuf,
    kubeconfig: PathBuf,
    log: PathBuf,
    ca_pem: String,
}

fn setup(api: &FakeApi) -> Setup {
    let temp = tempfile::tempdir().expect("tempdir");
    let root = temp.path();
    let tls_dir = root.join("tls");
    let certs = pullsecret_injector::devcerts::generate(
        &["localhost".to_owned(), "127.0.0.1".to_owned()],
        "localhost",
    )
    .expect("dev certs");
    certs.write_to(&tls_dir).expect("write certs");
    let key_dir = root.join("credentials");
    std::fs::create_dir_all(&key_dir).expect("mkdir");
    std::fs::write(key_dir.join("key.json"), service_account_key()).expect("key");
    let config_dir = root.join("config");
    std::fs::create_dir_all(&config_dir).expect("mkdir");
    let config = config_dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "registries:\n- name: gcp\n  preset: gcp\n  secretName: {SECRET}\n  credentials:\n    gcpJsonKey: {{file: {}}}\nprovisioning: {{budget: 2s}}\n",
            key_dir.join("key.json").display()
        ),
    )
    .expect("config");
    let kubeconfig_path = root.join("kubeconfig");
    std::fs::write(&kubeconfig_path, kubeconfig(&api.url())).expect("kubeconfig");
    Setup {
        config,
        tls_dir,
        kubeconfig: kubeconfig_path,
        log: root.join("webhook.log"),
        ca_pem: certs.ca_cert_pem.clone(),
        _temp: temp,
    }
}

fn start_webhook(setup: &Setup, port: u16) -> Webhook {
    let log = std::fs::File::create(&setup.log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
        .arg("serve")
        .arg("--config")
        .arg(&setup.config)
        .arg("--tls-dir")
        .arg(&setup.tls_dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("KUBECONFIG", &setup.kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("WEBHOOK_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the webhook binary");
    Webhook { child }
}

/// Sends `bodies` over `connections` keep-alive connections; returns (the slowest answer, patched count).
async fn drive(
    client: &TlsClient,
    bodies: Arc<Vec<Bytes>>,
    connections: usize,
) -> (Duration, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut conn = client.connect().await.expect("connect");
        let bodies = bodies.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut patched = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let started = Instant::now();
                let reply = conn.review(body.clone()).await;
                slowest = slowest.max(started.elapsed());
                assert_eq!(reply.status, 200, "{}", reply.text());
                let json = reply.json();
                assert_eq!(json["response"]["allowed"], true, "{json}");
                if json["response"]["patch"].is_string() {
                    patched += 1;
                }
            }
            (slowest, patched)
        }));
    }
    let mut slowest = Duration::ZERO;
    let mut patched = 0;
    for task in tasks {
        let (s, p) = task.await.expect("task");
        slowest = slowest.max(s);
        patched += p;
    }
    (slowest, patched)
}

fn calls_in(api: &FakeApi, namespace: Option<&str>) -> (usize, usize, usize) {
    let requests = api.requests();
    let mine: Vec<_> = requests
        .iter()
        .filter(|r| namespace.is_none_or(|ns| r.namespace.as_deref() == Some(ns)))
        .collect();
    let writes = mine
        .iter()
        .filter(|r| r.reached_store && r.is_write())
        .count();
    let gets = mine.iter().filter(|r| r.verb == "get").count();
    (mine.len(), gets, writes)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

async fn run() {
    let api = FakeApi::start(&[SECRET]).await;
    let setup = setup(&api);
    let port = free_port();
    let webhook = start_webhook(&setup, port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let client = TlsClient::new(addr, &setup.ca_pem);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut conn) = client.connect().await
            && let Ok(reply) = conn.send("GET", "/readyz", None, Bytes::new()).await
            && reply.status == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhook not ready: {}",
            std::fs::read_to_string(&setup.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the Secret watch start (list + watch), so its calls are not counted below.
    assert!(
        api.wait_for(Duration::from_secs(10), |a| a.count("watch") >= 1)
            .await,
        "no watch"
    );
    let rss_start = webhook.rss_kib();

    let template = compact(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/admission-reviews/pod-create-direct.json"),
        )
        .expect("fixture"),
    );

    // ---- 1. first Pod in team-a, then steady state --------------------------------------------
    api.reset_log();
    let first = Instant::now();
    let (_, patched) = drive(&client, Arc::new(vec![review_in(&template, "team-a")]), 1).await;
    let first_latency = first.elapsed();
    assert_eq!(patched, 1);
    let (first_calls, first_gets, first_writes) = calls_in(&api, Some("team-a"));
    api.reset_log();
    let steady: Vec<Bytes> = (0..STEADY_REVIEWS)
        .map(|_| review_in(&template, "team-a"))
        .collect();
    let started = Instant::now();
    // Same connection count as the namespace phase below, so its connection buffers are in the
    // "before" RSS of that phase.
    drive(&client, Arc::new(steady), CONCURRENCY).await;
    let steady_elapsed = started.elapsed();
    let (steady_calls, _, _) = calls_in(&api, None);

    // ---- 2. 10,000 namespaces (before the 200-connection burst, whose freed buffers glibc keeps
    // and would hide growth) -------------------------------------------------------------------
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = webhook.rss_kib();
    api.reset_log();
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..NAMESPACES)
            .map(|i| review_in(&template, &format!("ns-{i:05}")))
            .collect(),
    );
    let started = Instant::now();
    let (pass1_slowest, _) = drive(&client, bodies.clone(), CONCURRENCY).await;
    let pass1_elapsed = started.elapsed();
    let (_, pass1_gets, pass1_writes) = calls_in(&api, None);
    // Let the watch events of 10,000 new Secrets arrive and be processed.
    assert!(
        api.wait_for(Duration::from_secs(30), |a| a.secrets_named(SECRET).len()
            > NAMESPACES)
            .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = webhook.rss_kib();
    api.reset_log();
    let started = Instant::now();
    let (pass2_slowest, _) = drive(&client, bodies, CONCURRENCY).await;
    let pass2_elapsed = started.elapsed();
    let (pass2_calls, _, _) = calls_in(&api, None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_pass2 = webhook.rss_kib();
    // ---- 3. 200 concurrent Pods in a new namespace --------------------------------------------
    api.reset_log();
    let mut conns = Vec::with_capacity(BURST);
    for _ in 0..BURST {
        conns.push(client.connect().await.expect("connect"));
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(BURST));
    let body = review_in(&template, "burst");
    let mut tasks = Vec::new();
    for mut conn in conns {
        let barrier = barrier.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let reply = conn.review(body).await;
            assert_eq!(reply.status, 200);
            (
                started.elapsed(),
                reply.json()["response"]["patch"].is_string(),
            )
        }));
    }
    let mut burst_slowest = Duration::ZERO;
    let mut burst_patched = 0;
    for task in tasks {
        let (elapsed, patched) = task.await.expect("burst task");
        burst_slowest = burst_slowest.max(elapsed);
        burst_patched += usize::from(patched);
    }
    let (burst_calls, burst_gets, burst_writes) = calls_in(&api, Some("burst"));

    let hwm = webhook.status_kib("VmHWM:");
    let rbac = api.rbac_violations().len();
    drop(webhook);

    let growth = rss_after.saturating_sub(rss_before);
    println!("provisioning cost of target/release/pullsecret-injector against the fake API");
    println!(
        "  first Pod in team-a: {:.1} ms, {first_calls} API calls ({first_gets} get, {first_writes} write)",
        first_latency.as_secs_f64() * 1e3
    );
    println!(
        "  steady state: {STEADY_REVIEWS} Pods in team-a in {:.2} s: {steady_calls} API calls = {:.3} per Pod (target 0: {})",
        steady_elapsed.as_secs_f64(),
        steady_calls as f64 / STEADY_REVIEWS as f64,
        verdict(steady_calls == 0)
    );
    println!(
        "  {BURST} concurrent Pods in a new namespace: {burst_writes} write(s), {burst_gets} get(s), {burst_calls} calls in all; {burst_patched} patched; slowest answer {:.1} ms (target exactly 1 write: {})",
        burst_slowest.as_secs_f64() * 1e3,
        verdict(burst_writes == 1)
    );
    println!(
        "  {NAMESPACES} new namespaces, {CONCURRENCY} connections: {:.1} s ({:.0} Pods/s), {pass1_gets} get + {pass1_writes} writes, slowest answer {:.1} ms",
        pass1_elapsed.as_secs_f64(),
        NAMESPACES as f64 / pass1_elapsed.as_secs_f64(),
        pass1_slowest.as_secs_f64() * 1e3
    );
    println!(
        "  webhook RSS: {:.1} MiB at start, {:.1} MiB before, {:.1} MiB after {NAMESPACES} namespaces: +{:.2} MiB (target <= +4 MiB: {}); {:.1} MiB after a second pass; VmHWM {:.1} MiB",
        mib(rss_start),
        mib(rss_before),
        mib(rss_after),
        mib(growth),
        verdict(growth <= 4 * 1024),
        mib(rss_after_pass2),
        mib(hwm)
    );
    println!(
        "  second pass over the {NAMESPACES} known namespaces: {:.1} s, {pass2_calls} API calls (target 0: {}), slowest answer {:.1} ms",
        pass2_elapsed.as_secs_f64(),
        verdict(pass2_calls == 0),
        pass2_slowest.as_secs_f64() * 1e3
    );
    println!("  RBAC violations seen by the fake API: {rbac}");
    if let Ok(out) = std::env::var("OUT") {
        let json = serde_json::json!({
            "first": {"ms": first_latency.as_secs_f64() * 1e3, "calls": first_calls, "gets": first_gets, "writes": first_writes},
            "steady": {"pods": STEADY_REVIEWS, "calls": steady_calls},
            "burst": {"pods": BURST, "writes": burst_writes, "gets": burst_gets, "calls": burst_calls, "slowest_ms": burst_slowest.as_secs_f64() * 1e3},
            "namespaces": {"count": NAMESPACES, "seconds": pass1_elapsed.as_secs_f64(), "gets": pass1_gets, "writes": pass1_writes,
                "rss_kib_start": rss_start, "rss_kib_before": rss_before, "rss_kib_after": rss_after, "rss_kib_after_pass2": rss_after_pass2, "hwm_kib": hwm,
                "pass2_calls": pass2_calls, "pass2_seconds": pass2_elapsed.as_secs_f64()},
            "rbac_violations": rbac,
        });
        std::fs::write(&out, serde_json::to_string_pretty(&json).expect("json"))
            .expect("write OUT");
    }
}

fn main() {
    // `cargo test --benches` runs benches with no `--bench` flag: skip the long run there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("provisioning: run with `cargo bench --bench provisioning`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}
