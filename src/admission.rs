//! AdmissionReview handling: read the request envelope (`admission.k8s.io/v1`), decide, ask the
//! pull-Secret component, and write the response the API server decodes. Only Pod CREATE is mutated;
//! anything else is allowed unchanged. Malformed input is an [`AdmissionError`] (an HTTP 4xx), never a panic.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use smallvec::SmallVec;

use crate::answer_tails;
use crate::config::{Config, FailureMode};
use crate::decision::{ContainerSet, Decision, PodView, Skip, decide};
use crate::json_reader::{JsonError, Reader, Seen};
use crate::pull_secret::{EnsureOutcome, EnsureRequest, PullSecrets};

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";
/// Kubernetes recommends warnings of at most 120 characters; longer ones may be cut.
const MAX_WARNING_CHARS: usize = 120;
const MAX_WARNINGS: usize = 10;
/// Starts every warning, so users can tell where it comes from.
const WARNING_PREFIX: &str = "pullsecret-injector: ";
/// Time kept back from the API server's timeout for writing and sending the answer.
const ANSWER_MARGIN: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmissionError {
    #[error("request body is not an AdmissionReview: {0}")]
    Malformed(String),
    #[error("unsupported AdmissionReview apiVersion {0:?}: only admission.k8s.io/v1 is served")]
    UnsupportedVersion(String),
    #[error("unsupported kind {0:?}: expected AdmissionReview")]
    UnsupportedKind(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has no uid")]
    MissingUid,
    #[error("the Pod in the AdmissionReview cannot be read: {0}")]
    InvalidPod(String),
}

/// A parsed review. The Pod view borrows from the request body.
#[derive(Debug, Default)]
pub struct Review<'a> {
    pub uid: Cow<'a, str>,
    pub target: Target,
    pub namespace: Cow<'a, str>,
    pub dry_run: bool,
    pub pod: PodView<'a>,
}

/// What the request is about, as far as this webhook cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    PodCreate,
    EphemeralContainers,
    /// Anything else: allowed unchanged.
    #[default]
    Other,
}

/// The request fields read from the envelope.
#[derive(Default)]
struct RequestFields<'a> {
    uid: Option<Cow<'a, str>>,
    is_pods: bool,
    sub_resource: Option<Cow<'a, str>>,
    namespace: Option<Cow<'a, str>>,
    operation: Option<Cow<'a, str>>,
    dry_run: Option<bool>,
    object: Object<'a>,
    // oldObject, userInfo, options, ...: skipped.
}

impl RequestFields<'_> {
    /// The target as far as the fields read so far tell.
    fn target(&self) -> Target {
        match (
            self.is_pods,
            self.operation.as_deref(),
            self.sub_resource.as_deref().unwrap_or(""),
        ) {
            (true, Some("CREATE"), "") => Target::PodCreate,
            (true, Some("UPDATE"), "ephemeralcontainers") => Target::EphemeralContainers,
            _ => Target::Other,
        }
    }
}

/// `request.object`: read as a Pod when the fields before it say the request is about one (the API
/// server writes `resource`, `subResource` and `operation` first), else kept as checked text.
#[derive(Default)]
enum Object<'a> {
    #[default]
    Absent,
    Text(&'a [u8]),
    /// Read into the review's Pod view.
    Pod,
    /// Not readable as a Pod; an error only if the request turns out to be about a Pod.
    NotAPod(JsonError),
}

/// Parses a request body in one pass. The Pod is read only for a Pod CREATE or an
/// ephemeral-container update; for anything else its text is checked and skipped.
pub fn parse_review(body: &[u8]) -> Result<Review<'_>, AdmissionError> {
    let mut review = Review::default();
    parse_review_into(body, &mut review)?;
    Ok(review)
}

/// [`parse_review`] into `review`, which must be empty (`Review::default()`): the Pod view is read
/// where it stays, not moved there. On an error `review` holds a partial read and is to be dropped.
pub fn parse_review_into<'a>(
    body: &'a [u8],
    review: &mut Review<'a>,
) -> Result<(), AdmissionError> {
    debug_assert!(
        review.uid.is_empty() && review.pod.is_empty(),
        "a review is parsed into an empty one"
    );
    let malformed = |error: JsonError| AdmissionError::Malformed(error.to_string());
    let mut reader = Reader::new(body);
    let mut api_version = None;
    let mut kind = None;
    let mut request = None;
    let mut seen = Seen::default();
    let pod = &mut review.pod;
    reader
        .read_object("an AdmissionReview object", |r, key| {
            if key.is("apiVersion") {
                seen.first(0, "apiVersion", &key)?;
                api_version = r.read_optional_str("a string for apiVersion")?;
            } else if key.is("kind") {
                seen.first(1, "kind", &key)?;
                kind = r.read_optional_str("a string for kind")?;
            } else if key.is("request") {
                seen.first(2, "request", &key)?;
                request = if r.take_null()? {
                    None
                } else {
                    Some(read_request(r, pod)?)
                };
            } else {
                r.skip_value()?;
            }
            Ok(())
        })
        .map_err(malformed)?;
    reader.finish().map_err(malformed)?;

    match api_version.as_deref() {
        Some(API_VERSION) => {}
        other => {
            return Err(AdmissionError::UnsupportedVersion(
                other.unwrap_or("").to_owned(),
            ));
        }
    }
    match kind.as_deref() {
        Some(KIND) => {}
        other => {
            return Err(AdmissionError::UnsupportedKind(
                other.unwrap_or("").to_owned(),
            ));
        }
    }
    let request = request.ok_or(AdmissionError::MissingRequest)?;
    let target = request.target();
    let uid = request
        .uid
        .filter(|uid| !uid.is_empty())
        .ok_or(AdmissionError::MissingUid)?;
    let not_a_pod =
        |error: JsonError| AdmissionError::InvalidPod(format!("{error} (in the object)"));
    match (target, request.object) {
        (Target::Other, Object::Pod) => review.pod = PodView::default(),
        (Target::Other, _) | (_, Object::Absent | Object::Pod) => {}
        (_, Object::Text(text)) => review.pod.read_json_into(text).map_err(not_a_pod)?,
        (_, Object::NotAPod(error)) => return Err(not_a_pod(error)),
    }
    review.namespace = request
        .namespace
        .filter(|ns| !ns.is_empty())
        .or_else(|| review.pod.metadata.namespace.clone())
        .unwrap_or(Cow::Borrowed("default"));
    review.uid = uid;
    review.target = target;
    review.dry_run = request.dry_run.unwrap_or(false);
    Ok(())
}

