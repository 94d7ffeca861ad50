//! The metrics an SRE alerts on, after a scripted scenario on the real operator binary:
//! three VaultSecrets sync (one through a Key Vault outage, which then ends), a refresh is
//! throttled once, another meets a connection reset once, and one VaultSecret is deleted.
//! Every count is checked against what the Key Vault gateway and the token endpoint saw,
//! every gauge against the statuses on the API server; `/metrics` carries no secret value
//! and no token, and exports exactly the metrics the README's table lists.

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use vaultsync::api::VaultSecret;

/// The value of the sample `series` (`name{labels}` exactly as exported, or a bare name).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

fn requests(metrics: &str, class: &str) -> f64 {
    sample(
        metrics,
        &format!(r#"vaultsync_keyvault_requests_total{{class="{class}"}}"#),
    )
    .unwrap_or(0.0)
}

fn ready_count(metrics: &str, ready: &str, reason: &str) -> Option<f64> {
    sample(
        metrics,
        &format!(r#"vaultsync_vaultsecrets{{ready="{ready}",reason="{reason}"}}"#),
    )
}

fn last_success(metrics: &str, namespace: &str, name: &str) -> Option<f64> {
    sample(
        metrics,
        &format!(
            r#"vaultsync_vaultsecret_last_success_timestamp_seconds{{namespace="{namespace}",name="{name}"}}"#
        ),
    )
}

/// Scrapes until `check` holds (the gauges follow the operator's watch cache, a moment
/// behind the API server). The bound only keeps a broken run from hanging.
async fn scrape_until(operator: &Operator, what: &str, check: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    for _ in 0..480 {
        text = operator.metrics().await;
        if check(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("metrics never showed {what}:\n{text}");
}

/// Authorized Key Vault requests for `secret` at the gateway: every request that carried a
/// token, whatever the answer (faults are applied after the token is checked).
async fn authorized(doubles: &Doubles, secret: &str) -> f64 {
    doubles.stats().await["vaultAuthorized"]["GET"][secret]
        .as_f64()
        .unwrap_or(0.0)
}

fn last_sync(vsec: &VaultSecret) -> Timestamp {
    vsec.status
        .as_ref()
        .and_then(|s| s.last_sync_time.as_ref())
        .expect("a lastSyncTime")
        .0
}

/// Waits until `name` synced again after `before` (its Refreshed condition True).
async fn synced_after(s: &Setup, name: &str, before: Timestamp) -> VaultSecret {
    wait_for(&s.vsecs, name, "a newer successful sync", |v| {
        v.status.as_ref().is_some_and(|st| {
            st.last_sync_time.as_ref().is_some_and(|t| t.0 > before)
                && st.refreshed_condition().is_some_and(|c| c.status == "True")
        })
    })
    .await
}

/// The metric names `/metrics` exports, as a query names them (counters with `_total`).
fn exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next().unwrap();
            match parts.next() {
                Some("counter") => format!("{name}_total"),
                _ => name.to_owned(),
            }
        })
        .collect()
}

/// The metric names the README's metrics table lists.
fn documented() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("\n## Metrics\n").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `vaultsync_"))
        .map(|l| format!("vaultsync_{}", l.split('`').next().unwrap()))
        .collect()
}

