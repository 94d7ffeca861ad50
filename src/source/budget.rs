//! A per-vault request budget: a token bucket that spaces requests to one vault. A
//! throttled vault is not waited for here (that would hold a reconcile worker for the
//! whole pause): its reads fail at once while its [`super::gate`] is shut.

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
            }),
        }
    }

    /// How long the caller must wait before it may send; takes the token if zero.
    fn reserve(&self, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
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
}
