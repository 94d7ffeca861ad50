//! Secrets are never taken: the attacks another team (or a VaultSecret author) would
//! mount, on the real API server. A Merge never takes keys another field manager owns and
//! writes only where the Secret's owner let it in; adoption is by uid; a Secret that
//! appears between the decision and the write is not taken; a Merge target never gets an
//! ownerReference; two Merge writers of one Secret stay quiet.

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

fn spec(key: &str, kv_name: &str, target: Value) -> Value {
    json!({
        "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
        "target": target,
        "data": [{"key": key, "remoteRef": {"name": kv_name}}],
    })
}

async fn create(s: &Setup, name: &str, spec: Value) {
    s.vsecs
        .create(&PostParams::default(), &vault_secret(name, spec))
        .await
        .expect("create the VaultSecret");
}

/// An operator for this test's namespace, reading `kv_names` (each seeded with `value`).
async fn start(s: &Setup, kv_names: &[&str], value: &str) -> Operator {
    for name in kv_names {
        KeyVault::first().set(name, value).await;
    }
    let client_id = operator_identity(&s.doubles, kv_names).await;
    Operator::start(&s.ns.name, &client_id, &[])
}

/// Another team's Secret, as they would write it: a server-side apply by field manager
/// `team-b`, so the API server records them as the owner of its keys.
async fn team_b_secret(s: &Setup, name: &str, annotations: Value) {
    // `data`, not `stringData`: the API server records owners of the fields sent, and
    // `stringData` is folded into `data` after that.
    let data = json!({"data": {"password": base64(b"theirs"), "other": base64(b"kept")}});
    team_b_applies(s, name, annotations, data).await;
}

/// A server-side apply by field manager `team-b` of a Secret with `fields` (its `data`
/// or `stringData`).
async fn team_b_applies(s: &Setup, name: &str, annotations: Value, fields: Value) {
    let mut secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "annotations": annotations},
    });
    secret
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    s.secrets
        .patch(name, &PatchParams::apply("team-b"), &Patch::Apply(&secret))
        .await
        .expect("team-b applies its Secret");
}

/// Merge VaultSecret "app" declaring key `password` into Secret "shared", with an operator
/// reading "ours" from `kv_name`: the operator, still running, and the
/// `OwnershipConflict` message it ends in.
async fn merge_app_into_shared_conflict(s: &Setup, kv_name: &str) -> (Operator, String) {
    let operator = start(s, &[kv_name], "ours").await;
    create(
        s,
        "app",
        spec(
            "password",
            kv_name,
            json!({"name": "shared", "creationPolicy": "Merge"}),
        ),
    )
    .await;
    let text = message(&wait_reason(&s.vsecs, "app", "OwnershipConflict").await);
    (operator, text)
}

