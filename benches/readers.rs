//! The webhook's reader against general JSON readers, on the review the load runs send
//! (`tests/fixtures/admission-reviews/pod-create-direct.json`, compacted as the API server sends it):
//! a baseline for `admission::parse_review`, measured in the same run.
//!
//! - `pullsecret_injector`: `admission::parse_review`, what the webhook runs;
//! - `serde_json_view` and `sonic_rs_view`: the same fields (uid, resource, subResource,
//!   namespace, operation, dryRun, the Pod's namespace, labels and annotations, its containers'
//!   names and images, its imagePullSecrets) into `#[derive(Deserialize)]` structs that borrow
//!   from the body, by serde_json and by sonic-rs (a SIMD reader); every other field is skipped by
//!   the reader;
//! - `kube_typed_pod`: `kube::core::admission::AdmissionReview<Pod>` through serde_json, the whole
//!   Pod decoded into k8s-openapi's types, as a kube-rs webhook reads it;
//! - `serde_json_value`: the whole review into a `serde_json::Value`.
//!
//! Before anything is timed, every reader is checked to find the same fields.
//!
//! ```sh
//! cargo bench --bench readers                  # criterion
//! bash benches/instructions.sh                 # also instructions per read (callgrind), noise-free
//! ```
//!
//! `BENCH_LOOP=N BENCH_CASE=<reader>` runs one reader N times without criterion, for callgrind.

#[path = "support/json.rs"]
mod json;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionReview;
use serde::Deserialize;
use serde::de::IgnoredAny;

#[derive(Deserialize)]
struct ReviewView<'a> {
    #[serde(borrow)]
    request: Option<RequestView<'a>>,
}

#[derive(Deserialize)]
struct ResourceView<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    resource: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestView<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    resource: ResourceView<'a>,
    #[serde(borrow)]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    operation: Cow<'a, str>,
    dry_run: Option<bool>,
    #[serde(borrow)]
    object: Option<PodView<'a>>,
}

#[derive(Deserialize)]
struct PodView<'a> {
    #[serde(borrow)]
    metadata: Option<MetadataView<'a>>,
    #[serde(borrow)]
    spec: Option<SpecView<'a>>,
}

#[derive(Deserialize)]
struct MetadataView<'a> {
    #[serde(borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    labels: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    // The webhook keeps each value as raw text; counted here, as serde skips a value.
    annotations: Option<CountedMap>,
}

/// A map whose values are skipped, counted.
struct CountedMap(usize);

impl<'de> Deserialize<'de> for CountedMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CountedMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<CountedMap, A::Error> {
                let mut count = 0;
                while map.next_entry::<Cow<'de, str>, IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(CountedMap(count))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecView<'a> {
    #[serde(borrow)]
    containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow)]
    init_containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow)]
    ephemeral_containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow)]
    image_pull_secrets: Option<Vec<SecretReferenceView<'a>>>,
}

#[derive(Deserialize)]
struct ContainerView<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    image: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct SecretReferenceView<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

/// What every reader must agree on: each field the webhook's decision reads.
#[derive(Debug, PartialEq)]
struct Found {
    uid: String,
    namespace: String,
    /// A Pod CREATE (core/v1 `pods`, no subresource).
    pod_create: bool,
    dry_run: bool,
    pod_namespace: Option<String>,
    labels: Vec<(String, String)>,
    annotation_count: usize,
    /// (name, image) of the init containers, the containers and the ephemeral containers.
    containers: Vec<(Option<String>, Option<String>)>,
    pull_secrets: Vec<Option<String>>,
}

fn owned(text: Option<&str>) -> Option<String> {
    text.map(str::to_owned)
}

fn sorted_labels<'x>(labels: impl Iterator<Item = (&'x str, &'x str)>) -> Vec<(String, String)> {
    let mut labels: Vec<_> = labels.map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    labels.sort();
    labels
}

fn names_and_images<'x>(
    containers: impl Iterator<Item = (Option<&'x str>, Option<&'x str>)>,
) -> Vec<(Option<String>, Option<String>)> {
    containers
        .map(|(name, image)| (owned(name), owned(image)))
        .collect()
}

