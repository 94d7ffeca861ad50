//! Logs, Prometheus metrics and the health endpoints.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Every metric the operator exports, prefixed `vaultsync_`. Labels are reasons and
/// outcomes only: never names of secrets, never values.
pub struct Metrics {
    pub reconciliations: Family<ResultLabels, Counter>,
    pub failures: Family<ReasonLabels, Counter>,
    pub keyvault_reads: Family<ResultLabels, Counter>,
    pub secret_writes: Counter,
    pub status_writes: Counter,
    pub service_account_token_requests: Counter,
    pub reconcile_duration: Histogram,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
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
        Self {
            reconciliations,
            failures,
            keyvault_reads,
            secret_writes,
            status_writes,
            service_account_token_requests,
            reconcile_duration,
            registry,
        }
    }
}

impl Metrics {
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

pub async fn serve_health(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(
                |State((_, r)): State<(Arc<Metrics>, Arc<Readiness>)>| async move {
                    if r.is_ready() {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                },
            ),
        )
        .route(
            "/metrics",
            get(
                |State((m, _)): State<(Arc<Metrics>, Arc<Readiness>)>| async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                },
            ),
        )
        .with_state((metrics, readiness));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "health and metrics endpoints listening");
    axum::serve(listener, app).await?;
    Ok(())
}
