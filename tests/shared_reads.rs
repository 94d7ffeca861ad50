//! One Key Vault read per distinct secret: many VaultSecrets over a few Key Vault secrets,
//! on the real operator binary, counted at the gateway (authorized GETs only: the SDK's
//! token-less first request is answered by the challenge and reads nothing).

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use vaultsync::api::VaultSecret;

/// Authorized GETs of `kv_name` at the gateway, in any spelling of the name.
async fn reads(doubles: &Doubles, kv_name: &str) -> u64 {
    doubles.authorized_reads(kv_name).await
}

/// Each object's `lastSyncTime` once all `n` objects across `apis` are Ready; panics
/// if any fails. The bound only keeps a broken run from hanging.
async fn all_synced(apis: &[&Api<VaultSecret>], n: usize) -> BTreeMap<String, String> {
    let mut last = String::new();
    for _ in 0..960 {
        let mut synced = BTreeMap::new();
        for api in apis {
            for v in api.list(&Default::default()).await.unwrap().items {
                let Some(c) = v.ready_condition() else {
                    continue;
                };
                assert_eq!(c.reason, "Synced", "{:?}: {}", v.metadata.name, c.message);
                let at = v
                    .status
                    .as_ref()
                    .and_then(|s| s.last_sync_time.as_ref())
                    .map(|t| t.0.to_string())
                    .unwrap_or_default();
                synced.insert(
                    format!("{:?}/{:?}", v.metadata.namespace, v.metadata.name),
                    at,
                );
            }
        }
        if synced.len() == n {
            return synced;
        }
        last = format!("{} of {n} synced", synced.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("not all VaultSecrets synced: {last}");
}

fn spec(kv_name: &str, identity: Option<&str>) -> serde_json::Value {
    let mut spec = json!({
        "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
        "refreshInterval": "30s",
        "data": [{"key": "value", "remoteRef": {"name": kv_name}}],
    });
    if let Some(sa) = identity {
        spec["identity"] = json!({"serviceAccountName": sa});
    }
    spec
}

#[tokio::test]
async fn sixty_objects_over_three_secrets_read_key_vault_three_times_per_wave() {
    let s = setup().await;
    let other_ns = TempNamespace::create(&s.client).await;
    let other = Api::<VaultSecret>::namespaced(s.client.clone(), &other_ns.name);
    let prefix = unique("shared");
    let names: Vec<String> = (0..3).map(|i| format!("{prefix}-{i}")).collect();
    let vault = KeyVault::first();
    for name in &names {
        vault.set(name, "shared-value").await;
    }
    // Created before the operator starts: a cold start, reconciled in whatever order the
    // controller's queue gives. Names are spelled in two cases: one secret, one read.
    for i in 0..60 {
        let kv_name = if i % 2 == 0 {
            names[i % 3].clone()
        } else {
            names[i % 3].to_uppercase()
        };
        let api = if i < 30 { &s.vsecs } else { &other };
        api.create(
            &PostParams::default(),
            &vault_secret(&format!("app-{i}"), spec(&kv_name, None)),
        )
        .await
        .unwrap();
    }
    let client_id = operator_identity(
        &s.doubles,
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let namespaces = format!("{},{}", s.ns.name, other_ns.name);
    let _operator = Operator::start(&namespaces, &client_id, &[]);

    let first = all_synced(&[&s.vsecs, &other], 60).await;
    for name in &names {
        assert_eq!(reads(&s.doubles, name).await, 1, "cold start, {name}");
    }

    // The refresh wave: every object refreshes once (lastSyncTime moves on); each secret
    // is read once more. Refreshes come 30-33 s after each sync, so no object refreshes
    // twice before the last one has refreshed once.
    let mut pending = first.clone();
    for _ in 0..960 {
        let now = all_synced(&[&s.vsecs, &other], 60).await;
        pending.retain(|k, at| now.get(k) == Some(at));
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(pending.is_empty(), "not refreshed: {pending:?}");
    for name in &names {
        assert_eq!(reads(&s.doubles, name).await, 2, "refresh wave, {name}");
    }
}

#[tokio::test]
async fn two_identities_never_share_a_read() {
    let s = setup().await;
    let kv_name = unique("per-identity");
    KeyVault::first().set(&kv_name, "value").await;
    let sa_client_id = uuid::Uuid::new_v4().to_string();
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("app".into()),
            annotations: Some(
                [(
                    "azure.workload.identity/client-id".to_owned(),
                    sa_client_id.clone(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(s.client.clone(), &s.ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    s.doubles.federate(&sa_client_id, &s.ns.name, "app").await;
    s.doubles.grant(&sa_client_id, &[&kv_name]).await;
    // Ten objects read as the operator, ten as the ServiceAccount, interleaved.
    for i in 0..20 {
        let identity = (i % 2 == 1).then_some("app");
        s.vsecs
            .create(
                &PostParams::default(),
                &vault_secret(&format!("app-{i}"), spec(&kv_name, identity)),
            )
            .await
            .unwrap();
    }
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &[]);
    all_synced(&[&s.vsecs], 20).await;
    assert_eq!(
        reads(&s.doubles, &kv_name).await,
        2,
        "one read per identity"
    );
}

#[tokio::test]
async fn objects_reconciled_one_at_a_time_far_apart_still_read_each_secret_once() {
    let s = setup().await;
    let prefix = unique("apart");
    let shared: Vec<String> = (0..3).map(|i| format!("{prefix}-{i}")).collect();
    let slow: Vec<String> = (0..9).map(|i| format!("{prefix}-slow-{i}")).collect();
    let vault = KeyVault::first();
    for name in shared.iter().chain(&slow) {
        vault.set(name, "value").await;
    }
    // Each object also reads a secret of its own that Key Vault answers 1.2 s late, and
    // objects are reconciled one at a time with a 1 s sharing window: two objects over one
    // shared secret are always more than the window apart, in whatever order they come.
    for name in &slow {
        s.doubles
            .put(
                "/faults",
                json!({"secret": name, "kind": "delay", "delayMs": 1200}),
            )
            .await;
    }
    for (i, own) in slow.iter().enumerate() {
        let spec = json!({
            "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
            "refreshInterval": "1h",
            "data": [
                {"key": "value", "remoteRef": {"name": shared[i % 3]}},
                {"key": "own", "remoteRef": {"name": own}},
            ],
        });
        s.vsecs
            .create(
                &PostParams::default(),
                &vault_secret(&format!("app-{i}"), spec),
            )
            .await
            .unwrap();
    }
    let granted: Vec<&str> = shared.iter().chain(&slow).map(String::as_str).collect();
    let client_id = operator_identity(&s.doubles, &granted).await;
    let _operator = Operator::start(
        &s.ns.name,
        &client_id,
        &["--concurrency", "1", "--shared-read-seconds", "1"],
    );
    all_synced(&[&s.vsecs], 9).await;
    for name in &slow {
        s.doubles.clear_faults(Some(name)).await;
    }
    for name in &shared {
        assert_eq!(
            reads(&s.doubles, name).await,
            1,
            "{name}: one read for 3 objects"
        );
    }
    for name in &slow {
        assert_eq!(reads(&s.doubles, name).await, 1, "{name}");
    }
}

/// Objects a throttled vault refused come back together when the throttle lifts, and read
/// each secret once: 24 objects over 2 secrets, created one a second during 30 s of
/// whole-vault 429 (`Retry-After: 0`), so that each waits on a retry schedule of its own
/// (5 s, then as long as it has been failing). Left to those schedules, with a 1 s sharing
/// window, they came back over the next half minute and read a secret once per gap in
/// them; woken at the throttle's first answer, they take one read per secret.
#[tokio::test]
async fn objects_a_throttle_refused_read_each_secret_once_when_it_lifts() {
    let s = setup().await;
    let prefix = unique("lifted");
    let names: Vec<String> = (0..2).map(|i| format!("{prefix}-{i}")).collect();
    let vault = KeyVault::first();
    for name in &names {
        vault.set(name, "value").await;
    }
    let client_id = operator_identity(
        &s.doubles,
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    s.doubles
        .fault(json!({"secret": "*", "clientId": client_id, "kind": "throttle", "retryAfterSeconds": 0}))
        .await;
    let operator = Operator::start(&s.ns.name, &client_id, &["--shared-read-seconds", "1"]);
    operator.metrics().await;
    let objects = 24;
    for i in 0..objects {
        let mut spec = spec(&names[i % 2], None);
        spec["refreshInterval"] = json!("1h");
        s.vsecs
            .create(
                &PostParams::default(),
                &vault_secret(&format!("app-{i}"), spec),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1250)).await;
    }
    // The objects whose Ready condition has `reason`, once they are `objects` (or after
    // the bound that keeps a broken run from hanging).
    let with_reason = |reason: &'static str| {
        let vsecs = s.vsecs.clone();
        async move {
            let mut count = 0;
            for _ in 0..960 {
                count = vsecs
                    .list(&Default::default())
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .filter(|v| v.ready_condition().is_some_and(|c| c.reason == reason))
                    .count();
                if count == objects {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            count
        }
    };
    assert_eq!(
        with_reason("Throttled").await,
        objects,
        "every object reported the throttle"
    );
    // Every request so far was refused (429): the operator's own count of answered
    // requests is one that a request in flight at the lifting cannot blur.
    let answered =
        |metrics: String| metric(&metrics, "vaultsync_keyvault_requests_total{class=\"2xx\"}");
    assert_eq!(answered(operator.metrics().await), 0);

    s.doubles.clear_client_faults(&client_id).await;
    let lifted = std::time::Instant::now();
    assert_eq!(with_reason("Synced").await, objects, "all synced");
    common::fleet::report(
        "throttle lifted",
        &format!(
            "{objects} objects over 2 secrets refused by a throttle, all Synced {:.1} s after it lifted",
            lifted.elapsed().as_secs_f64()
        ),
    );
    assert_eq!(
        answered(operator.metrics().await),
        2,
        "one answered read per secret once the throttle lifted"
    );
}
