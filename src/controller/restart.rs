//! Rollout restarts of `spec.rolloutRestartTargets` when a sync changes the Secret's data:
//! the pure decision ([`decide_restart`]), the debounce shared by every VaultSecret
//! ([`Debouncer`]), and the patch itself ([`restart_workload`]).
//!
//! A restart is due while the data-hash mark of the Secret's data differs from
//! `status.restartedDataHash`, the mark of the data the targets were last restarted for
//! (or first synced with). Kept in status, so a restart interrupted by an operator restart
//! or a lost leadership is still due afterwards; compared as hashes, so equal data (a
//! drift repair, an idle refresh, a re-read) never restarts anything.

use crate::api::{RESTARTED_AT_ANNOTATION, RolloutKind, RolloutRestartTarget};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The default debounce window: rotations of several VaultSecrets that name one workload
/// and arrive within it restart that workload once, at the window's end (see
/// [`Debouncer`]). 10 s covers what rotates "together" in this operator: VaultSecrets over
/// one Key Vault secret refresh at the same moment (their jitter is keyed by what they
/// read) and share one read within `--shared-read-seconds` (5 s at most 9), and a
/// `vaultsync.io/refresh` annotated on several objects at once is handled within a few
/// seconds. Longer would delay every restart for nothing; a rollout takes longer than
/// this anyway.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// Condition reasons of the `RolloutRestarts` condition (stable strings, also the Event
/// reasons).
pub mod reasons {
    /// True: every target was restarted for the current data.
    pub const RESTARTED: &str = "RolloutRestarted";
    /// False: the data changed; the targets are restarted when the debounce window ends.
    pub const PENDING: &str = "RolloutRestartPending";
    /// False: a target does not exist (the others were restarted).
    pub const TARGET_NOT_FOUND: &str = "RestartTargetNotFound";
    /// False: the API server refused a patch (RBAC, admission, ...).
    pub const FAILED: &str = "RolloutRestartFailed";
    /// False: the operator runs without `--allow-rollout-restarts`; nothing is patched.
    pub const NOT_ALLOWED: &str = "RolloutRestartsNotAllowed";
}

/// What [`decide_restart`] concludes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// The spec names no target: nothing to keep in status.
    NoTargets,
    /// Restarts are not allowed by the operator: the baseline follows the data (so that
    /// allowing them later does not restart for an old change), nothing is patched.
    NotAllowed { baseline: Option<String> },
    /// Nothing to restart; keep this baseline (the current one, or the data's first mark).
    UpToDate { baseline: Option<String> },
    /// The data changed since the targets were last restarted.
    Due,
}

/// Whether the targets must be restarted, from the spec (`has_targets`), the operator's
/// flag (`allowed`), `status.restartedDataHash` (`baseline`) and the mark of the data the
/// Secret holds now (`current`, `None` when not known: the Secret is missing or drifted).
///
/// Rules: no targets, no bookkeeping; not allowed, never due; no baseline yet (the first
/// sync, or targets just added), the current data becomes it without a restart; due only
/// when both are known and differ.
pub fn decide_restart(
    has_targets: bool,
    allowed: bool,
    baseline: Option<&str>,
    current: Option<&str>,
) -> RestartDecision {
    if !has_targets {
        return RestartDecision::NoTargets;
    }
    let keep = current.or(baseline).map(str::to_owned);
    if !allowed {
        return RestartDecision::NotAllowed { baseline: keep };
    }
    match (baseline, current) {
        (Some(b), Some(c)) if b != c => RestartDecision::Due,
        _ => RestartDecision::UpToDate { baseline: keep },
    }
}

/// How one target's restart went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Patched; the pod template's `vaultsync.io/restartedAt` is this value.
    Restarted(String),
    /// The workload does not exist.
    NotFound,
    /// The API server refused the patch; why (no value is involved in it).
    Failed(String),
}

/// A workload, by namespace, kind and name.
pub type TargetKey = (String, RolloutKind, String);
/// Who asks for a restart: a VaultSecret (uid) for one data mark.
pub type Requester = (String, String);

