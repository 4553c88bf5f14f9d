//! The fake Kubernetes API's Namespaces (`tests/support/fake_api.rs`), as kube's client and
//! kube-runtime's metadata-only watcher (`watcher` on `Api<PartialObjectMeta<_>>`, what
//! `metadata_watcher` became) see them: the list/watch a reflector keeps follows what the test
//! does to namespaces, the emulated RBAC allows only list and watch of them, and Secret writes are
//! refused in missing and terminating namespaces the way the API server's `NamespaceLifecycle`
//! admission refuses them.

#[path = "support/fake_api.rs"]
mod fake_api;

use std::time::Duration;

use fake_api::{FakeApi, Fault, NAMESPACES, SECRETS};
use futures::{Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, ResourceExt};

const SECRET: &str = "gcr-pull";
const WAIT: Duration = Duration::from_secs(10);

fn secret(namespace: &str, name: &str) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.into());
    secret.metadata.namespace = Some(namespace.into());
    secret.data = Some([("a".to_owned(), ByteString(b"1".to_vec()))].into());
    secret
}

/// The API error of a request the test expects to fail.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

type NamespaceEvent = Event<PartialObjectMeta<Namespace>>;

/// The next event other than a (periodic, initial-end) bookmark.
async fn next_event(
    stream: &mut (impl Stream<Item = Result<NamespaceEvent, watcher::Error>> + Unpin),
) -> NamespaceEvent {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a watch event in time")
        .expect("the watch goes on")
        .expect("no watch error")
}

fn label(meta: &PartialObjectMeta<Namespace>, key: &str) -> Option<String> {
    meta.labels().get(key).cloned()
}

