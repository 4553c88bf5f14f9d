//! Admission: read an `admission.k8s.io/v1` AdmissionReview, decide, ask the pull-Secret component,
//! and write the response the API server decodes. Only Pod CREATE is mutated; an ephemeral-container
//! update may get warnings; anything else is allowed unchanged. A body that is not a valid review is
//! an [`AdmissionError`] (an HTTP 400), never a panic.

pub(crate) mod decision;
pub(crate) mod envelope;
pub(crate) mod reference;

use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, FailureMode};
use crate::provisioning::{EnsureOutcome, EnsureRequest, PullSecrets};
use decision::{ContainerSet, Decision, decide};
use envelope::{Review, Target};

pub use reference::{HostPattern, ImageReference, PatternError, ReferenceError};

/// Kubernetes recommends warnings of at most 120 characters; longer ones may be cut.
const MAX_WARNING_CHARS: usize = 120;
const MAX_WARNINGS: usize = 10;
/// The API server may cut warnings past 256 characters. A rejected credential's warning may use
/// that room: the registry's own reason is what the user needs to act on.
const MAX_DETAILED_WARNING_CHARS: usize = 256;
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
    #[error("AdmissionReview request for a Pod has no namespace")]
    MissingNamespace,
    #[error(
        "request.namespace {0} is not a valid namespace name (a DNS-1123 label: at most 63 of a-z, 0-9 and '-', starting and ending alphanumeric)"
    )]
    InvalidNamespace(String),
    #[error(
        "the Pod's metadata.name or generateName {0} is not a valid Pod name (a DNS-1123 subdomain)"
    )]
    InvalidPodName(String),
    #[error("the Pod in the AdmissionReview cannot be read: {0}")]
    InvalidPod(String),
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

/// The decision about one review, before it is written as a response.
#[derive(Debug)]
pub struct Answer {
    pub uid: String,
    pub namespace: String,
    pub dry_run: bool,
    pub outcome: Outcome,
    pub patch: Option<json_patch::Patch>,
    pub warnings: Vec<String>,
    /// Why the review was refused (`failureMode: deny`).
    pub denial: Option<String>,
    /// Registry entries whose Secret the patch adds.
    pub injected: Vec<String>,
    /// Why nothing was added, when nothing was (for the offline preview).
    pub reason: Option<String>,
}

