//! Makes pull Secrets exist in the Pods' namespaces, with the current credentials, through the Kubernetes
//! API, and keeps them current. It implements the [`PullSecrets`] seam.
//!
//! - Steady state costs no API call: (Secret, namespace, content hash) known to be good are remembered.
//! - One flight per (Secret, namespace): concurrent Pod creates share one GET and at most one write.
//! - A Secret is created with POST (which fails if the name is taken), so a Secret the injector does not
//!   own is never taken over; one it owns is updated in place by server-side apply, guarded by the
//!   resourceVersion it was read at.
//! - A metadata-only watch per Secret name (cluster-wide, `fieldSelector=metadata.name=...`, which RBAC
//!   can restrict to the managed names) brings deleted Secrets back and finds stale ones after a rotation.
//!
//! - A Secret is written only into a namespace that the namespace watch has seen, that is not
//!   terminating and that the config makes eligible. What is remembered is bounded by the
//!   namespaces that exist: a deleted namespace is forgotten.
//! - Only Secrets of type `kubernetes.io/dockerconfigjson` are read, listed by name and type: a
//!   Secret of a managed name but another type is never read into memory, nor written.
//!
//! API calls and the verbs they use (the chart's RBAC follows this list; the tests fail on any other):
//! `create` and `patch` (server-side apply) on `secrets` in the Pod's namespace; `list` on `secrets`
//! in the Pod's namespace with `fieldSelector=metadata.name=<managed name>,type=<dockerconfigjson>`;
//! `list` and `watch` on `secrets` in all namespaces with `fieldSelector=metadata.name=<managed
//! name>`; `list` and `watch` on `namespaces`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, CredentialSource, FederationSource, GcpKeyMode, Registry};
use crate::provisioning::credentials::{self, ContentHash, DockerConfig};
use crate::provisioning::gcp_auth::{self, HttpClient, ServiceAccountKey, TokenSource};
use crate::provisioning::health::{HealthOptions, HostHealth, RegistryHealth, Rejection};
use crate::provisioning::namespaces::{
    NamespaceEvents, Namespaces, Standing, describe_watch_error,
};
use crate::provisioning::{EnsureOutcome, EnsureRequest, PullSecrets, describe_kube_error};
use crate::serving::metrics::{Metrics, ReloadResult};
use crate::serving::reload::{parent_dir, watch_dirs};

pub const FIELD_MANAGER: &str = "pullsecret-injector";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "pullsecret-injector";
pub const REGISTRY_LABEL: &str = "pullsecret-injector.io/registry";
pub const HASH_ANNOTATION: &str = "pullsecret-injector.io/content-hash";
pub const SECRET_TYPE: &str = "kubernetes.io/dockerconfigjson";
pub const DATA_KEY: &str = ".dockerconfigjson";
/// Flights (one per Secret and namespace being provisioned) at most: while the API server is out of
/// reach, flights wait for it, and forged reviews must not pile them up.
const MAX_FLIGHTS: usize = 4096;
/// A namespace the watch has not delivered within a review's budget may still be on its way (a
/// watch restarting or slowed by the API server). At most this many such namespaces are followed,
/// for [`LATE_NAMESPACE_GRACE`] each, so that forged namespaces cannot hold more.
const LATE_NAMESPACE_WAITERS: usize = 64;
const LATE_NAMESPACE_GRACE: Duration = Duration::from_secs(30);

/// Times of the background machinery. Defaults suit a cluster; tests shorten them.
#[derive(Debug, Clone)]
pub struct ProvisionerOptions {
    /// First retry delay after a failed attempt; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Rewrites (rotation, deleted Secrets) per second at most.
    pub max_writes_per_second: u32,
    /// A Secret found foreign is looked at again after this long (its owner may delete it).
    pub foreign_recheck: Duration,
    /// Backs up the credential file watch.
    pub reload_poll: Duration,
    /// The background registry checks of the credentials.
    pub health: HealthOptions,
}

impl Default for ProvisionerOptions {
    fn default() -> Self {
        Self {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
            max_writes_per_second: 20,
            foreign_recheck: Duration::from_secs(300),
            reload_poll: Duration::from_secs(30),
            health: HealthOptions::default(),
        }
    }
}

const _: () = assert!(std::mem::size_of::<Known>() == 16);

/// What is known of one (Secret, namespace). One is kept per namespace, so it is kept small
/// (16 bytes): the common case is a short hash, the rare foreign case is behind a pointer.
#[derive(Debug, Clone)]
enum Known {
    /// Ours, with the content of this hash ([`ContentHash::short`]).
    Good(u64),
    Foreign(Arc<Foreign>),
}

/// A Secret of the managed name that is not ours.
#[derive(Debug)]
struct Foreign {
    since: Instant,
    /// Shared with the flight that found it (if any), so the user is warned once, however the
    /// injector learned of the Secret.
    warned: Arc<AtomicBool>,
}

impl Known {
    fn good(hash: ContentHash) -> Self {
        Self::Good(hash.short())
    }

    fn foreign(warned: Arc<AtomicBool>) -> Self {
        Self::Foreign(Arc::new(Foreign {
            since: Instant::now(),
            warned,
        }))
    }
}

#[derive(Debug, Clone)]
enum FlightState {
    /// Still trying; the last attempt's error, if any.
    Trying(Option<String>),
    Ready,
    /// Not ours. The first waiter to read the flag warns the user.
    Foreign(Arc<AtomicBool>),
    /// Will not be retried (the namespace is gone, terminating or not eligible; or the API
    /// answered 403).
    GaveUp(String),
}

