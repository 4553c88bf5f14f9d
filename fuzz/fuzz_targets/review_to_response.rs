//! Bytes → `admission::parse_review` → (if Ok) `admission::answer` with `ReferenceOnly` and a fixed
//! config. Properties checked on every input:
//! - neither step panics (libFuzzer also catches hangs, OOM and, with ASan, memory errors);
//! - the answer is a JSON AdmissionReview `admission.k8s.io/v1` whose `response.uid` is the request's
//!   uid, `allowed` is a bool;
//! - a `patch`, when present, is base64 of an RFC 6902 patch with `patchType: JSONPatch`, and it
//!   applies (json_patch) to the request's `object`, as the API server would apply it; afterwards
//!   `spec.imagePullSecrets` is an array;
//! - the Pod view read by the webhook's own JSON reader holds the same images and pull Secret names
//!   as serde_json's reading of the same body (when serde_json accepts it);
//! - what the per-thread memo answers for each image (`image_matches::with_matches`, filled by all
//!   the inputs before) is what `image_matches::classify` computes afresh;
//! - the answer, whose end may come from the per-thread memo of patched answers
//!   (`answer_tails`, filled by all the inputs before), is the answer made without that memo.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use pullsecret_injector::admission::{self, Target};
use pullsecret_injector::answer_tails;
use pullsecret_injector::config::Config;
use pullsecret_injector::image_matches;
use pullsecret_injector::provisioning::ReferenceOnly;

/// Several registries so the matcher takes every path: a preset, a port, a path prefix, Docker Hub's
/// keyring key, an IPv4 host; plus a skipped namespace and the default opt-out keys.
const CONFIG: &str = r#"
registries:
  - {name: gcp, preset: gcp, secretName: gcr-pull}
  - {name: corp, hosts: ["registry.corp.example:5000", "*.corp.example/team"], secretName: corp-pull}
  - {name: hub, hosts: ["index.docker.io"], secretName: hub-pull}
  - {name: lan, hosts: ["10.0.0.1:5000", "localhost:5000"], secretName: lan-pull}
skipNamespaces: [kube-system]
"#;

fn config() -> &'static Config {
    static CONFIG_CELL: OnceLock<Config> = OnceLock::new();
    CONFIG_CELL.get_or_init(|| Config::from_yaml_str(CONFIG).expect("fuzz config is valid"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(review) = admission::parse_review(data) else {
        return;
    };
    if review.target == Target::PodCreate
        && let Ok(request) = serde_json::from_slice::<serde_json::Value>(data)
    {
        let spec = &request["request"]["object"]["spec"];
        let general = |list: &str, field: &str| -> Vec<Option<String>> {
            spec[list]
                .as_array()
                .map(|items| items.iter().map(|c| c[field].as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let view = review.pod.spec.as_ref();
        let ours = |list: Option<&pullsecret_injector::decision::List<pullsecret_injector::decision::ContainerView<'_>>>| {
            list.into_iter()
                .flatten()
                .map(|c| c.image.as_deref().map(str::to_owned))
                .collect::<Vec<_>>()
        };
        assert_eq!(ours(view.and_then(|s| s.containers.as_ref())), general("containers", "image"));
        assert_eq!(
            ours(view.and_then(|s| s.init_containers.as_ref())),
            general("initContainers", "image")
        );
        let secrets: Vec<Option<String>> = view
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
            .map(|r| r.name.as_deref().map(str::to_owned))
            .collect();
        assert_eq!(secrets, general("imagePullSecrets", "name"));
    }
    let images = review.pod.spec.iter().flat_map(|spec| {
        [&spec.containers, &spec.init_containers, &spec.ephemeral_containers]
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|c| c.image.as_deref())
    });
    for image in images {
        assert_eq!(
            image_matches::with_matches(config(), image, |found| found.cloned()),
            image_matches::classify(config(), image),
            "the remembered matches of {image:?}"
        );
    }
    let answer = futures::executor::block_on(admission::answer(
        &review,
        config(),
        &ReferenceOnly,
        None,
    ));
    let afresh = answer_tails::without_memo(|| {
        futures::executor::block_on(admission::answer(
            &review,
            config(),
            &ReferenceOnly,
            None,
        ))
    });
    assert_eq!(
        String::from_utf8_lossy(&answer.body),
        String::from_utf8_lossy(&afresh.body),
        "the remembered answer is the one made afresh"
    );
    assert_eq!(answer.warnings, afresh.warnings);
    let response: serde_json::Value =
        serde_json::from_slice(&answer.body).expect("the answer is JSON");
    assert_eq!(response["apiVersion"], admission::API_VERSION);
    assert_eq!(response["kind"], admission::KIND);
    assert_eq!(
        response["response"]["uid"].as_str(),
        Some(&*review.uid),
        "uid is echoed"
    );
    assert!(response["response"]["allowed"].is_boolean());

    let Some(patch) = response["response"].get("patch") else {
        assert!(response["response"].get("patchType").is_none());
        return;
    };
    assert_eq!(review.target, Target::PodCreate, "only Pod CREATE is patched");
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().expect("patch is a string"))
        .expect("patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("patch is RFC 6902");
    // parse_review skips the parts of the body it does not need without validating them (invalid
    // UTF-8 inside an ignored string, for instance), so serde_json::Value can refuse a body it
    // accepted. The API server only sends valid JSON (Go's encoder), so such a body has no object the
    // API server would patch: nothing to check.
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let mut object = request["request"]["object"].clone();
    if let Err(error) = json_patch::patch(&mut object, &patch) {
        panic!(
            "patch does not apply to the request's object: {error}\npatch: {}\nobject: {object}",
            String::from_utf8_lossy(&bytes)
        );
    }
    assert!(
        object["spec"]["imagePullSecrets"].is_array(),
        "imagePullSecrets is an array after the patch: {object}"
    );
});
