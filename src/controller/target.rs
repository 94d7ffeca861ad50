//! The target Secret: who may write it, what it should look like, and whether it drifted.
//! Pure functions; `controller::apply` does the writing.

use crate::api::{
    CREATED_BY_ANNOTATION, CreationPolicy, DATA_HASH_ANNOTATION, MANAGED_BY_LABEL,
    MANAGED_BY_VALUE, MERGE_FROM_ANNOTATION, MERGE_HASH_PREFIX, MERGED_BY_PREFIX,
    SOURCE_ANNOTATION, SOURCE_UID_ANNOTATION, VaultSecret,
};
use crate::controller::data_hash::{DataHashKey, HashMatch, check_recorded};
use crate::source::SecretBytes;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// The field manager of Owner and Orphan writes.
pub const FIELD_MANAGER: &str = "vaultsync";

/// Merge writes use a field manager per VaultSecret, so that several VaultSecrets merging
/// into one Secret each keep their own keys under server-side apply.
pub fn field_manager(vsec: &VaultSecret) -> String {
    match vsec.spec.target.creation_policy {
        CreationPolicy::Merge => {
            let mut manager = format!("vaultsync/{}", vsec.name_any());
            manager.truncate(128);
            manager
        }
        CreationPolicy::Owner | CreationPolicy::Orphan => FIELD_MANAGER.to_owned(),
    }
}

pub fn source_of(vsec: &VaultSecret) -> String {
    format!(
        "{}/{}",
        vsec.namespace().unwrap_or_default(),
        vsec.name_any()
    )
}

fn uid_of(vsec: &VaultSecret) -> &str {
    vsec.meta().uid.as_deref().unwrap_or_default()
}

/// A Merge writer's name mark, `vaultsync.io/merged-by.<uid>`: keyed by uid, so each
/// writer of a shared Secret has its own (a uid is 36 characters, within the 63 an
/// annotation name may have).
pub fn merged_by_key(vsec: &VaultSecret) -> String {
    format!("{MERGED_BY_PREFIX}{}", uid_of(vsec))
}

/// The annotation holding this writer's data hash: the shared `vaultsync.io/data-hash` of
/// an Owner or Orphan Secret (its only writer), `vaultsync.io/data-hash.<uid>` for a Merge
/// writer, so that several Merge writers never see each other's writes as drift.
pub fn hash_annotation(vsec: &VaultSecret) -> String {
    match vsec.spec.target.creation_policy {
        CreationPolicy::Merge => format!("{MERGE_HASH_PREFIX}{}", uid_of(vsec)),
        CreationPolicy::Owner | CreationPolicy::Orphan => DATA_HASH_ANNOTATION.to_owned(),
    }
}

/// The names of the VaultSecrets a Secret's marks say write it: the Owner or Orphan
/// writer (`vaultsync.io/source`, when it names the Secret's own namespace), each Merge
/// writer (`vaultsync.io/merged-by.<uid>`) and each name `vaultsync.io/merge-from` lets in.
pub fn writers_of(meta: &ObjectMeta) -> Vec<String> {
    let Some(annotations) = meta.annotations.as_ref() else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    if let Some((namespace, name)) = annotations
        .get(SOURCE_ANNOTATION)
        .and_then(|s| s.split_once('/'))
        && meta.namespace.as_deref() == Some(namespace)
    {
        names.push(name.to_owned());
    }
    for (key, value) in annotations {
        if key.starts_with(MERGED_BY_PREFIX) {
            names.push(value.clone());
        }
    }
    names.extend(merge_from(meta).map(str::to_owned));
    names.sort();
    names.dedup();
    names.retain(|n| !n.is_empty());
    names
}

/// The VaultSecret names the Secret's owner let in with `vaultsync.io/merge-from`.
fn merge_from(meta: &ObjectMeta) -> impl Iterator<Item = &str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(MERGE_FROM_ANNOTATION))
        .into_iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn controller_owner(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

pub fn owned_by(meta: &ObjectMeta, vsec: &VaultSecret) -> bool {
    controller_owner(meta).is_some_and(|r| Some(&r.uid) == vsec.meta().uid.as_ref())
}

/// Whether the Secret is shared under Merge: its owner let Merge writers in, or a Merge
/// writer created or wrote it. Such a Secret never gets an ownerReference (garbage
/// collection would delete every writer's keys with one VaultSecret).
fn is_merge_target(meta: &ObjectMeta) -> bool {
    meta.annotations.as_ref().is_some_and(|a| {
        a.contains_key(MERGE_FROM_ANNOTATION)
            || a.contains_key(CREATED_BY_ANNOTATION)
            || a.keys().any(|k| k.starts_with(MERGED_BY_PREFIX))
    })
}

/// Whether `manager` applied (server-side apply) fields of the Secret, per its
/// `managedFields`, which the API server records and no spec can set.
fn applied_by(meta: &ObjectMeta, manager: &str) -> bool {
    meta.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some(manager) && entry.operation.as_deref() == Some("Apply")
    })
}

