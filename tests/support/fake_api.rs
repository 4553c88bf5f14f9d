//! In-process fake Kubernetes API server for integration tests.
//!
//! Serves core/v1 `Secret`s over plain HTTP on `127.0.0.1:<random port>` the way
//! the real API server answers `kube::Client` (get, list, watch, create, update,
//! patch: server-side apply, merge and strategic merge; delete, deletecollection),
//! and core/v1 `Namespace`s for reading (get, list, watch; they are created,
//! relabelled, terminated and deleted by the test through `FakeApi`). It keeps
//! state, emulates the deployment's least-privilege RBAC, records every request
//! and can inject faults (status codes, delays, dropped connections, or the whole
//! API going down).
//!
//! Namespaces are enforced as the API server's `NamespaceLifecycle` admission
//! does: writing a Secret into a namespace that does not exist is `404 NotFound`
//! (details kind "namespaces"), creating one in a terminating namespace is
//! `403 Forbidden`. Tests create the namespaces they use first
//! (`FakeApi::put_namespace`, `FakeApi::ensure_namespace`).
//!
//! ```text
//! let api = FakeApi::start(&["gcr-pull"]).await;
//! api.put_namespace("team-a", &[("env", "prod")]);
//! let secrets: kube::Api<Secret> = kube::Api::namespaced(api.client(), "team-a");
//! api.inject(Fault::status(500).on_verb("create").times(2));
//! ```
//!
//! Self-contained on purpose: it is compiled as `tests/support/fake_api.rs` of a
//! test crate, so it uses no `crate::` paths and only dependencies the project has
//! (axum for the body type, hyper/hyper-util for the connection loop, tokio,
//! futures, serde_json, k8s-openapi, kube, tracing).
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, NamespaceSpec, NamespaceStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

/// The user named in 403 messages (the injector's service account).
pub const FAKE_API_USER: &str = "system:serviceaccount:pullsecret-injector:pullsecret-injector";

/// Watch history kept for resuming watches from an older resourceVersion; older
/// resourceVersions get `410 Expired`, as from a compacted etcd.
const HISTORY_LIMIT: usize = 10_000;
/// Capacity of the live watch-event channel; a watcher lagging further behind is
/// closed with a `410 Expired` ERROR event (as the real server does).
const EVENT_CHANNEL_CAPACITY: usize = 4_096;
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
const MAX_SECRET_DATA_BYTES: usize = 1024 * 1024;
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";
/// The label the API server puts on every namespace, set to its name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// `RecordedRequest::resource` of Secret requests.
pub const SECRETS: &str = "secrets";
/// `RecordedRequest::resource` of Namespace requests.
pub const NAMESPACES: &str = "namespaces";
/// `RecordedRequest::resource` of core/v1 Event requests: only `create` is served (and allowed).
pub const EVENTS: &str = "events";

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// One request as the fake saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// Arrival order (0, 1, 2, ...). `requests()` is in completion order.
    pub seq: u64,
    pub method: String,
    pub path: String,
    /// Raw (still percent-encoded) query string, "" if none.
    pub query: String,
    /// The resource the URL names: `SECRETS` ("secrets"), `NAMESPACES`
    /// ("namespaces"), another resource's plural for endpoints the fake does not
    /// serve ("configmaps", "deployments", ...), or "" for non-resource URLs
    /// (discovery, `/version`, ...).
    pub resource: String,
    /// Kubernetes verb: "get", "list", "watch", "create", "update", "patch",
    /// "delete", "deletecollection", or "unknown" (not an endpoint the fake
    /// serves, or a method the endpoint does not serve). Namespace writes get
    /// their verb, though the fake does not emulate them (403 under RBAC, else
    /// 405).
    pub verb: String,
    /// The URL's namespace; for a request on one Namespace
    /// (`/api/v1/namespaces/{name}`), that namespace's name, as in the API
    /// server's request attributes.
    pub namespace: Option<String>,
    /// The URL's name; for "create" the body's metadata.name.
    pub name: Option<String>,
    pub content_type: Option<String>,
    /// The request body when it was JSON.
    pub body: Option<Value>,
    /// HTTP status answered; 0 when the connection was closed without an answer
    /// (API down, or a `Fault::close_connection()` rule).
    pub status: u16,
    /// The fault that answered it: the rule's label (`Fault::named`, else a
    /// description such as "status 500"), or "down" while `set_down(true)`.
    pub fault: Option<String>,
    /// Total delay injected by `Fault::delay` rules before it was handled.
    pub delayed: Option<Duration>,
    /// The emulated RBAC forbids this request. Set however it was answered (also
    /// when a fault or the API being down answered first), so that
    /// `rbac_violations()` lists every attempt the real deployment would refuse.
    pub rbac_denied: bool,
    /// It passed faults and RBAC and was handled by the store (whatever the
    /// outcome: 2xx, 404, 409, 422, ...).
    pub reached_store: bool,
}

impl RecordedRequest {
    /// First value of a query parameter, percent-decoded.
    pub fn query_param(&self, key: &str) -> Option<String> {
        parse_query(&self.query)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// create, update, patch, delete or deletecollection.
    pub fn is_write(&self) -> bool {
        is_write_verb(&self.verb)
    }

    /// A request on Secrets (`resource == SECRETS`).
    pub fn is_secret(&self) -> bool {
        self.resource == SECRETS
    }

    /// A request on Namespaces (`resource == NAMESPACES`).
    pub fn is_namespace(&self) -> bool {
        self.resource == NAMESPACES
    }
}

/// What a matching fault rule does.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// Answer with this HTTP status and a Status body (reason derived from the
    /// code unless overridden), without touching the store.
    Status {
        code: u16,
        reason: Option<String>,
        message: Option<String>,
    },
    /// Wait this long, then go on (further rules, RBAC, normal handling).
    Delay(Duration),
    /// Close the connection without answering (client sees a transport error).
    CloseConnection,
}

/// A fault-injection rule. Rules are checked in the order injected, before RBAC
/// and normal handling: every matching `delay` rule adds its delay, and the first
/// matching `status`/`close_connection` rule answers. A rule with `times(n)` fires
/// n times, then stays inert. A rule matches requests on every resource (Secrets,
/// Namespaces, anything else) unless `on_resource` narrows it.
///
/// Note: `kube::Client` (kube 5, `default_retry`) retries 429, 503 and 504 itself
/// (up to 15 times, exponential backoff from 5 ms), so each such fault with
/// `times(n)` is consumed by those retries; use 500 for "fails, then works".
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    label: Option<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    namespace: Option<String>,
    name: Option<String>,
    action: FaultAction,
    remaining: Option<usize>,
}

impl Fault {
    /// Answer with `code` and a Status body: 409 → Conflict (AlreadyExists for
    /// create), 500 → InternalError, 403 → Forbidden, 503 → ServiceUnavailable,
    /// 404 → NotFound, 400 → BadRequest, 410 → Expired, 422 → Invalid,
    /// 429 → TooManyRequests, 504 → Timeout, 401 → Unauthorized.
    pub fn status(code: u16) -> Self {
        Self::with_action(FaultAction::Status {
            code,
            reason: None,
            message: None,
        })
    }

    /// Delay matching requests, then handle them normally.
    pub fn delay(delay: Duration) -> Self {
        Self::with_action(FaultAction::Delay(delay))
    }

    /// Close the connection of matching requests without an answer.
    pub fn close_connection() -> Self {
        Self::with_action(FaultAction::CloseConnection)
    }

    fn with_action(action: FaultAction) -> Self {
        Fault {
            label: None,
            resources: Vec::new(),
            verbs: Vec::new(),
            namespace: None,
            name: None,
            action,
            remaining: None,
        }
    }

    /// Only requests with this verb ("get", "list", "watch", "create", "update",
    /// "patch", "delete", ...). Calling it again adds alternatives.
    pub fn on_verb(mut self, verb: &str) -> Self {
        self.verbs.push(verb.to_string());
        self
    }

    /// Only requests on this resource (`SECRETS`, `NAMESPACES`; see
    /// `RecordedRequest::resource`). Calling it again adds alternatives.
    pub fn on_resource(mut self, resource: &str) -> Self {
        self.resources.push(resource.to_string());
        self
    }

