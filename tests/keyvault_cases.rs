//! The value and ownership contract, case by case, end to end: Key Vault (the emulator,
//! seeded through its REST API) → the real `vaultsync` binary → the real API server.
//! Each case comes from a failure users of peer operators reported; the assertions are
//! exact bytes, reasons and counts.

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use vaultsync::api::VaultSecret;

/// One case: a namespace, an operator acting as an identity allowed every secret, and
/// the first vault.
struct Case {
    client: kube::Client,
    doubles: Doubles,
    ns: TempNamespace,
    vsecs: Api<VaultSecret>,
    secrets: Api<Secret>,
    kv: KeyVault,
    _operator: Operator,
}

impl Case {
    async fn start() -> Self {
        let client = kube_client().await;
        ensure_crd(&client).await;
        let ns = TempNamespace::create(&client).await;
        let doubles = Doubles::new();
        let client_id = operator_identity(&doubles, &["*"]).await;
        let operator = Operator::start(&ns.name, &client_id, &[]);
        Self {
            doubles,
            vsecs: Api::namespaced(client.clone(), &ns.name),
            secrets: Api::namespaced(client.clone(), &ns.name),
            ns,
            client,
            kv: KeyVault::first(),
            _operator: operator,
        }
    }

    async fn create(&self, name: &str, spec: serde_json::Value) {
        self.vsecs
            .create(&PostParams::default(), &vault_secret(name, spec))
            .await
            .expect("create the VaultSecret");
    }

    async fn secret(&self, name: &str) -> Option<Secret> {
        self.secrets.get_opt(name).await.expect("read the Secret")
    }

    async fn data(&self, name: &str) -> BTreeMap<String, Vec<u8>> {
        self.secret(name)
            .await
            .and_then(|s| s.data)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    }

    async fn resource_version(&self, name: &str) -> String {
        self.secret(name)
            .await
            .and_then(|s| s.metadata.resource_version)
            .expect("the Secret exists")
    }

