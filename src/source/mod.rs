//! Key Vault access behind the [`SecretSource`] trait: one client per (vault, identity),
//! identical reads shared while in flight and for a short window after (one read per
//! distinct secret per wave, see [`single_flight`]), a per-vault request budget, shared
//! back-offs for a throttled vault and for failing secrets ([`gate`]), errors classified
//! into the contract's reasons. The controller never sees HTTP.

mod bounded;
mod budget;
mod error;
pub mod gate;
pub mod identity;
pub mod observed;
pub mod single_flight;
pub mod token_cache;
mod value;
pub mod vault_url;

pub use error::{HttpFailure, SourceError, classify};
pub use identity::{CredentialKey, IdentityRef};
pub use value::SecretBytes;
pub use vault_url::VaultPolicy;

use crate::telemetry::SourceMetrics;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use bounded::Bounded;
use budget::VaultBudget;
use gate::Gate;
use observed::ObservedClient;
use single_flight::SharedReads;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

/// One read of one Key Vault secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRequest {
    /// The vault as [`vault_url::normalize`] gives it, e.g. `https://my-vault.vault.azure.net`:
    /// clients, shared reads and budgets are keyed by it.
    pub vault_url: String,
    pub identity: IdentityRef,
    /// The secret's name as the spec spells it (Key Vault ignores its case).
    pub name: String,
    /// `None`: the current version.
    pub version: Option<String>,
    /// The requester's own last read happened before this instant: a shared read that
    /// started earlier is too old for it ([`single_flight`]). `None`: any read within the
    /// sharing window will do (first sync). Not part of [`SecretRequest::read_key`].
    pub fresher_than: Option<std::time::SystemTime>,
    /// The uid of the VaultSecret asking: a shared result kept for the objects due for it
    /// records who took it ([`single_flight::Demand`]). Not part of
    /// [`SecretRequest::read_key`].
    pub requester: Option<String>,
}

impl SecretRequest {
    /// The key under which reads are shared: the request with its name in lowercase, since
    /// Key Vault secret names are case-insensitive (`Db-Password` and `db-password` are one
    /// secret, so one read). Names are ASCII (`^[0-9a-zA-Z-]{1,127}$`), so ASCII lowercase
    /// is the whole rule. Vault URL, identity and version are kept as they are;
    /// `fresher_than` and `requester` are left out (they say which reads may serve the
    /// request and who asks, not which read it is).
    pub fn read_key(&self) -> SecretRequest {
        SecretRequest {
            name: self.name.to_ascii_lowercase(),
            fresher_than: None,
            requester: None,
            ..self.clone()
        }
    }
}

/// What Key Vault returned. `Debug` never shows the value.
#[derive(Debug, Clone)]
pub struct FetchedSecret {
    pub value: SecretBytes,
    pub version: String,
    pub content_type: Option<String>,
    pub enabled: Option<bool>,
    pub not_before: Option<OffsetDateTime>,
    pub expires: Option<OffsetDateTime>,
}

#[async_trait::async_trait]
pub trait SecretSource: Send + Sync {
    async fn fetch(&self, request: &SecretRequest) -> Result<Arc<FetchedSecret>, SourceError>;

    /// The URL this source calls for a spec's `vaultUrl`, normalised; or why it calls
    /// nothing there (not scheme and host only, or not a vault host it accepts).
    fn vault_url(&self, spec_vault_url: &str) -> Result<String, String>;

    /// Keeps shared results while `demand` says objects due for them have not taken
    /// them ([`single_flight`]); keys are [`SecretRequest::read_key`]s. A source that
    /// shares nothing ignores it.
    fn hold_for(&self, demand: Arc<dyn single_flight::Demand<SecretRequest>>) {
        let _ = demand;
    }

    /// How many times the throttle of the vault at `vault_url` (normalised) has lifted in
    /// this process: its shared back-off ([`gate`]) shut by a 429 and opened again by an
    /// answer. Grows by one per lifting; 0 for a source without such a back-off.
    fn throttle_lifted(&self, vault_url: &str) -> u64 {
        let _ = vault_url;
        0
    }
}

