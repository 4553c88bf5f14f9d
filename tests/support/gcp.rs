//! Loopback Google endpoints for tests: a token endpoint that verifies JWT-bearer assertions with the
//! key's public key (through `jsonwebtoken`'s RustCrypto backend, a different RSA implementation from
//! the `ring` signer under test), and a metadata server. RSA keys are generated at test time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use pullsecret_injector::provisioning::gcp_auth::{
    HttpClient, REGISTRY_READ_SCOPES, ServiceAccountKey, TokenSource,
};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde::Deserialize;

// ---------------------------------------------------------------------------------------------
// Keys

pub struct TestKey {
    pub private_pem: String,
    pub public_pem: String,
}

/// Two RSA-2048 key pairs, generated once per test binary.
pub fn keys() -> &'static [TestKey; 2] {
    static KEYS: OnceLock<[TestKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let generate = || {
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("keygen");
            TestKey {
                private_pem: key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8").to_string(),
                public_pem: key
                    .to_public_key()
                    .to_public_key_pem(LineEnding::LF)
                    .expect("spki"),
            }
        };
        let other = std::thread::spawn(generate);
        let first = generate();
        [first, other.join().expect("keygen thread")]
    })
}

/// The base64 lines of a PEM: none of them may ever show up in output.
pub fn pem_body_lines(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect()
}

pub const CLIENT_EMAIL: &str = "puller@my-project.iam.gserviceaccount.com";
pub const KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";

pub fn key_json(private_pem: &str, token_uri: Option<&str>) -> String {
    let mut v = serde_json::json!({
        "type": "service_account",
        "project_id": "my-project",
        "private_key_id": KEY_ID,
        "private_key": private_pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
    });
    if let Some(uri) = token_uri {
        v["token_uri"] = uri.into();
    }
    v.to_string()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn client() -> HttpClient {
    HttpClient::new().expect("HTTP client with the system's roots")
}

pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

pub fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Loopback token endpoint

/// A canned answer for the next request, instead of checking the assertion.
pub enum Canned {
    Status(StatusCode, String),
}

pub struct TokenEndpoint {
    /// Public key the assertions must be signed with.
    pub verify_with: DecodingKey,
    pub audience: String,
    pub lifetime_secs: i64,
    pub issued: AtomicU64,
    pub requests: AtomicU64,
    pub canned: Mutex<VecDeque<Canned>>,
    pub last_assertion: Mutex<Option<String>>,
}

#[derive(Deserialize)]
pub struct Claims {
    pub iss: String,
    pub scope: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

pub fn oauth_error(description: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        serde_json::json!({ "error": "invalid_grant", "error_description": description })
            .to_string(),
    )
}

/// The fields of a form-urlencoded body; `None` for another content type.
fn form_fields(headers: &HeaderMap, body: &[u8]) -> Option<Vec<(String, String)>> {
    (headers.get(header::CONTENT_TYPE)
        == Some(&HeaderValue::from_static(
            "application/x-www-form-urlencoded",
        )))
    .then(|| form_urlencoded::parse(body).into_owned().collect())
}

pub async fn token_handler(
    State(ep): State<Arc<TokenEndpoint>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ep.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(Canned::Status(status, body)) = ep.canned.lock().unwrap().pop_front() {
        return json_response(status, body);
    }
    let Some(form) = form_fields(&headers, &body) else {
        return oauth_error("wrong content type");
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if form.len() != 2 {
        return oauth_error("expected exactly grant_type and assertion");
    }
    if field("grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return oauth_error("unsupported grant_type");
    }
    let Some(assertion) = field("assertion") else {
        return oauth_error("missing assertion");
    };
    *ep.last_assertion.lock().unwrap() = Some(assertion.to_owned());

    let header = match jsonwebtoken::decode_header(assertion) {
        Ok(h) => h,
        Err(_) => return oauth_error("assertion is not a JWT"),
    };
    if header.alg != Algorithm::RS256 || header.typ.as_deref() != Some("JWT") {
        return oauth_error("expected alg RS256, typ JWT");
    }
    if header.kid.as_deref() != Some(KEY_ID) {
        return oauth_error("wrong kid");
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&ep.audience]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    validation.leeway = 0;
    let claims = match jsonwebtoken::decode::<Claims>(assertion, &ep.verify_with, &validation) {
        Ok(data) => data.claims,
        Err(e) if *e.kind() == ErrorKind::InvalidSignature => {
            return oauth_error("Invalid JWT Signature.");
        }
        Err(e) => return oauth_error(&format!("invalid assertion: {e}")),
    };
    let now = unix_now();
    if claims.iss != CLIENT_EMAIL || claims.aud != ep.audience {
        return oauth_error("wrong iss or aud");
    }
    if claims.scope != REGISTRY_READ_SCOPES {
        return oauth_error("wrong scope");
    }
    if claims.iat.abs_diff(now) > 60 || claims.exp != claims.iat + 3600 {
        return oauth_error("iat must be now and exp iat + 3600");
    }
    let n = ep.issued.fetch_add(1, Ordering::SeqCst) + 1;
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "access_token": format!("ya29.test-token-{n}"),
            "expires_in": ep.lifetime_secs,
            "token_type": "Bearer",
        })
        .to_string(),
    )
}

