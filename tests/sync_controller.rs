//! The sync controller on the local environment: the real `vaultsync` binary per test,
//! one temporary namespace each, Key Vault answers scripted through the gateway.
//!
//! Values come from the environment's Key Vault emulator, seeded through its REST API.

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

fn spec_for(names: &[(&str, &str)]) -> serde_json::Value {
    json!({
        "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
        "data": names.iter().map(|(key, name)| json!({"key": key, "remoteRef": {"name": name}})).collect::<Vec<_>>(),
    })
}

async fn create(s: &Setup, name: &str, spec: serde_json::Value) {
    s.vsecs
        .create(&PostParams::default(), &vault_secret(name, spec))
        .await
        .expect("create the VaultSecret");
}

/// The common shape of these tests: a fresh operator identity granted `grants`, an
/// optional injected fault, the operator started with `flags`, and VaultSecret `app`
/// reading `kv_name` as key `password`.
async fn sync_one(
    s: &Setup,
    kv_name: &str,
    grants: &[&str],
    fault: Option<serde_json::Value>,
    flags: &[&str],
) -> (String, Operator) {
    let client_id = operator_identity(&s.doubles, grants).await;
    if let Some(fault) = fault {
        s.doubles.put("/faults", fault).await;
    }
    let operator = Operator::start(&s.ns.name, &client_id, flags);
    create(s, "app", spec_for(&[("password", kv_name)])).await;
    (client_id, operator)
}

#[tokio::test]
async fn access_denied_names_the_identity_and_the_secret_and_warns() {
    let s = setup().await;
    let kv_name = unique("denied");
    let (client_id, _operator) = sync_one(&s, &kv_name, &["some-other-secret"], None, &[]).await;

    let vsec = wait_reason(&s.vsecs, "app", "AccessDenied").await;
    let ready = vsec.ready_condition().unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains(&client_id), "{}", ready.message);
    assert!(ready.message.contains(&kv_name), "{}", ready.message);
    assert!(
        ready.message.contains("key 'password'"),
        "{}",
        ready.message
    );
    assert!(
        ready.message.contains("ForbiddenByRbac"),
        "{}",
        ready.message
    );
    assert_eq!(
        vsec.status.as_ref().unwrap().observed_generation,
        vsec.metadata.generation
    );
    assert!(
        s.secrets.get_opt("app").await.unwrap().is_none(),
        "no Secret is written on failure"
    );
    wait_events_of(
        &s.client,
        &s.ns.name,
        "app",
        "a Warning AccessDenied",
        |events| {
            events
                .iter()
                .any(|(t, r, _)| t == "Warning" && r == "AccessDenied")
        },
    )
    .await;
}

#[tokio::test]
async fn a_failure_is_retried_with_backoff_not_in_a_loop() {
    let s = setup().await;
    let kv_name = unique("backoff");
    let (_, _operator) = sync_one(&s, &kv_name, &["nothing"], None, &[]).await;
    wait_reason(&s.vsecs, "app", "AccessDenied").await;
    // Each status write (a new Azure request id per attempt) must not trigger another
    // immediate attempt: AccessDenied retries after 30s at the earliest. The first attempt
    // is the challenge plus the authorized request; a slow machine can only see fewer.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let requests = s.doubles.vault_requests("GET", &kv_name).await;
    assert!(
        requests <= 2,
        "{requests} Key Vault requests within seconds of one failure"
    );
}

#[tokio::test]
async fn throttling_is_reported_with_retry_after_and_retried() {
    let s = setup().await;
    let kv_name = unique("throttled");
    let (_, _operator) = sync_one(
        &s,
        &kv_name,
        &[&kv_name],
        Some(json!({"secret": kv_name, "kind": "throttle", "retryAfterSeconds": 3})),
        &[],
    )
    .await;

    let vsec = wait_reason(&s.vsecs, "app", "Throttled").await;
    assert!(
        vsec.ready_condition()
            .unwrap()
            .message
            .contains("retry after 3s"),
        "{:?}",
        vsec.ready_condition()
    );
    let throttled_reads = s.doubles.vault_requests("GET", &kv_name).await;

    // Lift the fault: the retry after Retry-After gets past it.
    reqwest::Client::new()
        .delete(format!(
            "{}/faults?secret={kv_name}",
            env("VAULTSYNC_TEST_AZURE_ADMIN_URL")
        ))
        .send()
        .await
        .unwrap();
    wait_ready(
        &s.vsecs,
        "app",
        "a reason other than Throttled",
        |_, r, _| r != "Throttled",
    )
    .await;
    assert!(s.doubles.vault_requests("GET", &kv_name).await > throttled_reads);
}

