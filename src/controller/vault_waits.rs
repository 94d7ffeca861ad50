//! VaultSecrets whose Key Vault read a throttled vault refused, woken together as soon as
//! the throttle lifts (the vault's shared back-off opens again on an answer,
//! [`crate::source::SecretSource::throttle_lifted`]).
//!
//! A throttled vault shuts its gate for every reader ([`crate::source::gate`]), but each
//! refused object then waits for its own retry (5 s, doubling with the time it has been
//! failing, up to 5 minutes): after a 20 s throttle, 5,000 objects came back over six
//! minutes, each reading on its own, past any sharing window. Woken at the first answer
//! instead, they reconcile together and share one read per secret, and their kept read
//! waits for them ([`super::demand`] counts a woken object as due until its reconcile
//! ends).
//!
//! Keyed by the vault URL as the source normalises it: Key Vault's throttle counts per
//! vault, whichever identity reads. An object is woken by a lifting after its refusal,
//! once: refused again (a secret still throttled on its own while the vault answers the
//! others), it waits for the next lifting, so no answer of the vault's other secrets
//! wakes it in a loop. A secret failing on its own (5xx, timeouts) is no throttle and
//! keeps its retry schedule.

use crate::api::VaultSecret;
use futures::channel::mpsc;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a woken object counts as woken without finishing a reconcile (one deleted
/// meanwhile never does): as long as a kept read may be handed out at all
/// ([`crate::source::single_flight`]'s 300 s).
const WOKEN_FOR: Duration = Duration::from_secs(300);

/// A watched scope (`None`: all namespaces) and where its controller takes wake-ups.
type Trigger = (
    Option<String>,
    mpsc::UnboundedSender<ObjectRef<VaultSecret>>,
);

#[derive(Default)]
struct State {
    /// Per vault, the objects refused by its throttle, by uid, with the vault's count of
    /// liftings when refused.
    waiting: HashMap<String, HashMap<String, (u64, ObjectRef<VaultSecret>)>>,
    /// Uids woken and not yet reconciled since, with when.
    woken: HashMap<String, Instant>,
}

/// The objects waiting on a throttled vault; shared by every controller of the process.
#[derive(Default)]
pub struct VaultWaits {
    state: Mutex<State>,
    triggers: Mutex<Vec<Trigger>>,
}

impl VaultWaits {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain collections stay consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The wake-ups of the objects in `scope` (a namespace; `None`: all), for
    /// `Controller::reconcile_on`.
    pub fn subscribe(
        &self,
        scope: Option<String>,
    ) -> mpsc::UnboundedReceiver<ObjectRef<VaultSecret>> {
        let (tx, rx) = mpsc::unbounded();
        self.triggers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((scope, tx));
        rx
    }

    /// `vsec`'s read of `vault` (normalised URL) was refused by the vault's throttle, which
    /// had lifted `lifted` times before.
    pub fn refused(&self, vault: &str, lifted: u64, vsec: &VaultSecret) {
        let Some(uid) = vsec.uid() else {
            return;
        };
        self.lock()
            .waiting
            .entry(vault.to_owned())
            .or_default()
            .insert(uid, (lifted, ObjectRef::from_obj(vsec)));
    }

    /// `vault` answered a read, its throttle having lifted `lifted` times: every object
    /// refused before the last lifting is reconciled now. Returns how many were woken.
    pub fn answered(&self, vault: &str, lifted: u64) -> usize {
        let refs: Vec<_> = {
            let mut state = self.lock();
            let Some(waiting) = state.waiting.get_mut(vault) else {
                return 0;
            };
            let mut woken = Vec::new();
            waiting.retain(|uid, (refused_at, object)| {
                let wake = *refused_at < lifted;
                if wake {
                    woken.push((uid.clone(), object.clone()));
                }
                !wake
            });
            if waiting.is_empty() {
                state.waiting.remove(vault);
            }
            if woken.is_empty() {
                return 0;
            }
            let now = Instant::now();
            state
                .woken
                .retain(|_, at| now.duration_since(*at) < WOKEN_FOR);
            state
                .woken
                .extend(woken.iter().map(|(uid, _)| (uid.clone(), now)));
            woken.into_iter().map(|(_, object)| object).collect()
        };
        let triggers = self.triggers.lock().unwrap_or_else(|p| p.into_inner());
        for object in &refs {
            let namespace = object.namespace.as_deref();
            for (scope, tx) in triggers.iter() {
                if scope.is_none() || scope.as_deref() == namespace {
                    // A closed receiver is a controller that stopped: nothing to wake.
                    let _ = tx.unbounded_send(object.clone());
                }
            }
        }
        refs.len()
    }

    /// Whether the object with `uid` was woken and has not finished a reconcile since.
    pub fn is_woken(&self, uid: &str) -> bool {
        self.lock()
            .woken
            .get(uid)
            .is_some_and(|at| at.elapsed() < WOKEN_FOR)
    }

    /// The object with `uid` finished a reconcile: it is no longer a woken one.
    pub fn reconciled(&self, uid: &str) {
        let mut state = self.lock();
        if !state.woken.is_empty() {
            state.woken.remove(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use kube::api::ObjectMeta;

    fn vsec(namespace: &str, name: &str) -> VaultSecret {
        let mut vsec: VaultSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "vaultsync.io/v1alpha1",
            "kind": "VaultSecret",
            "metadata": {},
            "spec": {"vaultUrl": "https://v.vault.azure.net", "data": []},
        }))
        .unwrap();
        vsec.metadata = ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            uid: Some(format!("{namespace}-{name}")),
            ..Default::default()
        };
        vsec
    }

    #[tokio::test]
    async fn a_lifted_throttle_wakes_the_objects_it_refused_before_in_their_scope_once() {
        let waits = VaultWaits::default();
        let mut all = waits.subscribe(None);
        let mut team_a = waits.subscribe(Some("a".into()));
        let vault = "https://v.vault.azure.net";
        waits.refused(vault, 0, &vsec("a", "one"));
        waits.refused(vault, 0, &vsec("a", "one"));
        waits.refused(vault, 0, &vsec("b", "two"));
        waits.refused("https://other.vault.azure.net", 0, &vsec("a", "three"));

        assert_eq!(waits.answered("https://nobody.vault.azure.net", 1), 0);
        assert_eq!(
            waits.answered(vault, 0),
            0,
            "an answer with no lifting wakes nobody"
        );
        assert_eq!(waits.answered(vault, 1), 2);
        assert!(waits.is_woken("a-one") && waits.is_woken("b-two"));
        assert!(!waits.is_woken("a-three"), "another vault's waiters stay");
        let mut woken: Vec<String> = vec![all.next().await.unwrap(), all.next().await.unwrap()]
            .into_iter()
            .map(|r| r.name)
            .collect();
        woken.sort();
        assert_eq!(woken, ["one", "two"]);
        assert_eq!(team_a.next().await.unwrap().name, "one");
        assert!(team_a.try_recv().is_err(), "b/two is not in scope a");

        // Refused again after that lifting: the vault's next answers do not wake it, the
        // next lifting does.
        waits.refused(vault, 1, &vsec("a", "one"));
        assert_eq!(waits.answered(vault, 1), 0);
        assert_eq!(waits.answered(vault, 2), 1);
        assert_eq!(all.next().await.unwrap().name, "one");

        waits.reconciled("a-one");
        assert!(!waits.is_woken("a-one"));
        assert!(waits.is_woken("b-two"));
    }
}
