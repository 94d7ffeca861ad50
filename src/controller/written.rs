//! The statuses this operator wrote, kept until the watch cache shows them, the versions
//! it announced, kept until a status write says them, and the Secrets it wrote, kept until
//! their watch event arrives.
//!
//! A reconcile that follows a status write closely (the Secret it just wrote triggers the
//! next one) can see the VaultSecret from the watch cache as it was before that write:
//! no `Ready` condition for this generation, the old `syncedVersions`. Deciding on that
//! stale status would read Key Vault again and announce a rotation twice. The operator is
//! the only writer of its VaultSecrets' status (one leader at a time), so the status it
//! last wrote is the status on the server; it is used until the cache catches up.

use crate::api::{VaultSecret, VaultSecretStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a written status is kept at most: far longer than a watch event takes to
/// arrive, short enough that statuses of deleted VaultSecrets do not pile up.
const KEEP: Duration = Duration::from_secs(600);
/// Expired entries are swept only once the map holds this many, so a sweep stays rare.
const SWEEP_ABOVE: usize = 1024;

/// Written statuses by VaultSecret uid.
#[derive(Debug, Default)]
pub struct WrittenStatuses {
    by_uid: Mutex<HashMap<String, (VaultSecretStatus, Instant)>>,
}

impl WrittenStatuses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (VaultSecretStatus, Instant)>> {
        // A panic while holding the lock leaves a plain map behind, still consistent.
        self.by_uid
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current status of `vsec`: the one last written when the cached object does not
    /// show it yet, otherwise the cached object's (and the written one is forgotten).
    pub fn current(&self, vsec: &VaultSecret) -> VaultSecretStatus {
        let cached = vsec.status.clone().unwrap_or_default();
        let Some(uid) = vsec.uid() else {
            return cached;
        };
        let mut by_uid = self.lock();
        match by_uid.get(&uid) {
            Some((written, at)) if *written != cached && at.elapsed() < KEEP => written.clone(),
            Some(_) => {
                by_uid.remove(&uid);
                cached
            }
            None => cached,
        }
    }

    /// Records the status just written for `vsec`.
    pub fn record(&self, vsec: &VaultSecret, status: VaultSecretStatus) {
        let Some(uid) = vsec.uid() else { return };
        let mut by_uid = self.lock();
        if by_uid.len() >= SWEEP_ABOVE {
            by_uid.retain(|_, (_, at)| at.elapsed() < KEEP);
        }
        by_uid.insert(uid, (status, Instant::now()));
    }
}

/// Key Vault versions announced (`Synced` or `Rotated` Event) whose status write has not
/// succeeded yet, by VaultSecret uid.
///
/// A rotation is announced from the difference between the status's `syncedVersions` and
/// the versions just read, before the status is written. When that status write fails (an
/// API server or etcd outage), the next attempt still sees the old versions in status and
/// would announce the same rotation again; this remembers what was announced until a status
/// write succeeds. An announcement whose Event could not be published is not remembered, so
/// it is made again; only a process killed between its Event and its status write can
/// announce twice.
#[derive(Debug, Default)]
pub struct AnnouncedVersions {
    by_uid: Mutex<HashMap<String, (Versions, Instant)>>,
}

/// Key Vault version id per Secret key.
type Versions = BTreeMap<String, String>;

impl AnnouncedVersions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Versions, Instant)>> {
        // A panic while holding the lock leaves a plain map behind, still consistent.
        self.by_uid
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether exactly `versions` were announced for `vsec` since its last status write.
    pub fn already(&self, vsec: &VaultSecret, versions: &BTreeMap<String, String>) -> bool {
        let Some(uid) = vsec.uid() else { return false };
        self.lock()
            .get(&uid)
            .is_some_and(|(announced, at)| announced == versions && at.elapsed() < KEEP)
    }

    /// Records that `versions` were announced for `vsec`.
    pub fn record(&self, vsec: &VaultSecret, versions: &BTreeMap<String, String>) {
        let Some(uid) = vsec.uid() else { return };
        let mut by_uid = self.lock();
        if by_uid.len() >= SWEEP_ABOVE {
            by_uid.retain(|_, (_, at)| at.elapsed() < KEEP);
        }
        by_uid.insert(uid, (versions.clone(), Instant::now()));
    }

    /// The status naming the announced versions is written: the status says it from now on.
    pub fn settled(&self, vsec: &VaultSecret) {
        if let Some(uid) = vsec.uid() {
            self.lock().remove(&uid);
        }
    }
}

