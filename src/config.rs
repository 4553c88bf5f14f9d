//! The injector's configuration: which registries get which pull Secret, and where their credentials
//! come from. Read from a YAML file (a ConfigMap volume in the cluster), validated as a whole so every
//! problem is reported at once (unknown keys, values of the wrong kind and bad values alike), each
//! naming the field it is about and none quoting a credential: see [`FieldError`] for what a message
//! may show.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::admission::HostPattern;
use crate::duration::{format_duration, parse_go_duration};
use crate::names::{is_dns1123_label, is_dns1123_subdomain};
use crate::provisioning::gcp_auth::{ExternalAccount, TokenError};

mod shape;

use shape::{Entries, Node, Segment};

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
    /// Whether and how often the credentials are tried against the registry hosts Pods use.
    pub health_check: HealthCheck,
    /// Concrete hosts checked even before a Pod uses them (wildcard patterns are never checked).
    pub probe_hosts: Vec<String>,
    /// PEM CA certificates the registry's TLS certificate chains to, instead of the system's.
    pub ca_file: Option<PathBuf>,
}

/// The registry check of one entry, resolved from the entry's `healthCheck` and the global one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    /// On by default when the entry has credentials; never on without them.
    pub enabled: bool,
    pub interval: Duration,
}

pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5 * 60);
const MIN_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(10);
const MAX_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Where a registry's credentials are read from. Files, because they arrive as mounted Secret volumes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CredentialSource {
    /// A GCP service-account key file as `gcloud iam service-accounts keys create` writes it.
    GcpJsonKey(GcpKeySource),
    /// Keyless, on GKE with Workload Identity (or GCE): access tokens from the metadata server for the
    /// injector's own service account.
    GcpWorkloadIdentity(WorkloadIdentitySource),
    /// Keyless on any cluster, with Workload Identity Federation: the injector's projected
    /// ServiceAccount token is exchanged at Google's STS, optionally for a service account's token.
    GcpWorkloadIdentityFederation(FederationSource),
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

/// Where a federation's settings come from. Neither holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FederationSource {
    /// The `external_account` file `gcloud iam workload-identity-pools create-cred-config` writes.
    CredentialConfigFile(PathBuf),
    /// The same settings as the entry's own fields.
    Inline(InlineFederation),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InlineFederation {
    /// The workload identity pool provider:
    /// `//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`.
    pub audience: String,
    /// The projected ServiceAccount token, read on every exchange.
    pub subject_token_file: PathBuf,
    /// The Google service account to impersonate; without it the federated token is used as is.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Lifetime of the impersonated token; default 1h.
    #[serde(default)]
    pub token_lifetime: Option<Duration>,
    /// STS endpoint; default `https://sts.googleapis.com/v1/token`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// IAM Credentials API base URL; default `https://iamcredentials.googleapis.com`.
    #[serde(default)]
    pub iam_credentials_url: Option<String>,
}

impl InlineFederation {
    /// The token flow these fields describe.
    pub fn external_account(&self) -> Result<ExternalAccount, TokenError> {
        ExternalAccount::from_fields(
            &self.audience,
            &self.subject_token_file,
            self.service_account.as_deref(),
            self.token_lifetime,
            self.token_url.as_deref(),
            self.iam_credentials_url.as_deref(),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuthSource {
    pub username_file: PathBuf,
    pub password_file: PathBuf,
}

impl fmt::Display for CredentialSource {
    /// In the config's own words, for `check-config`: the source and the files it reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GcpJsonKey(source) => {
                let mode = match source.mode {
                    GcpKeyMode::JsonKey => "jsonKey",
                    GcpKeyMode::AccessToken => "accessToken",
                };
                write!(f, "gcpJsonKey from {} (mode {mode})", source.file.display())
            }
            Self::GcpWorkloadIdentity(source) => write!(
                f,
                "gcpWorkloadIdentity (service account {})",
                source.service_account.as_deref().unwrap_or("default")
            ),
            Self::GcpWorkloadIdentityFederation(FederationSource::CredentialConfigFile(file)) => {
                write!(f, "gcpWorkloadIdentityFederation from {}", file.display())
            }
            Self::GcpWorkloadIdentityFederation(FederationSource::Inline(fields)) => {
                write!(
                    f,
                    "gcpWorkloadIdentityFederation (audience {}, ",
                    fields.audience
                )?;
                match &fields.service_account {
                    Some(account) => write!(f, "impersonating {account}, ")?,
                    None => f.write_str("no impersonation, ")?,
                }
                write!(
                    f,
                    "subject token from {})",
                    fields.subject_token_file.display()
                )
            }
            Self::BasicAuth(source) => write!(
                f,
                "basicAuth from {} and {}",
                source.username_file.display(),
                source.password_file.display()
            ),
            Self::DockerConfigJson(source) => {
                write!(f, "dockerConfigJson from {}", source.file.display())
            }
        }
    }
}

impl FailureMode {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

impl CredentialSource {
    /// Every file this source reads; watched for changes.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            Self::GcpJsonKey(source) => vec![source.file.as_path()],
            Self::DockerConfigJson(source) => vec![source.file.as_path()],
            Self::GcpWorkloadIdentityFederation(FederationSource::CredentialConfigFile(file)) => {
                vec![file.as_path()]
            }
            // The subject token is read on every exchange: no need to watch it.
            Self::GcpWorkloadIdentity(_)
            | Self::GcpWorkloadIdentityFederation(FederationSource::Inline(_)) => Vec::new(),
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
    #[error("{}config is not valid YAML: {message}", file_prefix(.file))]
    Syntax {
        file: Option<PathBuf>,
        message: String,
    },
    #[error("{}config is invalid:\n{}", file_prefix(.file), format_field_errors(.errors))]
    Invalid {
        file: Option<PathBuf>,
        errors: Vec<FieldError>,
    },
}

/// One problem with the config: the path of the field (`registries[0].hosts[1]`) and what is wrong.
///
/// # What a message may show
///
/// Config errors are printed by `check-config` and logged at ERROR when a reload is refused, so they
/// must never carry a credential. The rule, for `problem` and for `field` alike:
///
/// - Always allowed: field paths built from the schema's own field names and list indexes, what a
///   field expects (a type, the allowed values) and the *kind* of node found ("found a string").
/// - Never shown: a node of the wrong kind (whatever the field: a password pasted where a mapping
///   belongs is exactly the mistake to expect), any value under a registry's `credentials`, an
///   unknown key under `credentials` unless it is one of the credential schema's own names or a
///   near miss of one (ignoring case, `-` and `_`, at most two characters off: a typo), and an
///   unknown key anywhere that does not look like a field name (1-63 ASCII letters, digits, `-`,
///   `_`, `.`). Credential *file paths* are not values in this sense: `check-config` names the
///   file it cannot use, but only once it is known to be an absolute path; a relative one (maybe
///   a password typed where its file belongs) is not shown.
/// - Shown, because a reader needs them to find the mistake and they name things rather than
///   grant access: the string values of naming fields outside `credentials` once read as strings
///   (registry names, host patterns, presets, Secret names, namespaces, label and annotation keys,
///   label selectors, `failureMode`, `provisioning.budget`, `healthCheck.interval`, `probeHosts`,
///   `caFile`).
/// - YAML syntax errors give libyaml's fixed description and the line and column; a key given twice
///   is reported without the key.
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

fn file_prefix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|file| format!("{}: ", file.display()))
        .unwrap_or_default()
}

impl ConfigError {
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Self::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }

    /// A syntax error (the text cannot be parsed at all). `message` must carry no value.
    pub fn syntax(message: impl Into<String>) -> Self {
        Self::Syntax {
            file: None,
            message: message.into(),
        }
    }

    /// The same error, naming the file the config was read from.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            Self::Syntax { message, .. } => Self::Syntax {
                file: Some(path.to_owned()),
                message,
            },
            Self::Invalid { errors, .. } => Self::Invalid {
                file: Some(path.to_owned()),
                errors,
            },
            read @ Self::Read { .. } => read,
        }
    }
}

