//! The HTTP routes, as one axum `Router`: `POST /mutate` for admission reviews, `/healthz`,
//! `/readyz` and `/metrics`. Tests drive it in-process with `tower::ServiceExt::oneshot`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::admission::{self, Outcome};
use crate::config::Config;
use crate::provisioning::PullSecrets;
use crate::serving::metrics::Metrics;

/// Ready when config and certificate are loaded, and not draining.
#[derive(Debug, Default)]
pub struct Readiness {
    config_loaded: AtomicBool,
    certificate_loaded: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    pub fn set_config_loaded(&self) {
        self.config_loaded.store(true, Ordering::Release);
    }
    pub fn set_certificate_loaded(&self) {
        self.certificate_loaded.store(true, Ordering::Release);
    }
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.config_loaded.load(Ordering::Acquire)
            && self.certificate_loaded.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
    }
}

/// Limits on request bodies.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// One body at most. The API server caps an object at 3 MiB, but its JSON escapes `<`, `>`
    /// and `&` as six bytes each, and an UPDATE carries the old object too.
    pub max_body_bytes: usize,
    /// All bodies being read or answered at once, so that many large or stalled bodies cannot
    /// take the process past its memory limit.
    pub max_bytes_in_flight: usize,
    /// A body must arrive whole within this time.
    pub read_timeout: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_bytes_in_flight: 24 * 1024 * 1024,
            read_timeout: Duration::from_secs(10),
        }
    }
}

/// What every route reads; shared behind one `Arc`, so a request clones one pointer.
pub struct AppState {
    pub config: Arc<ArcSwap<Config>>,
    pub pull_secrets: Arc<dyn PullSecrets>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub bodies: Arc<BodyBudget>,
}

/// The bytes of request bodies in flight, shared by all connections.
pub struct BodyBudget {
    limits: BodyLimits,
    /// One body of the largest size always fits.
    total: usize,
    bytes: Arc<Semaphore>,
}

impl BodyBudget {
    pub fn new(limits: BodyLimits) -> Self {
        let total = limits.max_bytes_in_flight.max(limits.max_body_bytes);
        Self {
            limits,
            total,
            bytes: Arc::new(Semaphore::new(total)),
        }
    }

    /// Bytes that bodies in flight hold now.
    pub fn bytes_in_flight(&self) -> usize {
        self.total - self.bytes.available_permits()
    }
}

/// Every route: the webhook port serves them all.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .merge(probe_routes())
        .with_state(state)
}

/// Health, readiness and metrics alone: what the optional plain-HTTP port serves.
pub fn probe_router(state: Arc<AppState>) -> Router {
    probe_routes().with_state(state)
}

fn probe_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.readiness.is_ready() && state.pull_secrets.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// A refused request: counted, logged without the body, answered in plain text.
#[derive(Debug)]
pub struct Rejection {
    status: StatusCode,
    message: String,
}

impl Rejection {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.message + "\n",
        )
            .into_response()
    }
}

/// A review's body: JSON, within the size limit and the shared budget, read whole in time. The
/// budget is held until the answer is written.
pub struct ReviewBody {
    bytes: Bytes,
    _budget: OwnedSemaphorePermit,
}

impl FromRequest<Arc<AppState>> for ReviewBody {
    type Rejection = Rejection;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, Rejection> {
        if !is_json(request.headers()) {
            let got = request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            return Err(Rejection::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content-type must be application/json, got {got:?}"),
            ));
        }
        let limits = state.bodies.limits;
        // What the body will hold: its declared length (the API server always sends one), else
        // the most it may be.
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|length| length > limits.max_body_bytes) {
            return Err(too_large());
        }
        let declared = declared.unwrap_or(limits.max_body_bytes);
        let permits = u32::try_from(declared.max(1)).unwrap_or(u32::MAX);
        let budget = state
            .bodies
            .bytes
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| {
                Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many request bytes in flight; retry shortly",
                )
            })?;
        let collect =
            http_body_util::Limited::new(request.into_body(), limits.max_body_bytes).collect();
        let bytes = match tokio::time::timeout(limits.read_timeout, collect).await {
            Err(_) => {
                return Err(Rejection::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("request body not received within {:?}", limits.read_timeout),
                ));
            }
            Ok(Err(error)) => return Err(body_error(error.as_ref())),
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        Ok(Self {
            bytes,
            _budget: budget,
        })
    }
}

