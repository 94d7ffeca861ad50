//! Certificate entries on the local environment: certificates made by the `openssl` CLI
//! (RSA and EC keys, a chain root → intermediate → leaf), stored in the Key Vault emulator
//! as Key Vault keeps a certificate's secret (PFX with and without a MAC, PEM with the key
//! after the certificates, with and without a content type), synced by the real operator
//! into `kubernetes.io/tls` Secrets that the API server admits, and the written files
//! checked with `openssl`. Waits are bounded polls; nothing about time is asserted.

mod common;

use base64::Engine;
use common::keyvault::KeyVault;
use common::openssl::{openssl, write_chain, write_pfx};
use common::operator::*;
use common::*;
use kube::api::PostParams;
use serde_json::json;
use std::path::{Path, PathBuf};

/// A directory holding `root`, `int` and `leaf` keys (`alg`: `RSA` or `EC`) and
/// certificates; the leaf is valid for `leaf_days`.
fn make_chain(alg: &str, leaf_days: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("vaultsync-certs"));
    std::fs::create_dir_all(&dir).unwrap();
    write_chain(&dir, alg, "P-384", leaf_days);
    // The leaf's key as it is written to tls.key (PKCS#8 PEM): the leak scan looks for it
    // too, not only for the PFX or PEM values seeded.
    common::leak::register_value(&read(&dir, "leaf.key"));
    // The issuers as one PEM file, `issuers.pem`, as the PFX holds them.
    write_pfx(&dir, "leaf.pfx", "", &[]);
    dir
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// The Base64 of a password-less PFX of the leaf, its key and its issuers.
fn pfx(dir: &Path, extra: &[&str]) -> String {
    base64::engine::general_purpose::STANDARD.encode(write_pfx(dir, "leaf.pfx", "", extra))
}

/// The leaf's notAfter, in Unix seconds, as openssl reads it.
fn not_after(dir: &Path) -> i64 {
    let text = openssl(
        dir,
        &[
            "x509", "-in", "leaf.crt", "-noout", "-enddate", "-dateopt", "iso_8601",
        ],
    );
    let at: k8s_openapi::jiff::Timestamp =
        text.trim().trim_start_matches("notAfter=").parse().unwrap();
    at.as_second()
}

/// Checks a synced TLS Secret's files with openssl: `tls.crt` is leaf, intermediate, root;
/// `tls.key` is PKCS#8 and is the leaf's key; `ca.crt`, when written, verifies the leaf.
fn check_tls_files(dir: &Path, data: &std::collections::BTreeMap<String, k8s_openapi::ByteString>) {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    for (key, value) in data {
        std::fs::write(out.join(key), &value.0).unwrap();
    }
    let crt = String::from_utf8(data["tls.crt"].0.clone()).unwrap();
    let blocks: Vec<&str> = crt.split_inclusive("-----END CERTIFICATE-----\n").collect();
    let subjects: Vec<String> = blocks
        .iter()
        .enumerate()
        .map(|(i, block)| {
            let file = format!("out/block{i}.pem");
            std::fs::write(dir.join(&file), block).unwrap();
            openssl(dir, &["x509", "-in", &file, "-noout", "-subject"])
                .trim()
                .to_owned()
        })
        .collect();
    assert_eq!(
        subjects,
        [
            "subject=CN = leaf.example",
            "subject=CN = Test Intermediate",
            "subject=CN = Test Root"
        ]
    );
    let key = String::from_utf8(data["tls.key"].0.clone()).unwrap();
    assert!(
        key.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "PKCS#8 PEM"
    );
    let key_public = openssl(dir, &["pkey", "-in", "out/tls.key", "-pubout"]);
    let leaf_public = openssl(dir, &["x509", "-in", "out/tls.crt", "-noout", "-pubkey"]);
    assert_eq!(key_public, leaf_public, "tls.key is the leaf's key");
    if data.contains_key("ca.crt") {
        let verified = openssl(dir, &["verify", "-CAfile", "out/ca.crt", "out/block0.pem"]);
        assert!(verified.contains("OK"), "{verified}");
    }
}

