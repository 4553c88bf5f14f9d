//! The request side of an `admission.k8s.io/v1` AdmissionReview, read with serde into borrowed
//! views that hold only what the decision needs, then validated before any of it is used.
//!
//! Any Pod can reach the webhook's Service, so a review may be forged: the namespace and the Pod's
//! names are checked against the API server's own rules here, before they reach a decision, a log
//! line or a Kubernetes API path.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::AdmissionError;
use crate::names::{is_dns1123_label, is_dns1123_subdomain};

pub(crate) const API_VERSION: &str = "admission.k8s.io/v1";
pub(crate) const KIND: &str = "AdmissionReview";

/// A string that borrows from the body when it has no JSON escapes. serde borrows a `Cow` only
/// when it is a field's whole type, so maps and lists hold this newtype.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub(crate) struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl Text<'_> {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A struct that must be written as a JSON object. serde also reads a struct from a JSON array,
/// by position; Go's decoder, like the API server, takes only an object.
#[derive(Debug, Default)]
pub(crate) struct Object<T>(pub T);

impl<T> std::ops::Deref for Object<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .map(Object)
    }
}

/// The review, with its `request.object` read as `O`: a Pod, or skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a, O> {
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default = "Option::default")]
    request: Option<Object<RequestIn<'a, O>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a, O> {
    #[serde(borrow, default)]
    uid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    resource: Option<Object<ResourceIn<'a>>>,
    #[serde(borrow, default)]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    operation: Option<Cow<'a, str>>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default = "Option::default")]
    object: Option<O>,
}

#[derive(Deserialize)]
struct ResourceIn<'a> {
    #[serde(borrow, default)]
    group: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    resource: Option<Cow<'a, str>>,
}

/// The parts of a Pod the decision reads; everything else is checked as JSON and skipped.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodView<'a> {
    #[serde(borrow, default)]
    pub metadata: Option<Object<MetadataView<'a>>>,
    #[serde(borrow, default)]
    pub spec: Option<Object<SpecView<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MetadataView<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub generate_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub labels: Option<HashMap<Text<'a>, Text<'a>>>,
    /// Values kept as raw JSON: only the opt-out annotation is ever decoded.
    #[serde(borrow, default)]
    pub annotations: Option<HashMap<Text<'a>, &'a RawValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpecView<'a> {
    #[serde(borrow, default)]
    pub containers: Option<Vec<Object<ContainerView<'a>>>>,
    #[serde(borrow, default)]
    pub init_containers: Option<Vec<Object<ContainerView<'a>>>>,
    #[serde(borrow, default)]
    pub ephemeral_containers: Option<Vec<Object<ContainerView<'a>>>>,
    #[serde(borrow, default)]
    pub volumes: Option<Vec<Object<VolumeView<'a>>>>,
    #[serde(borrow, default)]
    pub image_pull_secrets: Option<Vec<Object<NameView<'a>>>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ContainerView<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub image: Option<Cow<'a, str>>,
}

/// A volume; only image volumes (`spec.volumes[].image.reference`) are pulled.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct VolumeView<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub image: Option<Object<ImageVolumeView<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ImageVolumeView<'a> {
    #[serde(borrow, default)]
    pub reference: Option<Cow<'a, str>>,
}

/// A `LocalObjectReference` (`imagePullSecrets` entries).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct NameView<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
}

/// What the request is about, as far as this webhook cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    PodCreate,
    /// `kubectl debug`: an UPDATE of `pods/ephemeralcontainers`.
    EphemeralContainers,
    /// Anything else: allowed unchanged.
    Other,
}

/// A validated review.
#[derive(Debug)]
pub(crate) struct Review<'a> {
    pub uid: Cow<'a, str>,
    pub target: Target,
    /// A DNS-1123 label for Pod targets; empty for anything else without a namespace.
    pub namespace: Cow<'a, str>,
    pub dry_run: bool,
    /// Read for Pod targets only.
    pub pod: PodView<'a>,
}

/// Reads and validates a request body.
///
/// The object is read as a Pod in the same pass as the envelope, whatever the request is about:
/// the API server sends Pods only, as the webhook is registered. When that read fails, the envelope
/// is read again without the object, to tell a broken envelope from an object that is not a
/// readable Pod, which is an error only when the request is about a Pod.
pub(crate) fn parse(body: &[u8]) -> Result<Review<'_>, AdmissionError> {
    let pod_error = match serde_json::from_slice::<Object<ReviewIn<'_, Object<PodView<'_>>>>>(body)
    {
        Ok(Object(review)) => return validate(review, |object| object.map(|o| o.0)),
        Err(error) => error,
    };
    let Object(head) = serde_json::from_slice::<Object<ReviewIn<'_, IgnoredAny>>>(body)
        .map_err(|e| AdmissionError::Malformed(e.to_string()))?;
    let review = validate(head, |_| None)?;
    if review.target == Target::Other {
        Ok(review)
    } else {
        Err(AdmissionError::InvalidPod(pod_error.to_string()))
    }
}

