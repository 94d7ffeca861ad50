//! Writing the target Secret: every write carries the state it was decided on. An absent
//! Secret is created (a Secret created meanwhile by someone else makes it fail with 409
//! AlreadyExists), an existing one is server-side applied with its `resourceVersion` as a
//! precondition, and a type change deletes with uid and `resourceVersion` preconditions.
//! A Secret changed since it was read is [`Written::Stale`]: decide again, quietly. Merge
//! writers apply without force, so a key another field manager owns is an
//! `OwnershipConflict` naming that manager, and nothing is written.

use super::{Context, Error, EventType, Failure, Stop, publish, target};
use crate::api::{
    CreationPolicy, DATA_HASH_ANNOTATION, Reason, SOURCE_UID_ANNOTATION, VaultSecret,
};
use crate::source::SecretBytes;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::Status;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// How soon a write that found the Secret changed is decided again: at once, give or take
/// the watch event that usually brings it back first.
pub const STALE_RETRY: Duration = Duration::from_secs(1);

/// How many times one reconcile writes the Secret when each write finds it changed since
/// it was read (409), deciding again on the Secret as it is now, before it gives up and
/// decides again from the start after [`STALE_RETRY`].
pub const WRITE_ATTEMPTS: u32 = 3;

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Done,
    /// The Secret changed (or appeared, or went) after it was read: nothing was written;
    /// the caller decides again on the new state.
    Stale,
}

/// Why the API server answered 409.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// The object is not as it was read (resourceVersion or uid precondition, or it was
    /// created meanwhile): decide again.
    Stale,
    /// Server-side apply without force: fields another field manager owns, as
    /// `(manager, field)` pairs from the Status's causes.
    Fields(Vec<(String, String)>),
}

/// Reads a 409 Status: field conflicts name their manager in each cause's message
/// (`conflict with "team-b" using v1`) and the field in the cause's field (`.data.password`);
/// any other 409 is a stale precondition.
pub fn conflict_of(status: &Status) -> Option<Conflict> {
    if status.code != 409 {
        return None;
    }
    let fields: Vec<(String, String)> = status
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .filter(|c| c.reason == "FieldManagerConflict")
        .map(|c| {
            let manager = c
                .message
                .split('"')
                .nth(1)
                .unwrap_or("another field manager");
            (manager.to_owned(), c.field.clone())
        })
        .collect();
    Some(if fields.is_empty() {
        Conflict::Stale
    } else {
        Conflict::Fields(fields)
    })
}

/// The `OwnershipConflict` message for fields other managers own: which keys, who owns
/// them, and that nothing was written.
pub fn conflict_message(target_name: &str, fields: &[(String, String)]) -> String {
    let mut managers: Vec<&str> = fields.iter().map(|(m, _)| m.as_str()).collect();
    managers.sort();
    managers.dedup();
    let mut paths: Vec<&str> = fields.iter().map(|(_, f)| f.as_str()).collect();
    paths.sort();
    paths.dedup();
    let managers = managers
        .iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "Secret '{target_name}': {} managed by field manager {managers}; creationPolicy Merge never takes fields another writer owns, so nothing was written and the Secret keeps its data (have {managers} stop managing them, or write other keys)",
        paths.join(", ")
    )
}

fn stale_or(error: kube::Error) -> Result<Written, Error> {
    match &error {
        kube::Error::Api(s) if s.code == 409 || s.code == 404 => Ok(Written::Stale),
        _ => Err(error.into()),
    }
}

