//! Shares Key Vault reads: identical requests in flight at the same moment share one run,
//! and a completed read is shared afterwards while objects due for it have not taken it
//! yet, so that N VaultSecrets over K distinct Key Vault secrets cost K reads per wave
//! instead of N, in whatever order the controller reconciles them.
//!
//! The window, and why it cannot serve a stale value past it:
//! - A successful result stays shared for [`SHARE_IDLE`] after it completed, each share
//!   pushing that end further by [`SHARE_IDLE`]. When that end comes, the result is kept
//!   (looked at again every [`SHARE_IDLE`]) only while the [`Demand`] says some object
//!   due for this read has not taken it yet (a first sync not attempted, a refresh due
//!   whose own last read is older than this one); those objects are in the controller's
//!   queue, in no particular order, so a window of time alone cannot cover them. Each
//!   object that takes the result is recorded, so it no longer counts as waiting even
//!   before its status reaches the cache. Whatever the demand, a result is never kept
//!   past [`SHARE_MAX_AGE`] after the read *started*. When the window closes the entry is
//!   removed at once (a timer, not the next lookup), so the result is dropped and its
//!   [`super::SecretBytes`] zeroed as soon as the reconciles that took it are done with
//!   it. A request after the close is a new Key Vault read: no value older than
//!   [`SHARE_MAX_AGE`] is ever handed out.
//! - A request may also say which reads are too old for it (`fresher_than`: the caller's
//!   own last read happened before that instant). A completed or running read that started
//!   before it is not shared with that request: an object never gets back its own last
//!   read, or anything older, as a "refresh". The demand applies the same rule: an object
//!   that could not take a read does not hold it.
//! - A failure is shared for [`SHARE_IDLE`] after it completed, never extended. Sharing
//!   `Throttled` is deliberate: Key Vault often answers 429 without `Retry-After`, and
//!   letting each of N objects find that out for itself is the storm that keeps a vault
//!   throttled. A secret created or granted right after a `SecretNotFound` or
//!   `AccessDenied` is seen at most [`SHARE_IDLE`] later. Which failures are shared is the
//!   caller's rule: the Key Vault source shares every failure but an identity error (made
//!   before Key Vault is asked: each attempt asks Entra again, so a fixed federation works
//!   at the next attempt and each message carries that attempt's trace id).
//!
//! The key is the whole read (vault, identity, lowercased name, version): two identities
//! never share a read.