/// core/v1 `pods`, no subresource, CREATE.
fn is_pod_create(gvr: [&str; 3], sub_resource: Option<&str>, create: bool) -> bool {
    gvr == ["", "v1", "pods"] && sub_resource.unwrap_or_default().is_empty() && create
}

/// (name, image) of every container of a spec view: the bench's and the webhook's have the same
/// field names, and different types.
macro_rules! containers {
    ($spec:expr) => {
        names_and_images(
            [
                &$spec.init_containers,
                &$spec.containers,
                &$spec.ephemeral_containers,
            ]
            .into_iter()
            .flatten()
            .flatten()
            .map(|c| (c.name.as_deref(), c.image.as_deref())),
        )
    };
}

/// The Secret names of a spec view's imagePullSecrets.
macro_rules! pull_secrets {
    ($spec:expr) => {
        $spec
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| owned(s.name.as_deref()))
            .collect()
    };
}

fn found_by_view(view: &ReviewView<'_>) -> Found {
    let request = view.request.as_ref().expect("request");
    let pod = request.object.as_ref().expect("object");
    let metadata = pod.metadata.as_ref().expect("metadata");
    let spec = pod.spec.as_ref().expect("spec");
    let resource = &request.resource;
    Found {
        uid: request.uid.to_string(),
        namespace: request.namespace.as_deref().unwrap_or_default().to_owned(),
        pod_create: is_pod_create(
            [&resource.group, &resource.version, &resource.resource],
            request.sub_resource.as_deref(),
            request.operation == "CREATE",
        ),
        dry_run: request.dry_run.unwrap_or_default(),
        pod_namespace: owned(metadata.namespace.as_deref()),
        labels: sorted_labels(metadata.labels.iter().flatten().map(|(k, v)| (&**k, &**v))),
        annotation_count: metadata.annotations.as_ref().map_or(0, |a| a.0),
        containers: containers!(spec),
        pull_secrets: pull_secrets!(spec),
    }
}

fn found_by_webhook(body: &[u8]) -> Found {
    use pullsecret_injector::admission::{Target, parse_review};
    let review = parse_review(body).expect("review");
    let metadata = &review.pod.metadata;
    let spec = review.pod.spec.as_ref().expect("spec");
    Found {
        uid: review.uid.to_string(),
        namespace: review.namespace.to_string(),
        pod_create: review.target == Target::PodCreate,
        dry_run: review.dry_run,
        pod_namespace: owned(metadata.namespace.as_deref()),
        labels: sorted_labels(metadata.labels.iter().flatten().map(|(k, v)| (&**k, &**v))),
        annotation_count: metadata.annotations.as_ref().map_or(0, |a| a.len()),
        containers: containers!(spec),
        pull_secrets: pull_secrets!(spec),
    }
}

fn found_by_kube(body: &[u8]) -> Found {
    let review: AdmissionReview<Pod> = serde_json::from_slice(body).expect("review");
    let request = review.request.expect("request");
    let pod = request.object.as_ref().expect("object");
    let spec = pod.spec.as_ref().expect("spec");
    let resource = &request.resource;
    let ephemeral = spec.ephemeral_containers.iter().flatten();
    Found {
        uid: request.uid.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        pod_create: is_pod_create(
            [&resource.group, &resource.version, &resource.resource],
            request.sub_resource.as_deref(),
            request.operation == kube::core::admission::Operation::Create,
        ),
        dry_run: request.dry_run,
        pod_namespace: pod.metadata.namespace.clone(),
        labels: sorted_labels(
            pod.metadata
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        ),
        annotation_count: pod.metadata.annotations.as_ref().map_or(0, |a| a.len()),
        containers: names_and_images(
            spec.init_containers
                .iter()
                .flatten()
                .chain(&spec.containers)
                .map(|c| (Some(c.name.as_str()), c.image.as_deref()))
                .chain(ephemeral.map(|c| (Some(c.name.as_str()), c.image.as_deref()))),
        ),
        pull_secrets: spec
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| Some(s.name.clone()))
            .collect(),
    }
}