/// What a requester does now about one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// The window is open: ask again after this long.
    Wait(Duration),
    /// This requester restarts the target now, for every requester of the window, and
    /// reports the outcome with [`Debouncer::finish`].
    Fire(HashSet<Requester>),
    /// The target was restarted (or tried) for this requester's change.
    Done(Outcome),
}

#[derive(Debug, Default)]
struct TargetState {
    /// The open window: when it opened, and who joined it.
    open: Option<(Instant, HashSet<Requester>)>,
    /// Requesters whose restart is being made right now.
    firing: HashSet<Requester>,
    /// Requesters served, with the outcome and when.
    served: HashMap<Requester, (Outcome, Instant)>,
}

/// Restarts each workload once per window, however many VaultSecrets ask (trailing edge:
/// the first request opens the window, the restart comes at its end, after every
/// rotation that joined it has been written, so the new pods read all the new values).
/// In memory: after an operator restart the status still says which restarts are due, and
/// they are asked for again.
#[derive(Debug)]
pub struct Debouncer {
    window: Duration,
    targets: Mutex<HashMap<TargetKey, TargetState>>,
}

impl Debouncer {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            targets: Mutex::new(HashMap::new()),
        }
    }

    /// The debounce window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How long served outcomes are remembered: requesters of a window come back within a
    /// window or so (they are requeued at its end); far longer is only memory.
    fn keep(&self) -> Duration {
        self.window * 6 + Duration::from_secs(60)
    }

    /// A requester's turn for `target` at `now`.
    pub fn request(&self, target: &TargetKey, who: &Requester, now: Instant) -> Turn {
        let keep = self.keep();
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let state = targets.entry(target.clone()).or_default();
        state
            .served
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < keep);
        if let Some((outcome, _)) = state.served.get(who) {
            return Turn::Done(outcome.clone());
        }
        if state.firing.contains(who) {
            return Turn::Wait(Duration::from_secs(1));
        }
        let (opened, joined) = state.open.get_or_insert_with(|| (now, HashSet::new()));
        joined.insert(who.clone());
        let ends = *opened + self.window;
        if now < ends {
            return Turn::Wait(ends - now);
        }
        let joined = state
            .open
            .take()
            .map(|(_, joined)| joined)
            .unwrap_or_default();
        state.firing.extend(joined.iter().cloned());
        Turn::Fire(joined)
    }

    /// Records the outcome of a restart made for `served` (from [`Turn::Fire`]).
    pub fn finish(
        &self,
        target: &TargetKey,
        served: HashSet<Requester>,
        outcome: Outcome,
        now: Instant,
    ) {
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let state = targets.entry(target.clone()).or_default();
        for who in served {
            state.firing.remove(&who);
            state.served.insert(who, (outcome.clone(), now));
        }
    }
}

/// `vaultsync.io/restartedAt`'s value for `now`: RFC 3339 in whole seconds, UTC, as
/// `kubectl rollout restart` writes its own annotation.
pub fn restarted_at(now: Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Sets the pod template annotation of `target` in `namespace`, which makes its controller
/// roll new pods. A merge patch, as `kubectl rollout restart` sends, rather than a
/// server-side apply: an apply of an absent workload would try to create it (and be
/// refused as invalid), while a patch answers 404, the missing target it is.
pub async fn restart_workload(
    client: &Client,
    namespace: &str,
    target: &RolloutRestartTarget,
    at: &str,
) -> Outcome {
    let patch = serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: at}}}}
    });
    let params = PatchParams::apply(super::target::FIELD_MANAGER);
    let patch = Patch::Merge(&patch);
    let result = match target.kind {
        RolloutKind::Deployment => Api::<Deployment>::namespaced(client.clone(), namespace)
            .patch(&target.name, &params, &patch)
            .await
            .map(drop),
        RolloutKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .patch(&target.name, &params, &patch)
            .await
            .map(drop),
        RolloutKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), namespace)
            .patch(&target.name, &params, &patch)
            .await
            .map(drop),
    };
    match result {
        Ok(()) => Outcome::Restarted(at.to_owned()),
        Err(kube::Error::Api(status)) if status.code == 404 => Outcome::NotFound,
        Err(kube::Error::Api(status)) => Outcome::Failed(format!(
            "HTTP {} {}: {}",
            status.code,
            status.reason,
            super::decide::redact_quoted_input(&status.message)
        )),
        Err(other) => Outcome::Failed(other.to_string()),
    }
}

