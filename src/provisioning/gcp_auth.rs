//! Short-lived Google OAuth2 access tokens for pulling from Google Container Registry (`gcr.io`)
//! and Artifact Registry (`*-docker.pkg.dev`).
//!
//! Instead of copying a service-account JSON key into every namespace, the webhook can write a
//! pull Secret whose username is [`REGISTRY_USERNAME`] (`oauth2accesstoken`) and whose password
//! is an access token minted here. A token lives about an hour; the caller refreshes it at
//! [`AccessToken::refresh_at`] and rewrites the Secrets.
//!
//! Two [`TokenSource`]s:
//! - [`TokenSource::ServiceAccountKey`]: the OAuth2 JWT-bearer grant (RFC 7523). A JWT signed
//!   RS256 with the key's private key is exchanged at the key file's own `token_uri`.
//! - [`TokenSource::MetadataServer`]: GKE Workload Identity or a GCE VM. The metadata server
//!   hands out a token for the workload's own Google service account; no key exists anywhere.
//! - [`TokenSource::ExternalAccount`]: Workload Identity Federation on any cluster. The cluster's
//!   projected ServiceAccount token is exchanged at Google's STS, then optionally for an
//!   impersonated service account's token ([`ExternalAccount`]); no key exists anywhere either.
//!
//! [`TokenSource::fetch`] is the one interface the provisioner uses: it obtains one token
//! (one request, two for an impersonated external account) and reports any failure as a
//! [`TokenError`]; retrying, backoff and caching are the caller's ([`TokenError::is_retryable`]
//! helps).
//!
//! # Why not the `gcp_auth` crate
//! `gcp_auth` owns its HTTP stack, caches tokens itself and discovers the credential provider
//! from the environment. Here each registry entry has its own source, the provisioner decides
//! when to refresh (it must rewrite Secrets anyway), and the tests point the key file's
//! `token_uri` and the metadata base URL at loopback servers. So this module is small and explicit.
//!
//! # Why not the `google-cloud-auth` crate for external accounts
//! Google's official crate (1.x) reads `external_account` configs and reports a token's expiry,
//! and its URLs come from the config, so tests could reach loopback. But it brings a second HTTP
//! stack (`reqwest`) and `google-cloud-gax`, its default features build `aws-lc-rs` (a C
//! toolchain; see below), and it caches and refreshes tokens in the background behind
//! `access_token()`, while here the provisioner schedules each refresh from the real expiry and
//! must rewrite Secrets at that moment. The flow is two POSTs on the client this module already
//! has, so it lives in [`external_account`].
//!
//! # Why the JWT is signed with `ring` directly
//! `jsonwebtoken` 9.x is the last line with a `ring` backend, and it is affected by
//! CVE-2026-25537 / GHSA-h395-gr6q-cpjc, which is fixed only in 10.3.0. Since 10.0 its backends
//! are `aws-lc-rs`, which needs a C toolchain to build, or RustCrypto's `rsa`. `rsa` has
//! RUSTSEC-2023-0071 (Marvin timing side channel on private-key operations) with no fixed
//! release. This module needs one algorithm, RS256, and one operation, signing. So the signature
//! comes from `ring`'s constant-time `RsaKeyPair::sign` (RSASSA-PKCS1-v1_5 with SHA-256). `ring`
//! is the crypto rustls already uses in this binary, so no new crypto enters the build. The PEM
//! comes from `rustls-pki-types`. Only the JWS compact form is assembled here: three base64url
//! segments. The integration tests verify the signature with `jsonwebtoken`'s RustCrypto
//! backend, an independent implementation.
//!
//! # Secrets
//! The `Debug` and `Display` output of [`AccessToken`], [`ServiceAccountKey`] and [`TokenError`]
//! never contains the token, the private key or the signed assertion. Errors carry the endpoint,
//! the HTTP status and the OAuth `error` / `error_description` of the response (those are not
//! secret). Key-parsing errors never echo the key file.

mod external_account;

