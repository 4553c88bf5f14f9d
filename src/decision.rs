//! The pure decision: which pull Secrets a Pod needs, which of them it lacks, and the JSON Patch
//! that adds them. Works on a view of the Pod that reads only what the decision needs
//! (images, existing pull Secrets, the opt-out label/annotation), so a large Pod costs little.

use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::config::{Config, Registry};
use crate::image_matches;
use crate::json_reader::{JsonError, Reader, Seen};
use crate::reference::{HostPattern, ReferenceError};

/// The parts of a Pod the decision reads. Everything else is skipped unread
/// ([`PodView::read_into`]). Strings without JSON escapes borrow from the request body.
#[derive(Debug, Default)]
pub struct PodView<'a> {
    pub metadata: PodMetadataView<'a>,
    pub spec: Option<PodSpecView<'a>>,
}

#[derive(Debug, Default)]
pub struct PodMetadataView<'a> {
    pub namespace: Option<Cow<'a, str>>,
    /// In document order; a key given twice counts with its last value, as in a JSON map.
    pub labels: Option<Entries<'a, Cow<'a, str>>>,
    /// Values as raw JSON text: annotations such as kubectl's last-applied-configuration can be
    /// large and are never needed decoded.
    pub annotations: Option<Entries<'a, &'a [u8]>>,
}

#[derive(Debug, Default)]
pub struct PodSpecView<'a> {
    pub containers: Option<List<ContainerView<'a>>>,
    pub init_containers: Option<List<ContainerView<'a>>>,
    pub ephemeral_containers: Option<List<ContainerView<'a>>>,
    pub image_pull_secrets: Option<List<SecretReferenceView<'a>>>,
}

#[derive(Debug, Default)]
pub struct ContainerView<'a> {
    pub name: Option<Cow<'a, str>>,
    pub image: Option<Cow<'a, str>>,
}

#[derive(Debug, Default)]
pub struct SecretReferenceView<'a> {
    pub name: Option<Cow<'a, str>>,
}

impl<'a> PodView<'a> {
    /// Reads a Pod from its JSON text (one value, nothing after it).
    pub fn from_json(text: &'a [u8]) -> Result<Self, JsonError> {
        let mut pod = PodView::default();
        pod.read_json_into(text)?;
        Ok(pod)
    }

    /// [`PodView::from_json`] into `self`, which must be empty.
    pub fn read_json_into(&mut self, text: &'a [u8]) -> Result<(), JsonError> {
        let mut reader = Reader::new(text);
        self.read_into(&mut reader)?;
        reader.finish()
    }

    /// Reads a Pod object into `self`, which must be empty (`PodView::default()`). Only a JSON
    /// object is a Pod: an array or a scalar is refused. A field given twice is refused too, except
    /// in maps (labels, annotations), where the last one counts. On an error `self` holds what was
    /// read before it.
    ///
    /// In place rather than returned: the view holds its short lists inline and is some hundred
    /// bytes, which every move would copy.
    pub fn read_into(&mut self, reader: &mut Reader<'a>) -> Result<(), JsonError> {
        debug_assert!(self.is_empty(), "a Pod view is read into an empty one");
        let mut seen = Seen::default();
        reader.read_object("a Pod object", |r, key| {
            if key.is("metadata") {
                seen.first(0, "metadata", &key)?;
                self.metadata.read_into(r)?;
            } else if key.is("spec") {
                seen.first(1, "spec", &key)?;
                if !r.take_null()? {
                    self.spec.insert(PodSpecView::default()).read_into(r)?;
                }
            } else {
                r.skip_value()?;
            }
            Ok(())
        })
    }
}