impl FlightState {
    fn is_final(&self) -> bool {
        !matches!(self, Self::Trying(_))
    }
}

type FlightKey = (String, String); // (Secret name, namespace)

struct Inner {
    client: kube::Client,
    namespaces: Namespaces,
    options: ProvisionerOptions,
    metrics: Arc<Metrics>,
    config: watch::Sender<Arc<Config>>,
    /// Rendered credentials by registry entry name; an error when the source never loaded.
    sources: RwLock<HashMap<String, Result<Arc<DockerConfig>, String>>>,
    /// Secret name → namespace → what is known about it there.
    known: RwLock<HashMap<String, HashMap<Box<str>, Known>>>,
    flights: Mutex<HashMap<FlightKey, watch::Receiver<FlightState>>>,
    /// Rewrites waiting for the rate limiter, deduplicated.
    queued: Mutex<HashSet<FlightKey>>,
    queue: mpsc::UnboundedSender<FlightKey>,
    /// Access-token refreshers by registry entry, with what they were started from.
    tokens: Mutex<HashMap<String, TokenTask>>,
    http: Result<HttpClient, String>,
    health: RegistryHealth,
    late_namespaces: Arc<tokio::sync::Semaphore>,
    shutdown: CancellationToken,
}

struct TokenTask {
    /// Identifies the source (key file content, or metadata server + account): a change restarts it.
    fingerprint: ContentHash,
    task: JoinHandle<()>,
}

/// The Kubernetes-backed [`PullSecrets`].
#[derive(Clone)]
pub struct KubePullSecrets {
    inner: Arc<Inner>,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    /// Worth retrying: a server error, a timeout, the network.
    #[error("{0}")]
    Api(String),
    /// Not worth retrying: the namespace is gone or terminating, or the API refused (403).
    #[error("{0}")]
    Final(String),
}

enum Reconciled {
    UpToDate,
    Created,
    Updated,
    Foreign,
}

impl KubePullSecrets {
    /// How many (Secret, namespace) states the provisioner remembers: bounded by the namespaces
    /// that exist.
    pub fn remembered_states(&self) -> usize {
        self.inner.known_count()
    }

    /// Starts the background work (credential loading, watches, rewrites). Call [`PullSecrets::on_config`]
    /// with the config to serve; the app does so at start and after every reload.
    pub fn start(client: kube::Client, metrics: Arc<Metrics>, options: ProvisionerOptions) -> Self {
        let (config, config_rx) = watch::channel(Arc::new(Config::empty()));
        let (queue, queue_rx) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let health_config = config_rx.clone();
        let health_metrics = metrics.clone();
        let inner = Arc::new_cyclic(|inner: &Weak<Inner>| Inner {
            health: {
                let weak = inner.clone();
                let events = inner.clone();
                RegistryHealth::start(
                    health_config,
                    Arc::new(move |registry: &str| weak.upgrade()?.content(registry).ok()),
                    Some(Arc::new(move |rejection: Rejection| {
                        if let Some(inner) = events.upgrade() {
                            tokio::spawn(async move { inner.post_rejection(rejection).await });
                        }
                    })),
                    health_metrics,
                    options.health.clone(),
                    shutdown.clone(),
                )
            },
            namespaces: Namespaces::start(
                client.clone(),
                Arc::new(Forget(inner.clone())),
                shutdown.clone(),
            ),
            client,
            options,
            metrics,
            config,
            sources: RwLock::new(HashMap::new()),
            known: RwLock::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashSet::new()),
            queue,
            tokens: Mutex::new(HashMap::new()),
            http: HttpClient::new().map_err(|e| e.to_string()),
            late_namespaces: Arc::new(tokio::sync::Semaphore::new(LATE_NAMESPACE_WAITERS)),
            shutdown,
        });
        tokio::spawn(supervise(inner.clone(), config_rx));
        tokio::spawn(rewrite_worker(inner.clone(), queue_rx));
        Self { inner }
    }

    /// The background registry checks of the credentials.
    pub fn registry_health(&self) -> &RegistryHealth {
        &self.inner.health
    }

    /// Stops watches, retries and rewrites.
    pub fn stop(&self) {
        self.inner.shutdown.cancel();
    }

    /// Whether (namespace, Secret) is known good with the current credentials (no API call needed).
    pub fn is_known_good(&self, namespace: &str, secret: &str) -> bool {
        let known = self.inner.known_state(secret, namespace);
        matches!(known, Some(Known::Good(_)))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Ok(tokens) = self.tokens.lock() {
            for token in tokens.values() {
                token.task.abort();
            }
        }
    }
}

impl PullSecrets for KubePullSecrets {
    fn ready_now(&self, request: &EnsureRequest<'_>) -> Option<EnsureOutcome> {
        if request.registry.credentials.is_none() {
            return Some(EnsureOutcome::NotManaged);
        }
        self.inner
            .is_known_ready(request.registry, request.namespace)
            .then_some(EnsureOutcome::Ready)
    }

    fn ensure<'a>(&'a self, request: EnsureRequest<'a>) -> BoxFuture<'a, EnsureOutcome> {
        Box::pin(self.inner.ensure(request))
    }

    fn on_config(&self, config: Arc<Config>) {
        self.inner.config.send_replace(config);
    }

