//! `k3s-registries`: the node-level alternative to pull Secrets. Renders k3s's
//! `/etc/rancher/k3s/registries.yaml` from the same config and credential sources.
//!
//! k3s (containerd) looks credentials up by exact registry host, so host patterns are turned into
//! concrete hosts: a pattern without `*` is used as is, `*.gcr.io` becomes the Container Registry hosts,
//! and any other wildcard needs the concrete hosts named with `--host` (each must match the entry's
//! patterns, so the credentials are the ones the webhook would use).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;

use crate::admission::{HostPattern, ImageReference};
use crate::config::{Config, Registry};
use crate::provisioning::credentials::{self, CredentialError, Login};

/// The Container Registry hosts `*.gcr.io` stands for.
pub const GCR_REGIONAL_HOSTS: [&str; 4] = [
    "us.gcr.io",
    "eu.gcr.io",
    "asia.gcr.io",
    "marketplace.gcr.io",
];

#[derive(Debug, thiserror::Error)]
pub enum K3sError {
    #[error("registry {registry:?}: {source}")]
    Credentials {
        registry: String,
        source: CredentialError,
    },
    #[error("--host {0:?} is not a registry host (write e.g. europe-west1-docker.pkg.dev)")]
    BadHost(String),
    #[error("--host {0:?} matches no registry entry with credentials")]
    UnmatchedHost(String),
    #[error("--mirror {0:?} must be REGISTRY=ENDPOINT (e.g. docker.io=https://mirror.example.com)")]
    BadMirror(String),
    #[error("registry {registry:?}: its docker config has no usable entry for {host:?}")]
    NoDockerConfigEntry { registry: String, host: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub username: String,
    pub password: String,
}

/// The rendered file's content, as data: host → auth, registry → mirror endpoints.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Registries {
    pub configs: BTreeMap<String, Auth>,
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Wildcard patterns no `--host` covered, for a comment in the output.
    pub skipped: Vec<String>,
    /// Wildcard patterns written only for the `--host` hosts that match them.
    pub covered: Vec<String>,
}

/// Builds the file's content from the config, reading each entry's credential source.
pub fn build(
    config: &Config,
    extra_hosts: &[String],
    mirrors: &[String],
) -> Result<Registries, K3sError> {
    let mut out = Registries::default();
    for mirror in mirrors {
        let (registry, endpoint) = mirror
            .split_once('=')
            .filter(|(r, e)| !r.is_empty() && !e.is_empty())
            .ok_or_else(|| K3sError::BadMirror(mirror.clone()))?;
        out.mirrors
            .entry(registry.to_owned())
            .or_default()
            .push(endpoint.to_owned());
    }
    let mut claimed = vec![false; extra_hosts.len()];
    for registry in &config.registries {
        let Some(login) = credentials::read_login(registry) else {
            continue;
        };
        let login = login.map_err(|source| K3sError::Credentials {
            registry: registry.name.clone(),
            source,
        })?;
        let mut hosts = Vec::new();
        for (i, host) in extra_hosts.iter().enumerate() {
            if matches_registry(registry, host)? {
                hosts.push(host.clone());
                claimed[i] = true;
            }
        }
        for pattern in &registry.hosts {
            match concrete_hosts(pattern) {
                Some(list) => hosts.extend(list),
                None => {
                    let given: Vec<&str> = extra_hosts
                        .iter()
                        .filter(|host| matches_pattern(pattern, host))
                        .map(String::as_str)
                        .collect();
                    let what = format!("{} ({})", pattern.as_str(), registry.name);
                    if given.is_empty() {
                        out.skipped.push(what);
                    } else {
                        out.covered.push(format!("{what} as {}", given.join(", ")));
                    }
                }
            }
        }
        for host in hosts {
            let auth = auth_for(registry, &login, &host)?;
            out.configs.entry(host).or_insert(auth);
        }
    }
    if let Some(i) = claimed.iter().position(|c| !c) {
        return Err(K3sError::UnmatchedHost(extra_hosts[i].clone()));
    }
    Ok(out)
}

fn concrete_hosts(pattern: &HostPattern) -> Option<Vec<String>> {
    let text = pattern.as_str();
    let host = text.split('/').next().unwrap_or(text);
    if host == "*.gcr.io" {
        return Some(GCR_REGIONAL_HOSTS.iter().map(|h| (*h).to_owned()).collect());
    }
    if host.contains('*') {
        return None;
    }
    Some(vec![host.to_owned()])
}

/// Whether a `--host` (already checked by [`matches_registry`]) falls under `pattern`.
fn matches_pattern(pattern: &HostPattern, host: &str) -> bool {
    let image = format!("{host}/probe");
    ImageReference::parse(&image).is_ok_and(|reference| pattern.matches(&reference))
}

fn matches_registry(registry: &Registry, host: &str) -> Result<bool, K3sError> {
    if host.contains('/') || host.contains('*') {
        return Err(K3sError::BadHost(host.to_owned()));
    }
    let image = format!("{host}/probe");
    let reference =
        ImageReference::parse(&image).map_err(|_| K3sError::BadHost(host.to_owned()))?;
    if reference.domain != host {
        return Err(K3sError::BadHost(host.to_owned()));
    }
    Ok(registry.hosts.iter().any(|p| p.matches(&reference)))
}

