#![forbid(unsafe_code)]

use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use pullsecret_injector::cli::{
    CheckConfigArgs, Cli, Command, DevCertsArgs, K3sRegistriesArgs, LogFormat, MutateArgs,
    MutateOutput, ServeArgs, devcerts, k3s, preview,
};
use pullsecret_injector::config::Config;
use pullsecret_injector::provisioning::{
    KubePullSecrets, ProvisionerOptions, PullSecrets, ReferenceOnly,
};
use pullsecret_injector::serving::{App, BodyLimits, Metrics, ServeOptions, ServerOptions};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Mutate(args) => mutate(args).await,
            Command::CheckConfig(args) => check_config(args),
            Command::DevCerts(args) => dev_certs(args),
            Command::K3sRegistries(args) => k3s_registries(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // kube-client logs response bodies it cannot decode, at warn and below: they can hold
    // credentials. Its errors are logged by this program, by status and reason.
    let filter = match "kube_client=error".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    init_logging(args.log_format);
    let metrics = Arc::new(Metrics::new());
    let provisioner = provisioner_for(&args, metrics.clone()).await?;
    let pull_secrets: Arc<dyn PullSecrets> = match &provisioner {
        Some(provisioner) => Arc::new(provisioner.clone()),
        None => Arc::new(ReferenceOnly),
    };
    let mut options = ServeOptions::new(args.config, args.tls_dir, args.listen, pull_secrets);
    options.metrics = metrics;
    options.metrics_listen = args.metrics_listen;
    options.client_ca_file = args.client_ca_file;
    options.server = ServerOptions {
        header_read_timeout: args.header_read_timeout,
        drain_timeout: args.shutdown_timeout,
        max_connections: args.max_connections,
        ..ServerOptions::default()
    };
    options.bodies = BodyLimits {
        read_timeout: args.body_read_timeout,
        ..BodyLimits::default()
    };
    let app = App::start(options).await.map_err(|e| e.to_string())?;
    wait_for_signal().await;
    tracing::info!("shutdown signal received; draining");
    app.shutdown();
    app.wait().await;
    if let Some(provisioner) = provisioner {
        provisioner.stop();
    }
    tracing::info!("stopped");
    Ok(())
}

