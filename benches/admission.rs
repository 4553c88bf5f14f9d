//! The pure admission path, timed with criterion: `admission::parse_review` + `admission::answer`
//! (with `pull_secret::ReferenceOnly`, whose future is immediately ready) up to the serialized
//! AdmissionReview response bytes, for
//!
//! - a typical Pod CREATE: `tests/fixtures/admission-reviews/pod-create-direct.json` with a third
//!   container added (3 containers, 1 init container), compacted as the API server sends it (~4.6 KB);
//! - the same Pod with every image on Docker Hub (no registry matches: no patch);
//! - the same Pod in a skipped namespace, and opted out by label;
//! - Pods with 1, 10 and 100 containers (scaling);
//! - `reference::ImageReference::parse` + `HostPattern::matches` for a handful of images.
//!
//! A counting global allocator reports allocations (and bytes) per review before criterion runs.
//!
//! ```sh
//! cargo bench --bench admission                  # everything
//! cargo bench --bench admission -- typical       # one group / filter
//! bash benches/instructions.sh                   # instructions per review (callgrind), noise-free
//! ```

#[path = "support/json.rs"]
mod json;
use json::compact;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use pullsecret_injector::admission::{self, Outcome};
use pullsecret_injector::config::Config;
use pullsecret_injector::image_matches;
use pullsecret_injector::pull_secret::ReferenceOnly;
use pullsecret_injector::reference::ImageReference;

// ---------------------------------------------------------------------------------------------
// Counting allocator: counts only while COUNTING is set, so criterion's own work is not counted
// and the timed runs pay one relaxed load per allocation.
// ---------------------------------------------------------------------------------------------

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            REALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(
                new_size.saturating_sub(layout.size()) as u64,
                Ordering::Relaxed,
            );
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Debug, Clone, Copy)]
struct AllocCount {
    allocs: f64,
    reallocs: f64,
    bytes: f64,
}

/// Average allocations of `f` over `runs` calls (after one uncounted warm-up call).
fn count_allocs(runs: u64, mut f: impl FnMut()) -> AllocCount {
    f();
    ALLOCS.store(0, Ordering::SeqCst);
    REALLOCS.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..runs {
        f();
    }
    COUNTING.store(false, Ordering::SeqCst);
    let n = runs as f64;
    AllocCount {
        allocs: ALLOCS.load(Ordering::SeqCst) as f64 / n,
        reallocs: REALLOCS.load(Ordering::SeqCst) as f64 / n,
        bytes: BYTES.load(Ordering::SeqCst) as f64 / n,
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

const CONFIG: &str = "\
registries:
  - name: gcp
    preset: gcp
    secretName: gcr-pull
skipNamespaces: [kube-system, kube-node-lease]
";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission-reviews")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Byte range of the JSON array value that follows `key` (`"containers":[ ... ]`), brackets included.
fn array_range(json: &[u8], key: &str) -> std::ops::Range<usize> {
    let needle = format!("\"{key}\":[");
    let start = json
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("no {needle} in the fixture"))
        + needle.len()
        - 1;
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in json.iter().enumerate().skip(start) {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return start..i + 1;
                }
            }
            _ => {}
        }
    }
    panic!("unterminated array {key}");
}

fn replace_range(json: &[u8], range: std::ops::Range<usize>, with: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + with.len());
    out.extend_from_slice(&json[..range.start]);
    out.extend_from_slice(with.as_bytes());
    out.extend_from_slice(&json[range.end..]);
    out
}

/// A container as the API server sends it after defaulting (same fields as the fixture's).
fn container(name: &str, image: &str) -> String {
    format!(
        r#"{{"name":"{name}","image":"{image}","resources":{{}},"volumeMounts":[{{"name":"kube-api-access-fz4qd","readOnly":true,"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}}],"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}}"#
    )
}

fn containers(list: &[(String, String)]) -> String {
    let items: Vec<String> = list.iter().map(|(n, i)| container(n, i)).collect();
    format!("[{}]", items.join(","))
}

/// Images cycled through by the scaling cases: two private registries, Docker Hub, quay.io.
fn scaling_image(i: usize) -> String {
    match i % 4 {
        0 => format!("eu.gcr.io/acme-prod/svc-{i}:1.{i}"),
        1 => "nginx:1.27".to_owned(),
        2 => format!("europe-west1-docker.pkg.dev/acme-prod/apps/svc-{i}:2.{i}"),
        _ => "quay.io/prometheus/node-exporter:v1.8.2".to_owned(),
    }
}

struct Inputs {
    /// 3 containers + 1 init container, patched.
    typical: Vec<u8>,
    /// Same shape, every image on docker.io: examined, unchanged.
    no_match: Vec<u8>,
    /// Same Pod in kube-system: skipped.
    skip_namespace: Vec<u8>,
    /// Same Pod with the opt-out label: skipped.
    skip_label: Vec<u8>,
    /// (containers, body): 1 init container + N containers.
    scaling: Vec<(usize, Vec<u8>)>,
}