/// A grant change of the test's Namespace (a fresh client id in its managed-identities
/// annotation, which the VaultSecrets do not use) reconciles its VaultSecrets at once:
/// one more attempt of a failing sync, without waiting for its backoff.
async fn one_more_attempt(s: &Setup) {
    let patch = json!({"metadata": {"annotations": {MANAGED_IDENTITIES_GRANT: uuid::Uuid::new_v4().to_string()}}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(s.client.clone())
        .patch(&s.ns.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate the test namespace");
}

/// Polls the operator's metrics until `line_start`'s counter reaches `at_least`.
async fn wait_metric(operator: &Operator, line_start: &str, at_least: u64) {
    for _ in 0..480 {
        if metric(&operator.metrics().await, line_start) >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{line_start} never reached {at_least}");
}

/// VaultSecret `app` fails with `reason` again and again (four attempts, each reported
/// in full by the time the failure counter shows it): one Warning Event of that reason,
/// and the status written once (its resourceVersion stays; one status write in all).
async fn fails_repeatedly_but_reports_once(s: &Setup, operator: &Operator, reason: &str) {
    let first = wait_reason(&s.vsecs, "app", reason).await;
    let failures = format!("vaultsync_failures_total{{reason=\"{reason}\"}}");
    wait_metric(operator, &failures, 1).await;
    for attempt in 2..=4 {
        one_more_attempt(s).await;
        wait_metric(operator, &failures, attempt).await;
    }
    let now = s.vsecs.get("app").await.unwrap();
    assert_eq!(
        now.metadata.resource_version, first.metadata.resource_version,
        "the status of a repeated {reason} is written once: {:?}",
        now.status
    );
    let metrics = operator.metrics().await;
    assert_eq!(metric(&metrics, "vaultsync_status_writes_total"), 1);
    assert_eq!(
        warnings(&s.client, &s.ns.name, "app", reason).await,
        1,
        "one Warning for one failure: {:?}",
        events_of(&s.client, &s.ns.name, "app").await
    );
}

#[tokio::test]
async fn a_repeated_access_denied_warns_once_and_writes_status_once() {
    let s = setup().await;
    let kv_name = unique("denied-again");
    let (_, operator) = sync_one(&s, &kv_name, &["nothing"], None, &[]).await;
    fails_repeatedly_but_reports_once(&s, &operator, "AccessDenied").await;
}

#[tokio::test]
async fn a_repeated_throttling_warns_once_and_writes_status_once() {
    let s = setup().await;
    let kv_name = unique("throttled-again");
    let fault = json!({"secret": kv_name, "kind": "throttle", "retryAfterSeconds": 1});
    let (_, operator) = sync_one(&s, &kv_name, &[&kv_name], Some(fault), &[]).await;
    fails_repeatedly_but_reports_once(&s, &operator, "Throttled").await;
}

#[tokio::test]
async fn a_repeated_identity_error_warns_once_and_writes_status_once() {
    let s = setup().await;
    // Not federated: Entra answers AADSTS700016 with a new trace id and time every time.
    let client_id = uuid::Uuid::new_v4().to_string();
    let operator = Operator::start(&s.ns.name, &client_id, &[]);
    create(
        &s,
        "app",
        spec_for(&[("password", &unique("identity-again"))]),
    )
    .await;
    fails_repeatedly_but_reports_once(&s, &operator, "IdentityError").await;
    assert!(s.doubles.token_requests(&client_id).await >= 4);
}

#[tokio::test]
async fn a_repeated_unreachable_vault_warns_once_and_writes_status_once() {
    let s = setup().await;
    let kv_name = unique("unreachable-again");
    let fault = json!({"secret": kv_name, "kind": "error", "status": 503});
    let (_, operator) = sync_one(&s, &kv_name, &[&kv_name], Some(fault), &[]).await;
    fails_repeatedly_but_reports_once(&s, &operator, "VaultUnreachable").await;
}

#[tokio::test]
async fn an_unreachable_vault_is_reported_as_such() {
    let s = setup().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client_id = operator_identity(&s.doubles, &["*"]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &[]);
    let vault = format!("https://127.0.0.1:{closed}");
    create(
        &s,
        "app",
        json!({"vaultUrl": vault, "data": [{"key": "k", "remoteRef": {"name": "anything"}}]}),
    )
    .await;
    let vsec = wait_reason(&s.vsecs, "app", "VaultUnreachable").await;
    assert!(
        vsec.ready_condition().unwrap().message.contains(&vault),
        "{:?}",
        vsec.ready_condition()
    );
}

#[tokio::test]
async fn a_5xx_from_key_vault_is_reported_as_unreachable() {
    let s = setup().await;
    let kv_name = unique("unavailable");
    let (_, _operator) = sync_one(
        &s,
        &kv_name,
        &[&kv_name],
        Some(json!({"secret": kv_name, "kind": "error", "status": 503})),
        &[],
    )
    .await;
    let vsec = wait_reason(&s.vsecs, "app", "VaultUnreachable").await;
    assert!(
        vsec.ready_condition().unwrap().message.contains("503"),
        "{:?}",
        vsec.ready_condition()
    );
}

#[tokio::test]
async fn suspend_stops_key_vault_calls_until_lifted() {
    let s = setup().await;
    let kv_name = unique("suspended");
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &[]);
    let mut spec = spec_for(&[("password", &kv_name)]);
    spec["suspend"] = json!(true);
    create(&s, "app", spec).await;

    let vsec = wait_reason(&s.vsecs, "app", "Suspended").await;
    assert_eq!(vsec.ready_condition().unwrap().status, "False");
    assert_eq!(
        s.doubles.vault_requests("GET", &kv_name).await,
        0,
        "a suspended VaultSecret makes no Key Vault call"
    );
    assert!(s.secrets.get_opt("app").await.unwrap().is_none());

    s.vsecs
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    wait_ready(&s.vsecs, "app", "not Suspended", |_, r, _| r != "Suspended").await;
    assert!(s.doubles.vault_requests("GET", &kv_name).await > 0);
}

#[tokio::test]
async fn the_operator_identity_can_be_switched_off() {
    let s = setup().await;
    let kv_name = unique("no-operator-identity");
    let (client_id, _operator) =
        sync_one(&s, &kv_name, &["*"], None, &["--operator-identity=none"]).await;
    let vsec = wait_reason(&s.vsecs, "app", "IdentityError").await;
    assert!(
        vsec.ready_condition()
            .unwrap()
            .message
            .contains("--operator-identity=none"),
        "{:?}",
        vsec.ready_condition()
    );
    assert_eq!(s.doubles.vault_requests("GET", &kv_name).await, 0);
    assert_eq!(s.doubles.token_requests(&client_id).await, 0);
}

#[tokio::test]
async fn a_refused_token_exchange_is_an_identity_error() {
    let s = setup().await;
    // A client id with no federated credential: Entra answers AADSTS700016.
    let client_id = uuid::Uuid::new_v4().to_string();
    let _operator = Operator::start(&s.ns.name, &client_id, &[]);
    create(&s, "app", spec_for(&[("password", &unique("identity"))])).await;
    let vsec = wait_reason(&s.vsecs, "app", "IdentityError").await;
    let message = &vsec.ready_condition().unwrap().message;
    assert!(message.contains("700016"), "{message}");
    assert!(message.contains(&client_id), "{message}");
}

#[tokio::test]
async fn an_existing_secret_it_does_not_own_is_never_touched() {
    let s = setup().await;
    let kv_name = unique("conflict");
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("app".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "password".to_owned(),
            ByteString(b"theirs".to_vec()),
        )])),
        ..Default::default()
    };
    s.secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let (_, _operator) = sync_one(&s, &kv_name, &["*"], None, &[]).await;

    let vsec = wait_reason(&s.vsecs, "app", "OwnershipConflict").await;
    assert!(
        vsec.ready_condition()
            .unwrap()
            .message
            .contains("not created by this VaultSecret"),
        "{:?}",
        vsec.ready_condition()
    );
    let after = s.secrets.get("app").await.unwrap();
    assert_eq!(after.data.unwrap()["password"].0, b"theirs");
    assert!(after.metadata.owner_references.is_none() && after.metadata.labels.is_none());
    assert_eq!(
        s.doubles.vault_requests("GET", &kv_name).await,
        0,
        "the guard comes before any Key Vault call"
    );
}