    /// Only requests in this namespace (for a request on one Namespace: that
    /// namespace, see `RecordedRequest::namespace`).
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }

    /// Only requests for this object name (for create: the body's name).
    pub fn on_name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Fire only `n` times (default: unlimited).
    pub fn times(mut self, n: usize) -> Self {
        self.remaining = Some(n);
        self
    }

    /// Override the Status reason of a `status` fault (e.g. "AlreadyExists").
    pub fn reason(mut self, reason: &str) -> Self {
        if let FaultAction::Status { reason: r, .. } = &mut self.action {
            *r = Some(reason.to_string());
        }
        self
    }

    /// Override the Status message of a `status` fault.
    pub fn message(mut self, message: &str) -> Self {
        if let FaultAction::Status { message: m, .. } = &mut self.action {
            *m = Some(message.to_string());
        }
        self
    }

    /// Name the rule; recorded in `RecordedRequest::fault`.
    pub fn named(mut self, label: &str) -> Self {
        self.label = Some(label.to_string());
        self
    }

    pub fn action(&self) -> &FaultAction {
        &self.action
    }

    /// Firings left (`None` = unlimited).
    pub fn remaining(&self) -> Option<usize> {
        self.remaining
    }

    fn describe(&self) -> String {
        if let Some(label) = &self.label {
            return label.clone();
        }
        match &self.action {
            FaultAction::Status { code, .. } => format!("status {code}"),
            FaultAction::Delay(d) => format!("delay {d:?}"),
            FaultAction::CloseConnection => "close connection".to_string(),
        }
    }

    fn matches(&self, info: &RequestInfo) -> bool {
        if self.remaining == Some(0) {
            return false;
        }
        if !self.resources.is_empty() && !self.resources.contains(&info.resource) {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.iter().any(|v| v == info.verb) {
            return false;
        }
        if let Some(ns) = &self.namespace
            && info.namespace.as_deref() != Some(ns.as_str())
        {
            return false;
        }
        if let Some(name) = &self.name
            && info.name.as_deref() != Some(name.as_str())
        {
            return false;
        }
        true
    }
}

/// Handle on a running fake API server. The server stops (listener closed, open
/// connections and watches cut) when this is dropped.
pub struct FakeApi {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
}

impl fmt::Debug for FakeApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeApi")
            .field("url", &self.url())
            .field("allowed_names", &self.shared.rbac)
            .finish()
    }
}

impl FakeApi {
    /// Start with the deployment's RBAC: create any Secret; get, patch only
    /// `allowed_names`; list/watch only with
    /// `fieldSelector=metadata.name=<allowed name>`; never update or delete.
    /// Namespaces: list and watch (cluster-wide, any selector), nothing else.
    /// Starts with no namespace at all (not even "default").
    pub async fn start(allowed_names: &[&str]) -> FakeApi {
        Self::start_inner(Some(allowed_names.iter().map(|s| s.to_string()).collect())).await
    }

    /// Start without RBAC: every verb is allowed (delete and deletecollection too;
    /// namespace writes are still not emulated: 405).
    pub async fn start_permissive() -> FakeApi {
        Self::start_inner(None).await
    }