// The file's shape. Kept apart from `Config` so that validation turns loose text into checked types.
// Every field is a `Node`: reading never fails, and validation reports every problem at once. The
// structs do not deny unknown fields: `serde_ignored` collects them with their paths (see `shape`).
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawConfig {
    registries: Node<Vec<Node<RawRegistry>>>,
    skip_namespaces: Node<Vec<Node<String>>>,
    namespace_selector: Node<RawSelector>,
    opt_out: Node<RawOptOut>,
    failure_mode: Node<String>,
    provisioning: Node<RawProvisioning>,
    health_check: Node<RawHealthCheck>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawRegistry {
    name: Node<String>,
    hosts: Node<Vec<Node<String>>>,
    preset: Node<String>,
    secret_name: Node<String>,
    // `credentials: {gcpJsonKey: {...}}` rather than a YAML tag: exactly one of these.
    credentials: Node<RawCredentials>,
    health_check: Node<RawHealthCheck>,
    probe_hosts: Node<Vec<Node<String>>>,
    ca_file: Node<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawHealthCheck {
    enabled: Node<bool>,
    interval: Node<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawCredentials {
    gcp_json_key: Node<RawGcpKey>,
    gcp_workload_identity: Node<RawWorkloadIdentity>,
    gcp_workload_identity_federation: Node<RawFederation>,
    basic_auth: Node<RawBasicAuth>,
    docker_config_json: Node<RawFile>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawGcpKey {
    file: Node<String>,
    mode: Node<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawWorkloadIdentity {
    service_account: Node<String>,
    metadata_url: Node<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawFederation {
    credential_config_file: Node<String>,
    audience: Node<String>,
    subject_token_file: Node<String>,
    service_account: Node<String>,
    token_lifetime: Node<String>,
    token_url: Node<String>,
    iam_credentials_url: Node<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawBasicAuth {
    username_file: Node<String>,
    password_file: Node<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawFile {
    file: Node<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawOptOut {
    label: Node<String>,
    annotation: Node<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawProvisioning {
    budget: Node<String>,
}

/// A Kubernetes label selector, read in this file's lenient way and then handed to the stock type.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawSelector {
    match_labels: Node<Entries>,
    match_expressions: Node<Vec<Node<RawRequirement>>>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawRequirement {
    key: Node<String>,
    operator: Node<String>,
    values: Node<Vec<Node<String>>>,
}

shape::mapping_shape!(
    RawConfig {
        null_is_empty: false
    },
    RawRegistry {
        null_is_empty: false
    },
    RawCredentials {
        null_is_empty: false
    },
    RawGcpKey {
        null_is_empty: false
    },
    // `gcpWorkloadIdentity:` with nothing after it means the defaults, like `{}`.
    RawWorkloadIdentity {
        null_is_empty: true
    },
    RawFederation {
        null_is_empty: false
    },
    RawBasicAuth {
        null_is_empty: false
    },
    RawFile {
        null_is_empty: false
    },
    RawOptOut {
        null_is_empty: false
    },
    RawProvisioning {
        null_is_empty: false
    },
    RawHealthCheck {
        null_is_empty: true
    },
    RawSelector {
        null_is_empty: false
    },
    RawRequirement {
        null_is_empty: false
    },
);

const FAILURE_MODES: [(&str, FailureMode); 2] =
    [("allow", FailureMode::Allow), ("deny", FailureMode::Deny)];
const GCP_KEY_MODES: [(&str, GcpKeyMode); 2] = [
    ("jsonKey", GcpKeyMode::JsonKey),
    ("accessToken", GcpKeyMode::AccessToken),
];

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml_str(&text).map_err(|e| e.in_file(path))
    }

    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::syntax(
                "the file is empty; it needs at least `registries:`",
            ));
        }
        let tree: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| ConfigError::syntax(syntax_problem(&e)))?;
        let (raw, unknown) = shape::read::<RawConfig>(tree).map_err(|_| {
            // Reading a parsed tree into `Node`s does not fail on content; the error's text is not
            // used in case it quotes some.
            ConfigError::syntax("the document cannot be read")
        })?;
        validate(raw, &unknown)
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

    /// Reads every credential file the config names and checks it as `serve` will use it; every
    /// problem found, each naming its file and the reason (never the file's content). `serve` itself
    /// does not require this: it waits for files to appear and reloads them when they change.
    pub fn check_credential_files(&self) -> Vec<crate::provisioning::FileProblem> {
        crate::provisioning::credentials::check_files(self)
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

/// YAML that cannot be parsed at all: libyaml's fixed description with its line and column. The
/// only parse error that quotes the document is the duplicate key, so it is described here instead.
fn syntax_problem(error: &serde_norway::Error) -> String {
    let text = error.to_string();
    // serde_norway writes it as `<path>: duplicate entry with key "<key>" at line L column C`.
    if text.contains("duplicate entry") {
        let at = error
            .location()
            .map(|l| format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or_default();
        return format!("a mapping has the same key twice{at}");
    }
    text
}

/// Collects problems as validation finds them.
#[derive(Default)]
struct Report {
    errors: Vec<FieldError>,
}

impl Report {
    fn error(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            problem: problem.into(),
        });
    }

    /// The node's value, if it is there and of the right kind; a wrong kind is reported.
    fn optional<T>(&mut self, field: &str, node: Node<T>) -> Option<T> {
        match node {
            Node::Absent => None,
            Node::Wrong { expected, found } => {
                self.error(field, format!("expected {expected}, found {found}"));
                None
            }
            Node::Read(value) => Some(value),
        }
    }

    /// Like [`Self::optional`], and reports the field missing.
    fn required<T>(&mut self, field: &str, node: Node<T>) -> Option<T> {
        if matches!(node, Node::Absent) {
            self.error(field, "is required");
        }
        self.optional(field, node)
    }

    /// The items of a list, each with its field path; items of the wrong kind (or null) are
    /// reported and left out.
    fn list<T>(&mut self, field: &str, node: Node<Vec<Node<T>>>) -> Vec<(String, T)> {
        let items = self.optional(field, node).unwrap_or_default();
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let at = format!("{field}[{index}]");
            if matches!(item, Node::Absent) {
                self.error(&at, "is null");
            } else if let Some(value) = self.optional(&at, item) {
                out.push((at, value));
            }
        }
        out
    }

    /// An enum-like string field: one of `choices`, or the default when absent. With `echo`, a bad
    /// value is quoted; without (under `credentials`), it is not.
    fn choice<T: Copy>(
        &mut self,
        field: &str,
        node: Node<String>,
        choices: &[(&str, T)],
        default: T,
        echo: bool,
    ) -> T {
        let Some(text) = self.optional(field, node) else {
            return default;
        };
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
            return *value;
        }
        let allowed = choices
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ");
        if echo {
            self.error(field, format!("{text:?} is not one of: {allowed}"));
        } else {
            self.error(
                field,
                format!(
                    "is not one of: {allowed} (the value is not shown: nothing under `credentials` is)"
                ),
            );
        }
        default
    }
}

fn validate(raw: Node<RawConfig>, unknown: &[Vec<Segment>]) -> Result<Config, ConfigError> {
    let mut report = Report::default();
    for path in unknown {
        report.errors.push(unknown_field(path));
    }
    let raw = match raw {
        Node::Read(raw) => raw,
        Node::Absent => {
            report.error(
                shape::TOP_LEVEL,
                "the document is empty; it needs at least `registries:`",
            );
            RawConfig::default()
        }
        Node::Wrong { found, .. } => {
            report.error(
                shape::TOP_LEVEL,
                format!("expected a mapping of settings, found {found}"),
            );
            RawConfig::default()
        }
    };

    let global_check = health_check_settings(&mut report, "healthCheck", raw.health_check);
    let raw_registries = report.list("registries", raw.registries);
    if raw_registries.is_empty() && !report.errors.iter().any(|e| e.field == "registries") {
        report.error("registries", "at least one registry entry is required");
    }
    let mut registries = Vec::with_capacity(raw_registries.len());
    let mut names = HashSet::new();
    let mut secret_names = HashSet::new();
    for (entry, raw) in raw_registries {
        let at = |field: &str| format!("{entry}.{field}");
        let name = match report.required(&at("name"), raw.name) {
            Some(name) if !is_dns1123_label(&name) => {
                report.error(
                    at("name"),
                    format!(
                        "{name:?} must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
                    ),
                );
                name
            }
            Some(name) => {
                if !names.insert(name.clone()) {
                    report.error(
                        at("name"),
                        format!("{name:?} is used by an earlier entry; names must be unique"),
                    );
                }
                name
            }
            None => String::new(),
        };
        let secret_name = match report.required(&at("secretName"), raw.secret_name) {
            Some(secret) if !is_dns1123_subdomain(&secret) => {
                report.error(
                    at("secretName"),
                    format!(
                        "{secret:?} is not a valid Secret name (lowercase a-z, 0-9, '-' and '.', at most 253 characters, starting and ending with a letter or digit)"
                    ),
                );
                secret
            }
            Some(secret) => {
                if !secret_names.insert(secret.clone()) {
                    report.error(
                        at("secretName"),
                        format!(
                            "{secret:?} is used by an earlier entry; two entries cannot share one Secret (merge their hosts into one entry)"
                        ),
                    );
                }
                secret
            }
            None => String::new(),
        };
        let preset_given = !matches!(raw.preset, Node::Absent);
        let mut pattern_texts: Vec<(String, String)> = Vec::new();
        match report.optional(&at("preset"), raw.preset).as_deref() {
            None => {}
            Some("gcp") => pattern_texts.extend(
                GCP_HOST_PATTERNS
                    .iter()
                    .map(|p| ((*p).to_owned(), at("preset"))),
            ),
            Some(other) => report.error(
                at("preset"),
                format!("unknown preset {other:?}; known presets: gcp"),
            ),
        }
        pattern_texts.extend(
            report
                .list(&at("hosts"), raw.hosts)
                .into_iter()
                .map(|(field, text)| (text, field)),
        );
        let hosts_reported = report
            .errors
            .iter()
            .any(|e| e.field.starts_with(&at("hosts")));
        if pattern_texts.is_empty() && !preset_given && !hosts_reported {
            report.error(
                at("hosts"),
                "list at least one host pattern, or set `preset: gcp`",
            );
        }
        let mut hosts: Vec<HostPattern> = Vec::with_capacity(pattern_texts.len());
        for (text, field) in pattern_texts {
            match HostPattern::parse(&text) {
                // A pattern given twice (say by the preset and by hosts) would only repeat an auths key.
                Ok(pattern) if hosts.contains(&pattern) => {}
                Ok(pattern) => hosts.push(pattern),
                Err(problem) => report.error(field, problem.to_string()),
            }
        }
        let credentials_at = at("credentials");
        let credentials = report
            .optional(&credentials_at, raw.credentials)
            .and_then(|raw| credential_source(&mut report, &credentials_at, raw, unknown));
        let own_check = health_check_settings(&mut report, &at("healthCheck"), raw.health_check);
        let health_check = HealthCheck {
            enabled: credentials.is_some()
                && own_check.enabled.or(global_check.enabled).unwrap_or(true),
            interval: own_check
                .interval
                .or(global_check.interval)
                .unwrap_or(DEFAULT_HEALTH_CHECK_INTERVAL),
        };
        let mut probe_hosts = Vec::new();
        for (field, host) in report.list(&at("probeHosts"), raw.probe_hosts) {
            match probe_host_problem(&host, &hosts) {
                Some(problem) => report.error(field, format!("{host:?} {problem}")),
                None if probe_hosts.contains(&host) => {}
                None => probe_hosts.push(host),
            }
        }
        let ca_file = report
            .optional(&at("caFile"), raw.ca_file)
            .and_then(|file| {
                let path = PathBuf::from(&file);
                if path.is_absolute() {
                    Some(path)
                } else {
                    report.error(at("caFile"), format!("{file:?} must be an absolute path"));
                    None
                }
            });
        registries.push(Registry {
            name,
            hosts,
            secret_name,
            credentials,
            health_check,
            probe_hosts,
            ca_file,
        });
    }

    let mut skip_namespaces: Vec<String> = Vec::new();
    for (field, ns) in report.list("skipNamespaces", raw.skip_namespaces) {
        if !is_dns1123_label(&ns) {
            report.error(field, format!("{ns:?} is not a valid namespace name"));
        }
        skip_namespaces.push(ns);
    }
    for system in SYSTEM_NAMESPACES {
        if !skip_namespaces.iter().any(|ns| ns == system) {
            skip_namespaces.push(system.to_owned());
        }
    }
    let namespace_selector = report
        .optional("namespaceSelector", raw.namespace_selector)
        .and_then(|raw| label_selector(&mut report, raw))
        .and_then(|selector| match kube::core::Selector::try_from(selector) {
            Ok(selector) => Some(selector),
            Err(problem) => {
                report.error("namespaceSelector", problem.to_string());
                None
            }
        });

    let opt_out = match report.optional("optOut", raw.opt_out) {
        None => OptOut::default(),
        Some(raw) => OptOut {
            label: report
                .optional("optOut.label", raw.label)
                .filter(|k| !k.is_empty()),
            annotation: report
                .optional("optOut.annotation", raw.annotation)
                .filter(|k| !k.is_empty()),
        },
    };
    for (field, key) in [
        ("optOut.label", &opt_out.label),
        ("optOut.annotation", &opt_out.annotation),
    ] {
        if let Some(key) = key
            && !is_qualified_name(key)
        {
            report.error(
                field,
                format!(
                    "{key:?} is not a valid label/annotation key (optional DNS prefix and '/', then 1-63 characters of letters, digits, '-', '_', '.')"
                ),
            );
        }
    }

    let failure_mode = report.choice(
        "failureMode",
        raw.failure_mode,
        &FAILURE_MODES,
        FailureMode::default(),
        true,
    );

    let mut provisioning = Provisioning::default();
    let budget = report
        .optional("provisioning", raw.provisioning)
        .and_then(|p| report.optional("provisioning.budget", p.budget));
    if let Some(budget) = budget {
        match parse_go_duration(&budget) {
            Some(d) if d.is_zero() || d > MAX_PROVISIONING_BUDGET => report.error(
                "provisioning.budget",
                format!(
                    "{budget:?} must be above 0 and at most {} (the webhook must answer within its timeout)",
                    format_duration(MAX_PROVISIONING_BUDGET)
                ),
            ),
            Some(d) => provisioning.budget = d,
            None => report.error(
                "provisioning.budget",
                format!("{budget:?} is not a duration (write e.g. \"2s\" or \"1500ms\")"),
            ),
        }
    }

    if !report.errors.is_empty() {
        return Err(ConfigError::Invalid {
            file: None,
            errors: report.errors,
        });
    }
    Ok(Config {
        registries,
        skip_namespaces,
        namespace_selector,
        opt_out,
        failure_mode,
        provisioning,
    })
}

/// `healthCheck` as written; what is not given comes from the global setting or the defaults.
#[derive(Default)]
struct HealthCheckSettings {
    enabled: Option<bool>,
    interval: Option<Duration>,
}

fn health_check_settings(
    report: &mut Report,
    at: &str,
    node: Node<RawHealthCheck>,
) -> HealthCheckSettings {
    let Some(raw) = report.optional(at, node) else {
        return HealthCheckSettings::default();
    };
    let enabled = report.optional(&format!("{at}.enabled"), raw.enabled);
    let field = format!("{at}.interval");
    let interval =
        report
            .optional(&field, raw.interval)
            .and_then(|text| match parse_go_duration(&text) {
                Some(d) if (MIN_HEALTH_CHECK_INTERVAL..=MAX_HEALTH_CHECK_INTERVAL).contains(&d) => {
                    Some(d)
                }
                Some(_) => {
                    report.error(
                        &field,
                        format!(
                            "{text:?} must be between {} and {}",
                            format_duration(MIN_HEALTH_CHECK_INTERVAL),
                            format_duration(MAX_HEALTH_CHECK_INTERVAL)
                        ),
                    );
                    None
                }
                None => {
                    report.error(
                        &field,
                        format!("{text:?} is not a duration (write e.g. \"5m\")"),
                    );
                    None
                }
            });
    HealthCheckSettings { enabled, interval }
}

/// Why `host` cannot be a probe host of an entry with these patterns: it must be one concrete
/// `host[:port]` that one of the patterns covers (its Secret is used there).
/// A `probeHosts` entry: `host[:port]`, or `host[:port]/repository` to check pull access to that
/// repository (on Artifact Registry the login alone does not show a missing reader role).
pub fn probe_target(probe: &str) -> (&str, Option<&str>) {
    match probe.split_once('/') {
        Some((host, repository)) => (host, Some(repository)),
        None => (probe, None),
    }
}

fn probe_host_problem(probe: &str, patterns: &[HostPattern]) -> Option<&'static str> {
    if probe.contains('*') {
        return Some("is a wildcard; list concrete hosts only");
    }
    let (host, repository) = probe_target(probe);
    if let Some(repository) = repository {
        return match crate::admission::ImageReference::parse(probe) {
            Ok(reference)
                if reference.domain == host
                    && reference.path == repository
                    && reference.tag.is_none()
                    && reference.digest.is_none()
                    && !reference.is_docker_hub() =>
            {
                (!patterns.iter().any(|pattern| pattern.matches(&reference)))
                    .then_some("is not covered by the entry's host patterns")
            }
            _ => Some("is not a registry host[:port] or host[:port]/repository"),
        };
    }
    let image = format!("{host}/probe");
    let reference = match crate::admission::ImageReference::parse(&image) {
        Ok(reference) if reference.domain == host && !reference.is_docker_hub() => reference,
        _ => return Some("is not a registry host[:port] or host[:port]/repository"),
    };
    let covered = patterns.iter().any(|pattern| {
        // A pattern with a path ("gcr.io/my-project") covers the host for images under that path.
        match pattern.as_str().split_once('/') {
            Some((_, path)) => {
                crate::admission::ImageReference::parse(&format!("{host}/{path}/probe"))
                    .is_ok_and(|r| pattern.matches(&r))
            }
            None => pattern.matches(&reference),
        }
    });
    (!covered).then_some("is not covered by the entry's host patterns")
}

/// The one source a registry's `credentials` names. Nothing under `credentials` is quoted back but
/// absolute file paths (see [`FieldError`]).
fn credential_source(
    report: &mut Report,
    at: &str,
    raw: RawCredentials,
    unknown: &[Vec<Segment>],
) -> Option<CredentialSource> {
    let kinds = shape::fields_of::<RawCredentials>();
    let given: Vec<&str> = [
        ("gcpJsonKey", !matches!(raw.gcp_json_key, Node::Absent)),
        (
            "gcpWorkloadIdentity",
            !matches!(raw.gcp_workload_identity, Node::Absent),
        ),
        (
            "gcpWorkloadIdentityFederation",
            !matches!(raw.gcp_workload_identity_federation, Node::Absent),
        ),
        ("basicAuth", !matches!(raw.basic_auth, Node::Absent)),
        (
            "dockerConfigJson",
            !matches!(raw.docker_config_json, Node::Absent),
        ),
    ]
    .into_iter()
    .filter_map(|(kind, given)| given.then_some(kind))
    .collect();
    if given.len() > 1 {
        report.error(
            at,
            format!(
                "names {} credential sources ({}); an entry has exactly one",
                given.len(),
                given.join(", ")
            ),
        );
        return None;
    }
    if given.is_empty() {
        // An unknown key here is already reported as an unknown credential source.
        let unknown_here = unknown
            .iter()
            .any(|path| shape::format_path(path).starts_with(&format!("{at}.")));
        if !unknown_here {
            report.error(
                at,
                format!(
                    "names no credential source; expected one of: {}",
                    kinds.join(", ")
                ),
            );
        }
        return None;
    }
    let file = credential_file;
    let errors_before = report.errors.len();
    let source = if let Some(key) = report.optional(&format!("{at}.gcpJsonKey"), raw.gcp_json_key) {
        let file = file(report, format!("{at}.gcpJsonKey.file"), key.file);
        let mode = report.choice(
            &format!("{at}.gcpJsonKey.mode"),
            key.mode,
            &GCP_KEY_MODES,
            GcpKeyMode::default(),
            false,
        );
        file.map(|file| CredentialSource::GcpJsonKey(GcpKeySource { file, mode }))
    } else if let Some(identity) = report.optional(
        &format!("{at}.gcpWorkloadIdentity"),
        raw.gcp_workload_identity,
    ) {
        let service_account = report.optional(
            &format!("{at}.gcpWorkloadIdentity.serviceAccount"),
            identity.service_account,
        );
        let metadata_url = report.optional(
            &format!("{at}.gcpWorkloadIdentity.metadataUrl"),
            identity.metadata_url,
        );
        Some(CredentialSource::GcpWorkloadIdentity(
            WorkloadIdentitySource {
                service_account,
                metadata_url,
            },
        ))
    } else if let Some(federation) = report.optional(
        &format!("{at}.gcpWorkloadIdentityFederation"),
        raw.gcp_workload_identity_federation,
    ) {
        federation_source(
            report,
            &format!("{at}.gcpWorkloadIdentityFederation"),
            federation,
        )
    } else if let Some(basic) = report.optional(&format!("{at}.basicAuth"), raw.basic_auth) {
        let username_file = file(
            report,
            format!("{at}.basicAuth.usernameFile"),
            basic.username_file,
        );
        let password_file = file(
            report,
            format!("{at}.basicAuth.passwordFile"),
            basic.password_file,
        );
        username_file
            .zip(password_file)
            .map(|(username_file, password_file)| {
                CredentialSource::BasicAuth(BasicAuthSource {
                    username_file,
                    password_file,
                })
            })
    } else if let Some(docker) =
        report.optional(&format!("{at}.dockerConfigJson"), raw.docker_config_json)
    {
        file(report, format!("{at}.dockerConfigJson.file"), docker.file)
            .map(|file| CredentialSource::DockerConfigJson(FileSource { file }))
    } else {
        None
    };
    (report.errors.len() == errors_before)
        .then_some(source)
        .flatten()
}

/// A required credential file path, which must be absolute.
fn credential_file(report: &mut Report, field: String, node: Node<String>) -> Option<PathBuf> {
    let path = PathBuf::from(report.required(&field, node)?);
    if path.is_absolute() {
        Some(path)
    } else {
        report.error(
            field,
            "must be an absolute path (the value is not shown: nothing under `credentials` is)",
        );
        None
    }
}

/// `gcpWorkloadIdentityFederation`: a credential config file, or the inline fields (`audience` and
/// `subjectTokenFile` required). Problems name the field and what it expects, never its value.
fn federation_source(
    report: &mut Report,
    at: &str,
    raw: RawFederation,
) -> Option<CredentialSource> {
    let file = credential_file;
    use crate::provisioning::gcp_auth::{
        AUDIENCE_FORMAT, MAX_IMPERSONATED_LIFETIME, MIN_IMPERSONATED_LIFETIME, check_audience,
        check_endpoint_url,
    };
    let inline_given = [
        ("audience", !matches!(raw.audience, Node::Absent)),
        (
            "subjectTokenFile",
            !matches!(raw.subject_token_file, Node::Absent),
        ),
        (
            "serviceAccount",
            !matches!(raw.service_account, Node::Absent),
        ),
        ("tokenLifetime", !matches!(raw.token_lifetime, Node::Absent)),
        ("tokenUrl", !matches!(raw.token_url, Node::Absent)),
        (
            "iamCredentialsUrl",
            !matches!(raw.iam_credentials_url, Node::Absent),
        ),
    ];
    if !matches!(raw.credential_config_file, Node::Absent) {
        let extra: Vec<&str> = inline_given
            .iter()
            .filter_map(|(name, given)| given.then_some(*name))
            .collect();
        if !extra.is_empty() {
            report.error(
                at,
                format!(
                    "gives `credentialConfigFile` and inline fields ({}); the file holds them all, give one or the other",
                    extra.join(", ")
                ),
            );
            return None;
        }
        return file(
            report,
            format!("{at}.credentialConfigFile"),
            raw.credential_config_file,
        )
        .map(|path| {
            CredentialSource::GcpWorkloadIdentityFederation(FederationSource::CredentialConfigFile(
                path,
            ))
        });
    }
    if !inline_given.iter().any(|(_, given)| *given) {
        report.error(
            at,
            "needs `credentialConfigFile`, or `audience` and `subjectTokenFile` (with optional `serviceAccount`, `tokenLifetime`)",
        );
        return None;
    }
    let hidden = "(the value is not shown: nothing under `credentials` is)";
    let audience = report
        .required(&format!("{at}.audience"), raw.audience)
        .filter(|audience| match check_audience(audience) {
            Ok(()) => true,
            Err(_) => {
                report.error(
                    format!("{at}.audience"),
                    format!("must be {AUDIENCE_FORMAT} {hidden}"),
                );
                false
            }
        });
    let subject_token_file = file(
        report,
        format!("{at}.subjectTokenFile"),
        raw.subject_token_file,
    );
    let service_account = report
        .optional(&format!("{at}.serviceAccount"), raw.service_account)
        .filter(|email| {
            let ok = email.contains('@') && email.contains('.');
            if !ok {
                report.error(
                    format!("{at}.serviceAccount"),
                    format!("must be a service account's e-mail address {hidden}"),
                );
            }
            ok
        });
    let token_lifetime = report
        .optional(&format!("{at}.tokenLifetime"), raw.token_lifetime)
        .and_then(|text| match parse_go_duration(&text) {
            Some(d) if (MIN_IMPERSONATED_LIFETIME..=MAX_IMPERSONATED_LIFETIME).contains(&d) => {
                Some(d)
            }
            _ => {
                report.error(
                    format!("{at}.tokenLifetime"),
                    format!("must be a duration from 10m to 12h {hidden}"),
                );
                None
            }
        });
    if token_lifetime.is_some() && service_account.is_none() {
        report.error(
            format!("{at}.tokenLifetime"),
            "applies only with `serviceAccount`: without impersonation the token lives as long as STS says",
        );
    }
    let mut url = |name: &str, node: Node<String>| {
        let field = format!("{at}.{name}");
        report
            .optional(&field, node)
            .filter(|url| match check_endpoint_url(url) {
                Ok(_) => true,
                Err(problem) => {
                    report.error(field, format!("{problem} {hidden}"));
                    false
                }
            })
    };
    let token_url = url("tokenUrl", raw.token_url);
    let iam_credentials_url = url("iamCredentialsUrl", raw.iam_credentials_url);
    let fields = InlineFederation {
        audience: audience?,
        subject_token_file: subject_token_file?,
        service_account,
        token_lifetime,
        token_url,
        iam_credentials_url,
    };
    // The checks above cover what the token flow checks; this catches anything they miss.
    if let Err(error) = fields.external_account() {
        report.error(at, error.to_string());
        return None;
    }
    Some(CredentialSource::GcpWorkloadIdentityFederation(
        FederationSource::Inline(fields),
    ))
}

fn label_selector(
    report: &mut Report,
    raw: RawSelector,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    let errors_before = report.errors.len();
    let match_labels = report
        .optional("namespaceSelector.matchLabels", raw.match_labels)
        .map(|entries| {
            let mut labels = std::collections::BTreeMap::new();
            for (key, value) in entries.0 {
                let Some(key) = report.required("namespaceSelector.matchLabels", key) else {
                    continue;
                };
                let field = format!("namespaceSelector.matchLabels.{key}");
                if let Some(value) = report.required(&field, value) {
                    labels.insert(key, value);
                }
            }
            labels
        });
    let match_expressions = report
        .list("namespaceSelector.matchExpressions", raw.match_expressions)
        .into_iter()
        .map(|(at, raw)| LabelSelectorRequirement {
            key: report
                .required(&format!("{at}.key"), raw.key)
                .unwrap_or_default(),
            operator: report
                .required(&format!("{at}.operator"), raw.operator)
                .unwrap_or_default(),
            values: match raw.values {
                Node::Absent => None,
                values => Some(
                    report
                        .list(&format!("{at}.values"), values)
                        .into_iter()
                        .map(|(_, value)| value)
                        .collect(),
                ),
            },
        })
        .collect::<Vec<_>>();
    (report.errors.len() == errors_before).then(|| LabelSelector {
        match_labels,
        match_expressions: (!match_expressions.is_empty()).then_some(match_expressions),
    })
}

/// An unknown key, by its path. Its name is shown only when it looks like a field name and, under
/// `credentials`, only when it is one of the credential schema's own names or a near miss of one
/// (see [`FieldError`]).
fn unknown_field(path: &[Segment]) -> FieldError {
    let Some((Segment::Key(key), parent)) = path.split_last() else {
        return FieldError {
            field: shape::format_path(path),
            problem: "is not part of the config".into(),
        };
    };
    let known = known_fields(parent);
    let expected = if known.is_empty() {
        String::new()
    } else {
        format!("; expected one of: {}", known.join(", "))
    };
    let is_source = matches!(
        parent,
        [Segment::Key(r), Segment::Index(_), Segment::Key(c)] if r == "registries" && c == "credentials"
    );
    let what = if is_source {
        "unknown credential source"
    } else {
        "unknown field"
    };
    let show = looks_like_field_name(key)
        && (!under_credentials(parent)
            || credential_field_names().any(|name| same_name(name, key)));
    if show {
        FieldError {
            field: shape::format_path(path),
            problem: format!("{what}{expected}"),
        }
    } else {
        let reason = if under_credentials(parent) {
            "nothing under `credentials` is shown but the schema's own names and near misses"
        } else {
            "it does not look like a field name"
        };
        FieldError {
            field: shape::format_path(parent),
            problem: format!("has an {what} (its name is not shown: {reason}){expected}"),
        }
    }
}

fn under_credentials(parent: &[Segment]) -> bool {
    matches!(
        parent,
        [Segment::Key(r), Segment::Index(_), Segment::Key(c), ..] if r == "registries" && c == "credentials"
    )
}

/// The fields the shape knows where an unknown key was found.
fn known_fields(parent: &[Segment]) -> &'static [&'static str] {
    let steps: Vec<&str> = parent
        .iter()
        .map(|segment| match segment {
            Segment::Key(key) => key.as_str(),
            Segment::Index(_) => "[]",
        })
        .collect();
    match steps.as_slice() {
        [] => shape::fields_of::<RawConfig>(),
        ["registries", "[]"] => shape::fields_of::<RawRegistry>(),
        ["registries", "[]", "credentials"] => shape::fields_of::<RawCredentials>(),
        ["registries", "[]", "credentials", "gcpJsonKey"] => shape::fields_of::<RawGcpKey>(),
        ["registries", "[]", "credentials", "gcpWorkloadIdentity"] => {
            shape::fields_of::<RawWorkloadIdentity>()
        }
        [
            "registries",
            "[]",
            "credentials",
            "gcpWorkloadIdentityFederation",
        ] => shape::fields_of::<RawFederation>(),
        ["registries", "[]", "credentials", "basicAuth"] => shape::fields_of::<RawBasicAuth>(),
        ["registries", "[]", "credentials", "dockerConfigJson"] => shape::fields_of::<RawFile>(),
        ["optOut"] => shape::fields_of::<RawOptOut>(),
        ["provisioning"] => shape::fields_of::<RawProvisioning>(),
        ["healthCheck"] | ["registries", "[]", "healthCheck"] => {
            shape::fields_of::<RawHealthCheck>()
        }
        ["namespaceSelector"] => shape::fields_of::<RawSelector>(),
        ["namespaceSelector", "matchExpressions", "[]"] => shape::fields_of::<RawRequirement>(),
        _ => &[],
    }
}

/// Every name the credential schema uses, at any depth under `credentials`.
fn credential_field_names() -> impl Iterator<Item = &'static str> {
    [
        shape::fields_of::<RawCredentials>(),
        shape::fields_of::<RawGcpKey>(),
        shape::fields_of::<RawWorkloadIdentity>(),
        shape::fields_of::<RawFederation>(),
        shape::fields_of::<RawBasicAuth>(),
        shape::fields_of::<RawFile>(),
    ]
    .into_iter()
    .flatten()
    .copied()
}

/// A schema name or a near miss of one: equal but for ASCII case, `-`, `_` and at most two typed
/// characters (`passwordfile`, `password_file`, `pasword_file` and `passwordFiles` all are
/// `passwordFile`'s). Whatever passes is at most two characters away from a public name.
fn same_name(name: &str, key: &str) -> bool {
    let fold = |s: &str| {
        s.bytes()
            .filter(|b| !matches!(b, b'-' | b'_'))
            .map(|b| b.to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    edit_distance(&fold(name), &fold(key)) <= 2
}

/// Levenshtein distance (insertions, deletions, substitutions) of two short byte strings.
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(x != y);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

fn looks_like_field_name(key: &str) -> bool {
    (1..=63).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
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
    name_ok && prefix.is_none_or(is_dns1123_subdomain)
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
                "registries[0].credentials.gcpJsonKey.file",
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
    fn wrong_kinds_are_field_errors_naming_what_was_expected() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "registries:\n- {name: a, secretName: s, hosts: gcr.io}",
                "registries[0].hosts",
                "expected a list, found a string",
            ),
            (
                "registries:\n- {name: [a], secretName: s, hosts: [gcr.io]}",
                "registries[0].name",
                "expected a string, found a list",
            ),
            (
                "registries:\n- {name: a, secretName: 7, hosts: [gcr.io, {}]}",
                "registries[0].hosts[1]",
                "expected a string, found a mapping",
            ),
            (
                "registries:\n- just-a-name",
                "registries[0]",
                "expected a mapping, found a string",
            ),
            (
                "registries:\n- {name: a, secretName: s, hosts: [gcr.io]}\nprovisioning: {budget: 2}",
                "provisioning.budget",
                "expected a string, found a number",
            ),
            (
                "registries:\n- {name: a, secretName: s, hosts: [gcr.io]}\nnamespaceSelector: {matchLabels: {tier: [a]}}",
                "namespaceSelector.matchLabels.tier",
                "expected a string, found a list",
            ),
            ("- a\n- b\n", "(top level)", "found a list"),
        ];
        for (text, field, needle) in cases {
            let err = Config::from_yaml_str(text).expect_err(text);
            let found = err.field_errors().iter().find(|e| e.field == *field);
            let found = found.unwrap_or_else(|| panic!("no error on {field} for {text:?}: {err}"));
            assert!(found.problem.contains(needle), "{field}: {found}");
        }
    }

    #[test]
    fn unknown_keys_at_every_depth_are_reported_together_with_their_paths() {
        let text = r#"
registries:
  - name: gcp
    preset: gcp
    secretName: gcr-pull
    secret: gcr-pull
    credentials:
      gcpJsonKey: {file: /etc/psi/key.json, fiel: /etc/psi/other.json, Pw-S3cr3t: x}
  - name: lab
    hosts: [registry.lab]
    secretName: lab-pull
    credentials:
      basicAuth: {usernameFile: /u, passwordFile: /p, passwordfile: /q}
  - name: vault
    hosts: [vault.lab]
    secretName: vault-pull
    credentials: {vault: {path: /x}}
  - name: typo
    hosts: [typo.lab]
    secretName: typo-pull
    credentials: {basicAuh: {usernameFile: /u, passwordFile: /p}}
skipNamespace: [psi]
optOut: {lable: x}
provisioning: {budget: 2s, timeout: 5s}
namespaceSelector:
  matchExpressions:
  - {key: tier, operator: In, values: [a], value: [a]}
"#;
        // (field, text the problem must contain)
        let expected: &[(&str, &str)] = &[
            (
                "registries[0].secret",
                "unknown field; expected one of: name, hosts",
            ),
            (
                "registries[0].credentials.gcpJsonKey.fiel",
                "unknown field; expected one of: file, mode",
            ),
            (
                "registries[0].credentials.gcpJsonKey",
                "has an unknown field (its name is not shown",
            ),
            (
                "registries[1].credentials.basicAuth.passwordfile",
                "unknown field; expected one of: usernameFile, passwordFile",
            ),
            (
                "registries[2].credentials",
                "has an unknown credential source (its name is not shown",
            ),
            (
                "registries[3].credentials.basicAuh",
                "unknown credential source; expected one of: gcpJsonKey",
            ),
            (
                "skipNamespace",
                "unknown field; expected one of: registries",
            ),
            ("optOut.lable", "expected one of: label, annotation"),
            ("provisioning.timeout", "expected one of: budget"),
            (
                "namespaceSelector.matchExpressions[0].value",
                "expected one of: key, operator, values",
            ),
        ];
        let err = Config::from_yaml_str(text).expect_err("unknown keys");
        for (field, needle) in expected {
            let found = err.field_errors().iter().find(|e| e.field == *field);
            let found = found.unwrap_or_else(|| panic!("no error on {field}: {err}"));
            assert!(found.problem.contains(needle), "{found}");
        }
        assert_eq!(err.field_errors().len(), expected.len(), "{err}");
        // The hidden keys' names are nowhere in the message.
        for hidden in ["vault", "S3cr3t"] {
            assert!(!err.to_string().contains(hidden), "{err}");
        }
    }

    #[test]
    fn bad_enum_values_are_reported_with_the_other_errors() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "registries:\n- {name: Bad_Name, secretName: s, hosts: [gcr.io], credentials: {gcpJsonKey: {file: /k.json, mode: sometimes}}}\nfailureMode: maybe\nprovisioning: {budget: soon}\nextra: 1",
                &[
                    ("registries[0].name", "a-z"),
                    (
                        "registries[0].credentials.gcpJsonKey.mode",
                        "is not one of: jsonKey, accessToken (the value is not shown",
                    ),
                    ("failureMode", "\"maybe\" is not one of: allow, deny"),
                    ("provisioning.budget", "not a duration"),
                    ("extra", "unknown field"),
                ],
            ),
            (
                "registries:\n- {name: a, secretName: s, hosts: [gcr.io], credentials: {gcpJsonKey: {file: /k.json, mode: [jsonKey]}}}\nfailureMode: 1",
                &[
                    (
                        "registries[0].credentials.gcpJsonKey.mode",
                        "expected a string, found a list",
                    ),
                    ("failureMode", "expected a string, found a number"),
                ],
            ),
            (
                "registries:\n- {name: a, secretName: s, hosts: [gcr.io], credentials: {}}\n- {name: b, secretName: t, hosts: [gcr.io], credentials: {gcpWorkloadIdentity: {}, basicAuth: {usernameFile: /u, passwordFile: /p}}}\nfailureMode: Deny",
                &[
                    ("registries[0].credentials", "names no credential source"),
                    (
                        "registries[1].credentials",
                        "names 2 credential sources (gcpWorkloadIdentity, basicAuth)",
                    ),
                    ("failureMode", "\"Deny\" is not one of: allow, deny"),
                ],
            ),
        ];
        for (text, expected) in cases {
            let err = Config::from_yaml_str(text).expect_err(text);
            for (field, needle) in *expected {
                let found = err.field_errors().iter().find(|e| e.field == *field);
                let found = found.unwrap_or_else(|| panic!("no error on {field}: {err}"));
                assert!(found.problem.contains(needle), "{found}");
            }
            assert_eq!(err.field_errors().len(), expected.len(), "{err}");
            assert!(!err.to_string().contains("sometimes"), "{err}");
        }
    }

    /// What a user might paste into the config by mistake: a password and a service-account key.
    const PASSWORD: &str = "ci-robot:Pw-S3cr3t";
    const KEY_TEXT: &str = r#"{"type": "service_account", "project_id": "acme", "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n", "client_email": "puller@acme.iam.gserviceaccount.com"}"#;

    #[test]
    fn wrong_typed_credential_fields_name_the_field_and_never_the_value() {
        let key_as_yaml_string = format!("'{KEY_TEXT}'");
        let cases: Vec<(String, &str, &str)> = vec![
            (
                format!("{{basicAuth: \"{PASSWORD}\"}}"),
                "registries[0].credentials.basicAuth",
                "expected a mapping, found a string",
            ),
            (
                format!("\"{PASSWORD}\""),
                "registries[0].credentials",
                "expected a mapping, found a string",
            ),
            (
                format!("{{basicAuth: {{usernameFile: /u, passwordFile: [\"{PASSWORD}\"]}}}}"),
                "registries[0].credentials.basicAuth.passwordFile",
                "expected a string, found a list",
            ),
            (
                "{basicAuth: {usernameFile: ci-robot, passwordFile: Pw-S3cr3t}}".to_owned(),
                "registries[0].credentials.basicAuth.passwordFile",
                "must be an absolute path (the value is not shown",
            ),
            (
                format!("{{basicAuth: {{usernameFile: /u, passwordFile: /p, \"{PASSWORD}\": 1}}}}"),
                "registries[0].credentials.basicAuth",
                "has an unknown field (its name is not shown",
            ),
            (
                "{basicAuth: {usernameFile: /u, passwordFile: /p, Pw-S3cr3t: 1}}".to_owned(),
                "registries[0].credentials.basicAuth",
                "has an unknown field (its name is not shown",
            ),
            (
                format!("{{\"{PASSWORD}\": {{}}}}"),
                "registries[0].credentials",
                "has an unknown credential source (its name is not shown",
            ),
            (
                format!("{{gcpJsonKey: {key_as_yaml_string}}}"),
                "registries[0].credentials.gcpJsonKey",
                "expected a mapping, found a string",
            ),
            (
                format!("{{gcpJsonKey: {{file: {key_as_yaml_string}}}}}"),
                "registries[0].credentials.gcpJsonKey.file",
                "must be an absolute path",
            ),
            (
                // The key pasted as a flow mapping: its keys are unknown, its values never read.
                format!("{{gcpJsonKey: {KEY_TEXT}}}"),
                "registries[0].credentials.gcpJsonKey.file",
                "is required",
            ),
            (
                format!("{{gcpJsonKey: {{file: /k.json, mode: \"{PASSWORD}\"}}}}"),
                "registries[0].credentials.gcpJsonKey.mode",
                "is not one of: jsonKey, accessToken",
            ),
            (
                format!(
                    "{{dockerConfigJson: {{file: {{auths: {{r.io: {{auth: \"{PASSWORD}\"}}}}}}}}}}"
                ),
                "registries[0].credentials.dockerConfigJson.file",
                "expected a string, found a mapping",
            ),
            (
                format!("{{gcpWorkloadIdentity: {{metadataUrl: [\"{PASSWORD}\"]}}}}"),
                "registries[0].credentials.gcpWorkloadIdentity.metadataUrl",
                "expected a string, found a list",
            ),
        ];
        let secrets = [
            "S3cr3t",
            "ci-robot",
            "PRIVATE KEY",
            "MIIEvQIBADANBg",
            "puller@acme",
            "service_account",
            "project_id",
        ];
        for (credentials, field, needle) in &cases {
            let text = format!(
                "registries:\n- name: lab\n  hosts: [registry.lab]\n  secretName: lab-pull\n  credentials: {credentials}\n"
            );
            let err = Config::from_yaml_str(&text).expect_err(&text);
            let found = err.field_errors().iter().find(|e| e.field == *field);
            let found = found.unwrap_or_else(|| panic!("no error on {field} for {text}: {err}"));
            assert!(found.problem.contains(needle), "{found}");
            let err = err.in_file(Path::new("/etc/psi/config.yaml"));
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(
                    shown.starts_with("/etc/psi/config.yaml: ") || shown.starts_with("Invalid")
                );
                for secret in secrets {
                    assert!(!shown.contains(secret), "{secret:?} in {shown}");
                }
            }
        }
    }

    #[test]
    fn syntax_errors_stop_at_the_first_with_a_position_and_no_value() {
        let cases = [
            ("", "empty"),
            (
                "registries: [",
                "did not find expected node content at line 2 column 1",
            ),
            (
                "registries:\n- name: a\n  credentials: {\"ci-robot:Pw-S3cr3t\": 1, \"ci-robot:Pw-S3cr3t\": 2}\n",
                "same key twice at line 3",
            ),
            (
                "registries:\n- name: a\n  credentials: {basicAuth: \"ci-robot:Pw-S3cr3t\n",
                "line",
            ),
        ];
        for (text, needle) in cases {
            match Config::from_yaml_str(text) {
                Err(err @ ConfigError::Syntax { .. }) => {
                    let message = err.to_string();
                    assert!(message.contains(needle), "{message}");
                    assert!(!message.contains("S3cr3t"), "{message}");
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn workload_identity_with_nothing_after_it_means_the_defaults() {
        for credentials in [
            "{gcpWorkloadIdentity: {}}",
            "{gcpWorkloadIdentity: }",
            "{gcpWorkloadIdentity: ~}",
        ] {
            let text = format!(
                "registries:\n- {{name: gcp, preset: gcp, secretName: gcr-pull, credentials: {credentials}}}\n"
            );
            let config = Config::from_yaml_str(&text).expect(&text);
            assert_eq!(
                config.registries[0].credentials,
                Some(CredentialSource::GcpWorkloadIdentity(
                    WorkloadIdentitySource::default()
                )),
                "{credentials}"
            );
        }
    }

    #[test]
    fn workload_identity_federation_takes_a_credential_config_file_or_inline_fields() {
        let entry = |credentials: &str| {
            format!(
                "registries:\n- {{name: gcp, preset: gcp, secretName: gcr-pull, credentials: {{gcpWorkloadIdentityFederation: {credentials}}}}}\n"
            )
        };
        let audience = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/home-lab/providers/k3s-cluster";
        let config = Config::from_yaml_str(&entry(
            "{credentialConfigFile: /etc/gcp/credential-config.json}",
        ))
        .expect("file form");
        let source = config.registries[0].credentials.as_ref().expect("source");
        assert_eq!(
            source.files(),
            vec![Path::new("/etc/gcp/credential-config.json")]
        );
        assert_eq!(
            source.to_string(),
            "gcpWorkloadIdentityFederation from /etc/gcp/credential-config.json"
        );

        let config = Config::from_yaml_str(&entry(&format!(
            "{{audience: \"{audience}\", subjectTokenFile: /var/run/secrets/tokens/gcp/token, serviceAccount: puller@acme.iam.gserviceaccount.com, tokenLifetime: 30m}}"
        )))
        .expect("inline form");
        let Some(CredentialSource::GcpWorkloadIdentityFederation(FederationSource::Inline(fields))) =
            &config.registries[0].credentials
        else {
            panic!("{:?}", config.registries[0].credentials);
        };
        assert_eq!(fields.token_lifetime, Some(Duration::from_secs(1800)));
        let account = fields.external_account().expect("flow");
        assert_eq!(
            account.impersonation().map(|i| i.lifetime()),
            Some(Duration::from_secs(1800))
        );

        let secret = "SECRETISH";
        let cases = [
            (
                format!("{{credentialConfigFile: /c.json, audience: \"{audience}\"}}"),
                "registries[0].credentials.gcpWorkloadIdentityFederation",
                "one or the other",
            ),
            (
                "{}".to_owned(),
                "registries[0].credentials.gcpWorkloadIdentityFederation",
                "needs `credentialConfigFile`",
            ),
            (
                format!(
                    "{{audience: \"//iam.googleapis.com/projects/{secret}\", subjectTokenFile: /t}}"
                ),
                "registries[0].credentials.gcpWorkloadIdentityFederation.audience",
                "workloadIdentityPools/POOL_ID",
            ),
            (
                format!("{{audience: \"{audience}\"}}"),
                "registries[0].credentials.gcpWorkloadIdentityFederation.subjectTokenFile",
                "is required",
            ),
            (
                format!("{{audience: \"{audience}\", subjectTokenFile: /t, tokenLifetime: 1h}}"),
                "registries[0].credentials.gcpWorkloadIdentityFederation.tokenLifetime",
                "only with `serviceAccount`",
            ),
            (
                format!(
                    "{{audience: \"{audience}\", subjectTokenFile: /t, serviceAccount: a@b.c, tokenLifetime: 1m}}"
                ),
                "registries[0].credentials.gcpWorkloadIdentityFederation.tokenLifetime",
                "from 10m to 12h",
            ),
            (
                format!(
                    "{{audience: \"{audience}\", subjectTokenFile: /t, tokenUrl: \"http://sts.example.com/{secret}\"}}"
                ),
                "registries[0].credentials.gcpWorkloadIdentityFederation.tokenUrl",
                "must use https",
            ),
            (
                format!("{{audience: \"{audience}\", subjectTokenFile: relative/{secret}}}"),
                "registries[0].credentials.gcpWorkloadIdentityFederation.subjectTokenFile",
                "absolute path",
            ),
        ];
        for (credentials, field, needle) in cases {
            let err = Config::from_yaml_str(&entry(&credentials)).expect_err(&credentials);
            let found = err
                .field_errors()
                .iter()
                .find(|e| e.field == field)
                .unwrap_or_else(|| panic!("{credentials}: {err}"));
            assert!(found.problem.contains(needle), "{credentials}: {err}");
            assert!(!err.to_string().contains(secret), "echoes a value: {err}");
        }
    }

    #[test]
    fn health_check_is_on_for_entries_with_credentials_and_follows_the_global_setting() {
        let text = r#"
healthCheck: { interval: 2m }
registries:
  - name: lab
    hosts: ["registry.lab.example.com:5000", "*.mirror.example.com"]
    secretName: lab-pull
    credentials:
      basicAuth: { usernameFile: /etc/psi/lab/username, passwordFile: /etc/psi/lab/password }
    probeHosts: ["eu.mirror.example.com", "eu.mirror.example.com", "registry.lab.example.com:5000/team/app"]
    caFile: /etc/psi/lab-ca/ca.crt
  - name: quiet
    hosts: ["quiet.example.com"]
    secretName: quiet-pull
    credentials:
      basicAuth: { usernameFile: /etc/psi/q/username, passwordFile: /etc/psi/q/password }
    healthCheck: { enabled: false }
  - name: plain
    hosts: ["plain.example.com"]
    secretName: plain-pull
    healthCheck: { enabled: true, interval: 30s }
"#;
        let config = Config::from_yaml_str(text).expect("valid");
        let [lab, quiet, plain] = &config.registries[..] else {
            panic!("three entries");
        };
        assert_eq!(
            lab.health_check,
            HealthCheck {
                enabled: true,
                interval: Duration::from_secs(120)
            }
        );
        assert_eq!(
            lab.probe_hosts,
            [
                "eu.mirror.example.com",
                "registry.lab.example.com:5000/team/app"
            ]
        );
        assert_eq!(
            probe_target(&lab.probe_hosts[1]),
            ("registry.lab.example.com:5000", Some("team/app"))
        );
        assert_eq!(probe_target("gcr.io"), ("gcr.io", None));
        assert_eq!(
            lab.ca_file.as_deref(),
            Some(Path::new("/etc/psi/lab-ca/ca.crt"))
        );
        assert!(!quiet.health_check.enabled);
        assert_eq!(quiet.health_check.interval, Duration::from_secs(120));
        // Nothing to check without credentials, whatever the entry says.
        assert!(!plain.health_check.enabled);
        assert_eq!(plain.health_check.interval, Duration::from_secs(30));

        let defaults = Config::from_yaml_str(
            "registries:\n- {name: a, hosts: [a.example.com], secretName: a, credentials: {dockerConfigJson: {file: /d}}}\n",
        )
        .expect("valid");
        assert_eq!(
            defaults.registries[0].health_check,
            HealthCheck {
                enabled: true,
                interval: DEFAULT_HEALTH_CHECK_INTERVAL
            }
        );
    }

    #[test]
    fn bad_health_check_settings_and_probe_hosts_name_their_field() {
        let text = r#"
healthCheck: { enabled: "yes", interval: 1s }
registries:
  - name: lab
    hosts: ["registry.lab.example.com:5000", "*.mirror.example.com", "gcr.io/acme"]
    secretName: lab-pull
    healthCheck: { interval: soon, every: 5m }
    probeHosts: ["*.mirror.example.com", "other.example.com", "gcr.io", "not a host", "eu.mirror.example.com", "gcr.io/acme/app", "gcr.io/other/app", "gcr.io/acme/App:1"]
    caFile: ca.crt
"#;
        let errors = Config::from_yaml_str(text)
            .expect_err("invalid")
            .field_errors()
            .to_vec();
        let expected = [
            (
                "healthCheck.enabled",
                "expected true or false, found a string",
            ),
            (
                "healthCheck.interval",
                "\"1s\" must be between 10s and 86400s",
            ),
            (
                "registries[0].healthCheck.interval",
                "\"soon\" is not a duration",
            ),
            (
                "registries[0].healthCheck.every",
                "unknown field; expected one of: enabled, interval",
            ),
            ("registries[0].probeHosts[0]", "is a wildcard"),
            (
                "registries[0].probeHosts[1]",
                "is not covered by the entry's host patterns",
            ),
            (
                "registries[0].probeHosts[3]",
                "is not a registry host[:port] or host[:port]/repository",
            ),
            (
                "registries[0].probeHosts[6]",
                "is not covered by the entry's host patterns",
            ),
            (
                "registries[0].probeHosts[7]",
                "is not a registry host[:port] or host[:port]/repository",
            ),
            ("registries[0].caFile", "must be an absolute path"),
        ];
        for (field, needle) in expected {
            assert!(
                errors
                    .iter()
                    .any(|e| e.field == field && e.problem.contains(needle)),
                "{field}: {needle} not in {errors:#?}"
            );
        }
        // gcr.io is covered by "gcr.io/acme" (for images under acme/), the mirror host by its wildcard.
        for fine in [
            "registries[0].probeHosts[2]",
            "registries[0].probeHosts[4]",
            "registries[0].probeHosts[5]",
        ] {
            assert!(
                !errors.iter().any(|e| e.field == fine),
                "{fine}: {errors:#?}"
            );
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
