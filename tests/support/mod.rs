//! Shared test harness: real TLS with certificates made at test time, a verifying HTTPS client,
//! kubelet-style volume updates, and the webhook started in-process.
#![allow(dead_code)]

pub mod fake_api;
pub mod gcp;
pub mod load;
pub mod registry;
pub mod tls_client;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pullsecret_injector::cli::devcerts::DevCa;
use pullsecret_injector::provisioning::PullSecrets;
use pullsecret_injector::serving::ServerOptions;
use pullsecret_injector::serving::{App, ServeOptions};
use tempfile::TempDir;

pub use tls_client::TlsClient;

/// A GCP service-account key file as `gcloud iam service-accounts keys create` writes it (pretty JSON,
/// trailing newline), with a private key made now.
pub fn service_account_key(key_id: &str) -> String {
    let private_key = rcgen::KeyPair::generate().expect("key").serialize_pem();
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "acme-prod",
        "private_key_id": key_id,
        "private_key": private_key,
        "client_email": "puller@acme-prod.iam.gserviceaccount.com",
        "client_id": "104",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    serde_json::to_string_pretty(&key).expect("json") + "\n"
}

pub const GCP_CONFIG: &str = "registries:\n- {name: gcp, preset: gcp, secretName: gcr-pull}\n";

/// A directory updated the way the kubelet updates ConfigMap and Secret volumes: files are symlinks
/// into `..data`, itself a symlink to a timestamped directory that is replaced by an atomic rename.
pub struct KubeletDir {
    root: PathBuf,
    generation: u32,
}

impl KubeletDir {
    pub fn create(root: &Path, files: &[(&str, &[u8])]) -> Self {
        std::fs::create_dir_all(root).expect("create volume dir");
        let mut dir = Self {
            root: root.to_owned(),
            generation: 0,
        };
        dir.update(files);
        dir
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn update(&mut self, files: &[(&str, &[u8])]) {
        self.generation += 1;
        let old = self.root.join(format!("..gen{}", self.generation - 1));
        let new_name = format!("..gen{}", self.generation);
        let new = self.root.join(&new_name);
        std::fs::create_dir(&new).expect("create generation dir");
        for (name, content) in files {
            std::fs::write(new.join(name), content).expect("write volume file");
        }
        let tmp = self.root.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&new_name, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.root.join("..data")).expect("swap ..data");
        for (name, _) in files {
            let link = self.root.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("file symlink");
            }
        }
        let _ = std::fs::remove_dir_all(old);
    }
}

pub fn local_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

pub struct TestServer {
    pub app: App,
    pub ca: DevCa,
    pub config_dir: KubeletDir,
    pub tls_dir: KubeletDir,
    pub client: TlsClient,
    _temp: TempDir,
}

pub struct TestOptions {
    pub config: String,
    pub pull_secrets: Arc<dyn PullSecrets>,
    pub server: ServerOptions,
    pub max_body_bytes: Option<usize>,
    /// Shared with a provisioner so its metrics show on the server's /metrics.
    pub metrics: Option<Arc<pullsecret_injector::serving::Metrics>>,
    /// PEM CA certificates clients must chain to (client certificate authentication).
    pub client_ca_pem: Option<String>,
}

impl TestOptions {
    pub fn new(config: &str, pull_secrets: Arc<dyn PullSecrets>) -> Self {
        Self {
            config: config.to_owned(),
            pull_secrets,
            server: ServerOptions {
                header_read_timeout: Duration::from_millis(500),
                ..ServerOptions::default()
            },
            max_body_bytes: None,
            metrics: None,
            client_ca_pem: None,
        }
    }
}

impl TestServer {
    pub async fn start(config: &str) -> Self {
        Self::start_with(TestOptions::new(
            config,
            Arc::new(pullsecret_injector::provisioning::ReferenceOnly),
        ))
        .await
    }

    pub async fn start_with(options: TestOptions) -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let ca = DevCa::generate().expect("CA");
        let (cert, key) = ca.issue(&local_names(), "localhost").expect("leaf");
        let config_dir = KubeletDir::create(
            &temp.path().join("config"),
            &[("config.yaml", options.config.as_bytes())],
        );
        let tls_dir = KubeletDir::create(
            &temp.path().join("tls"),
            &[("tls.crt", cert.as_bytes()), ("tls.key", key.as_bytes())],
        );
        let mut serve = ServeOptions::new(
            config_dir.path().join("config.yaml"),
            tls_dir.path().to_owned(),
            "127.0.0.1:0".parse().expect("addr"),
            options.pull_secrets,
        );
        serve.server = options.server;
        serve.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
        // Long enough that reload tests prove the file watch, not the backup poll.
        serve.reload_poll = Duration::from_secs(3600);
        if let Some(metrics) = options.metrics {
            serve.metrics = metrics;
        }
        if let Some(pem) = &options.client_ca_pem {
            let path = temp.path().join("client-ca.crt");
            std::fs::write(&path, pem).expect("write client CA");
            serve.client_ca_file = Some(path);
        }
        if let Some(max) = options.max_body_bytes {
            serve.bodies.max_body_bytes = max;
        }
        let app = App::start(serve).await.expect("app starts");
        let client = TlsClient::new(app.local_addr(), ca.cert_pem());
        Self {
            app,
            ca,
            config_dir,
            tls_dir,
            client,
            _temp: temp,
        }
    }

    /// A new serving certificate from the same CA, written kubelet-style; returns its PEM.
    pub fn rotate_certificate(&mut self) -> String {
        let (cert, key) = self.ca.issue(&local_names(), "localhost").expect("leaf");
        self.tls_dir
            .update(&[("tls.crt", cert.as_bytes()), ("tls.key", key.as_bytes())]);
        cert
    }

    pub async fn metrics(&self) -> String {
        let addr = self.app.metrics_addr().expect("metrics listener");
        plain_get(addr, "/metrics").await.1
    }
}

/// A GET over plain HTTP/1.1 (the metrics port).
pub async fn plain_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `check` until it is true or `limit` passes; the limit only bounds a failing test.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a captured AdmissionReview fixture.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission-reviews")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Decodes the base64 JSON Patch of an AdmissionReview response, if any.
pub fn decoded_patch(response: &serde_json::Value) -> Option<json_patch::Patch> {
    use base64::Engine as _;
    let encoded = response["response"]["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("patch is base64");
    Some(serde_json::from_slice(&bytes).expect("patch is a JSON Patch"))
}

/// Applies the response's patch to the request's object, as the API server does.
pub fn patched_object(request: &[u8], response: &serde_json::Value) -> serde_json::Value {
    let review: serde_json::Value = serde_json::from_slice(request).expect("request json");
    let mut object = review["request"]["object"].clone();
    if let Some(patch) = decoded_patch(response) {
        json_patch::patch(&mut object, &patch).expect("patch applies");
    }
    object
}

/// Registry-check options for tests whose Pods name real registry hosts: no host is recorded, so
/// no check ever leaves the loopback.
pub fn offline_health() -> pullsecret_injector::provisioning::health::HealthOptions {
    pullsecret_injector::provisioning::health::HealthOptions {
        max_hosts: 0,
        ..Default::default()
    }
}