#[derive(Debug, Clone)]
pub struct KeyVaultOptions {
    /// Extra PEM roots for Key Vault and token endpoints (private CAs, emulators).
    pub extra_ca_pem: Option<Vec<u8>>,
    /// The vault hosts requests may go to, and those whose challenge resource is not
    /// verified (emulators, whose host can never match it).
    pub vaults: VaultPolicy,
    pub api_version: String,
    pub requests_per_second_per_vault: f64,
    pub request_timeout: Duration,
    /// How long a completed read stays shared after its last use (the window of
    /// [`single_flight`], at most [`single_flight::SHARE_MAX_AGE`] after the read started);
    /// zero shares only reads in flight.
    pub shared_read_idle: Duration,
    /// Tenant of ServiceAccounts without the `azure.workload.identity/tenant-id` annotation.
    pub default_tenant_id: Option<String>,
    /// Entra authority for ServiceAccount token exchanges; `None`: `AZURE_AUTHORITY_HOST`
    /// or the public cloud.
    pub authority_host: Option<String>,
    /// Credentials (and clients) kept at most, least recently used dropped first.
    pub max_cached_identities: usize,
}

/// The Azure implementation of [`SecretSource`].
pub struct KeyVaultSource {
    options: KeyVaultOptions,
    client_options: ClientOptions,
    operator: Result<(Arc<dyn TokenCredential>, String), String>,
    kube: Option<kube::Client>,
    metrics: SourceMetrics,
    /// The HTTP client every transport wraps (timeout, extra CA).
    http: Arc<dyn azure_core::http::HttpClient>,
    credentials: Mutex<Bounded<CredentialKey, Arc<dyn TokenCredential>>>,
    clients: Mutex<Bounded<(String, CredentialKey), Arc<SecretClient>>>,
    budgets: Mutex<HashMap<String, Arc<VaultBudget>>>,
    /// Per vault: shut by 429s (Key Vault throttles a whole vault, not a secret).
    vault_gates: Mutex<HashMap<String, Arc<Gate<SourceError>>>>,
    /// Per read ([`SecretRequest::read_key`]): shut by 5xx, timeouts, resets, answers
    /// without a value. Only failing reads have an entry; a success removes it.
    read_gates: Mutex<HashMap<SecretRequest, Arc<Gate<SourceError>>>>,
    shared_reads: SharedReads<SecretRequest, Arc<FetchedSecret>, SourceError>,
    /// Per vault: how many times its gate opened again after shutting.
    throttle_lifted: Mutex<HashMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold no invariants a panicking holder could break half-way.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeyVaultSource {
    /// `kube` is needed for ServiceAccount identities (TokenRequest); `metrics` counts
    /// TokenRequests, token exchanges and Key Vault requests.
    pub fn new(
        options: KeyVaultOptions,
        kube: Option<kube::Client>,
        metrics: SourceMetrics,
    ) -> anyhow::Result<Arc<Self>> {
        let mut http = reqwest::Client::builder().timeout(options.request_timeout);
        if let Some(pem) = &options.extra_ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                http = http.add_root_certificate(cert);
            }
        }
        let http: Arc<dyn azure_core::http::HttpClient> = Arc::new(http.build()?);
        let client_options = ClientOptions {
            transport: Some(Transport::new(http.clone())),
            // The reconcile loop backs off and requeues; SDK retries would only hide
            // throttling from the per-vault budget and hold a worker for a minute.
            retry: RetryOptions::none(),
            ..Default::default()
        };
        let operator = identity::operator_credential(ClientOptions {
            transport: Some(ObservedClient::token_exchange(
                http.clone(),
                metrics.clone(),
                "operator",
            )),
            ..client_options.clone()
        })
        .map(|(credential, described)| {
            let cached: Arc<dyn TokenCredential> = token_cache::CachingCredential::new(credential);
            (cached, described)
        })
        .map_err(|e| e.to_string());
        match &operator {
            Ok((_, described)) => {
                tracing::info!(identity = %described, "operator identity configured")
            }
            Err(e) => tracing::warn!(error = %e, "no operator identity available"),
        }
        let capacity = options.max_cached_identities;
        // Identity errors come before Key Vault is asked: each attempt asks Entra again.
        let shared_reads = SharedReads::new(
            options.shared_read_idle,
            single_flight::SHARE_MAX_AGE,
            |e| !matches!(e, SourceError::Identity { .. }),
        );
        Ok(Arc::new(Self {
            options,
            client_options,
            operator,
            kube,
            metrics,
            http,
            credentials: Mutex::new(Bounded::new(capacity)),
            clients: Mutex::new(Bounded::new(capacity)),
            budgets: Mutex::default(),
            vault_gates: Mutex::default(),
            read_gates: Mutex::default(),
            shared_reads,
            throttle_lifted: Mutex::default(),
        }))
    }

    /// Resolves a request's identity to what its credential depends on; for a
    /// ServiceAccount that is its annotations and uid, read on every resolution so that
    /// changes and deletions are noticed.
    async fn resolve(&self, identity: &IdentityRef) -> Result<CredentialKey, SourceError> {
        match identity {
            IdentityRef::Operator => Ok(CredentialKey::Operator),
            IdentityRef::ManagedIdentity { client_id } => Ok(CredentialKey::ManagedIdentity {
                client_id: client_id.clone(),
            }),
            IdentityRef::ServiceAccount { namespace, name } => {
                let fail = |detail: String| SourceError::Identity {
                    identity: identity.to_string(),
                    detail,
                };
                let kube = self
                    .kube
                    .clone()
                    .ok_or_else(|| fail("no Kubernetes client to request its token with".into()))?;
                let api: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
                    kube::Api::namespaced(kube, namespace);
                let meta = api
                    .get_metadata_opt(name)
                    .await
                    .map_err(|e| fail(format!("cannot read it: {}", identity::api_error_text(&e))))?
                    .ok_or_else(|| fail("not found in the VaultSecret's namespace".into()))?;
                let annotations = meta.metadata.annotations.unwrap_or_default();
                let client_id = annotations
                    .get(identity::CLIENT_ID_ANNOTATION)
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .ok_or_else(|| {
                        fail(format!(
                            "it has no annotation {} naming the Entra client id",
                            identity::CLIENT_ID_ANNOTATION
                        ))
                    })?;
                let tenant_id = annotations
                    .get(identity::TENANT_ID_ANNOTATION)
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .or_else(|| self.options.default_tenant_id.clone())
                    .ok_or_else(|| {
                        fail(format!(
                            "it has no annotation {} and the operator has no --default-tenant-id",
                            identity::TENANT_ID_ANNOTATION
                        ))
                    })?;
                Ok(CredentialKey::ServiceAccount {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    uid: meta.metadata.uid.unwrap_or_default(),
                    client_id,
                    tenant_id,
                })
            }
        }
    }

    fn credential(&self, key: &CredentialKey) -> Result<Arc<dyn TokenCredential>, SourceError> {
        if let Some(credential) = lock(&self.credentials).get(key) {
            return Ok(credential);
        }
        let fail = |detail: String| SourceError::Identity {
            identity: self.describe(key),
            detail,
        };
        let credential: Arc<dyn TokenCredential> = match key {
            CredentialKey::Operator => {
                return self
                    .operator
                    .as_ref()
                    .map(|(c, _)| c.clone())
                    .map_err(|e| fail(e.clone()));
            }
            CredentialKey::ManagedIdentity { client_id } => {
                azure_identity::ManagedIdentityCredential::new(Some(
                    azure_identity::ManagedIdentityCredentialOptions {
                        user_assigned_id: Some(azure_identity::UserAssignedId::ClientId(
                            client_id.clone(),
                        )),
                        client_options: self.token_client_options("managed_identity"),
                    },
                ))
                .map_err(|e| fail(e.to_string()))?
            }
            CredentialKey::ServiceAccount {
                namespace,
                name,
                client_id,
                tenant_id,
                ..
            } => {
                let kube = self
                    .kube
                    .clone()
                    .ok_or_else(|| fail("no Kubernetes client".into()))?;
                let assertion = identity::ServiceAccountAssertion::new(
                    kube,
                    namespace,
                    name,
                    self.metrics.service_account_token_requests.clone(),
                );
                let mut client_options = self.token_client_options("service_account");
                if let Some(host) = &self.options.authority_host {
                    let mut custom = azure_core::cloud::CustomConfiguration::default();
                    custom.authority_host = host.clone();
                    client_options.cloud = Some(Arc::new(
                        azure_core::cloud::CloudConfiguration::Custom(custom),
                    ));
                }
                azure_identity::ClientAssertionCredential::new(
                    tenant_id.clone(),
                    client_id.clone(),
                    assertion,
                    Some(azure_identity::ClientAssertionCredentialOptions { client_options }),
                )
                .map_err(|e| fail(e.to_string()))?
            }
        };
        // Tokens are kept for their own lifetime, however short (see [`token_cache`]).
        let credential: Arc<dyn TokenCredential> = token_cache::CachingCredential::new(credential);
        Ok(lock(&self.credentials).insert(key.clone(), credential))
    }

    fn client(
        &self,
        vault_url: &str,
        key: &CredentialKey,
    ) -> Result<Arc<SecretClient>, SourceError> {
        let cache_key = (vault_url.to_owned(), key.clone());
        if let Some(client) = lock(&self.clients).get(&cache_key) {
            return Ok(client);
        }
        let credential = self.credential(key)?;
        let client = SecretClient::new(
            vault_url,
            credential,
            Some(SecretClientOptions {
                api_version: self.options.api_version.clone(),
                client_options: ClientOptions {
                    transport: Some(ObservedClient::key_vault(
                        self.http.clone(),
                        self.metrics.clone(),
                    )),
                    ..self.client_options.clone()
                },
                verify_challenge_resource: Some(
                    !self.options.vaults.skips_challenge_verification(vault_url),
                ),
            }),
        )
        .map_err(|e| SourceError::Unreachable {
            vault: vault_url.to_owned(),
            name: String::new(),
            detail: e.to_string(),
        })?;
        Ok(lock(&self.clients).insert(cache_key, Arc::new(client)))
    }

    /// Client options of a credential for one kind of identity: its token requests are
    /// counted as `vaultsync_token_exchanges_total{identity}`.
    fn token_client_options(&self, identity: &'static str) -> ClientOptions {
        ClientOptions {
            transport: Some(ObservedClient::token_exchange(
                self.http.clone(),
                self.metrics.clone(),
                identity,
            )),
            ..self.client_options.clone()
        }
    }

    /// Names an identity in messages: the operator's own by its client id, a
    /// ServiceAccount with its client id.
    fn describe(&self, key: &CredentialKey) -> String {
        let operator = match &self.operator {
            Ok((_, described)) => described.as_str(),
            Err(_) => "identity (unavailable)",
        };
        key.describe(operator)
    }

    fn budget(&self, vault_url: &str) -> Arc<VaultBudget> {
        lock(&self.budgets)
            .entry(vault_url.to_owned())
            .or_insert_with(|| {
                Arc::new(VaultBudget::new(self.options.requests_per_second_per_vault))
            })
            .clone()
    }

    async fn read(
        self: Arc<Self>,
        request: SecretRequest,
    ) -> Result<Arc<FetchedSecret>, SourceError> {
        // Checked again here, before any token is requested, whoever built the request.
        if let Err(detail) = self.options.vaults.check(&request.vault_url) {
            return Err(SourceError::VaultNotAllowed {
                vault: request.vault_url.clone(),
                detail,
            });
        }
        let key = self.resolve(&request.identity).await?;
        let client = self.client(&request.vault_url, &key)?;
        let budget = self.budget(&request.vault_url);
        // While the vault or this read is backing off, nothing is sent: the failure that
        // shut the gate is the answer (see [`gate`]).
        let vault_gate = gate_for(&self.vault_gates, request.vault_url.clone());
        let read_gate = gate_for(&self.read_gates, request.read_key());
        let now = tokio::time::Instant::now();
        let vault_ticket = vault_gate
            .admit(now)
            .map_err(|throttled| throttled.for_secret(&request.name))?;
        let read_ticket = read_gate.admit(now)?;
        budget.acquire().await;
        let options = SecretClientGetSecretOptions {
            secret_version: request.version.clone(),
            ..Default::default()
        };
        let result = client.get_secret(&request.name, Some(options)).await;
        let failure = result
            .as_ref()
            .err()
            .map(|err| to_source_error(&request, &self.describe(&key), err));
        let now = tokio::time::Instant::now();
        match &failure {
            Some(throttled @ SourceError::Throttled { retry_after, .. }) => {
                let pause = vault_gate.failed(vault_ticket, throttled.clone(), *retry_after, now);
                keep_gate(&self.vault_gates, request.vault_url.clone(), &vault_gate);
                // The secret backs off too: reads of the vault's other secrets may open the
                // vault's gate again while this one is still refused (seen as 19 requests
                // in 8 s to one throttled secret, with its vault's gate flapping).
                read_gate.failed(read_ticket, throttled.clone(), *retry_after, now);
                keep_gate(&self.read_gates, request.read_key(), &read_gate);
                tracing::info!(vault = %request.vault_url, pause_seconds = pause.as_secs(), "Key Vault throttled: the vault's reads wait");
            }
            Some(unavailable @ (SourceError::Unreachable { .. } | SourceError::NoValue { .. })) => {
                let pause = read_gate.failed(read_ticket, unavailable.clone(), None, now);
                keep_gate(&self.read_gates, request.read_key(), &read_gate);
                tracing::info!(vault = %request.vault_url, secret = %request.name, pause_seconds = pause.as_secs(), "Key Vault read failed: its reads wait");
            }
            // Made before Key Vault was asked: says nothing of the vault.
            Some(SourceError::Identity { .. } | SourceError::VaultNotAllowed { .. }) => {}
            // Key Vault answered (a value, or a refusal that is no outage).
            _ => {
                if vault_gate.succeeded(vault_ticket) {
                    *lock(&self.throttle_lifted)
                        .entry(request.vault_url.clone())
                        .or_default() += 1;
                }
                read_gate.succeeded(read_ticket);
            }
        }
        forget_gate(&self.vault_gates, &request.vault_url, &vault_gate);
        forget_gate(&self.read_gates, &request.read_key(), &read_gate);
        if let Some(failure) = failure {
            return Err(failure);
        }
        let Ok(response) = result else {
            unreachable!("a failed result has a failure")
        };
        let response_request_id = response.headers().get_optional_string(
            &azure_core::http::headers::HeaderName::from_static("x-ms-request-id"),
        );
        let secret = response
            .into_model()
            .map_err(|e| SourceError::Unreachable {
                vault: request.vault_url.clone(),
                name: request.name.clone(),
                detail: format!("unreadable answer: {e}"),
            })?;
        let version = secret
            .id
            .as_deref()
            .and_then(|id| id.trim_end_matches('/').rsplit('/').next())
            .unwrap_or_default()
            .to_owned();
        // A 200 without a value is not an empty secret: something other than Key Vault
        // answered, or Key Vault misbehaved. Nothing is written from it.
        let Some(value) = secret.value else {
            return Err(SourceError::NoValue {
                vault: request.vault_url.clone(),
                name: request.name.clone(),
                request_id: response_request_id,
            });
        };
        let attributes = secret.attributes.clone().unwrap_or_default();
        Ok(Arc::new(FetchedSecret {
            value: SecretBytes::from_string(value),
            version,
            content_type: secret.content_type,
            enabled: attributes.enabled,
            not_before: attributes.not_before,
            expires: attributes.expires,
        }))
    }
}

