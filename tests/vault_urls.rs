//! Only vaults: a `vaultUrl` that is not a Key Vault host the operator accepts is
//! `InvalidSpec` with no request made; challenge verification is skipped only for the
//! hosts listed; a 200 answer without a value is never an empty Secret.

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use kube::api::PostParams;
use serde_json::json;

async fn create(s: &Setup, name: &str, vault_url: &str, kv_name: &str) {
    let spec =
        json!({"vaultUrl": vault_url, "data": [{"key": "k", "remoteRef": {"name": kv_name}}]});
    s.vsecs
        .create(&PostParams::default(), &vault_secret(name, spec))
        .await
        .expect("create the VaultSecret");
}

/// `host:port` of a vault URL of the environment.
fn authority(url: &str) -> String {
    url.trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned()
}

async fn authorized_requests(doubles: &Doubles, kv_name: &str) -> u64 {
    doubles.stats().await["vaultAuthorized"]["GET"][kv_name]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_vault_url_off_key_vault_domains_is_invalid_spec_and_never_called() {
    let s = setup().await;
    let kv_name = unique("offdomain");
    KeyVault::first().set(&kv_name, "never-read").await;
    let synced = unique("ondomain");
    KeyVault::second().set(&synced, "read").await;
    let client_id = operator_identity(&s.doubles, &[&kv_name, &synced]).await;
    // Vault 2 (`localhost`) stays acceptable; vault 1 (`127.0.0.1`) is off every suffix.
    let operator = Operator::start_with_env(
        &s.ns.name,
        &client_id,
        &[],
        &[("VAULTSYNC_EXTRA_VAULT_SUFFIXES", "localhost")],
    );
    for (name, url) in [
        ("apiserver", "https://kubernetes.default.svc".to_owned()),
        ("cluster-ip", "https://10.0.0.1".to_owned()),
        ("loopback", env("VAULTSYNC_TEST_VAULT_URL")),
    ] {
        create(&s, name, &url, &kv_name).await;
    }
    create(&s, "allowed", &env("VAULTSYNC_TEST_VAULT2_URL"), &synced).await;

    for (name, host) in [
        ("apiserver", "kubernetes.default.svc"),
        ("cluster-ip", "10.0.0.1"),
        ("loopback", "127.0.0.1"),
    ] {
        let vsec = wait_reason(&s.vsecs, name, "InvalidSpec").await;
        let message = &vsec.ready_condition().unwrap().message;
        assert!(
            message.contains(&format!("'{host}'"))
                && message.contains(".vault.azure.net")
                && message.contains(".vault.usgovcloudapi.net")
                && message.contains("localhost"),
            "{name}: {message}"
        );
        assert!(s.secrets.get_opt(name).await.unwrap().is_none(), "{name}");
    }
    // The same operator reads an accepted vault: the zeros below are not a dead operator.
    wait_reason(&s.vsecs, "allowed", "Synced").await;
    assert_eq!(
        s.doubles.vault_requests("GET", &kv_name).await,
        0,
        "the gateway saw no request for a refused vault"
    );
    let metrics = operator.metrics().await;
    assert!(
        !metrics.contains("vaultsync_keyvault_reads_total{result=\"InvalidSpec\"}"),
        "a refused vault is not a Key Vault read: {metrics}"
    );
}

#[tokio::test]
async fn a_vault_not_listed_for_skipping_must_pass_the_challenge_check() {
    let s = setup().await;
    let kv_name = unique("challenged");
    KeyVault::first().set(&kv_name, "not-for-this-vault").await;
    let skipped = unique("skipped");
    KeyVault::second().set(&skipped, "emulator-value").await;
    let client_id = operator_identity(&s.doubles, &[&kv_name, &skipped]).await;
    let vault2 = env("VAULTSYNC_TEST_VAULT2_URL");
    // Only vault 2 skips the check; vault 1's challenge (resource vault.azure.net) cannot
    // name 127.0.0.1.
    let _operator = Operator::start_with_env(
        &s.ns.name,
        &client_id,
        &[],
        &[(
            "VAULTSYNC_SKIP_CHALLENGE_VERIFICATION_FOR",
            &authority(&vault2),
        )],
    );
    create(&s, "checked", &env("VAULTSYNC_TEST_VAULT_URL"), &kv_name).await;
    create(&s, "skipped", &vault2, &skipped).await;

    let vsec = wait_reason(&s.vsecs, "checked", "VaultUnreachable").await;
    let message = &vsec.ready_condition().unwrap().message;
    assert!(
        message.contains("challenge resource") && message.contains("no token was sent"),
        "{message}"
    );
    wait_reason(&s.vsecs, "skipped", "Synced").await;
    assert!(s.secrets.get_opt("checked").await.unwrap().is_none());
    assert!(
        s.doubles.vault_requests("GET", &kv_name).await >= 1,
        "the token-less first request reached the gateway"
    );
    assert_eq!(
        authorized_requests(&s.doubles, &kv_name).await,
        0,
        "no request with a token went to the vault that failed the check"
    );
}

#[tokio::test]
async fn an_answer_without_a_value_is_a_failure_not_an_empty_secret() {
    let s = setup().await;
    let kv_name = unique("novalue");
    KeyVault::first().set(&kv_name, "real-value").await;
    // A 200 whose body has no `value` (an error body with a success status).
    s.doubles
        .put(
            "/faults",
            json!({"secret": kv_name, "kind": "error", "status": 200, "count": 1000}),
        )
        .await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &[]);
    create(&s, "app", &env("VAULTSYNC_TEST_VAULT_URL"), &kv_name).await;
    let vsec = wait_reason(&s.vsecs, "app", "VaultUnreachable").await;
    let message = &vsec.ready_condition().unwrap().message;
    assert!(
        message.contains("without a value") && message.contains(&kv_name),
        "{message}"
    );
    assert!(
        s.secrets.get_opt("app").await.unwrap().is_none(),
        "no Secret is written from an answer without a value"
    );
}
