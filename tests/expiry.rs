//! Expiry seen coming, on the local environment: Key Vault versions seeded with
//! `attributes.exp` through the emulator's REST API, the real operator reporting
//! `status.expiresAt`, the `Expiring` condition and Warning, the metric, and the printer
//! column. Waits are bounded polls; counts of Warnings and reads are asserted, never times.

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use kube::api::PostParams;
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};
use vaultsync::api::{EXPIRING, VaultSecret};

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const DAY: i64 = 86400;

async fn seed(vault: &KeyVault, name: &str, value: &str, exp: Option<i64>) -> String {
    let body = match exp {
        Some(exp) => json!({"value": value, "attributes": {"exp": exp}}),
        None => json!({"value": value}),
    };
    vault.set_with(name, body).await
}

fn expiring(vsec: &VaultSecret) -> Option<(String, String, String)> {
    condition_of(vsec, EXPIRING)
}

fn expires_at(vsec: &VaultSecret) -> Option<i64> {
    vsec.status
        .as_ref()?
        .expires_at
        .as_ref()
        .map(|t| t.0.as_second())
}

async fn wait_expiring_reason(s: &Setup, name: &str, reason: &str) -> VaultSecret {
    wait_for(&s.vsecs, name, reason, |v| {
        expiring(v).is_some_and(|(_, r, _)| r == reason)
    })
    .await
}

#[tokio::test]
async fn expires_at_is_the_earliest_exp_and_expiring_warns_once() {
    let s = setup().await;
    let vault = KeyVault::first();
    let (far, near, none) = (unique("exp-far"), unique("exp-near"), unique("exp-none"));
    let now = now_seconds();
    seed(&vault, &far, "far-value", Some(now + 100 * DAY)).await;
    seed(&vault, &near, "near-value", Some(now + 3 * DAY)).await;
    seed(&vault, &none, "none-value", None).await;
    let client_id = operator_identity(&s.doubles, &[&far, &near, &none]).await;
    let operator = Operator::start(&s.ns.name, &client_id, &[]);
    let spec = json!({
        "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
        "data": [
            {"key": "far", "remoteRef": {"name": far}},
            {"key": "near", "remoteRef": {"name": near}},
            {"key": "none", "remoteRef": {"name": none}},
        ],
    });
    s.vsecs
        .create(&PostParams::default(), &vault_secret("app", spec))
        .await
        .unwrap();
    let vsec = wait_expiring_reason(&s, "app", "Expiring").await;
    assert_eq!(expires_at(&vsec), Some(now + 3 * DAY));
    let status = vsec.status.as_ref().unwrap();
    assert_eq!(
        status.synced_expiries.keys().collect::<Vec<_>>(),
        ["far", "near"]
    );
    let (state, _, message) = expiring(&vsec).unwrap();
    assert_eq!(state, "True");
    assert!(
        message.contains("key 'near'") && message.contains(&near) && message.contains("168h"),
        "{message}"
    );
    assert_eq!(condition_of(&vsec, "Ready").unwrap().1, "Synced");

    // Refreshes keep the state: one Warning in all.
    refresh(&s, "app", "1").await;
    refresh(&s, "app", "2").await;
    assert_eq!(warnings(&s.client, &s.ns.name, "app", "Expiring").await, 1);

    // Bounded buckets, no object label.
    let metrics = operator.metrics().await;
    let bucket = |within: &str| {
        metric(
            &metrics,
            &format!("vaultsync_vaultsecrets_expiring{{within=\"{within}\"}}"),
        )
    };
    assert_eq!(
        (
            bucket("0s"),
            bucket("24h"),
            bucket("168h"),
            bucket("720h"),
            bucket("+Inf")
        ),
        (0, 0, 1, 1, 1),
        "{metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("vaultsync_vaultsecrets_expiring") && l.contains("name=")),
    );

    // The printer column.
    let table = std::process::Command::new("kubectl")
        .args(["get", "vsec", "app", "-n", &s.ns.name])
        .output()
        .expect("kubectl get");
    let table = String::from_utf8_lossy(&table.stdout);
    let expected = k8s_openapi::jiff::Timestamp::from_second(now + 3 * DAY)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    assert!(
        table.contains("EXPIRES") && table.contains(&expected),
        "{table}"
    );

    // A new version with a later expiry: the earliest is now the other key's, far away.
    seed(&vault, &near, "near-value-2", Some(now + 200 * DAY)).await;
    let vsec = refresh(&s, "app", "3").await;
    assert_eq!(expires_at(&vsec), Some(now + 100 * DAY));
    let (state, reason, _) = expiring(&vsec).unwrap();
    assert_eq!((state.as_str(), reason.as_str()), ("False", "NotExpiring"));
    let metrics = operator.metrics().await;
    assert_eq!(
        metric(&metrics, "vaultsync_vaultsecrets_expiring{within=\"168h\"}"),
        0
    );
    assert_eq!(warnings(&s.client, &s.ns.name, "app", "Expiring").await, 1);

    // No value anywhere the operator reports.
    let events = events_of(&s.client, &s.ns.name, "app").await;
    let reported = format!(
        "{}{events:?}{metrics}{}",
        serde_json::to_string(&vsec.status).unwrap(),
        operator.logs()
    );
    for value in ["far-value", "near-value", "none-value"] {
        assert!(!reported.contains(value), "a value leaked");
    }
}