    fn saw_image_host(&self, registry: &Registry, host: &str, repository: &str, namespace: &str) {
        self.inner.health.saw(registry, host, repository, namespace);
    }

    fn credential_health(&self, registry: &Registry, host: &str) -> Option<HostHealth> {
        self.inner.health.last(&registry.name, host)
    }

    fn is_ready(&self) -> bool {
        self.inner.namespaces.is_ready()
    }
}

/// Forgets what the provisioner knows of namespaces that are gone.
struct Forget(Weak<Inner>);

impl NamespaceEvents for Forget {
    fn deleted(&self, namespace: &str) {
        if let Some(inner) = self.0.upgrade() {
            inner.forget_namespaces(|name| name == namespace);
        }
    }

    fn relisted(&self, existing: &dyn Fn(&str) -> bool) {
        if let Some(inner) = self.0.upgrade() {
            inner.forget_namespaces(|name| !existing(name));
        }
    }
}

impl Inner {
    /// Whether the registry's Secret is known good in the namespace with the current credentials:
    /// one read of the shared state, no API call.
    fn is_known_ready(&self, registry: &Registry, namespace: &str) -> bool {
        let current = self.sources.read().ok().and_then(|sources| {
            let content = sources.get(&registry.name)?.as_ref().ok()?;
            Some(content.hash.short())
        });
        match (current, self.known_state(&registry.secret_name, namespace)) {
            (Some(current), Some(Known::Good(hash))) => hash == current,
            _ => false,
        }
    }

    fn known_state(&self, secret: &str, namespace: &str) -> Option<Known> {
        let known = self.known.read().ok()?;
        known.get(secret)?.get(namespace).cloned()
    }

    fn set_known(&self, secret: &str, namespace: &str, state: Option<Known>) {
        let Ok(mut known) = self.known.write() else {
            return;
        };
        match state {
            Some(state) => {
                known
                    .entry(secret.to_owned())
                    .or_default()
                    .insert(namespace.into(), state);
            }
            None => {
                if let Some(namespaces) = known.get_mut(secret) {
                    namespaces.remove(namespace);
                }
            }
        }
        drop(known);
    }

    fn content(&self, registry: &str) -> Result<Arc<DockerConfig>, String> {
        let sources = self
            .sources
            .read()
            .map_err(|_| "credential state unavailable".to_owned())?;
        match sources.get(registry) {
            Some(result) => result.clone(),
            None => Err(format!(
                "credentials for registry {registry:?} are not loaded yet"
            )),
        }
    }

    /// Forgets every Secret state of the namespaces `gone` names.
    fn forget_namespaces(&self, gone: impl Fn(&str) -> bool) {
        if let Ok(mut known) = self.known.write() {
            for namespaces in known.values_mut() {
                namespaces.retain(|namespace, _| !gone(namespace));
            }
        }
    }

    /// How many (Secret, namespace) states are remembered.
    fn known_count(&self) -> usize {
        self.known
            .read()
            .map(|known| known.values().map(HashMap::len).sum())
            .unwrap_or(0)
    }

    async fn ensure(self: &Arc<Self>, request: EnsureRequest<'_>) -> EnsureOutcome {
        let registry = request.registry;
        if registry.credentials.is_none() {
            return EnsureOutcome::NotManaged;
        }
        // Whatever a review says, nothing is written into (or remembered of) a namespace that the
        // watch has not seen, that is terminating, or that the config leaves out.
        let config = self.config.borrow().clone();
        if let Standing::Ineligible(reason) = self
            .namespaces
            .standing(request.namespace, &config, request.budget)
            .await
        {
            if !request.dry_run
                && self
                    .namespaces
                    .seen_standing(request.namespace, &config)
                    .is_none()
            {
                self.follow_late_namespace(&registry.secret_name, request.namespace);
            }
            return EnsureOutcome::NotEligible { reason };
        }
        let secret = registry.secret_name.as_str();
        let content = match self.content(&registry.name) {
            Ok(content) => content,
            Err(reason) => {
                // No credentials yet (first token not fetched, source unreadable): nothing to wait
                // for now, but a flight keeps trying, so the Secret appears once they load.
                if !request.dry_run {
                    drop(self.flight(secret, request.namespace));
                }
                self.metrics.provisioning_pending(&registry.name);
                return EnsureOutcome::Pending { reason };
            }
        };
        match self.known_state(secret, request.namespace) {
            Some(Known::Good(hash)) if hash == content.hash.short() => {
                return EnsureOutcome::Ready;
            }
            Some(Known::Foreign(foreign))
                if foreign.since.elapsed() < self.options.foreign_recheck =>
            {
                return EnsureOutcome::Foreign {
                    first_time: !foreign.warned.swap(true, Ordering::AcqRel),
                };
            }
            _ => {}
        }
        if request.dry_run {
            return EnsureOutcome::DryRun;
        }
        let mut flight = self.flight(secret, request.namespace);
        let finished = tokio::time::timeout(request.budget, async {
            flight
                .wait_for(FlightState::is_final)
                .await
                .map(|state| state.clone())
        })
        .await;
        let state = match finished {
            Ok(Ok(state)) => state,
            // The flight ended without a final state: only at shutdown.
            Ok(Err(_)) => FlightState::Trying(Some("shutting down".into())),
            Err(_) => flight.borrow().clone(),
        };
        match state {
            FlightState::Ready => EnsureOutcome::Ready,
            FlightState::Foreign(warned) => EnsureOutcome::Foreign {
                first_time: !warned.swap(true, Ordering::AcqRel),
            },
            FlightState::GaveUp(reason) | FlightState::Trying(Some(reason)) => {
                self.metrics.provisioning_pending(&registry.name);
                EnsureOutcome::Pending { reason }
            }
            FlightState::Trying(None) => {
                self.metrics.provisioning_pending(&registry.name);
                EnsureOutcome::Pending {
                    reason: format!("no answer from the API server within {:?}", request.budget),
                }
            }
        }
    }