fn auth_for(registry: &Registry, login: &Login, host: &str) -> Result<Auth, K3sError> {
    match login {
        Login::Basic { username, password } => Ok(Auth {
            username: username.clone(),
            password: password.clone(),
        }),
        Login::DockerConfig(config) => {
            let missing = || K3sError::NoDockerConfigEntry {
                registry: registry.name.clone(),
                host: host.to_owned(),
            };
            let value: serde_json::Value =
                serde_json::from_slice(&config.json).map_err(|_| missing())?;
            let entry = value["auths"].get(host).ok_or_else(missing)?;
            let field = |name: &str| {
                entry
                    .get(name)
                    .and_then(|v| v.as_str())
                    .filter(|v| !v.is_empty())
            };
            if let (Some(username), Some(password)) = (field("username"), field("password")) {
                return Ok(Auth {
                    username: username.to_owned(),
                    password: password.to_owned(),
                });
            }
            let decoded = field("auth")
                .and_then(|auth| base64::engine::general_purpose::STANDARD.decode(auth).ok())
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(missing)?;
            let (username, password) = decoded.split_once(':').ok_or_else(missing)?;
            Ok(Auth {
                username: username.to_owned(),
                password: password.to_owned(),
            })
        }
    }
}

/// Writes the file. Every string is a double-quoted YAML scalar on one line (JSON string syntax is a
/// subset of YAML's double-quoted style), so a key file's JSON becomes one correctly escaped line.
pub fn render(registries: &Registries, source: &str) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `pullsecret-injector k3s-registries` from {source}."
    );
    let _ = writeln!(
        out,
        "# Install as /etc/rancher/k3s/registries.yaml (mode 0600) on every node, then restart k3s."
    );
    for skipped in &registries.skipped {
        let _ = writeln!(
            out,
            "# Not included: {skipped}: k3s needs exact hosts; add them with --host."
        );
    }
    for covered in &registries.covered {
        let _ = writeln!(
            out,
            "# Wildcard {covered} (from --host); add other hosts with --host."
        );
    }
    if !registries.mirrors.is_empty() {
        out.push_str("mirrors:\n");
        for (registry, endpoints) in &registries.mirrors {
            let _ = writeln!(out, "  {}:\n    endpoint:", quote(registry));
            for endpoint in endpoints {
                let _ = writeln!(out, "      - {}", quote(endpoint));
            }
        }
    }
    if registries.configs.is_empty() {
        out.push_str("configs: {}\n");
    } else {
        out.push_str("configs:\n");
        for (host, auth) in &registries.configs {
            let _ = writeln!(
                out,
                "  {}:\n    auth:\n      username: {}\n      password: {}",
                quote(host),
                quote(&auth.username),
                quote(&auth.password)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_single_line_and_round_trip() {
        let key = "{\n  \"type\": \"service_account\",\n  \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nAB+/=\\n-----END PRIVATE KEY-----\\n\",\n  \"note\": \"tab\\there: 'quotes' \\\"and\\\" # hash\"\n}";
        let registries = Registries {
            configs: BTreeMap::from([(
                "gcr.io".to_owned(),
                Auth {
                    username: "_json_key".into(),
                    password: key.into(),
                },
            )]),
            mirrors: BTreeMap::from([(
                "docker.io".to_owned(),
                vec!["https://mirror.example.com".to_owned()],
            )]),
            skipped: vec!["*-docker.pkg.dev (gcp)".into()],
            covered: Vec::new(),
        };
        let text = render(&registries, "config.yaml");
        let password_lines: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("password:"))
            .collect();
        assert_eq!(password_lines.len(), 1);
        let parsed: serde_json::Value = serde_norway::from_str(&text).expect("valid YAML");
        assert_eq!(
            parsed["configs"]["gcr.io"]["auth"]["password"].as_str(),
            Some(key)
        );
        assert_eq!(parsed["configs"]["gcr.io"]["auth"]["username"], "_json_key");
        assert_eq!(
            parsed["mirrors"]["docker.io"]["endpoint"][0],
            "https://mirror.example.com"
        );
        assert!(text.contains("# Not included: *-docker.pkg.dev (gcp)"));
    }

    #[test]
    fn wildcard_patterns_become_concrete_hosts_or_are_skipped() {
        let cases = [
            ("gcr.io", Some(vec!["gcr.io"])),
            ("*.gcr.io", Some(GCR_REGIONAL_HOSTS.to_vec())),
            (
                "registry.example.com:5000",
                Some(vec!["registry.example.com:5000"]),
            ),
            ("gcr.io/my-project", Some(vec!["gcr.io"])),
            ("*-docker.pkg.dev", None),
            ("docker.*.rep.pkg.dev", None),
        ];
        for (pattern, expected) in cases {
            let pattern = HostPattern::parse(pattern).expect("pattern");
            let expected: Option<Vec<String>> =
                expected.map(|v| v.into_iter().map(str::to_owned).collect());
            assert_eq!(concrete_hosts(&pattern), expected, "{}", pattern.as_str());
        }
    }
}