impl<'a> PodMetadataView<'a> {
    fn read_into(&mut self, reader: &mut Reader<'a>) -> Result<(), JsonError> {
        let metadata = self;
        let mut seen = Seen::default();
        reader.read_object("an object for metadata", |r, key| {
            if key.is("namespace") {
                seen.first(0, "namespace", &key)?;
                metadata.namespace = r.read_optional_str("a string for metadata.namespace")?;
            } else if key.is("labels") {
                seen.first(1, "labels", &key)?;
                read_optional_map(r, "an object for labels", &mut metadata.labels, |r| {
                    r.read_str("a string label value")
                })?;
            } else if key.is("annotations") {
                seen.first(2, "annotations", &key)?;
                read_optional_map(
                    r,
                    "an object for annotations",
                    &mut metadata.annotations,
                    Reader::skip_value,
                )?;
            } else {
                r.skip_value()?;
            }
            Ok(())
        })
    }
}

/// A JSON map's entries, in document order.
pub type Entries<'a, V> = SmallVec<[(Cow<'a, str>, V); 2]>;

/// A JSON list's items. Most Pods have one or two containers, labels and annotations: up to two
/// are kept inline, so that reading such a Pod allocates nothing for them. That makes the view
/// large, so it is read in place ([`PodView::read_into`]) rather than moved.
pub type List<T> = SmallVec<[T; 2]>;

/// Reads a map, or `null`, into `slot` (which is `None`).
fn read_optional_map<'a, V>(
    reader: &mut Reader<'a>,
    expected: &'static str,
    slot: &mut Option<Entries<'a, V>>,
    mut value: impl FnMut(&mut Reader<'a>) -> Result<V, JsonError>,
) -> Result<(), JsonError> {
    if reader.take_null()? {
        return Ok(());
    }
    let entries = slot.insert(Entries::new());
    reader.read_object(expected, |r, key| {
        entries.push((key.decode()?, value(r)?));
        Ok(())
    })
}

/// Reads a list, or `null`, into `slot` (which is `None`).
fn read_optional_list<'a, T>(
    reader: &mut Reader<'a>,
    expected: &'static str,
    slot: &mut Option<List<T>>,
    mut item: impl FnMut(&mut Reader<'a>) -> Result<T, JsonError>,
) -> Result<(), JsonError> {
    if reader.take_null()? {
        return Ok(());
    }
    let items = slot.insert(List::new());
    reader.read_array(expected, |r| {
        items.push(item(r)?);
        Ok(())
    })
}

impl<'a> PodSpecView<'a> {
    fn read_into(&mut self, reader: &mut Reader<'a>) -> Result<(), JsonError> {
        let spec = self;
        let mut seen = Seen::default();
        reader.read_object("an object for spec", |r, key| {
            if key.is("containers") {
                seen.first(0, "containers", &key)?;
                read_optional_list(
                    r,
                    "a list of containers",
                    &mut spec.containers,
                    ContainerView::read,
                )?;
            } else if key.is("initContainers") {
                seen.first(1, "initContainers", &key)?;
                read_optional_list(
                    r,
                    "a list of init containers",
                    &mut spec.init_containers,
                    ContainerView::read,
                )?;
            } else if key.is("ephemeralContainers") {
                seen.first(2, "ephemeralContainers", &key)?;
                read_optional_list(
                    r,
                    "a list of ephemeral containers",
                    &mut spec.ephemeral_containers,
                    ContainerView::read,
                )?;
            } else if key.is("imagePullSecrets") {
                seen.first(3, "imagePullSecrets", &key)?;
                read_optional_list(
                    r,
                    "a list of Secret references",
                    &mut spec.image_pull_secrets,
                    SecretReferenceView::read,
                )?;
            } else {
                r.skip_value()?;
            }
            Ok(())
        })
    }
}

impl<'a> ContainerView<'a> {
    fn read(reader: &mut Reader<'a>) -> Result<Self, JsonError> {
        let mut container = ContainerView::default();
        let mut seen = Seen::default();
        reader.read_object("a container object", |r, key| {
            if key.is("name") {
                seen.first(0, "name", &key)?;
                container.name = r.read_optional_str("a string for the container name")?;
            } else if key.is("image") {
                seen.first(1, "image", &key)?;
                container.image = r.read_optional_str("a string for the image")?;
            } else {
                r.skip_value()?;
            }
            Ok(())
        })?;
        Ok(container)
    }
}

