//! `vaultsync convert` on the article's SecretProviderClass (`tests/fixtures/spc.yaml`,
//! verbatim): the exact output, and a round trip: the converted manifest is admitted by
//! the API server and, read with the article's user-assigned managed identity, syncs the
//! value the article shows.

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use std::process::Command;
use vaultsync::api::VaultSecret;

/// The article's class names this managed identity and this vault.
const ARTICLE_IDENTITY: &str = "a87c1e0f-ca8e-4064-abbf-b2749c333d65";
const ARTICLE_VAULT: &str = "https://tiexin-keyvault-test.vault.azure.net";

fn convert(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vaultsync"));
    command.arg("convert").args(args);
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    match stdin {
        None => command.output().unwrap(),
        Some(input) => {
            use std::io::Write;
            let mut child = command
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }
    }
}

#[test]
fn the_articles_class_converts_to_the_recorded_manifest_from_a_file_and_from_stdin() {
    let expected = include_str!("fixtures/spc.vaultsecret.yaml");
    let from_file = convert(&["tests/fixtures/spc.yaml"], None);
    assert!(from_file.status.success(), "{from_file:?}");
    assert_eq!(String::from_utf8(from_file.stdout).unwrap(), expected);
    let from_stdin = convert(&["-"], Some(include_str!("fixtures/spc.yaml")));
    assert!(from_stdin.status.success(), "{from_stdin:?}");
    assert_eq!(String::from_utf8(from_stdin.stdout).unwrap(), expected);
}

#[test]
fn the_readme_shows_the_articles_conversion_as_it_is() {
    let readme = include_str!("../README.md");
    assert!(
        readme.contains(include_str!("fixtures/spc.vaultsecret.yaml")),
        "README.md's `vaultsync convert` example differs from tests/fixtures/spc.vaultsecret.yaml"
    );
}

#[test]
fn a_file_that_cannot_be_converted_fails_and_prints_no_manifest() {
    let missing = convert(
        &["tests/fixtures/spc.yaml", "tests/fixtures/absent.yaml"],
        None,
    );
    assert!(!missing.status.success());
    assert!(missing.stdout.is_empty(), "nothing printed half-way");
    let stderr = String::from_utf8(missing.stderr).unwrap();
    assert!(stderr.contains("tests/fixtures/absent.yaml"), "{stderr}");
}

#[tokio::test]
async fn the_converted_manifest_is_admitted_and_syncs_the_articles_value() {
    install_crypto_provider();
    let client = kube_client().await;
    ensure_crd(&client).await;
    let doubles = Doubles::new();
    let output = convert(&["tests/fixtures/spc.yaml"], None);
    assert!(output.status.success(), "{output:?}");
    let mut converted: VaultSecret =
        serde_saphyr::from_str(std::str::from_utf8(&output.stdout).unwrap()).unwrap();
    // The only change: the article's vault is the emulator here.
    assert_eq!(converted.spec.vault_url, ARTICLE_VAULT);
    converted.spec.vault_url = env("VAULTSYNC_TEST_VAULT_URL");

    KeyVault::first()
        .set("ExampleSecret", "MyAKSExampleSecret")
        .await;
    doubles
        .put(
            &format!("/managed-identities/{ARTICLE_IDENTITY}"),
            json!({}),
        )
        .await;
    doubles.grant(ARTICLE_IDENTITY, &["ExampleSecret"]).await;
    let ns = TempNamespace::create_with_annotations(
        &client,
        &[(MANAGED_IDENTITIES_GRANT, ARTICLE_IDENTITY)],
    )
    .await;
    let operator_id = operator_identity(&doubles, &[]).await;
    let _operator = Operator::start(&ns.name, &operator_id, &[]);
    let vsecs = Api::<VaultSecret>::namespaced(client.clone(), &ns.name);
    vsecs
        .create(&PostParams::default(), &converted)
        .await
        .expect("the API server admits the converted manifest");
    let name = converted.metadata.name.clone().unwrap();
    wait_reason(&vsecs, &name, "Synced").await;
    let secret = Api::<Secret>::namespaced(client, &ns.name)
        .get(&name)
        .await
        .unwrap();
    let value = &secret.data.unwrap()["ExampleSecret"];
    assert_eq!(value.0, b"MyAKSExampleSecret");
}