/// A resource type whose CRD is never installed, to see the start-up check refuse.
#[derive(
    kube::CustomResource, serde::Serialize, serde::Deserialize, Clone, Debug, schemars::JsonSchema,
)]
#[kube(
    group = "absent.vaultsync.io",
    version = "v1",
    kind = "Absent",
    namespaced
)]
struct AbsentSpec {}

#[tokio::test]
async fn start_up_fails_with_a_hint_when_a_crd_is_missing() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let config = vaultsync::controller::ControllerConfig {
        namespaces: vec!["default".into()],
        concurrency: 1,
        operator_identity: Default::default(),
        allow_rollout_restarts: false,
        rollout_restart_window: vaultsync::controller::restart::DEFAULT_WINDOW,
        expiry_warning: vaultsync::controller::expiry::DEFAULT_WARNING,
    };
    vaultsync::controller::ensure_crd_installed(&client, &config)
        .await
        .expect("the installed VaultSecret CRD is found");
    let err = vaultsync::controller::ensure_served::<Absent>(&client, &config, "crds/absent.yaml")
        .await
        .expect_err("not installed");
    let message = err.to_string();
    assert!(
        message.contains("absents.absent.vaultsync.io")
            && message.contains("kubectl apply -f crds/absent.yaml"),
        "{message}"
    );
}

// ---- with the Key Vault emulator ------------------------------------------------------