/// The `RolloutRestarts` condition and the Events for the outcomes of every target of one
/// change: `(condition status, reason, message)` and `(warning, reason, note)` per Event.
pub fn summarize(outcomes: &[(RolloutRestartTarget, Outcome)]) -> Summary {
    let restarted: Vec<String> = outcomes
        .iter()
        .filter_map(|(t, o)| match o {
            Outcome::Restarted(at) => Some(format!("{t} (restartedAt {at})")),
            _ => None,
        })
        .collect();
    let missing: Vec<String> = outcomes
        .iter()
        .filter(|(_, o)| *o == Outcome::NotFound)
        .map(|(t, _)| t.to_string())
        .collect();
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|(t, o)| match o {
            Outcome::Failed(why) => Some(format!("{t}: {why}")),
            _ => None,
        })
        .collect();
    let mut events = Vec::new();
    if !restarted.is_empty() {
        events.push((
            false,
            reasons::RESTARTED,
            format!(
                "the Secret's data changed: restarted {}",
                restarted.join(", ")
            ),
        ));
    }
    if !missing.is_empty() {
        events.push((
            true,
            reasons::TARGET_NOT_FOUND,
            format!(
                "the Secret's data changed but {} not found in this namespace; nothing restarted there (the sync itself succeeded)",
                missing.join(", ")
            ),
        ));
    }
    if !failed.is_empty() {
        events.push((
            true,
            reasons::FAILED,
            format!("could not restart {}", failed.join("; ")),
        ));
    }
    let mut parts = Vec::new();
    if !restarted.is_empty() {
        parts.push(format!("restarted {}", restarted.join(", ")));
    }
    if !missing.is_empty() {
        parts.push(format!("not found: {}", missing.join(", ")));
    }
    if !failed.is_empty() {
        parts.push(format!("failed: {}", failed.join("; ")));
    }
    let message = format!(
        "for the last change of the Secret's data: {}",
        parts.join("; ")
    );
    let (ok, reason) = if !failed.is_empty() {
        (false, reasons::FAILED)
    } else if !missing.is_empty() {
        (false, reasons::TARGET_NOT_FOUND)
    } else {
        (true, reasons::RESTARTED)
    };
    Summary {
        ok,
        reason,
        message,
        events,
    }
}

/// The condition and Events for the outcomes of one change (see [`summarize`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
    /// `(is a Warning, reason, note)`.
    pub events: Vec<(bool, &'static str, String)>,
}