    /// Provisions a namespace the watch has not delivered yet once it does, within
    /// [`LATE_NAMESPACE_GRACE`]: the Pod that named it already has the reference, and the kubelet
    /// retries its pulls. Nothing is written before the watch shows the namespace eligible; past
    /// [`LATE_NAMESPACE_WAITERS`] such namespaces, new ones are not followed.
    fn follow_late_namespace(self: &Arc<Self>, secret: &str, namespace: &str) {
        let Ok(permit) = self.late_namespaces.clone().try_acquire_owned() else {
            return;
        };
        let inner = self.clone();
        let (secret, namespace) = (secret.to_owned(), namespace.to_owned());
        tokio::spawn(async move {
            let _permit = permit;
            let config = inner.config.borrow().clone();
            let standing = tokio::select! {
                standing = inner.namespaces.standing(&namespace, &config, LATE_NAMESPACE_GRACE) => standing,
                () = inner.shutdown.cancelled() => return,
            };
            if matches!(standing, Standing::Eligible) {
                drop(inner.flight(&secret, &namespace));
            }
        });
    }

    /// Joins the flight for (Secret, namespace), starting one if none is under way.
    fn flight(self: &Arc<Self>, secret: &str, namespace: &str) -> watch::Receiver<FlightState> {
        let key = (secret.to_owned(), namespace.to_owned());
        let Ok(mut flights) = self.flights.lock() else {
            let (_, receiver) =
                watch::channel(FlightState::GaveUp("internal state poisoned".into()));
            return receiver;
        };
        if let Some(receiver) = flights.get(&key) {
            return receiver.clone();
        }
        if flights.len() >= MAX_FLIGHTS {
            let (_, receiver) = watch::channel(FlightState::GaveUp(
                "too many pull Secrets are being provisioned at once; the next Pod retries".into(),
            ));
            return receiver;
        }
        let (sender, receiver) = watch::channel(FlightState::Trying(None));
        flights.insert(key.clone(), receiver.clone());
        drop(flights);
        tokio::spawn(self.clone().run_flight(key, sender));
        receiver
    }