async fn data_of(s: &Setup, name: &str) -> BTreeMap<String, Vec<u8>> {
    s.secrets
        .get(name)
        .await
        .unwrap()
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn message(vsec: &vaultsync::api::VaultSecret) -> String {
    vsec.ready_condition().unwrap().message.clone()
}

async fn count_events(s: &Setup, name: &str, reason: &str) -> usize {
    events_of(&s.client, &s.ns.name, name)
        .await
        .iter()
        .filter(|(_, r, _)| r == reason)
        .count()
}

async fn reads(s: &Setup, kv_name: &str) -> u64 {
    s.doubles.stats().await["vaultAuthorized"]["GET"][kv_name]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn merge_never_takes_a_key_another_field_manager_owns() {
    let s = setup().await;
    let kv_name = unique("taken");
    // Team B let "app" in, but owns the key "app" declares.
    team_b_secret(&s, "shared", json!({"vaultsync.io/merge-from": "app"})).await;
    let (_operator, text) = merge_app_into_shared_conflict(&s, &kv_name).await;
    assert!(text.contains("\"team-b\""), "names the manager: {text}");
    assert!(text.contains(".data.password"), "names the key: {text}");
    assert!(!text.contains("ours") && !text.contains("theirs"), "{text}");
    let data = data_of(&s, "shared").await;
    assert_eq!(data["password"], b"theirs", "no data written");
    assert_eq!(data["other"], b"kept");
    let shared = s.secrets.get("shared").await.unwrap();
    assert!(
        shared
            .metadata
            .annotations
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("vaultsync.io/data-hash")),
        "no marks either: the apply was refused whole"
    );
    assert_eq!(count_events(&s, "app", "Synced").await, 0);
}

/// The ordinary manifest form, `stringData`, applied server-side: the API server records
/// team-b as the owner of `stringData.password`, not of `data.password`, so a Merge
/// apply without force would meet no conflict; the key is theirs all the same.
#[tokio::test]
async fn merge_never_takes_a_key_another_team_wrote_through_string_data() {
    let s = setup().await;
    let kv_name = unique("taken-sd");
    team_b_applies(
        &s,
        "shared",
        json!({"vaultsync.io/merge-from": "app"}),
        json!({"stringData": {"password": "theirs"}}),
    )
    .await;
    let (_operator, text) = merge_app_into_shared_conflict(&s, &kv_name).await;
    assert!(text.contains("\"team-b\""), "names the manager: {text}");
    assert!(
        text.contains(".stringData.password"),
        "names the key: {text}"
    );
    assert_eq!(data_of(&s, "shared").await["password"], b"theirs");
    assert_eq!(count_events(&s, "app", "Synced").await, 0);
}

#[tokio::test]
async fn merge_writes_an_existing_secret_only_once_its_owner_lets_it_in() {
    let s = setup().await;
    let kv_name = unique("optin");
    team_b_secret(&s, "shared", json!({})).await;
    let _operator = start(&s, &[&kv_name], "ours").await;
    create(
        &s,
        "app",
        spec(
            "token",
            &kv_name,
            json!({"name": "shared", "creationPolicy": "Merge"}),
        ),
    )
    .await;
    let vsec = wait_reason(&s.vsecs, "app", "OwnershipConflict").await;
    let text = message(&vsec);
    assert!(text.contains("vaultsync.io/merge-from"), "says how: {text}");
    assert!(!data_of(&s, "shared").await.contains_key("token"));
    assert_eq!(reads(&s, &kv_name).await, 0, "refused before any read");

    // A name that only starts like this VaultSecret's lets nothing in.
    s.secrets
        .patch(
            "shared",
            &PatchParams::apply("team-b"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "shared", "annotations": {"vaultsync.io/merge-from": "other, application"}},
                "data": {"password": base64(b"theirs"), "other": base64(b"kept")}})),
        )
        .await
        .unwrap();
    // The owner opts in: the VaultSecret's key is merged in, theirs are kept.
    s.secrets
        .patch(
            "shared",
            &PatchParams::apply("team-b"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "shared", "annotations": {"vaultsync.io/merge-from": "other, app"}},
                "data": {"password": base64(b"theirs"), "other": base64(b"kept")}})),
        )
        .await
        .unwrap();
    wait_reason(&s.vsecs, "app", "Synced").await;
    let data = data_of(&s, "shared").await;
    assert_eq!(data["token"], b"ours");
    assert_eq!(data["password"], b"theirs");
    let shared = s.secrets.get("shared").await.unwrap();
    assert!(shared.metadata.owner_references.is_none());
    assert!(
        !shared
            .metadata
            .annotations
            .unwrap()
            .contains_key("vaultsync.io/created-by"),
        "it did not create the Secret"
    );
}

