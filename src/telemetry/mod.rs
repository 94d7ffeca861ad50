//! Logs, Prometheus metrics and the health endpoints.

pub mod objects;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VAULTSYNC_LOG")
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// The `class` label of Key Vault requests: `2xx`, `4xx` (429 aside), `429`, `5xx` (or
/// `1xx`/`3xx`, which Key Vault does not send), or `error` when no answer came (refused
/// connection, reset, TLS, DNS, timeout). Seven values at most.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: String,
}

impl ClassLabels {
    /// The class of an HTTP status, or of no answer (`None`).
    pub fn of(status: Option<u16>) -> Self {
        let class = match status {
            None => "error".to_owned(),
            Some(429) => "429".to_owned(),
            Some(s) if (100..600).contains(&s) => format!("{}xx", s / 100),
            Some(_) => "error".to_owned(),
        };
        Self { class }
    }
}

/// The labels of token exchanges: which kind of identity (`operator`, `service_account`,
/// `managed_identity`) and how it ended (`ok`: a 2xx answer; `refused`: a 4xx answer, e.g.
/// no federated credential; `error`: a 5xx answer or none).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenExchangeLabels {
    pub identity: String,
    pub result: String,
}

impl TokenExchangeLabels {
    pub fn new(identity: &str, status: Option<u16>) -> Self {
        let result = match status {
            Some(s) if (200..300).contains(&s) => "ok",
            Some(s) if (400..500).contains(&s) => "refused",
            _ => "error",
        };
        Self {
            identity: identity.to_owned(),
            result: result.to_owned(),
        }
    }
}

/// Buckets of Key Vault request durations, in seconds: from a fast in-region answer to the
/// 30 s default request timeout.
fn keyvault_request_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// The metrics the Key Vault source counts into; clones share the series.
#[derive(Clone)]
pub struct SourceMetrics {
    /// TokenRequests for ServiceAccount identities.
    pub service_account_token_requests: Counter,
    /// Key Vault HTTP requests by [`ClassLabels`].
    pub keyvault_requests: Family<ClassLabels, Counter>,
    /// Their duration until the answer's headers (or the failure), by [`ClassLabels`].
    pub keyvault_request_duration: Family<ClassLabels, Histogram, fn() -> Histogram>,
    /// Token requests to Entra or a managed identity endpoint, by [`TokenExchangeLabels`].
    pub token_exchanges: Family<TokenExchangeLabels, Counter>,
}

