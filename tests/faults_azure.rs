//! The Key Vault rows of the fault matrix, on the real operator binary, the real API
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
