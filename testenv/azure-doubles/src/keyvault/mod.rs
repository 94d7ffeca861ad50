//! vaultsync's own Key Vault secrets emulator (dev and test only).
//!
//! Each `--keyvault-listen ADDR` is one independent vault with its own in-memory state,
//! served over TLS with the binary's `--tls-cert`/`--tls-key`. It answers the whole
//! secrets data plane of the 2025-07-01 spec (set, get, list, versions, update, delete,
//! deleted get/list, purge, recover, backup, restore) the way real Key Vault answered in
//! `/work/shared/keyvault-conformance/recordings/`; where the recordings are silent it
//! follows the README's "Facts a faithful emulator needs" and says so at the rule.
//!
//! **Authentication is not checked here.** A request without `Authorization: Bearer
//! <non-empty>` gets Key Vault's 401 challenge (before any other check), but any non-empty
//! token is accepted. Verifying tokens, per-identity access, faults and counting are the
//! gateway's job (`gateway.rs`, `--vault-listen`), which sits in front of the emulator.
//!
//! Where each rule comes from (file names under `recordings/`; "fact N" = README section
//! "Facts a faithful emulator needs that no recording here shows"):
//! - 401 challenge body and `WWW-Authenticate`: every `net/SecretClientLiveTests` file and
//!   the 2026 JS files (wording "Bearer, PoP, or MTLS_POP").
//! - api-versions: 7.5, 7.6, 2025-07-01, 2026-04-01, and 7.6-preview.2 because the JS and
//!   Rust recordings use it; others 400 BadParameter (fact 4).
//! - Bodies and headers: all recordings; `tags`/`contentType` omitted when unset; only set
//!   and get carry `value`; `recoveryLevel` is `Recoverable+Purgeable` at 90 days and
//!   `CustomizedRecoverable+Purgeable` below (.NET vs JS/Rust recordings).
//! - Names: fact 5 (rules, invalid-name text), fact 8 (case-insensitive), empty name on
//!   PUT: `js/cannot_create_a_secret_with_an_empty_name.json`.
//! - Limits: fact 6 (documented; the wire texts are ours).
//! - Disabled: 403 SecretDisabled on get (`js/cant_get_a_disabled_secret.json`) and on
//!   deleted get (`net/Set_With_ContentType_And_Enabled_False.json`); expired and
//!   not-yet-valid values are returned (fact 7).
//! - Lists: `rust/list_secrets.json`, `js/can_retrieve_all_versions_of_a_secret_by_page.json`,
//!   `net/GetPropertiesOfSecretVersions_Returns_All_Versions.json`,
//!   `net/GetSecretVersionsNonExisting.json`.
//! - Soft delete, recover, purge, PUT on a deleted name: the .NET lifecycle recordings,
//!   `rust/purge_secret.json`, fact 1.
//! - Backup/restore: `js/can_restore_a_secret.json` and the two malformed-blob
//!   recordings; the blob format is ours and **not encrypted** (see `backup.rs`).
//! - `outContentType`: `js/getsecret_with_outcontenttypeeqpem_...json` (see `store::convert`).
//!
//! Eventual consistency (`--keyvault-settle-ms`, default 0 = off). The real service takes
//! a few seconds to settle after some operations, which clients poll through. When on, for
//! that many milliseconds:
//! - after a DELETE, `GET /deletedsecrets/{name}` answers 404 "Deleted Secret not found:
//!   <name>" and purge (and recover) 409 ObjectIsBeingDeleted;
//! - after a recover, GET of the secret answers the generic 404 and PUT 409
//!   ObjectIsBeingRecovered (fact 1);
//! - after a purge, a restore of that name answers 409 Conflict.

pub mod api;
mod backup;
mod error;
mod store;

pub use api::Vault;
pub use store::Config;