fn tls_spec(kv_name: &str, with_ca: bool) -> serde_json::Value {
    let mut data = vec![
        json!({"key": "tls.crt", "remoteRef": {"name": kv_name, "certificate": "Chain"}}),
        json!({"key": "tls.key", "remoteRef": {"name": kv_name, "certificate": "PrivateKey"}}),
    ];
    if with_ca {
        data.push(
            json!({"key": "ca.crt", "remoteRef": {"name": kv_name, "certificate": "Issuers"}}),
        );
    }
    json!({
        "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
        "data": data,
        "target": {"type": "kubernetes.io/tls"},
    })
}

#[tokio::test]
async fn pfx_and_pem_certificates_become_tls_secrets_and_the_leaf_expiry_counts() {
    let s = setup().await;
    let vault = KeyVault::first();
    let rsa = make_chain("RSA", 10);
    let ec = make_chain("EC", 40);
    let now = k8s_openapi::jiff::Timestamp::now().as_second();

    // (VaultSecret, Key Vault secret, body, the directory of its chain, with ca.crt)
    let rsa_pem_pkcs1 = {
        openssl(
            &rsa,
            &[
                "rsa",
                "-in",
                "leaf.key",
                "-traditional",
                "-out",
                "leaf.pkcs1.key",
            ],
        );
        // Certificates first, the key after them, no content type: found by its text.
        [
            read(&rsa, "leaf.crt"),
            read(&rsa, "issuers.pem"),
            read(&rsa, "leaf.pkcs1.key"),
        ]
        .concat()
    };
    let ec_pem = [
        read(&ec, "issuers.pem"),
        read(&ec, "leaf.crt"),
        read(&ec, "leaf.key"),
    ]
    .concat();
    let cases = [
        (
            "rsa-pfx",
            unique("cert-rsa-pfx"),
            // A later exp than the leaf's notAfter: the leaf's wins.
            json!({"value": pfx(&rsa, &[]), "contentType": "application/x-pkcs12",
                   "attributes": {"exp": now + 100 * 86400}}),
            &rsa,
            true,
        ),
        (
            "ec-pfx-nomac",
            unique("cert-ec-nomac"),
            json!({"value": pfx(&ec, &["-nomac"]), "contentType": "application/x-pkcs12"}),
            &ec,
            false,
        ),
        (
            "ec-pem",
            unique("cert-ec-pem"),
            // An earlier exp than the leaf's notAfter (40 days): the exp wins.
            json!({"value": ec_pem, "contentType": "application/x-pem-file",
                   "attributes": {"exp": now + 5 * 86400}}),
            &ec,
            true,
        ),
        (
            "rsa-pem",
            unique("cert-rsa-pem"),
            json!({"value": rsa_pem_pkcs1}),
            &rsa,
            false,
        ),
    ];
    let not_a_certificate = unique("cert-plain");
    let plain_value = format!("plain-value-{}", unique("v"));
    vault.set(&not_a_certificate, &plain_value).await;
    for (_, kv_name, body, _, _) in &cases {
        vault.set_with(kv_name, body.clone()).await;
    }
    let mut names: Vec<&str> = cases.iter().map(|c| c.1.as_str()).collect();
    names.push(&not_a_certificate);
    let client_id = operator_identity(&s.doubles, &names).await;
    let operator = Operator::start(&s.ns.name, &client_id, &[]);

    for (name, kv_name, _, _, with_ca) in &cases {
        s.vsecs
            .create(
                &PostParams::default(),
                &vault_secret(name, tls_spec(kv_name, *with_ca)),
            )
            .await
            .unwrap();
    }
    s.vsecs
        .create(
            &PostParams::default(),
            &vault_secret("plain", tls_spec(&not_a_certificate, false)),
        )
        .await
        .unwrap();

    for (name, kv_name, _, dir, _) in &cases {
        let vsec = wait_reason(&s.vsecs, name, "Synced").await;
        let secret = s.secrets.get(name).await.unwrap();
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        check_tls_files(dir, &secret.data.unwrap());
        // One Key Vault read serves all the entries of one certificate.
        assert_eq!(s.doubles.authorized_reads(kv_name).await, 1, "{name}");
        let expires_at = vsec.status.as_ref().unwrap().expires_at.as_ref();
        let expected = match *name {
            "ec-pem" => now + 5 * 86400,
            _ => not_after(dir),
        };
        assert_eq!(
            expires_at.map(|t| t.0.as_second()),
            Some(expected),
            "{name}"
        );
        let (_, reason, message) = condition_of(&vsec, "Expiring").unwrap();
        if *name == "ec-pem" {
            // Within the default 168h window.
            assert_eq!(reason, "Expiring");
            assert!(
                message.contains(&format!("the certificate in Key Vault secret '{kv_name}'")),
                "{message}"
            );
        } else {
            assert_eq!(reason, "NotExpiring", "{name}");
        }
    }

    // Not a certificate: Ready=False with a reason and a message that say so, no value.
    let vsec = wait_reason(&s.vsecs, "plain", "CertificateInvalid").await;
    let (ready, _, message) = condition_of(&vsec, "Ready").unwrap();
    assert_eq!(ready, "False");
    assert!(
        message.contains("key 'tls.crt'")
            && message.contains(&not_a_certificate)
            && message.contains("not a usable certificate (PFX)"),
        "{message}"
    );
    assert!(s.secrets.get_opt("plain").await.unwrap().is_none());
    let events = events_of(&s.client, &s.ns.name, "plain").await;
    let reported = format!(
        "{message}{events:?}{}{}",
        operator.metrics().await,
        operator.logs()
    );
    assert!(!reported.contains(&plain_value), "the value leaked");
    assert!(!reported.contains("PRIVATE KEY"), "a key leaked");

    for dir in [rsa, ec] {
        std::fs::remove_dir_all(dir).ok();
    }
}

