//! Faults under load: a bounded, closed-loop load of mixed AdmissionReviews (4 keep-alive
//! HTTP/1.1 connections) runs against the webhook with its Kubernetes-backed provisioner while, one
//! after another, the serving certificate is rotated, the config is reloaded (valid, then invalid),
//! and the fake API server goes down, answers 500, is slow, answers 409, and recovers.
//!
//! Proves: no admission request fails (every answer is 200 and a well-formed review echoing its
//! uid; a transport error is a failure too, so a rotation must not break an established
//! connection), and every namespace that got a Pod has its pull Secret within 10 s of the API's
//! recovery.
//!
//! Then shutdown under load: `App::shutdown()` (what SIGTERM calls) while every connection has a
//! request in flight: each of those requests gets its answer (no reset), new connections are
//! refused from then on, and the server drains.
//!
//! Bounds on time only stop a hang; nothing here measures speed.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use pullsecret_injector::provisioning::{EnsureOutcome, EnsureRequest, PullSecrets};
use pullsecret_injector::provisioning::{KubePullSecrets, ProvisionerOptions};
use pullsecret_injector::serving::Metrics;
use pullsecret_injector::serving::ServerOptions;
use serde_json::json;
use support::fake_api::{FakeApi, Fault, SECRETS};
use support::load::{LoadConn, LoadRequest, LoadStats, review_with_object, spawn_load};
use support::{KubeletDir, TestOptions, TestServer, eventually};

const SECRET: &str = "gcr-pull";
/// Convergence after the API recovers; only a broken test waits this long.
const CONVERGE: Duration = Duration::from_secs(10);
const CONNECTIONS: usize = 4;
/// Requests per connection at most: the load ends by the stop flag long before.
const MAX_PER_CONNECTION: u64 = 5_000;
/// How long each phase runs under load.
const PHASE: Duration = Duration::from_millis(1_000);

fn config(key_dir: &std::path::Path, budget: &str) -> String {
    format!(
        "registries:\n- name: gcp\n  preset: gcp\n  secretName: {SECRET}\n  credentials:\n    gcpJsonKey: {{file: {}/key.json}}\nprovisioning: {{budget: {budget}}}\n",
        key_dir.display()
    )
}

/// What the load sends, by request number: mostly Pod CREATEs in the namespaces of the current
/// phase, plus dry runs, other resources, debug containers and Pods needing no Secret.
struct Mix {
    namespaces: Mutex<Vec<String>>,
    /// Namespaces that got a non-dry-run Pod needing the Secret: each must end up with it.
    used: Mutex<BTreeSet<String>>,
}

impl Mix {
    fn request(&self, worker: usize, n: u64) -> LoadRequest {
        let uid = format!("load-{worker}-{n}");
        let namespace = {
            let namespaces = self.namespaces.lock().expect("namespaces");
            namespaces[(n as usize + worker) % namespaces.len()].clone()
        };
        let gcr_pod = json!({
            "metadata": {"generateName": "api-", "namespace": namespace},
            "spec": {"containers": [{"name": "api", "image": "europe-west1-docker.pkg.dev/acme-prod/apps/api:1.8.0"}]}
        });
        let body = match n % 10 {
            0 => {
                // Dry run: same patch, no write.
                let mut review: serde_json::Value = serde_json::from_slice(&review_with_object(
                    &uid, &namespace, "pods", "CREATE", gcr_pod,
                ))
                .expect("json");
                review["request"]["dryRun"] = true.into();
                serde_json::to_vec(&review).expect("json")
            }
            1 => review_with_object(
                &uid,
                &namespace,
                "configmaps",
                "CREATE",
                json!({"kind": "ConfigMap", "data": {"a": "b"}}),
            ),
            2 => {
                let mut review: serde_json::Value = serde_json::from_slice(&review_with_object(
                    &uid,
                    &namespace,
                    "pods",
                    "UPDATE",
                    json!({"spec": {"containers": [{"name": "a", "image": "nginx"}],
                        "ephemeralContainers": [{"name": "debug", "image": "gcr.io/acme/debug:1"}]}}),
                ))
                .expect("json");
                review["request"]["subResource"] = "ephemeralcontainers".into();
                serde_json::to_vec(&review).expect("json")
            }
            3 => review_with_object(
                &uid,
                &namespace,
                "pods",
                "CREATE",
                json!({"spec": {"containers": [{"name": "a", "image": "nginx:1.27"}]}}),
            ),
            _ => {
                self.used.lock().expect("used").insert(namespace.clone());
                review_with_object(&uid, &namespace, "pods", "CREATE", gcr_pod)
            }
        };
        LoadRequest { body, uid }
    }
}

