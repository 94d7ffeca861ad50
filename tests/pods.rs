//! The synced Secret as pods use it, on the environment's real node (kubelet and
//! containerd): the article's ending. A pod reads `ExampleSecret` as an environment
//! variable and as a mounted file; after a rotation in Key Vault the mounted file changes
//! in the running pod, while the environment variable changes only in a new pod.

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::pods::*;
use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_pod_reads_the_synced_secret_as_env_and_file_and_sees_the_rotation() {
    let s = setup().await;
    // The article's secret, under a name of this test's own: tests share the vault.
    let kv_name = unique("ExampleSecret");
    let first = format!("MyAKSExampleSecret-{}", unique("v1"));
    let second = format!("MyAKSExampleSecret-{}", unique("v2"));
    let vault = KeyVault::first();
    vault.set(&kv_name, &first).await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &[]);
    create_synced(
        &s.vsecs,
        "example-secret",
        json!({
            "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
            "refreshInterval": "10s",
            "data": [{"key": "password", "remoteRef": {"name": kv_name}}],
        }),
    )
    .await;

    let pods = Api::<Pod>::namespaced(s.client.clone(), &s.ns.name);
    pods.create(
        &PostParams::default(),
        &secret_reader("reader", "example-secret", "password"),
    )
    .await
    .expect("create the reader pod");
    let pod = wait_running(&pods, "reader").await;
    assert_eq!(
        pod.spec.and_then(|s| s.node_name).as_deref(),
        Some(env("VAULTSYNC_TEST_NODE").as_str()),
        "the pod runs on the environment's node"
    );
    let file = format!("{SECRET_MOUNT}/password");
    assert_eq!(
        env_var(&s.ns.name, "reader", SECRET_ENV).as_deref(),
        Some(first.as_str())
    );
    assert_eq!(exec(&s.ns.name, "reader", &["cat", &file]), first);

    // Rotation: the operator rewrites the Secret on its next refresh, and the kubelet
    // refreshes the mounted file in the running pod on its sync period.
    vault.set(&kv_name, &second).await;
    let mut seen = String::new();
    for _ in 0..360 {
        seen = exec(&s.ns.name, "reader", &["cat", &file]);
        if seen == second {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(seen, second, "the mounted file shows the rotated value");
    // An environment variable is fixed when the container starts.
    assert_eq!(
        env_var(&s.ns.name, "reader", SECRET_ENV).as_deref(),
        Some(first.as_str())
    );

    // A restarted pod starts with the rotated value in its environment too.
    pods.delete("reader", &DeleteParams::default())
        .await
        .expect("delete the reader pod");
    pods.create(
        &PostParams::default(),
        &secret_reader("reader-restarted", "example-secret", "password"),
    )
    .await
    .expect("create the restarted reader pod");
    wait_running(&pods, "reader-restarted").await;
    assert_eq!(
        env_var(&s.ns.name, "reader-restarted", SECRET_ENV).as_deref(),
        Some(second.as_str())
    );
    assert_eq!(
        exec(&s.ns.name, "reader-restarted", &["cat", &file]),
        second
    );
}
