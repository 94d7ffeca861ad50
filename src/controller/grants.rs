//! Identities are granted, not claimed: the operator's own identity and managed
//! identities are usable only in namespaces whose Namespace object grants them (set by a
//! cluster administrator; app teams usually cannot edit it). ServiceAccount identities
//! need no grant: a VaultSecret can only name its own namespace's ServiceAccounts.

use crate::source::IdentityRef;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Namespace annotation granting the operator's own identity; its one accepted value is
/// [`OPERATOR_IDENTITY_ALLOWED`].
pub const OPERATOR_IDENTITY_ANNOTATION: &str = "vaultsync.io/operator-identity";
pub const OPERATOR_IDENTITY_ALLOWED: &str = "allowed";
/// Namespace annotation listing the managed identities (client ids, comma-separated)
/// that VaultSecrets of the namespace may use.
pub const MANAGED_IDENTITIES_ANNOTATION: &str = "vaultsync.io/managed-identities";

/// Where VaultSecrets without `spec.identity` may use the operator's own identity
/// (`--operator-identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OperatorIdentity {
    /// Only in namespaces annotated `vaultsync.io/operator-identity: "allowed"`.
    #[default]
    Namespaces,
    /// In every namespace (single-tenant clusters).
    All,
    /// Nowhere.
    None,
}

impl std::fmt::Display for OperatorIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OperatorIdentity::Namespaces => "namespaces",
            OperatorIdentity::All => "all",
            OperatorIdentity::None => "none",
        })
    }
}

/// Whether `identity` may be used by a VaultSecret of `namespace`, whose Namespace has
/// `annotations` (`None`: the Namespace is not known). The refusal says exactly which
/// grant is missing and how a cluster administrator adds it.
pub fn check_grant(
    identity: &IdentityRef,
    namespace: &str,
    annotations: Option<&BTreeMap<String, String>>,
    policy: OperatorIdentity,
) -> Result<(), String> {
    let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    match identity {
        IdentityRef::ServiceAccount { .. } => Ok(()),
        IdentityRef::Operator => match policy {
            OperatorIdentity::All => Ok(()),
            OperatorIdentity::None => Err(
                "spec.identity is not set and the operator's own identity is switched off on this cluster (--operator-identity=none); set spec.identity.serviceAccountName to a ServiceAccount of this namespace".to_owned(),
            ),
            OperatorIdentity::Namespaces => {
                let value = annotation(OPERATOR_IDENTITY_ANNOTATION);
                if value == Some(OPERATOR_IDENTITY_ALLOWED) {
                    return Ok(());
                }
                let now = match value {
                    Some(other) => format!("it has {OPERATOR_IDENTITY_ANNOTATION}: {other:?}"),
                    None => "it has no such annotation".to_owned(),
                };
                Err(format!(
                    "spec.identity is not set and namespace '{namespace}' is not granted the operator's own identity: a cluster administrator grants it with annotation {OPERATOR_IDENTITY_ANNOTATION}: \"{OPERATOR_IDENTITY_ALLOWED}\" on Namespace '{namespace}' (kubectl annotate namespace {namespace} {OPERATOR_IDENTITY_ANNOTATION}={OPERATOR_IDENTITY_ALLOWED} --overwrite; {now}); or set spec.identity.serviceAccountName to a ServiceAccount of this namespace"
                ))
            }
        },
        IdentityRef::ManagedIdentity { client_id } => {
            let listed = annotation(MANAGED_IDENTITIES_ANNOTATION);
            let ids: Vec<&str> = listed
                .into_iter()
                .flat_map(|list| list.split(','))
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .collect();
            if ids.iter().any(|id| id.eq_ignore_ascii_case(client_id.trim())) {
                return Ok(());
            }
            let now = match listed {
                Some(list) => format!("it lists {list:?}"),
                None => "it has no such annotation".to_owned(),
            };
            let value = ids
                .into_iter()
                .chain([client_id.as_str()])
                .collect::<Vec<_>>()
                .join(",");
            Err(format!(
                "managed identity {client_id} is not granted to namespace '{namespace}': a cluster administrator grants it by adding {client_id} to annotation {MANAGED_IDENTITIES_ANNOTATION} (comma-separated client ids) on Namespace '{namespace}' (kubectl annotate namespace {namespace} {MANAGED_IDENTITIES_ANNOTATION}={value} --overwrite; {now})"
            ))
        }
    }
}

/// Namespaces' metadata from the operator's watch caches (one per watched scope): no API
/// request per reconcile. The caches are synced before the first reconcile.
#[derive(Clone, Default)]
pub struct NamespaceGrants {
    stores: Vec<Store<PartialObjectMeta<Namespace>>>,
}

impl NamespaceGrants {
    /// The annotations of `namespace`; `None` if it is not known.
    pub fn annotations(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        let key = ObjectRef::new(namespace);
        self.stores
            .iter()
            .find_map(|store| store.get(&key))
            .map(|ns| ns.annotations().clone())
    }
}

