//! The HTTP edge: the webhook service (`POST /mutate` handled directly on hyper; `/healthz`,
//! `/readyz` and `/metrics` through an axum router) and the TLS accept loop that serves it with HTTP/1.1 keep-alive or HTTP/2, a header-read timeout, a connection limit
//! and a graceful drain on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::admission::{self, Outcome};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pull_secret::PullSecrets;
use crate::read_ahead::ReadAhead;

/// The API server sends at most 3 MiB; a little more leaves room for encoding overhead.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Ready when config and certificate are loaded, and not draining.
#[derive(Debug, Default)]
pub struct Readiness {
    config_loaded: AtomicBool,
    certificate_loaded: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    pub fn set_config_loaded(&self) {
        self.config_loaded.store(true, Ordering::Release);
    }
    pub fn set_certificate_loaded(&self) {
        self.certificate_loaded.store(true, Ordering::Release);
    }
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.config_loaded.load(Ordering::Acquire)
            && self.certificate_loaded.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ArcSwap<Config>>,
    pub pull_secrets: Arc<dyn PullSecrets>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// A request body must arrive within this time (a stalled body would hold a connection forever).
    pub body_read_timeout: Duration,
}

/// The body of every answer on the TLS port: a review's answer as it is, anything else as axum made
/// it. Boxing the review's answer into axum's `Body`, as the probes' are, would allocate for every
/// review.
pub type AnswerBody = Either<Full<Bytes>, Body>;

/// An answer on the TLS port.
pub type Answer = hyper::Response<AnswerBody>;

/// What the TLS port serves: `POST /mutate` straight on hyper, everything else (probes, metrics,
/// 404s) through the probe router. The review path skips the router's per-request work (route
/// lookup, service clones, extractors), which costs as much as a small handler.
#[derive(Clone)]
pub struct WebhookService {
    state: AppState,
    probes: Router,
    max_body_bytes: usize,
}

impl WebhookService {
    pub fn new(state: AppState, max_body_bytes: usize) -> Self {
        Self {
            probes: probe_router().with_state(state.clone()),
            state,
            max_body_bytes,
        }
    }

    async fn handle(&self, request: hyper::Request<Incoming>) -> Answer {
        if request.uri().path() != "/mutate" {
            return match self.probes.clone().oneshot(request.map(Body::new)).await {
                Ok(response) => response.map(Either::Right),
                Err(never) => match never {},
            };
        }
        if request.method() != Method::POST {
            return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")])
                .into_response()
                .map(Either::Right);
        }
        mutate(&self.state, self.max_body_bytes, request).await
    }
}