#[tokio::test]
async fn a_vault_secret_re_created_with_the_same_name_does_not_adopt_its_predecessors_secret() {
    let s = setup().await;
    let kv_name = unique("recreated");
    let _operator = start(&s, &[&kv_name], "v1").await;
    let orphan = spec("k", &kv_name, json!({"creationPolicy": "Orphan"}));
    create(&s, "app", orphan.clone()).await;
    wait_reason(&s.vsecs, "app", "Synced").await;
    let first_uid = s.vsecs.get("app").await.unwrap().metadata.uid.unwrap();
    let marks = s
        .secrets
        .get("app")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    assert_eq!(marks["vaultsync.io/source-uid"], first_uid);
    s.vsecs
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..120 {
        if s.vsecs.get_opt("app").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The Orphan Secret stays; a new VaultSecret of that name (a new uid) is not its writer.
    create(
        &s,
        "app",
        spec("k", &kv_name, json!({"creationPolicy": "Owner"})),
    )
    .await;
    let vsec = wait_reason(&s.vsecs, "app", "OwnershipConflict").await;
    assert_ne!(vsec.metadata.uid.unwrap(), first_uid);
    let secret = s.secrets.get("app").await.unwrap();
    assert!(secret.metadata.owner_references.is_none(), "not adopted");
    assert_eq!(
        secret.metadata.annotations.unwrap()["vaultsync.io/source-uid"],
        first_uid
    );
}

#[tokio::test]
async fn a_secret_created_between_the_decision_and_the_write_is_never_taken() {
    let s = setup().await;
    let kv_name = unique("race");
    let _operator = start(&s, &[&kv_name], "ours").await;
    // The first Key Vault read answers late: the Secret was absent when the operator
    // decided to create it, and someone else creates it before the write.
    s.doubles
        .put(
            "/faults",
            json!({"secret": kv_name, "kind": "delay", "delayMs": 4000, "count": 1}),
        )
        .await;
    create(&s, "app", spec("password", &kv_name, json!({}))).await;
    for _ in 0..240 {
        if reads(&s, &kv_name).await >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        reads(&s, &kv_name).await,
        1,
        "the delayed read is under way"
    );
    let theirs = Secret {
        metadata: ObjectMeta {
            name: Some("app".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "password".to_owned(),
            ByteString(b"theirs".to_vec()),
        )])),
        ..Default::default()
    };
    s.secrets
        .create(&PostParams::default(), &theirs)
        .await
        .expect("created before the operator's write");
    let vsec = wait_reason(&s.vsecs, "app", "OwnershipConflict").await;
    assert!(message(&vsec).contains("not created by this VaultSecret"));
    let secret = s.secrets.get("app").await.unwrap();
    assert_eq!(secret.data.unwrap()["password"].0, b"theirs");
    assert!(secret.metadata.owner_references.is_none());
    assert!(secret.metadata.annotations.is_none() && secret.metadata.labels.is_none());
    // The refused create was decided again without a Warning of its own.
    let warnings: Vec<_> = events_of(&s.client, &s.ns.name, "app")
        .await
        .into_iter()
        .filter(|(t, _, _)| t == "Warning")
        .map(|(_, r, _)| r)
        .collect();
    assert!(
        warnings.iter().all(|r| r == "OwnershipConflict"),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn switching_merge_to_owner_never_puts_an_owner_reference_on_a_shared_secret() {
    let s = setup().await;
    let (one, two) = (unique("first"), unique("second"));
    let _operator = start(&s, &[&one, &two], "v").await;
    // "one" creates the Secret under Merge; its owner (one's author) lets "two" in.
    create(
        &s,
        "one",
        spec(
            "a",
            &one,
            json!({"name": "shared", "creationPolicy": "Merge"}),
        ),
    )
    .await;
    wait_reason(&s.vsecs, "one", "Synced").await;
    s.secrets
        .patch(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"vaultsync.io/merge-from": "two"}}})),
        )
        .await
        .unwrap();
    create(
        &s,
        "two",
        spec(
            "b",
            &two,
            json!({"name": "shared", "creationPolicy": "Merge"}),
        ),
    )
    .await;
    wait_reason(&s.vsecs, "two", "Synced").await;

    for policy in ["Owner", "Orphan"] {
        s.vsecs
            .patch(
                "one",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"target": {"creationPolicy": policy}}})),
            )
            .await
            .unwrap();
        let vsec = wait_reason(&s.vsecs, "one", "OwnershipConflict").await;
        let text = message(&vsec);
        assert!(text.contains("never gets an ownerReference"), "{text}");
    }
    let shared = s.secrets.get("shared").await.unwrap();
    assert!(shared.metadata.owner_references.is_none());
    // Deleting "one" therefore deletes no one's keys.
    s.vsecs
        .delete("one", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..40 {
        if s.vsecs.get_opt("one").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let data = data_of(&s, "shared").await;
    assert_eq!(data["a"], b"v");
    assert_eq!(data["b"], b"v");
}

#[tokio::test]
async fn a_merge_pair_into_one_secret_stays_quiet_across_refreshes() {
    let s = setup().await;
    let (one, two) = (unique("pair-one"), unique("pair-two"));
    let _operator = start(&s, &[&one, &two], "v").await;
    let pair = |key: &str, kv: &str| {
        let mut spec = spec(
            key,
            kv,
            json!({"name": "shared", "creationPolicy": "Merge"}),
        );
        spec["refreshInterval"] = json!("10s");
        spec
    };
    create(&s, "one", pair("a", &one)).await;
    wait_reason(&s.vsecs, "one", "Synced").await;
    // "one" created the Secret; its owner lets "two" in.
    s.secrets
        .patch(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"vaultsync.io/merge-from": "two"}}})),
        )
        .await
        .unwrap();
    create(&s, "two", pair("b", &two)).await;
    wait_reason(&s.vsecs, "two", "Synced").await;
    let (base_one, base_two) = (reads(&s, &one).await, reads(&s, &two).await);

    // Three refreshes of "one" (every 10 to 11 seconds): in that span "two" refreshes at
    // most four times. A writer that took the other's writes for drift would read again
    // after each of them, and announce DriftRepaired.
    for _ in 0..480 {
        if reads(&s, &one).await >= base_one + 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (after_one, after_two) = (reads(&s, &one).await, reads(&s, &two).await);
    assert!(after_one >= base_one + 3, "one refreshed");
    assert!(after_one <= base_one + 3, "one: {base_one} -> {after_one}");
    assert!(after_two <= base_two + 4, "two: {base_two} -> {after_two}");
    assert_eq!(count_events(&s, "one", "DriftRepaired").await, 0);
    assert_eq!(count_events(&s, "two", "DriftRepaired").await, 0);
    let marks = s
        .secrets
        .get("shared")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    let uid = |name: &str| {
        let s = &s;
        let name = name.to_owned();
        async move { s.vsecs.get(&name).await.unwrap().metadata.uid.unwrap() }
    };
    for name in ["one", "two"] {
        let uid = uid(name).await;
        assert_eq!(marks[&format!("vaultsync.io/merged-by.{uid}")], name);
        assert!(marks.contains_key(&format!("vaultsync.io/data-hash.{uid}")));
    }
    assert!(!marks.contains_key("vaultsync.io/data-hash"));
    assert!(!marks.contains_key("vaultsync.io/source"));

    // Someone else writes "two"'s key: under Merge that makes them its manager, so "two"
    // (reached at once through the Secret watch, which maps the Secret to every writer)
    // reports the conflict naming them and takes nothing back; "one" does not stir.
    let before_one = reads(&s, &one).await;
    s.secrets
        .patch(
            "shared",
            &PatchParams {
                field_manager: Some("team-c".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"b": "ZWRpdGVk"}})),
        )
        .await
        .unwrap();
    let vsec = wait_reason(&s.vsecs, "two", "OwnershipConflict").await;
    assert!(message(&vsec).contains("\"team-c\""), "{}", message(&vsec));
    assert_eq!(data_of(&s, "shared").await["b"], b"edited");
    assert_eq!(count_events(&s, "one", "DriftRepaired").await, 0);
    assert!(
        reads(&s, &one).await <= before_one + 1,
        "at most its own refresh"
    );
}