/// The gate of `key`, made (open) if there is none.
fn gate_for<K: std::hash::Hash + Eq>(
    gates: &Mutex<HashMap<K, Arc<Gate<SourceError>>>>,
    key: K,
) -> Arc<Gate<SourceError>> {
    lock(gates).entry(key).or_default().clone()
}

/// Puts a gate just shut back in place if an open one was dropped meanwhile (a
/// concurrent success), so that its pause is honoured.
fn keep_gate<K: std::hash::Hash + Eq>(
    gates: &Mutex<HashMap<K, Arc<Gate<SourceError>>>>,
    key: K,
    gate: &Arc<Gate<SourceError>>,
) {
    let mut gates = lock(gates);
    let current = gates.entry(key).or_insert_with(|| gate.clone());
    if current.is_open() {
        *current = gate.clone();
    }
}

/// Drops `key`'s gate once it is open, unless another has replaced it meanwhile:
/// only failing vaults and reads keep an entry (`gate_for` makes an open one per read).
fn forget_gate<K: std::hash::Hash + Eq>(
    gates: &Mutex<HashMap<K, Arc<Gate<SourceError>>>>,
    key: &K,
    gate: &Arc<Gate<SourceError>>,
) {
    let mut gates = lock(gates);
    if gates
        .get(key)
        .is_some_and(|g| Arc::ptr_eq(g, gate) && g.is_open())
    {
        gates.remove(key);
    }
}

