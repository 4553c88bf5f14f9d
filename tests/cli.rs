//! The binary as users run it: the offline preview, check-config, dev-certs and `serve` with SIGTERM.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_pullsecret-injector");

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// `mutate` with the example config, the Pod on standard input, and `extra` arguments.
fn mutate_stdin(extra: &[&str], pod: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args([
            "mutate",
            "--config",
            &repo("examples/config.yaml"),
            "-f",
            "-",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pod.as_bytes())
        .expect("write");
    child.wait_with_output().expect("wait")
}

/// Fails with the command's standard error unless it succeeded.
fn assert_success(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `configs` of a rendered registries.yaml, with each GCP host's login checked: username
/// `_json_key`, the key file's text without its trailing newlines as the password.
fn k3s_configs_with_json_key(
    text: &str,
    key: &str,
    hosts: &[&str],
) -> serde_json::Map<String, serde_json::Value> {
    let parsed: serde_json::Value = serde_norway::from_str(text).expect("registries.yaml is YAML");
    let configs = parsed["configs"].as_object().expect("configs").clone();
    for host in hosts {
        assert_eq!(configs[*host]["auth"]["username"], "_json_key", "{host}");
        // Byte-exact: what `--docker-password="$(cat key.json)"` would pass.
        assert_eq!(
            configs[*host]["auth"]["password"]
                .as_str()
                .expect("password")
                .as_bytes(),
            key.trim_end_matches('\n').as_bytes(),
            "{host}"
        );
    }
    configs
}

#[test]
fn mutate_prints_the_patch_for_the_example_pod() {
    let output = Command::new(BIN)
        .args([
            "mutate",
            "--config",
            &repo("examples/config.yaml"),
            "-f",
            &repo("examples/pod.yaml"),
        ])
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let patch: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("JSON patch on stdout");
    assert_eq!(
        patch,
        serde_json::json!([{"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "gcr-pull"}]}])
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Warning: pullsecret-injector: added imagePullSecret \"gcr-pull\""),
        "{stderr}"
    );
}

#[test]
fn mutate_reads_json_from_stdin_and_prints_the_pod() {
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"imagePullSecrets":[{"name":"mine"}],"containers":[{"name":"a","image":"us-docker.pkg.dev/p/r/a:1"}]}}"#;
    let output = mutate_stdin(&["-o", "pod", "-n", "team-b"], pod);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mutated: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON pod");
    assert_eq!(
        mutated["spec"]["imagePullSecrets"],
        serde_json::json!([{"name": "mine"}, {"name": "gcr-pull"}])
    );
}

#[test]
fn mutate_yaml_pod_output_is_yaml() {
    let output = Command::new(BIN)
        .args([
            "mutate",
            "--config",
            &repo("examples/config.yaml"),
            "-f",
            &repo("examples/pod.yaml"),
            "-o",
            "pod",
        ])
        .output()
        .expect("run");
    assert!(output.status.success());
    let pod: serde_json::Value = serde_norway::from_slice(&output.stdout).expect("YAML pod");
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        serde_json::json!([{"name": "gcr-pull"}])
    );
    assert_eq!(pod["spec"]["containers"][1]["image"], "nginx:1.27");
}

#[test]
fn mutate_refuses_bad_input_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\n",
            "expected a Pod",
        ),
        ("broken.yaml", "spec: [\n", "not valid YAML or JSON"),
        ("broken.json", "{\"spec\": ", "not valid YAML or JSON"),
        ("scalar.yaml", "just text\n", "must be a mapping"),
    ];
    for (name, text, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let output = Command::new(BIN)
            .args(["mutate", "--config", &repo("examples/config.yaml"), "-f"])
            .arg(&path)
            .output()
            .expect("run");
        assert!(!output.status.success(), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{name}: {stderr}");
    }
}