/// Starts one metadata-only watch of Namespaces per scope (all Namespaces, or the one
/// named), each in a task of its own, and waits until every cache has synced. Returns the
/// caches and the stream of Namespaces whose grants changed (see [`GrantChanges`]).
pub async fn watch_namespaces(
    client: &Client,
    scopes: &[Option<String>],
    health: &std::sync::Arc<crate::telemetry::WatchHealth>,
) -> (
    NamespaceGrants,
    Vec<UnboundedReceiver<PartialObjectMeta<Namespace>>>,
) {
    let mut stores = Vec::new();
    let mut changed = Vec::new();
    for scope in scopes {
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
        let config = match scope {
            Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
            None => watcher::Config::default(),
        };
        let (reader, writer) = reflector::store();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (health, name) = (
            health.clone(),
            format!("Namespaces ({})", scope.as_deref().unwrap_or("all")),
        );
        let mut events = reflector(
            writer,
            watcher(api, config).inspect(move |item| health.observe(&name, item)),
        )
        .default_backoff()
        .boxed();
        tokio::spawn(async move {
            let mut changes = GrantChanges::default();
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => {
                        if let Some(ns) = changes.observe(&event) {
                            // Fails only when the controller is gone, at shutdown.
                            let _ = tx.unbounded_send(ns);
                        }
                    }
                    // Logged as a warning, and counted for /livez, by `health`.
                    Err(e) => tracing::warn!(
                        error = %e,
                        "cannot watch Namespaces (their identity grants); the operator needs namespaces get, list and watch cluster-wide"
                    ),
                }
            }
        });
        stores.push(reader);
        changed.push(rx);
    }
    // One waiter per cache: the caches' readiness wakes a single waiter only.
    for store in &stores {
        let _ = store.wait_until_ready().await;
    }
    (NamespaceGrants { stores }, changed)
}

/// The grant annotations of one Namespace, as compared between events.
type GrantAnnotations = (Option<String>, Option<String>);

fn grant_annotations(ns: &PartialObjectMeta<Namespace>) -> GrantAnnotations {
    let annotations = ns.annotations();
    (
        annotations.get(OPERATOR_IDENTITY_ANNOTATION).cloned(),
        annotations.get(MANAGED_IDENTITIES_ANNOTATION).cloned(),
    )
}

/// Picks, from a Namespace watch, the Namespaces whose grants changed, so that their
/// VaultSecrets are reconciled at once rather than at their next retry. The first
/// listing triggers nothing (every VaultSecret is reconciled at start-up anyway); a
/// Namespace that appears later does, in case its VaultSecrets were seen before it.
#[derive(Debug, Default)]
pub struct GrantChanges {
    seen: HashMap<String, GrantAnnotations>,
    listed_once: bool,
    relisted: HashSet<String>,
}

impl GrantChanges {
    /// The Namespace whose VaultSecrets should be reconciled after `event`, if any.
    pub fn observe(
        &mut self,
        event: &watcher::Event<PartialObjectMeta<Namespace>>,
    ) -> Option<PartialObjectMeta<Namespace>> {
        match event {
            watcher::Event::Apply(ns) => self.changed(ns, true).then(|| ns.clone()),
            watcher::Event::InitApply(ns) => {
                self.relisted.insert(ns.name_any());
                self.changed(ns, self.listed_once).then(|| ns.clone())
            }
            watcher::Event::Delete(ns) => {
                self.seen.remove(&ns.name_any());
                None
            }
            watcher::Event::Init => {
                self.relisted.clear();
                None
            }
            watcher::Event::InitDone => {
                // Namespaces deleted while the watch was down.
                let relisted = std::mem::take(&mut self.relisted);
                self.seen.retain(|name, _| relisted.contains(name));
                self.listed_once = true;
                None
            }
        }
    }