/// Starts a token endpoint that accepts assertions signed by `keys()[signer]`; returns it and
/// its token URI.
pub async fn token_endpoint(signer: usize, lifetime_secs: i64) -> (Arc<TokenEndpoint>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_uri = format!("http://{}/token", listener.local_addr().unwrap());
    let ep = Arc::new(TokenEndpoint {
        verify_with: DecodingKey::from_rsa_pem(keys()[signer].public_pem.as_bytes()).unwrap(),
        audience: token_uri.clone(),
        lifetime_secs,
        issued: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        canned: Mutex::new(VecDeque::new()),
        last_assertion: Mutex::new(None),
    });
    let router = Router::new()
        .route("/token", post(token_handler))
        .with_state(ep.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (ep, token_uri)
}

pub fn key_source(private_pem: &str, token_uri: &str) -> TokenSource {
    TokenSource::ServiceAccountKey(
        ServiceAccountKey::parse(key_json(private_pem, Some(token_uri)).as_bytes()).unwrap(),
    )
}

// ---------------------------------------------------------------------------------------------
// Metadata server

pub struct MetadataServer {
    pub requests: AtomicU64,
    /// Tokens issued so far; each token carries its number.
    pub issued: AtomicU64,
    /// Lifetime of the tokens it issues (the real one answers with what is left of an hour).
    pub lifetime_secs: AtomicI64,
    /// Answer this many token requests with 503 before working again.
    pub fail_next: AtomicU64,
    /// Number the tokens ("ya29.md-default-3"), to tell refreshed tokens apart.
    pub numbered: std::sync::atomic::AtomicBool,
}

impl Default for MetadataServer {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            lifetime_secs: AtomicI64::new(3599),
            fail_next: AtomicU64::new(0),
            numbered: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

pub async fn metadata_token(
    State(md): State<Arc<MetadataServer>>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    md.requests.fetch_add(1, Ordering::SeqCst);
    let flavor = [("metadata-flavor", "Google")];
    if headers.get("metadata-flavor") != Some(&HeaderValue::from_static("Google")) {
        return (
            StatusCode::FORBIDDEN,
            flavor,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    }
    if query.is_some() {
        return (StatusCode::BAD_REQUEST, flavor, "unexpected query string").into_response();
    }
    if account != "default" && account != CLIENT_EMAIL {
        return (StatusCode::NOT_FOUND, flavor, "Unknown service account.").into_response();
    }
    if md
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            flavor,
            "temporarily unavailable",
        )
            .into_response();
    }
    let n = md.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = if md.numbered.load(Ordering::SeqCst) {
        format!("ya29.md-{account}-{n}")
    } else {
        format!("ya29.md-{account}")
    };
    let lifetime = md.lifetime_secs.load(Ordering::SeqCst);
    (
        StatusCode::OK,
        [
            ("metadata-flavor", "Google"),
            ("content-type", "application/json"),
        ],
        format!(r#"{{"access_token":"{token}","expires_in":{lifetime},"token_type":"Bearer"}}"#),
    )
        .into_response()
}

pub async fn metadata_server() -> (Arc<MetadataServer>, String) {
    let md = Arc::new(MetadataServer::default());
    let router = Router::new()
        .route(
            "/computeMetadata/v1/instance/service-accounts/{account}/token",
            get(metadata_token),
        )
        .with_state(md.clone());
    let addr = serve(router).await;
    (md, format!("http://{addr}"))
}

// ---------------------------------------------------------------------------------------------
// Workload Identity Federation: STS and IAM Credentials

/// The provider audience the loopback STS expects.
pub const WIF_AUDIENCE: &str = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/home-lab/providers/k3s-cluster";
pub const SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A loopback STS (`POST /v1/token`, RFC 8693) and IAM Credentials API
/// (`POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken`). Each checks every field
/// of its request and answers `invalid_grant` / `INVALID_ARGUMENT` naming the first one that is
/// wrong; what it saw is kept for the tests to assert on.
pub struct Federation {
    /// `expires_in` of the federated tokens.
    pub sts_lifetime_secs: AtomicI64,
    /// How long the impersonated tokens live (`expireTime` = now + this).
    pub iam_lifetime_secs: AtomicI64,
    /// The `lifetime` the IAM endpoint requires.
    pub expected_lifetime: Mutex<String>,
    /// Subject tokens received, in order.
    pub subject_tokens: Mutex<Vec<String>>,
    /// Every STS form, in order.
    pub exchanges: Mutex<Vec<Vec<(String, String)>>>,
    /// `Authorization` headers received by the IAM endpoint, in order.
    pub iam_authorizations: Mutex<Vec<String>>,
    pub federated_issued: AtomicU64,
    pub impersonated_issued: AtomicU64,
    pub sts_canned: Mutex<VecDeque<Canned>>,
    /// Answer every impersonation with 403 PERMISSION_DENIED.
    pub iam_forbidden: std::sync::atomic::AtomicBool,
    /// Answer this many impersonations with 403 PERMISSION_DENIED before working again.
    pub iam_fail_next: AtomicU64,
    /// Put into every token issued (`ya29.federated{tag}-1`), to make them long and unique.
    pub token_tag: Mutex<String>,
}

impl Federation {
    pub fn federated_token(&self, n: u64) -> String {
        format!("ya29.federated{}-{n}", self.token_tag.lock().unwrap())
    }

    pub fn impersonated_token(&self, n: u64) -> String {
        format!("ya29.impersonated{}-{n}", self.token_tag.lock().unwrap())
    }
}

fn sts_error(description: &str) -> Response {
    oauth_error(description)
}

fn iam_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        serde_json::json!({"error": {"code": status.as_u16(), "message": message, "status": code}})
            .to_string(),
    )
}