#[test]
fn check_config_accepts_the_example_and_names_bad_fields() {
    let output = Command::new(BIN)
        .args(["check-config", "--config", &repo("examples/config.yaml")])
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(
        "registry gcp: Secret gcr-pull for gcr.io, *.gcr.io, *-docker.pkg.dev, docker.*.rep.pkg.dev"
    ));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "registries:\n- {name: gcp, hosts: ['*.gcr..io'], secretName: gcr-pull}\n",
    )
    .expect("write");
    let output = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("registries[0].hosts[0]"), "{stderr}");
}

#[test]
fn serve_reads_flags_from_the_environment_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let output = Command::new(BIN)
        .args(["dev-certs", "--out"])
        .arg(&certs)
        .output()
        .expect("dev-certs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(certs.join(file).is_file(), "{file}");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(BIN)
        .arg("serve")
        .env("PULLSECRET_INJECTOR_CONFIG", repo("examples/config.yaml"))
        .env("PULLSECRET_INJECTOR_TLS_DIR", &certs)
        .env("PULLSECRET_INJECTOR_LISTEN", format!("127.0.0.1:{port}"))
        .env("PULLSECRET_INJECTOR_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let ca = std::fs::read_to_string(certs.join("ca.crt")).expect("ca");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let status = runtime.block_on(async {
        let client =
            support::TlsClient::new(format!("127.0.0.1:{port}").parse().expect("addr"), &ca);
        let connected = support::eventually(Duration::from_secs(30), || async {
            client.connect().await.is_ok()
        })
        .await;
        assert!(connected, "server did not come up");
        let mut conn = client.connect().await.expect("connect");
        let body = std::fs::read(repo("examples/review.json")).expect("review");
        let reply = conn.review(body).await;
        reply.json()["response"]["patchType"].clone()
    });
    assert_eq!(status, "JSONPatch");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "exit status {:?}", output.status);
    let logs = String::from_utf8_lossy(&output.stderr);
    let last: serde_json::Value =
        serde_json::from_str(logs.lines().last().expect("a log line")).expect("JSON logs");
    assert_eq!(last["message"], "stopped", "{logs}");
}

#[test]
fn k3s_registries_renders_a_registries_yaml_whose_passwords_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = support::service_account_key("k1");
    std::fs::write(dir.path().join("key.json"), &key).expect("key");
    std::fs::write(dir.path().join("username"), "ci\n").expect("user");
    std::fs::write(
        dir.path().join("password"),
        "p@ss: \"word\" # not a comment\n",
    )
    .expect("pass");
    let config = dir.path().join("config.yaml");
    let d = dir.path().display();
    std::fs::write(
        &config,
        format!(
            "registries:\n\
             - {{name: gcp, preset: gcp, secretName: gcr-pull, credentials: {{gcpJsonKey: {{file: {d}/key.json}}}}}}\n\
             - {{name: lab, hosts: ['registry.lab:5000'], secretName: lab-pull, credentials: {{basicAuth: {{usernameFile: {d}/username, passwordFile: {d}/password}}}}}}\n"
        ),
    )
    .expect("config");
    let out = dir.path().join("registries.yaml");
    let output = Command::new(BIN)
        .args(["k3s-registries", "--config"])
        .arg(&config)
        .args([
            "--host",
            "europe-west1-docker.pkg.dev",
            "--mirror",
            "docker.io=https://mirror.lab",
            "-o",
        ])
        .arg(&out)
        .output()
        .expect("run");
    assert_success(&output, "k3s-registries");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("docker.*.rep.pkg.dev (gcp) is a wildcard pattern"),
        "{stderr}"
    );

    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&out).expect("read");
    let parsed: serde_json::Value = serde_norway::from_str(&text).expect("registries.yaml is YAML");
    let configs = k3s_configs_with_json_key(
        &text,
        &key,
        &["gcr.io", "eu.gcr.io", "europe-west1-docker.pkg.dev"],
    );
    let hosts: Vec<&str> = configs.keys().map(String::as_str).collect();
    assert_eq!(
        hosts,
        [
            "asia.gcr.io",
            "eu.gcr.io",
            "europe-west1-docker.pkg.dev",
            "gcr.io",
            "marketplace.gcr.io",
            "registry.lab:5000",
            "us.gcr.io"
        ]
    );
    assert_eq!(
        configs["registry.lab:5000"]["auth"]["password"],
        "p@ss: \"word\" # not a comment"
    );
    assert_eq!(
        parsed["mirrors"]["docker.io"]["endpoint"][0],
        "https://mirror.lab"
    );
    // The header tells what --host covered and what is left.
    assert!(
        !text.contains("# Not included: *-docker.pkg.dev"),
        "--host covered it: {text}"
    );
    assert!(
        text.contains(
            "# Wildcard *-docker.pkg.dev (gcp) as europe-west1-docker.pkg.dev (from --host)"
        ),
        "{text}"
    );
    assert!(
        text.contains("# Not included: docker.*.rep.pkg.dev (gcp)"),
        "{text}"
    );
    assert!(!stderr.contains("*-docker.pkg.dev (gcp)"), "{stderr}");
    // The key sits on one line: the file has as many lines as its structure needs.
    assert!(
        text.lines().all(|line| !line.starts_with("  \"type\"")),
        "{text}"
    );

    let output = Command::new(BIN)
        .args(["k3s-registries", "--config"])
        .arg(&config)
        .args(["--host", "quay.io"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("matches no registry entry"));
}

