//! The Key Vault and Entra rows of the fault matrix, on the real operator binary, the real API
//! server, the emulator and the gateway's injected faults, each checked by the invariant
//! watcher (tests/common/invariants.rs) over every version of every Secret it recorded;
//! and the watcher's own test, which breaks each rule on purpose and expects it caught.

mod common;

use common::fleet::{Fleet, reads_of, report, warnings_per_object};
use common::invariants::{Invariants, Violation};
use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};

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

/// Objects a row syncs first, the Key Vault secrets they are spread over, and the objects
/// of its last first sync (in a second namespace, over 4 secrets of their own).
const OBJECTS: usize = 40;
const SECRETS: usize = 4;
const LATE_OBJECTS: usize = 20;
/// How long a fault lasts once the operator has met it. Longer than an object's first
/// retry (5 s after its failure, `decide::retry_delay`), so that each fault meets retries,
/// not only first attempts.
const FAULT: Duration = Duration::from_secs(6);
/// Requests a fault may cost per distinct Key Vault secret it hits, as the gateway counts
/// them from the fault's start to its end. The objects reading one secret share one read
/// (`source::single_flight`); that read fails and shuts the secret's back-off gate (and,
/// for a 429, the vault's: `source::gate`), which refuses every other read without a
/// request until its pause (2 s, then 4 s, ...) is over; then one read goes as a probe
/// for all. So a secret costs one read when the fault begins and one probe per pause
/// that ends within the fault: up to 2 in 6 s (pauses of 2 s and 4 s), as the objects'
/// own retries come 5 s after their failures, which a busy operator spreads over a second
/// or two. 4 leaves one for a read sent while the first was still unanswered (a refresh
/// shares no read begun before its reconcile, and a slow answer is unanswered for the
/// whole request timeout). Measured: at most 3. Each object retrying on its own timer, the new user saw 111
/// requests for 4 secrets in 20 s.
const REQUESTS_PER_SECRET: u64 = 4;

/// What a row's window asks of the operator while the fault lasts, and where it hits.
#[derive(Clone, Copy)]
enum Window {
    /// The first fleet's objects, never synced, under a whole-vault fault.
    FirstSyncWholeVault,
    /// Every secret of the first fleet rotated and a refresh asked of every object, with
    /// its second secret failing.
    RotationOneSecret,
    /// The same with every secret of the vault failing.
    RotationWholeVault,
    /// The second fleet's objects, never synced, with its first secret failing.
    FirstSyncOneSecret,
}

impl Window {
    fn name(self) -> &'static str {
        match self {
            Window::FirstSyncWholeVault => "first sync, whole vault",
            Window::RotationOneSecret => "rotation, one secret",
            Window::RotationWholeVault => "rotation, whole vault",
            Window::FirstSyncOneSecret => "first sync, one secret",
        }
    }
}

