//! Turns a registry entry's credential source into the `.dockerconfigjson` its pull Secrets carry.
//! Pure rendering plus a small file-reading edge; error messages never include credential bytes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::admission::HostPattern;
use crate::config::{Config, CredentialSource, FederationSource, GcpKeyMode, Registry};
use crate::provisioning::gcp_auth::{ExternalAccount, ServiceAccountKey};

/// Username the registries accept with a GCP service-account key as the password.
pub const GCP_JSON_KEY_USER: &str = "_json_key";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} is not a GCP service-account key: {problem}")]
    InvalidGcpKey { path: PathBuf, problem: String },
    #[error("{path}: {problem}")]
    InvalidBasicAuth { path: PathBuf, problem: String },
    #[error("{path} is not a .dockerconfigjson: {problem}")]
    InvalidDockerConfig { path: PathBuf, problem: String },
    #[error("{path}: {problem}")]
    InvalidCredentialConfig { path: PathBuf, problem: String },
}

/// The rendered `.dockerconfigjson` of one registry entry, with its content hash.
#[derive(Clone, PartialEq, Eq)]
pub struct DockerConfig {
    pub json: Vec<u8>,
    pub hash: ContentHash,
}

/// Printing a DockerConfig prints only its hash: its bytes are credentials.
impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of the `.dockerconfigjson` bytes, written as `sha256:<hex>` in the Secret's annotation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The first 64 bits: enough to tell contents apart where many hashes are kept.
    pub fn short(&self) -> u64 {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(head)
    }

    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("sha256:")?;
        if hex.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl DockerConfig {
    fn new(json: Vec<u8>) -> Self {
        let hash = ContentHash::of(&json);
        Self { json, hash }
    }
}

#[derive(Serialize)]
struct DockerConfigJson<'a> {
    auths: BTreeMap<&'a str, AuthEntry<'a>>,
}

// Field order and names as `kubectl create secret docker-registry` writes them.
#[derive(Serialize)]
struct AuthEntry<'a> {
    username: &'a str,
    password: &'a str,
    auth: String,
}

/// One `auths` entry per host pattern, all with the same username and password.
pub fn render_basic(hosts: &[HostPattern], username: &str, password: &str) -> DockerConfig {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let auths = hosts
        .iter()
        .map(|host| {
            (
                host.as_str(),
                AuthEntry {
                    username,
                    password,
                    auth: auth.clone(),
                },
            )
        })
        .collect();
    // Serializing maps of strings cannot fail.
    DockerConfig::new(serde_json::to_vec(&DockerConfigJson { auths }).unwrap_or_default())
}

/// What `"$(cat file)"` gives in a shell: the text without its trailing newlines, so a key or password
/// file renders exactly as the `kubectl create secret docker-registry` recipe would.
fn shell_text(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && bytes[end - 1] == b'\n' {
        end -= 1;
    }
    &bytes[..end]
}

/// Checks a service-account key file and renders it with username `_json_key`. The key's JSON is the
/// password byte for byte (its `\n` escapes included): it is never re-serialized.
#[cfg(test)]
fn render_gcp_key(
    hosts: &[HostPattern],
    path: &Path,
    bytes: &[u8],
) -> Result<DockerConfig, CredentialError> {
    let key = gcp_key_text(path, bytes)?;
    Ok(render_basic(hosts, GCP_JSON_KEY_USER, key))
}

