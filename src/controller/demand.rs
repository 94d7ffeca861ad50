//! Which objects are due for which Key Vault read, from the controller's caches: a shared
//! read is kept while some object due for it has not taken it yet
//! ([`crate::source::single_flight`]), so that N objects over K secrets reconciled in any
//! order cost K reads per wave, not one per object that comes after a window of time.
//!
//! An object is due for the reads of its entries when its first attempt has not happened
//! in this process ([`FirstSyncs`]), or when its status says a read is due now (spec
//! changed, refresh interval over) and its last attempt did not fail (a failing object
//! retries on its own backoff, and would only hold the value), or when a throttle that
//! refused it has lifted and its woken reconcile has not ended yet
//! ([`super::vault_waits`]). A requested refresh or a
//! drift repair reads only Key Vault as it is when it starts, so it never takes a kept
//! read and does not count. Entries pinned to the version already synced are not read.

use super::decide::{self, ReadPlan};
use super::first_syncs::FirstSyncs;
use super::identity_for;
use super::vault_waits::VaultWaits;
use crate::api::VaultSecret;
use crate::source::single_flight::Demand;
use crate::source::{SecretRequest, SecretSource};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

/// How long an index of due objects is reused: every kept read asks at the end of each
/// idle window, and each index walks every cached object.
const INDEX_REUSE: Duration = Duration::from_millis(500);

/// An object due for a read, and the oldest start of a read it takes.
#[derive(Debug, Clone)]
struct Due {
    uid: String,
    floor: Option<Timestamp>,
}

type Index = HashMap<SecretRequest, Vec<Due>>;

