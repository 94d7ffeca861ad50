//! vaultsync: keeps Kubernetes Secrets in sync with Azure Key Vault secrets.
#![forbid(unsafe_code)]

pub mod api;
pub mod controller;
pub mod convert;
pub mod crd;
pub mod leader;
pub mod source;
pub mod telemetry;
