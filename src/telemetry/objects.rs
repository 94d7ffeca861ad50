//! Gauges over the VaultSecrets in the controller's watch cache, computed at each scrape:
//! what the cluster's statuses say now, so an object deleted or changed since the last
//! scrape can never leave a stale series behind.

use crate::api::VaultSecret;
use crate::controller::decide::parse_interval;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// The `ready` and `reason` labels of `vaultsync_vaultsecrets`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ReadyLabels {
    /// The Ready condition's status: `True`, `False`, or `Unknown` before the first report.
    pub ready: String,
    /// The Ready condition's reason (a stable reason string), `Pending` before the first report.
    pub reason: String,
}

/// The `within` label of `vaultsync_vaultsecrets_expiring`: a bucket bound.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WithinLabels {
    pub within: String,
}

/// The buckets of `vaultsync_vaultsecrets_expiring`, cumulative as a histogram's: each
/// counts the VaultSecrets whose `status.expiresAt` is at most that far ahead (expired
/// ones included); `+Inf` counts every VaultSecret with an expiry. A day, the default
/// `--expiry-warning` (a week), and a month: alert on the first two, plan with the third.
pub const EXPIRY_BUCKETS: [(&str, Option<i64>); 5] = [
    ("0s", Some(0)),
    ("24h", Some(24 * 3600)),
    ("168h", Some(168 * 3600)),
    ("720h", Some(720 * 3600)),
    ("+Inf", None),
];

/// The labels of the opt-in per-object gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub namespace: String,
    pub name: String,
}

/// What the gauges show for a set of VaultSecrets at one instant.
#[derive(Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Objects per (Ready status, reason).
    pub by_ready: BTreeMap<ReadyLabels, i64>,
    /// Seconds since the oldest `status.lastSyncTime` among objects that refresh (not
    /// suspended, `refreshInterval` not `0s`, not every entry pinned); `None` when no such
    /// object has synced yet.
    pub oldest_sync_age_seconds: Option<f64>,
    /// `(namespace, name, lastSyncTime as Unix seconds)` per object that has synced.
    pub last_success: Vec<(String, String, f64)>,
    /// Objects per [`EXPIRY_BUCKETS`] bound, in that order.
    pub expiring: [i64; 5],
}

/// Whether an object is expected to read Key Vault again: a suspended one, one synced
/// once (`0s`) or one whose every entry is pinned is not, so its age says nothing.
fn refreshes(vsec: &VaultSecret) -> bool {
    !vsec.spec.suspend
        && parse_interval(&vsec.spec.refresh_interval).is_ok_and(|i| !i.is_zero())
        && !vsec
            .spec
            .data
            .iter()
            .all(|e| e.remote_ref.pinned_version().is_some())
}

fn unix_seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// The gauges' values for `objects` at `now`.
pub fn snapshot<'a>(
    objects: impl IntoIterator<Item = &'a VaultSecret>,
    now: Timestamp,
) -> Snapshot {
    let mut out = Snapshot::default();
    let mut oldest: Option<Timestamp> = None;
    for vsec in objects {
        let labels = match vsec.ready_condition() {
            Some(c) => ReadyLabels {
                ready: c.status.clone(),
                reason: c.reason.clone(),
            },
            None => ReadyLabels {
                ready: "Unknown".into(),
                reason: "Pending".into(),
            },
        };
        *out.by_ready.entry(labels).or_default() += 1;
        if let Some(at) = vsec.status.as_ref().and_then(|s| s.expires_at.as_ref()) {
            let left = at.0.as_second() - now.as_second();
            for (n, (_, bound)) in out.expiring.iter_mut().zip(EXPIRY_BUCKETS) {
                if bound.is_none_or(|b| left <= b) {
                    *n += 1;
                }
            }
        }
        let Some(synced) = vsec.status.as_ref().and_then(|s| s.last_sync_time.as_ref()) else {
            continue;
        };
        out.last_success.push((
            vsec.namespace().unwrap_or_default(),
            vsec.name_any(),
            unix_seconds(synced.0),
        ));
        if refreshes(vsec) && oldest.is_none_or(|o| synced.0 < o) {
            oldest = Some(synced.0);
        }
    }
    out.oldest_sync_age_seconds = oldest.map(|o| (unix_seconds(now) - unix_seconds(o)).max(0.0));
    out
}

/// The collector behind `vaultsync_vaultsecrets`, `vaultsync_oldest_sync_age_seconds`
/// and (opt-in) `vaultsync_vaultsecret_last_success_timestamp_seconds`. It reads the
/// controller's stores, which exist only while this replica leads: a standby exports none
/// of these series.
#[derive(Debug, Default)]
pub struct ObjectGauges {
    stores: Mutex<Vec<Store<VaultSecret>>>,
    per_object: bool,
}

impl ObjectGauges {
    /// `per_object`: also export the per-object timestamp (`--per-object-metrics`).
    pub fn new(per_object: bool) -> Arc<Self> {
        Arc::new(Self {
            stores: Mutex::default(),
            per_object,
        })
    }

    /// The controller's VaultSecret caches, one per watched scope.
    pub fn observe(&self, stores: Vec<Store<VaultSecret>>) {
        *self.stores.lock().unwrap_or_else(|p| p.into_inner()) = stores;
    }
}

