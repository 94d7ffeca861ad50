//! A shared back-off for a failing part of Key Vault (a throttled vault, or one secret
//! whose reads fail with 5xx, timeouts or resets), honoured by every VaultSecret that
//! reads there, so that N objects over K failing secrets cost about K requests per
//! back-off step instead of N retries on N private timers (the storm that keeps a vault
//! throttled: Key Vault counts every refused request against the same limit).
//!
//! The rule: after the `n`th consecutive failure the gate stays shut for
//! `max(FIRST · 2^(n-1) capped at CAP, the answer's Retry-After)`; a read that comes while
//! it is shut is not sent and gets the failure that shut it. Requests sent together while
//! the gate was open and failing together are one failure, not several: a throttled
//! vault answers the reads of its 4 secrets in flight with 4 429s, which counted one by
//! one made a 16 s pause of a first throttling. When the pause is over, one
//! read is let through as a probe while the others keep getting that failure; the probe's
//! success opens the gate for all, its failure shuts it for the next, doubled, pause. A
//! probe that ends without an answer that counts (its caller gave up, or the request
//! failed before Key Vault was asked) hands the probe on to the next read.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The pause after a first failure.
pub const FIRST: Duration = Duration::from_secs(2);
/// The longest pause the gate chooses on its own; a longer `Retry-After` is honoured.
pub const CAP: Duration = Duration::from_secs(60);

struct State<E> {
    /// Consecutive failures since the last success.
    failures: u32,
    /// Shut until then; `None`: open.
    shut_until: Option<Instant>,
    /// A probe is out (only while the pause is over but no answer has opened the gate).
    probing: bool,
    /// The failure that shut the gate, handed to reads refused meanwhile.
    last: Option<E>,
    /// Bumped whenever the gate shuts or opens: a failure of a ticket admitted in an
    /// earlier round was already counted by the one that shut the gate.
    round: u64,
}

/// One gate; cheap to share (`Arc`).
pub struct Gate<E> {
    state: Mutex<State<E>>,
}

/// Permission to send one request; a probe's outcome must be reported
/// ([`Gate::succeeded`], [`Gate::failed`]), else dropping it hands the probe on.
pub struct Ticket<E> {
    gate: Arc<Gate<E>>,
    probe: bool,
    reported: bool,
    /// The gate's round when the ticket was given.
    round: u64,
}

impl<E> Drop for Ticket<E> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            self.gate
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .probing = false;
        }
    }
}

impl<E: Clone> Default for Gate<E> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                failures: 0,
                shut_until: None,
                probing: false,
                last: None,
                round: 0,
            }),
        }
    }
}

/// The pause after `failures` consecutive failures (at least one).
pub fn pause(failures: u32, retry_after: Option<Duration>) -> Duration {
    let doubled = FIRST.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)));
    doubled.min(CAP).max(retry_after.unwrap_or_default())
}

