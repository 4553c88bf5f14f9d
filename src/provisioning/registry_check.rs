//! One registry check: the Docker Registry v2 authentication handshake with a credential, as a
//! container runtime does it before a pull.
//!
//! `GET https://HOST/v2/` without credentials. A `401` names the scheme in `WWW-Authenticate`
//! (parsed with the `http-auth` crate): for `Bearer realm=…,service=…,scope=…` a token is asked of
//! the realm with the credential as basic auth and then shown to the registry; for `Basic` the
//! request is repeated with basic auth. When a repository is known (the one a Pod pulls), the token
//! is asked for `repository:REPO:pull` and the check ends at `GET /v2/REPO/tags/list?n=1`, so a
//! credential that is valid but may not read that repository shows as rejected where the registry
//! says so.
//!
//! What the check cannot tell apart: some registries answer a repository that does not exist and
//! one the credential may not read alike (404, or 401/403), and a registry that needs no login
//! accepts any credential.
//!
//! Credentials never leave this module but in the `Authorization` header, and only over HTTPS. The
//! registry's own error text is kept (clipped, control characters dropped); a 2xx body (which
//! holds the token) never is.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;

use crate::provisioning::gcp_auth::{clip, error_chain};

/// Bound on a whole check (every request of the handshake).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Registry and token answers are small; a larger one is not read.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The registry's error text as kept for the log, the metric's reader and the Pod warning.
const MAX_DETAIL_CHARS: usize = 200;
/// A registry's text holding this many bytes of a credential in a row is not shown.
const QUOTE_WINDOW: usize = 16;
/// Where Docker Hub's v2 API is, for images named `docker.io/...`.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckStatus {
    /// The registry accepted the credential.
    Ok,
    /// The registry (or its token server) refused the credential: 401 or 403.
    Rejected,
    /// No answer about the credential: network or TLS error, timeout, 5xx, not a registry.
    Unreachable,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::Unreachable => "unreachable",
        }
    }
}

/// What a check found: the status and, for `rejected` and `unreachable`, why (`403: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub status: CheckStatus,
    pub detail: String,
    /// Set when a `rejected` concerns one repository only: the registry refused the credential
    /// access to it (403), which says nothing of the host's other repositories.
    pub repository: Option<String>,
}

impl CheckResult {
    fn ok(detail: impl Into<String>) -> Self {
        Self {
            status: CheckStatus::Ok,
            detail: detail.into(),
            repository: None,
        }
    }

    fn rejected(detail: impl Into<String>) -> Self {
        Self {
            status: CheckStatus::Rejected,
            detail: detail.into(),
            repository: None,
        }
    }

    fn unreachable(detail: impl Into<String>) -> Self {
        Self {
            status: CheckStatus::Unreachable,
            detail: detail.into(),
            repository: None,
        }
    }
}

/// A username and password for one registry host. `Debug` shows the username only.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicLogin {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for BasicLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicLogin")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl BasicLogin {
    fn header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckClientError {
    #[error("cannot read the CA bundle: {0}")]
    CaBundle(String),
    #[error("cannot build the TLS client: {0}")]
    Tls(String),
}

/// An HTTPS-only client for registry checks: the system's roots, or a CA bundle of the entry's own.
#[derive(Clone)]
pub struct CheckClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

impl fmt::Debug for CheckClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CheckClient {
    /// With `ca_pem`, only certificates chaining to those CAs are trusted; without, the system's.
    pub fn new(ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Self, CheckClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match ca_pem {
            None => builder
                .with_provider_and_native_roots(provider)
                .map_err(|e| CheckClientError::Tls(e.to_string()))?,
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| CheckClientError::CaBundle(e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| CheckClientError::CaBundle(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(CheckClientError::CaBundle(
                        "no PEM certificate in it".to_owned(),
                    ));
                }
                let tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| CheckClientError::Tls(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                builder.with_tls_config(tls)
            }
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = builder.https_only().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(https);
        Ok(Self { client, timeout })
    }

    async fn get(&self, url: &Uri, authorization: Option<&str>) -> Result<Answer, String> {
        let mut request = Request::get(url.clone());
        if let Some(value) = authorization {
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| "the credential cannot be sent as a header")?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let request = request
            .header("user-agent", "pullsecret-injector")
            .body(Empty::new())
            .map_err(|e| format!("invalid request: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| error_chain(&e))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {}", error_chain(&*e)))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            challenge: parts
                .headers
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
        })
    }
}

struct Answer {
    status: StatusCode,
    challenge: Option<String>,
    body: Bytes,
}

/// The `host[:port]` whose `/v2/` API serves images named with `domain`.
pub fn api_host(domain: &str) -> &str {
    if domain == "docker.io" {
        DOCKER_HUB_API_HOST
    } else {
        domain
    }
}

