//! The TLS accept loop: each connection is handshaken by tokio-rustls and served over HTTP/1.1 by
//! hyper-util, with hyper's header-read timeout, a cap on connections, and a graceful drain.
//!
//! Handshakes and served connections have separate caps: a flood of TCP connections that never
//! start TLS holds only handshake slots, each for at most the handshake timeout, so the API server's
//! connections and the kubelet's probes still get in.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// A client must send each request's headers within this time (slow-loris guard). hyper also
    /// runs it while a keep-alive connection waits for its next request, so it is the idle timeout.
    pub header_read_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Connections past their handshake at most; more are closed at once.
    pub max_connections: usize,
    /// Connections still in their handshake at most; more are closed at once.
    pub max_handshakes: usize,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            max_connections: 1024,
            max_handshakes: 4096,
            drain_timeout: Duration::from_secs(25),
        }
    }
}

/// Serves `router` over TLS until `shutdown` fires, then stops accepting and lets in-flight
/// requests finish (up to the drain timeout); idle keep-alive connections close at once.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    options: ServerOptions,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let handshakes = Arc::new(Semaphore::new(options.max_handshakes.max(1)));
    let connections = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    let service = TowerToHyperService::new(router);

    loop {
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
        let Ok(handshake_slot) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!("too many TLS handshakes in progress; connection closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, connections, http, service) = (
            acceptor.clone(),
            connections.clone(),
            http.clone(),
            service.clone(),
        );
        let watcher = graceful.watcher();
        let handshake_timeout = options.handshake_timeout;
        tokio::spawn(async move {
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
            drop(handshake_slot);
            let Ok(_slot) = connections.try_acquire_owned() else {
                tracing::debug!("connection limit reached; connection closed");
                return;
            };
            let connection = http.serve_connection(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(connections = graceful.count(), "draining connections");
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = ?options.drain_timeout,
            "drain timeout reached; closing remaining connections"
        );
    }
}
