//! Objects that never synced go before due refreshes. After a restart, or when many
//! VaultSecrets are created at once, the controller's queue holds every object in no
//! particular order (its pending set is a hash set); a due refresh of a Secret that already
//! holds its data waits while some object has had no attempt at all yet, so a new object,
//! whose pods may be waiting for their Secret, is not queued behind hundreds of refreshes
//! that could as well come a few seconds later.

use crate::api::VaultSecret;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a due refresh waits before it looks again whether first syncs are still
/// waiting: short, since a first attempt takes about one Key Vault read.
pub const REFRESH_WAIT: Duration = Duration::from_secs(1);

/// How long a count of waiting objects is reused: a refresh wave asks once per due object,
/// and each count walks every cached object.
const COUNT_REUSE: Duration = Duration::from_millis(200);

/// The objects still waiting for their first attempt, as the controller's caches show them.
#[derive(Debug, Default)]
pub struct FirstSyncs {
    stores: Mutex<Vec<Store<VaultSecret>>>,
    /// The last count and when it was made.
    counted: Mutex<Option<(Instant, usize)>>,
    /// Uids of objects without a status whose first reconcile ended in this process (its
    /// status may not be in the cache yet, or it could not be written).
    attempted: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain collections stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `vsec` never had a status report: no `Ready` condition at all.
pub fn never_reported(vsec: &VaultSecret) -> bool {
    vsec.status
        .as_ref()
        .and_then(|s| s.ready_condition())
        .is_none()
}

impl FirstSyncs {
    /// The controller's VaultSecret caches, one per watched scope.
    pub fn observe(&self, stores: Vec<Store<VaultSecret>>) {
        *lock(&self.stores) = stores;
    }

    /// Records that the first reconcile of `vsec` (one that had no status) ended, however
    /// it ended: it no longer holds refreshes back, even if it failed before any status
    /// could be written.
    pub fn attempted(&self, vsec: &VaultSecret) {
        if let Some(uid) = vsec.uid() {
            lock(&self.attempted).insert(uid);
        }
    }

    /// Whether `vsec` has had no attempt yet: no status, not being deleted, and no first
    /// reconcile ended in this process.
    pub fn not_attempted(&self, vsec: &VaultSecret) -> bool {
        never_reported(vsec)
            && vsec.metadata.deletion_timestamp.is_none()
            && vsec
                .uid()
                .is_none_or(|uid| !lock(&self.attempted).contains(&uid))
    }

    /// How many objects have had no attempt yet: no status in the cache, not being
    /// deleted, and no first reconcile ended in this process. Attempted objects that
    /// have a status by now, or are gone, are forgotten on the way.
    pub fn waiting(&self) -> usize {
        let mut counted = lock(&self.counted);
        if let Some((at, n)) = *counted
            && at.elapsed() < COUNT_REUSE
        {
            return n;
        }
        let n = self.count();
        *counted = Some((Instant::now(), n));
        n
    }

    fn count(&self) -> usize {
        let objects: Vec<_> = lock(&self.stores).iter().flat_map(|s| s.state()).collect();
        let mut attempted = lock(&self.attempted);
        let mut still_unreported = HashSet::new();
        let mut waiting = 0;
        for vsec in objects
            .iter()
            .filter(|v| never_reported(v) && v.metadata.deletion_timestamp.is_none())
        {
            let uid = vsec.uid().unwrap_or_default();
            if attempted.contains(&uid) {
                still_unreported.insert(uid);
            } else {
                waiting += 1;
            }
        }
        attempted.retain(|uid| still_unreported.contains(uid));
        waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VaultSecretStatus;
    use crate::controller::decide;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn vsec(name: &str, synced: bool) -> VaultSecret {
        let mut v: VaultSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "vaultsync.io/v1alpha1",
            "kind": "VaultSecret",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"vaultUrl": "https://v.vault.azure.net", "data": []},
        }))
        .expect("a VaultSecret");
        if synced {
            let now = k8s_openapi::jiff::Timestamp::from_second(1).unwrap();
            v.status = Some(decide::synced_status(
                &VaultSecretStatus::default(),
                Some(1),
                name.into(),
                Default::default(),
                None,
                now,
            ));
        }
        v
    }

    #[test]
    fn objects_without_a_status_wait_until_their_first_attempt_ends() {
        let (store, mut writer) = reflector::store::<VaultSecret>();
        for v in [
            vsec("old", true),
            vsec("new-1", false),
            vsec("new-2", false),
        ] {
            writer.apply_watcher_event(&Event::Apply(v));
        }
        let first = FirstSyncs::default();
        assert_eq!(first.count(), 0, "no caches observed yet");
        first.observe(vec![store]);
        assert_eq!(first.count(), 2);
        assert!(never_reported(&vsec("new-1", false)));
        assert!(!never_reported(&vsec("old", true)));
        // Its first reconcile ended (its status may not be in the cache yet).
        first.attempted(&vsec("new-1", false));
        assert_eq!(first.count(), 1);
        // Its status reached the cache: forgotten, and still not waiting.
        writer.apply_watcher_event(&Event::Apply(vsec("new-1", true)));
        assert_eq!(first.count(), 1);
        assert!(lock(&first.attempted).is_empty());
        // Deleted before any attempt: not waited for.
        writer.apply_watcher_event(&Event::Delete(vsec("new-2", false)));
        assert_eq!(first.count(), 0);
    }
}