/// The key file's text as the password (`$(cat key.json)`), once it is known to be a service-account key.
fn gcp_key_text<'b>(path: &Path, bytes: &'b [u8]) -> Result<&'b str, CredentialError> {
    let invalid = |problem: &str| CredentialError::InvalidGcpKey {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let text = std::str::from_utf8(shell_text(bytes)).map_err(|_| invalid("not UTF-8 text"))?;
    let key: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        invalid(&format!(
            "not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let field = |name: &str| {
        key.get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
    };
    match field("type") {
        Some("service_account") => {}
        Some(_) => return Err(invalid("`type` is not \"service_account\"")),
        None => return Err(invalid("`type` is missing")),
    }
    if field("client_email").is_none() {
        return Err(invalid("`client_email` is missing"));
    }
    match field("private_key") {
        Some(pem) if pem.contains("PRIVATE KEY") => {}
        Some(_) => return Err(invalid("`private_key` is not a PEM private key")),
        None => return Err(invalid("`private_key` is missing")),
    }
    Ok(text)
}

#[cfg(test)]
fn render_basic_auth(
    hosts: &[HostPattern],
    username_path: &Path,
    username: &[u8],
    password_path: &Path,
    password: &[u8],
) -> Result<DockerConfig, CredentialError> {
    let (username, password) = basic_auth_text(username_path, username, password_path, password)?;
    Ok(render_basic(hosts, username, password))
}

fn basic_auth_text<'b>(
    username_path: &Path,
    username: &'b [u8],
    password_path: &Path,
    password: &'b [u8],
) -> Result<(&'b str, &'b str), CredentialError> {
    Ok((
        username_text(username_path, username)?,
        password_text(password_path, password)?,
    ))
}

fn invalid_basic_auth(path: &Path, problem: &str) -> CredentialError {
    CredentialError::InvalidBasicAuth {
        path: path.to_owned(),
        problem: problem.to_owned(),
    }
}

fn username_text<'b>(path: &Path, bytes: &'b [u8]) -> Result<&'b str, CredentialError> {
    let username = std::str::from_utf8(shell_text(bytes))
        .map_err(|_| invalid_basic_auth(path, "the username is not UTF-8 text"))?;
    if username.is_empty() {
        return Err(invalid_basic_auth(path, "the username is empty"));
    }
    if username.contains(':') {
        return Err(invalid_basic_auth(
            path,
            "the username contains ':', which the registry auth format cannot carry",
        ));
    }
    Ok(username)
}

fn password_text<'b>(path: &Path, bytes: &'b [u8]) -> Result<&'b str, CredentialError> {
    let password = std::str::from_utf8(shell_text(bytes))
        .map_err(|_| invalid_basic_auth(path, "the password is not UTF-8 text"))?;
    if password.is_empty() {
        return Err(invalid_basic_auth(path, "the password is empty"));
    }
    Ok(password)
}