/// Runs `check-config` on `config` (written into `dir`): (success, stdout + stderr).
fn check_config(dir: &std::path::Path, config: &str) -> (bool, String) {
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).expect("config");
    let output = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn check_config_fails_naming_each_unusable_credential_file_and_the_reason_never_its_content() {
    const USER: &str = "robot-user-Zq9Zq9Zq9";
    const SECRET: &str = "Pw-S3cr3t-Zq9Zq9Zq9";
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let write = |name: &str, content: &str| {
        std::fs::write(dir.path().join(name), content).expect("write");
    };
    // Good files, for the parts of each case that must not be reported.
    write("good-key.json", &support::service_account_key("good"));
    write("username", &format!("{USER}\n"));
    write("password", &format!("{SECRET}\n"));
    write("empty-password", "\n");
    write(
        "user-credentials.json",
        &format!(
            "{{\"type\": \"authorized_user\", \"client_id\": \"764086051850\", \"client_secret\": \"{SECRET}\", \"refresh_token\": \"1//{SECRET}\"}}\n"
        ),
    );
    write(
        "no-email.json",
        &format!(
            "{{\"type\": \"service_account\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\\n{SECRET}\\n-----END PRIVATE KEY-----\\n\"}}\n"
        ),
    );
    write(
        "broken.dockerconfigjson",
        &format!("{{\"auths\": {{\"registry.lab\": {{\"auth\": \"{SECRET}\"}}"),
    );
    let entry = |credentials: &str| {
        format!(
            "registries:\n- {{name: lab, hosts: [registry.lab], secretName: lab-pull, credentials: {credentials}}}\n"
        )
    };
    // (credentials, the file that must be named, the reason)
    let cases = [
        (
            format!("{{gcpJsonKey: {{file: {d}/missing.json}}}}"),
            format!("{d}/missing.json"),
            "cannot read",
        ),
        (
            format!(
                "{{basicAuth: {{usernameFile: {d}/username, passwordFile: {d}/empty-password}}}}"
            ),
            format!("{d}/empty-password"),
            "the password is empty",
        ),
        (
            format!("{{gcpJsonKey: {{file: {d}/user-credentials.json}}}}"),
            format!("{d}/user-credentials.json"),
            "is not a GCP service-account key: `type` is not \"service_account\"",
        ),
        (
            format!("{{gcpJsonKey: {{file: {d}/no-email.json}}}}"),
            format!("{d}/no-email.json"),
            "is not a GCP service-account key: `client_email` is missing",
        ),
        (
            format!("{{dockerConfigJson: {{file: {d}/broken.dockerconfigjson}}}}"),
            format!("{d}/broken.dockerconfigjson"),
            "is not a .dockerconfigjson: not JSON",
        ),
    ];
    for (credentials, file, reason) in &cases {
        let (ok, output) = check_config(dir.path(), &entry(credentials));
        assert!(!ok, "{credentials}: accepted\n{output}");
        let line = output
            .lines()
            .find(|line| line.contains(file.as_str()))
            .unwrap_or_else(|| panic!("{file} not named:\n{output}"));
        assert!(line.contains(reason), "{line}");
        assert!(line.contains("registry \"lab\""), "{line}");
        for secret in [USER, SECRET, "S3cr3t", "764086051850"] {
            assert!(!output.contains(secret), "{secret} in:\n{output}");
        }
    }

    // Every problem at once, and only the problems: the good files are not reported.
    let all = format!(
        "registries:\n\
         - {{name: a, hosts: [a.lab], secretName: a, credentials: {{gcpJsonKey: {{file: {d}/missing.json}}}}}}\n\
         - {{name: b, hosts: [b.lab], secretName: b, credentials: {{basicAuth: {{usernameFile: {d}/no-username, passwordFile: {d}/empty-password}}}}}}\n\
         - {{name: c, hosts: [c.lab], secretName: c, credentials: {{dockerConfigJson: {{file: {d}/broken.dockerconfigjson}}}}}}\n\
         - {{name: d, hosts: [d.lab], secretName: d, credentials: {{gcpJsonKey: {{file: {d}/good-key.json}}}}}}\n\
         - {{name: e, hosts: [e.lab], secretName: e, credentials: {{basicAuth: {{usernameFile: {d}/username, passwordFile: {d}/password}}}}}}\n"
    );
    let (ok, output) = check_config(dir.path(), &all);
    assert!(!ok, "{output}");
    let problems: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("  - registry"))
        .collect();
    assert_eq!(problems.len(), 4, "{output}");
    for file in [
        "missing.json",
        "no-username",
        "empty-password",
        "broken.dockerconfigjson",
    ] {
        assert!(output.contains(&format!("{d}/{file}")), "{file}: {output}");
    }
    assert!(!output.contains("good-key.json"), "{output}");
    assert!(!output.contains(SECRET), "{output}");

    // The same entries with their files fixed pass.
    let fixed = all
        .replace("missing.json", "good-key.json")
        .replace("no-username", "username")
        .replace("empty-password", "password")
        .replace(
            &format!("{{dockerConfigJson: {{file: {d}/broken.dockerconfigjson}}}}"),
            "{gcpWorkloadIdentity: {}}",
        );
    let (ok, output) = check_config(dir.path(), &fixed);
    assert!(ok, "{output}");
    assert!(output.contains(": valid"), "{output}");
    for secret in [USER, SECRET] {
        assert!(!output.contains(secret), "{secret} in:\n{output}");
    }
}