/// Reads `request`; a Pod object is read into `pod` (see [`Object::Pod`]).
fn read_request<'a>(
    reader: &mut Reader<'a>,
    pod: &mut PodView<'a>,
) -> Result<RequestFields<'a>, JsonError> {
    let mut request = RequestFields::default();
    let mut seen = Seen::default();
    reader.read_object("an object for request", |r, key| {
        if key.is("uid") {
            seen.first(0, "uid", &key)?;
            request.uid = r.read_optional_str("a string for uid")?;
        } else if key.is("resource") {
            seen.first(1, "resource", &key)?;
            request.is_pods = read_is_core_pods(r)?;
        } else if key.is("subResource") {
            seen.first(2, "subResource", &key)?;
            request.sub_resource = r.read_optional_str("a string for subResource")?;
        } else if key.is("namespace") {
            seen.first(3, "namespace", &key)?;
            request.namespace = r.read_optional_str("a string for namespace")?;
        } else if key.is("operation") {
            seen.first(4, "operation", &key)?;
            request.operation = r.read_optional_str("a string for operation")?;
        } else if key.is("dryRun") {
            seen.first(5, "dryRun", &key)?;
            request.dry_run = r.read_optional_bool("a boolean for dryRun")?;
        } else if key.is("object") {
            seen.first(6, "object", &key)?;
            // The API server sends resource, subResource and operation before the object, so the
            // target is usually known here and the Pod is read in the same pass; otherwise the
            // object is kept as text and read once the target is known.
            request.object = if r.take_null()? {
                Object::Absent
            } else if request.target() != Target::Other {
                let start = r.position();
                match pod.read_into(r) {
                    Ok(()) => Object::Pod,
                    Err(error) => {
                        *pod = PodView::default();
                        // Skip it as plain JSON: a bad Pod is only an error for a Pod request.
                        r.set_position(start);
                        r.skip_value()?;
                        // Offsets count from the object's start, as when it is read from text.
                        Object::NotAPod(JsonError {
                            offset: error.offset.saturating_sub(start),
                            ..error
                        })
                    }
                }
            } else {
                Object::Text(r.skip_value()?)
            };
        } else {
            r.skip_value()?;
        }
        Ok(())
    })?;
    Ok(request)
}

/// Whether `request.resource` is the core group's `pods`.
fn read_is_core_pods(reader: &mut Reader<'_>) -> Result<bool, JsonError> {
    if reader.take_null()? {
        return Ok(false);
    }
    let (mut group, mut resource) = (Cow::Borrowed(""), Cow::Borrowed(""));
    let mut seen = Seen::default();
    reader.read_object("an object for resource", |r, key| {
        if key.is("group") {
            seen.first(0, "group", &key)?;
            group = r.read_str("a string for resource.group")?;
        } else if key.is("resource") {
            seen.first(1, "resource", &key)?;
            resource = r.read_str("a string for resource.resource")?;
        } else {
            r.skip_value()?;
        }
        Ok(())
    })?;
    Ok(group.is_empty() && resource == "pods")
}

/// What the webhook did with a review, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The Pod got pull Secret entries.
    Patched,
    /// A Pod was examined and needed nothing.
    Unchanged,
    /// Opted out, or in a skipped namespace.
    Skipped,
    /// Not a Pod CREATE (or ephemeral-container update): passed through.
    Ignored,
    /// Rejected because its pull Secret could not be made ready (`failureMode: deny`).
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patched => "patched",
            Self::Unchanged => "unchanged",
            Self::Skipped => "skipped",
            Self::Ignored => "ignored",
            Self::Denied => "denied",
        }
    }
}

/// The answer to one review: the serialized AdmissionReview plus what happened.
#[derive(Debug)]
pub struct Answer<'c> {
    pub body: Vec<u8>,
    pub outcome: Outcome,
    /// Registry names whose Secret was injected.
    pub injected: SmallVec<[&'c str; 2]>,
    pub warnings: AnswerWarnings,
}