fn to_source_error(
    request: &SecretRequest,
    identity: &str,
    err: &azure_core::Error,
) -> SourceError {
    let vault = request.vault_url.clone();
    let name = request.name.clone();
    match err.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status,
            raw_response,
            ..
        } => {
            let (body, retry_after, request_id) = match raw_response {
                Some(raw) => (
                    raw.body().to_vec(),
                    raw.headers()
                        .get_optional_string(&azure_core::http::headers::RETRY_AFTER),
                    raw.headers().get_optional_string(
                        &azure_core::http::headers::HeaderName::from_static("x-ms-request-id"),
                    ),
                ),
                None => (Vec::new(), None, None),
            };
            match classify(u16::from(*status), &body, retry_after.as_deref()) {
                HttpFailure::NotFound => SourceError::NotFound {
                    vault,
                    name,
                    request_id,
                },
                HttpFailure::Disabled => SourceError::Disabled {
                    vault,
                    name,
                    request_id,
                },
                HttpFailure::Denied(detail) => SourceError::AccessDenied {
                    vault,
                    name,
                    identity: identity.to_owned(),
                    detail,
                    request_id,
                },
                HttpFailure::Throttled(retry_after) => SourceError::Throttled {
                    vault,
                    name,
                    retry_after,
                    request_id,
                },
                HttpFailure::Unavailable(detail) => SourceError::Unreachable {
                    vault,
                    name,
                    detail,
                },
            }
        }
        // The credential failed before Key Vault was asked.
        azure_core::error::ErrorKind::Credential => SourceError::Identity {
            identity: identity.to_owned(),
            detail: err.to_string(),
        },
        // The vault's challenge named another domain: it is not trusted with a token.
        _ if err.to_string().contains("challenge resource") => SourceError::Unreachable {
            vault,
            name,
            detail: format!(
                "{err} (no token was sent; every vault's challenge is verified unless its host is in --skip-challenge-verification-for)"
            ),
        },
        // Transport failures: refused connections, TLS, DNS, timeouts.
        _ => SourceError::Unreachable {
            vault,
            name,
            detail: err.to_string(),
        },
    }
}