pub use external_account::{
    AUDIENCE_FORMAT, DEFAULT_IAM_CREDENTIALS_URL, DEFAULT_IMPERSONATED_LIFETIME,
    DEFAULT_STS_TOKEN_URL, ExternalAccount, Impersonation, JWT_SUBJECT_TOKEN_TYPE,
    MAX_IMPERSONATED_LIFETIME, MIN_IMPERSONATED_LIFETIME, SubjectTokenFormat, check_audience,
    check_endpoint_url,
};

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;
use serde_json::Value;

/// Scopes requested for registry pulls, space-separated as OAuth2 wants them.
///
/// Both are requested. Classic Google Container Registry keeps image layers in Cloud Storage
/// buckets and checks for a storage scope, `devstorage.read_only`. Artifact Registry, including
/// `gcr.io` repositories it now serves, checks for a `cloud-platform` scope, and
/// `cloud-platform.read-only` is enough to pull. Scopes only cap the token. The service
/// account's IAM roles still decide what can be read. The metadata server ignores requested
/// scopes under GKE Workload Identity, so only the service-account-key grant sends them.
pub const REGISTRY_READ_SCOPES: &str = "https://www.googleapis.com/auth/devstorage.read_only https://www.googleapis.com/auth/cloud-platform.read-only";

/// The registry username that goes with an access token as password.
pub const REGISTRY_USERNAME: &str = "oauth2accesstoken";

/// `token_uri` used when a key file has none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The metadata server's base URL when `GCE_METADATA_HOST` is not set.
pub const DEFAULT_METADATA_BASE_URL: &str = "http://metadata.google.internal";

/// Environment variable that overrides the metadata server's host (`host[:port]`), as in
/// Google's client libraries.
pub const METADATA_HOST_ENV: &str = "GCE_METADATA_HOST";

/// Lifetime of the signed JWT assertion (`exp - iat`): Google's maximum.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

/// A token is refreshed at least this long before it expires, when its lifetime allows it.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The largest accepted jitter in [`AccessToken::refresh_at`] (±10 %).
pub const MAX_REFRESH_JITTER: f64 = 0.1;

/// The OAuth2 grant type of RFC 7523, form-urlencoded.
const JWT_BEARER_GRANT_TYPE_FORM: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

const METADATA_FLAVOR: HeaderName = HeaderName::from_static("metadata-flavor");
const METADATA_FLAVOR_GOOGLE: &str = "Google";

/// Server-provided text kept in errors is cut to this many characters.
const MAX_ERROR_TEXT: usize = 300;

// ---------------------------------------------------------------------------------------------
// AccessToken

/// An OAuth2 access token. `Debug` and `Display` never print the token.
#[derive(Clone)]
pub struct AccessToken {
    token: String,
    issued_at: SystemTime,
    expires_at: SystemTime,
}

impl AccessToken {
    /// A token known to be valid from `issued_at` until `expires_at`. Fetched tokens are made by
    /// [`TokenSource::fetch`]; this is for callers that persist tokens and for test doubles.
    pub fn new(token: impl Into<String>, issued_at: SystemTime, expires_at: SystemTime) -> Self {
        Self {
            token: token.into(),
            issued_at,
            expires_at,
        }
    }

    /// The token itself: the registry password. Handle with care.
    pub fn secret(&self) -> &str {
        &self.token
    }

    /// When the request that obtained the token was sent. Fetched tokens count their lifetime
    /// from here, which errs on the early side.
    pub fn issued_at(&self) -> SystemTime {
        self.issued_at
    }

    /// When the token stops being valid.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// How long the token is still valid at `now`; zero once it has expired.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }

    /// When to refresh the token. Pure: the caller passes the jitter, for example
    /// [`random_jitter`].
    ///
    /// With `lifetime = expires_at - issued_at`:
    /// - The target is half the lifetime, scaled by `1 + jitter`. The jitter is clamped to
    ///   ±[`MAX_REFRESH_JITTER`], and a NaN or infinite jitter counts as 0. For a 3600 s token
    ///   this is 1620 s to 1980 s after `issued_at`.
    /// - The result is never later than [`REFRESH_MARGIN`] (5 min) before expiry.
    /// - A token that lives less than about 400 s cannot keep both rules without being
    ///   refreshed almost at once. Such a token, for example a metadata server's cached token
    ///   near its end, is refreshed at a quarter of its lifetime (also jittered), so it is still
    ///   refreshed before it expires and not in a tight loop.
    ///
    /// An `issued_at` at or after expiry gives `issued_at`: refresh now.
    pub fn refresh_at(&self, issued_at: SystemTime, jitter: f64) -> SystemTime {
        let lifetime = self
            .expires_at
            .duration_since(issued_at)
            .unwrap_or(Duration::ZERO);
        let jitter = if jitter.is_finite() {
            jitter.clamp(-MAX_REFRESH_JITTER, MAX_REFRESH_JITTER)
        } else {
            0.0
        };
        let half_life = lifetime.mul_f64(0.5 * (1.0 + jitter));
        let quarter_life = lifetime.mul_f64(0.25 * (1.0 + jitter));
        let latest = lifetime.saturating_sub(REFRESH_MARGIN);
        issued_at + half_life.min(latest).max(quarter_life)
    }
}

/// A uniformly random jitter in [-[`MAX_REFRESH_JITTER`], +[`MAX_REFRESH_JITTER`]] for
/// [`AccessToken::refresh_at`], from the operating system's random source. It returns 0 if
/// the OS has no randomness to give.
pub fn random_jitter() -> f64 {
    let mut bytes = [0u8; 8];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.0;
    }
    // 53 random bits give a uniform f64 in [0, 1).
    let unit = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    (unit * 2.0 - 1.0) * MAX_REFRESH_JITTER
}

fn unix_seconds(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::from(d.as_secs()),
        Err(e) => -i128::from(e.duration().as_secs()),
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("issued_at_unix", &unix_seconds(self.issued_at))
            .field("expires_at_unix", &unix_seconds(self.expires_at))
            .finish()
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "access token <redacted>, expires at unix time {}",
            unix_seconds(self.expires_at)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// ServiceAccountKey

/// A Google service-account key, as in the JSON key file (`"type": "service_account"`).
///
/// The private key is parsed and checked by [`ServiceAccountKey::parse`] and kept only as a
/// `ring` key pair. `Debug` prints `<redacted>` in its place.
#[derive(Clone)]
pub struct ServiceAccountKey {
    client_email: String,
    private_key_id: Option<String>,
    key_pair: Arc<RsaKeyPair>,
    token_uri: String,
}

#[derive(Deserialize)]
struct RawServiceAccountKey {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    token_uri: Option<String>,
}

impl ServiceAccountKey {
    /// Parses a JSON key file.
    ///
    /// Requires `"type": "service_account"`, a non-empty `client_email` and a `private_key`
    /// holding an RSA key in PEM (PKCS#8 as Google issues it, or PKCS#1) of at least 2048 bits.
    /// `private_key_id` is optional and becomes the JWT's `kid`. `token_uri` defaults to
    /// [`DEFAULT_TOKEN_URI`] and must be an `http://` or `https://` URL. Plain `http` is
    /// accepted for loopback test endpoints, but it exposes the signed assertion, which can mint
    /// tokens for an hour, so it is logged as a warning for any other host.
    ///
    /// Errors never contain the key file's contents. JSON errors give only their kind and
    /// position.
    pub fn parse(bytes: &[u8]) -> Result<Self, TokenError> {
        let raw: RawServiceAccountKey =
            serde_json::from_slice(bytes).map_err(|e| TokenError::InvalidKey(json_error(&e)))?;

        match raw.kind.as_deref() {
            Some("service_account") => {}
            Some(other) => {
                return Err(TokenError::InvalidKey(format!(
                    "\"type\" is {:?}, expected \"service_account\" (only service-account keys \
                     are supported)",
                    clip(other, 40)
                )));
            }
            None => return Err(TokenError::InvalidKey("missing field \"type\"".into())),
        }

        let client_email = non_empty(raw.client_email)
            .ok_or_else(|| TokenError::InvalidKey("missing field \"client_email\"".into()))?;
        let private_key = non_empty(raw.private_key)
            .ok_or_else(|| TokenError::InvalidKey("missing field \"private_key\"".into()))?;
        let key_pair = rsa_key_pair_from_pem(private_key.as_bytes())?;
        drop(private_key);

        let token_uri = non_empty(raw.token_uri).unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned());
        let uri = parse_http_url(&token_uri).map_err(|reason| {
            TokenError::InvalidKey(format!(
                "\"token_uri\" {:?} is not usable: {reason}",
                clip(&token_uri, 200)
            ))
        })?;
        if uri.scheme_str() == Some("http") && !is_loopback_host(uri.host().unwrap_or_default()) {
            tracing::warn!(
                token_uri = %token_uri,
                client_email = %client_email,
                "service-account key uses a plain-http token_uri: the signed assertion would \
                 travel unencrypted"
            );
        }

        Ok(Self {
            client_email,
            private_key_id: non_empty(raw.private_key_id),
            key_pair: Arc::new(key_pair),
            token_uri,
        })
    }

    /// The service account's e-mail address (the JWT's `iss`).
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// The key's id (the JWT header's `kid`), if the key file has one.
    pub fn private_key_id(&self) -> Option<&str> {
        self.private_key_id.as_deref()
    }

    /// Where the assertion is exchanged for a token (also the JWT's `aud`).
    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The signed JWT assertion for the token request: RS256, `iat = now`,
    /// `exp = now + ASSERTION_LIFETIME`.
    fn signed_assertion(&self, now: SystemTime) -> Result<String, TokenError> {
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| TokenError::Signing {
                client_email: self.client_email.clone(),
                reason: "the system clock is before 1970".into(),
            })?
            .as_secs();
        let mut header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
        if let Some(kid) = &self.private_key_id {
            header["kid"] = Value::String(kid.clone());
        }
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": REGISTRY_READ_SCOPES,
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME.as_secs(),
        });
        let mut jws = String::with_capacity(1024);
        jws.push_str(&URL_SAFE_NO_PAD.encode(header.to_string()));
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));

        let mut signature = vec![0u8; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                jws.as_bytes(),
                &mut signature,
            )
            .map_err(|_| TokenError::Signing {
                client_email: self.client_email.clone(),
                reason: "RSA signing failed".into(),
            })?;
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(&signature));
        Ok(jws)
    }
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &"<redacted>")
            .field("token_uri", &self.token_uri)
            .finish()
    }
}