pub async fn sts_handler(
    State(fed): State<Arc<Federation>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(Canned::Status(status, body)) = fed.sts_canned.lock().unwrap().pop_front() {
        return json_response(status, body);
    }
    let Some(form) = form_fields(&headers, &body) else {
        return sts_error("wrong content type");
    };
    fed.exchanges.lock().unwrap().push(form.clone());
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if form.len() != 6 {
        return sts_error("expected exactly six fields");
    }
    if field("grant_type") != Some("urn:ietf:params:oauth:grant-type:token-exchange") {
        return sts_error("unsupported grant_type");
    }
    if field("requested_token_type") != Some("urn:ietf:params:oauth:token-type:access_token") {
        return sts_error("unsupported requested_token_type");
    }
    if field("subject_token_type") != Some(SUBJECT_TOKEN_TYPE) {
        return sts_error("unsupported subject_token_type");
    }
    if field("scope") != Some(REGISTRY_READ_SCOPES) {
        return sts_error("wrong scope");
    }
    let Some(subject) = field("subject_token").filter(|s| !s.is_empty()) else {
        return sts_error("missing subject_token");
    };
    fed.subject_tokens.lock().unwrap().push(subject.to_owned());
    if field("audience") != Some(WIF_AUDIENCE) {
        // What Google's STS says when the provider does not exist or does not match.
        return sts_error("The audience in ID Token does not match the expected audience.");
    }
    let n = fed.federated_issued.fetch_add(1, Ordering::SeqCst) + 1;
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "access_token": fed.federated_token(n),
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": fed.sts_lifetime_secs.load(Ordering::SeqCst),
        })
        .to_string(),
    )
}