async fn seed(name: &str, value: &str) -> String {
    KeyVault::first().set(name, value).await
}

async fn secret_value(secrets: &Api<Secret>, name: &str, key: &str) -> Option<Vec<u8>> {
    secrets
        .get_opt(name)
        .await
        .unwrap()?
        .data?
        .get(key)
        .map(|v| v.0.clone())
}

async fn wait_value(secrets: &Api<Secret>, name: &str, key: &str, expected: &[u8]) {
    for _ in 0..480 {
        if secret_value(secrets, name, key).await.as_deref() == Some(expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Secret {name} never held the expected value for {key}");
}

#[tokio::test]
async fn syncs_rotates_and_repairs_the_secret_without_leaking_values() {
    let s = setup().await;
    let kv_name = unique("ExampleSecret");
    let first_version = seed(&kv_name, "MyAKSExampleSecret").await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let operator = Operator::start(&s.ns.name, &client_id, &[]);
    let mut spec = spec_for(&[("password", &kv_name)]);
    spec["refreshInterval"] = json!("10s");
    spec["target"] = json!({"labels": {"team": "a"}});
    create(&s, "app", spec).await;

    let vsec = wait_reason(&s.vsecs, "app", "Synced").await;
    let status = vsec.status.clone().unwrap();
    assert_eq!(status.secret_name.as_deref(), Some("app"));
    assert_eq!(status.synced_versions["password"], first_version);
    assert!(status.last_sync_time.is_some());
    let secret = s.secrets.get("app").await.unwrap();
    assert_eq!(
        secret.data.as_ref().unwrap()["password"].0,
        b"MyAKSExampleSecret"
    );
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()["vaultsync.io/managed-by"],
        "vaultsync"
    );
    assert_eq!(secret.metadata.labels.as_ref().unwrap()["team"], "a");
    assert_eq!(
        secret.metadata.annotations.as_ref().unwrap()["vaultsync.io/source"],
        format!("{}/app", s.ns.name)
    );
    assert!(
        secret
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("vaultsync.io/data-hash")
    );
    assert_eq!(
        secret.metadata.owner_references.as_ref().unwrap()[0].uid,
        vsec.metadata.uid.clone().unwrap()
    );

    // Rotation: a new Key Vault version arrives on the next refresh.
    let second_version = seed(&kv_name, "rotated-value-2").await;
    wait_value(&s.secrets, "app", "password", b"rotated-value-2").await;
    let events = wait_events_of(&s.client, &s.ns.name, "app", "a Rotated Event", |events| {
        events.iter().any(|(_, r, note)| {
            r == "Rotated" && note.contains(&first_version) && note.contains(&second_version)
        })
    })
    .await;
    assert!(events.iter().any(|(_, r, _)| r == "Synced"), "{events:?}");

    // Drift: an edit and a deletion are repaired.
    s.secrets
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"password": "ZWRpdGVk"}})),
        )
        .await
        .unwrap();
    wait_value(&s.secrets, "app", "password", b"rotated-value-2").await;
    s.secrets
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    wait_value(&s.secrets, "app", "password", b"rotated-value-2").await;
    wait_events_of(
        &s.client,
        &s.ns.name,
        "app",
        "a DriftRepaired Event",
        |events| events.iter().any(|(_, r, _)| r == "DriftRepaired"),
    )
    .await;

    // A label removed with the data intact is restored without a Key Vault read.
    let reads = s.doubles.vault_requests("GET", &kv_name).await;
    s.secrets
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
        )
        .await
        .unwrap();
    for _ in 0..480 {
        let labels = s
            .secrets
            .get("app")
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap_or_default();
        if labels.get("team").map(String::as_str) == Some("a") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        s.secrets.get("app").await.unwrap().metadata.labels.unwrap()["team"],
        "a"
    );
    assert!(
        s.doubles.vault_requests("GET", &kv_name).await <= reads + 2,
        "at most a scheduled refresh happened meanwhile"
    );

    // No value in logs, Events or status.
    let logs = operator.logs();
    let events = format!("{:?}", events_of(&s.client, &s.ns.name, "app").await);
    let status = serde_json::to_string(&s.vsecs.get("app").await.unwrap().status).unwrap();
    for value in ["MyAKSExampleSecret", "rotated-value-2"] {
        assert!(
            !logs.contains(value),
            "a value leaked into the operator log"
        );
        assert!(!events.contains(value), "a value leaked into Events");
        assert!(!status.contains(value), "a value leaked into status");
    }
}