impl Answer {
    /// The AdmissionReview the API server decodes: `uid` echoed, the patch as base64 (Go's `[]byte`).
    pub fn to_json(&self) -> Vec<u8> {
        let patch = self
            .patch
            .as_ref()
            .and_then(|patch| serde_json::to_vec(patch).ok());
        let review = ReviewOut {
            api_version: envelope::API_VERSION,
            kind: envelope::KIND,
            response: ResponseOut {
                uid: &self.uid,
                allowed: self.denial.is_none(),
                status: self
                    .denial
                    .as_deref()
                    .map(|message| StatusOut { code: 503, message }),
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch: patch.as_deref().map(Base64),
                warnings: &self.warnings,
            },
        };
        // Serializing these plain structs into a Vec cannot fail.
        serde_json::to_vec(&review).unwrap_or_default()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<Base64<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

#[derive(Serialize)]
struct StatusOut<'a> {
    code: u16,
    message: &'a str,
}

/// Bytes written as base64 text, as Go's encoding/json writes a `[]byte`.
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

/// Reads, decides and answers one review body. `timeout` is the API server's `?timeout=`.
pub async fn review(
    body: &[u8],
    config: &Config,
    pull_secrets: &dyn PullSecrets,
    timeout: Option<Duration>,
) -> Result<Answer, AdmissionError> {
    let review = envelope::parse(body)?;
    Ok(answer(&review, config, pull_secrets, timeout).await)
}

async fn answer(
    review: &Review<'_>,
    config: &Config,
    pull_secrets: &dyn PullSecrets,
    timeout: Option<Duration>,
) -> Answer {
    let mut answer = Answer {
        uid: review.uid.clone().into_owned(),
        namespace: review.namespace.clone().into_owned(),
        dry_run: review.dry_run,
        outcome: Outcome::Ignored,
        patch: None,
        warnings: Vec::new(),
        denial: None,
        injected: Vec::new(),
        reason: None,
    };
    let set = match review.target {
        Target::PodCreate => ContainerSet::PodCreate,
        Target::EphemeralContainers => ContainerSet::Ephemeral,
        Target::Other => {
            answer.reason = Some("the request is not a Pod CREATE".to_owned());
            return answer;
        }
    };
    let decision = decide(config, &review.namespace, &review.pod, set);
    if let Some(skip) = &decision.skip {
        answer.outcome = Outcome::Skipped;
        answer.reason = Some(skip.describe(&review.namespace));
        return answer;
    }
    for invalid in &decision.invalid_images {
        push_warning(
            &mut answer.warnings,
            format!(
                "{}: image {:?} is not a valid reference ({}); no pull Secret considered for it",
                invalid.place, invalid.image, invalid.error
            ),
        );
    }
    let not_ready = ensure_secrets(
        review,
        config,
        pull_secrets,
        timeout,
        &decision,
        set,
        &mut answer.warnings,
    )
    .await;
    if !not_ready.is_empty() && config.failure_mode == FailureMode::Deny {
        answer.outcome = Outcome::Denied;
        answer.denial = Some(format!(
            "pullsecret-injector could not make pull Secret(s) {} ready in namespace {:?} in time; retry shortly",
            not_ready.join(", "),
            review.namespace
        ));
        return answer;
    }
    if set == ContainerSet::PodCreate {
        credential_warnings(
            &review.namespace,
            review.dry_run,
            &decision,
            pull_secrets,
            &mut answer.warnings,
        );
    }
    answer.outcome = Outcome::Unchanged;
    if set == ContainerSet::Ephemeral {
        // imagePullSecrets is immutable after creation: an update is never patched.
        return answer;
    }
    answer.patch = decision.patch();
    if answer.patch.is_none() {
        answer.reason = Some(no_patch_reason(&decision));
        return answer;
    }
    answer.outcome = Outcome::Patched;
    for required in decision.to_add() {
        answer.injected.push(required.registry.name.clone());
        push_warning(
            &mut answer.warnings,
            image_warning(
                &format!(
                    "added imagePullSecret {:?} (host pattern {:?}) for image ",
                    required.registry.secret_name,
                    required.pattern.as_str()
                ),
                required.image,
                "",
            ),
        );
    }
    answer
}

/// Asks for each required Secret; returns the names of those not ready in time.
async fn ensure_secrets(
    review: &Review<'_>,
    config: &Config,
    pull_secrets: &dyn PullSecrets,
    timeout: Option<Duration>,
    decision: &Decision<'_, '_>,
    set: ContainerSet,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let budget = provisioning_budget(config, timeout);
    let mut not_ready = Vec::new();
    for required in &decision.required {
        let secret = &required.registry.secret_name;
        // An ephemeral container pulls only with the Secrets the Pod already lists; a Secret it does
        // not list cannot be added after creation, so making it exist would not help.
        if set == ContainerSet::Ephemeral && !required.already_listed {
            push_warning(
                warnings,
                image_warning(
                    "",
                    required.image,
                    &format!(
                        " may fail to pull: Secret {secret:?} is not in this Pod's imagePullSecrets"
                    ),
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
                        warnings,
                        format!(
                            "Secret {secret:?} exists and is not managed by pullsecret-injector: referenced, left untouched"
                        ),
                    );
                }
            }
            EnsureOutcome::NotEligible { reason } => {
                push_warning(
                    warnings,
                    format!("pull Secret {secret:?} is not provisioned here: {reason}"),
                );
            }
            EnsureOutcome::Pending { reason } => {
                push_warning(
                    warnings,
                    format!(
                        "pull Secret {secret:?} is not ready yet ({reason}); retrying in the background"
                    ),
                );
                not_ready.push(secret.clone());
            }
        }
    }
    not_ready
}

/// Records the hosts the Pod pulls from for the registry check (never waiting on it; not on a dry
/// run, which has no side effects), and warns when the last check saw the registry reject the
/// credentials the Pod's Secret carries there, for this Pod's repository or for any.
fn credential_warnings(
    namespace: &str,
    dry_run: bool,
    decision: &Decision<'_, '_>,
    pull_secrets: &dyn PullSecrets,
    warnings: &mut Vec<String>,
) {
    for required in &decision.required {
        if !required.registry.health_check.enabled {
            continue;
        }
        for (host, repository) in &required.hosts {
            if !dry_run {
                pull_secrets.saw_image_host(required.registry, host, repository, namespace);
            }
            let Some(health) = pull_secrets.credential_health(required.registry, host) else {
                continue;
            };
            if health.status != crate::provisioning::registry_check::CheckStatus::Rejected
                || health
                    .repository
                    .as_deref()
                    .is_some_and(|denied| denied != repository.as_ref())
            {
                continue;
            }
            let age = std::time::SystemTime::now()
                .duration_since(health.checked_at)
                .unwrap_or_default();
            push_warning_within(
                warnings,
                rejection_warning(host, &required.registry.secret_name, age, &health.detail),
                MAX_DETAILED_WARNING_CHARS,
            );
        }
    }
}

