//! Credential health: the registry check of [`registry_check`](super::registry_check) run in the
//! background for each registry entry with credentials and each concrete host it is used on.
//!
//! - The hosts are those Pods used (admission records them with [`RegistryHealth::saw`], which
//!   never blocks and never waits on a registry) plus the entry's `probeHosts`. A wildcard pattern
//!   is never checked as such. The set is bounded ([`HealthOptions::max_hosts`]).
//! - A host is checked when it is first seen, when the entry's credentials change (loaded, rotated,
//!   a new access token) and then every `healthCheck.interval`, with ±10 % jitter.
//! - At most one check per (entry, host) is in flight, at most [`HealthOptions::max_concurrent`]
//!   in all, each bounded by a short timeout.
//! - Each result goes to the `registry_credential_status` metric; a change of state is logged at
//!   WARN (never with the credential); the last result is read by admission for its warning.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::admission::{HostPattern, ImageReference};
use crate::config::{Config, Registry};
use crate::provisioning::credentials::DockerConfig;
use crate::provisioning::gcp_auth::random_jitter;
use crate::provisioning::registry_check::{
    self, BasicLogin, CheckClient, CheckResult, CheckStatus,
};
use crate::serving::metrics::Metrics;

/// Limits and times of the background checks. Defaults suit a cluster; tests shorten them.
#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// How often due checks are looked for (credential changes and new hosts also wake it).
    pub tick: Duration,
    /// Bound on one check, handshake and token request included.
    pub timeout: Duration,
    /// (Entry, host) pairs remembered at most; hosts seen past it are not checked.
    pub max_hosts: usize,
    /// Checks running at once at most.
    pub max_concurrent: usize,
    /// A host no Pod has pulled from for this long is forgotten with its result, freeing its
    /// place: made-up hosts from forged reviews do not hold the set for good.
    pub forget_after: Duration,
}

impl Default for HealthOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(5),
            timeout: registry_check::DEFAULT_CHECK_TIMEOUT,
            max_hosts: 256,
            max_concurrent: 4,
            forget_after: Duration::from_secs(3600),
        }
    }
}

/// The current credentials of a registry entry, as its pull Secrets carry them.
pub type CredentialLookup = Arc<dyn Fn(&str) -> Option<Arc<DockerConfig>> + Send + Sync>;

/// Told when a check of an entry on a host changes to `rejected`; must not block.
pub type RejectionNotifier = Arc<dyn Fn(Rejection) + Send + Sync>;

/// A registry newly rejecting an entry's credentials on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub registry: String,
    pub secret_name: String,
    pub host: String,
    /// The namespace of the first Pod seen pulling from the host; none for a `probeHosts` host no
    /// Pod used yet.
    pub namespace: Option<String>,
    pub detail: String,
}

/// The last check of an entry's credentials on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHealth {
    pub status: CheckStatus,
    /// The registry's reason (`403: ...`); empty when there is none.
    pub detail: String,
    /// A `rejected` about one repository only (403 for it): Pods pulling others are not warned.
    pub repository: Option<String>,
    pub checked_at: SystemTime,
}

#[derive(Clone)]
struct Seen {
    repository: String,
    namespace: String,
    /// When a Pod last pulled from the host, in milliseconds since [`Inner::epoch`].
    last_seen: Arc<AtomicU64>,
}

struct Entry {
    health: HostHealth,
    /// [`crate::provisioning::credentials::ContentHash::short`] of the credentials checked.
    credential: u64,
    due: Instant,
}

type Key = (String, String); // (registry entry, host)
/// Registry entry → host → value: looked up by `&str` on the admission path, without allocating.
type ByHost<V> = HashMap<String, HashMap<String, V>>;

fn get<'m, V>(map: &'m ByHost<V>, registry: &str, host: &str) -> Option<&'m V> {
    map.get(registry)?.get(host)
}

fn count<V>(map: &ByHost<V>) -> usize {
    map.values().map(HashMap::len).sum()
}