/// Runs the handshake against `host` with `login`, within the client's timeout. `repository`,
/// when known, is the one checked for pull access.
pub async fn check(
    client: &CheckClient,
    host: &str,
    repository: Option<&str>,
    login: &BasicLogin,
) -> CheckResult {
    match tokio::time::timeout(client.timeout, handshake(client, host, repository, login)).await {
        Ok(result) => redact(result, login),
        Err(_) => CheckResult::unreachable(format!("no answer within {:?}", client.timeout)),
    }
}

async fn handshake(
    client: &CheckClient,
    host: &str,
    repository: Option<&str>,
    login: &BasicLogin,
) -> CheckResult {
    let base = match format!("https://{}/v2/", api_host(host)).parse::<Uri>() {
        Ok(uri) => uri,
        Err(_) => return CheckResult::unreachable("not a usable host name"),
    };
    let target = match repository {
        Some(repo) => {
            match format!("https://{}/v2/{repo}/tags/list?n=1", api_host(host)).parse::<Uri>() {
                Ok(uri) => uri,
                Err(_) => return CheckResult::unreachable("not a usable repository name"),
            }
        }
        None => base.clone(),
    };
    let first = match client.get(&base, None).await {
        Ok(answer) => answer,
        Err(reason) => return CheckResult::unreachable(reason),
    };
    if first.status.is_success() {
        // The registry asks for no login at all: any credential "works".
        return CheckResult::ok("the registry needs no login");
    }
    if first.status != StatusCode::UNAUTHORIZED {
        // No credential was sent yet: a 403 here is a proxy, a firewall or an allow-list, not the
        // registry refusing the credential.
        return CheckResult::unreachable(format!(
            "/v2/ answered {} before any credential was sent",
            status_detail(&first, &[])
        ));
    }
    let challenge = first.challenge.as_deref().map(read_challenge);
    let mut issued = String::new();
    let authorization = match challenge {
        Some(Some(Challenge::Basic)) => login.header(),
        Some(Some(Challenge::Bearer {
            realm,
            service,
            scope,
        })) => {
            let scope = match repository {
                Some(repo) => Some(format!("repository:{repo}:pull")),
                None => scope,
            };
            match token(client, &realm, service.as_deref(), scope.as_deref(), login).await {
                Ok(token) => {
                    issued = token;
                    format!("Bearer {issued}")
                }
                Err(result) => return scoped(result, repository),
            }
        }
        Some(None) | None => {
            return CheckResult::unreachable(
                "401 without a Basic or Bearer challenge the check can answer",
            );
        }
    };
    match client.get(&target, Some(&authorization)).await {
        Ok(answer) if answer.status.is_success() => CheckResult::ok(""),
        Ok(answer) => scoped(
            other_status(target.path(), &answer, &[&login.password, &issued]),
            repository,
        ),
        Err(reason) => CheckResult::unreachable(reason),
    }
}

/// A 403 asked about one repository is about that repository only; a 401 is about the credential.
fn scoped(mut result: CheckResult, repository: Option<&str>) -> CheckResult {
    if result.status == CheckStatus::Rejected && result.detail.starts_with("403") {
        result.repository = repository.map(str::to_owned);
    }
    result
}

/// `CODE` or `CODE: the registry's reason`, the reason dropped if it quotes one of `secrets`.
fn status_detail(answer: &Answer, secrets: &[&str]) -> String {
    let code = answer.status.as_u16();
    let text = error_text(&answer.body, secrets);
    if text.is_empty() {
        format!("{code}")
    } else {
        format!("{code}: {text}")
    }
}

