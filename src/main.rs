//! The `vaultsync` binary: flag parsing and wiring only; the logic lives in the library.

use anyhow::Context as _;
use clap::{ArgAction, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vaultsync::controller::data_hash;
use vaultsync::controller::grants::OperatorIdentity;
use vaultsync::controller::{self, ControllerConfig};
use vaultsync::leader::{Elector, LeaseConfig};
use vaultsync::source::{KeyVaultOptions, KeyVaultSource, VaultPolicy};
use vaultsync::telemetry::{self, LogFormat, Metrics, Readiness};

#[derive(Debug, Parser)]
#[command(
    name = "vaultsync",
    version,
    about = "Syncs Azure Key Vault secrets into Kubernetes Secrets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `vaultsync convert`: all files converted before anything is printed, so an error in
/// one prints nothing half-way.
fn convert(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for file in files {
        let (origin, source) = if file.as_os_str() == "-" {
            let mut source = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut source)
                .context("cannot read standard input")?;
            ("standard input".to_owned(), source)
        } else {
            let source = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            (file.display().to_string(), source)
        };
        all.extend(vaultsync::convert::convert_stream(&source, &origin)?);
    }
    print!("{}", vaultsync::convert::render(&all)?);
    Ok(())
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the VaultSecret CustomResourceDefinition as YAML.
    Crd,
    /// Run the operator.
    Run(Box<RunArgs>),
    /// Print VaultSecret manifests equivalent to SecretProviderClass manifests (Secrets
    /// Store CSI driver, Azure provider); what has no equivalent is listed as comments.
    Convert {
        /// Files of SecretProviderClass manifests (`-`: standard input); other kinds in
        /// them are skipped with a note.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Every flag can also be set as `VAULTSYNC_<FLAG>` (upper case, `-` as `_`).
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Kubeconfig to use; default: KUBECONFIG, ~/.kube/config, or the in-cluster config.
    #[arg(long, env = "VAULTSYNC_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Namespaces to watch, comma-separated; default: all namespaces.
    #[arg(long, env = "VAULTSYNC_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// VaultSecrets reconciled at the same time.
    #[arg(long, env = "VAULTSYNC_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// PEM file of extra CA certificates trusted for Key Vault and token endpoints.
    #[arg(long, env = "VAULTSYNC_EXTRA_CA_FILE")]
    extra_ca_file: Option<PathBuf>,
    /// DNS suffixes of vault hosts accepted besides Key Vault's own (`.vault.azure.net` and
    /// the sovereign clouds'), comma-separated; a suffix matches a host equal to it or
    /// ending with `.` and it. For emulators and private DNS names.
    #[arg(long, env = "VAULTSYNC_EXTRA_VAULT_SUFFIXES", value_delimiter = ',')]
    extra_vault_suffixes: Vec<String>,
    /// Vault hosts (host, or host:port as in vaultUrl) whose authentication challenge is
    /// not checked to name the vault's own domain, comma-separated. Only for emulators,
    /// whose host can never match; never in production.
    #[arg(
        long,
        env = "VAULTSYNC_SKIP_CHALLENGE_VERIFICATION_FOR",
        value_delimiter = ','
    )]
    skip_challenge_verification_for: Vec<String>,
    /// Where VaultSecrets without spec.identity may read Key Vault with the operator's own
    /// identity: `namespaces` (only where the Namespace is annotated
    /// vaultsync.io/operator-identity: "allowed"), `all` (single-tenant clusters) or `none`.
    #[arg(long, env = "VAULTSYNC_OPERATOR_IDENTITY", value_enum, default_value_t = OperatorIdentity::Namespaces)]
    operator_identity: OperatorIdentity,
    /// Tenant of ServiceAccounts without the azure.workload.identity/tenant-id annotation;
    /// default: AZURE_TENANT_ID.
    #[arg(long, env = "VAULTSYNC_DEFAULT_TENANT_ID")]
    default_tenant_id: Option<String>,
    /// Entra authority for ServiceAccount token exchanges; default: AZURE_AUTHORITY_HOST,
    /// else https://login.microsoftonline.com.
    #[arg(long, env = "VAULTSYNC_AUTHORITY_HOST")]
    authority_host: Option<String>,
    /// Identities whose credentials and Key Vault clients are kept cached.
    #[arg(long, env = "VAULTSYNC_MAX_CACHED_IDENTITIES", default_value_t = 1000)]
    max_cached_identities: usize,
    /// Key Vault REST API version.
    #[arg(long, env = "VAULTSYNC_KEY_VAULT_API_VERSION", default_value = "7.6")]
    key_vault_api_version: String,
    /// Key Vault requests per second per vault (Key Vault allows about 400 secret reads/s).
    #[arg(
        long,
        env = "VAULTSYNC_VAULT_REQUESTS_PER_SECOND",
        default_value_t = 100.0
    )]
    vault_requests_per_second: f64,
    /// Timeout of one Key Vault or token request, in seconds.
    #[arg(long, env = "VAULTSYNC_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    request_timeout_seconds: u64,
    /// Seconds a completed Key Vault read stays shared with identical reads after its
    /// last use, and beyond that while VaultSecrets due for it (first syncs, due refreshes)
    /// have not taken it, never more than 300 s after it started; 0 shares only reads in
    /// flight.
    /// Below the smallest refreshInterval (10 s), so an object refreshing alone reads again.
    #[arg(long, env = "VAULTSYNC_SHARED_READ_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..10))]
    shared_read_seconds: u64,
    /// Run only while holding the leader Lease, so that several replicas can run.
    #[arg(long, env = "VAULTSYNC_LEADER_ELECTION", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    leader_election: bool,
    /// The operator's own namespace: of the leader Lease and of the data-hash key Secret
    /// (vaultsync-hash-key); default: POD_NAMESPACE, else vaultsync-system.
    #[arg(long, env = "VAULTSYNC_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "VAULTSYNC_LEADER_ELECTION_LEASE_NAME",
        default_value = "vaultsync"
    )]
    leader_election_lease_name: String,
    /// Seconds a leader's Lease lasts without renewal; renewals come every third of it.
    #[arg(
        long,
        env = "VAULTSYNC_LEADER_ELECTION_LEASE_SECONDS",
        default_value_t = 15
    )]
    leader_election_lease_seconds: u64,
    /// Seconds after SIGTERM that running reconciles may take to finish before they are
    /// stopped; then the leader Lease is released (at most 5 s more) and the process
    /// exits. Keep it plus 5 below the pod's terminationGracePeriodSeconds (the chart
    /// checks: 20 + 5 < 30).
    #[arg(long, env = "VAULTSYNC_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 20)]
    shutdown_timeout_seconds: u64,
    /// Export vaultsync_vaultsecret_last_success_timestamp_seconds with namespace and name
    /// labels: one series per VaultSecret, for teams that alert per object.
    #[arg(long, env = "VAULTSYNC_PER_OBJECT_METRICS", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    per_object_metrics: bool,
    /// Let VaultSecrets restart the workloads their spec.rolloutRestartTargets name
    /// (Deployments, StatefulSets, DaemonSets of their namespace) when their Secret's data
    /// changes; needs the RBAC rule that patches them (chart value rolloutRestarts.enabled).
    /// Off: such a spec gets the condition RolloutRestarts=False RolloutRestartsNotAllowed.
    #[arg(long, env = "VAULTSYNC_ALLOW_ROLLOUT_RESTARTS", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    allow_rollout_restarts: bool,
    /// Seconds of the rollout restart debounce: rotations naming one workload within this
    /// window restart it once, at the window's end.
    #[arg(long, env = "VAULTSYNC_ROLLOUT_RESTART_WINDOW_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    rollout_restart_window_seconds: u64,
    /// How long before a synced Key Vault version's expiry (attributes.exp) the VaultSecret
    /// gets the Warning Event and condition `Expiring`: a duration such as 168h, 24h, 90m.
    #[arg(long, env = "VAULTSYNC_EXPIRY_WARNING", default_value = "168h", value_parser = parse_duration_flag)]
    expiry_warning: Duration,
    /// Address of /livez, /readyz and /metrics.
    #[arg(long, env = "VAULTSYNC_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    health_addr: SocketAddr,
    #[arg(long, env = "VAULTSYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Seconds a watch may keep failing (no event, errors at least once a minute) before
    /// /livez fails; default 300: several of the watchers' 30 s backoff cycles, so an API
    /// server restart or upgrade does not restart the operator, while a watch that stays
    /// broken (lost permissions, a wedged connection) restarts it within minutes.
    #[arg(
        long,
        env = "VAULTSYNC_WATCH_FAILURE_THRESHOLD_SECONDS",
        default_value_t = 300
    )]
    watch_failure_threshold_seconds: u64,
}