/// A Secret an Owner or Orphan writer of an earlier version wrote, before the
/// `vaultsync.io/source-uid` mark existed: its `vaultsync.io/source` annotation names this
/// VaultSecret and is owned by the Owner/Orphan field manager (so no Merge writer wrote
/// it last), and it was created no earlier than this VaultSecret (so a VaultSecret
/// re-created with the same name does not take its predecessor's Secret).
fn legacy_owner_or_orphan(meta: &ObjectMeta, vsec: &VaultSecret) -> bool {
    let source_applied = meta.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry.fields_v1.as_ref().is_some_and(|f| {
                f.0.pointer("/f:metadata/f:annotations")
                    .and_then(|a| a.get(format!("f:{SOURCE_ANNOTATION}")))
                    .is_some()
            })
    });
    let created_since = match (&meta.creation_timestamp, &vsec.meta().creation_timestamp) {
        (Some(secret), Some(vsec)) => secret.0 >= vsec.0,
        _ => false,
    };
    annotation(meta, SOURCE_ANNOTATION) == Some(source_of(vsec).as_str())
        && annotation(meta, SOURCE_UID_ANNOTATION).is_none()
        && source_applied
        && created_since
}

/// A Secret only Merge writers of an earlier version ever wrote (every field manager is a
/// `vaultsync/<name>` Merge manager), this one among them: it was created by one of them,
/// so they keep writing it as before.
///
/// A Secret a current-version writer created (`vaultsync.io/created-by`), or whose marks
/// record another VaultSecret of this name (another uid), is not such a Secret: the field
/// manager is derived from the name, so it alone would let a VaultSecret re-created with
/// its predecessor's name take the predecessor's Secret.
fn legacy_merge_writer(meta: &ObjectMeta, vsec: &VaultSecret) -> bool {
    let entries: Vec<_> = meta.managed_fields.iter().flatten().collect();
    let own_mark = merged_by_key(vsec);
    let predecessor = meta.annotations.iter().flatten().any(|(key, value)| {
        key.starts_with(MERGED_BY_PREFIX) && *key != own_mark && *value == vsec.name_any()
    });
    annotation(meta, CREATED_BY_ANNOTATION).is_none()
        && !predecessor
        && !entries.is_empty()
        && entries.iter().all(|e| {
            e.manager
                .as_deref()
                .is_some_and(|m| m.starts_with("vaultsync/"))
        })
        && applied_by(meta, &field_manager(vsec))
}

/// The declared keys another field manager wrote through `stringData`, as `(manager,
/// field)` pairs (`.stringData.password`). The API server stores `stringData` in `data`
/// but records ownership of the `stringData` field it was given, so server-side apply
/// sees no owner of `data.password` and a Merge apply without force would take the key
/// silently: such keys are judged here instead, from `managedFields`. vaultsync never
/// writes `stringData`, so every such entry is someone else's.
pub fn string_data_owners(meta: &ObjectMeta, vsec: &VaultSecret) -> Vec<(String, String)> {
    let own = field_manager(vsec);
    let mut owners = Vec::new();
    for entry in meta.managed_fields.iter().flatten() {
        let manager = entry
            .manager
            .as_deref()
            .unwrap_or("an unnamed field manager");
        if manager == own {
            continue;
        }
        let Some(fields) = entry
            .fields_v1
            .as_ref()
            .and_then(|f| f.0.get("f:stringData"))
        else {
            continue;
        };
        for declared in &vsec.spec.data {
            if fields.get(format!("f:{}", declared.key)).is_some() {
                owners.push((manager.to_owned(), format!(".stringData.{}", declared.key)));
            }
        }
    }
    owners
}