/// With credential sources configured, the webhook needs the Kubernetes API to write Secrets; without
/// any, it only injects references and runs anywhere (locally, without a cluster).
async fn provisioner_for(
    args: &ServeArgs,
    metrics: Arc<Metrics>,
) -> Result<Option<KubePullSecrets>, String> {
    let config = Config::from_file(&args.config).map_err(|e| e.to_string())?;
    let needs_api = config.registries.iter().any(|r| r.credentials.is_some());
    match kube::Client::try_default().await {
        Ok(client) => Ok(Some(KubePullSecrets::start(
            client,
            metrics,
            ProvisionerOptions::default(),
        ))),
        Err(error) if needs_api => Err(format!(
            "credential sources are configured, but the Kubernetes API is not reachable to write pull Secrets: {error}"
        )),
        Err(error) => {
            tracing::warn!(%error, "no Kubernetes API: injecting references only; no pull Secret is written");
            Ok(None)
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn mutate(args: MutateArgs) -> Result<(), String> {
    let config = Config::from_file(&args.config).map_err(|e| e.to_string())?;
    let text = if args.file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        text
    } else {
        std::fs::read_to_string(&args.file)
            .map_err(|e| format!("cannot read {}: {e}", args.file))?
    };
    if text.trim().is_empty() {
        return Err(format!(
            "{} is empty: expected a Pod, as YAML or JSON",
            if args.file == "-" {
                "standard input"
            } else {
                &args.file
            }
        ));
    }
    let input_is_json = text.trim_start().starts_with('{');
    let pod = preview::parse_pod(&text).map_err(|e| e.to_string())?;
    let checks = if args.check_registries {
        preview::check_registries(&config, &pod, REGISTRY_CHECK_TIMEOUT).await
    } else {
        Vec::new()
    };
    let result = preview::preview(&config, pod, args.namespace.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    for warning in &result.warnings {
        eprintln!("Warning: {warning}");
    }
    // An empty patch is an answer too: say why, as the webhook's metrics and logs would.
    if result.patch.0.is_empty() {
        let reason = result.reason.as_deref().unwrap_or("nothing to add");
        eprintln!("No patch: {reason}");
    }
    for check in &checks {
        eprintln!("Registry check: {check}");
    }
    let output = match args.output {
        MutateOutput::Patch => {
            serde_json::to_string_pretty(&result.patch).map_err(|e| e.to_string())?
        }
        MutateOutput::Pod if input_is_json => {
            serde_json::to_string_pretty(&result.mutated_pod).map_err(|e| e.to_string())?
        }
        MutateOutput::Pod => {
            serde_norway::to_string(&result.mutated_pod).map_err(|e| e.to_string())?
        }
    };
    println!("{}", output.trim_end());
    let rejected = checks.iter().filter(|c| c.is_rejected()).count();
    if rejected > 0 {
        return Err(format!(
            "the registry rejected the credentials for {rejected} image(s): pulls would fail"
        ));
    }
    Ok(())
}

/// Bound on each image's registry check in `mutate --check-registries`.
const REGISTRY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Checks what `serve` would load: the config, then every credential file it names.
fn check_config(args: CheckConfigArgs) -> Result<(), String> {
    let config = Config::from_file(&args.config).map_err(|e| e.to_string())?;
    let problems = config.check_credential_files();
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        return Err(format!(
            "{}: credential files that serve could not use:\n{}",
            args.config.display(),
            list.join("\n")
        ));
    }
    println!("{}: valid", args.config.display());
    for registry in &config.registries {
        let hosts: Vec<&str> = registry.hosts.iter().map(|h| h.as_str()).collect();
        let source = match &registry.credentials {
            None => "none (the reference only)".to_owned(),
            Some(source) => source.to_string(),
        };
        println!(
            "  registry {}: Secret {} for {}; credentials: {source}",
            registry.name,
            registry.secret_name,
            hosts.join(", ")
        );
        if registry.health_check.enabled {
            let mut check = format!(
                "    registry check every {}s on the hosts Pods use",
                registry.health_check.interval.as_secs()
            );
            if !registry.probe_hosts.is_empty() {
                check.push_str(&format!(" and {}", registry.probe_hosts.join(", ")));
            }
            if let Some(ca) = &registry.ca_file {
                check.push_str(&format!("; CA bundle {}", ca.display()));
            }
            println!("{check}");
        }
    }
    println!(
        "  skipped namespaces: {}",
        config.skip_namespaces.join(", ")
    );
    match &config.namespace_selector {
        Some(selector) => println!("  only namespaces labelled: {selector}"),
        None => println!("  namespaces: every one not skipped"),
    }
    let key = |key: &Option<String>| key.clone().unwrap_or_else(|| "none".to_owned());
    println!(
        "  opt-out label: {}; opt-out annotation: {}",
        key(&config.opt_out.label),
        key(&config.opt_out.annotation)
    );
    println!(
        "  failure mode: {}; provisioning budget: {} ms",
        config.failure_mode.as_str(),
        config.provisioning.budget.as_millis()
    );
    Ok(())
}

fn dev_certs(args: DevCertsArgs) -> Result<(), String> {
    let mut names = devcerts::default_names(&args.service, &args.namespace);
    names.extend(args.extra_names);
    let certs = devcerts::generate(&names, &format!("{}.{}.svc", args.service, args.namespace))
        .map_err(|e| e.to_string())?;
    certs.write_to(&args.out).map_err(|e| e.to_string())?;
    println!(
        "wrote {0}/ca.crt, {0}/tls.crt and {0}/tls.key for: {1}",
        args.out.display(),
        names.join(", ")
    );
    Ok(())
}

fn k3s_registries(args: K3sRegistriesArgs) -> Result<(), String> {
    let config = Config::from_file(&args.config).map_err(|e| e.to_string())?;
    let registries = k3s::build(&config, &args.hosts, &args.mirrors).map_err(|e| e.to_string())?;
    for skipped in &registries.skipped {
        eprintln!(
            "note: {skipped} is a wildcard pattern; k3s needs exact hosts: add them with --host"
        );
    }
    let text = k3s::render(&registries, &args.config.display().to_string());
    match args.output {
        None => print!("{text}"),
        Some(path) => write_private(&path, &text)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
    }
    Ok(())
}

/// Credentials on disk: readable by the owner only, from the moment the file exists.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}