/// Health, readiness and metrics alone: what the optional plain-HTTP port serves.
pub fn probe_router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn mutate(
    state: &AppState,
    max_body_bytes: usize,
    request: hyper::Request<Incoming>,
) -> Answer {
    let reject = |status: StatusCode, message: String| {
        state.metrics.request("rejected");
        tracing::warn!(status = status.as_u16(), %message, "admission request rejected");
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            message + "\n",
        )
            .into_response()
            .map(Either::Right)
    };
    if !is_json(request.headers()) {
        let got = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        return reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content-type must be application/json, got {got:?}"),
        );
    }
    let timeout = admission::timeout_from_query(request.uri().query());
    let body = match read_body(request.into_body(), max_body_bytes, state.body_read_timeout).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body length limit exceeded ({max_body_bytes} bytes)"),
            );
        }
        Err(BodyError::TimedOut) => {
            return reject(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {:?}",
                    state.body_read_timeout
                ),
            );
        }
        Err(BodyError::Broken(error)) => {
            return reject(
                StatusCode::BAD_REQUEST,
                format!("request body could not be read: {error}"),
            );
        }
    };
    let started = Instant::now();
    let mut review = admission::Review::default();
    if let Err(error) = admission::parse_review_into(&body, &mut review) {
        return reject(StatusCode::BAD_REQUEST, error.to_string());
    }
    // A guard, not a clone: cloning the Arc would write its shared count on every request.
    let config = state.config.load();
    let answer = admission::answer(&review, &config, state.pull_secrets.as_ref(), timeout).await;

    state.metrics.request(answer.outcome.as_str());
    for registry in &answer.injected {
        state.metrics.injection(registry);
    }
    state.metrics.observe_duration(started.elapsed());
    // Per-request lines are debug: metrics count outcomes, and a log line per Pod would cost more than
    // the decision under load. Denials are rare and matter: warn.
    if answer.outcome == Outcome::Denied {
        tracing::warn!(
            uid = %review.uid,
            namespace = %review.namespace,
            warnings = ?answer.warnings,
            "Pod denied: its pull Secret could not be made ready"
        );
    } else {
        tracing::debug!(
            uid = %review.uid,
            namespace = %review.namespace,
            dry_run = review.dry_run,
            outcome = answer.outcome.as_str(),
            injected = ?answer.injected,
            warnings = ?answer.warnings,
            "admission review answered"
        );
    }
    // A static header value: the generic `(status, headers, body)` form copies and checks the
    // text into a new value on every answer.
    let mut response = hyper::Response::new(Either::Left(Full::new(Bytes::from(answer.body))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

enum BodyError {
    TooLarge,
    TimedOut,
    Broken(String),
}

/// Reads a whole body of at most `limit` bytes within `timeout`. A body that came in with its
/// headers (most do) is read without arming a timer.
async fn read_body(body: Incoming, limit: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    use std::future::Future as _;
    let collect = collect_body(body, limit);
    tokio::pin!(collect);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(collect.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(result) => result,
        std::task::Poll::Pending => match tokio::time::timeout(timeout, collect).await {
            Ok(result) => result,
            Err(_) => Err(BodyError::TimedOut),
        },
    }
}

/// The body's bytes, refused once they pass `limit` (or at once, when its declared length does).
/// A body that arrives as one chunk, as a review sent with its headers does, is that chunk: no
/// list of chunks and no copy, as `BodyExt::collect` would make.
async fn collect_body<B>(mut body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut first = Bytes::new();
    let mut joined: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| BodyError::Broken(error.to_string()))?;
        // Trailers carry nothing a review needs.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if first.len() + joined.len() + data.len() > limit {
            return Err(BodyError::TooLarge);
        }
        if first.is_empty() && joined.is_empty() {
            first = data;
        } else {
            if joined.is_empty() {
                joined.reserve(first.len() + data.len());
                joined.extend_from_slice(&first);
                first = Bytes::new();
            }
            joined.extend_from_slice(&data);
        }
    }
    Ok(if joined.is_empty() {
        first
    } else {
        Bytes::from(joined)
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    // What the API server sends, without parameters.
    if value.as_bytes().eq_ignore_ascii_case(b"application/json") {
        return true;
    }
    value
        .to_str()
        .ok()
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// A client must send its request headers within this time (slow-loris guard), counted from
    /// the end of its previous request or, for a new connection, from the handshake.
    pub header_read_timeout: Duration,
    /// A request body must arrive within this time.
    pub body_read_timeout: Duration,
    /// An HTTP/2 connection with no request in flight is closed after this long. On HTTP/1.1 the
    /// next request's headers are due within the header-read timeout, so there that (10 s), if
    /// shorter, is what closes an idle connection, and the API server opens a new one for its next
    /// request.
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(25),
        }
    }
}

/// Serves `service` over TLS until `shutdown` fires, then stops accepting and lets in-flight
/// requests finish (up to the drain timeout). Idle keep-alive connections are closed.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: WebhookService,
    options: ServerOptions,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let max_connections = options.max_connections.max(1);
    let connections = Arc::new(Semaphore::new(max_connections));
    let open = Arc::new(OpenConnections::default());
    let service = Arc::new(service);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header-read timeout is the connection's `IdleGuard`'s, not hyper's: hyper's allocates a
    // timer and puts it in tokio's timer wheel and takes it out again for every request, which is
    // a measurable share of a review's CPU under load; the guard's timer moves only when it fires.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());

    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let activity = Arc::new(ConnectionActivity::new());
        let registration = open.register(activity.clone());
        let service = activity_tracking(Arc::new(ConnectionService {
            service: Arc::clone(&service),
            activity: activity.clone(),
        }));
        let handshake_timeout = options.handshake_timeout;
        let (header_read_timeout, idle_timeout) =
            (options.header_read_timeout, options.idle_timeout);
        tokio::spawn(async move {
            let _permit = permit;
            let _registration = registration;
            let stream = ReadAhead::new(stream);
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            };
            // HTTP/1.1 (or no ALPN): the next request's headers are due within the header-read
            // timeout. HTTP/2 has no header-read timeout; its connections idle for the idle one.
            let idle = if tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()) {
                idle_timeout
            } else {
                idle_timeout.min(header_read_timeout)
            };
            let io = IdleGuard::new(tls, activity.clone(), header_read_timeout, idle);
            let connection = builder.serve_connection(TokioIo::new(io), service);
            let mut connection = std::pin::pin!(connection.into_owned());
            let mut draining = false;
            // Once told to drain, hyper finishes the request in flight, answers it and closes; an
            // idle keep-alive connection closes at once.
            let served = std::future::poll_fn(|cx| {
                use std::future::Future as _;
                if !draining {
                    // This connection's own waker slot: registering it touches no shared state.
                    activity.drain_waker.register(cx.waker());
                    if activity.drain.load(Ordering::Acquire) {
                        draining = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
                connection.as_mut().poll(cx)
            });
            if let Err(error) = served.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let in_flight = max_connections - connections.available_permits();
    tracing::info!(connections = in_flight, "draining connections");
    open.drain();
    // Every connection task holds a permit until it ends: all permits back means all drained.
    let all_closed = connections.acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX));
    if tokio::time::timeout(options.drain_timeout, all_closed)
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = ?options.drain_timeout,
            "drain timeout reached; closing remaining connections"
        );
    }
}

