//! The stable reason strings of the `Ready` condition, also used as Event reasons and
//! metric labels. Renaming one breaks users' alerts: add, never rename.

use serde::{Deserialize, Serialize};

/// Why `Ready` is what it is; [`Reason::as_str`] is the stable wire string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Reason {
    /// Every key was written (or already held the right bytes).
    Synced,
    /// `spec.suspend` is true: no Key Vault reads, no writes.
    Suspended,
    /// The spec cannot be used, or the API server refused the Secret it describes.
    InvalidSpec,
    /// Key Vault has no such secret or version (404).
    SecretNotFound,
    /// The Key Vault secret version is disabled.
    SecretDisabled,
    /// The Key Vault secret version's `exp` (expiry) has passed.
    SecretExpired,
    /// `remoteRef.property` names nothing (absent or `null`), or the value is not JSON.
    PropertyNotFound,
    /// `decoding: Base64` on a value that is not Base64.
    DecodingFailed,
    /// Key Vault answered 401 or 403 for the identity.
    AccessDenied,
    /// No token could be had for the identity.
    IdentityError,
    /// Key Vault answered 429.
    Throttled,
    /// Network error, timeout or 5xx from Key Vault.
    VaultUnreachable,
    /// The target Secret exists and belongs to someone else.
    OwnershipConflict,
    /// The values would exceed a Secret's 1 MiB; nothing was written.
    SecretTooLarge,
    /// The Key Vault secret version's `nbf` (not before) is still in the future; synced
    /// once that time comes.
    SecretNotYetValid,
    /// The Kubernetes API server failed or refused a request other than the Secret's
    /// admission (quota, a webhook's or policy's denial other than 400/422, RBAC, 5xx,
    /// timeouts); retried with backoff.
    KubernetesApiError,
    /// The Secret was deleted or its data changed again soon after its last repair
    /// (another client keeps doing it): its repair waits for the pace of repairs, so the
    /// Secret does not hold the synced data meanwhile. Not a failure: no Warning Event.
    DriftRepairPaused,
    /// A `remoteRef.certificate` entry on a value that is not a usable certificate: not
    /// PFX or PEM, a password-protected PFX, no certificate, a key that belongs to none of
    /// them, or no key or issuer where the entry asks for one.
    CertificateInvalid,
}

impl Reason {
    /// Every reason, in the order they were added.
    pub const ALL: [Reason; 18] = [
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
        Reason::SecretNotYetValid,
        Reason::KubernetesApiError,
        Reason::DriftRepairPaused,
        Reason::CertificateInvalid,
    ];

    /// The condition reason, Event reason and metric label; never changes once released.
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
            Reason::SecretNotYetValid => "SecretNotYetValid",
            Reason::KubernetesApiError => "KubernetesApiError",
            Reason::DriftRepairPaused => "DriftRepairPaused",
            Reason::CertificateInvalid => "CertificateInvalid",
        }
    }

    /// Transient failures may pass by themselves; the rest wait for a change of the spec,
    /// of Key Vault or of access rights, and are retried more slowly.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Reason::Throttled
                | Reason::VaultUnreachable
                | Reason::IdentityError
                | Reason::KubernetesApiError
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

    /// `ALL` lists each reason once. The exhaustive match stops compiling when a variant
    /// is added, as a reminder to add it to `ALL` (and to the README's table).
    #[test]
    fn all_lists_every_reason_once() {
        fn listed(reason: Reason) -> bool {
            match reason {
                Reason::Synced
                | Reason::Suspended
                | Reason::InvalidSpec
                | Reason::SecretNotFound
                | Reason::SecretDisabled
                | Reason::SecretExpired
                | Reason::PropertyNotFound
                | Reason::DecodingFailed
                | Reason::AccessDenied
                | Reason::IdentityError
                | Reason::Throttled
                | Reason::VaultUnreachable
                | Reason::OwnershipConflict
                | Reason::SecretTooLarge
                | Reason::SecretNotYetValid
                | Reason::KubernetesApiError
                | Reason::DriftRepairPaused
                | Reason::CertificateInvalid => {
                    Reason::ALL.iter().filter(|r| **r == reason).count() == 1
                }
            }
        }
        assert!(Reason::ALL.into_iter().all(listed));
        assert!(listed(Reason::SecretNotYetValid));
        assert_eq!(Reason::SecretNotYetValid.as_str(), "SecretNotYetValid");
        assert!(!Reason::SecretNotYetValid.is_transient());
        assert_eq!(Reason::KubernetesApiError.as_str(), "KubernetesApiError");
        assert!(Reason::KubernetesApiError.is_transient());
    }
}