impl<'a> SecretReferenceView<'a> {
    fn read(reader: &mut Reader<'a>) -> Result<Self, JsonError> {
        let mut reference = SecretReferenceView::default();
        let mut seen = Seen::default();
        reader.read_object("a Secret reference object", |r, key| {
            if key.is("name") {
                seen.first(0, "name", &key)?;
                reference.name = r.read_optional_str("a string for the Secret name")?;
            } else {
                r.skip_value()?;
            }
            Ok(())
        })?;
        Ok(reference)
    }
}

impl PodView<'_> {
    /// Nothing read into it: what [`PodView::default`] makes.
    pub fn is_empty(&self) -> bool {
        self.metadata.namespace.is_none()
            && self.metadata.labels.is_none()
            && self.metadata.annotations.is_none()
            && self.spec.is_none()
    }

    fn listed_pull_secrets(&self) -> impl Iterator<Item = &str> {
        self.spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten())
            .filter_map(|r| r.name.as_deref())
    }

    fn has_pull_secrets_field(&self) -> bool {
        self.spec
            .as_ref()
            .is_some_and(|s| s.image_pull_secrets.is_some())
    }
}

/// Which containers count: on CREATE, regular and init containers (a new Pod has no ephemeral ones);
/// on an ephemeral-container update, only the ephemeral ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerSet {
    PodCreate,
    Ephemeral,
}

/// Why a Pod was left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    Namespace(String),
    OptOutLabel(String),
    OptOutAnnotation(String),
}

/// A pull Secret the Pod needs because one of its images is on a configured registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredSecret<'c> {
    pub registry: &'c Registry,
    /// The first image (in container order) that made it required, and the pattern it matched.
    pub image: Arc<str>,
    pub pattern: &'c HostPattern,
    /// Whether `spec.imagePullSecrets` already lists it (then no patch is needed for it).
    pub already_listed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidImage {
    pub container: String,
    pub image: String,
    pub error: ReferenceError,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision<'c> {
    pub skip: Option<Skip>,
    pub required: SmallVec<[RequiredSecret<'c>; 2]>,
    pub invalid_images: Vec<InvalidImage>,
    /// Add the whole `imagePullSecrets` array (field absent or null) rather than append to it.
    pub field_absent: bool,
}

impl<'c> Decision<'c> {
    /// The Secret names to add, in the order the registries were first needed.
    pub fn to_add(&self) -> impl Iterator<Item = &RequiredSecret<'c>> {
        self.required.iter().filter(|r| !r.already_listed)
    }

    pub fn changes_pod(&self) -> bool {
        self.to_add().next().is_some()
    }

    /// [`Decision::patch`] as JSON text, written directly (the answer path needs only the bytes).
    pub fn patch_json(&self) -> Option<Vec<u8>> {
        let mut names = self
            .to_add()
            .map(|r| r.registry.secret_name.as_str())
            .peekable();
        names.peek()?;
        let mut json = Vec::with_capacity(128);
        if self.field_absent {
            json.extend_from_slice(br#"[{"op":"add","path":"/spec/imagePullSecrets","value":["#);
            for (i, name) in names.enumerate() {
                if i > 0 {
                    json.push(b',');
                }
                write_name_entry(&mut json, name);
            }
            json.extend_from_slice(b"]}]");
        } else {
            json.push(b'[');
            for (i, name) in names.enumerate() {
                if i > 0 {
                    json.push(b',');
                }
                json.extend_from_slice(
                    br#"{"op":"add","path":"/spec/imagePullSecrets/-","value":"#,
                );
                write_name_entry(&mut json, name);
                json.push(b'}');
            }
            json.push(b']');
        }
        Some(json)
    }
}

/// `{"name":<name>}`.
fn write_name_entry(json: &mut Vec<u8>, name: &str) {
    json.extend_from_slice(br#"{"name":"#);
    crate::json_writer::string(json, name);
    json.push(b'}');
}

/// Decides what a Pod needs. `namespace` is the request's namespace (the Pod's own may be unset).
pub fn decide<'c>(
    config: &'c Config,
    namespace: &str,
    pod: &PodView<'_>,
    containers: ContainerSet,
) -> Decision<'c> {
    if let Some(skip) = skip_reason(config, namespace, pod) {
        return Decision {
            skip: Some(skip),
            ..Decision::default()
        };
    }
    let mut decision = Decision {
        field_absent: !pod.has_pull_secrets_field(),
        ..Decision::default()
    };
    let Some(spec) = &pod.spec else {
        return decision;
    };
    let lists: [&Option<List<ContainerView<'_>>>; 2] = match containers {
        ContainerSet::PodCreate => [&spec.init_containers, &spec.containers],
        ContainerSet::Ephemeral => [&spec.ephemeral_containers, &None],
    };
    for container in lists.into_iter().flatten().flatten() {
        let image = container.image.as_deref().unwrap_or_default();
        // Pods repeat images: what each one matches is remembered per thread and configuration.
        image_matches::with_matches(config, image, |found| match found {
            Err(error) => decision.invalid_images.push(InvalidImage {
                container: container.name.as_deref().unwrap_or_default().to_owned(),
                image: image.to_owned(),
                error,
            }),
            Ok(found) => {
                for &(registry, pattern) in &found.registries {
                    let Some(registry) = config.registries.get(registry) else {
                        continue;
                    };
                    let Some(pattern) = registry.hosts.get(pattern) else {
                        continue;
                    };
                    if decision
                        .required
                        .iter()
                        .any(|r| std::ptr::eq(r.registry, registry))
                    {
                        continue;
                    }
                    let already_listed = pod
                        .listed_pull_secrets()
                        .any(|name| name == registry.secret_name);
                    decision.required.push(RequiredSecret {
                        registry,
                        image: found.normalized.clone(),
                        pattern,
                        already_listed,
                    });
                }
            }
        });
    }
    decision
}