#[tokio::test]
async fn a_pinned_version_is_not_read_again_once_synced() {
    let s = setup().await;
    let kv_name = unique("pinned");
    let current = unique("current");
    let version = seed(&kv_name, "pinned-value").await;
    seed(&current, "current-value").await;
    let client_id = operator_identity(&s.doubles, &[&kv_name, &current]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &[]);
    let pinned_only = json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "refreshInterval": "10s",
        "data": [{"key": "k", "remoteRef": {"name": kv_name, "version": version}}]});
    create(&s, "pinned", pinned_only).await;
    // Mixed: the unpinned entry is refreshed, the pinned one kept from the intact Secret.
    let mixed = json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "refreshInterval": "10s",
        "data": [{"key": "k", "remoteRef": {"name": kv_name, "version": version}},
                 {"key": "c", "remoteRef": {"name": current}}]});
    create(&s, "mixed", mixed).await;
    wait_reason(&s.vsecs, "pinned", "Synced").await;
    wait_reason(&s.vsecs, "mixed", "Synced").await;
    let pinned_reads = s.doubles.vault_requests("GET", &kv_name).await;
    let current_reads = s.doubles.vault_requests("GET", &current).await;
    // Two refresh intervals pass.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(
        s.doubles.vault_requests("GET", &kv_name).await,
        pinned_reads
    );
    assert!(s.doubles.vault_requests("GET", &current).await > current_reads);
    assert_eq!(
        secret_value(&s.secrets, "mixed", "k").await.as_deref(),
        Some(b"pinned-value".as_slice())
    );
}

/// Requests a refresh now through the `vaultsync.io/refresh` annotation.
async fn request_refresh(s: &Setup, name: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {"vaultsync.io/refresh": value}}});
    s.vsecs
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate the VaultSecret");
}