/// The API server refusing the Secret itself (400/422: keys its type requires, or an
/// admission policy) is `InvalidSpec`, quoting the API server, retried with backoff (an
/// admission policy can change without any change of the spec); a field conflict is an
/// `OwnershipConflict`.
fn refusal(error: kube::Error, target_name: &str) -> Result<Written, Stop> {
    match error {
        kube::Error::Api(refused) if refused.code == 422 || refused.code == 400 => Err(Failure {
            retry: super::Retry::Transient,
            ..Failure::new(
                Reason::InvalidSpec,
                format!(
                    "the API server refused Secret '{target_name}': {}",
                    super::decide::redact_quoted_input(&refused.message)
                ),
            )
        }
        .into()),
        kube::Error::Api(status) => match conflict_of(&status) {
            Some(Conflict::Fields(fields)) => Err(Failure::new(
                Reason::OwnershipConflict,
                conflict_message(target_name, &fields),
            )
            .into()),
            Some(Conflict::Stale) => Ok(Written::Stale),
            None => Err(Error::Kube(kube::Error::Api(status)).into()),
        },
        other => Err(Error::Kube(other).into()),
    }
}

/// Writes the Secret as decided on `existing` (the Secret as read, `None` when absent).
/// An Owner or Orphan Secret whose type no longer matches `target.type` is deleted first
/// (uid and resourceVersion preconditions, so only the Secret that was read goes) and
/// created again, since Kubernetes never changes a Secret's type in place.
pub(super) async fn apply_secret(
    secrets: &Api<Secret>,
    vsec: &VaultSecret,
    existing: Option<&Secret>,
    data: &BTreeMap<String, SecretBytes>,
    ctx: &Context,
) -> Result<Written, Stop> {
    let name = vsec.target_name();
    let mut existing = existing;
    if let (target::TypeChange::Recreate { from, to }, Some(secret)) =
        (target::type_change(existing, vsec), existing)
    {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.metadata.uid.clone(),
                resource_version: secret.metadata.resource_version.clone(),
            }),
            ..Default::default()
        };
        if let Err(e) = secrets.delete(&name, &params).await {
            return Ok(stale_or(e)?);
        }
        let note = format!(
            "re-created Secret '{name}' to change its type from {from} to {to} (Kubernetes cannot change a Secret's type in place)"
        );
        publish(ctx, vsec, EventType::Normal, "Recreated", note).await;
        existing = None;
    }
    let manager = target::field_manager(vsec);
    let mut desired =
        target::desired_secret(vsec, existing.map(|s| &s.metadata), data, &ctx.hash_key);
    let Some(secret) = existing else {
        let params = PostParams {
            field_manager: Some(manager.clone()),
            ..Default::default()
        };
        let created = match secrets.create(&params, &desired).await {
            Ok(created) => created,
            Err(e) => return refusal(e, &name),
        };
        ctx.metrics.secret_writes.inc();
        ctx.own_writes.record(&created.metadata);
        if vsec.spec.target.creation_policy == CreationPolicy::Merge {
            // Best effort: a Secret changed meanwhile is claimed before the next write.
            claim_created_fields(secrets, &created, &manager).await?;
        }
        return Ok(Written::Done);
    };
    let mut resource_version = secret.resource_version();
    let mut force = true;
    if vsec.spec.target.creation_policy == CreationPolicy::Merge {
        force = false;
        match claim_created_fields(secrets, secret, &manager).await? {
            Claimed::Nothing => {}
            Claimed::Now(rv) => resource_version = Some(rv),
            Claimed::Stale => return Ok(Written::Stale),
        }
    }
    // The precondition: an apply to a Secret changed since it was read is refused (409).
    desired.metadata.resource_version = resource_version;
    let mut params = PatchParams::apply(&manager);
    params.force = force;
    match secrets.patch(&name, &params, &Patch::Apply(&desired)).await {
        Ok(written) => {
            ctx.metrics.secret_writes.inc();
            ctx.own_writes.record(&written.metadata);
            Ok(Written::Done)
        }
        Err(e) => refusal(e, &name),
    }
}

/// Whether the writer's own fields had to be claimed before its next apply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claimed {
    Nothing,
    /// Claimed; the Secret's new resourceVersion.
    Now(String),
    Stale,
}