/// One row of the matrix: one operator over two fleets ([`Fleet`], one per namespace)
/// goes through the four [`Window`]s of `fault` (the admin API's body without `secret`
/// and `clientId`; scoped to this row's client id, so rows running at once do not feel
/// each other's faults). A window's fault lasts `lasting` ([`FAULT`] but for the first
/// window, `first_fault`) from the first request that meets it. After each window every
/// object converges and the invariant watchers check every Secret and VaultSecret version
/// recorded so far; each window reports its figures and asserts its counts.
async fn row(
    label: &str,
    fault: serde_json::Value,
    operator_flags: &[&str],
    first_fault: Duration,
) {
    let s = setup().await;
    let late = setup().await;
    let mut first = Fleet::create(&s, "app", 0, SECRETS, "1h").await;
    let mut second = Fleet::create(&late, "late", 0, SECRETS, "1h").await;
    let granted: Vec<&str> = first
        .kv_names
        .iter()
        .chain(&second.kv_names)
        .map(String::as_str)
        .collect();
    let client_id = operator_identity(&s.doubles, &granted).await;
    let operator = Operator::start(
        &format!("{},{}", s.ns.name, late.ns.name),
        &client_id,
        operator_flags,
    );
    // Up before the first window, so that its fault meets reads, not a process starting.
    operator.metrics().await;
    for (window, lasting) in [
        (Window::FirstSyncWholeVault, first_fault),
        (Window::RotationOneSecret, FAULT),
        (Window::RotationWholeVault, FAULT),
        (Window::FirstSyncOneSecret, FAULT),
    ] {
        let fleet = match window {
            Window::FirstSyncOneSecret => &mut second,
            _ => &mut first,
        };
        let (target, hit) = match window {
            Window::FirstSyncWholeVault | Window::RotationWholeVault => {
                ("*".to_owned(), fleet.kv_names.clone())
            }
            Window::RotationOneSecret => {
                (fleet.kv_names[1].clone(), vec![fleet.kv_names[1].clone()])
            }
            Window::FirstSyncOneSecret => {
                (fleet.kv_names[0].clone(), vec![fleet.kv_names[0].clone()])
            }
        };
        let reads_before = reads_of(&s.doubles, &hit).await;
        let warned_before = fleet.warnings_per_object(&s.client).await;
        let mut body = fault.clone();
        body["secret"] = json!(target);
        body["clientId"] = json!(client_id);
        s.doubles.fault(body).await;
        let new_objects = match window {
            Window::FirstSyncWholeVault => {
                fleet.grow(OBJECTS).await;
                OBJECTS
            }
            Window::FirstSyncOneSecret => {
                fleet.grow(LATE_OBJECTS).await;
                LATE_OBJECTS
            }
            Window::RotationOneSecret | Window::RotationWholeVault => {
                fleet.rotate().await;
                fleet.request_refresh().await;
                0
            }
        };
        // The fault lasts `lasting` from the operator's first request that meets it (on
        // a busy machine the reads may start a few seconds after the objects change).
        let mut met = false;
        for _ in 0..600 {
            if reads_of(&s.doubles, &hit).await > reads_before {
                met = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(met, "{label}, {}: no request met the fault", window.name());
        // The fault's length is the scenario, not a wait for an outcome.
        tokio::time::sleep(lasting).await;
        s.doubles.clear_client_faults(&client_id).await;
        let requests = reads_of(&s.doubles, &hit).await - reads_before;
        let what = format!("{label}, {}", window.name());
        let converged = fleet.wait_converged(&what).await;
        let warned = fleet.warnings_per_object(&s.client).await;
        let new_warnings: Vec<i64> = warned
            .iter()
            .map(|(name, n)| n - warned_before.get(name).copied().unwrap_or(0))
            .filter(|&n| n > 0)
            .collect();
        let most = new_warnings.iter().copied().max().unwrap_or(0);
        let (secret_versions, status_versions) = fleet.invariants.recorded();
        report(
            &what,
            &format!(
                "{} objects ({new_objects} new) over {SECRETS} secrets; {requests} Key Vault requests to {} secret(s) during {} s of fault; converged {:.1} s after it ended; Warning Events: {} objects warned, at most {most} per object; invariants held over {secret_versions} Secret and {status_versions} VaultSecret versions",
                fleet.n,
                hit.len(),
                lasting.as_secs(),
                converged.as_secs_f64(),
                new_warnings.len(),
            ),
        );
        fleet.invariants.assert_held();
        assert!(
            requests <= REQUESTS_PER_SECRET * hit.len() as u64,
            "{what}: {requests} requests to {} secret(s)",
            hit.len()
        );
        assert!(
            most <= 1,
            "{what}: an object got {most} Warning Events for one failure"
        );
        assert!(
            !new_warnings.is_empty(),
            "{what}: no object reported the fault"
        );
    }
    first.invariants.assert_held();
    second.invariants.assert_held();
    drop(operator);
}

#[tokio::test]
async fn throttled_with_retry_after() {
    row(
        "429 Retry-After: 1",
        json!({"kind": "throttle", "retryAfterSeconds": 1}),
        &[],
        FAULT,
    )
    .await;
}

/// The new user: 40 VaultSecrets over 4 secrets, a first sync under 20 s of
/// whole-vault 429 with `Retry-After: 0`.
#[tokio::test]
async fn throttled_with_retry_after_zero() {
    row(
        "429 Retry-After: 0",
        json!({"kind": "throttle", "retryAfterSeconds": 0}),
        &[],
        Duration::from_secs(20),
    )
    .await;
}

#[tokio::test]
async fn throttled_without_retry_after() {
    row(
        "429 without Retry-After",
        json!({"kind": "throttle", "withoutRetryAfter": true}),
        &[],
        FAULT,
    )
    .await;
}

#[tokio::test]
async fn internal_server_error() {
    row("500", json!({"kind": "error", "status": 500}), &[], FAULT).await;
}

#[tokio::test]
async fn service_unavailable() {
    row("503", json!({"kind": "error", "status": 503}), &[], FAULT).await;
}

#[tokio::test]
async fn answers_slower_than_the_request_timeout() {
    row(
        "3 s answers, 2 s timeout",
        json!({"kind": "delay", "delayMs": 3000}),
        &["--request-timeout-seconds", "2"],
        FAULT,
    )
    .await;
}

#[tokio::test]
async fn connection_resets() {
    row("connection reset", json!({"kind": "reset"}), &[], FAULT).await;
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
/// beside them unharmed. Then tokens that live 60 s, across 2.5 lifetimes: no
/// `IdentityError` while Entra answers, one exchange per lifetime per identity.
#[tokio::test]
async fn entra_faults_then_back_and_tokens_across_lifetimes() {
    const LIFETIME: u64 = 60;
    const PER_IDENTITY: usize = 10;
    const ENTRA_FAULT: Duration = Duration::from_secs(10);
    let s = setup().await;
    let vault = KeyVault::first();
    let inv = Invariants::start(&s.client, &[&s.ns.name]).await;
    let prefix = unique("entra");
    let names: Vec<String> = (0..2).map(|i| format!("{prefix}-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        inv.seed(&vault, name, &format!("{prefix}-value-{i}")).await;
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
        identities.push((*sa, client_id));
    }
    let operator_id = operator_identity(&s.doubles, &granted).await;
    s.doubles.token_lifetime(&operator_id, LIFETIME).await;
    identities.push(("operator", operator_id.clone()));

    // Objects `{identity}-{i}`; a refresh every 10 s keeps each identity needing a token.
    for (sa, _) in &identities {
        for i in 0..PER_IDENTITY {
            let mut spec = spec(&names[i % names.len()]);
            spec["refreshInterval"] = json!("10s");
            if *sa != "operator" {
                spec["identity"] = json!({"serviceAccountName": sa});
            }
            s.vsecs
                .create(
                    &PostParams::default(),
                    &vault_secret(&format!("{sa}-{i}"), spec),
                )
                .await
                .unwrap();
        }
    }
    let n = identities.len() * PER_IDENTITY;
    let _operator = Operator::start(&s.ns.name, &operator_id, &[]);
    // The fault lasts from the moment every failing identity has met it (on a busy machine
    // the operator may take seconds to start).
    let mut met = false;
    for _ in 0..600 {
        let mut all = true;
        for (_, client_id) in &identities[..faults.len()] {
            all &= s.doubles.token_requests(client_id).await > 0;
        }
        if all {
            met = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(met, "the operator never asked the failing token endpoint");
    // The fault's length is the scenario, not a wait for an outcome.
    tokio::time::sleep(ENTRA_FAULT).await;
    let mut during = Vec::new();
    for (_, client_id) in &identities {
        during.push(s.doubles.token_requests(client_id).await);
    }
    for (_, client_id) in &identities[..faults.len()] {
        s.doubles.clear_token_fault(client_id).await;
    }
    let converged = inv.converged(n).await;
    let back = Instant::now();
    let exchanges_at_back: Vec<u64> = futures::future::join_all(
        identities
            .iter()
            .map(|(_, id)| s.doubles.token_requests(id)),
    )
    .await;

    // 2.5 lifetimes with Entra answering: the scenario's length, not a wait for an outcome.
    let lifetimes = 5 * LIFETIME / 2;
    tokio::time::sleep(Duration::from_secs(lifetimes)).await;
    let identity_errors = inv.statuses_with_reason_since("IdentityError", back);
    let warned = warnings_per_object(&s.client, &s.ns.name, "").await;
    inv.assert_held();
    let (secret_versions, status_versions) = inv.recorded();
    let mut exchanges = Vec::new();
    for (((sa, client_id), at_back), during) in identities.iter().zip(exchanges_at_back).zip(during)
    {
        let after = s.doubles.token_requests(client_id).await - at_back;
        let most = warned
            .iter()
            .filter(|(name, _)| name.starts_with(&format!("{sa}-")))
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        report(
            &format!("Entra, {sa}"),
            &format!(
                "{PER_IDENTITY} objects; {during} token requests during {} s of fault; at most {most} Warning Event(s) per object; {after} token exchanges over {lifetimes} s of {LIFETIME} s tokens after Entra was back",
                ENTRA_FAULT.as_secs()
            ),
        );
        let history = inv.ready_history(&format!("{}/{sa}-0", s.ns.name));
        report(
            &format!("Entra, {sa}-0"),
            &format!("Ready went {history:?}"),
        );
        exchanges.push((sa, after, most));
    }
    report(
        "Entra",
        &format!(
            "{n} objects converged {:.1} s after the token endpoint came back; {identity_errors} statuses with IdentityError after; invariants held over {secret_versions} Secret and {status_versions} VaultSecret versions",
            converged.as_secs_f64()
        ),
    );
    assert_eq!(identity_errors, 0, "IdentityError while Entra answered");
    for i in 0..PER_IDENTITY {
        let history = inv.ready_history(&format!("{}/operator-{i}", s.ns.name));
        assert!(
            history.iter().all(|(_, reason)| reason != "IdentityError"),
            "operator-{i}, whose identity Entra always served: {history:?}"
        );
    }
    // A token is renewed a tenth of its lifetime before it expires: 2.5 lifetimes from a
    // fresh token take 2 renewals, at 54 s and 108 s; 3 allows for a token fetched a
    // little before Entra came back.
    let bound = lifetimes.div_ceil(LIFETIME);
    for (sa, after, most) in exchanges {
        assert!(
            after <= bound,
            "{sa}: {after} token exchanges in {lifetimes} s of {LIFETIME} s tokens"
        );
        assert!(most <= 1, "{sa}: an object got {most} Warning Events");
        assert!(
            most == 1 || *sa == "operator",
            "{sa}: its objects reported no failure while Entra failed"
        );
    }
}