/// Refuses to touch a Secret this VaultSecret may not write; the message says who else
/// holds it and how to let this VaultSecret in. Ownership is judged by uid and by what the
/// API server recorded, never by a name in an annotation alone:
/// - Owner and Orphan write a Secret controlled by this VaultSecret (ownerReference uid),
///   or one whose `vaultsync.io/source-uid` mark is this VaultSecret's uid and that no one
///   else controls (re-adoption of a stripped ownerReference). A Merge target is never
///   taken, not even one this VaultSecret merged into before switching policy.
/// - Merge writes a Secret whose owner lists this VaultSecret in `vaultsync.io/merge-from`,
///   one it created itself (`vaultsync.io/created-by` is its uid), or one it owns.
pub fn ensure_not_foreign(existing: Option<&ObjectMeta>, vsec: &VaultSecret) -> Result<(), String> {
    let Some(meta) = existing else { return Ok(()) };
    let uid = uid_of(vsec);
    let name = meta.name.clone().unwrap_or_default();
    let controller = controller_owner(meta);
    if controller.is_some_and(|owner| owner.uid == uid) {
        return Ok(());
    }
    let ours_by_mark = controller.is_none() && annotation(meta, SOURCE_UID_ANNOTATION) == Some(uid);
    match vsec.spec.target.creation_policy {
        CreationPolicy::Owner | CreationPolicy::Orphan => {
            if let Some(owner) = controller {
                return Err(format!(
                    "Secret '{name}' exists and is controlled by {} '{}'; it is left untouched",
                    owner.kind, owner.name
                ));
            }
            if is_merge_target(meta) {
                return Err(format!(
                    "Secret '{name}' is shared by creationPolicy Merge writers (vaultsync.io/merge-from or their marks); it never gets an ownerReference, which would delete it with every writer's keys, and it is left untouched (keep creationPolicy Merge, or choose another target.name)"
                ));
            }
            if ours_by_mark || legacy_owner_or_orphan(meta, vsec) {
                return Ok(());
            }
            Err(format!(
                "Secret '{name}' exists and was not created by this VaultSecret; it is left untouched (delete it, or let this VaultSecret in with creationPolicy Merge and the annotation {MERGE_FROM_ANNOTATION}: {} on the Secret)",
                vsec.name_any()
            ))
        }
        CreationPolicy::Merge => {
            let taken = string_data_owners(meta, vsec);
            if !taken.is_empty() {
                return Err(super::write::conflict_message(&name, &taken));
            }
            if merge_from(meta).any(|n| n == vsec.name_any())
                || annotation(meta, CREATED_BY_ANNOTATION) == Some(uid)
                || ours_by_mark
                || legacy_merge_writer(meta, vsec)
            {
                return Ok(());
            }
            Err(format!(
                "Secret '{name}' exists and its owner has not let this VaultSecret merge into it; it is left untouched (the Secret's owner adds '{}' to its annotation {MERGE_FROM_ANNOTATION}, a comma-separated list of VaultSecret names, or choose another target.name)",
                vsec.name_any()
            ))
        }
    }
}

/// The keys of `secret` this VaultSecret declares, with their bytes, whatever the policy:
/// keys someone else added are theirs, so they are neither drift nor churned (server-side
/// apply leaves fields of other managers alone).
pub fn managed_data<'a>(secret: &'a Secret, vsec: &VaultSecret) -> Vec<(&'a str, &'a [u8])> {
    let data = secret.data.as_ref();
    vsec.spec
        .data
        .iter()
        .filter_map(|entry| data?.get_key_value(&entry.key))
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
        .collect()
}

/// What the existing Secret looks like against what was last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretState {
    Missing,
    /// Its managed data no longer hashes to the recorded hash.
    DataDrifted,
    /// Data intact, but marks, labels, annotations, type or owner differ from the spec.
    MetadataDrifted,
    /// In sync, but with the marks of an earlier version: an unkeyed data hash (a plain
    /// SHA-256 that matches the data), no `vaultsync.io/source-uid`, or, for a Merge writer,
    /// the shared marks instead of its own. No Key Vault read and no Event: only the marks
    /// are rewritten.
    LegacyMarks,
    InSync,
}

pub fn secret_state(
    existing: Option<&Secret>,
    vsec: &VaultSecret,
    key: &DataHashKey,
) -> SecretState {
    let Some(secret) = existing else {
        return SecretState::Missing;
    };
    let merge = vsec.spec.target.creation_policy == CreationPolicy::Merge;
    let hash_key = hash_annotation(vsec);
    let recorded = secret.annotations().get(&hash_key).map(String::as_str);
    let data = managed_data(secret, vsec);
    if merge
        && recorded.is_none()
        && !secret.annotations().contains_key(&merged_by_key(vsec))
        && applied_by(&secret.metadata, &field_manager(vsec))
    {
        // Written by this writer under the shared marks of an earlier version, which any
        // other Merge writer may have rewritten since: its keys are taken as they stand,
        // and it gets marks of its own. The next refresh reads Key Vault as usual.
        return if data.len() == vsec.spec.data.len() {
            SecretState::LegacyMarks
        } else {
            SecretState::DataDrifted
        };
    }
    let hash = check_recorded(recorded, key, &data);
    if hash == HashMatch::Neither {
        return SecretState::DataDrifted;
    }
    // The recorded hash matches the data (checked above); the other marks are compared.
    let wanted = desired_metadata(vsec, Some(&secret.metadata), recorded.unwrap_or_default());
    let labels_ok = wanted
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| secret.labels().get(k) == Some(v));
    let annotations_ok = wanted
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| *k != SOURCE_UID_ANNOTATION)
        .all(|(k, v)| secret.annotations().get(k) == Some(v));
    let uid_mark = secret.annotations().get(SOURCE_UID_ANNOTATION);
    let uid_mark_ok = merge || uid_mark.is_none_or(|u| u == uid_of(vsec));
    let type_ok = merge
        || secret.type_.as_deref().unwrap_or("Opaque")
            == vsec.spec.target.type_.as_deref().unwrap_or("Opaque");
    let owner_ok = match vsec.spec.target.creation_policy {
        CreationPolicy::Owner => owned_by(&secret.metadata, vsec),
        _ => true,
    };
    if !(labels_ok && annotations_ok && uid_mark_ok && type_ok && owner_ok) {
        SecretState::MetadataDrifted
    } else if hash == HashMatch::Legacy || (!merge && uid_mark.is_none()) {
        SecretState::LegacyMarks
    } else {
        SecretState::InSync
    }
}