#[test]
fn check_config_names_wrong_typed_credential_fields_never_their_values() {
    const PASSWORD: &str = "ci-robot:Pw-S3cr3t";
    let key = support::service_account_key("pasted");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "registries:\n\
         - name: lab\n  hosts: [registry.lab]\n  secretName: lab-pull\n  credentials:\n    basicAuth: \"{PASSWORD}\"\n\
         - name: gcp\n  preset: gcp\n  secretName: gcr-pull\n  credentials:\n    gcpJsonKey: {}\n\
         failureMode: sometimes\n",
        serde_json::to_string(&key).expect("key as a YAML string")
    );
    let (ok, output) = check_config(dir.path(), &config);
    assert!(!ok, "{output}");
    assert!(
        output.contains("config.yaml: config is invalid"),
        "{output}"
    );
    assert!(
        output.contains("registries[0].credentials.basicAuth: expected a mapping, found a string"),
        "{output}"
    );
    assert!(
        output.contains("registries[1].credentials.gcpJsonKey: expected a mapping, found a string"),
        "{output}"
    );
    assert!(output.contains("failureMode"), "{output}");
    for secret in [
        "S3cr3t",
        "ci-robot",
        "PRIVATE KEY",
        "service_account",
        "acme-prod",
    ] {
        assert!(!output.contains(secret), "{secret} in:\n{output}");
    }
}

