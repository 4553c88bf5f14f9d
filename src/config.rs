//! The injector's configuration: which registries get which pull Secret, and where their credentials
//! come from. Read from a YAML file (a ConfigMap volume in the cluster), validated as a whole so every
//! problem is reported at once, each naming the field it is about.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::admission::HostPattern;
use crate::duration::{format_duration, parse_go_duration};

/// Host patterns a registry entry gets from `preset: gcp`: every Container Registry and Artifact
/// Registry (Docker format) host family. `*.pkg.dev` would also match Maven/npm/Python repositories.
pub const GCP_HOST_PATTERNS: [&str; 4] = [
    "gcr.io",
    "*.gcr.io",
    "*-docker.pkg.dev",
    "docker.*.rep.pkg.dev",
];

/// Default label and annotation key a Pod sets to `"true"` to be left alone.
pub const DEFAULT_OPT_OUT_KEY: &str = "pullsecret-injector.io/skip";

pub const DEFAULT_PROVISIONING_BUDGET: Duration = Duration::from_secs(2);
/// The API server's webhook timeout is at most 30 s; the budget must leave time to answer.
const MAX_PROVISIONING_BUDGET: Duration = Duration::from_secs(25);

/// Namespaces the webhook never writes a Secret into and never patches a Pod in, whatever the
/// config says: the control plane's own.
pub const SYSTEM_NAMESPACES: [&str; 2] = ["kube-system", "kube-node-lease"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub registries: Vec<Registry>,
    /// Always includes [`SYSTEM_NAMESPACES`].
    pub skip_namespaces: Vec<String>,
    /// Opt-in: when set, only namespaces whose labels match it get Secrets and patches.
    pub namespace_selector: Option<kube::core::Selector>,
    pub opt_out: OptOut,
    pub failure_mode: FailureMode,
    pub provisioning: Provisioning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub secret_name: String,
    pub credentials: Option<CredentialSource>,
}

