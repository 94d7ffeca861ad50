//! `make bench`: the cost of N VaultSecrets over K distinct Key Vault secrets, spread over
//! several namespaces, all reading as the operator's identity, with U unrelated Secrets
//! in the watched namespaces, measured on the local environment (the Key Vault emulator
//! behind the gateway) against the real operator binary. Prints one Markdown table per N.
//!
//! Figures come from sources that do not depend on the operator's word: Key Vault reads
//! from the gateway's `vaultAuthorized` counts (requests with a token; the SDK's token-less
//! first request reads nothing), writes from kube-apiserver's `apiserver_request_total`,
//! memory (`VmHWM`) and CPU from the operator's `/proc` entries.
//!
//! Usage: VAULTSYNC_OPERATOR_BINARY=target/release/vaultsync scale_bench <N>...
//! Environment: BENCH_DISTINCT (K; default N/10), BENCH_NAMESPACES (default 4),
//! BENCH_UNRELATED (U; default 2N, 4 KiB each), BENCH_CONCURRENCY (default 16, for the
//! operator and the floor client alike), BENCH_RESTART_SECONDS (how long reads are counted
//! after a restart; default 60), BENCH_OPERATOR_FLAGS (extra flags, space-separated).

#[path = "../tests/common/mod.rs"]
mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vaultsync::api::VaultSecret;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident memory (MiB) and CPU time (user + system, seconds) of a process.
fn proc_stats(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: utime and stime are the 12th and 13th.
    let fields: Vec<f64> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let ticks = fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0);
    (hwm_kib / 1024.0, ticks / 100.0)
}

/// kube-apiserver's own count of write requests: (Secret writes, VaultSecret status
/// writes), from `apiserver_request_total`.
fn apiserver_writes() -> (u64, u64) {
    let out = std::process::Command::new("kubectl")
        .args(["get", "--raw", "/metrics"])
        .output()
        .expect("kubectl get --raw /metrics");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut secrets, mut status) = (0u64, 0u64);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"'))
                .unwrap_or("")
        };
        // DELETE is left out: the operator deletes a Secret only for a type change or a
        // rename (none here), while the namespaces of an earlier run, deleted by
        // kube-controller-manager, may still be losing their Secrets during this one.
        if !matches!(label("verb"), "POST" | "PUT" | "PATCH" | "APPLY") {
            continue;
        }
        let value = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        match (label("resource"), label("subresource")) {
            ("secrets", "") => secrets += value,
            ("vaultsecrets", "status") => status += value,
            _ => {}
        }
    }
    (secrets, status)
}

/// Authorized Key Vault GETs of `names` so far.
async fn keyvault_reads(doubles: &Doubles, names: &[String]) -> u64 {
    let stats = doubles.stats().await;
    names
        .iter()
        .map(|name| stats["vaultAuthorized"]["GET"][name].as_u64().unwrap_or(0))
        .sum()
}

/// Watches the VaultSecrets of `apis` (one list each, then their events: polling lists of
/// thousands of objects would load the API server under measurement) and keeps `summary`
/// of each object as last seen; returns what `done` answers first, asked at most every
/// 100 ms and at least every 200 ms. Panics after 30 minutes, naming `what`.
async fn watch_until<S, T>(
    apis: &[Api<VaultSecret>],
    what: &str,
    summary: impl Fn(&VaultSecret) -> S,
    mut done: impl FnMut(&BTreeMap<String, S>) -> Option<T>,
) -> T {
    let started = Instant::now();
    let mut events = futures::stream::select_all(apis.iter().map(|api| {
        watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed()
    }));
    let mut seen = BTreeMap::new();
    let mut asked = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_millis(200), events.next()).await {
            Ok(Some(Ok(vsec))) => {
                let key = format!(
                    "{}/{}",
                    vsec.namespace().unwrap_or_default(),
                    vsec.name_any()
                );
                seen.insert(key, summary(&vsec));
            }
            Ok(Some(Err(e))) => eprintln!("bench: watching VaultSecrets: {e}"),
            Ok(None) => panic!("the VaultSecret watch ended"),
            Err(_) => {}
        }
        if asked.elapsed() >= Duration::from_millis(100) {
            asked = Instant::now();
            if let Some(answer) = done(&seen) {
                return answer;
            }
        }
        if started.elapsed() > Duration::from_secs(1800) {
            panic!("{what}: not settled after 30 minutes");
        }
    }
}

