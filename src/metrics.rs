//! Prometheus metrics, served as OpenMetrics text on `/metrics`.

//!
//! The per-review metrics (outcomes, injections, duration) are written on every admission request
//! by whichever core serves it. One shared atomic per metric made the two cores take turns owning
//! its cache line on every request; here each thread adds to its own slot and a scrape sums the
//! slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];
type Labels3 = [(&'static str, String); 3];

/// Every admission outcome label.
const OUTCOMES: [&str; 6] = [
    "patched",
    "unchanged",
    "skipped",
    "ignored",
    "denied",
    "rejected",
];

/// Slots per metric. Threads take slots in turn; past this many threads, slots are shared, which
/// stays correct (the adds are atomic) and only costs speed.
const SLOTS: usize = 16;

/// The slot of the calling thread.
fn slot_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|slot| *slot)
}

/// One `T` per slot, each alone on its cache lines.
#[derive(Debug)]
struct PerThread<T>(Box<[Padded<T>]>);

#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded<T>(T);

impl<T: Default> PerThread<T> {
    fn new() -> Self {
        Self((0..SLOTS).map(|_| Padded::default()).collect())
    }

    /// The calling thread's slot.
    fn mine(&self) -> &T {
        &self.0[slot_index()].0
    }

    /// The sum of one counter over all slots.
    fn total(&self, value: impl Fn(&T) -> &AtomicU64) -> u64 {
        self.0
            .iter()
            .map(|slot| value(&slot.0).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// Upper bounds of the duration buckets, in seconds: 50 µs to ~1.6 s (the pure path sits at the low
/// end, provisioning calls at the high end); a last bucket takes the rest.
const DURATION_BOUNDS: usize = 16;
const DURATION_BUCKETS: usize = DURATION_BOUNDS + 1;

fn duration_bounds() -> Vec<f64> {
    exponential_buckets(0.00005, 2.0, DURATION_BOUNDS as u16).collect()
}

/// One thread's share of the per-review metrics.
#[derive(Debug, Default)]
struct ReviewSlot {
    outcomes: [AtomicU64; OUTCOMES.len()],
    /// Observations per bucket (not cumulative), the last one unbounded.
    buckets: [AtomicU64; DURATION_BUCKETS],
    duration_sum_nanos: AtomicU64,
}

#[derive(Debug)]
struct ReviewSlots {
    slots: PerThread<ReviewSlot>,
    bounds: Vec<f64>,
}

impl ReviewSlots {
    fn new() -> Self {
        Self {
            slots: PerThread::new(),
            bounds: duration_bounds(),
        }
    }
}

/// `admission_requests_total{outcome}`.
#[derive(Debug)]
struct OutcomeCounters(Arc<ReviewSlots>);

impl EncodeMetric for OutcomeCounters {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let totals = OUTCOMES
            .iter()
            .enumerate()
            .map(|(index, outcome)| (*outcome, self.0.slots.total(|slot| &slot.outcomes[index])));
        encode_counters(&mut encoder, "outcome", totals)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// One counter per value of the label `key`.
fn encode_counters<'a>(
    encoder: &mut MetricEncoder,
    key: &str,
    totals: impl Iterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    for (value, total) in totals {
        let labels = [(key, value)];
        encoder
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&total, None)?;
    }
    Ok(())
}

/// `admission_duration_seconds`.
#[derive(Debug)]
struct DurationHistogram(Arc<ReviewSlots>);

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let slots = &self.0;
        let buckets: Vec<(f64, u64)> = slots
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .enumerate()
            .map(|(index, bound)| (bound, slots.slots.total(|slot| &slot.buckets[index])))
            .collect();
        // The count is the buckets' own total, so the two always agree within a scrape.
        let count = buckets.iter().map(|(_, n)| *n).fold(0, u64::wrapping_add);
        let sum =
            Duration::from_nanos(slots.slots.total(|slot| &slot.duration_sum_nanos)).as_secs_f64();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One entry per registry entry of the config: a few, searched in order faster than hashed.
type InjectionMap = Vec<(Box<str>, Arc<PerThread<AtomicU64>>)>;

fn injection_counter<'m>(
    map: &'m InjectionMap,
    registry: &str,
) -> Option<&'m PerThread<AtomicU64>> {
    map.iter()
        .find(|(name, _)| **name == *registry)
        .map(|(_, counter)| &**counter)
}

/// `injections_total{registry}`: registries appear with their first injection. The map is read
/// without a lock on every review and copied on the rare first injection of a registry.
#[derive(Debug, Default)]
struct InjectionCounters(Arc<ArcSwap<InjectionMap>>);