/// The metadata this VaultSecret writes onto the Secret (`existing`: the Secret as read,
/// `None` when it is about to be created).
fn desired_metadata(vsec: &VaultSecret, existing: Option<&ObjectMeta>, hash: &str) -> ObjectMeta {
    let target = &vsec.spec.target;
    let mut labels = target.labels.clone();
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned());
    let mut annotations = target.annotations.clone();
    match target.creation_policy {
        CreationPolicy::Merge => {
            annotations.insert(merged_by_key(vsec), vsec.name_any());
            // Set when this writer creates the Secret, and kept while it is the creator
            // (server-side apply would drop a field its manager stops sending).
            let creator = existing
                .is_none_or(|meta| annotation(meta, CREATED_BY_ANNOTATION) == Some(uid_of(vsec)));
            if creator {
                annotations.insert(CREATED_BY_ANNOTATION.to_owned(), uid_of(vsec).to_owned());
            }
        }
        CreationPolicy::Owner | CreationPolicy::Orphan => {
            annotations.insert(SOURCE_ANNOTATION.to_owned(), source_of(vsec));
            annotations.insert(SOURCE_UID_ANNOTATION.to_owned(), uid_of(vsec).to_owned());
        }
    }
    annotations.insert(hash_annotation(vsec), hash.to_owned());
    let owner_references = match target.creation_policy {
        CreationPolicy::Owner => vsec.controller_owner_ref(&()).map(|r| vec![r]),
        CreationPolicy::Merge | CreationPolicy::Orphan => None,
    };
    ObjectMeta {
        name: Some(vsec.target_name()),
        namespace: vsec.namespace(),
        labels: Some(labels),
        annotations: Some(annotations),
        owner_references,
        ..Default::default()
    }
}

/// How the type of an existing Secret stands against `target.type`. Kubernetes never
/// changes a Secret's type in place (the field is immutable), so a new type means a new
/// Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeChange {
    /// No Secret yet, or the types agree (for Merge: `target.type` unset, or equal).
    None,
    /// An Owner or Orphan Secret of another type: delete it (uid precondition) and create
    /// it again with the new type.
    Recreate { from: String, to: String },
    /// A Merge target of another type: it is shared with other writers, so it is never
    /// re-created; the spec is refused instead.
    RefusedForMerge { from: String, to: String },
}

/// Compares the existing Secret's type (absent = `Opaque`, as the API server defaults it)
/// with the spec's.
pub fn type_change(existing: Option<&Secret>, vsec: &VaultSecret) -> TypeChange {
    let Some(secret) = existing else {
        return TypeChange::None;
    };
    let from = secret.type_.as_deref().unwrap_or("Opaque");
    let wanted = vsec.spec.target.type_.as_deref();
    match vsec.spec.target.creation_policy {
        CreationPolicy::Merge => match wanted {
            Some(to) if to != from => TypeChange::RefusedForMerge {
                from: from.to_owned(),
                to: to.to_owned(),
            },
            _ => TypeChange::None,
        },
        CreationPolicy::Owner | CreationPolicy::Orphan => {
            let to = wanted.unwrap_or("Opaque");
            if to == from {
                TypeChange::None
            } else {
                TypeChange::Recreate {
                    from: from.to_owned(),
                    to: to.to_owned(),
                }
            }
        }
    }
}

/// The Secret to apply: this VaultSecret's keys and marks, nothing else (server-side
/// apply leaves other managers' fields alone). `existing` is the Secret as read, `None`
/// when it is to be created.
pub fn desired_secret(
    vsec: &VaultSecret,
    existing: Option<&ObjectMeta>,
    data: &BTreeMap<String, SecretBytes>,
    key: &DataHashKey,
) -> Secret {
    let hash = key.data_hash(data.iter().map(|(k, v)| (k.as_str(), v.expose())));
    Secret {
        metadata: desired_metadata(vsec, existing, &hash),
        type_: match vsec.spec.target.creation_policy {
            // The type of a Secret merged into is its owner's business (and immutable):
            // set only when the spec names one, which `type_change` has checked agrees.
            CreationPolicy::Merge => vsec.spec.target.type_.clone(),
            _ => Some(
                vsec.spec
                    .target
                    .type_
                    .clone()
                    .unwrap_or_else(|| "Opaque".to_owned()),
            ),
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The managed data of an existing Secret whose data is intact, to re-apply it with
/// repaired metadata without reading Key Vault.
pub fn existing_managed_data(secret: &Secret, vsec: &VaultSecret) -> BTreeMap<String, SecretBytes> {
    managed_data(secret, vsec)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), SecretBytes::new(v.to_vec())))
        .collect()
}

