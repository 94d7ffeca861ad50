//! The fault matrix, Kubernetes rows: other clients writing the managed Secrets while the
//! operator works. A client touching every Secret during a rotation makes the operator's
//! writes (each carrying the `resourceVersion` it decided on) meet 409 conflicts; a client
//! deleting or editing Secrets in a tight loop gets each one repaired, at a bounded rate,
//! with Events that do not storm, and `Ready` False (`DriftRepairPaused`) while a repair
//! waits for its pace.

mod common;

use common::fleet::*;
use common::invariants::Violation;
use common::operator::*;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// kube-apiserver's own count of its answers with `code` about Secrets, from its
/// `/metrics` (the figure no client can misreport).
fn apiserver_answers(code: &str) -> u64 {
    let out = std::process::Command::new("kubectl")
        .args(["get", "--raw", "/metrics"])
        .output()
        .expect("run kubectl");
    assert!(out.status.success(), "kubectl get --raw /metrics failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains(&format!("code=\"{code}\"")) && l.contains("resource=\"secrets\""))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn kv_refs(fleet: &Fleet) -> Vec<&str> {
    fleet.kv_names.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn writes_that_meet_409_conflicts_are_decided_again_quietly_until_converged() {
    const N: usize = 200;
    const TOUCHED: usize = 20;
    let s = setup().await;
    let mut fleet = Fleet::create(&s, "conflict", N, 4, "1h").await;
    let client_id = operator_identity(&s.doubles, &kv_refs(&fleet)).await;
    let operator = Operator::start(&s.ns.name, &client_id, &[]);
    fleet.wait_converged("first sync").await;
    let metrics = operator.metrics().await;
    let writes_before = metric(&metrics, "vaultsync_secret_writes_total");
    let read_calls_before = metric(&metrics, "vaultsync_keyvault_reads_total{result=\"ok\"}");

    // Another client touches some of the managed Secrets (an annotation of its own, which
    // is not drift) one after another, over and over, while the rotation runs; Key Vault
    // answers slowly (1 s), so each of those Secrets moves on between the operator's read
    // of it and its write, and the write (carrying the resourceVersion it decided on)
    // meets a 409.
    for name in &fleet.kv_names {
        s.doubles
            .put(
                "/faults",
                json!({"secret": name, "kind": "delay", "delayMs": 1000}),
            )
            .await;
    }
    let conflicts_before = apiserver_answers("409");
    let stop = Arc::new(AtomicBool::new(false));
    let touches = Arc::new(AtomicU64::new(0));
    let toucher = {
        let (secrets, stop, touches) = (s.secrets.clone(), stop.clone(), touches.clone());
        let names: Vec<String> = (0..TOUCHED).map(|i| fleet.name(i)).collect();
        tokio::spawn(async move {
            let params = PatchParams::apply("another-client");
            while !stop.load(Ordering::Relaxed) {
                for name in &names {
                    let n = touches.fetch_add(1, Ordering::Relaxed);
                    let patch = json!({"metadata": {"annotations": {"example.com/touched": n.to_string()}}});
                    let _ = secrets.patch(name, &params, &Patch::Merge(&patch)).await;
                }
            }
        })
    };
    fleet.rotate().await;
    let reads_before = fleet.reads(&s.doubles).await;
    fleet.request_refresh().await;
    let took = fleet.wait_converged("rotation under conflicts").await;
    stop.store(true, Ordering::Relaxed);
    toucher.await.unwrap();
    let conflicts = apiserver_answers("409") - conflicts_before;
    let metrics = operator.metrics().await;
    let writes = metric(&metrics, "vaultsync_secret_writes_total") - writes_before;
    let reads = fleet.reads(&s.doubles).await - reads_before;
    let read_calls =
        metric(&metrics, "vaultsync_keyvault_reads_total{result=\"ok\"}") - read_calls_before;
    let events = fleet.events(&s.client).await;
    report(
        "409 conflicts",
        &format!(
            "{N} objects over 4 secrets, Key Vault answering in 1 s; {} touches of {TOUCHED} Secrets by another client; {conflicts} answers 409 about Secrets; {writes} Secret writes; {reads} Key Vault reads; converged in {:.1} s; Events {events:?}",
            touches.load(Ordering::Relaxed),
            took.as_secs_f64()
        ),
    );
    assert!(
        conflicts > 0,
        "the other client's touches never made a write conflict: the row tested nothing"
    );
    // A conflict is decided again with the values already read: one Key Vault read per
    // object (as the operator counts them, a shared read once per object), and one more
    // only where three writes in a row met a conflict.
    assert!(
        read_calls >= N as u64 && read_calls - N as u64 <= conflicts / 3,
        "{read_calls} reads for {N} objects and {conflicts} conflicts"
    );
    assert_eq!(
        warning_occurrences(&events),
        0,
        "a 409 is quiet: {events:?}"
    );
    assert_eq!(
        occurrences(&events, "Rotated"),
        N as i64,
        "one Rotated per object: {events:?}"
    );
    assert_eq!(occurrences(&events, "DriftRepaired"), 0, "{events:?}");
    fleet.invariants.assert_held();
}

/// What a vandal did: attempts (a delete of a Secret already gone included) and the acts
/// the API server carried out.
#[derive(Default)]
struct Acts {
    attempts: AtomicU64,
    done: AtomicU64,
}

/// Deletes (or edits) the Secrets `names` in a loop as fast as the API server answers,
/// until `stop`.
fn vandal(
    secrets: kube::Api<k8s_openapi::api::core::v1::Secret>,
    names: Vec<String>,
    delete: bool,
    stop: Arc<AtomicBool>,
    acts: Arc<Acts>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for name in &names {
                let done = if delete {
                    secrets.delete(name, &DeleteParams::default()).await.is_ok()
                } else {
                    let patch = json!({"data": {KEY: ByteString(b"not from Key Vault".to_vec())}});
                    secrets
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .is_ok()
                };
                acts.attempts.fetch_add(1, Ordering::Relaxed);
                acts.done.fetch_add(u64::from(done), Ordering::Relaxed);
            }
        }
    })
}