    /// Records `ns`; true if its grants differ from what was seen (or, when `new_counts`,
    /// if it was not seen before).
    fn changed(&mut self, ns: &PartialObjectMeta<Namespace>, new_counts: bool) -> bool {
        let grants = grant_annotations(ns);
        match self.seen.insert(ns.name_any(), grants.clone()) {
            Some(before) => before != grants,
            None => new_counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    const MI: &str = "6A1F0C3E-2B4D-4E5F-8A9B-0C1D2E3F4A5B";

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn managed(id: &str) -> IdentityRef {
        IdentityRef::ManagedIdentity {
            client_id: id.to_owned(),
        }
    }

    #[test]
    fn service_accounts_need_no_grant() {
        let sa = IdentityRef::ServiceAccount {
            namespace: "team-a".into(),
            name: "app".into(),
        };
        for policy in [
            OperatorIdentity::None,
            OperatorIdentity::Namespaces,
            OperatorIdentity::All,
        ] {
            assert!(check_grant(&sa, "team-a", None, policy).is_ok());
        }
    }

    #[test]
    fn the_operator_identity_follows_the_policy_and_the_namespace_grant() {
        let op = IdentityRef::Operator;
        let granted = annotations(&[(OPERATOR_IDENTITY_ANNOTATION, "allowed")]);
        let other = annotations(&[(OPERATOR_IDENTITY_ANNOTATION, "yes")]);
        assert!(check_grant(&op, "a", Some(&granted), OperatorIdentity::Namespaces).is_ok());
        assert!(check_grant(&op, "a", None, OperatorIdentity::All).is_ok());
        let refused = check_grant(&op, "a", Some(&granted), OperatorIdentity::None).unwrap_err();
        assert!(refused.contains("--operator-identity=none"), "{refused}");

        let missing = check_grant(
            &op,
            "team-a",
            Some(&BTreeMap::new()),
            OperatorIdentity::Namespaces,
        )
        .unwrap_err();
        assert!(
            missing.contains("namespace 'team-a'")
                && missing.contains("vaultsync.io/operator-identity: \"allowed\"")
                && missing.contains(
                    "kubectl annotate namespace team-a vaultsync.io/operator-identity=allowed"
                )
                && missing.contains("no such annotation"),
            "{missing}"
        );
        let wrong = check_grant(&op, "a", Some(&other), OperatorIdentity::Namespaces).unwrap_err();
        assert!(wrong.contains("\"yes\""), "{wrong}");
        assert!(check_grant(&op, "a", None, OperatorIdentity::Namespaces).is_err());
    }

    #[test]
    fn managed_identities_need_the_namespace_grant_whatever_the_policy() {
        let listed = annotations(&[(
            MANAGED_IDENTITIES_ANNOTATION,
            &format!(
                " 11111111-0000-0000-0000-000000000000 , {} ,",
                MI.to_lowercase()
            ),
        )]);
        // Client ids compare case-insensitively; whitespace and empty items are ignored.
        assert!(check_grant(&managed(MI), "a", Some(&listed), OperatorIdentity::None).is_ok());
        assert!(
            check_grant(
                &managed("11111111-0000-0000-0000-000000000000"),
                "a",
                Some(&listed),
                OperatorIdentity::Namespaces
            )
            .is_ok()
        );
        let other = "22222222-0000-0000-0000-000000000000";
        let refused = check_grant(
            &managed(other),
            "team-a",
            Some(&listed),
            OperatorIdentity::All,
        )
        .unwrap_err();
        assert!(
            refused.contains(&format!(
                "managed identity {other} is not granted to namespace 'team-a'"
            )) && refused.contains(&format!(
                "kubectl annotate namespace team-a vaultsync.io/managed-identities=11111111-0000-0000-0000-000000000000,{},{other} --overwrite",
                MI.to_lowercase()
            )),
            "{refused}"
        );
        let none = check_grant(&managed(MI), "b", None, OperatorIdentity::All).unwrap_err();
        assert!(
            none.contains(&format!(
                "kubectl annotate namespace b vaultsync.io/managed-identities={MI} --overwrite"
            )),
            "{none}"
        );
        // A prefix or a substring of a listed id is not the id.
        let partial = annotations(&[(MANAGED_IDENTITIES_ANNOTATION, &MI[..8])]);
        assert!(check_grant(&managed(MI), "a", Some(&partial), OperatorIdentity::All).is_err());
    }

    fn ns(name: &str, grants: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                annotations: Some(annotations(grants)),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    fn names(
        changes: &mut GrantChanges,
        events: Vec<watcher::Event<PartialObjectMeta<Namespace>>>,
    ) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| changes.observe(e))
            .map(|ns| ns.name_any())
            .collect()
    }

    #[test]
    fn only_changed_grants_and_new_namespaces_trigger_after_the_first_listing() {
        use watcher::Event::*;
        let allowed = [(OPERATOR_IDENTITY_ANNOTATION, "allowed")];
        let mut changes = GrantChanges::default();
        let first = names(
            &mut changes,
            vec![
                Init,
                InitApply(ns("a", &[])),
                InitApply(ns("b", &allowed)),
                InitDone,
            ],
        );
        assert!(first.is_empty(), "{first:?}");
        let later = names(
            &mut changes,
            vec![
                // Another annotation changed: no trigger.
                Apply(ns("a", &[("team", "x")])),
                Apply(ns("a", &allowed)),
                Apply(ns("c", &[])),
                Apply(ns("c", &[])),
                Delete(ns("b", &allowed)),
            ],
        );
        assert_eq!(later, ["a", "c"]);
        // A relist after the watch was down: a changed grant and a new namespace trigger.
        let relist = names(
            &mut changes,
            vec![
                Init,
                InitApply(ns("a", &[])),
                InitApply(ns("c", &[])),
                InitApply(ns("d", &[])),
                InitDone,
            ],
        );
        assert_eq!(relist, ["a", "d"]);
    }
}