/// Waits until every object in `apis` has a Ready condition (all `Synced`, or, after
/// 120 s, any reason); returns the reasons counted.
async fn settle(apis: &[Api<VaultSecret>], n: usize) -> BTreeMap<String, usize> {
    let started = Instant::now();
    watch_until(
        apis,
        "cold start",
        |v| v.ready_condition().map(|c| c.reason.clone()),
        |seen| {
            let mut reasons = BTreeMap::<String, usize>::new();
            for reason in seen.values().flatten() {
                *reasons.entry(reason.clone()).or_default() += 1;
            }
            let outcomes: usize = reasons.values().sum();
            let synced = reasons.get("Synced").copied().unwrap_or(0);
            (synced == n || (outcomes == n && started.elapsed() > Duration::from_secs(120)))
                .then_some(reasons)
        },
    )
    .await
}

/// Creates `secrets` with `concurrency` requests at a time; returns the time it took.
async fn create_secrets(client: &kube::Client, secrets: Vec<Secret>, concurrency: usize) -> f64 {
    let started = Instant::now();
    futures::stream::iter(secrets)
        .for_each_concurrent(concurrency, |secret| {
            let api = Api::<Secret>::namespaced(
                client.clone(),
                secret.metadata.namespace.as_deref().unwrap(),
            );
            async move {
                api.create(&PostParams::default(), &secret).await.unwrap();
            }
        })
        .await;
    started.elapsed().as_secs_f64()
}

/// The contract's floor: the requests the operator must make for each object's first
/// sync, made by a plain client at `concurrency` objects at a time against VaultSecrets no
/// operator watches (`contract-<i>` in `namespace`, created first and not timed): a Secret
/// GET from the API server's watch cache (the ownership guard, 404), the Secret's create,
/// the `Synced` Event (through the operator's own `EventPublisher`) and the status apply
/// with `Ready=True`.
/// Returns the time the requests took, in seconds.
async fn contract_floor(
    client: &kube::Client,
    namespace: &str,
    n: usize,
    concurrency: usize,
) -> f64 {
    use kube::Resource;
    use vaultsync::controller::events::{EventPublisher, EventType};
    let vsecs: Api<VaultSecret> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let created: BTreeMap<String, VaultSecret> = futures::stream::iter(0..n)
        .map(|i| {
            let vsecs = vsecs.clone();
            let spec = json!({"vaultUrl": "https://contract.vault.azure.net", "data": [{"key": "value", "remoteRef": {"name": "contract"}}]});
            async move {
                let vsec = vsecs
                    .create(
                        &PostParams::default(),
                        &vault_secret(&format!("contract-{i}"), spec),
                    )
                    .await
                    .unwrap();
                (vsec.name_any(), vsec)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let publisher = std::sync::Arc::new(EventPublisher::new(client.clone(), "scale-bench", None));
    let any = kube::api::GetParams {
        resource_version: Some("0".into()),
    };
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let (vsecs, secrets, publisher) = (vsecs.clone(), secrets.clone(), publisher.clone());
            let any = &any;
            let name = format!("contract-{i}");
            // The operator has the VaultSecret from its watch cache: no GET of it here.
            let reference = created[&name].object_ref(&());
            async move {
                assert!(matches!(
                    secrets.get_with(&name, any).await,
                    Err(kube::Error::Api(status)) if status.code == 404
                ));
                secrets
                    .create(&PostParams::default(), &plain_secret(namespace, &name, 64))
                    .await
                    .unwrap();
                publisher
                    .publish(
                        &reference,
                        EventType::Normal,
                        "Synced",
                        "Sync",
                        format!("wrote 1 key from Key Vault to Secret '{name}'"),
                    )
                    .await
                    .unwrap();
                let status = json!({
                    "apiVersion": "vaultsync.io/v1alpha1",
                    "kind": "VaultSecret",
                    "status": {
                        "secretName": name,
                        "conditions": [{
                            "type": "Ready", "status": "True", "reason": "Synced",
                            "message": "synced", "lastTransitionTime": "2026-01-01T00:00:00Z",
                        }],
                    },
                });
                vsecs
                    .patch_status(
                        &name,
                        &PatchParams::apply("scale-bench").force(),
                        &Patch::Apply(&status),
                    )
                    .await
                    .unwrap();
            }
        })
        .await;
    started.elapsed().as_secs_f64()
}

/// The label of the unrelated Secrets, which are deleted together for the run without them.
const UNRELATED_LABEL: &str = "vaultsync-bench/unrelated";

fn plain_secret(namespace: &str, name: &str, bytes: usize) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some([(UNRELATED_LABEL.to_owned(), "true".to_owned())].into()),
            ..Default::default()
        },
        data: Some([("value".to_owned(), ByteString(vec![b'x'; bytes]))].into()),
        ..Default::default()
    }
}

