//! Command-line interface. The chart and other tools rely on these names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod devcerts;
pub mod k3s;
pub mod preview;

#[derive(Debug, Parser)]
#[command(
    name = "pullsecret-injector",
    version,
    about = "Kubernetes admission webhook that makes private registry images just pull"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve admission reviews over HTTPS.
    Serve(ServeArgs),
    /// Offline preview: print the JSON Patch (or the mutated Pod) the webhook would produce for a Pod.
    Mutate(MutateArgs),
    /// Validate a config file and every credential file it names, and print what it configures.
    CheckConfig(CheckConfigArgs),
    /// Write a development CA and serving certificate (ca.crt, tls.crt, tls.key).
    DevCerts(DevCertsArgs),
    /// Render k3s's /etc/rancher/k3s/registries.yaml from the config and its credential sources.
    K3sRegistries(K3sRegistriesArgs),
}

#[derive(Debug, Args)]
pub struct K3sRegistriesArgs {
    /// Config file (YAML), as `serve` reads it.
    #[arg(long, env = "PULLSECRET_INJECTOR_CONFIG")]
    pub config: PathBuf,
    /// A concrete registry host for a wildcard pattern (k3s matches exact hosts), e.g.
    /// europe-west1-docker.pkg.dev. Repeatable.
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// A mirror: REGISTRY=ENDPOINT, e.g. docker.io=https://mirror.example.com. Repeatable.
    #[arg(long = "mirror")]
    pub mirrors: Vec<String>,
    /// Write here (mode 0600) instead of standard output.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (YAML).
    #[arg(long, env = "PULLSECRET_INJECTOR_CONFIG")]
    pub config: PathBuf,
    /// Directory holding tls.crt and tls.key (a kubernetes.io/tls Secret volume); reloaded on change.
    #[arg(long, env = "PULLSECRET_INJECTOR_TLS_DIR")]
    pub tls_dir: PathBuf,
    /// HTTPS address for /mutate, /healthz, /readyz and /metrics.
    /// A host name is resolved once, at start: `localhost:8443` listens on its first address.
    #[arg(
        long,
        env = "PULLSECRET_INJECTOR_LISTEN",
        default_value = "0.0.0.0:8443",
        value_parser = parse_listen
    )]
    pub listen: SocketAddr,
    /// Require every client of the HTTPS port to present a certificate that chains to the CA
    /// certificates in this PEM file (the API server presents one when its AdmissionConfiguration
    /// gives it a kubeconfig for the webhook). The kubelet's probes then need the plain-HTTP port.
    #[arg(long, env = "PULLSECRET_INJECTOR_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Optional plain-HTTP address serving only /metrics, /healthz and /readyz.
    #[arg(long, env = "PULLSECRET_INJECTOR_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log lines as text, or as one JSON object each.
    #[arg(long, env = "PULLSECRET_INJECTOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "PULLSECRET_INJECTOR_SHUTDOWN_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// A client must send its request headers within this time; also how long a keep-alive
    /// connection may wait idle for its next request.
    #[arg(long, env = "PULLSECRET_INJECTOR_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A request body must arrive within this time.
    #[arg(long, env = "PULLSECRET_INJECTOR_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// Connections past their TLS handshake at most; more are closed at once.
    #[arg(
        long,
        env = "PULLSECRET_INJECTOR_MAX_CONNECTIONS",
        default_value_t = 1024
    )]
    pub max_connections: usize,
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    /// Config file (YAML).
    #[arg(long, env = "PULLSECRET_INJECTOR_CONFIG")]
    pub config: PathBuf,
    /// The Pod, as YAML or JSON; `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: String,
    /// The namespace the Pod is created in (default: its metadata.namespace, else "default").
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = MutateOutput::Patch)]
    pub output: MutateOutput,
    /// Also try the configured credentials against the registry of each image (the Docker
    /// Registry v2 login handshake) and print the result per image. Needs network access to the
    /// registries; fails when a registry rejects the credentials.
    #[arg(long)]
    pub check_registries: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MutateOutput {
    /// The JSON Patch the webhook returns.
    Patch,
    /// The Pod after the patch, in the input's format.
    Pod,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Config file (YAML) to check, with the credential files it names.
    #[arg(long, env = "PULLSECRET_INJECTOR_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct DevCertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long, default_value = "certs/dev")]
    pub out: PathBuf,
    /// The webhook Service name (for the in-cluster DNS names).
    #[arg(long, default_value = "pullsecret-injector")]
    pub service: String,
    /// The namespace the webhook runs in.
    #[arg(long, default_value = "pullsecret-injector")]
    pub namespace: String,
    /// Extra DNS names or IP addresses for the certificate.
    #[arg(long = "name")]
    pub extra_names: Vec<String>,
}

/// `HOST:PORT`, the host an address or a name.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    text.to_socket_addrs()
        .map_err(|e| format!("{text:?} is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse_go_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration (write e.g. \"25s\" or \"500ms\")"))
}
