//! Registries for the credential checks: the CNCF distribution registry (Debian's `docker-registry`)
//! with htpasswd auth on loopback TLS, and an in-process token server for the Bearer flow whose
//! answers a test scripts.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use pullsecret_injector::cli::devcerts::DevCa;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// A CA and a serving certificate for 127.0.0.1 and localhost, made now.
pub struct TestCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCerts {
    pub fn new() -> Self {
        let ca = DevCa::generate().expect("CA");
        let (cert_pem, key_pem) = ca.issue(&super::local_names(), "localhost").expect("leaf");
        Self {
            ca_pem: ca.cert_pem().to_owned(),
            cert_pem,
            key_pem,
        }
    }
}

/// Serves `router` over TLS on 127.0.0.1 with `certs`.
pub async fn serve_tls(router: Router, certs: &TestCerts) -> SocketAddr {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(certs.cert_pem.as_bytes())
            .map(|c| c.expect("cert"))
            .collect();
    let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
                    .await;
            });
        }
    });
    addr
}

/// One scripted answer of the token server.
#[derive(Debug, Clone)]
pub enum TokenReply {
    /// A token, when the basic auth is the expected one; else 401 with distribution's text.
    Check,
    Status(u16, &'static str),
    /// Answers after this long (longer than the check's timeout: a slow server).
    Slow(Duration),
    /// Closes the connection without an answer.
    Reset,
}

/// A registry whose `/v2/` wants a Bearer token from its own `/token` realm.
pub struct TokenRegistry {
    pub addr: SocketAddr,
    pub certs: TestCerts,
    state: Arc<TokenState>,
    dir: tempfile::TempDir,
}

struct TokenState {
    username: String,
    password: Mutex<String>,
    script: Mutex<VecDeque<TokenReply>>,
    realm: Mutex<String>,
    token_requests: AtomicUsize,
    v2_requests: AtomicUsize,
    scopes: Mutex<Vec<String>>,
}

/// The token the server issues for the right password (long enough for the log-hygiene scan).
pub const ISSUED_TOKEN: &str = "issued-registry-token-6f1e-9c41-4d7b-a8e2-5b3f0d17c6aa";

impl TokenRegistry {
    pub async fn start(username: &str, password: &str) -> Self {
        let certs = TestCerts::new();
        let state = Arc::new(TokenState {
            username: username.to_owned(),
            password: Mutex::new(password.to_owned()),
            script: Mutex::new(VecDeque::new()),
            realm: Mutex::new(String::new()),
            token_requests: AtomicUsize::new(0),
            v2_requests: AtomicUsize::new(0),
            scopes: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/v2/", get(v2))
            .route("/v2/{*rest}", get(v2))
            .route("/token", get(token))
            .with_state(state.clone());
        let addr = serve_tls(router, &certs).await;
        *state.realm.lock().unwrap() = format!("https://127.0.0.1:{}/token", addr.port());
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            addr,
            certs,
            state,
            dir,
        }
    }

    /// A PEM file with the CA of this registry's certificate.
    pub fn ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("ca.crt");
        std::fs::write(&path, &self.certs.ca_pem).expect("ca");
        path
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// The next token requests get these answers, in order; then `Check` again.
    pub fn script(&self, replies: impl IntoIterator<Item = TokenReply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// The password the token server accepts.
    pub fn password(&self) -> String {
        self.state.password.lock().unwrap().clone()
    }

    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    pub fn v2_requests(&self) -> usize {
        self.state.v2_requests.load(Ordering::SeqCst)
    }

    /// The `scope` of every token request so far ("" when it had none).
    pub fn scopes(&self) -> Vec<String> {
        self.state.scopes.lock().unwrap().clone()
    }
}

async fn v2(State(state): State<Arc<TokenState>>, headers: HeaderMap) -> Response {
    state.v2_requests.fetch_add(1, Ordering::SeqCst);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer == Some(ISSUED_TOKEN) {
        return (StatusCode::OK, "{}").into_response();
    }
    let challenge = format!(
        "Bearer realm=\"{}\",service=\"test-registry\"",
        state.realm.lock().unwrap()
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    )
        .into_response()
}

async fn token(
    State(state): State<Arc<TokenState>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Response {
    use base64::Engine as _;
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let scope = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "scope")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    state.scopes.lock().unwrap().push(scope);
    let next = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(TokenReply::Check);
    match next {
        TokenReply::Check => {}
        TokenReply::Status(code, body) => {
            return (StatusCode::from_u16(code).unwrap(), body).into_response();
        }
        TokenReply::Slow(delay) => {
            tokio::time::sleep(delay).await;
        }
        TokenReply::Reset => {
            // Dropping the connection: an error the client sees as a reset.
            return Response::builder()
                .status(StatusCode::OK)
                .body(axum::body::Body::from_stream(futures::stream::once(
                    async { Err::<bytes::Bytes, std::io::Error>(std::io::Error::other("reset")) },
                )))
                .unwrap();
        }
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            state.username,
            state.password.lock().unwrap()
        ))
    );
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given == Some(expected.as_str()) {
        (
            StatusCode::OK,
            format!(r#"{{"token":"{ISSUED_TOKEN}","expires_in":300}}"#),
        )
            .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            r#"{"details":"incorrect username or password"}"#,
        )
            .into_response()
    }
}

/// The distribution registry with htpasswd auth, on 127.0.0.1 with a test-made certificate. Stopped
/// (the process this started, by its handle) when dropped.
pub struct DistributionRegistry {
    pub port: u16,
    pub certs: TestCerts,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl DistributionRegistry {
    /// Fails the test, saying what to install, when the binary is missing.
    pub async fn start(username: &str, password: &str) -> Self {
        assert!(
            Path::new(REGISTRY_BINARY).is_file(),
            "{REGISTRY_BINARY} is missing: install the Debian package `docker-registry` (CI's .ci/run does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::new();
        std::fs::write(dir.path().join("tls.crt"), &certs.cert_pem).expect("cert");
        std::fs::write(dir.path().join("tls.key"), &certs.key_pem).expect("key");
        std::fs::write(
            dir.path().join("htpasswd"),
            htpasswd_line(username, password),
        )
        .expect("htpasswd");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let config = format!(
            "version: 0.1\n\
             log: {{level: warn}}\n\
             storage:\n  filesystem: {{rootdirectory: {root}}}\n\
             http:\n  addr: 127.0.0.1:{port}\n  tls: {{certificate: {cert}, key: {key}}}\n\
             auth:\n  htpasswd: {{realm: test-registry, path: {htpasswd}}}\n",
            root = dir.path().join("data").display(),
            cert = dir.path().join("tls.crt").display(),
            key = dir.path().join("tls.key").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("config");
        let mut registry = Self {
            port,
            certs,
            dir,
            child: None,
        };
        registry.spawn(&config_path).await;
        registry
    }

    async fn spawn(&mut self, config: &Path) {
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        // Ready once it accepts connections on its port.
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("docker-registry did not listen on 127.0.0.1:{}", self.port);
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("ca.crt");
        std::fs::write(&path, &self.certs.ca_pem).expect("ca");
        path
    }

    /// Stops the registry process (the registry is down from now on).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DistributionRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An htpasswd line with a bcrypt hash, as distribution requires: made by `htpasswd -nbB`.
fn htpasswd_line(username: &str, password: &str) -> String {
    let output = Command::new("htpasswd")
        .args(["-nbB", username, password])
        .output()
        .unwrap_or_else(|e| {
            panic!("htpasswd cannot run ({e}): install the Debian package `apache2-utils` (CI's .ci/run does)")
        });
    assert!(output.status.success(), "htpasswd failed");
    String::from_utf8(output.stdout).expect("utf-8")
}
