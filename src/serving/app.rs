//! Wires the parts into a running webhook: loads config and certificate, binds the listeners, starts
//! the file watchers, serves until told to stop. `App::start` is what `serve` runs and what tests
//! start in-process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::routes::{self, AppState, BodyBudget, BodyLimits, Readiness};
use super::server::{self, ServerOptions};
use crate::config::{Config, ConfigError};
use crate::provisioning::PullSecrets;
use crate::serving::metrics::{Metrics, ReloadResult};
use crate::serving::reload::{WatchError, parent_dir, watch_dirs};
use crate::serving::tls::{ReloadingCert, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Watch(#[from] WatchError),
}

pub struct ServeOptions {
    pub config_path: PathBuf,
    pub tls_dir: PathBuf,
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    /// When set, clients must present a certificate that chains to this CA (the API server can,
    /// through its AdmissionConfiguration); off by default.
    pub client_ca_file: Option<PathBuf>,
    pub server: ServerOptions,
    pub bodies: BodyLimits,
    /// Backs up the file watch: files are re-checked at least this often.
    pub reload_poll: Duration,
    pub pull_secrets: Arc<dyn PullSecrets>,
    pub metrics: Arc<Metrics>,
}

impl ServeOptions {
    pub fn new(
        config_path: PathBuf,
        tls_dir: PathBuf,
        listen: SocketAddr,
        pull_secrets: Arc<dyn PullSecrets>,
    ) -> Self {
        Self {
            config_path,
            tls_dir,
            listen,
            metrics_listen: None,
            client_ca_file: None,
            server: ServerOptions::default(),
            bodies: BodyLimits::default(),
            reload_poll: Duration::from_secs(30),
            pull_secrets,
            metrics: Arc::new(Metrics::new()),
        }
    }
}

/// The config as served now, replaced when the file changes to a valid new config.
pub struct LiveConfig {
    path: PathBuf,
    current: Arc<ArcSwap<Config>>,
    /// The bytes last looked at, valid or not: an unchanged file is not parsed (or complained about) again.
    last_seen: Mutex<Vec<u8>>,
    metrics: Arc<Metrics>,
    pull_secrets: Arc<dyn PullSecrets>,
}

impl LiveConfig {
    pub fn load(
        path: &Path,
        metrics: Arc<Metrics>,
        pull_secrets: Arc<dyn PullSecrets>,
    ) -> Result<Self, AppError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Arc::new(parse_config(path, &bytes)?);
        metrics.config_reload(ReloadResult::Success);
        pull_secrets.on_config(config.clone());
        Ok(Self {
            path: path.to_owned(),
            current: Arc::new(ArcSwap::new(config)),
            last_seen: Mutex::new(bytes),
            metrics,
            pull_secrets,
        })
    }

    pub fn shared(&self) -> Arc<ArcSwap<Config>> {
        self.current.clone()
    }

    /// Re-reads the file; a valid new config replaces the old, an invalid one is refused and logged.
    pub fn reload(&self) {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) => {
                // Mid-swap the file can be briefly missing; the next event or poll retries.
                tracing::debug!(path = %self.path.display(), %error, "config file not readable");
                return;
            }
        };
        let Ok(mut last_seen) = self.last_seen.lock() else {
            return;
        };
        if *last_seen == bytes {
            return;
        }
        match parse_config(&self.path, &bytes) {
            Ok(config) => {
                let config = Arc::new(config);
                self.current.store(config.clone());
                self.pull_secrets.on_config(config);
                self.metrics.config_reload(ReloadResult::Success);
                tracing::info!(path = %self.path.display(), "config reloaded");
            }
            Err(error) => {
                self.metrics.config_reload(ReloadResult::Failure);
                tracing::error!(path = %self.path.display(), %error, "new config refused; the previous config keeps serving");
            }
        }
        *last_seen = bytes;
    }
}