    async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        events_of(&self.client, &self.ns.name, name).await
    }

    /// Occurrences of Events with `reason`: the recorder folds repeats of one reason into
    /// one Event with a series count.
    async fn count_events(&self, name: &str, reason: &str) -> usize {
        let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(
            self.client.clone(),
            &self.ns.name,
        );
        let list = events.list(&Default::default()).await.expect("list Events");
        list.items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.series.as_ref().map_or(1, |s| s.count.max(1) as usize))
            .sum()
    }

    /// Key Vault GETs of `kv_name` through the gateway with a valid token (the SDK's
    /// token-less first request, answered by the challenge, is not a read), in any
    /// spelling of the name.
    async fn reads(&self, kv_name: &str) -> u64 {
        self.doubles.authorized_reads(kv_name).await
    }

    async fn wait_reads(&self, kv_name: &str, at_least: u64) {
        for _ in 0..1200 {
            if self.reads(kv_name).await >= at_least {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("Key Vault secret {kv_name} was never read {at_least} times");
    }

    /// Polls until `name` has at least `at_least` Events with `reason`: an Event is
    /// published after the write it reports, so a test seeing the write may be early.
    async fn wait_events(&self, name: &str, reason: &str, at_least: usize) {
        for _ in 0..480 {
            if self.count_events(name, reason).await >= at_least {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{name} never had {at_least} {reason} Events");
    }

    async fn wait_data(&self, name: &str, key: &str, expected: &[u8]) {
        for _ in 0..480 {
            if self.data(name).await.get(key).map(Vec::as_slice) == Some(expected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("Secret {name} never held the expected bytes for {key}");
    }
}

fn spec(entries: serde_json::Value) -> serde_json::Value {
    json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "refreshInterval": "10s", "data": entries})
}

fn entry(key: &str, remote: serde_json::Value) -> serde_json::Value {
    json!({"key": key, "remoteRef": remote})
}

async fn message_of(c: &Case, name: &str, reason: &str) -> String {
    let vsec = wait_reason(&c.vsecs, name, reason).await;
    outcome(&vsec)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn bytes_are_written_exactly_and_idle_refreshes_write_nothing() {
    let c = Case::start().await;
    let name = unique("Bytes");
    let value = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\ncr\r\nlf \\n literal $HOME 🔑 \n  spaced  \n";
    c.kv.set(&name, value).await;
    c.create("bytes", spec(json!([entry("v", json!({"name": name}))])))
        .await;
    wait_reason(&c.vsecs, "bytes", "Synced").await;
    assert_eq!(c.data("bytes").await["v"], value.as_bytes());

    let version = c.resource_version("bytes").await;
    let reads = c.reads(&name).await;
    c.wait_reads(&name, reads + 10).await;
    assert_eq!(
        c.resource_version("bytes").await,
        version,
        "ten refreshes with nothing changed wrote the Secret"
    );
    assert_eq!(c.count_events("bytes", "Rotated").await, 0);
}

#[tokio::test]
async fn properties_are_top_level_keys_or_json_pointers_and_all_or_nothing() {
    let c = Case::start().await;
    let json_name = unique("Json");
    let text_name = unique("Text");
    c.kv.set(
        &json_name,
        r#"{"db.host":"h","port":5432,"tls":true,"opts":{"a":1},"nil":null,"empty":""}"#,
    )
    .await;
    c.kv.set(&text_name, "not json").await;
    let prop =
        |key: &str, property: &str| entry(key, json!({"name": json_name, "property": property}));
    c.create(
        "good",
        spec(json!([
            prop("host", "db.host"),
            prop("port", "port"),
            prop("tls", "tls"),
            prop("opts", "opts"),
            prop("empty", "empty"),
            prop("pointer", "/opts/a"),
        ])),
    )
    .await;
    wait_reason(&c.vsecs, "good", "Synced").await;
    let data = c.data("good").await;
    let expected: BTreeMap<String, Vec<u8>> = [
        ("host", "h"),
        ("port", "5432"),
        ("tls", "true"),
        ("opts", r#"{"a":1}"#),
        ("empty", ""),
        ("pointer", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
    .collect();
    assert_eq!(data, expected);

    // One failing entry next to good ones: nothing is written at all.
    c.create(
        "nil",
        spec(json!([prop("host", "db.host"), prop("nil", "nil")])),
    )
    .await;
    c.create("missing", spec(json!([prop("absent", "absent")])))
        .await;
    c.create(
        "text",
        spec(json!([entry(
            "k",
            json!({"name": text_name, "property": "a"})
        )])),
    )
    .await;
    let nil = message_of(&c, "nil", "PropertyNotFound").await;
    assert!(nil.contains("'nil'") && nil.contains("null"), "{nil}");
    let missing = message_of(&c, "missing", "PropertyNotFound").await;
    assert!(missing.contains("'absent'"), "{missing}");
    let text = message_of(&c, "text", "PropertyNotFound").await;
    assert!(text.contains("not") && text.contains("JSON"), "{text}");
    assert!(!text.contains("not json"), "the value leaked: {text}");
    for name in ["nil", "missing", "text"] {
        assert!(
            c.secret(name).await.is_none(),
            "{name}: a Secret was written"
        );
    }
}

#[tokio::test]
async fn a_byte_order_mark_is_kept_whole_and_skipped_for_properties() {
    let c = Case::start().await;
    let name = unique("Bom");
    c.kv.set(&name, "\u{feff}{\"user\":\"app\"}").await;
    c.create(
        "bom",
        spec(json!([
            entry("whole", json!({"name": name})),
            entry("user", json!({"name": name, "property": "user"})),
        ])),
    )
    .await;
    wait_reason(&c.vsecs, "bom", "Synced").await;
    let data = c.data("bom").await;
    assert_eq!(data["whole"], b"\xef\xbb\xbf{\"user\":\"app\"}");
    assert_eq!(data["user"], b"app");
}

#[tokio::test]
async fn base64_takes_both_alphabets_and_whitespace_and_none_never_decodes() {
    let c = Case::start().await;
    let (standard, url_safe, wrapped, digits, broken) = (
        unique("B64std"),
        unique("B64url"),
        unique("B64wrap"),
        unique("Digits"),
        unique("Broken"),
    );
    c.kv.set(&standard, "+/8=").await;
    c.kv.set(&url_safe, "-_8").await;
    c.kv.set(&wrapped, "aGVs\nbG8=").await;
    c.kv.set(&digits, "123456").await;
    c.kv.set(&broken, "Zq9x*Wv7k").await;
    let b64 = |key: &str, name: &str| entry(key, json!({"name": name, "decoding": "Base64"}));
    c.create(
        "b64",
        spec(json!([
            b64("standard", &standard),
            b64("url", &url_safe),
            b64("wrapped", &wrapped),
            entry("plain", json!({"name": digits, "decoding": "None"})),
        ])),
    )
    .await;
    c.create("broken", spec(json!([b64("k", &broken)]))).await;
    wait_reason(&c.vsecs, "b64", "Synced").await;
    let data = c.data("b64").await;
    assert_eq!(data["standard"], [0xfb, 0xff]);
    assert_eq!(data["url"], [0xfb, 0xff]);
    assert_eq!(data["wrapped"], b"hello");
    assert_eq!(data["plain"], b"123456");
    let message = message_of(&c, "broken", "DecodingFailed").await;
    for part in ["Zq9x", "Wv7k", "*"] {
        assert!(
            !message.contains(part),
            "part of the value leaked: {message}"
        );
    }
    assert!(c.secret("broken").await.is_none());
}

#[tokio::test]
async fn names_that_differ_in_case_cost_one_key_vault_read() {
    let c = Case::start().await;
    let name = unique("Db-Password");
    c.kv.set(&name, "pw").await;
    let mut spec = spec(json!([
        entry("upper", json!({"name": name})),
        entry("lower", json!({"name": name.to_lowercase()})),
    ]));
    spec["refreshInterval"] = json!("1h");
    c.create("case", spec).await;
    wait_reason(&c.vsecs, "case", "Synced").await;
    let data = c.data("case").await;
    assert_eq!(
        (data["upper"].as_slice(), data["lower"].as_slice()),
        (&b"pw"[..], &b"pw"[..])
    );
    assert_eq!(c.reads(&name).await, 1, "two spellings, one read");
}

/// The API server's own rule (`MaxSecretSize`, values only), proven on the real one.
#[tokio::test]
async fn the_size_limit_is_the_api_servers_exactly() {
    let c = Case::start().await;
    const LIMIT: usize = 1024 * 1024;
    let direct = |name: &str, extra: usize| Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("a".to_owned(), ByteString(vec![b'x'; LIMIT - 10])),
            ("b".to_owned(), ByteString(vec![b'y'; 10 + extra])),
        ])),
        ..Default::default()
    };
    c.secrets
        .create(&PostParams::default(), &direct("direct-at-limit", 0))
        .await
        .expect("the API server takes exactly 1 MiB of values");
    let refused = c
        .secrets
        .create(&PostParams::default(), &direct("direct-over", 1))
        .await
        .expect_err("the API server refuses one byte more");
    assert!(
        matches!(refused, kube::Error::Api(ref s) if s.code == 422),
        "{refused:?}"
    );

    // Key Vault holds at most 25,600 bytes per value: 40 entries of a full value and one
    // of the rest reach the limit exactly.
    let (full, rest, rest_plus) = (unique("Full"), unique("Rest"), unique("RestPlus"));
    c.kv.set(&full, &"f".repeat(25_600)).await;
    c.kv.set(&rest, &"r".repeat(LIMIT - 40 * 25_600)).await;
    c.kv.set(&rest_plus, &"r".repeat(LIMIT - 40 * 25_600 + 1))
        .await;
    let entries = |last: &str| {
        let mut e: Vec<_> = (0..40)
            .map(|i| entry(&format!("k{i}"), json!({"name": full})))
            .collect();
        e.push(entry("last", json!({"name": last})));
        serde_json::Value::from(e)
    };
    c.create("at-limit", spec(entries(&rest))).await;
    c.create("over-limit", spec(entries(&rest_plus))).await;
    wait_reason(&c.vsecs, "at-limit", "Synced").await;
    let total: usize = c.data("at-limit").await.values().map(Vec::len).sum();
    assert_eq!(total, LIMIT);
    let message = message_of(&c, "over-limit", "SecretTooLarge").await;
    assert!(message.contains(&(LIMIT + 1).to_string()), "{message}");
    assert!(c.secret("over-limit").await.is_none());
}

#[tokio::test]
async fn a_disabled_latest_version_keeps_the_data_and_never_falls_back() {
    let c = Case::start().await;
    let name = unique("Disabled");
    c.kv.set(&name, "older").await;
    let v1 = c.kv.set(&name, "current").await;
    c.create("app", spec(json!([entry("k", json!({"name": name}))])))
        .await;
    wait_reason(&c.vsecs, "app", "Synced").await;
    let written = c.resource_version("app").await;

    c.kv.update(&name, &v1, json!({"enabled": false})).await;
    wait_reason(&c.vsecs, "app", "SecretDisabled").await;
    assert_eq!(c.data("app").await["k"], b"current");

    c.kv.update(&name, &v1, json!({"enabled": true})).await;
    wait_reason(&c.vsecs, "app", "Synced").await;
    assert_eq!(
        c.resource_version("app").await,
        written,
        "re-enabled: no write"
    );
    assert_eq!(c.count_events("app", "Rotated").await, 0);

    let v2 = c.kv.set(&name, "newest").await;
    c.wait_data("app", "k", b"newest").await;
    c.wait_events("app", "Rotated", 1).await;
    assert_eq!(c.count_events("app", "Rotated").await, 1);
    let rotated: Vec<_> = c
        .events("app")
        .await
        .into_iter()
        .filter(|(_, r, _)| r == "Rotated")
        .collect();
    assert!(
        rotated[0].2.contains(&v1) && rotated[0].2.contains(&v2),
        "{rotated:?}"
    );
}

#[tokio::test]
async fn soft_delete_recover_and_purge() {
    let c = Case::start().await;
    let name = unique("SoftDeleted");
    c.kv.set(&name, "kept").await;
    c.create("app", spec(json!([entry("k", json!({"name": name}))])))
        .await;
    wait_reason(&c.vsecs, "app", "Synced").await;
    let written = c.resource_version("app").await;

    c.kv.delete(&name).await;
    wait_reason(&c.vsecs, "app", "SecretNotFound").await;
    assert_eq!(c.data("app").await["k"], b"kept");

    c.kv.recover(&name).await;
    wait_reason(&c.vsecs, "app", "Synced").await;
    assert_eq!(
        c.resource_version("app").await,
        written,
        "recovered: no write"
    );

    c.kv.delete(&name).await;
    c.kv.purge(&name).await;
    c.kv.set(&name, "re-created").await;
    c.wait_data("app", "k", b"re-created").await;
    wait_reason(&c.vsecs, "app", "Synced").await;
    c.wait_events("app", "Rotated", 1).await;
    assert_eq!(c.count_events("app", "Rotated").await, 1);
}

#[tokio::test]
async fn the_validity_window_is_honoured_and_rechecked_at_not_before() {
    let c = Case::start().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (expired, later, synced) = (unique("Expired"), unique("Later"), unique("Synced"));
    c.kv.set_with(
        &expired,
        json!({"value": "old", "attributes": {"exp": now - 60}}),
    )
    .await;
    c.kv.set_with(
        &later,
        json!({"value": "soon", "attributes": {"nbf": now + 20}}),
    )
    .await;
    let v = c.kv.set(&synced, "valid").await;
    let mut long = spec(json!([entry("k", json!({"name": later}))]));
    long["refreshInterval"] = json!("24h");
    c.create(
        "expired",
        spec(json!([entry("k", json!({"name": expired}))])),
    )
    .await;
    c.create("later", long).await;
    c.create("synced", spec(json!([entry("k", json!({"name": synced}))])))
        .await;

    message_of(&c, "expired", "SecretExpired").await;
    assert!(
        c.secret("expired").await.is_none(),
        "no Secret for an expired value"
    );
    let message = message_of(&c, "later", "SecretNotYetValid").await;
    assert!(!message.contains("soon"), "{message}");
    assert!(c.secret("later").await.is_none());
    // Re-checked at nbf, not after the 24h refresh interval.
    wait_reason(&c.vsecs, "later", "Synced").await;
    assert_eq!(c.data("later").await["k"], b"soon");

    wait_reason(&c.vsecs, "synced", "Synced").await;
    c.kv.update(&synced, &v, json!({"exp": now - 1})).await;
    wait_reason(&c.vsecs, "synced", "SecretExpired").await;
    assert_eq!(c.data("synced").await["k"], b"valid", "data kept");
}

#[tokio::test]
async fn one_missing_secret_of_three_writes_nothing_until_it_exists() {
    let c = Case::start().await;
    let (a, b, missing) = (unique("A"), unique("B"), unique("Missing"));
    c.kv.set(&a, "a").await;
    c.kv.set(&b, "b").await;
    let mut spec = spec(json!([
        entry("a", json!({"name": a})),
        entry("b", json!({"name": b})),
        entry("c", json!({"name": missing})),
    ]));
    spec["refreshInterval"] = json!("24h");
    c.create("app", spec).await;
    let message = message_of(&c, "app", "SecretNotFound").await;
    assert!(message.contains(&missing), "{message}");
    assert!(c.secret("app").await.is_none(), "all or nothing");

    c.kv.set(&missing, "c").await;
    // Within the failure backoff (at most a minute), not after the 24h interval.
    wait_reason(&c.vsecs, "app", "Synced").await;
    let data = c.data("app").await;
    assert_eq!(data.len(), 3);
}

#[tokio::test]
async fn drift_is_repaired_at_once_even_with_a_long_refresh_interval() {
    let c = Case::start().await;
    let name = unique("Drift");
    c.kv.set(&name, "original").await;
    let mut spec = spec(json!([entry("k", json!({"name": name}))]));
    spec["refreshInterval"] = json!("24h");
    c.create("app", spec).await;
    wait_reason(&c.vsecs, "app", "Synced").await;

    c.secrets
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "ZWRpdGVk"}})),
        )
        .await
        .unwrap();
    c.wait_data("app", "k", b"original").await;
    c.secrets
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    c.wait_data("app", "k", b"original").await;
    c.wait_events("app", "DriftRepaired", 2).await;

    // A label someone else adds is theirs: no repair, no write.
    c.secrets
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"someone": "else"}}})),
        )
        .await
        .unwrap();
    let labelled = c.resource_version("app").await;
    let repairs = c.count_events("app", "DriftRepaired").await;
    let reads = c.reads(&name).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(c.resource_version("app").await, labelled);
    assert_eq!(c.count_events("app", "DriftRepaired").await, repairs);
    assert_eq!(c.reads(&name).await, reads);
}