fn found_by_value(body: &[u8]) -> Found {
    use serde_json::Value;
    let value: Value = serde_json::from_slice(body).expect("review");
    let request = &value["request"];
    let pod = &request["object"];
    let spec = &pod["spec"];
    let resource = &request["resource"];
    let gvr = ["group", "version", "resource"].map(|k| resource[k].as_str().unwrap_or("?"));
    let labels = pod["metadata"]["labels"].as_object().into_iter().flatten();
    let lists = ["initContainers", "containers", "ephemeralContainers"];
    Found {
        uid: request["uid"].as_str().unwrap_or_default().to_owned(),
        namespace: request["namespace"].as_str().unwrap_or_default().to_owned(),
        pod_create: is_pod_create(
            gvr,
            request["subResource"].as_str(),
            request["operation"] == "CREATE",
        ),
        dry_run: request["dryRun"].as_bool().unwrap_or_default(),
        pod_namespace: owned(pod["metadata"]["namespace"].as_str()),
        labels: sorted_labels(labels.map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("?")))),
        annotation_count: pod["metadata"]["annotations"]
            .as_object()
            .map_or(0, |a| a.len()),
        containers: names_and_images(
            lists
                .into_iter()
                .filter_map(|list| spec[list].as_array())
                .flatten()
                .map(|c| (c["name"].as_str(), c["image"].as_str())),
        ),
        pull_secrets: spec["imagePullSecrets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| owned(s["name"].as_str()))
            .collect(),
    }
}

/// Reads a body and drops what it read.
type Read = fn(&[u8]);

/// Each reader as the bench runs it.
const READERS: [(&str, Read); 5] = [
    ("pullsecret_injector", |body| {
        black_box(pullsecret_injector::admission::parse_review(body).expect("review"));
    }),
    ("serde_json_view", |body| {
        black_box(serde_json::from_slice::<ReviewView>(body).expect("review"));
    }),
    ("sonic_rs_view", |body| {
        black_box(sonic_rs::from_slice::<ReviewView>(body).expect("review"));
    }),
    ("kube_typed_pod", |body| {
        black_box(serde_json::from_slice::<AdmissionReview<Pod>>(body).expect("review"));
    }),
    ("serde_json_value", |body| {
        black_box(serde_json::from_slice::<serde_json::Value>(body).expect("review"));
    }),
];

fn main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission-reviews/pod-create-direct.json");
    let pretty = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let body = json::compact(&pretty);

    let expected = found_by_webhook(&body);
    assert!(expected.pod_create, "a Pod CREATE");
    assert!(!expected.containers.is_empty(), "the review has containers");
    let serde_view: ReviewView = serde_json::from_slice(&body).expect("serde_json view");
    assert_eq!(found_by_view(&serde_view), expected, "serde_json view");
    let sonic_view: ReviewView = sonic_rs::from_slice(&body).expect("sonic-rs view");
    assert_eq!(found_by_view(&sonic_view), expected, "sonic-rs view");
    assert_eq!(found_by_kube(&body), expected, "kube typed Pod");
    assert_eq!(found_by_value(&body), expected, "serde_json Value");
    println!(
        "review: {} bytes compact, {} containers; every reader finds the same fields\n",
        body.len(),
        expected.containers.len()
    );

    if let Some(iterations) = std::env::var("BENCH_LOOP")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        let case = std::env::var("BENCH_CASE").unwrap_or_else(|_| READERS[0].0.to_owned());
        let (_, read) = READERS
            .iter()
            .find(|(name, _)| *name == case)
            .unwrap_or_else(|| panic!("unknown BENCH_CASE {case:?}"));
        for _ in 0..iterations {
            read(black_box(&body));
        }
        return;
    }

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(60)
        .configure_from_args();
    let mut group = criterion.benchmark_group("readers");
    group.throughput(Throughput::Elements(1));
    for (name, read) in READERS {
        group.bench_function(name, |b| b.iter(|| read(black_box(&body))));
    }
    group.finish();
    criterion.final_summary();
}