/// The fields of a Secret this writer created (a create is recorded as an `Update` of its
/// field manager) handed to its server-side apply entry. Without this, its first apply
/// without force would conflict with its own create. Only this manager's entries are
/// changed, under a resourceVersion precondition.
async fn claim_created_fields(
    secrets: &Api<Secret>,
    secret: &Secret,
    manager: &str,
) -> Result<Claimed, Error> {
    let Some(entries) = claimed_entries(secret.metadata.managed_fields.as_deref(), manager) else {
        return Ok(Claimed::Nothing);
    };
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": secret.resource_version(),
            "managedFields": entries,
        }
    });
    match secrets
        .patch(
            &secret.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(claimed) => Ok(claimed
            .resource_version()
            .map(Claimed::Now)
            .unwrap_or(Claimed::Nothing)),
        Err(e) => stale_or(e).map(|_| Claimed::Stale),
    }
}

/// `entries` with `manager`'s `Update` entries folded into its `Apply` entry, or `None`
/// when it has none.
pub fn claimed_entries(
    entries: Option<&[ManagedFieldsEntry]>,
    manager: &str,
) -> Option<Vec<ManagedFieldsEntry>> {
    let entries = entries?;
    let ours = |e: &ManagedFieldsEntry, op: &str| {
        e.manager.as_deref() == Some(manager) && e.operation.as_deref() == Some(op)
    };
    if !entries.iter().any(|e| ours(e, "Update")) {
        return None;
    }
    let mut fields = serde_json::Value::Object(Default::default());
    let mut api_version = None;
    for entry in entries
        .iter()
        .filter(|e| ours(e, "Update") || ours(e, "Apply"))
    {
        if let Some(f) = &entry.fields_v1 {
            deep_merge(&mut fields, &f.0);
        }
        api_version = api_version.or(entry.api_version.clone());
    }
    let mut out: Vec<ManagedFieldsEntry> = entries
        .iter()
        .filter(|e| !ours(e, "Update") && !ours(e, "Apply"))
        .cloned()
        .collect();
    out.push(ManagedFieldsEntry {
        manager: Some(manager.to_owned()),
        operation: Some("Apply".to_owned()),
        api_version,
        fields_type: Some("FieldsV1".to_owned()),
        fields_v1: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
            fields,
        )),
        ..Default::default()
    });
    Some(out)
}

fn deep_merge(into: &mut serde_json::Value, from: &serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                deep_merge(a.entry(k.clone()).or_insert(serde_json::json!({})), v);
            }
        }
        (into, from) => *into = from.clone(),
    }
}

/// Gives a Secret written under an earlier version's marks the current ones, quietly (no
/// Key Vault read, no Event; the data as it stands). Owner and Orphan: a merge patch of
/// the two marks alone (`vaultsync.io/data-hash` keyed, `vaultsync.io/source-uid`), so no
/// data is sent. Merge: an apply of this writer's keys as they stand with its own marks,
/// which drops the shared marks it wrote before. Both bound to the `resourceVersion` that
/// was judged; a Secret changed meanwhile is left to be judged again.
pub(super) async fn migrate_marks(
    secrets: &Api<Secret>,
    vsec: &VaultSecret,
    secret: &Secret,
    ctx: &Context,
) -> Result<Written, Stop> {
    let name = vsec.target_name();
    if vsec.spec.target.creation_policy == CreationPolicy::Merge {
        let data = target::existing_managed_data(secret, vsec);
        let written = apply_secret(secrets, vsec, Some(secret), &data, ctx).await?;
        if written == Written::Done {
            tracing::info!(secret = %name, "gave this Merge writer marks of its own; data unchanged");
        }
        return Ok(written);
    }
    let hash = ctx.hash_key.data_hash(target::managed_data(secret, vsec));
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": secret.resource_version(),
            "annotations": {
                DATA_HASH_ANNOTATION: hash,
                SOURCE_UID_ANNOTATION: vsec.uid().unwrap_or_default(),
            },
        }
    });
    let params = PatchParams {
        field_manager: Some(target::field_manager(vsec)),
        ..Default::default()
    };
    match secrets.patch(&name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => {
            tracing::info!(secret = %name, "rewrote the marks of the Secret in their current form; data unchanged");
            Ok(Written::Done)
        }
        Err(e) => Ok(stale_or(e)?),
    }
}