#[tokio::test]
async fn a_key_someone_else_adds_to_an_owner_secret_is_theirs() {
    let c = Case::start().await;
    let name = unique("Foreign");
    c.kv.set(&name, "ours").await;
    let mut spec = spec(json!([entry("k", json!({"name": name}))]));
    spec["refreshInterval"] = json!("24h");
    c.create("app", spec).await;
    wait_reason(&c.vsecs, "app", "Synced").await;
    let reads = c.reads(&name).await;
    c.secrets
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"theirs": "dGhlaXJz"}})),
        )
        .await
        .unwrap();
    let added = c.resource_version("app").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(c.resource_version("app").await, added, "not churned");
    assert_eq!(c.data("app").await["theirs"], b"theirs");
    assert_eq!(c.reads(&name).await, reads, "not drift: no Key Vault read");
    assert_eq!(c.count_events("app", "DriftRepaired").await, 0);
}

#[tokio::test]
async fn a_stripped_owner_reference_is_readopted() {
    let c = Case::start().await;
    let name = unique("Owner");
    c.kv.set(&name, "v").await;
    c.create("app", spec(json!([entry("k", json!({"name": name}))])))
        .await;
    wait_reason(&c.vsecs, "app", "Synced").await;
    c.secrets
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"ownerReferences": null}})),
        )
        .await
        .unwrap();
    let vsec = c.vsecs.get("app").await.unwrap();
    for _ in 0..240 {
        let owners = c
            .secret("app")
            .await
            .and_then(|s| s.metadata.owner_references);
        if owners.is_some_and(|o| o.iter().any(|r| Some(&r.uid) == vsec.metadata.uid.as_ref())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let vsec = wait_reason(&c.vsecs, "app", "Synced").await;
    let owners = c
        .secret("app")
        .await
        .unwrap()
        .metadata
        .owner_references
        .unwrap();
    assert_eq!(owners[0].uid, vsec.metadata.uid.unwrap());
    c.wait_events("app", "DriftRepaired", 1).await;
    assert_eq!(c.count_events("app", "OwnershipConflict").await, 0);
}

#[tokio::test]
async fn a_changed_target_type_recreates_an_owner_secret_and_refuses_merge() {
    let c = Case::start().await;
    let name = unique("Typed");
    c.kv.set(&name, "pw").await;
    c.create(
        "owner",
        spec(json!([entry("password", json!({"name": name}))])),
    )
    .await;
    let mut merge = spec(json!([entry("password", json!({"name": name}))]));
    merge["target"] = json!({"name": "shared", "creationPolicy": "Merge"});
    c.create("merge", merge).await;
    wait_reason(&c.vsecs, "owner", "Synced").await;
    wait_reason(&c.vsecs, "merge", "Synced").await;
    let old_uid = c.secret("owner").await.unwrap().metadata.uid.unwrap();

    let retype = json!({"spec": {"target": {"type": "kubernetes.io/basic-auth"}}});
    c.vsecs
        .patch("owner", &PatchParams::default(), &Patch::Merge(&retype))
        .await
        .unwrap();
    let retype_merge = json!({"spec": {"target": {"name": "shared", "creationPolicy": "Merge", "type": "kubernetes.io/basic-auth"}}});
    c.vsecs
        .patch(
            "merge",
            &PatchParams::default(),
            &Patch::Merge(&retype_merge),
        )
        .await
        .unwrap();

    wait_ready(&c.vsecs, "owner", "Synced at generation 2", |s, r, _| {
        s == "True" && r == "Synced"
    })
    .await;
    for _ in 0..240 {
        let secret = c.secret("owner").await;
        if secret.as_ref().and_then(|s| s.type_.as_deref()) == Some("kubernetes.io/basic-auth") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let secret = c.secret("owner").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_ne!(secret.metadata.uid.unwrap(), old_uid, "re-created");
    assert_eq!(secret.data.unwrap()["password"].0, b"pw");
    let notes: Vec<_> = c
        .events("owner")
        .await
        .into_iter()
        .map(|(_, _, n)| n)
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("re-created") || n.contains("recreated")),
        "{notes:?}"
    );

    let message = message_of(&c, "merge", "InvalidSpec").await;
    assert!(message.contains("type"), "{message}");
    let shared = c.secret("shared").await.unwrap();
    assert_eq!(
        shared.type_.as_deref(),
        Some("Opaque"),
        "a merged-into Secret keeps its type"
    );
    // No hot loop: the refused spec waits for a change.
    let reads = c.reads(&name).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(c.reads(&name).await <= reads + 1);
}