impl<E: Clone> Gate<E> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<E>> {
        // Plain fields, consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ticket to send now, or the failure that keeps the gate shut.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Result<Ticket<E>, E> {
        let mut s = self.lock();
        let round = s.round;
        let ticket = |probe| Ticket {
            gate: self.clone(),
            probe,
            reported: false,
            round,
        };
        let Some(until) = s.shut_until else {
            return Ok(ticket(false));
        };
        match &s.last {
            Some(last) if now < until || s.probing => Err(last.clone()),
            _ => {
                s.probing = true;
                Ok(ticket(true))
            }
        }
    }

    /// The request was answered (a value, or a refusal that is no outage): the gate opens.
    /// Returns whether it was shut (this answer reopened it).
    pub fn succeeded(&self, mut ticket: Ticket<E>) -> bool {
        ticket.reported = true;
        let mut s = self.lock();
        let was_shut = s.shut_until.is_some();
        let round = s.round + 1;
        *s = State {
            failures: 0,
            shut_until: None,
            probing: false,
            last: None,
            round,
        };
        was_shut
    }

    /// The request failed in the way this gate guards against: it shuts for the next
    /// pause (at least `retry_after`), unless a request sent with it already shut it (then
    /// only a longer `retry_after` lengthens the pause). Returns the pause from `now`.
    pub fn failed(
        &self,
        mut ticket: Ticket<E>,
        failure: E,
        retry_after: Option<Duration>,
        now: Instant,
    ) -> Duration {
        ticket.reported = true;
        let mut s = self.lock();
        // Requests sent together before the gate shut come back one by one: the first
        // counts, the others only keep a longer Retry-After, and none shortens a pause.
        let counted = ticket.round == s.round || s.shut_until.is_none();
        let until = if counted {
            s.failures = s.failures.saturating_add(1);
            s.round += 1;
            now + pause(s.failures, retry_after)
        } else {
            now + retry_after.unwrap_or_default()
        };
        let until = s.shut_until.map_or(until, |current| current.max(until));
        s.shut_until = Some(until);
        if ticket.probe || counted {
            s.probing = false;
        }
        s.last = Some(failure);
        until.saturating_duration_since(now)
    }

    /// Whether the gate is open (no failure since the last success).
    pub fn is_open(&self) -> bool {
        self.lock().shut_until.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_failing_together_is_one_failure_but_keeps_the_longest_retry_after() {
        let gate = Arc::new(Gate::<&str>::default());
        let t0 = Instant::now();
        let burst: Vec<_> = (0..4).map(|_| gate.admit(t0).unwrap()).collect();
        let pauses: Vec<_> = burst
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let retry_after = (i == 3).then_some(Duration::from_secs(5));
                gate.failed(t, "429", retry_after, t0)
            })
            .collect();
        assert_eq!(pauses, [FIRST, FIRST, FIRST, Duration::from_secs(5)]);
        // The probe after it fails: the second failure, twice the first pause.
        let probe = gate.admit(t0 + Duration::from_secs(5)).unwrap();
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(gate.failed(probe, "429", None, t1), FIRST * 2);
    }

    #[test]
    fn pauses_double_from_two_seconds_up_to_a_minute_or_retry_after() {
        let secs: Vec<u64> = (1..=7).map(|n| pause(n, None).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(pause(1, Some(Duration::ZERO)), FIRST, "Retry-After: 0");
        assert_eq!(pause(1, Some(Duration::from_secs(90))).as_secs(), 90);
    }

    #[test]
    fn a_shut_gate_refuses_until_the_pause_ends_then_lets_one_probe_through() {
        let gate = Arc::new(Gate::<&str>::default());
        let t0 = Instant::now();
        let first = gate.admit(t0).unwrap();
        let second = gate.admit(t0).unwrap();
        assert_eq!(gate.failed(first, "throttled", None, t0), FIRST);
        // The second request sent before the gate shut fails too: the same failure.
        assert_eq!(gate.failed(second, "throttled", None, t0), FIRST);
        assert_eq!(gate.admit(t0 + FIRST / 2).err(), Some("throttled"));
        let probe = gate.admit(t0 + FIRST).unwrap();
        assert_eq!(
            gate.admit(t0 + FIRST).err(),
            Some("throttled"),
            "one probe at a time"
        );
        // A probe dropped without an outcome hands the probe on.
        drop(probe);
        let probe = gate.admit(t0 + FIRST).unwrap();
        assert!(
            gate.succeeded(probe),
            "the probe's answer reopened the gate"
        );
        assert!(gate.is_open());
        assert!(
            !gate.succeeded(gate.admit(t0 + FIRST).unwrap()),
            "open already"
        );
        assert!(gate.admit(t0 + FIRST).is_ok());
    }

    #[test]
    fn a_failed_probe_shuts_for_a_doubled_pause() {
        let gate = Arc::new(Gate::<&str>::default());
        let t0 = Instant::now();
        gate.failed(gate.admit(t0).unwrap(), "503", None, t0);
        let probe = gate.admit(t0 + FIRST).unwrap();
        assert_eq!(gate.failed(probe, "503", None, t0 + FIRST), FIRST * 2);
        assert!(gate.admit(t0 + FIRST * 2).is_err());
        assert!(gate.admit(t0 + FIRST * 3).is_ok());
    }

    #[test]
    fn a_retry_after_longer_than_the_pause_keeps_the_gate_shut_that_long() {
        let gate = Arc::new(Gate::<&str>::default());
        let t0 = Instant::now();
        let retry_after = Duration::from_secs(30);
        assert_eq!(
            gate.failed(gate.admit(t0).unwrap(), "429", Some(retry_after), t0),
            retry_after
        );
        assert_eq!(gate.admit(t0 + Duration::from_secs(29)).err(), Some("429"));
        assert!(gate.admit(t0 + retry_after).is_ok());
    }

    #[test]
    fn an_answer_that_is_no_outage_opens_the_gate_for_every_reader() {
        let gate = Arc::new(Gate::<&str>::default());
        let t0 = Instant::now();
        gate.failed(gate.admit(t0).unwrap(), "reset", None, t0);
        assert!(!gate.is_open());
        let probe = gate.admit(t0 + FIRST).unwrap();
        gate.succeeded(probe);
        // After a success the count starts over: the next failure pauses for FIRST again.
        let tickets: Vec<_> = (0..5).map(|_| gate.admit(t0 + FIRST).unwrap()).collect();
        assert_eq!(tickets.len(), 5, "no probe needed while open");
        let mut tickets = tickets.into_iter();
        let first = tickets.next().unwrap();
        assert_eq!(gate.failed(first, "reset", None, t0 + FIRST), FIRST);
    }
}
