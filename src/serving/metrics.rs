//! Prometheus metrics, served as OpenMetrics text on `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = [(&'static str, String); 1];
type StaticLabels = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, String); 2];
type Labels3 = [(&'static str, String); 3];

/// Every admission outcome label; each is shown from the start, at 0.
const OUTCOMES: [&str; 6] = [
    "patched",
    "unchanged",
    "skipped",
    "ignored",
    "denied",
    "rejected",
];

pub struct Metrics {
    registry: Registry,
    /// Label values known in advance: counting allocates nothing.
    requests: Family<StaticLabels, Counter>,
    injections: Family<Labels, Counter>,
    duration: Histogram,
    config_reloads: Family<Labels, Counter>,
    certificate_reloads: Family<Labels, Counter>,
    config_valid: Gauge,
    secret_writes: Family<Labels3, Counter>,
    provisioning_pending: Family<Labels, Counter>,
    credential_reloads: Family<Labels2, Counter>,
    token_remaining: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    token_failures: Family<Labels, Counter>,
    credential_status: Family<Labels3, Gauge>,
    credential_checked: Family<Labels2, Gauge>,
}

/// The `status` label values of `registry_credential_status`, as the registry check records them.
pub const CREDENTIAL_STATUSES: [&str; 3] = ["ok", "rejected", "unreachable"];

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

fn label(key: &'static str, value: &str) -> Labels {
    [(key, value.to_owned())]
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pullsecret_injector");
        let requests = Family::<StaticLabels, Counter>::default();
        for outcome in OUTCOMES {
            let _ = requests.get_or_create(&[("outcome", outcome)]);
        }
        registry.register(
            "admission_requests",
            "Admission requests by outcome (patched, unchanged, skipped, ignored, denied, rejected)",
            requests.clone(),
        );
        let injections = Family::<Labels, Counter>::default();
        registry.register(
            "injections",
            "Pull Secret references added to Pods, by registry entry",
            injections.clone(),
        );
        // 50 µs to ~1.6 s: the pure path sits at the low end, provisioning calls at the high end.
        let duration = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "admission_duration_seconds",
            "Time from a complete request body to the answer",
            duration.clone(),
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
        let credential_status = Family::<Labels3, Gauge>::default();
        registry.register(
            "registry_credential_status",
            "1 for the result of the last registry check of a registry entry's credentials on a host (ok, rejected, unreachable), 0 for the others",
            credential_status.clone(),
        );
        let credential_checked = Family::<Labels2, Gauge>::default();
        registry.register(
            "registry_credential_last_check_timestamp_seconds",
            "Unix time of the last registry check of a registry entry's credentials on a host",
            credential_checked.clone(),
        );
        Self {
            registry,
            requests,
            injections,
            duration,
            config_reloads,
            certificate_reloads,
            config_valid,
            secret_writes,
            provisioning_pending,
            credential_reloads,
            token_remaining,
            token_failures,
            credential_status,
            credential_checked,
        }
    }

    /// The result of a registry check: `status` is one of [`CREDENTIAL_STATUSES`].
    pub fn credential_status(&self, registry: &str, host: &str, status: &str, unix_seconds: i64) {
        for each in CREDENTIAL_STATUSES {
            self.credential_status
                .get_or_create(&[
                    ("registry", registry.to_owned()),
                    ("host", host.to_owned()),
                    ("status", each.to_owned()),
                ])
                .set(i64::from(each == status));
        }
        self.credential_checked
            .get_or_create(&[("registry", registry.to_owned()), ("host", host.to_owned())])
            .set(unix_seconds);
    }

    /// Drops the series of a host no longer checked (its registry entry is gone or not checked).
    pub fn forget_credential_status(&self, registry: &str, host: &str) {
        for each in CREDENTIAL_STATUSES {
            self.credential_status.remove(&[
                ("registry", registry.to_owned()),
                ("host", host.to_owned()),
                ("status", each.to_owned()),
            ]);
        }
        self.credential_checked
            .remove(&[("registry", registry.to_owned()), ("host", host.to_owned())]);
    }

    /// Counts one admission request; `outcome` is one of [`OUTCOMES`] (others are not counted).
    pub fn request(&self, outcome: &'static str) {
        if OUTCOMES.contains(&outcome) {
            self.requests.get_or_create(&[("outcome", outcome)]).inc();
        }
    }

    pub fn injection(&self, registry: &str) {
        self.injections
            .get_or_create(&label("registry", registry))
            .inc();
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn config_reload(&self, result: ReloadResult) {
        self.config_reloads
            .get_or_create(&label("result", result.as_str()))
            .inc();
        self.config_valid
            .set(i64::from(result == ReloadResult::Success));
    }

    pub fn certificate_reload(&self, result: ReloadResult) {
        self.certificate_reloads
            .get_or_create(&label("result", result.as_str()))
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
            .get_or_create(&label("registry", registry))
            .inc();
    }

    pub fn token_remaining(&self, registry: &str, seconds: f64) {
        self.token_remaining
            .get_or_create(&label("registry", registry))
            .set(seconds);
    }

    pub fn token_refresh_failure(&self, registry: &str) {
        self.token_failures
            .get_or_create(&label("registry", registry))
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

    /// Counts added from many threads all show up.
    #[test]
    fn counts_from_many_threads_add_up() {
        let metrics = std::sync::Arc::new(Metrics::new());
        let threads: Vec<_> = (0..20)
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
        let n = 20 * 1000;
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