/// After `target.name` changed: the old Secret goes if this VaultSecret owned it (uid and
/// resourceVersion preconditions, so a Secret re-created or changed meanwhile survives and
/// is judged again at the next reconcile).
pub(super) async fn remove_old_target(
    secrets: &Api<Secret>,
    old: &str,
    vsec: &VaultSecret,
) -> Result<(), Error> {
    let Some(meta) = secrets.get_metadata_opt(old).await? else {
        return Ok(());
    };
    if target::owned_by(&meta.metadata, vsec) {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: meta.metadata.uid.clone(),
                resource_version: meta.metadata.resource_version.clone(),
            }),
            ..Default::default()
        };
        match secrets.delete(old, &params).await {
            Ok(_) => tracing::info!(
                secret = old,
                "deleted the Secret of the previous target.name"
            ),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::{StatusCause, StatusDetails};

    fn status(code: u16, causes: Vec<StatusCause>) -> Status {
        Status {
            code,
            details: Some(StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: "secrets".into(),
                uid: String::new(),
                causes,
                retry_after_seconds: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_409_is_a_field_conflict_naming_managers_or_a_stale_precondition() {
        let cause = |manager: &str, field: &str| StatusCause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with \"{manager}\" using v1"),
            field: field.into(),
        };
        let conflict = status(
            409,
            vec![
                cause("team-b", ".data.password"),
                cause("team-b", ".data.user"),
            ],
        );
        let Some(Conflict::Fields(fields)) = conflict_of(&conflict) else {
            panic!("a field conflict")
        };
        let message = conflict_message("shared", &fields);
        assert!(message.contains("\"team-b\""), "{message}");
        assert!(message.contains(".data.password, .data.user"), "{message}");
        assert!(message.contains("nothing was written"), "{message}");
        // A resourceVersion precondition or AlreadyExists: no causes of that kind.
        assert_eq!(conflict_of(&status(409, vec![])), Some(Conflict::Stale));
        let mut exists = status(409, vec![]);
        exists.reason = "AlreadyExists".into();
        assert_eq!(conflict_of(&exists), Some(Conflict::Stale));
        assert_eq!(conflict_of(&status(422, vec![])), None);
    }

    #[test]
    fn a_created_secret_is_handed_to_the_writers_apply_entry_and_no_one_elses() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
        let entry = |manager: &str, op: &str, fields: serde_json::Value| ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(op.into()),
            api_version: Some("v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        };
        let created = vec![
            entry(
                "vaultsync/a",
                "Update",
                serde_json::json!({"f:data": {"f:k": {}}}),
            ),
            entry(
                "team-b",
                "Update",
                serde_json::json!({"f:data": {"f:theirs": {}}}),
            ),
        ];
        assert_eq!(claimed_entries(Some(&created[1..]), "vaultsync/a"), None);
        let claimed = claimed_entries(Some(&created), "vaultsync/a").unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(
            claimed[0], created[1],
            "other managers are left as they are"
        );
        assert_eq!(claimed[1].operation.as_deref(), Some("Apply"));
        assert_eq!(claimed[1].manager.as_deref(), Some("vaultsync/a"));
        // With an apply entry already there, the two are folded into one.
        let both = vec![
            created[0].clone(),
            entry(
                "vaultsync/a",
                "Apply",
                serde_json::json!({"f:metadata": {"f:labels": {}}}),
            ),
        ];
        let folded = claimed_entries(Some(&both), "vaultsync/a").unwrap();
        assert_eq!(folded.len(), 1);
        assert_eq!(
            folded[0].fields_v1.as_ref().unwrap().0,
            serde_json::json!({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {}}})
        );
    }
}
