//! Events (`events.k8s.io/v1`) about VaultSecrets, with repeats aggregated into a series:
//! the first Event of a (VaultSecret, type, reason) is created; a repeat within
//! [`SERIES_WINDOW`] patches that Event's `series` (count and last time) instead of
//! creating another, as the Kubernetes Event API intends (KEP-383, "new Event API").
//!
//! Why not kube's `Recorder`: it keeps a whole copy of every Event it published for six
//! minutes and scans all of them, under one write lock, on every publish. A cold start of
//! 5,000 VaultSecrets publishes 5,000 `Synced` Events: that is 12.5 million entry visits
//! serialised through the lock and several MiB of Event copies at the operator's peak
//! (`make bench`, docs/performance.md). Here each entry holds only what a repeat needs
//! (the Event's name and its count), and expired entries are swept at most once per
//! [`SWEEP_EVERY`].

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A repeat this soon after the last occurrence joins its series (kube's `Recorder` and
/// client-go's event aggregation use six minutes alike).
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Expired entries are dropped at most this often (the cost is one pass over the map).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// An Event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// What makes two Events one series: the object (by uid), the type and the reason. The
/// note is not part of it: a series keeps its first note, as Kubernetes' own recorders do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    uid: String,
    type_: EventType,
    reason: String,
}

/// The last Event of a series (in the namespace of the object it is about): its name,
/// how many occurrences it counts, and when the last one was.
#[derive(Debug, Clone)]
struct Published {
    name: String,
    count: i32,
    last: Instant,
}

#[derive(Debug)]
struct Recent {
    series: HashMap<SeriesKey, Published>,
    swept: Instant,
}

impl Recent {
    /// The series `key` continues, if its last occurrence is recent; sweeps expired
    /// entries first when the last sweep is old enough.
    fn repeat_of(&mut self, key: &SeriesKey, now: Instant) -> Option<Published> {
        if now.duration_since(self.swept) >= SWEEP_EVERY {
            self.series
                .retain(|_, p| now.duration_since(p.last) < SERIES_WINDOW);
            self.swept = now;
        }
        self.series
            .get(key)
            .filter(|p| now.duration_since(p.last) < SERIES_WINDOW)
            .cloned()
    }
}

/// Publishes Events as one reporting controller and instance; cheap to share behind the
/// controller's context. Holds no note after it is sent (notes are the larger part).
pub struct EventPublisher {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<Recent>,
}

impl EventPublisher {
    /// `controller` is `reportingController`; `instance` is `reportingInstance` (the pod's
    /// name; the controller's name when not known).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| controller.to_owned()),
            recent: Mutex::new(Recent {
                series: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// How many series are remembered (for tests and memory accounting).
    pub fn remembered(&self) -> usize {
        self.lock().series.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        // Plain data, consistent even if a holder panicked.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes one occurrence of `reason` about `regarding` (which must carry a
    /// namespace and uid; an object without a uid is never a series). Errors: the API
    /// server refused or could not be reached; the occurrence is then not remembered, so
    /// the next one is created afresh.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let key = regarding.uid.clone().map(|uid| SeriesKey {
            uid,
            type_,
            reason: reason.to_owned(),
        });
        let now = Instant::now();
        let repeat = key.as_ref().and_then(|key| self.repeat_of(key, now));
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Some(previous) = repeat {
            let count = previous.count + 1;
            let patch = serde_json::json!({
                "series": { "count": count, "lastObservedTime": MicroTime(Timestamp::now()) }
            });
            match events
                .patch(
                    &previous.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    self.remember(key, previous.name, count, now);
                    return Ok(());
                }
                // The Event is gone (the API server's Event TTL, or someone deleted it):
                // this occurrence starts a new series.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.new_event(regarding, type_, reason, action, note);
        let created = events.create(&PostParams::default(), &event).await?;
        let name = created.metadata.name.unwrap_or_default();
        self.remember(key, name, 1, now);
        Ok(())
    }

    fn repeat_of(&self, key: &SeriesKey, now: Instant) -> Option<Published> {
        self.lock().repeat_of(key, now)
    }

    fn remember(&self, key: Option<SeriesKey>, name: String, count: i32, now: Instant) {
        if let Some(key) = key {
            self.lock().series.insert(
                key,
                Published {
                    name,
                    count,
                    last: now,
                },
            );
        }
    }

    fn new_event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> Event {
        let now = Timestamp::now();
        Event {
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                // Unique per object and moment, as Kubernetes' recorders name Events.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(note),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(type_.as_str().to_owned()),
            ..Default::default()
        }
    }
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher")
            .field("controller", &self.controller)
            .field("instance", &self.instance)
            .field("remembered", &self.remembered())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(last: Instant) -> Published {
        Published {
            name: "app.1".into(),
            count: 1,
            last,
        }
    }

    fn key(reason: &str) -> SeriesKey {
        SeriesKey {
            uid: "u1".into(),
            type_: EventType::Warning,
            reason: reason.into(),
        }
    }

    fn recent(swept: Instant) -> Recent {
        Recent {
            series: HashMap::new(),
            swept,
        }
    }

    #[test]
    fn a_repeat_within_the_window_continues_the_series_and_a_late_one_does_not() {
        let start = Instant::now();
        let mut state = recent(start);
        state.series.insert(key("Throttled"), entry(start));
        let soon = start + Duration::from_secs(30);
        assert_eq!(
            state.repeat_of(&key("Throttled"), soon).map(|p| p.name),
            Some("app.1".to_owned())
        );
        assert!(state.repeat_of(&key("AccessDenied"), soon).is_none());
        assert!(
            state
                .repeat_of(&key("Throttled"), start + SERIES_WINDOW)
                .is_none()
        );
    }

    #[test]
    fn expired_series_are_swept_at_most_once_per_sweep_interval() {
        let start = Instant::now();
        let expired = start + SERIES_WINDOW;
        // Swept at the moment the entry expires: it stays until the next sweep is due.
        let mut state = recent(expired);
        state.series.insert(key("Throttled"), entry(start));
        state.repeat_of(&key("Other"), expired);
        assert_eq!(state.series.len(), 1);
        state.repeat_of(&key("Other"), expired + SWEEP_EVERY);
        assert!(state.series.is_empty());
    }
}
