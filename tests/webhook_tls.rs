//! The webhook over real TLS: captured AdmissionReviews in, patches out and applied; bad input;
//! certificate rotation; config reload; graceful shutdown.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use pullsecret_injector::provisioning::{EnsureOutcome, EnsureRequest, PullSecrets};
use serde_json::json;
use support::{GCP_CONFIG, TestOptions, TestServer, eventually, fixture, patched_object};

fn secret_names(pod: &serde_json::Value) -> Vec<String> {
    pod["spec"]["imagePullSecrets"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| e["name"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn captured_reviews_get_the_right_answer() {
    let server = TestServer::start(GCP_CONFIG).await;
    let mut conn = server.client.connect().await.expect("connect");
    // (fixture, imagePullSecrets after the patch or None for "no patch")
    let cases: &[(&str, Option<&[&str]>)] = &[
        ("pod-create-direct.json", Some(&["gcr-pull"])),
        (
            "pod-create-existing-pull-secret.json",
            Some(&["my-own-creds", "gcr-pull"]),
        ),
        ("pod-create-dry-run.json", Some(&["gcr-pull"])),
        ("pod-create-from-deployment.json", Some(&["gcr-pull"])),
        ("pod-update-labels.json", None),
        ("pod-update-ephemeralcontainers.json", None),
        ("configmap-create.json", None),
    ];
    for (name, expected) in cases {
        let request = fixture(name);
        let request_json: serde_json::Value =
            serde_json::from_slice(&request).expect("fixture json");
        let reply = conn.review(request.clone()).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert_eq!(reply.content_type, "application/json", "{name}");
        let response = reply.json();
        assert_eq!(response["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(response["kind"], "AdmissionReview", "{name}");
        assert_eq!(
            response["response"]["uid"], request_json["request"]["uid"],
            "{name}"
        );
        assert_eq!(response["response"]["allowed"], true, "{name}");
        match expected {
            Some(secrets) => {
                assert_eq!(response["response"]["patchType"], "JSONPatch", "{name}");
                let pod = patched_object(&request, &response);
                assert_eq!(secret_names(&pod), *secrets, "{name}");
                let warnings = response["response"]["warnings"]
                    .as_array()
                    .expect("warnings");
                assert!(
                    warnings.iter().any(|w| w
                        .as_str()
                        .unwrap_or("")
                        .contains("added imagePullSecret \"gcr-pull\"")),
                    "{name}: {warnings:?}"
                );
            }
            None => {
                if *name == "pod-update-ephemeralcontainers.json" {
                    // The debug image is on gcr.io but the Pod lists no gcr-pull: say so, change nothing.
                    let warnings = response["response"]["warnings"]
                        .as_array()
                        .expect("warnings");
                    assert!(
                        warnings[0]
                            .as_str()
                            .unwrap_or("")
                            .contains("\"gcr-pull\" is not in this Pod's imagePullSecrets"),
                        "{warnings:?}"
                    );
                }
                assert!(
                    response["response"].get("patch").is_none(),
                    "{name}: {response}"
                );
                assert!(response["response"].get("patchType").is_none(), "{name}");
            }
        }
    }
}

#[tokio::test]
async fn patch_wire_format_is_base64_of_an_rfc6902_patch() {
    let server = TestServer::start(GCP_CONFIG).await;
    let mut conn = server.client.connect().await.expect("connect");
    let response = conn
        .review(fixture("pod-create-existing-pull-secret.json"))
        .await
        .json();
    let patch = response["response"]["patch"]
        .as_str()
        .expect("patch is a JSON string, not a byte array");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("standard base64 with padding");
    let ops: serde_json::Value = serde_json::from_slice(&raw).expect("JSON");
    assert_eq!(
        ops,
        json!([{"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": "gcr-pull"}}])
    );
}

#[tokio::test]
async fn keep_alive_connection_serves_many_reviews() {
    let server = TestServer::start(GCP_CONFIG).await;
    let mut conn = server.client.connect().await.expect("connect");
    assert_eq!(conn.alpn.as_deref(), Some(&b"http/1.1"[..]));
    for _ in 0..50 {
        let reply = conn.review(fixture("pod-create-direct.json")).await;
        assert_eq!(reply.status, 200);
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("pullsecret_injector_admission_requests_total{outcome=\"patched\"} 50"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pullsecret_injector_injections_total{registry=\"gcp\"} 50"),
        "{metrics}"
    );
}

/// The API server calls webhooks over HTTP/1.1: that is all ALPN offers, even to a client that
/// prefers HTTP/2, and a client that insists on HTTP/2 alone gets no connection.
#[tokio::test]
async fn alpn_offers_only_http1() {
    let server = TestServer::start(GCP_CONFIG).await;
    let tls = server
        .client
        .tls_stream(&[b"h2", b"http/1.1"])
        .await
        .expect("tls");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(
        server.client.tls_stream(&[b"h2"]).await.is_err(),
        "an h2-only client is refused in the handshake"
    );
    let mut conn = server.client.connect().await.expect("connect");
    let reply = conn.review(fixture("pod-create-direct.json")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["response"]["patchType"], "JSONPatch");
}

#[tokio::test]
async fn probes_and_metrics_are_served() {
    let server = TestServer::start(GCP_CONFIG).await;
    let mut conn = server.client.connect().await.expect("connect");
    for path in ["/healthz", "/readyz"] {
        let reply = conn
            .send("GET", path, None, Vec::new())
            .await
            .expect("probe");
        assert_eq!(reply.status, 200, "{path}");
    }
    let reply = conn
        .send("GET", "/metrics", None, Vec::new())
        .await
        .expect("metrics");
    assert_eq!(reply.status, 200);
    let text = reply.text();
    for name in [
        "pullsecret_injector_admission_duration_seconds",
        "pullsecret_injector_config_reloads_total{result=\"success\"} 1",
        "pullsecret_injector_certificate_reloads_total{result=\"success\"} 1",
    ] {
        assert!(text.contains(name), "missing {name} in {text}");
    }
    let addr = server.app.metrics_addr().expect("metrics port");
    assert_eq!(support::plain_get(addr, "/readyz").await.0, 200);
    assert_eq!(
        support::plain_get(addr, "/mutate").await.0,
        404,
        "the plain port does not serve reviews"
    );
}

#[tokio::test]
async fn certificate_rotation_is_picked_up_without_failed_requests() {
    let mut server = TestServer::start(GCP_CONFIG).await;
    let mut old_conn = server.client.connect().await.expect("connect");
    let first_cert = old_conn.server_cert.clone();
    let new_pem = server.rotate_certificate();
    let new_cert =
        rustls_pki_types::CertificateDer::from_pem_slice(new_pem.as_bytes()).expect("pem");
    use rustls_pki_types::pem::PemObject as _;
    assert_ne!(first_cert, new_cert);

    let client = &server.client;
    let rotated = eventually(Duration::from_secs(10), || async {
        let mut conn = client
            .connect()
            .await
            .expect("handshake never fails during rotation");
        assert_eq!(
            conn.review(fixture("pod-create-direct.json")).await.status,
            200
        );
        conn.server_cert == new_cert
    })
    .await;
    assert!(rotated, "new handshakes never saw the new certificate");
    // The connection made before the rotation keeps working.
    assert_eq!(
        old_conn
            .review(fixture("pod-create-direct.json"))
            .await
            .status,
        200
    );

    // A broken pair is refused: the current certificate keeps serving.
    server.tls_dir.update(&[
        (
            "tls.crt",
            b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n",
        ),
        ("tls.key", b"garbage"),
    ]);
    let refused = eventually(Duration::from_secs(10), || async {
        server
            .metrics()
            .await
            .contains("pullsecret_injector_certificate_reloads_total{result=\"failure\"} 1")
    })
    .await;
    assert!(refused, "{}", server.metrics().await);
    let mut conn = server.client.connect().await.expect("still serving");
    assert_eq!(conn.server_cert, new_cert);
    assert_eq!(
        conn.review(fixture("pod-create-direct.json")).await.status,
        200
    );
}

#[tokio::test]
async fn config_reload_applies_valid_configs_and_refuses_invalid_ones() {
    let mut server = TestServer::start(GCP_CONFIG).await;
    let request = fixture("pod-create-direct.json");
    let injected = |response: serde_json::Value| secret_names(&patched_object(&request, &response));
    let mut conn = server.client.connect().await.expect("connect");
    assert_eq!(
        injected(conn.review(request.clone()).await.json()),
        ["gcr-pull"]
    );

    // Another registry, with as many host patterns, now comes first: image matches remembered
    // under the old config must not be reused (they would name this registry's Secret).
    server.config_dir.update(&[(
        "config.yaml",
        b"registries:\n\
          - {name: own, hosts: [registry.example.com, a.example.com, b.example.com, c.example.com], secretName: own-pull}\n\
          - {name: gcp, preset: gcp, secretName: artifact-pull}\n",
    )]);
    let client = &server.client;
    let reloaded = eventually(Duration::from_secs(10), || async {
        let mut conn = client.connect().await.expect("connect");
        injected(conn.review(request.clone()).await.json()) != ["gcr-pull"]
    })
    .await;
    assert!(reloaded, "valid new config was not applied");
    assert_eq!(
        injected(conn.review(request.clone()).await.json()),
        ["artifact-pull"],
        "decided as under the old config"
    );

    server
        .config_dir
        .update(&[("config.yaml", b"registries:\n- {name: gcp, preset: gcp}\n")]);
    let refused = eventually(Duration::from_secs(10), || async {
        server
            .metrics()
            .await
            .contains("pullsecret_injector_config_reloads_total{result=\"failure\"} 1")
    })
    .await;
    assert!(refused, "{}", server.metrics().await);
    assert!(
        server
            .metrics()
            .await
            .contains("pullsecret_injector_config_last_reload_valid 0")
    );
    assert_eq!(
        injected(conn.review(request.clone()).await.json()),
        ["artifact-pull"],
        "the previous config keeps serving"
    );
}

/// Holds every `ensure` call for a while, so a request is in flight when shutdown starts.
struct SlowPullSecrets {
    delay: Duration,
    started: AtomicUsize,
}

impl PullSecrets for SlowPullSecrets {
    fn ensure<'a>(&'a self, _request: EnsureRequest<'a>) -> BoxFuture<'a, EnsureOutcome> {
        Box::pin(async move {
            self.started.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            EnsureOutcome::Ready
        })
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let slow = Arc::new(SlowPullSecrets {
        delay: Duration::from_millis(700),
        started: AtomicUsize::new(0),
    });
    let server = TestServer::start_with(TestOptions::new(GCP_CONFIG, slow.clone())).await;
    let mut conn = server.client.connect().await.expect("connect");
    let in_flight =
        tokio::spawn(async move { conn.review(fixture("pod-create-direct.json")).await });
    assert!(
        eventually(Duration::from_secs(10), || async {
            slow.started.load(Ordering::SeqCst) == 1
        })
        .await
    );

    server.app.shutdown();
    let reply = in_flight.await.expect("request task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["response"]["patchType"], "JSONPatch");

    let client = server.client;
    tokio::time::timeout(Duration::from_secs(10), server.app.wait())
        .await
        .expect("drains");
    assert!(
        client.connect().await.is_err(),
        "no new connections after shutdown"
    );
}

/// Shutdown closes keep-alive connections that sit idle (one that was served, and one that never
/// sent a request) at once: the drain waits for requests, not for idle connections to time out.
#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let mut options = TestOptions::new(
        GCP_CONFIG,
        Arc::new(pullsecret_injector::provisioning::ReferenceOnly),
    );
    // Every timer that could close an idle connection on its own is far beyond the test's bound.
    options.server.header_read_timeout = Duration::from_secs(300);
    options.server.drain_timeout = Duration::from_secs(300);
    let server = TestServer::start_with(options).await;
    let mut h1 = server.client.connect().await.expect("connect");
    assert_eq!(
        h1.review(fixture("pod-create-direct.json")).await.status,
        200
    );
    let mut silent = server
        .client
        .tls_stream(&[b"http/1.1"])
        .await
        .expect("silent connection");

    server.app.shutdown();
    tokio::time::timeout(Duration::from_secs(20), server.app.wait())
        .await
        .expect("idle connections are closed at shutdown, not after the drain timeout");
    assert!(
        h1.send("GET", "/healthz", None, Vec::new()).await.is_err(),
        "the idle HTTP/1.1 connection is closed"
    );
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("the silent connection is closed");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the silent connection ends: {read:?}"
    );
}

/// With a client CA, only a client presenting a certificate that chains to it is served: one from
/// another CA, or none, is refused in the handshake. The plain-HTTP port still answers probes.
#[tokio::test]
async fn a_client_ca_admits_only_clients_with_its_certificates() {
    use pullsecret_injector::cli::devcerts::DevCa;
    let api_server_ca = DevCa::generate().expect("CA");
    let other_ca = DevCa::generate().expect("CA");
    let server = TestServer::start_with(TestOptions {
        client_ca_pem: Some(api_server_ca.cert_pem().to_owned()),
        ..TestOptions::new(
            GCP_CONFIG,
            Arc::new(pullsecret_injector::provisioning::ReferenceOnly),
        )
    })
    .await;
    let (cert, key) = api_server_ca
        .issue_client("kube-apiserver")
        .expect("client cert");
    let mut conn = server
        .client
        .with_identity(&cert, &key)
        .connect()
        .await
        .expect("the API server's certificate is accepted");
    assert_eq!(
        conn.review(fixture("pod-create-direct.json")).await.status,
        200
    );

    let (stranger_cert, stranger_key) = other_ca.issue_client("stranger").expect("cert");
    for (name, client) in [
        (
            "no certificate",
            support::TlsClient::new(server.app.local_addr(), server.ca.cert_pem()),
        ),
        (
            "another CA's certificate",
            server.client.with_identity(&stranger_cert, &stranger_key),
        ),
    ] {
        let refused = match client.connect().await {
            Err(_) => true,
            // TLS 1.3 finishes the client's side before the server checks its certificate: the
            // first request then fails.
            Ok(mut conn) => conn
                .send("GET", "/healthz", None, Vec::new())
                .await
                .is_err(),
        };
        assert!(refused, "{name}: served");
    }
    let addr = server.app.metrics_addr().expect("metrics port");
    assert_eq!(support::plain_get(addr, "/readyz").await.0, 200);
}