/// Key Vault reads of `kv_name` as the service counts them (requests with a token).
async fn reads(s: &Setup, kv_name: &str) -> u64 {
    s.doubles.stats().await["vaultAuthorized"]["GET"][kv_name]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_failed_refresh_keeps_ready_and_reports_refreshed_false_then_true() {
    let s = setup().await;
    let kv_name = unique("keep");
    seed(&kv_name, "good-value").await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let operator = Operator::start(&s.ns.name, &client_id, &[]);
    create(&s, "app", spec_for(&[("password", &kv_name)])).await;
    let synced = wait_reason(&s.vsecs, "app", "Synced").await;
    let ready = condition_of(&synced, "Ready").unwrap();
    assert_eq!(
        condition_of(&synced, "Refreshed").map(|c| c.0).as_deref(),
        Some("True")
    );
    s.doubles
        .put(
            "/faults",
            json!({"secret": kv_name, "kind": "throttle", "retryAfterSeconds": 1}),
        )
        .await;
    request_refresh(&s, "app", "now").await;
    let failed = wait_for(&s.vsecs, "app", "Refreshed False", |v| {
        condition_of(v, "Refreshed").is_some_and(|c| c.0 == "False")
    })
    .await;
    let refreshed = condition_of(&failed, "Refreshed").unwrap();
    assert_eq!(refreshed.1, "Throttled");
    assert!(refreshed.2.contains(&kv_name), "{refreshed:?}");
    // Retried (with backoff) and failing again: Ready stays as it was, one Warning.
    wait_metric(
        &operator,
        "vaultsync_failures_total{reason=\"Throttled\"}",
        3,
    )
    .await;
    let failing = s.vsecs.get("app").await.unwrap();
    assert_eq!(condition_of(&failing, "Ready"), Some(ready.clone()));
    assert_eq!(
        secret_value(&s.secrets, "app", "password").await.as_deref(),
        Some(b"good-value".as_slice())
    );
    let status = failing.status.clone().unwrap();
    assert!(status.synced_versions.contains_key("password"));
    assert_eq!(status.observed_generation, failing.metadata.generation);
    assert_eq!(warnings(&s.client, &s.ns.name, "app", "Throttled").await, 1);

    reqwest::Client::new()
        .delete(format!(
            "{}/faults?secret={kv_name}",
            env("VAULTSYNC_TEST_AZURE_ADMIN_URL")
        ))
        .send()
        .await
        .unwrap();
    let recovered = wait_for(&s.vsecs, "app", "Refreshed True", |v| {
        condition_of(v, "Refreshed").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert_eq!(condition_of(&recovered, "Refreshed").unwrap().1, "Synced");
    assert_eq!(condition_of(&recovered, "Ready").unwrap().0, "True");
}

#[tokio::test]
async fn the_refresh_annotation_reads_key_vault_once_per_new_value() {
    let s = setup().await;
    let kv_name = unique("refresh");
    seed(&kv_name, "value").await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let mut operator = Operator::start(&s.ns.name, &client_id, &[]);
    // refreshInterval 1h (the default): no refresh is due during the test.
    create(&s, "app", spec_for(&[("password", &kv_name)])).await;
    wait_reason(&s.vsecs, "app", "Synced").await;
    let before = reads(&s, &kv_name).await;
    let handled = |value: &'static str| {
        move |v: &vaultsync::api::VaultSecret| {
            v.status
                .as_ref()
                .and_then(|s| s.last_refresh_request.as_deref())
                == Some(value)
        }
    };

    request_refresh(&s, "app", "1").await;
    wait_for(&s.vsecs, "app", "refresh 1 handled", handled("1")).await;
    assert_eq!(
        reads(&s, &kv_name).await,
        before + 1,
        "one read for value 1"
    );

    // A restarted operator remembers the value it handled.
    operator.terminate();
    let operator = Operator::start(&s.ns.name, &client_id, &[]);
    wait_metric(
        &operator,
        "vaultsync_reconciliations_total{result=\"waiting\"}",
        1,
    )
    .await;
    assert_eq!(
        reads(&s, &kv_name).await,
        before + 1,
        "no read after a restart"
    );

    request_refresh(&s, "app", "2").await;
    wait_for(&s.vsecs, "app", "refresh 2 handled", handled("2")).await;
    assert_eq!(
        reads(&s, &kv_name).await,
        before + 2,
        "one read for value 2"
    );
    let events = events_of(&s.client, &s.ns.name, "app").await;
    assert!(!events.iter().any(|(t, _, _)| t == "Warning"), "{events:?}");
}

/// The watch event of a Secret the operator just wrote starts no reconcile of its writer:
/// it shows what was just written. Without the filter each of twelve first syncs brings
/// one more reconcile that fetches the Secret and finds nothing to do (`waiting`), twelve
/// at least; with it only an event that overtakes its write's answer does (a race the
/// operator loses for a few of them on a loaded machine: 3 of 7 in one run beside a
/// release build), so fewer than twelve short of losing every one. A thirteenth object
/// synced after the twelve is the barrier: their echoes arrived before it was created.
#[tokio::test]
async fn the_watch_event_of_its_own_secret_write_reconciles_nothing() {
    let s = setup().await;
    let kv_name = unique("echo");
    seed(&kv_name, "value").await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let operator = Operator::start(&s.ns.name, &client_id, &[]);
    let names: Vec<String> = (0..12).map(|i| format!("app-{i}")).collect();
    for name in &names {
        create(&s, name, spec_for(&[("password", &kv_name)])).await;
    }
    for name in &names {
        wait_reason(&s.vsecs, name, "Synced").await;
    }
    create(&s, "last", spec_for(&[("password", &kv_name)])).await;
    wait_reason(&s.vsecs, "last", "Synced").await;
    wait_metric(
        &operator,
        "vaultsync_reconciliations_total{result=\"synced\"}",
        13,
    )
    .await;
    let metrics = operator.metrics().await;
    let waiting = metric(
        &metrics,
        "vaultsync_reconciliations_total{result=\"waiting\"}",
    );
    assert!(
        waiting < 12,
        "{waiting} reconciles found nothing to do after 13 first syncs (one per own write without the filter)"
    );
    assert_eq!(
        metric(
            &metrics,
            "vaultsync_reconciliations_total{result=\"synced\"}"
        ),
        13
    );
}

/// A ResourceQuota allowing no Secrets: the API server refuses the Secret (403), which
/// is `KubernetesApiError` in status, retried with backoff; without the quota, the
/// VaultSecret syncs by itself.
#[tokio::test]
async fn a_kubernetes_api_refusal_is_reported_and_retried_until_it_passes() {
    let s = setup().await;
    let kv_name = unique("quota");
    seed(&kv_name, "value").await;
    let quotas =
        Api::<k8s_openapi::api::core::v1::ResourceQuota>::namespaced(s.client.clone(), &s.ns.name);
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "no-secrets"}, "spec": {"hard": {"count/secrets": "0"}}}),
    )
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let operator = Operator::start(&s.ns.name, &client_id, &[]);
    create(&s, "app", spec_for(&[("password", &kv_name)])).await;
    let failed = wait_reason(&s.vsecs, "app", "KubernetesApiError").await;
    let ready = condition_of(&failed, "Ready").unwrap();
    assert_eq!(ready.0, "False");
    assert!(ready.2.contains("quota"), "{ready:?}");
    assert!(ready.2.contains("403"), "{ready:?}");
    wait_metric(
        &operator,
        "vaultsync_failures_total{reason=\"KubernetesApiError\"}",
        2,
    )
    .await;
    assert_eq!(
        warnings(&s.client, &s.ns.name, "app", "KubernetesApiError").await,
        1
    );

    quotas
        .delete("no-secrets", &DeleteParams::default())
        .await
        .unwrap();
    let synced = wait_reason(&s.vsecs, "app", "Synced").await;
    assert_eq!(condition_of(&synced, "Ready").unwrap().0, "True");
    assert_eq!(synced.metadata.generation, Some(1), "no spec change needed");
}

