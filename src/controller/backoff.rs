//! Per-object backoff for reconciles that end in an error (a Kubernetes API failure that
//! could not even be reported in status, a write conflict to decide again): exponential
//! from one second, capped at five minutes, reset by the object's next good reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
