//! The invariant watcher of the fault tests: it watches every managed Secret and every
//! VaultSecret of a scenario's namespaces for the whole scenario and records every version
//! it sees, then checks each recorded version, not only the last one:
//! - a synced key never disappears from its Secret, and the Secret is never deleted;
//! - a synced key is never empty;
//! - a synced key never holds a value Key Vault did not hold for it (the test registers
//!   every value it seeds, with [`Invariants::seeded`]);
//! - `Ready` never says `Synced` for data the Secret does not hold: the Secret's last
//!   version written before that status holds, for every key, the value of the version
//!   the status names in `syncedVersions`;
//! - and, waited for with [`Invariants::converged`], every object ends up holding Key
//!   Vault's current value with `Ready=True`.
//!
//! Ordering Secret and status versions: both are objects of one etcd, and a
//! `resourceVersion` of the real API server is etcd's global revision, so the number says
//! which write came first across objects. Kubernetes calls it opaque to clients that
//! compare it across servers or resources in general; this test environment has exactly
//! one etcd, which makes the comparison exact where wall-clock arrival of two watch
//! streams would not be.
//!
//! Tests that break a rule on purpose (another client editing or deleting a managed
//! Secret) filter the [`Violation`]s they cause out of [`Invariants::violations`].

use super::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vaultsync::api::VaultSecret;

/// The label every Secret the operator manages carries.
const MANAGED_LABEL: &str = "vaultsync.io/managed-by=vaultsync";
/// The annotation naming the VaultSecret (`namespace/name`) a managed Secret comes from.
const SOURCE_ANNOTATION: &str = "vaultsync.io/source";

/// One recorded version of a managed Secret; `data` is `None` for a deletion.
#[derive(Clone)]
struct SecretVersion {
    resource_version: u64,
    source: Option<String>,
    data: Option<BTreeMap<String, Vec<u8>>>,
}

/// One recorded version of a VaultSecret: what its spec maps and what its status says.
#[derive(Clone)]
struct VaultSecretVersion {
    resource_version: u64,
    /// Secret key -> Key Vault secret name (lowercased: Key Vault ignores case), for the
    /// entries that take a whole value (a property or a decoding changes the bytes, so
    /// their values are not checked against the seeded ones).
    keys: BTreeMap<String, String>,
    target: String,
    generation: Option<i64>,
    observed_generation: Option<i64>,
    ready: Option<(String, String)>,
    /// `Refreshed` as (status, reason).
    refreshed: Option<(String, String)>,
    synced_versions: BTreeMap<String, String>,
    /// When the watcher saw this version.
    seen: Instant,
}

/// A broken invariant, naming objects, keys and versions, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A key that a Secret held was missing from a later version of it.
    KeyDisappeared {
        secret: String,
        key: String,
        resource_version: u64,
    },
    /// A managed Secret was deleted.
    Deleted {
        secret: String,
        resource_version: u64,
    },
    /// A synced key held no bytes.
    Empty {
        secret: String,
        key: String,
        resource_version: u64,
    },
    /// A key held bytes that Key Vault never held for its secret (as far as the test
    /// registered its seeds).
    ForeignValue {
        secret: String,
        key: String,
        resource_version: u64,
    },
    /// A status said `Ready=True, Synced` while the Secret's last version before it did
    /// not hold the named versions' values (or did not exist).
    ReadyWithoutData {
        vault_secret: String,
        key: String,
        resource_version: u64,
        why: String,
    },
}

#[derive(Default)]
struct Record {
    /// `namespace/name` of a Secret -> its versions in arrival order.
    secrets: BTreeMap<String, Vec<SecretVersion>>,
    /// `namespace/name` of a VaultSecret -> its versions in arrival order.
    vault_secrets: BTreeMap<String, Vec<VaultSecretVersion>>,
    /// Lowercased Key Vault name -> every value seeded, by version id, in seeding order.
    seeded: HashMap<String, Vec<(String, Vec<u8>)>>,
}

