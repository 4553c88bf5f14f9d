//! The cluster's namespaces, metadata only, from one watch (kube-runtime's reflector): which exist,
//! which are terminating, and their labels. The provisioner writes a Secret only into a namespace
//! that exists, is not terminating and is eligible under the config, whatever a review claims.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// What the namespace view says of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Exists, is not terminating, and the config lets the webhook act there.
    Eligible,
    /// Why the webhook must not write there.
    Ineligible(String),
    /// Not seen, while the watch cannot reach the API server: it may exist.
    Unknown(String),
}

/// Shared, read by every admission request that needs a Secret.
#[derive(Clone)]
pub(crate) struct Namespaces {
    store: Store<PartialObjectMeta<Namespace>>,
    /// Set once the first list of namespaces is in.
    listed: Arc<AtomicBool>,
    /// Whether the watch's last word was an event rather than an error: when it is not, a namespace
    /// it has not seen may still exist.
    healthy: Arc<AtomicBool>,
    /// Bumped on every namespace event: a request waiting for a namespace it has not seen yet
    /// looks again.
    changes: watch::Receiver<u64>,
}

/// What the watch reports besides the store.
pub(crate) trait NamespaceEvents: Send + Sync + 'static {
    /// A namespace is gone: forget everything about it.
    fn deleted(&self, namespace: &str);
    /// The watch listed every namespace again (at start and after it lost track): forget the
    /// namespaces not in `existing`.
    fn relisted(&self, existing: &dyn Fn(&str) -> bool);
}

impl Namespaces {
    /// Starts the watch; it runs until `shutdown`.
    pub(crate) fn start(
        client: kube::Client,
        events: Arc<dyn NamespaceEvents>,
        shutdown: CancellationToken,
    ) -> Self {
        let (store, writer) = reflector::store();
        let (notify, changes) = watch::channel(0u64);
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
        let stream = watcher::watcher(api, watcher::Config::default()).backoff(WatchBackoff::new());
        let view = Self {
            store,
            listed: Arc::new(AtomicBool::new(false)),
            healthy: Arc::new(AtomicBool::new(false)),
            changes,
        };
        let reader = view.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(reflector::reflector(writer, stream));
            loop {
                let event = tokio::select! {
                    event = stream.next() => event,
                    () = shutdown.cancelled() => return,
                };
                let healthy = matches!(event, Some(Ok(_)));
                match event {
                    None => return,
                    Some(Ok(watcher::Event::Delete(namespace))) => {
                        if let Some(name) = namespace.metadata.name.as_deref() {
                            events.deleted(name);
                        }
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        reader.listed.store(true, Ordering::Release);
                        events.relisted(&|name| reader.lookup(name).is_some());
                    }
                    Some(Ok(_)) => {}
                    // kube-runtime re-lists with backoff; the error names a status or a network
                    // failure, never a response body.
                    Some(Err(error)) => {
                        tracing::warn!(error = %describe_watch_error(&error), "watch of namespaces failed; retrying with backoff");
                    }
                }
                if healthy != reader.healthy.swap(healthy, Ordering::AcqRel) || healthy {
                    notify.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        });
        view
    }

    /// Whether the first list of namespaces is in.
    pub(crate) fn is_ready(&self) -> bool {
        self.listed.load(Ordering::Acquire)
    }

    fn lookup(&self, name: &str) -> Option<Arc<PartialObjectMeta<Namespace>>> {
        self.store.get(&ObjectRef::new(name))
    }

    /// The namespace's standing now, as far as the watch has seen; `None` when it has not seen it.
    pub(crate) fn seen_standing(&self, name: &str, config: &Config) -> Option<Standing> {
        let namespace = self.lookup(name)?;
        Some(standing(name, &namespace, config))
    }

    /// The namespace's standing now: as seen, or, when not seen, missing if the watch is healthy
    /// and unknown if it is not.
    pub(crate) fn standing_now(&self, name: &str, config: &Config) -> Standing {
        self.seen_standing(name, config)
            .unwrap_or_else(|| self.unseen(name))
    }

    fn unseen(&self, name: &str) -> Standing {
        if self.healthy.load(Ordering::Acquire) {
            Standing::Ineligible(format!(
                "namespace {name} does not exist (not seen by the namespace watch)"
            ))
        } else {
            Standing::Unknown(format!(
                "namespace {name} not seen yet: the namespace watch cannot reach the API server"
            ))
        }
    }

    /// The namespace's standing, waiting up to `wait` for a namespace the watch has not seen yet:
    /// a Pod can be created right after its namespace, before the watch delivers it. A namespace
    /// that does not appear within `wait` is missing, or unknown while the watch is failing; no
    /// API request is made for it.
    pub(crate) async fn standing(&self, name: &str, config: &Config, wait: Duration) -> Standing {
        let mut changes = self.changes.clone();
        let appeared = tokio::time::timeout(wait, async {
            loop {
                if let Some(standing) = self.seen_standing(name, config) {
                    return standing;
                }
                if changes.changed().await.is_err() {
                    return Standing::Ineligible("the namespace watch has stopped".to_owned());
                }
            }
        })
        .await;
        appeared.unwrap_or_else(|_| self.unseen(name))
    }
}

fn standing(name: &str, namespace: &PartialObjectMeta<Namespace>, config: &Config) -> Standing {
    if namespace.metadata.deletion_timestamp.is_some() {
        return Standing::Ineligible(format!("namespace {name} is terminating"));
    }
    let empty = BTreeMap::new();
    let labels = namespace.metadata.labels.as_ref().unwrap_or(&empty);
    if config.namespace_is_eligible(name, labels) {
        Standing::Eligible
    } else {
        Standing::Ineligible(format!(
            "namespace {name} is skipped by the config or not selected by its namespaceSelector"
        ))
    }
}

/// A watch error in a log line: its kind and the API's status, never a response body.
pub(crate) fn describe_watch_error(error: &watcher::Error) -> String {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => super::describe_kube_error(e),
        watcher::Error::WatchError(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        watcher::Error::NoResourceVersion => "the API server sent no resourceVersion".to_owned(),
    }
}

/// The namespace watch's backoff: exponential with jitter, as kube-runtime's default, but capped at
/// 5 s instead of 30 s, since Pods in new namespaces wait for this watch; reset by the watch's
/// first event after an error.
struct WatchBackoff {
    builder: backon::ExponentialBuilder,
    delays: backon::ExponentialBackoff,
}

impl WatchBackoff {
    fn new() -> Self {
        use backon::BackoffBuilder as _;
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times();
        Self {
            builder,
            delays: builder.build(),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.delays.next()
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        use backon::BackoffBuilder as _;
        self.delays = self.builder.build();
    }
}
