//! The Key Vault and Entra rows of the fault matrix, on the real operator binary, the real API
//! server, the emulator and the gateway's injected faults, each checked by the invariant
//! watcher (tests/common/invariants.rs) over every version of every Secret it recorded;
//! and the watcher's own test, which breaks each rule on purpose and expects it caught.

mod common;

use common::invariants::{Invariants, Violation};
use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

fn spec(kv_name: &str) -> serde_json::Value {
    json!({
        "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
        "refreshInterval": "1h",
        "data": [{"key": "value", "remoteRef": {"name": kv_name}}],
    })
}

/// The watcher passes a clean sync and a rotation, and catches each broken rule that a
/// client other than the operator can cause: a foreign value, an empty value, a removed
/// key, a deleted Secret (each then repaired by the operator, which must not hide the
/// recorded break).
#[tokio::test]
async fn invariant_watcher_catches_each_broken_rule() {
    let s = setup().await;
    let kv_name = unique("watched");
    let vault = KeyVault::first();
    let inv = Invariants::start(&s.client, &[&s.ns.name]).await;
    inv.seed(&vault, &kv_name, "first-value").await;
    for i in 0..3 {
        s.vsecs
            .create(
                &PostParams::default(),
                &vault_secret(&format!("app-{i}"), spec(&kv_name)),
            )
            .await
            .unwrap();
    }
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &[]);
    inv.converged(3).await;
    inv.assert_held();

    // A rotation, asked for through the refresh annotation: still clean.
    inv.seed(&vault, &kv_name, "second-value").await;
    for i in 0..3 {
        s.vsecs
            .patch(
                &format!("app-{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"vaultsync.io/refresh": "1"}}})),
            )
            .await
            .unwrap();
    }
    inv.converged(3).await;
    inv.assert_held();

    // Another client writes a value Key Vault never held, an empty value, drops the key,
    // and deletes a Secret. The operator repairs the drift; the record keeps the breaks.
    let merge = |data: serde_json::Value| Patch::Merge(json!({ "data": data }));
    s.secrets
        .patch(
            "app-0",
            &PatchParams::default(),
            &merge(json!({"value": "Zm9yZWlnbg=="})),
        )
        .await
        .unwrap();
    s.secrets
        .patch(
            "app-1",
            &PatchParams::default(),
            &merge(json!({"value": ""})),
        )
        .await
        .unwrap();
    s.secrets
        .patch(
            "app-2",
            &PatchParams::default(),
            &merge(json!({"value": null, "other": "eA=="})),
        )
        .await
        .unwrap();
    inv.converged(3).await;
    let uid =
        |secret: Option<k8s_openapi::api::core::v1::Secret>| secret.and_then(|s| s.metadata.uid);
    let deleted = uid(s.secrets.get_opt("app-0").await.unwrap());
    s.secrets
        .delete("app-0", &Default::default())
        .await
        .unwrap();
    // Re-created by the operator: the watch delivers the deletion before the new Secret.
    for _ in 0..480 {
        let now = uid(s.secrets.get_opt("app-0").await.unwrap());
        if now.is_some() && now != deleted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    inv.converged(3).await;

    let found = inv.violations();
    let has = |f: &dyn Fn(&Violation) -> bool| found.iter().any(f);
    assert!(
        has(&|v| matches!(v, Violation::ForeignValue { secret, .. } if secret.ends_with("/app-0"))),
        "{found:#?}"
    );
    assert!(
        has(&|v| matches!(v, Violation::Empty { secret, .. } if secret.ends_with("/app-1"))),
        "{found:#?}"
    );
    assert!(
        has(
            &|v| matches!(v, Violation::KeyDisappeared { secret, .. } if secret.ends_with("/app-2"))
        ),
        "{found:#?}"
    );
    assert!(
        has(&|v| matches!(v, Violation::Deleted { secret, .. } if secret.ends_with("/app-0"))),
        "{found:#?}"
    );
    assert!(
        !has(&|v| matches!(v, Violation::ReadyWithoutData { .. })),
        "the operator never claimed data it did not write: {found:#?}"
    );
}

/// Objects per row, and the Key Vault secrets they are spread over.
const OBJECTS: usize = 120;
const SECRETS: usize = 4;
/// Objects created during the last phase (a first sync under a whole-vault fault).
const LATE_OBJECTS: usize = 40;
/// How long each phase's fault lasts.
const FAULT: std::time::Duration = std::time::Duration::from_secs(8);
/// The bound on Key Vault requests during a fault, per distinct secret it hits. Each
/// distinct secret costs one read when the fault begins, and then one probe per doubling
/// of the shared back-off (2 s, 4 s within an 8 s fault): see README, "Reliability".
const REQUESTS_PER_SECRET: u64 = 4;

/// What one phase measured.
struct Figures {
    phase: &'static str,
    requests: u64,
    secrets_hit: usize,
    converged: std::time::Duration,
    max_warnings: i32,
}

/// Warning Events per object, counting the repeats a series aggregates.
async fn warnings_by_object(s: &Setup) -> std::collections::BTreeMap<String, i32> {
    let events =
        kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), &s.ns.name);
    let mut by = std::collections::BTreeMap::new();
    for e in events.list(&Default::default()).await.unwrap().items {
        if e.type_.as_deref() != Some("Warning") {
            continue;
        }
        let name = e.regarding.and_then(|r| r.name).unwrap_or_default();
        *by.entry(name).or_default() += e.series.map_or(1, |s| s.count);
    }
    by
}

