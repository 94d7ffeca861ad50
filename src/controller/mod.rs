//! The sync controller: watches VaultSecrets and the Secrets they write, decides with the
//! pure functions of [`decide`] and [`target`], reads Key Vault through a
//! [`SecretSource`], and applies with server-side apply under one field manager.

mod backoff;
pub mod certificate;
pub mod data_hash;
pub mod decide;
mod demand;
pub mod events;
pub mod expiry;
mod first_syncs;
pub mod grants;
pub mod restart;
pub mod target;
mod vault_waits;
pub mod write;
mod written;

use crate::api::{
    EXPIRING, IdentitySpec, MANAGED_BY_LABEL, MANAGED_BY_VALUE, REFRESH_ANNOTATION,
    ROLLOUT_RESTARTS, Reason, VaultSecret, VaultSecretStatus,
};
use crate::source::{
    FetchedSecret, IdentityRef, SecretBytes, SecretRequest, SecretSource, SourceError,
};
use crate::telemetry::{Metrics, Readiness, ReasonLabels, WatchHealth};
use data_hash::DataHashKey;
use decide::{ReadCause, ReadPlan};
use events::{EventPublisher, EventType};
use futures::{FutureExt, StreamExt, TryStreamExt};
use grants::{NamespaceGrants, OperatorIdentity};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as RuntimeConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::{SecretState, TypeChange};
use write::Written;

/// How the controller runs; set from `vaultsync run` flags.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    pub concurrency: u16,
    /// Where a VaultSecret without `spec.identity` may use the operator's own identity.
    pub operator_identity: OperatorIdentity,
    /// Whether `spec.rolloutRestartTargets` are patched (`--allow-rollout-restarts`).
    pub allow_rollout_restarts: bool,
    /// Rotations naming one workload within this window restart it once
    /// (`--rollout-restart-window-seconds`, [`restart::DEFAULT_WINDOW`]).
    pub rollout_restart_window: Duration,
    /// How long before a synced version's expiry the `Expiring` Warning fires
    /// (`--expiry-warning`, [`expiry::DEFAULT_WARNING`]).
    pub expiry_warning: Duration,
}

pub struct Context {
    pub client: Client,
    pub source: Arc<dyn SecretSource>,
    pub events: EventPublisher,
    pub metrics: Arc<Metrics>,
    pub operator_identity: OperatorIdentity,
    /// Namespaces' grants of the operator's identity and of managed identities.
    pub grants: NamespaceGrants,
    /// Statuses this operator wrote that the watch cache may not show yet.
    pub written: written::WrittenStatuses,
    /// Versions announced whose status write has not succeeded yet.
    announced: written::AnnouncedVersions,
    /// Secrets just written, whose own watch event reconciles nothing.
    own_writes: written::OwnSecretWrites,
    /// The key of the `vaultsync.io/data-hash` mark.
    pub hash_key: DataHashKey,
    /// Backoff of reconciles that end in an error, per object.
    errors: backoff::ErrorBackoff,
    /// Whether `spec.rolloutRestartTargets` are patched.
    pub allow_rollout_restarts: bool,
    /// One restart per workload per window, whichever VaultSecrets ask.
    pub restarts: restart::Debouncer,
    /// How long before an expiry the `Expiring` Warning fires.
    pub expiry_warning: Duration,
    /// The pace of drift repairs, per object.
    repairs: backoff::RepairPace,
    /// Objects waiting for their first attempt, which go before due refreshes.
    first_syncs: Arc<first_syncs::FirstSyncs>,
    /// Objects a throttled vault refused, woken when it answers again.
    vault_waits: Arc<vault_waits::VaultWaits>,
}

/// Errors that end a reconcile early; failures of Key Vault or of the spec are reported
/// in status instead and are not errors of the reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("VaultSecret has no namespace")]
    NoNamespace,
}

/// A failure to report: the reason, an actionable message, when Key Vault asked to be
/// called again, when the failure passes by itself (a secret's `nbf`), if known, and how
/// it is retried.
#[derive(Debug, Clone)]
struct Failure {
    reason: Reason,
    message: String,
    retry_after: Option<Duration>,
    passes_in: Option<Duration>,
    retry: Retry,
}

/// How a failure is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Only when the spec changes (it cannot work as written).
    AfterChange,
    /// From 30 s to a minute: fixed outside the operator (Key Vault, access rights).
    Slow,
    /// From 5 s, doubling up to 5 minutes: may pass by itself.
    Transient,
}

impl Failure {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        let retry = match reason {
            Reason::InvalidSpec => Retry::AfterChange,
            r if r.is_transient() => Retry::Transient,
            _ => Retry::Slow,
        };
        Self {
            reason,
            message: message.into(),
            retry_after: None,
            passes_in: None,
            retry,
        }
    }
}

/// Fails with a clear hint when the CRD is not installed, instead of watching nothing.
pub async fn ensure_crd_installed(
    client: &Client,
    config: &ControllerConfig,
) -> anyhow::Result<()> {
    ensure_served::<VaultSecret>(client, config, "crds/vaultsecret.yaml").await
}

/// Lists one object of `K` in the first watched namespace (or cluster-wide) to tell
/// "not installed" (404) apart from everything else.
pub async fn ensure_served<K>(
    client: &Client,
    config: &ControllerConfig,
    manifest: &str,
) -> anyhow::Result<()>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match config.namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let crd_name = format!("{}.{}", K::plural(&()), K::group(&()));
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => anyhow::bail!(
            "the {} CRD ({crd_name}) is not installed in this cluster; install it with `kubectl apply -f {manifest}` (or `vaultsync crd | kubectl apply -f -`)",
            K::kind(&())
        ),
        Err(e) => Err(anyhow::anyhow!("cannot list {}: {e}", K::plural(&()))),
    }
}

