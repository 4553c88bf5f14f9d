//! The test suite's fake Kubernetes API (`tests/support/fake_api.rs`: core/v1 Secrets with state,
//! core/v1 Namespaces to read, the chart's least-privilege RBAC and a request log) as a standalone
//! process, for the load harness (`benches/load.sh`): the webhook's `kube::Client::try_default()`
//! reaches it through the kubeconfig written here (plain http on 127.0.0.1), and its memory stays out
//! of the webhook's RSS.
//!
//! Secrets can only be written into namespaces that exist: `--namespace NAME` (repeatable) creates
//! them at start.
//!
//! Besides the fake API itself it serves `GET /_stats` on a second loopback port: the requests the
//! fake has seen, by verb, as JSON, so a script can diff the counts around a phase.
//!
//! ```sh
//! cargo run --release --example fake_api_server -- --kubeconfig /tmp/kubeconfig \
//!   --namespace team-a --namespace team-b gcr-pull
//! # FAKE_API_URL=http://127.0.0.1:PORT
//! # STATS_URL=http://127.0.0.1:PORT2/_stats
//! KUBECONFIG=/tmp/kubeconfig target/release/pullsecret-injector serve ...
//! ```

#[path = "../tests/support/fake_api.rs"]
mod fake_api;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use clap::Parser;
use fake_api::{FakeApi, NAMESPACES, SECRETS};

#[derive(Parser)]
struct Args {
    /// Secret names the emulated RBAC lets the injector get/patch/list/watch (e.g. gcr-pull).
    /// Without any, RBAC is off (every verb allowed).
    allowed_names: Vec<String>,
    /// Where to write a kubeconfig pointing at the fake (plain http, no credentials).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Address of the /_stats endpoint (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    stats_listen: SocketAddr,
    /// A namespace that exists from the start (repeatable). Secrets written into a namespace that
    /// does not exist are refused (404), as by a real API server.
    #[arg(long = "namespace", value_name = "NAME")]
    namespaces: Vec<String>,
}

/// Verbs counted in `by_verb` (Secret requests; "unknown": requests the fake does not serve).
const VERBS: [&str; 9] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "unknown",
];

fn stats(api: &FakeApi) -> serde_json::Value {
    let requests = api.requests();
    let mut by_verb = serde_json::Map::new();
    for verb in VERBS {
        let n = requests
            .iter()
            .filter(|r| r.verb == verb && (r.is_secret() || verb == "unknown"))
            .count();
        by_verb.insert(verb.to_owned(), n.into());
    }
    let mut namespace_by_verb = serde_json::Map::new();
    for verb in ["get", "list", "watch"] {
        namespace_by_verb.insert(verb.to_owned(), api.count_on(NAMESPACES, verb).into());
    }
    let status_4xx = requests
        .iter()
        .filter(|r| (400..500).contains(&r.status))
        .count();
    let status_5xx = requests.iter().filter(|r| r.status >= 500).count();
    let mut namespaces_written: Vec<&str> = requests
        .iter()
        .filter(|r| r.is_secret() && r.reached_store && r.is_write())
        .filter_map(|r| r.namespace.as_deref())
        .collect();
    namespaces_written.sort_unstable();
    namespaces_written.dedup();
    serde_json::json!({
        "total": requests.len(),
        // Everything but the long-lived lists/watches (of the managed Secret name, of Namespaces).
        "per_request_calls": requests.iter().filter(|r| r.verb != "watch" && r.verb != "list").count(),
        "by_verb": by_verb,
        "namespace_requests_by_verb": namespace_by_verb,
        "writes": api.writes(),
        "namespaces_written": namespaces_written.len(),
        "status_4xx": status_4xx,
        "status_5xx": status_5xx,
        "rbac_violations": api.rbac_violations().len(),
        "secrets": api.all_secrets().len(),
        "active_watches": api.active_watches_on(SECRETS),
        "active_namespace_watches": api.active_watches_on(NAMESPACES),
        "namespaces": api.namespaces().len(),
    })
}

fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
         current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
    )
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if !args.stats_listen.ip().is_loopback() {
        return Err("--stats-listen must be a loopback address".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let names: Vec<&str> = args.allowed_names.iter().map(String::as_str).collect();
        let api = Arc::new(if names.is_empty() {
            FakeApi::start_permissive().await
        } else {
            FakeApi::start(&names).await
        });
        for namespace in &args.namespaces {
            api.ensure_namespace(namespace);
        }
        std::fs::write(&args.kubeconfig, kubeconfig(&api.url()))
            .map_err(|e| format!("write {}: {e}", args.kubeconfig.display()))?;

        let listener = tokio::net::TcpListener::bind(args.stats_listen)
            .await
            .map_err(|e| format!("bind {}: {e}", args.stats_listen))?;
        let stats_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let router = Router::new()
            .route(
                "/_stats",
                get(|State(api): State<Arc<FakeApi>>| async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        stats(&api).to_string(),
                    )
                }),
            )
            .with_state(api.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });

        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "FAKE_API_URL={}", api.url());
        let _ = writeln!(out, "STATS_URL=http://{stats_addr}/_stats");
        let _ = writeln!(out, "KUBECONFIG={}", args.kubeconfig.display());
        let _ = out.flush();
        drop(out);

        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok(())
    })
}
