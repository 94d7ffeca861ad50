//! Two replicas with `--leader-election`: one leads and reconciles, the other waits, and
//! takes over when the leader goes.

mod common;

use common::operator::*;
use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use std::time::Duration;
use vaultsync::api::VaultSecret;

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("vaultsync")
        .await
        .unwrap()?
        .spec?
        .holder_identity
}

async fn wait_holder(leases: &Api<Lease>, expected: &str) {
    for _ in 0..480 {
        if holder(leases).await.as_deref() == Some(expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "{expected} never held the Lease; holder: {:?}",
        holder(leases).await
    );
}

fn reconciliations(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("vaultsync_reconciliations_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn one_replica_leads_and_the_other_takes_over_when_it_goes() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let ns = TempNamespace::create(&client).await;
    let leases = Api::<Lease>::namespaced(client.clone(), &ns.name);
    let vsecs = Api::<VaultSecret>::namespaced(client.clone(), &ns.name);
    let doubles = Doubles::new();
    let client_id = operator_identity(&doubles, &[]).await;
    let flags = [
        "--leader-election",
        "--leader-election-namespace",
        &ns.name,
        "--leader-election-lease-seconds",
        "6",
    ];

    let first =
        Operator::start_with_env(&ns.name, &client_id, &flags, &[("POD_NAME", "replica-a")]);
    wait_holder(&leases, "replica-a").await;
    let second =
        Operator::start_with_env(&ns.name, &client_id, &flags, &[("POD_NAME", "replica-b")]);
    // The follower answers /readyz (its role is known) but reconciles nothing.
    second.metrics().await;

    let spec = |name: &str| json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "data": [{"key": "k", "remoteRef": {"name": name}}]});
    vsecs
        .create(
            &PostParams::default(),
            &vault_secret("before", spec(&unique("before"))),
        )
        .await
        .unwrap();
    wait_reason(&vsecs, "before", "AccessDenied").await;
    assert!(reconciliations(&first.metrics().await) > 0);
    assert_eq!(
        reconciliations(&second.metrics().await),
        0,
        "the follower reconciled"
    );
    assert_eq!(holder(&leases).await.as_deref(), Some("replica-a"));

    // A clean shutdown hands the Lease over rather than letting it run out.
    let mut first = first;
    first.terminate();
    assert_ne!(
        holder(&leases).await.as_deref(),
        Some("replica-a"),
        "the Lease was not released"
    );
    wait_holder(&leases, "replica-b").await;
    vsecs
        .create(
            &PostParams::default(),
            &vault_secret("after", spec(&unique("after"))),
        )
        .await
        .unwrap();
    wait_reason(&vsecs, "after", "AccessDenied").await;
    assert!(reconciliations(&second.metrics().await) > 0);
}