#[tokio::test]
async fn a_secret_the_api_server_refuses_is_invalid_until_the_spec_is_fixed() {
    let c = Case::start().await;
    let name = unique("DockerConfig");
    let config = r#"{"auths":{"registry.example":{"auth":"dXNlcjpwYXNz"}}}"#;
    c.kv.set(&name, &base64_encode(config.as_bytes())).await;
    let mut spec = spec(json!([entry(".dockerconfigjson", json!({"name": name}))]));
    spec["target"] = json!({"type": "kubernetes.io/dockerconfigjson"});
    c.create("pull", spec).await;
    let message = message_of(&c, "pull", "InvalidSpec").await;
    assert!(message.contains(".dockerconfigjson"), "{message}");
    assert!(
        !message.contains("dXNlcjpwYXNz") && !message.contains("eyJhdXRo"),
        "{message}"
    );
    assert_eq!(c.count_events("pull", "Synced").await, 0);
    assert!(c.secret("pull").await.is_none());

    let fix = json!({"spec": {"data": [{"key": ".dockerconfigjson", "remoteRef": {"name": name, "decoding": "Base64"}}]}});
    c.vsecs
        .patch("pull", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap();
    wait_reason(&c.vsecs, "pull", "Synced").await;
    assert_eq!(c.data("pull").await[".dockerconfigjson"], config.as_bytes());
}

#[tokio::test]
async fn the_same_name_in_two_vaults_is_two_secrets() {
    let c = Case::start().await;
    let name = unique("Shared-Name");
    c.kv.set(&name, "from-vault-1").await;
    KeyVault::second().set(&name, "from-vault-2").await;
    c.create("one", spec(json!([entry("k", json!({"name": name}))])))
        .await;
    let mut two = spec(json!([entry("k", json!({"name": name}))]));
    two["vaultUrl"] = json!(env("VAULTSYNC_TEST_VAULT2_URL"));
    c.create("two", two).await;
    wait_reason(&c.vsecs, "one", "Synced").await;
    wait_reason(&c.vsecs, "two", "Synced").await;
    assert_eq!(c.data("one").await["k"], b"from-vault-1");
    assert_eq!(c.data("two").await["k"], b"from-vault-2");
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
