//! An HTTPS client that verifies the server against the test CA, speaking HTTP/1.1 with keep-alive
//! (as the API server does) or HTTP/2, and reporting which certificate it was served.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub struct TlsClient {
    addr: SocketAddr,
    roots: Arc<RootCertStore>,
    /// A client certificate and key (PEM) to present, for servers that ask for one.
    identity: Option<(String, String)>,
}

pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    pub server_cert: CertificateDer<'static>,
    pub alpn: Option<Vec<u8>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TlsClient {
    pub fn new(addr: SocketAddr, ca_pem: &str) -> Self {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("add CA");
        }
        Self {
            addr,
            roots: Arc::new(roots),
            identity: None,
        }
    }

    /// The same client presenting a client certificate (PEM cert and key).
    pub fn with_identity(&self, cert_pem: &str, key_pem: &str) -> Self {
        Self {
            addr: self.addr,
            roots: self.roots.clone(),
            identity: Some((cert_pem.to_owned(), key_pem.to_owned())),
        }
    }

    /// Opens a verified TLS connection offering `alpn`.
    pub async fn tls_stream(&self, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            None => config.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client cert PEM");
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
                    .expect("client key PEM");
                config
                    .with_client_auth_cert(chain, key)
                    .expect("client identity")
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from("localhost").expect("name");
        connector.connect(name, tcp).await
    }

    /// HTTP/1.1 over TLS, offering only http/1.1 like the API server.
    pub async fn connect(&self) -> std::io::Result<Connection> {
        let tls = self.tls_stream(&[b"http/1.1"]).await?;
        let (server_cert, alpn) = peer_info(&tls);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Connection {
            sender,
            server_cert,
            alpn,
        })
    }
}

fn peer_info(tls: &TlsStream<TcpStream>) -> (CertificateDer<'static>, Option<Vec<u8>>) {
    let (_, session) = tls.get_ref();
    let cert = session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .expect("server certificate")
        .clone()
        .into_owned();
    (cert, session.alpn_protocol().map(<[u8]>::to_vec))
}

impl Connection {
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Result<Reply, hyper::Error> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let request = request.body(Full::new(body.into())).expect("request");
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }

    /// POSTs an AdmissionReview the way the API server does.
    pub async fn review(&mut self, body: impl Into<Bytes>) -> Reply {
        self.send(
            "POST",
            "/mutate?timeout=10s",
            Some("application/json"),
            body,
        )
        .await
        .expect("review request")
    }
}
