//! Bytes → `admission::review` with `ReferenceOnly` and a fixed config. Properties checked on every
//! input:
//! - it never panics (libFuzzer also catches hangs and OOM);
//! - an answer is a JSON AdmissionReview `admission.k8s.io/v1` whose `response.uid` is the request's;
//!   a patch, when present, applies to the request's `object` as the API server applies it, and
//!   leaves `spec.imagePullSecrets` an array (when the body reads as a `serde_json::Value`);
//! - a body that serde_json reads as a stock `AdmissionReview<Pod>` (kube's and k8s-openapi's types)
//!   is never refused as malformed or as an unreadable Pod. Refusals the webhook makes on purpose
//!   stay allowed: a namespace or Pod name the API server would never send, and a field given twice
//!   (serde refuses it in the fields the webhook reads; the stock types take the last value).
#![no_main]

use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionReview;
use libfuzzer_sys::fuzz_target;
use pullsecret_injector::admission::{self, AdmissionError};
use pullsecret_injector::config::Config;
use pullsecret_injector::provisioning::ReferenceOnly;

/// Several registries so the matcher takes every path: a preset, a port, a path prefix, Docker
/// Hub's keyring key, an IPv4 host; plus a skipped namespace and the default opt-out keys.
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
    let result = futures::executor::block_on(admission::review(data, config(), &ReferenceOnly, None));
    let answer = match result {
        Ok(answer) => answer,
        Err(error) => {
            let deliberate = match &error {
                AdmissionError::Malformed(message) | AdmissionError::InvalidPod(message) => {
                    message.contains("duplicate field")
                }
                _ => true,
            };
            // CORPUS_MIN=1 leaves the oracle out, so that `-merge=1` keeps the inputs for the
            // webhook's own coverage, not for the stock types' much larger deserializers.
            if !deliberate && std::env::var_os("CORPUS_MIN").is_none() {
                assert!(
                    serde_json::from_slice::<AdmissionReview<Pod>>(data).is_err(),
                    "the stock types read a body the webhook refused: {error}"
                );
            }
            return;
        }
    };
    let response: serde_json::Value =
        serde_json::from_slice(&answer.to_json()).expect("the answer is JSON");
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(response["response"]["uid"], answer.uid.as_str());
    assert!(response["response"]["allowed"].is_boolean());
    // serde_json reads an answered body as a Value too, unless a string the webhook skipped holds
    // invalid UTF-8 (which serde does not check in strings it skips, and Go would replace).
    if let (Some(patch), Ok(request)) = (&answer.patch, serde_json::from_slice::<serde_json::Value>(data)) {
        let mut object = request["request"]["object"].clone();
        json_patch::patch(&mut object, patch).expect("the patch applies to the object");
        assert!(object["spec"]["imagePullSecrets"].is_array());
    }
});