#[tokio::test]
async fn the_warning_comes_at_window_entry_without_a_refresh() {
    let s = setup().await;
    let vault = KeyVault::first();
    let kv_name = unique("exp-entry");
    // Enters a 1h window about 20 s after the first sync; the next refresh is an hour away.
    seed(&vault, &kv_name, "v", Some(now_seconds() + 3600 + 20)).await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &["--expiry-warning", "1h"]);
    let spec = json!({
        "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
        "data": [{"key": "k", "remoteRef": {"name": kv_name}}],
    });
    s.vsecs
        .create(&PostParams::default(), &vault_secret("app", spec))
        .await
        .unwrap();
    let vsec = wait_expiring_reason(&s, "app", "NotExpiring").await;
    let synced_at = vsec.status.unwrap().last_sync_time;
    let vsec = wait_expiring_reason(&s, "app", "Expiring").await;
    assert!(expiring(&vsec).unwrap().2.contains("1h"));
    assert_eq!(warnings(&s.client, &s.ns.name, "app", "Expiring").await, 1);
    // The clock did it: no Key Vault read, no new sync.
    assert_eq!(vsec.status.unwrap().last_sync_time, synced_at);
    assert_eq!(s.doubles.authorized_reads(&kv_name).await, 1);
}

#[tokio::test]
async fn a_version_past_its_expiry_is_reported_expired_and_refused() {
    let s = setup().await;
    let vault = KeyVault::first();
    let kv_name = unique("exp-past");
    seed(&vault, &kv_name, "soon-gone", Some(now_seconds() + 15)).await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &[]);
    let spec = json!({
        "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
        "data": [{"key": "k", "remoteRef": {"name": kv_name}}],
    });
    s.vsecs
        .create(&PostParams::default(), &vault_secret("app", spec))
        .await
        .unwrap();
    wait_expiring_reason(&s, "app", "Expiring").await;
    // At the expiry, by the clock alone.
    let vsec = wait_expiring_reason(&s, "app", "Expired").await;
    let (state, _, message) = expiring(&vsec).unwrap();
    assert_eq!(state, "True");
    assert!(message.contains("expired at"), "{message}");
    assert_eq!(warnings(&s.client, &s.ns.name, "app", "Expired").await, 1);

    // Key Vault still returns the expired version; the operator refuses it, keeps the last
    // good data and says why.
    let vsec = refresh(&s, "app", "after-expiry").await;
    let (refreshed, reason, message) = condition_of(&vsec, "Refreshed").unwrap();
    assert_eq!(
        (refreshed.as_str(), reason.as_str()),
        ("False", "SecretExpired")
    );
    assert!(
        message.contains(&kv_name) && message.contains("expired at"),
        "{message}"
    );
    assert_eq!(condition_of(&vsec, "Ready").unwrap().0, "True");
    assert_eq!(
        s.secrets.get("app").await.unwrap().data.unwrap()["k"].0,
        b"soon-gone"
    );
    assert_eq!(expiring(&vsec).unwrap().1, "Expired");
}