impl EncodeMetric for InjectionCounters {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let map = self.0.load();
        let mut totals: Vec<(&str, u64)> = map
            .iter()
            .map(|(name, counter)| (&**name, counter.total(|count| count)))
            .collect();
        totals.sort_unstable();
        encode_counters(&mut encoder, "registry", totals.into_iter())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

pub struct Metrics {
    registry: Registry,
    reviews: Arc<ReviewSlots>,
    injections: Arc<ArcSwap<InjectionMap>>,
    config_reloads: Family<Labels, Counter>,
    certificate_reloads: Family<Labels, Counter>,
    config_valid: Gauge,
    secret_writes: Family<Labels3, Counter>,
    provisioning_pending: Family<Labels, Counter>,
    credential_reloads: Family<Labels2, Counter>,
    token_remaining: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    token_failures: Family<Labels, Counter>,
}

/// Result label of a reload attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Success,
    Failure,
}

impl ReloadResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pullsecret_injector");
        let reviews = Arc::new(ReviewSlots::new());
        registry.register(
            "admission_requests",
            "Admission requests by outcome (patched, unchanged, skipped, ignored, denied, rejected)",
            OutcomeCounters(reviews.clone()),
        );
        let injections = InjectionCounters::default();
        let injection_map = injections.0.clone();
        registry.register(
            "injections",
            "Pull Secret references added to Pods, by registry entry",
            injections,
        );
        registry.register(
            "admission_duration_seconds",
            "Time from a complete request body to the answer",
            DurationHistogram(reviews.clone()),
        );
        let config_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config file reloads by result; a failure keeps the previous config serving",
            config_reloads.clone(),
        );
        let certificate_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads by result; a failure keeps the previous certificate",
            certificate_reloads.clone(),
        );
        let config_valid = Gauge::default();
        registry.register(
            "config_last_reload_valid",
            "1 when the config file on disk is the one serving, 0 when the last reload was refused",
            config_valid.clone(),
        );
        let secret_writes = Family::<Labels3, Counter>::default();
        registry.register(
            "secret_writes",
            "Pull Secret writes (create, update) to the Kubernetes API by registry entry and result",
            secret_writes.clone(),
        );
        let provisioning_pending = Family::<Labels, Counter>::default();
        registry.register(
            "provisioning_pending",
            "Pods admitted before their pull Secret was ready (API error or budget exceeded), by registry entry",
            provisioning_pending.clone(),
        );
        let credential_reloads = Family::<Labels2, Counter>::default();
        registry.register(
            "credential_reloads",
            "Credential source reads by registry entry and result; a failure keeps the previous credentials",
            credential_reloads.clone(),
        );
        let token_remaining = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "access_token_remaining_seconds",
            "Remaining lifetime of the access token the pull Secrets carry, by registry entry (alert well above 0)",
            token_remaining.clone(),
        );
        let token_failures = Family::<Labels, Counter>::default();
        registry.register(
            "access_token_refresh_failures",
            "Failed access token refreshes by registry entry; each is retried with backoff",
            token_failures.clone(),
        );
        Self {
            reviews,
            injections: injection_map,
            token_remaining,
            token_failures,
            secret_writes,
            provisioning_pending,
            credential_reloads,
            registry,
            config_reloads,
            certificate_reloads,
            config_valid,
        }
    }

    /// Counts one admission request; `outcome` is one of [`OUTCOMES`] (others are not counted).
    pub fn request(&self, outcome: &'static str) {
        if let Some(index) = OUTCOMES.iter().position(|name| *name == outcome) {
            self.reviews.slots.mine().outcomes[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn injection(&self, registry: &str) {
        let count = |counter: &PerThread<AtomicU64>| {
            counter.mine().fetch_add(1, Ordering::Relaxed);
        };
        if let Some(counter) = injection_counter(&self.injections.load(), registry) {
            count(counter);
            return;
        }
        // The first injection for this registry entry: copy the map with a counter added.
        self.injections.rcu(|map| {
            let mut map = InjectionMap::clone(map);
            if injection_counter(&map, registry).is_none() {
                map.push((registry.into(), Arc::new(PerThread::new())));
            }
            map
        });
        if let Some(counter) = injection_counter(&self.injections.load(), registry) {
            count(counter);
        }
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        let slots = &self.reviews;
        let seconds = elapsed.as_secs_f64();
        let bucket = slots
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(slots.bounds.len());
        let slot = slots.slots.mine();
        slot.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        slot.duration_sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn config_reload(&self, result: ReloadResult) {
        self.config_reloads
            .get_or_create(&[("result", result.as_str().to_owned())])
            .inc();
        self.config_valid
            .set(i64::from(result == ReloadResult::Success));
    }

    pub fn certificate_reload(&self, result: ReloadResult) {
        self.certificate_reloads
            .get_or_create(&[("result", result.as_str().to_owned())])
            .inc();
    }

    /// `operation`: "create" or "update"; `result`: "success" or "failure".
    pub fn secret_write(&self, registry: &str, operation: &'static str, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.secret_writes
            .get_or_create(&[
                ("registry", registry.to_owned()),
                ("operation", operation.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
    }

    pub fn provisioning_pending(&self, registry: &str) {
        self.provisioning_pending
            .get_or_create(&[("registry", registry.to_owned())])
            .inc();
    }

    pub fn token_remaining(&self, registry: &str, seconds: f64) {
        self.token_remaining
            .get_or_create(&[("registry", registry.to_owned())])
            .set(seconds);
    }

    pub fn token_refresh_failure(&self, registry: &str) {
        self.token_failures
            .get_or_create(&[("registry", registry.to_owned())])
            .inc();
    }

    pub fn credential_reload(&self, registry: &str, result: ReloadResult) {
        self.credential_reloads
            .get_or_create(&[
                ("registry", registry.to_owned()),
                ("result", result.as_str().to_owned()),
            ])
            .inc();
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let metrics = Metrics::new();
        metrics.request("patched");
        metrics.request("patched");
        metrics.injection("gcp");
        metrics.config_reload(ReloadResult::Failure);
        metrics.observe_duration(Duration::from_micros(200));
        let text = metrics.render();
        assert!(
            text.contains("pullsecret_injector_admission_requests_total{outcome=\"patched\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("pullsecret_injector_injections_total{registry=\"gcp\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pullsecret_injector_config_reloads_total{result=\"failure\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pullsecret_injector_config_last_reload_valid 0"),
            "{text}"
        );
        assert!(
            text.contains("pullsecret_injector_admission_duration_seconds_count 1"),
            "{text}"
        );
    }

    /// Counts added from many threads (more threads than slots, so some share one) all show up.
    #[test]
    fn counts_from_many_threads_add_up() {
        let metrics = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..SLOTS + 4)
            .map(|_| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        metrics.request(if i % 4 == 0 { "unchanged" } else { "patched" });
                        metrics.injection(if i % 2 == 0 { "gcp" } else { "harbor" });
                        metrics.observe_duration(Duration::from_micros(i % 100));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let n = (SLOTS as u64 + 4) * 1000;
        let text = metrics.render();
        for line in [
            format!(
                "pullsecret_injector_admission_requests_total{{outcome=\"patched\"}} {}",
                n * 3 / 4
            ),
            format!(
                "pullsecret_injector_admission_requests_total{{outcome=\"unchanged\"}} {}",
                n / 4
            ),
            "pullsecret_injector_admission_requests_total{outcome=\"denied\"} 0".to_owned(),
            format!(
                "pullsecret_injector_injections_total{{registry=\"gcp\"}} {}",
                n / 2
            ),
            format!(
                "pullsecret_injector_injections_total{{registry=\"harbor\"}} {}",
                n / 2
            ),
            format!("pullsecret_injector_admission_duration_seconds_count {n}"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    /// Buckets are cumulative in the output, end with +Inf, and the sum is in seconds.
    #[test]
    fn durations_fall_in_the_right_buckets() {
        let metrics = Metrics::new();
        for micros in [10, 50, 51, 100, 2_000_000] {
            metrics.observe_duration(Duration::from_micros(micros));
        }
        let text = metrics.render();
        let bucket = |le: &str| {
            let prefix =
                format!("pullsecret_injector_admission_duration_seconds_bucket{{le=\"{le}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no bucket {le} in\n{text}"))
                .to_owned()
        };
        assert_eq!(bucket("0.00005"), "2", "10 µs and 50 µs");
        assert_eq!(bucket("0.0001"), "4", "and 51 µs and 100 µs");
        assert_eq!(bucket("1.6384"), "4");
        assert_eq!(bucket("+Inf"), "5", "2 s is past the last bound");
        assert!(
            text.contains("pullsecret_injector_admission_duration_seconds_count 5"),
            "{text}"
        );
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("pullsecret_injector_admission_duration_seconds_sum "))
            .and_then(|v| v.parse().ok())
            .expect("sum");
        assert!((sum - 2.000211).abs() < 1e-9, "{sum}");
    }
}