/// Watches a scenario's namespaces from [`Invariants::start`] until dropped.
pub struct Invariants {
    record: Arc<Mutex<Record>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

fn rv(meta: &kube::api::ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn key_of(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

fn secret_version(secret: &Secret, deleted: bool) -> SecretVersion {
    SecretVersion {
        resource_version: rv(&secret.metadata),
        source: secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE_ANNOTATION))
            .cloned(),
        data: (!deleted).then(|| {
            secret
                .data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        }),
    }
}

fn vault_secret_version(vsec: &VaultSecret) -> VaultSecretVersion {
    let keys = vsec
        .spec
        .data
        .iter()
        .filter(|d| {
            d.remote_ref
                .property
                .as_deref()
                .unwrap_or_default()
                .is_empty()
                && d.remote_ref.decoding == vaultsync::api::Decoding::None
        })
        .map(|d| (d.key.clone(), d.remote_ref.name.to_ascii_lowercase()))
        .collect();
    let status = vsec.status.as_ref();
    VaultSecretVersion {
        resource_version: rv(&vsec.metadata),
        keys,
        target: vsec
            .spec
            .target
            .name
            .clone()
            .or_else(|| vsec.metadata.name.clone())
            .unwrap_or_default(),
        generation: vsec.metadata.generation,
        observed_generation: status.and_then(|s| s.observed_generation),
        ready: vsec
            .ready_condition()
            .map(|c| (c.status.clone(), c.reason.clone())),
        synced_versions: status
            .map(|s| s.synced_versions.clone())
            .unwrap_or_default(),
        refreshed: status
            .and_then(|s| s.refreshed_condition())
            .map(|c| (c.status.clone(), c.reason.clone())),
        seen: Instant::now(),
    }
}

impl Invariants {
    /// Starts watching managed Secrets and VaultSecrets in `namespaces`, and returns once
    /// every watch has listed its namespace (so nothing written afterwards is missed).
    pub async fn start(client: &Client, namespaces: &[&str]) -> Self {
        let record = Arc::new(Mutex::new(Record::default()));
        let mut tasks = Vec::new();
        let mut ready = Vec::new();
        for ns in namespaces {
            let (tx, rx) = tokio::sync::oneshot::channel();
            ready.push(rx);
            let secrets = Api::<Secret>::namespaced(client.clone(), ns);
            let secret_record = record.clone();
            tasks.push(tokio::spawn(async move {
                let config = watcher::Config::default().labels(MANAGED_LABEL);
                let mut stream = watcher::watcher(secrets, config).boxed();
                let mut tx = Some(tx);
                while let Some(event) = stream.next().await {
                    let Ok(event) = event else {
                        // The watcher retries on its own (an API server restart, say).
                        continue;
                    };
                    let mut r = secret_record.lock().unwrap();
                    match event {
                        watcher::Event::Apply(s) | watcher::Event::InitApply(s) => r
                            .secrets
                            .entry(key_of(&s.metadata))
                            .or_default()
                            .push(secret_version(&s, false)),
                        watcher::Event::Delete(s) => r
                            .secrets
                            .entry(key_of(&s.metadata))
                            .or_default()
                            .push(secret_version(&s, true)),
                        watcher::Event::InitDone => {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        watcher::Event::Init => {}
                    }
                }
            }));
            let (tx, rx) = tokio::sync::oneshot::channel();
            ready.push(rx);
            let vsecs = Api::<VaultSecret>::namespaced(client.clone(), ns);
            let status_record = record.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = watcher::watcher(vsecs, watcher::Config::default()).boxed();
                let mut tx = Some(tx);
                while let Some(event) = stream.next().await {
                    let Ok(event) = event else {
                        continue;
                    };
                    let mut r = status_record.lock().unwrap();
                    match event {
                        watcher::Event::Apply(v) | watcher::Event::InitApply(v) => r
                            .vault_secrets
                            .entry(key_of(&v.metadata))
                            .or_default()
                            .push(vault_secret_version(&v)),
                        watcher::Event::InitDone => {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        watcher::Event::Delete(_) | watcher::Event::Init => {}
                    }
                }
            }));
        }
        for rx in ready {
            tokio::time::timeout(Duration::from_secs(60), rx)
                .await
                .expect("the invariant watcher listed its namespaces")
                .expect("the invariant watcher kept running");
        }
        Self {
            record,
            tasks,
            started: Instant::now(),
        }
    }

    /// Registers that Key Vault held `value` as version `version` of `name`.
    pub fn seeded(&self, name: &str, version: &str, value: &str) {
        self.record
            .lock()
            .unwrap()
            .seeded
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push((version.to_owned(), value.as_bytes().to_vec()));
    }

    /// Sets a new version of `name` in `vault` and registers it; returns the version id.
    pub async fn seed(&self, vault: &keyvault::KeyVault, name: &str, value: &str) -> String {
        let version = vault.set(name, value).await;
        self.seeded(name, &version, value);
        version
    }