/// Every metric the operator exports, prefixed `vaultsync_`. Labels are reasons and
/// outcomes only: never names of secrets, never values; only the opt-in per-object gauge
/// names objects (namespace and name of the VaultSecret).
pub struct Metrics {
    pub reconciliations: Family<ResultLabels, Counter>,
    pub failures: Family<ReasonLabels, Counter>,
    pub keyvault_reads: Family<ResultLabels, Counter>,
    pub secret_writes: Counter,
    pub status_writes: Counter,
    pub service_account_token_requests: Counter,
    pub reconcile_duration: Histogram,
    pub source: SourceMetrics,
    /// Gauges over the watched VaultSecrets, computed at each scrape.
    pub objects: Arc<objects::ObjectGauges>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Metrics {
    /// `per_object`: also export `vaultsync_vaultsecret_last_success_timestamp_seconds`
    /// with `namespace` and `name` labels (`--per-object-metrics`).
    pub fn new(per_object: bool) -> Self {
        let mut registry = Registry::with_prefix("vaultsync");
        let reconciliations = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciliations",
            "Reconciliations by result (synced, waiting, failed, suspended)",
            reconciliations.clone(),
        );
        let failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "failures",
            "Failed reconciliations by condition reason",
            failures.clone(),
        );
        let keyvault_reads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "keyvault_reads",
            "Key Vault secret reads by result (ok or a condition reason)",
            keyvault_reads.clone(),
        );
        let secret_writes = Counter::default();
        registry.register(
            "secret_writes",
            "Server-side applies of Secrets",
            secret_writes.clone(),
        );
        let status_writes = Counter::default();
        registry.register(
            "status_writes",
            "VaultSecret status patches",
            status_writes.clone(),
        );
        let service_account_token_requests = Counter::default();
        registry.register(
            "service_account_token_requests",
            "TokenRequests for ServiceAccount identities (one per ServiceAccount and token lifetime)",
            service_account_token_requests.clone(),
        );
        let reconcile_duration =
            Histogram::new([0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let keyvault_requests = Family::<ClassLabels, Counter>::default();
        registry.register(
            "keyvault_requests",
            "Key Vault HTTP requests by status class (2xx, 4xx, 429, 5xx, error: no answer); the unauthenticated first request that Key Vault's challenge answers with 401 is not counted",
            keyvault_requests.clone(),
        );
        let keyvault_request_duration =
            Family::<ClassLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                keyvault_request_histogram,
            );
        registry.register(
            "keyvault_request_duration_seconds",
            "Time from sending a Key Vault request to its answer's headers (or its failure), by status class",
            keyvault_request_duration.clone(),
        );
        let token_exchanges = Family::<TokenExchangeLabels, Counter>::default();
        registry.register(
            "token_exchanges",
            "Token requests to Entra ID or a managed identity endpoint, by kind of identity and result (ok, refused, error)",
            token_exchanges.clone(),
        );
        let objects = objects::ObjectGauges::new(per_object);
        registry.register_collector(Box::new(objects.clone()));
        Self {
            reconciliations,
            failures,
            keyvault_reads,
            secret_writes,
            status_writes,
            source: SourceMetrics {
                service_account_token_requests: service_account_token_requests.clone(),
                keyvault_requests,
                keyvault_request_duration,
                token_exchanges,
            },
            service_account_token_requests,
            reconcile_duration,
            objects,
            registry,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn count(family: &Family<ResultLabels, Counter>, result: &str) {
        family
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

/// Set once the controller's caches have synced; `/readyz` answers 503 until then.
#[derive(Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How long a watch counts as failing after its last error: twice the 30 s cap of the
/// watchers' backoff (kube's `DefaultBackoff`), so a watch that still fails reports again
/// well within it, and one that came back without an event to show it (a quiet watch
/// emits nothing) counts as recovered once it stays quiet this long.
pub const WATCH_QUIET_AFTER: Duration = Duration::from_secs(60);

/// The state of the operator's watches, for `/livez`: a watch that keeps failing for
/// longer than the threshold (`--watch-failure-threshold-seconds`) makes `/livez` answer
/// 503, so that the kubelet restarts an operator whose caches can no longer follow the
/// cluster (a restart lists afresh, and a missing permission shows as a crash loop
/// instead of a silently stale operator).
#[derive(Debug)]
pub struct WatchHealth {
    threshold: Duration,
    /// Per watch (by name): since when it fails, and its last error.
    failing: Mutex<BTreeMap<String, (Instant, Instant)>>,
}

impl WatchHealth {
    /// `threshold`: how long a watch may fail without a success before `/livez` fails.
    pub fn new(threshold: Duration) -> Self {
        Self {
            threshold,
            failing: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Instant, Instant)>> {
        // A plain map stays consistent even if a holder panicked.
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one item of watch `name`'s stream: an error is logged as a warning and
    /// starts (or continues) a failure; an event shows the watch works again.
    pub fn observe<T, E: std::fmt::Display>(&self, name: &str, item: &Result<T, E>) {
        match item {
            Ok(_) => {
                if self.lock().remove(name).is_some() {
                    tracing::info!(watch = name, "watch recovered");
                }
            }
            Err(e) => {
                tracing::warn!(watch = name, error = %e, "watch failed; retrying with backoff");
                let now = Instant::now();
                let mut failing = self.lock();
                let entry = failing.entry(name.to_owned()).or_insert((now, now));
                if now.duration_since(entry.1) > WATCH_QUIET_AFTER {
                    // Quiet since the last error: that was an earlier, ended failure.
                    entry.0 = now;
                }
                entry.1 = now;
            }
        }
    }

    /// The watches that have been failing for longer than the threshold and failed again
    /// recently (within [`WATCH_QUIET_AFTER`]).
    pub fn broken(&self) -> Vec<String> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, (since, last))| {
                now.duration_since(*since) >= self.threshold
                    && now.duration_since(*last) <= WATCH_QUIET_AFTER
            })
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The shared state the health endpoints read.
type HealthState = (Arc<Metrics>, Arc<Readiness>, Arc<WatchHealth>);

pub async fn serve_health(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    watches: Arc<WatchHealth>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/livez",
            get(|State((_, _, w)): State<HealthState>| async move {
                let broken = w.broken();
                if broken.is_empty() {
                    (StatusCode::OK, "ok".to_owned())
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("watches failing: {}", broken.join(", ")),
                    )
                }
            }),
        )
        .route(
            "/readyz",
            get(|State((_, r, _)): State<HealthState>| async move {
                if r.is_ready() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State((m, _, _)): State<HealthState>| async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }),
        )
        .with_state((metrics, readiness, watches));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "health and metrics endpoints listening");
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_is_broken_once_it_fails_past_the_threshold_and_recovers_on_an_event() {
        let health = WatchHealth::new(Duration::ZERO);
        assert!(health.broken().is_empty());
        let failed: Result<(), String> = Err("403".into());
        health.observe("vaultsecrets", &failed);
        assert_eq!(health.broken(), vec!["vaultsecrets".to_owned()]);
        health.observe("vaultsecrets", &Ok::<(), String>(()));
        assert!(health.broken().is_empty());

        let patient = WatchHealth::new(Duration::from_secs(3600));
        patient.observe("secrets", &failed);
        assert!(patient.broken().is_empty(), "not failing for long yet");
    }
}
