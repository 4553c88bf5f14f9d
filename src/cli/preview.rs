//! The offline preview: what the webhook would do to a Pod, with no cluster. It builds the
//! AdmissionReview the API server would send and runs it through the same admission path.

use std::time::Duration;

use crate::admission::{self, ImageReference};
use crate::config::{Config, CredentialSource};
use crate::provisioning::ReferenceOnly;
use crate::provisioning::credentials;
use crate::provisioning::health::{client_for, login_for};
use crate::provisioning::registry_check::{self, CheckResult, CheckStatus};

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

/// What `mutate --check-registries` found for one image of the Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageCheck {
    pub image: String,
    /// The registry entry whose Secret the image is pulled with, if one matches.
    pub registry: Option<String>,
    /// The check's result, or why the image was not checked.
    pub result: Result<CheckResult, String>,
}

impl std::fmt::Display for ImageCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entry = self
            .registry
            .as_deref()
            .map(|name| format!(" (registry entry {name:?})"))
            .unwrap_or_default();
        match &self.result {
            Ok(result) if result.detail.is_empty() => {
                write!(f, "{}{entry}: {}", self.image, result.status.as_str())
            }
            Ok(result) => write!(
                f,
                "{}{entry}: {} ({})",
                self.image,
                result.status.as_str(),
                result.detail
            ),
            Err(reason) => write!(f, "{}{entry}: not checked: {reason}", self.image),
        }
    }
}

impl ImageCheck {
    pub fn is_rejected(&self) -> bool {
        matches!(&self.result, Ok(result) if result.status == CheckStatus::Rejected)
    }
}

/// Every image the kubelet pulls with the Pod's pull Secrets, in pull order, once each.
fn pod_images(pod: &serde_json::Value) -> Vec<String> {
    let mut images: Vec<String> = Vec::new();
    let containers = ["initContainers", "containers"]
        .into_iter()
        .flat_map(|list| {
            pod.pointer(&format!("/spec/{list}"))
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("image")?.as_str())
        });
    let volumes = pod
        .pointer("/spec/volumes")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/image/reference")?.as_str());
    for image in containers.chain(volumes) {
        if !images.iter().any(|i| i == image) {
            images.push(image.to_owned());
        }
    }
    images
}

/// Runs the registry check for each image of `pod` with the credentials the config names (read
/// from their files now), one image after the other, each within `timeout`.
pub async fn check_registries(
    config: &Config,
    pod: &serde_json::Value,
    timeout: Duration,
) -> Vec<ImageCheck> {
    let mut checks = Vec::new();
    for image in pod_images(pod) {
        let (registry, result) = check_image(config, &image, timeout).await;
        checks.push(ImageCheck {
            image,
            registry,
            result,
        });
    }
    checks
}

async fn check_image(
    config: &Config,
    image: &str,
    timeout: Duration,
) -> (Option<String>, Result<CheckResult, String>) {
    let reference = match ImageReference::parse(image) {
        Ok(reference) => reference,
        Err(error) => return (None, Err(error.to_string())),
    };
    let Some(registry) = config
        .registries
        .iter()
        .find(|r| r.hosts.iter().any(|p| p.matches(&reference)))
    else {
        return (None, Err("no registry entry matches it".to_owned()));
    };
    let name = Some(registry.name.clone());
    match registry.credentials {
        Some(CredentialSource::GcpWorkloadIdentity(_)) => {
            return (
                name,
                Err(
                    "its credentials come from the GKE metadata server, which only the cluster has"
                        .to_owned(),
                ),
            );
        }
        Some(CredentialSource::GcpWorkloadIdentityFederation(_)) => {
            return (
                name,
                Err("its credentials are exchanged for the cluster's ServiceAccount token (Workload Identity Federation), which only the cluster has".to_owned()),
            );
        }
        _ => {}
    }
    let content = match credentials::load(registry) {
        None => return (name, Err("the entry names no credentials".to_owned())),
        Some(Err(error)) => return (name, Err(error.to_string())),
        Some(Ok(content)) => content,
    };
    let repository = reference.normalized_path();
    let Some(login) = login_for(&content.json, reference.domain, Some(&repository)) else {
        return (
            name,
            Err("the credentials have no entry for this host".to_owned()),
        );
    };
    let client = match client_for(registry.ca_file.as_deref(), timeout).await {
        Ok(client) => client,
        Err(reason) => return (name, Err(reason)),
    };
    let result = registry_check::check(&client, reference.domain, Some(&repository), &login).await;
    (name, Ok(result))
}
