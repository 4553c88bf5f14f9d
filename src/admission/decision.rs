//! The pure decision: which pull Secrets a Pod needs, which of them it lacks, and the JSON Patch
//! that adds them.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::{Value, json};

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::value::RawValue;

use super::envelope::{PodView, Text};
use super::reference::{HostPattern, ImageReference, ReferenceError};
use crate::config::{Config, Registry};

/// Which images count: on CREATE, those of init and regular containers and of image volumes (a
/// new Pod has no ephemeral containers); on an ephemeral-container update, only the ephemeral ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContainerSet {
    PodCreate,
    Ephemeral,
}

/// Why a Pod was left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Skip {
    Namespace,
    OptOutLabel(String),
    OptOutAnnotation(String),
}

impl Skip {
    pub(crate) fn describe(&self, namespace: &str) -> String {
        match self {
            Skip::Namespace => format!("namespace {namespace} is skipped by the config"),
            Skip::OptOutLabel(key) => format!("the Pod opted out with label {key}=true"),
            Skip::OptOutAnnotation(key) => format!("the Pod opted out with annotation {key}=true"),
        }
    }
}

/// A pull Secret the Pod needs because one of its images is on a configured registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequiredSecret<'c, 'p> {
    pub registry: &'c Registry,
    /// The first image (in pull order) that made it required, as the Pod writes it.
    pub image: &'p str,
    pub pattern: &'c HostPattern,
    /// Whether `spec.imagePullSecrets` already lists it (then no patch is needed for it).
    pub already_listed: bool,
    /// The registry hosts (`host[:port]`) the Pod pulls from with it, each with the first
    /// repository pulled there.
    pub hosts: Vec<(&'p str, Cow<'p, str>)>,
}

/// Where an image is in the Pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place<'p> {
    Container(&'p str),
    ImageVolume(&'p str),
}

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Container(name) => write!(f, "container {name:?}"),
            Place::ImageVolume(name) => write!(f, "image volume {name:?}"),
        }
    }
}

/// An image the kubelet could not pull by that name: no Secret is considered for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidImage<'p> {
    pub place: Place<'p>,
    pub image: &'p str,
    pub error: ReferenceError,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Decision<'c, 'p> {
    pub skip: Option<Skip>,
    pub required: Vec<RequiredSecret<'c, 'p>>,
    pub invalid_images: Vec<InvalidImage<'p>>,
    /// Add the whole `imagePullSecrets` array (field absent or null) rather than append to it.
    pub field_absent: bool,
}

impl<'c, 'p> Decision<'c, 'p> {
    /// The Secrets to add, in the order the registries were first needed.
    pub(crate) fn to_add(&self) -> impl Iterator<Item = &RequiredSecret<'c, 'p>> {
        self.required.iter().filter(|r| !r.already_listed)
    }