async fn wait_metric(server: &TestServer, needle: &str) {
    let seen = eventually(CONVERGE, || async {
        server.metrics().await.contains(needle)
    })
    .await;
    assert!(seen, "{needle} never appeared: {}", server.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admission_request_fails_while_everything_around_it_does() {
    let temp = tempfile::tempdir().expect("tempdir");
    let key = support::service_account_key("k1");
    let key_dir = KubeletDir::create(
        &temp.path().join("credentials/gcp"),
        &[("key.json", key.as_bytes())],
    );
    let api = Arc::new(FakeApi::start(&[SECRET]).await);
    let metrics = Arc::new(Metrics::new());
    let provisioner = KubePullSecrets::start(
        api.client(),
        metrics.clone(),
        ProvisionerOptions {
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_millis(400),
            max_writes_per_second: 200,
            foreign_recheck: Duration::from_secs(3600),
            health: support::offline_health(),
            ..ProvisionerOptions::default()
        },
    );
    let mut server = TestServer::start_with(TestOptions {
        metrics: Some(metrics),
        server: relaxed_timeouts(),
        ..TestOptions::new(
            &config(key_dir.path(), "300ms"),
            Arc::new(provisioner.clone()),
        )
    })
    .await;
    assert!(
        api.wait_for(CONVERGE, |a| a.active_watches_on(SECRETS) >= 1)
            .await,
        "no watch opened"
    );

    // Each phase's namespaces exist before its Pods, as in a real cluster.
    for namespace in ["steady-0", "steady-1"] {
        api.ensure_namespace(namespace);
    }
    let mix = Arc::new(Mix {
        namespaces: Mutex::new(vec!["steady-0".into(), "steady-1".into()]),
        used: Mutex::new(BTreeSet::new()),
    });
    let stats = Arc::new(LoadStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let client = Arc::new(support::TlsClient::new(
        server.app.local_addr(),
        server.ca.cert_pem(),
    ));
    let workers = {
        let mix = mix.clone();
        spawn_load(
            client,
            CONNECTIONS,
            MAX_PER_CONNECTION,
            stop.clone(),
            stats.clone(),
            move |worker, n| mix.request(worker, n),
        )
    };
    let phase = |name: &'static str| {
        let mix = mix.clone();
        let stats = stats.clone();
        let api = api.clone();
        async move {
            let namespaces: Vec<String> = (0..3).map(|i| format!("{name}-{i}")).collect();
            for namespace in &namespaces {
                api.ensure_namespace(namespace);
            }
            *mix.namespaces.lock().expect("namespaces") = namespaces;
            tokio::time::sleep(PHASE).await;
            println!("after {name:<14} {}", stats.summary());
        }
    };

    phase("warm-up").await;

    // Certificate rotation: new handshakes get the new certificate, established connections go on.
    server.rotate_certificate();
    wait_metric(
        &server,
        "pullsecret_injector_certificate_reloads_total{result=\"success\"} 2",
    )
    .await;
    phase("cert-rotated").await;

    // Config reloads: a valid one is applied, an invalid one refused.
    server
        .config_dir
        .update(&[("config.yaml", config(key_dir.path(), "250ms").as_bytes())]);
    wait_metric(
        &server,
        "pullsecret_injector_config_reloads_total{result=\"success\"} 2",
    )
    .await;
    phase("config-valid").await;
    server.config_dir.update(&[(
        "config.yaml",
        b"registries:\n- {name: gcp, preset: gcp}\n".as_slice(),
    )]);
    wait_metric(
        &server,
        "pullsecret_injector_config_reloads_total{result=\"failure\"} 1",
    )
    .await;
    phase("config-invalid").await;

    // The API server: down, then 500 for everything, then slow, then 429 on create.
    api.set_down(true);
    phase("api-down").await;
    api.set_down(false);
    api.inject(Fault::status(500).named("500 for everything"));
    phase("api-500").await;
    api.clear_faults();
    api.inject(Fault::delay(Duration::from_secs(2)).named("slow API"));
    phase("api-slow").await;
    api.clear_faults();
    // Throttled by the API server's priority and fairness. (A 409 on every create would now mean
    // that a Secret of another type holds the name: the Secret is then left alone, not retried.)
    api.inject(
        Fault::status(429)
            .on_verb("create")
            .named("429 on every create"),
    );
    phase("api-429").await;

    // Recovery.
    api.clear_faults();
    let recovered_at = std::time::Instant::now();
    phase("recovered").await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(60), worker)
            .await
            .expect("load worker ends")
            .expect("load worker");
    }

    let failures = stats.failures.lock().expect("failures").clone();
    println!("load: {}", stats.summary());
    assert_eq!(
        stats.failed.load(Ordering::SeqCst),
        0,
        "failed admission requests:\n{}",
        failures.join("\n")
    );
    assert!(
        stats.ok.load(Ordering::SeqCst) >= 100,
        "the load hardly ran: {}",
        stats.summary()
    );

    // Every namespace that got a Pod has its Secret, within 10 s of the recovery.
    let used: Vec<String> = mix.used.lock().expect("used").iter().cloned().collect();
    let converged = api
        .wait_for(CONVERGE.saturating_sub(recovered_at.elapsed()), |api| {
            used.iter().all(|ns| api.secret(ns, SECRET).is_some())
        })
        .await;
    let missing: Vec<&String> = used
        .iter()
        .filter(|ns| api.secret(ns, SECRET).is_none())
        .collect();
    assert!(
        converged && missing.is_empty(),
        "no Secret {:?} after recovery in {missing:?} (of {used:?})",
        recovered_at.elapsed()
    );
    println!(
        "{} namespaces, all with their Secret {:?} after recovery",
        used.len(),
        recovered_at.elapsed()
    );
    let violations = api.rbac_violations();
    assert!(violations.is_empty(), "{violations:#?}");
    provisioner.stop();
}

