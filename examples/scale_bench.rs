//! `make bench`: the cost of a full sync of N VaultSecrets sharing one ServiceAccount
//! identity over a few distinct Key Vault secrets, measured on the local environment (the
//! Key Vault emulator behind the gateway) against the real operator binary. Prints a
//! Markdown table.
//!
//! Usage: VAULTSYNC_OPERATOR_BINARY=target/release/vaultsync scale_bench <N>...

#[path = "../tests/common/mod.rs"]
mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};
use vaultsync::api::VaultSecret;

/// Distinct Key Vault secrets the N VaultSecrets read, so identical reads can be shared.
const DISTINCT_SECRETS: usize = 10;

struct Row {
    objects: usize,
    settled_secs: f64,
    outcome: String,
    keyvault_reads: u64,
    token_exchanges: u64,
    token_requests: String,
    status_writes: String,
    secret_writes: String,
    peak_rss_mib: f64,
    cpu_secs: f64,
}

fn proc_stats(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    (hwm_kib / 1024.0, ticks / 100.0)
}

fn metric(text: &str, name: &str) -> String {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("0")
        .to_owned()
}

async fn run(n: usize) -> Row {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let doubles = Doubles::new();
    let ns = TempNamespace::create(&client).await;
    let client_id = uuid::Uuid::new_v4().to_string();
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("bench".into()),
            annotations: Some(
                [(
                    "azure.workload.identity/client-id".to_owned(),
                    client_id.clone(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    doubles.federate(&client_id, &ns.name, "bench").await;
    let prefix = unique("bench");
    let names: Vec<String> = (0..DISTINCT_SECRETS)
        .map(|i| format!("{prefix}-{i}"))
        .collect();
    doubles
        .grant(
            &client_id,
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
    let vault = KeyVault::first();
    for name in &names {
        vault.set(name, "bench-value").await;
    }
    let vsecs = Api::<VaultSecret>::namespaced(client.clone(), &ns.name);
    for i in 0..n {
        let spec = json!({
            "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
            "identity": {"serviceAccountName": "bench"},
            "data": [{"key": "value", "remoteRef": {"name": names[i % DISTINCT_SECRETS]}}],
        });
        vsecs
            .create(
                &PostParams::default(),
                &vault_secret(&format!("app-{i}"), spec),
            )
            .await
            .unwrap();
    }

    let operator_id = operator_identity(&doubles, &[]).await;
    let started = Instant::now();
    let operator = Operator::start_with_env(
        &ns.name,
        &operator_id,
        &["--concurrency", "16"],
        &[("VAULTSYNC_LOG", "warn")],
    );
    // Settled: every object is Ready (synced), or, should any fail, has its first outcome.
    let (settled, outcome) = loop {
        let list = vsecs.list(&Default::default()).await.unwrap();
        let mut reasons = std::collections::BTreeMap::<String, usize>::new();
        for v in &list.items {
            if let Some(c) = v.ready_condition() {
                *reasons.entry(c.reason.clone()).or_default() += 1;
            }
        }
        let outcomes = reasons.values().sum::<usize>();
        let failed = outcomes - reasons.get("Synced").copied().unwrap_or(0);
        if outcomes == n && (failed == 0 || started.elapsed() > Duration::from_secs(120)) {
            break (started.elapsed(), format!("{reasons:?}"));
        }
        if started.elapsed() > Duration::from_secs(900) {
            panic!("not settled after 15 minutes: {reasons:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let metrics = operator.metrics().await;
    let (peak_rss_mib, cpu_secs) = proc_stats(operator.pid());
    let stats = doubles.stats().await;
    // Reads as Key Vault counts them: requests with a token (not the SDK's first,
    // token-less request that the challenge answers).
    let keyvault_reads = names
        .iter()
        .map(|name| stats["vaultAuthorized"]["GET"][name].as_u64().unwrap_or(0))
        .sum();
    Row {
        objects: n,
        settled_secs: settled.as_secs_f64(),
        outcome,
        keyvault_reads,
        token_exchanges: stats["tokenRequests"][&client_id].as_u64().unwrap_or(0),
        token_requests: metric(&metrics, "vaultsync_service_account_token_requests_total"),
        status_writes: metric(&metrics, "vaultsync_status_writes_total"),
        secret_writes: metric(&metrics, "vaultsync_secret_writes_total"),
        peak_rss_mib,
        cpu_secs,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<usize> = args
        .iter()
        .map(|a| a.parse().expect("usage: scale_bench <N>..."))
        .collect();
    let mut rows = Vec::new();
    for n in sizes {
        eprintln!("bench: {n} VaultSecrets");
        rows.push(run(n).await);
    }
    println!(
        "| VaultSecrets | distinct Key Vault secrets | all Ready in (s) | outcome | Key Vault reads | token exchanges | TokenRequests | status writes | Secret writes | operator peak RSS (MiB) | operator CPU (s) |"
    );
    println!("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {:.1} | {:.2} |",
            r.objects,
            DISTINCT_SECRETS,
            r.settled_secs,
            r.outcome,
            r.keyvault_reads,
            r.token_exchanges,
            r.token_requests,
            r.status_writes,
            r.secret_writes,
            r.peak_rss_mib,
            r.cpu_secs
        );
    }
}