/// An existing `.dockerconfigjson`, replicated as is once it is known to be one.
pub fn render_docker_config(path: &Path, bytes: &[u8]) -> Result<DockerConfig, CredentialError> {
    let invalid = |problem: &str| CredentialError::InvalidDockerConfig {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        invalid(&format!(
            "not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    match value.get("auths") {
        Some(serde_json::Value::Object(auths)) if !auths.is_empty() => {
            Ok(DockerConfig::new(bytes.to_vec()))
        }
        Some(serde_json::Value::Object(_)) => Err(invalid("`auths` is empty")),
        _ => Err(invalid("no `auths` object")),
    }
}

/// What a credential source yields: one login for all the entry's hosts, or a whole docker config.
#[derive(Clone, PartialEq, Eq)]
pub enum Login {
    Basic { username: String, password: String },
    DockerConfig(DockerConfig),
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .finish_non_exhaustive(),
            Self::DockerConfig(config) => f.debug_tuple("DockerConfig").field(config).finish(),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CredentialError> {
    std::fs::read(path).map_err(|e| CredentialError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Reads a registry entry's source files. `None` when the entry has no source.
pub fn read_login(registry: &Registry) -> Option<Result<Login, CredentialError>> {
    let source = registry.credentials.as_ref()?;
    Some(match source {
        CredentialSource::GcpJsonKey(source) => read(&source.file).and_then(|bytes| {
            let key = gcp_key_text(&source.file, &bytes)?;
            Ok(Login::Basic {
                username: GCP_JSON_KEY_USER.to_owned(),
                password: key.to_owned(),
            })
        }),
        CredentialSource::BasicAuth(source) => read(&source.username_file).and_then(|username| {
            let password = read(&source.password_file)?;
            let (username, password) = basic_auth_text(
                &source.username_file,
                &username,
                &source.password_file,
                &password,
            )?;
            Ok(Login::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            })
        }),
        CredentialSource::DockerConfigJson(source) => read(&source.file)
            .and_then(|bytes| render_docker_config(&source.file, &bytes).map(Login::DockerConfig)),
        // Minted tokens, not files: the provisioner's token refresher handles these.
        CredentialSource::GcpWorkloadIdentity(_)
        | CredentialSource::GcpWorkloadIdentityFederation(_) => return None,
    })
}

/// A credential file `serve` could not use, as [`check_files`] finds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registry {registry:?}: {error}")]
pub struct FileProblem {
    /// The name of the registry entry that names the file.
    pub registry: String,
    /// Names the file and the reason; never its content.
    pub error: CredentialError,
}

/// Reads every credential file the config names and checks each as `serve` will use it: a GCP key
/// must be a service-account key (and, for `mode: accessToken`, one that can sign token
/// requests), basic-auth files must hold a usable username and a non-empty password, and a
/// `.dockerconfigjson` must parse with a non-empty `auths`. Every problem is returned, not only
/// the first; an empty list means `serve` would load them all as they are now.
pub fn check_files(config: &Config) -> Vec<FileProblem> {
    let mut problems = Vec::new();
    for registry in &config.registries {
        let mut problem = |error| {
            problems.push(FileProblem {
                registry: registry.name.clone(),
                error,
            })
        };
        match &registry.credentials {
            // Inline federation fields are checked with the config itself.
            None
            | Some(CredentialSource::GcpWorkloadIdentity(_))
            | Some(CredentialSource::GcpWorkloadIdentityFederation(FederationSource::Inline(_))) => {
            }
            Some(CredentialSource::GcpWorkloadIdentityFederation(
                FederationSource::CredentialConfigFile(path),
            )) => {
                if let Err(error) = read_credential_config(path) {
                    problem(error);
                }
            }
            Some(CredentialSource::GcpJsonKey(source)) => {
                let checked = read(&source.file).and_then(|bytes| {
                    gcp_key_text(&source.file, &bytes)?;
                    if source.mode == GcpKeyMode::AccessToken {
                        ServiceAccountKey::parse(&bytes).map_err(|e| {
                            CredentialError::InvalidGcpKey {
                                path: source.file.clone(),
                                problem: e.to_string(),
                            }
                        })?;
                    }
                    Ok(())
                });
                if let Err(error) = checked {
                    problem(error);
                }
            }
            Some(CredentialSource::BasicAuth(source)) => {
                if let Err(error) = read(&source.username_file)
                    .and_then(|bytes| username_text(&source.username_file, &bytes).map(drop))
                {
                    problem(error);
                }
                if let Err(error) = read(&source.password_file)
                    .and_then(|bytes| password_text(&source.password_file, &bytes).map(drop))
                {
                    problem(error);
                }
            }
            Some(CredentialSource::DockerConfigJson(source)) => {
                if let Err(error) = read(&source.file)
                    .and_then(|bytes| render_docker_config(&source.file, &bytes).map(drop))
                {
                    problem(error);
                }
            }
        }
    }
    problems
}

/// Reads and checks an `external_account` credential config file (required fields, https
/// endpoints, the audience's format). Problems name the field, never a value.
pub fn read_credential_config(path: &Path) -> Result<ExternalAccount, CredentialError> {
    let bytes = read(path)?;
    ExternalAccount::parse(&bytes).map_err(|e| CredentialError::InvalidCredentialConfig {
        path: path.to_owned(),
        problem: e.to_string(),
    })
}

/// Reads a registry entry's source files and renders them. `None` when the entry has no source.
pub fn load(registry: &Registry) -> Option<Result<DockerConfig, CredentialError>> {
    read_login(registry).map(|login| {
        login.map(|login| match login {
            Login::Basic { username, password } => {
                render_basic(&registry.hosts, &username, &password)
            }
            Login::DockerConfig(config) => config,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(patterns: &[&str]) -> Vec<HostPattern> {
        patterns
            .iter()
            .map(|p| HostPattern::parse(p).expect("pattern"))
            .collect()
    }

    const KEY: &str = "{\n  \"type\": \"service_account\",\n  \"project_id\": \"acme\",\n  \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBg\\n-----END PRIVATE KEY-----\\n\",\n  \"client_email\": \"puller@acme.iam.gserviceaccount.com\"\n}\n";

    #[test]
    fn gcp_key_is_the_password_byte_for_byte() {
        let config = render_gcp_key(
            &hosts(&["gcr.io", "*.gcr.io"]),
            Path::new("/k.json"),
            KEY.as_bytes(),
        )
        .expect("valid");
        let parsed: serde_json::Value = serde_json::from_slice(&config.json).expect("json");
        for host in ["gcr.io", "*.gcr.io"] {
            let entry = &parsed["auths"][host];
            assert_eq!(entry["username"], "_json_key");
            // `$(cat key.json)` drops the trailing newline and nothing else.
            let password = entry["password"].as_str().expect("password");
            assert_eq!(password, KEY.trim_end_matches('\n'));
            assert!(
                password.contains("\\nMIIEvQIBADANBg\\n"),
                "the key's \\n escapes survive"
            );
            let auth = base64::engine::general_purpose::STANDARD
                .decode(entry["auth"].as_str().expect("auth"))
                .expect("b64");
            assert_eq!(auth, format!("_json_key:{password}").into_bytes());
        }
        assert_eq!(config.hash, ContentHash::of(&config.json));
    }

    #[test]
    fn bad_gcp_keys_are_refused_without_echoing_them() {
        let cases = [
            ("not json", "not JSON"),
            (
                "{\"type\": \"authorized_user\", \"client_email\": \"a\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\"}",
                "`type` is not",
            ),
            (
                "{\"client_email\": \"a\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\"}",
                "`type` is missing",
            ),
            (
                "{\"type\": \"service_account\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\"}",
                "`client_email` is missing",
            ),
            (
                "{\"type\": \"service_account\", \"client_email\": \"a\"}",
                "`private_key` is missing",
            ),
            (
                "{\"type\": \"service_account\", \"client_email\": \"a\", \"private_key\": \"s3cr3t-material\"}",
                "not a PEM private key",
            ),
        ];
        for (text, needle) in cases {
            let err = render_gcp_key(&hosts(&["gcr.io"]), Path::new("/k.json"), text.as_bytes())
                .expect_err(text);
            let message = err.to_string();
            assert!(message.contains(needle), "{message}");
            assert!(!message.contains("s3cr3t"), "leaks key material: {message}");
        }
    }

    #[test]
    fn basic_auth_renders_one_entry_per_host() {
        let config = render_basic_auth(
            &hosts(&["registry.example.com:5000"]),
            Path::new("/u"),
            b"ci\n",
            Path::new("/p"),
            b"hunter2\n",
        )
        .expect("valid");
        let parsed: serde_json::Value = serde_json::from_slice(&config.json).expect("json");
        assert_eq!(
            parsed,
            serde_json::json!({"auths": {"registry.example.com:5000": {"username": "ci", "password": "hunter2", "auth": "Y2k6aHVudGVyMg=="}}})
        );
        for (user, pass, needle) in [
            (&b""[..], &b"x"[..], "username is empty"),
            (b"a:b", b"x", "contains ':'"),
            (b"a", b"\n", "password is empty"),
        ] {
            let err = render_basic_auth(
                &hosts(&["r.io"]),
                Path::new("/u"),
                user,
                Path::new("/p"),
                pass,
            )
            .expect_err(needle);
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn docker_config_is_replicated_as_is() {
        let bytes = br#"{"auths":{"r.example.com":{"auth":"dTpw"}},"credHelpers":{}}"#;
        let config = render_docker_config(Path::new("/d"), bytes).expect("valid");
        assert_eq!(config.json, bytes);
        for (text, needle) in [
            ("[]", "no `auths`"),
            ("{\"auths\": {}}", "empty"),
            ("{", "not JSON"),
        ] {
            let err = render_docker_config(Path::new("/d"), text.as_bytes()).expect_err(text);
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn hash_round_trips_and_debug_hides_content() {
        let config = render_basic(&hosts(&["r.io"]), "u", "topsecret");
        let text = config.hash.to_string();
        assert_eq!(ContentHash::parse(&text), Some(config.hash));
        assert_eq!(ContentHash::parse("sha256:zz"), None);
        assert!(!format!("{config:?}").contains("topsecret"));
    }
}