/// Keeps the (entry, host) pairs `keep` accepts; calls `dropped` for the others.
fn retain<V>(
    map: &mut ByHost<V>,
    keep: impl Fn(&str, &str) -> bool,
    mut dropped: impl FnMut(&str, &str),
) {
    for (registry, hosts) in map.iter_mut() {
        hosts.retain(|host, _| {
            let kept = keep(registry, host);
            if !kept {
                dropped(registry, host);
            }
            kept
        });
    }
    map.retain(|_, hosts| !hosts.is_empty());
}

struct Inner {
    options: HealthOptions,
    metrics: Arc<Metrics>,
    lookup: CredentialLookup,
    notifier: Option<RejectionNotifier>,
    config: watch::Receiver<Arc<Config>>,
    /// Hosts Pods used, with the first repository and namespace seen there.
    seen: RwLock<ByHost<Seen>>,
    results: RwLock<ByHost<Entry>>,
    in_flight: Mutex<HashSet<Key>>,
    permits: Arc<Semaphore>,
    wake: Notify,
    started: AtomicU64,
    epoch: Instant,
    shutdown: CancellationToken,
}

impl Inner {
    fn now_millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The background registry checks. Cloning shares them.
#[derive(Clone)]
pub struct RegistryHealth {
    inner: Arc<Inner>,
}

impl RegistryHealth {
    /// Starts the checker; it follows `config` and stops with `shutdown`.
    pub fn start(
        config: watch::Receiver<Arc<Config>>,
        lookup: CredentialLookup,
        notifier: Option<RejectionNotifier>,
        metrics: Arc<Metrics>,
        options: HealthOptions,
        shutdown: CancellationToken,
    ) -> Self {
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(options.max_concurrent.max(1))),
            options,
            metrics,
            lookup,
            notifier,
            config,
            seen: RwLock::new(HashMap::new()),
            results: RwLock::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            started: AtomicU64::new(0),
            epoch: Instant::now(),
            shutdown,
        });
        tokio::spawn(run(inner.clone()));
        Self { inner }
    }

    /// Records that a Pod in `namespace` pulls `repository` from `host` with `registry`'s Secret.
    /// Never blocks: when the set is busy or full, the host is not recorded (the next Pod tries again).
    pub fn saw(&self, registry: &Registry, host: &str, repository: &str, namespace: &str) {
        if !registry.health_check.enabled {
            return;
        }
        // The common case, a host already recorded: a shared read, no allocation.
        match self.inner.seen.try_read() {
            Ok(seen) => {
                if let Some(known) = get(&seen, &registry.name, host) {
                    known
                        .last_seen
                        .store(self.inner.now_millis(), Ordering::Relaxed);
                    return;
                }
            }
            Err(_) => return,
        }
        let Ok(mut seen) = self.inner.seen.try_write() else {
            return;
        };
        if get(&seen, &registry.name, host).is_some()
            || count(&seen) >= self.inner.options.max_hosts
        {
            return;
        }
        seen.entry(registry.name.clone()).or_default().insert(
            host.to_owned(),
            Seen {
                repository: repository.to_owned(),
                namespace: namespace.to_owned(),
                last_seen: Arc::new(AtomicU64::new(self.inner.now_millis())),
            },
        );
        drop(seen);
        self.inner.wake.notify_one();
    }

    /// The last check of `registry`'s credentials on `host`, if there is one. Never blocks.
    pub fn last(&self, registry: &str, host: &str) -> Option<HostHealth> {
        let results = self.inner.results.try_read().ok()?;
        get(&results, registry, host).map(|entry| entry.health.clone())
    }

    /// Looks for due checks now: credentials were loaded, rotated or minted.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Checks started since the start.
    pub fn checks_started(&self) -> u64 {
        self.inner.started.load(Ordering::Relaxed)
    }

    /// (Entry, host) pairs recorded from Pods.
    pub fn hosts_seen(&self) -> usize {
        self.inner.seen.read().map(|seen| count(&seen)).unwrap_or(0)
    }
}

async fn run(inner: Arc<Inner>) {
    loop {
        sweep(&inner);
        tokio::select! {
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(inner.options.tick) => {}
            () = inner.shutdown.cancelled() => break,
        }
    }
}