/// Waits until every object in `apis` acted on refresh request `request`, is Ready with
/// reason Synced and `Refreshed=True`: a request met by a failure (a throttled read) is
/// recorded as handled with `Refreshed=False` and Ready still True on the data held, and
/// is done only once a later read succeeds.
async fn settle_refresh(apis: &[Api<VaultSecret>], n: usize, request: &str) {
    watch_until(
        apis,
        &format!("refresh {request}"),
        |v| {
            let handled = v
                .status
                .as_ref()
                .and_then(|s| s.last_refresh_request.as_deref())
                == Some(request);
            let synced = v
                .ready_condition()
                .is_some_and(|c| c.status == "True" && c.reason == "Synced");
            let refreshed = v
                .status
                .as_ref()
                .and_then(|s| s.refreshed_condition())
                .is_some_and(|c| c.status == "True");
            handled && synced && refreshed
        },
        |seen| (seen.values().filter(|done| **done).count() == n).then_some(()),
    )
    .await
}

/// The refresh moments of objects created together, as the operator computes them
/// (`decide::refresh_key`, `decide::jitter_fraction`): a histogram of the N objects over
/// ten buckets of the jitter span (a tenth of `refreshInterval` after the interval).
fn refresh_histogram(vault_url: &str, names: &[String], n: usize) -> String {
    use vaultsync::controller::decide::{jitter_fraction, refresh_key};
    let identity = vaultsync::source::identity::IdentityRef::Operator;
    let mut buckets = [0usize; 10];
    let mut moments = std::collections::BTreeSet::new();
    for i in 0..n {
        let key = refresh_key(
            vault_url,
            &identity,
            [(names[i % names.len()].as_str(), None)],
        );
        let fraction = jitter_fraction(&key);
        moments.insert(fraction.to_bits());
        buckets[((fraction / 0.1 * 10.0) as usize).min(9)] += 1;
    }
    let cells: Vec<String> = buckets.iter().map(usize::to_string).collect();
    format!(
        "{} distinct moments; objects per tenth of the span: {}",
        moments.len(),
        cells.join(" / ")
    )
}

