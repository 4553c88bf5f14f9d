//! Workload Identity Federation: the `external_account` credential config that
//! `gcloud iam workload-identity-pools create-cred-config` writes, and its token flow.
//!
//! 1. The subject token (the cluster's projected ServiceAccount token) is read from its file on
//!    every exchange: the kubelet rotates it.
//! 2. RFC 8693 token exchange at the config's `token_url` (Google's STS) for a federated token.
//! 3. With `service_account_impersonation_url`, IAM Credentials' `generateAccessToken` with the
//!    federated token as Bearer, for a token of the configured lifetime. Without it, the federated
//!    token is the access token, and its life is what STS says (`expires_in`).
//!
//! Only file-sourced configs are supported: `credential_source.url`, `executable` and AWS
//! (`environment_id`) are refused with a clear error. Validation errors name the field and what is
//! expected, not its value.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncReadExt as _;

use super::{
    AccessToken, HttpClient, REGISTRY_READ_SCOPES, RawResponse, TokenError, clip, is_loopback_host,
    json_error, non_empty, parse_http_url, status_error, token_from_response,
};

/// Google's Security Token Service, where subject tokens are exchanged.
pub const DEFAULT_STS_TOKEN_URL: &str = "https://sts.googleapis.com/v1/token";

/// The IAM Credentials API, which mints impersonated service-account tokens.
pub const DEFAULT_IAM_CREDENTIALS_URL: &str = "https://iamcredentials.googleapis.com";

/// `subject_token_type` of a Kubernetes ServiceAccount token (a JWT).
pub const JWT_SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Lifetime asked of `generateAccessToken` unless the config says otherwise.
pub const DEFAULT_IMPERSONATED_LIFETIME: Duration = Duration::from_secs(3600);
/// Shortest lifetime accepted for impersonated tokens: below it refreshes would come too often.
pub const MIN_IMPERSONATED_LIFETIME: Duration = Duration::from_secs(600);
/// Longest lifetime IAM grants (12 h, and only where an organization policy allows more than 1 h).
pub const MAX_IMPERSONATED_LIFETIME: Duration = Duration::from_secs(43_200);

/// The audience a workload identity pool provider is addressed by, as `check-config` explains it.
pub const AUDIENCE_FORMAT: &str = "//iam.googleapis.com/projects/PROJECT_NUMBER/locations/global/workloadIdentityPools/POOL_ID/providers/PROVIDER_ID";

const TOKEN_EXCHANGE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const GENERATE_ACCESS_TOKEN: &str = ":generateAccessToken";
/// Projected ServiceAccount tokens are a few KiB; a larger file is not one.
const MAX_SUBJECT_TOKEN_BYTES: u64 = 64 * 1024;

/// How the subject token is stored in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectTokenFormat {
    /// The whole file, without surrounding whitespace.
    Text,
    /// A JSON object; the token is the string under this field.
    Json { field: String },
}

/// A checked `external_account` config for a file-sourced subject token. Holds no secret: `Debug`
/// shows it all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalAccount {
    audience: String,
    subject_token_type: String,
    token_url: String,
    subject_token_file: PathBuf,
    subject_token_format: SubjectTokenFormat,
    impersonation: Option<Impersonation>,
}

/// `generateAccessToken` for one service account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Impersonation {
    url: String,
    service_account: String,
    lifetime: Duration,
}