/// A 401/403 is the registry refusing the credential; 404 on a repository is ambiguous (see the
/// module notes) and is not blamed on the credential; anything else says nothing about it.
fn other_status(path: &str, answer: &Answer, secrets: &[&str]) -> CheckResult {
    let code = answer.status.as_u16();
    let detail = status_detail(answer, secrets);
    match code {
        401 | 403 => CheckResult::rejected(detail),
        404 if path != "/v2/" => CheckResult::ok(format!(
            "credentials accepted; the repository answered {detail}"
        )),
        _ => CheckResult::unreachable(format!("{path} answered {detail}")),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// The first Basic or Bearer challenge of a `WWW-Authenticate` value (Bearer preferred).
fn read_challenge(value: &str) -> Option<Challenge> {
    let challenges = http_auth::parse_challenges(value).ok()?;
    let param = |challenge: &http_auth::ChallengeRef<'_>, name: &str| {
        challenge
            .params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.to_unescaped())
    };
    let bearer = challenges
        .iter()
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|c| {
            Some(Challenge::Bearer {
                realm: param(c, "realm")?,
                service: param(c, "service"),
                scope: param(c, "scope"),
            })
        });
    bearer.or_else(|| {
        challenges
            .iter()
            .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
            .then_some(Challenge::Basic)
    })
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Asks the realm for a token with the credential as basic auth (the distribution token protocol).
async fn token(
    client: &CheckClient,
    realm: &str,
    service: Option<&str>,
    scope: Option<&str>,
    login: &BasicLogin,
) -> Result<String, CheckResult> {
    let mut url = realm.to_owned();
    let query = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(service) = service {
            query.append_pair("service", service);
        }
        if let Some(scope) = scope {
            query.append_pair("scope", scope);
        }
        query.finish()
    };
    if !query.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&query);
    }
    let uri = url
        .parse::<Uri>()
        .ok()
        .filter(|uri| uri.scheme_str() == Some("https") && uri.host().is_some())
        .ok_or_else(|| {
            CheckResult::unreachable("the token realm is not an https:// URL; no credential sent")
        })?;
    let answer = client
        .get(&uri, Some(&login.header()))
        .await
        .map_err(|reason| CheckResult::unreachable(format!("token server: {reason}")))?;
    let code = answer.status.as_u16();
    if !answer.status.is_success() {
        let detail = status_detail(&answer, &[&login.password]);
        return Err(match code {
            401 | 403 => CheckResult::rejected(detail),
            _ => CheckResult::unreachable(format!("token server answered {detail}")),
        });
    }
    let parsed: TokenAnswer = serde_json::from_slice(&answer.body).map_err(|_| {
        CheckResult::unreachable("the token server's answer is not a token response")
    })?;
    parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| CheckResult::unreachable("the token server's answer has no token"))
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The registry's reason from an error body: the distribution `errors[0].message` (or its code),
/// a token server's `details` / OAuth `error_description`, or the start of a plain-text body.
fn error_text(body: &[u8], secrets: &[&str]) -> String {
    if secrets.iter().any(|secret| quotes(body, secret.as_bytes())) {
        return "(the registry's text is not shown: it quotes the credential)".to_owned();
    }
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => parsed
            .errors
            .into_iter()
            .find_map(|e| e.message.filter(|m| !m.is_empty()).or(e.code))
            .or(parsed.details)
            .or(parsed.error_description)
            .or(parsed.message)
            .or(parsed.error.and_then(|e| e.as_str().map(str::to_owned)))
            .unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    clip(text.trim(), MAX_DETAIL_CHARS)
}

/// Whether `body` holds `secret` or any run of [`QUOTE_WINDOW`] bytes of it: a registry could echo a
/// credential whole, or the start of a long one (a JSON key, a token).
fn quotes(body: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return false;
    }
    if secret.len() <= QUOTE_WINDOW {
        return body.windows(secret.len()).any(|w| w == secret);
    }
    let pieces: std::collections::HashSet<&[u8]> = secret.windows(QUOTE_WINDOW).collect();
    body.windows(QUOTE_WINDOW).any(|w| pieces.contains(w))
}