/// When the preview prints no patch, it says why on standard error.
#[test]
fn mutate_says_why_there_is_no_patch() {
    let cases = [
        (
            "no image matches",
            r#"{"kind":"Pod","spec":{"containers":[{"name":"a","image":"nginx"}]}}"#,
            "team-a",
            "No patch: no image matches a configured registry",
        ),
        (
            "skipped namespace",
            r#"{"kind":"Pod","spec":{"containers":[{"name":"a","image":"gcr.io/p/a"}]}}"#,
            "kube-system",
            "No patch: namespace kube-system is skipped by the config",
        ),
        (
            "opted out",
            r#"{"kind":"Pod","metadata":{"labels":{"pullsecret-injector.io/skip":"true"}},"spec":{"containers":[{"name":"a","image":"gcr.io/p/a"}]}}"#,
            "team-a",
            "No patch: the Pod opted out with label pullsecret-injector.io/skip=true",
        ),
        (
            "already referenced",
            r#"{"kind":"Pod","spec":{"imagePullSecrets":[{"name":"gcr-pull"}],"containers":[{"name":"a","image":"gcr.io/p/a"}]}}"#,
            "team-a",
            "No patch: the Pod already lists the pull Secret(s) it needs: gcr-pull",
        ),
    ];
    for (name, pod, namespace, expected) in cases {
        let output = mutate_stdin(&["-n", namespace], pod);
        assert!(output.status.success(), "{name}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "[]",
            "{name}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
}

#[test]
fn mutate_names_an_empty_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("pod.yaml");
    std::fs::write(&empty, "\n  \n").expect("write");
    let output = Command::new(BIN)
        .args(["mutate", "--config", &repo("examples/config.yaml"), "-f"])
        .arg(&empty)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{} is empty", empty.display())),
        "{stderr}"
    );
}

/// check-config speaks the config's words, not Rust's.
#[test]
fn check_config_prints_plain_words() {
    let output = Command::new(BIN)
        .args(["check-config", "--config", &repo("examples/config.yaml")])
        .output()
        .expect("run");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for rust in ["Some(", "None", "Allow", "Deny", "Source", "{", "\""] {
        assert!(!stdout.contains(rust), "{rust:?} in {stdout}");
    }
    for words in [
        "registry gcp: Secret gcr-pull for gcr.io",
        "opt-out label: pullsecret-injector.io/skip",
        "failure mode: allow",
    ] {
        assert!(stdout.contains(words), "{words:?} not in {stdout}");
    }
}

/// `--listen` takes a host name as well as an address.
#[test]
fn serve_listens_on_a_host_name() {
    use clap::Parser as _;
    use pullsecret_injector::cli::{Cli, Command as Sub};
    let parse = |listen: &str| {
        Cli::try_parse_from([
            "pullsecret-injector",
            "serve",
            "--config",
            "c.yaml",
            "--tls-dir",
            "tls",
            "--listen",
            listen,
        ])
    };
    match parse("localhost:8443")
        .expect("a host name is accepted")
        .command
    {
        Sub::Serve(args) => {
            assert!(args.listen.ip().is_loopback(), "{}", args.listen);
            assert_eq!(args.listen.port(), 8443);
        }
        _ => panic!("not serve"),
    }
    assert!(parse("127.0.0.1:9443").is_ok());
    assert!(parse("localhost").is_err(), "a port is required");
}