impl Impersonation {
    /// The impersonated service account's e-mail address.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The lifetime asked for.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

#[derive(Deserialize)]
struct RawExternalAccount {
    #[serde(rename = "type")]
    kind: Option<String>,
    audience: Option<String>,
    subject_token_type: Option<String>,
    token_url: Option<String>,
    service_account_impersonation_url: Option<String>,
    service_account_impersonation: Option<RawImpersonationOptions>,
    credential_source: Option<RawCredentialSource>,
}

#[derive(Deserialize)]
struct RawImpersonationOptions {
    token_lifetime_seconds: Option<u64>,
}

#[derive(Deserialize)]
struct RawCredentialSource {
    file: Option<String>,
    url: Option<Value>,
    executable: Option<Value>,
    environment_id: Option<Value>,
    format: Option<RawFormat>,
}

#[derive(Deserialize)]
struct RawFormat {
    #[serde(rename = "type")]
    kind: Option<String>,
    subject_token_field_name: Option<String>,
}

fn invalid(problem: impl Into<String>) -> TokenError {
    TokenError::InvalidCredentialConfig(problem.into())
}

impl ExternalAccount {
    /// Parses and checks a credential config file: `"type": "external_account"`, a workload
    /// identity pool provider `audience` ([`AUDIENCE_FORMAT`]), `subject_token_type`, an https
    /// `token_url`, `credential_source.file` (absolute) with `format.type` `text` (the default) or
    /// `json` with `subject_token_field_name`, and optionally an https
    /// `service_account_impersonation_url` (`.../serviceAccounts/EMAIL:generateAccessToken`) with
    /// `service_account_impersonation.token_lifetime_seconds` (600 to 43200, default 3600). Plain
    /// http is accepted only for loopback addresses (test endpoints).
    pub fn parse(bytes: &[u8]) -> Result<Self, TokenError> {
        let raw: RawExternalAccount =
            serde_json::from_slice(bytes).map_err(|e| invalid(json_error(&e)))?;
        match raw.kind.as_deref() {
            Some("external_account") => {}
            Some(_) => return Err(invalid("\"type\" is not \"external_account\"")),
            None => return Err(invalid("missing field \"type\"")),
        }
        let required = |value: Option<String>, name: &str| {
            non_empty(value).ok_or_else(|| invalid(format!("missing field \"{name}\"")))
        };
        let audience = required(raw.audience, "audience")?;
        let subject_token_type = required(raw.subject_token_type, "subject_token_type")?;
        let token_url = required(raw.token_url, "token_url")?;
        let source = raw
            .credential_source
            .ok_or_else(|| invalid("missing field \"credential_source\""))?;
        for (given, name) in [
            (source.url.is_some(), "url"),
            (source.executable.is_some(), "executable"),
            (source.environment_id.is_some(), "environment_id"),
        ] {
            if given {
                return Err(invalid(format!(
                    "\"credential_source.{name}\" is not supported; use \"credential_source.file\" \
                     with a projected ServiceAccount token"
                )));
            }
        }
        let file = required(source.file, "credential_source.file")?;
        let format = match source.format {
            None => SubjectTokenFormat::Text,
            Some(format) => match format.kind.as_deref() {
                None | Some("text") => SubjectTokenFormat::Text,
                Some("json") => SubjectTokenFormat::Json {
                    field: required(
                        format.subject_token_field_name,
                        "credential_source.format.subject_token_field_name",
                    )?,
                },
                Some(_) => {
                    return Err(invalid(
                        "\"credential_source.format.type\" must be \"text\" or \"json\"",
                    ));
                }
            },
        };
        let lifetime = raw
            .service_account_impersonation
            .and_then(|o| o.token_lifetime_seconds)
            .map(Duration::from_secs);
        let impersonation = non_empty(raw.service_account_impersonation_url)
            .map(|url| impersonation(url, lifetime))
            .transpose()?;
        if impersonation.is_none() && lifetime.is_some() {
            return Err(invalid(
                "\"service_account_impersonation.token_lifetime_seconds\" is set without \
                 \"service_account_impersonation_url\"",
            ));
        }
        Self::checked(ExternalAccount {
            audience,
            subject_token_type,
            token_url,
            subject_token_file: PathBuf::from(file),
            subject_token_format: format,
            impersonation,
        })
    }