/// Starts every due check that is not already running, and forgets entries no longer checked.
fn sweep(inner: &Arc<Inner>) {
    let config = inner.config.borrow().clone();
    let checked: Vec<&Registry> = config
        .registries
        .iter()
        .filter(|r| r.health_check.enabled)
        .collect();
    forget_unchecked(inner, &checked);
    let Ok(seen) = inner.seen.read().map(|seen| seen.clone()) else {
        return;
    };
    let now = Instant::now();
    for registry in checked {
        let mut targets: Vec<(String, Option<Seen>)> = seen
            .get(&registry.name)
            .into_iter()
            .flatten()
            .map(|(host, seen)| (host.clone(), Some(seen.clone())))
            .collect();
        for probe in &registry.probe_hosts {
            let (host, repository) = crate::config::probe_target(probe);
            if !targets.iter().any(|(h, _)| h == host) {
                let seen = repository.map(|repository| Seen {
                    repository: repository.to_owned(),
                    namespace: String::new(),
                    last_seen: Arc::new(AtomicU64::new(0)),
                });
                targets.push((host.to_owned(), seen));
            }
        }
        if targets.is_empty() {
            continue;
        }
        let Some(content) = (inner.lookup)(&registry.name) else {
            continue; // not loaded yet: a load wakes the sweep
        };
        let credential = content.hash.short();
        for (host, seen) in targets {
            let due = inner.results.read().is_ok_and(|results| {
                get(&results, &registry.name, &host)
                    .is_none_or(|e| e.credential != credential || now >= e.due)
            });
            let key = (registry.name.clone(), host);
            if !due {
                continue;
            }
            let Ok(mut in_flight) = inner.in_flight.lock() else {
                return;
            };
            if !in_flight.insert(key.clone()) {
                continue;
            }
            drop(in_flight);
            inner.started.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(check_one(
                inner.clone(),
                registry.clone(),
                key,
                seen,
                content.clone(),
            ));
        }
    }
}

/// Forgets hosts seen for entries no longer checked or no longer covering them, and the results
/// (with their metric series) of hosts no longer checked: neither seen nor in `probeHosts`.
fn forget_unchecked(inner: &Inner, checked: &[&Registry]) {
    let covered = |registry: &str, host: &str| {
        checked
            .iter()
            .any(|r| r.name == registry && covers(&r.hosts, host, None).is_some())
    };
    let forget_after = u64::try_from(inner.options.forget_after.as_millis()).unwrap_or(u64::MAX);
    let now = inner.now_millis();
    let idle =
        |seen: &Seen| now.saturating_sub(seen.last_seen.load(Ordering::Relaxed)) > forget_after;
    // Write locks only when something is to go: admission's reads do not wait, and fail on a
    // write lock.
    if inner.seen.read().is_ok_and(|seen| {
        any_dropped(&seen, covered) || seen.values().flat_map(HashMap::values).any(idle)
    }) && let Ok(mut seen) = inner.seen.write()
    {
        for (registry, hosts) in seen.iter_mut() {
            hosts.retain(|host, seen| covered(registry, host) && !idle(seen));
        }
        seen.retain(|_, hosts| !hosts.is_empty());
    }
    let Ok(seen) = inner.seen.read().map(|seen| seen.clone()) else {
        return;
    };
    let target = |registry: &str, host: &str| {
        get(&seen, registry, host).is_some()
            || checked.iter().any(|r| {
                r.name == registry
                    && r.probe_hosts
                        .iter()
                        .any(|p| crate::config::probe_target(p).0 == host)
            })
    };
    if inner
        .results
        .read()
        .is_ok_and(|results| any_dropped(&results, target))
        && let Ok(mut results) = inner.results.write()
    {
        retain(&mut results, target, |registry, host| {
            inner.metrics.forget_credential_status(registry, host);
        });
    }
}

fn any_dropped<V>(map: &ByHost<V>, keep: impl Fn(&str, &str) -> bool) -> bool {
    map.iter()
        .any(|(registry, hosts)| hosts.keys().any(|host| !keep(registry, host)))
}