    /// Reconciles one (Secret, namespace), retrying with backoff until it is ready, foreign or gone.
    async fn run_flight(self: Arc<Self>, key: FlightKey, state: watch::Sender<FlightState>) {
        let (secret, namespace) = &key;
        let mut delays = self.retry_delays();
        loop {
            let config = self.config.borrow().clone();
            match self.namespaces.standing_now(namespace, &config) {
                Standing::Eligible => {}
                Standing::Ineligible(reason) => {
                    self.set_known(secret, namespace, None);
                    tracing::info!(namespace = %namespace, secret = %secret, %reason, "not provisioning");
                    state.send_replace(FlightState::GaveUp(reason));
                    break;
                }
                // The namespace watch cannot reach the API server: wait for it, as for the API.
                Standing::Unknown(reason) => {
                    let delay = delays.next().unwrap_or(self.options.retry_max);
                    state.send_replace(FlightState::Trying(Some(reason)));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.cancelled() => break,
                    }
                    continue;
                }
            }
            let Some(registry) = config
                .registries
                .iter()
                .find(|r| &r.secret_name == secret && r.credentials.is_some())
            else {
                state.send_replace(FlightState::GaveUp(format!(
                    "Secret {secret:?} is no longer configured"
                )));
                break;
            };
            let result = match self.content(&registry.name) {
                Ok(content) => self
                    .reconcile(namespace, registry, &content)
                    .await
                    .map(|r| (r, content.hash)),
                Err(reason) => Err(ReconcileError::Api(reason)),
            };
            match result {
                Ok((Reconciled::Foreign, _)) => {
                    // A recheck of a Secret already known to be foreign keeps its warned flag.
                    let warned = match self.known_state(secret, namespace) {
                        Some(Known::Foreign(foreign)) => foreign.warned.clone(),
                        _ => Arc::new(AtomicBool::new(false)),
                    };
                    self.set_known(secret, namespace, Some(Known::foreign(warned.clone())));
                    tracing::warn!(namespace = %namespace, secret = %secret, "a Secret of this name exists and is not managed by pullsecret-injector; referencing it, leaving it untouched");
                    state.send_replace(FlightState::Foreign(warned));
                    break;
                }
                Ok((done, hash)) => {
                    self.set_known(secret, namespace, Some(Known::good(hash)));
                    match done {
                        Reconciled::Created => {
                            tracing::info!(namespace = %namespace, secret = %secret, content_hash = %hash, "pull Secret created")
                        }
                        Reconciled::Updated => {
                            tracing::info!(namespace = %namespace, secret = %secret, content_hash = %hash, "pull Secret updated")
                        }
                        _ => {}
                    }
                    state.send_replace(FlightState::Ready);
                    break;
                }
                Err(ReconcileError::Final(reason)) => {
                    self.set_known(secret, namespace, None);
                    tracing::warn!(namespace = %namespace, secret = %secret, %reason, "not provisioning; not retried");
                    state.send_replace(FlightState::GaveUp(reason));
                    break;
                }
                Err(ReconcileError::Api(reason)) => {
                    let delay = delays.next().unwrap_or(self.options.retry_max);
                    tracing::warn!(namespace = %namespace, secret = %secret, %reason, retry_in = ?delay, "pull Secret not ready; retrying");
                    state.send_replace(FlightState::Trying(Some(reason)));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.cancelled() => break,
                    }
                }
            }
        }
        if let Ok(mut flights) = self.flights.lock() {
            flights.remove(&key);
        }
    }

    /// Exponential backoff with jitter, from `retry_initial` up to `retry_max`, without end.
    fn retry_delays(&self) -> impl Iterator<Item = Duration> + use<> {
        use backon::BackoffBuilder as _;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.options.retry_initial)
            .with_max_delay(self.options.retry_max)
            .with_jitter()
            .without_max_times()
            .build()
    }

    async fn reconcile(
        &self,
        namespace: &str,
        registry: &Registry,
        content: &DockerConfig,
    ) -> Result<Reconciled, ReconcileError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let name = registry.secret_name.as_str();
        // Listed by name and type: a Secret of this name but another type is never read.
        let by_name_and_type =
            ListParams::default().fields(&format!("metadata.name={name},type={SECRET_TYPE}"));
        let mut create_conflicted = false;
        // A few rounds absorb races (another replica creating it, someone editing it meanwhile).
        for _ in 0..4 {
            let existing = api
                .list(&by_name_and_type)
                .await
                .map_err(|e| classify(&e, "read"))?
                .items
                .into_iter()
                .next();
            let Some(existing) = existing else {
                if create_conflicted {
                    // The name is taken by a Secret of another type: not ours, left unread.
                    return Ok(Reconciled::Foreign);
                }
                let secret = desired_secret(registry, content, None);
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                match api.create(&params, &secret).await {
                    Ok(_) => {
                        self.metrics.secret_write(&registry.name, "create", true);
                        return Ok(Reconciled::Created);
                    }
                    Err(error) if status_code(&error) == Some(409) => {
                        create_conflicted = true;
                        continue;
                    }
                    Err(error) => {
                        self.metrics.secret_write(&registry.name, "create", false);
                        return Err(classify(&error, "create"));
                    }
                }
            };
            if !is_managed(&existing.metadata) {
                return Ok(Reconciled::Foreign);
            }
            if is_current(&existing, content) {
                return Ok(Reconciled::UpToDate);
            }
            let secret = desired_secret(
                registry,
                content,
                existing.metadata.resource_version.clone(),
            );
            match api
                .patch(
                    name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&secret),
                )
                .await
            {
                Ok(_) => {
                    self.metrics.secret_write(&registry.name, "update", true);
                    return Ok(Reconciled::Updated);
                }
                // Changed or deleted since it was read: look again.
                Err(error) if matches!(status_code(&error), Some(409 | 404)) => continue,
                Err(error) => {
                    self.metrics.secret_write(&registry.name, "update", false);
                    return Err(classify(&error, "update"));
                }
            }
        }
        Err(ReconcileError::Api(format!(
            "Secret {name:?} kept changing while being written"
        )))
    }

    /// Re-reads every credential source; a changed one is rotated into every namespace that has it.
    /// Token sources get a refresher task instead, which updates the content as tokens come.
    fn refresh_sources(self: &Arc<Self>, config: &Config) {
        let mut changed = Vec::new();
        let token_registries = self.refresh_token_tasks(config);
        {
            let Ok(mut sources) = self.sources.write() else {
                return;
            };
            let mut fresh = HashMap::new();
            for registry in &config.registries {
                if token_registries.contains(&registry.name) {
                    let current = sources
                        .remove(&registry.name)
                        .unwrap_or_else(|| Err("no access token yet".to_owned()));
                    fresh.insert(registry.name.clone(), current);
                    continue;
                }
                let Some(loaded) = credentials::load(registry) else {
                    continue;
                };
                let previous = sources.remove(&registry.name);
                let entry = match (loaded, previous) {
                    (Ok(content), previous) => {
                        let unchanged =
                            matches!(&previous, Some(Ok(old)) if old.hash == content.hash);
                        if !unchanged {
                            self.metrics
                                .credential_reload(&registry.name, ReloadResult::Success);
                            tracing::info!(registry = %registry.name, content_hash = %content.hash, "credentials loaded");
                            changed.push(registry.secret_name.clone());
                        }
                        Ok(Arc::new(content))
                    }
                    (Err(error), Some(Ok(old))) => {
                        self.metrics
                            .credential_reload(&registry.name, ReloadResult::Failure);
                        tracing::error!(registry = %registry.name, %error, "new credentials refused; the previous ones stay in use");
                        Ok(old)
                    }
                    (Err(error), previous) => {
                        if !matches!(&previous, Some(Err(old)) if *old == error.to_string()) {
                            self.metrics
                                .credential_reload(&registry.name, ReloadResult::Failure);
                            tracing::error!(registry = %registry.name, %error, "credentials cannot be loaded");
                        }
                        Err(error.to_string())
                    }
                };
                fresh.insert(registry.name.clone(), entry);
            }
            *sources = fresh;
        }
        if !changed.is_empty() {
            self.health.wake();
        }
        for secret in changed {
            self.queue_stale(&secret);
        }
    }

    /// Starts, restarts or stops access-token refreshers to match the config. Returns the registry
    /// entries whose content comes from tokens.
    fn refresh_token_tasks(self: &Arc<Self>, config: &Config) -> HashSet<String> {
        let mut wanted = HashSet::new();
        let Ok(mut tokens) = self.tokens.lock() else {
            return wanted;
        };
        for registry in &config.registries {
            let (token_source, fingerprint) = match token_source(registry) {
                None => continue,
                Some(Ok(source)) => source,
                Some(Err(error)) => {
                    wanted.insert(registry.name.clone());
                    // A running refresher keeps its last good key; say why the new one is refused.
                    self.metrics
                        .credential_reload(&registry.name, ReloadResult::Failure);
                    tracing::error!(registry = %registry.name, %error, "access token source refused");
                    if !tokens.contains_key(&registry.name) {
                        self.set_source(&registry.name, Err(error));
                    }
                    continue;
                }
            };
            wanted.insert(registry.name.clone());
            let running = tokens
                .get(&registry.name)
                .is_some_and(|t| t.fingerprint == fingerprint && !t.task.is_finished());
            if running {
                continue;
            }
            if let Some(old) = tokens.remove(&registry.name) {
                old.task.abort();
            }
            let task = tokio::spawn(self.clone().refresh_tokens(registry.clone(), token_source));
            tokens.insert(registry.name.clone(), TokenTask { fingerprint, task });
        }
        tokens.retain(|name, token| {
            let keep = wanted.contains(name);
            if !keep {
                token.task.abort();
            }
            keep
        });
        wanted
    }

    /// A Warning Event on the pull Secret, in the namespace of the first Pod seen pulling from the
    /// host: once per change to rejected, so that `kubectl get events` and `kubectl describe secret`
    /// show it where the Pods fail. The Pod itself is not used: at admission it does not exist yet
    /// (often it has only a generateName), and the check is about the Secret's credentials.
    async fn post_rejection(&self, rejection: Rejection) {
        use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let Some(namespace) = rejection.namespace else {
            return;
        };
        // The namespace came from a review, which may be forged: written to only when the watch
        // shows it exists and is eligible, as for the pull Secrets.
        let config = self.config.borrow().clone();
        if let Standing::Ineligible(reason) | Standing::Unknown(reason) =
            self.namespaces.standing_now(&namespace, &config)
        {
            tracing::info!(registry = %rejection.registry, host = %rejection.host, namespace = %namespace, %reason, "Event about the rejected credentials not posted");
            return;
        }
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", rejection.secret_name)),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Secret".to_owned()),
                name: Some(rejection.secret_name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectReference::default()
            },
            reason: Some("RegistryRejectedCredentials".to_owned()),
            type_: Some("Warning".to_owned()),
            message: Some(format!(
                "registry {} rejected the credentials of registry entry {:?} ({}); pulls with this Secret will fail",
                rejection.host, rejection.registry, rejection.detail
            )),
            source: Some(EventSource {
                component: Some(FIELD_MANAGER.to_owned()),
                host: None,
            }),
            reporting_component: Some(FIELD_MANAGER.to_owned()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                tracing::info!(registry = %rejection.registry, host = %rejection.host, namespace = %namespace, secret = %rejection.secret_name, "Event posted: the registry rejected the credentials")
            }
            Err(error) => {
                let reason = describe_kube_error(&error);
                tracing::warn!(registry = %rejection.registry, host = %rejection.host, namespace = %namespace, %reason, "Event about the rejected credentials not posted")
            }
        }
    }

    fn set_source(&self, registry: &str, content: Result<Arc<DockerConfig>, String>) {
        if let Ok(mut sources) = self.sources.write() {
            sources.insert(registry.to_owned(), content);
        }
        self.health.wake();
    }

    /// Fetches access tokens for one registry entry for as long as it is configured: refreshes around
    /// half-life, retries failures with backoff, and rewrites the managed Secrets with each new token.
    async fn refresh_tokens(self: Arc<Self>, registry: Registry, source: TokenSource) {
        let http = match &self.http {
            Ok(http) => http,
            Err(error) => {
                let reason = format!("no HTTP client for token requests: {error}");
                tracing::error!(registry = %registry.name, %reason);
                self.set_source(&registry.name, Err(reason));
                return;
            }
        };
        let mut expires_at: Option<SystemTime> = None;
        let mut delays = self.retry_delays();
        loop {
            let next = match source.fetch(http).await {
                Ok(token) => {
                    delays = self.retry_delays();
                    let content = credentials::render_basic(
                        &registry.hosts,
                        gcp_auth::REGISTRY_USERNAME,
                        token.secret(),
                    );
                    self.set_source(&registry.name, Ok(Arc::new(content)));
                    self.metrics
                        .credential_reload(&registry.name, ReloadResult::Success);
                    tracing::info!(registry = %registry.name, expires_in = ?token.remaining(SystemTime::now()), "access token refreshed");
                    expires_at = Some(token.expires_at());
                    self.queue_stale(&registry.secret_name);
                    token.refresh_at(token.issued_at(), gcp_auth::random_jitter())
                }
                Err(error) => {
                    self.metrics.token_refresh_failure(&registry.name);
                    let remaining = expires_at
                        .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default());
                    let delay = delays.next().unwrap_or(self.options.retry_max);
                    tracing::error!(registry = %registry.name, %error, current_token_expires_in = ?remaining, retry_in = ?delay, "access token refresh failed");
                    SystemTime::now() + delay
                }
            };
            // Sleep until the next refresh, keeping the remaining-lifetime gauge current meanwhile.
            loop {
                let now = SystemTime::now();
                let remaining = expires_at.map_or(0.0, |at| {
                    at.duration_since(now).unwrap_or_default().as_secs_f64()
                });
                self.metrics.token_remaining(&registry.name, remaining);
                let Ok(wait) = next.duration_since(now) else {
                    break;
                };
                tokio::select! {
                    () = tokio::time::sleep(wait.min(Duration::from_secs(15))) => {}
                    () = self.shutdown.cancelled() => return,
                }
            }
        }
    }

    /// Queues a rewrite of every namespace whose copy of `secret` is not the current content.
    fn queue_stale(&self, secret: &str) {
        let namespaces: Vec<String> = match self.known.read() {
            Ok(known) => known
                .get(secret)
                .map(|by_ns| {
                    by_ns
                        .iter()
                        .filter(|(_, state)| matches!(state, Known::Good(_)))
                        .map(|(ns, _)| ns.to_string())
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => return,
        };
        for namespace in namespaces {
            self.queue_rewrite(secret, &namespace);
        }
    }

    fn queue_rewrite(&self, secret: &str, namespace: &str) {
        let key = (secret.to_owned(), namespace.to_owned());
        let Ok(mut queued) = self.queued.lock() else {
            return;
        };
        if queued.insert(key.clone()) {
            let _ = self.queue.send(key);
        }
    }

    /// A watch event about a managed Secret name somewhere in the cluster.
    fn observe(&self, secret: &str, event_metadata: &ObjectMeta, deleted: bool) {
        let Some(namespace) = event_metadata.namespace.as_deref() else {
            return;
        };
        if deleted {
            if is_managed(event_metadata) {
                tracing::info!(namespace = %namespace, secret = %secret, "managed pull Secret deleted; recreating");
                self.set_known(secret, namespace, None);
                self.queue_rewrite(secret, namespace);
            } else {
                self.set_known(secret, namespace, None);
            }
            return;
        }
        if !is_managed(event_metadata) {
            // Keep what is already known of it (and whether the user was warned).
            if !matches!(self.known_state(secret, namespace), Some(Known::Foreign(_))) {
                let warned = Arc::new(AtomicBool::new(false));
                self.set_known(secret, namespace, Some(Known::foreign(warned)));
            }
            return;
        }
        let config = self.config.borrow().clone();
        let current = config
            .registries
            .iter()
            .find(|r| r.secret_name == secret)
            .and_then(|r| self.content(&r.name).ok());
        let seen = annotation_hash(event_metadata);
        match (current, seen) {
            (Some(content), Some(seen)) if seen == content.hash => {
                self.set_known(secret, namespace, Some(Known::good(seen)))
            }
            (Some(_), _) => {
                self.set_known(secret, namespace, None);
                self.queue_rewrite(secret, namespace);
            }
            (None, _) => {}
        }
    }
}

/// Follows config changes: reloads credentials, re-targets the credential file watch and the Secret watches.
async fn supervise(inner: Arc<Inner>, mut config_rx: watch::Receiver<Arc<Config>>) {
    let (files_changed, mut files_rx) = mpsc::unbounded_channel::<()>();
    let mut file_watch: Option<(Vec<std::path::PathBuf>, JoinHandle<()>)> = None;
    let mut secret_watches: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        let config = config_rx.borrow_and_update().clone();
        inner.refresh_sources(&config);

        let mut dirs: Vec<_> = config
            .credential_files()
            .into_iter()
            .map(parent_dir)
            .collect();
        dirs.sort();
        dirs.dedup();
        if file_watch.as_ref().map(|(watched, _)| watched) != Some(&dirs) {
            if let Some((_, task)) = file_watch.take() {
                task.abort();
            }
            if !dirs.is_empty() {
                let sender = files_changed.clone();
                match watch_dirs(
                    "credentials",
                    dirs.clone(),
                    inner.options.reload_poll,
                    move || {
                        let _ = sender.send(());
                    },
                ) {
                    Ok(task) => file_watch = Some((dirs, task)),
                    Err(error) => {
                        tracing::error!(%error, "credential files will not be reloaded on change")
                    }
                }
            }
        }

        let wanted: HashSet<String> = config
            .registries
            .iter()
            .filter(|r| r.credentials.is_some())
            .map(|r| r.secret_name.clone())
            .collect();
        secret_watches.retain(|name, task| {
            let keep = wanted.contains(name);
            if !keep {
                task.abort();
            }
            keep
        });
        for name in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = secret_watches.entry(name) {
                let task = tokio::spawn(watch_secret(inner.clone(), slot.key().clone()));
                slot.insert(task);
            }
        }

        tokio::select! {
            changed = config_rx.changed() => if changed.is_err() { break },
            Some(()) = files_rx.recv() => {}
            () = inner.shutdown.cancelled() => break,
        }
    }
    for (_, task) in secret_watches {
        task.abort();
    }
    if let Some((_, task)) = file_watch {
        task.abort();
    }
}