/// Entries pinned to the version already synced, with their bytes from an intact Secret:
/// a pinned version is immutable, so a refresh keeps them without reading Key Vault.
pub fn pinned_and_intact(
    secret: &Secret,
    vsec: &VaultSecret,
    synced_versions: &BTreeMap<String, String>,
) -> BTreeMap<String, (SecretBytes, String)> {
    let data = secret.data.as_ref();
    vsec.spec
        .data
        .iter()
        .filter_map(|entry| {
            let version = entry.remote_ref.pinned_version()?;
            (synced_versions.get(&entry.key).map(String::as_str) == Some(version)).then_some(())?;
            let bytes = data?.get(&entry.key)?;
            Some((
                entry.key.clone(),
                (SecretBytes::new(bytes.0.clone()), version.to_owned()),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DataEntry, RemoteRef, TargetSpec, VaultSecretSpec};

    fn vsec(policy: CreationPolicy) -> VaultSecret {
        let mut v = VaultSecret::new(
            "app",
            VaultSecretSpec {
                vault_url: "https://v.vault.azure.net".into(),
                identity: None,
                refresh_interval: "1h".into(),
                suspend: false,
                data: vec![DataEntry {
                    key: "password".into(),
                    remote_ref: RemoteRef {
                        name: "db".into(),
                        version: None,
                        property: None,
                        decoding: Default::default(),
                        certificate: None,
                    },
                }],
                target: TargetSpec {
                    creation_policy: policy,
                    labels: [("team".to_owned(), "a".to_owned())].into(),
                    ..Default::default()
                },
                rollout_restart_targets: Vec::new(),
            },
        );
        v.metadata.namespace = Some("ns".into());
        v.metadata.uid = Some("uid-1".into());
        v
    }

    fn key() -> DataHashKey {
        DataHashKey::from_bytes(&[9; crate::controller::data_hash::KEY_LEN]).unwrap()
    }

    fn data(v: &str) -> BTreeMap<String, SecretBytes> {
        [(
            "password".to_owned(),
            SecretBytes::new(v.as_bytes().to_vec()),
        )]
        .into()
    }

    #[test]
    fn desired_secret_carries_marks_owner_and_type() {
        let v = vsec(CreationPolicy::Owner);
        let s = desired_secret(&v, None, &data("x"), &key());
        assert_eq!(s.labels()[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
        assert_eq!(s.labels()["team"], "a");
        assert_eq!(s.annotations()[SOURCE_ANNOTATION], "ns/app");
        assert_eq!(
            s.annotations()[DATA_HASH_ANNOTATION],
            key().data_hash([("password", b"x".as_slice())])
        );
        assert_eq!(s.owner_references()[0].uid, "uid-1");
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        let merged = desired_secret(&vsec(CreationPolicy::Merge), None, &data("x"), &key());
        assert!(merged.owner_references().is_empty());
        assert_eq!(merged.type_, None);
        assert!(
            desired_secret(&vsec(CreationPolicy::Orphan), None, &data("x"), &key())
                .owner_references()
                .is_empty()
        );
    }

    #[test]
    fn state_tells_missing_data_drift_metadata_drift_and_in_sync() {
        let v = vsec(CreationPolicy::Owner);
        assert_eq!(secret_state(None, &v, &key()), SecretState::Missing);
        let written = desired_secret(&v, None, &data("x"), &key());
        assert_eq!(
            secret_state(Some(&written), &v, &key()),
            SecretState::InSync
        );
        let mut edited = written.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("password".into(), ByteString(b"changed".to_vec()));
        assert_eq!(
            secret_state(Some(&edited), &v, &key()),
            SecretState::DataDrifted
        );
        let mut relabeled = written.clone();
        relabeled.metadata.labels.as_mut().unwrap().remove("team");
        assert_eq!(
            secret_state(Some(&relabeled), &v, &key()),
            SecretState::MetadataDrifted
        );
    }

    #[test]
    fn an_old_plain_hash_that_matches_is_in_sync_and_only_the_mark_is_stale() {
        use crate::controller::data_hash::legacy_data_hash;
        let v = vsec(CreationPolicy::Owner);
        let mut old = desired_secret(&v, None, &data("x"), &key());
        old.metadata.annotations.as_mut().unwrap().insert(
            DATA_HASH_ANNOTATION.into(),
            legacy_data_hash([("password", b"x".as_slice())]),
        );
        assert_eq!(
            secret_state(Some(&old), &v, &key()),
            SecretState::LegacyMarks
        );
        // Rewritten, it is in sync under the key.
        let rewritten = desired_secret(&v, None, &existing_managed_data(&old, &v), &key());
        assert_eq!(
            secret_state(Some(&rewritten), &v, &key()),
            SecretState::InSync
        );
        // Written before the uid mark existed: only the marks are stale.
        let mut no_uid = rewritten.clone();
        no_uid
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(SOURCE_UID_ANNOTATION);
        assert_eq!(
            secret_state(Some(&no_uid), &v, &key()),
            SecretState::LegacyMarks
        );
        // A label gone as well: repaired as metadata drift (which rewrites the mark too).
        let mut relabeled = old.clone();
        relabeled.metadata.labels.as_mut().unwrap().remove("team");
        assert_eq!(
            secret_state(Some(&relabeled), &v, &key()),
            SecretState::MetadataDrifted
        );
        // Data edited since the old mark was written: drift, read Key Vault again.
        let mut edited = old.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("password".into(), ByteString(b"y".to_vec()));
        assert_eq!(
            secret_state(Some(&edited), &v, &key()),
            SecretState::DataDrifted
        );
        // A keyed mark of another key is not trusted either.
        let other = DataHashKey::from_bytes(&[1; crate::controller::data_hash::KEY_LEN]).unwrap();
        assert_eq!(
            secret_state(Some(&rewritten), &v, &other),
            SecretState::DataDrifted
        );
    }

    #[test]
    fn only_pinned_entries_at_their_synced_version_are_kept() {
        let mut v = vsec(CreationPolicy::Owner);
        let pinned = "0123456789abcdef0123456789abcdef";
        v.spec.data[0].remote_ref.version = Some(pinned.into());
        v.spec.data.push(DataEntry {
            key: "current".into(),
            remote_ref: RemoteRef {
                name: "other".into(),
                version: None,
                property: None,
                decoding: Default::default(),
                certificate: None,
            },
        });
        let mut both = data("x");
        both.insert("current".into(), SecretBytes::new(b"y".to_vec()));
        let secret = desired_secret(&v, None, &both, &key());
        let synced: BTreeMap<String, String> = [
            ("password".to_owned(), pinned.to_owned()),
            ("current".to_owned(), "f".repeat(32)),
        ]
        .into();
        let kept = pinned_and_intact(&secret, &v, &synced);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["password"]);
        assert_eq!(kept["password"].0.expose(), b"x");
        let other_version: BTreeMap<String, String> =
            [("password".to_owned(), "a".repeat(32))].into();
        assert!(
            pinned_and_intact(&secret, &v, &other_version).is_empty(),
            "a newly pinned version is read"
        );
    }

    #[test]
    fn every_policy_only_considers_its_declared_keys() {
        for policy in [
            CreationPolicy::Merge,
            CreationPolicy::Owner,
            CreationPolicy::Orphan,
        ] {
            let v = vsec(policy);
            let mut s = desired_secret(&v, None, &data("x"), &key());
            s.data
                .as_mut()
                .unwrap()
                .insert("someone-else".into(), ByteString(b"1".to_vec()));
            assert_eq!(
                secret_state(Some(&s), &v, &key()),
                SecretState::InSync,
                "{policy:?}"
            );
            s.data.as_mut().unwrap().remove("password");
            assert_eq!(
                secret_state(Some(&s), &v, &key()),
                SecretState::DataDrifted,
                "{policy:?}"
            );
        }
    }

    fn annotated(pairs: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("app".into()),
            namespace: Some("ns".into()),
            annotations: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn foreign_secrets_are_refused_and_adoption_is_by_uid() {
        let v = vsec(CreationPolicy::Owner);
        let ours = desired_secret(&v, None, &data("x"), &key()).metadata;
        assert!(ensure_not_foreign(Some(&ours), &v).is_ok());
        assert!(ensure_not_foreign(None, &v).is_ok());
        let plain = annotated(&[]);
        let err = ensure_not_foreign(Some(&plain), &v).unwrap_err();
        assert!(err.contains("not created by this VaultSecret"), "{err}");
        let mut other_owner = ours.clone();
        other_owner.owner_references.as_mut().unwrap()[0].uid = "someone".into();
        other_owner.owner_references.as_mut().unwrap()[0].name = "other".into();
        assert!(
            ensure_not_foreign(Some(&other_owner), &v)
                .unwrap_err()
                .contains("controlled by VaultSecret 'other'")
        );
        assert!(ensure_not_foreign(Some(&plain), &vsec(CreationPolicy::Orphan)).is_err());
        // Written earlier under Orphan, ownerReference gone: adopted by its uid mark...
        let orphaned =
            desired_secret(&vsec(CreationPolicy::Orphan), None, &data("x"), &key()).metadata;
        assert!(ensure_not_foreign(Some(&orphaned), &v).is_ok());
        // ...but not by a VaultSecret re-created with the same name (a new uid), although
        // the name annotation matches.
        let mut successor = vsec(CreationPolicy::Owner);
        successor.metadata.uid = Some("uid-2".into());
        let err = ensure_not_foreign(Some(&orphaned), &successor).unwrap_err();
        assert!(err.contains("not created by this VaultSecret"), "{err}");
        // The name annotation alone adopts nothing.
        let named = annotated(&[(SOURCE_ANNOTATION, "ns/app")]);
        assert!(ensure_not_foreign(Some(&named), &v).is_err());
    }

    fn managed_by(
        meta: &mut ObjectMeta,
        manager: &str,
        operation: &str,
        fields: serde_json::Value,
    ) {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
        meta.managed_fields
            .get_or_insert_with(Vec::new)
            .push(ManagedFieldsEntry {
                manager: Some(manager.into()),
                operation: Some(operation.into()),
                fields_type: Some("FieldsV1".into()),
                fields_v1: Some(FieldsV1(fields)),
                ..Default::default()
            });
    }

    #[test]
    fn a_key_another_manager_wrote_through_string_data_is_an_ownership_conflict() {
        let merge = vsec(CreationPolicy::Merge);
        let mut theirs = annotated(&[(MERGE_FROM_ANNOTATION, "app")]);
        managed_by(
            &mut theirs,
            "team-b",
            "Apply",
            serde_json::json!({"f:stringData": {"f:password": {}}}),
        );
        let err = ensure_not_foreign(Some(&theirs), &merge).unwrap_err();
        assert!(
            err.contains("\"team-b\"") && err.contains(".stringData.password"),
            "{err}"
        );
        // Another key of theirs is theirs alone: no conflict.
        let mut other_key = annotated(&[(MERGE_FROM_ANNOTATION, "app")]);
        managed_by(
            &mut other_key,
            "team-b",
            "Apply",
            serde_json::json!({"f:stringData": {"f:username": {}}}),
        );
        assert!(ensure_not_foreign(Some(&other_key), &merge).is_ok());
    }

    #[test]
    fn a_merge_writer_re_created_with_its_predecessors_name_is_no_legacy_writer() {
        let merge = vsec(CreationPolicy::Merge);
        // Written by an earlier version (only `vaultsync/<name>` managers, no uid marks):
        // its writer keeps writing it.
        let mut legacy = annotated(&[]);
        managed_by(
            &mut legacy,
            "vaultsync/app",
            "Apply",
            serde_json::json!({"f:data": {"f:password": {}}}),
        );
        assert!(ensure_not_foreign(Some(&legacy), &merge).is_ok());
        // Created by a current writer, since deleted: a successor of the same name is not
        // let in by the name-derived field manager.
        let mut created = desired_secret(&merge, None, &data("x"), &key()).metadata;
        managed_by(
            &mut created,
            "vaultsync/app",
            "Apply",
            serde_json::json!({"f:data": {"f:password": {}}}),
        );
        let mut successor = vsec(CreationPolicy::Merge);
        successor.metadata.uid = Some("uid-2".into());
        assert!(ensure_not_foreign(Some(&created), &successor).is_err());
        // Merged into (not created) by a predecessor of the same name: likewise.
        let mut merged = annotated(&[(&format!("{MERGED_BY_PREFIX}uid-1"), "app")]);
        managed_by(
            &mut merged,
            "vaultsync/app",
            "Apply",
            serde_json::json!({"f:data": {"f:password": {}}}),
        );
        assert!(ensure_not_foreign(Some(&merged), &successor).is_err());
        assert!(ensure_not_foreign(Some(&merged), &merge).is_ok());
    }

    #[test]
    fn merge_writes_only_where_let_in_and_owner_never_takes_a_merge_target() {
        let merge = vsec(CreationPolicy::Merge);
        let plain = annotated(&[]);
        let err = ensure_not_foreign(Some(&plain), &merge).unwrap_err();
        assert!(err.contains(MERGE_FROM_ANNOTATION), "{err}");
        assert!(
            ensure_not_foreign(
                Some(&annotated(&[(MERGE_FROM_ANNOTATION, "other, app")])),
                &merge
            )
            .is_ok()
        );
        assert!(
            ensure_not_foreign(
                Some(&annotated(&[(MERGE_FROM_ANNOTATION, "application")])),
                &merge
            )
            .is_err()
        );
        // The Secret it created itself, and only that writer (by uid).
        let created = desired_secret(&merge, None, &data("x"), &key()).metadata;
        assert_eq!(
            created.annotations.as_ref().unwrap()[CREATED_BY_ANNOTATION],
            "uid-1"
        );
        assert!(ensure_not_foreign(Some(&created), &merge).is_ok());
        let mut successor = vsec(CreationPolicy::Merge);
        successor.metadata.uid = Some("uid-2".into());
        assert!(ensure_not_foreign(Some(&created), &successor).is_err());
        // Switched to Owner or Orphan: a Merge target gets no ownerReference, not even
        // from the writer that created it.
        for policy in [CreationPolicy::Owner, CreationPolicy::Orphan] {
            let err = ensure_not_foreign(Some(&created), &vsec(policy)).unwrap_err();
            assert!(err.contains("shared"), "{err}");
            let err = ensure_not_foreign(
                Some(&annotated(&[(MERGE_FROM_ANNOTATION, "app")])),
                &vsec(policy),
            )
            .unwrap_err();
            assert!(err.contains("shared"), "{err}");
        }
        // A later writer keeps the creator's mark as it is, and writes its own.
        let mut second = vsec(CreationPolicy::Merge);
        second.metadata.name = Some("second".into());
        second.metadata.uid = Some("uid-3".into());
        let written = desired_secret(&second, Some(&created), &data("y"), &key()).metadata;
        let annotations = written.annotations.unwrap();
        assert!(!annotations.contains_key(CREATED_BY_ANNOTATION));
        assert_eq!(annotations["vaultsync.io/merged-by.uid-3"], "second");
        assert!(annotations.contains_key("vaultsync.io/data-hash.uid-3"));
        assert!(!annotations.contains_key(DATA_HASH_ANNOTATION));
        assert!(!annotations.contains_key(SOURCE_ANNOTATION));
    }

    #[test]
    fn the_secret_watch_maps_a_secret_to_every_writer() {
        let meta = annotated(&[
            (SOURCE_ANNOTATION, "ns/owner"),
            ("vaultsync.io/merged-by.uid-1", "one"),
            ("vaultsync.io/merged-by.uid-2", "two"),
            (MERGE_FROM_ANNOTATION, "two, three"),
        ]);
        assert_eq!(writers_of(&meta), ["one", "owner", "three", "two"]);
        // A source in another namespace names nothing here.
        let elsewhere = annotated(&[(SOURCE_ANNOTATION, "other/owner")]);
        assert!(writers_of(&elsewhere).is_empty());
    }

    #[test]
    fn merge_writers_have_marks_of_their_own_and_see_no_drift_in_each_others_writes() {
        let one = vsec(CreationPolicy::Merge);
        let mut two = vsec(CreationPolicy::Merge);
        two.metadata.name = Some("two".into());
        two.metadata.uid = Some("uid-2".into());
        two.spec.data[0].key = "user".into();
        let mut secret = desired_secret(&one, None, &data("x"), &key());
        let twos = desired_secret(
            &two,
            Some(&secret.metadata),
            &[("user".to_owned(), SecretBytes::new(b"u".to_vec()))].into(),
            &key(),
        );
        // What the API server holds after both applies: both keys, both sets of marks.
        secret.data.as_mut().unwrap().extend(twos.data.unwrap());
        secret
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .extend(twos.metadata.annotations.unwrap());
        assert_eq!(
            secret_state(Some(&secret), &one, &key()),
            SecretState::InSync
        );
        assert_eq!(
            secret_state(Some(&secret), &two, &key()),
            SecretState::InSync
        );
        // An edit of one writer's key is that writer's drift only.
        secret
            .data
            .as_mut()
            .unwrap()
            .insert("user".into(), ByteString(b"edited".to_vec()));
        assert_eq!(
            secret_state(Some(&secret), &one, &key()),
            SecretState::InSync
        );
        assert_eq!(
            secret_state(Some(&secret), &two, &key()),
            SecretState::DataDrifted
        );
    }

    #[test]
    fn a_new_type_recreates_owned_secrets_and_is_refused_for_merge() {
        let typed = |type_: Option<&str>| Secret {
            type_: type_.map(str::to_owned),
            ..Default::default()
        };
        let mut owner = vsec(CreationPolicy::Owner);
        assert_eq!(type_change(None, &owner), TypeChange::None);
        assert_eq!(type_change(Some(&typed(None)), &owner), TypeChange::None);
        owner.spec.target.type_ = Some("kubernetes.io/basic-auth".into());
        assert_eq!(
            type_change(Some(&typed(Some("Opaque"))), &owner),
            TypeChange::Recreate {
                from: "Opaque".into(),
                to: "kubernetes.io/basic-auth".into()
            }
        );
        let mut merge = vsec(CreationPolicy::Merge);
        assert_eq!(
            type_change(Some(&typed(Some("kubernetes.io/tls"))), &merge),
            TypeChange::None,
            "Merge without a type leaves the Secret's alone"
        );
        merge.spec.target.type_ = Some("kubernetes.io/basic-auth".into());
        assert_eq!(
            type_change(Some(&typed(None)), &merge),
            TypeChange::RefusedForMerge {
                from: "Opaque".into(),
                to: "kubernetes.io/basic-auth".into()
            }
        );
    }
}
