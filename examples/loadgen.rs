//! Load client for the webhook (and the no-op baseline): N TLS connections verified against a CA,
//! HTTP/1.1 keep-alive only (ALPN `http/1.1`, one request in flight per connection, as the API
//! server calls webhooks), `POST /mutate?timeout=10s` with AdmissionReview bodies read from files.
//!
//! Two modes:
//! - `--max`: closed loop, each connection sends its next request as soon as the previous answer
//!   arrived; gives the maximum throughput at that concurrency.
//! - `--rate R`: open loop, a fixed arrival rate spread evenly over the connections (request k of
//!   connection c is due at `start + (c + k·C)/R`). Coordinated omission is avoided as in wrk2: when
//!   a request is due while its connection is still busy with the previous one, its latency counts
//!   from the time it was due, not from when it could be sent. When the connection was idle, it
//!   counts from the actual send, so the timer's slack (tokio's timer has 1 ms granularity) is not
//!   charged to the server; `schedule_lag` reports that slack.
//!
//! All connections are opened (TLS handshakes done) before the clock starts. The run stops by itself
//! after `--duration` (at most 10 minutes) or `--requests`. It only connects to loopback addresses.
//!
//! ```sh
//! loadgen --target 127.0.0.1:8443 --ca certs/dev/ca.crt --body review.json --max --duration 10s --connections 32
//! loadgen --target 127.0.0.1:8443 --ca certs/dev/ca.crt --body review.json --rate 1000 --duration 20s --connections 16 --json
//! ```

#[path = "../benches/support/json.rs"]
mod json;
use json::compact;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

const MAX_DURATION: Duration = Duration::from_secs(600);
const MAX_CONNECTIONS: usize = 1024;