fn rsa_key_pair_from_pem(pem: &[u8]) -> Result<RsaKeyPair, TokenError> {
    // Map errors to fixed texts: a PEM parser's error may quote a line of its input.
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
        TokenError::InvalidKey("\"private_key\" does not hold a PEM-encoded private key".into())
    })?;
    let parsed = match &der {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => {
            return Err(TokenError::InvalidKey(
                "\"private_key\" is not an RSA key (service-account keys are RSA)".into(),
            ));
        }
    };
    // `KeyRejected` only names a category ("InvalidEncoding", "TooSmall", ...).
    parsed.map_err(|e| {
        TokenError::InvalidKey(format!("\"private_key\" is not a usable RSA key ({e})"))
    })
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// A serde_json error without any quoted input: kind and position only.
fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "not valid JSON",
        Category::Eof => "truncated JSON",
        Category::Data => "a field has the wrong JSON type (expected strings in an object)",
        Category::Io => "unreadable",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

// ---------------------------------------------------------------------------------------------
// TokenSource

/// Where access tokens come from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// JWT-bearer grant (RFC 7523) signed RS256 with the key, sent to the key file's own
    /// `token_uri`, asking for [`REGISTRY_READ_SCOPES`].
    ServiceAccountKey(ServiceAccountKey),
    /// GKE Workload Identity / GCE: the metadata server's token for the workload's own service
    /// account. The response must carry `Metadata-Flavor: Google`.
    MetadataServer {
        /// `http://metadata.google.internal` by default, or `http://$GCE_METADATA_HOST`.
        base_url: String,
        /// `default` for the workload's own account, or an e-mail address.
        service_account: String,
    },
    /// Workload Identity Federation: the subject token file exchanged at STS, then optionally
    /// `generateAccessToken` for a service account.
    ExternalAccount(ExternalAccount),
}