fn too_large() -> Rejection {
    Rejection::new(StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded")
}

/// A body that broke off, or grew past the limit without declaring its length.
fn body_error(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Rejection {
    if error.is::<http_body_util::LengthLimitError>() {
        return too_large();
    }
    Rejection::new(
        StatusCode::BAD_REQUEST,
        format!("request body could not be read: {error}"),
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    uri: axum::http::Uri,
    body: Result<ReviewBody, Rejection>,
) -> Response {
    let rejected = |rejection: Rejection| {
        state.metrics.request("rejected");
        tracing::warn!(
            status = rejection.status.as_u16(),
            reason = %rejection.message,
            "admission request rejected"
        );
        rejection.into_response()
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(rejection),
    };
    let started = Instant::now();
    let timeout = admission::timeout_from_query(uri.query());
    let config = state.config.load();
    let answer =
        match admission::review(&body.bytes, &config, state.pull_secrets.as_ref(), timeout).await {
            Ok(answer) => answer,
            Err(error) => {
                return rejected(Rejection::new(StatusCode::BAD_REQUEST, error.to_string()));
            }
        };
    state.metrics.request(answer.outcome.as_str());
    for registry in &answer.injected {
        state.metrics.injection(registry);
    }
    state.metrics.observe_duration(started.elapsed());
    if answer.outcome == Outcome::Denied {
        tracing::warn!(
            uid = %answer.uid,
            namespace = %answer.namespace,
            warnings = ?answer.warnings,
            "Pod denied: its pull Secret could not be made ready"
        );
    } else {
        tracing::debug!(
            uid = %answer.uid,
            namespace = %answer.namespace,
            dry_run = answer.dry_run,
            outcome = answer.outcome.as_str(),
            injected = ?answer.injected,
            warnings = ?answer.warnings,
            "admission review answered"
        );
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(answer.to_json()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use serde_json::{Value, json};
    use tower::ServiceExt as _;

    use super::*;
    use crate::provisioning::ReferenceOnly;

    fn state(limits: BodyLimits) -> Arc<AppState> {
        let config = Config::from_yaml_str(
            "registries:\n- {name: gcp, preset: gcp, secretName: gcr-pull}\n",
        )
        .expect("config");
        Arc::new(AppState {
            config: Arc::new(ArcSwap::from_pointee(config)),
            pull_secrets: Arc::new(ReferenceOnly),
            metrics: Arc::new(Metrics::new()),
            readiness: Arc::new(Readiness::default()),
            bodies: Arc::new(BodyBudget::new(limits)),
        })
    }

    fn review() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "namespace": "team-a", "operation": "CREATE",
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "object": {"spec": {"containers": [{"name": "a", "image": "gcr.io/p/a:1"}]}}
            }
        }))
        .expect("json")
    }

    fn replaced(body: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(body)
            .expect("utf8")
            .replace(from, to)
            .into_bytes()
    }

    async fn call(
        state: &Arc<AppState>,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .expect("request");
        let response = router(state.clone())
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn each_route_answers_as_the_api_server_and_the_kubelet_expect() {
        let limits = BodyLimits {
            max_body_bytes: 64 * 1024,
            ..BodyLimits::default()
        };
        let state = state(limits);
        let json = Some("application/json");
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Option<&'a str>,
            Vec<u8>,
            StatusCode,
            &'a str,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "a review",
                "POST",
                "/mutate?timeout=10s",
                json,
                review(),
                StatusCode::OK,
                "\"uid\":\"u-1\"",
            ),
            (
                "a review with a charset",
                "POST",
                "/mutate",
                Some("application/json; charset=utf-8"),
                review(),
                StatusCode::OK,
                "JSONPatch",
            ),
            (
                "not JSON",
                "POST",
                "/mutate",
                Some("text/plain"),
                review(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "application/json",
            ),
            (
                "no content type",
                "POST",
                "/mutate",
                None,
                review(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "application/json",
            ),
            (
                "not a review",
                "POST",
                "/mutate",
                json,
                b"[]".to_vec(),
                StatusCode::BAD_REQUEST,
                "not an AdmissionReview",
            ),
            (
                "truncated",
                "POST",
                "/mutate",
                json,
                review()[..40].to_vec(),
                StatusCode::BAD_REQUEST,
                "not an AdmissionReview",
            ),
            (
                "not UTF-8",
                "POST",
                "/mutate",
                json,
                vec![0xff, 0xfe, 0x00, 0x7b],
                StatusCode::BAD_REQUEST,
                "not an AdmissionReview",
            ),
            (
                "v1beta1",
                "POST",
                "/mutate",
                json,
                replaced(review(), "admission.k8s.io/v1", "admission.k8s.io/v1beta1"),
                StatusCode::BAD_REQUEST,
                "only admission.k8s.io/v1",
            ),
            (
                "no uid",
                "POST",
                "/mutate",
                json,
                replaced(review(), "\"uid\":\"u-1\"", "\"uid\":\"\""),
                StatusCode::BAD_REQUEST,
                "no uid",
            ),
            (
                "no request",
                "POST",
                "/mutate",
                json,
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
                StatusCode::BAD_REQUEST,
                "no request",
            ),
            (
                "a forged namespace",
                "POST",
                "/mutate",
                json,
                String::from_utf8(review())
                    .expect("utf8")
                    .replace("team-a", "kube%2Dsystem")
                    .into_bytes(),
                StatusCode::BAD_REQUEST,
                "not a valid namespace name",
            ),
            (
                "over the body limit",
                "POST",
                "/mutate",
                json,
                vec![b' '; 64 * 1024 + 1],
                StatusCode::PAYLOAD_TOO_LARGE,
                "length limit",
            ),
            (
                "GET /mutate",
                "GET",
                "/mutate",
                None,
                Vec::new(),
                StatusCode::METHOD_NOT_ALLOWED,
                "",
            ),
            (
                "an unknown path",
                "POST",
                "/validate",
                json,
                review(),
                StatusCode::NOT_FOUND,
                "",
            ),
            (
                "liveness",
                "GET",
                "/healthz",
                None,
                Vec::new(),
                StatusCode::OK,
                "ok",
            ),
            (
                "readiness before the config and certificate",
                "GET",
                "/readyz",
                None,
                Vec::new(),
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready",
            ),
        ];
        for (name, method, path, content_type, body, status, needle) in cases {
            let (got, text) = call(&state, method, path, content_type, body).await;
            assert_eq!(got, status, "{name}: {text}");
            assert!(text.contains(needle), "{name}: {text}");
        }
        state.readiness.set_config_loaded();
        state.readiness.set_certificate_loaded();
        assert_eq!(
            call(&state, "GET", "/readyz", None, Vec::new()).await.0,
            StatusCode::OK
        );
        let (_, metrics) = call(&state, "GET", "/metrics", None, Vec::new()).await;
        for line in [
            "pullsecret_injector_admission_requests_total{outcome=\"patched\"} 2",
            "pullsecret_injector_admission_requests_total{outcome=\"rejected\"} 10",
            "pullsecret_injector_injections_total{registry=\"gcp\"} 2",
        ] {
            assert!(metrics.contains(line), "no {line:?} in {metrics}");
        }
        assert_eq!(
            state.bodies.bytes_in_flight(),
            0,
            "every body's budget came back"
        );
    }

    #[tokio::test]
    async fn a_review_past_the_shared_budget_is_refused_and_the_budget_comes_back() {
        let state = state(BodyLimits {
            max_body_bytes: 4096,
            max_bytes_in_flight: 4096,
            ..BodyLimits::default()
        });
        let held = state
            .bodies
            .bytes
            .clone()
            .try_acquire_many_owned(4000)
            .expect("permits");
        let (status, text) = call(
            &state,
            "POST",
            "/mutate",
            Some("application/json"),
            review(),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        assert!(text.contains("too many request bytes in flight"), "{text}");
        drop(held);
        let (status, text) = call(
            &state,
            "POST",
            "/mutate",
            Some("application/json"),
            review(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let response: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(response["response"]["allowed"], true);
    }
}
