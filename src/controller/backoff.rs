//! Per-object backoff for reconciles that end in an error (a Kubernetes API failure that
//! could not even be reported in status, a write conflict to decide again): exponential
//! from one second, capped at five minutes, reset by the object's next good reconcile.
//! And the pace of drift repairs, so that a client deleting or editing a Secret in a loop
//! does not get the operator writing it (and reading Key Vault, and publishing an Event)
//! in the same loop.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The first retry after an error; a conflict (409) is usually decided again at once.
const FIRST: Duration = Duration::from_secs(1);
/// The longest wait between retries, as for Key Vault's transient failures.
const CAP: Duration = Duration::from_secs(300);

/// Consecutive errors per object (`namespace/name`).
#[derive(Debug, Default)]
pub struct ErrorBackoff {
    errors: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A plain map stays consistent even if a holder panicked.
        self.errors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more error of `object` and returns how long to wait before its retry:
    /// 1 s, 2 s, 4 s, … up to 300 s.
    pub fn next_delay(&self, object: &str) -> Duration {
        let mut errors = self.lock();
        let n = errors.entry(object.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        FIRST.saturating_mul(2u32.saturating_pow(*n - 1)).min(CAP)
    }

    /// Forgets `object`'s errors after a reconcile that ended well.
    pub fn reset(&self, object: &str) {
        self.lock().remove(object);
    }
}

/// The pause after a drift repair before the same object is repaired again.
const REPAIR_FIRST: Duration = Duration::from_secs(1);
/// The longest pause between repairs of one object: under a fight that never ends, one
/// write, one Key Vault read and one Event a minute, and a Secret missing or wrong for at
/// most a minute at a time.
const REPAIR_CAP: Duration = Duration::from_secs(60);

/// How long a Secret stays intact after a repair before its pauses start over.
const REPAIR_QUIET: Duration = Duration::from_secs(60);

/// The pace of drift repairs per object (`namespace/name`): a repair right away, then, while
/// the Secret keeps drifting, pauses of 1 s, 2 s, 4 s, … up to 60 s between repairs. The
/// pauses start over once a Secret has stayed intact for a minute after a repair, measured
/// from the repair to the first drift seen after it (a fixed quiet time rather than one
/// relative to the pause: a client slower than the pause would otherwise start the pauses
/// over at each repair; and not the time between repairs, which is a full minute under a
/// fight at the cap, whose pauses must not start over). Every drift is still repaired (the
/// last one after at most a pause), so the Secret ends as Key Vault holds it; only repeats
/// are slowed.
#[derive(Debug, Default)]
pub struct RepairPace {
    repairs: Mutex<HashMap<String, Repairs>>,
}

/// The repairs of one object.
#[derive(Debug, Clone, Copy)]
struct Repairs {
    /// The last repair.
    last: Instant,
    /// How many repairs came in a row (none a quiet minute after the one before).
    in_a_row: u32,
    /// When a drift was first seen after the last repair, if one was.
    drifted: Option<Instant>,
}

fn repair_pause(in_a_row: u32) -> Duration {
    REPAIR_FIRST
        .saturating_mul(2u32.saturating_pow(in_a_row.saturating_sub(1)))
        .min(REPAIR_CAP)
}

impl RepairPace {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Repairs>> {
        // A plain map stays consistent even if a holder panicked.
        self.repairs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `object`'s Secret was seen drifted at `now`: how long it must wait before its next
    /// repair, if at all.
    pub fn wait(&self, object: &str, now: Instant) -> Option<Duration> {
        let mut repairs = self.lock();
        let r = repairs.get_mut(object)?;
        let drifted = *r.drifted.get_or_insert(now);
        if drifted.saturating_duration_since(r.last) >= REPAIR_QUIET {
            // Intact for a quiet minute after the last repair: this drift starts over.
            return None;
        }
        let pause = repair_pause(r.in_a_row);
        let since = now.saturating_duration_since(r.last);
        (since < pause).then(|| pause - since)
    }

    /// Records a repair of `object` at `now`.
    pub fn repaired(&self, object: &str, now: Instant) {
        let mut repairs = self.lock();
        // Objects not repaired for longer than any pause plus a quiet minute would start
        // over at their next drift anyway: forget them.
        repairs.retain(|_, r| now.saturating_duration_since(r.last) < REPAIR_CAP + REPAIR_QUIET);
        let in_a_row = match repairs.get(object) {
            Some(r)
                if r.drifted.unwrap_or(now).saturating_duration_since(r.last) < REPAIR_QUIET =>
            {
                r.in_a_row.saturating_add(1)
            }
            _ => 1,
        };
        repairs.insert(
            object.to_owned(),
            Repairs {
                last: now,
                in_a_row,
                drifted: None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_in_a_row_pause_longer_up_to_a_minute_and_start_over_after_a_quiet_minute() {
        let pace = RepairPace::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(pace.wait("ns/a", t0), None, "the first repair is at once");
        pace.repaired("ns/a", t0);
        assert_eq!(pace.wait("ns/a", t0), Some(s(1)));
        assert_eq!(pace.wait("ns/b", t0), None, "per object");
        // Drifting again and again: pauses of 1, 2, 4, ... 60 s.
        let mut at = t0;
        let mut pauses = Vec::new();
        for _ in 0..10 {
            let pause = pace.wait("ns/a", at).unwrap();
            pauses.push(pause.as_secs());
            at += pause;
            assert_eq!(pace.wait("ns/a", at), None);
            pace.repaired("ns/a", at);
        }
        // At the cap, repairs a minute apart are still a fight: the pause stays.
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        // A slow fight keeps its pace: drifted 59 s after the last repair, still 60 s
        // apart.
        assert_eq!(pace.wait("ns/a", at + s(59)), Some(s(1)));
        at += s(60);
        assert_eq!(pace.wait("ns/a", at), None);
        pace.repaired("ns/a", at);
        assert_eq!(pace.wait("ns/a", at + s(1)), Some(s(59)));
        pace.repaired("ns/a", at + s(60));
        // Intact for a minute after a repair: the next drift is repaired at once, and the
        // pauses start over.
        at += s(120);
        assert_eq!(pace.wait("ns/a", at), None);
        assert_eq!(pace.wait("ns/a", at + s(1)), None, "still the same drift");
        pace.repaired("ns/a", at + s(1));
        assert_eq!(pace.wait("ns/a", at + s(1)), Some(s(1)));
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let backoff = ErrorBackoff::default();
        let delays: Vec<u64> = (0..12)
            .map(|_| backoff.next_delay("ns/a").as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(
            backoff.next_delay("ns/b"),
            Duration::from_secs(1),
            "per object"
        );
        backoff.reset("ns/a");
        assert_eq!(backoff.next_delay("ns/a"), Duration::from_secs(1));
    }
}