/// The warnings of one answer while it is made: rarely more than one or two, kept inline.
pub type Warnings = SmallVec<[String; 2]>;

/// The warnings an answer carries: none, or a list a remembered answer shares
/// ([`crate::answer_tails`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AnswerWarnings(Option<Arc<[String]>>);

impl AnswerWarnings {
    fn from_list(list: Warnings) -> Self {
        if list.is_empty() {
            Self(None)
        } else {
            Self(Some(list.into_iter().collect()))
        }
    }

    pub fn as_slice(&self) -> &[String] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl std::ops::Deref for AnswerWarnings {
    type Target = [String];

    fn deref(&self) -> &[String] {
        self.as_slice()
    }
}

impl std::fmt::Debug for AnswerWarnings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Why a review is refused (`response.status`).
#[derive(Debug)]
struct Status {
    code: u16,
    message: String,
}

/// Decides and answers one parsed review. `timeout` is the API server's `?timeout=`, when given.
pub async fn answer<'c>(
    review: &Review<'_>,
    config: &'c Config,
    pull_secrets: &dyn PullSecrets,
    timeout: Option<Duration>,
) -> Answer<'c> {
    let set = match review.target {
        Target::PodCreate => ContainerSet::PodCreate,
        Target::EphemeralContainers => ContainerSet::Ephemeral,
        Target::Other => {
            return finish(review, Outcome::Ignored, None, Warnings::new(), None);
        }
    };
    let decision = decide(config, &review.namespace, &review.pod, set);
    if decision.skip.is_some() {
        return finish(review, Outcome::Skipped, None, Warnings::new(), None);
    }
    let mut warnings = Warnings::new();
    for invalid in &decision.invalid_images {
        push_warning(
            &mut warnings,
            format!(
                "container {:?}: image {:?} is not a valid reference ({}); no pull Secret considered for it",
                invalid.container, invalid.image, invalid.error
            ),
        );
    }

    let budget = provisioning_budget(config, timeout);
    let mut not_ready = Vec::new();
    for required in &decision.required {
        // An ephemeral container only pulls with the Secrets the Pod already lists; a Secret it does
        // not list cannot be added after creation, so making it exist would not help.
        if set == ContainerSet::Ephemeral && !required.already_listed {
            push_warning(
                &mut warnings,
                format!(
                    "Secret {:?} is not in this Pod's imagePullSecrets (fixed at creation); pulling {} may fail",
                    required.registry.secret_name, required.image
                ),
            );
            continue;
        }
        let request = EnsureRequest {
            namespace: &review.namespace,
            registry: required.registry,
            dry_run: review.dry_run,
            budget,
        };
        let outcome = match pull_secrets.ready_now(&request) {
            Some(outcome) => outcome,
            None => pull_secrets.ensure(request).await,
        };
        match outcome {
            EnsureOutcome::Ready | EnsureOutcome::NotManaged | EnsureOutcome::DryRun => {}
            EnsureOutcome::Foreign { first_time } => {
                if first_time {
                    push_warning(
                        &mut warnings,
                        format!(
                            "Secret {:?} exists and is not managed by pullsecret-injector: referenced, left untouched",
                            required.registry.secret_name
                        ),
                    );
                }
            }
            EnsureOutcome::Pending { reason } => {
                push_warning(
                    &mut warnings,
                    format!(
                        "pull Secret {:?} is not ready yet ({reason}); retrying in the background",
                        required.registry.secret_name
                    ),
                );
                not_ready.push(required.registry.secret_name.clone());
            }
        }
    }

    if !not_ready.is_empty() && config.failure_mode == FailureMode::Deny {
        let status = Status {
            code: 503,
            message: format!(
                "pullsecret-injector could not make pull Secret(s) {} ready in namespace {:?} in time; retry shortly",
                not_ready.join(", "),
                review.namespace
            ),
        };
        return finish(review, Outcome::Denied, None, warnings, Some(status));
    }

    if set == ContainerSet::Ephemeral {
        // imagePullSecrets is immutable after creation: never patch an update.
        return finish(review, Outcome::Unchanged, None, warnings, None);
    }
    if warnings.is_empty() && decision.changes_pod() {
        return patched(review, &decision);
    }
    push_added_warnings(&mut warnings, &decision);
    let outcome = if decision.changes_pod() {
        Outcome::Patched
    } else {
        Outcome::Unchanged
    };
    finish(review, outcome, Some(&decision), warnings, None)
}

/// The time provisioning may take: the configured budget, cut to fit the API server's own timeout.
pub fn provisioning_budget(config: &Config, timeout: Option<Duration>) -> Duration {
    let budget = config.provisioning.budget;
    match timeout {
        Some(timeout) => budget.min(timeout.saturating_sub(ANSWER_MARGIN)),
        None => budget,
    }
}

/// The answer; the injected registries and the patch are those of `decision`, when given.
fn finish<'c>(
    review: &Review<'_>,
    outcome: Outcome,
    decision: Option<&Decision<'c>>,
    warnings: Warnings,
    status: Option<Status>,
) -> Answer<'c> {
    let patch = decision.and_then(Decision::patch_json);
    let injected = decision.into_iter().flat_map(injected_registries).collect();
    Answer {
        body: response_json(&review.uid, status.as_ref(), patch.as_deref(), &warnings),
        outcome,
        injected,
        warnings: AnswerWarnings::from_list(warnings),
    }
}

