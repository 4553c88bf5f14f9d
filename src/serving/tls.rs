//! The serving certificate: read from `tls.crt`/`tls.key` (a `kubernetes.io/tls` Secret volume),
//! swapped atomically when the files change. A broken new pair is refused and the old one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate: {detail}")]
    NoCertificate { path: PathBuf, detail: String },
    #[error("{path} holds no usable PEM private key: {detail}")]
    BadKey { path: PathBuf, detail: String },
    #[error("the private key in {key} does not belong to the certificate in {cert}: {detail}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("{path} holds no usable PEM CA certificate for client authentication: {detail}")]
    ClientCa { path: PathBuf, detail: String },
}

/// Requires a client certificate that chains to a CA certificate in `path`.
fn client_verifier(
    path: &Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let bad = |detail: String| TlsError::ClientCa {
        path: path.to_owned(),
        detail,
    };
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .build()
        .map_err(|e| bad(e.to_string()))
}

pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads and checks a certificate chain and key from `dir`.
pub fn load_certified_key(dir: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate {
            path: cert_path.clone(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path,
            detail: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.clone(),
        detail: e.to_string(),
    })?;
    let certified =
        CertifiedKey::from_der(chain, key, &crypto_provider()).map_err(|e| TlsError::Mismatch {
            cert: cert_path.clone(),
            key: key_path.clone(),
            detail: e.to_string(),
        })?;
    Ok(certified)
}

/// Hands rustls whatever certificate is current; swapped without locks on the handshake path.
#[derive(Debug)]
pub struct ReloadingCert {
    dir: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl ReloadingCert {
    pub fn load(dir: &Path) -> Result<Arc<Self>, TlsError> {
        let key = load_certified_key(dir)?;
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            current: ArcSwap::from_pointee(key),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the files. `Ok(false)`: unchanged; `Ok(true)`: a new certificate now serves;
    /// `Err`: the new files are refused and the old certificate keeps serving.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let key = load_certified_key(&self.dir)?;
        if key.cert == self.current.load().cert {
            return Ok(false);
        }
        self.current.store(Arc::new(key));
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 and 1.3, HTTP/1.1 only: the API server calls webhooks over HTTP/1.1. With `client_ca`,
/// every client must present a certificate that chains to one of its CA certificates.
pub fn server_config(
    cert: Arc<ReloadingCert>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path)?),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
