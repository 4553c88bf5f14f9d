//! pullsecret-injector: a Kubernetes mutating admission webhook that adds `imagePullSecrets` to Pods
//! whose images come from configured private registries, and keeps the matching pull Secret in
//! each Pod's namespace.
//!
//! - [`admission`]: the pure core: the review envelope, image references, the decision, the patch.
//! - [`provisioning`]: credentials, access tokens and the pull Secrets in the Kubernetes API.
//! - [`serving`]: HTTPS, TLS, file reloads and metrics.
//! - [`cli`]: the subcommands: serve, the offline preview, k3s, development certificates.
#![forbid(unsafe_code)]

pub mod admission;
pub mod cli;
pub mod config;
pub(crate) mod duration;
pub(crate) mod names;
pub mod provisioning;
pub mod serving;