pub async fn generate_access_token(
    State(fed): State<Arc<Federation>>,
    Path(target): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    fed.iam_authorizations
        .lock()
        .unwrap()
        .push(authorization.clone());
    let latest = fed.federated_issued.load(Ordering::SeqCst);
    if latest == 0 || authorization != format!("Bearer {}", fed.federated_token(latest)) {
        return iam_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    let fail_now = fed
        .iam_fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if fed.iam_forbidden.load(Ordering::SeqCst) || fail_now {
        return iam_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
        );
    }
    if target != format!("{CLIENT_EMAIL}:generateAccessToken") {
        return iam_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Unknown service account.",
        );
    }
    if headers.get(header::CONTENT_TYPE) != Some(&HeaderValue::from_static("application/json")) {
        return iam_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "content type");
    }
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return iam_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "not JSON");
    };
    let scopes: Vec<&str> = REGISTRY_READ_SCOPES.split(' ').collect();
    if request["scope"] != serde_json::json!(scopes) {
        return iam_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "wrong scope");
    }
    if request["lifetime"].as_str() != Some(fed.expected_lifetime.lock().unwrap().as_str()) {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "wrong lifetime",
        );
    }
    if request.as_object().map(|o| o.len()) != Some(2) {
        return iam_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "unknown field");
    }
    let n = fed.impersonated_issued.fetch_add(1, Ordering::SeqCst) + 1;
    let expire = unix_now() as i64 + fed.iam_lifetime_secs.load(Ordering::SeqCst);
    let expire_time = k8s_openapi::jiff::Timestamp::from_second(expire)
        .unwrap()
        .to_string();
    json_response(
        StatusCode::OK,
        serde_json::json!({ "accessToken": fed.impersonated_token(n), "expireTime": expire_time })
            .to_string(),
    )
}

/// Starts the loopback STS and IAM Credentials endpoints; returns them and their base URL
/// (`{base}/v1/token` is the STS token URL, `{base}` the IAM Credentials base URL).
pub async fn federation_endpoints() -> (Arc<Federation>, String) {
    let fed = Arc::new(Federation {
        sts_lifetime_secs: AtomicI64::new(3599),
        iam_lifetime_secs: AtomicI64::new(3600),
        expected_lifetime: Mutex::new("3600s".to_owned()),
        subject_tokens: Mutex::new(Vec::new()),
        exchanges: Mutex::new(Vec::new()),
        iam_authorizations: Mutex::new(Vec::new()),
        federated_issued: AtomicU64::new(0),
        impersonated_issued: AtomicU64::new(0),
        sts_canned: Mutex::new(VecDeque::new()),
        iam_forbidden: std::sync::atomic::AtomicBool::new(false),
        iam_fail_next: AtomicU64::new(0),
        token_tag: Mutex::new(String::new()),
    });
    let router = Router::new()
        .route("/v1/token", post(sts_handler))
        .route(
            "/v1/projects/-/serviceAccounts/{target}",
            post(generate_access_token),
        )
        .with_state(fed.clone());
    let addr = serve(router).await;
    (fed, format!("http://{addr}"))
}

/// The credential config `gcloud iam workload-identity-pools create-cred-config` writes, with its
/// endpoints on `base` and the subject token at `token_file`; impersonating [`CLIENT_EMAIL`] when
/// `lifetime_secs` is given.
pub fn credential_config(
    base: &str,
    audience: &str,
    token_file: &std::path::Path,
    lifetime_secs: Option<u64>,
) -> String {
    let mut v = serde_json::json!({
        "universe_domain": "googleapis.com",
        "type": "external_account",
        "audience": audience,
        "subject_token_type": SUBJECT_TOKEN_TYPE,
        "token_url": format!("{base}/v1/token"),
        "credential_source": {"file": token_file, "format": {"type": "text"}},
    });
    if let Some(secs) = lifetime_secs {
        v["service_account_impersonation_url"] =
            format!("{base}/v1/projects/-/serviceAccounts/{CLIENT_EMAIL}:generateAccessToken")
                .into();
        v["service_account_impersonation"] = serde_json::json!({ "token_lifetime_seconds": secs });
    }
    serde_json::to_string_pretty(&v).unwrap()
}
