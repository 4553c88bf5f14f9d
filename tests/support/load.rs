//! Helpers for the hostile-input, log-hygiene and fault-under-load suites: raw HTTP/1.x over TLS with
//! a small response parser (for requests a well-behaved client cannot send), AdmissionReview
//! builders and checks, this process's resident memory, and a bounded closed-loop load generator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::TlsClient;

/// An AdmissionReview for a Pod CREATE with one container per image.
pub fn pod_review(uid: &str, namespace: &str, images: &[&str]) -> Vec<u8> {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    review_with_object(
        uid,
        namespace,
        "pods",
        "CREATE",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "load-", "namespace": namespace},
            "spec": {"containers": containers}
        }),
    )
}

/// An AdmissionReview envelope around any object.
pub fn review_with_object(
    uid: &str,
    namespace: &str,
    resource: &str,
    operation: &str,
    object: Value,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "namespace": namespace,
            "operation": operation,
            "object": object,
        }
    }))
    .expect("json")
}

/// Checks that `body` is a well-formed `admission.k8s.io/v1` AdmissionReview response for `uid`
/// and returns it parsed.
pub fn well_formed_review(body: &[u8], uid: &Value) -> Result<Value, String> {
    let response: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    })?;
    if response["apiVersion"] != "admission.k8s.io/v1" || response["kind"] != "AdmissionReview" {
        return Err(format!("not an AdmissionReview v1: {response}"));
    }
    if &response["response"]["uid"] != uid {
        return Err(format!(
            "uid {} not echoed: {}",
            uid, response["response"]["uid"]
        ));
    }
    if !response["response"]["allowed"].is_boolean() {
        return Err(format!("`allowed` is not a bool: {response}"));
    }
    if let Some(patch) = response["response"].get("patch") {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().ok_or("patch is not a string")?)
            .map_err(|e| format!("patch is not base64: {e}"))?;
        serde_json::from_slice::<json_patch::Patch>(&raw)
            .map_err(|e| format!("patch is not a JSON Patch: {e}"))?;
        if response["response"]["patchType"] != "JSONPatch" {
            return Err(format!("patch without patchType JSONPatch: {response}"));
        }
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.x over TLS
// ---------------------------------------------------------------------------------------------

/// An HTTP/1.1 request with `Host`, `Content-Length` (unless a `Transfer-Encoding` header is given)
/// and `Connection: close`, so that the server closes after answering and a reader can read to EOF.
pub fn http_request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let chunked = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("transfer-encoding"));
    if !chunked {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A POST of an AdmissionReview as the API server sends it (plus `Connection: close`).
pub fn review_request(body: &[u8]) -> Vec<u8> {
    http_request(
        "POST",
        "/mutate?timeout=10s",
        &[("Content-Type", "application/json")],
        body,
    )
}

/// `body` in the chunked transfer coding, `chunk` bytes a chunk.
pub fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// How a raw exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The server closed the connection (cleanly or not).
    Closed(String),
    /// Still open when the limit passed.
    TimedOut,
}

#[derive(Debug)]
pub struct RawOutcome {
    /// Everything the server sent before the end.
    pub bytes: Vec<u8>,
    pub end: End,
    pub elapsed: Duration,
}

impl RawOutcome {
    pub fn responses(&self) -> Vec<RawResponse> {
        parse_responses(&self.bytes)
    }
}

/// Sends `request` over a fresh verified TLS connection (ALPN http/1.1) while reading everything the
/// server sends until it closes or `limit` passes. The write runs beside the read, so a server that
/// answers before reading the whole body (413) is seen answering.
pub async fn raw_exchange(client: &TlsClient, request: Vec<u8>, limit: Duration) -> RawOutcome {
    let started = std::time::Instant::now();
    let tls = client
        .tls_stream(&[b"http/1.1"])
        .await
        .expect("TLS connect");
    let (mut reader, mut writer) = tokio::io::split(tls);
    let write = tokio::spawn(async move {
        // Errors are expected when the server stops reading (413, 431, ...).
        let _ = writer.write_all(&request).await;
        let _ = writer.flush().await;
        // Keep the write half open (no close_notify): the server decides when to close.
        writer
    });
    let mut bytes = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    let end = loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut buffer)).await {
            Err(_) => break End::TimedOut,
            Ok(Ok(0)) => break End::Closed("eof".into()),
            Ok(Ok(n)) => bytes.extend_from_slice(&buffer[..n]),
            Ok(Err(error)) => break End::Closed(format!("{:?}: {error}", error.kind())),
        }
    };
    write.abort();
    RawOutcome {
        bytes,
        end,
        elapsed: started.elapsed(),
    }
}