async fn check_one(
    inner: Arc<Inner>,
    registry: Registry,
    key: Key,
    seen: Option<Seen>,
    content: Arc<DockerConfig>,
) {
    let repository = seen.as_ref().map(|s| s.repository.as_str());
    let result = tokio::select! {
        permit = inner.permits.clone().acquire_owned() => {
            let _permit = permit;
            run_check(&inner, &registry, &key.1, repository, &content).await
        }
        () = inner.shutdown.cancelled() => None,
    };
    if let Some(result) = result {
        // A `probeHosts` repository has no namespace: no Event.
        let namespace = seen.map(|s| s.namespace).filter(|n| !n.is_empty());
        record(
            &inner,
            &registry,
            &key,
            result,
            content.hash.short(),
            namespace,
        );
    }
    if let Ok(mut in_flight) = inner.in_flight.lock() {
        in_flight.remove(&key);
    }
}

async fn run_check(
    inner: &Inner,
    registry: &Registry,
    host: &str,
    repository: Option<&str>,
    content: &DockerConfig,
) -> Option<CheckResult> {
    let Some(login) = login_for(&content.json, host, repository) else {
        return Some(CheckResult {
            status: CheckStatus::Unreachable,
            detail: "the credentials have no entry for this host".to_owned(),
            repository: None,
        });
    };
    let client = match client_for(registry.ca_file.as_deref(), inner.options.timeout).await {
        Ok(client) => client,
        Err(detail) => {
            return Some(CheckResult {
                status: CheckStatus::Unreachable,
                detail,
                repository: None,
            });
        }
    };
    Some(registry_check::check(&client, host, repository, &login).await)
}

/// The client for an entry: its CA bundle, read at each check so a renewed bundle is used.
pub async fn client_for(ca_file: Option<&Path>, timeout: Duration) -> Result<CheckClient, String> {
    let pem = match ca_file {
        None => None,
        Some(path) => Some(
            tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read the CA bundle {}: {e}", path.display()))?,
        ),
    };
    CheckClient::new(pem.as_deref(), timeout).map_err(|e| match ca_file {
        Some(path) => format!("{}: {e}", path.display()),
        None => e.to_string(),
    })
}

fn record(
    inner: &Inner,
    registry: &Registry,
    key: &Key,
    result: CheckResult,
    credential: u64,
    namespace: Option<String>,
) {
    let now = SystemTime::now();
    let interval = registry
        .health_check
        .interval
        .mul_f64(1.0 + random_jitter());
    let health = HostHealth {
        status: result.status,
        detail: result.detail,
        repository: result.repository,
        checked_at: now,
    };
    let previous = match inner.results.write() {
        Ok(mut results) => results
            .entry(key.0.clone())
            .or_default()
            .insert(
                key.1.clone(),
                Entry {
                    health: health.clone(),
                    credential,
                    due: Instant::now() + interval,
                },
            )
            .map(|e| e.health.status),
        Err(_) => return,
    };
    let unix = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    inner
        .metrics
        .credential_status(&key.0, &key.1, health.status.as_str(), unix);
    if previous == Some(health.status) {
        return;
    }
    let (registry_name, host, status, detail) = (
        &key.0,
        &key.1,
        health.status.as_str(),
        health.detail.as_str(),
    );
    let previous = previous.map_or("unknown", CheckStatus::as_str);
    if health.status == CheckStatus::Ok && previous == "unknown" {
        tracing::info!(registry = %registry_name, %host, %status, "registry accepts the credentials");
    } else {
        tracing::warn!(registry = %registry_name, %host, %status, %previous, %detail, "registry check changed state");
    }
    if health.status == CheckStatus::Rejected
        && let Some(notify) = &inner.notifier
    {
        notify(Rejection {
            registry: registry_name.clone(),
            secret_name: registry.secret_name.clone(),
            host: host.clone(),
            namespace,
            detail: health.detail.clone(),
        });
    }
}

