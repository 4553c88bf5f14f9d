//! The no-op baseline for the load harness (`benches/load.sh`): the smallest HTTPS server with the
//! webhook's transport — rustls with the ring provider (TLS 1.3 and 1.2, ALPN http/1.1, the same
//! certificate files), hyper 1's HTTP/1.1 connection (keep-alive, the same header-read timeout),
//! TCP_NODELAY, a multi-threaded tokio runtime — that reads every request body in full and answers
//! every POST with one fixed, allowed AdmissionReview response.
//!
//! Whatever the webhook costs beyond this is its own work (routing, parsing, deciding, answering,
//! metrics, logging).
//!
//! ```sh
//! cargo run --release --example noop_webhook -- --tls-dir certs/dev --listen 127.0.0.1:9443
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A fixed "allowed, no patch" answer (same envelope as the webhook's).
const ALLOWED: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true}}"#;
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Parser)]
struct Args {
    /// Directory holding tls.crt and tls.key (as for `pullsecret-injector serve`).
    #[arg(long)]
    tls_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:9443")]
    listen: SocketAddr,
}

fn tls_config(dir: &std::path::Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    let cert_pem =
        std::fs::read(&cert_path).map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let key_pem = std::fs::read(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if request.method() != Method::POST {
        return Ok(Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .body(Full::new(Bytes::new()))
            .expect("response"));
    }
    // Read the whole body, as the webhook must before it can answer.
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await;
    let response = match body {
        Ok(_) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(ALLOWED))),
        Err(_) => Response::builder()
            .status(StatusCode::PAYLOAD_TOO_LARGE)
            .body(Full::new(Bytes::new())),
    };
    Ok(response.expect("response"))
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let tls = tls_config(&args.tls_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("bind {}: {e}", args.listen))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        println!("noop webhook listening on https://{local}");
        let acceptor = TlsAcceptor::from(tls);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .keep_alive(true);
        let stop = tokio::signal::ctrl_c();
        tokio::pin!(stop);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut stop => break,
                _ = term.recv() => break,
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let builder = builder.clone();
            tokio::spawn(serve(acceptor, builder, stream));
        }
        Ok(())
    })
}

async fn serve(
    acceptor: TlsAcceptor,
    builder: hyper::server::conn::http1::Builder,
    io: tokio::net::TcpStream,
) {
    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(io)).await
    else {
        return;
    };
    let _ = builder
        .serve_connection(TokioIo::new(tls), hyper::service::service_fn(handle))
        .await;
}