/// `-o pod` prints the Pod with its own key order (YAML in, YAML out; JSON in, JSON out), the added
/// `imagePullSecrets` last in `spec`; the patch itself is byte for byte what the README shows.
#[test]
fn mutate_pod_output_keeps_the_pods_key_order() {
    let yaml = "kind: Pod\napiVersion: v1\nmetadata:\n  namespace: team-a\n  name: api\n  labels:\n    zeta: \"1\"\n    alpha: \"2\"\nspec:\n  containers:\n    - name: api\n      image: eu.gcr.io/acme-prod/api:1.8.0\n      command: [serve]\n  restartPolicy: Always\n";
    let json = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"namespace":"team-a","name":"api","labels":{"zeta":"1","alpha":"2"}},"spec":{"containers":[{"name":"api","image":"eu.gcr.io/acme-prod/api:1.8.0","command":["serve"]}],"restartPolicy":"Always"}}"#;
    // Every mapping's keys, in the order the text gives them.
    fn key_order(value: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                out.push(format!("{path}: {:?}", map.keys().collect::<Vec<_>>()));
                for (k, v) in map {
                    key_order(v, &format!("{path}/{k}"), out);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    key_order(v, &format!("{path}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let want = [
        r#": ["kind", "apiVersion", "metadata", "spec"]"#,
        r#"/metadata: ["namespace", "name", "labels"]"#,
        r#"/metadata/labels: ["zeta", "alpha"]"#,
        r#"/spec: ["containers", "restartPolicy", "imagePullSecrets"]"#,
        r#"/spec/containers/0: ["name", "image", "command"]"#,
        r#"/spec/imagePullSecrets/0: ["name"]"#,
    ];
    for (format, pod) in [("yaml", yaml), ("json", json)] {
        let output = mutate_stdin(&["-o", "pod"], pod);
        assert_success(&output, format);
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            text.trim_start().starts_with('{'),
            format == "json",
            "{format} in, {format} out: {text}"
        );
        let mutated: serde_json::Value = serde_norway::from_str(&text).expect("the Pod");
        let mut got = Vec::new();
        key_order(&mutated, "", &mut got);
        assert_eq!(got, want, "{format}: {text}");
    }

    let output = mutate_stdin(&[], yaml);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "[\n  {\n    \"op\": \"add\",\n    \"path\": \"/spec/imagePullSecrets\",\n    \"value\": [\n      {\n        \"name\": \"gcr-pull\"\n      }\n    ]\n  }\n]\n"
    );
}

/// The README's k3s example, as written: the `sed` line points examples/k3s.yaml at the checkout,
/// and the README's own `k3s-registries` command renders every host with the example credentials.
#[test]
fn k3s_registries_example_works_as_the_readme_writes_it() {
    const SED: &str = r#"sed "s|/path/to/pullsecret-injector|$PWD|" examples/k3s.yaml > k3s.yaml"#;
    let readme = std::fs::read_to_string(repo("README.md")).expect("README");
    assert!(
        readme.contains(SED),
        "the README's k3s example has the sed line: {SED}"
    );
    // The README's command, continuation lines joined; its arguments after `--`.
    let joined = readme.replace("\\\n", " ");
    let command = joined
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cargo run") && l.contains(" k3s-registries "))
        .expect("the README runs k3s-registries with cargo run");
    let args: Vec<&str> = command
        .split_once(" -- ")
        .expect("cargo run ... -- ARGS")
        .1
        .split_whitespace()
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--config", "k3s.yaml"]),
        "{command}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let example = std::fs::read_to_string(repo("examples/k3s.yaml")).expect("examples/k3s.yaml");
    std::fs::write(
        dir.path().join("k3s.yaml"),
        example.replace("/path/to/pullsecret-injector", env!("CARGO_MANIFEST_DIR")),
    )
    .expect("write k3s.yaml");
    let output = Command::new(BIN)
        .args(&args)
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_success(&output, command);
    let out = args
        .windows(2)
        .find(|w| w[0] == "-o")
        .map(|w| dir.path().join(w[1]))
        .expect("the README writes a file with -o");
    let key = std::fs::read_to_string(repo("examples/credentials/gcp-key.json")).expect("key");
    let configs = k3s_configs_with_json_key(
        &std::fs::read_to_string(out).expect("registries.yaml"),
        &key,
        &["gcr.io", "eu.gcr.io", "europe-west1-docker.pkg.dev"],
    );
    let lab = &configs["registry.lab.example.com:5000"]["auth"];
    assert_eq!(lab["username"], "example-user");
    assert_eq!(lab["password"], "not-a-real-password");
}