#[derive(Debug, Clone)]
pub struct RawResponse {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses back-to-back HTTP/1.x responses (Content-Length, chunked, or close-delimited bodies).
/// Interim 1xx responses are skipped; an incomplete trailing response is dropped.
pub fn parse_responses(mut bytes: &[u8]) -> Vec<RawResponse> {
    let mut responses = Vec::new();
    while let Some(head_end) = find(bytes, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_owned();
        let Some(status) = parts.next().and_then(|s| s.parse::<u16>().ok()) else {
            break;
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let rest = &bytes[head_end + 4..];
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        if (100..200).contains(&status) {
            bytes = rest;
            continue;
        }
        let (body, consumed) = if let Some(length) = header("content-length") {
            let Ok(length) = length.parse::<usize>() else {
                break;
            };
            if rest.len() < length {
                break;
            }
            (rest[..length].to_vec(), length)
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            match dechunk(rest) {
                Some(pair) => pair,
                None => break,
            }
        } else {
            (rest.to_vec(), rest.len())
        };
        responses.push(RawResponse {
            version,
            status,
            headers,
            body,
        });
        bytes = &rest[consumed..];
    }
    responses
}

fn dechunk(mut bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = bytes.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(bytes, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&bytes[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            // No trailers from this server.
            let end = find(bytes, b"\r\n")?;
            bytes = &bytes[end + 2..];
            return Some((body, total - bytes.len()));
        }
        if bytes.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// This process's resident set size (`VmRSS` in /proc/self/status), in bytes.
pub fn vm_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

/// Counters of a running load, shared with the test that steers it.
#[derive(Debug, Default)]
pub struct LoadStats {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Connections (re)opened, beyond the first of each worker.
    pub reconnects: AtomicU64,
    pub failures: std::sync::Mutex<Vec<String>>,
}

impl LoadStats {
    pub fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut failures) = self.failures.lock()
            && failures.len() < 50
        {
            failures.push(what);
        }
    }
    pub fn summary(&self) -> String {
        format!(
            "sent {} ok {} failed {} reconnects {}",
            self.sent.load(Ordering::SeqCst),
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            self.reconnects.load(Ordering::SeqCst)
        )
    }
}

/// One request of a load: the body to send and the uid its answer must echo.
pub struct LoadRequest {
    pub body: Vec<u8>,
    pub uid: String,
}

/// A keep-alive HTTP/1.1 connection (ALPN http/1.1, as the API server) that tells when the server
/// has closed it.
pub struct LoadConn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

pub struct LoadReply {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl LoadConn {
    pub async fn open(client: &TlsClient) -> std::io::Result<Self> {
        let tls = client.tls_stream(&[b"http/1.1"]).await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Self { sender })
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// POSTs a review to /mutate?timeout=10s.
    pub async fn review(&mut self, body: Vec<u8>) -> Result<LoadReply, hyper::Error> {
        use http_body_util::BodyExt as _;
        let request = hyper::Request::post("/mutate?timeout=10s")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("request");
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(LoadReply { status, body })
    }
}

/// Runs `connections` closed-loop workers, each on its own keep-alive HTTP/1.1 connection, sending
/// `make(worker, n)` until `stop` is set or `max_per_worker` requests were sent. Every answer must be
/// 200 and a well-formed review echoing the uid; anything else (including a transport error) is a
/// failure. A worker whose connection the server closed *after* an answer (never a request in
/// flight) opens a new one; that is counted in `reconnects`, not as a failure.
pub fn spawn_load<F>(
    client: Arc<TlsClient>,
    connections: usize,
    max_per_worker: u64,
    stop: Arc<AtomicBool>,
    stats: Arc<LoadStats>,
    make: F,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(usize, u64) -> LoadRequest + Send + Sync + 'static,
{
    let make = Arc::new(make);
    (0..connections)
        .map(|worker| {
            let client = client.clone();
            let stop = stop.clone();
            let stats = stats.clone();
            let make = make.clone();
            tokio::spawn(async move {
                let mut conn = match LoadConn::open(&client).await {
                    Ok(conn) => conn,
                    Err(error) => {
                        stats.fail(format!("worker {worker}: first connect: {error}"));
                        return;
                    }
                };
                for n in 0..max_per_worker {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if conn.is_closed() {
                        stats.reconnects.fetch_add(1, Ordering::SeqCst);
                        match LoadConn::open(&client).await {
                            Ok(new) => conn = new,
                            Err(error) => {
                                stats.fail(format!("worker {worker}: reconnect: {error}"));
                                return;
                            }
                        }
                    }
                    let request = make(worker, n);
                    stats.sent.fetch_add(1, Ordering::SeqCst);
                    let uid = Value::from(request.uid.clone());
                    match tokio::time::timeout(Duration::from_secs(30), conn.review(request.body))
                        .await
                    {
                        Ok(Ok(reply)) if reply.status == 200 => {
                            match well_formed_review(&reply.body, &uid) {
                                Ok(_) => {
                                    stats.ok.fetch_add(1, Ordering::SeqCst);
                                }
                                Err(e) => stats.fail(format!("worker {worker} #{n}: {e}")),
                            }
                        }
                        Ok(Ok(reply)) => stats.fail(format!(
                            "worker {worker} #{n}: status {}: {}",
                            reply.status,
                            String::from_utf8_lossy(&reply.body)
                        )),
                        Ok(Err(error)) => {
                            stats.fail(format!("worker {worker} #{n}: transport: {error:?}"));
                            // The connection is unusable after a transport error.
                            match LoadConn::open(&client).await {
                                Ok(new) => conn = new,
                                Err(error) => {
                                    stats.fail(format!("worker {worker}: reconnect: {error}"));
                                    return;
                                }
                            }
                        }
                        Err(_) => {
                            stats.fail(format!("worker {worker} #{n}: no answer in 30 s"));
                            return;
                        }
                    }
                }
            })
        })
        .collect()
}