#[tokio::test]
async fn metadata_only_watcher_sees_namespaces_put_relabelled_terminated_and_deleted() {
    let api = FakeApi::start(&[SECRET]).await;
    api.put_namespace("team-a", &[("env", "prod")]);
    api.put_namespace("team-b", &[]);
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(api.client());
    let mut stream = Box::pin(watcher(namespaces, watcher::Config::default()));

    // The initial list: both namespaces, with their labels and the API server's name label.
    assert!(matches!(next_event(&mut stream).await, Event::Init));
    let mut listed = Vec::new();
    loop {
        match next_event(&mut stream).await {
            Event::InitApply(meta) => listed.push(meta),
            Event::InitDone => break,
            other => panic!("unexpected event during the initial list: {other:?}"),
        }
    }
    let names: Vec<String> = listed.iter().map(|m| m.name_any()).collect();
    assert_eq!(names, ["team-a", "team-b"]);
    assert_eq!(label(&listed[0], "env").as_deref(), Some("prod"));
    assert_eq!(
        label(&listed[0], "kubernetes.io/metadata.name").as_deref(),
        Some("team-a")
    );
    assert!(listed[0].metadata.uid.is_some());
    assert!(listed[0].metadata.creation_timestamp.is_some());
    assert!(listed[0].metadata.deletion_timestamp.is_none());

    // A new namespace, then a relabelled one.
    api.put_namespace("team-c", &[]);
    match next_event(&mut stream).await {
        Event::Apply(meta) => assert_eq!(meta.name_any(), "team-c"),
        other => panic!("expected team-c added, got {other:?}"),
    }
    api.put_namespace("team-a", &[("env", "dev")]);
    match next_event(&mut stream).await {
        Event::Apply(meta) => {
            assert_eq!(meta.name_any(), "team-a");
            assert_eq!(label(&meta, "env").as_deref(), Some("dev"));
        }
        other => panic!("expected team-a relabelled, got {other:?}"),
    }
    // Putting the same labels again changes nothing and sends nothing.
    let rv = api.resource_version();
    api.put_namespace("team-a", &[("env", "dev")]);
    assert_eq!(api.resource_version(), rv);

    // Terminating: deletionTimestamp in the metadata, phase Terminating in the stored object.
    api.terminate_namespace("team-b").expect("team-b exists");
    match next_event(&mut stream).await {
        Event::Apply(meta) => {
            assert_eq!(meta.name_any(), "team-b");
            assert!(meta.metadata.deletion_timestamp.is_some(), "{meta:?}");
        }
        other => panic!("expected team-b terminating, got {other:?}"),
    }
    let stored = api
        .namespace("team-b")
        .expect("still there while terminating");
    assert_eq!(
        stored.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );

    // Deleted: gone, with its Secrets.
    api.put_secret(secret("team-b", SECRET));
    assert!(api.delete_namespace("team-b"));
    match next_event(&mut stream).await {
        Event::Delete(meta) => assert_eq!(meta.name_any(), "team-b"),
        other => panic!("expected team-b deleted, got {other:?}"),
    }
    assert!(api.namespace("team-b").is_none());
    assert!(api.secret("team-b", SECRET).is_none());
    assert!(!api.delete_namespace("team-b"), "already gone");
    let names: Vec<String> = api.namespaces().iter().map(|n| n.name_any()).collect();
    assert_eq!(names, ["team-a", "team-c"]);

    // All of it within the RBAC, recorded as Namespace requests and not counted as Secret ones.
    assert!(
        api.rbac_violations().is_empty(),
        "{:#?}",
        api.rbac_violations()
    );
    assert!(api.count_on(NAMESPACES, "list") >= 1);
    assert_eq!(api.count_on(NAMESPACES, "watch"), 1);
    assert_eq!(api.active_watches_on(NAMESPACES), 1);
    assert_eq!(api.active_watches_on(SECRETS), 0);
    assert_eq!(api.count("list") + api.count("watch"), 0);
    assert!(api.requests().iter().all(|r| r.is_namespace()));
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_secrets_with_a_deleted_event_each() {
    let api = FakeApi::start_permissive().await;
    api.put_namespace("team-a", &[]);
    api.put_namespace("team-b", &[]);
    for name in ["one", "two"] {
        api.put_secret(secret("team-a", name));
    }
    api.put_secret(secret("team-b", "other"));
    let secrets: Api<PartialObjectMeta<Secret>> = Api::all(api.client());
    let mut secret_events = Box::pin(watcher(secrets, watcher::Config::default()));
    let mut initial = 0;
    loop {
        match tokio::time::timeout(WAIT, secret_events.next()).await {
            Ok(Some(Ok(Event::InitApply(_)))) => initial += 1,
            Ok(Some(Ok(Event::InitDone))) => break,
            Ok(Some(Ok(Event::Init))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(initial, 3);

    assert!(api.delete_namespace("team-a"));
    let mut deleted = Vec::new();
    while deleted.len() < 2 {
        match tokio::time::timeout(WAIT, secret_events.next()).await {
            Ok(Some(Ok(Event::Delete(meta)))) => deleted.push(meta.name_any()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(deleted, ["one", "two"]);
    let left: Vec<String> = api.all_secrets().iter().map(|s| s.name_any()).collect();
    assert_eq!(left, ["other"]);
}

#[tokio::test]
async fn namespace_list_takes_label_and_name_selectors_and_pages() {
    let api = FakeApi::start(&[SECRET]).await;
    api.put_namespace("team-a", &[("env", "prod")]);
    api.put_namespace("team-b", &[("env", "dev")]);
    api.put_namespace("team-c", &[("env", "prod")]);
    api.terminate_namespace("team-c");
    let namespaces: Api<Namespace> = Api::all(api.client());
    let names = |list: kube::core::ObjectList<Namespace>| -> Vec<String> {
        list.items.iter().map(|n| n.name_any()).collect()
    };

    let prod = namespaces
        .list(&ListParams::default().labels("env=prod"))
        .await
        .expect("list");
    assert_eq!(names(prod), ["team-a", "team-c"]);
    let not_prod = namespaces
        .list(&ListParams::default().labels("env!=prod"))
        .await
        .expect("list");
    assert_eq!(names(not_prod), ["team-b"]);
    let by_name = namespaces
        .list(&ListParams::default().fields("metadata.name=team-b"))
        .await
        .expect("list");
    assert_eq!(names(by_name), ["team-b"]);
    let active = namespaces
        .list(&ListParams::default().fields("status.phase=Active"))
        .await
        .expect("list");
    assert_eq!(names(active), ["team-a", "team-b"]);

    let first = namespaces
        .list(&ListParams::default().limit(2))
        .await
        .expect("list");
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(names(first), ["team-a", "team-b"]);
    let rest = namespaces
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("list");
    assert!(rest.metadata.continue_.is_none());
    assert_eq!(names(rest), ["team-c"]);
    assert!(api.rbac_violations().is_empty());
}

#[tokio::test]
async fn rbac_refuses_a_namespace_get_and_records_it_as_a_violation() {
    let api = FakeApi::start(&[SECRET]).await;
    api.put_namespace("team-a", &[]);
    let namespaces: Api<Namespace> = Api::all(api.client());

    let status = api_error(namespaces.get("team-a").await);
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    assert!(
        status
            .message
            .contains("cannot get resource \"namespaces\" in API group \"\""),
        "{}",
        status.message
    );
    let violations = api.rbac_violations();
    assert_eq!(violations.len(), 1, "{violations:#?}");
    assert_eq!(violations[0].resource, NAMESPACES);
    assert_eq!(violations[0].verb, "get");
    assert_eq!(violations[0].name.as_deref(), Some("team-a"));
    assert!(!violations[0].reached_store);
    assert_eq!(api.count("get"), 0, "not a Secret get");
    assert_eq!(api.count_on(NAMESPACES, "get"), 1);

    // Namespace writes are outside the RBAC too (and not emulated).
    let status = api_error(
        namespaces
            .patch(
                "team-a",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
    );
    assert_eq!(status.code, 403);
    assert_eq!(api.rbac_violations().len(), 2);

    // Without RBAC, the get is answered.
    let open = FakeApi::start_permissive().await;
    open.put_namespace("team-a", &[]);
    let namespace = Api::<Namespace>::all(open.client())
        .get("team-a")
        .await
        .expect("get");
    assert_eq!(
        namespace.status.and_then(|s| s.phase).as_deref(),
        Some("Active")
    );
    let missing = api_error(Api::<Namespace>::all(open.client()).get("nope").await);
    assert_eq!(missing.code, 404);
    assert!(open.rbac_violations().is_empty());
}

#[tokio::test]
async fn secret_writes_in_a_missing_namespace_are_404_with_details_kind_namespaces() {
    let api = FakeApi::start(&[SECRET]).await;
    let secrets: Api<Secret> = Api::namespaced(api.client(), "gone");

    let status = api_error(
        secrets
            .create(&PostParams::default(), &secret("gone", SECRET))
            .await,
    );
    assert_eq!(status.code, 404);
    assert_eq!(status.reason, "NotFound");
    assert_eq!(status.message, "namespaces \"gone\" not found");
    let details = status.details.as_ref().expect("details");
    assert_eq!(details.kind, "namespaces");
    assert_eq!(details.name, "gone");

    // Server-side apply of a Secret that does not exist is a create: the same answer.
    let status = api_error(
        secrets
            .patch(
                SECRET,
                &PatchParams::apply("pullsecret-injector"),
                &Patch::Apply(secret("gone", SECRET)),
            )
            .await,
    );
    assert_eq!(status.code, 404);
    assert_eq!(status.details.expect("details").kind, "namespaces");

    // A Secret left in a namespace that is gone (seeded as-is) cannot be patched.
    api.put_secret(secret("gone", SECRET));
    let status = api_error(
        secrets
            .patch(
                SECRET,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"data": {"a": "Mg=="}})),
            )
            .await,
    );
    assert_eq!(status.code, 404);
    assert_eq!(status.details.expect("details").kind, "namespaces");

    // A get of a Secret in a missing namespace is the Secret's plain 404.
    let elsewhere: Api<Secret> = Api::namespaced(api.client(), "never");
    let status = api_error(elsewhere.get(SECRET).await);
    assert_eq!(status.code, 404);
    assert_eq!(status.message, format!("secrets \"{SECRET}\" not found"));
    assert_eq!(status.details.expect("details").kind, "secrets");
    assert_eq!(api.writes(), 3, "each reached the store");
    assert!(api.rbac_violations().is_empty());
}

#[tokio::test]
async fn secret_create_in_a_terminating_namespace_is_403_being_terminated() {
    let api = FakeApi::start(&[SECRET]).await;
    api.put_namespace("team-a", &[]);
    let secrets: Api<Secret> = Api::namespaced(api.client(), "team-a");
    secrets
        .create(&PostParams::default(), &secret("team-a", SECRET))
        .await
        .expect("created while active");
    api.put_namespace("team-b", &[]);
    api.terminate_namespace("team-b");
    let doomed: Api<Secret> = Api::namespaced(api.client(), "team-b");

    let status = api_error(
        doomed
            .create(&PostParams::default(), &secret("team-b", SECRET))
            .await,
    );
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    assert_eq!(
        status.message,
        "secrets \"gcr-pull\" is forbidden: unable to create new content in namespace team-b because it is being terminated"
    );
    let details = status.details.expect("details");
    assert_eq!(details.kind, "secrets");
    assert_eq!(details.causes[0].reason, "NamespaceTerminating");
    assert!(api.secret("team-b", SECRET).is_none());
    assert!(
        api.rbac_violations().is_empty(),
        "refused by the namespace, not by RBAC"
    );

    // A Secret that is already there can still be changed while the namespace terminates.
    api.terminate_namespace("team-a");
    secrets
        .patch(
            SECRET,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"a": "Mg=="}})),
        )
        .await
        .expect("patch in a terminating namespace");
    let patched = api.secret("team-a", SECRET).expect("Secret");
    assert_eq!(patched.data.expect("data")["a"].0, b"2");
}

#[tokio::test]
async fn faults_can_fail_the_namespace_list_and_watch_alone() {
    let api = FakeApi::start(&[SECRET]).await;
    api.put_namespace("team-a", &[]);
    api.inject(
        Fault::status(500)
            .on_resource(NAMESPACES)
            .on_verb("list")
            .on_verb("watch")
            .named("namespaces down"),
    );
    let namespaces: Api<Namespace> = Api::all(api.client());
    let status = api_error(namespaces.list(&ListParams::default()).await);
    assert_eq!(status.code, 500);
    match namespaces.watch(&WatchParams::default(), "0").await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 500),
        Err(other) => panic!("expected a 500, got {other:?}"),
        Ok(_) => panic!("the watch was answered"),
    }

    // The Secret list of the same verb is not touched.
    let secrets: Api<Secret> = Api::all(api.client());
    secrets
        .list(&ListParams::default().fields(&format!("metadata.name={SECRET}")))
        .await
        .expect("Secret list");

    let faulted: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.fault.as_deref() == Some("namespaces down"))
        .map(|r| (r.resource, r.verb))
        .collect();
    assert_eq!(
        faulted,
        [
            (NAMESPACES.to_owned(), "list".to_owned()),
            (NAMESPACES.to_owned(), "watch".to_owned())
        ]
    );
    api.clear_faults();
    let list = namespaces
        .list(&ListParams::default())
        .await
        .expect("works again");
    assert_eq!(list.items.len(), 1);
}
