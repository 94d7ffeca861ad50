//! The fault matrix, Kubernetes rows: kube-apiserver, then etcd, stopped in the middle of
//! a rotation and started again (`hack/testenv-restart.sh`, same ports and state). The
//! operator keeps running through the outage and finishes the rotation afterwards: every
//! object converges, one `Rotated` per object, no Warning storm, and the invariant
//! watcher finds no broken rule in any Secret or status version it recorded.
//!
//! The two tests stop the whole environment's control plane, so they run one at a time
//! and in a test binary of their own (Cargo runs test binaries one after another).

mod common;

use common::fleet::*;
use common::operator::*;
use std::time::{Duration, Instant};

/// One outage at a time: both tests stop the environment's control plane.
static OUTAGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `hack/testenv-restart.sh action component` and fails the test if it fails.
fn testenv_restart(action: &str, component: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/testenv-restart.sh");
    let status = std::process::Command::new(script)
        .args([action, component])
        .status()
        .expect("run hack/testenv-restart.sh");
    assert!(status.success(), "testenv-restart.sh {action} {component}");
}

/// Starts the component again if a test fails while it is stopped, so that the tests
/// after it find the environment whole.
struct Outage(&'static str);

impl Drop for Outage {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/testenv-restart.sh");
            // Fails harmlessly ("already running") when it was started again.
            let _ = std::process::Command::new(script)
                .args(["start", self.0])
                .status();
        }
    }
}

/// Objects of the fleet, the component stopped once some but not all of them rotated,
/// kept down for `down`, started again.
async fn stopped_mid_rotation(component: &'static str) {
    const N: usize = 200;
    const DOWN: Duration = Duration::from_secs(15);
    let _one_at_a_time = OUTAGE.lock().await;
    let s = setup().await;
    let mut fleet = Fleet::create(&s, component, N, 4, "1h").await;
    let kv: Vec<&str> = fleet.kv_names.iter().map(String::as_str).collect();
    let client_id = operator_identity(&s.doubles, &kv).await;
    // Two at a time, so that the rotation of 200 objects lasts long enough to stop the
    // component in its middle on any machine.
    let mut operator = Operator::start(&s.ns.name, &client_id, &["--concurrency", "2"]);
    fleet.wait_converged("first sync").await;

    let reads_before = fleet.reads(&s.doubles).await;
    let rotated = fleet.rotate_until_one_converged().await;
    let _restart_if_failed = Outage(component);
    testenv_restart("stop", component);
    let stopped = Instant::now();
    tokio::time::sleep(DOWN.saturating_sub(stopped.elapsed())).await; // the outage
    let reads_down = fleet.reads(&s.doubles).await - reads_before;
    testenv_restart("start", component);
    let down_for = stopped.elapsed();
    let took = fleet.wait_converged("after the restart").await;
    let reads = fleet.reads(&s.doubles).await - reads_before;
    let events = fleet.events(&s.client).await;
    let (livez, _) = operator.livez().await;
    report(
        &format!("{component} stopped mid-rotation"),
        &format!(
            "{N} objects over 4 secrets, {rotated} rotated when it stopped; down {:.0} s; {reads_down} Key Vault reads until it was back, {reads} for the whole rotation; all converged {:.1} s after it was back; Events {events:?}",
            down_for.as_secs_f64(),
            took.as_secs_f64()
        ),
    );
    assert!(
        rotated < N,
        "the rotation had ended before {component} stopped: the row tested nothing"
    );
    assert!(!operator.exited(), "the operator exited during the outage");
    assert_eq!(livez, 200, "a short outage does not fail /livez");
    assert_eq!(
        occurrences(&events, "Rotated"),
        N as i64,
        "one Rotated per object: {events:?}"
    );
    // A failure is reported once per object at most, never per retry.
    let warnings = warning_occurrences(&events);
    assert!(warnings <= N as i64, "{warnings} Warnings: {events:?}");
    // Checked on every Secret and status version recorded through the outage, not only
    // at the end: no key lost or blanked, no value Key Vault did not hold, no Ready over
    // data the Secret did not hold.
    fleet.invariants.assert_held();
}

#[tokio::test]
async fn kube_apiserver_stopped_and_restarted_mid_rotation() {
    stopped_mid_rotation("apiserver").await;
}

#[tokio::test]
async fn etcd_stopped_and_restarted_mid_rotation() {
    stopped_mid_rotation("etcd").await;
}