/// The answer of a patch with no other warnings than those of the Secrets it adds. What follows the
/// uid is remembered per thread ([`crate::answer_tails`]): replicas of one Deployment share it.
fn patched<'c>(review: &Review<'_>, decision: &Decision<'c>) -> Answer<'c> {
    let (body, warnings) = answer_tails::with_tail(
        |key| write_tail_key(key, decision),
        || patched_tail(decision),
        |tail| {
            let mut body = response_head(&review.uid, tail.text.len());
            body.extend_from_slice(&tail.text);
            (body, AnswerWarnings(Some(Arc::clone(&tail.warnings))))
        },
    );
    Answer {
        body,
        outcome: Outcome::Patched,
        injected: injected_registries(decision).collect(),
        warnings,
    }
}

/// The names of the registries whose Secret `decision` adds.
fn injected_registries<'d, 'c>(decision: &'d Decision<'c>) -> impl Iterator<Item = &'c str> + 'd {
    decision
        .to_add()
        .map(|required| required.registry.name.as_str())
}

/// The key of [`patched_tail`]'s text: every input it reads, and nothing else.
fn write_tail_key(key: &mut Vec<u8>, decision: &Decision<'_>) {
    key.push(u8::from(decision.field_absent));
    for required in decision.to_add() {
        answer_tails::push_key_part(key, &required.registry.secret_name);
        answer_tails::push_key_part(key, required.pattern.as_str());
        answer_tails::push_key_part(key, &required.image);
    }
}

/// What follows the uid in [`patched`]'s answer: as [`answer`] writes it when the only warnings are
/// those of the added Secrets.
fn patched_tail(decision: &Decision<'_>) -> answer_tails::Tail {
    let mut warnings = Warnings::new();
    push_added_warnings(&mut warnings, decision);
    let patch = decision.patch_json();
    let mut text = Vec::new();
    response_tail(&mut text, None, patch.as_deref(), &warnings);
    answer_tails::Tail {
        text: text.into_boxed_slice(),
        warnings: warnings.into_iter().collect(),
    }
}

const RESPONSE_HEAD: &[u8] =
    br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#;

/// The response up to and including the uid, with room for `rest` more bytes.
fn response_head(uid: &str, rest: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(RESPONSE_HEAD.len() + uid.len() + 2 + rest);
    out.extend_from_slice(RESPONSE_HEAD);
    crate::json_writer::string(&mut out, uid);
    out
}

/// The AdmissionReview response: `uid` echoed, `allowed` unless there is a `status`, the patch
/// (`[]byte` in the Go type: base64 text in JSON) and the warnings.
fn response_json(
    uid: &str,
    status: Option<&Status>,
    patch: Option<&[u8]>,
    warnings: &[String],
) -> Vec<u8> {
    let warnings_len: usize = warnings.iter().map(|w| w.len() + 4).sum();
    let patch_len = patch.map_or(0, |p| p.len().div_ceil(3) * 4);
    // The fixed fields after the uid fit in the margin, unless there is a status.
    let mut out = response_head(uid, 85 + patch_len + warnings_len);
    response_tail(&mut out, status, patch, warnings);
    out
}

