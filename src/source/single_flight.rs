//! Shares one execution among identical requests in flight at the same time: when many
//! VaultSecrets read the same Key Vault secret at once, Key Vault sees one request.

use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

type InFlight<V> = Shared<BoxFuture<'static, V>>;

pub struct SingleFlight<K, V: Clone> {
    in_flight: Mutex<HashMap<K, InFlight<V>>>,
}

impl<K, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            in_flight: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone + Send + Sync + 'static> SingleFlight<K, V> {
    /// Runs `make()` for `key`, unless a run for an equal key is in flight, whose result
    /// is then shared. Results are not cached beyond the run.
    pub async fn run<F>(&self, key: &K, make: impl FnOnce() -> F) -> V
    where
        F: Future<Output = V> + Send + 'static,
    {
        let shared = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match in_flight.get(key) {
                Some(existing) => existing.clone(),
                None => {
                    let fut = make().boxed().shared();
                    in_flight.insert(key.clone(), fut.clone());
                    fut
                }
            }
        };
        let result = shared.clone().await;
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        // Only the run this caller joined is removed; a newer one may have replaced it.
        if in_flight.get(key).is_some_and(|f| f.ptr_eq(&shared)) {
            in_flight.remove(key);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::SingleFlight;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_identical_requests_share_one_run_and_later_ones_run_again() {
        let flights = Arc::new(SingleFlight::<&'static str, usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let call = |key: &'static str| {
            let (flights, runs) = (flights.clone(), runs.clone());
            async move {
                flights
                    .run(&key, || async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        runs.fetch_add(1, Ordering::SeqCst) + 1
                    })
                    .await
            }
        };
        let results = futures::future::join_all((0..10).map(|_| call("a"))).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(|r| *r == 1));
        assert_eq!(call("b").await, 2, "another key runs on its own");
        assert_eq!(call("a").await, 3, "a finished run is not cached");
    }
}