fn validate<'a, O>(
    review: ReviewIn<'a, O>,
    pod_of: impl FnOnce(Option<O>) -> Option<PodView<'a>>,
) -> Result<Review<'a>, AdmissionError> {
    match review.api_version.as_deref() {
        Some(API_VERSION) => {}
        other => {
            return Err(AdmissionError::UnsupportedVersion(
                other.unwrap_or_default().to_owned(),
            ));
        }
    }
    match review.kind.as_deref() {
        Some(KIND) => {}
        other => {
            return Err(AdmissionError::UnsupportedKind(
                other.unwrap_or_default().to_owned(),
            ));
        }
    }
    let Object(request) = review.request.ok_or(AdmissionError::MissingRequest)?;
    let uid = request
        .uid
        .filter(|uid| !uid.is_empty())
        .ok_or(AdmissionError::MissingUid)?;
    let is_pods = request.resource.as_ref().is_some_and(|r| {
        r.group.as_deref().unwrap_or_default().is_empty() && r.resource.as_deref() == Some("pods")
    });
    let target = match (
        is_pods,
        request.operation.as_deref(),
        request.sub_resource.as_deref().unwrap_or_default(),
    ) {
        (true, Some("CREATE"), "") => Target::PodCreate,
        (true, Some("UPDATE"), "ephemeralcontainers") => Target::EphemeralContainers,
        _ => Target::Other,
    };
    let namespace = request.namespace.unwrap_or_default();
    if !namespace.is_empty() {
        check_namespace(&namespace)?;
    }
    let mut pod = PodView::default();
    if target != Target::Other {
        if namespace.is_empty() {
            return Err(AdmissionError::MissingNamespace);
        }
        // Go decodes a null object as an empty Pod: nothing to do for it.
        pod = pod_of(request.object).unwrap_or_default();
        check_pod_names(&pod)?;
    }
    Ok(Review {
        uid,
        target,
        namespace,
        dry_run: request.dry_run.unwrap_or(false),
        pod,
    })
}

/// `request.namespace` must be what the API server allows a namespace to be named: a DNS-1123
/// label. Nothing else may reach a decision or an API path.
fn check_namespace(namespace: &str) -> Result<(), AdmissionError> {
    if is_dns1123_label(namespace) {
        Ok(())
    } else {
        Err(AdmissionError::InvalidNamespace(shorten(namespace)))
    }
}

fn check_pod_names(pod: &PodView<'_>) -> Result<(), AdmissionError> {
    let Some(metadata) = &pod.metadata else {
        return Ok(());
    };
    if let Some(name) = metadata.name.as_deref().filter(|n| !n.is_empty())
        && !is_dns1123_subdomain(name)
    {
        return Err(AdmissionError::InvalidPodName(shorten(name)));
    }
    if let Some(prefix) = metadata.generate_name.as_deref().filter(|n| !n.is_empty())
        && !is_generate_name(prefix)
    {
        return Err(AdmissionError::InvalidPodName(shorten(prefix)));
    }
    Ok(())
}

/// A `generateName` prefix: the API server masks one trailing '-' and checks the rest as a name.
fn is_generate_name(prefix: &str) -> bool {
    match prefix.strip_suffix('-') {
        Some(stem) if !stem.is_empty() => is_dns1123_subdomain(&format!("{stem}a")),
        _ => is_dns1123_subdomain(prefix),
    }
}

/// An invalid value in an error message, quoted and cut so that a huge one cannot flood a log.
fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        None => format!("{text:?}"),
        Some((at, _)) => format!("{:?}...", &text[..at]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_name_prefixes_follow_the_api_servers_masking() {
        assert!(is_generate_name("web-7d9f8-"));
        assert!(is_generate_name("web"));
        assert!(!is_generate_name("web--/"));
        assert!(!is_generate_name("-"));
        assert!(is_generate_name("a-"));
    }

    #[test]
    fn long_invalid_values_are_cut_in_messages() {
        let message = shorten(&"x".repeat(10_000));
        assert!(message.len() < 100, "{message}");
        assert!(message.ends_with("..."));
        assert_eq!(shorten("a/b"), "\"a/b\"");
    }
}