use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The default of how long a completed read stays shared after its last use (and a
/// failure after it completed); `--shared-read-seconds` sets it. Shorter than the smallest
/// `refreshInterval` (10 s), so an object refreshing alone always reads Key Vault again.
pub const SHARE_IDLE: Duration = Duration::from_secs(5);
/// The oldest a shared successful read can be when it is handed out, counted from the
/// moment the read started. Long enough for a cold start of thousands of objects to be
/// served by one read per secret (5,000 objects take minutes to write, more than the
/// 60 s this was first); a first sync gets a value at most this old, and Key Vault's next
/// version reaches it at its next refresh. Refreshes are bounded tighter by their own
/// rule (never a read older than their last one or half their interval), so this only
/// bounds first syncs and how long an awaited value stays in memory.
pub const SHARE_MAX_AGE: Duration = Duration::from_secs(300);

type Run<T, E> = Shared<BoxFuture<'static, Result<T, E>>>;

/// Who is still due for a read: the controller's view of its queue, asked when a shared
/// result's idle window ends.
pub trait Demand<K>: Send + Sync {
    /// Whether an object not in `taken` (uids of the objects that got this result) is due
    /// for the read `key` and would take one that started at `started_at`.
    fn waiting(&self, key: &K, started_at: SystemTime, taken: &HashSet<String>) -> bool;
}

enum Entry<T, E> {
    Running {
        id: u64,
        /// When the read started, on the wall clock (compared with `fresher_than`) and on
        /// the monotonic one (for the age bound).
        started_at: SystemTime,
        started: Instant,
        run: Run<T, E>,
        /// The objects that joined this run.
        taken: HashSet<String>,
    },
    Done {
        id: u64,
        started_at: SystemTime,
        result: Result<T, E>,
        /// The window closes here; moved on by shares of a success, up to `last`.
        closes: Instant,
        last: Instant,
        /// The objects that got this result.
        taken: HashSet<String>,
    },
}

struct Table<K, T, E> {
    next_id: u64,
    entries: HashMap<K, Entry<T, E>>,
    /// Who is still due for a read; without one, results are kept for the idle window only.
    demand: Option<Arc<dyn Demand<K>>>,
}

/// Shared reads keyed by `K`, with results `Result<T, E>` (cheap clones: `Arc`s).
pub struct SharedReads<K, T, E> {
    idle: Duration,
    max_age: Duration,
    /// Whether a failure is shared for the window (else only while in flight).
    share_failure: fn(&E) -> bool,
    table: Arc<Mutex<Table<K, T, E>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The table holds no invariant a panicking holder could break half-way.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a read that started at `started_at` is recent enough for a caller whose own
/// last read happened before `fresher_than`.
fn fresh_enough(started_at: SystemTime, fresher_than: Option<SystemTime>) -> bool {
    fresher_than.is_none_or(|bound| started_at >= bound)
}

impl<K, T, E> SharedReads<K, T, E> {
    /// Reads shared for `idle` after their last use, never past `max_age` after they
    /// started (the module docs' window, with other bounds for tests); failures for which
    /// `share_failure` is true are shared for `idle` after they completed.
    pub fn new(idle: Duration, max_age: Duration, share_failure: fn(&E) -> bool) -> Self {
        Self {
            idle,
            max_age,
            share_failure,
            table: Arc::new(Mutex::new(Table {
                next_id: 0,
                entries: HashMap::new(),
                demand: None,
            })),
        }
    }

    /// Keeps successful results past their idle window while `demand` says objects due
    /// for them have not taken them (never past the maximum age).
    pub fn hold_for(&self, demand: Arc<dyn Demand<K>>) {
        lock(&self.table).demand = Some(demand);
    }
}

impl<K, T, E> SharedReads<K, T, E>
where
    K: Eq + Hash + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// The result for `key`: a running or recently completed read's if one started at or
    /// after `fresher_than` (see the module docs for the window), else that of `make()`,
    /// which is then shared in turn. `taker`: the uid of the object asking, recorded as
    /// having taken the result (see [`Demand`]).
    pub async fn run<F>(
        &self,
        key: &K,
        fresher_than: Option<SystemTime>,
        taker: Option<&str>,
        make: impl FnOnce() -> F,
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let mut make = Some(make);
        let (id, run) = loop {
            let (earlier_id, earlier) = {
                let mut table = lock(&self.table);
                let now = Instant::now();
                // With a demand, a successful result still in the table is open: its timer
                // keeps it only while objects wait for it, and removes it at once otherwise;
                // a request at the very instant of a close need not race that timer.
                let held = table.demand.is_some();
                match table.entries.get_mut(key) {
                    Some(Entry::Running {
                        id,
                        started_at,
                        run,
                        taken,
                        ..
                    }) if fresh_enough(*started_at, fresher_than) => {
                        taken.extend(taker.map(str::to_owned));
                        break (*id, run.clone());
                    }
                    // Started before this request may take it: wait for it below.
                    Some(Entry::Running { id, run, .. }) => (*id, run.clone()),
                    Some(Entry::Done {
                        started_at,
                        result,
                        closes,
                        last,
                        taken,
                        ..
                    }) if (now < *closes || (held && result.is_ok() && now < *last))
                        && fresh_enough(*started_at, fresher_than) =>
                    {
                        if result.is_ok() {
                            *closes = (now + self.idle).min(*last);
                            taken.extend(taker.map(str::to_owned));
                        }
                        return result.clone();
                    }
                    _ => {
                        let id = table.next_id;
                        table.next_id += 1;
                        let make = make.take().expect("a request starts at most one read");
                        let run = make().boxed().shared();
                        table.entries.insert(
                            key.clone(),
                            Entry::Running {
                                id,
                                started_at: SystemTime::now(),
                                started: now,
                                run: run.clone(),
                                taken: taker.map(str::to_owned).into_iter().collect(),
                            },
                        );
                        break (id, run);
                    }
                }
            };
            // A read of this key that started too early for this request is in flight: wait
            // for it to end instead of reading beside it, then look again. Every request
            // that waited shares the one read started next (it starts after all of them),
            // so a burst of refreshes during a slow or failing read costs two reads, not
            // one per request. Completing it here too keeps a finished run from being
            // seen as running (the table must move on even before its starter resumes).
            let result = earlier.await;
            self.complete(key, earlier_id, &result);
        };
        let result = run.await;
        self.complete(key, id, &result);
        result
    }

    /// Turns the run `id` into a completed entry (once: later joiners find it done) and
    /// starts the timer that removes it when its window closes.
    fn complete(&self, key: &K, id: u64, result: &Result<T, E>) {
        let closes = {
            let mut table = lock(&self.table);
            let Some(Entry::Running { id: running, .. }) = table.entries.get(key) else {
                return;
            };
            if *running != id {
                return;
            }
            let Some(Entry::Running {
                started_at,
                started,
                taken,
                ..
            }) = table.entries.remove(key)
            else {
                return;
            };
            let now = Instant::now();
            let last = started + self.max_age;
            let closes = match result {
                Ok(_) => (now + self.idle).min(last),
                Err(e) if (self.share_failure)(e) => now + self.idle,
                Err(_) => return,
            };
            if closes <= now {
                return;
            }
            table.entries.insert(
                key.clone(),
                Entry::Done {
                    id,
                    started_at,
                    result: result.clone(),
                    closes,
                    last,
                    taken,
                },
            );
            closes
        };
        tokio::spawn(close_when_due(
            Arc::downgrade(&self.table),
            key.clone(),
            id,
            closes,
            self.idle,
        ));
    }

    /// Entries held (running or within their window); for tests.
    #[cfg(test)]
    fn held(&self) -> usize {
        lock(&self.table).entries.len()
    }
}

/// Removes the completed entry `id` of `key` when its window closes, following any
/// extension (a share, or objects still due for a successful result, looked at again every
/// `idle`); stops if the entry was replaced or the table is gone.
async fn close_when_due<K: Eq + Hash, T, E>(
    table: Weak<Mutex<Table<K, T, E>>>,
    key: K,
    id: u64,
    mut closes: Instant,
    idle: Duration,
) {
    loop {
        tokio::time::sleep_until(closes).await;
        let Some(table) = table.upgrade() else { return };
        // What the demand is asked about, read under the lock and asked without it (the
        // demand walks the controller's caches).
        let ask = {
            let mut table = lock(&table);
            let demand = table.demand.clone();
            match table.entries.get(&key) {
                Some(Entry::Done {
                    id: done,
                    closes: c,
                    last,
                    result,
                    started_at,
                    taken,
                }) if *done == id => {
                    let now = Instant::now();
                    if *c > now {
                        closes = *c;
                        continue;
                    }
                    match demand {
                        Some(demand) if result.is_ok() && now < *last => {
                            (demand, *started_at, taken.clone())
                        }
                        _ => {
                            // Dropped here; the value's bytes are zeroed once the last
                            // reconcile holding a clone lets go of it.
                            table.entries.remove(&key);
                            return;
                        }
                    }
                }
                _ => return,
            }
        };
        let (demand, started_at, taken) = ask;
        let waiting = demand.waiting(&key, started_at, &taken);
        let mut table = lock(&table);
        let now = Instant::now();
        match table.entries.get_mut(&key) {
            Some(Entry::Done {
                id: done,
                closes: c,
                last,
                ..
            }) if *done == id => {
                if waiting {
                    *c = (*c).max((now + idle.max(MIN_RECHECK)).min(*last));
                }
                if *c <= now {
                    table.entries.remove(&key);
                    return;
                }
                closes = *c;
            }
            _ => return,
        }
    }
}

/// The shortest pause between two looks at the demand of one result.
const MIN_RECHECK: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Reads = SharedReads<&'static str, usize, String>;

    /// A read of `key` that takes 50 ms and returns how many reads ran so far, or fails
    /// with that count when `fail` is set.
    async fn read(
        reads: &Reads,
        runs: &Arc<AtomicUsize>,
        key: &'static str,
        fresher_than: Option<SystemTime>,
        fail: bool,
    ) -> Result<usize, String> {
        let runs = runs.clone();
        reads
            .run(&key, fresher_than, None, move || async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                if fail {
                    Err(format!("failed {n}"))
                } else {
                    Ok(n)
                }
            })
            .await
    }

    fn setup() -> (Reads, Arc<AtomicUsize>) {
        (
            SharedReads::new(Duration::from_secs(5), Duration::from_secs(60), |_| true),
            Arc::new(AtomicUsize::new(0)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_identical_reads_share_one_run() {
        let (reads, runs) = setup();
        let results =
            futures::future::join_all((0..10).map(|_| read(&reads, &runs, "a", None, false))).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(|r| *r == Ok(1)));
        assert_eq!(read(&reads, &runs, "b", None, false).await, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_too_late_for_a_running_read_wait_and_share_the_next_one() {
        let (reads, runs) = setup();
        // A bound for each later request, after the reads running when it comes started
        // (the wall clock is not paused: a real millisecond keeps them apart).
        let bound = || {
            std::thread::sleep(Duration::from_millis(2));
            Some(SystemTime::now())
        };
        let first = read(&reads, &runs, "a", None, false);
        let later = |after_ms| {
            let (reads, runs) = (&reads, &runs);
            async move {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                read(reads, runs, "a", bound(), false).await
            }
        };
        // Two requests 10 ms and 20 ms into the first 50 ms read, each too late for it.
        let (first, second, third) = tokio::join!(first, later(10), later(20));
        assert_eq!(first, Ok(1));
        assert_eq!((second, third), (Ok(2), Ok(2)), "both share the read after");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "not one read per request");
    }

    #[tokio::test(start_paused = true)]
    async fn a_completed_read_is_shared_within_the_window_and_dropped_when_it_closes() {
        let (reads, runs) = setup();
        assert_eq!(read(&reads, &runs, "a", None, false).await, Ok(1));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(read(&reads, &runs, "a", None, false).await, Ok(1), "shared");
        // The share moved the close to 4 s + 5 s: still open at 8 s.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            read(&reads, &runs, "a", None, false).await,
            Ok(1),
            "extended"
        );
        // Unused for 5 s: the timer removes the entry, and the next request reads again.
        tokio::time::sleep(Duration::from_secs(5) + Duration::from_millis(1)).await;
        assert_eq!(reads.held(), 0, "the value is not held after the window");
        assert_eq!(read(&reads, &runs, "a", None, false).await, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_shared_value_is_released_when_the_window_closes() {
        let reads = SharedReads::<&'static str, Arc<String>, String>::new(
            Duration::from_secs(5),
            Duration::from_secs(60),
            |_| true,
        );
        let value = reads
            .run(&"a", None, None, || async {
                Ok(Arc::new("value".to_owned()))
            })
            .await
            .unwrap();
        let weak = Arc::downgrade(&value);
        drop(value);
        assert!(weak.upgrade().is_some(), "held for the window");
        tokio::time::sleep(Duration::from_secs(5) + Duration::from_millis(1)).await;
        // Nothing holds it any more: its bytes (SecretBytes in the source) are zeroed.
        assert!(weak.upgrade().is_none(), "released when the window closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wave_in_any_order_reads_each_key_once() {
        let (reads, runs) = setup();
        // 300 requests over 3 keys, one every 100 ms for 30 s, in an order that never
        // asks for the same key twice in a row.
        for i in 0..300 {
            let key = ["a", "b", "c"][(i * 7) % 3];
            read(&reads, &runs, key, None, false).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn no_value_is_shared_past_the_maximum_age_however_busy() {
        let (reads, runs) = setup();
        let first = Instant::now();
        let mut seen = Vec::new();
        // A request every second for 150 s keeps the window busy all along.
        while first.elapsed() < Duration::from_secs(150) {
            let asked = Instant::now();
            let n = read(&reads, &runs, "a", None, false).await.unwrap();
            seen.push((asked, n));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3, "one read per 60 s");
        // Read n started at the first request that got n; none is served 60 s after it.
        for n in 1..=3 {
            let mine: Vec<_> = seen.iter().filter(|(_, m)| *m == n).collect();
            let age = mine.last().unwrap().0 - mine.first().unwrap().0;
            assert!(
                age < Duration::from_secs(60),
                "read {n} served {age:?} after it"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_older_than_the_callers_own_is_not_shared() {
        let (reads, runs) = setup();
        assert_eq!(read(&reads, &runs, "a", None, false).await, Ok(1));
        let after_it = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(
            read(&reads, &runs, "a", Some(after_it), false).await,
            Ok(2),
            "a caller whose last read is newer reads again"
        );
        let before_it = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(
            read(&reads, &runs, "a", Some(before_it), false).await,
            Ok(2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_shared_for_the_window_without_extension() {
        let (reads, runs) = setup();
        assert_eq!(
            read(&reads, &runs, "a", None, true).await,
            Err("failed 1".into())
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            read(&reads, &runs, "a", None, true).await,
            Err("failed 1".into()),
            "a throttled vault is not asked again by every object"
        );
        // 5 s after the failure, however often it was shared, it is asked again.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(read(&reads, &runs, "a", None, false).await, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_the_rule_does_not_share_is_asked_again_at_once() {
        let reads: Reads =
            SharedReads::new(Duration::from_secs(5), Duration::from_secs(60), |_| false);
        let runs = Arc::new(AtomicUsize::new(0));
        assert!(read(&reads, &runs, "a", None, true).await.is_err());
        assert_eq!(read(&reads, &runs, "a", None, false).await, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn different_keys_never_share() {
        let (reads, runs) = setup();
        assert_eq!(read(&reads, &runs, "a", None, false).await, Ok(1));
        assert_eq!(read(&reads, &runs, "b", None, false).await, Ok(2));
        assert_eq!(read(&reads, &runs, "a", None, false).await, Ok(1));
    }

    /// A demand of objects (uids) due for key "a", read by reads started at or after
    /// `floor`.
    struct Due {
        objects: Mutex<HashSet<String>>,
        floor: Option<SystemTime>,
        asked: AtomicUsize,
    }

    impl Demand<&'static str> for Due {
        fn waiting(
            &self,
            key: &&'static str,
            started_at: SystemTime,
            taken: &HashSet<String>,
        ) -> bool {
            self.asked.fetch_add(1, Ordering::SeqCst);
            *key == "a"
                && fresh_enough(started_at, self.floor)
                && lock(&self.objects).iter().any(|o| !taken.contains(o))
        }
    }

    async fn take(reads: &Reads, runs: &Arc<AtomicUsize>, key: &'static str, taker: &str) -> usize {
        let runs = runs.clone();
        reads
            .run(&key, None, Some(taker), move || async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(runs.fetch_add(1, Ordering::SeqCst) + 1)
            })
            .await
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_result_is_kept_until_every_object_due_for_it_took_it() {
        let (reads, runs) = setup();
        let due = Arc::new(Due {
            objects: Mutex::new(["o1", "o2", "o3"].map(String::from).into()),
            floor: None,
            asked: AtomicUsize::new(0),
        });
        reads.hold_for(due.clone());
        assert_eq!(take(&reads, &runs, "a", "o1").await, 1);
        // o2 comes 20 s later, far past the idle window: still the same read.
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(take(&reads, &runs, "a", "o2").await, 1);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(take(&reads, &runs, "a", "o3").await, 1);
        assert!(due.asked.load(Ordering::SeqCst) > 0);
        // Everyone took it: dropped one idle window after the last share.
        tokio::time::sleep(Duration::from_secs(5) + Duration::from_millis(1)).await;
        assert_eq!(reads.held(), 0, "not held once no object waits for it");
        assert_eq!(take(&reads, &runs, "a", "o1").await, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_result_waited_for_is_still_dropped_at_the_maximum_age() {
        let (reads, runs) = setup();
        // o2 is due but never comes (its reconcile fails before it reads, say).
        reads.hold_for(Arc::new(Due {
            objects: Mutex::new(["o1", "o2"].map(String::from).into()),
            floor: None,
            asked: AtomicUsize::new(0),
        }));
        assert_eq!(take(&reads, &runs, "a", "o1").await, 1);
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(reads.held(), 1, "held while o2 may still come");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(reads.held(), 0, "never past 60 s after the read started");
        assert_eq!(take(&reads, &runs, "a", "o2").await, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn objects_that_could_not_take_a_result_do_not_hold_it() {
        let (reads, runs) = setup();
        // Due objects whose own last read is newer than any read made now, and a key no
        // one is due for.
        reads.hold_for(Arc::new(Due {
            objects: Mutex::new(["o1", "o2"].map(String::from).into()),
            floor: Some(SystemTime::now() + Duration::from_secs(3600)),
            asked: AtomicUsize::new(0),
        }));
        assert_eq!(take(&reads, &runs, "a", "o1").await, 1);
        assert_eq!(take(&reads, &runs, "b", "o1").await, 2);
        tokio::time::sleep(Duration::from_secs(5) + Duration::from_millis(1)).await;
        assert_eq!(reads.held(), 0);
    }
}
