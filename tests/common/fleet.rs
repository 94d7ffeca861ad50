//! A fleet for the fault matrix: many VaultSecrets of one namespace over a handful of Key
//! Vault secrets, rotated in Key Vault and refreshed on request, with the questions every
//! row asks of it: has every object converged to Key Vault's current value, how many Key
//! Vault reads did it cost (the gateway's counts), and how many Events were published.
//! Every Secret and VaultSecret version of the fleet's namespace is recorded by the
//! invariant watcher ([`Fleet::invariants`]), which knows every value the fleet seeds.
//! Figures go to the test output through [`report`].

use super::invariants::Invariants;
use super::keyvault::KeyVault;
use super::operator::*;
use super::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};
use vaultsync::api::VaultSecret;

/// The Secret key every fleet object writes.
pub const KEY: &str = "value";

/// Writes one row's figures to the test output. Straight to the process's stderr, not
/// through `eprintln!`, so that the figures show in `make test`'s output for passing tests
/// too (the test harness captures only the print macros).
pub fn report(row: &str, figures: &str) {
    let _ = writeln!(std::io::stderr(), "figures: {row}: {figures}");
}

/// `n` VaultSecrets `{prefix}-{i}` reading Key Vault secret `kv_names[i % k]` as key
/// [`KEY`], and what Key Vault currently holds for each secret.
pub struct Fleet {
    pub namespace: String,
    pub vsecs: Api<VaultSecret>,
    pub secrets: Api<Secret>,
    pub prefix: String,
    pub n: usize,
    pub kv_names: Vec<String>,
    /// Key Vault's current `(value, version)` per secret name.
    pub current: BTreeMap<String, (String, String)>,
    /// The invariant watcher of the fleet's namespace, started before anything is seeded
    /// or synced; each value seeded is registered with it.
    pub invariants: Invariants,
    rotations: usize,
    refresh_interval: String,
}

impl Fleet {
    /// Seeds `k` Key Vault secrets and creates `n` VaultSecrets over them, with
    /// `refresh_interval`. The objects are created, not yet synced.
    pub async fn create(
        s: &Setup,
        prefix: &str,
        n: usize,
        k: usize,
        refresh_interval: &str,
    ) -> Self {
        let kv_prefix = unique(prefix);
        let kv_names: Vec<String> = (0..k).map(|i| format!("{kv_prefix}-{i}")).collect();
        let invariants = Invariants::start(&s.client, &[&s.ns.name]).await;
        let mut fleet = Self {
            namespace: s.ns.name.clone(),
            vsecs: s.vsecs.clone(),
            secrets: s.secrets.clone(),
            prefix: prefix.to_owned(),
            n,
            kv_names,
            current: BTreeMap::new(),
            invariants,
            rotations: 0,
            refresh_interval: refresh_interval.to_owned(),
        };
        fleet.rotate().await;
        fleet.create_objects(0..n).await;
        fleet
    }

    /// Creates `more` VaultSecrets after the fleet's last one, over the same Key Vault
    /// secrets (new objects for a first sync while the others are synced).
    pub async fn grow(&mut self, more: usize) {
        let from = self.n;
        self.n += more;
        self.create_objects(from..self.n).await;
    }

    async fn create_objects(&self, range: std::ops::Range<usize>) {
        let vault_url = env("VAULTSYNC_TEST_VAULT_URL");
        let objects: Vec<_> = range
            .map(|i| {
                vault_secret(
                    &self.name(i),
                    json!({
                        "vaultUrl": vault_url,
                        "refreshInterval": self.refresh_interval,
                        "data": [{"key": KEY, "remoteRef": {"name": self.kv_of(i)}}],
                    }),
                )
            })
            .collect();
        let api = &self.vsecs;
        futures::stream::iter(objects)
            .for_each_concurrent(16, |vsec| async move {
                api.create(&PostParams::default(), &vsec)
                    .await
                    .expect("create a fleet VaultSecret");
            })
            .await;
    }

