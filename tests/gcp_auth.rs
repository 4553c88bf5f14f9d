//! Tests for `gcp_auth` against loopback token endpoints, a loopback metadata server, and
//! loopback STS and IAM Credentials endpoints for Workload Identity Federation.
//!
//! RSA keys are generated at test time; no key file is committed. The token endpoint checks
//! the JWT with the key's public key through `jsonwebtoken`'s RustCrypto backend, a different
//! RSA implementation from the `ring` signer under test.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use pullsecret_injector::provisioning::gcp_auth::{
    AccessToken, DEFAULT_TOKEN_URI, ExternalAccount, MAX_RESPONSE_BYTES, REFRESH_MARGIN,
    REGISTRY_READ_SCOPES, ServiceAccountKey, TokenError, TokenSource, random_jitter,
};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use support::gcp::*;

// ---------------------------------------------------------------------------------------------
// Service-account key grant

#[tokio::test]
async fn service_account_key_gets_a_token_and_its_expiry() {
    let (ep, token_uri) = token_endpoint(0, 3600).await;
    let source = key_source(&keys()[0].private_pem, &token_uri);
    let http = client();

    let before = SystemTime::now();
    let token = source.fetch(&http).await.expect("token");
    let after = SystemTime::now();

    assert_eq!(token.secret(), "ya29.test-token-1");
    assert!(before <= token.issued_at() && token.issued_at() <= after);
    assert_eq!(
        token.expires_at(),
        token.issued_at() + Duration::from_secs(3600)
    );
    assert_eq!(
        token.remaining(token.issued_at()),
        Duration::from_secs(3600)
    );
    assert_eq!(
        token.remaining(token.expires_at() + Duration::from_secs(1)),
        Duration::ZERO
    );
    let refresh = token.refresh_at(token.issued_at(), random_jitter());
    assert!(refresh >= token.issued_at() + Duration::from_secs(1620));
    assert!(refresh <= token.issued_at() + Duration::from_secs(1980));

    // Each fetch is a new grant.
    let second = source.fetch(&http).await.expect("second token");
    assert_eq!(second.secret(), "ya29.test-token-2");
    assert_eq!(ep.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn short_lived_token_is_refreshed_before_it_expires() {
    let (_ep, token_uri) = token_endpoint(0, 2).await;
    let token = key_source(&keys()[0].private_pem, &token_uri)
        .fetch(&client())
        .await
        .expect("token");
    assert_eq!(
        token.expires_at(),
        token.issued_at() + Duration::from_secs(2)
    );
    for jitter in [-0.1, 0.0, 0.1, random_jitter()] {
        let at = token.refresh_at(token.issued_at(), jitter);
        assert!(at > token.issued_at(), "{jitter}");
        assert!(at < token.expires_at(), "{jitter}");
    }
}

#[tokio::test]
async fn key_mismatch_is_rejected_with_the_endpoints_description() {
    // The endpoint trusts key 0; the key file holds key 1.
    let (ep, token_uri) = token_endpoint(0, 3600).await;
    let source = key_source(&keys()[1].private_pem, &token_uri);

    let err = source.fetch(&client()).await.expect_err("must be refused");
    match &err {
        TokenError::HttpStatus {
            endpoint,
            status,
            error,
            error_description,
            ..
        } => {
            assert_eq!(endpoint, &token_uri);
            assert_eq!(*status, 400);
            assert_eq!(error.as_deref(), Some("invalid_grant"));
            assert_eq!(error_description.as_deref(), Some("Invalid JWT Signature."));
        }
        other => panic!("unexpected error: {other:?}"),
    }
    let message = err.to_string();
    assert_eq!(
        message,
        format!("{token_uri} answered HTTP 400: invalid_grant: Invalid JWT Signature.")
    );
    assert!(!err.is_retryable());
    assert_eq!(err.http_status(), Some(400));

    // Neither the signed assertion nor the key shows up in the error.
    let assertion = ep
        .last_assertion
        .lock()
        .unwrap()
        .clone()
        .expect("assertion");
    let signature = assertion.rsplit('.').next().unwrap();
    let debug = format!("{err:?}");
    for text in [&message, &debug] {
        assert!(!text.contains(signature));
        for line in pem_body_lines(&keys()[1].private_pem) {
            assert!(!text.contains(line));
        }
    }
}

#[tokio::test]
async fn server_error_is_reported_and_the_next_fetch_succeeds() {
    let (ep, token_uri) = token_endpoint(0, 3600).await;
    ep.canned.lock().unwrap().push_back(Canned::Status(
        StatusCode::INTERNAL_SERVER_ERROR,
        r#"{"error":"internal_failure","error_description":"Backend unavailable"}"#.into(),
    ));
    let source = key_source(&keys()[0].private_pem, &token_uri);
    let http = client();

    let err = source.fetch(&http).await.expect_err("first request fails");
    assert!(
        matches!(err, TokenError::HttpStatus { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(
        err.to_string(),
        format!("{token_uri} answered HTTP 500: internal_failure: Backend unavailable")
    );

    // The caller retries: fetch itself made exactly one request.
    assert_eq!(ep.requests.load(Ordering::SeqCst), 1);
    let token = source.fetch(&http).await.expect("retry succeeds");
    assert_eq!(token.secret(), "ya29.test-token-1");
    assert_eq!(ep.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn malformed_token_responses_are_rejected() {
    let cases = [
        ("{not json", "not valid JSON"),
        ("", "truncated JSON"),
        (r#"["ya29.x"]"#, "wrong JSON type"),
        (
            r#"{"expires_in":3600,"token_type":"Bearer"}"#,
            "\"access_token\" is missing or empty",
        ),
        (
            r#"{"access_token":"","expires_in":3600}"#,
            "\"access_token\" is missing or empty",
        ),
        (
            r#"{"access_token":"ya29.secret-a"}"#,
            "\"expires_in\" is missing",
        ),
        (
            r#"{"access_token":"ya29.secret-b","expires_in":0}"#,
            "expected a positive number",
        ),
        (
            r#"{"access_token":"ya29.secret-c","expires_in":-5}"#,
            "expected a positive number",
        ),
        (
            r#"{"access_token":"ya29.secret-d","expires_in":"3600"}"#,
            "\"expires_in\" is not a number",
        ),
        (
            r#"{"access_token":"ya29.secret-e","expires_in":3600,"token_type":"MAC"}"#,
            "expected \"Bearer\"",
        ),
    ];
    let (ep, token_uri) = token_endpoint(0, 3600).await;
    let source = key_source(&keys()[0].private_pem, &token_uri);
    let http = client();
    for (body, expected) in cases {
        ep.canned
            .lock()
            .unwrap()
            .push_back(Canned::Status(StatusCode::OK, body.into()));
        let err = source.fetch(&http).await.expect_err(body);
        let TokenError::MalformedResponse { endpoint, reason } = &err else {
            panic!("{body}: unexpected error {err:?}");
        };
        assert_eq!(endpoint, &token_uri);
        assert!(reason.contains(expected), "{body}: {reason}");
        assert!(!err.to_string().contains("ya29."), "{err}");
        assert!(!format!("{err:?}").contains("ya29."), "{err:?}");
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn oversized_response_is_refused() {
    let (ep, token_uri) = token_endpoint(0, 3600).await;
    let huge = format!(
        r#"{{"access_token":"{}","expires_in":3600}}"#,
        "a".repeat(MAX_RESPONSE_BYTES)
    );
    ep.canned
        .lock()
        .unwrap()
        .push_back(Canned::Status(StatusCode::OK, huge));
    let err = key_source(&keys()[0].private_pem, &token_uri)
        .fetch(&client())
        .await
        .expect_err("too large");
    assert!(
        matches!(err, TokenError::ResponseTooLarge { limit, .. } if limit == MAX_RESPONSE_BYTES),
        "{err:?}"
    );
}

#[tokio::test]
async fn unreachable_endpoint_is_a_retryable_request_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let token_uri = format!("http://{}/token", listener.local_addr().unwrap());
    drop(listener);
    let err = key_source(&keys()[0].private_pem, &token_uri)
        .fetch(&client())
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, TokenError::Request { .. }), "{err:?}");
    assert!(err.to_string().contains(&token_uri), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn silent_endpoint_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_uri = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let http = client().with_timeout(Duration::from_millis(300));
    assert_eq!(http.timeout(), Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = key_source(&keys()[0].private_pem, &token_uri)
        .fetch(&http)
        .await
        .expect_err("must time out");
    assert!(matches!(err, TokenError::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn metadata_server_gives_a_token() {
    let (md, base_url) = metadata_server().await;
    let http = client();
    for (account, expected) in [
        ("default", "ya29.md-default"),
        (
            CLIENT_EMAIL,
            "ya29.md-puller@my-project.iam.gserviceaccount.com",
        ),
    ] {
        let source = TokenSource::MetadataServer {
            base_url: format!("{base_url}/"),
            service_account: account.into(),
        };
        let token = source.fetch(&http).await.expect("token");
        assert_eq!(token.secret(), expected);
        assert_eq!(
            token.expires_at(),
            token.issued_at() + Duration::from_secs(3599)
        );
    }
    assert_eq!(md.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn metadata_server_errors_carry_its_text() {
    let (_md, base_url) = metadata_server().await;
    let source = TokenSource::MetadataServer {
        base_url,
        service_account: "other@my-project.iam.gserviceaccount.com".into(),
    };
    let err = source.fetch(&client()).await.expect_err("unknown account");
    assert!(
        matches!(err, TokenError::HttpStatus { status: 404, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .ends_with("answered HTTP 404: Unknown service account."),
        "{err}"
    );
}

#[tokio::test]
async fn metadata_source_rejects_odd_service_account_names() {
    let source = TokenSource::MetadataServer {
        base_url: "http://127.0.0.1:9".into(),
        service_account: "default/../../attributes".into(),
    };
    let err = source.fetch(&client()).await.expect_err("refused");
    assert!(matches!(err, TokenError::InvalidUrl { .. }), "{err:?}");
}

#[tokio::test]
async fn responder_without_metadata_flavor_is_refused() {
    // Answers like the metadata server would, but without the response header.
    let router = Router::new().route(
        "/computeMetadata/v1/instance/service-accounts/{account}/token",
        get(|| async {
            json_response(
                StatusCode::OK,
                r#"{"access_token":"ya29.impostor","expires_in":3599,"token_type":"Bearer"}"#
                    .into(),
            )
        }),
    );
    let addr = serve(router).await;
    let source = TokenSource::MetadataServer {
        base_url: format!("http://{addr}"),
        service_account: "default".into(),
    };
    let err = source.fetch(&client()).await.expect_err("refused");
    assert!(
        matches!(err, TokenError::NotMetadataServer { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Metadata-Flavor"), "{err}");
    assert!(!err.to_string().contains("ya29.impostor"));
    assert!(!format!("{err:?}").contains("ya29.impostor"));
}

#[test]
fn metadata_source_from_env_defaults() {
    // Only reads the environment; the variable is not set in the test environment unless a
    // developer runs on a GCE/GKE-like setup with an emulator.
    let TokenSource::MetadataServer {
        base_url,
        service_account,
    } = TokenSource::metadata_server_from_env()
    else {
        panic!("expected a metadata-server source");
    };
    assert_eq!(service_account, "default");
    match std::env::var("GCE_METADATA_HOST") {
        Ok(host) if !host.trim().is_empty() => assert!(base_url.contains(host.trim())),
        _ => assert_eq!(base_url, "http://metadata.google.internal"),
    }
}

// ---------------------------------------------------------------------------------------------
// refresh_at (pure)

fn token_with_lifetime(secs: f64) -> (AccessToken, SystemTime) {
    let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    (
        AccessToken::new(
            "ya29.refresh",
            issued,
            issued + Duration::from_secs_f64(secs),
        ),
        issued,
    )
}

#[test]
fn refresh_at_is_half_life_with_jitter_for_hour_tokens() {
    let (token, issued) = token_with_lifetime(3600.0);
    let offset = |jitter: f64| {
        token
            .refresh_at(issued, jitter)
            .duration_since(issued)
            .unwrap()
    };
    assert_eq!(offset(0.0), Duration::from_secs(1800));
    assert_eq!(offset(0.1), Duration::from_secs(1980));
    assert_eq!(offset(-0.1), Duration::from_secs(1620));
    // Out-of-range jitter is clamped; a non-finite one counts as none.
    assert_eq!(offset(5.0), Duration::from_secs(1980));
    assert_eq!(offset(-5.0), Duration::from_secs(1620));
    assert_eq!(offset(f64::NAN), Duration::from_secs(1800));
    assert_eq!(offset(f64::INFINITY), Duration::from_secs(1800));

    let latest = token.expires_at() - REFRESH_MARGIN;
    for i in -100..=100 {
        let at = token.refresh_at(issued, f64::from(i) / 1000.0);
        assert!(at <= latest);
        assert!(at >= issued + Duration::from_secs(1620));
    }
    for _ in 0..1000 {
        let at = token.refresh_at(issued, random_jitter());
        assert!(
            at >= issued + Duration::from_secs(1620) && at <= issued + Duration::from_secs(1980)
        );
    }
}

#[test]
fn refresh_at_keeps_five_minutes_when_the_lifetime_allows() {
    // Half-life (270..330 s) would come within 5 min of expiry: capped at 300 s.
    let (token, issued) = token_with_lifetime(600.0);
    for jitter in [-0.1, 0.0, 0.1] {
        let at = token.refresh_at(issued, jitter);
        assert!(at <= token.expires_at() - REFRESH_MARGIN, "{jitter}");
        assert!(at >= issued + Duration::from_secs(150), "{jitter}");
    }
    assert_eq!(
        token
            .refresh_at(issued, 0.1)
            .duration_since(issued)
            .unwrap(),
        Duration::from_secs(300)
    );
}

#[test]
fn refresh_at_is_sensible_for_short_tokens() {
    for secs in [2.0, 60.0, 299.0, 301.0, 390.0] {
        let (token, issued) = token_with_lifetime(secs);
        for jitter in [-0.1, 0.0, 0.1] {
            let at = token.refresh_at(issued, jitter);
            let offset = at.duration_since(issued).unwrap().as_secs_f64();
            // Never immediately, never after expiry: at least ~22 % of the lifetime left and
            // at least ~22 % used.
            assert!(offset >= secs * 0.225 - 1e-6, "{secs} {jitter} {offset}");
            assert!(offset <= secs * 0.55 + 1e-6, "{secs} {jitter} {offset}");
            assert!(at < token.expires_at());
        }
    }
    let (token, issued) = token_with_lifetime(2.0);
    assert_eq!(
        token
            .refresh_at(issued, 0.0)
            .duration_since(issued)
            .unwrap(),
        Duration::from_millis(500)
    );
    // An issue time after expiry means: refresh now.
    let late = token.expires_at() + Duration::from_secs(10);
    assert_eq!(token.refresh_at(late, 0.0), late);
}

// ---------------------------------------------------------------------------------------------
// No secrets in Debug / Display

#[test]
fn debug_and_display_never_show_the_token_or_the_key() {
    let (token, _) = token_with_lifetime(3600.0);
    let token = AccessToken::new("ya29.super-secret", token.issued_at(), token.expires_at());
    for text in [
        format!("{token:?}"),
        token.to_string(),
        format!("{token:#?}"),
    ] {
        assert!(!text.contains("ya29.super-secret"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
    assert_eq!(token.secret(), "ya29.super-secret");

    let pem = &keys()[0].private_pem;
    let key = ServiceAccountKey::parse(key_json(pem, None).as_bytes()).unwrap();
    let debug = format!(
        "{key:?} {key:#?} {:?}",
        TokenSource::ServiceAccountKey(key.clone())
    );
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    for line in pem_body_lines(pem) {
        assert!(!debug.contains(line));
    }
    assert!(debug.contains(CLIENT_EMAIL));
    assert!(debug.contains("<redacted>"));
}

// ---------------------------------------------------------------------------------------------
// ServiceAccountKey::parse

#[test]
fn parse_reads_a_google_key_file() {
    let pem = &keys()[0].private_pem;
    let key = ServiceAccountKey::parse(key_json(pem, None).as_bytes()).unwrap();
    assert_eq!(key.client_email(), CLIENT_EMAIL);
    assert_eq!(key.private_key_id(), Some(KEY_ID));
    assert_eq!(key.token_uri(), DEFAULT_TOKEN_URI);

    let key = ServiceAccountKey::parse(
        key_json(pem, Some("https://oauth2.example.test/token")).as_bytes(),
    )
    .unwrap();
    assert_eq!(key.token_uri(), "https://oauth2.example.test/token");

    // private_key_id is optional.
    let mut v: serde_json::Value = serde_json::from_str(&key_json(pem, None)).unwrap();
    v.as_object_mut().unwrap().remove("private_key_id");
    let key = ServiceAccountKey::parse(v.to_string().as_bytes()).unwrap();
    assert_eq!(key.private_key_id(), None);
}

#[test]
fn parse_errors_name_the_problem_without_echoing_the_key() {
    let pem = &keys()[0].private_pem;
    let base: serde_json::Value = serde_json::from_str(&key_json(pem, None)).unwrap();
    let with = |change: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut v = base.clone();
        change(v.as_object_mut().unwrap());
        v.to_string()
    };
    // A PEM with its middle cut out, and one whose base64 is damaged.
    let lines: Vec<&str> = pem.lines().collect();
    let truncated = format!("{}\n{}\n", lines[0], lines[1]);
    let damaged = pem.replacen(lines[3], &"!".repeat(lines[3].len()), 1);

    let cases: Vec<(String, &str)> = vec![
        (
            with(&|m| {
                m.remove("client_email");
            }),
            "missing field \"client_email\"",
        ),
        (
            with(&|m| {
                m.insert("client_email".into(), "".into());
            }),
            "missing field \"client_email\"",
        ),
        (
            with(&|m| {
                m.remove("private_key");
            }),
            "missing field \"private_key\"",
        ),
        (
            with(&|m| {
                m.remove("type");
            }),
            "missing field \"type\"",
        ),
        (
            with(&|m| {
                m.insert("type".into(), "authorized_user".into());
            }),
            "\"type\" is \"authorized_user\", expected \"service_account\"",
        ),
        (
            with(&|m| {
                m.insert("type".into(), "external_account".into());
            }),
            "expected \"service_account\"",
        ),
        (
            with(&|m| {
                m.insert("private_key".into(), "not a pem".into());
            }),
            "does not hold a PEM-encoded private key",
        ),
        (
            with(&|m| {
                m.insert("private_key".into(), truncated.clone().into());
            }),
            "\"private_key\"",
        ),
        (
            with(&|m| {
                m.insert("private_key".into(), damaged.clone().into());
            }),
            "\"private_key\"",
        ),
        (
            with(&|m| {
                m.insert("private_key".into(), 42.into());
            }),
            "wrong JSON type",
        ),
        (
            with(&|m| {
                m.insert("token_uri".into(), "ftp://example.test/token".into());
            }),
            "\"token_uri\"",
        ),
        (
            with(&|m| {
                m.insert("token_uri".into(), "/token".into());
            }),
            "not an absolute URL",
        ),
        (pem.clone(), "not valid JSON"),
        (key_json(pem, None)[..200].to_owned(), "truncated JSON"),
    ];
    for (input, expected) in cases {
        let err = ServiceAccountKey::parse(input.as_bytes()).expect_err(expected);
        assert!(matches!(err, TokenError::InvalidKey(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(expected), "{message} / {expected}");
        let debug = format!("{err:?}");
        for text in [&message, &debug] {
            assert!(!text.contains("PRIVATE KEY"), "{text}");
            for line in pem_body_lines(pem) {
                assert!(!text.contains(line), "{text}");
            }
        }
    }
}

#[test]
fn parse_rejects_non_rsa_and_small_keys() {
    // An EC key (rcgen makes one with ring) is not what Google issues.
    let ec = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let err = ServiceAccountKey::parse(key_json(&ec, None).as_bytes()).expect_err("EC key");
    assert!(err.to_string().contains("\"private_key\""), "{err}");
    assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");

    // ring refuses RSA keys under 2048 bits.
    let small = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024)
        .unwrap()
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap()
        .to_string();
    let err = ServiceAccountKey::parse(key_json(&small, None).as_bytes()).expect_err("small key");
    assert!(err.to_string().contains("not a usable RSA key"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Workload Identity Federation

fn external_account(config: &str) -> TokenSource {
    TokenSource::ExternalAccount(ExternalAccount::parse(config.as_bytes()).expect("config"))
}

/// A federation source whose subject token file holds `subject` (none: no file yet); the
/// temporary directory holds the file.
fn federation_source(
    base: &str,
    audience: &str,
    subject: Option<&str>,
    lifetime_secs: Option<u64>,
) -> (tempfile::TempDir, std::path::PathBuf, TokenSource) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    if let Some(subject) = subject {
        std::fs::write(&token_file, subject).unwrap();
    }
    let source = external_account(&credential_config(
        base,
        audience,
        &token_file,
        lifetime_secs,
    ));
    (dir, token_file, source)
}

#[tokio::test]
async fn federation_exchanges_the_subject_token_then_impersonates_with_the_federated_token() {
    let (fed, base) = federation_endpoints().await;
    let (_dir, _, source) = federation_source(
        &base,
        WIF_AUDIENCE,
        Some("eyJhbGciOiJSUzI1NiJ9.subject-one.sig\n"),
        Some(3600),
    );

    let before = SystemTime::now();
    let token = source.fetch(&client()).await.expect("token");
    assert_eq!(token.secret(), "ya29.impersonated-1");
    // expireTime has whole seconds: the expiry is the IAM answer's, about an hour away.
    let lifetime = token.expires_at().duration_since(before).unwrap();
    assert!((3598..=3601).contains(&lifetime.as_secs()), "{lifetime:?}");

    let exchanges = fed.exchanges.lock().unwrap().clone();
    assert_eq!(exchanges.len(), 1);
    let mut form = exchanges[0].clone();
    form.sort();
    let expected: Vec<(String, String)> = [
        ("audience", WIF_AUDIENCE),
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("scope", REGISTRY_READ_SCOPES),
        ("subject_token", "eyJhbGciOiJSUzI1NiJ9.subject-one.sig"),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(form, expected);
    assert_eq!(
        *fed.iam_authorizations.lock().unwrap(),
        ["Bearer ya29.federated-1"]
    );
    assert_eq!(fed.impersonated_issued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn federation_asks_for_the_configured_lifetime() {
    let (fed, base) = federation_endpoints().await;
    *fed.expected_lifetime.lock().unwrap() = "1200s".into();
    fed.iam_lifetime_secs.store(1200, Ordering::SeqCst);
    let (_dir, _, source) = federation_source(&base, WIF_AUDIENCE, Some("subject"), Some(1200));
    let token = source.fetch(&client()).await.expect("token");
    let lifetime = token.remaining(token.issued_at()).as_secs();
    assert!((1198..=1201).contains(&lifetime), "{lifetime}");
}

#[tokio::test]
async fn rotated_subject_token_file_is_sent_on_the_next_exchange() {
    let (fed, base) = federation_endpoints().await;
    let dir = tempfile::tempdir().unwrap();
    let mut volume = support::KubeletDir::create(dir.path(), &[("token", b"subject-before")]);
    let token_file = volume.path().join("token");
    let source = external_account(&credential_config(&base, WIF_AUDIENCE, &token_file, None));
    let http = client();
    assert_eq!(
        source.fetch(&http).await.expect("first").secret(),
        "ya29.federated-1"
    );
    // The kubelet rotates the projected token by swapping `..data`.
    volume.update(&[("token", b"subject-after")]);
    assert_eq!(
        source.fetch(&http).await.expect("second").secret(),
        "ya29.federated-2"
    );
    assert_eq!(
        *fed.subject_tokens.lock().unwrap(),
        ["subject-before", "subject-after"]
    );
}

#[tokio::test]
async fn sts_invalid_grant_names_the_audience() {
    let (fed, base) = federation_endpoints().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "subject-for-wrong-audience").unwrap();
    let wrong = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/home-lab/providers/other-cluster";
    let source = external_account(&credential_config(&base, wrong, &token_file, Some(3600)));
    let err = source.fetch(&client()).await.expect_err("wrong audience");
    let text = err.to_string();
    assert!(
        matches!(err, TokenError::Exchange { ref audience, .. } if audience == wrong),
        "{err:?}"
    );
    assert!(text.contains(wrong), "{text}");
    assert!(text.contains("HTTP 400: invalid_grant"), "{text}");
    assert!(!text.contains("subject-for-wrong-audience"), "{text}");
    assert_eq!(err.http_status(), Some(400));
    assert!(!err.is_retryable());
    assert!(
        fed.iam_authorizations.lock().unwrap().is_empty(),
        "no impersonation after a failed exchange"
    );
}

#[tokio::test]
async fn iam_403_names_the_service_account_and_the_audience() {
    let (fed, base) = federation_endpoints().await;
    fed.iam_forbidden.store(true, Ordering::SeqCst);
    let (_dir, _, source) = federation_source(&base, WIF_AUDIENCE, Some("subject"), Some(3600));
    let err = source.fetch(&client()).await.expect_err("forbidden");
    let text = err.to_string();
    assert!(matches!(err, TokenError::Impersonation { .. }), "{err:?}");
    assert!(text.contains(CLIENT_EMAIL), "{text}");
    assert!(text.contains(WIF_AUDIENCE), "{text}");
    assert!(text.contains("HTTP 403: PERMISSION_DENIED"), "{text}");
    assert!(
        !text.contains("ya29.federated"),
        "the federated token is not shown: {text}"
    );
    assert_eq!(err.http_status(), Some(403));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn missing_subject_token_file_is_a_clear_retryable_error_until_it_appears() {
    let (fed, base) = federation_endpoints().await;
    let (_dir, token_file, source) = federation_source(&base, WIF_AUDIENCE, None, None);
    let http = client();
    let err = source.fetch(&http).await.expect_err("no file yet");
    assert!(matches!(err, TokenError::SubjectToken { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("subject token file"), "{text}");
    assert!(text.contains(&token_file.display().to_string()), "{text}");
    assert!(err.is_retryable());
    assert!(
        fed.exchanges.lock().unwrap().is_empty(),
        "nothing is sent without a token"
    );

    std::fs::write(&token_file, "subject-late").unwrap();
    assert_eq!(
        source.fetch(&http).await.expect("token").secret(),
        "ya29.federated-1"
    );
}

#[tokio::test]
async fn no_impersonation_ten_minute_sts_token_is_refreshed_before_it_expires() {
    let (fed, base) = federation_endpoints().await;
    fed.sts_lifetime_secs.store(600, Ordering::SeqCst);
    let (_dir, _, source) = federation_source(&base, WIF_AUDIENCE, Some("subject"), None);
    let token = source.fetch(&client()).await.expect("token");
    assert_eq!(token.secret(), "ya29.federated-1");
    // The access token is the federated one: its life is STS's `expires_in`, not an hour.
    assert_eq!(
        token.expires_at(),
        token.issued_at() + Duration::from_secs(600)
    );
    for jitter in [-0.1, 0.0, 0.1, random_jitter()] {
        let refresh = token.refresh_at(token.issued_at(), jitter);
        assert!(
            refresh + REFRESH_MARGIN <= token.expires_at(),
            "jitter {jitter}: refresh {:?} after issue",
            refresh.duration_since(token.issued_at()).unwrap()
        );
        assert!(refresh > token.issued_at() + Duration::from_secs(60));
    }
    assert!(fed.iam_authorizations.lock().unwrap().is_empty());
}

#[test]
fn external_account_debug_and_errors_show_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = credential_config(
        "https://sts.example",
        WIF_AUDIENCE,
        &dir.path().join("t"),
        None,
    );
    let account = ExternalAccount::parse(config.as_bytes()).expect("config");
    // Nothing in it is secret; the debug form shows where the token comes from.
    let debug = format!("{account:?}");
    assert!(
        debug.contains("token_url") && debug.contains(WIF_AUDIENCE),
        "{debug}"
    );
    let http_outside_loopback = credential_config(
        "http://sts.example",
        WIF_AUDIENCE,
        &dir.path().join("t"),
        None,
    );
    let err = ExternalAccount::parse(http_outside_loopback.as_bytes()).expect_err("http");
    assert!(err.to_string().contains("must use https"), "{err}");
}

#[tokio::test]
async fn json_subject_token_is_read_from_its_field_and_oversized_files_are_refused() {
    let (fed, base) = federation_endpoints().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token.json");
    std::fs::write(
        &token_file,
        r#"{"id_token": "subject-from-json", "other": 1}"#,
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&credential_config(&base, WIF_AUDIENCE, &token_file, None)).unwrap();
    config["credential_source"]["format"] =
        serde_json::json!({"type": "json", "subject_token_field_name": "id_token"});
    let source = external_account(&config.to_string());
    let http = client();
    source.fetch(&http).await.expect("token");
    assert_eq!(*fed.subject_tokens.lock().unwrap(), ["subject-from-json"]);

    std::fs::write(&token_file, vec![b'x'; 100 * 1024]).unwrap();
    let err = source.fetch(&http).await.expect_err("oversized");
    assert!(err.to_string().contains("larger than"), "{err}");
    assert_eq!(fed.exchanges.lock().unwrap().len(), 1, "nothing sent");
}