/// Every environment variable a flag of any subcommand reads is in the README's table, with its flag.
#[test]
fn readme_lists_every_environment_variable_the_cli_reads() {
    use clap::CommandFactory as _;
    let readme = std::fs::read_to_string(repo("README.md")).expect("README");
    let cli = pullsecret_injector::cli::Cli::command();
    let mut seen = std::collections::BTreeSet::new();
    for sub in cli.get_subcommands() {
        for arg in sub.get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            let env = env.to_string_lossy().into_owned();
            let flag = format!(
                "--{}",
                arg.get_long().expect("a flag with env has a long name")
            );
            let row = format!("| `{env}` | `{flag}`");
            assert!(
                readme.contains(&row),
                "README.md lacks the row for {env} ({flag} of {})",
                sub.get_name()
            );
            seen.insert(env);
        }
    }
    for timeout in [
        "PULLSECRET_INJECTOR_BODY_READ_TIMEOUT",
        "PULLSECRET_INJECTOR_HEADER_READ_TIMEOUT",
    ] {
        assert!(seen.contains(timeout), "{seen:?}");
    }
}

#[test]
fn check_config_validates_a_workload_identity_federation_credential_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audience = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/home-lab/providers/k3s-cluster";
    let credential_config = |audience: &str, token_url: &str| {
        serde_json::json!({
            "type": "external_account",
            "audience": audience,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": token_url,
            "credential_source": {"file": "/var/run/secrets/pullsecret-injector/wif/gcp/token", "format": {"type": "text"}},
            "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/puller@acme.iam.gserviceaccount.com:generateAccessToken",
        })
        .to_string()
    };
    let file = dir.path().join("credential-config.json");
    let config = format!(
        "registries:\n- name: gcp\n  preset: gcp\n  secretName: gcr-pull\n  credentials:\n    gcpWorkloadIdentityFederation: {{credentialConfigFile: {}}}\n",
        file.display()
    );

    std::fs::write(
        &file,
        credential_config(audience, "https://sts.googleapis.com/v1/token"),
    )
    .expect("write");
    let (ok, output) = check_config(dir.path(), &config);
    assert!(ok, "{output}");
    assert!(
        output.contains(&format!(
            "gcpWorkloadIdentityFederation from {}",
            file.display()
        )),
        "{output}"
    );

    for (bad, needle) in [
        (
            credential_config(audience, "http://sts.example.com/v1/token"),
            "\"token_url\" must use https",
        ),
        (
            credential_config(
                "//iam.googleapis.com/projects/my-project/pools/p",
                "https://sts.googleapis.com/v1/token",
            ),
            "\"audience\" must be //iam.googleapis.com/projects/PROJECT_NUMBER",
        ),
        (
            "{\"type\": \"external_account\"}".to_owned(),
            "missing field \"audience\"",
        ),
    ] {
        std::fs::write(&file, &bad).expect("write");
        let (ok, output) = check_config(dir.path(), &config);
        assert!(!ok, "accepted {bad}: {output}");
        assert!(output.contains(needle), "{needle}: {output}");
        assert!(output.contains(&file.display().to_string()), "{output}");
    }
}