/// Holds every `ensure` until the gate opens, counting the requests held.
struct GatedPullSecrets {
    open: tokio::sync::watch::Receiver<bool>,
    held: AtomicUsize,
}

impl PullSecrets for GatedPullSecrets {
    fn ensure<'a>(&'a self, _request: EnsureRequest<'a>) -> BoxFuture<'a, EnsureOutcome> {
        Box::pin(async move {
            self.held.fetch_add(1, Ordering::SeqCst);
            let mut open = self.open.clone();
            let _ = open.wait_for(|open| *open).await;
            self.held.fetch_sub(1, Ordering::SeqCst);
            EnsureOutcome::Ready
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_answers_every_request_in_flight_and_refuses_new_connections() {
    const WORKERS: usize = 8;
    let (gate, open) = tokio::sync::watch::channel(true);
    let gated = Arc::new(GatedPullSecrets {
        open,
        held: AtomicUsize::new(0),
    });
    let server = TestServer::start_with(TestOptions {
        server: relaxed_timeouts(),
        ..TestOptions::new(support::GCP_CONFIG, gated.clone())
    })
    .await;
    let client = Arc::new(support::TlsClient::new(
        server.app.local_addr(),
        server.ca.cert_pem(),
    ));

    // Each worker: its own keep-alive connection, requests back to back until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let client = client.clone();
        let stop = stop.clone();
        let answered = answered.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = LoadConn::open(&client).await.expect("connect");
            let mut n = 0u64;
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let uid = format!("shutdown-{worker}-{n}");
                let body = support::load::pod_review(&uid, "team-a", &["gcr.io/acme/app:1"]);
                match tokio::time::timeout(Duration::from_secs(30), conn.review(body)).await {
                    Ok(Ok(reply)) => {
                        match support::load::well_formed_review(
                            &reply.body,
                            &serde_json::Value::from(uid.clone()),
                        ) {
                            Ok(_) if reply.status == 200 => {
                                answered.fetch_add(1, Ordering::SeqCst);
                            }
                            other => failures.push(format!("{uid}: {} {other:?}", reply.status)),
                        }
                    }
                    Ok(Err(error)) => failures.push(format!("{uid}: transport: {error:?}")),
                    Err(_) => failures.push(format!("{uid}: no answer within 30 s")),
                }
                n += 1;
            }
            failures
        }));
    }

    // Under load for a while, then every worker's next request is held in flight.
    assert!(
        eventually(Duration::from_secs(30), || async {
            answered.load(Ordering::SeqCst) >= 200
        })
        .await,
        "load did not get going"
    );
    gate.send_replace(false);
    assert!(
        eventually(Duration::from_secs(30), || async {
            gated.held.load(Ordering::SeqCst) == WORKERS
        })
        .await,
        "not every worker has a request in flight: {}",
        gated.held.load(Ordering::SeqCst)
    );
    // No worker sends another request after the one in flight.
    stop.store(true, Ordering::SeqCst);
    let before = answered.load(Ordering::SeqCst);

    server.app.shutdown();
    // New connections are refused while the requests in flight are still held.
    let refused = eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(server.app.local_addr())
            .await
            .is_err()
    })
    .await;
    assert!(refused, "new connections still accepted after shutdown");
    assert_eq!(
        gated.held.load(Ordering::SeqCst),
        WORKERS,
        "requests in flight are still held"
    );

    // Let them finish: every one is answered.
    gate.send_replace(true);
    for worker in workers {
        let failures = tokio::time::timeout(Duration::from_secs(30), worker)
            .await
            .expect("worker ends")
            .expect("worker");
        assert!(failures.is_empty(), "{failures:#?}");
    }
    assert_eq!(
        answered.load(Ordering::SeqCst),
        before + WORKERS,
        "each request in flight at shutdown got its answer"
    );
    println!(
        "{} requests answered, {WORKERS} of them in flight at shutdown",
        answered.load(Ordering::SeqCst)
    );
    tokio::time::timeout(Duration::from_secs(30), server.app.wait())
        .await
        .expect("the server drains");
    assert!(
        client.connect().await.is_err(),
        "no new connections after shutdown"
    );
}