fn parse_config(path: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
    std::str::from_utf8(bytes)
        .map_err(|e| ConfigError::syntax(format!("the file is not UTF-8: {e}")))
        .and_then(Config::from_yaml_str)
        .map_err(|e| e.in_file(path))
}

/// A running webhook.
pub struct App {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    readiness: Arc<Readiness>,
    bodies: Arc<BodyBudget>,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl App {
    /// Loads everything, binds, and starts serving. Fails fast on a bad config or certificate.
    pub async fn start(options: ServeOptions) -> Result<Self, AppError> {
        let metrics = options.metrics;
        let readiness = Arc::new(Readiness::default());
        let live_config = Arc::new(LiveConfig::load(
            &options.config_path,
            metrics.clone(),
            options.pull_secrets.clone(),
        )?);
        readiness.set_config_loaded();
        let cert = ReloadingCert::load(&options.tls_dir)?;
        metrics.certificate_reload(ReloadResult::Success);
        readiness.set_certificate_loaded();
        let tls =
            crate::serving::tls::server_config(cert.clone(), options.client_ca_file.as_deref())?;

        let state = Arc::new(AppState {
            config: live_config.shared(),
            pull_secrets: options.pull_secrets,
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            bodies: Arc::new(BodyBudget::new(options.bodies)),
        });
        let bodies = state.bodies.clone();
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| AppError::Bind {
                    addr: options.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| AppError::Bind {
            addr: options.listen,
            source,
        })?;
        let shutdown = CancellationToken::new();
        let mut background = Vec::new();

        let config_watch = {
            let live_config = live_config.clone();
            watch_dirs(
                "config",
                vec![parent_dir(&options.config_path)],
                options.reload_poll,
                move || live_config.reload(),
            )?
        };
        background.push(config_watch);
        let cert_watch = {
            let cert = cert.clone();
            let metrics = metrics.clone();
            watch_dirs(
                "certificate",
                vec![options.tls_dir.clone()],
                options.reload_poll,
                move || match cert.reload() {
                    Ok(false) => {}
                    Ok(true) => {
                        metrics.certificate_reload(ReloadResult::Success);
                        tracing::info!(dir = %cert.dir().display(), "serving certificate reloaded");
                    }
                    Err(error) => {
                        metrics.certificate_reload(ReloadResult::Failure);
                        tracing::error!(%error, "new certificate refused; the previous one keeps serving");
                    }
                },
            )?
        };
        background.push(cert_watch);

        let metrics_addr = match options.metrics_listen {
            None => None,
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| AppError::Bind { addr, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| AppError::Bind { addr, source })?;
                let router = routes::probe_router(state.clone());
                let stop = shutdown.clone();
                background.push(tokio::spawn(async move {
                    if let Err(error) = axum::serve(listener, router)
                        .with_graceful_shutdown(stop.cancelled_owned())
                        .await
                    {
                        tracing::error!(%error, "metrics listener failed");
                    }
                }));
                Some(bound)
            }
        };

        let server = tokio::spawn(server::serve_tls(
            listener,
            tls,
            routes::router(state),
            options.server,
            shutdown.clone(),
        ));
        match metrics_addr {
            Some(metrics_addr) => {
                tracing::info!(%local_addr, %metrics_addr, "serving admission reviews")
            }
            None => tracing::info!(%local_addr, "serving admission reviews"),
        }
        Ok(Self {
            local_addr,
            metrics_addr,
            shutdown,
            readiness,
            bodies,
            server,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Bytes of request bodies being read or answered now.
    pub fn body_bytes_in_flight(&self) -> usize {
        self.bodies.bytes_in_flight()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Starts a graceful shutdown: not ready, no new connections, in-flight requests finish.
    pub fn shutdown(&self) {
        self.readiness.set_draining();
        self.shutdown.cancel();
    }

    /// Waits until the server has drained.
    pub async fn wait(self) {
        let _ = self.server.await;
        for task in self.background {
            task.abort();
        }
    }
}
