//! A per-vault request budget: a token bucket that also pauses every request to a vault
//! while Key Vault's `Retry-After` runs, so one throttled answer slows the whole vault
//! down instead of each VaultSecret finding out for itself.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

pub struct VaultBudget {
    per_second: f64,
    burst: f64,
    state: Mutex<State>,
}

struct State {
    tokens: f64,
    updated: Instant,
    paused_until: Option<Instant>,
}

impl VaultBudget {
    pub fn new(per_second: f64) -> Self {
        let per_second = per_second.max(0.1);
        let burst = per_second.max(1.0);
        Self {
            per_second,
            burst,
            state: Mutex::new(State {
                tokens: burst,
                updated: Instant::now(),
                paused_until: None,
            }),
        }
    }

    /// How long the caller must wait before it may send; takes the token if zero.
    fn reserve(&self, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = s.paused_until {
            if until > now {
                return until - now;
            }
            s.paused_until = None;
        }
        let elapsed = now.saturating_duration_since(s.updated).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.per_second).min(self.burst);
        s.updated = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - s.tokens) / self.per_second)
        }
    }

    pub async fn acquire(&self) {
        loop {
            let wait = self.reserve(Instant::now());
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    pub fn pause_for(&self, duration: Duration) {
        let until = Instant::now() + duration;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.paused_until.is_none_or(|current| current < until) {
            s.paused_until = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_spaces_requests() {
        let b = VaultBudget::new(2.0);
        let now = Instant::now();
        assert_eq!(b.reserve(now), Duration::ZERO);
        assert_eq!(b.reserve(now), Duration::ZERO);
        assert_eq!(b.reserve(now), Duration::from_millis(500));
        assert_eq!(b.reserve(now + Duration::from_millis(500)), Duration::ZERO);
    }

    #[test]
    fn retry_after_pauses_the_vault() {
        let b = VaultBudget::new(100.0);
        b.pause_for(Duration::from_secs(3));
        let wait = b.reserve(Instant::now());
        assert!(
            wait > Duration::from_secs(2) && wait <= Duration::from_secs(3),
            "{wait:?}"
        );
    }
}