/// Watches one Secret name across namespaces, metadata only: labels and the content hash are enough,
/// and the data (credentials) never enters this process's memory from the watch.
async fn watch_secret(inner: Arc<Inner>, name: String) {
    let api: Api<PartialObjectMeta<Secret>> = Api::all(inner.client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    // kube-runtime's backoff: a dead API server is retried ever more slowly, not hammered.
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = inner.shutdown.cancelled() => return,
        };
        match event {
            None => return,
            Some(Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object))) => {
                inner.observe(&name, &object.metadata, false);
            }
            Some(Ok(watcher::Event::Delete(object))) => {
                inner.observe(&name, &object.metadata, true)
            }
            Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
            Some(Err(error)) => {
                tracing::warn!(secret = %name, error = %describe_watch_error(&error), "watch of managed Secrets failed; retrying with backoff");
            }
        }
    }
}

/// Starts queued rewrites at a bounded rate.
async fn rewrite_worker(inner: Arc<Inner>, mut queue: mpsc::UnboundedReceiver<FlightKey>) {
    let per_second = inner.options.max_writes_per_second.max(1);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / per_second);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let key = tokio::select! {
            key = queue.recv() => match key { Some(key) => key, None => return },
            () = inner.shutdown.cancelled() => return,
        };
        ticker.tick().await;
        if let Ok(mut queued) = inner.queued.lock() {
            queued.remove(&key);
        }
        drop(inner.flight(&key.0, &key.1));
    }
}