#[tokio::test]
async fn a_converted_tls_secret_provider_class_syncs_the_certificate() {
    let s = setup().await;
    let vault = KeyVault::first();
    let dir = make_chain("EC", 20);
    let kv_name = unique("cert-spc");
    vault
        .set_with(
            &kv_name,
            json!({"value": pfx(&dir, &[]), "contentType": "application/x-pkcs12"}),
        )
        .await;
    // The CSI driver's way to a TLS Secret: the certificate's secret as an object, split
    // into tls.crt and tls.key by a kubernetes.io/tls secretObject.
    let class = format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: web\nspec:\n  provider: azure\n  secretObjects:\n  - secretName: web-tls\n    type: kubernetes.io/tls\n    data:\n    - objectName: {kv_name}\n      key: tls.key\n    - objectName: {kv_name}\n      key: tls.crt\n    - objectName: {kv_name}\n      key: ca.crt\n  parameters:\n    keyvaultName: kv1\n    useVMManagedIdentity: \"true\"\n    userAssignedIdentityID: a87c1e0f-ca8e-4064-abbf-b2749c333d65\n    objects: |\n      array:\n        - |\n          objectName: {kv_name}\n          objectType: secret\n"
    );
    let converted = vaultsync::convert::convert_stream(&class, "spc").unwrap();
    assert_eq!(converted.len(), 1);
    let mut vsec = converted[0].manifest.clone();
    // The emulator in the vault's place, and the test's own identity.
    vsec.spec.vault_url = env("VAULTSYNC_TEST_VAULT_URL");
    vsec.spec.identity = None;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &[]);
    s.vsecs
        .create(&PostParams::default(), &vsec)
        .await
        .expect("the API server admits the converted manifest");
    wait_reason(&s.vsecs, "web-tls", "Synced").await;
    let secret = s.secrets.get("web-tls").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    check_tls_files(&dir, &secret.data.unwrap());
    std::fs::remove_dir_all(dir).ok();
}