impl TokenSource {
    /// The metadata-server source for the `default` service account. Its base URL is
    /// `http://$GCE_METADATA_HOST` when that variable is set, as in Google's client libraries,
    /// and [`DEFAULT_METADATA_BASE_URL`] otherwise.
    pub fn metadata_server_from_env() -> Self {
        let host = std::env::var(METADATA_HOST_ENV).ok();
        TokenSource::MetadataServer {
            base_url: metadata_base_url(host.as_deref()),
            service_account: "default".to_owned(),
        }
    }

    /// Obtains one token with one request, without retrying. A failure says which endpoint
    /// failed and how (see [`TokenError`]).
    pub async fn fetch(&self, http: &HttpClient) -> Result<AccessToken, TokenError> {
        match self {
            TokenSource::ServiceAccountKey(key) => fetch_with_key(key, http).await,
            TokenSource::MetadataServer {
                base_url,
                service_account,
            } => fetch_from_metadata(base_url, service_account, http).await,
            TokenSource::ExternalAccount(account) => account.fetch(http).await,
        }
    }
}

fn metadata_base_url(host_env: Option<&str>) -> String {
    match host_env.map(str::trim).filter(|h| !h.is_empty()) {
        None => DEFAULT_METADATA_BASE_URL.to_owned(),
        Some(h) if h.starts_with("http://") || h.starts_with("https://") => {
            h.trim_end_matches('/').to_owned()
        }
        Some(h) => format!("http://{}", h.trim_end_matches('/')),
    }
}

async fn fetch_with_key(
    key: &ServiceAccountKey,
    http: &HttpClient,
) -> Result<AccessToken, TokenError> {
    let endpoint = key.token_uri.clone();
    let uri = parse_http_url(&endpoint).map_err(|reason| TokenError::InvalidUrl {
        url: endpoint.clone(),
        reason,
    })?;
    let issued_at = SystemTime::now();
    let assertion = key.signed_assertion(issued_at)?;
    // The assertion is base64url segments joined by '.': all unreserved characters, so it needs
    // no percent-encoding.
    let body = format!("grant_type={JWT_BEARER_GRANT_TYPE_FORM}&assertion={assertion}");
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| TokenError::InvalidUrl {
            url: endpoint.clone(),
            reason: e.to_string(),
        })?;
    let response = http.send(request, &endpoint).await?;
    token_from_response(&endpoint, response, issued_at)
}

async fn fetch_from_metadata(
    base_url: &str,
    service_account: &str,
    http: &HttpClient,
) -> Result<AccessToken, TokenError> {
    if service_account.is_empty()
        || !service_account
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '-'))
    {
        return Err(TokenError::InvalidUrl {
            url: base_url.to_owned(),
            reason: format!(
                "service account {:?} must be \"default\" or an e-mail address",
                clip(service_account, 100)
            ),
        });
    }
    let endpoint = format!(
        "{}/computeMetadata/v1/instance/service-accounts/{service_account}/token",
        base_url.trim_end_matches('/')
    );
    let uri = parse_http_url(&endpoint).map_err(|reason| TokenError::InvalidUrl {
        url: endpoint.clone(),
        reason,
    })?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(METADATA_FLAVOR, METADATA_FLAVOR_GOOGLE)
        .header(ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| TokenError::InvalidUrl {
            url: endpoint.clone(),
            reason: e.to_string(),
        })?;
    let issued_at = SystemTime::now();
    let response = http.send(request, &endpoint).await?;
    // Checked before the status: an error page from something else is not the metadata
    // server's answer either.
    let flavor_ok = response
        .headers
        .get(METADATA_FLAVOR)
        .is_some_and(|v| v.as_bytes() == METADATA_FLAVOR_GOOGLE.as_bytes());
    if !flavor_ok {
        return Err(TokenError::NotMetadataServer { endpoint });
    }
    token_from_response(&endpoint, response, issued_at)
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<Value>,
    token_type: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<Value>,
    error_description: Option<String>,
}