/// What the health endpoints read from the controller: readiness once the caches synced,
/// and the state of its watches.
pub struct Health {
    pub readiness: Arc<Readiness>,
    pub watches: Arc<WatchHealth>,
}

/// Runs the controllers of every watched scope until `shutdown` resolves and their running
/// reconciles have finished (or a watch scope's stream ends). Errors: the CRD is not
/// installed.
pub async fn run(
    client: Client,
    source: Arc<dyn SecretSource>,
    metrics: Arc<Metrics>,
    health: Health,
    config: ControllerConfig,
    hash_key: DataHashKey,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let Health { readiness, watches } = health;
    ensure_crd_installed(&client, &config).await?;
    let events = EventPublisher::new(client.clone(), "vaultsync", std::env::var("POD_NAME").ok());
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    // The watched Namespaces' metadata, for their identity grants: synced before any
    // reconcile, so that a VaultSecret is never refused for a Namespace not yet seen.
    let (grants, grant_changes) = grants::watch_namespaces(&client, &scopes, &watches).await;
    // Shared reads are kept for the objects due for them (see [`demand`]).
    let first_syncs = Arc::new(first_syncs::FirstSyncs::default());
    let vault_waits = Arc::new(vault_waits::VaultWaits::default());
    let read_demand = Arc::new(demand::ReadDemand::new(
        Arc::downgrade(&source),
        first_syncs.clone(),
        vault_waits.clone(),
    ));
    source.hold_for(read_demand.clone());
    let ctx = Arc::new(Context {
        client: client.clone(),
        source,
        events,
        metrics,
        operator_identity: config.operator_identity,
        grants,
        written: Default::default(),
        hash_key,
        errors: Default::default(),
        allow_rollout_restarts: config.allow_rollout_restarts,
        restarts: restart::Debouncer::new(config.rollout_restart_window),
        expiry_warning: config.expiry_warning,
        repairs: Default::default(),
        first_syncs,
        vault_waits,
        announced: Default::default(),
        own_writes: Default::default(),
    });

    let mut controllers = Vec::new();
    let mut stores = Vec::new();
    for (scope, granted) in scopes.into_iter().zip(grant_changes) {
        let (vsecs, secrets): (Api<VaultSecret>, Api<PartialObjectMeta<Secret>>) = match &scope {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        // Only the Secrets this operator marked, and only their metadata (an
        // `Api<PartialObjectMeta<_>>` watch is metadata-only): no Secret value is cached.
        let managed =
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
        // Only spec changes (a new generation) and refresh requests trigger a reconcile:
        // the operator's own status writes must not, or every status write would be
        // followed by another attempt at once, past the backoff.
        let (reader, writer) = reflector::store();
        let where_ = scope.as_deref().unwrap_or("all namespaces");
        let vsec_health = (watches.clone(), format!("VaultSecrets in {where_}"));
        let vsec_events = reflector(
            writer,
            watcher(vsecs, watcher::Config::default())
                .inspect(move |item| vsec_health.0.observe(&vsec_health.1, item))
                // The cache keeps every VaultSecret for as long as it exists: what no
                // decision reads is not kept (see `slim_for_cache`).
                .modify(slim_for_cache),
        )
        .default_backoff()
        .applied_objects()
        .predicate_filter(decide::reconcile_trigger, Default::default());
        // With backoff (kube's `watches` retries a failing watch at once, in a loop).
        let secret_health = (watches.clone(), format!("Secrets in {where_}"));
        let own = ctx.clone();
        let secret_events = watcher(secrets, managed)
            .inspect(move |item| secret_health.0.observe(&secret_health.1, item))
            .default_backoff()
            .touched_objects()
            // The event of a Secret this operator just wrote shows what it wrote: its
            // writer has nothing to decide again (see `written::OwnSecretWrites`). A Secret
            // with several writers is not filtered: one writer's write may change what
            // another holds, and each of them must see it.
            .try_filter(move |secret| {
                let one_writer = target::writers_of(&secret.metadata).len() == 1;
                std::future::ready(!(one_writer && own.own_writes.is_echo(&secret.metadata)))
            });
        // A Namespace whose grants changed: its VaultSecrets are reconciled at once, so a
        // grant (or its removal) takes effect without waiting for the next retry.
        let vsecs_of = reader.clone();
        let controller = Controller::for_stream(vsec_events, reader)
            .with_config(RuntimeConfig::default().concurrency(config.concurrency))
            .watches_stream(secret_events, secret_to_vault_secret)
            .watches_stream(granted.map(Ok), move |ns: PartialObjectMeta<Namespace>| {
                vault_secrets_in(&vsecs_of, &ns.name_any())
            })
            // Objects a throttled vault refused, at its first answer (see `vault_waits`).
            .reconcile_on(ctx.vault_waits.subscribe(scope.clone()))
            // Once `shutdown` resolves, no reconcile starts and the running ones finish;
            // the caller bounds how long that may take (`--shutdown-timeout-seconds`).
            .graceful_shutdown_on(shutdown.clone());
        stores.push(controller.store());
        controllers.push(
            controller
                .run(reconcile, error_policy, ctx.clone())
                .for_each(|result| async move {
                    use kube::runtime::controller::Error as Loop;
                    match result {
                        // Watch errors are logged (as warnings) where they are observed,
                        // reconcile errors by `error_policy`.
                        Ok(_) | Err(Loop::QueueError(_) | Loop::ReconcilerFailed(..)) => {}
                        Err(e) => tracing::warn!(error = %e, "controller error"),
                    }
                })
                .boxed(),
        );
    }
    // The gauges over VaultSecrets read these caches at each scrape.
    ctx.metrics.objects.observe(stores.clone());
    ctx.first_syncs.observe(stores.clone());
    read_demand.observe(stores.clone());
    tokio::spawn(async move {
        for store in stores {
            if store.wait_until_ready().await.is_err() {
                return;
            }
        }
        readiness.set_ready();
        tracing::info!("watch caches synced; ready");
    });
    futures::future::join_all(controllers).await;
    Ok(())
}

/// The `kubectl apply` annotation that holds a copy of the whole object as last applied.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from a watched VaultSecret what the operator never reads before the cache keeps
/// it: `metadata.managedFields` (each writer's field set, parsed into a JSON tree: the
/// larger part of a cached object at thousands of objects) and the `kubectl apply` copy of
/// the object. Status writes are server-side applies built from the status alone, so the
/// API server's own record is untouched. The kube-rs optimization guide
/// (kube.rs/controllers/optimization) recommends the same for every reflector.
fn slim_for_cache(vsec: &mut VaultSecret) {
    vsec.metadata.managed_fields = None;
    if let Some(annotations) = vsec.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

fn vault_secrets_in(
    store: &reflector::Store<VaultSecret>,
    namespace: &str,
) -> Vec<ObjectRef<VaultSecret>> {
    store
        .state()
        .iter()
        .filter(|vsec| vsec.namespace().as_deref() == Some(namespace))
        .map(|vsec| ObjectRef::from_obj(vsec.as_ref()))
        .collect()
}

/// Every VaultSecret of the Secret's namespace that writes it (its marks name them), so a
/// change to a shared Secret reaches each of its writers.
fn secret_to_vault_secret(secret: PartialObjectMeta<Secret>) -> Vec<ObjectRef<VaultSecret>> {
    let Some(namespace) = secret.namespace() else {
        return Vec::new();
    };
    target::writers_of(&secret.metadata)
        .into_iter()
        .map(|name| ObjectRef::new(&name).within(&namespace))
        .collect()
}

/// A reconcile that ended in an error (one not even its status could report) is retried
/// with a backoff of its own, doubling from 1 s to 5 minutes.
fn error_policy(vsec: Arc<VaultSecret>, error: &Error, ctx: Arc<Context>) -> Action {
    let object = object_key(&vsec);
    let delay = ctx.errors.next_delay(&object);
    tracing::warn!(vaultsecret = %object, error = %error, retry_in_seconds = delay.as_secs(), "reconcile failed; retrying");
    Action::requeue(delay)
}

fn object_key(vsec: &VaultSecret) -> String {
    format!(
        "{}/{}",
        vsec.namespace().unwrap_or_default(),
        vsec.name_any()
    )
}

#[tracing::instrument(skip_all, fields(namespace = %vsec.namespace().unwrap_or_default(), name = %vsec.name_any()))]
async fn reconcile(vsec: Arc<VaultSecret>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let first = first_syncs::never_reported(&vsec);
    let result = reconcile_inner(&vsec, &ctx).await;
    if first {
        ctx.first_syncs.attempted(&vsec);
    }
    if let Some(uid) = vsec.uid() {
        ctx.vault_waits.reconciled(&uid);
    }
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_err() {
        Metrics::count(&ctx.metrics.reconciliations, "error");
    }
    result
}

async fn reconcile_inner(vsec: &VaultSecret, ctx: &Context) -> Result<Action, Error> {
    if vsec.meta().deletion_timestamp.is_some() {
        // Owned Secrets go with the VaultSecret through garbage collection; Merge and
        // Orphan Secrets stay by contract.
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let status = ctx.written.current(vsec);
    let mut held = None;
    let result = match sync(vsec, ctx, &status, now, &mut held).await {
        Ok(action) => Ok(action),
        Err(Stop::Failed(failure)) => fail(vsec, ctx, &status, failure, held, now).await,
        Err(Stop::Api(error)) => match api_failure(&error) {
            Some(failure) => fail(vsec, ctx, &status, failure, held, now).await,
            None => Err(error),
        },
    };
    if result.is_ok() {
        ctx.errors.reset(&object_key(vsec));
    }
    result
}

/// A Kubernetes API failure as a failure to report in status (`KubernetesApiError`, with
/// backoff). A conflict (409: the object changed since it was read) is not one: it is
/// decided again at once, through [`error_policy`].
fn api_failure(error: &Error) -> Option<Failure> {
    let message = match error {
        Error::Kube(kube::Error::Api(status)) if status.code == 409 => return None,
        Error::Kube(kube::Error::Api(status)) => format!(
            "the Kubernetes API server refused a request: HTTP {} {}: {}",
            status.code,
            status.reason,
            decide::redact_quoted_input(&status.message)
        ),
        Error::Kube(other) => format!("a Kubernetes API request failed: {other}"),
        Error::NoNamespace => return None,
    };
    Some(Failure::new(Reason::KubernetesApiError, message))
}

/// Why a sync stopped early: a failure to report in status, or an API error to retry.
enum Stop {
    Failed(Failure),
    Api(Error),
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Self {
        Stop::Failed(failure)
    }
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Stop::Api(error)
    }
}

impl From<kube::Error> for Stop {
    fn from(error: kube::Error) -> Self {
        Stop::Api(Error::Kube(error))
    }
}

/// `held` is set, once known, to whether the Secret holds this generation's data (a
/// failure after that point is a failed refresh: `Ready` stays True).
async fn sync(
    vsec: &VaultSecret,
    ctx: &Context,
    status: &VaultSecretStatus,
    now: Timestamp,
    held: &mut Option<bool>,
) -> Result<Action, Stop> {
    let namespace = vsec.namespace().ok_or(Error::NoNamespace)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let target_name = vsec.target_name();

    if vsec.spec.suspend {
        let suspended = decide::suspended_status(status, vsec.meta().generation, now);
        write_status(vsec, ctx, status, suspended).await?;
        Metrics::count(&ctx.metrics.reconciliations, "suspended");
        return Ok(Action::await_change());
    }

    let interval = decide::parse_interval(&vsec.spec.refresh_interval)
        .map_err(|m| Failure::new(Reason::InvalidSpec, m))?;
    let identity = identity_for(vsec, &namespace)?;
    // Before anything is read: an identity this namespace was not granted is never used.
    let annotations = ctx.grants.annotations(&namespace);
    grants::check_grant(
        &identity,
        &namespace,
        annotations.as_ref(),
        ctx.operator_identity,
    )
    .map_err(|m| Failure::new(Reason::IdentityError, m))?;

    let synced_this_generation =
        decide::synced_this_generation(status, vsec.meta().generation, &target_name);
    let all_pinned_and_synced = vsec.spec.data.iter().all(|entry| {
        entry
            .remote_ref
            .pinned_version()
            .is_some_and(|v| status.synced_versions.get(&entry.key).map(String::as_str) == Some(v))
    });
    // Keyed by what is read (the vault as normalised when it is a valid one): objects over
    // the same secrets refresh together and share their reads.
    let jitter_key = jitter_key(
        vsec,
        &ctx.source
            .vault_url(&vsec.spec.vault_url)
            .unwrap_or_else(|_| vsec.spec.vault_url.clone()),
        &identity,
    );
    let plan_with = |drift| {
        decide::plan_read(&decide::PlanInput {
            synced_this_generation,
            drift,
            refresh_failed: decide::previous_failure(status).is_some(),
            refresh_requested: decide::unhandled_refresh(vsec.annotations(), status).is_some(),
            last_sync: status.last_sync_time.as_ref().map(|t| t.0),
            interval,
            jitter_key: &jitter_key,
            now,
            all_pinned_and_synced,
        })
    };

    // A refresh of data the Secret holds can wait a little for objects that have none yet.
    // Decided before the Secret is fetched: a refresh that waits needs nothing of it, and
    // fetching it once a second per waiting object would load the API server while the
    // first syncs need it. Drift is not known yet; a Secret that drifted meanwhile is
    // repaired when the wait ends (its watch event brings a reconcile that waits too).
    if plan_with(false) == ReadPlan::Read(ReadCause::RefreshDue) {
        let waiting = ctx.first_syncs.waiting();
        if waiting > 0 {
            tracing::debug!(waiting, "refresh due; objects that never synced go first");
            Metrics::count(&ctx.metrics.reconciliations, "waiting");
            return Ok(Action::requeue(first_syncs::REFRESH_WAIT));
        }
    }

    // Read before any Key Vault call: a Secret someone else holds is refused with no value
    // read (a managed-Secrets cache could not show it, since it is not marked).
    let existing = get_from_watch_cache(&secrets, &target_name).await?;
    check_target(existing.as_ref(), vsec)?;
    let state = target::secret_state(existing.as_ref(), vsec, &ctx.hash_key);
    let drift = matches!(state, SecretState::Missing | SecretState::DataDrifted);
    *held = Some(synced_this_generation && !drift);
    let plan = plan_with(drift);
    // A Secret that keeps drifting (a client deleting or editing it in a loop) is repaired
    // at a pace: each repair costs a write, an Event, and, for lost data, a Key Vault read.
    let object = object_key(vsec);
    let repair = matches!(plan, ReadPlan::Read(ReadCause::Drift))
        || (matches!(plan, ReadPlan::Wait(_)) && state == SecretState::MetadataDrifted);
    if repair && let Some(pause) = ctx.repairs.wait(&object, Instant::now()) {
        tracing::info!(
            pause_ms = pause.as_millis() as u64,
            "the Secret drifted again soon after its last repair; repairing after a pause"
        );
        // Meanwhile `Ready` says what the Secret holds: not the synced data when that was
        // lost (DriftRepairPaused), the synced data when only metadata drifted.
        let paused = if drift {
            decide::repair_paused_status(status, &target_name, now)
        } else {
            decide::repair_unpaused_status(status, &target_name, now)
        };
        write_status(vsec, ctx, status, paused).await?;
        Metrics::count(&ctx.metrics.reconciliations, "waiting");
        return Ok(Action::requeue(pause));
    }
    let cause = match plan {
        ReadPlan::Read(cause) => cause,
        ReadPlan::Wait(after) => {
            if let (SecretState::MetadataDrifted, Some(secret)) = (&state, existing.as_ref()) {
                // The data still hashes to what was written: restore the marks around it
                // without asking Key Vault.
                let data = target::existing_managed_data(secret, vsec);
                if write::apply_secret(&secrets, vsec, existing.as_ref(), &data, ctx).await?
                    == Written::Stale
                {
                    return Ok(Action::requeue(write::STALE_RETRY));
                }
                ctx.repairs.repaired(&object, Instant::now());
                let note = format!(
                    "restored the labels, annotations, type or owner of Secret '{target_name}' (data was intact; no Key Vault read)"
                );
                publish(ctx, vsec, EventType::Normal, "DriftRepaired", note).await;
            }
            if let (SecretState::LegacyMarks, Some(secret)) = (&state, existing.as_ref()) {
                write::migrate_marks(&secrets, vsec, secret, ctx).await?;
            }
            // A restart may be due (its window ended, or an operator restart lost it): the
            // data as it stands is what the targets must be restarted for.
            let current = existing
                .as_ref()
                .filter(|_| {
                    matches!(
                        state,
                        SecretState::InSync
                            | SecretState::MetadataDrifted
                            | SecretState::LegacyMarks
                    )
                })
                .map(|secret| ctx.hash_key.data_hash(target::managed_data(secret, vsec)));
            // A Secret whose paused repair the other client made needless (it put the data
            // back) holds the synced data again.
            let unpaused = decide::repair_unpaused_status(status, &target_name, now);
            let (new_status, restart_wait) =
                rollout_restarts(vsec, ctx, unpaused, current.as_deref(), now).await;
            // The clock alone may have brought the expiry into the window, or past it.
            let (new_status, expiry_wait) = expiry_step(vsec, ctx, new_status, now).await;
            write_status(vsec, ctx, status, new_status).await?;
            Metrics::count(&ctx.metrics.reconciliations, "waiting");
            return Ok(earliest(earliest(after, restart_wait), expiry_wait)
                .map(Action::requeue)
                .unwrap_or_else(Action::await_change));
        }
    };

    let kept = match existing.as_ref() {
        Some(secret)
            if matches!(state, SecretState::InSync | SecretState::LegacyMarks)
                && cause == ReadCause::RefreshDue =>
        {
            target::pinned_and_intact(secret, vsec, &status.synced_versions)
        }
        _ => BTreeMap::new(),
    };
    let floor = decide::shared_read_floor(
        cause,
        status.last_sync_time.as_ref().map(|t| t.0),
        interval,
        now,
    );
    let kept_from_secret = !kept.is_empty();
    // Kept entries are not read again: their expiry is the one synced with them.
    let mut expiries: BTreeMap<String, Time> = kept
        .keys()
        .filter_map(|k| Some((k.clone(), status.synced_expiries.get(k)?.clone())))
        .collect();
    let (data, read_expiries) = read_all(vsec, &identity, ctx, kept, floor).await?;
    expiries.extend(read_expiries);
    let values: BTreeMap<String, SecretBytes> = data
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    // Before any write: the API server would refuse it, and the old data stays.
    decide::check_size(&values).map_err(|e| Failure::new(Reason::SecretTooLarge, e.to_string()))?;
    let new_hash = ctx
        .hash_key
        .data_hash(values.iter().map(|(k, v)| (k.as_str(), v.expose())));
    // Written on the Secret as read. A Secret changed meanwhile (409) is decided again on
    // the Secret as it is now, with the values already read: the conflict is the API
    // server's, not Key Vault's, so Key Vault is not asked again, and the next write follows
    // its decision by milliseconds instead of a Key Vault read, so a client that keeps
    // touching the Secret cannot keep it from converging.
    let decided_on = state;
    let mut existing = existing;
    let mut state = state;
    let mut needs_write = false;
    for attempt in 1..=write::WRITE_ATTEMPTS {
        let current_hash = existing
            .as_ref()
            .map(|s| ctx.hash_key.data_hash(target::managed_data(s, vsec)));
        needs_write =
            state != SecretState::InSync || current_hash.as_deref() != Some(new_hash.as_str());
        if !needs_write
            || write::apply_secret(&secrets, vsec, existing.as_ref(), &values, ctx).await?
                == Written::Done
        {
            break;
        }
        // Values kept from the Secret as it was read (pinned entries) may not be in the
        // Secret any more: those are decided again from the start.
        if attempt == write::WRITE_ATTEMPTS || kept_from_secret {
            return Ok(Action::requeue(write::STALE_RETRY));
        }
        existing = secrets.get_opt(&target_name).await?;
        check_target(existing.as_ref(), vsec)?;
        state = target::secret_state(existing.as_ref(), vsec, &ctx.hash_key);
    }
    // After a target.name change, the old Secret goes only once the new one holds the
    // data, so pods never lose their Secret to a rename that cannot complete.
    if let Some(old) = status
        .secret_name
        .as_ref()
        .filter(|old| **old != target_name)
    {
        write::remove_old_target(&secrets, old, vsec).await?;
    }
    let versions: BTreeMap<String, String> = data
        .iter()
        .map(|(k, (_, version))| (k.clone(), version.clone()))
        .collect();
    if cause == ReadCause::Drift && needs_write {
        ctx.repairs.repaired(&object, Instant::now());
    }
    let already = ctx.announced.already(vsec, &versions);
    if announce_sync(
        vsec,
        ctx,
        status,
        &versions,
        already,
        cause,
        decided_on,
        needs_write,
    )
    .await
    {
        ctx.announced.record(vsec, &versions);
    }
    let new_status = decide::synced_status(
        status,
        vsec.meta().generation,
        target_name,
        versions,
        vsec.annotations().get(REFRESH_ANNOTATION).cloned(),
        now,
    );
    let new_status = VaultSecretStatus {
        synced_expiries: expiries,
        ..new_status
    };
    let (new_status, restart_wait) =
        rollout_restarts(vsec, ctx, new_status, Some(&new_hash), now).await;
    let (new_status, expiry_wait) = expiry_step(vsec, ctx, new_status, now).await;
    write_status(vsec, ctx, status, new_status).await?;
    ctx.announced.settled(vsec);
    Metrics::count(&ctx.metrics.reconciliations, "synced");
    let all_pinned = vsec
        .spec
        .data
        .iter()
        .all(|e| e.remote_ref.pinned_version().is_some());
    let refresh = (!interval.is_zero() && !all_pinned)
        .then(|| interval.mul_f64(1.0 + decide::jitter_fraction(&jitter_key)));
    Ok(earliest(earliest(refresh, restart_wait), expiry_wait)
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

/// The expiry step: `status.expiresAt` from `status.syncedExpiries`, the `Expiring`
/// condition for it at `now` (a Warning Event when it enters `Expiring` or `Expired`), and
/// when the clock alone changes it next, so that the Warning comes at window entry even
/// when no refresh is due then.
async fn expiry_step(
    vsec: &VaultSecret,
    ctx: &Context,
    mut status: VaultSecretStatus,
    now: Timestamp,
) -> (VaultSecretStatus, Option<Duration>) {
    let first = expiry::earliest(&status.synced_expiries).map(|(k, t)| (k.to_owned(), t));
    status.expires_at = first.as_ref().map(|(_, t)| Time(*t));
    let previous = status.condition(EXPIRING).cloned();
    let assessed = expiry::assess(
        first.as_ref().map(|(k, t)| (k.as_str(), *t)),
        |key| expiry::source_of(vsec, key),
        ctx.expiry_warning,
        now,
    );
    match assessed {
        None => status.conditions = decide::remove_condition(&status.conditions, EXPIRING),
        Some(assessed) => {
            let condition =
                expiry::condition(previous.as_ref(), assessed, vsec.meta().generation, now);
            if expiry::warns(previous.as_ref(), &condition) {
                publish(
                    ctx,
                    vsec,
                    EventType::Warning,
                    &condition.reason,
                    condition.message.clone(),
                )
                .await;
            }
            status.conditions = decide::set_condition(&status.conditions, condition);
        }
    }
    // A second late, so that the instant itself is past when the reconcile looks.
    let next = expiry::next_change(first.map(|(_, t)| t), ctx.expiry_warning, now)
        .map(|d| d + Duration::from_secs(1));
    (status, next)
}

/// The sooner of two optional delays.
fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The rollout restart step, once the Secret holds data marked `current` (`None` when not
/// known): `status` with the restart bookkeeping (`restartedDataHash`, the
/// `RolloutRestarts` condition), and when to look again for a restart waiting for its
/// debounce window. Restarts never fail the sync: a missing target is a Warning and a
/// condition, the Secret stays synced and `Ready`.
async fn rollout_restarts(
    vsec: &VaultSecret,
    ctx: &Context,
    mut status: VaultSecretStatus,
    current: Option<&str>,
    now: Timestamp,
) -> (VaultSecretStatus, Option<Duration>) {
    use restart::{RestartDecision, Turn, reasons};
    let targets = &vsec.spec.rollout_restart_targets;
    let generation = vsec.meta().generation;
    let previous = status.condition(ROLLOUT_RESTARTS).cloned();
    let names = || {
        targets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match restart::decide_restart(
        !targets.is_empty(),
        ctx.allow_rollout_restarts,
        status.restarted_data_hash.as_deref(),
        current,
    ) {
        RestartDecision::NoTargets => {
            status.restarted_data_hash = None;
            status.conditions = decide::remove_condition(&status.conditions, ROLLOUT_RESTARTS);
            (status, None)
        }
        RestartDecision::NotAllowed { baseline } => {
            status.restarted_data_hash = baseline;
            let message = format!(
                "spec.rolloutRestartTargets names {} but this operator runs without --allow-rollout-restarts (chart value rolloutRestarts.enabled): nothing is restarted",
                names()
            );
            if previous.as_ref().map(|c| c.reason.as_str()) != Some(reasons::NOT_ALLOWED) {
                publish(
                    ctx,
                    vsec,
                    EventType::Warning,
                    reasons::NOT_ALLOWED,
                    message.clone(),
                )
                .await;
            }
            let condition = restart::restart_condition(
                previous.as_ref(),
                false,
                reasons::NOT_ALLOWED,
                message,
                generation,
                now,
            );
            status.conditions = decide::set_condition(&status.conditions, condition);
            (status, None)
        }
        RestartDecision::UpToDate { baseline } => {
            status.restarted_data_hash = baseline;
            (status, None)
        }
        RestartDecision::Due => {
            let current = current.unwrap_or_default().to_owned();
            let namespace = vsec.namespace().unwrap_or_default();
            let who = (vsec.uid().unwrap_or_default(), current.clone());
            let mut outcomes = Vec::new();
            let mut wait: Option<Duration> = None;
            for target in targets {
                let key = (namespace.clone(), target.kind, target.name.clone());
                match ctx.restarts.request(&key, &who, Instant::now()) {
                    Turn::Wait(d) => wait = earliest(wait, Some(d)),
                    Turn::Fire(served) => {
                        let at = restart::restarted_at(Timestamp::now());
                        let outcome =
                            restart::restart_workload(&ctx.client, &namespace, target, &at).await;
                        tracing::info!(target = %target, outcome = ?outcome, "rollout restart");
                        ctx.restarts
                            .finish(&key, served, outcome.clone(), Instant::now());
                        outcomes.push((target.clone(), outcome));
                    }
                    Turn::Done(outcome) => outcomes.push((target.clone(), outcome)),
                }
            }
            if let Some(wait) = wait {
                let message = format!(
                    "the Secret's data changed: restarting {} at the end of the {}s debounce window",
                    names(),
                    ctx.restarts.window().as_secs()
                );
                let condition = restart::restart_condition(
                    previous.as_ref(),
                    false,
                    reasons::PENDING,
                    message,
                    generation,
                    now,
                );
                status.conditions = decide::set_condition(&status.conditions, condition);
                return (status, Some(wait));
            }
            let summary = restart::summarize(&outcomes);
            for (warning, reason, note) in summary.events {
                let type_ = if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                publish(ctx, vsec, type_, reason, note).await;
            }
            let condition = restart::restart_condition(
                previous.as_ref(),
                summary.ok,
                summary.reason,
                summary.message,
                generation,
                now,
            );
            status.conditions = decide::set_condition(&status.conditions, condition);
            status.restarted_data_hash = Some(current);
            (status, None)
        }
    }
}

/// The Secret as kube-apiserver's watch cache holds it (`resourceVersion=0`, "any"
/// version): served without a read of etcd, which at thousands of first syncs is a fair
/// part of the API server's work. The cache may lag etcd by moments, never the watch
/// events that bring reconciles (they come from it), and no write trusts it: a create
/// fails on a Secret that exists (409 AlreadyExists), an apply or delete carries the
/// `resourceVersion` or uid that was read, so a stale read costs a 409 and a fresh read
/// (the write loop's), never a wrong write.
async fn get_from_watch_cache(
    secrets: &Api<Secret>,
    name: &str,
) -> Result<Option<Secret>, kube::Error> {
    let any = kube::api::GetParams {
        resource_version: Some("0".into()),
    };
    match secrets.get_with(name, &any).await {
        Ok(secret) => Ok(Some(secret)),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the Secret as read may be written by this VaultSecret: not another's
/// (`OwnershipConflict`), and not a Merge target of another type (`InvalidSpec`).
fn check_target(existing: Option<&Secret>, vsec: &VaultSecret) -> Result<(), Failure> {
    target::ensure_not_foreign(existing.map(|s| &s.metadata), vsec)
        .map_err(|m| Failure::new(Reason::OwnershipConflict, m))?;
    if let TypeChange::RefusedForMerge { from, to } = target::type_change(existing, vsec) {
        let target_name = vsec.target_name();
        let message = format!(
            "target.type is {to} but Secret '{target_name}' is {from}: Kubernetes cannot change a Secret's type in place, and a Secret merged into (creationPolicy Merge) is shared with other writers, so it is never re-created; remove target.type or set it to {from}"
        );
        return Err(Failure::new(Reason::InvalidSpec, message));
    }
    Ok(())
}

/// The object's [`decide::refresh_key`]: what it reads, as `vault_url` (normalised).
fn jitter_key(vsec: &VaultSecret, vault_url: &str, identity: &IdentityRef) -> String {
    decide::refresh_key(
        vault_url,
        identity,
        vsec.spec
            .data
            .iter()
            .map(|e| (e.remote_ref.name.as_str(), e.remote_ref.pinned_version())),
    )
}

/// The identity the spec names; whether the namespace may use it is [`grants::check_grant`].
fn identity_for(vsec: &VaultSecret, namespace: &str) -> Result<IdentityRef, Failure> {
    match &vsec.spec.identity {
        None => Ok(IdentityRef::Operator),
        Some(IdentitySpec {
            service_account_name: Some(sa),
            managed_identity_client_id: None,
        }) => Ok(IdentityRef::ServiceAccount {
            namespace: namespace.to_owned(),
            name: sa.clone(),
        }),
        Some(IdentitySpec {
            service_account_name: None,
            managed_identity_client_id: Some(id),
        }) => Ok(IdentityRef::ManagedIdentity {
            client_id: id.clone(),
        }),
        Some(_) => Err(Failure::new(
            Reason::InvalidSpec,
            "spec.identity must set exactly one of serviceAccountName and managedIdentityClientId",
        )),
    }
}

/// The bytes to write per Secret key, with the Key Vault version they came from.
type SyncedData = BTreeMap<String, (SecretBytes, String)>;

/// Reads every entry not `kept` and turns each into the bytes to write, with its Key Vault
/// version. Each distinct read is made once (Key Vault names ignore case, so `Db-Password`
/// and `db-password` are one read), all concurrently. All or nothing: the first entry
/// that fails, in spec order, fails the whole read, and nothing is returned to write.
async fn read_all(
    vsec: &VaultSecret,
    identity: &IdentityRef,
    ctx: &Context,
    kept: BTreeMap<String, (SecretBytes, String)>,
    floor: Option<Timestamp>,
) -> Result<(SyncedData, BTreeMap<String, Time>), Failure> {
    // Normalised, so that spellings of one vault share its client, reads and budget; a
    // host that is not a vault this operator calls is a spec error, and nothing is sent.
    let vault_url = ctx
        .source
        .vault_url(&vsec.spec.vault_url)
        .map_err(|message| Failure::new(Reason::InvalidSpec, message))?;
    // A shared read that started before the floor is never handed to this object.
    let fresher_than = floor.map(std::time::SystemTime::from);
    let pending: Vec<_> = vsec
        .spec
        .data
        .iter()
        .filter(|entry| !kept.contains_key(&entry.key))
        .map(|entry| {
            let request = SecretRequest {
                vault_url: vault_url.clone(),
                identity: identity.clone(),
                name: entry.remote_ref.name.clone(),
                version: entry.remote_ref.pinned_version().map(str::to_owned),
                fresher_than,
                requester: vsec.uid(),
            };
            (entry, request)
        })
        .collect();
    // `reads[slots[i]]` is the read of `pending[i]`; the first spelling of a name is the
    // one Key Vault is asked for (and the one messages show).
    let mut reads: Vec<&SecretRequest> = Vec::new();
    let mut slot_of: HashMap<SecretRequest, usize> = HashMap::new();
    let slots: Vec<usize> = pending
        .iter()
        .map(|(_, request)| {
            *slot_of.entry(request.read_key()).or_insert_with(|| {
                reads.push(request);
                reads.len() - 1
            })
        })
        .collect();
    let results: Vec<Result<Arc<FetchedSecret>, SourceError>> =
        futures::future::join_all(reads.into_iter().map(|request| async move {
            let result = ctx.source.fetch(request).await;
            let label = match &result {
                Ok(_) => "ok",
                Err(e) => e.reason().as_str(),
            };
            Metrics::count(&ctx.metrics.keyvault_reads, label);
            let lifted = || ctx.source.throttle_lifted(&request.vault_url);
            match &result {
                Ok(_) => {
                    ctx.vault_waits.answered(&request.vault_url, lifted());
                }
                Err(SourceError::Throttled { .. }) => {
                    ctx.vault_waits.refused(&request.vault_url, lifted(), vsec);
                }
                Err(_) => {}
            }
            result
        }))
        .await;
    let now = time::OffsetDateTime::now_utc();
    let mut out = kept;
    let mut expiries = BTreeMap::new();
    for ((entry, _), slot) in pending.iter().zip(slots) {
        let fetched = match &results[slot] {
            Ok(fetched) => fetched,
            Err(e) => {
                return Err(Failure {
                    retry_after: e.retry_after(),
                    ..Failure::new(e.reason(), format!("key '{}': {e}", entry.key))
                });
            }
        };
        let r = &entry.remote_ref;
        let value = decide::entry_value(
            &entry.key,
            &r.name,
            r.property.as_deref(),
            r.decoding,
            fetched,
            now,
        )
        .and_then(|value| match r.certificate {
            None => Ok((value, None)),
            Some(part) => decide::certificate_value(
                &entry.key,
                &r.name,
                part,
                &value,
                fetched.content_type.as_deref(),
            )
            .map(|(value, not_after)| (value, Some(not_after))),
        })
        .map_err(|e| Failure {
            passes_in: e.passes_in(now),
            ..Failure::new(e.reason(), e.to_string())
        })?;
        let (value, not_after) = value;
        out.insert(entry.key.clone(), (value, fetched.version.clone()));
        // A certificate entry expires with its leaf when that comes before the version's
        // `exp` (Key Vault sets both alike for the certificates it makes; an imported PFX
        // kept as a plain secret has only the leaf's).
        if let Some(exp) = fetched
            .expires
            .into_iter()
            .chain(not_after)
            .min()
            .and_then(|exp| Timestamp::from_second(exp.unix_timestamp()).ok())
        {
            expiries.insert(entry.key.clone(), Time(exp));
        }
    }
    Ok((out, expiries))
}

/// Publishes what a sync did: `Synced` (first write), `Rotated` (versions changed against
/// `previous`), `DriftRepaired`. `versions_announced`: `Synced` or `Rotated` for exactly
/// these versions was published already (its status write failed) and is not repeated.
/// Returns whether the versions are announced now (published, or nothing to announce).
#[allow(clippy::too_many_arguments)]
async fn announce_sync(
    vsec: &VaultSecret,
    ctx: &Context,
    previous: &VaultSecretStatus,
    versions: &BTreeMap<String, String>,
    versions_announced: bool,
    cause: ReadCause,
    state: SecretState,
    wrote: bool,
) -> bool {
    let target_name = vsec.target_name();
    if previous.synced_versions.is_empty() {
        return versions_announced
            || publish(
                ctx,
                vsec,
                EventType::Normal,
                "Synced",
                format!(
                    "wrote {} {} from Key Vault to Secret '{target_name}'",
                    versions.len(),
                    if versions.len() == 1 { "key" } else { "keys" }
                ),
            )
            .await;
    }
    let rotated: Vec<String> = versions
        .iter()
        .filter_map(|(key, new)| {
            let old = previous.synced_versions.get(key)?;
            (old != new).then(|| format!("key '{key}': version {old} -> {new}"))
        })
        .collect();
    let announced = versions_announced
        || rotated.is_empty()
        || publish(ctx, vsec, EventType::Normal, "Rotated", rotated.join("; ")).await;
    if cause == ReadCause::Drift && wrote {
        let what = if state == SecretState::Missing {
            "recreated the deleted"
        } else {
            "restored the edited data of"
        };
        publish(
            ctx,
            vsec,
            EventType::Normal,
            "DriftRepaired",
            format!("{what} Secret '{target_name}'"),
        )
        .await;
    }
    announced
}

/// Reports a failure: `Refreshed=False` with the reason (and `Ready=False` unless the
/// Secret still holds this generation's data, `held`), the last good data left in place,
/// a Warning Event when the failure is new, and a retry that slows down.
async fn fail(
    vsec: &VaultSecret,
    ctx: &Context,
    status: &VaultSecretStatus,
    failure: Failure,
    held: Option<bool>,
    now: Timestamp,
) -> Result<Action, Error> {
    // Before the Secret was looked at, the status says whether it holds this generation
    // (a drifted Secret brings a reconcile of its own, which looks at it).
    let holds_generation = held.unwrap_or_else(|| {
        decide::synced_this_generation(status, vsec.meta().generation, &vsec.target_name())
    });
    let report = decide::failed_status(
        status,
        vsec.meta().generation,
        failure.reason,
        failure.message,
        holds_generation,
        vsec.annotations().get(REFRESH_ANNOTATION).cloned(),
        now,
    );
    let reason = failure.reason;
    let shown = report
        .status
        .refreshed_condition()
        .map(|c| c.message.clone())
        .unwrap_or_default();
    if report.warn {
        publish(
            ctx,
            vsec,
            EventType::Warning,
            reason.as_str(),
            shown.clone(),
        )
        .await;
    }
    tracing::info!(reason = %reason, message = %shown, ready_kept = holds_generation, "not synced");
    // The Secret keeps the last good versions, and so their expiry stays watched.
    let (new_status, expiry_wait) = expiry_step(vsec, ctx, report.status, now).await;
    write_status(vsec, ctx, status, new_status).await?;
    // Counted once reported, so that a count seen means the status is written.
    ctx.metrics
        .failures
        .get_or_create(&ReasonLabels {
            reason: reason.as_str().to_owned(),
        })
        .inc();
    Metrics::count(&ctx.metrics.reconciliations, "failed");
    let delay = |transient| {
        decide::retry_delay(
            transient,
            report.failing_since,
            now,
            failure.retry_after,
            failure.passes_in,
        )
    };
    let retry = match failure.retry {
        Retry::AfterChange => None,
        Retry::Slow => Some(delay(false)),
        Retry::Transient => Some(delay(true)),
    };
    Ok(earliest(retry, expiry_wait)
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

/// Server-side applies the status, skipped when nothing changed (an unchanged condition
/// keeps its transition time, so equal means equal).
async fn write_status(
    vsec: &VaultSecret,
    ctx: &Context,
    old: &VaultSecretStatus,
    new: VaultSecretStatus,
) -> Result<(), Error> {
    if *old == new {
        return Ok(());
    }
    let api: Api<VaultSecret> =
        Api::namespaced(ctx.client.clone(), &vsec.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": VaultSecret::api_version(&()),
        "kind": VaultSecret::kind(&()),
        "status": new,
    });
    api.patch_status(
        &vsec.name_any(),
        &PatchParams::apply(target::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics.status_writes.inc();
    ctx.written.record(vsec, new);
    Ok(())
}

/// Publishes an Event about `vsec`; whether it was published (a failure is logged).
async fn publish(
    ctx: &Context,
    vsec: &VaultSecret,
    type_: EventType,
    reason: &str,
    mut note: String,
) -> bool {
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    match ctx
        .events
        .publish(&vsec.object_ref(&()), type_, reason, "Sync", note)
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, reason, "could not publish an Event");
            false
        }
    }
}
