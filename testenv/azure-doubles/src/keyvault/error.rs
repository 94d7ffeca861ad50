//! Every refusal the emulator gives, and its wire form `{"error":{"code","message"
//! [,"innererror":{"code"}]}}`. Each variant names where its text comes from.

/// The newest api-version the emulator knows; named in api-version errors.
pub const LATEST_API_VERSION: &str = "2026-04-01";

/// Why a restore blob was refused; the real service distinguishes the two (recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobFault {
    /// `recordings/net/RestoreMalformedBackup.json` ("bm9uLWV4aXN0aW5n").
    Corrupt,
    /// `recordings/js/can_restore_a_secret_malformed_backup_bytes.json` (zero bytes).
    BadVersion,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// No `Authorization: Bearer <token>`; the 2026 wording of every .NET recording.
    Unauthorized,
    /// README fact 4 says the answer to a missing api-version is unrecorded; our guess.
    MissingApiVersion,
    /// README fact 4 (third-party trace).
    UnknownApiVersion(String),
    /// README fact 5 (third-party trace).
    InvalidName(String),
    /// Any other 400 BadParameter; the message says which rule.
    BadParameter(String),
    /// The generic not-found text (recorded in many files); carries `name` or
    /// `name/version` as the client wrote it.
    NotFound(String),
    /// "Deleted Secret not found: <name>" while a delete settles (recorded).
    DeletedNotFound(String),
    /// `recordings/js/cant_get_a_disabled_secret.json`.
    Disabled,
    /// README fact 1 (third-party trace).
    DeletedButRecoverable(String),
    /// `recordings/rust/purge_secret.json`.
    BeingDeleted,
    /// README fact 1: PUT right after a recover (third-party trace, azure-sdk-for-net#31581).
    BeingRecovered(String),
    /// `recordings/js/can_restore_a_secret.json`; `name`/`version` form the id.
    RestoreConflict { name: String, version: String },
    /// Code "Malformed backup blob" (recorded, spaces included).
    MalformedBlob(BlobFault),
    /// `recordings/js/cannot_create_a_secret_with_an_empty_name.json` ("HTTP PUT not allowed").
    MethodNotAllowed(String),
    /// A path Key Vault's secrets plane does not have. Unrecorded; our wording.
    UnknownPath,
    /// `recordings/js/getsecret_with_outcontenttypeeqpem_...json`.
    UnsupportedTransformation { from: &'static str, to: String },
}

/// An error ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub inner: Option<&'static str>,
}

impl KvError {
    /// `base` is `https://<host>`, the vault URL the client used (ids in messages use it).
    pub fn wire(&self, base: &str) -> WireError {
        let (status, code, message, inner) = match self {
            KvError::Unauthorized => (
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer, PoP, or MTLS_POP token.".to_owned(),
                None,
            ),
            KvError::MissingApiVersion => (
                400,
                "BadParameter",
                format!(
                    "The api-version query parameter is missing. Consider using the latest supported version ({LATEST_API_VERSION})."
                ),
                None,
            ),
            KvError::UnknownApiVersion(v) => (
                400,
                "BadParameter",
                format!(
                    "The specified version ({v}) is not recognized. Consider using the latest supported version ({LATEST_API_VERSION})."
                ),
                None,
            ),
            KvError::InvalidName(name) => (
                400,
                "BadParameter",
                format!("The request URI contains an invalid name: {name}"),
                None,
            ),
            KvError::BadParameter(message) => (400, "BadParameter", message.clone(), None),
            KvError::NotFound(what) => (
                404,
                "SecretNotFound",
                format!(
                    "A secret with (name/id) {what} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
                ),
                None,
            ),
            KvError::DeletedNotFound(name) => (
                404,
                "SecretNotFound",
                format!("Deleted Secret not found: {name}"),
                None,
            ),
            KvError::Disabled => (
                403,
                "Forbidden",
                "Operation get is not allowed on a disabled secret.".to_owned(),
                Some("SecretDisabled"),
            ),
            KvError::DeletedButRecoverable(name) => (
                409,
                "Conflict",
                format!(
                    "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
                ),
                Some("ObjectIsDeletedButRecoverable"),
            ),
            KvError::BeingDeleted => (
                409,
                "Conflict",
                "Secret is currently being deleted.".to_owned(),
                Some("ObjectIsBeingDeleted"),
            ),
            KvError::BeingRecovered(name) => (
                409,
                "Conflict",
                format!(
                    "Secret {name} is currently being recovered and cannot be re-created; retry later."
                ),
                Some("ObjectIsBeingRecovered"),
            ),
            KvError::RestoreConflict { name, version } => (
                409,
                "Conflict",
                format!(
                    "There was a conflict restoring the secret '{base}/secrets/{name}/{version}'. This can happen if either: a second secret with the same name was created after the first secret was deleted; thus trying to restore a secret whose name is already in use. To fix this, rename the second secret to something else so that the restore works. The second probable cause of this exception is when multiple operations are performed in parallel against the secret. To avoid this error, perform operations against a secret in a sequential manner."
                ),
                None,
            ),
            KvError::MalformedBlob(fault) => (
                400,
                "Malformed backup blob",
                match fault {
                    BlobFault::Corrupt => "Backup blob is corrupt.",
                    BlobFault::BadVersion => "Backup blob contains invalid or corrupt version.",
                }
                .to_owned(),
                None,
            ),
            KvError::MethodNotAllowed(method) => (
                405,
                "MethodNotAllowed",
                format!("HTTP {method} not allowed"),
                None,
            ),
            KvError::UnknownPath => (
                404,
                "NotFound",
                "The Key Vault secrets API has no resource at this path.".to_owned(),
                None,
            ),
            KvError::UnsupportedTransformation { from, to } => (
                400,
                "BadParameter",
                format!(
                    "The '{from}' to '{to}' transformation is not supported. Only PFX to PEM transformation is supported."
                ),
                None,
            ),
        };
        WireError {
            status,
            code,
            message,
            inner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_texts() {
        let base = "https://v.example";
        let e = KvError::NotFound("n/0123".into()).wire(base);
        assert_eq!((e.status, e.code), (404, "SecretNotFound"));
        assert!(
            e.message
                .starts_with("A secret with (name/id) n/0123 was not found in this key vault.")
        );
        let e = KvError::RestoreConflict {
            name: "N".into(),
            version: "ab".into(),
        }
        .wire(base);
        assert!(e.message.starts_with(
            "There was a conflict restoring the secret 'https://v.example/secrets/N/ab'."
        ));
        let e = KvError::MalformedBlob(BlobFault::Corrupt).wire(base);
        assert_eq!(
            (e.status, e.code, e.message.as_str()),
            (400, "Malformed backup blob", "Backup blob is corrupt.")
        );
        let e = KvError::BeingDeleted.wire(base);
        assert_eq!(e.inner, Some("ObjectIsBeingDeleted"));
        let e = KvError::UnknownApiVersion("7.0".into()).wire(base);
        assert_eq!(
            e.message,
            "The specified version (7.0) is not recognized. Consider using the latest supported version (2026-04-01)."
        );
    }
}