impl Collector for ObjectGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let objects: Vec<Arc<VaultSecret>> = self
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|s| s.state())
            .collect();
        let snap = snapshot(objects.iter().map(AsRef::as_ref), Timestamp::now());

        let by_ready = Family::<ReadyLabels, Gauge>::default();
        for (labels, n) in &snap.by_ready {
            by_ready.get_or_create(labels).set(*n);
        }
        if !snap.by_ready.is_empty() {
            let metric = encoder.encode_descriptor(
                "vaultsecrets",
                "VaultSecrets by the status and reason of their Ready condition",
                None,
                by_ready.metric_type(),
            )?;
            by_ready.encode(metric)?;

            // Every bucket, zeros included, once any VaultSecret exists: an alert on a
            // bucket then has a series to compare.
            let expiring = Family::<WithinLabels, Gauge>::default();
            for ((within, _), n) in EXPIRY_BUCKETS.iter().zip(snap.expiring) {
                expiring
                    .get_or_create(&WithinLabels {
                        within: (*within).to_owned(),
                    })
                    .set(n);
            }
            let metric = encoder.encode_descriptor(
                "vaultsecrets_expiring",
                "VaultSecrets whose earliest synced Key Vault expiry (status.expiresAt) is at most `within` ahead, expired ones included; +Inf: all with an expiry",
                None,
                expiring.metric_type(),
            )?;
            expiring.encode(metric)?;
        }

        if let Some(age) = snap.oldest_sync_age_seconds {
            let gauge = Gauge::<f64, AtomicU64>::default();
            gauge.set(age);
            let metric = encoder.encode_descriptor(
                "oldest_sync_age_seconds",
                "Seconds since the oldest last successful Key Vault read among VaultSecrets that refresh",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }

        if self.per_object && !snap.last_success.is_empty() {
            let family = Family::<ObjectLabels, Gauge<f64, AtomicU64>>::default();
            for (namespace, name, at) in snap.last_success {
                family
                    .get_or_create(&ObjectLabels { namespace, name })
                    .set(at);
            }
            let metric = encoder.encode_descriptor(
                "vaultsecret_last_success_timestamp_seconds",
                "Unix time of each VaultSecret's last successful Key Vault read (status.lastSyncTime)",
                None,
                family.metric_type(),
            )?;
            family.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vsec(name: &str, spec: serde_json::Value, status: serde_json::Value) -> VaultSecret {
        serde_json::from_value(json!({
            "apiVersion": "vaultsync.io/v1alpha1",
            "kind": "VaultSecret",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    fn spec(extra: serde_json::Value) -> serde_json::Value {
        let mut spec = json!({"vaultUrl": "https://v.vault.azure.net",
            "data": [{"key": "k", "remoteRef": {"name": "s"}}]});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        spec
    }

    fn ready(status: &str, reason: &str, synced: Option<&str>) -> serde_json::Value {
        json!({"conditions": [{"type": "Ready", "status": status, "reason": reason,
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "lastSyncTime": synced})
    }

    #[test]
    fn objects_are_counted_by_ready_status_and_reason_and_the_oldest_refreshing_sync_ages() {
        let now: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let objects = [
            vsec(
                "a",
                spec(json!({})),
                ready("True", "Synced", Some("2026-01-01T00:50:00Z")),
            ),
            vsec(
                "b",
                spec(json!({})),
                ready("True", "Synced", Some("2026-01-01T00:40:00Z")),
            ),
            vsec("c", spec(json!({})), ready("False", "SecretNotFound", None)),
            // Older syncs that say nothing about freshness: never refreshed by design.
            vsec(
                "once",
                spec(json!({"refreshInterval": "0s"})),
                ready("True", "Synced", Some("2025-01-01T00:00:00Z")),
            ),
            vsec(
                "off",
                spec(json!({"suspend": true})),
                ready("False", "Suspended", Some("2025-01-01T00:00:00Z")),
            ),
            vsec("new", spec(json!({})), json!(null)),
        ];
        let snap = snapshot(&objects, now);
        let count = |ready: &str, reason: &str| {
            snap.by_ready
                .get(&ReadyLabels {
                    ready: ready.into(),
                    reason: reason.into(),
                })
                .copied()
        };
        assert_eq!(count("True", "Synced"), Some(3));
        assert_eq!(count("False", "SecretNotFound"), Some(1));
        assert_eq!(count("False", "Suspended"), Some(1));
        assert_eq!(count("Unknown", "Pending"), Some(1));
        assert_eq!(snap.by_ready.values().sum::<i64>(), 6);
        assert_eq!(snap.oldest_sync_age_seconds, Some(1200.0));
        assert_eq!(snap.last_success.len(), 4);
        assert!(
            snap.last_success
                .contains(&("team-a".into(), "a".into(), 1_767_228_600.0))
        );
    }

    #[test]
    fn objects_are_counted_by_time_left_to_expiry_in_cumulative_buckets() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let expiring = |name: &str, at: Option<&str>| {
            let mut status = ready("True", "Synced", Some("2026-01-01T00:00:00Z"));
            status["expiresAt"] = json!(at);
            vsec(name, spec(json!({})), status)
        };
        let objects = [
            expiring("expired", Some("2025-12-31T00:00:00Z")),
            expiring("hours", Some("2026-01-01T12:00:00Z")),
            expiring("days", Some("2026-01-04T00:00:00Z")),
            expiring("weeks", Some("2026-01-20T00:00:00Z")),
            expiring("year", Some("2027-01-01T00:00:00Z")),
            expiring("never", None),
        ];
        assert_eq!(snapshot(&objects, now).expiring, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn nothing_synced_means_no_age() {
        let now = Timestamp::now();
        let snap = snapshot(
            &[vsec(
                "c",
                spec(json!({})),
                ready("False", "Throttled", None),
            )],
            now,
        );
        assert_eq!(snap.oldest_sync_age_seconds, None);
        assert!(snap.last_success.is_empty());
        assert_eq!(snapshot([], now), Snapshot::default());
    }
}