/// Secrets this operator just created or applied, by namespace and name, with the
/// `resourceVersion` the API server answered, kept until the watch event of that version
/// arrives.
///
/// Every Secret write comes back as a watch event of the managed Secrets, which would
/// reconcile its writer again at once only to find the Secret as it was just written: a
/// Secret GET per object and per write (a second reconcile for each of 5,000 objects on a
/// cold start). The event of a version this operator wrote is its own echo and starts no
/// reconcile; any later change has another `resourceVersion` (the API server bumps it on
/// every write) and does. An event that overtakes the write's answer is not recognised
/// and reconciles as before, which costs a GET and nothing else.
///
/// The caller filters only Secrets with one writer: on a Secret several VaultSecrets write
/// (`Merge`), one writer's write may change what another holds.
#[derive(Debug, Default)]
pub struct OwnSecretWrites {
    by_secret: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl OwnSecretWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (String, Instant)>> {
        // A panic while holding the lock leaves a plain map behind, still consistent.
        self.by_secret
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the Secret as the API server answered a write of it (its namespace, name and
    /// `resourceVersion`); a Secret without them is not recorded.
    pub fn record(&self, secret: &ObjectMeta) {
        let (Some(namespace), Some(name), Some(version)) = (
            secret.namespace.clone(),
            secret.name.clone(),
            secret.resource_version.clone(),
        ) else {
            return;
        };
        let mut by_secret = self.lock();
        if by_secret.len() >= SWEEP_ABOVE {
            // Echoes that never came (the watch restarted meanwhile): forgotten.
            by_secret.retain(|_, (_, at)| at.elapsed() < KEEP);
        }
        by_secret.insert((namespace, name), (version, Instant::now()));
    }

    /// Whether the watched Secret is the version this operator wrote last (its own echo);
    /// the record is then forgotten, so the same version seen again (a relist) reconciles.
    pub fn is_echo(&self, secret: &ObjectMeta) -> bool {
        let (Some(namespace), Some(name), Some(version)) = (
            secret.namespace.as_ref(),
            secret.name.as_ref(),
            secret.resource_version.as_ref(),
        ) else {
            return false;
        };
        let mut by_secret = self.lock();
        let key = (namespace.clone(), name.clone());
        match by_secret.get(&key) {
            Some((written, _)) if written == version => {
                by_secret.remove(&key);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn vsec(status: Option<VaultSecretStatus>) -> VaultSecret {
        let mut v: VaultSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "vaultsync.io/v1alpha1",
            "kind": "VaultSecret",
            "metadata": {"name": "app"},
            "spec": {"vaultUrl": "https://v.vault.azure.net", "data": []},
        }))
        .expect("a VaultSecret");
        v.metadata.uid = Some("uid-1".into());
        v.status = status;
        v
    }

    fn status(name: &str) -> VaultSecretStatus {
        VaultSecretStatus {
            secret_name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_stale_cache_gives_the_written_status_until_it_catches_up() {
        let written = WrittenStatuses::default();
        assert_eq!(written.current(&vsec(None)), VaultSecretStatus::default());
        written.record(&vsec(None), status("new"));
        assert_eq!(
            written.current(&vsec(None)),
            status("new"),
            "cache is stale"
        );
        assert_eq!(written.current(&vsec(Some(status("new")))), status("new"));
        // Caught up: forgotten, so the cached object is what counts from now on.
        assert_eq!(
            written.current(&vsec(Some(status("other")))),
            status("other")
        );
    }

    #[test]
    fn announced_versions_are_remembered_until_the_status_is_written() {
        let announced = AnnouncedVersions::default();
        let v1 = BTreeMap::from([("k".to_owned(), "v1".to_owned())]);
        let v2 = BTreeMap::from([("k".to_owned(), "v2".to_owned())]);
        assert!(!announced.already(&vsec(None), &v1));
        announced.record(&vsec(None), &v1);
        assert!(
            announced.already(&vsec(None), &v1),
            "status write failed: not again"
        );
        assert!(
            !announced.already(&vsec(None), &v2),
            "another rotation is news"
        );
        announced.settled(&vsec(None));
        assert!(!announced.already(&vsec(None), &v1));
    }

    fn secret(name: &str, version: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some("team".into()),
            name: Some(name.into()),
            resource_version: Some(version.into()),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_version_written_last_is_an_echo_and_only_once() {
        let own = OwnSecretWrites::default();
        assert!(!own.is_echo(&secret("app", "10")), "nothing written yet");
        own.record(&secret("app", "10"));
        assert!(!own.is_echo(&secret("other", "10")), "another Secret");
        assert!(!own.is_echo(&secret("app", "9")), "an older version");
        assert!(own.is_echo(&secret("app", "10")));
        assert!(!own.is_echo(&secret("app", "10")), "seen again: a relist");
        own.record(&secret("app", "11"));
        own.record(&secret("app", "12"));
        assert!(
            !own.is_echo(&secret("app", "11")),
            "overwritten by a later write"
        );
        assert!(own.is_echo(&secret("app", "12")));
        own.record(&ObjectMeta::default());
        assert!(
            own.lock().is_empty(),
            "a Secret with no version is not recorded"
        );
    }
}