fn inputs() -> Inputs {
    let base = compact(&fixture("pod-create-direct.json"));
    let range = array_range(&base, "containers");
    let typical_list = vec![
        (
            "api".to_owned(),
            "eu.gcr.io/acme-prod/api@sha256:4b6e0d4f5f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f".to_owned(),
        ),
        ("proxy".to_owned(), "nginx:1.27".to_owned()),
        (
            "log-shipper".to_owned(),
            "us-docker.pkg.dev/acme-prod/infra/log-shipper:3.1.0".to_owned(),
        ),
    ];
    let typical = replace_range(&base, range.clone(), &containers(&typical_list));

    let hub_list = vec![
        ("api".to_owned(), "acme/api:2.4.1".to_owned()),
        ("proxy".to_owned(), "nginx:1.27".to_owned()),
        (
            "log-shipper".to_owned(),
            "docker.io/fluent/fluent-bit:3.1".to_owned(),
        ),
    ];
    let no_match = replace_range(&base, range.clone(), &containers(&hub_list));
    let no_match = {
        let init = array_range(&no_match, "initContainers");
        replace_range(
            &no_match,
            init,
            &containers(&[("migrate".to_owned(), "library/busybox:1.36".to_owned())]),
        )
    };

    let skip_namespace = String::from_utf8(typical.clone())
        .expect("utf8")
        .replace(r#""namespace":"team-a""#, r#""namespace":"kube-system""#)
        .into_bytes();
    let skip_label = String::from_utf8(typical.clone())
        .expect("utf8")
        .replacen(
            r#""labels":{"app":"api"}"#,
            r#""labels":{"app":"api","pullsecret-injector.io/skip":"true"}"#,
            1,
        )
        .into_bytes();

    let scaling = [1usize, 10, 100]
        .into_iter()
        .map(|n| {
            let list: Vec<(String, String)> = (0..n)
                .map(|i| (format!("c{i}"), scaling_image(i)))
                .collect();
            (n, replace_range(&base, range.clone(), &containers(&list)))
        })
        .collect();

    Inputs {
        typical,
        no_match,
        skip_namespace,
        skip_label,
        scaling,
    }
}

// ---------------------------------------------------------------------------------------------
// The measured path
// ---------------------------------------------------------------------------------------------

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));

/// What the webhook does per request between the body and the response body.
#[inline(never)]
fn review(body: &[u8], config: &Config) -> (Vec<u8>, Outcome) {
    let review = admission::parse_review(body).expect("valid review");
    let answer =
        futures::executor::block_on(admission::answer(&review, config, &ReferenceOnly, TIMEOUT));
    (answer.body, answer.outcome)
}

fn check_outcomes(inputs: &Inputs, config: &Config) {
    let expect = |name: &str, body: &[u8], outcome: Outcome| {
        let (response, got) = review(body, config);
        assert_eq!(got, outcome, "{name}");
        let value: serde_json::Value = serde_json::from_slice(&response).expect("response json");
        assert_eq!(value["response"]["allowed"], true, "{name}");
    };
    expect("typical", &inputs.typical, Outcome::Patched);
    expect("no_match", &inputs.no_match, Outcome::Unchanged);
    expect("skip_namespace", &inputs.skip_namespace, Outcome::Skipped);
    expect("skip_label", &inputs.skip_label, Outcome::Skipped);
    for (n, body) in &inputs.scaling {
        expect(&format!("{n} containers"), body, Outcome::Patched);
    }
}

fn report_allocations(inputs: &Inputs, config: &Config) {
    println!("allocations per review (parse_review + answer + serialized response; mean of 1000)");
    println!(
        "  {:<34} {:>8} {:>8} {:>10} {:>10}",
        "case", "body B", "allocs", "reallocs", "bytes"
    );
    let row = |name: &str, body: &[u8]| {
        let count = count_allocs(1000, || {
            black_box(review(black_box(body), config));
        });
        println!(
            "  {:<34} {:>8} {:>8.1} {:>10.1} {:>10.0}",
            name,
            body.len(),
            count.allocs,
            count.reallocs,
            count.bytes
        );
    };
    row("typical (3 containers + 1 init)", &inputs.typical);
    row("no match (all docker.io)", &inputs.no_match);
    row("skip (namespace kube-system)", &inputs.skip_namespace);
    row("skip (opt-out label)", &inputs.skip_label);
    for (n, body) in &inputs.scaling {
        row(&format!("{n} containers + 1 init"), body);
    }
    // Breakdown of the typical case.
    let parse = count_allocs(1000, || {
        black_box(admission::parse_review(black_box(&inputs.typical)).expect("review"));
    });
    let parsed = admission::parse_review(&inputs.typical).expect("review");
    let answer = count_allocs(1000, || {
        black_box(futures::executor::block_on(admission::answer(
            &parsed,
            config,
            &ReferenceOnly,
            TIMEOUT,
        )));
    });
    println!(
        "  typical breakdown: parse_review {:.1} allocs ({:.0} B), answer {:.1} allocs + {:.1} reallocs ({:.0} B)",
        parse.allocs + parse.reallocs,
        parse.bytes,
        answer.allocs,
        answer.reallocs,
        answer.bytes
    );
    println!();
}