/// What a connection's requests are doing, shared by its service, its IO and the drain. Written on
/// every request by whichever core serves the connection: aligned so that no other connection's
/// state shares its cache lines.
#[repr(align(128))]
struct ConnectionActivity {
    in_flight: std::sync::atomic::AtomicUsize,
    served: AtomicBool,
    /// When the connection last became idle (opened, or finished a request).
    idle_since: std::sync::Mutex<tokio::time::Instant>,
    /// Set once at shutdown; the connection then finishes its request in flight and closes.
    drain: AtomicBool,
    drain_waker: futures::task::AtomicWaker,
}

impl ConnectionActivity {
    fn new() -> Self {
        Self {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: std::sync::Mutex::new(tokio::time::Instant::now()),
            drain: AtomicBool::new(false),
            drain_waker: futures::task::AtomicWaker::new(),
        }
    }

    fn start_draining(&self) {
        self.drain.store(true, Ordering::Release);
        self.drain_waker.wake();
    }
}

/// The connections open now, so that shutdown can reach each one. Touched when a connection opens
/// and closes, never per request: a shared shutdown channel polled with every connection poll
/// (hyper-util's `GracefulShutdown` takes a shared lock there) made both cores contend for it.
#[derive(Default)]
struct OpenConnections {
    state: std::sync::Mutex<OpenState>,
}

#[derive(Default)]
struct OpenState {
    next_id: u64,
    draining: bool,
    by_id: std::collections::HashMap<u64, Arc<ConnectionActivity>>,
}

impl OpenConnections {
    fn register(self: &Arc<Self>, activity: Arc<ConnectionActivity>) -> Registration {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let id = state.next_id;
        state.next_id += 1;
        if state.draining {
            activity.start_draining();
        }
        state.by_id.insert(id, activity);
        Registration {
            open: Arc::clone(self),
            id,
        }
    }

    fn drain(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.draining = true;
        for activity in state.by_id.values() {
            activity.start_draining();
        }
    }
}

/// A connection's entry in [`OpenConnections`], removed when the connection's task ends.
struct Registration {
    open: Arc<OpenConnections>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self
            .open
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.by_id.remove(&self.id);
    }
}

/// What a connection's requests share: the service and the connection's activity. One per
/// connection, so that the reference count bumped per request lives on this connection alone (and,
/// aligned, on no other connection's cache line).
#[repr(align(128))]
struct ConnectionService {
    service: Arc<WebhookService>,
    activity: Arc<ConnectionActivity>,
}