    /// The same flow from a registry entry's own fields: the provider's `audience`, the subject
    /// token file (text, a JWT), an optional service account to impersonate with its token
    /// lifetime, and optional endpoint overrides (for example Private Service Connect endpoints;
    /// the defaults are [`DEFAULT_STS_TOKEN_URL`] and [`DEFAULT_IAM_CREDENTIALS_URL`]).
    pub fn from_fields(
        audience: &str,
        subject_token_file: &Path,
        service_account: Option<&str>,
        lifetime: Option<Duration>,
        token_url: Option<&str>,
        iam_credentials_url: Option<&str>,
    ) -> Result<Self, TokenError> {
        let impersonation = match service_account {
            Some(email) => {
                check_service_account(email)?;
                let base = iam_credentials_url.unwrap_or(DEFAULT_IAM_CREDENTIALS_URL);
                let url = format!(
                    "{}/v1/projects/-/serviceAccounts/{email}{GENERATE_ACCESS_TOKEN}",
                    base.trim_end_matches('/')
                );
                Some(impersonation(url, lifetime)?)
            }
            None if lifetime.is_some() => {
                return Err(invalid(
                    "a token lifetime applies only with a service account to impersonate",
                ));
            }
            None => None,
        };
        Self::checked(ExternalAccount {
            audience: audience.to_owned(),
            subject_token_type: JWT_SUBJECT_TOKEN_TYPE.to_owned(),
            token_url: token_url.unwrap_or(DEFAULT_STS_TOKEN_URL).to_owned(),
            subject_token_file: subject_token_file.to_owned(),
            subject_token_format: SubjectTokenFormat::Text,
            impersonation,
        })
    }

    fn checked(self) -> Result<Self, TokenError> {
        check_audience(&self.audience).map_err(|p| invalid(format!("\"audience\" {p}")))?;
        if !self.subject_token_type.starts_with("urn:") {
            return Err(invalid(
                "\"subject_token_type\" is not a token type URN (for a Kubernetes ServiceAccount \
                 token: urn:ietf:params:oauth:token-type:jwt)",
            ));
        }
        check_endpoint_url(&self.token_url).map_err(|p| invalid(format!("\"token_url\" {p}")))?;
        if !self.subject_token_file.is_absolute() {
            return Err(invalid(
                "the subject token file (\"credential_source.file\") must be an absolute path",
            ));
        }
        Ok(self)
    }

    /// The workload identity pool provider the subject token is exchanged for.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Where the subject token is read from, on every exchange.
    pub fn subject_token_file(&self) -> &Path {
        &self.subject_token_file
    }

    /// The STS endpoint.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// The service account impersonated, if any.
    pub fn impersonation(&self) -> Option<&Impersonation> {
        self.impersonation.as_ref()
    }

    /// Reads the current subject token. Errors name the file, never its content.
    async fn subject_token(&self) -> Result<String, TokenError> {
        let path = &self.subject_token_file;
        let problem = |reason: String| TokenError::SubjectToken {
            path: path.clone(),
            reason,
        };
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| problem(e.to_string()))?;
        let mut bytes = Vec::new();
        file.take(MAX_SUBJECT_TOKEN_BYTES + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| problem(e.to_string()))?;
        if bytes.len() as u64 > MAX_SUBJECT_TOKEN_BYTES {
            return Err(problem(format!(
                "larger than {MAX_SUBJECT_TOKEN_BYTES} bytes"
            )));
        }
        let token = match &self.subject_token_format {
            SubjectTokenFormat::Text => std::str::from_utf8(&bytes)
                .map_err(|_| problem("not UTF-8 text".into()))?
                .trim()
                .to_owned(),
            SubjectTokenFormat::Json { field } => {
                let value: Value =
                    serde_json::from_slice(&bytes).map_err(|e| problem(json_error(&e)))?;
                value
                    .get(field)
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        problem(format!("no string field {:?} in the JSON", clip(field, 60)))
                    })?
            }
        };
        if token.is_empty() {
            return Err(problem("the token is empty".into()));
        }
        Ok(token)
    }

    /// One exchange, and one impersonation when configured. Each error says which step failed,
    /// naming the audience (and the service account).
    pub(super) async fn fetch(&self, http: &HttpClient) -> Result<AccessToken, TokenError> {
        let subject_token = self.subject_token().await?;
        let federated = self
            .exchange(&subject_token, http)
            .await
            .map_err(|source| TokenError::Exchange {
                audience: self.audience.clone(),
                source: Box::new(source),
            })?;
        drop(subject_token);
        let Some(impersonation) = &self.impersonation else {
            return Ok(federated);
        };
        impersonate(impersonation, &federated, http)
            .await
            .map_err(|source| TokenError::Impersonation {
                service_account: impersonation.service_account.clone(),
                audience: self.audience.clone(),
                source: Box::new(source),
            })
    }

    async fn exchange(
        &self,
        subject_token: &str,
        http: &HttpClient,
    ) -> Result<AccessToken, TokenError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", TOKEN_EXCHANGE_GRANT_TYPE)
            .append_pair("audience", &self.audience)
            .append_pair("scope", REGISTRY_READ_SCOPES)
            .append_pair("requested_token_type", ACCESS_TOKEN_TYPE)
            .append_pair("subject_token", subject_token)
            .append_pair("subject_token_type", &self.subject_token_type)
            .finish();
        let issued_at = SystemTime::now();
        let response = post(
            http,
            &self.token_url,
            "application/x-www-form-urlencoded",
            None,
            body,
        )
        .await?;
        token_from_response(&self.token_url, response, issued_at)
    }
}

