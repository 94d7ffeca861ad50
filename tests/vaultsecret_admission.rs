//! Every schema and CEL rule of the CRD, exercised against the real API server: bad specs
//! are refused at admission with a message that says what is wrong.

mod common;

use common::operator::ensure_crd;
use common::*;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};
use vaultsync::api::VaultSecret;

fn valid() -> Value {
    json!({
        "vaultUrl": "https://my-vault.vault.azure.net",
        "data": [{"key": "password", "remoteRef": {"name": "ExampleSecret"}}],
    })
}

/// Creates with dry-run, so nothing is stored; returns the API server's refusal. The spec
/// goes as raw JSON, so values the Rust types cannot even express reach the server too.
async fn admit(spec: Value) -> Result<VaultSecret, String> {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let resource = ApiResource::erase::<VaultSecret>(&());
    let api = Api::<DynamicObject>::namespaced_with(client, "default", &resource);
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "vaultsync.io/v1alpha1",
        "kind": "VaultSecret",
        "metadata": { "name": unique("admission") },
        "spec": spec,
    }))
    .unwrap();
    let created = api.create(&params, &object).await.map_err(|e| match e {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "refusals are 422 Invalid: {status:?}");
            status.message
        }
        other => panic!("expected an API refusal, got {other:?}"),
    })?;
    Ok(serde_json::from_value(serde_json::to_value(created).unwrap()).expect("a VaultSecret back"))
}

async fn refused(spec: Value, expected: &str) {
    match admit(spec.clone()).await {
        Ok(_) => panic!("admitted an invalid spec: {spec}"),
        Err(message) => assert!(
            message.contains(expected),
            "message {message:?} should contain {expected:?}"
        ),
    }
}

fn with(path: &[&str], value: Value) -> Value {
    let mut spec = valid();
    let mut cursor = &mut spec;
    for part in &path[..path.len() - 1] {
        cursor = match part.parse::<usize>() {
            Ok(i) => &mut cursor[i],
            Err(_) => &mut cursor[*part],
        };
    }
    cursor[path[path.len() - 1]] = value;
    spec
}

#[tokio::test]
async fn a_valid_spec_is_admitted_with_defaults() {
    let admitted = admit(valid()).await.expect("valid spec");
    assert_eq!(admitted.spec.refresh_interval, "1h");
    assert_eq!(
        admitted.spec.target.creation_policy,
        vaultsync::api::CreationPolicy::Owner
    );
    assert_eq!(
        admitted.spec.data[0].remote_ref.decoding,
        vaultsync::api::Decoding::None
    );
    for interval in ["0s", "10s", "1h30m"] {
        admit(with(&["refreshInterval"], json!(interval)))
            .await
            .unwrap_or_else(|e| panic!("{interval}: {e}"));
    }
    admit(with(
        &["data", "0", "remoteRef", "version"],
        json!("0123456789abcdef0123456789abcdef"),
    ))
    .await
    .expect("a 32-hex version");
    admit(with(&["data", "0", "remoteRef", "version"], json!("")))
        .await
        .expect("an empty version means current");
    admit(with(&["identity"], json!({"serviceAccountName": "app-sa"})))
        .await
        .expect("one identity field");
}

#[tokio::test]
async fn vault_url_must_be_https() {
    refused(
        with(&["vaultUrl"], json!("http://my-vault.vault.azure.net")),
        "vaultUrl must be an https:// URL",
    )
    .await;
    refused(
        with(&["vaultUrl"], json!("my-vault.vault.azure.net")),
        "vaultUrl must be an https:// URL",
    )
    .await;
}

