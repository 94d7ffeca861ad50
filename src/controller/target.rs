//! The target Secret: who may write it, what it should look like, and whether it drifted.
//! Pure functions; `controller::apply` does the writing.

use crate::api::{
    CreationPolicy, DATA_HASH_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SOURCE_ANNOTATION,
    VaultSecret,
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

fn controller_owner(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

pub fn owned_by(meta: &ObjectMeta, vsec: &VaultSecret) -> bool {
    controller_owner(meta).is_some_and(|r| Some(&r.uid) == vsec.meta().uid.as_ref())
}

/// Refuses to touch a Secret this VaultSecret may not write; the message says who else
/// holds it.
pub fn ensure_not_foreign(existing: Option<&ObjectMeta>, vsec: &VaultSecret) -> Result<(), String> {
    let Some(meta) = existing else { return Ok(()) };
    let policy = vsec.spec.target.creation_policy;
    if policy == CreationPolicy::Merge {
        return Ok(());
    }
    let name = meta.name.clone().unwrap_or_default();
    if let Some(owner) = controller_owner(meta) {
        if Some(&owner.uid) == vsec.meta().uid.as_ref() {
            return Ok(());
        }
        return Err(format!(
            "Secret '{name}' exists and is controlled by {} '{}'; it is left untouched",
            owner.kind, owner.name
        ));
    }
    // A Secret this VaultSecret wrote earlier under Orphan may be adopted.
    let source = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(SOURCE_ANNOTATION));
    if source == Some(&source_of(vsec)) {
        return Ok(());
    }
    Err(format!(
        "Secret '{name}' exists and was not created by this VaultSecret; it is left untouched (delete it, or use creationPolicy Merge)"
    ))
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretState {
    Missing,
    /// Its managed data no longer hashes to the recorded hash.
    DataDrifted,
    /// Data intact, but marks, labels, annotations, type or owner differ from the spec.
    MetadataDrifted,
    /// In sync, but the data hash is in the old unkeyed form (a plain SHA-256 that matches
    /// the data): no Key Vault read and no Event, only the mark is rewritten.
    LegacyHash,
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
    let recorded = secret
        .annotations()
        .get(DATA_HASH_ANNOTATION)
        .map(String::as_str);
    let hash = check_recorded(recorded, key, &managed_data(secret, vsec));
    if hash == HashMatch::Neither {
        return SecretState::DataDrifted;
    }
    // The recorded hash matches the data (checked above); the other marks are compared.
    let wanted = desired_metadata(vsec, recorded.unwrap_or_default());
    let labels_ok = wanted
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| secret.labels().get(k) == Some(v));
    let annotations_ok = wanted
        .annotations
        .iter()
        .flatten()
        .all(|(k, v)| secret.annotations().get(k) == Some(v));
    let type_ok = vsec.spec.target.creation_policy == CreationPolicy::Merge
        || secret.type_.as_deref().unwrap_or("Opaque")
            == vsec.spec.target.type_.as_deref().unwrap_or("Opaque");
    let owner_ok = match vsec.spec.target.creation_policy {
        CreationPolicy::Owner => owned_by(&secret.metadata, vsec),
        _ => true,
    };
    if !(labels_ok && annotations_ok && type_ok && owner_ok) {
        SecretState::MetadataDrifted
    } else if hash == HashMatch::Legacy {
        SecretState::LegacyHash
    } else {
        SecretState::InSync
    }
}

fn desired_metadata(vsec: &VaultSecret, hash: &str) -> ObjectMeta {
    let target = &vsec.spec.target;
    let mut labels = target.labels.clone();
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned());
    let mut annotations = target.annotations.clone();
    annotations.insert(SOURCE_ANNOTATION.to_owned(), source_of(vsec));
    annotations.insert(DATA_HASH_ANNOTATION.to_owned(), hash.to_owned());
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
/// apply leaves other managers' fields alone).
pub fn desired_secret(
    vsec: &VaultSecret,
    data: &BTreeMap<String, SecretBytes>,
    key: &DataHashKey,
) -> Secret {
    let hash = key.data_hash(data.iter().map(|(k, v)| (k.as_str(), v.expose())));
    Secret {
        metadata: desired_metadata(vsec, &hash),
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
                    },
                }],
                target: TargetSpec {
                    creation_policy: policy,
                    labels: [("team".to_owned(), "a".to_owned())].into(),
                    ..Default::default()
                },
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
        let s = desired_secret(&v, &data("x"), &key());
        assert_eq!(s.labels()[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
        assert_eq!(s.labels()["team"], "a");
        assert_eq!(s.annotations()[SOURCE_ANNOTATION], "ns/app");
        assert_eq!(
            s.annotations()[DATA_HASH_ANNOTATION],
            key().data_hash([("password", b"x".as_slice())])
        );
        assert_eq!(s.owner_references()[0].uid, "uid-1");
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        let merged = desired_secret(&vsec(CreationPolicy::Merge), &data("x"), &key());
        assert!(merged.owner_references().is_empty());
        assert_eq!(merged.type_, None);
        assert!(
            desired_secret(&vsec(CreationPolicy::Orphan), &data("x"), &key())
                .owner_references()
                .is_empty()
        );
    }

    #[test]
    fn state_tells_missing_data_drift_metadata_drift_and_in_sync() {
        let v = vsec(CreationPolicy::Owner);
        assert_eq!(secret_state(None, &v, &key()), SecretState::Missing);
        let written = desired_secret(&v, &data("x"), &key());
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
        let mut old = desired_secret(&v, &data("x"), &key());
        old.metadata.annotations.as_mut().unwrap().insert(
            DATA_HASH_ANNOTATION.into(),
            legacy_data_hash([("password", b"x".as_slice())]),
        );
        assert_eq!(
            secret_state(Some(&old), &v, &key()),
            SecretState::LegacyHash
        );
        // Rewritten, it is in sync under the key.
        let rewritten = desired_secret(&v, &existing_managed_data(&old, &v), &key());
        assert_eq!(
            secret_state(Some(&rewritten), &v, &key()),
            SecretState::InSync
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
            },
        });
        let mut both = data("x");
        both.insert("current".into(), SecretBytes::new(b"y".to_vec()));
        let secret = desired_secret(&v, &both, &key());
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
            let mut s = desired_secret(&v, &data("x"), &key());
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

    #[test]
    fn foreign_secrets_are_refused_unless_merging() {
        let v = vsec(CreationPolicy::Owner);
        let ours = desired_secret(&v, &data("x"), &key()).metadata;
        assert!(ensure_not_foreign(Some(&ours), &v).is_ok());
        let plain = ObjectMeta {
            name: Some("app".into()),
            ..Default::default()
        };
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
        assert!(ensure_not_foreign(Some(&plain), &vsec(CreationPolicy::Merge)).is_ok());
        assert!(ensure_not_foreign(Some(&plain), &vsec(CreationPolicy::Orphan)).is_err());
        // Written earlier under Orphan (source annotation, no owner): adopted.
        let orphaned = desired_secret(&vsec(CreationPolicy::Orphan), &data("x"), &key()).metadata;
        assert!(ensure_not_foreign(Some(&orphaned), &v).is_ok());
        assert!(ensure_not_foreign(None, &v).is_ok());
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