fn skip_reason(config: &Config, namespace: &str, pod: &PodView<'_>) -> Option<Skip> {
    if config.skip_namespaces.iter().any(|ns| ns == namespace) {
        return Some(Skip::Namespace(namespace.to_owned()));
    }
    if let (Some(key), Some(labels)) = (&config.opt_out.label, &pod.metadata.labels)
        && last_value(labels, key).is_some_and(|v| is_true(v))
    {
        return Some(Skip::OptOutLabel(key.clone()));
    }
    if let (Some(key), Some(annotations)) = (&config.opt_out.annotation, &pod.metadata.annotations)
        && last_value(annotations, key)
            .and_then(|raw| Reader::new(raw).read_str("a string").ok())
            .is_some_and(|v| is_true(&v))
    {
        return Some(Skip::OptOutAnnotation(key.clone()));
    }
    None
}

fn last_value<'v, V>(entries: &'v [(Cow<'_, str>, V)], key: &str) -> Option<&'v V> {
    entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn is_true(value: &str) -> bool {
    value.eq_ignore_ascii_case("true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{AddOperation, Patch, PatchOperation};

    /// The JSON Patch built with json_patch's types: the oracle for `Decision::patch_json`.
    fn typed_patch(decision: &Decision<'_>) -> Option<Patch> {
        let names: Vec<&str> = decision
            .to_add()
            .map(|r| r.registry.secret_name.as_str())
            .collect();
        if names.is_empty() {
            return None;
        }
        let entry = |name: &str| serde_json::json!({ "name": name });
        let operations = if decision.field_absent {
            vec![PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["spec", "imagePullSecrets"]),
                value: serde_json::Value::Array(names.iter().map(|n| entry(n)).collect()),
            })]
        } else {
            names
                .iter()
                .map(|name| {
                    PatchOperation::Add(AddOperation {
                        path: PointerBuf::from_tokens(["spec", "imagePullSecrets", "-"]),
                        value: entry(name),
                    })
                })
                .collect()
        };
        Some(Patch(operations))
    }

    use serde_json::json;

    fn config() -> Config {
        Config::from_yaml_str(
            "registries:\n\
             - {name: gcp, preset: gcp, secretName: gcr-pull}\n\
             - {name: harbor, hosts: ['harbor.example.com:8443'], secretName: harbor-pull}\n\
             skipNamespaces: [kube-system]\n",
        )
        .expect("valid test config")
    }

    struct Case {
        name: &'static str,
        namespace: &'static str,
        pod: serde_json::Value,
        /// The `imagePullSecrets` the Pod must have after the patch (None: no patch at all).
        expect_after: Option<serde_json::Value>,
        expect_skip: Option<Skip>,
        expect_invalid: usize,
    }

    fn pod(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    }

    fn run(case: &Case, config: &Config) {
        let text = case.pod.to_string();
        let view = PodView::from_json(text.as_bytes()).expect("pod view");
        let decision = decide(config, case.namespace, &view, ContainerSet::PodCreate);
        assert_eq!(decision.skip, case.expect_skip, "{}: skip", case.name);
        assert_eq!(
            decision.invalid_images.len(),
            case.expect_invalid,
            "{}: invalid images",
            case.name
        );
        assert_eq!(
            decision.patch_json(),
            typed_patch(&decision).map(|p| serde_json::to_vec(&p).expect("json")),
            "{}: the written patch is the serialized one",
            case.name
        );
        match (typed_patch(&decision), &case.expect_after) {
            (None, None) => {}
            (Some(patch), Some(expected)) => {
                let mut pod = case.pod.clone();
                json_patch::patch(&mut pod, &patch)
                    .unwrap_or_else(|e| panic!("{}: patch fails: {e}", case.name));
                assert_eq!(&pod["spec"]["imagePullSecrets"], expected, "{}", case.name);
                // Applying the patch must leave everything else as it was.
                let mut without = pod.clone();
                let mut original = case.pod.clone();
                without["spec"]
                    .as_object_mut()
                    .map(|s| s.remove("imagePullSecrets"));
                original["spec"]
                    .as_object_mut()
                    .map(|s| s.remove("imagePullSecrets"));
                assert_eq!(
                    without, original,
                    "{}: only imagePullSecrets changes",
                    case.name
                );
            }
            (got, expected) => panic!(
                "{}: patch {got:?}, expected pod secrets {expected:?}",
                case.name
            ),
        }
    }

    #[test]
    fn decision_table() {
        let config = config();
        let cases = [
            Case {
                name: "absent field gets the whole array",
                namespace: "team-a",
                pod: pod(json!({"containers": [{"name": "a", "image": "eu.gcr.io/p/app:1"}]})),
                expect_after: Some(json!([{"name": "gcr-pull"}])),
                expect_skip: None,
                expect_invalid: 0,
            },
            Case {
                name: "null field is replaced by the array",
                namespace: "team-a",
                pod: pod(
                    json!({"imagePullSecrets": null, "containers": [{"name": "a", "image": "gcr.io/p/app"}]}),
                ),
                expect_after: Some(json!([{"name": "gcr-pull"}])),
                expect_skip: None,
                expect_invalid: 0,
            },
            Case {
                name: "existing entries stay first, ours is appended",
                namespace: "team-a",
                pod: pod(
                    json!({"imagePullSecrets": [{"name": "my-own-creds"}], "containers": [{"name": "a", "image": "gcr.io/p/app"}]}),
                ),
                expect_after: Some(json!([{"name": "my-own-creds"}, {"name": "gcr-pull"}])),
                expect_skip: None,
                expect_invalid: 0,
            },
            Case {
                name: "empty array is appended to",
                namespace: "team-a",
                pod: pod(
                    json!({"imagePullSecrets": [], "containers": [{"name": "a", "image": "gcr.io/p/app"}]}),
                ),
                expect_after: Some(json!([{"name": "gcr-pull"}])),
                expect_skip: None,
                expect_invalid: 0,
            },
            Case {
                name: "already listed: no patch, never twice",
                namespace: "team-a",
                pod: pod(
                    json!({"imagePullSecrets": [{"name": "gcr-pull"}], "containers": [{"name": "a", "image": "gcr.io/p/app"}]}),
                ),
                expect_after: None,
                expect_skip: None,
                expect_invalid: 0,
            },
            Case {
                name: "several images of one registry add one entry",
                namespace: "team-a",
                pod: pod(json!({"containers": [
                    {"name": "a", "image": "gcr.io/p/a"},
                    {"name": "b", "image": "eu.gcr.io/p/b"},
                    {"name": "c", "image": "europe-west1-docker.pkg.dev/p/r/c:1"}]})),
                expect_after: Some(json!([{"name": "gcr-pull"}])),
                expect_skip: None,
                expect_invalid: 0,
            },
            Case {
                name: "init container image counts",
                namespace: "team-a",
                pod: pod(
                    json!({"initContainers": [{"name": "m", "image": "docker.europe-west1.rep.pkg.dev/p/r/m"}],
                                "containers": [{"name": "a", "image": "nginx:1.27"}]}),
                ),
                expect_after: Some(json!([{"name": "gcr-pull"}])),
                expect_skip: None,
                expect_invalid: 0,
            },
            Case {
                name: "two registries, in order of first use",
                namespace: "team-a",
                pod: pod(
                    json!({"imagePullSecrets": [{"name": "mine"}], "containers": [
                    {"name": "a", "image": "harbor.example.com:8443/team/a:1"},
                    {"name": "b", "image": "gcr.io/p/b"}]}),
                ),
                expect_after: Some(
                    json!([{"name": "mine"}, {"name": "harbor-pull"}, {"name": "gcr-pull"}]),
                ),
                expect_skip: None,
                expect_invalid: 0,
            },
            Case {
                name: "one of two already listed: only the other is appended",
                namespace: "team-a",
                pod: pod(
                    json!({"imagePullSecrets": [{"name": "harbor-pull"}], "containers": [
                    {"name": "a", "image": "harbor.example.com:8443/team/a:1"},
                    {"name": "b", "image": "gcr.io/p/b"}]}),
                ),
                expect_after: Some(json!([{"name": "harbor-pull"}, {"name": "gcr-pull"}])),
                expect_skip: None,
                expect_invalid: 0,
            },
            Case {
                name: "no match: no patch",
                namespace: "team-a",
                pod: pod(
                    json!({"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "europe-west1-maven.pkg.dev/p/r/b"}, {"name": "c", "image": "harbor.example.com/team/c"}]}),
                ),
                expect_after: None,
                expect_skip: None,
                expect_invalid: 0,
            },
            Case {
                name: "opted out by label",
                namespace: "team-a",
                pod: json!({"metadata": {"labels": {"pullsecret-injector.io/skip": "true"}}, "spec": {"containers": [{"name": "a", "image": "gcr.io/p/a"}]}}),
                expect_after: None,
                expect_skip: Some(Skip::OptOutLabel("pullsecret-injector.io/skip".into())),
                expect_invalid: 0,
            },
            Case {
                name: "opted out by annotation",
                namespace: "team-a",
                pod: json!({"metadata": {"annotations": {"pullsecret-injector.io/skip": "True"}}, "spec": {"containers": [{"name": "a", "image": "gcr.io/p/a"}]}}),
                expect_after: None,
                expect_skip: Some(Skip::OptOutAnnotation("pullsecret-injector.io/skip".into())),
                expect_invalid: 0,
            },
            Case {
                name: "opt-out key with another value does not opt out",
                namespace: "team-a",
                pod: json!({"metadata": {"labels": {"pullsecret-injector.io/skip": "false"}, "annotations": {"pullsecret-injector.io/skip": "no"}}, "spec": {"containers": [{"name": "a", "image": "gcr.io/p/a"}]}}),
                expect_after: Some(json!([{"name": "gcr-pull"}])),
                expect_skip: None,
                expect_invalid: 0,
            },
            Case {
                name: "skipped namespace",
                namespace: "kube-system",
                pod: pod(json!({"containers": [{"name": "a", "image": "gcr.io/p/a"}]})),
                expect_after: None,
                expect_skip: Some(Skip::Namespace("kube-system".into())),
                expect_invalid: 0,
            },
            Case {
                name: "invalid image is reported, valid ones still count",
                namespace: "team-a",
                pod: pod(
                    json!({"containers": [{"name": "a", "image": "gcr.io/p/App"}, {"name": "b", "image": ""}, {"name": "c", "image": "gcr.io/p/c"}]}),
                ),
                expect_after: Some(json!([{"name": "gcr-pull"}])),
                expect_skip: None,
                expect_invalid: 2,
            },
            Case {
                name: "missing image is reported",
                namespace: "team-a",
                pod: pod(json!({"containers": [{"name": "a"}]})),
                expect_after: None,
                expect_skip: None,
                expect_invalid: 1,
            },
            Case {
                name: "pod without spec: nothing to do",
                namespace: "team-a",
                pod: json!({"metadata": {"name": "p"}}),
                expect_after: None,
                expect_skip: None,
                expect_invalid: 0,
            },
            Case {
                name: "ephemeral containers on create are not considered",
                namespace: "team-a",
                pod: pod(
                    json!({"containers": [{"name": "a", "image": "nginx"}], "ephemeralContainers": [{"name": "d", "image": "gcr.io/p/debug"}]}),
                ),
                expect_after: None,
                expect_skip: None,
                expect_invalid: 0,
            },
        ];
        for case in &cases {
            run(case, &config);
        }
    }

    #[test]
    fn required_records_why() {
        let config = config();
        let text = pod(json!({"imagePullSecrets": [{"name": "gcr-pull"}], "containers": [{"name": "a", "image": "eu.gcr.io/p/app@sha256:4b6e0d4f5f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f"}]})).to_string();
        let view = PodView::from_json(text.as_bytes()).expect("view");
        let decision = decide(&config, "team-a", &view, ContainerSet::PodCreate);
        assert_eq!(decision.required.len(), 1);
        let required = &decision.required[0];
        assert_eq!(required.registry.name, "gcp");
        assert_eq!(required.pattern.as_str(), "*.gcr.io");
        assert_eq!(&*required.image, "eu.gcr.io/p/app");
        assert!(required.already_listed);
        assert!(!decision.changes_pod());
    }

    #[test]
    fn ephemeral_set_reads_only_ephemeral_containers() {
        let config = config();
        let text = pod(json!({"containers": [{"name": "a", "image": "gcr.io/p/a"}], "ephemeralContainers": [{"name": "d", "image": "harbor.example.com:8443/t/debug"}]})).to_string();
        let view = PodView::from_json(text.as_bytes()).expect("view");
        let decision = decide(&config, "team-a", &view, ContainerSet::Ephemeral);
        let names: Vec<&str> = decision
            .required
            .iter()
            .map(|r| r.registry.name.as_str())
            .collect();
        assert_eq!(names, ["harbor"]);
    }

    #[test]
    fn view_keeps_annotation_values_raw() {
        let text = r#"{"metadata":{"annotations":{"big":"{\"a\":\"\\n\"}","pullsecret-injector.io/skip":"true"}}}"#;
        let view = PodView::from_json(text.as_bytes()).expect("view");
        let annotations = view.metadata.annotations.expect("annotations");
        assert_eq!(
            last_value(&annotations, "big").copied(),
            Some(br#""{\"a\":\"\\n\"}""#.as_slice())
        );
    }
}