    pub fn name(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    pub fn kv_of(&self, i: usize) -> &str {
        &self.kv_names[i % self.kv_names.len()]
    }

    /// Sets a new version of every Key Vault secret of the fleet, with a value of its own.
    pub async fn rotate(&mut self) {
        self.rotations += 1;
        let vault = KeyVault::first();
        for name in &self.kv_names {
            let value = format!("{}-{}", unique("fleet-value"), self.rotations);
            let version = self.invariants.seed(&vault, name, &value).await;
            self.current.insert(name.clone(), (value, version));
        }
    }

    /// Asks for a refresh of every object (`vaultsync.io/refresh`), as a user would after a
    /// rotation, so that the rotation reaches every object now rather than at its interval.
    pub async fn request_refresh(&self) {
        let request = unique("refresh");
        let api = &self.vsecs;
        let patch = json!({"metadata": {"annotations": {"vaultsync.io/refresh": request}}});
        futures::stream::iter(0..self.n)
            .for_each_concurrent(16, |i| {
                let patch = patch.clone();
                async move {
                    api.patch(
                        &self.name(i),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .expect("request a refresh");
                }
            })
            .await;
    }

    /// Rotates (see [`Fleet::rotate`]), asks every object for a refresh and waits until the
    /// rotation has reached at least one object, the moment a fault is injected mid-rotation.
    /// Returns how many objects had converged then.
    pub async fn rotate_until_one_converged(&mut self) -> usize {
        self.rotate().await;
        self.request_refresh().await;
        for _ in 0..2400 {
            let rotated = self.converged().await;
            if rotated > 0 {
                return rotated;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the rotation reached no object");
    }

    /// How many objects are converged now: `Ready=True` for their generation, `syncedVersions`
    /// naming Key Vault's current version, and the Secret holding Key Vault's current value.
    pub async fn converged(&self) -> usize {
        let vsecs = self.vsecs.list(&ListParams::default()).await;
        let secrets = self.secrets.list(&ListParams::default()).await;
        let (Ok(vsecs), Ok(secrets)) = (vsecs, secrets) else {
            // The API server may be down in the middle of a fault.
            return 0;
        };
        let data: BTreeMap<String, Option<Vec<u8>>> = secrets
            .items
            .into_iter()
            .map(|s| {
                let value = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get(KEY))
                    .map(|b| b.0.clone());
                (s.metadata.name.unwrap_or_default(), value)
            })
            .collect();
        let by_name: BTreeMap<String, VaultSecret> = vsecs
            .items
            .into_iter()
            .map(|v| (v.metadata.name.clone().unwrap_or_default(), v))
            .collect();
        (0..self.n)
            .filter(|&i| {
                let name = self.name(i);
                let Some(vsec) = by_name.get(&name) else {
                    return false;
                };
                let (value, version) = &self.current[self.kv_of(i)];
                let status = vsec.status.as_ref();
                let ready = vsec.ready_condition().is_some_and(|c| {
                    c.status == "True" && c.observed_generation == vsec.metadata.generation
                });
                ready
                    && status.and_then(|s| s.synced_versions.get(KEY)) == Some(version)
                    && data.get(&name).cloned().flatten().as_deref() == Some(value.as_bytes())
            })
            .count()
    }

    /// Waits until every object has converged (see [`Fleet::converged`]) and returns how long
    /// it took, for the report. The bound keeps a broken run from hanging; it asserts
    /// nothing about speed.
    pub async fn wait_converged(&self, what: &str) -> Duration {
        let started = Instant::now();
        let mut last = 0;
        for _ in 0..1200 {
            last = self.converged().await;
            if last == self.n {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{what}: only {last} of {} objects converged", self.n);
    }

    /// Authorized Key Vault GETs of the fleet's secrets, as the gateway counts them.
    pub async fn reads(&self, doubles: &Doubles) -> u64 {
        reads_of(doubles, &self.kv_names).await
    }

    /// Events about the fleet's objects: per `(type, reason)`, the Event objects and the
    /// occurrences (an Event series counts each repeat).
    pub async fn events(&self, client: &Client) -> BTreeMap<(String, String), (usize, i64)> {
        events_with_prefix(client, &self.namespace, &format!("{}-", self.prefix)).await
    }

    /// Warning occurrences per fleet object (see [`warnings_per_object`]).
    pub async fn warnings_per_object(&self, client: &Client) -> BTreeMap<String, i64> {
        warnings_per_object(client, &self.namespace, &format!("{}-", self.prefix)).await
    }
}

/// Authorized Key Vault GETs of `names`, in any spelling, as the gateway counts them.
pub async fn reads_of(doubles: &Doubles, names: &[String]) -> u64 {
    let mut reads = 0;
    for name in names {
        reads += doubles.authorized_reads(name).await;
    }
    reads
}

/// Events of `namespace` about objects whose name starts with `prefix`: per
/// `(type, reason)`, the Event objects and the occurrences.
pub async fn events_with_prefix(
    client: &Client,
    namespace: &str,
    prefix: &str,
) -> BTreeMap<(String, String), (usize, i64)> {
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), namespace);
    let mut out: BTreeMap<(String, String), (usize, i64)> = BTreeMap::new();
    for e in events
        .list(&ListParams::default())
        .await
        .expect("list Events")
        .items
    {
        let about = e.regarding.as_ref().and_then(|r| r.name.as_deref());
        if !about.is_some_and(|n| n.starts_with(prefix)) {
            continue;
        }
        let key = (
            e.type_.clone().unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
        );
        let entry = out.entry(key).or_default();
        entry.0 += 1;
        entry.1 += i64::from(e.series.as_ref().map_or(1, |s| s.count));
    }
    out
}

/// Warning occurrences per object of `namespace` whose name starts with `prefix` (an Event
/// series counts each repeat), for "one Warning per object per failure, not per retry".
pub async fn warnings_per_object(
    client: &Client,
    namespace: &str,
    prefix: &str,
) -> BTreeMap<String, i64> {
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), namespace);
    let mut out = BTreeMap::new();
    for e in events
        .list(&ListParams::default())
        .await
        .expect("list Events")
        .items
    {
        if e.type_.as_deref() != Some("Warning") {
            continue;
        }
        let about = e.regarding.as_ref().and_then(|r| r.name.clone());
        if let Some(name) = about.filter(|n| n.starts_with(prefix)) {
            *out.entry(name).or_default() += i64::from(e.series.as_ref().map_or(1, |s| s.count));
        }
    }
    out
}

/// The occurrences of `reason` in an [`Fleet::events`] map, of any type.
pub fn occurrences(events: &BTreeMap<(String, String), (usize, i64)>, reason: &str) -> i64 {
    events
        .iter()
        .filter(|((_, r), _)| r == reason)
        .map(|(_, (_, n))| n)
        .sum()
}

/// The Warning occurrences in an [`Fleet::events`] map.
pub fn warning_occurrences(events: &BTreeMap<(String, String), (usize, i64)>) -> i64 {
    events
        .iter()
        .filter(|((t, _), _)| t == "Warning")
        .map(|(_, (_, n))| n)
        .sum()
}

/// Random numbers for fault timing, from a seed the report prints so a run can be replayed
/// (xorshift64*: enough to pick points in time, not for anything secret).
pub struct Dice(u64);

impl Dice {
    /// A seed from `VAULTSYNC_TEST_SEED`, else a fresh one.
    pub fn seeded() -> (Self, u64) {
        let seed = std::env::var("VAULTSYNC_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0 | 1);
        (Self(seed), seed)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1)
    }
}