/// The token source of a registry entry in an access-token mode, with a fingerprint of what it was
/// built from; `None` for entries whose Secrets carry static credentials.
fn token_source(registry: &Registry) -> Option<Result<(TokenSource, ContentHash), String>> {
    match registry.credentials.as_ref()? {
        CredentialSource::GcpJsonKey(source) if source.mode == GcpKeyMode::AccessToken => Some(
            std::fs::read(&source.file)
                .map_err(|e| format!("cannot read {}: {e}", source.file.display()))
                .and_then(|bytes| {
                    let key = ServiceAccountKey::parse(&bytes)
                        .map_err(|e| format!("{}: {e}", source.file.display()))?;
                    Ok((TokenSource::ServiceAccountKey(key), ContentHash::of(&bytes)))
                }),
        ),
        CredentialSource::GcpWorkloadIdentity(source) => {
            let (mut base_url, mut service_account) = match TokenSource::metadata_server_from_env()
            {
                TokenSource::MetadataServer {
                    base_url,
                    service_account,
                } => (base_url, service_account),
                TokenSource::ServiceAccountKey(_) | TokenSource::ExternalAccount(_) => return None,
            };
            if let Some(url) = &source.metadata_url {
                base_url.clone_from(url);
            }
            if let Some(account) = &source.service_account {
                service_account.clone_from(account);
            }
            let fingerprint = ContentHash::of(format!("{base_url}\n{service_account}").as_bytes());
            Some(Ok((
                TokenSource::MetadataServer {
                    base_url,
                    service_account,
                },
                fingerprint,
            )))
        }
        CredentialSource::GcpWorkloadIdentityFederation(source) => {
            let account = match source {
                FederationSource::CredentialConfigFile(path) => {
                    credentials::read_credential_config(path).map_err(|e| e.to_string())
                }
                FederationSource::Inline(fields) => {
                    fields.external_account().map_err(|e| e.to_string())
                }
            };
            // The settings hold no secret: their debug form fingerprints them.
            Some(account.map(|account| {
                let fingerprint = ContentHash::of(format!("{account:?}").as_bytes());
                (TokenSource::ExternalAccount(account), fingerprint)
            }))
        }
        _ => None,
    }
}

