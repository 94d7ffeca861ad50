//! Key Vault access behind the [`SecretSource`] trait: one client per (vault, identity),
//! identical reads in flight shared, a per-vault request budget, errors classified into
//! the contract's reasons. The controller never sees HTTP.

mod budget;
mod error;
pub mod identity;
mod value;

pub use error::{HttpFailure, SourceError, classify};
pub use identity::IdentityRef;
pub use value::SecretBytes;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use budget::VaultBudget;
use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

/// One read of one Key Vault secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRequest {
    pub vault_url: String,
    pub identity: IdentityRef,
    pub name: String,
    /// `None`: the current version.
    pub version: Option<String>,
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
}

#[derive(Debug, Clone)]
pub struct KeyVaultOptions {
    /// Extra PEM roots for Key Vault and token endpoints (private CAs, emulators).
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Off only for emulators, whose host can never match the challenge resource.
    pub verify_challenge_resource: bool,
    pub api_version: String,
    pub requests_per_second_per_vault: f64,
    pub request_timeout: Duration,
}

type InFlight = Shared<BoxFuture<'static, Result<Arc<FetchedSecret>, SourceError>>>;

/// The Azure implementation of [`SecretSource`].
pub struct KeyVaultSource {
    options: KeyVaultOptions,
    client_options: ClientOptions,
    operator: Result<(Arc<dyn TokenCredential>, String), String>,
    clients: Mutex<HashMap<(String, IdentityRef), Arc<SecretClient>>>,
    budgets: Mutex<HashMap<String, Arc<VaultBudget>>>,
    in_flight: Mutex<HashMap<SecretRequest, InFlight>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold no invariants a panicking holder could break half-way.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeyVaultSource {
    pub fn new(options: KeyVaultOptions) -> anyhow::Result<Arc<Self>> {
        let mut http = reqwest::Client::builder().timeout(options.request_timeout);
        if let Some(pem) = &options.extra_ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                http = http.add_root_certificate(cert);
            }
        }
        let client_options = ClientOptions {
            transport: Some(Transport::new(Arc::new(http.build()?))),
            // The reconcile loop backs off and requeues; SDK retries would only hide
            // throttling from the per-vault budget and hold a worker for a minute.
            retry: RetryOptions::none(),
            ..Default::default()
        };
        let operator =
            identity::operator_credential(client_options.clone()).map_err(|e| e.to_string());
        match &operator {
            Ok((_, described)) => {
                tracing::info!(identity = %described, "operator identity configured")
            }
            Err(e) => tracing::warn!(error = %e, "no operator identity available"),
        }
        Ok(Arc::new(Self {
            options,
            client_options,
            operator,
            clients: Mutex::default(),
            budgets: Mutex::default(),
            in_flight: Mutex::default(),
        }))
    }

    fn credential(&self, identity: &IdentityRef) -> Result<Arc<dyn TokenCredential>, SourceError> {
        match identity {
            IdentityRef::Operator => {
                self.operator
                    .as_ref()
                    .map(|(c, _)| c.clone())
                    .map_err(|e| SourceError::Identity {
                        identity: identity.to_string(),
                        detail: e.clone(),
                    })
            }
            IdentityRef::ManagedIdentity { client_id } => {
                azure_identity::ManagedIdentityCredential::new(Some(
                    azure_identity::ManagedIdentityCredentialOptions {
                        user_assigned_id: Some(azure_identity::UserAssignedId::ClientId(
                            client_id.clone(),
                        )),
                        client_options: self.client_options.clone(),
                    },
                ))
                .map(|c| c as Arc<dyn TokenCredential>)
                .map_err(|e| SourceError::Identity {
                    identity: identity.to_string(),
                    detail: e.to_string(),
                })
            }
            IdentityRef::ServiceAccount { .. } => Err(SourceError::Identity {
                identity: identity.to_string(),
                detail: "ServiceAccount identities are not supported by this version of vaultsync"
                    .into(),
            }),
        }
    }

    fn client(
        &self,
        vault_url: &str,
        identity: &IdentityRef,
    ) -> Result<Arc<SecretClient>, SourceError> {
        let key = (vault_url.to_owned(), identity.clone());
        if let Some(client) = lock(&self.clients).get(&key) {
            return Ok(client.clone());
        }
        let credential = self.credential(identity)?;
        let client = SecretClient::new(
            vault_url,
            credential,
            Some(SecretClientOptions {
                api_version: self.options.api_version.clone(),
                client_options: self.client_options.clone(),
                verify_challenge_resource: Some(self.options.verify_challenge_resource),
            }),
        )
        .map_err(|e| SourceError::Unreachable {
            vault: vault_url.to_owned(),
            name: String::new(),
            detail: e.to_string(),
        })?;
        let client = Arc::new(client);
        lock(&self.clients).entry(key).or_insert(client.clone());
        Ok(client)
    }

    /// Names an identity in messages: the operator's own by its client id.
    fn describe(&self, identity: &IdentityRef) -> String {
        match (identity, &self.operator) {
            (IdentityRef::Operator, Ok((_, described))) => format!("operator {described}"),
            _ => identity.to_string(),
        }
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
        let client = self.client(&request.vault_url, &request.identity)?;
        let budget = self.budget(&request.vault_url);
        budget.acquire().await;
        let options = SecretClientGetSecretOptions {
            secret_version: request.version.clone(),
            ..Default::default()
        };
        let result = client.get_secret(&request.name, Some(options)).await;
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                let failure = to_source_error(&request, &self.describe(&request.identity), &err);
                if let Some(retry_after) = failure.retry_after() {
                    budget.pause_for(retry_after);
                }
                return Err(failure);
            }
        };
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
        let attributes = secret.attributes.clone().unwrap_or_default();
        Ok(Arc::new(FetchedSecret {
            value: SecretBytes::from_string(secret.value.unwrap_or_default()),
            version,
            content_type: secret.content_type,
            enabled: attributes.enabled,
            not_before: attributes.not_before,
            expires: attributes.expires,
        }))
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
        _ => {
            let text = err.to_string();
            if text.contains("authenticat") || text.contains("token") {
                SourceError::Identity {
                    identity: identity.to_owned(),
                    detail: text,
                }
            } else {
                SourceError::Unreachable {
                    vault,
                    name,
                    detail: text,
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl SecretSource for Arc<KeyVaultSource> {
    /// Identical reads in flight at the same time share one Key Vault request.
    async fn fetch(&self, request: &SecretRequest) -> Result<Arc<FetchedSecret>, SourceError> {
        let shared = {
            let mut in_flight = lock(&self.in_flight);
            match in_flight.get(request) {
                Some(existing) => existing.clone(),
                None => {
                    let fut = self.clone().read(request.clone()).boxed().shared();
                    in_flight.insert(request.clone(), fut.clone());
                    fut
                }
            }
        };
        let result = shared.clone().await;
        let mut in_flight = lock(&self.in_flight);
        if in_flight.get(request).is_some_and(|f| f.ptr_eq(&shared)) {
            in_flight.remove(request);
        }
        result
    }
}
