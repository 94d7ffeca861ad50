//! Which identity reads Key Vault, and the Azure credential for it.

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use std::sync::Arc;

/// An identity a VaultSecret reads Key Vault with; part of the client cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityRef {
    /// The operator's own identity (workload identity from its environment, else managed identity).
    Operator,
    /// A ServiceAccount of the VaultSecret's namespace.
    ServiceAccount { namespace: String, name: String },
    /// A user-assigned managed identity.
    ManagedIdentity { client_id: String },
}

impl std::fmt::Display for IdentityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityRef::Operator => f.write_str("operator identity"),
            IdentityRef::ServiceAccount { namespace, name } => {
                write!(f, "ServiceAccount {namespace}/{name}")
            }
            IdentityRef::ManagedIdentity { client_id } => write!(f, "managed identity {client_id}"),
        }
    }
}

/// The operator's own credential, chosen from its environment the way Azure's workload
/// identity webhook and App Service set it up: workload identity when
/// `AZURE_FEDERATED_TOKEN_FILE` is set, otherwise managed identity (user-assigned when
/// `AZURE_CLIENT_ID` is set).
pub fn operator_credential(
    client_options: ClientOptions,
) -> azure_core::Result<(Arc<dyn TokenCredential>, String)> {
    let client_id = std::env::var("AZURE_CLIENT_ID")
        .ok()
        .filter(|v| !v.is_empty());
    if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        let credential = azure_identity::WorkloadIdentityCredential::new(Some(
            azure_identity::WorkloadIdentityCredentialOptions {
                credential_options: azure_identity::ClientAssertionCredentialOptions {
                    client_options,
                },
                ..Default::default()
            },
        ))?;
        let described = format!(
            "workload identity (client id {})",
            client_id.as_deref().unwrap_or("from AZURE_CLIENT_ID")
        );
        return Ok((credential, described));
    }
    let credential = azure_identity::ManagedIdentityCredential::new(Some(
        azure_identity::ManagedIdentityCredentialOptions {
            user_assigned_id: client_id
                .clone()
                .map(azure_identity::UserAssignedId::ClientId),
            client_options,
        },
    ))?;
    let described = match client_id {
        Some(id) => format!("managed identity (client id {id})"),
        None => "system-assigned managed identity".to_owned(),
    };
    Ok((credential, described))
}

/// The API server's own words for a refused request, without kube's debug dump.
pub fn api_error_text(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
/// The audience Entra expects in a federated ServiceAccount token.
pub const FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";

/// An identity resolved to what its credential depends on. A ServiceAccount whose
/// annotations change, or that is deleted and recreated, resolves to a different key, so
/// a stale credential is never reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CredentialKey {
    Operator,
    ServiceAccount {
        namespace: String,
        name: String,
        uid: String,
        client_id: String,
        tenant_id: String,
    },
    ManagedIdentity {
        client_id: String,
    },
}

impl CredentialKey {
    /// Names the identity in messages (never a token).
    pub fn describe(&self, operator: &str) -> String {
        match self {
            CredentialKey::Operator => format!("operator {operator}"),
            CredentialKey::ServiceAccount {
                namespace,
                name,
                client_id,
                ..
            } => {
                format!("ServiceAccount {namespace}/{name} (client id {client_id})")
            }
            CredentialKey::ManagedIdentity { client_id } => format!("managed identity {client_id}"),
        }
    }
}

/// Supplies a ServiceAccount's token as the client assertion of Entra's token exchange:
/// a TokenRequest for audience `api://AzureADTokenExchange`, reused until it is within
/// [`ASSERTION_RENEW_BEFORE`] of expiry.
pub struct ServiceAccountAssertion {
    api: kube::Api<k8s_openapi::api::core::v1::ServiceAccount>,
    namespace: String,
    name: String,
    cached: tokio::sync::Mutex<Option<(crate::source::SecretBytes, std::time::Instant)>>,
    token_requests: prometheus_client::metrics::counter::Counter,
}

const ASSERTION_LIFETIME_SECS: i64 = 3600;
const ASSERTION_RENEW_BEFORE: std::time::Duration = std::time::Duration::from_secs(600);

impl ServiceAccountAssertion {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        token_requests: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            api: kube::Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            cached: tokio::sync::Mutex::new(None),
            token_requests,
        }
    }
}

impl std::fmt::Debug for ServiceAccountAssertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountAssertion")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl azure_identity::ClientAssertion for ServiceAccountAssertion {
    async fn secret(
        &self,
        _options: Option<azure_core::http::ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        let mut cached = self.cached.lock().await;
        if let Some((token, renew_at)) = cached.as_ref()
            && std::time::Instant::now() < *renew_at
        {
            return Ok(String::from_utf8_lossy(token.expose()).into_owned());
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![FEDERATION_AUDIENCE.to_owned()]),
                expiration_seconds: Some(ASSERTION_LIFETIME_SECS),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.token_requests.inc();
        let issued = self
            .api
            .create_token_request(&self.name, &Default::default(), &request)
            .await
            .map_err(|e| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    format!(
                        "TokenRequest for ServiceAccount {}/{} failed: {}",
                        self.namespace,
                        self.name,
                        api_error_text(&e)
                    ),
                )
            })?;
        let status = issued.status.unwrap_or_default();
        let token = status.token.filter(|t| !t.is_empty()).ok_or_else(|| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "TokenRequest returned no token",
            )
        })?;
        // Renew ahead of the expiry the API server granted (it may shorten the request).
        let lifetime = status
            .expiration_timestamp
            .map(|t| {
                t.0.duration_since(k8s_openapi::jiff::Timestamp::now())
                    .unsigned_abs()
            })
            .unwrap_or(std::time::Duration::from_secs(
                ASSERTION_LIFETIME_SECS as u64,
            ));
        let renew_at = std::time::Instant::now() + lifetime.saturating_sub(ASSERTION_RENEW_BEFORE);
        *cached = Some((
            crate::source::SecretBytes::from_string(token.clone()),
            renew_at,
        ));
        Ok(token)
    }
}