/// The `RolloutRestarts` condition, keeping `lastTransitionTime` when neither its status
/// nor its reason changed.
pub fn restart_condition(
    previous: Option<&Condition>,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    crate::controller::decide::condition_with_reason(
        crate::api::ROLLOUT_RESTARTS,
        previous,
        ok,
        reason,
        message,
        generation,
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_restart_without_targets_before_a_baseline_or_for_equal_data() {
        use RestartDecision::*;
        assert_eq!(decide_restart(false, true, Some("a"), Some("b")), NoTargets);
        // The first sync (or targets just added): the data becomes the baseline.
        assert_eq!(
            decide_restart(true, true, None, Some("a")),
            UpToDate {
                baseline: Some("a".into())
            }
        );
        // Equal data: a drift repair or an idle refresh.
        assert_eq!(
            decide_restart(true, true, Some("a"), Some("a")),
            UpToDate {
                baseline: Some("a".into())
            }
        );
        // The data is not known now (missing Secret): the baseline stays.
        assert_eq!(
            decide_restart(true, true, Some("a"), None),
            UpToDate {
                baseline: Some("a".into())
            }
        );
        assert_eq!(decide_restart(true, true, Some("a"), Some("b")), Due);
        // Not allowed: never due, the baseline follows the data.
        assert_eq!(
            decide_restart(true, false, Some("a"), Some("b")),
            NotAllowed {
                baseline: Some("b".into())
            }
        );
    }

    fn key(name: &str) -> TargetKey {
        ("ns".into(), RolloutKind::Deployment, name.into())
    }

    fn who(uid: &str) -> Requester {
        (uid.into(), "hash".into())
    }

    #[test]
    fn requesters_of_one_window_share_one_restart() {
        let window = Duration::from_secs(10);
        let d = Debouncer::new(window);
        let t0 = Instant::now();
        assert_eq!(d.request(&key("app"), &who("a"), t0), Turn::Wait(window));
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(
            d.request(&key("app"), &who("b"), t1),
            Turn::Wait(Duration::from_secs(6))
        );
        // Another target has a window of its own.
        assert_eq!(d.request(&key("other"), &who("a"), t1), Turn::Wait(window));
        let end = t0 + window;
        let Turn::Fire(served) = d.request(&key("app"), &who("b"), end) else {
            panic!("the window's end fires");
        };
        assert_eq!(served, [who("a"), who("b")].into());
        // While the restart is made, its requesters wait for it, and do not open a window.
        assert_eq!(
            d.request(&key("app"), &who("a"), end),
            Turn::Wait(Duration::from_secs(1))
        );
        let done = Outcome::Restarted("2026-01-01T00:00:00Z".into());
        d.finish(&key("app"), served, done.clone(), end);
        assert_eq!(
            d.request(&key("app"), &who("a"), end),
            Turn::Done(done.clone())
        );
        assert_eq!(d.request(&key("app"), &who("b"), end), Turn::Done(done));
        // A later change opens a new window.
        let later = (who("a").0, "other-hash".to_owned());
        assert_eq!(d.request(&key("app"), &later, end), Turn::Wait(window));
    }

    #[test]
    fn served_outcomes_are_forgotten_after_a_while() {
        let d = Debouncer::new(Duration::from_secs(10));
        let t0 = Instant::now();
        d.request(&key("app"), &who("a"), t0);
        let Turn::Fire(served) = d.request(&key("app"), &who("a"), t0 + Duration::from_secs(10))
        else {
            panic!("fires");
        };
        d.finish(&key("app"), served, Outcome::NotFound, t0);
        let late = t0 + Duration::from_secs(3600);
        assert_eq!(
            d.request(&key("app"), &who("a"), late),
            Turn::Wait(Duration::from_secs(10))
        );
    }

    #[test]
    fn restarted_at_is_rfc3339_in_whole_seconds() {
        let t: Timestamp = "2026-11-29T22:30:05.123456Z".parse().unwrap();
        assert_eq!(restarted_at(t), "2026-11-29T22:30:05Z");
    }

    #[test]
    fn a_missing_target_is_a_warning_and_the_condition_names_it() {
        let target = |kind, name: &str| RolloutRestartTarget {
            kind,
            name: name.into(),
        };
        let s = summarize(&[
            (
                target(RolloutKind::Deployment, "web"),
                Outcome::Restarted("2026-01-01T00:00:00Z".into()),
            ),
            (target(RolloutKind::StatefulSet, "db"), Outcome::NotFound),
        ]);
        assert!(!s.ok);
        assert_eq!(s.reason, reasons::TARGET_NOT_FOUND);
        assert!(s.message.contains("Deployment/web") && s.message.contains("StatefulSet/db"));
        assert_eq!(
            s.events
                .iter()
                .map(|(w, r, _)| (*w, *r))
                .collect::<Vec<_>>(),
            vec![
                (false, reasons::RESTARTED),
                (true, reasons::TARGET_NOT_FOUND)
            ]
        );
        let all_good = summarize(&[(
            target(RolloutKind::DaemonSet, "agent"),
            Outcome::Restarted("t".into()),
        )]);
        assert!(all_good.ok);
        assert_eq!(all_good.reason, reasons::RESTARTED);
    }
}