    async fn start_inner(rbac: Option<Vec<String>>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake API: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake API: local_addr");
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let (signals, _) = watch::channel(Signals::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            events,
            signals,
            rbac,
            active_secret_watches: AtomicUsize::new(0),
            active_namespace_watches: AtomicUsize::new(0),
        });
        tokio::spawn(serve(listener, shared.clone()));
        FakeApi { addr, shared }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube::Config` pointed at this server (default namespace "default",
    /// kube's default retry of 429/503/504 left on, as in production).
    pub fn config(&self) -> kube::Config {
        let uri = self.url().parse().expect("fake API: url is a valid URI");
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".to_string();
        config
    }

    /// A `kube::Client` for `config()`. Needs a tokio runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("fake API: build kube::Client")
    }

    // ---- state (admin view: bypasses RBAC and faults, not recorded) ----

    pub fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.shared
            .lock()
            .objects
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Secrets with this name in every namespace, ordered by namespace.
    pub fn secrets_named(&self, name: &str) -> Vec<Secret> {
        self.shared
            .lock()
            .objects
            .iter()
            .filter(|((_, n), _)| n == name)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Every Secret, ordered by (namespace, name).
    pub fn all_secrets(&self) -> Vec<Secret> {
        self.shared.lock().objects.values().cloned().collect()
    }

    /// Seed or overwrite a Secret as-is (no validation, and its namespace need not
    /// exist: create it first for a realistic state; namespace defaults to
    /// "default"; stringData is folded into data; type defaults to Opaque). Keeps
    /// the uid/creationTimestamp of an existing object unless given, bumps the
    /// resourceVersion, emits ADDED or MODIFIED. Returns the stored object.
    /// Panics if metadata.name is missing.
    pub fn put_secret(&self, secret: Secret) -> Secret {
        let mut secret = secret;
        let name = secret
            .metadata
            .name
            .clone()
            .expect("fake API put_secret: metadata.name is required");
        let ns = secret
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        secret.metadata.namespace = Some(ns.clone());
        let mut state = self.shared.lock();
        let key = (ns, name);
        if let Some(old) = state.objects.get(&key) {
            if secret.metadata.uid.is_none() {
                secret.metadata.uid = old.metadata.uid.clone();
            }
            if secret.metadata.creation_timestamp.is_none() {
                secret.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
            }
        }
        state.fill_system_fields(&mut secret.metadata);
        normalize(&mut secret);
        state.store(&self.shared.events, secret)
    }

    /// Delete a Secret (emits DELETED). False if it did not exist.
    pub fn delete_secret(&self, namespace: &str, name: &str) -> bool {
        let mut state = self.shared.lock();
        state.remove(&self.shared.events, namespace, name).is_some()
    }

    /// The current (last issued) resourceVersion (one counter for Secrets and
    /// Namespaces, as in a real API server).
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    // ---- namespaces (admin view: bypasses RBAC and faults, not recorded) ----

    /// Create the namespace `name` (phase Active; ADDED) or set the labels of the
    /// existing one (MODIFIED; nothing happens, no event, when they are already
    /// these). The API server's `kubernetes.io/metadata.name=<name>` label is
    /// always added. A terminating namespace stays terminating. Returns the
    /// stored object.
    pub fn put_namespace(&self, name: &str, labels: &[(&str, &str)]) -> Namespace {
        let mut labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
        let mut state = self.shared.lock();
        let namespace = match state.namespaces.get(name) {
            Some(old) if old.metadata.labels.as_ref() == Some(&labels) => return old.clone(),
            Some(old) => {
                let mut namespace = old.clone();
                namespace.metadata.labels = Some(labels);
                namespace
            }
            None => {
                let mut namespace = Namespace {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    },
                    spec: Some(NamespaceSpec {
                        finalizers: Some(vec!["kubernetes".to_string()]),
                    }),
                    status: Some(NamespaceStatus {
                        phase: Some("Active".to_string()),
                        ..NamespaceStatus::default()
                    }),
                };
                state.fill_system_fields(&mut namespace.metadata);
                namespace
            }
        };
        state.store_namespace(&self.shared.events, namespace)
    }

    /// Create the namespace `name` without labels (but the API server's) unless it
    /// exists; the namespace as it is now.
    pub fn ensure_namespace(&self, name: &str) -> Namespace {
        if let Some(namespace) = self.namespace(name) {
            return namespace;
        }
        self.put_namespace(name, &[])
    }

    /// What `kubectl delete namespace` starts: deletionTimestamp set, phase
    /// Terminating (MODIFIED); the namespace and its Secrets stay until
    /// `delete_namespace`. Creating a Secret in it is refused from now on (403).
    /// None if it does not exist; an already terminating one is returned as is.
    pub fn terminate_namespace(&self, name: &str) -> Option<Namespace> {
        let mut state = self.shared.lock();
        let old = state.namespaces.get(name)?.clone();
        if is_terminating(&old) {
            return Some(old);
        }
        let namespace = terminating(old);
        Some(state.store_namespace(&self.shared.events, namespace))
    }

    /// The end of a namespace's deletion: terminates it first if it is not
    /// terminating yet (MODIFIED), then removes every Secret in it (DELETED each)
    /// and the namespace itself (DELETED). False if it did not exist.
    pub fn delete_namespace(&self, name: &str) -> bool {
        let mut state = self.shared.lock();
        let Some(old) = state.namespaces.get(name).cloned() else {
            return false;
        };
        if !is_terminating(&old) {
            state.store_namespace(&self.shared.events, terminating(old));
        }
        let secrets: Vec<String> = state
            .objects
            .keys()
            .filter(|(ns, _)| ns == name)
            .map(|(_, n)| n.clone())
            .collect();
        for secret in secrets {
            state.remove(&self.shared.events, name, &secret);
        }
        state.remove_namespace(&self.shared.events, name);
        true
    }

    /// Every namespace, ordered by name.
    pub fn namespaces(&self) -> Vec<Namespace> {
        self.shared.lock().namespaces.values().cloned().collect()
    }

    pub fn namespace(&self, name: &str) -> Option<Namespace> {
        self.shared.lock().namespaces.get(name).cloned()
    }

    // ---- request log ----

    /// The Events created so far, as sent.
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().events.clone()
    }

    /// Every request so far, in completion order (a watch is recorded when its
    /// response starts).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().log.clone()
    }

    /// Secret create/update/patch/delete/deletecollection requests that reached
    /// the store (not answered by a fault, the API being down, or RBAC), whatever
    /// their outcome.
    pub fn writes(&self) -> usize {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| r.is_secret() && r.reached_store && r.is_write())
            .count()
    }

    /// Secret requests with this verb, however they were answered. Requests on
    /// Namespaces (or anything else) are not counted: see `count_on`.
    pub fn count(&self, verb: &str) -> usize {
        self.count_on(SECRETS, verb)
    }

    /// Requests on `resource` (`SECRETS`, `NAMESPACES`, ...; see
    /// `RecordedRequest::resource`) with this verb, however they were answered.
    pub fn count_on(&self, resource: &str, verb: &str) -> usize {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| r.resource == resource && r.verb == verb)
            .count()
    }

    /// Requests the deployment's RBAC would refuse.
    pub fn rbac_violations(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| r.rbac_denied)
            .cloned()
            .collect()
    }

    /// Forget the request log (state and faults stay).
    pub fn reset_log(&self) {
        self.shared.lock().log.clear();
    }

    /// Watch streams currently open (Secrets and Namespaces).
    pub fn active_watches(&self) -> usize {
        self.active_watches_on(SECRETS) + self.active_watches_on(NAMESPACES)
    }

    /// Watch streams on `resource` (`SECRETS` or `NAMESPACES`) currently open.
    pub fn active_watches_on(&self, resource: &str) -> usize {
        match resource {
            SECRETS => self.shared.active_secret_watches.load(Ordering::SeqCst),
            NAMESPACES => self.shared.active_namespace_watches.load(Ordering::SeqCst),
            _ => 0,
        }
    }

    /// Poll `condition` every 10 ms until it holds (true) or `timeout` passes
    /// (false).
    pub async fn wait_for(&self, timeout: Duration, condition: impl Fn(&FakeApi) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // ---- faults ----

    /// Add a fault rule (checked after the ones already injected).
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    /// Remove every fault rule.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The fault rules with their remaining counts.
    pub fn faults(&self) -> Vec<Fault> {
        self.shared.lock().faults.clone()
    }

    /// "API unreachable": while down, every request (on new or kept-alive
    /// connections) is recorded with status 0 and its connection closed without
    /// an answer, and open watch streams are cut. A closed connection is what
    /// the injector sees when the API server is really gone, and unlike 503 it
    /// is not retried by kube's client.
    pub fn set_down(&self, down: bool) {
        self.shared.signals.send_modify(|s| s.down = down);
    }

    pub fn is_down(&self) -> bool {
        self.shared.signals.borrow().down
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.shared.signals.send_modify(|s| s.shutdown = true);
    }
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct Signals {
    down: bool,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Change>>,
    signals: watch::Sender<Signals>,
    /// None: no RBAC (everything allowed).
    rbac: Option<Vec<String>>,
    active_secret_watches: AtomicUsize,
    active_namespace_watches: AtomicUsize,
}

#[derive(Default)]
struct State {
    rv: u64,
    seq: u64,
    uids: u64,
    /// Secrets by (namespace, name).
    objects: BTreeMap<(String, String), Secret>,
    namespaces: BTreeMap<String, Namespace>,
    /// Changes of Secrets and Namespaces, in resourceVersion order.
    history: VecDeque<Arc<Change>>,
    /// Changes with rv <= this were dropped from `history`.
    history_floor: u64,
    log: Vec<RecordedRequest>,
    faults: Vec<Fault>,
    /// Events created, as sent (with the name given to them).
    events: Vec<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// A stored object of either resource the fake serves.
#[derive(Clone, Debug, PartialEq)]
enum Object {
    Secret(Secret),
    Namespace(Namespace),
}

impl Object {
    fn resource(&self) -> &'static str {
        match self {
            Object::Secret(_) => SECRETS,
            Object::Namespace(_) => NAMESPACES,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Object::Secret(secret) => secret_json(secret),
            Object::Namespace(namespace) => namespace_json(namespace),
        }
    }
}

#[derive(Debug)]
struct Change {
    rv: u64,
    kind: ChangeKind,
    old: Option<Object>,
    new: Object,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge the server.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_down(&self) -> bool {
        self.signals.borrow().down
    }

    /// The count of open watches on `resource`.
    fn watch_counter(&self, resource: &str) -> &AtomicUsize {
        if resource == NAMESPACES {
            &self.active_namespace_watches
        } else {
            &self.active_secret_watches
        }
    }
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn fill_system_fields(&mut self, metadata: &mut ObjectMeta) {
        if metadata.uid.is_none() {
            self.uids += 1;
            metadata.uid = Some(new_uid(self.uids));
        }
        if metadata.creation_timestamp.is_none() {
            metadata.creation_timestamp = now_time();
        }
    }

    fn emit(&mut self, events: &broadcast::Sender<Arc<Change>>, change: Change) {
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        while self.history.len() > HISTORY_LIMIT {
            if let Some(dropped) = self.history.pop_front() {
                self.history_floor = dropped.rv;
            }
        }
        // No receivers is fine.
        let _ = events.send(change);
    }

    /// Store (insert or replace) with a new resourceVersion; emits the event.
    fn store(&mut self, events: &broadcast::Sender<Arc<Change>>, mut secret: Secret) -> Secret {
        let rv = self.next_rv();
        secret.metadata.resource_version = Some(rv.to_string());
        let key = key_of(&secret);
        let old = self.objects.insert(key, secret.clone());
        self.emit_stored(
            events,
            rv,
            old.map(Object::Secret),
            Object::Secret(secret.clone()),
        );
        secret
    }

    /// The event of an insert (ADDED) or a replacement (MODIFIED).
    fn emit_stored(
        &mut self,
        events: &broadcast::Sender<Arc<Change>>,
        rv: u64,
        old: Option<Object>,
        new: Object,
    ) {
        let kind = if old.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        self.emit(events, Change { rv, kind, old, new });
    }

    /// `store` for a Namespace.
    fn store_namespace(
        &mut self,
        events: &broadcast::Sender<Arc<Change>>,
        mut namespace: Namespace,
    ) -> Namespace {
        let rv = self.next_rv();
        namespace.metadata.resource_version = Some(rv.to_string());
        let name = namespace.metadata.name.clone().unwrap_or_default();
        let old = self.namespaces.insert(name, namespace.clone());
        self.emit_stored(
            events,
            rv,
            old.map(Object::Namespace),
            Object::Namespace(namespace.clone()),
        );
        namespace
    }

    fn remove_namespace(
        &mut self,
        events: &broadcast::Sender<Arc<Change>>,
        name: &str,
    ) -> Option<Namespace> {
        let mut old = self.namespaces.remove(name)?;
        let rv = self.next_rv();
        old.metadata.resource_version = Some(rv.to_string());
        self.emit(
            events,
            Change {
                rv,
                kind: ChangeKind::Deleted,
                old: None,
                new: Object::Namespace(old.clone()),
            },
        );
        Some(old)
    }

    /// What the `NamespaceLifecycle` admission plugin says about a write of
    /// Secret `name` into `namespace`: 404 (namespace kind) when the namespace
    /// does not exist; for a create, 403 when it is terminating.
    fn admit_into_namespace(
        &self,
        namespace: &str,
        name: &str,
        create: bool,
    ) -> Result<(), ApiError> {
        match self.namespaces.get(namespace) {
            None => Err(ApiError::namespace_not_found(namespace)),
            Some(ns) if create && is_terminating(ns) => {
                Err(ApiError::namespace_terminating(namespace, name))
            }
            Some(_) => Ok(()),
        }
    }

    fn remove(
        &mut self,
        events: &broadcast::Sender<Arc<Change>>,
        namespace: &str,
        name: &str,
    ) -> Option<Secret> {
        let mut old = self
            .objects
            .remove(&(namespace.to_string(), name.to_string()))?;
        let rv = self.next_rv();
        old.metadata.resource_version = Some(rv.to_string());
        self.emit(
            events,
            Change {
                rv,
                kind: ChangeKind::Deleted,
                old: None,
                new: Object::Secret(old.clone()),
            },
        );
        Some(old)
    }
}

fn is_terminating(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// The namespace with deletionTimestamp set and phase Terminating.
fn terminating(mut namespace: Namespace) -> Namespace {
    if namespace.metadata.deletion_timestamp.is_none() {
        namespace.metadata.deletion_timestamp = now_time();
    }
    namespace
        .status
        .get_or_insert_with(NamespaceStatus::default)
        .phase = Some("Terminating".to_string());
    namespace
}

fn key_of(secret: &Secret) -> (String, String) {
    (
        secret.metadata.namespace.clone().unwrap_or_default(),
        secret.metadata.name.clone().unwrap_or_default(),
    )
}

// ---------------------------------------------------------------------------
// Connection handling
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct ConnectionDropped;

impl fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake API closed the connection")
    }
}

impl std::error::Error for ConnectionDropped {}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut signals = shared.signals.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        tracing::warn!(%err, "fake API: accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut signals = shared.signals.subscribe();
                    let service_state = shared.clone();
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let shared = service_state.clone();
                        async move { shared.handle(req).await }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        () = wait_shutdown(&mut signals) => {}
                    }
                });
            }
            () = wait_shutdown(&mut signals) => break,
        }
    }
}

/// Resolves once the server shuts down (or the handle is gone).
async fn wait_shutdown(signals: &mut watch::Receiver<Signals>) {
    // The returned guard is dropped here, not held across an await.
    let _ = signals.wait_for(|s| s.shutdown).await.map(|_| ());
}

// ---------------------------------------------------------------------------
// Request routing
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Target {
    Collection,
    Item,
    MethodNotAllowed,
    /// A request the real server serves but the fake does not emulate (namespace
    /// writes): answered 405 after RBAC.
    NotEmulated,
    NotFound,
}

#[derive(Clone, Debug)]
struct RequestInfo {
    /// See `RecordedRequest::resource`.
    resource: String,
    verb: &'static str,
    target: Target,
    namespace: Option<String>,
    name: Option<String>,
    /// A path naming some API resource (as opposed to discovery/non-resource URLs).
    resource_path: bool,
}

fn is_write_verb(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

fn is_truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true") | Some("1"))
}

fn request_info(
    method: &Method,
    path: &str,
    params: &[(String, String)],
    body: Option<&Value>,
) -> RequestInfo {
    let mut info = RequestInfo {
        resource: resource_of(path),
        verb: "unknown",
        target: Target::NotFound,
        namespace: None,
        name: None,
        resource_path: is_resource_path(path),
    };
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return info;
    };
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return info;
    }
    let watch = is_truthy(param(params, "watch"));
    match segs.as_slice() {
        ["namespaces"] => {
            info.target = Target::Collection;
            info.verb = match *method {
                Method::GET if watch => "watch",
                Method::GET => "list",
                Method::POST => {
                    info.target = Target::NotEmulated;
                    info.name = body
                        .and_then(|b| b.pointer("/metadata/name"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    "create"
                }
                _ => {
                    info.target = Target::MethodNotAllowed;
                    "unknown"
                }
            };
            return info;
        }
        ["namespaces", name] => {
            info.namespace = Some(name.to_string());
            info.name = Some(name.to_string());
            info.target = Target::NotEmulated;
            info.verb = match *method {
                Method::GET => {
                    info.target = Target::Item;
                    "get"
                }
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => {
                    info.target = Target::MethodNotAllowed;
                    "unknown"
                }
            };
            return info;
        }
        _ => {}
    }
    if let ["namespaces", ns, "events"] = segs.as_slice() {
        info.namespace = Some(ns.to_string());
        info.target = Target::Collection;
        info.verb = if *method == Method::POST {
            "create"
        } else {
            info.target = Target::NotEmulated;
            match *method {
                Method::GET if watch => "watch",
                Method::GET => "list",
                Method::DELETE => "deletecollection",
                _ => "unknown",
            }
        };
        return info;
    }
    let (namespace, name) = match segs.as_slice() {
        ["secrets"] => (None, None),
        ["namespaces", ns, "secrets"] => (Some(ns.to_string()), None),
        ["namespaces", ns, "secrets", name] => (Some(ns.to_string()), Some(name.to_string())),
        _ => return info,
    };
    info.namespace = namespace;
    if let Some(name) = name {
        info.name = Some(name);
        info.target = Target::Item;
        info.verb = match *method {
            Method::GET => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => {
                info.target = Target::MethodNotAllowed;
                "unknown"
            }
        };
    } else {
        info.target = Target::Collection;
        let namespaced = info.namespace.is_some();
        info.verb = match *method {
            Method::GET if watch => "watch",
            Method::GET => "list",
            Method::POST if namespaced => "create",
            Method::DELETE if namespaced => "deletecollection",
            _ => {
                info.target = Target::MethodNotAllowed;
                "unknown"
            }
        };
        if info.verb == "create" {
            info.name = body
                .and_then(|b| b.pointer("/metadata/name"))
                .and_then(Value::as_str)
                .map(str::to_string);
        }
    }
    info
}

/// `/api/v1/<resource>...` or `/apis/<group>/<version>/<resource>...`; discovery
/// (`/api`, `/api/v1`, `/apis/<g>/<v>`), `/version`, `/healthz`... are not.
fn is_resource_path(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.first() {
        Some(&"api") => segs.len() >= 3,
        Some(&"apis") => segs.len() >= 4,
        _ => false,
    }
}

/// The resource a URL names (`RecordedRequest::resource`): `/api/v1/<resource>...`,
/// `/api/v1/namespaces/<ns>/<resource>...`, the same under `/apis/<group>/<version>`;
/// "" for anything else.
fn resource_of(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segs.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return String::new(),
    };
    match rest {
        // Subresources of a Namespace.
        ["namespaces", _, "status" | "finalize"] => NAMESPACES.to_string(),
        ["namespaces", _, resource, ..] => resource.to_string(),
        [resource, ..] => resource.to_string(),
        [] => String::new(),
    }
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    let uri = format!("/?{query}");
    match uri.parse::<axum::http::Uri>() {
        Ok(uri) => Query::<Vec<(String, String)>>::try_from_uri(&uri)
            .map(|q| q.0)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// Errors and responses
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: String,
    message: String,
    name: Option<String>,
    kind: &'static str,
    /// `details.causes`, when any.
    causes: Vec<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.to_string(),
            message: message.into(),
            name: None,
            kind: SECRETS,
            causes: Vec::new(),
        }
    }

    fn with_kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    fn with_name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    fn not_found(name: &str) -> Self {
        Self::new(404, "NotFound", format!("secrets \"{name}\" not found")).with_name(name)
    }

    /// What `NamespaceLifecycle` answers for a write into a missing namespace: the
    /// namespace's NotFound.
    fn namespace_not_found(namespace: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
        )
        .with_name(namespace)
        .with_kind(NAMESPACES)
    }

    /// What `NamespaceLifecycle` answers for a create in a terminating namespace.
    fn namespace_terminating(namespace: &str, name: &str) -> Self {
        let subject = if name.is_empty() {
            SECRETS.to_string()
        } else {
            format!("{SECRETS} \"{name}\"")
        };
        let mut e = Self::new(
            403,
            "Forbidden",
            format!(
                "{subject} is forbidden: unable to create new content in namespace {namespace} because it is being terminated"
            ),
        )
        .with_name(name);
        e.causes.push(json!({
            "reason": "NamespaceTerminating",
            "message": format!("namespace {namespace} is being terminated"),
            "field": "metadata.namespace",
        }));
        e
    }

    fn already_exists(name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("secrets \"{name}\" already exists"),
        )
        .with_name(name)
    }

    fn conflict(name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on secrets \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_name(name)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn invalid(name: &str, causes: &[String]) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("Secret \"{name}\" is invalid: {}", causes.join(", ")),
        )
        .with_name(name)
        .with_kind("Secret")
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    fn into_response(self) -> Response<Body> {
        let mut details = Map::new();
        if let Some(name) = &self.name {
            details.insert("name".into(), Value::String(name.clone()));
        }
        details.insert("kind".into(), Value::String(self.kind.to_string()));
        if !self.causes.is_empty() {
            details.insert("causes".into(), Value::Array(self.causes.clone()));
        }
        let body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": details,
            "code": self.code,
        });
        json_response(self.code, &body)
    }
}

fn reason_for_code(code: u16, verb: &str) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 if verb == "create" => "AlreadyExists",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

fn fault_error(
    code: u16,
    reason: Option<&str>,
    message: Option<&str>,
    info: &RequestInfo,
) -> ApiError {
    let reason = reason.unwrap_or_else(|| reason_for_code(code, info.verb));
    let name = info.name.as_deref().unwrap_or("");
    let resource = error_kind(info);
    let message = match message {
        Some(m) => m.to_string(),
        None => match reason {
            "AlreadyExists" => format!("{resource} \"{name}\" already exists"),
            "Conflict" => ApiError::conflict(name).message.replacen(SECRETS, resource, 1),
            "NotFound" => format!("{resource} \"{name}\" not found"),
            "Forbidden" => forbidden_message(info),
            "InternalError" => "Internal error occurred: injected fault".to_string(),
            "ServiceUnavailable" => "the server is currently unable to handle the request".to_string(),
            "TooManyRequests" => "the server has received too many requests and has asked us to try again later".to_string(),
            "Timeout" => "the server was unable to return a response in the time allotted, but may still be processing the request".to_string(),
            _ => format!("injected fault: HTTP {code}"),
        },
    };
    let mut e = ApiError::new(code, reason, message).with_kind(resource);
    e.name = info.name.clone();
    e
}

/// The resource named in errors about this request ("secrets" for anything the
/// fake does not serve, as before namespaces were served).
fn error_kind(info: &RequestInfo) -> &'static str {
    if info.resource == NAMESPACES {
        NAMESPACES
    } else {
        SECRETS
    }
}

fn forbidden_message(info: &RequestInfo) -> String {
    let resource = error_kind(info);
    let subject = match &info.name {
        Some(name) if info.verb != "create" => format!("{resource} \"{name}\""),
        _ => resource.to_string(),
    };
    // A request on one Namespace has it as its namespace attribute, and RBAC
    // says so ("in the namespace \"team-a\"").
    let scope = match &info.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    format!(
        "{subject} is forbidden: User \"{FAKE_API_USER}\" cannot {} resource \"{resource}\" in API group \"\" {scope}",
        info.verb
    )
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn secret_json(secret: &Secret) -> Value {
    serde_json::to_value(secret).unwrap_or(Value::Null)
}

fn namespace_json(namespace: &Namespace) -> Value {
    serde_json::to_value(namespace).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------
// Handling
// ---------------------------------------------------------------------------

type ApiResult = Result<(u16, Value), ApiError>;

impl Shared {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, ConnectionDropped> {
        let (parts, body) = req.into_parts();
        let seq = {
            let mut state = self.lock();
            state.seq += 1;
            state.seq - 1
        };
        let query = parts.uri.query().unwrap_or("").to_string();
        let params = parse_query(&query);
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body_bytes = axum::body::to_bytes(Body::new(body), MAX_BODY_BYTES).await;
        let body_json = body_bytes
            .as_ref()
            .ok()
            .filter(|b| !b.is_empty())
            .and_then(|b| serde_json::from_slice::<Value>(b).ok());
        let info = request_info(&parts.method, parts.uri.path(), &params, body_json.as_ref());
        let mut record = RecordedRequest {
            seq,
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: query.clone(),
            resource: info.resource.clone(),
            verb: info.verb.to_string(),
            namespace: info.namespace.clone(),
            name: info.name.clone(),
            content_type: content_type.clone(),
            body: body_json,
            status: 0,
            fault: None,
            delayed: None,
            rbac_denied: self.rbac_denies(&info, &params),
            reached_store: false,
        };
        tracing::debug!(method = %record.method, path = %record.path, query = %record.query, resource = %record.resource, verb = %record.verb, "fake API request");

        if self.is_down() {
            record.fault = Some("down".to_string());
            self.record(record);
            return Err(ConnectionDropped);
        }

        let (delay, answer) = self.fire_faults(&info);
        if !delay.is_zero() {
            record.delayed = Some(delay);
            tokio::time::sleep(delay).await;
            if self.is_down() {
                record.fault = Some("down".to_string());
                self.record(record);
                return Err(ConnectionDropped);
            }
        }
        if let Some((label, action)) = answer {
            record.fault = Some(label);
            match action {
                FaultAction::Status {
                    code,
                    reason,
                    message,
                } => {
                    let response = fault_error(code, reason.as_deref(), message.as_deref(), &info)
                        .into_response();
                    record.status = response.status().as_u16();
                    self.record(record);
                    return Ok(response);
                }
                FaultAction::CloseConnection | FaultAction::Delay(_) => {
                    self.record(record);
                    return Err(ConnectionDropped);
                }
            }
        }

        let response = match (&info.target, body_bytes) {
            (Target::NotFound, _) => ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
            .into_response(),
            (Target::MethodNotAllowed, _) => ApiError::new(
                405,
                "MethodNotAllowed",
                format!(
                    "the server does not allow this method on the requested resource ({} {})",
                    parts.method,
                    parts.uri.path()
                ),
            )
            .into_response(),
            _ if record.rbac_denied => ApiError::new(403, "Forbidden", forbidden_message(&info))
                .with_name(info.name.as_deref().unwrap_or(""))
                .with_kind(error_kind(&info))
                .into_response(),
            (Target::NotEmulated, _) => ApiError::new(
                405,
                "MethodNotAllowed",
                format!(
                    "the fake API does not emulate {} on {} ({} {})",
                    info.verb,
                    info.resource,
                    parts.method,
                    parts.uri.path()
                ),
            )
            .with_kind(error_kind(&info))
            .into_response(),
            (_, Err(err)) => {
                ApiError::bad_request(format!("unable to read the request body: {err}"))
                    .into_response()
            }
            (_, Ok(bytes)) => {
                record.reached_store = true;
                let ctx = Ctx {
                    info: &info,
                    params: &params,
                    content_type: content_type.as_deref(),
                    body: &bytes,
                };
                if info.verb == "watch" {
                    match self.clone().watch(&ctx) {
                        Ok(response) => response,
                        Err(e) => e.into_response(),
                    }
                } else {
                    match self.dispatch(&ctx) {
                        Ok((code, value)) => json_response(code, &value),
                        Err(e) => e.into_response(),
                    }
                }
            }
        };
        record.status = response.status().as_u16();
        self.record(record);
        Ok(response)
    }

    fn record(&self, record: RecordedRequest) {
        self.lock().log.push(record);
    }

    /// Stores a core/v1 Event as sent, named from its generateName when it has no name.
    fn create_event(&self, ctx: &Ctx<'_>, ns: &str) -> ApiResult {
        let mut event: Value = serde_json::from_slice(ctx.body)
            .map_err(|e| ApiError::bad_request(format!("the Event is not JSON: {e}")))?;
        if event.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns) {
            return Err(ApiError::bad_request(
                "the Event's metadata.namespace does not match the URL's",
            ));
        }
        let mut state = self.lock();
        state.uids += 1;
        let uid = state.uids;
        if event.pointer("/metadata/name").is_none() {
            let prefix = event
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .unwrap_or("event.")
                .to_owned();
            event["metadata"]["name"] = Value::String(format!("{prefix}{uid:x}"));
        }
        state.events.push(event.clone());
        Ok((201, event))
    }

    fn rbac_denies(&self, info: &RequestInfo, params: &[(String, String)]) -> bool {
        let Some(allowed) = &self.rbac else {
            return false;
        };
        if info.resource == EVENTS && info.resource_path {
            // The chart's cluster role: create Events, nothing else.
            return info.verb != "create";
        }
        if info.resource == NAMESPACES
            && matches!(
                info.target,
                Target::Collection | Target::Item | Target::NotEmulated
            )
        {
            // The chart's cluster role: list and watch Namespaces, nothing else.
            return !matches!(info.verb, "list" | "watch");
        }
        let allowed_name =
            |name: Option<&str>| name.is_some_and(|n| allowed.iter().any(|a| a == n));
        match info.verb {
            "create" => false,
            // The chart's role: get/patch by name; no update (the injector never replaces a Secret).
            "get" | "patch" => !allowed_name(info.name.as_deref()),
            "update" => true,
            "list" | "watch" => {
                // As the API server's request info does (`RequiresExactMatch("metadata.name")`):
                // the name of a list is the exact `metadata.name` requirement among the selector's.
                let selected = param(params, "fieldSelector").and_then(|s| {
                    s.split(',').find_map(|req| {
                        let req = req.trim();
                        req.strip_prefix("metadata.name==")
                            .or_else(|| req.strip_prefix("metadata.name="))
                    })
                });
                !allowed_name(selected)
            }
            "delete" | "deletecollection" => true,
            // Other resources: the role grants nothing but Secrets.
            _ => info.target == Target::NotFound && info.resource_path,
        }
    }

    /// Consume the matching fault rules: (total delay, first answering rule).
    fn fire_faults(&self, info: &RequestInfo) -> (Duration, Option<(String, FaultAction)>) {
        let mut state = self.lock();
        let mut delay = Duration::ZERO;
        for fault in state.faults.iter_mut() {
            if !fault.matches(info) {
                continue;
            }
            if let Some(n) = fault.remaining.as_mut() {
                *n -= 1;
            }
            match &fault.action {
                FaultAction::Delay(d) => delay += *d,
                action => return (delay, Some((fault.describe(), action.clone()))),
            }
        }
        (delay, None)
    }

    fn dispatch(&self, ctx: &Ctx<'_>) -> ApiResult {
        let info = ctx.info;
        let ns = info.namespace.as_deref().unwrap_or("");
        let name = info.name.as_deref().unwrap_or("");
        if info.resource == NAMESPACES {
            return match info.verb {
                "get" => self.get_namespace(name),
                "list" => self.list_namespaces(ctx),
                _ => Err(ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )),
            };
        }
        if info.resource == EVENTS {
            return self.create_event(ctx, ns);
        }
        match info.verb {
            "get" => self.get(ns, name),
            "list" => self.list(ctx),
            "create" => self.create(ctx, ns),
            "update" => self.update(ctx, ns, name),
            "patch" => self.patch(ctx, ns, name),
            "delete" => self.delete(ctx, ns, name),
            "deletecollection" => self.delete_collection(ctx),
            _ => Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )),
        }
    }

    fn get(&self, ns: &str, name: &str) -> ApiResult {
        let state = self.lock();
        match state.objects.get(&(ns.to_string(), name.to_string())) {
            Some(secret) => Ok((200, secret_json(secret))),
            None => Err(ApiError::not_found(name)),
        }
    }

    fn list(&self, ctx: &Ctx<'_>) -> ApiResult {
        let filter = Filter::from_params(SECRETS, ctx.info.namespace.clone(), ctx.params)?;
        let limit = list_limit(ctx.params)?;
        let after = param(ctx.params, "continue")
            .filter(|c| !c.is_empty())
            .map(|c| match c.split_once('/') {
                Some((ns, name)) => Ok((ns.to_string(), name.to_string())),
                None => Err(invalid_continue()),
            })
            .transpose()?;
        let state = self.lock();
        let matching: Vec<(String, Value)> = state
            .objects
            .iter()
            .filter(|(key, _)| after.as_ref().is_none_or(|a| *key > a))
            .filter(|(_, s)| filter.matches_secret(s))
            .map(|((ns, name), s)| (format!("{ns}/{name}"), secret_json(s)))
            .collect();
        Ok((200, list_page("SecretList", state.rv, matching, limit)))
    }

    fn get_namespace(&self, name: &str) -> ApiResult {
        let state = self.lock();
        match state.namespaces.get(name) {
            Some(namespace) => Ok((200, namespace_json(namespace))),
            None => Err(ApiError::namespace_not_found(name)),
        }
    }

    fn list_namespaces(&self, ctx: &Ctx<'_>) -> ApiResult {
        let filter = Filter::from_params(NAMESPACES, None, ctx.params)?;
        let limit = list_limit(ctx.params)?;
        let after = param(ctx.params, "continue").filter(|c| !c.is_empty());
        let state = self.lock();
        let matching: Vec<(String, Value)> = state
            .namespaces
            .iter()
            .filter(|(name, _)| after.is_none_or(|a| name.as_str() > a))
            .filter(|(_, n)| filter.matches_namespace(n))
            .map(|(name, n)| (name.clone(), namespace_json(n)))
            .collect();
        Ok((200, list_page("NamespaceList", state.rv, matching, limit)))
    }

    fn create(&self, ctx: &Ctx<'_>, ns: &str) -> ApiResult {
        let body = parse_object_body(ctx.body)?;
        check_kind(&body, false)?;
        let mut secret = parse_secret(body)?;
        if let Some(body_ns) = secret.metadata.namespace.as_deref()
            && !body_ns.is_empty()
            && body_ns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        secret.metadata.namespace = Some(ns.to_string());
        if secret
            .metadata
            .resource_version
            .as_deref()
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let dry_run = is_dry_run(ctx.params);
        let mut state = self.lock();
        state.admit_into_namespace(ns, secret.metadata.name.as_deref().unwrap_or(""), true)?;
        if secret.metadata.name.as_deref().unwrap_or("").is_empty() {
            match secret.metadata.generate_name.as_deref() {
                Some(prefix) if !prefix.is_empty() => {
                    state.uids += 1;
                    secret.metadata.name = Some(format!("{prefix}{}", random_suffix(state.uids)));
                }
                _ => {
                    return Err(ApiError::invalid(
                        "",
                        &[
                            "metadata.name: Required value: name or generateName is required"
                                .into(),
                        ],
                    ));
                }
            }
        }
        let name = secret.metadata.name.clone().unwrap_or_default();
        secret.metadata.uid = None;
        secret.metadata.creation_timestamp = None;
        secret.metadata.managed_fields = None;
        secret.metadata.deletion_timestamp = None;
        normalize(&mut secret);
        validate(&secret)?;
        if state.objects.contains_key(&(ns.to_string(), name.clone())) {
            return Err(ApiError::already_exists(&name));
        }
        state.fill_system_fields(&mut secret.metadata);
        if dry_run {
            return Ok((201, secret_json(&secret)));
        }
        let stored = state.store(&self.events, secret);
        Ok((201, secret_json(&stored)))
    }

    fn update(&self, ctx: &Ctx<'_>, ns: &str, name: &str) -> ApiResult {
        let body = parse_object_body(ctx.body)?;
        check_kind(&body, false)?;
        let secret = parse_secret(body)?;
        check_identity(&secret, ns, name)?;
        let mut state = self.lock();
        let Some(old) = state
            .objects
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
        else {
            return Err(ApiError::not_found(name));
        };
        state.admit_into_namespace(ns, name, false)?;
        check_rv_precondition(secret.metadata.resource_version.as_deref(), &old, name)?;
        self.commit_update(&mut state, ctx, old, secret, 200)
    }

    fn patch(&self, ctx: &Ctx<'_>, ns: &str, name: &str) -> ApiResult {
        let media = ctx
            .content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/apply-patch+yaml" => self.apply(ctx, ns, name),
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                self.merge_patch(ctx, ns, name)
            }
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json (not emulated), application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {other:?}"
                ),
            )),
        }
    }

    /// Server-side apply (merge semantics; no managed-field bookkeeping).
    fn apply(&self, ctx: &Ctx<'_>, ns: &str, name: &str) -> ApiResult {
        if param(ctx.params, "fieldManager").is_none_or(str::is_empty) {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let mut applied = parse_object_body(ctx.body).map_err(|e| {
            ApiError::bad_request(format!(
                "{} (the fake API accepts JSON apply bodies only, as kube sends them)",
                e.message
            ))
        })?;
        check_kind(&applied, true)?;
        let applied_rv = applied
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty())
            .map(str::to_string);
        for field in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "selfLink",
            "generation",
            "deletionTimestamp",
        ] {
            if let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove(field);
            }
        }
        // Typed view only to check identity and shape.
        let typed = parse_secret(applied.clone())?;
        check_identity(&typed, ns, name)?;

        let mut state = self.lock();
        match state
            .objects
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
        {
            None => {
                state.admit_into_namespace(ns, name, true)?;
                if applied_rv.is_some() {
                    return Err(ApiError::conflict(name));
                }
                let mut secret = typed;
                secret.metadata.name = Some(name.to_string());
                secret.metadata.namespace = Some(ns.to_string());
                normalize(&mut secret);
                validate(&secret)?;
                state.fill_system_fields(&mut secret.metadata);
                if is_dry_run(ctx.params) {
                    return Ok((201, secret_json(&secret)));
                }
                let stored = state.store(&self.events, secret);
                Ok((201, secret_json(&stored)))
            }
            Some(old) => {
                state.admit_into_namespace(ns, name, false)?;
                check_rv_precondition(applied_rv.as_deref(), &old, name)?;
                let mut merged = secret_json(&old);
                merge_patch(&mut merged, &applied);
                let new = parse_secret(merged)?;
                self.commit_update(&mut state, ctx, old, new, 200)
            }
        }
    }

    fn merge_patch(&self, ctx: &Ctx<'_>, ns: &str, name: &str) -> ApiResult {
        let patch = parse_object_body(ctx.body)?;
        let mut state = self.lock();
        let Some(old) = state
            .objects
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
        else {
            return Err(ApiError::not_found(name));
        };
        state.admit_into_namespace(ns, name, false)?;
        let patch_rv = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        check_rv_precondition(patch_rv, &old, name)?;
        if let Some(uid) = patch.pointer("/metadata/uid").and_then(Value::as_str)
            && Some(uid) != old.metadata.uid.as_deref()
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.metadata.uid.as_deref().unwrap_or("")
                ),
            )
            .with_name(name));
        }
        let mut merged = secret_json(&old);
        merge_patch(&mut merged, &patch);
        let new = parse_secret(merged)?;
        if new.metadata.name.as_deref() != Some(name)
            || new.metadata.namespace.as_deref() != Some(ns)
        {
            return Err(ApiError::bad_request(
                "metadata.name and metadata.namespace cannot be changed by a patch",
            ));
        }
        self.commit_update(&mut state, ctx, old, new, 200)
    }

    /// Shared tail of update/apply/patch: keep system fields, default, validate,
    /// enforce immutability, skip no-op writes (as the real server does), store.
    fn commit_update(
        &self,
        state: &mut State,
        ctx: &Ctx<'_>,
        old: Secret,
        mut new: Secret,
        code: u16,
    ) -> ApiResult {
        new.metadata.namespace = old.metadata.namespace.clone();
        new.metadata.name = old.metadata.name.clone();
        new.metadata.uid = old.metadata.uid.clone();
        new.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
        new.metadata.resource_version = old.metadata.resource_version.clone();
        new.metadata.managed_fields = None;
        new.metadata.deletion_timestamp = old.metadata.deletion_timestamp.clone();
        normalize(&mut new);
        validate(&new)?;
        let name = old.metadata.name.clone().unwrap_or_default();
        let mut causes = Vec::new();
        if new.type_ != old.type_ {
            causes.push(format!(
                "type: Invalid value: {:?}: field is immutable",
                new.type_.as_deref().unwrap_or("")
            ));
        }
        if old.immutable == Some(true) {
            if new.data != old.data {
                causes.push("data: Forbidden: field is immutable when `immutable` is set".into());
            }
            if new.immutable != Some(true) {
                causes.push(
                    "immutable: Forbidden: field is immutable when `immutable` is set".into(),
                );
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&name, &causes));
        }
        if new == old || is_dry_run(ctx.params) {
            return Ok((code, secret_json(&new)));
        }
        let stored = state.store(&self.events, new);
        Ok((code, secret_json(&stored)))
    }

    fn delete(&self, ctx: &Ctx<'_>, ns: &str, name: &str) -> ApiResult {
        let options = if ctx.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice::<Value>(ctx.body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        let mut state = self.lock();
        let Some(old) = state
            .objects
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
        else {
            return Err(ApiError::not_found(name));
        };
        if let Some(uid) = options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            && Some(uid) != old.metadata.uid.as_deref()
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.metadata.uid.as_deref().unwrap_or("")
                ),
            )
            .with_name(name));
        }
        if let Some(rv) = options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            && Some(rv) != old.metadata.resource_version.as_deref()
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    old.metadata.resource_version.as_deref().unwrap_or("")
                ),
            )
            .with_name(name));
        }
        if is_dry_run(ctx.params)
            || options.pointer("/dryRun/0").and_then(Value::as_str) == Some("All")
        {
            return Ok((200, secret_json(&old)));
        }
        match state.remove(&self.events, ns, name) {
            Some(deleted) => Ok((200, secret_json(&deleted))),
            None => Err(ApiError::not_found(name)),
        }
    }

    fn delete_collection(&self, ctx: &Ctx<'_>) -> ApiResult {
        let filter = Filter::from_params(SECRETS, ctx.info.namespace.clone(), ctx.params)?;
        let mut state = self.lock();
        let keys: Vec<(String, String)> = state
            .objects
            .iter()
            .filter(|(_, s)| filter.matches_secret(s))
            .map(|(k, _)| k.clone())
            .collect();
        let dry_run = is_dry_run(ctx.params);
        let mut items = Vec::new();
        for (ns, name) in keys {
            if dry_run {
                if let Some(s) = state.objects.get(&(ns, name)) {
                    items.push(secret_json(s));
                }
            } else if let Some(s) = state.remove(&self.events, &ns, &name) {
                items.push(secret_json(&s));
            }
        }
        Ok((
            200,
            json!({"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
        ))
    }

    /// A watch of Secrets or Namespaces (`ctx.info.resource`).
    fn watch(self: Arc<Self>, ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
        let resource = if ctx.info.resource == NAMESPACES {
            NAMESPACES
        } else {
            SECRETS
        };
        let filter = Filter::from_params(resource, ctx.info.namespace.clone(), ctx.params)?;
        let timeout = match param(ctx.params, "timeoutSeconds") {
            Some(t) => match t.parse::<u64>() {
                Ok(0) => DEFAULT_WATCH_TIMEOUT,
                Ok(secs) => Duration::from_secs(secs),
                Err(_) => {
                    return Err(ApiError::bad_request(format!(
                        "invalid timeoutSeconds: {t}"
                    )));
                }
            },
            None => DEFAULT_WATCH_TIMEOUT,
        };
        let since =
            match param(ctx.params, "resourceVersion").filter(|rv| !rv.is_empty() && *rv != "0") {
                Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion: {rv}"))
                })?),
                None => None,
            };
        let send_initial = is_truthy(param(ctx.params, "sendInitialEvents"));

        let mut pending = VecDeque::new();
        let mut closing = false;
        let state = self.lock();
        // Subscribing under the state lock: every change is emitted under it,
        // so nothing falls between the snapshot/history below and the stream.
        let rx = self.events.subscribe();
        match since {
            Some(since) if !send_initial => {
                if since < state.history_floor {
                    pending.push_back(watch_line("ERROR", &expired_status(since)));
                    closing = true;
                } else {
                    for change in state.history.iter().filter(|c| c.rv > since) {
                        if let Some(line) = render_change(change, &filter) {
                            pending.push_back(line);
                        }
                    }
                }
            }
            _ => {
                if resource == NAMESPACES {
                    for namespace in state
                        .namespaces
                        .values()
                        .filter(|n| filter.matches_namespace(n))
                    {
                        pending.push_back(watch_line("ADDED", &namespace_json(namespace)));
                    }
                } else {
                    for secret in state.objects.values().filter(|s| filter.matches_secret(s)) {
                        pending.push_back(watch_line("ADDED", &secret_json(secret)));
                    }
                }
                if send_initial {
                    let kind = if resource == NAMESPACES {
                        "Namespace"
                    } else {
                        "Secret"
                    };
                    let bookmark = json!({
                        "kind": kind,
                        "apiVersion": "v1",
                        "metadata": {
                            "resourceVersion": state.rv.to_string(),
                            "annotations": {INITIAL_EVENTS_END: "true"},
                        },
                    });
                    pending.push_back(watch_line("BOOKMARK", &bookmark));
                }
            }
        }
        let last_rv = state.rv;
        drop(state);

        self.watch_counter(resource).fetch_add(1, Ordering::SeqCst);
        let stream_state = WatchStream {
            pending,
            closing,
            rx,
            signals: self.signals.subscribe(),
            deadline: tokio::time::Instant::now() + timeout,
            filter,
            last_rv,
            _guard: WatchGuard(self.clone(), resource),
        };
        let stream = futures::stream::unfold(stream_state, next_watch_chunk);
        let mut response = Response::new(Body::from_stream(stream));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}

fn list_limit(params: &[(String, String)]) -> Result<usize, ApiError> {
    match param(params, "limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}"))),
        None => Ok(0),
    }
}

fn invalid_continue() -> ApiError {
    ApiError::new(410, "Expired", "the provided continue parameter is invalid")
}

/// A list answer from the matching items in key order, each with its continue
/// token: the first `limit` (all when 0), and a continue token after them when
/// more are left.
fn list_page(kind: &str, rv: u64, matching: Vec<(String, Value)>, limit: usize) -> Value {
    let total = matching.len();
    let page_len = if limit > 0 { limit.min(total) } else { total };
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), Value::String(rv.to_string()));
    if page_len < total
        && let Some((token, _)) = matching.get(page_len.wrapping_sub(1))
    {
        metadata.insert("continue".into(), Value::String(token.clone()));
        metadata.insert("remainingItemCount".into(), json!(total - page_len));
    }
    let items: Vec<Value> = matching
        .into_iter()
        .take(page_len)
        .map(|(_, item)| item)
        .collect();
    json!({"kind": kind, "apiVersion": "v1", "metadata": metadata, "items": items})
}

struct Ctx<'a> {
    info: &'a RequestInfo,
    params: &'a [(String, String)],
    content_type: Option<&'a str>,
    body: &'a Bytes,
}

fn is_dry_run(params: &[(String, String)]) -> bool {
    param(params, "dryRun") == Some("All")
}

fn parse_object_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

fn check_kind(body: &Value, required: bool) -> Result<(), ApiError> {
    let kind = body.get("kind").and_then(Value::as_str);
    let api_version = body.get("apiVersion").and_then(Value::as_str);
    if required && (kind.is_none() || api_version.is_none()) {
        return Err(ApiError::bad_request(
            "apiVersion and kind must be set for apply",
        ));
    }
    if let Some(kind) = kind
        && kind != "Secret"
    {
        return Err(ApiError::bad_request(format!(
            "kind {kind:?} does not match the expected kind \"Secret\""
        )));
    }
    if let Some(v) = api_version
        && v != "v1"
    {
        return Err(ApiError::bad_request(format!(
            "apiVersion {v:?} does not match the expected \"v1\""
        )));
    }
    Ok(())
}

fn parse_secret(value: Value) -> Result<Secret, ApiError> {
    serde_json::from_value::<Secret>(value)
        .map_err(|e| ApiError::bad_request(format!("the request body is not a valid Secret: {e}")))
}

fn check_identity(secret: &Secret, ns: &str, name: &str) -> Result<(), ApiError> {
    if let Some(body_name) = secret.metadata.name.as_deref()
        && body_name != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(body_ns) = secret.metadata.namespace.as_deref()
        && !body_ns.is_empty()
        && body_ns != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

fn check_rv_precondition(rv: Option<&str>, current: &Secret, name: &str) -> Result<(), ApiError> {
    match rv {
        Some(rv) if !rv.is_empty() && Some(rv) != current.metadata.resource_version.as_deref() => {
            Err(ApiError::conflict(name))
        }
        _ => Ok(()),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// What the API server's defaulting and (JSON omitempty) serialization do:
/// stringData is folded into data, type defaults to Opaque, empty maps vanish.
fn normalize(secret: &mut Secret) {
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in string_data {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    if secret.type_.as_deref().unwrap_or("").is_empty() {
        secret.type_ = Some("Opaque".to_string());
    }
    if secret.data.as_ref().is_some_and(BTreeMap::is_empty) {
        secret.data = None;
    }
    if secret
        .metadata
        .labels
        .as_ref()
        .is_some_and(BTreeMap::is_empty)
    {
        secret.metadata.labels = None;
    }
    if secret
        .metadata
        .annotations
        .as_ref()
        .is_some_and(BTreeMap::is_empty)
    {
        secret.metadata.annotations = None;
    }
    if secret.metadata.generate_name.as_deref() == Some("") {
        secret.metadata.generate_name = None;
    }
}

/// The parts of the API server's Secret validation an injector can trip over.
fn validate(secret: &Secret) -> Result<(), ApiError> {
    let name = secret.metadata.name.as_deref().unwrap_or("");
    let mut causes = Vec::new();
    if !is_dns_subdomain(name) {
        causes.push(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ));
    }
    let data = secret.data.clone().unwrap_or_default();
    let mut total = 0usize;
    for (key, value) in &data {
        total += value.0.len();
        let key_ok = !key.is_empty()
            && key.len() <= 253
            && key != "."
            && key != ".."
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !key_ok {
            causes.push(format!(
                "data[{key}]: Invalid value: {key:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
            ));
        }
    }
    if total > MAX_SECRET_DATA_BYTES {
        causes.push(format!(
            "data: Too long: must have at most {MAX_SECRET_DATA_BYTES} bytes"
        ));
    }
    let required_json_key = match secret.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") => Some(".dockerconfigjson"),
        Some("kubernetes.io/dockercfg") => Some(".dockercfg"),
        _ => None,
    };
    if let Some(key) = required_json_key {
        match data.get(key) {
            None => causes.push(format!("data[{key}]: Required value")),
            Some(value) => {
                if let Err(e) = serde_json::from_slice::<Value>(&value.0) {
                    causes.push(format!(
                        "data[{key}]: Invalid value: \"<secret contents redacted>\": {e}"
                    ));
                }
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(name, &causes))
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

// ---------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug, Default)]
struct Filter {
    /// `SECRETS` or `NAMESPACES`: objects of the other resource never match.
    resource: &'static str,
    namespace: Option<String>,
    /// (field, equal?, value)
    fields: Vec<(String, bool, String)>,
    labels: Vec<LabelReq>,
}

impl Filter {
    fn from_params(
        resource: &'static str,
        namespace: Option<String>,
        params: &[(String, String)],
    ) -> Result<Filter, ApiError> {
        let mut filter = Filter {
            resource,
            namespace,
            ..Filter::default()
        };
        // The field selectors the API server supports for each (metadata.namespace
        // is generic; a Namespace's is empty).
        let known: &[&str] = if resource == NAMESPACES {
            &["metadata.name", "metadata.namespace", "status.phase"]
        } else {
            &["metadata.name", "metadata.namespace", "type"]
        };
        if let Some(sel) = param(params, "fieldSelector") {
            for req in sel.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                let (key, eq, value) = if let Some((k, v)) = req.split_once("!=") {
                    (k, false, v)
                } else if let Some((k, v)) = req.split_once("==") {
                    (k, true, v)
                } else if let Some((k, v)) = req.split_once('=') {
                    (k, true, v)
                } else {
                    return Err(ApiError::bad_request(format!(
                        "invalid field selector: {req:?}"
                    )));
                };
                let key = key.trim();
                if !known.contains(&key) {
                    let only: Vec<String> = known.iter().map(|k| format!("{k:?}")).collect();
                    return Err(ApiError::bad_request(format!(
                        "\"{key}\" is not a known field selector: only {}",
                        only.join(", ")
                    )));
                }
                filter
                    .fields
                    .push((key.to_string(), eq, value.trim().to_string()));
            }
        }
        if let Some(sel) = param(params, "labelSelector") {
            if sel.contains('(') {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: set-based label selectors are not emulated: {sel:?}"
                )));
            }
            for req in sel.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                let parsed = if let Some((k, v)) = req.split_once("!=") {
                    LabelReq::NotEq(k.trim().into(), v.trim().into())
                } else if let Some((k, v)) = req.split_once("==") {
                    LabelReq::Eq(k.trim().into(), v.trim().into())
                } else if let Some((k, v)) = req.split_once('=') {
                    LabelReq::Eq(k.trim().into(), v.trim().into())
                } else if let Some(k) = req.strip_prefix('!') {
                    LabelReq::NotExists(k.trim().into())
                } else if req.contains(' ') {
                    return Err(ApiError::bad_request(format!(
                        "unable to parse requirement: {req:?}"
                    )));
                } else {
                    LabelReq::Exists(req.into())
                };
                filter.labels.push(parsed);
            }
        }
        Ok(filter)
    }

    fn matches(&self, object: &Object) -> bool {
        match object {
            Object::Secret(secret) => self.matches_secret(secret),
            Object::Namespace(namespace) => self.matches_namespace(namespace),
        }
    }

    fn matches_secret(&self, secret: &Secret) -> bool {
        self.resource == SECRETS
            && self.matches_meta(&secret.metadata, secret.type_.as_deref().unwrap_or(""))
    }

    fn matches_namespace(&self, namespace: &Namespace) -> bool {
        let phase = namespace
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        self.resource == NAMESPACES && self.matches_meta(&namespace.metadata, phase)
    }

    /// `other_field`: the value of the resource's own field selector (a Secret's
    /// type, a Namespace's status.phase).
    fn matches_meta(&self, meta: &ObjectMeta, other_field: &str) -> bool {
        if let Some(ns) = &self.namespace
            && meta.namespace.as_deref() != Some(ns.as_str())
        {
            return false;
        }
        for (field, eq, value) in &self.fields {
            let actual = match field.as_str() {
                "metadata.name" => meta.name.as_deref().unwrap_or(""),
                "metadata.namespace" => meta.namespace.as_deref().unwrap_or(""),
                _ => other_field,
            };
            if (actual == value) != *eq {
                return false;
            }
        }
        let label = |k: &str| {
            meta.labels
                .as_ref()
                .and_then(|l| l.get(k))
                .map(String::as_str)
        };
        self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        })
    }
}

// ---------------------------------------------------------------------------
// Watch streams
// ---------------------------------------------------------------------------

struct WatchGuard(Arc<Shared>, &'static str);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watch_counter(self.1).fetch_sub(1, Ordering::SeqCst);
    }
}

struct WatchStream {
    pending: VecDeque<Bytes>,
    /// End the stream once `pending` is drained.
    closing: bool,
    rx: broadcast::Receiver<Arc<Change>>,
    signals: watch::Receiver<Signals>,
    deadline: tokio::time::Instant,
    filter: Filter,
    last_rv: u64,
    _guard: WatchGuard,
}

async fn next_watch_chunk(
    mut st: WatchStream,
) -> Option<(Result<Bytes, std::io::Error>, WatchStream)> {
    loop {
        let signals = *st.signals.borrow_and_update();
        if signals.shutdown {
            return None;
        }
        if signals.down {
            // Abort the body: the client sees the connection break mid-stream.
            st.closing = true;
            st.pending.clear();
            return Some((Err(std::io::Error::other("fake API is down")), st));
        }
        if let Some(line) = st.pending.pop_front() {
            return Some((Ok(line), st));
        }
        if st.closing {
            return None;
        }
        tokio::select! {
            received = st.rx.recv() => match received {
                Ok(change) => {
                    if change.rv > st.last_rv {
                        st.last_rv = change.rv;
                        if let Some(line) = render_change(&change, &st.filter) {
                            st.pending.push_back(line);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    st.pending.push_back(watch_line("ERROR", &expired_status(st.last_rv)));
                    st.closing = true;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            _ = tokio::time::sleep_until(st.deadline) => return None,
            changed = st.signals.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
        }
    }
}

fn render_change(change: &Change, filter: &Filter) -> Option<Bytes> {
    let now = filter.matches(&change.new);
    let before = change.old.as_ref().is_some_and(|o| filter.matches(o));
    let event_type = match change.kind {
        ChangeKind::Added if now => "ADDED",
        ChangeKind::Deleted if now => "DELETED",
        ChangeKind::Modified => match (before, now) {
            (true, true) => "MODIFIED",
            (false, true) => "ADDED",
            (true, false) => "DELETED",
            (false, false) => return None,
        },
        _ => return None,
    };
    Some(watch_line(event_type, &change.new.to_json()))
}

fn watch_line(event_type: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn expired_status(rv: u64) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("too old resource version: {rv}"),
        "reason": "Expired",
        "code": 410,
    })
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn random_u64(salt: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::collections::hash_map::RandomState::new().hash_one((salt, nanos))
}

fn new_uid(counter: u64) -> String {
    let a = random_u64(counter);
    let b = random_u64(counter.wrapping_add(0x9e37_79b9_7f4a_7c15));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

fn random_suffix(counter: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = random_u64(counter);
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn now_time() -> Option<Time> {
    serde_json::from_value::<Time>(Value::String(now_rfc3339())).ok()
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
