//! Hostile and malformed input against the in-process webhook over real TLS.
//!
//! One table of named cases, each a raw HTTP/1.x byte stream (so that requests no well-behaved client
//! would send can be sent) with the answer it must get: a well-formed `admission.k8s.io/v1`
//! AdmissionReview echoing the uid (200), or a specific 4xx. Every case is answered within a generous
//! bound (it only stops a hang), and after every case the server still answers a valid review on a
//! new connection. Protocol-level abuse that has no answer (slow headers, a stalled TLS handshake,
//! plain HTTP on the TLS port, abandoned connections) and a memory bound are separate tests below.
//!
//! The tests of this file run one at a time (`SERIAL`): the memory test reads this process's RSS,
//! which the other tests' servers would disturb.

mod support;

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use pullsecret_injector::provisioning::ReferenceOnly;
use pullsecret_injector::serving::ServerOptions;
use serde_json::{Value, json};
use support::load::{
    End, RawOutcome, chunked, http_request, parse_responses, raw_exchange, review_request,
    well_formed_review,
};
use support::{GCP_CONFIG, TestOptions, TestServer, fixture};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Only stops a hang: no case needs more than a fraction of it.
const BOUND: Duration = Duration::from_secs(30);
/// The body limit of the "small" server, for the at/over-the-limit cases.
const SMALL_LIMIT: usize = 64 * 1024;
/// Short timeouts for the tests about them, so that they finish quickly.
const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(500);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// The others get timeouts no stall of a loaded two-core machine reaches: their clients send the
/// request right after the handshake, and the test is not about how fast.
const RELAXED_TIMEOUT: Duration = Duration::from_secs(5);

static SERIAL: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

fn server_options() -> ServerOptions {
    ServerOptions {
        header_read_timeout: RELAXED_TIMEOUT,
        handshake_timeout: RELAXED_TIMEOUT,
        ..ServerOptions::default()
    }
}

/// Short header-read and handshake timeouts, for the tests that are about them.
fn short_timeouts() -> ServerOptions {
    ServerOptions {
        header_read_timeout: HEADER_READ_TIMEOUT,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        ..ServerOptions::default()
    }
}

async fn start(max_body_bytes: Option<usize>, server: ServerOptions) -> TestServer {
    TestServer::start_with(TestOptions {
        server,
        max_body_bytes,
        ..TestOptions::new(GCP_CONFIG, Arc::new(ReferenceOnly))
    })
    .await
}

/// The server still answers a valid review, on a new connection. Up to three connections are
/// tried: with the short timeouts, a stall of the test's own client between handshake and request
/// can make the server close a connection, which is not what is being checked here.
async fn assert_still_serving(server: &TestServer, after: &str) {
    let mut problems = Vec::new();
    for _ in 0..3 {
        let attempt = tokio::time::timeout(BOUND, async {
            let mut conn = server.client.connect().await.map_err(|e| e.to_string())?;
            conn.send(
                "POST",
                "/mutate?timeout=10s",
                Some("application/json"),
                fixture("pod-create-direct.json"),
            )
            .await
            .map_err(|e| format!("{e:?}"))
        })
        .await;
        match attempt {
            Err(_) => panic!("after {after}: no answer to a valid review within {BOUND:?}"),
            Ok(Err(problem)) => problems.push(problem),
            Ok(Ok(reply)) => {
                assert_eq!(reply.status, 200, "after {after}: {}", reply.text());
                assert_eq!(reply.json()["response"]["uid"], VALID_UID, "after {after}");
                return;
            }
        }
    }
    panic!("after {after}: three connections failed: {problems:?}");
}

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------

const VALID_UID: &str = "a13b6339-ef9b-4c25-9cf4-3327c98a8ae8";

fn valid() -> Vec<u8> {
    fixture("pod-create-direct.json")
}