#[tokio::test]
async fn vault_url_is_a_host_and_port_only() {
    for url in [
        "https://my-vault.vault.azure.net/",
        "https://my-vault.vault.azure.net:443",
        "https://My-Vault.Vault.Azure.Net",
        "https://localhost:8443",
        "https://127.0.0.1:49567/",
    ] {
        admit(with(&["vaultUrl"], json!(url)))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    for url in [
        "https://my-vault.vault.azure.net/secrets",
        "https://my-vault.vault.azure.net//",
        "https://my-vault.vault.azure.net/?api-version=7.6",
        "https://my-vault.vault.azure.net?x=1",
        "https://my-vault.vault.azure.net#frag",
        "https://user@my-vault.vault.azure.net",
        "https://user:pass@my-vault.vault.azure.net",
    ] {
        refused(
            with(&["vaultUrl"], json!(url)),
            "vaultUrl must be only https:// and a host with an optional port",
        )
        .await;
    }
}

#[tokio::test]
async fn key_vault_secret_names_are_checked() {
    refused(
        with(&["data", "0", "remoteRef", "name"], json!("bad_name")),
        "spec.data[0].remoteRef.name",
    )
    .await;
    refused(
        with(&["data", "0", "remoteRef", "name"], json!("x".repeat(128))),
        "spec.data[0].remoteRef.name",
    )
    .await;
}

#[tokio::test]
async fn versions_must_be_32_hex_characters() {
    refused(
        with(&["data", "0", "remoteRef", "version"], json!("latest")),
        "spec.data[0].remoteRef.version",
    )
    .await;
    refused(
        with(
            &["data", "0", "remoteRef", "version"],
            json!("0123456789ABCDEF0123456789ABCDEF"),
        ),
        "spec.data[0].remoteRef.version",
    )
    .await;
}

#[tokio::test]
async fn secret_keys_must_be_valid_and_unique() {
    refused(
        with(&["data", "0", "key"], json!("bad/key")),
        "spec.data[0].key",
    )
    .await;
    let duplicate = with(
        &["data"],
        json!([{"key": "k", "remoteRef": {"name": "a"}}, {"key": "k", "remoteRef": {"name": "b"}}]),
    );
    refused(duplicate, "Duplicate value").await;
}

#[tokio::test]
async fn data_must_not_be_empty() {
    refused(with(&["data"], json!([])), "spec.data").await;
}

#[tokio::test]
async fn identity_takes_exactly_one_field() {
    let both = json!({"serviceAccountName": "sa", "managedIdentityClientId": "00000000-0000-0000-0000-000000000000"});
    refused(
        with(&["identity"], both),
        "set exactly one of serviceAccountName and managedIdentityClientId",
    )
    .await;
    refused(
        with(&["identity"], json!({})),
        "set exactly one of serviceAccountName and managedIdentityClientId",
    )
    .await;
    refused(
        with(
            &["identity"],
            json!({"managedIdentityClientId": "not-a-uuid"}),
        ),
        "spec.identity.managedIdentityClientId",
    )
    .await;
}

#[tokio::test]
async fn refresh_interval_must_be_a_duration_of_at_least_10s() {
    refused(
        with(&["refreshInterval"], json!("5s")),
        "refreshInterval must be at least 10s, or 0s to sync once",
    )
    .await;
    refused(
        with(&["refreshInterval"], json!("1d")),
        "spec.refreshInterval",
    )
    .await;
    refused(
        with(&["refreshInterval"], json!("often")),
        "spec.refreshInterval",
    )
    .await;
}

#[tokio::test]
async fn unknown_enum_values_are_refused() {
    refused(
        with(&["data", "0", "remoteRef", "decoding"], json!("Gzip")),
        "spec.data[0].remoteRef.decoding",
    )
    .await;
    refused(
        with(&["target"], json!({"creationPolicy": "Adopt"})),
        "spec.target.creationPolicy",
    )
    .await;
}

#[tokio::test]
async fn the_examples_in_deploy_are_admitted() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("deploy/examples") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let example: Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        admit(example["spec"].clone())
            .await
            .unwrap_or_else(|e| panic!("{} refused: {e}", path.display()));
        checked += 1;
    }
    assert!(checked >= 3, "examples found: {checked}");
}

#[tokio::test]
async fn secret_types_the_cluster_fills_or_trusts_as_credentials_are_refused() {
    for type_ in [
        "kubernetes.io/service-account-token",
        "bootstrap.kubernetes.io/token",
    ] {
        refused(
            with(&["target"], json!({"type": type_})),
            "target.type may not be kubernetes.io/service-account-token or bootstrap.kubernetes.io/token",
        )
        .await;
    }
    for type_ in [
        "Opaque",
        "kubernetes.io/tls",
        "kubernetes.io/dockerconfigjson",
    ] {
        admit(with(&["target"], json!({"type": type_})))
            .await
            .unwrap_or_else(|e| panic!("{type_} refused: {e}"));
    }
}

#[tokio::test]
async fn marks_cannot_be_forged_through_target_labels_or_annotations() {
    refused(
        with(
            &["target"],
            json!({"annotations": {"vaultsync.io/source-uid": "someone-elses-uid"}}),
        ),
        "target.annotations may not use the vaultsync.io/ prefix",
    )
    .await;
    refused(
        with(
            &["target"],
            json!({"annotations": {"team": "a", "vaultsync.io/merge-from": "app"}}),
        ),
        "target.annotations may not use the vaultsync.io/ prefix",
    )
    .await;
    refused(
        with(
            &["target"],
            json!({"labels": {"vaultsync.io/managed-by": "vaultsync"}}),
        ),
        "target.labels may not use the vaultsync.io/ prefix",
    )
    .await;
    admit(with(
        &["target"],
        json!({"labels": {"app.vaultsync.io": "x"}, "annotations": {"example.com/vaultsync.io": "x"}}),
    ))
    .await
    .expect("keys that merely mention vaultsync.io are the user's");
}

#[tokio::test]
async fn certificate_entries_take_the_whole_value_and_name_a_known_part() {
    let certificate = |extra: Value| {
        let mut remote_ref = json!({"name": "web-tls", "certificate": "Chain"});
        for (k, v) in extra.as_object().unwrap() {
            remote_ref[k] = v.clone();
        }
        with(&["data", "0", "remoteRef"], remote_ref)
    };
    let admitted = admit(certificate(json!({})))
        .await
        .expect("a certificate entry");
    assert_eq!(
        admitted.spec.data[0].remote_ref.certificate,
        Some(vaultsync::api::CertificatePart::Chain)
    );
    for extra in [json!({"property": "cert"}), json!({"decoding": "Base64"})] {
        refused(
            certificate(extra),
            "remoteRef.certificate reads the whole value",
        )
        .await;
    }
    refused(
        certificate(json!({"certificate": "Pfx"})),
        "spec.data[0].remoteRef.certificate",
    )
    .await;
}