/// Counts a connection's requests in flight and marks when it goes idle. A `service_fn`, not a
/// `Service` with a boxed future: hyper keeps the request's future in a slot of its own, so the
/// future (the whole review path's state) is not allocated anew for every request.
fn activity_tracking(
    connection: Arc<ConnectionService>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = Answer,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<Answer, std::convert::Infallible>> + Send,
> + Clone {
    let service = move |request: hyper::Request<Incoming>| {
        let in_flight = InFlight::begin(connection.activity.clone());
        let connection = Arc::clone(&connection);
        async move {
            let response = connection.service.handle(request).await;
            drop(in_flight);
            Ok(response)
        }
    };
    hyper::service::service_fn(service)
}

/// One request in flight on a connection. Dropping it ends the request, also when hyper drops the
/// request's future unanswered (an HTTP/2 stream reset): the connection's idle clock must not wait
/// for an answer that will never come.
struct InFlight(Arc<ConnectionActivity>);

impl InFlight {
    fn begin(activity: Arc<ConnectionActivity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut idle_since) = self.0.idle_since.lock() {
            *idle_since = tokio::time::Instant::now();
        }
        self.0.served.store(true, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Closes a connection that sits idle: no request in flight for `idle` (or, before its first
/// request is answered, for `first`). A request is in flight once its headers are in, so this is
/// also the header-read timeout of a client that trickles its headers (slow loris). hyper's own
/// header-read timer is not used: it is re-armed in tokio's timer wheel for every request, and it
/// starts only once hyper-util has read enough bytes to tell HTTP/1 from HTTP/2, so a client that
/// connects and sends nothing would keep its slot forever. Reads are what hyper polls while a
/// connection waits, so the check lives there.
struct IdleGuard<IO> {
    io: IO,
    activity: Arc<ConnectionActivity>,
    first: Duration,
    idle: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<IO> IdleGuard<IO> {
    fn new(io: IO, activity: Arc<ConnectionActivity>, first: Duration, idle: Duration) -> Self {
        let deadline = tokio::time::Instant::now() + first;
        Self {
            io,
            activity,
            first,
            idle,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Ready(Err) once the connection has been idle too long; otherwise arms the timer.
    fn poll_idle(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future as _;
        loop {
            if self.activity.in_flight.load(Ordering::Acquire) > 0 {
                // A request is being handled; its end resets the idle clock.
                return std::task::Poll::Pending;
            }
            let limit = if self.activity.served.load(Ordering::Acquire) {
                self.idle
            } else {
                self.first
            };
            let since = self
                .activity
                .idle_since
                .lock()
                .map(|t| *t)
                .unwrap_or_else(|_| tokio::time::Instant::now());
            let deadline = since + limit;
            // The deadline moves with every request; the timer is only moved when it fires (or
            // when the deadline comes earlier), not on every read: a timer-wheel update per request
            // costs more than the check.
            if self.timer.deadline() > deadline || self.timer.is_elapsed() {
                if tokio::time::Instant::now() >= deadline {
                    return std::task::Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection idle too long",
                    )));
                }
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return std::task::Poll::Pending;
            }
        }
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleGuard<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.io).poll_read(cx, buf) {
            std::task::Poll::Pending => this.poll_idle(cx),
            ready => ready,
        }
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for IdleGuard<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body from its frames: data chunks, trailers, or an error.
    enum TestFrame {
        Data(&'static [u8]),
        Trailers,
        Error,
    }

    fn test_body(
        frames: &[TestFrame],
        declared: Option<u64>,
    ) -> impl hyper::body::Body<Data = Bytes, Error = String> + Unpin + use<> {
        let frames: Vec<Result<hyper::body::Frame<Bytes>, String>> = frames
            .iter()
            .map(|frame| match frame {
                TestFrame::Data(bytes) => Ok(hyper::body::Frame::data(Bytes::from_static(bytes))),
                TestFrame::Trailers => Ok(hyper::body::Frame::trailers(HeaderMap::new())),
                TestFrame::Error => Err("connection reset".to_owned()),
            })
            .collect();
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        DeclaredLength { body, declared }
    }

    /// A body that says how long it is, as hyper's does from `Content-Length`.
    struct DeclaredLength<B> {
        body: B,
        declared: Option<u64>,
    }

    impl<B: hyper::body::Body + Unpin> hyper::body::Body for DeclaredLength<B> {
        type Data = B::Data;
        type Error = B::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
            std::pin::Pin::new(&mut self.body).poll_frame(cx)
        }
        fn size_hint(&self) -> hyper::body::SizeHint {
            self.declared
                .map(hyper::body::SizeHint::with_exact)
                .unwrap_or_default()
        }
    }

    #[tokio::test]
    async fn a_body_is_collected_whole_within_its_limit() {
        use TestFrame::{Data, Error, Trailers};
        const LIMIT: usize = 8;
        // Name, frames, declared length, the body or what went wrong.
        type Case = (
            &'static str,
            &'static [TestFrame],
            Option<u64>,
            Result<&'static [u8], &'static str>,
        );
        let cases: &[Case] = &[
            ("no frames", &[], Some(0), Ok(b"")),
            ("one chunk", &[Data(b"review")], Some(6), Ok(b"review")),
            (
                "one chunk at the limit",
                &[Data(b"12345678")],
                Some(8),
                Ok(b"12345678"),
            ),
            (
                "two chunks",
                &[Data(b"rev"), Data(b"iew")],
                Some(6),
                Ok(b"review"),
            ),
            (
                "three chunks, no length",
                &[Data(b"a"), Data(b"b"), Data(b"c")],
                None,
                Ok(b"abc"),
            ),
            (
                "an empty first chunk",
                &[Data(b""), Data(b"ab")],
                None,
                Ok(b"ab"),
            ),
            (
                "an empty chunk between",
                &[Data(b"a"), Data(b""), Data(b"b")],
                None,
                Ok(b"ab"),
            ),
            (
                "trailers after the data",
                &[Data(b"ab"), Trailers],
                None,
                Ok(b"ab"),
            ),
            (
                "chunks up to the limit",
                &[Data(b"1234"), Data(b"5678")],
                None,
                Ok(b"12345678"),
            ),
            (
                "three chunks up to the limit",
                &[Data(b"123"), Data(b"456"), Data(b"78")],
                None,
                Ok(b"12345678"),
            ),
            (
                "one byte over, in one chunk",
                &[Data(b"123456789")],
                None,
                Err("too large"),
            ),
            (
                "one byte over, across chunks",
                &[Data(b"1234"), Data(b"56789")],
                None,
                Err("too large"),
            ),
            (
                "declared over the limit",
                &[Data(b"ab")],
                Some(9),
                Err("too large"),
            ),
            (
                "an error after a chunk",
                &[Data(b"ab"), Error],
                None,
                Err("broken"),
            ),
            ("an error first", &[Error], None, Err("broken")),
        ];
        for (name, frames, declared, expected) in cases {
            let got = match collect_body(test_body(frames, *declared), LIMIT).await {
                Ok(bytes) => Ok(bytes),
                Err(BodyError::TooLarge) => Err("too large"),
                Err(BodyError::TimedOut) => Err("timed out"),
                Err(BodyError::Broken(message)) => {
                    assert_eq!(message, "connection reset", "{name}");
                    Err("broken")
                }
            };
            assert_eq!(got.as_deref(), expected.as_deref(), "{name}");
        }
    }

    /// A body of one chunk is that chunk, not a copy of it.
    #[tokio::test]
    async fn a_body_of_one_chunk_is_not_copied() {
        static REVIEW: &[u8] = b"{\"kind\":\"AdmissionReview\"}";
        let bytes = collect_body(test_body(&[TestFrame::Data(REVIEW)], None), 1024)
            .await
            .unwrap_or_else(|_| panic!("collected"));
        assert_eq!(bytes.as_ptr(), REVIEW.as_ptr());
        assert_eq!(&bytes[..], REVIEW);
    }

    #[test]
    fn json_content_types_are_recognised_with_or_without_parameters() {
        let cases: &[(Option<&[u8]>, bool)] = &[
            (Some(b"application/json"), true),
            (Some(b"Application/JSON"), true),
            (Some(b"application/json; charset=utf-8"), true),
            (Some(b" application/json ;q=1"), true),
            (Some(b"application/jsonx"), false),
            (Some(b"application/json-patch+json"), false),
            (Some(b"text/plain"), false),
            (Some(b""), false),
            (Some(b"application/json\xff"), false),
            (None, false),
        ];
        for (value, expected) in cases {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_bytes(value).expect("header value"),
                );
            }
            assert_eq!(is_json(&headers), *expected, "{value:?}");
        }
    }

    /// A request's end is counted however it ends: answered, or its future dropped unanswered (an
    /// HTTP/2 stream reset). Before, a dropped future left the connection "busy" for good, and its
    /// idle timeout never fired.
    #[tokio::test]
    async fn a_request_dropped_unanswered_still_ends() {
        let activity = Arc::new(ConnectionActivity::new());
        let opened = *activity.idle_since.lock().expect("lock");
        tokio::time::sleep(Duration::from_millis(20)).await;

        let answered = InFlight::begin(activity.clone());
        let reset = InFlight::begin(activity.clone());
        let pending_request = async move {
            let _in_flight = reset;
            std::future::pending::<()>().await;
        };
        let task = tokio::spawn(pending_request);
        tokio::task::yield_now().await;
        assert_eq!(activity.in_flight.load(Ordering::Acquire), 2);
        drop(answered);
        assert_eq!(activity.in_flight.load(Ordering::Acquire), 1);
        assert!(activity.served.load(Ordering::Acquire));

        task.abort();
        assert!(task.await.expect_err("aborted").is_cancelled());
        assert_eq!(activity.in_flight.load(Ordering::Acquire), 0);
        let idle_since = *activity.idle_since.lock().expect("lock");
        assert!(
            idle_since - opened >= Duration::from_millis(20),
            "the idle clock restarted"
        );
    }
}