fn envelope(request: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

fn pod_request(uid: Value, object: Value) -> Value {
    json!({
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "team-a",
        "operation": "CREATE",
        "object": object,
    })
}

fn pod_with_images(images: &[&str]) -> Value {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
}

fn pod_review(uid: &str, images: &[&str]) -> Vec<u8> {
    to_vec(&envelope(pod_request(uid.into(), pod_with_images(images))))
}

fn to_vec(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("json")
}

/// The valid fixture with `from` replaced by `to` (once, must be present).
fn valid_with(from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(valid()).expect("utf8");
    assert!(text.contains(from), "fixture lacks {from:?}");
    text.replacen(from, to, 1).into_bytes()
}

/// A pod review whose JSON text has `insert` spliced in right after `"request": {`, so that raw
/// (not re-serialized) JSON can be placed in the request.
fn splice_request(uid: &str, insert: &str) -> Vec<u8> {
    let text = String::from_utf8(pod_review(uid, &["gcr.io/acme/app:1"])).expect("utf8");
    text.replacen("\"request\":{", &format!("\"request\":{{{insert},"), 1)
        .into_bytes()
}

fn nested(open: &str, close: &str, depth: usize, inner: &str) -> String {
    let mut text = String::with_capacity(depth * (open.len() + close.len()) + inner.len());
    for _ in 0..depth {
        text.push_str(open);
    }
    text.push_str(inner);
    for _ in 0..depth {
        text.push_str(close);
    }
    text
}

/// A gzip member of `data` using stored (uncompressed) deflate blocks: real gzip, no dependency.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let chunks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = u8::from(i + 1 == chunks.len());
        let len = chunk.len() as u16;
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn with_content_type(content_type: &str, body: &[u8]) -> Vec<u8> {
    http_request(
        "POST",
        "/mutate?timeout=10s",
        &[("Content-Type", content_type)],
        body,
    )
}

fn with_headers(headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    http_request("POST", "/mutate?timeout=10s", &all, body)
}

// ---------------------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------------------

type Check = fn(&Value) -> Result<(), String>;

enum Expect {
    /// 200, `application/json`, a well-formed review echoing this uid, and `check` holds.
    Review(Value, Check),
    /// Several requests on one connection: one such answer each, in order.
    Reviews(Vec<Value>),
    /// This status, and the body contains the text.
    Status(u16, &'static str),
}

fn allowed_unchanged(response: &Value) -> Result<(), String> {
    let r = &response["response"];
    (r["allowed"] == true && r.get("patch").is_none())
        .then_some(())
        .ok_or_else(|| format!("expected allowed without a patch: {response}"))
}

fn patched(response: &Value) -> Result<(), String> {
    let r = &response["response"];
    (r["allowed"] == true && r["patchType"] == "JSONPatch")
        .then_some(())
        .ok_or_else(|| format!("expected a patch: {response}"))
}

fn warns_invalid_image(response: &Value) -> Result<(), String> {
    let warnings = response["response"]["warnings"]
        .as_array()
        .ok_or_else(|| format!("no warnings: {response}"))?;
    if !warnings.iter().all(|w| {
        w.as_str()
            .is_some_and(|w| w.chars().count() <= 120 && w.starts_with("pullsecret-injector: "))
    }) {
        return Err(format!("warnings are not short strings: {warnings:?}"));
    }
    // "container \"c0\": image \"...\" is not a valid reference (...)", cut at 120 characters
    // (so a long image leaves only the start).
    warnings
        .iter()
        .any(|w| {
            w.as_str()
                .unwrap_or("")
                .starts_with("pullsecret-injector: container \"c")
                && w.as_str().unwrap_or("").contains("\": image \"")
        })
        .then_some(())
        .ok_or_else(|| format!("no invalid-image warning: {warnings:?}"))?;
    allowed_unchanged(response)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Srv {
    /// Default body limit (4 MiB).
    Default,
    /// `max_body_bytes` = SMALL_LIMIT.
    Small,
}

struct Case {
    name: String,
    server: Srv,
    request: Vec<u8>,
    expect: Expect,
}

fn case(name: &str, server: Srv, request: Vec<u8>, expect: Expect) -> Case {
    Case {
        name: name.to_owned(),
        server,
        request,
        expect,
    }
}

fn review_case(name: &str, body: Vec<u8>, expect: Expect) -> Case {
    case(name, Srv::Default, review_request(&body), expect)
}

fn bad(name: &str, body: Vec<u8>, status: u16, needle: &'static str) -> Case {
    review_case(name, body, Expect::Status(status, needle))
}

fn good(name: &str, body: Vec<u8>, uid: &str, check: Check) -> Case {
    review_case(name, body, Expect::Review(Value::from(uid), check))
}

const NOT_A_REVIEW: &str = "not an AdmissionReview";
const BAD_POD: &str = "the Pod in the AdmissionReview cannot be read";

fn cases() -> Vec<Case> {
    let valid = valid();
    let n = valid.len();
    let mut cases = vec![
        // --- Truncated and empty bodies
        bad("truncated after 1 byte", valid[..1].to_vec(), 400, NOT_A_REVIEW),
        bad("truncated at 10 %", valid[..n / 10].to_vec(), 400, NOT_A_REVIEW),
        bad("truncated at 50 %", valid[..n / 2].to_vec(), 400, NOT_A_REVIEW),
        bad("truncated at 90 %", valid[..n * 9 / 10].to_vec(), 400, NOT_A_REVIEW),
        bad("truncated by the last byte", valid[..n - 1].to_vec(), 400, NOT_A_REVIEW),
        bad("empty body", Vec::new(), 400, NOT_A_REVIEW),
        bad("JSON null", b"null".to_vec(), 400, NOT_A_REVIEW),
        bad("a JSON array", b"[1,2,3]".to_vec(), 400, NOT_A_REVIEW),
        // --- Size limits
        case(
            "10 MB body (default 4 MiB limit)",
            Srv::Default,
            review_request(&vec![b' '; 10 * 1024 * 1024]),
            Expect::Status(413, "length limit"),
        ),
        case(
            "body exactly at the limit",
            Srv::Small,
            review_request(&padded(&valid, SMALL_LIMIT)),
            Expect::Review(VALID_UID.into(), patched),
        ),
        case(
            "body one byte over the limit",
            Srv::Small,
            review_request(&padded(&valid, SMALL_LIMIT + 1)),
            Expect::Status(413, "length limit"),
        ),
        case(
            "chunked body over the limit (no Content-Length)",
            Srv::Small,
            http_request(
                "POST",
                "/mutate?timeout=10s",
                &[
                    ("Content-Type", "application/json"),
                    ("Transfer-Encoding", "chunked"),
                ],
                &chunked(&padded(&valid, SMALL_LIMIT + 1), 8192),
            ),
            Expect::Status(413, "length limit"),
        ),
        // --- Deep nesting: the reader checks every value's grammar in a flat loop (a bit stack, no
        // recursion), whether the value is read or skipped; never a stack overflow.
        bad(
            "100k nested arrays as the body",
            nested("[", "]", 100_000, "").into_bytes(),
            400,
            NOT_A_REVIEW,
        ),
        // Unknown keys are skipped without recursion: the envelope then lacks its apiVersion.
        bad(
            "100k nested objects as the body",
            nested("{\"a\":", "}", 100_000, "1").into_bytes(),
            400,
            "only admission.k8s.io/v1",
        ),
        good(
            "100k nested arrays in an ignored request field",
            splice_request(
                "u-deep-ignored",
                &format!("\"options\":{}", nested("[", "]", 100_000, "")),
            ),
            "u-deep-ignored",
            patched,
        ),
        good(
            "100k nested objects in an ignored Pod field",
            to_vec(&envelope(pod_request("u-deep-pod".into(), json!({}))))
                .pipe(|body| {
                    let text = String::from_utf8(body).expect("utf8");
                    text.replacen(
                        "\"object\":{}",
                        &format!(
                            "\"object\":{{\"status\":{},\"spec\":{{\"containers\":[{{\"name\":\"a\",\"image\":\"gcr.io/a/b\"}}]}}}}",
                            nested("{\"a\":", "}", 100_000, "1")
                        ),
                        1,
                    )
                    .into_bytes()
                }),
            "u-deep-pod",
            patched,
        ),
        bad(
            "100k nested arrays as a container image",
            to_vec(&envelope(pod_request("u".into(), json!({})))).pipe(|body| {
                String::from_utf8(body)
                    .expect("utf8")
                    .replacen(
                        "\"object\":{}",
                        &format!(
                            "\"object\":{{\"spec\":{{\"containers\":[{{\"image\":{}}}]}}}}",
                            nested("[", "]", 100_000, "")
                        ),
                        1,
                    )
                    .into_bytes()
            }),
            400,
            BAD_POD,
        ),
        // --- Encoding
        bad("bytes that are not UTF-8", vec![0xff, 0xfe, 0x00, 0x7b, 0x80], 400, NOT_A_REVIEW),
        bad(
            "invalid UTF-8 inside the uid string",
            valid_with(VALID_UID, "a13b\u{1}").pipe(|mut b| {
                let at = b.windows(5).position(|w| w == b"a13b\x01").expect("marker") + 4;
                b[at] = 0xc3; // a lead byte with no continuation: invalid UTF-8
                b
            }),
            400,
            NOT_A_REVIEW,
        ),
        bad(
            "a lone surrogate escape in the uid",
            valid_with(VALID_UID, "\\ud800"),
            400,
            NOT_A_REVIEW,
        ),
        good(
            "uid with escapes, unicode and an emoji is echoed exactly",
            pod_review("u-\"\\\n\u{e9}\u{1f600}\u{0}", &["gcr.io/a/b"]),
            "u-\"\\\n\u{e9}\u{1f600}\u{0}",
            patched,
        ),
        bad("a UTF-8 byte-order mark before the JSON", [b"\xef\xbb\xbf".as_slice(), &valid].concat(), 400, NOT_A_REVIEW),
        // --- Content type
        case("wrong content type", Srv::Default, with_content_type("text/plain", &valid), Expect::Status(415, "application/json")),
        case("no content type", Srv::Default, http_request("POST", "/mutate", &[], &valid), Expect::Status(415, "application/json")),
        case(
            "content type with a charset parameter",
            Srv::Default,
            with_content_type("application/json; charset=utf-8", &valid),
            Expect::Review(VALID_UID.into(), patched),
        ),
        case(
            "content type in upper case",
            Srv::Default,
            with_content_type("APPLICATION/JSON", &valid),
            Expect::Review(VALID_UID.into(), patched),
        ),
        case(
            "content type application/json-patch+json",
            Srv::Default,
            with_content_type("application/json-patch+json", &valid),
            Expect::Status(415, "application/json"),
        ),
        // --- Envelope
        bad("AdmissionReview v1beta1", valid_with("admission.k8s.io/v1", "admission.k8s.io/v1beta1"), 400, "only admission.k8s.io/v1"),
        bad("missing apiVersion", valid_with("\"apiVersion\": \"admission.k8s.io/v1\",", ""), 400, "only admission.k8s.io/v1"),
        bad("missing kind", valid_with("\"kind\": \"AdmissionReview\",", ""), 400, "expected AdmissionReview"),
        bad("kind Pod instead of AdmissionReview", valid_with("\"kind\": \"AdmissionReview\"", "\"kind\": \"Pod\""), 400, "expected AdmissionReview"),
        bad("missing uid", valid_with(&format!("\"uid\": \"{VALID_UID}\","), ""), 400, "no uid"),
        bad("empty uid", valid_with(VALID_UID, ""), 400, "no uid"),
        bad("uid is a number", valid_with(&format!("\"{VALID_UID}\""), "42"), 400, NOT_A_REVIEW),
        bad("request is null", to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": null})), 400, "no request"),
        bad("request is absent", to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})), 400, "no request"),
        bad("request is a string", to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": "x"})), 400, NOT_A_REVIEW),
        bad("two \"uid\" keys", splice_request("u-dup", "\"uid\":\"u-other\""), 400, "duplicate field"),
        good("duplicate keys in an ignored field", splice_request("u-dup-ignored", "\"userInfo\":{\"username\":\"a\",\"username\":\"b\"},\"userInfo\":{}"), "u-dup-ignored", patched),
        good("huge numbers in ignored fields", splice_request("u-numbers", &format!("\"options\":{{\"a\":1e999999,\"b\":-{},\"c\":0.{}1}}", "9".repeat(10_000), "0".repeat(10_000))), "u-numbers", patched),
        bad("trailing garbage after the JSON", [valid.as_slice(), b"}garbage"].concat(), 400, NOT_A_REVIEW),
        good("trailing whitespace after the JSON", [valid.as_slice(), b" \r\n\t "].concat(), VALID_UID, patched),
        bad("dryRun is a string", splice_request("u-dry", "\"dryRun\":\"yes\""), 400, NOT_A_REVIEW),
        // --- The object
        good(
            "a ConfigMap",
            support::load::review_with_object("u-cm", "team-a", "configmaps", "CREATE", json!({"kind": "ConfigMap", "data": {"a": "b"}})),
            "u-cm",
            allowed_unchanged,
        ),
        bad(
            "a Pod CREATE whose object is a list",
            to_vec(&envelope(pod_request("u-list".into(), json!([{"name": "p"}])))),
            400,
            BAD_POD,
        ),
        good(
            "a ConfigMap CREATE whose object is a list",
            support::load::review_with_object("u-cm-list", "team-a", "configmaps", "CREATE", json!([1, 2])),
            "u-cm-list",
            allowed_unchanged,
        ),
        bad("a Pod CREATE whose object is a string", to_vec(&envelope(pod_request("u-str".into(), json!("gcr.io/a/b")))), 400, BAD_POD),
        good(
            "a ConfigMap CREATE whose object is a string",
            support::load::review_with_object("u-cm-str", "team-a", "configmaps", "CREATE", json!("x")),
            "u-cm-str",
            allowed_unchanged,
        ),
        good("a Pod CREATE whose object is null", to_vec(&envelope(pod_request("u-null".into(), Value::Null))), "u-null", allowed_unchanged),
        bad("containers is not a list", to_vec(&envelope(pod_request("u-c".into(), json!({"spec": {"containers": "gcr.io/a/b"}})))), 400, BAD_POD),
        bad("an image that is a number", to_vec(&envelope(pod_request("u-n".into(), json!({"spec": {"containers": [{"name": "a", "image": 7}]}})))), 400, BAD_POD),
        good(
            "10,000 containers",
            pod_review(
                "u-10k",
                &(0..10_000)
                    .map(|i| match i % 3 {
                        0 => "gcr.io/acme/app:1",
                        1 => "nginx",
                        _ => "NOT A VALID REFERENCE",
                    })
                    .collect::<Vec<_>>(),
            ),
            "u-10k",
            |response| {
                patched(response)?;
                // At most 10 warnings of at most 120 characters, however many containers.
                let warnings = response["response"]["warnings"].as_array().map_or(0, Vec::len);
                (warnings <= 10)
                    .then_some(())
                    .ok_or_else(|| format!("{warnings} warnings"))
            },
        ),
        good("a 100 KB image", pod_review("u-big-image", &[&format!("gcr.io/acme/{}", "a".repeat(100 * 1024))]), "u-big-image", warns_invalid_image),
        good("images with control characters", pod_review("u-ctl", &["gcr.io/acme/app\u{7}:1", "gcr.io/ac\tme/app", "\u{1b}[31mgcr.io/a/b"]), "u-ctl", warns_invalid_image),
        good("an image with a NUL", pod_review("u-nul", &["gcr.io/acme/app\u{0}:1"]), "u-nul", warns_invalid_image),
        good("an image with non-ASCII letters", pod_review("u-uni", &["gcr.io/acm\u{e9}/app:1", "g\u{441}r.io/a/b"]), "u-uni", warns_invalid_image),
        good("an image with an emoji", pod_review("u-emoji", &["gcr.io/acme/\u{1f680}:1"]), "u-emoji", warns_invalid_image),
        // --- Transfer and content coding
        case(
            "gzip content-encoding with a gzip body (not decoded: 400)",
            Srv::Default,
            with_headers(&[("Content-Encoding", "gzip")], &gzip(&valid)),
            Expect::Status(400, NOT_A_REVIEW),
        ),
        case(
            "gzip content-encoding on a plain JSON body (header ignored)",
            Srv::Default,
            with_headers(&[("Content-Encoding", "gzip")], &valid),
            Expect::Review(VALID_UID.into(), patched),
        ),
        case(
            "chunked transfer encoding",
            Srv::Default,
            with_headers(&[("Transfer-Encoding", "chunked")], &chunked(&valid, 1000)),
            Expect::Review(VALID_UID.into(), patched),
        ),
        case(
            "chunked, one byte a chunk",
            Srv::Default,
            with_headers(&[("Transfer-Encoding", "chunked")], &chunked(&valid, 1)),
            Expect::Review(VALID_UID.into(), patched),
        ),
        case(
            "chunked with a chunk size that is not hex",
            Srv::Default,
            with_headers(&[("Transfer-Encoding", "chunked")], b"zz\r\n{}\r\n0\r\n\r\n"),
            Expect::Status(400, ""),
        ),
        case(
            "two different Content-Length headers",
            Srv::Default,
            [
                b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{}".as_slice(),
            ]
            .concat(),
            Expect::Status(400, ""),
        ),
        // --- HTTP framing
        case(
            "HTTP/1.0",
            Srv::Default,
            [
                format!("POST /mutate?timeout=10s HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", valid.len()).as_bytes(),
                &valid,
            ]
            .concat(),
            Expect::Review(VALID_UID.into(), patched),
        ),
        case(
            "three pipelined requests",
            Srv::Default,
            pipelined(&["u-pipe-1", "u-pipe-2", "u-pipe-3"]),
            Expect::Reviews(vec!["u-pipe-1".into(), "u-pipe-2".into(), "u-pipe-3".into()]),
        ),
        case(
            "a request line over 64 KB",
            Srv::Default,
            http_request("POST", &format!("/mutate?x={}", "a".repeat(70 * 1024)), &[("Content-Type", "application/json")], &valid),
            Expect::Status(414, ""),
        ),
        case(
            "10,000 headers",
            Srv::Default,
            {
                let names: Vec<String> = (0..10_000).map(|i| format!("X-H{i}")).collect();
                let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
                with_headers(&headers, &valid)
            },
            Expect::Status(431, ""),
        ),
        case(
            "one header value of 1 MB",
            Srv::Default,
            with_headers(&[("X-Big", &"v".repeat(1024 * 1024))], &valid),
            Expect::Status(431, ""),
        ),
        case(
            "a garbage request line",
            Srv::Default,
            b"\x01\x02 GARBAGE\r\n\r\n".to_vec(),
            Expect::Status(400, ""),
        ),
        case("GET /mutate", Srv::Default, http_request("GET", "/mutate", &[], b""), Expect::Status(405, "")),
        case("PUT /mutate", Srv::Default, http_request("PUT", "/mutate", &[("Content-Type", "application/json")], &valid), Expect::Status(405, "")),
        case("POST to an unknown path", Srv::Default, http_request("POST", "/validate", &[("Content-Type", "application/json")], &valid), Expect::Status(404, "")),
        case(
            "absurd ?timeout values",
            Srv::Default,
            http_request("POST", "/mutate?timeout=99999999999999999999h&timeout=-1s", &[("Content-Type", "application/json")], &valid),
            Expect::Review(VALID_UID.into(), patched),
        ),
        case(
            "?timeout=0s (no time to provision)",
            Srv::Default,
            http_request("POST", "/mutate?timeout=0s", &[("Content-Type", "application/json")], &valid),
            Expect::Review(VALID_UID.into(), patched),
        ),
        case(
            "a query that is not percent-encoding",
            Srv::Default,
            http_request("POST", "/mutate?%zz=%%&timeout", &[("Content-Type", "application/json")], &valid),
            Expect::Review(VALID_UID.into(), patched),
        ),
    ];
    cases.push(good(
        "invalid UTF-8 inside an ignored string",
        splice_request("u-bad-utf8-ignored", "\"userInfo\":{\"username\":\"AB\"}").pipe(|mut b| {
            let at = b.windows(4).position(|w| w == b"\"AB\"").expect("marker") + 1;
            b[at] = 0xff;
            b
        }),
        "u-bad-utf8-ignored",
        patched,
    ));
    cases
}

/// `body` followed by spaces up to `len` bytes (JSON allows trailing whitespace).
fn padded(body: &[u8], len: usize) -> Vec<u8> {
    assert!(body.len() <= len);
    let mut out = body.to_vec();
    out.resize(len, b' ');
    out
}

fn pipelined(uids: &[&str]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (i, uid) in uids.iter().enumerate() {
        let body = pod_review(uid, &["gcr.io/acme/app:1"]);
        let close = if i + 1 == uids.len() {
            "Connection: close\r\n"
        } else {
            ""
        };
        bytes.extend_from_slice(
            format!(
                "POST /mutate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{close}\r\n",
                body.len()
            )
            .as_bytes(),
        );
        bytes.extend_from_slice(&body);
    }
    bytes
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

fn check_outcome(case: &Case, outcome: &RawOutcome) -> Result<String, String> {
    if outcome.end == End::TimedOut {
        return Err(format!(
            "no end within {BOUND:?}; got {} bytes",
            outcome.bytes.len()
        ));
    }
    let responses = outcome.responses();
    let describe = || {
        format!(
            "{} response(s), end {:?}, first bytes {:?}",
            responses.len(),
            outcome.end,
            String::from_utf8_lossy(&outcome.bytes[..outcome.bytes.len().min(200)])
        )
    };
    let check_review = |response: &support::load::RawResponse, uid: &Value| {
        if response.status != 200 {
            return Err(format!(
                "status {} ({}), expected 200",
                response.status,
                response.text()
            ));
        }
        if response.header("content-type") != Some("application/json") {
            return Err(format!(
                "content-type {:?}",
                response.header("content-type")
            ));
        }
        well_formed_review(&response.body, uid)
    };
    match &case.expect {
        Expect::Review(uid, check) => {
            let [response] = responses.as_slice() else {
                return Err(format!("expected one response: {}", describe()));
            };
            let review = check_review(response, uid)?;
            check(&review)?;
            Ok(format!(
                "200 review, {} bytes ({})",
                response.body.len(),
                response.version
            ))
        }
        Expect::Reviews(uids) => {
            if responses.len() != uids.len() {
                return Err(format!("expected {} responses: {}", uids.len(), describe()));
            }
            for (response, uid) in responses.iter().zip(uids) {
                check_review(response, uid)?;
            }
            Ok(format!("{} reviews in order", uids.len()))
        }
        Expect::Status(status, needle) => {
            let [response] = responses.as_slice() else {
                return Err(format!("expected one response: {}", describe()));
            };
            if response.status != *status || !response.text().contains(needle) {
                return Err(format!(
                    "got {} {:?}, expected {status} containing {needle:?}",
                    response.status,
                    response.text()
                ));
            }
            Ok(format!("{status} {:?}", response.text().trim_end()))
        }
    }
}

#[tokio::test]
async fn hostile_requests_get_a_review_or_a_clear_4xx_and_the_server_keeps_serving() {
    let _serial = SERIAL.lock().await;
    let default = start(None, server_options()).await;
    let small = start(Some(SMALL_LIMIT), server_options()).await;
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for case in &cases {
        let server = match case.server {
            Srv::Default => &default,
            Srv::Small => &small,
        };
        let outcome = raw_exchange(&server.client, case.request.clone(), BOUND).await;
        match check_outcome(case, &outcome) {
            Ok(summary) => report.push(format!(
                "ok   {:<62} {summary} in {:?}",
                case.name, outcome.elapsed
            )),
            Err(problem) => {
                report.push(format!("FAIL {:<62} {problem}", case.name));
                failures.push(format!("{}: {problem}", case.name));
            }
        }
        assert_still_serving(server, &case.name).await;
    }
    println!("{} hostile requests:\n{}", cases.len(), report.join("\n"));
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let metrics = default.metrics().await;
    assert!(
        metrics.contains("pullsecret_injector_admission_requests_total{outcome=\"rejected\"}"),
        "{metrics}"
    );
}

/// A Pod (or its spec, or a container) that is a JSON array is not a Pod. serde's derived
/// `Deserialize` reads a struct from an array positionally, so `[metadata, spec]` was taken for a
/// Pod and got a patch (`add /spec/imagePullSecrets`) that cannot apply to an array (found by the
/// `review_to_response` fuzz target; fixed then with an object-only wrapper, and now by the reader's
/// `read_object`, which refuses anything but `{`). The answer must be a 400, or
/// at least a patch that applies.
#[tokio::test]
async fn a_pod_that_is_a_json_array_is_not_patched() {
    let _serial = SERIAL.lock().await;
    let server = start(None, server_options()).await;
    let objects = [
        json!([{"name": "p"}, {"containers": [{"name": "a", "image": "gcr.io/acme/app:1"}]}]),
        json!({"spec": [[{"name": "a", "image": "gcr.io/acme/app:1"}]]}),
        json!({"spec": [[["a", "gcr.io/acme/app:1"]]]}),
    ];
    let mut conn = server.client.connect().await.expect("connect");
    for object in objects {
        let request = to_vec(&envelope(pod_request("u-array".into(), object.clone())));
        let reply = conn.review(request.clone()).await;
        match reply.status.as_u16() {
            400 => assert!(reply.text().contains(BAD_POD), "{}", reply.text()),
            200 => {
                let response = reply.json();
                if let Some(patch) = support::decoded_patch(&response) {
                    let mut target = object.clone();
                    assert!(
                        json_patch::patch(&mut target, &patch).is_ok(),
                        "object {object}: the answer's patch {patch:?} does not apply"
                    );
                }
            }
            other => panic!("object {object}: status {other}: {}", reply.text()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Protocol abuse without an answer
// ---------------------------------------------------------------------------------------------

/// Reads until the peer closes; returns what was read, or None if still open after `limit`.
async fn read_until_closed<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    limit: Duration,
) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(bytes),
            Ok(Ok(n)) => bytes.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_after_the_header_read_timeout() {
    let _serial = SERIAL.lock().await;
    let server = start(None, short_timeouts()).await;
    let mut tls = server.client.tls_stream(&[b"http/1.1"]).await.expect("tls");
    tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: appl")
        .await
        .expect("write");
    let started = Instant::now();
    let read = read_until_closed(&mut tls, BOUND).await;
    let text = closed_unanswered_or_408(read, "after partial headers");
    println!(
        "partial headers: closed after {:?} (header-read timeout {HEADER_READ_TIMEOUT:?}), answer {text:?}",
        started.elapsed()
    );
    assert_still_serving(&server, "slowloris").await;
}

/// A client that completes the TLS handshake and then sends nothing (or only the first bytes of the
/// HTTP/2 preface) must be timed out. hyper-util's `auto::Builder` first reads the connection's
/// first bytes to choose HTTP/1 or HTTP/2 (`ReadVersion`), with no timeout, and the HTTP/1
/// header-read timeout only starts after that; without a timeout of the server's own, each such
/// connection held one of the `max_connections` slots for as long as the client liked, so that many
/// idle connections locked every client out, the API server included (finding 1 in
/// docs/RELIABILITY.md).
#[tokio::test]
async fn idle_tls_connections_are_closed_and_cannot_lock_the_server_out() {
    let _serial = SERIAL.lock().await;
    const SLOTS: usize = 4;
    let server = start(
        None,
        ServerOptions {
            max_connections: SLOTS,
            ..short_timeouts()
        },
    )
    .await;
    let mut idle = Vec::new();
    for i in 0..SLOTS {
        let mut tls = server
            .client
            .tls_stream(&[b"http/1.1", b"h2"])
            .await
            .expect("tls");
        if i % 2 == 1 {
            // A prefix of the HTTP/2 connection preface: still undecided between HTTP/1 and HTTP/2.
            tls.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
        }
        idle.push(tls);
    }
    // Every slot is now held by a client that sends nothing more: the slots must come back after
    // the header-read (or another) timeout, and a real client must get its answer.
    assert_still_serving(&server, "idle TLS connections holding every slot").await;
    for (i, tls) in idle.iter_mut().enumerate() {
        assert!(
            read_until_closed(tls, BOUND).await.is_some(),
            "idle connection {i} still open after {BOUND:?}"
        );
    }
}

/// A keep-alive connection that has been served lives on between requests that come within the
/// header-read timeout, and is closed once it has waited longer for its next request's headers:
/// hyper runs that timer while an HTTP/1.1 connection is idle, so it is the idle timeout.
#[tokio::test]
async fn a_served_connection_lives_between_requests_and_closes_after_the_header_read_timeout() {
    let _serial = SERIAL.lock().await;
    let header_read_timeout = Duration::from_millis(1500);
    let server = start(
        None,
        ServerOptions {
            header_read_timeout,
            ..short_timeouts()
        },
    )
    .await;
    let mut tls = server.client.tls_stream(&[b"http/1.1"]).await.expect("tls");
    let keep_alive = {
        let request = String::from_utf8(review_request(&valid())).expect("utf8");
        request
            .replacen("Connection: close\r\n", "", 1)
            .into_bytes()
    };
    let mut last_answer = Instant::now();
    for i in 0..4 {
        if i > 0 {
            // Shorter than the header-read timeout.
            tokio::time::sleep(header_read_timeout / 2).await;
        }
        tls.write_all(&keep_alive).await.expect("write");
        let responses = read_responses(&mut tls, 1).await;
        assert_eq!(
            responses.len(),
            1,
            "request {i}: no answer within {BOUND:?} (connection closed while in use?)"
        );
        assert_eq!(
            responses[0].status,
            200,
            "request {i}: {}",
            responses[0].text()
        );
        last_answer = Instant::now();
    }
    let closed = read_until_closed(&mut tls, BOUND).await;
    closed_unanswered_or_408(closed, "while idle");
    println!(
        "idle connection closed {:?} after its last answer (header-read timeout {header_read_timeout:?})",
        last_answer.elapsed()
    );
}

/// What a connection closed for slow headers sent before it closed: nothing, or a 408.
fn closed_unanswered_or_408(read: Option<Vec<u8>>, when: &str) -> String {
    let bytes = read.unwrap_or_else(|| panic!("connection still open {BOUND:?} {when}"));
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{when}: {text}"
    );
    text
}

/// A slow-loris client that keeps sending a byte of its headers every 100 ms is still cut off once
/// the header-read timeout has passed since the connection opened: bytes coming in do not restart
/// the clock, only a request whose headers are complete does.
#[tokio::test]
async fn headers_trickled_a_byte_at_a_time_are_cut_off_after_the_header_read_timeout() {
    let _serial = SERIAL.lock().await;
    let server = start(None, short_timeouts()).await;
    let tls = server.client.tls_stream(&[b"http/1.1"]).await.expect("tls");
    let started = Instant::now();
    let (mut reader, mut writer) = tokio::io::split(tls);
    let trickle = tokio::spawn(async move {
        let headers = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Padding: ";
        let mut sent = 0usize;
        for byte in headers.iter().chain(std::iter::repeat(&b'a')) {
            if writer.write_all(&[*byte]).await.is_err() || writer.flush().await.is_err() {
                break;
            }
            sent += 1;
            if started.elapsed() > BOUND {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    });
    let read = read_until_closed(&mut reader, BOUND).await;
    let closed_after = started.elapsed();
    let sent = trickle.await.expect("trickle task");
    closed_unanswered_or_408(read, "into trickled headers");
    // Not closed at once: the bytes before the close went out 100 ms apart.
    assert!(sent >= 3, "only {sent} bytes went out before the close");
    println!("trickled headers: {sent} bytes, closed after {closed_after:?}");
    assert_still_serving(&server, "trickled headers").await;
}

/// Reads from `tls` until `count` whole responses came in (or it closes, or `BOUND` passes without
/// bytes); the responses that did.
async fn read_responses<S: tokio::io::AsyncRead + Unpin>(
    tls: &mut S,
    count: usize,
) -> Vec<support::load::RawResponse> {
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    while parse_responses(&received).len() < count {
        match tokio::time::timeout(BOUND, tls.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    parse_responses(&received)
}

/// A client that sends complete headers and then stalls its body must not hold the connection (and
/// its `max_connections` slot) forever: the header-read timeout is over once the headers are in
/// (finding 2 in docs/RELIABILITY.md).
#[tokio::test]
async fn a_stalled_body_is_cut_off() {
    let _serial = SERIAL.lock().await;
    let server = start(None, short_timeouts()).await;
    let mut tls = server.client.tls_stream(&[b"http/1.1"]).await.expect("tls");
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\"",
    )
    .await
    .expect("write");
    // The API server's own timeout is at most 30 s: a body still incomplete after that is abandoned.
    let started = Instant::now();
    let read = read_until_closed(&mut tls, BOUND)
        .await
        .unwrap_or_else(|| panic!("a request whose body stalls is still open after {BOUND:?}"));
    let text = String::from_utf8_lossy(&read);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "a stalled body got {text:?}"
    );
    println!(
        "stalled body: closed after {:?} with {:?}",
        started.elapsed(),
        text.lines().next().unwrap_or("")
    );
    assert_still_serving(&server, "stalled body").await;
}

#[tokio::test]
async fn a_tls_handshake_that_never_completes_is_cut_off() {
    let _serial = SERIAL.lock().await;
    let server = start(None, short_timeouts()).await;
    let addr = server.app.local_addr();

    // 1. Connect and send nothing.
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    // 2. Send the first bytes of a ClientHello record, then nothing.
    let mut partial = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    partial
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .await
        .expect("write");
    let started = Instant::now();
    for (name, stream) in [
        ("silent", &mut silent),
        ("partial ClientHello", &mut partial),
    ] {
        let read = read_until_closed(stream, BOUND).await;
        assert!(
            read.is_some(),
            "{name}: TCP connection without a finished handshake open after {BOUND:?}"
        );
        println!(
            "{name}: closed after {:?} (handshake timeout {HANDSHAKE_TIMEOUT:?})",
            started.elapsed()
        );
    }
    assert_still_serving(&server, "stalled handshakes").await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_refused() {
    let _serial = SERIAL.lock().await;
    let server = start(None, short_timeouts()).await;
    let mut tcp = tokio::net::TcpStream::connect(server.app.local_addr())
        .await
        .expect("tcp");
    let body = valid();
    tcp.write_all(&review_request(&body)).await.expect("write");
    let read = read_until_closed(&mut tcp, BOUND)
        .await
        .expect("plain HTTP connection still open");
    let text = String::from_utf8_lossy(&read);
    assert!(
        !text.contains("HTTP/1.1 200") && !text.contains("AdmissionReview"),
        "plain HTTP got an answer: {text}"
    );
    // rustls answers a non-TLS record with at most an alert (content type 21), then closes.
    assert!(
        read.is_empty() || read[0] == 0x15,
        "not a TLS alert: {read:?}"
    );
    assert_still_serving(&server, "plain HTTP").await;
}

#[tokio::test]
async fn abandoned_connections_give_their_slots_back() {
    let _serial = SERIAL.lock().await;
    // Few slots, so abandoned connections that kept theirs would lock the server out.
    const SLOTS: usize = 8;
    let server = start(
        None,
        ServerOptions {
            max_connections: SLOTS,
            ..short_timeouts()
        },
    )
    .await;
    let addr = server.app.local_addr();
    for round in 0..5 {
        let mut held = Vec::new();
        // Never handshaken, handshaken and idle, and mid-request: every kind of abandoned connection.
        for i in 0..SLOTS * 4 {
            match i % 3 {
                0 => held.push(
                    Box::new(tokio::net::TcpStream::connect(addr).await.expect("tcp"))
                        as Box<dyn std::any::Any + Send>,
                ),
                1 => {
                    // May wait for a slot: bounded so that a full server does not stall the test.
                    if let Ok(Ok(tls)) = tokio::time::timeout(
                        Duration::from_millis(200),
                        server.client.tls_stream(&[b"http/1.1"]),
                    )
                    .await
                    {
                        held.push(Box::new(tls));
                    }
                }
                _ => {
                    if let Ok(Ok(mut tls)) = tokio::time::timeout(
                        Duration::from_millis(200),
                        server.client.tls_stream(&[b"http/1.1"]),
                    )
                    .await
                    {
                        let _ = tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: l").await;
                        held.push(Box::new(tls));
                    }
                }
            }
        }
        drop(held);
        // Dropped (RST/FIN) or timed out (handshake/header-read): every slot comes back.
        assert_still_serving(&server, &format!("abandoned connections, round {round}")).await;
    }
    // And connections that are simply left open: they time out and the slots return.
    let mut left_open = Vec::new();
    for _ in 0..SLOTS {
        left_open.push(tokio::net::TcpStream::connect(addr).await.expect("tcp"));
    }
    assert_still_serving(&server, "all slots taken by silent connections").await;
    drop(left_open);
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// A valid review of about `size` bytes: a Pod with a large annotation (like kubectl's
/// last-applied-configuration), so the whole body is parsed, not skipped.
fn large_review(uid: &str, size: usize) -> Vec<u8> {
    let object = json!({
        "metadata": {"name": "big", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x".repeat(size)}},
        "spec": {"containers": [{"name": "a", "image": "gcr.io/acme/app:1"}]}
    });
    to_vec(&envelope(pod_request(uid.into(), object)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_a_burst_of_3_mb_bodies() {
    let _serial = SERIAL.lock().await;
    let server = start(None, server_options()).await;
    const BODY: usize = 3 * 1024 * 1024;
    const REQUESTS: usize = 200;
    const CONNECTIONS: usize = 4;
    let bodies: Vec<Vec<u8>> = (0..CONNECTIONS)
        .map(|i| large_review(&format!("u-mem-{i}"), BODY))
        .collect();
    let send_burst = |count: usize| {
        let bodies = bodies.clone();
        let client = &server.client;
        async move {
            let mut tasks = Vec::new();
            for (worker, body) in bodies.into_iter().enumerate() {
                let mut conn = client.connect().await.expect("connect");
                tasks.push(tokio::spawn(async move {
                    for _ in 0..count / CONNECTIONS {
                        let reply = conn.review(body.clone()).await;
                        assert_eq!(reply.status, 200, "{}", reply.text());
                        assert_eq!(reply.json()["response"]["uid"], format!("u-mem-{worker}"));
                    }
                }));
            }
            for task in tasks {
                task.await.expect("burst worker");
            }
        }
    };
    // Warm up: the allocator's arenas, the connection buffers, the client's own copies.
    send_burst(CONNECTIONS * 4).await;
    let before = support::load::vm_rss_bytes().expect("VmRSS");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(300), send_burst(REQUESTS))
        .await
        .expect("burst finished");
    let after = support::load::vm_rss_bytes().expect("VmRSS");
    let growth = after.saturating_sub(before);
    println!(
        "VmRSS before {} MB, after {} MB, growth {} MB, after {REQUESTS} x 3 MB in {:?}",
        before >> 20,
        after >> 20,
        growth >> 20,
        started.elapsed()
    );
    // The bound. At most CONNECTIONS requests are in flight at once; each holds its body (3 MB) on
    // the server plus the client's copy and the answer, ~10 MB together, so ~40 MB in flight at the
    // peak. glibc malloc keeps freed memory in per-thread arenas instead of returning it, so RSS after
    // the burst may sit at that peak, and a few more arenas may be touched by threads that were idle
    // during the warm-up: ~100 MB. 200 MB is twice that, and still well below what one leaked body
    // per request would cost (200 x 3 MB = 600 MB): a leak of a third of the bodies fails this test.
    const BOUND_BYTES: u64 = 200 * 1024 * 1024;
    assert!(
        growth < BOUND_BYTES,
        "RSS grew by {} MB over {REQUESTS} requests of 3 MB (bound {} MB)",
        growth >> 20,
        BOUND_BYTES >> 20
    );
}

/// 100 connections that each declare a 4 MiB body and stall after its first bytes: the bytes of
/// bodies in flight never pass the shared budget (so neither does the memory they take); the
/// requests past it are refused at once with 503; the budget comes back when they go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_large_bodies_are_bounded_by_the_shared_budget() {
    let _serial = SERIAL.lock().await;
    const CONNECTIONS: usize = 100;
    const DECLARED: usize = 4 * 1024 * 1024;
    let limits = pullsecret_injector::serving::BodyLimits::default();
    let server = TestServer::start_with(TestOptions {
        server: server_options(),
        ..TestOptions::new(GCP_CONFIG, Arc::new(ReferenceOnly))
    })
    .await;
    let mut stalled = Vec::new();
    let mut refused = 0;
    for _ in 0..CONNECTIONS {
        let mut tls = server.client.tls_stream(&[b"http/1.1"]).await.expect("tls");
        let head = format!(
            "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {DECLARED}\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await.expect("write");
        tls.write_all(&vec![b' '; 64 * 1024]).await.expect("write");
        tls.flush().await.expect("flush");
        // A refused request is answered at once; an admitted one waits for the rest of its body.
        let mut buffer = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(300), tls.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => {
                let text = String::from_utf8_lossy(&buffer[..n]);
                assert!(text.starts_with("HTTP/1.1 503"), "{text}");
                assert!(text.contains("too many request bytes in flight"), "{text}");
                refused += 1;
            }
            _ => stalled.push(tls),
        }
        assert!(
            server.app.body_bytes_in_flight() <= limits.max_bytes_in_flight,
            "{} bytes in flight, budget {}",
            server.app.body_bytes_in_flight(),
            limits.max_bytes_in_flight
        );
    }
    let admitted = limits.max_bytes_in_flight / DECLARED;
    assert_eq!(stalled.len(), admitted, "admitted stalled bodies");
    assert_eq!(refused, CONNECTIONS - admitted, "refused at once");
    assert_eq!(server.app.body_bytes_in_flight(), admitted * DECLARED);
    drop(stalled);
    let freed =
        support::eventually(BOUND, || async { server.app.body_bytes_in_flight() == 0 }).await;
    assert!(
        freed,
        "{} bytes still held",
        server.app.body_bytes_in_flight()
    );
    assert_still_serving(&server, "stalled large bodies").await;
}

/// 1,100 TCP connections that never start TLS hold handshake slots only: while every one of them
/// is still open, a review and the kubelet's probe are answered on new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tcp_connections_do_not_hold_up_reviews_or_probes() {
    let _serial = SERIAL.lock().await;
    const SILENT: usize = 1_100;
    let server = start(
        None,
        ServerOptions {
            // Far longer than the test: the silent connections stay open throughout.
            handshake_timeout: Duration::from_secs(600),
            ..server_options()
        },
    )
    .await;
    let addr = server.app.local_addr();
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(tokio::net::TcpStream::connect(addr).await.expect("tcp"));
    }
    let mut conn = server
        .client
        .connect()
        .await
        .expect("connect past the silent ones");
    let reply = conn.review(valid()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["response"]["uid"], VALID_UID);
    let probe = conn
        .send("GET", "/healthz", None, Vec::new())
        .await
        .expect("probe");
    assert_eq!(probe.status, 200);
    // Every silent connection is still open: the review did not get in because they timed out.
    let mut buffer = [0u8; 1];
    for (i, stream) in silent.iter().enumerate() {
        match stream.try_read(&mut buffer) {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("silent connection {i} was closed: {other:?}"),
        }
    }
}

/// Past the handshake cap, a new connection is closed at once instead of waiting in a queue.
#[tokio::test]
async fn connections_past_the_handshake_cap_are_closed_at_once() {
    let _serial = SERIAL.lock().await;
    const CAP: usize = 8;
    let server = start(
        None,
        ServerOptions {
            max_handshakes: CAP,
            handshake_timeout: Duration::from_secs(600),
            ..server_options()
        },
    )
    .await;
    let addr = server.app.local_addr();
    let mut streams = Vec::new();
    for _ in 0..CAP * 2 {
        streams.push(tokio::net::TcpStream::connect(addr).await.expect("tcp"));
    }
    let mut closed = 0;
    for stream in &mut streams {
        let mut buffer = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buffer)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, CAP, "connections closed past a cap of {CAP}");
}
