//! The pure decision: which pull Secrets a Pod needs, which of them it lacks, and the JSON Patch
//! that adds them.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::{Value, json};

use std::borrow::Cow;
use std::collections::HashMap;

use super::envelope::{ContainerView, Object, PodView, Text};
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
pub(crate) struct RequiredSecret<'c> {
    pub registry: &'c Registry,
    /// The first image (in pull order) that made it required, as the Pod writes it.
    pub image: String,
    pub pattern: &'c HostPattern,
    /// Whether `spec.imagePullSecrets` already lists it (then no patch is needed for it).
    pub already_listed: bool,
}

/// An image the kubelet could not pull by that name: no Secret is considered for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidImage {
    /// Where it is, e.g. `container "app"` or `image volume "models"`.
    pub place: String,
    pub image: String,
    pub error: ReferenceError,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Decision<'c> {
    pub skip: Option<Skip>,
    pub required: Vec<RequiredSecret<'c>>,
    pub invalid_images: Vec<InvalidImage>,
    /// Add the whole `imagePullSecrets` array (field absent or null) rather than append to it.
    pub field_absent: bool,
}

impl<'c> Decision<'c> {
    /// The Secrets to add, in the order the registries were first needed.
    pub(crate) fn to_add(&self) -> impl Iterator<Item = &RequiredSecret<'c>> {
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
pub(crate) fn decide<'c>(
    config: &'c Config,
    namespace: &str,
    pod: &PodView<'_>,
    set: ContainerSet,
) -> Decision<'c> {
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
                    image: image.to_owned(),
                    error,
                });
                continue;
            }
        };
        for registry in &config.registries {
            if decision
                .required
                .iter()
                .any(|r| std::ptr::eq(r.registry, registry))
            {
                continue;
            }
            let Some(pattern) = registry.hosts.iter().find(|p| p.matches(&reference)) else {
                continue;
            };
            decision.required.push(RequiredSecret {
                registry,
                image: image.to_owned(),
                pattern,
                already_listed: listed.contains(&registry.secret_name.as_str()),
            });
        }
    }
    decision
}

/// Every image the kubelet pulls with the Pod's pull Secrets, with where it is, in pull order.
fn pulled_images<'p>(pod: &'p PodView<'_>, set: ContainerSet) -> Vec<(String, &'p str)> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let containers = |list: &'p Option<Vec<Object<ContainerView<'_>>>>| {
        list.iter().flatten().map(|c| {
            let name = c.name.as_deref().unwrap_or_default();
            (
                format!("container {name:?}"),
                c.image.as_deref().unwrap_or_default(),
            )
        })
    };
    match set {
        ContainerSet::Ephemeral => containers(&spec.ephemeral_containers).collect(),
        ContainerSet::PodCreate => {
            let volumes = spec.volumes.iter().flatten().filter_map(|v| {
                let image = v.image.as_ref()?;
                let name = v.name.as_deref().unwrap_or_default();
                Some((
                    format!("image volume {name:?}"),
                    image.reference.as_deref().unwrap_or_default(),
                ))
            });
            containers(&spec.init_containers)
                .chain(containers(&spec.containers))
                .chain(volumes)
                .collect()
        }
    }
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
fn is_true(map: Option<&HashMap<Text<'_>, Text<'_>>>, key: &str) -> bool {
    map.and_then(|map| map.get(&Text(Cow::Borrowed(key))))
        .is_some_and(|value| value.as_str().eq_ignore_ascii_case("true"))
}
