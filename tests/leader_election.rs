//! Two replicas with `--leader-election`: one leads and reconciles, the other waits, and
//! takes over when the leader goes. On SIGTERM the leader lets its running reconcile
//! finish (or stops it at `--shutdown-timeout-seconds`), releases the Lease and exits 0
//! within the chart's grace period; the standby takes the Lease at its next retry.

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

/// The chart's terminationGracePeriodSeconds: the kubelet kills a pod this long after
/// SIGTERM.
const CHART_GRACE: Duration = Duration::from_secs(30);

async fn lease(leases: &Api<Lease>) -> k8s_openapi::api::coordination::v1::LeaseSpec {
    leases.get("vaultsync").await.unwrap().spec.unwrap()
}

/// Polls until the gateway has seen an authorized read of `secret` (a read in flight).
async fn wait_read_started(doubles: &Doubles, secret: &str) {
    for _ in 0..480 {
        if doubles.stats().await["vaultAuthorized"]["GET"][secret].as_u64() >= Some(1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the operator never read {secret}");
}

#[tokio::test]
async fn sigterm_lets_the_running_reconcile_finish_then_releases_the_lease_and_exits_0() {
    let s = setup().await;
    let leases = Api::<Lease>::namespaced(s.client.clone(), &s.ns.name);
    let secret = unique("slow");
    common::keyvault::KeyVault::first()
        .set(&secret, "slow-value")
        .await;
    let client_id = operator_identity(&s.doubles, &[&secret]).await;
    // The read is answered 4 s late: SIGTERM arrives while it is in flight.
    s.doubles
        .put(
            "/faults",
            json!({"secret": secret, "kind": "delay", "delayMs": 4000, "count": 1}),
        )
        .await;
    let flags = |lease_seconds: &'static str| {
        vec![
            "--leader-election",
            "--leader-election-namespace",
            &s.ns.name,
            "--leader-election-lease-seconds",
            lease_seconds,
        ]
    };
    // The leader's Lease lasts 60 s; the standby retries every 2 s (a 6 s lease of its
    // own), so a takeover at its next retry is far from the leader's expiry.
    let mut first = Operator::start_with_env(
        &s.ns.name,
        &client_id,
        &flags("60"),
        &[("POD_NAME", "replica-a")],
    );
    wait_holder(&leases, "replica-a").await;
    let second = Operator::start_with_env(
        &s.ns.name,
        &client_id,
        &flags("6"),
        &[("POD_NAME", "replica-b")],
    );
    second.metrics().await;
    s.vsecs
        .create(
            &PostParams::default(),
            &vault_secret(
                "slow",
                json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
                    "data": [{"key": "k", "remoteRef": {"name": secret}}]}),
            ),
        )
        .await
        .unwrap();
    wait_read_started(&s.doubles, &secret).await;
    let held = lease(&leases).await;
    assert_eq!(held.holder_identity.as_deref(), Some("replica-a"));

    let status = first
        .terminate_within(CHART_GRACE)
        .expect("the leader did not exit within the chart's grace period");
    assert!(status.success(), "exit status {status:?}");
    let logs = first.logs();
    assert!(logs.contains("released the leader Lease"), "{logs}");
    assert!(!logs.contains("shutdown deadline"), "{logs}");

    // The reconcile that was running finished before the leader let go: replica-a wrote
    // the Secret and the status, and replica-b had no reason to read Key Vault again.
    let vsec = wait_reason(&s.vsecs, "slow", "Synced").await;
    assert_eq!(vsec.ready_condition().unwrap().status, "True");
    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), &s.ns.name)
            .list(&Default::default())
            .await
            .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Synced")
                && e.reporting_instance.as_deref() == Some("replica-a")),
        "no Synced Event from replica-a"
    );

    // The standby takes the released Lease at its next retry, long before the leader's
    // lease would have run out: acquireTime < the leader's renewal + 60 s.
    wait_holder(&leases, "replica-b").await;
    let taken = lease(&leases).await;
    let renewed = held.renew_time.unwrap().0;
    let acquired = taken.acquire_time.unwrap().0;
    let expiry = renewed + k8s_openapi::jiff::SignedDuration::from_secs(60);
    assert!(
        acquired < expiry,
        "taken at {acquired}, the released lease ran to {expiry}"
    );
    assert_eq!(
        taken.lease_transitions,
        Some(held.lease_transitions.unwrap_or(0) + 1)
    );
    // replica-b reconciled the object and found it synced: still one Key Vault read.
    for _ in 0..480 {
        if reconciliations(&second.metrics().await) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(reconciliations(&second.metrics().await) > 0);
    assert_eq!(
        s.doubles.stats().await["vaultAuthorized"]["GET"][&secret].as_u64(),
        Some(1)
    );
}

#[tokio::test]
async fn a_reconcile_past_the_shutdown_deadline_is_stopped_and_the_lease_still_released() {
    let s = setup().await;
    let leases = Api::<Lease>::namespaced(s.client.clone(), &s.ns.name);
    let secret = unique("stuck");
    common::keyvault::KeyVault::first()
        .set(&secret, "stuck-value")
        .await;
    let client_id = operator_identity(&s.doubles, &[&secret]).await;
    s.doubles
        .put(
            "/faults",
            json!({"secret": secret, "kind": "delay", "delayMs": 20000, "count": 1}),
        )
        .await;
    let mut leader = Operator::start_with_env(
        &s.ns.name,
        &client_id,
        &[
            "--leader-election",
            "--leader-election-namespace",
            &s.ns.name,
            "--leader-election-lease-seconds",
            "60",
            "--shutdown-timeout-seconds",
            "1",
        ],
        &[("POD_NAME", "replica-a")],
    );
    wait_holder(&leases, "replica-a").await;
    s.vsecs
        .create(
            &PostParams::default(),
            &vault_secret(
                "stuck",
                json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
                    "data": [{"key": "k", "remoteRef": {"name": secret}}]}),
            ),
        )
        .await
        .unwrap();
    wait_read_started(&s.doubles, &secret).await;

    let status = leader
        .terminate_within(CHART_GRACE)
        .expect("the leader did not exit within the chart's grace period");
    assert!(status.success(), "exit status {status:?}");
    assert!(leader.logs().contains("shutdown deadline"));
    // Released: no holder, and a duration of 1 s, so anyone may take it now.
    let released = lease(&leases).await;
    assert_eq!(released.holder_identity, None);
    assert_eq!(released.lease_duration_seconds, Some(1));
    // The stopped reconcile wrote nothing: no Secret, no status.
    assert!(s.secrets.get_opt("stuck").await.unwrap().is_none());
    assert!(s.vsecs.get("stuck").await.unwrap().status.is_none());
}