#[tokio::test]
async fn metrics_follow_a_scripted_scenario_and_carry_no_secret() {
    let s = setup().await;
    let kv = KeyVault::first();
    let names: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| unique(&format!("metrics-{n}")))
        .collect();
    let values: Vec<String> = names.iter().map(|_| unique("value")).collect();
    for (name, value) in names.iter().zip(&values) {
        kv.set(name, value).await;
    }
    let (a, b, c) = (&names[0], &names[1], &names[2]);
    let client_id = operator_identity(&s.doubles, &[a, b, c]).await;
    // Key Vault is down for c from the start: its first sync fails.
    s.doubles
        .put(
            "/faults",
            json!({"secret": c, "kind": "error", "status": 503}),
        )
        .await;
    let operator = Operator::start(&s.ns.name, &client_id, &["--per-object-metrics"]);
    for (object, secret) in [("app-a", a), ("app-b", b), ("app-c", c)] {
        let spec = json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "refreshInterval": "1h",
            "data": [{"key": "password", "remoteRef": {"name": secret}}]});
        s.vsecs
            .create(&PostParams::default(), &vault_secret(object, spec))
            .await
            .unwrap();
    }
    wait_reason(&s.vsecs, "app-a", "Synced").await;
    wait_reason(&s.vsecs, "app-b", "Synced").await;
    wait_reason(&s.vsecs, "app-c", "VaultUnreachable").await;

    // The fault: two Ready, one not, by reason.
    let during = scrape_until(&operator, "2 Synced and 1 VaultUnreachable", |m| {
        ready_count(m, "True", "Synced") == Some(2.0)
            && ready_count(m, "False", "VaultUnreachable") == Some(1.0)
    })
    .await;
    assert!(requests(&during, "5xx") >= 1.0, "{during}");
    assert_eq!(
        last_success(&during, &s.ns.name, "app-c"),
        None,
        "never synced, so no timestamp"
    );

    // Recovery: the outage ends and c syncs at its next retry; the False series goes.
    s.doubles.clear_faults(Some(c)).await;
    wait_reason(&s.vsecs, "app-c", "Synced").await;
    let recovered = scrape_until(&operator, "3 Synced", |m| {
        ready_count(m, "True", "Synced") == Some(3.0)
    })
    .await;
    assert_eq!(
        ready_count(&recovered, "False", "VaultUnreachable"),
        None,
        "{recovered}"
    );
    // Quiet now (refreshInterval 1h): every request that carried a token is counted, each
    // in its class: c's failed ones as 5xx, one successful read per object as 2xx.
    let (auth_a, auth_b, auth_c) = (
        authorized(&s.doubles, a).await,
        authorized(&s.doubles, b).await,
        authorized(&s.doubles, c).await,
    );
    assert_eq!((auth_a, auth_b), (1.0, 1.0));
    assert_eq!(requests(&recovered, "5xx"), auth_c - 1.0, "{recovered}");
    assert_eq!(requests(&recovered, "2xx"), 3.0, "{recovered}");

    // A throttled refresh: one 429, then the retry after Retry-After succeeds.
    let before = last_sync(&s.vsecs.get("app-a").await.unwrap());
    s.doubles
        .put(
            "/faults",
            json!({"secret": a, "kind": "throttle", "retryAfterSeconds": 1, "count": 1}),
        )
        .await;
    refresh(&s, "app-a", "throttle").await;
    synced_after(&s, "app-a", before).await;

    // A connection reset on a refresh: no answer, counted as error, then a good retry.
    let before = last_sync(&s.vsecs.get("app-b").await.unwrap());
    s.doubles
        .put("/faults", json!({"secret": b, "kind": "reset", "count": 1}))
        .await;
    refresh(&s, "app-b", "reset").await;
    synced_after(&s, "app-b", before).await;

    // Delete: its count and its per-object series go with it.
    s.vsecs
        .delete("app-b", &DeleteParams::default())
        .await
        .unwrap();
    let ns = s.ns.name.clone();
    let after = scrape_until(&operator, "2 Synced and no app-b series", |m| {
        ready_count(m, "True", "Synced") == Some(2.0) && last_success(m, &ns, "app-b").is_none()
    })
    .await;
    let scraped_at = Timestamp::now();

    // Requests: each class against the gateway's counts.
    let total_auth = authorized(&s.doubles, a).await
        + authorized(&s.doubles, b).await
        + authorized(&s.doubles, c).await;
    let classes = ["2xx", "4xx", "429", "5xx", "error"];
    let total: f64 = classes.iter().map(|c| requests(&after, c)).sum();
    assert_eq!(total, total_auth, "{after}");
    assert_eq!(requests(&after, "429"), 1.0, "{after}");
    assert_eq!(requests(&after, "error"), 1.0, "{after}");
    assert_eq!(
        requests(&after, "4xx"),
        0.0,
        "no challenge counted: {after}"
    );
    assert_eq!(
        requests(&after, "2xx"),
        5.0,
        "3 syncs and 2 refreshes: {after}"
    );
    for class in classes {
        let count = sample(
            &after,
            &format!(r#"vaultsync_keyvault_request_duration_seconds_count{{class="{class}"}}"#),
        )
        .unwrap_or(0.0);
        assert_eq!(count, requests(&after, class), "durations of {class}");
    }
    // One token exchange served every read, as the token endpoint counted it.
    assert_eq!(
        sample(
            &after,
            r#"vaultsync_token_exchanges_total{identity="operator",result="ok"}"#
        ),
        Some(s.doubles.token_requests(&client_id).await as f64)
    );
    assert_eq!(s.doubles.token_requests(&client_id).await, 1);

    // Gauges against the statuses on the API server.
    let remaining: Vec<VaultSecret> = s.vsecs.list(&Default::default()).await.unwrap().items;
    assert_eq!(remaining.len(), 2);
    for vsec in &remaining {
        let name = vsec.metadata.name.as_deref().unwrap();
        assert_eq!(
            last_success(&after, &s.ns.name, name),
            Some(last_sync(vsec).as_second() as f64),
            "{name}"
        );
    }
    let oldest = remaining.iter().map(last_sync).min().unwrap();
    let age = sample(&after, "vaultsync_oldest_sync_age_seconds").expect("the age gauge");
    // Between the sync and the moment this test read the clock after the scrape
    // (lastSyncTime keeps whole seconds, the gauge milliseconds).
    let most = scraped_at.duration_since(oldest).as_secs_f64() + 1.0;
    assert!(age >= 0.0 && age <= most, "age {age}, at most {most}");

    // Nothing secret: no value, no token, no authorization header.
    let token = std::fs::read_to_string(env("AZURE_FEDERATED_TOKEN_FILE")).unwrap();
    for value in &values {
        assert!(
            !after.contains(value.as_str()),
            "a secret value in /metrics"
        );
    }
    assert!(
        !after.contains(token.trim()),
        "the federated token in /metrics"
    );
    assert!(!after.contains("eyJ"), "a JWT in /metrics");
    assert!(!after.to_ascii_lowercase().contains("bearer"));

    // The README documents exactly what is exported.
    assert_eq!(exported(&after), documented());
}