async fn impersonate(
    impersonation: &Impersonation,
    federated: &AccessToken,
    http: &HttpClient,
) -> Result<AccessToken, TokenError> {
    let scopes: Vec<&str> = REGISTRY_READ_SCOPES.split(' ').collect();
    let body = serde_json::json!({
        "scope": scopes,
        "lifetime": format!("{}s", impersonation.lifetime.as_secs()),
    })
    .to_string();
    let issued_at = SystemTime::now();
    let endpoint = &impersonation.url;
    let response = post(
        http,
        endpoint,
        "application/json",
        Some(federated.secret()),
        body,
    )
    .await?;
    impersonated_token(endpoint, &response, issued_at)
}

async fn post(
    http: &HttpClient,
    endpoint: &str,
    content_type: &str,
    bearer: Option<&str>,
    body: String,
) -> Result<RawResponse, TokenError> {
    let uri: Uri = check_endpoint_url(endpoint).map_err(|reason| TokenError::InvalidUrl {
        url: endpoint.to_owned(),
        reason,
    })?;
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(CONTENT_TYPE, content_type)
        .header(ACCEPT, "application/json");
    if let Some(token) = bearer {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    // Header values are checked by the builder; its error names the header, not its value.
    let request =
        request
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| TokenError::MalformedResponse {
                endpoint: endpoint.to_owned(),
                reason:
                    "the request cannot be built (the token has characters a header cannot carry)"
                        .into(),
            })?;
    http.send(request, endpoint).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateAccessTokenResponse {
    access_token: Option<String>,
    expire_time: Option<String>,
}

fn impersonated_token(
    endpoint: &str,
    response: &RawResponse,
    issued_at: SystemTime,
) -> Result<AccessToken, TokenError> {
    if !response.status.is_success() {
        return Err(status_error(endpoint, response.status, &response.body));
    }
    let malformed = |reason: &str| TokenError::MalformedResponse {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed: GenerateAccessTokenResponse =
        serde_json::from_slice(&response.body).map_err(|e| malformed(&json_error(&e)))?;
    let token = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("\"accessToken\" is missing or empty"))?;
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(malformed(
            "\"accessToken\" contains whitespace or control characters",
        ));
    }
    let expires_at = parsed
        .expire_time
        .as_deref()
        .and_then(parse_rfc3339)
        .ok_or_else(|| malformed("\"expireTime\" is missing or not an RFC 3339 time"))?;
    if expires_at <= issued_at {
        return Err(malformed("\"expireTime\" is not in the future"));
    }
    Ok(AccessToken::new(token, issued_at, expires_at))
}

fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let at: k8s_openapi::jiff::Timestamp = text.parse().ok()?;
    let seconds = u64::try_from(at.as_second()).ok()?;
    let nanos = u32::try_from(at.subsec_nanosecond()).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