/// `registry HOST rejected the credentials of "SECRET" 3m ago (DETAIL); pulls will fail`, the
/// registry's detail shortened so the whole fits the recommended length.
fn rejection_warning(host: &str, secret: &str, age: Duration, detail: &str) -> String {
    let before = format!(
        "registry {host} rejected the credentials of {secret:?} {} ago",
        short_age(age)
    );
    let after = "; pulls will fail";
    let room = (MAX_DETAILED_WARNING_CHARS - WARNING_PREFIX.len())
        .saturating_sub(before.chars().count() + after.chars().count() + " ()".len());
    let detail_chars = detail.chars().count();
    let detail = if detail.is_empty() || room < 4 {
        // No room for the text: the status code alone, when it fits.
        match detail
            .split_once(':')
            .map(|(code, _)| code)
            .unwrap_or(detail)
        {
            code if !code.is_empty() && code.len() <= room => code.to_owned(),
            _ => String::new(),
        }
    } else if detail_chars <= room {
        detail.to_owned()
    } else {
        let head: String = detail.chars().take(room - 3).collect();
        format!("{head}...")
    };
    if detail.is_empty() {
        format!("{before}{after}")
    } else {
        format!("{before} ({detail}){after}")
    }
}

/// "45s", "3m", "2h": how long ago, as a person reads it.
fn short_age(age: Duration) -> String {
    let seconds = age.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        _ => format!("{}h", seconds / 3600),
    }
}

fn no_patch_reason(decision: &Decision<'_, '_>) -> String {
    if decision.required.is_empty() {
        "no image matches a configured registry".to_owned()
    } else {
        let names: Vec<&str> = decision
            .required
            .iter()
            .map(|r| r.registry.secret_name.as_str())
            .collect();
        format!(
            "the Pod already lists the pull Secret(s) it needs: {}",
            names.join(", ")
        )
    }
}

/// The time provisioning may take: the configured budget, cut to fit the API server's own timeout.
pub fn provisioning_budget(config: &Config, timeout: Option<Duration>) -> Duration {
    let budget = config.provisioning.budget;
    match timeout {
        Some(timeout) => budget.min(timeout.saturating_sub(ANSWER_MARGIN)),
        None => budget,
    }
}

/// Reads the API server's `timeout` query parameter ("10s"). Anything unreadable is ignored.
pub fn timeout_from_query(query: Option<&str>) -> Option<Duration> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(crate::duration::parse_go_duration)
}

/// Adds the prefix; a message too long for the recommended length is cut at its end.
fn push_warning(warnings: &mut Vec<String>, message: String) {
    push_warning_within(warnings, message, MAX_WARNING_CHARS);
}

fn push_warning_within(warnings: &mut Vec<String>, message: String, max_chars: usize) {
    if warnings.len() >= MAX_WARNINGS {
        return;
    }
    let room = max_chars - WARNING_PREFIX.len();
    let text = match message.char_indices().nth(room) {
        None => message,
        Some(_) => {
            let cut = message
                .char_indices()
                .nth(room - 3)
                .map_or(message.len(), |(at, _)| at);
            format!("{}...", &message[..cut])
        }
    };
    warnings.push(format!("{WARNING_PREFIX}{text}"));
}

/// `before` + `image` + `after`, fitted to the recommended length by shortening the middle of the
/// image: its registry and its tag or digest are the parts a user needs.
fn image_warning(before: &str, image: &str, after: &str) -> String {
    let room = MAX_WARNING_CHARS - WARNING_PREFIX.len();
    let fixed = before.chars().count() + after.chars().count();
    let image_chars = image.chars().count();
    if fixed + image_chars <= room {
        return format!("{before}{image}{after}");
    }
    // What is left for the image, less the "..." that replaces its middle.
    let keep = room.saturating_sub(fixed + 3).max(2);
    let head: String = image.chars().take(keep / 2).collect();
    let tail: String = image
        .chars()
        .skip(image_chars.saturating_sub(keep - keep / 2))
        .collect();
    format!("{before}{head}...{tail}{after}")
}

#[cfg(test)]
mod tests;