#[derive(Parser, Clone)]
#[command(about = "HTTPS load client for admission webhooks (loopback targets only)")]
struct Args {
    /// Server address; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    target: SocketAddr,
    /// Name to verify the server certificate against (and send as Host).
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// CA certificate (PEM) the server certificate must chain to.
    #[arg(long)]
    ca: PathBuf,
    #[arg(long, default_value = "/mutate?timeout=10s")]
    path: String,
    /// AdmissionReview body file; repeat for a mix (requests cycle through the bodies).
    #[arg(long = "body", required = true)]
    bodies: Vec<PathBuf>,
    /// Send the files as they are (default: compacted to one line, as the API server sends JSON).
    #[arg(long)]
    raw: bool,
    /// Make this many copies of every body, with the namespace set to `<prefix><i>`.
    #[arg(long, default_value_t = 0)]
    namespaces: usize,
    #[arg(long, default_value = "ns-")]
    namespace_prefix: String,
    /// Closed loop: as fast as possible.
    #[arg(long, conflicts_with = "rate")]
    max: bool,
    /// Open loop: this many requests per second in all.
    #[arg(long)]
    rate: Option<f64>,
    /// How long to run (e.g. 10s, 500ms, 2m); at most 10 minutes.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many requests in all (closed loop only).
    #[arg(long)]
    requests: Option<u64>,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Client runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Label for the output.
    #[arg(long, default_value = "")]
    label: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| text.split_at(i))
        .unwrap_or((text, "s"));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("bad duration unit in {text:?} (ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Every `"namespace":"..."` (compact JSON: request.namespace, object.metadata.namespace) set to `ns`.
fn with_namespace(body: &[u8], ns: &str) -> Vec<u8> {
    const NEEDLE: &[u8] = b"\"namespace\":\"";
    let mut out = Vec::with_capacity(body.len() + ns.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(NEEDLE) {
            out.extend_from_slice(NEEDLE);
            i += NEEDLE.len();
            while i < body.len() && body[i] != b'"' {
                i += 1;
            }
            out.extend_from_slice(ns.as_bytes());
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    out
}

fn load_bodies(args: &Args) -> Result<Vec<Bytes>, String> {
    let mut templates = Vec::new();
    for path in &args.bodies {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        templates.push(if args.raw { bytes } else { compact(&bytes) });
    }
    if args.namespaces == 0 {
        return Ok(templates.into_iter().map(Bytes::from).collect());
    }
    let mut bodies = Vec::with_capacity(templates.len() * args.namespaces);
    for i in 0..args.namespaces {
        let ns = format!("{}{i}", args.namespace_prefix);
        for template in &templates {
            bodies.push(Bytes::from(with_namespace(template, &ns)));
        }
    }
    Ok(bodies)
}

struct Client {
    connector: TlsConnector,
    target: SocketAddr,
    server_name: ServerName<'static>,
    host: String,
    path: String,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Client {
    async fn connect(&self) -> Result<Sender, String> {
        let tcp = TcpStream::connect(self.target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// One request; Ok(status, allowed, patched).
    async fn send(&self, sender: &mut Sender, body: Bytes) -> Result<(u16, bool, bool), String> {
        let request = hyper::Request::post(&self.path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .header("accept", "application/json, */*")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let allowed = contains(&body, b"\"allowed\":true");
        let patched = contains(&body, b"\"patch\":");
        Ok((status, allowed, patched))
    }
}

/// This process's user and system CPU time in seconds: the client's own share of a busy machine,
/// so a run can tell what the client spent per request on each server. `None` if it cannot be read.
fn process_cpu() -> Option<(f64, f64)> {
    // Fields 14 and 15 of /proc/self/stat, after the command name in parentheses, in clock ticks
    // (USER_HZ, 100 on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok().map(|t| t / 100.0);
    Some((ticks(11)?, ticks(12)?))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[derive(Default)]
struct Counters {
    ok: u64,
    errors: u64,
    non_200: u64,
    not_allowed: u64,
    patched: u64,
    /// Open loop: the largest delay between a request's due time and its send on an idle connection.
    schedule_lag_max_us: u64,
    /// Open loop: requests that were due while their connection was still busy.
    queued: u64,
    first_error: Option<String>,
}

struct Worker {
    histogram: Histogram<u64>,
    counters: Counters,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

#[allow(clippy::too_many_arguments)]
async fn run_connection(
    client: Arc<Client>,
    mut sender: Sender,
    index: usize,
    connections: usize,
    bodies: Arc<Vec<Bytes>>,
    next_body: Arc<AtomicU64>,
    budget: Option<u64>,
    rate: Option<f64>,
    barrier: Arc<Barrier>,
    start_cell: Arc<std::sync::OnceLock<Instant>>,
    duration: Duration,
) -> Worker {
    let mut worker = Worker {
        histogram: new_histogram(),
        counters: Counters::default(),
    };
    barrier.wait().await;
    let start = *start_cell.get_or_init(Instant::now);
    let deadline = start + duration;
    let mut previous_done = start;
    let mut k: u64 = 0;
    loop {
        let due = match rate {
            Some(rate) => {
                let offset = (index as f64 + k as f64 * connections as f64) / rate;
                start + Duration::from_secs_f64(offset)
            }
            None => Instant::now(),
        };
        if due >= deadline || Instant::now() >= deadline {
            break;
        }
        let n = next_body.fetch_add(1, Ordering::Relaxed);
        if budget.is_some_and(|budget| n >= budget) {
            break;
        }
        let body = bodies[(n % bodies.len() as u64) as usize].clone();
        let from = if rate.is_some() {
            if previous_done <= due {
                // Idle at the due time: wait for it, then time from the actual send.
                tokio::time::sleep_until(due).await;
                let sent = Instant::now();
                let lag = sent.saturating_duration_since(due).as_micros() as u64;
                worker.counters.schedule_lag_max_us = worker.counters.schedule_lag_max_us.max(lag);
                sent
            } else {
                // Still busy when it was due: its wait is part of its latency.
                worker.counters.queued += 1;
                due
            }
        } else {
            Instant::now()
        };
        k += 1;
        match client.send(&mut sender, body).await {
            Ok((status, allowed, patched)) => {
                let done = Instant::now();
                previous_done = done;
                let micros = done.saturating_duration_since(from).as_micros() as u64;
                worker.histogram.saturating_record(micros.max(1));
                if status != 200 {
                    worker.counters.non_200 += 1;
                } else {
                    worker.counters.ok += 1;
                    if !allowed {
                        worker.counters.not_allowed += 1;
                    }
                    if patched {
                        worker.counters.patched += 1;
                    }
                }
            }
            Err(error) => {
                worker.counters.errors += 1;
                worker.counters.first_error.get_or_insert(error);
                // Reconnect and go on (bounded by the deadline).
                loop {
                    if Instant::now() >= deadline {
                        return worker;
                    }
                    match client.connect().await {
                        Ok(new_sender) => {
                            sender = new_sender;
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                previous_done = Instant::now();
            }
        }
    }
    worker
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if !args.target.ip().is_loopback() {
        return Err(format!(
            "--target {} is not a loopback address: this tool only loads servers on this machine",
            args.target
        ));
    }
    if !args.max && args.rate.is_none() {
        return Err("choose --max (closed loop) or --rate R (open loop)".into());
    }
    if args.duration > MAX_DURATION {
        return Err(format!("--duration is at most {MAX_DURATION:?}"));
    }
    if args.connections == 0 || args.connections > MAX_CONNECTIONS {
        return Err(format!("--connections must be 1..={MAX_CONNECTIONS}"));
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate <= 1_000_000.0)
    {
        return Err("--rate must be in (0, 1000000]".into());
    }
    let bodies = Arc::new(load_bodies(&args)?);

    let mut roots = RootCertStore::empty();
    let ca_pem = std::fs::read(&args.ca).map_err(|e| format!("{}: {e}", args.ca.display()))?;
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        roots
            .add(cert.map_err(|e| format!("{}: {e}", args.ca.display()))?)
            .map_err(|e| e.to_string())?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = ServerName::try_from(args.server_name.clone()).map_err(|e| e.to_string())?;
    let client = Arc::new(Client {
        connector: TlsConnector::from(Arc::new(tls)),
        target: args.target,
        server_name,
        host: args.server_name.clone(),
        path: args.path.clone(),
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (workers, elapsed, client_cpu) = runtime.block_on(async {
        // Connect everything first: the handshakes are not part of the measurement.
        let mut senders = Vec::with_capacity(args.connections);
        for _ in 0..args.connections {
            senders.push(client.connect().await?);
        }
        let barrier = Arc::new(Barrier::new(args.connections + 1));
        let start_cell = Arc::new(std::sync::OnceLock::new());
        let next_body = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::with_capacity(args.connections);
        for (index, sender) in senders.into_iter().enumerate() {
            tasks.push(tokio::spawn(run_connection(
                client.clone(),
                sender,
                index,
                args.connections,
                bodies.clone(),
                next_body.clone(),
                args.requests,
                args.rate,
                barrier.clone(),
                start_cell.clone(),
                args.duration,
            )));
        }
        let cpu_before = process_cpu();
        let start = *start_cell.get_or_init(Instant::now);
        barrier.wait().await;
        let mut workers = Vec::with_capacity(tasks.len());
        for task in tasks {
            workers.push(task.await.map_err(|e| e.to_string())?);
        }
        let cpu_after = process_cpu();
        let cpu = cpu_before
            .zip(cpu_after)
            .map(|(before, after)| (after.0 - before.0, after.1 - before.1));
        Ok::<_, String>((workers, start.elapsed(), cpu))
    })?;

    let mut histogram = new_histogram();
    let mut total = Counters::default();
    for worker in workers {
        histogram
            .add(&worker.histogram)
            .map_err(|e| e.to_string())?;
        let c = worker.counters;
        total.ok += c.ok;
        total.errors += c.errors;
        total.non_200 += c.non_200;
        total.not_allowed += c.not_allowed;
        total.patched += c.patched;
        total.queued += c.queued;
        total.schedule_lag_max_us = total.schedule_lag_max_us.max(c.schedule_lag_max_us);
        if total.first_error.is_none() {
            total.first_error = c.first_error;
        }
    }
    let completed = total.ok + total.non_200;
    let seconds = elapsed.as_secs_f64();
    let rps = completed as f64 / seconds;
    let q = |quantile: f64| histogram.value_at_quantile(quantile);
    let mode = if args.max { "max" } else { "rate" };
    if args.json {
        let out = serde_json::json!({
            "label": args.label,
            "mode": mode,
            "target_rate": args.rate,
            "connections": args.connections,
            "bodies": bodies.len(),
            "body_bytes_first": bodies.first().map(|b| b.len()),
            "duration_s": seconds,
            "requests": completed,
            "ok": total.ok,
            "errors": total.errors,
            "non_200": total.non_200,
            "not_allowed": total.not_allowed,
            "patched": total.patched,
            "rps": rps,
            "client_cpu_user_s": client_cpu.map(|cpu| cpu.0),
            "client_cpu_system_s": client_cpu.map(|cpu| cpu.1),
            "queued": total.queued,
            "schedule_lag_max_us": total.schedule_lag_max_us,
            "first_error": total.first_error,
            "latency_us": {
                "min": histogram.min(),
                "mean": histogram.mean(),
                "p50": q(0.50),
                "p90": q(0.90),
                "p99": q(0.99),
                "p999": q(0.999),
                "max": histogram.max(),
            },
        });
        println!("{out}");
    } else {
        let rate = args
            .rate
            .map(|r| format!(" at {r} req/s"))
            .unwrap_or_default();
        println!(
            "{} {mode}{rate}: {completed} requests in {seconds:.2} s over {} connections = {rps:.0} req/s",
            args.label, args.connections
        );
        println!(
            "  ok {} (patched {}, not allowed {}), non-200 {}, errors {}{}",
            total.ok,
            total.patched,
            total.not_allowed,
            total.non_200,
            total.errors,
            total
                .first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        println!(
            "  latency µs: p50 {} p90 {} p99 {} p99.9 {} max {} (mean {:.0})",
            q(0.50),
            q(0.90),
            q(0.99),
            q(0.999),
            histogram.max(),
            histogram.mean()
        );
        if args.rate.is_some() {
            println!(
                "  due while busy: {}; max timer lag on idle connections: {} µs",
                total.queued, total.schedule_lag_max_us
            );
        }
    }
    Ok(())
}