/// [`response_json`] after the uid.
fn response_tail(
    out: &mut Vec<u8>,
    status: Option<&Status>,
    patch: Option<&[u8]>,
    warnings: &[String],
) {
    use crate::json_writer::{string, string_array};
    let patch_len = patch.map_or(0, |p| p.len().div_ceil(3) * 4);
    out.extend_from_slice(if status.is_none() {
        br#","allowed":true"#.as_slice()
    } else {
        br#","allowed":false"#.as_slice()
    });
    if let Some(status) = status {
        out.extend_from_slice(br#","status":{"code":"#);
        out.extend_from_slice(status.code.to_string().as_bytes());
        out.extend_from_slice(br#","message":"#);
        string(out, &status.message);
        out.push(b'}');
    }
    if let Some(patch) = patch {
        out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
        let start = out.len();
        out.resize(start + patch_len, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(patch, &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
        out.push(b'"');
    }
    if !warnings.is_empty() {
        out.extend_from_slice(br#","warnings":"#);
        string_array(out, warnings);
    }
    out.extend_from_slice(b"}}");
}

fn push_warning(warnings: &mut Warnings, mut message: String) {
    if warnings.len() >= MAX_WARNINGS {
        return;
    }
    // Counted in characters, as Kubernetes counts them: one per byte in ASCII.
    let room = MAX_WARNING_CHARS - WARNING_PREFIX.len();
    let cut = if message.len() <= room {
        None
    } else if message.is_ascii() {
        Some(room - 3)
    } else if message.char_indices().nth(room).is_some() {
        Some(
            message
                .char_indices()
                .nth(room - 3)
                .map_or(message.len(), |(at, _)| at),
        )
    } else {
        None
    };
    let Some(cut) = cut else {
        // In place: no new allocation when the message has room for the prefix.
        message.insert_str(0, WARNING_PREFIX);
        warnings.push(message);
        return;
    };
    let mut text = String::with_capacity(WARNING_PREFIX.len() + cut + 3);
    text.push_str(WARNING_PREFIX);
    text.push_str(&message[..cut]);
    text.push_str("...");
    warnings.push(text);
}

/// A warning for each Secret `decision` adds.
fn push_added_warnings(warnings: &mut Warnings, decision: &Decision<'_>) {
    for required in decision.to_add() {
        push_warning(
            warnings,
            added_warning(
                &required.registry.secret_name,
                required.pattern.as_str(),
                &required.image,
            ),
        );
    }
}

/// `added imagePullSecret {secret:?} (host pattern {pattern:?}) for image {image}`, built
/// without the formatting machinery: it is written for every patched Pod.
fn added_warning(secret: &str, pattern: &str, image: &str) -> String {
    const PARTS: [&str; 3] = ["added imagePullSecret ", " (host pattern ", ") for image "];
    let fixed = PARTS.iter().map(|part| part.len()).sum::<usize>() + 4;
    let mut message = String::with_capacity(
        WARNING_PREFIX.len() + fixed + secret.len() + pattern.len() + image.len(),
    );
    message.push_str(PARTS[0]);
    push_debug_str(&mut message, secret);
    message.push_str(PARTS[1]);
    push_debug_str(&mut message, pattern);
    message.push_str(PARTS[2]);
    message.push_str(image);
    message
}

/// Appends `{text:?}`. Printable ASCII other than '"' and '\\' is never escaped, so such text
/// (every valid Secret name and host pattern) is quoted as is.
fn push_debug_str(out: &mut String, text: &str) {
    if text
        .bytes()
        .all(|b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = write!(out, "{text:?}");
    }
}

/// Reads the API server's `timeout` query parameter ("10s"). Anything unreadable is ignored.
pub fn timeout_from_query(query: Option<&str>) -> Option<Duration> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(crate::duration::parse_go_duration)
}

impl Skip {
    pub fn describe(&self) -> String {
        match self {
            Skip::Namespace(ns) => format!("namespace {ns} is skipped"),
            Skip::OptOutLabel(key) => format!("label {key}=true"),
            Skip::OptOutAnnotation(key) => format!("annotation {key}=true"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pull_secret::ReferenceOnly;

    fn config() -> Config {
        Config::from_yaml_str("registries:\n- {name: gcp, preset: gcp, secretName: gcr-pull}\n")
            .expect("config")
    }

    fn review_json(
        operation: &str,
        resource: &str,
        sub: Option<&str>,
        object: serde_json::Value,
    ) -> Vec<u8> {
        let mut request = serde_json::json!({
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "namespace": "team-a",
            "operation": operation,
            "object": object,
        });
        if let Some(sub) = sub {
            request["subResource"] = sub.into();
        }
        serde_json::to_vec(
            &serde_json::json!({"apiVersion": API_VERSION, "kind": KIND, "request": request}),
        )
        .expect("json")
    }

    fn gcr_pod() -> serde_json::Value {
        serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "gcr.io/p/a"}]}})
    }

    #[tokio::test]
    async fn create_gets_a_base64_json_patch_and_a_warning() {
        let body = review_json("CREATE", "pods", None, gcr_pod());
        let review = parse_review(&body).expect("parse");
        let config = config();
        let answer = answer(&review, &config, &ReferenceOnly, None).await;
        assert_eq!(answer.outcome, Outcome::Patched);
        let response: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
        assert_eq!(response["apiVersion"], API_VERSION);
        assert_eq!(response["kind"], KIND);
        assert_eq!(response["response"]["uid"], "u-1");
        assert_eq!(response["response"]["allowed"], true);
        assert_eq!(response["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(
                response["response"]["patch"]
                    .as_str()
                    .expect("patch is a string"),
            )
            .expect("base64");
        let patch: serde_json::Value = serde_json::from_slice(&patch).expect("patch json");
        assert_eq!(
            patch,
            serde_json::json!([{"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "gcr-pull"}]}])
        );
        let warnings = response["response"]["warnings"]
            .as_array()
            .expect("warnings");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].as_str().expect("str").contains("gcr-pull"));
    }

    #[tokio::test]
    async fn non_create_operations_pass_through_unchanged() {
        for (operation, resource, sub) in [
            ("UPDATE", "pods", None),
            ("DELETE", "pods", None),
            ("CONNECT", "pods", Some("exec")),
            ("CREATE", "pods", Some("binding")),
            ("CREATE", "configmaps", None),
        ] {
            let body = review_json(operation, resource, sub, gcr_pod());
            let review = parse_review(&body).expect("parse");
            let config = config();
            let answer = answer(&review, &config, &ReferenceOnly, None).await;
            assert_eq!(
                answer.outcome,
                Outcome::Ignored,
                "{operation} {resource} {sub:?}"
            );
            let response: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
            assert_eq!(response["response"]["allowed"], true);
            assert!(response["response"].get("patch").is_none());
            assert!(response["response"].get("patchType").is_none());
        }
    }

    #[test]
    fn bad_envelopes_are_errors() {
        let cases: Vec<(&str, Vec<u8>, AdmissionError)> = vec![
            ("not json", b"{".to_vec(), AdmissionError::Malformed(String::new())),
            ("v1beta1", br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}"#.to_vec(), AdmissionError::UnsupportedVersion("admission.k8s.io/v1beta1".into())),
            ("no apiVersion", br#"{"kind":"AdmissionReview","request":{"uid":"u"}}"#.to_vec(), AdmissionError::UnsupportedVersion(String::new())),
            ("wrong kind", br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod","request":{"uid":"u"}}"#.to_vec(), AdmissionError::UnsupportedKind("Pod".into())),
            ("no request", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), AdmissionError::MissingRequest),
            ("no uid", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#.to_vec(), AdmissionError::MissingUid),
            ("empty uid", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#.to_vec(), AdmissionError::MissingUid),
            ("pod with containers not a list", review_json("CREATE", "pods", None, serde_json::json!({"spec": {"containers": "gcr.io/x"}})), AdmissionError::InvalidPod(String::new())),
        ];
        for (name, body, expected) in cases {
            let err = parse_review(&body).expect_err(name);
            assert_eq!(
                std::mem::discriminant(&err),
                std::mem::discriminant(&expected),
                "{name}: {err}"
            );
        }
    }

    /// The Pod is read in the same pass when resource, subResource and operation come before the
    /// object (the API server's order), and from its kept text otherwise: the result is the same.
    #[test]
    fn the_order_of_request_fields_does_not_change_the_review() {
        let pod = r#""object":{"metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"gcr.io/p/a"}]}}"#;
        let bad_pod = r#""object":{"metadata":{"name":"p"},"spec":{"containers":"gcr.io/p/a"}}"#;
        let uid = r#""uid":"u""#;
        let pods = r#""resource":{"group":"","version":"v1","resource":"pods"}"#;
        let body = |fields: &[&str]| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{{}}}}}"#,
                fields.join(",")
            )
        };
        // (name, fields in each order to try, expected target)
        let cases: [(&str, [&str; 2], Target); 4] = [
            (
                "create",
                [r#""operation":"CREATE""#, r#""subResource":"""#],
                Target::PodCreate,
            ),
            (
                "binding",
                [r#""operation":"CREATE""#, r#""subResource":"binding""#],
                Target::Other,
            ),
            (
                "ephemeral",
                [
                    r#""operation":"UPDATE""#,
                    r#""subResource":"ephemeralcontainers""#,
                ],
                Target::EphemeralContainers,
            ),
            (
                "update",
                [r#""operation":"UPDATE""#, r#""subResource":"""#],
                Target::Other,
            ),
        ];
        for (name, [operation, sub_resource], target) in cases {
            let orders = [
                [uid, pods, sub_resource, operation, pod],
                [pod, uid, pods, sub_resource, operation],
                [uid, pods, operation, pod, sub_resource],
            ];
            let reviews: Vec<String> = orders
                .iter()
                .map(|fields| {
                    let text = body(fields);
                    let review = parse_review(text.as_bytes()).expect(name);
                    assert_eq!(review.target, target, "{name}: {text}");
                    format!("{:?}", review.pod)
                })
                .collect();
            assert!(
                reviews.iter().all(|r| *r == reviews[0]),
                "{name}: {reviews:#?}"
            );
            if target != Target::Other {
                assert!(
                    reviews[0].contains("gcr.io/p/a"),
                    "{name}: the Pod was read"
                );
                // A Pod that cannot be read is refused with the same message, offsets counted
                // from the object's start, in either order.
                let errors: Vec<String> = [
                    [uid, pods, sub_resource, operation, bad_pod],
                    [bad_pod, uid, pods, sub_resource, operation],
                ]
                .iter()
                .map(|fields| match parse_review(body(fields).as_bytes()) {
                    Err(AdmissionError::InvalidPod(message)) => message,
                    other => panic!("{name}: expected InvalidPod, got {other:?}"),
                })
                .collect();
                assert_eq!(errors[0], errors[1], "{name}");
            }
        }
    }

    #[test]
    fn another_resource_shaped_unlike_a_pod_is_still_a_review() {
        let body = review_json(
            "CREATE",
            "widgets",
            None,
            serde_json::json!({"spec": {"containers": 7}}),
        );
        let review = parse_review(&body).expect("parse");
        assert_eq!(review.target, Target::Other);
    }

    #[test]
    fn the_written_response_is_what_serde_would_write() {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ResponseEnvelope<'a> {
            api_version: &'static str,
            kind: &'static str,
            response: Response<'a>,
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Response<'a> {
            uid: &'a str,
            allowed: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<StatusJson<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            patch_type: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            patch: Option<String>,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            warnings: &'a [String],
        }
        #[derive(serde::Serialize)]
        struct StatusJson<'a> {
            code: u16,
            message: &'a str,
        }
        let patch =
            br#"[{"op":"add","path":"/spec/imagePullSecrets","value":[{"name":"gcr-pull"}]}]"#;
        let warnings = [
            "pullsecret-injector: \"quoted\" \u{e9}".to_owned(),
            "second".to_owned(),
        ];
        let status = Status {
            code: 503,
            message: "not \"ready\"\n".into(),
        };
        for uid in ["u-1", "u-\"\\\n\u{0}\u{1f600}"] {
            for (status, patch, warnings) in [
                (None, None, &[][..]),
                (None, Some(&patch[..]), &warnings[..]),
                (None, Some(&b"[1]"[..]), &[][..]),
                (Some(&status), None, &warnings[..]),
            ] {
                let expected = serde_json::to_vec(&ResponseEnvelope {
                    api_version: API_VERSION,
                    kind: KIND,
                    response: Response {
                        uid,
                        allowed: status.is_none(),
                        status: status.map(|s| StatusJson {
                            code: s.code,
                            message: &s.message,
                        }),
                        patch_type: patch.map(|_| "JSONPatch"),
                        patch: patch.map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
                        warnings,
                    },
                })
                .expect("json");
                let written = response_json(uid, status, patch, warnings);
                assert_eq!(
                    String::from_utf8_lossy(&written),
                    String::from_utf8_lossy(&expected),
                    "uid {uid:?}, status {status:?}, patch {patch:?}"
                );
            }
        }
    }

    #[test]
    fn timeout_query_is_read() {
        assert_eq!(
            timeout_from_query(Some("timeout=10s")),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            timeout_from_query(Some("a=b&timeout=5s")),
            Some(Duration::from_secs(5))
        );
        assert_eq!(timeout_from_query(Some("timeout=soon")), None);
        assert_eq!(timeout_from_query(None), None);
    }

    #[test]
    fn budget_fits_inside_the_api_server_timeout() {
        let config = config();
        assert_eq!(provisioning_budget(&config, None), Duration::from_secs(2));
        assert_eq!(
            provisioning_budget(&config, Some(Duration::from_secs(10))),
            Duration::from_secs(2)
        );
        assert_eq!(
            provisioning_budget(&config, Some(Duration::from_secs(1))),
            Duration::from_millis(500)
        );
        assert_eq!(
            provisioning_budget(&config, Some(Duration::from_millis(100))),
            Duration::ZERO
        );
    }

    #[test]
    fn long_warnings_are_cut_to_the_recommended_length() {
        let mut warnings = Warnings::new();
        push_warning(&mut warnings, "x".repeat(500));
        assert_eq!(warnings[0].chars().count(), MAX_WARNING_CHARS);
        assert!(warnings[0].ends_with("..."));
        // Characters, not bytes: 99 two-byte letters fit (with the 21-character prefix), 100 do not.
        for (letters, fits) in [(98, true), (99, true), (100, false), (300, false)] {
            let mut warnings = Warnings::new();
            push_warning(&mut warnings, "\u{e9}".repeat(letters));
            let chars = warnings[0].chars().count();
            if fits {
                assert_eq!(chars, 21 + letters, "{letters} letters");
                assert!(!warnings[0].ends_with("..."));
            } else {
                assert_eq!(chars, MAX_WARNING_CHARS, "{letters} letters");
                assert!(warnings[0].ends_with("\u{e9}..."));
            }
        }
        for _ in 0..20 {
            push_warning(&mut warnings, "y".into());
        }
        assert_eq!(warnings.len(), MAX_WARNINGS);
    }

    #[test]
    fn debug_quoting_is_what_format_writes() {
        let mut texts: Vec<String> = (0..=0x7f_u8).map(|b| format!("a{}b", b as char)).collect();
        texts.extend(
            [
                "",
                "gcr-pull",
                "*.gcr.io",
                "[::1]:5000/team",
                "it's",
                "a\"b",
                "a\\b",
                "\u{e9}",
                "\u{301}x",
                "x\u{301}",
                "\u{200b}",
                "\u{a0}",
                "\u{85}",
                "\u{10ffff}",
            ]
            .map(str::to_owned),
        );
        for text in &texts {
            let mut quoted = String::new();
            push_debug_str(&mut quoted, text);
            assert_eq!(quoted, format!("{text:?}"), "text {text:?}");
            let images = ["eu.gcr.io/p/app", "docker.io/library/nginx"];
            for (secret, pattern, image) in
                [(&**text, "*.gcr.io", images[0]), ("s", &**text, images[1])]
            {
                assert_eq!(
                    added_warning(secret, pattern, image),
                    format!(
                        "added imagePullSecret {secret:?} (host pattern {pattern:?}) for image {image}"
                    ),
                );
            }
        }
    }

    #[test]
    fn warnings_are_the_prefixed_message_or_its_cut() {
        // 99 characters fit after the 21-character prefix.
        for message in ["", "short", &"x".repeat(99), &"\u{e9}".repeat(99)] {
            let mut warnings = Warnings::new();
            push_warning(&mut warnings, message.to_owned());
            assert_eq!(warnings.as_slice(), [format!("{WARNING_PREFIX}{message}")]);
        }
        for message in ["x".repeat(100), format!("{}\u{e9}", "x".repeat(99))] {
            let mut warnings = Warnings::new();
            push_warning(&mut warnings, message);
            assert_eq!(
                warnings.as_slice(),
                [format!("{WARNING_PREFIX}{}...", "x".repeat(96))]
            );
        }
    }

    /// The answer built step by step, as [`answer`] builds any other: the oracle for the remembered
    /// one ([`patched`]).
    fn built_afresh<'c>(review: &Review<'_>, config: &'c Config) -> Answer<'c> {
        let decision = decide(
            config,
            &review.namespace,
            &review.pod,
            ContainerSet::PodCreate,
        );
        let mut warnings = Warnings::new();
        push_added_warnings(&mut warnings, &decision);
        finish(review, Outcome::Patched, Some(&decision), warnings, None)
    }

    #[tokio::test]
    async fn a_remembered_answer_is_the_one_built_afresh() {
        let config = Config::from_yaml_str(
            "registries:\n\
             - {name: gcp, preset: gcp, secretName: gcr-pull}\n\
             - {name: harbor, hosts: ['harbor.example.com:8443', 'eu.gcr.io'], secretName: harbor-pull}\n\
             - {name: long, hosts: ['long.example.com'], secretName: long-pull}\n",
        )
        .expect("config");
        // Twelve Secrets with long names for one image: an answer too large for the memo to keep.
        let many = (0..12)
            .map(|i| {
                format!(
                    "- {{name: r{i}, hosts: [long.example.com], secretName: long-{i}.{x}.{x}}}\n",
                    x = "x".repeat(60)
                )
            })
            .collect::<String>();
        let many = Config::from_yaml_str(&format!("registries:\n{many}")).expect("config");
        // Another configuration with the same Secret names but other patterns for the same images.
        let other = Config::from_yaml_str(
            "registries:\n\
             - {name: gcp, hosts: ['gcr.io', 'eu.gcr.io'], secretName: gcr-pull}\n\
             - {name: harbor, hosts: ['harbor.example.com:8443'], secretName: harbor-pull}\n\
             - {name: long, hosts: ['long.example.com'], secretName: long-pull}\n",
        )
        .expect("config");
        let long_image = format!("long.example.com/{}/app:1", "a".repeat(200));
        let pod = |images: &[&str], listed: Option<serde_json::Value>| {
            let containers: Vec<_> = images
                .iter()
                .enumerate()
                .map(|(i, image)| serde_json::json!({"name": format!("c{i}"), "image": image}))
                .collect();
            let mut pod =
                serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": containers}});
            if let Some(listed) = listed {
                pod["spec"]["imagePullSecrets"] = listed;
            }
            pod
        };
        let pods = [
            ("field absent", pod(&["gcr.io/p/a:1"], None)),
            // The same Secret and pattern as the first: only the image in the warning differs.
            ("another image, same Secret", pod(&["gcr.io/p/b:1"], None)),
            (
                "field null",
                pod(&["gcr.io/p/a:1"], Some(serde_json::Value::Null)),
            ),
            (
                "appended",
                pod(
                    &["gcr.io/p/a:1"],
                    Some(serde_json::json!([{"name": "mine"}])),
                ),
            ),
            ("two registries, one image", pod(&["eu.gcr.io/p/a:1"], None)),
            (
                "one already listed",
                pod(
                    &["eu.gcr.io/p/a:1"],
                    Some(serde_json::json!([{"name": "gcr-pull"}])),
                ),
            ),
            // The same Secret for the same image under both: only the host pattern differs.
            (
                "the other listed",
                pod(
                    &["eu.gcr.io/p/a:1"],
                    Some(serde_json::json!([{"name": "harbor-pull"}])),
                ),
            ),
            (
                "another image",
                pod(&["gcr.io/p/b:1", "harbor.example.com:8443/t/c"], None),
            ),
            ("a long image", pod(&[&long_image], None)),
        ];
        let mut patched_answers = 0;
        // Not emptied between configurations: the key alone must tell their answers apart.
        answer_tails::forget_on_this_thread();
        for config in [&config, &other, &many] {
            for round in 0..3 {
                for (name, pod) in &pods {
                    for uid in ["u-1", "u-2", "uid \"quoted\""] {
                        let mut body = review_json("CREATE", "pods", None, pod.clone());
                        let mut request: serde_json::Value =
                            serde_json::from_slice(&body).expect("json");
                        request["request"]["uid"] = uid.into();
                        body = serde_json::to_vec(&request).expect("json");
                        let review = parse_review(&body).expect("parse");
                        let got = answer(&review, config, &ReferenceOnly, None).await;
                        let want = built_afresh(&review, config);
                        let case = format!("round {round}, {name}, uid {uid:?}");
                        if want.injected.is_empty() {
                            // No registry of this configuration serves the image.
                            assert_eq!(got.outcome, Outcome::Unchanged, "{case}");
                            continue;
                        }
                        assert_eq!(got.outcome, Outcome::Patched, "{case}");
                        assert_eq!(
                            String::from_utf8_lossy(&got.body),
                            String::from_utf8_lossy(&want.body),
                            "{case}"
                        );
                        assert_eq!(got.warnings, want.warnings, "{case}");
                        assert_eq!(got.injected, want.injected, "{case}");
                        let response: serde_json::Value =
                            serde_json::from_slice(&got.body).expect("json");
                        assert_eq!(response["response"]["uid"], uid, "{case}");
                        patched_answers += 1;
                    }
                }
            }
        }
        // Every Pod is patched under the first configuration; under the second, all but the one
        // that lists the only Secret its image needs; under the third, the long image alone, whose
        // answer is too large to keep.
        assert_eq!(patched_answers, (9 + 8 + 1) * 3 * 3);
        let mut key = Vec::new();
        let review_body = review_json("CREATE", "pods", None, pod(&[&long_image], None));
        let review = parse_review(&review_body).expect("parse");
        let decision = decide(
            &many,
            &review.namespace,
            &review.pod,
            ContainerSet::PodCreate,
        );
        write_tail_key(&mut key, &decision);
        assert!(
            key.len() + patched_tail(&decision).text.len() > answer_tails::MAX_ENTRY_BYTES,
            "the long case is kept"
        );
    }
}
