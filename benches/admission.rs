//! The admission path in-process, timed with criterion: a review body in, the serialized
//! AdmissionReview response out (`admission::review` + `Answer::to_json`, with `ReferenceOnly`,
//! whose answer is immediate), for
//!
//! - a typical Pod CREATE (`tests/fixtures/admission-reviews/pod-create-direct.json`, ~4 KB);
//! - the same Pod with every image on Docker Hub (no registry matches: no patch);
//! - Pods with 1, 10 and 100 containers.
//!
//! ```sh
//! cargo bench --profile dist --bench admission
//! ```

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput};
use pullsecret_injector::admission;
use pullsecret_injector::config::Config;
use pullsecret_injector::provisioning::ReferenceOnly;
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission-reviews")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
}

fn with_images(review: &Value, images: &[&str]) -> Vec<u8> {
    let mut review = review.clone();
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    review["request"]["object"]["spec"]["containers"] = Value::Array(containers);
    review["request"]["object"]["spec"]
        .as_object_mut()
        .map(|spec| spec.remove("initContainers"));
    serde_json::to_vec(&review).expect("json")
}

fn answer(config: &Config, body: &[u8]) -> Vec<u8> {
    let answer = futures::executor::block_on(admission::review(body, config, &ReferenceOnly, None))
        .expect("valid review");
    answer.to_json()
}

fn benches(c: &mut Criterion) {
    let config =
        Config::from_yaml_str("registries:\n- {name: gcp, preset: gcp, secretName: gcr-pull}\n")
            .expect("config");
    let direct = fixture("pod-create-direct.json");
    let typical = serde_json::to_vec(&direct).expect("json");
    let no_match = with_images(&direct, &["nginx:1.27", "redis:7", "busybox"]);

    let mut group = c.benchmark_group("admission");
    group.throughput(Throughput::Elements(1));
    group.bench_function("typical_pod_create", |b| {
        b.iter(|| answer(&config, black_box(&typical)))
    });
    group.bench_function("no_match", |b| {
        b.iter(|| answer(&config, black_box(&no_match)))
    });
    for count in [1, 10, 100] {
        let images: Vec<&str> = (0..count)
            .map(|i| {
                if i % 2 == 0 {
                    "europe-west1-docker.pkg.dev/acme/apps/api:1.8.0"
                } else {
                    "nginx:1.27"
                }
            })
            .collect();
        let body = with_images(&direct, &images);
        group.bench_with_input(BenchmarkId::new("containers", count), &body, |b, body| {
            b.iter(|| answer(&config, black_box(body)))
        });
    }
    group.finish();
}

criterion::criterion_group!(admission_benches, benches);
criterion::criterion_main!(admission_benches);