/// One row of the matrix: `fault` (the admin API's body without `secret` and `clientId`)
/// over four phases, each checked by the invariant watcher and reporting its figures:
/// a first sync with one secret failing, a rotation with one secret failing, a rotation
/// with the whole vault failing, a first sync with the whole vault failing.
async fn row(label: &str, fault: serde_json::Value, operator_flags: &[&str]) {
    let s = setup().await;
    let vault = KeyVault::first();
    let inv = Invariants::start(&s.client, &[&s.ns.name]).await;
    let prefix = unique("row");
    let names: Vec<String> = (0..SECRETS).map(|i| format!("{prefix}-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        inv.seed(&vault, name, &format!("{label}-{i}-v0")).await;
    }
    let create = |from: usize, to: usize| {
        let (vsecs, names) = (s.vsecs.clone(), names.clone());
        async move {
            for i in from..to {
                vsecs
                    .create(
                        &PostParams::default(),
                        &vault_secret(&format!("app-{i}"), spec(&names[i % SECRETS])),
                    )
                    .await
                    .unwrap();
            }
        }
    };
    let client_id = operator_identity(
        &s.doubles,
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let inject = |secret: &str| {
        let mut body = fault.clone();
        body["secret"] = json!(secret);
        body["clientId"] = json!(client_id);
        body
    };
    let rotate = |phase: &'static str| {
        let (vsecs, names, inv, vault) = (s.vsecs.clone(), names.clone(), &inv, &vault);
        async move {
            for (i, name) in names.iter().enumerate() {
                inv.seed(vault, name, &format!("{label}-{i}-{phase}")).await;
            }
            for i in 0..OBJECTS {
                vsecs
                    .patch(
                        &format!("app-{i}"),
                        &PatchParams::default(),
                        &Patch::Merge(
                            json!({"metadata": {"annotations": {"vaultsync.io/refresh": phase}}}),
                        ),
                    )
                    .await
                    .unwrap();
            }
        }
    };

    let mut figures = Vec::new();
    let mut operator = None;
    for phase in [
        "first-sync-one",
        "rotation-one",
        "rotation-vault",
        "first-sync-vault",
    ] {
        let whole_vault = phase.ends_with("-vault");
        let hit: Vec<String> = if whole_vault {
            names.clone()
        } else {
            vec![names[if phase.starts_with("first") { 0 } else { 1 }].clone()]
        };
        let before = common::fleet::reads_of(&s.doubles, &hit).await;
        let warned_before = warnings_by_object(&s).await;
        s.doubles
            .fault(inject(if whole_vault { "*" } else { hit[0].as_str() }))
            .await;
        let expected = match phase {
            "first-sync-one" => {
                create(0, OBJECTS).await;
                operator = Some(Operator::start(&s.ns.name, &client_id, operator_flags));
                OBJECTS
            }
            "first-sync-vault" => {
                create(OBJECTS, OBJECTS + LATE_OBJECTS).await;
                OBJECTS + LATE_OBJECTS
            }
            _ => {
                rotate(phase).await;
                OBJECTS
            }
        };
        tokio::time::sleep(FAULT).await;
        s.doubles.clear_client_faults(&client_id).await;
        let requests = common::fleet::reads_of(&s.doubles, &hit).await - before;
        let converged = inv.converged(expected).await;
        let warned = warnings_by_object(&s).await;
        let max_warnings = warned
            .iter()
            .map(|(name, n)| n - warned_before.get(name).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        figures.push(Figures {
            phase,
            requests,
            secrets_hit: hit.len(),
            converged,
            max_warnings,
        });
    }
    inv.assert_held();
    drop(operator);
    for f in &figures {
        println!(
            "fault row {label} / {}: {} Key Vault requests to {} secret(s) during {}s of fault; converged {:.1}s after it ended; at most {} Warning Event(s) per object",
            f.phase,
            f.requests,
            f.secrets_hit,
            FAULT.as_secs(),
            f.converged.as_secs_f64(),
            f.max_warnings
        );
    }
    for f in &figures {
        assert!(
            f.requests <= REQUESTS_PER_SECRET * f.secrets_hit as u64,
            "{label} / {}: {} requests to {} secret(s)",
            f.phase,
            f.requests,
            f.secrets_hit
        );
        assert!(
            f.max_warnings <= 1,
            "{label} / {}: {} Warning Events for one object",
            f.phase,
            f.max_warnings
        );
    }
}

#[tokio::test]
async fn throttled_with_retry_after() {
    row(
        "throttle-retry-after",
        json!({"kind": "throttle", "retryAfterSeconds": 1}),
        &[],
    )
    .await;
}

#[tokio::test]
async fn throttled_with_retry_after_zero() {
    row(
        "throttle-retry-after-0",
        json!({"kind": "throttle", "retryAfterSeconds": 0}),
        &[],
    )
    .await;
}

#[tokio::test]
async fn throttled_without_retry_after() {
    row(
        "throttle-bare",
        json!({"kind": "throttle", "withoutRetryAfter": true}),
        &[],
    )
    .await;
}

#[tokio::test]
async fn internal_server_error() {
    row("http-500", json!({"kind": "error", "status": 500}), &[]).await;
}

#[tokio::test]
async fn service_unavailable() {
    row("http-503", json!({"kind": "error", "status": 503}), &[]).await;
}

#[tokio::test]
async fn answers_slower_than_the_request_timeout() {
    row(
        "slow",
        json!({"kind": "delay", "delayMs": 3000}),
        &["--request-timeout-seconds", "2"],
    )
    .await;
}

#[tokio::test]
async fn connection_resets() {
    row("reset", json!({"kind": "reset"}), &[]).await;
}

/// A ServiceAccount of `s`'s namespace annotated with a fresh client id, federated and
/// granted `secrets`, whose tokens live `lifetime` seconds; returns the client id.
async fn workload_identity(s: &Setup, name: &str, secrets: &[&str], lifetime: u64) -> String {
    let client_id = uuid::Uuid::new_v4().to_string();
    let sa = k8s_openapi::api::core::v1::ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                [(
                    "azure.workload.identity/client-id".to_owned(),
                    client_id.clone(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
        s.client.clone(),
        &s.ns.name,
    )
    .create(&PostParams::default(), &sa)
    .await
    .unwrap();
    s.doubles.federate(&client_id, &s.ns.name, name).await;
    s.doubles.grant(&client_id, secrets).await;
    s.doubles.token_lifetime(&client_id, lifetime).await;
    client_id
}

/// Entra: the token endpoint down (connections reset), answering 500, or answering an
/// AADSTS error, each for one workload identity, then back; the operator's own identity
/// beside them unharmed. Then tokens that live 60 s, across several lifetimes: no
/// `IdentityError` while Entra answers, one exchange per lifetime per identity.
#[tokio::test]
async fn entra_faults_then_back_and_tokens_across_lifetimes() {
    const LIFETIME: u64 = 60;
    const PER_IDENTITY: usize = 15;
    let s = setup().await;
    let vault = KeyVault::first();
    let inv = Invariants::start(&s.client, &[&s.ns.name]).await;
    let prefix = unique("entra");
    let names: Vec<String> = (0..2).map(|i| format!("{prefix}-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        inv.seed(&vault, name, &format!("entra-{i}")).await;
    }
    let granted: Vec<&str> = names.iter().map(String::as_str).collect();
    let faults = [
        ("sa-down", json!({"kind": "reset"})),
        ("sa-500", json!({"kind": "error", "status": 500})),
        // AADSTS90033: "A transient error has occurred. Please try again."
        (
            "sa-aadsts",
            json!({"kind": "error", "status": 400, "code": 90033}),
        ),
    ];
    let mut identities = Vec::new();
    for (sa, fault) in &faults {
        let client_id = workload_identity(&s, sa, &granted, LIFETIME).await;
        s.doubles.token_fault(&client_id, fault.clone()).await;
        identities.push((Some(*sa), client_id));
    }
    let operator_id = operator_identity(&s.doubles, &granted).await;
    s.doubles.token_lifetime(&operator_id, LIFETIME).await;
    identities.push((None, operator_id.clone()));

    let mut n = 0;
    for (sa, _) in &identities {
        for i in 0..PER_IDENTITY {
            let mut spec = spec(&names[i % names.len()]);
            spec["refreshInterval"] = json!("10s");
            if let Some(sa) = sa {
                spec["identity"] = json!({"serviceAccountName": sa});
            }
            s.vsecs
                .create(
                    &PostParams::default(),
                    &vault_secret(&format!("app-{n}"), spec),
                )
                .await
                .unwrap();
            n += 1;
        }
    }
    let _operator = Operator::start(&s.ns.name, &operator_id, &[]);
    tokio::time::sleep(std::time::Duration::from_secs(15)).await;
    let mut during = Vec::new();
    for (sa, client_id) in &identities {
        during.push((
            sa.unwrap_or("operator"),
            s.doubles.token_requests(client_id).await,
        ));
    }
    for (_, client_id) in &identities[..faults.len()] {
        s.doubles.clear_token_fault(client_id).await;
    }
    let converged = inv.converged(n).await;
    let back = std::time::Instant::now();
    let exchanges_at_back: Vec<u64> = futures::future::join_all(
        identities
            .iter()
            .map(|(_, id)| s.doubles.token_requests(id)),
    )
    .await;

    // Several lifetimes with a refresh every 10 s: a token is needed all the time.
    let window = std::time::Duration::from_secs(LIFETIME * 5 / 2);
    tokio::time::sleep(window).await;
    let identity_errors = inv.statuses_with_reason_since("IdentityError", back);
    inv.assert_held();
    for (label, requests) in &during {
        println!("entra row: {label}: {requests} token requests during 15 s of fault");
    }
    println!(
        "entra row: converged {:.1}s after Entra came back",
        converged.as_secs_f64()
    );
    let lifetimes = window.as_secs().div_ceil(LIFETIME);
    for ((sa, client_id), at_back) in identities.iter().zip(exchanges_at_back) {
        let exchanges = s.doubles.token_requests(client_id).await - at_back;
        println!(
            "entra row: {}: {exchanges} token exchanges over {}s of {LIFETIME}s tokens",
            sa.unwrap_or("operator"),
            window.as_secs()
        );
        assert!(
            exchanges <= lifetimes,
            "{sa:?}: {exchanges} exchanges in {lifetimes} lifetimes"
        );
    }
    assert_eq!(identity_errors, 0, "IdentityError while Entra answered");
}