/// `mutate --check-registries` answers "will this Pod pull?" per image, against the distribution
/// registry with htpasswd auth: ok with the right password, rejected (and a failing exit) with a
/// wrong one; an image on no configured registry is said not to be checked.
#[test]
fn mutate_check_registries_prints_the_result_per_image() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let registry = runtime.block_on(support::registry::DistributionRegistry::start(
        "ci",
        "right-password-7731",
    ));
    let host = registry.host();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("username"), "ci\n").expect("username");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "registries:\n- name: lab\n  hosts: [\"{host}\"]\n  secretName: lab-pull\n  caFile: {ca}\n  credentials:\n    basicAuth: {{usernameFile: {d}/username, passwordFile: {d}/password}}\n",
            ca = registry.ca_file().display(),
            d = dir.path().display()
        ),
    )
    .expect("config");
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - {{name: a, image: \"{host}/team/app:1\"}}\n  - {{name: b, image: \"public.example.test/tool:1\"}}\n"
        ),
    )
    .expect("pod");
    let run = |password: &str| {
        std::fs::write(dir.path().join("password"), password).expect("password");
        Command::new(BIN)
            .args(["mutate", "--check-registries", "--config"])
            .arg(&config)
            .arg("-f")
            .arg(&pod)
            .output()
            .expect("run mutate")
    };

    let output = run("right-password-7731");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Registry check: {host}/team/app:1 (registry entry \"lab\"): ok (credentials accepted; the repository answered 404: repository name not known to registry)\n"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "Registry check: public.example.test/tool:1: not checked: no registry entry matches it"
        ),
        "{stderr}"
    );
    // The patch is still the output.
    let patch: serde_json::Value = serde_json::from_slice(&output.stdout).expect("patch");
    assert_eq!(patch[0]["value"][0]["name"], "lab-pull");

    let output = run("wrong-password-1234");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Registry check: {host}/team/app:1 (registry entry \"lab\"): rejected (401: authentication required)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: the registry rejected the credentials for 1 image(s)"),
        "{stderr}"
    );
    // check-config says what the registry check will do.
    let output = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("run check-config");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "    registry check every 300s on the hosts Pods use; CA bundle {}",
            registry.ca_file().display()
        )),
        "{stdout}"
    );
    assert!(!stderr.contains("wrong-password-1234"), "{stderr}");
}

/// Keyless entries cannot be checked offline: their tokens exist only inside the cluster. The
/// preview says so per image instead of blaming missing credentials, sends no request, and the
/// patch is still printed.
#[test]
fn mutate_check_registries_names_keyless_entries_as_not_checkable_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "registries:\n\
         - name: gke\n  hosts: [\"eu.gcr.io\"]\n  secretName: gke-pull\n  credentials: {gcpWorkloadIdentity: {}}\n\
         - name: wif\n  hosts: [\"europe-west1-docker.pkg.dev\"]\n  secretName: wif-pull\n  credentials:\n    gcpWorkloadIdentityFederation:\n      audience: //iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/home-lab/providers/k3s-cluster\n      subjectTokenFile: /var/run/secrets/pullsecret-injector/wif/wif/token\n",
    )
    .expect("config");
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: eu.gcr.io/acme/app:1}\n  - {name: b, image: europe-west1-docker.pkg.dev/acme/apps/api:2}\n",
    )
    .expect("pod");
    let output = Command::new(BIN)
        .args(["mutate", "--check-registries", "--config"])
        .arg(&config)
        .arg("-f")
        .arg(&pod)
        .output()
        .expect("run mutate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    for expected in [
        "Registry check: eu.gcr.io/acme/app:1 (registry entry \"gke\"): not checked: its credentials come from the GKE metadata server",
        "Registry check: europe-west1-docker.pkg.dev/acme/apps/api:2 (registry entry \"wif\"): not checked: its credentials are exchanged for the cluster's ServiceAccount token",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
    assert!(!stderr.contains("names no credentials"), "{stderr}");
    let patch: serde_json::Value = serde_json::from_slice(&output.stdout).expect("patch");
    let names: Vec<&str> = patch[0]["value"]
        .as_array()
        .expect("secrets")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["gke-pull", "wif-pull"]);
}