// ---------------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------------

fn bench_admission(c: &mut Criterion, inputs: &Inputs, config: &Config) {
    let mut group = c.benchmark_group("admission");
    let cases: [(&str, &[u8]); 4] = [
        ("typical_pod_create", &inputs.typical),
        ("no_match_docker_hub", &inputs.no_match),
        ("skip_namespace", &inputs.skip_namespace),
        ("skip_opt_out_label", &inputs.skip_label),
    ];
    for (name, body) in cases {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| b.iter(|| review(black_box(body), config)));
    }
    // The typical case with no image seen before: each review starts with an empty memo of
    // image matches, as the first review of each new image does.
    group.bench_function("typical_pod_create_images_unseen", |b| {
        b.iter(|| {
            image_matches::forget_on_this_thread();
            review(black_box(&inputs.typical), config)
        })
    });
    // Breakdown of the typical case.
    group.bench_function("typical_parse_review_only", |b| {
        b.iter(|| admission::parse_review(black_box(&inputs.typical)).expect("review"))
    });
    let parsed = admission::parse_review(&inputs.typical).expect("review");
    group.bench_function("typical_answer_only", |b| {
        b.iter(|| {
            futures::executor::block_on(admission::answer(
                black_box(&parsed),
                config,
                &ReferenceOnly,
                TIMEOUT,
            ))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("containers");
    for (n, body) in &inputs.scaling {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(n), body, |b, body| {
            b.iter(|| review(black_box(body), config))
        });
    }
    group.finish();
}

const IMAGES: [&str; 6] = [
    "eu.gcr.io/acme-prod/api@sha256:4b6e0d4f5f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f",
    "europe-west1-docker.pkg.dev/acme-prod/apps/migrate:2.4.1",
    "docker.europe-west1.rep.pkg.dev/acme-prod/apps/web:3",
    "nginx:1.27",
    "quay.io/prometheus/node-exporter:v1.8.2",
    "registry.example.com:5000/team/app:1.0",
];

/// Parses the image and asks every host pattern of the config, as `decision::decide` does.
fn parse_and_match(image: &str, config: &Config) -> usize {
    let reference = ImageReference::parse(image).expect("valid image");
    config
        .registries
        .iter()
        .flat_map(|r| r.hosts.iter())
        .filter(|p| p.matches(&reference))
        .count()
}

fn bench_reference(c: &mut Criterion, config: &Config) {
    let mut group = c.benchmark_group("reference");
    for image in IMAGES {
        let label = image.split(['@', ':']).next().unwrap_or(image);
        group.bench_with_input(
            BenchmarkId::new("parse_and_match", label),
            image,
            |b, image| b.iter(|| parse_and_match(black_box(image), config)),
        );
    }
    group.bench_function("parse_and_match_all_6", |b| {
        b.iter(|| {
            IMAGES
                .iter()
                .map(|image| parse_and_match(black_box(image), config))
                .sum::<usize>()
        })
    });
    group.finish();
}

/// `BENCH_LOOP=N [BENCH_CASE=name]`: run one case N times and exit, without criterion, for
/// instruction counts under `valgrind --tool=callgrind` (see benches/instructions.sh).
fn plain_loop(iterations: usize, inputs: &Inputs, config: &Config) {
    let case = std::env::var("BENCH_CASE").unwrap_or_else(|_| "typical".into());
    let forget = case == "typical_images_unseen";
    let body: &[u8] = match case.as_str() {
        "typical" | "typical_images_unseen" => &inputs.typical,
        "no_match" => &inputs.no_match,
        "skip_namespace" => &inputs.skip_namespace,
        "skip_label" => &inputs.skip_label,
        "containers_1" => &inputs.scaling[0].1,
        "containers_10" => &inputs.scaling[1].1,
        "containers_100" => &inputs.scaling[2].1,
        other => panic!("unknown BENCH_CASE {other:?}"),
    };
    for _ in 0..iterations {
        if forget {
            image_matches::forget_on_this_thread();
        }
        black_box(review(black_box(body), config));
    }
}

fn main() {
    let config = Config::from_yaml_str(CONFIG).expect("config");
    let inputs = inputs();
    if let Some(iterations) = std::env::var("BENCH_LOOP")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        plain_loop(iterations, &inputs, &config);
        return;
    }
    check_outcomes(&inputs, &config);
    report_allocations(&inputs, &config);
    let alloc = count_allocs(1000, || {
        for image in IMAGES {
            black_box(parse_and_match(black_box(image), &config));
        }
    });
    println!(
        "reference: parse + match of the 6 images: {:.1} allocations in all\n",
        alloc.allocs + alloc.reallocs
    );

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(60)
        .configure_from_args();
    bench_admission(&mut criterion, &inputs, &config);
    bench_reference(&mut criterion, &config);
    criterion.final_summary();
}
