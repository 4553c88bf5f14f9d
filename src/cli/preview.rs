//! The offline preview: what the webhook would do to a Pod, with no cluster. It builds the
//! AdmissionReview the API server would send and runs it through the same admission path.

use crate::admission;
use crate::config::Config;
use crate::provisioning::ReferenceOnly;

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("input is not valid YAML or JSON: {0}")]
    Syntax(String),
    #[error(
        "expected a Pod, got kind {0:?} (the webhook sees the Pods that controllers create; pass a Pod)"
    )]
    NotAPod(String),
    #[error("{0}")]
    Admission(#[from] admission::AdmissionError),
    #[error("the patch does not apply to the Pod: {0}")]
    Answer(String),
}

#[derive(Debug)]
pub struct Preview {
    /// The JSON Patch the webhook returns (empty when the Pod is left as it is).
    pub patch: json_patch::Patch,
    pub mutated_pod: serde_json::Value,
    pub warnings: Vec<String>,
    pub outcome: admission::Outcome,
    /// Why nothing was added, when nothing was.
    pub reason: Option<String>,
}

/// Parses a Pod written as YAML or JSON.
pub fn parse_pod(text: &str) -> Result<serde_json::Value, PreviewError> {
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| PreviewError::Syntax(e.to_string()))?
    } else {
        serde_norway::from_str(text).map_err(|e| PreviewError::Syntax(e.to_string()))?
    };
    match value.get("kind").and_then(|k| k.as_str()) {
        None | Some("Pod") => Ok(value),
        Some(other) => Err(PreviewError::NotAPod(other.to_owned())),
    }
}

/// Runs `pod` through the admission path as a CREATE in `namespace` (default: the Pod's own, else
/// "default"). Makes no API call.
pub async fn preview(
    config: &Config,
    pod: serde_json::Value,
    namespace: Option<&str>,
) -> Result<Preview, PreviewError> {
    if !pod.is_object() {
        return Err(PreviewError::Syntax("a Pod must be a mapping".into()));
    }
    let namespace = namespace
        .map(str::to_owned)
        .or_else(|| {
            pod.pointer("/metadata/namespace")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "default".to_owned());
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "offline-preview",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "dryRun": true,
            "object": pod,
        }
    });
    let body = serde_json::to_vec(&review).map_err(|e| PreviewError::Syntax(e.to_string()))?;
    let answer = admission::review(&body, config, &ReferenceOnly, None).await?;
    let patch = answer.patch.unwrap_or_default();
    let mut mutated_pod = review["request"]["object"].clone();
    json_patch::patch(&mut mutated_pod, &patch).map_err(|e| PreviewError::Answer(e.to_string()))?;
    Ok(Preview {
        patch,
        mutated_pod,
        warnings: answer.warnings,
        outcome: answer.outcome,
        reason: answer.reason,
    })
}