/// The objects due for each read, as the controller's VaultSecret caches show them.
pub struct ReadDemand {
    stores: Mutex<Vec<Store<VaultSecret>>>,
    first_syncs: Arc<FirstSyncs>,
    vault_waits: Arc<VaultWaits>,
    /// For the vault URL as the source normalises it (weak: the source holds this demand).
    source: Weak<dyn SecretSource>,
    index: Mutex<Option<(Instant, Arc<Index>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain collections stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ReadDemand {
    pub fn new(
        source: Weak<dyn SecretSource>,
        first_syncs: Arc<FirstSyncs>,
        vault_waits: Arc<VaultWaits>,
    ) -> Self {
        Self {
            stores: Mutex::default(),
            first_syncs,
            vault_waits,
            source,
            index: Mutex::default(),
        }
    }

    /// The controller's VaultSecret caches, one per watched scope.
    pub fn observe(&self, stores: Vec<Store<VaultSecret>>) {
        *lock(&self.stores) = stores;
    }

    fn index(&self) -> Arc<Index> {
        let mut index = lock(&self.index);
        if let Some((at, built)) = index.as_ref()
            && at.elapsed() < INDEX_REUSE
        {
            return built.clone();
        }
        let built = Arc::new(self.build(Timestamp::now()));
        *index = Some((Instant::now(), built.clone()));
        built
    }

    fn build(&self, now: Timestamp) -> Index {
        let mut index = Index::new();
        let Some(source) = self.source.upgrade() else {
            return index;
        };
        let objects: Vec<_> = lock(&self.stores).iter().flat_map(|s| s.state()).collect();
        for vsec in &objects {
            let waits = &self.vault_waits;
            for (request, due) in due_reads(vsec, source.as_ref(), &self.first_syncs, waits, now) {
                index.entry(request).or_default().push(due);
            }
        }
        index
    }
}

/// The reads `vsec` is due for (as [`SecretRequest::read_key`]s), with its uid and the
/// oldest start of a read it takes; none when it is not due.
fn due_reads(
    vsec: &VaultSecret,
    source: &dyn SecretSource,
    first_syncs: &FirstSyncs,
    vault_waits: &VaultWaits,
    now: Timestamp,
) -> Vec<(SecretRequest, Due)> {
    if vsec.meta().deletion_timestamp.is_some() || vsec.spec.suspend {
        return Vec::new();
    }
    let (Some(namespace), Some(uid)) = (vsec.namespace(), vsec.uid()) else {
        return Vec::new();
    };
    let Ok(identity) = identity_for(vsec, &namespace) else {
        return Vec::new();
    };
    let Ok(vault_url) = source.vault_url(&vsec.spec.vault_url) else {
        return Vec::new();
    };
    let Ok(interval) = decide::parse_interval(&vsec.spec.refresh_interval) else {
        return Vec::new();
    };
    let status = vsec.status.clone().unwrap_or_default();
    let last_sync = status.last_sync_time.as_ref().map(|t| t.0);
    let synced =
        decide::synced_this_generation(&status, vsec.meta().generation, &vsec.target_name());
    // Woken by a lifted throttle: it retries its failed read now, with the others woken.
    let woken = vault_waits.is_woken(&uid);
    let cause = if first_syncs.not_attempted(vsec) {
        decide::ReadCause::NotSynced
    } else if decide::previous_failure(&status).is_some() && !woken {
        return Vec::new();
    } else {
        let all_pinned_and_synced = vsec.spec.data.iter().all(|entry| {
            entry.remote_ref.pinned_version().is_some_and(|v| {
                status.synced_versions.get(&entry.key).map(String::as_str) == Some(v)
            })
        });
        let jitter_key = super::jitter_key(vsec, &vault_url, &identity);
        match decide::plan_read(&decide::PlanInput {
            synced_this_generation: synced,
            drift: false,
            refresh_failed: woken,
            refresh_requested: false,
            last_sync,
            interval,
            jitter_key: &jitter_key,
            now,
            all_pinned_and_synced,
        }) {
            ReadPlan::Read(cause) => cause,
            ReadPlan::Wait(_) => return Vec::new(),
        }
    };
    let floor = decide::shared_read_floor(cause, last_sync, interval, now);
    vsec.spec
        .data
        .iter()
        .filter(|entry| {
            // A pinned version already synced is kept, not read.
            !(synced
                && entry.remote_ref.pinned_version().is_some_and(|v| {
                    status.synced_versions.get(&entry.key).map(String::as_str) == Some(v)
                }))
        })
        .map(|entry| {
            let request = SecretRequest {
                vault_url: vault_url.clone(),
                identity: identity.clone(),
                name: entry.remote_ref.name.clone(),
                version: entry.remote_ref.pinned_version().map(str::to_owned),
                fresher_than: None,
                requester: None,
            }
            .read_key();
            (
                request,
                Due {
                    uid: uid.clone(),
                    floor,
                },
            )
        })
        .collect()
}

impl Demand<SecretRequest> for ReadDemand {
    fn waiting(
        &self,
        key: &SecretRequest,
        started_at: SystemTime,
        taken: &HashSet<String>,
    ) -> bool {
        let index = self.index();
        index.get(key).is_some_and(|due| {
            due.iter().any(|d| {
                !taken.contains(&d.uid)
                    && d.floor
                        .is_none_or(|floor| started_at >= SystemTime::from(floor))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VaultSecretStatus;
    use crate::source::{FetchedSecret, IdentityRef, SourceError};
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    struct Vaults;

    #[async_trait::async_trait]
    impl SecretSource for Vaults {
        async fn fetch(&self, _: &SecretRequest) -> Result<Arc<FetchedSecret>, SourceError> {
            unreachable!("never read")
        }
        fn vault_url(&self, spec: &str) -> Result<String, String> {
            Ok(spec.trim_end_matches('/').to_owned())
        }
    }

    fn vsec(name: &str, kv: &str, last_sync: Option<i64>) -> VaultSecret {
        let mut v: VaultSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "vaultsync.io/v1alpha1",
            "kind": "VaultSecret",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "generation": 1},
            "spec": {
                "vaultUrl": "https://v.vault.azure.net/",
                "refreshInterval": "1h",
                "data": [{"key": "k", "remoteRef": {"name": kv}}],
            },
        }))
        .expect("a VaultSecret");
        if let Some(at) = last_sync {
            v.status = Some(decide::synced_status(
                &VaultSecretStatus::default(),
                Some(1),
                name.into(),
                Default::default(),
                None,
                Timestamp::from_second(at).unwrap(),
            ));
        }
        v
    }

    fn key(kv: &str) -> SecretRequest {
        SecretRequest {
            vault_url: "https://v.vault.azure.net".into(),
            identity: IdentityRef::Operator,
            name: kv.into(),
            version: None,
            fresher_than: None,
            requester: None,
        }
        .read_key()
    }

    #[test]
    fn first_syncs_and_due_refreshes_wait_until_they_took_a_read_fresh_enough_for_them() {
        let (store, mut writer) = reflector::store::<VaultSecret>();
        let now = Timestamp::now().as_second();
        for v in [
            vsec("new", "Db", None),
            vsec("due", "db", Some(now - 7200)),
            vsec("fresh", "db", Some(now - 60)),
            vsec("other", "other", Some(now - 60)),
        ] {
            writer.apply_watcher_event(&Event::Apply(v));
        }
        let source: Arc<dyn SecretSource> = Arc::new(Vaults);
        let first_syncs = Arc::new(FirstSyncs::default());
        first_syncs.observe(vec![store.clone()]);
        let demand = ReadDemand::new(Arc::downgrade(&source), first_syncs.clone(), Arc::default());
        demand.observe(vec![store]);
        let started = SystemTime::now();
        let taken = |uids: &[&str]| uids.iter().map(|u| format!("uid-{u}")).collect();
        assert!(demand.waiting(&key("DB"), started, &taken(&[])));
        assert!(demand.waiting(&key("db"), started, &taken(&["new"])));
        assert!(!demand.waiting(&key("db"), started, &taken(&["new", "due"])));
        assert!(
            !demand.waiting(&key("other"), started, &taken(&[])),
            "not due"
        );
        // A read that started before the due object's own last one is no refresh for it.
        let old = SystemTime::from(Timestamp::from_second(now - 7300).unwrap());
        assert!(!demand.waiting(&key("db"), old, &taken(&["new"])));
        // Another identity's read of the same name is another read.
        let other_identity = SecretRequest {
            identity: IdentityRef::ManagedIdentity {
                client_id: "c".into(),
            },
            ..key("db")
        };
        assert!(!demand.waiting(&other_identity, started, &taken(&[])));
        drop(source);
        *lock(&demand.index) = None;
        assert!(
            !demand.waiting(&key("db"), started, &taken(&[])),
            "source gone"
        );
    }
}