async fn run(n: usize) -> String {
    let k = env_or("BENCH_DISTINCT", (n / 10).max(1));
    let namespaces = env_or("BENCH_NAMESPACES", 4).max(1);
    let unrelated = env_or("BENCH_UNRELATED", 2 * n);
    let concurrency = env_or("BENCH_CONCURRENCY", 16).max(1);
    let restart_secs = env_or("BENCH_RESTART_SECONDS", 60);
    let extra: Vec<String> = std::env::var("BENCH_OPERATOR_FLAGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();

    let client = kube_client().await;
    ensure_crd(&client).await;
    let doubles = Doubles::new();
    let mut nss = Vec::new();
    for _ in 0..namespaces {
        nss.push(TempNamespace::create(&client).await);
    }
    let floor_ns = TempNamespace::create(&client).await;
    let prefix = unique("bench");
    let names: Vec<String> = (0..k).map(|i| format!("{prefix}-{i}")).collect();
    let vault = KeyVault::first();
    for name in &names {
        vault.set(name, "bench-value").await;
    }
    let client_id = operator_identity(
        &doubles,
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;

    eprintln!("bench: N={n}: {unrelated} unrelated Secrets");
    let unrelated_secrets = (0..unrelated)
        .map(|i| plain_secret(&nss[i % namespaces].name, &format!("unrelated-{i}"), 4096))
        .collect();
    create_secrets(&client, unrelated_secrets, concurrency).await;
    eprintln!("bench: N={n}: floor");
    let floor_secrets = (0..n)
        .map(|i| plain_secret(&floor_ns.name, &format!("floor-{i}"), 64))
        .collect();
    let floor_secs = create_secrets(&client, floor_secrets, concurrency).await;
    eprintln!("bench: N={n}: the contract's floor");
    let contract_secs = contract_floor(&client, &floor_ns.name, n, concurrency).await;

    eprintln!("bench: N={n}: {n} VaultSecrets");
    let apis: Vec<Api<VaultSecret>> = nss
        .iter()
        .map(|ns| Api::namespaced(client.clone(), &ns.name))
        .collect();
    futures::stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let api = apis[i % namespaces].clone();
            let spec = json!({
                "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
                "data": [{"key": "value", "remoteRef": {"name": names[i % k]}}],
            });
            async move {
                api.create(
                    &PostParams::default(),
                    &vault_secret(&format!("app-{i}"), spec),
                )
                .await
                .unwrap();
            }
        })
        .await;

    let watched = nss
        .iter()
        .map(|ns| ns.name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let concurrency_flag = concurrency.to_string();
    let mut flags = vec!["--concurrency", &concurrency_flag];
    flags.extend(extra.iter().map(String::as_str));
    let reads_before = keyvault_reads(&doubles, &names).await;
    let (secret_writes_before, status_writes_before) = apiserver_writes();

    eprintln!("bench: N={n}: cold start");
    let started = Instant::now();
    let mut operator =
        Operator::start_with_env(&watched, &client_id, &flags, &[("VAULTSYNC_LOG", "warn")]);
    let reasons = settle(&apis, n).await;
    let ready_secs = started.elapsed().as_secs_f64();
    let (peak_mib, cpu_secs) = proc_stats(operator.pid());
    let cold_reads = keyvault_reads(&doubles, &names).await - reads_before;
    let (secret_writes, status_writes) = apiserver_writes();
    let secret_writes = secret_writes - secret_writes_before;
    let status_writes = status_writes - status_writes_before;

    eprintln!("bench: N={n}: restart, reads counted for {restart_secs} s");
    operator.terminate();
    let reads_before_restart = keyvault_reads(&doubles, &names).await;
    let restarted =
        Operator::start_with_env(&watched, &client_id, &flags, &[("VAULTSYNC_LOG", "warn")]);
    tokio::time::sleep(Duration::from_secs(restart_secs as u64)).await;
    let restart_reads = keyvault_reads(&doubles, &names).await - reads_before_restart;
    let (restart_peak_mib, restart_cpu) = proc_stats(restarted.pid());

    // A refresh of every object requested at once while the whole vault answers 429
    // (Retry-After 1 s) for the first 20 s: every Key Vault request counted, and the time
    // from the request to all objects Synced with it.
    eprintln!("bench: N={n}: refresh of all under a 20 s whole-vault throttle");
    let throttle_reads_before = keyvault_reads(&doubles, &names).await;
    doubles
        .put(
            "/faults",
            json!({"secret": "*", "kind": "throttle", "retryAfterSeconds": 1}),
        )
        .await;
    let request = unique("refresh");
    let throttle_started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let api = apis[i % namespaces].clone();
            let patch =
                json!({"metadata": {"annotations": {vaultsync::api::REFRESH_ANNOTATION: request}}});
            async move {
                api.patch(
                    &format!("app-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .unwrap();
            }
        })
        .await;
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(throttle_started.elapsed())).await;
    doubles.clear_faults(None).await;
    settle_refresh(&apis, n, &request).await;
    let throttle_secs = throttle_started.elapsed().as_secs_f64();
    let throttle_reads = keyvault_reads(&doubles, &names).await - throttle_reads_before;
    drop(restarted);

    // The same restart without the unrelated Secrets: what they cost in memory.
    eprintln!("bench: N={n}: restart without the unrelated Secrets");
    for ns in &nss {
        Api::<Secret>::namespaced(client.clone(), &ns.name)
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(UNRELATED_LABEL),
            )
            .await
            .unwrap();
    }
    let bare = Operator::start_with_env(&watched, &client_id, &flags, &[("VAULTSYNC_LOG", "warn")]);
    tokio::time::sleep(Duration::from_secs(restart_secs as u64)).await;
    let (bare_peak_mib, _) = proc_stats(bare.pid());
    drop(bare);
    let histogram = refresh_histogram(&env("VAULTSYNC_TEST_VAULT_URL"), &names, n);

    let mut table = String::new();
    table.push_str(&format!(
        "\n### N = {n}: {k} distinct Key Vault secrets (K), {namespaces} namespaces, {unrelated} unrelated Secrets of 4 KiB (U), concurrency {concurrency}\n\n"
    ));
    table.push_str("| measure | vaultsync | reference |\n|---|---:|---|\n");
    let row = |m: &str, v: String, r: String| format!("| {m} | {v} | {r} |\n");
    table.push_str(&row(
        "cold start to all Ready (s)",
        format!("{ready_secs:.1}"),
        format!(
            "floor {floor_secs:.1} s (plain client creating {n} Secrets, concurrency {concurrency}); ratio {:.2}",
            ready_secs / floor_secs
        ),
    ));
    table.push_str(&row(
        "  the contract's floor (s)",
        format!("{contract_secs:.1}"),
        format!(
            "a plain client making each object's requests (Secret GET, create, Event, status apply), concurrency {concurrency}; vaultsync's ratio to it {:.2}",
            ready_secs / contract_secs
        ),
    ));
    table.push_str(&row(
        "outcome",
        format!("{reasons:?}"),
        format!("Synced: {n}"),
    ));
    table.push_str(&row(
        "Key Vault reads, cold start",
        cold_reads.to_string(),
        format!("K = {k}"),
    ));
    table.push_str(&row(
        "Secret writes (apiserver_request_total)",
        secret_writes.to_string(),
        format!("N = {n} (+1 if the hash key Secret is created)"),
    ));
    table.push_str(&row(
        "VaultSecret status writes (apiserver_request_total)",
        status_writes.to_string(),
        format!("N = {n}"),
    ));
    table.push_str(&row(
        "operator peak memory, VmHWM (MiB)",
        format!("{peak_mib:.1}"),
        "target < 64".into(),
    ));
    table.push_str(&row(
        "operator CPU, user + system (s)",
        format!("{cpu_secs:.2}"),
        String::new(),
    ));
    table.push_str(&row(
        &format!("Key Vault reads in the {restart_secs} s after a restart (all Ready, none due)"),
        restart_reads.to_string(),
        "0".into(),
    ));
    table.push_str(&row(
        &format!("restarted operator over those {restart_secs} s: VmHWM (MiB) / CPU (s)"),
        format!("{restart_peak_mib:.1} / {restart_cpu:.2}"),
        String::new(),
    ));
    table.push_str(&row(
        &format!("restarted operator without the {unrelated} unrelated Secrets: VmHWM (MiB)"),
        format!("{bare_peak_mib:.1}"),
        format!("{restart_peak_mib:.1} with them"),
    ));
    table.push_str(&row(
        "refresh of all requested under a 20 s whole-vault 429 (Retry-After 1 s): Key Vault requests",
        throttle_reads.to_string(),
        format!("K = {k} after the throttle"),
    ));
    table.push_str(&row(
        "  the same: request to all Synced (s)",
        format!("{throttle_secs:.1}"),
        "20 s of throttle".into(),
    ));
    table.push_str(&row(
        "refresh moments of the objects (computed, not observed)",
        histogram,
        "objects over one Key Vault secret refresh together".into(),
    ));
    table
}

#[tokio::main]
async fn main() {
    install_crypto_provider();
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: scale_bench <N>..."))
        .collect();
    let mut tables = Vec::new();
    for n in sizes {
        tables.push(run(n).await);
        // Printed as soon as measured, so a long run shows progress.
        println!("{}", tables.last().unwrap());
    }
}