fn desired_secret(
    registry: &Registry,
    content: &DockerConfig,
    resource_version: Option<String>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(registry.secret_name.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
                (REGISTRY_LABEL.to_owned(), registry.name.clone()),
            ])),
            annotations: Some(BTreeMap::from([(
                HASH_ANNOTATION.to_owned(),
                content.hash.to_string(),
            )])),
            resource_version,
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE.to_owned()),
        data: Some(BTreeMap::from([(
            DATA_KEY.to_owned(),
            ByteString(content.json.clone()),
        )])),
        ..Secret::default()
    }
}

pub fn is_managed(metadata: &ObjectMeta) -> bool {
    metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .is_some_and(|value| value == MANAGED_BY_VALUE)
}

fn annotation_hash(metadata: &ObjectMeta) -> Option<ContentHash> {
    metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HASH_ANNOTATION))
        .and_then(|text| ContentHash::parse(text))
}

fn is_current(secret: &Secret, content: &DockerConfig) -> bool {
    annotation_hash(&secret.metadata) == Some(content.hash)
        && secret.type_.as_deref() == Some(SECRET_TYPE)
        && secret
            .data
            .as_ref()
            .and_then(|data| data.get(DATA_KEY))
            .is_some_and(|bytes| bytes.0 == content.json)
}

fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A namespace that is gone or terminating, and a refusal (403), are final; anything else is
/// retried. Described by status and reason, never by a response body.
fn classify(error: &kube::Error, action: &str) -> ReconcileError {
    let described = format!("{action} failed: {}", describe_kube_error(error));
    if let kube::Error::Api(status) = error {
        let namespace_missing = status.code == 404
            && status
                .details
                .as_ref()
                .is_some_and(|d| d.kind == "namespaces");
        if status.code == 403 || namespace_missing {
            return ReconcileError::Final(described);
        }
    }
    ReconcileError::Api(described)
}
