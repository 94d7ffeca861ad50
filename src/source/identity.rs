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