/// A Secret of the managed name that someone else owns is referenced and left alone, and the first
/// Pod that references it gets a warning (README; `EnsureOutcome::Foreign { first_time }`). When the
/// provisioner's watch sees that Secret before any Pod does, it records it as foreign
/// (`Inner::observe`), and `ensure` then answers `Foreign { first_time: false }` from that record
/// for `foreign_recheck` (5 minutes by default): no Pod is ever told, until the recheck.
#[tokio::test]
async fn a_foreign_secret_seen_first_by_the_watch_still_warns_the_first_pod() {
    let temp = tempfile::tempdir().expect("tempdir");
    let key = support::service_account_key("k1");
    let key_dir = KubeletDir::create(
        &temp.path().join("credentials/gcp"),
        &[("key.json", key.as_bytes())],
    );
    let api = Arc::new(FakeApi::start(&[SECRET]).await);
    let metrics = Arc::new(Metrics::new());
    let provisioner = KubePullSecrets::start(
        api.client(),
        metrics.clone(),
        ProvisionerOptions {
            foreign_recheck: Duration::from_secs(3600),
            health: support::offline_health(),
            ..ProvisionerOptions::default()
        },
    );
    let server = TestServer::start_with(TestOptions {
        metrics: Some(metrics),
        server: relaxed_timeouts(),
        ..TestOptions::new(&config(key_dir.path(), "2s"), Arc::new(provisioner.clone()))
    })
    .await;
    assert!(
        api.wait_for(CONVERGE, |a| a.active_watches_on(SECRETS) >= 1)
            .await
    );
    api.put_namespace("team-own", &[]);
    let mut foreign = k8s_openapi::api::core::v1::Secret::default();
    foreign.metadata.name = Some(SECRET.into());
    foreign.metadata.namespace = Some("team-own".into());
    foreign.type_ = Some("kubernetes.io/dockerconfigjson".into());
    api.put_secret(foreign);
    // The watch event arrives within milliseconds; a second is plenty.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut conn = server.client.connect().await.expect("connect");
    let body = support::load::pod_review(
        "u-foreign",
        "team-own",
        &["europe-west1-docker.pkg.dev/acme-prod/apps/api:1"],
    );
    let response = conn.review(body).await.json();
    assert!(
        response
            .to_string()
            .contains("not managed by pullsecret-injector"),
        "the first Pod referencing a foreign Secret was not warned: {response}"
    );
    provisioner.stop();
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
