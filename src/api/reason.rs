//! The stable reason strings of the `Ready` condition, also used as Event reasons and
//! metric labels. Renaming one breaks users' alerts: add, never rename.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Reason {
    Synced,
    Suspended,
    InvalidSpec,
    SecretNotFound,
    SecretDisabled,
    SecretExpired,
    PropertyNotFound,
    DecodingFailed,
    AccessDenied,
    IdentityError,
    Throttled,
    VaultUnreachable,
    OwnershipConflict,
    SecretTooLarge,
}

impl Reason {
    pub const ALL: [Reason; 14] = [
        Reason::Synced,
        Reason::Suspended,
        Reason::InvalidSpec,
        Reason::SecretNotFound,
        Reason::SecretDisabled,
        Reason::SecretExpired,
        Reason::PropertyNotFound,
        Reason::DecodingFailed,
        Reason::AccessDenied,
        Reason::IdentityError,
        Reason::Throttled,
        Reason::VaultUnreachable,
        Reason::OwnershipConflict,
        Reason::SecretTooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Synced => "Synced",
            Reason::Suspended => "Suspended",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretDisabled => "SecretDisabled",
            Reason::SecretExpired => "SecretExpired",
            Reason::PropertyNotFound => "PropertyNotFound",
            Reason::DecodingFailed => "DecodingFailed",
            Reason::AccessDenied => "AccessDenied",
            Reason::IdentityError => "IdentityError",
            Reason::Throttled => "Throttled",
            Reason::VaultUnreachable => "VaultUnreachable",
            Reason::OwnershipConflict => "OwnershipConflict",
            Reason::SecretTooLarge => "SecretTooLarge",
        }
    }

    /// Transient failures may pass by themselves; the rest wait for a change of the spec,
    /// of Key Vault or of access rights, and are retried more slowly.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Reason::Throttled | Reason::VaultUnreachable | Reason::IdentityError
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn reason_strings_match_their_names() {
        for reason in Reason::ALL {
            assert_eq!(format!("{reason:?}"), reason.as_str());
        }
    }
}