/// Never keeps a detail that quotes the credential (a registry could echo it).
fn redact(mut result: CheckResult, login: &BasicLogin) -> CheckResult {
    if !login.password.is_empty() && result.detail.contains(&login.password) {
        result.detail = "(the registry's text is not shown: it quotes the credential)".to_owned();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_with_their_parameters() {
        let cases = [
            (
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#,
                Some(Challenge::Bearer {
                    realm: "https://auth.example.com/token".into(),
                    service: Some("registry.example.com".into()),
                    scope: Some("repository:a/b:pull".into()),
                }),
            ),
            (
                r#"bearer REALM="https://t.example.com/""#,
                Some(Challenge::Bearer {
                    realm: "https://t.example.com/".into(),
                    service: None,
                    scope: None,
                }),
            ),
            (r#"Basic realm="Registry Realm""#, Some(Challenge::Basic)),
            (
                r#"Basic realm="r", Bearer realm="https://t.example.com/""#,
                Some(Challenge::Bearer {
                    realm: "https://t.example.com/".into(),
                    service: None,
                    scope: None,
                }),
            ),
            // A Bearer challenge without a realm cannot be answered; Basic is used when offered.
            (
                r#"Bearer service="x", Basic realm="r""#,
                Some(Challenge::Basic),
            ),
            (r#"Digest realm="r", nonce="n""#, None),
            ("not a challenge ,,, =", None),
        ];
        for (header, expected) in cases {
            assert_eq!(read_challenge(header), expected, "{header}");
        }
    }

    #[test]
    fn error_text_prefers_the_registry_message_and_drops_control_characters() {
        let cases: [(&[u8], &str); 6] = [
            (
                br#"{"errors":[{"code":"DENIED","message":"Permission \"artifactregistry.repositories.downloadArtifacts\" denied"}]}"#,
                "Permission \"artifactregistry.repositories.downloadArtifacts\" denied",
            ),
            (
                br#"{"errors":[{"code":"UNAUTHORIZED","message":""}]}"#,
                "UNAUTHORIZED",
            ),
            (br#"{"details":"incorrect username or password"}"#, "incorrect username or password"),
            (br#"{"error":"invalid_grant","error_description":"bad key"}"#, "bad key"),
            (b"plain\ntext\x1b[31m", "plaintext[31m"),
            (b"", ""),
        ];
        for (body, expected) in cases {
            assert_eq!(error_text(body, &[]), expected);
        }
        assert_eq!(
            error_text("x".repeat(500).as_bytes(), &[]).chars().count(),
            201
        );
    }

    #[test]
    fn statuses_are_classified_by_what_they_say_about_the_credential() {
        let answer = |status: u16, body: &'static str| Answer {
            status: StatusCode::from_u16(status).expect("status"),
            challenge: None,
            body: Bytes::from_static(body.as_bytes()),
        };
        let cases = [
            (401, "/v2/a/tags/list", CheckStatus::Rejected),
            (403, "/v2/a/tags/list", CheckStatus::Rejected),
            (403, "/v2/", CheckStatus::Rejected),
            (404, "/v2/a/tags/list", CheckStatus::Ok),
            (404, "/v2/", CheckStatus::Unreachable),
            (500, "/v2/", CheckStatus::Unreachable),
            (503, "/v2/a/tags/list", CheckStatus::Unreachable),
            (429, "/v2/", CheckStatus::Unreachable),
        ];
        for (code, path, expected) in cases {
            let result = other_status(
                path,
                &answer(code, "{\"errors\":[{\"message\":\"why\"}]}"),
                &[],
            );
            assert_eq!(result.status, expected, "{code} on {path}");
            assert!(
                result.detail.contains(&format!("{code}: why")),
                "{result:?}"
            );
        }
    }

    #[test]
    fn a_detail_quoting_the_password_is_not_kept_and_debug_hides_it() {
        let login = BasicLogin {
            username: "ci".into(),
            password: "hunter2-secret".into(),
        };
        let result = redact(
            CheckResult::rejected("401: wrong password hunter2-secret"),
            &login,
        );
        assert!(!result.detail.contains("hunter2"), "{result:?}");
        assert!(!format!("{login:?}").contains("hunter2"));
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
    }

    /// A registry may echo a credential in its error text: whole, or the start of a long one cut
    /// off where the text is clipped. Neither reaches the detail (log, metric reader, warning, Event).
    #[test]
    fn error_text_quoting_any_part_of_a_credential_is_not_kept() {
        let key = format!(
            "{{\"type\":\"service_account\",\"private_key\":\"-----BEGIN PRIVATE KEY-----\\n{}\"}}",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC".repeat(70)
        );
        let token = "ya29.a0AfH6SMBx-an-issued-registry-token";
        let echoed_start = format!(
            "{{\"errors\":[{{\"message\":\"bad login {}\"}}]}}",
            &key[..300]
        );
        let echoed_middle = format!("denied for token ...{}...", &token[5..30]);
        for (body, secrets) in [
            (echoed_start.as_str(), vec![key.as_str()]),
            ("wrong password hunter2", vec!["hunter2"]),
            (echoed_middle.as_str(), vec!["pw", token]),
        ] {
            let text = error_text(body.as_bytes(), &secrets);
            assert_eq!(
                text, "(the registry's text is not shown: it quotes the credential)",
                "{body}"
            );
        }
        // A short, unrelated text is kept, and an empty secret matches nothing.
        assert_eq!(
            error_text(
                b"{\"errors\":[{\"message\":\"denied\"}]}",
                &[&key, "", token]
            ),
            "denied"
        );
        assert!(quotes(b"xx-hunter2-xx", b"hunter2"));
        assert!(!quotes(b"hunter", b"hunter2"));
    }

    /// Before any credential is sent, a refusal is not the registry refusing it; after, a 403 for a
    /// repository concerns that repository only, and a 401 the credential.
    #[test]
    fn a_403_is_scoped_to_the_repository_it_was_asked_about() {
        let forbidden = scoped(CheckResult::rejected("403: denied"), Some("acme/app"));
        assert_eq!(forbidden.repository.as_deref(), Some("acme/app"));
        let unauthorized = scoped(CheckResult::rejected("401: bad login"), Some("acme/app"));
        assert_eq!(unauthorized.repository, None);
        let login_only = scoped(CheckResult::rejected("403: denied"), None);
        assert_eq!(login_only.repository, None);
        let fine = scoped(
            CheckResult::unreachable("403 before login"),
            Some("acme/app"),
        );
        assert_eq!(fine.repository, None);
        assert_eq!(api_host("registry.lab:5000"), "registry.lab:5000");
    }
}