/// The login a `.dockerconfigjson` gives for `host`: its `auths` entry whose key covers the host,
/// as the kubelet would pick it (for a key with a path, under that path).
pub fn login_for(json: &[u8], host: &str, repository: Option<&str>) -> Option<BasicLogin> {
    #[derive(serde::Deserialize)]
    struct Auths {
        auths: HashMap<String, AuthEntry>,
    }
    #[derive(serde::Deserialize)]
    struct AuthEntry {
        username: Option<String>,
        password: Option<String>,
        auth: Option<String>,
    }
    let auths: Auths = serde_json::from_slice(json).ok()?;
    let mut keys: Vec<(HostPattern, &AuthEntry)> = auths
        .auths
        .iter()
        .filter_map(|(key, entry)| Some((HostPattern::parse(key).ok()?, entry)))
        .collect();
    // The most specific key first, as the kubelet orders its keyring.
    keys.sort_by_key(|(pattern, _)| std::cmp::Reverse(pattern.as_str().len()));
    let patterns: Vec<HostPattern> = keys.iter().map(|(p, _)| p.clone()).collect();
    let at = covers(&patterns, host, repository)?;
    let entry = keys.get(at)?.1;
    match (&entry.username, &entry.password) {
        (Some(username), Some(password)) if !username.is_empty() => Some(BasicLogin {
            username: username.clone(),
            password: password.clone(),
        }),
        _ => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(entry.auth.as_deref()?)
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (username, password) = text.split_once(':')?;
            Some(BasicLogin {
                username: username.to_owned(),
                password: password.to_owned(),
            })
        }
    }
}