/// Deletes a cluster-scoped object of `kind` when dropped.
struct ClusterScoped(&'static str, String);

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .args(["delete", self.0, &self.1, "--ignore-not-found"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// Whether the API server refuses Secret `name` in `namespace` now (a dry-run create).
async fn secret_refused(secrets: &Api<Secret>, name: &str) -> bool {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    secrets
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &secret,
        )
        .await
        .is_err()
}

/// A ValidatingAdmissionPolicy refusing the Secret (422): `InvalidSpec` quoting the
/// policy, retried with backoff although the spec does not change; once the policy is
/// removed, the VaultSecret syncs by itself.
#[tokio::test]
async fn an_admission_policy_refusal_is_retried_until_the_policy_goes() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let s = setup().await;
    let kv_name = unique("admission");
    seed(&kv_name, "value").await;
    let name = unique("vaultsync-refuse");
    let policy_kind = |kind: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            kind,
        ))
    };
    let policies: Api<DynamicObject> =
        Api::all_with(s.client.clone(), &policy_kind("ValidatingAdmissionPolicy"));
    let bindings: Api<DynamicObject> = Api::all_with(
        s.client.clone(),
        &policy_kind("ValidatingAdmissionPolicyBinding"),
    );
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["secrets"]}]},
            "validations": [{"expression": "object.metadata.name != 'app'",
                "message": "Secrets named app are refused by policy"}],
        },
    }))
    .unwrap();
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": s.ns.name}}},
        },
    }))
    .unwrap();
    let _policy = ClusterScoped("validatingadmissionpolicy", name.clone());
    let _binding = ClusterScoped("validatingadmissionpolicybinding", name.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The API server loads policies asynchronously: wait until it enforces this one.
    for _ in 0..240 {
        if secret_refused(&s.secrets, "app").await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        secret_refused(&s.secrets, "app").await,
        "the policy is enforced"
    );

    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let operator = Operator::start(&s.ns.name, &client_id, &[]);
    create(&s, "app", spec_for(&[("password", &kv_name)])).await;
    let refused = wait_reason(&s.vsecs, "app", "InvalidSpec").await;
    let message = outcome(&refused).unwrap().message.clone();
    assert!(message.contains("refused by policy"), "{message}");
    // Retried without any change of the spec.
    wait_metric(
        &operator,
        "vaultsync_failures_total{reason=\"InvalidSpec\"}",
        2,
    )
    .await;

    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let synced = wait_reason(&s.vsecs, "app", "Synced").await;
    assert_eq!(synced.metadata.generation, Some(1), "no spec change needed");
    assert_eq!(
        secret_value(&s.secrets, "app", "password").await.as_deref(),
        Some(b"value".as_slice())
    );
}

#[tokio::test]
async fn a_missing_key_vault_secret_is_secret_not_found() {
    let s = setup().await;
    let kv_name = unique("missing");
    let (_, _operator) = sync_one(&s, &kv_name, &[&kv_name], None, &[]).await;
    let vsec = wait_reason(&s.vsecs, "app", "SecretNotFound").await;
    assert!(vsec.ready_condition().unwrap().message.contains(&kv_name));
}

#[tokio::test]
async fn a_changed_target_name_removes_the_old_owned_secret() {
    let s = setup().await;
    let kv_name = unique("rename");
    seed(&kv_name, "v").await;
    let (_, _operator) = sync_one(&s, &kv_name, &[&kv_name], None, &[]).await;
    wait_reason(&s.vsecs, "app", "Synced").await;
    s.vsecs
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"target": {"name": "renamed"}}})),
        )
        .await
        .unwrap();
    wait_value(&s.secrets, "renamed", "password", b"v").await;
    for _ in 0..480 {
        if s.secrets.get_opt("app").await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the old Secret was not removed");
}

#[tokio::test]
async fn merge_writes_only_its_keys_and_orphan_secrets_outlive_the_vault_secret() {
    let s = setup().await;
    let kv_name = unique("policies");
    seed(&kv_name, r#"{"user":"app","password":"cGFzcw=="}"#).await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &[]);
    // Its owner lets VaultSecret "merge" in.
    let shared = Secret {
        metadata: ObjectMeta {
            name: Some("shared".into()),
            annotations: Some(BTreeMap::from([(
                "vaultsync.io/merge-from".to_owned(),
                "merge".to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "theirs".to_owned(),
            ByteString(b"kept".to_vec()),
        )])),
        ..Default::default()
    };
    s.secrets
        .create(&PostParams::default(), &shared)
        .await
        .unwrap();
    create(
        &s,
        "merge",
        json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "target": {"name": "shared", "creationPolicy": "Merge"},
               "data": [{"key": "password", "remoteRef": {"name": kv_name, "property": "password", "decoding": "Base64"}}]}),
    )
    .await;
    wait_value(&s.secrets, "shared", "password", b"pass").await;
    assert_eq!(
        secret_value(&s.secrets, "shared", "theirs")
            .await
            .as_deref(),
        Some(b"kept".as_slice())
    );

    create(
        &s,
        "orphan",
        json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "target": {"creationPolicy": "Orphan"},
               "data": [{"key": "user", "remoteRef": {"name": kv_name, "property": "user"}}]}),
    )
    .await;
    wait_value(&s.secrets, "orphan", "user", b"app").await;
    assert!(
        s.secrets
            .get("orphan")
            .await
            .unwrap()
            .metadata
            .owner_references
            .is_none()
    );
    s.vsecs
        .delete("orphan", &DeleteParams::default())
        .await
        .unwrap();
    s.vsecs
        .delete("merge", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(s.secrets.get_opt("orphan").await.unwrap().is_some());
    assert_eq!(
        secret_value(&s.secrets, "shared", "theirs")
            .await
            .as_deref(),
        Some(b"kept".as_slice())
    );
}

