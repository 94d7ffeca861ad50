//! The fault matrix, operator rows: the operator killed (SIGKILL) at random points of a
//! rotation and started again, twenty times; two replicas with leader election, the leader
//! killed mid-rotation and the other finishing it; and a restart with 1,000 objects Ready
//! and none due, which reads nothing from Key Vault, with never-synced objects first.

mod common;

use common::fleet::*;
use common::operator::*;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use vaultsync::api::VaultSecret;

fn kv_refs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

fn reconciliations(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("vaultsync_reconciliations_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// `vaultsync_reconciliations_total` per `result`, for the report.
fn reconciliations_by_result(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with("vaultsync_reconciliations_total{"))
        .map(|l| {
            l.trim_start_matches("vaultsync_reconciliations_total")
                .to_owned()
        })
        .collect()
}

/// Sizes: 50 objects over 4 secrets, reconciled 2 at a time so that a rotation spans
/// long enough for a kill to land inside it; 20 kills, each when a random number of
/// objects (0 to 49) has rotated. A few hundred objects only make each of the 20 restarts
/// longer (with 200, this row alone took about 10 minutes on 2 busy cores; the suite must
/// stay well inside CI's hour).
#[tokio::test]
async fn sigkill_at_random_points_of_rotations_then_everything_converges_without_an_event_storm() {
    const N: usize = 50;
    const KILLS: usize = 20;
    const CONCURRENCY: &str = "2";
    let s = setup().await;
    let mut fleet = Fleet::create(&s, "killed", N, 4, "1h").await;
    let client_id = operator_identity(&s.doubles, &kv_refs(&fleet.kv_names)).await;
    let flags = ["--concurrency", CONCURRENCY];
    let mut operator = Operator::start(&s.ns.name, &client_id, &flags);
    fleet.wait_converged("first sync").await;

    let (mut dice, seed) = Dice::seeded();
    let reads_before = fleet.reads(&s.doubles).await;
    let mut at_kill = Vec::new();
    let mut convergence = Vec::new();
    for kill in 0..KILLS {
        fleet.rotate().await;
        // A random point of the rotation: once this many objects have rotated (0: as soon
        // as the refreshes are asked for, before any write).
        let point = dice.below(N as u64) as usize;
        fleet.request_refresh().await;
        let mut rotated = fleet.converged().await;
        while rotated < point {
            tokio::time::sleep(Duration::from_millis(10)).await;
            rotated = fleet.converged().await;
        }
        operator.kill();
        at_kill.push(fleet.converged().await);
        operator = Operator::start(&s.ns.name, &client_id, &flags);
        let took = fleet
            .wait_converged(&format!("restart {} after a kill", kill + 1))
            .await;
        convergence.push(took.as_secs_f64());
    }
    let reads = fleet.reads(&s.doubles).await - reads_before;
    let events = fleet.events(&s.client).await;
    let mid_rotation = at_kill.iter().filter(|&&c| c > 0 && c < N).count();
    report(
        "SIGKILL mid-rotation",
        &format!(
            "{N} objects over 4 secrets, {CONCURRENCY} at a time; seed {seed}; {KILLS} kills, {mid_rotation} of them with the rotation partly done (objects rotated at each kill: {at_kill:?}); convergence after restart (s): {convergence:.1?}; {reads} Key Vault reads for {KILLS} rotations; Events {events:?}"
        ),
    );
    assert!(
        mid_rotation >= KILLS / 2,
        "only {mid_rotation} of {KILLS} kills landed mid-rotation: the row tested too little"
    );
    let rotations = (N * KILLS) as i64;
    let rotated = occurrences(&events, "Rotated");
    // Each rotation is announced once; an object killed between its Event and its status
    // write announces it again after the restart: at most the objects in flight (2) per
    // kill.
    assert!(
        rotated >= rotations && rotated <= rotations + 2 * KILLS as i64,
        "Rotated {rotated} times for {rotations} rotations: {events:?}"
    );
    assert_eq!(occurrences(&events, "Synced"), N as i64, "{events:?}");
    assert_eq!(warning_occurrences(&events), 0, "{events:?}");
    assert_eq!(occurrences(&events, "DriftRepaired"), 0, "{events:?}");
    fleet.invariants.assert_held();
}

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("vaultsync")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

#[tokio::test]
async fn the_standby_finishes_a_rotation_when_the_leader_is_killed() {
    // 100 objects, reconciled 2 at a time: enough for the kill to land mid-rotation.
    const N: usize = 100;
    let s = setup().await;
    let leases = Api::<Lease>::namespaced(s.client.clone(), &s.ns.name);
    let mut fleet = Fleet::create(&s, "led", N, 4, "1h").await;
    let client_id = operator_identity(&s.doubles, &kv_refs(&fleet.kv_names)).await;
    // Two at a time, so that the leader is surely killed in the middle of the rotation.
    let flags = [
        "--leader-election",
        "--leader-election-namespace",
        &s.ns.name,
        "--leader-election-lease-seconds",
        "6",
        "--concurrency",
        "2",
    ];
    let mut leader =
        Operator::start_with_env(&s.ns.name, &client_id, &flags, &[("POD_NAME", "replica-a")]);
    fleet.wait_converged("first sync").await;
    assert_eq!(lease_holder(&leases).await.as_deref(), Some("replica-a"));
    let standby =
        Operator::start_with_env(&s.ns.name, &client_id, &flags, &[("POD_NAME", "replica-b")]);
    standby.metrics().await;

    let rotated = fleet.rotate_until_one_converged().await;
    assert_eq!(
        reconciliations(&standby.metrics().await),
        0,
        "the standby reconciled while the leader led"
    );
    leader.kill();
    let killed = Instant::now();
    let mut takeover = None;
    for _ in 0..2400 {
        if lease_holder(&leases).await.as_deref() == Some("replica-b") {
            takeover = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let takeover = takeover.expect("the standby never took the Lease");
    fleet
        .wait_converged("rotation finished by the standby")
        .await;
    let finished = killed.elapsed();
    let events = fleet.events(&s.client).await;
    report(
        "leader killed mid-rotation",
        &format!(
            "{N} objects over 4 secrets, {rotated} rotated at the kill; Lease taken over {:.1} s after the kill (lease 6 s); rotation finished {:.1} s after the kill; Events {events:?}",
            takeover.as_secs_f64(),
            finished.as_secs_f64()
        ),
    );
    assert!(rotated < N, "the rotation had ended before the kill");
    assert!(reconciliations(&standby.metrics().await) > 0);
    let rotated_events = occurrences(&events, "Rotated");
    assert!(
        rotated_events >= N as i64 && rotated_events <= N as i64 + 2,
        "Rotated {rotated_events} times for {N} objects: {events:?}"
    );
    assert_eq!(warning_occurrences(&events), 0, "{events:?}");
    fleet.invariants.assert_held();
}

/// The order in which a watch of the namespace saw objects of `first` become Ready for the
/// first time and objects of `refreshed` get a new `lastSyncTime`, until all of both had.
async fn watch_order(
    vsecs: Api<VaultSecret>,
    first: BTreeSet<String>,
    refreshed: BTreeMap<String, String>,
) -> Vec<(bool, String)> {
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    let stream = watcher(vsecs, watcher::Config::default()).applied_objects();
    futures::pin_mut!(stream);
    while seen.len() < first.len() + refreshed.len() {
        let Some(Ok(vsec)) = stream.next().await else {
            continue;
        };
        let name = vsec.metadata.name.clone().unwrap_or_default();
        if seen.contains(&name) {
            continue;
        }
        let last_sync = vsec
            .status
            .as_ref()
            .and_then(|s| s.last_sync_time.as_ref())
            .map(|t| t.0.to_string());
        let ready = vsec.ready_condition().is_some_and(|c| c.status == "True");
        if first.contains(&name) && ready {
            seen.insert(name.clone());
            order.push((true, name));
        } else if let Some(before) = refreshed.get(&name)
            && last_sync.as_ref().is_some_and(|t| t != before)
        {
            seen.insert(name.clone());
            order.push((false, name));
        }
    }
    order
}

#[tokio::test]
async fn a_restart_with_a_thousand_objects_ready_reads_nothing_and_syncs_new_objects_first() {
    const READY: usize = 1000;
    const DUE: usize = 100;
    const NEW: usize = 50;
    const CONCURRENCY: usize = 8;
    let s = setup().await;
    // Names chosen so that list order (alphabetical) puts the due refreshes first and the
    // never-synced objects last: only a deliberate order puts new objects first.
    let ready = Fleet::create(&s, "m-ready", READY, 4, "1h").await;
    // Every secret: the fleets' secrets are named as they are seeded, some after the start.
    let client_id = operator_identity(&s.doubles, &["*"]).await;
    let mut operator = Operator::start(&s.ns.name, &client_id, &[]);
    ready.wait_converged("first sync of 1,000").await;
    // The objects to be due at the restart come once the 1,000 are Ready, so that their
    // 10 s refreshes do not compete with that first sync.
    let due = Fleet::create(&s, "a-due", DUE, 2, "10s").await;
    due.wait_converged("first sync of the due objects").await;
    operator.terminate();

    let new = Fleet::create(&s, "z-new", NEW, 2, "1h").await;
    // Every due object's interval (10 s, plus up to 10% jitter) runs out while the
    // operator is down.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let last_sync: BTreeMap<String, String> = due
        .vsecs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|v| {
            v.metadata
                .name
                .as_deref()
                .unwrap_or("")
                .starts_with("a-due-")
        })
        .map(|v| {
            let at = v
                .status
                .as_ref()
                .and_then(|s| s.last_sync_time.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            (v.metadata.name.unwrap_or_default(), at)
        })
        .collect();
    let never_synced: BTreeSet<String> = (0..NEW).map(|i| new.name(i)).collect();
    let reads_before = ready.reads(&s.doubles).await;

    let order = tokio::spawn(watch_order(s.vsecs.clone(), never_synced, last_sync));
    let restarted = Instant::now();
    let operator = Operator::start(&s.ns.name, &client_id, &[]);
    let order = order.await.unwrap();
    new.wait_converged("never-synced objects").await;
    // The minute after the restart, whatever the operator does in it.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(restarted.elapsed())).await;
    let reads_after = ready.reads(&s.doubles).await - reads_before;
    let metrics = operator.metrics().await;
    let position_of_last_new = order.iter().rposition(|(is_new, _)| *is_new).unwrap_or(0);
    let refreshes_before_last_new = order[..position_of_last_new]
        .iter()
        .filter(|(is_new, _)| !is_new)
        .count();
    report(
        "restart with 1,000 Ready",
        &format!(
            "{READY} Ready and not due, {DUE} due, {NEW} never synced; Key Vault reads of the Ready objects' secrets in the minute after the restart: {reads_after}; the last never-synced object synced {}th of {} first syncs and refreshes, with {refreshes_before_last_new} refreshes before it; reconciles: {:?}",
            position_of_last_new + 1,
            order.len(),
            reconciliations_by_result(&metrics)
        ),
    );
    assert_eq!(
        reads_after, 0,
        "Key Vault reads for objects Ready and not due"
    );
    // Objects are reconciled CONCURRENCY at a time: refreshes already running when the
    // last new object is taken up may finish before it, never more.
    assert!(
        refreshes_before_last_new <= CONCURRENCY,
        "{refreshes_before_last_new} refreshes came before the last never-synced object: {order:?}"
    );
}