/// Where a registry's credentials are read from. Files, because they arrive as mounted Secret volumes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CredentialSource {
    /// A GCP service-account key file as `gcloud iam service-accounts keys create` writes it.
    GcpJsonKey(GcpKeySource),
    /// Keyless, on GKE with Workload Identity (or GCE): access tokens from the metadata server for the
    /// injector's own service account.
    GcpWorkloadIdentity(WorkloadIdentitySource),
    /// A username and a password, each in its own file (self-hosted registries, Harbor, ...).
    BasicAuth(BasicAuthSource),
    /// An existing `.dockerconfigjson`, replicated as is.
    DockerConfigJson(FileSource),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileSource {
    pub file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpKeySource {
    pub file: PathBuf,
    #[serde(default)]
    pub mode: GcpKeyMode,
}

/// What the pull Secrets carry for a GCP key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GcpKeyMode {
    /// Username `_json_key`, the key itself as the password: simple, never expires.
    #[default]
    JsonKey,
    /// Username `oauth2accesstoken`, a one-hour access token minted from the key and refreshed; the key
    /// stays in the injector's namespace.
    AccessToken,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadIdentitySource {
    /// The metadata server's service account to use; "default" is the one bound to the Pod.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Metadata server base URL; default `http://$GCE_METADATA_HOST` or `http://metadata.google.internal`.
    #[serde(default)]
    pub metadata_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuthSource {
    pub username_file: PathBuf,
    pub password_file: PathBuf,
}

impl CredentialSource {
    /// Every file this source reads; watched for changes.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            Self::GcpJsonKey(source) => vec![source.file.as_path()],
            Self::DockerConfigJson(source) => vec![source.file.as_path()],
            Self::GcpWorkloadIdentity(_) => Vec::new(),
            Self::BasicAuth(source) => vec![
                source.username_file.as_path(),
                source.password_file.as_path(),
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOut {
    pub label: Option<String>,
    pub annotation: Option<String>,
}

impl Default for OptOut {
    fn default() -> Self {
        Self {
            label: Some(DEFAULT_OPT_OUT_KEY.to_owned()),
            annotation: Some(DEFAULT_OPT_OUT_KEY.to_owned()),
        }
    }
}

/// What happens to a Pod whose pull Secret cannot be made ready in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureMode {
    /// Admit it with the reference and a warning; keep trying in the background.
    #[default]
    Allow,
    /// Reject it, so its controller retries once the Secret can exist.
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioning {
    /// Time an admission request may spend making Secrets exist before it answers.
    pub budget: Duration,
}

impl Default for Provisioning {
    fn default() -> Self {
        Self {
            budget: DEFAULT_PROVISIONING_BUDGET,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config is not valid YAML for this schema: {0}")]
    Syntax(String),
    #[error("config is invalid:\n{}", format_field_errors(.0))]
    Invalid(Vec<FieldError>),
}

/// One validation problem: the path of the field (`registries[0].hosts[1]`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

fn format_field_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Self::Invalid(errors) => errors,
            _ => &[],
        }
    }
}

// The file's shape. Kept apart from `Config` so that validation turns loose text into checked types.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    registries: Vec<RawRegistry>,
    skip_namespaces: Option<Vec<String>>,
    #[serde(default)]
    namespace_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    #[serde(default)]
    opt_out: Option<RawOptOut>,
    #[serde(default)]
    failure_mode: FailureMode,
    #[serde(default)]
    provisioning: Option<RawProvisioning>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRegistry {
    name: Option<String>,
    #[serde(default)]
    hosts: Vec<String>,
    preset: Option<String>,
    secret_name: Option<String>,
    // `credentials: {gcpJsonKey: {...}}` rather than a YAML tag.
    #[serde(default, with = "serde_norway::with::singleton_map")]
    credentials: Option<CredentialSource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawOptOut {
    label: Option<String>,
    annotation: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawProvisioning {
    budget: Option<String>,
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml_str(&text)
    }

    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::Syntax(
                "the file is empty; it needs at least `registries:`".into(),
            ));
        }
        let raw: RawConfig =
            serde_norway::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        raw.validate()
    }

    /// A config with no registries: what a component sees before it is given the real one.
    pub fn empty() -> Self {
        Self {
            registries: Vec::new(),
            skip_namespaces: SYSTEM_NAMESPACES.map(str::to_owned).to_vec(),
            namespace_selector: None,
            opt_out: OptOut::default(),
            failure_mode: FailureMode::default(),
            provisioning: Provisioning::default(),
        }
    }

    /// Whether the webhook may act in a namespace with these labels: not skipped, and selected
    /// when an opt-in selector is set.
    pub fn namespace_is_eligible(
        &self,
        namespace: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        use kube::core::SelectorExt as _;
        !self.skip_namespaces.iter().any(|ns| ns == namespace)
            && self
                .namespace_selector
                .as_ref()
                .is_none_or(|selector| selector.matches(labels))
    }

    /// The registry entry with this name.
    pub fn registry_named(&self, name: &str) -> Option<&Registry> {
        self.registries.iter().find(|r| r.name == name)
    }

    /// Every credential file named by the config, for the file watcher.
    pub fn credential_files(&self) -> Vec<&Path> {
        self.registries
            .iter()
            .filter_map(|r| r.credentials.as_ref())
            .flat_map(CredentialSource::files)
            .collect()
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let mut error = |field: String, problem: String| errors.push(FieldError { field, problem });

        if self.registries.is_empty() {
            error(
                "registries".into(),
                "at least one registry entry is required".into(),
            );
        }
        let mut registries = Vec::with_capacity(self.registries.len());
        let mut names = HashSet::new();
        let mut secret_names = HashSet::new();
        for (index, raw) in self.registries.into_iter().enumerate() {
            let at = |field: &str| format!("registries[{index}].{field}");
            let name = match raw.name {
                Some(name) if !is_dns_label(&name) => {
                    error(
                        at("name"),
                        format!(
                            "{name:?} must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
                        ),
                    );
                    name
                }
                Some(name) => {
                    if !names.insert(name.clone()) {
                        error(
                            at("name"),
                            format!("{name:?} is used by an earlier entry; names must be unique"),
                        );
                    }
                    name
                }
                None => {
                    error(at("name"), "is required".into());
                    String::new()
                }
            };
            let secret_name = match raw.secret_name {
                Some(secret) if !is_dns_subdomain(&secret) => {
                    error(
                        at("secretName"),
                        format!(
                            "{secret:?} is not a valid Secret name (lowercase a-z, 0-9, '-' and '.', at most 253 characters, starting and ending with a letter or digit)"
                        ),
                    );
                    secret
                }
                Some(secret) => {
                    if !secret_names.insert(secret.clone()) {
                        error(
                            at("secretName"),
                            format!(
                                "{secret:?} is used by an earlier entry; two entries cannot share one Secret (merge their hosts into one entry)"
                            ),
                        );
                    }
                    secret
                }
                None => {
                    error(at("secretName"), "is required".into());
                    String::new()
                }
            };
            let mut pattern_texts: Vec<(String, String)> = Vec::new();
            match raw.preset.as_deref() {
                None => {}
                Some("gcp") => pattern_texts.extend(
                    GCP_HOST_PATTERNS
                        .iter()
                        .map(|p| ((*p).to_owned(), at("preset"))),
                ),
                Some(other) => error(
                    at("preset"),
                    format!("unknown preset {other:?}; known presets: gcp"),
                ),
            }
            pattern_texts.extend(
                raw.hosts
                    .into_iter()
                    .enumerate()
                    .map(|(i, h)| (h, at(&format!("hosts[{i}]")))),
            );
            if pattern_texts.is_empty() && raw.preset.is_none() {
                error(
                    at("hosts"),
                    "list at least one host pattern, or set `preset: gcp`".into(),
                );
            }
            let mut hosts: Vec<HostPattern> = Vec::with_capacity(pattern_texts.len());
            for (text, field) in pattern_texts {
                match HostPattern::parse(&text) {
                    // A pattern given twice (say by the preset and by hosts) would only repeat an auths key.
                    Ok(pattern) if hosts.contains(&pattern) => {}
                    Ok(pattern) => hosts.push(pattern),
                    Err(problem) => error(field, problem.to_string()),
                }
            }
            if let Some(source) = &raw.credentials {
                for file in source.files() {
                    if !file.is_absolute() {
                        error(
                            at("credentials"),
                            format!("{} must be an absolute path", file.display()),
                        );
                    }
                }
            }
            registries.push(Registry {
                name,
                hosts,
                secret_name,
                credentials: raw.credentials,
            });
        }

        let mut skip_namespaces = self.skip_namespaces.unwrap_or_default();
        for (i, ns) in skip_namespaces.iter().enumerate() {
            if !is_dns_label(ns) {
                error(
                    format!("skipNamespaces[{i}]"),
                    format!("{ns:?} is not a valid namespace name"),
                );
            }
        }
        for system in SYSTEM_NAMESPACES {
            if !skip_namespaces.iter().any(|ns| ns == system) {
                skip_namespaces.push(system.to_owned());
            }
        }
        let namespace_selector = match self.namespace_selector {
            None => None,
            Some(selector) => match kube::core::Selector::try_from(selector) {
                Ok(selector) => Some(selector),
                Err(problem) => {
                    error("namespaceSelector".into(), problem.to_string());
                    None
                }
            },
        };

        let opt_out = match self.opt_out {
            None => OptOut::default(),
            Some(raw) => OptOut {
                label: raw.label.filter(|k| !k.is_empty()),
                annotation: raw.annotation.filter(|k| !k.is_empty()),
            },
        };
        for (field, key) in [
            ("optOut.label", &opt_out.label),
            ("optOut.annotation", &opt_out.annotation),
        ] {
            if let Some(key) = key
                && !is_qualified_name(key)
            {
                error(
                    field.into(),
                    format!(
                        "{key:?} is not a valid label/annotation key (optional DNS prefix and '/', then 1-63 characters of letters, digits, '-', '_', '.')"
                    ),
                );
            }
        }

        let mut provisioning = Provisioning::default();
        if let Some(budget) = self.provisioning.and_then(|p| p.budget) {
            match parse_go_duration(&budget) {
                Some(d) if d.is_zero() || d > MAX_PROVISIONING_BUDGET => error(
                    "provisioning.budget".into(),
                    format!(
                        "{budget:?} must be above 0 and at most {} (the webhook must answer within its timeout)",
                        format_duration(MAX_PROVISIONING_BUDGET)
                    ),
                ),
                Some(d) => provisioning.budget = d,
                None => error(
                    "provisioning.budget".into(),
                    format!("{budget:?} is not a duration (write e.g. \"2s\" or \"1500ms\")"),
                ),
            }
        }

        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        Ok(Config {
            registries,
            skip_namespaces,
            namespace_selector,
            opt_out,
            failure_mode: self.failure_mode,
            provisioning,
        })
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .as_bytes()
            .last()
            .is_some_and(u8::is_ascii_alphanumeric);
    name_ok && prefix.is_none_or(is_dns_subdomain)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "registries:\n  - name: gcp\n    preset: gcp\n    secretName: gcr-pull\n";

    #[test]
    fn preset_is_one_line_away_from_every_gcp_host_family() {
        let config = Config::from_yaml_str(MINIMAL).expect("valid");
        let hosts: Vec<&str> = config.registries[0]
            .hosts
            .iter()
            .map(HostPattern::as_str)
            .collect();
        assert_eq!(hosts, GCP_HOST_PATTERNS);
        assert_eq!(config.skip_namespaces, ["kube-system", "kube-node-lease"]);
        assert_eq!(config.opt_out, OptOut::default());
        assert_eq!(config.failure_mode, FailureMode::Allow);
        assert_eq!(config.provisioning.budget, DEFAULT_PROVISIONING_BUDGET);
    }

    #[test]
    fn full_config_parses_every_field() {
        let text = r#"
registries:
  - name: gcp
    preset: gcp
    hosts: ["gcr.io", "marketplace.gcr.io"]
    secretName: gcr-pull
    credentials:
      gcpJsonKey: { file: /etc/psi/gcp/key.json }
  - name: harbor
    hosts: ["harbor.example.com:8443"]
    secretName: harbor-pull
    credentials:
      basicAuth: { usernameFile: /etc/psi/harbor/username, passwordFile: /etc/psi/harbor/password }
  - name: mirror
    hosts: ["registry.internal"]
    secretName: mirror-pull
    credentials:
      dockerConfigJson: { file: /etc/psi/mirror/.dockerconfigjson }
skipNamespaces: [kube-system]
optOut: { label: example.com/no-inject, annotation: "" }
failureMode: deny
provisioning: { budget: 1500ms }
"#;
        let config = Config::from_yaml_str(text).expect("valid");
        assert_eq!(config.registries.len(), 3);
        // gcr.io from hosts repeats the preset and is kept once; marketplace.gcr.io is added.
        assert_eq!(config.registries[0].hosts.len(), 5);
        assert_eq!(
            config.registries[1].credentials,
            Some(CredentialSource::BasicAuth(BasicAuthSource {
                username_file: "/etc/psi/harbor/username".into(),
                password_file: "/etc/psi/harbor/password".into()
            }))
        );
        assert_eq!(
            config.opt_out.label.as_deref(),
            Some("example.com/no-inject")
        );
        assert_eq!(config.opt_out.annotation, None);
        assert_eq!(config.failure_mode, FailureMode::Deny);
        assert_eq!(config.provisioning.budget, Duration::from_millis(1500));
        assert_eq!(config.credential_files().len(), 4);
    }

    #[test]
    fn validation_names_each_bad_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("registries: []", "registries", "at least one"),
            (
                "registries:\n- secretName: a\n  hosts: [gcr.io]",
                "registries[0].name",
                "required",
            ),
            (
                "registries:\n- name: Bad_Name\n  secretName: a\n  hosts: [gcr.io]",
                "registries[0].name",
                "a-z",
            ),
            (
                "registries:\n- name: a\n  hosts: [gcr.io]",
                "registries[0].secretName",
                "required",
            ),
            (
                "registries:\n- name: a\n  secretName: Not_Valid\n  hosts: [gcr.io]",
                "registries[0].secretName",
                "not a valid Secret name",
            ),
            (
                "registries:\n- name: a\n  secretName: s",
                "registries[0].hosts",
                "at least one host pattern",
            ),
            (
                "registries:\n- name: a\n  secretName: s\n  hosts: ['gcr..io']",
                "registries[0].hosts[0]",
                "gcr..io",
            ),
            (
                "registries:\n- name: a\n  secretName: s\n  preset: aws",
                "registries[0].preset",
                "unknown preset",
            ),
            (
                "registries:\n- {name: a, secretName: s, hosts: [gcr.io]}\n- {name: a, secretName: t, hosts: [gcr.io]}",
                "registries[1].name",
                "unique",
            ),
            (
                "registries:\n- {name: a, secretName: s, hosts: [gcr.io]}\n- {name: b, secretName: s, hosts: [gcr.io]}",
                "registries[1].secretName",
                "share one Secret",
            ),
            (
                "registries:\n- {name: a, secretName: s, hosts: [gcr.io], credentials: {gcpJsonKey: {file: key.json}}}",
                "registries[0].credentials",
                "absolute path",
            ),
            (
                "registries:\n- {name: a, secretName: s, hosts: [gcr.io]}\nskipNamespaces: [Kube_System]",
                "skipNamespaces[0]",
                "namespace",
            ),
            (
                "registries:\n- {name: a, secretName: s, hosts: [gcr.io]}\noptOut: {label: 'bad key!'}",
                "optOut.label",
                "not a valid",
            ),
            (
                "registries:\n- {name: a, secretName: s, hosts: [gcr.io]}\nprovisioning: {budget: soon}",
                "provisioning.budget",
                "not a duration",
            ),
            (
                "registries:\n- {name: a, secretName: s, hosts: [gcr.io]}\nprovisioning: {budget: 60s}",
                "provisioning.budget",
                "at most",
            ),
            (
                "registries:\n- {name: a, secretName: s, hosts: [gcr.io]}\nprovisioning: {budget: 0s}",
                "provisioning.budget",
                "above 0",
            ),
        ];
        for (text, field, needle) in cases {
            let err = Config::from_yaml_str(text).expect_err(text);
            let found = err.field_errors().iter().find(|e| e.field == *field);
            let found = found.unwrap_or_else(|| panic!("no error on {field} for {text:?}: {err}"));
            assert!(
                found.problem.contains(needle),
                "{field}: {:?} lacks {needle:?}",
                found.problem
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::from_yaml_str("registries:\n- name: A\n  secretName: B\n")
            .expect_err("invalid");
        assert_eq!(err.field_errors().len(), 3, "{err}");
    }

    #[test]
    fn syntax_errors_and_unknown_fields_are_refused() {
        for text in [
            "",
            "registries: [",
            "registries:\n- {name: a, secretName: s, hosts: [gcr.io], secret: x}",
            "registires: []",
            "registries:\n- {name: a, secretName: s, hosts: [gcr.io]}\nfailureMode: maybe",
            "registries:\n- {name: a, secretName: s, hosts: [gcr.io], credentials: {vault: {}}}",
        ] {
            match Config::from_yaml_str(text) {
                Err(ConfigError::Syntax(message)) => assert!(!message.is_empty()),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn qualified_names() {
        for (key, ok) in [
            ("pullsecret-injector.io/skip", true),
            ("skip", true),
            ("a.b/c_d.e-f", true),
            ("/skip", false),
            ("Example.com/skip", false),
            ("example.com/", false),
            ("-skip", false),
        ] {
            assert_eq!(is_qualified_name(key), ok, "{key}");
        }
    }

    #[test]
    fn eligibility_follows_the_skip_list_and_the_opt_in_selector() {
        let labels = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let open = Config::from_yaml_str(
            "registries:\n- {name: gcp, preset: gcp, secretName: gcr-pull}\nskipNamespaces: [psi]\n",
        )
        .expect("config");
        let opt_in = Config::from_yaml_str(
            "registries:\n- {name: gcp, preset: gcp, secretName: gcr-pull}\nnamespaceSelector:\n  matchLabels: {pullsecret-injector.io/inject: enabled}\n  matchExpressions:\n  - {key: tier, operator: NotIn, values: [system]}\n",
        )
        .expect("config");
        let enabled = labels(&[("pullsecret-injector.io/inject", "enabled")]);
        let cases = [
            (&open, "team-a", labels(&[]), true),
            (&open, "psi", labels(&[]), false),
            (&open, "kube-system", labels(&[]), false),
            (&open, "kube-node-lease", labels(&[]), false),
            (&opt_in, "team-a", labels(&[]), false),
            (&opt_in, "team-a", enabled.clone(), true),
            (&opt_in, "kube-system", enabled.clone(), false),
            (
                &opt_in,
                "team-a",
                labels(&[
                    ("pullsecret-injector.io/inject", "enabled"),
                    ("tier", "system"),
                ]),
                false,
            ),
        ];
        for (config, namespace, labels, eligible) in cases {
            assert_eq!(
                config.namespace_is_eligible(namespace, &labels),
                eligible,
                "{namespace} {labels:?}"
            );
        }
        let bad = Config::from_yaml_str(
            "registries:\n- {name: gcp, preset: gcp, secretName: gcr-pull}\nnamespaceSelector:\n  matchExpressions:\n  - {key: tier, operator: Near, values: [a]}\n",
        )
        .expect_err("bad operator");
        assert_eq!(bad.field_errors()[0].field, "namespaceSelector", "{bad}");
    }
}