fn impersonation(url: String, lifetime: Option<Duration>) -> Result<Impersonation, TokenError> {
    check_endpoint_url(&url)
        .map_err(|p| invalid(format!("\"service_account_impersonation_url\" {p}")))?;
    let service_account = url
        .strip_suffix(GENERATE_ACCESS_TOKEN)
        .and_then(|rest| rest.rsplit_once("/serviceAccounts/"))
        .map(|(_, email)| email.to_owned())
        .ok_or_else(|| {
            invalid(
                "\"service_account_impersonation_url\" does not end in \
                 /serviceAccounts/EMAIL:generateAccessToken",
            )
        })?;
    check_service_account(&service_account)?;
    let lifetime = lifetime.unwrap_or(DEFAULT_IMPERSONATED_LIFETIME);
    if !(MIN_IMPERSONATED_LIFETIME..=MAX_IMPERSONATED_LIFETIME).contains(&lifetime) {
        return Err(invalid(format!(
            "the token lifetime must be {} to {} seconds",
            MIN_IMPERSONATED_LIFETIME.as_secs(),
            MAX_IMPERSONATED_LIFETIME.as_secs()
        )));
    }
    Ok(Impersonation {
        url,
        service_account,
        lifetime,
    })
}

fn check_service_account(email: &str) -> Result<(), TokenError> {
    let valid = email.split_once('@').is_some_and(|(name, domain)| {
        !name.is_empty()
            && domain.contains('.')
            && email
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '-'))
    });
    if valid {
        Ok(())
    } else {
        Err(invalid(
            "the service account to impersonate is not an e-mail address \
             (NAME@PROJECT_ID.iam.gserviceaccount.com)",
        ))
    }
}