#[tokio::test]
async fn marks_of_the_previous_version_are_migrated_without_a_read_or_an_event() {
    let s = setup().await;
    let (owned, merged) = (unique("old-owner"), unique("old-merge"));
    let operator = start(&s, &[&owned, &merged], "v").await;
    create(&s, "owner", spec("k", &owned, json!({}))).await;
    create(
        &s,
        "merge",
        spec(
            "m",
            &merged,
            json!({"name": "shared", "creationPolicy": "Merge"}),
        ),
    )
    .await;
    wait_reason(&s.vsecs, "owner", "Synced").await;
    wait_reason(&s.vsecs, "merge", "Synced").await;
    let merge_uid = s.vsecs.get("merge").await.unwrap().metadata.uid.unwrap();
    let reads_before = (reads(&s, &owned).await, reads(&s, &merged).await);

    // As the previous version left them: an Owner Secret without the uid mark; a Merge
    // Secret with the shared marks (applied by the writer's own field manager) instead
    // of the writer's own.
    s.secrets
        .patch(
            "owner",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"vaultsync.io/source-uid": null}}})),
        )
        .await
        .unwrap();
    let shared = s.secrets.get("shared").await.unwrap();
    let old_marks = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "shared",
            "labels": {"vaultsync.io/managed-by": "vaultsync"},
            "annotations": {"vaultsync.io/source": format!("{}/merge", s.ns.name),
                            "vaultsync.io/data-hash": "0".repeat(64)}},
        "data": {"m": base64(&shared.data.unwrap()["m"].0)}});
    s.secrets
        .patch(
            "shared",
            &PatchParams::apply("vaultsync/merge"),
            &Patch::Apply(&old_marks),
        )
        .await
        .unwrap();

    for _ in 0..240 {
        let owner = s.secrets.get("owner").await.unwrap();
        let shared = s.secrets.get("shared").await.unwrap();
        let owner_marked = owner
            .metadata
            .annotations
            .unwrap()
            .contains_key("vaultsync.io/source-uid");
        let shared_marked = shared
            .metadata
            .annotations
            .unwrap()
            .contains_key(&format!("vaultsync.io/data-hash.{merge_uid}"));
        if owner_marked && shared_marked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let owner = s.secrets.get("owner").await.unwrap();
    assert_eq!(
        owner.metadata.annotations.unwrap()["vaultsync.io/source-uid"],
        s.vsecs.get("owner").await.unwrap().metadata.uid.unwrap()
    );
    let shared = s
        .secrets
        .get("shared")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    assert!(shared.contains_key(&format!("vaultsync.io/data-hash.{merge_uid}")));
    assert!(
        !shared.contains_key("vaultsync.io/data-hash"),
        "the writer's old shared mark is dropped"
    );
    assert_eq!(
        (reads(&s, &owned).await, reads(&s, &merged).await),
        reads_before,
        "no Key Vault read"
    );
    for name in ["owner", "merge"] {
        for reason in ["DriftRepaired", "Rotated", "OwnershipConflict"] {
            assert_eq!(count_events(&s, name, reason).await, 0, "{name}: {reason}");
        }
        assert_eq!(count_events(&s, name, "Synced").await, 1, "{name}");
    }
    drop(operator);
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