#[tokio::test]
async fn secrets_deleted_or_edited_in_a_tight_loop_are_repaired_at_a_bounded_rate() {
    const N: usize = 200;
    const DELETED: usize = 5;
    const EDITED: usize = 5;
    const LOOP: Duration = Duration::from_secs(20);
    const ATTEMPTS: usize = 40;
    let s = setup().await;
    let fleet = Fleet::create(&s, "vandal", N, 4, "1h").await;
    let client_id = operator_identity(&s.doubles, &kv_refs(&fleet)).await;
    let operator = Operator::start(&s.ns.name, &client_id, &[]);
    fleet.wait_converged("first sync").await;
    let metrics = operator.metrics().await;
    let writes_before = metric(&metrics, "vaultsync_secret_writes_total");
    let reconciles_before = reconciliations(&metrics);
    let reads_before = fleet.reads(&s.doubles).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (deletes, edits) = (Arc::new(Acts::default()), Arc::new(Acts::default()));
    let deleter = vandal(
        s.secrets.clone(),
        (0..DELETED).map(|i| fleet.name(i)).collect(),
        true,
        stop.clone(),
        deletes.clone(),
    );
    let editor = vandal(
        s.secrets.clone(),
        (DELETED..DELETED + EDITED).map(|i| fleet.name(i)).collect(),
        false,
        stop.clone(),
        edits.clone(),
    );
    // The other client keeps at it for LOOP and for at least ATTEMPTS tries per Secret,
    // so that repairing every act would exceed the bound below on any machine.
    let started = Instant::now();
    while started.elapsed() < LOOP
        || deletes.attempts.load(Ordering::Relaxed) < (ATTEMPTS * DELETED) as u64
        || edits.attempts.load(Ordering::Relaxed) < (ATTEMPTS * EDITED) as u64
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    deleter.await.unwrap();
    editor.await.unwrap();
    let during = started.elapsed();
    let metrics = operator.metrics().await;
    let writes_during = metric(&metrics, "vaultsync_secret_writes_total") - writes_before;
    let reconciles_during = reconciliations(&metrics) - reconciles_before;
    let reads_during = fleet.reads(&s.doubles).await - reads_before;
    // Every act is repaired: once the client stops, every Secret holds Key Vault's value.
    let took = fleet.wait_converged("repair after the loop").await;
    let writes = metric(&operator.metrics().await, "vaultsync_secret_writes_total") - writes_before;
    let events = fleet.events(&s.client).await;
    let (deleted, edited) = (
        deletes.done.load(Ordering::Relaxed),
        edits.done.load(Ordering::Relaxed),
    );
    let tries = deletes.attempts.load(Ordering::Relaxed) + edits.attempts.load(Ordering::Relaxed);
    report(
        "tight-loop delete/edit",
        &format!(
            "{N} objects, {DELETED} deleted {deleted} times and {EDITED} edited {edited} times ({tries} attempts) in {:.0} s; during the loop {writes_during} Secret writes, {reads_during} Key Vault reads, {reconciles_during} reconciles; {writes} writes in all; converged {:.1} s after; Events {events:?}",
            during.as_secs_f64(),
            took.as_secs_f64()
        ),
    );
    let vandalized = (DELETED + EDITED) as u64;
    // Repairs of one object back off from 1 s, doubling: over the loop, at most one repair
    // per doubling (1 + log2 of its length in seconds), and the final one after it.
    let per_object = 2 + u64::from(during.as_secs().max(1).ilog2()) + 1;
    assert!(
        writes <= vandalized * per_object,
        "{writes} writes for {vandalized} objects fought over: more than {per_object} each"
    );
    assert!(
        reads_during <= vandalized * per_object,
        "{reads_during} Key Vault reads for {vandalized} objects fought over"
    );
    let repaired = occurrences(&events, "DriftRepaired");
    assert!(
        repaired >= vandalized as i64 && repaired <= (vandalized * per_object) as i64,
        "DriftRepaired {repaired} times for {vandalized} objects: {events:?}"
    );
    assert_eq!(warning_occurrences(&events), 0, "{events:?}");
    // While a repair waits for its pace, the Secret does not hold the synced data, and
    // `Ready` says so: each object fought over went through DriftRepairPaused (and is
    // Ready again: it converged above).
    let paused = ("False".to_owned(), "DriftRepairPaused".to_owned());
    for i in 0..DELETED + EDITED {
        let object = format!("{}/{}", s.ns.name, fleet.name(i));
        let history = fleet.invariants.ready_history(&object);
        assert!(
            history.contains(&paused),
            "{object}: Ready never said DriftRepairPaused: {history:?}"
        );
    }
    // The other client's deletes and edits break the rules of its own Secrets (and a
    // status written just before one of its acts may describe data it then removed); every
    // other Secret and status keeps every rule.
    let fought_over: Vec<String> = (0..DELETED + EDITED)
        .map(|i| format!("{}/{}", s.ns.name, fleet.name(i)))
        .collect();
    let others: Vec<_> = fleet
        .invariants
        .violations()
        .into_iter()
        .filter(|v| {
            let object = match v {
                Violation::KeyDisappeared { secret, .. }
                | Violation::Deleted { secret, .. }
                | Violation::Empty { secret, .. }
                | Violation::ForeignValue { secret, .. } => secret,
                Violation::ReadyWithoutData { vault_secret, .. } => vault_secret,
            };
            !fought_over.contains(object)
        })
        .collect();
    assert!(others.is_empty(), "{others:#?}");
}

fn reconciliations(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("vaultsync_reconciliations_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}