fn token_from_response(
    endpoint: &str,
    response: RawResponse,
    issued_at: SystemTime,
) -> Result<AccessToken, TokenError> {
    if !response.status.is_success() {
        return Err(status_error(endpoint, response.status, &response.body));
    }
    let malformed = |reason: String| TokenError::MalformedResponse {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let parsed: TokenResponse =
        serde_json::from_slice(&response.body).map_err(|e| malformed(json_error(&e)))?;
    let token = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("\"access_token\" is missing or empty".into()))?;
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(malformed(
            "\"access_token\" contains whitespace or control characters".into(),
        ));
    }
    if let Some(kind) = parsed.token_type.as_deref()
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(malformed(format!(
            "\"token_type\" is {:?}, expected \"Bearer\"",
            clip(kind, 40)
        )));
    }
    let seconds = match parsed.expires_in {
        Some(Value::Number(n)) => n.as_f64(),
        None => return Err(malformed("\"expires_in\" is missing".into())),
        Some(_) => None,
    }
    .ok_or_else(|| malformed("\"expires_in\" is not a number".into()))?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(malformed(format!(
            "\"expires_in\" is {seconds}, expected a positive number of seconds"
        )));
    }
    let expires_at = Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|d| issued_at.checked_add(d))
        .ok_or_else(|| malformed(format!("\"expires_in\" {seconds} is out of range")))?;
    Ok(AccessToken::new(token, issued_at, expires_at))
}

fn status_error(endpoint: &str, status: StatusCode, body: &[u8]) -> TokenError {
    let (mut error, mut error_description, mut body_text) = (None, None, None);
    match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(parsed) => {
            match parsed.error {
                // OAuth2 (RFC 6749 §5.2): {"error": "invalid_grant", "error_description": "..."}
                Some(Value::String(code)) => error = Some(code),
                // Google API style: {"error": {"code": 403, "status": "...", "message": "..."}}
                Some(Value::Object(obj)) => {
                    error = obj.get("status").and_then(Value::as_str).map(str::to_owned);
                    error_description = obj
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                }
                _ => {}
            }
            if let Some(d) = parsed.error_description {
                error_description = Some(d);
            }
        }
        // Not JSON: the metadata server answers errors in plain text, and that text says why
        // (for example the IAM permission Workload Identity lacks).
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            if !text.trim().is_empty() {
                body_text = Some(clip(text.trim(), MAX_ERROR_TEXT));
            }
        }
    }
    TokenError::HttpStatus {
        endpoint: endpoint.to_owned(),
        status: status.as_u16(),
        error: error.map(|e| clip(&e, 100)),
        error_description: error_description.map(|d| clip(&d, MAX_ERROR_TEXT)),
        body: body_text,
    }
}

// ---------------------------------------------------------------------------------------------
// HttpClient

/// Default bound on one request, from connecting to the last byte of the response.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Responses larger than this are refused. Token responses are well under 4 KiB.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A small HTTP(S) client for token endpoints: hyper-util's pooled client over hyper-rustls,
/// with the system's root certificates, the `ring` provider and HTTP/1.1 only. Each request is
/// bounded by a timeout (default [`DEFAULT_HTTP_TIMEOUT`]), and response bodies by
/// [`MAX_RESPONSE_BYTES`]. Both `https://` and `http://` URLs work. The metadata server and
/// loopback test endpoints use plain HTTP.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    max_body: usize,
}

