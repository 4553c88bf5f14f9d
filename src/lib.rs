//! pullsecret-injector: a Kubernetes mutating admission webhook that adds `imagePullSecrets` to Pods
//! whose images come from configured private registries, and keeps the matching pull Secret in
//! each Pod's namespace.
//!
//! The pure core (`reference`, `decision`, `admission`, `config`) has no I/O; the edges (`server`,
//! `tls`, `reload`, `app`, `pull_secret` implementations) wrap it.

pub mod admission;
pub mod answer_tails;
pub mod app;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod decision;
pub mod devcerts;
pub mod duration;
pub mod gcp_auth;
pub mod image_matches;
pub mod json_reader;
pub mod json_writer;
pub mod k3s;
pub mod memory;
pub mod metrics;
pub mod preview;
pub mod provisioner;
pub mod pull_secret;
pub mod read_ahead;
pub mod reference;
pub mod reload;
pub mod server;
#[cfg(test)]
mod test_rng;
pub mod tls;