    /// How many versions were recorded so far: (Secret versions, VaultSecret versions).
    pub fn recorded(&self) -> (usize, usize) {
        let r = self.record.lock().unwrap();
        (
            r.secrets.values().map(Vec::len).sum(),
            r.vault_secrets.values().map(Vec::len).sum(),
        )
    }

    /// Every broken invariant over everything recorded so far.
    pub fn violations(&self) -> Vec<Violation> {
        let r = self.record.lock().unwrap();
        let mut found = Vec::new();
        for (secret, versions) in &r.secrets {
            check_secret(&r, secret, versions, &mut found);
        }
        for (vault_secret, versions) in &r.vault_secrets {
            check_ready(&r, vault_secret, versions, &mut found);
        }
        found
    }

    /// Panics with every broken invariant, if any.
    pub fn assert_held(&self) {
        let found = self.violations();
        let (secrets, statuses) = self.recorded();
        assert!(
            found.is_empty(),
            "{} invariant violations over {secrets} Secret and {statuses} VaultSecret versions: {found:#?}",
            found.len()
        );
    }

    /// Waits until `expected` VaultSecrets are recorded, each `Ready=True` for its current
    /// generation with `syncedVersions` naming the latest seeded version of each of its Key
    /// Vault secrets, and each Secret's latest version holding those versions' values.
    /// Returns the time it took from the call. The bound only keeps a broken run from
    /// hanging; it asserts nothing about speed.
    pub async fn converged(&self, expected: usize) -> Duration {
        let since = Instant::now();
        let mut last = String::new();
        for _ in 0..2400 {
            match self.unconverged(expected) {
                None => return since.elapsed(),
                Some(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("not converged: {last}");
    }

    /// The `Ready` condition's `(status, reason)` of VaultSecret `vault_secret`
    /// (`namespace/name`) each time it changed, in the order recorded.
    pub fn ready_history(&self, vault_secret: &str) -> Vec<(String, String)> {
        let r = self.record.lock().unwrap();
        let mut out: Vec<(String, String)> = Vec::new();
        for ready in r
            .vault_secrets
            .get(vault_secret)
            .into_iter()
            .flatten()
            .filter_map(|v| v.ready.clone())
        {
            if out.last() != Some(&ready) {
                out.push(ready);
            }
        }
        out
    }

    /// How many VaultSecret versions seen at or after `since` had `Ready` or `Refreshed`
    /// with `reason`.
    pub fn statuses_with_reason_since(&self, reason: &str, since: Instant) -> usize {
        let r = self.record.lock().unwrap();
        r.vault_secrets
            .values()
            .flatten()
            .filter(|v| v.seen >= since)
            .filter(|v| {
                [&v.ready, &v.refreshed]
                    .iter()
                    .any(|c| c.as_ref().is_some_and(|(_, r)| r == reason))
            })
            .count()
    }

    /// Time since the watcher started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Why the scenario has not converged yet (the first object found), or `None`.
    fn unconverged(&self, expected: usize) -> Option<String> {
        let r = self.record.lock().unwrap();
        let mut pending = 0;
        let mut first = None;
        for (name, versions) in &r.vault_secrets {
            let Some(v) = versions.last() else { continue };
            let why = unconverged_object(&r, name, v);
            if let Some(why) = why {
                pending += 1;
                first.get_or_insert(why);
            }
        }
        let seen = r.vault_secrets.len();
        if seen < expected {
            return Some(format!("{seen} of {expected} VaultSecrets seen"));
        }
        first.map(|why| format!("{pending} of {seen} objects pending; first: {why}"))
    }
}

impl Drop for Invariants {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn namespace_of(object: &str) -> &str {
    object.split_once('/').map_or("", |(ns, _)| ns)
}

fn value_of<'a>(r: &'a Record, kv_name: &str, version: &str) -> Option<&'a [u8]> {
    r.seeded
        .get(kv_name)?
        .iter()
        .find(|(v, _)| v == version)
        .map(|(_, value)| value.as_slice())
}

fn unconverged_object(r: &Record, name: &str, v: &VaultSecretVersion) -> Option<String> {
    if v.ready != Some(("True".into(), "Synced".into())) || v.observed_generation != v.generation {
        return Some(format!("{name}: Ready is {:?}", v.ready));
    }
    let secret = format!("{}/{}", namespace_of(name), v.target);
    let data = r
        .secrets
        .get(&secret)
        .and_then(|versions| versions.last())
        .and_then(|s| s.data.as_ref());
    for (key, kv_name) in &v.keys {
        let Some((current, value)) = r.seeded.get(kv_name).and_then(|s| s.last()) else {
            return Some(format!("{name}: nothing seeded for {kv_name}"));
        };
        if v.synced_versions.get(key) != Some(current) {
            return Some(format!(
                "{name}: {key} synced at {:?}",
                v.synced_versions.get(key)
            ));
        }
        if data.and_then(|d| d.get(key)) != Some(value) {
            return Some(format!(
                "{secret}: {key} does not hold version {current} yet"
            ));
        }
    }
    None
}

/// The Key Vault secret behind `key` of a Secret, from its VaultSecret's latest spec.
fn kv_name_of(r: &Record, source: Option<&str>, key: &str) -> Option<String> {
    r.vault_secrets.get(source?)?.last()?.keys.get(key).cloned()
}

fn check_secret(r: &Record, secret: &str, versions: &[SecretVersion], found: &mut Vec<Violation>) {
    let mut held: Vec<String> = Vec::new();
    for v in versions {
        let Some(data) = &v.data else {
            found.push(Violation::Deleted {
                secret: secret.to_owned(),
                resource_version: v.resource_version,
            });
            held.clear();
            continue;
        };
        for key in &held {
            if !data.contains_key(key) {
                found.push(Violation::KeyDisappeared {
                    secret: secret.to_owned(),
                    key: key.clone(),
                    resource_version: v.resource_version,
                });
            }
        }
        for (key, bytes) in data {
            let Some(kv_name) = kv_name_of(r, v.source.as_deref(), key) else {
                // A key no VaultSecret entry maps to a whole value (another manager's,
                // or one a property or decoding makes): not ours to judge.
                continue;
            };
            if !held.contains(key) {
                held.push(key.clone());
            }
            if bytes.is_empty() {
                found.push(Violation::Empty {
                    secret: secret.to_owned(),
                    key: key.clone(),
                    resource_version: v.resource_version,
                });
            } else if !r
                .seeded
                .get(&kv_name)
                .is_some_and(|s| s.iter().any(|(_, value)| value == bytes))
            {
                found.push(Violation::ForeignValue {
                    secret: secret.to_owned(),
                    key: key.clone(),
                    resource_version: v.resource_version,
                });
            }
        }
    }
}

fn check_ready(
    r: &Record,
    vault_secret: &str,
    versions: &[VaultSecretVersion],
    found: &mut Vec<Violation>,
) {
    let mut previous: Option<&VaultSecretVersion> = None;
    for v in versions {
        // Only a status write claims anything: a version whose status is the previous
        // one's (a metadata or spec edit by someone else) may land between the operator's
        // Secret write and its status write.
        let claims = previous.is_none_or(|p| {
            p.ready != v.ready
                || p.synced_versions != v.synced_versions
                || p.observed_generation != v.observed_generation
        });
        previous = Some(v);
        if !claims
            || v.ready != Some(("True".into(), "Synced".into()))
            || v.observed_generation != v.generation
        {
            continue;
        }
        let secret = format!("{}/{}", namespace_of(vault_secret), v.target);
        // The Secret as it stood when this status was written: its last version before.
        let before = r.secrets.get(&secret).and_then(|versions| {
            versions
                .iter()
                .filter(|s| s.resource_version < v.resource_version)
                .max_by_key(|s| s.resource_version)
        });
        for (key, kv_name) in &v.keys {
            let mut fail = |why: String| {
                found.push(Violation::ReadyWithoutData {
                    vault_secret: vault_secret.to_owned(),
                    key: key.clone(),
                    resource_version: v.resource_version,
                    why,
                })
            };
            let Some(version) = v.synced_versions.get(key) else {
                fail("no synced version named".into());
                continue;
            };
            let Some(expected) = value_of(r, kv_name, version) else {
                fail(format!("version {version} of {kv_name} was never seeded"));
                continue;
            };
            match before.and_then(|s| s.data.as_ref()) {
                None => fail(format!("{secret} did not exist")),
                Some(data) if data.get(key).map(Vec::as_slice) != Some(expected) => fail(format!(
                    "{secret} did not hold version {version} (at resourceVersion {})",
                    before.map_or(0, |s| s.resource_version)
                )),
                Some(_) => {}
            }
        }
    }
}