struct RawResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl HttpClient {
    /// Builds the client and loads the system's root certificates (for example
    /// `/etc/ssl/certs` in the distroless image). Fails if none can be loaded.
    pub fn new() -> Result<Self, TokenError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(DEFAULT_HTTP_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| {
                TokenError::HttpClient(format!("cannot load the system's root certificates: {e}"))
            })?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Self {
            client,
            timeout: DEFAULT_HTTP_TIMEOUT,
            max_body: MAX_RESPONSE_BYTES,
        })
    }

    /// The same client with another per-request timeout. The TCP connect timeout stays at
    /// [`DEFAULT_HTTP_TIMEOUT`], but this timeout bounds the connect too.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        endpoint: &str,
    ) -> Result<RawResponse, TokenError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| TokenError::Request {
                    endpoint: endpoint.to_owned(),
                    reason: error_chain(&e),
                })?;
            let (parts, body) = response.into_parts();
            let too_large = || TokenError::ResponseTooLarge {
                endpoint: endpoint.to_owned(),
                limit: self.max_body,
            };
            let declared = parts
                .headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > self.max_body as u64) {
                return Err(too_large());
            }
            let body = Limited::new(body, self.max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<LengthLimitError>() {
                        too_large()
                    } else {
                        TokenError::Request {
                            endpoint: endpoint.to_owned(),
                            reason: format!("reading the response body: {}", error_chain(&*e)),
                        }
                    }
                })?
                .to_bytes();
            Ok(RawResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| TokenError::Timeout {
                endpoint: endpoint.to_owned(),
                after: self.timeout,
            })?
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// An error with its sources, each said once.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Parses an absolute `http://` or `https://` URL with a host.
fn parse_http_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("scheme {other:?} is not http or https")),
        None => return Err("not an absolute URL".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(uri)
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Cuts server- or file-provided text for an error message and drops control characters (no
/// log injection through newlines or escape sequences).
pub(crate) fn clip(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect();
    if text.chars().filter(|c| !c.is_control()).count() > max_chars {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// TokenError

/// Why a token could not be obtained, or a key file not used. Messages name the endpoint and,
/// for HTTP errors, the status and the OAuth `error` / `error_description` the server sent.
/// They never contain an access token, a private key or a signed assertion.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The service-account key file is unusable.
    #[error("invalid service-account key: {0}")]
    InvalidKey(String),
    /// A token URI or metadata URL cannot be used.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The HTTP client could not be built (for example: no root certificates on the system).
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    /// The JWT assertion could not be signed.
    #[error("cannot sign the JWT assertion for {client_email}: {reason}")]
    Signing {
        client_email: String,
        reason: String,
    },
    /// No response: connection refused, DNS, TLS, reset, ...
    #[error("request to {endpoint} failed: {reason}")]
    Request { endpoint: String, reason: String },
    /// No complete response within the client's timeout.
    #[error("request to {endpoint} timed out after {:?}", .after)]
    Timeout { endpoint: String, after: Duration },
    /// The response body exceeded the client's size limit.
    #[error("response from {endpoint} is larger than {limit} bytes")]
    ResponseTooLarge { endpoint: String, limit: usize },
    /// A non-2xx answer. `error` / `error_description` come from an OAuth2 (or Google API)
    /// JSON error body. `body` is the start of a non-JSON body, such as the metadata server's
    /// plain-text errors.
    #[error(
        "{endpoint} answered HTTP {status}{}",
        status_detail(.error, .error_description, .body)
    )]
    HttpStatus {
        endpoint: String,
        status: u16,
        error: Option<String>,
        error_description: Option<String>,
        body: Option<String>,
    },
    /// The answer to a metadata request did not carry `Metadata-Flavor: Google`.
    #[error(
        "{endpoint} did not answer as a GCE metadata server (no \"Metadata-Flavor: Google\" \
         response header); its response was ignored"
    )]
    NotMetadataServer { endpoint: String },
    /// A 2xx answer that is not a usable token response.
    #[error("malformed token response from {endpoint}: {reason}")]
    MalformedResponse { endpoint: String, reason: String },
    /// The `external_account` credential config is unusable.
    #[error("invalid external_account credential config: {0}")]
    InvalidCredentialConfig(String),
    /// The subject token file cannot be read or holds no token (the kubelet may not have
    /// written it yet).
    #[error("cannot use the subject token file {}: {reason}", .path.display())]
    SubjectToken { path: PathBuf, reason: String },
    /// STS refused or failed the token exchange.
    #[error("token exchange for audience {audience} failed: {source}")]
    Exchange {
        audience: String,
        source: Box<TokenError>,
    },
    /// IAM Credentials refused or failed to mint the service account's token.
    #[error(
        "impersonating {service_account} with the federated token of audience {audience} \
         failed: {source}"
    )]
    Impersonation {
        service_account: String,
        audience: String,
        source: Box<TokenError>,
    },
}