/// A duration flag, spelt as `refreshInterval` is (`168h`, `90m`, `1h30m`); not zero.
fn parse_duration_flag(text: &str) -> Result<Duration, String> {
    match controller::decide::parse_interval(text)? {
        d if d.is_zero() => Err("must be more than 0s".to_owned()),
        d => Ok(d),
    }
}

/// jemalloc instead of glibc's allocator: glibc gives each thread its own arena and keeps
/// what is freed in one arena for that arena, so the short-lived Kubernetes objects of a
/// cold start of thousands of VaultSecrets left the resident size far above what was
/// held (`make bench`, docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (its `malloc_conf`, read once at start-up; the `_rjem_` prefix is
/// tikv-jemallocator's): a background thread hands freed pages back to the system after
/// 1 s instead of 10 s, without waiting for the next allocation, so a burst of short-lived
/// objects does not stay resident. Options: jemalloc.net/jemalloc.3.html (TUNING).
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string pointer (`const char *`), which jemalloc reads as its `malloc_conf`.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// The pointer is to a constant that is never written.
unsafe impl Sync for MallocConf {}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", vaultsync::crd::crd_yaml()?);
            Ok(())
        }
        Command::Convert { files } => convert(&files),
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(*args)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init_logging(args.log_format);
    // The Azure crates and kube both use rustls; one process-wide provider avoids the
    // "could not determine the process-level CryptoProvider" panic.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let vaults = VaultPolicy::new(
        &args.extra_vault_suffixes,
        &args.skip_challenge_verification_for,
    );
    if !vaults.skip_challenge_verification_for().is_empty() {
        tracing::warn!(
            hosts = ?vaults.skip_challenge_verification_for(),
            "Key Vault challenge-resource verification is OFF for these vault hosts (--skip-challenge-verification-for): use this only with an emulator, never in production"
        );
    }
    if std::env::var_os("VAULTSYNC_SKIP_CHALLENGE_RESOURCE_VERIFICATION").is_some() {
        tracing::warn!(
            "VAULTSYNC_SKIP_CHALLENGE_RESOURCE_VERIFICATION is set but has no effect any more: name the emulator hosts in --skip-challenge-verification-for"
        );
    }
    let extra_ca_pem = match &args.extra_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("read --extra-ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let client = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read --kubeconfig {}", path.display()))?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
            kube::Client::try_from(config)?
        }
        None => kube::Client::try_default()
            .await
            .context("no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster)")?,
    };
    let operator_namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| "vaultsync-system".to_owned());
    // Before anything runs: every replica marks Secrets with the one shared key.
    let hash_key = data_hash::load_or_create_key(&client, &operator_namespace).await?;
    let metrics = Arc::new(Metrics::new(args.per_object_metrics));
    let readiness = Arc::new(Readiness::default());
    let source = KeyVaultSource::new(
        KeyVaultOptions {
            extra_ca_pem,
            vaults,
            api_version: args.key_vault_api_version.clone(),
            requests_per_second_per_vault: args.vault_requests_per_second,
            request_timeout: Duration::from_secs(args.request_timeout_seconds),
            shared_read_idle: Duration::from_secs(args.shared_read_seconds),
            default_tenant_id: args.default_tenant_id.clone().or_else(|| {
                std::env::var("AZURE_TENANT_ID")
                    .ok()
                    .filter(|t| !t.is_empty())
            }),
            authority_host: args.authority_host.clone(),
            max_cached_identities: args.max_cached_identities,
        },
        Some(client.clone()),
        metrics.source.clone(),
    )?;
    let watch_health = Arc::new(telemetry::WatchHealth::new(Duration::from_secs(
        args.watch_failure_threshold_seconds,
    )));
    let health = tokio::spawn(telemetry::serve_health(
        args.health_addr,
        metrics.clone(),
        readiness.clone(),
        watch_health.clone(),
    ));
    let config = ControllerConfig {
        namespaces: args.namespaces,
        concurrency: args.concurrency.max(1),
        operator_identity: args.operator_identity,
        allow_rollout_restarts: args.allow_rollout_restarts,
        rollout_restart_window: Duration::from_secs(args.rollout_restart_window_seconds),
        expiry_warning: args.expiry_warning,
    };
    tracing::info!(namespaces = ?config.namespaces, concurrency = config.concurrency, operator_identity = %config.operator_identity, "starting vaultsync");
    let elector = args.leader_election.then(|| {
        let lease_seconds = args.leader_election_lease_seconds.max(3);
        Elector::new(
            client.clone(),
            LeaseConfig {
                namespace: operator_namespace,
                name: args.leader_election_lease_name.clone(),
                identity: std::env::var("POD_NAME")
                    .ok()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| {
                        let host =
                            std::env::var("HOSTNAME").unwrap_or_else(|_| "vaultsync".to_owned());
                        format!("{host}-{}", std::process::id())
                    }),
                lease_duration: Duration::from_secs(lease_seconds),
                retry_period: Duration::from_secs(lease_seconds / 3),
            },
        )
    });
    let stopping = shutdown_signal()?;
    if let Some(elector) = &elector {
        // A follower knows its role once it has read the Lease: ready, and waiting.
        let standby = readiness.clone();
        tokio::select! {
            () = elector.acquire(move || standby.set_ready()) => {}
            () = stopping.clone() => {
                tracing::info!("stopping while waiting for the leader Lease; nothing to release");
                return Ok(());
            }
        }
    }
    let lost = async {
        match &elector {
            Some(elector) => elector.hold().await,
            None => std::future::pending().await,
        }
    };
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout_seconds);
    let deadline = {
        let stopping = stopping.clone();
        async move {
            stopping.await;
            tokio::time::sleep(shutdown_timeout).await;
        }
    };
    let outcome = tokio::select! {
        // Ends after SIGTERM/SIGINT once the running reconciles have finished.
        result = controller::run(client, Arc::new(source), metrics, controller::Health { readiness, watches: watch_health }, config, hash_key, stopping.clone()) => result,
        () = deadline => {
            // Dropping the controller cancels the reconciles still running: each write is
            // one request, so an object is left as the last finished write made it, and
            // the next leader decides it again from what it reads.
            tracing::warn!(timeout_seconds = shutdown_timeout.as_secs(), "reconciles still running at the shutdown deadline; stopping them");
            Ok(())
        }
        // Renewals go on while the reconciles finish, so the Lease cannot run out meanwhile.
        _ = lost => anyhow::bail!("lost the leader Lease; exiting so that another replica leads"),
        result = health => match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.context("health server")),
            Err(e) => Err(anyhow::anyhow!("health server task: {e}")),
        },
    };
    // Nothing reconciles any more: hand leadership over at once, so that a standby takes
    // over at its next retry instead of after the lease duration.
    if let Some(elector) = &elector
        && tokio::time::timeout(LEASE_RELEASE_TIMEOUT, elector.release())
            .await
            .is_err()
    {
        tracing::warn!("could not release the leader Lease in time; it expires after its duration");
    }
    tracing::info!("stopped");
    outcome
}

/// How long releasing the Lease may take at shutdown (one read and one write).
const LEASE_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// A future that resolves at the first SIGTERM or SIGINT, and every clone of it with it.
/// The handlers are installed here, before anything else waits, so that a signal is never
/// met by the default action (which would end the process without releasing the Lease).
fn shutdown_signal()
-> anyhow::Result<futures::future::Shared<futures::future::BoxFuture<'static, ()>>> {
    use futures::FutureExt as _;
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down: no new reconciles; running ones finish"
        );
        let _ = tx.send(());
    });
    Ok(rx.map(|_| ()).boxed().shared())
}