#[async_trait::async_trait]
impl SecretSource for Arc<KeyVaultSource> {
    /// Identical reads share one Key Vault request while in flight and for a short window
    /// after ([`single_flight`]); names that differ only in case are identical
    /// ([`SecretRequest::read_key`]).
    async fn fetch(&self, request: &SecretRequest) -> Result<Arc<FetchedSecret>, SourceError> {
        let source = self.clone();
        let owned = request.clone();
        self.shared_reads
            .run(
                &request.read_key(),
                request.fresher_than,
                request.requester.as_deref(),
                move || source.read(owned),
            )
            .await
    }

    fn vault_url(&self, spec_vault_url: &str) -> Result<String, String> {
        self.options.vaults.check(spec_vault_url)
    }

    fn hold_for(&self, demand: Arc<dyn single_flight::Demand<SecretRequest>>) {
        self.shared_reads.hold_for(demand);
    }

    fn throttle_lifted(&self, vault_url: &str) -> u64 {
        lock(&self.throttle_lifted)
            .get(vault_url)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::{IdentityRef, SecretRequest};

    fn request(name: &str) -> SecretRequest {
        SecretRequest {
            vault_url: "https://v.vault.azure.net".into(),
            identity: IdentityRef::ServiceAccount {
                namespace: "team-a".into(),
                name: "app".into(),
            },
            name: name.into(),
            version: None,
            fresher_than: None,
            requester: Some("uid".into()),
        }
    }

    #[test]
    fn read_keys_ignore_the_case_of_names_only() {
        let key = request("Db-Password").read_key();
        assert_eq!(key, request("db-password").read_key());
        assert_eq!(key, request("DB-PASSWORD").read_key());
        assert_eq!(key.name, "db-password");
        assert_eq!(key.vault_url, "https://v.vault.azure.net");
        // The request itself keeps the spelling it was given.
        assert_eq!(request("Db-Password").name, "Db-Password");
        assert_ne!(key, request("db-password2").read_key());
        let pinned = SecretRequest {
            version: Some("0".repeat(32)),
            ..request("db-password")
        };
        assert_ne!(key, pinned.read_key());
        let other_identity = SecretRequest {
            identity: IdentityRef::Operator,
            ..request("db-password")
        };
        assert_ne!(key, other_identity.read_key());
        let other_vault = SecretRequest {
            vault_url: "https://w.vault.azure.net".into(),
            ..request("db-password")
        };
        assert_ne!(key, other_vault.read_key());
    }
}