/// Seeds a secret with attributes (`enabled`, `exp`, `nbf` as epoch seconds).
async fn seed_with(name: &str, value: &str, attributes: serde_json::Value) {
    KeyVault::first()
        .set_with(name, json!({ "value": value, "attributes": attributes }))
        .await;
}

#[tokio::test]
async fn each_value_problem_has_its_reason_and_no_value_in_the_message() {
    let s = setup().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (disabled, expired, future, plain, big) = (
        unique("disabled"),
        unique("expired"),
        unique("future"),
        unique("plain"),
        unique("big"),
    );
    seed_with(&disabled, "disabled-value", json!({"enabled": false})).await;
    seed_with(&expired, "expired-value", json!({"exp": now - 3600})).await;
    seed_with(&future, "future-value", json!({"nbf": now + 3600})).await;
    seed(&plain, "plain-value!").await;
    // 41 keys of Key Vault's largest value (25,600 bytes): over a Secret's 1 MiB.
    seed(&big, &"x".repeat(25_600)).await;
    let all = [&disabled, &expired, &future, &plain, &big];
    let client_id = operator_identity(&s.doubles, &all.map(|n| n.as_str())).await;
    let operator = Operator::start(&s.ns.name, &client_id, &[]);
    let single = |name: &str, extra: serde_json::Value| {
        let mut remote = json!({"name": name});
        for (k, v) in extra.as_object().unwrap() {
            remote[k] = v.clone();
        }
        json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "data": [{"key": "k", "remoteRef": remote}]})
    };
    create(&s, "disabled", single(&disabled, json!({}))).await;
    create(&s, "expired", single(&expired, json!({}))).await;
    create(&s, "future", single(&future, json!({}))).await;
    create(
        &s,
        "property",
        single(&plain, json!({"property": "password"})),
    )
    .await;
    create(
        &s,
        "decoding",
        single(&plain, json!({"decoding": "Base64"})),
    )
    .await;
    let many: Vec<_> = (0..41)
        .map(|i| json!({"key": format!("k{i}"), "remoteRef": {"name": big}}))
        .collect();
    create(
        &s,
        "large",
        json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "data": many}),
    )
    .await;

    for (name, reason) in [
        ("disabled", "SecretDisabled"),
        ("expired", "SecretExpired"),
        ("future", "SecretNotYetValid"),
        ("property", "PropertyNotFound"),
        ("decoding", "DecodingFailed"),
        ("large", "SecretTooLarge"),
    ] {
        let vsec = wait_reason(&s.vsecs, name, reason).await;
        let message = &vsec.ready_condition().unwrap().message;
        for value in [
            "disabled-value",
            "expired-value",
            "future-value",
            "plain-value!",
        ] {
            assert!(!message.contains(value), "{name}: a value in the message");
        }
        assert!(
            s.secrets.get_opt(name).await.unwrap().is_none(),
            "{name}: nothing written"
        );
    }
    let logs = operator.logs();
    for value in [
        "disabled-value",
        "expired-value",
        "future-value",
        "plain-value!",
    ] {
        assert!(
            !logs.contains(value),
            "a value leaked into the operator log"
        );
    }
}

#[tokio::test]
async fn a_secret_the_api_server_refuses_is_an_invalid_spec() {
    let s = setup().await;
    let kv_name = unique("not-tls");
    seed(&kv_name, "not a certificate").await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &[]);
    // A TLS Secret without tls.crt and tls.key is refused by the API server (422).
    let spec = json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "target": {"type": "kubernetes.io/tls"},
                      "data": [{"key": "password", "remoteRef": {"name": kv_name}}]});
    create(&s, "app", spec).await;
    let vsec = wait_reason(&s.vsecs, "app", "InvalidSpec").await;
    assert!(
        vsec.ready_condition().unwrap().message.contains("tls.crt"),
        "{:?}",
        vsec.ready_condition()
    );
}
