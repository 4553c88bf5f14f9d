//! Serving: the HTTPS server (routes, TLS, connection limits), file reloads and metrics, wired
//! together by [`App`].

mod app;
pub(crate) mod metrics;
pub(crate) mod reload;
mod routes;
mod server;
pub(crate) mod tls;

pub use app::{App, AppError, ServeOptions};
pub use metrics::{Metrics, ReloadResult};
pub use routes::{AppState, BodyBudget, BodyLimits, Readiness, probe_router, router};
pub use server::ServerOptions;