fn status_detail(
    error: &Option<String>,
    error_description: &Option<String>,
    body: &Option<String>,
) -> String {
    match (error, error_description, body) {
        (Some(e), Some(d), _) => format!(": {e}: {d}"),
        (Some(e), None, _) => format!(": {e}"),
        (None, Some(d), _) => format!(": {d}"),
        (None, None, Some(b)) => format!(": {b}"),
        (None, None, None) => String::new(),
    }
}

impl TokenError {
    /// Whether trying again later may succeed: no response, a timeout, HTTP 408, 429 or 5xx.
    /// Key, URL and other 4xx errors need a configuration change.
    /// A missing subject token file is retryable: the kubelet writes it.
    pub fn is_retryable(&self) -> bool {
        match self {
            TokenError::Request { .. }
            | TokenError::Timeout { .. }
            | TokenError::SubjectToken { .. } => true,
            TokenError::Exchange { source, .. } | TokenError::Impersonation { source, .. } => {
                source.is_retryable()
            }
            TokenError::HttpStatus { status, .. } => {
                *status == 408 || *status == 429 || (500..=599).contains(status)
            }
            _ => false,
        }
    }

    /// The HTTP status, for [`TokenError::HttpStatus`].
    pub fn http_status(&self) -> Option<u16> {
        match self {
            TokenError::HttpStatus { status, .. } => Some(*status),
            TokenError::Exchange { source, .. } | TokenError::Impersonation { source, .. } => {
                source.http_status()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_base_url_follows_gce_metadata_host() {
        assert_eq!(metadata_base_url(None), "http://metadata.google.internal");
        assert_eq!(
            metadata_base_url(Some("  ")),
            "http://metadata.google.internal"
        );
        assert_eq!(
            metadata_base_url(Some("169.254.169.254")),
            "http://169.254.169.254"
        );
        assert_eq!(
            metadata_base_url(Some("127.0.0.1:8080/")),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            metadata_base_url(Some("https://md.example:8443/")),
            "https://md.example:8443"
        );
    }

    #[test]
    fn urls_must_be_absolute_http_or_https() {
        assert!(parse_http_url("https://oauth2.googleapis.com/token").is_ok());
        assert!(parse_http_url("http://127.0.0.1:1234/token").is_ok());
        assert!(parse_http_url("ftp://example.com/token").is_err());
        assert!(parse_http_url("/token").is_err());
        assert!(parse_http_url("not a url").is_err());
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("[::1]"));
        assert!(is_loopback_host("LOCALHOST"));
        assert!(!is_loopback_host("metadata.google.internal"));
        assert!(!is_loopback_host("10.0.0.1"));
    }

    #[test]
    fn clip_drops_control_characters_and_cuts() {
        assert_eq!(clip("a\nb\x1b[31mc", 10), "ab[31mc");
        assert_eq!(clip("abcdef", 3), "abc…");
    }

    #[test]
    fn random_jitter_stays_in_range() {
        for _ in 0..1000 {
            let j = random_jitter();
            assert!(
                (-MAX_REFRESH_JITTER..=MAX_REFRESH_JITTER).contains(&j),
                "{j}"
            );
        }
    }

    #[test]
    fn status_detail_prefers_oauth_fields() {
        let e = status_error(
            "http://x/token",
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        );
        assert_eq!(
            e.to_string(),
            "http://x/token answered HTTP 400: invalid_grant: Invalid JWT Signature."
        );
        let e = status_error(
            "http://x/token",
            StatusCode::FORBIDDEN,
            br#"{"error":{"code":403,"status":"PERMISSION_DENIED","message":"denied"}}"#,
        );
        assert_eq!(
            e.to_string(),
            "http://x/token answered HTTP 403: PERMISSION_DENIED: denied"
        );
        let e = status_error(
            "http://md/token",
            StatusCode::NOT_FOUND,
            b"Unable to generate access token\n",
        );
        assert_eq!(
            e.to_string(),
            "http://md/token answered HTTP 404: Unable to generate access token"
        );
        assert!(!e.is_retryable());
        assert!(status_error("e", StatusCode::SERVICE_UNAVAILABLE, b"").is_retryable());
    }
}
