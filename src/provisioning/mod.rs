//! Provisioning: credentials, access tokens and the pull Secrets themselves. The seam with admission
//! is [`PullSecrets`]: before the webhook answers, it asks for each pull Secret the Pod will
//! reference to exist in the Pod's namespace.

pub(crate) mod credentials;
pub mod gcp_auth;
pub mod health;
mod namespaces;
pub(crate) mod provisioner;
pub mod registry_check;

pub use credentials::{CredentialError, FileProblem};
pub use provisioner::{KubePullSecrets, ProvisionerOptions};

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::{Config, Registry};

/// One Secret the webhook needs to exist before the Pod's images are pulled.
#[derive(Debug, Clone, Copy)]
pub struct EnsureRequest<'a> {
    pub namespace: &'a str,
    pub registry: &'a Registry,
    /// `request.dryRun`: the answer must be computed without any write.
    pub dry_run: bool,
    /// How long the caller may wait; past it the component answers `Pending` and goes on in the background.
    pub budget: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnsureOutcome {
    /// The Secret exists with the current credentials.
    Ready,
    /// The registry has no credential source: the webhook only injects the reference, someone else
    /// provides the Secret.
    NotManaged,
    /// Dry run: nothing was written.
    DryRun,
    /// The namespace does not exist (as far as the namespace watch knows), is terminating, or is
    /// not eligible under the config: nothing is written there and nothing is remembered of it.
    NotEligible { reason: String },
    /// A Secret of that name exists and is not ours: it is referenced and left untouched. `first_time`
    /// is true only the first time this (namespace, Secret) is seen, so the user is warned once.
    Foreign { first_time: bool },
    /// Not ready within the budget (API error, timeout); a background retry is under way.
    Pending { reason: String },
}

/// Makes pull Secrets exist. Implementations must be cheap when the Secret is already known good:
/// this runs on every Pod CREATE.
pub trait PullSecrets: Send + Sync + 'static {
    /// The answer when it is known at once (the Secret is known good, or not managed); `None` sends
    /// the caller to [`PullSecrets::ensure`]. Runs on every Pod CREATE, before `ensure`: it must
    /// not block, and it should neither allocate nor take a lock in the steady state.
    fn ready_now(&self, _request: &EnsureRequest<'_>) -> Option<EnsureOutcome> {
        None
    }

    fn ensure<'a>(&'a self, request: EnsureRequest<'a>) -> BoxFuture<'a, EnsureOutcome>;

    /// The config now serving: called at start and after every successful reload, so the component can
    /// follow new registries and credential sources. Must not block.
    fn on_config(&self, _config: Arc<Config>) {}

    /// Records that a Pod in `namespace` pulls `repository` from `host` with `registry`'s Secret,
    /// so the registry check covers that host. Runs on the admission path: it must not block.
    fn saw_image_host(
        &self,
        _registry: &Registry,
        _host: &str,
        _repository: &str,
        _namespace: &str,
    ) {
    }

    /// The last registry check of `registry`'s credentials on `host`, if any. Must not block.
    fn credential_health(&self, _registry: &Registry, _host: &str) -> Option<health::HostHealth> {
        None
    }

    /// Whether it can answer: the readiness probe waits for it.
    fn is_ready(&self) -> bool {
        true
    }
}

/// A Kubernetes client error in a log line or a warning: the API's status code, reason and
/// message, or the kind of failure. Never a response body: kube's decode errors can quote it.
pub(crate) fn describe_kube_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        kube::Error::SerdeError(_) => "the API server's answer could not be read".to_owned(),
        kube::Error::HyperError(error) => format!("connection to the API server failed: {error}"),
        kube::Error::Service(error) => format!("request to the API server failed: {error}"),
        kube::Error::HttpError(error) => format!("invalid request: {error}"),
        _ => "request to the API server failed".to_owned(),
    }
}

/// Makes no API call: every registry counts as not managed. Used by the offline preview, and by
/// `serve` when it runs without access to a cluster.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReferenceOnly;

impl PullSecrets for ReferenceOnly {
    fn ready_now(&self, _request: &EnsureRequest<'_>) -> Option<EnsureOutcome> {
        Some(EnsureOutcome::NotManaged)
    }

    fn ensure<'a>(&'a self, _request: EnsureRequest<'a>) -> BoxFuture<'a, EnsureOutcome> {
        Box::pin(std::future::ready(EnsureOutcome::NotManaged))
    }
}
