//! The `vaultsync.io/data-hash` mark on the local environment: keyed with the operator's
//! key Secret, so no dictionary finds a short value from it, and an old unkeyed mark is
//! rewritten without a Key Vault read, a data write or an Event.

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;
use vaultsync::api::VaultSecret;
use vaultsync::controller::data_hash::{
    DataHashKey, HMAC_PREFIX, KEY_SECRET_DATA_KEY, KEY_SECRET_NAME, legacy_data_hash,
};

const MARK: &str = "vaultsync.io/data-hash";

fn mark_of(secret: &Secret) -> String {
    secret.metadata.annotations.as_ref().unwrap()[MARK].clone()
}

async fn secret_writes(operator: &Operator) -> u64 {
    operator
        .metrics()
        .await
        .lines()
        .find(|l| l.starts_with("vaultsync_secret_writes_total "))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

/// Every 4-digit PIN whose unkeyed mark, under `key`, equals `mark` (or its digest part).
fn dictionary_hits(key: &str, mark: &str) -> Vec<String> {
    (0..10_000)
        .map(|n| format!("{n:04}"))
        .filter(|pin| {
            let legacy = legacy_data_hash([(key, pin.as_bytes())]);
            mark == legacy || mark.strip_prefix(HMAC_PREFIX) == Some(legacy.as_str())
        })
        .collect()
}

#[tokio::test]
async fn the_data_hash_is_keyed_and_an_old_plain_hash_is_migrated_quietly() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let ns = TempNamespace::create(&client).await;
    let vsecs = Api::<VaultSecret>::namespaced(client.clone(), &ns.name);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns.name);
    let doubles = Doubles::new();
    let kv_name = unique("pin");
    KeyVault::first().set(&kv_name, "4821").await;
    let client_id = operator_identity(&doubles, &[&kv_name]).await;
    let operator = Operator::start(&ns.name, &client_id, &[]);
    let spec = json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "data": [{"key": "pin", "remoteRef": {"name": kv_name}}]});
    for name in ["one", "two"] {
        vsecs
            .create(&PostParams::default(), &vault_secret(name, spec.clone()))
            .await
            .unwrap();
    }
    wait_reason(&vsecs, "one", "Synced").await;
    wait_reason(&vsecs, "two", "Synced").await;

    // Keyed: a dictionary of every 4-digit value finds nothing in the mark...
    let one = secrets.get("one").await.unwrap();
    let mark = mark_of(&one);
    assert!(mark.starts_with(HMAC_PREFIX), "{mark}");
    assert_eq!(dictionary_hits("pin", &mark), Vec::<String>::new());
    // ...which it would have in the unkeyed mark.
    let old_mark = legacy_data_hash([("pin", b"4821".as_slice())]);
    assert_eq!(dictionary_hits("pin", &old_mark), ["4821"]);
    // The key is the one in the operator's namespace, and only that key makes the mark.
    let keys = Api::<Secret>::namespaced(client.clone(), &env("VAULTSYNC_TEST_OPERATOR_NAMESPACE"));
    let key_secret = keys.get(KEY_SECRET_NAME).await.unwrap();
    assert_eq!(key_secret.immutable, Some(true));
    let key =
        DataHashKey::from_bytes(&key_secret.data.as_ref().unwrap()[KEY_SECRET_DATA_KEY].0).unwrap();
    assert_eq!(mark, key.data_hash([("pin", b"4821".as_slice())]));
    // Equal data still gives an equal mark under the one key: accepted, the mark is only
    // for drift detection, and telling equal values apart needs the key.
    assert_eq!(mark_of(&secrets.get("two").await.unwrap()), mark);

    // An old unkeyed mark that matches the data (as an earlier version wrote it) is
    // rewritten in the keyed form: no Key Vault read, no data write, no Event.
    let reads = doubles.vault_requests("GET", &kv_name).await;
    let writes = secret_writes(&operator).await;
    secrets
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {MARK: old_mark}}})),
        )
        .await
        .unwrap();
    let mut migrated = None;
    for _ in 0..240 {
        let now = secrets.get("one").await.unwrap();
        if mark_of(&now) == mark {
            migrated = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let migrated = migrated.expect("the old mark was rewritten in the keyed form");
    assert_eq!(migrated.data, one.data);
    assert_eq!(doubles.vault_requests("GET", &kv_name).await, reads);
    assert_eq!(
        secret_writes(&operator).await,
        writes,
        "no server-side apply"
    );
    let events = events_of(&client, &ns.name, "one").await;
    assert!(
        events
            .iter()
            .all(|(_, r, _)| r != "Rotated" && r != "DriftRepaired"),
        "{events:?}"
    );
}
