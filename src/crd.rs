//! The CRD as YAML, generated from the API types (`vaultsync crd`).

use crate::api::VaultSecret;
use kube::CustomResourceExt;

pub fn crd_yaml() -> anyhow::Result<String> {
    Ok(serde_saphyr::to_string(&VaultSecret::crd())?)
}