/// Whether `audience` names a workload identity pool provider ([`AUDIENCE_FORMAT`]). The problem
/// never quotes the value.
pub fn check_audience(audience: &str) -> Result<(), String> {
    let expected = || format!("must be {AUDIENCE_FORMAT} (a project number, not a project id)");
    let rest = audience
        .strip_prefix("//iam.googleapis.com/projects/")
        .ok_or_else(expected)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let id = |s: &str| {
        (4..=32).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    match parts.as_slice() {
        [
            number,
            "locations",
            "global",
            "workloadIdentityPools",
            pool,
            "providers",
            provider,
        ] if !number.is_empty()
            && number.chars().all(|c| c.is_ascii_digit())
            && id(pool)
            && id(provider) =>
        {
            Ok(())
        }
        _ => Err(expected()),
    }
}

/// An endpoint that may receive a token: `https`, or plain `http` on a loopback address only (test
/// endpoints). The problem never quotes the URL.
pub fn check_endpoint_url(url: &str) -> Result<Uri, String> {
    let uri = parse_http_url(url).map_err(|_| "is not an absolute https URL".to_owned())?;
    if uri.scheme_str() == Some("http") && !is_loopback_host(uri.host().unwrap_or_default()) {
        return Err("must use https (plain http only for a loopback test endpoint)".into());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIENCE: &str = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/k3s-home/providers/cluster";

    fn config(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v = serde_json::json!({
            "universe_domain": "googleapis.com",
            "type": "external_account",
            "audience": AUDIENCE,
            "subject_token_type": JWT_SUBJECT_TOKEN_TYPE,
            "token_url": "https://sts.googleapis.com/v1/token",
            "credential_source": {"file": "/var/run/secrets/tokens/gcp/token", "format": {"type": "text"}},
            "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/puller@acme.iam.gserviceaccount.com:generateAccessToken",
            "service_account_impersonation": {"token_lifetime_seconds": 3600}
        });
        edit(&mut v);
        v.to_string().into_bytes()
    }

    #[test]
    fn create_cred_config_output_parses() {
        let account = ExternalAccount::parse(&config(|_| {})).expect("valid");
        assert_eq!(account.audience(), AUDIENCE);
        assert_eq!(
            account.subject_token_file(),
            Path::new("/var/run/secrets/tokens/gcp/token")
        );
        let imp = account.impersonation().expect("impersonation");
        assert_eq!(imp.service_account(), "puller@acme.iam.gserviceaccount.com");
        assert_eq!(imp.lifetime(), Duration::from_secs(3600));

        let json = ExternalAccount::parse(&config(|v| {
            v["credential_source"]["format"] =
                serde_json::json!({"type": "json", "subject_token_field_name": "id_token"});
            v.as_object_mut()
                .expect("object")
                .remove("service_account_impersonation_url");
            v.as_object_mut()
                .expect("object")
                .remove("service_account_impersonation");
        }))
        .expect("valid");
        assert!(json.impersonation().is_none());
        assert_eq!(
            json.subject_token_format,
            SubjectTokenFormat::Json {
                field: "id_token".into()
            }
        );
    }

    #[test]
    fn bad_credential_configs_name_the_field_not_the_value() {
        type Edit = fn(&mut Value);
        let cases: [(Edit, &str); 12] = [
            (|v| v["type"] = "service_account".into(), "\"type\""),
            (|v| v["audience"] = "".into(), "missing field \"audience\""),
            (
                |v| {
                    v["audience"] = "//iam.googleapis.com/projects/my-proj-SECRETISH/locations/global/workloadIdentityPools/p00l/providers/prov".into()
                },
                "project number",
            ),
            (
                |v| v["token_url"] = "http://sts.example.com/SECRETISH".into(),
                "must use https",
            ),
            (
                |v| v["token_url"] = "SECRETISH".into(),
                "absolute https URL",
            ),
            (
                |v| {
                    v["service_account_impersonation_url"] =
                        "https://iam.example.com/SECRETISH".into()
                },
                "/serviceAccounts/EMAIL:generateAccessToken",
            ),
            (
                |v| v["service_account_impersonation"]["token_lifetime_seconds"] = 60.into(),
                "600 to 43200",
            ),
            (
                |v| {
                    v["credential_source"] =
                        serde_json::json!({"url": "http://169.254.169.254/SECRETISH"})
                },
                "credential_source.url\" is not supported",
            ),
            (
                |v| v["credential_source"]["file"] = "relative/SECRETISH".into(),
                "absolute path",
            ),
            (
                |v| v["credential_source"]["format"] = serde_json::json!({"type": "json"}),
                "subject_token_field_name",
            ),
            (
                |v| v["subject_token_type"] = "jwt-SECRETISH".into(),
                "token type URN",
            ),
            (
                |v| {
                    v.as_object_mut()
                        .expect("object")
                        .remove("credential_source");
                },
                "missing field \"credential_source\"",
            ),
        ];
        for (edit, needle) in cases {
            let err = ExternalAccount::parse(&config(edit)).expect_err(needle);
            let text = err.to_string();
            assert!(text.contains(needle), "{needle}: {text}");
            assert!(!text.contains("SECRETISH"), "echoes a value: {text}");
        }
        let err = ExternalAccount::parse(b"{not json").expect_err("syntax");
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn audience_format() {
        assert!(check_audience(AUDIENCE).is_ok());
        for bad in [
            "",
            "https://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/pool/providers/prov",
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/pool",
            "//iam.googleapis.com/projects/1/locations/europe-west1/workloadIdentityPools/pool/providers/prov",
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/Pool/providers/prov",
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/pool/providers/prov/extra",
        ] {
            assert!(check_audience(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fields_build_the_same_flow_as_the_file() {
        let file = ExternalAccount::parse(&config(|_| {})).expect("valid");
        let fields = ExternalAccount::from_fields(
            AUDIENCE,
            Path::new("/var/run/secrets/tokens/gcp/token"),
            Some("puller@acme.iam.gserviceaccount.com"),
            None,
            None,
            None,
        )
        .expect("valid");
        assert_eq!(file, fields);
        let err = ExternalAccount::from_fields(
            AUDIENCE,
            Path::new("/t"),
            None,
            Some(Duration::from_secs(3600)),
            None,
            None,
        )
        .expect_err("lifetime without impersonation");
        assert!(err.to_string().contains("only with a service account"));
        assert!(
            ExternalAccount::from_fields(AUDIENCE, Path::new("/t"), Some("x"), None, None, None)
                .is_err()
        );
    }

    #[test]
    fn expire_time_is_rfc3339() {
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
        );
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00.5Z"),
            Some(UNIX_EPOCH + Duration::from_millis(1_767_225_600_500))
        );
        assert_eq!(parse_rfc3339("tomorrow"), None);
    }
}