    /// The JSON Patch that adds the missing Secrets, if any.
    pub(crate) fn patch(&self) -> Option<Patch> {
        let entries: Vec<Value> = self
            .to_add()
            .map(|r| json!({ "name": r.registry.secret_name }))
            .collect();
        if entries.is_empty() {
            return None;
        }
        let operations = if self.field_absent {
            vec![add(&["spec", "imagePullSecrets"], Value::Array(entries))]
        } else {
            entries
                .into_iter()
                .map(|entry| add(&["spec", "imagePullSecrets", "-"], entry))
                .collect()
        };
        Some(Patch(operations))
    }
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

/// Decides what a Pod needs. `namespace` is the request's (validated) namespace.
pub(crate) fn decide<'c, 'p>(
    config: &'c Config,
    namespace: &str,
    pod: &'p PodView<'_>,
    set: ContainerSet,
) -> Decision<'c, 'p> {
    if let Some(skip) = skip_reason(config, namespace, pod) {
        return Decision {
            skip: Some(skip),
            ..Decision::default()
        };
    }
    let listed: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|spec| spec.image_pull_secrets.iter().flatten())
        .filter_map(|r| r.name.as_deref())
        .collect();
    let mut decision = Decision {
        field_absent: pod
            .spec
            .as_ref()
            .is_none_or(|spec| spec.image_pull_secrets.is_none()),
        ..Decision::default()
    };
    for (place, image) in pulled_images(pod, set) {
        let reference = match ImageReference::parse(image) {
            Ok(reference) => reference,
            Err(error) => {
                decision.invalid_images.push(InvalidImage {
                    place,
                    image,
                    error,
                });
                continue;
            }
        };
        for registry in &config.registries {
            let required = decision
                .required
                .iter_mut()
                .find(|r| std::ptr::eq(r.registry, registry));
            // Another image on a host already recorded for this Secret needs no matching at all.
            if required
                .as_ref()
                .is_some_and(|r| r.hosts.iter().any(|(h, _)| *h == reference.domain))
            {
                continue;
            }
            let Some(pattern) = registry.hosts.iter().find(|p| p.matches(&reference)) else {
                continue;
            };
            if let Some(required) = required {
                required
                    .hosts
                    .push((reference.domain, reference.normalized_path()));
                continue;
            }
            decision.required.push(RequiredSecret {
                registry,
                image,
                pattern,
                already_listed: listed.contains(&registry.secret_name.as_str()),
                hosts: vec![(reference.domain, reference.normalized_path())],
            });
        }
    }
    decision
}

/// Every image the kubelet pulls with the Pod's pull Secrets, with where it is, in pull order.
fn pulled_images<'p>(
    pod: &'p PodView<'_>,
    set: ContainerSet,
) -> impl Iterator<Item = (Place<'p>, &'p str)> {
    let create = set == ContainerSet::PodCreate;
    let spec = pod.spec.as_deref();
    let lists = spec.into_iter().flat_map(move |spec| {
        [
            (create, &spec.init_containers),
            (create, &spec.containers),
            (!create, &spec.ephemeral_containers),
        ]
    });
    let containers = lists
        .filter(|(wanted, _)| *wanted)
        .flat_map(|(_, list)| list.iter().flatten())
        .map(|c| {
            (
                Place::Container(c.name.as_deref().unwrap_or_default()),
                c.image.as_deref().unwrap_or_default(),
            )
        });
    let volumes = spec
        .filter(|_| create)
        .into_iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter_map(|v| {
            let image = v.image.as_ref()?;
            Some((
                Place::ImageVolume(v.name.as_deref().unwrap_or_default()),
                image.reference.as_deref().unwrap_or_default(),
            ))
        });
    containers.chain(volumes)
}

fn skip_reason(config: &Config, namespace: &str, pod: &PodView<'_>) -> Option<Skip> {
    if config.skip_namespaces.iter().any(|ns| ns == namespace) {
        return Some(Skip::Namespace);
    }
    let metadata = pod.metadata.as_ref()?;
    if let Some(key) = &config.opt_out.label
        && is_true(metadata.labels.as_ref(), key)
    {
        return Some(Skip::OptOutLabel(key.clone()));
    }
    if let Some(key) = &config.opt_out.annotation
        && is_true(metadata.annotations.as_ref(), key)
    {
        return Some(Skip::OptOutAnnotation(key.clone()));
    }
    None
}

/// Whether `map[key]` is "true" (any case), as the opt-out label and annotation are written.
fn is_true<V: AsText>(map: Option<&HashMap<Text<'_>, V>>, key: &str) -> bool {
    map.and_then(|map| map.get(&Text(Cow::Borrowed(key))))
        .and_then(AsText::text)
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

/// A map value read as text: labels are strings; annotations are kept as raw JSON (some, such as
/// kubectl's last-applied-configuration, are large and never needed) and decoded on demand.
trait AsText {
    fn text(&self) -> Option<Cow<'_, str>>;
}

impl AsText for Text<'_> {
    fn text(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(self.as_str()))
    }
}

impl AsText for &RawValue {
    fn text(&self) -> Option<Cow<'_, str>> {
        serde_json::from_str::<Text<'_>>(self.get())
            .ok()
            .map(|t| t.0)
    }
}