/// The index of the first pattern that covers an image on `host` (under `repository`, or under the
/// pattern's own path when no repository is known).
fn covers(patterns: &[HostPattern], host: &str, repository: Option<&str>) -> Option<usize> {
    patterns.iter().position(|pattern| {
        let path = match (repository, pattern.as_str().split_once('/')) {
            (Some(repo), _) => repo.to_owned(),
            (None, Some((_, path))) => format!("{path}/probe"),
            (None, None) => "probe".to_owned(),
        };
        ImageReference::parse(&format!("{host}/{path}")).is_ok_and(|r| pattern.matches(&r))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provisioning::credentials::render_basic;

    fn patterns(texts: &[&str]) -> Vec<HostPattern> {
        texts
            .iter()
            .map(|t| HostPattern::parse(t).expect("pattern"))
            .collect()
    }

    /// A closed loopback port: each check ends at once, unreachable.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }

    /// A checker with its own metrics, without Events.
    fn start(
        config: watch::Receiver<Arc<Config>>,
        lookup: CredentialLookup,
        options: HealthOptions,
    ) -> (RegistryHealth, Arc<Metrics>, CancellationToken) {
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let health = RegistryHealth::start(
            config,
            lookup,
            None,
            metrics.clone(),
            options,
            shutdown.clone(),
        );
        (health, metrics, shutdown)
    }

    async fn until(mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..500 {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn probe_hosts_are_checked_once_per_credential_and_forgotten_with_their_entry() {
        let host = format!("127.0.0.1:{}", closed_port());
        let config = |probe: bool| {
            let text = format!(
                "registries:\n- name: lab\n  hosts: [\"{host}\"]\n  secretName: lab-pull\n  credentials: {{basicAuth: {{usernameFile: /u, passwordFile: /p}}}}\n{}",
                if probe {
                    format!("  probeHosts: [\"{host}\"]\n")
                } else {
                    String::new()
                }
            );
            Arc::new(Config::from_yaml_str(&text).expect("config"))
        };
        let (config_tx, config_rx) = watch::channel(config(true));
        let password = Arc::new(Mutex::new("first".to_owned()));
        let lookup: CredentialLookup = {
            let password = password.clone();
            let patterns = patterns(&[&host]);
            Arc::new(move |_: &str| {
                let password = password.lock().expect("lock").clone();
                Some(Arc::new(render_basic(&patterns, "ci", &password)))
            })
        };
        let (health, metrics, shutdown) = start(
            config_rx,
            lookup,
            HealthOptions {
                tick: Duration::from_millis(20),
                ..HealthOptions::default()
            },
        );
        assert!(
            until(|| health.last("lab", &host).is_some()).await,
            "never checked"
        );
        assert_eq!(
            health.last("lab", &host).map(|h| h.status),
            Some(CheckStatus::Unreachable)
        );
        // Ticks pass; the interval (5 minutes) does not: no second check.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(health.checks_started(), 1);
        let series = format!("registry=\"lab\",host=\"{host}\",status=\"unreachable\"}} 1");
        assert!(metrics.render().contains(&series), "{}", metrics.render());

        // New credentials: checked again at once.
        *password.lock().expect("lock") = "second".to_owned();
        health.wake();
        assert!(until(|| health.checks_started() == 2).await);

        // The entry no longer lists the host: its result and its series go.
        config_tx.send_replace(config(false));
        assert!(until(|| health.last("lab", &host).is_none()).await);
        assert!(!metrics.render().contains(&host), "{}", metrics.render());
        shutdown.cancel();
    }

    /// The set of hosts is bounded, and a host no Pod pulls from any more leaves it with its
    /// result and metric series, so the place goes to the next host. One a Pod keeps using stays.
    #[tokio::test]
    async fn hosts_no_pod_uses_any_more_are_forgotten_and_free_their_place() {
        let (old, new, kept) = (closed_port(), closed_port(), closed_port());
        let text = format!(
            "registries:\n- name: lab\n  hosts: [\"127.0.0.1:{old}\", \"127.0.0.1:{new}\", \"127.0.0.1:{kept}\"]\n  secretName: lab-pull\n  credentials: {{basicAuth: {{usernameFile: /u, passwordFile: /p}}}}\n"
        );
        let config = Arc::new(Config::from_yaml_str(&text).expect("config"));
        let registry = config.registries[0].clone();
        let (_config_tx, config_rx) = watch::channel(config);
        let lookup: CredentialLookup = {
            let patterns = registry.hosts.clone();
            Arc::new(move |_: &str| Some(Arc::new(render_basic(&patterns, "ci", "pw"))))
        };
        let (health, metrics, shutdown) = start(
            config_rx,
            lookup,
            HealthOptions {
                tick: Duration::from_millis(20),
                max_hosts: 2,
                forget_after: Duration::from_millis(300),
                ..HealthOptions::default()
            },
        );
        let (old, new, kept) = (
            format!("127.0.0.1:{old}"),
            format!("127.0.0.1:{new}"),
            format!("127.0.0.1:{kept}"),
        );
        health.saw(&registry, &old, "team/app", "team-a");
        health.saw(&registry, &kept, "team/app", "team-a");
        assert!(
            until(|| health.last("lab", &old).is_some()).await,
            "never checked"
        );
        // Full: a third host is not recorded.
        health.saw(&registry, &new, "team/app", "team-a");
        assert_eq!(health.hosts_seen(), 2);
        // Pods keep pulling from `kept` only; `old` goes, with its result and series.
        assert!(
            until(|| {
                health.saw(&registry, &kept, "team/app", "team-a");
                health.last("lab", &old).is_none()
            })
            .await,
            "never forgotten"
        );
        assert!(!metrics.render().contains(&old), "{}", metrics.render());
        assert!(health.last("lab", &kept).is_some());
        // The freed place takes the next host.
        health.saw(&registry, &new, "team/app", "team-a");
        assert!(
            until(|| health.last("lab", &new).is_some()).await,
            "new host never checked"
        );
        assert_eq!(health.hosts_seen(), 2);
        shutdown.cancel();
    }

    #[test]
    fn the_login_for_a_host_comes_from_the_auths_key_that_covers_it() {
        let rendered = render_basic(&patterns(&["*-docker.pkg.dev", "gcr.io"]), "_json_key", "k");
        let login = login_for(&rendered.json, "europe-west1-docker.pkg.dev", Some("p/r/i"))
            .expect("covered");
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("_json_key", "k")
        );
        assert_eq!(login_for(&rendered.json, "quay.io", Some("a/b")), None);

        // A replicated .dockerconfigjson: `auth` only, and a key with a path.
        let json = br#"{"auths":{"lab.example.com:5000":{"auth":"Y2k6cGFzczp3aXRoOmNvbG9ucw=="},"gcr.io/acme":{"username":"u","password":"p"}}}"#;
        let login = login_for(json, "lab.example.com:5000", None).expect("covered");
        assert_eq!(login.username, "ci");
        assert_eq!(login.password, "pass:with:colons");
        assert!(login_for(json, "gcr.io", Some("acme/app")).is_some());
        assert!(login_for(json, "gcr.io", Some("other/app")).is_none());
        assert!(login_for(json, "gcr.io", None).is_some());
        assert!(login_for(b"not json", "gcr.io", None).is_none());
    }
}
