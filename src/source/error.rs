//! What can go wrong reading Key Vault, classified from what Key Vault answered.

use crate::api::Reason;
use std::time::Duration;

/// A failed Key Vault read. Messages name the vault, the secret, the identity and the
/// Azure request id; they never carry a value or a token.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SourceError {
    #[error("Key Vault secret '{name}' was not found in {vault}{}", request_id_suffix(.request_id))]
    NotFound {
        vault: String,
        name: String,
        request_id: Option<String>,
    },
    #[error("Key Vault secret '{name}' in {vault} is disabled{}", request_id_suffix(.request_id))]
    Disabled {
        vault: String,
        name: String,
        request_id: Option<String>,
    },
    #[error("identity {identity} may not read Key Vault secret '{name}' in {vault}: {detail}{}", request_id_suffix(.request_id))]
    AccessDenied {
        vault: String,
        name: String,
        identity: String,
        detail: String,
        request_id: Option<String>,
    },
    #[error("Key Vault {vault} throttled the read of '{name}'{}{}", retry_after_suffix(.retry_after), request_id_suffix(.request_id))]
    Throttled {
        vault: String,
        name: String,
        retry_after: Option<Duration>,
        request_id: Option<String>,
    },
    #[error("Key Vault {vault} could not be reached for '{name}': {detail}")]
    Unreachable {
        vault: String,
        name: String,
        detail: String,
    },
    #[error("identity {identity} could not get a Key Vault token: {detail}")]
    Identity { identity: String, detail: String },
    /// Key Vault answered 200 without a `value`. Reported as `VaultUnreachable`: the
    /// answer did not come from a working Key Vault (a proxy, a captive portal, a fault),
    /// which is retried like an outage, and nothing is written from it.
    #[error("Key Vault {vault} answered the read of '{name}' without a value (HTTP 200 with no `value`); nothing was written{}", request_id_suffix(.request_id))]
    NoValue {
        vault: String,
        name: String,
        request_id: Option<String>,
    },
    /// The vault is not one this operator sends requests to; no request was made.
    #[error("{detail}")]
    VaultNotAllowed { vault: String, detail: String },
}

fn request_id_suffix(request_id: &Option<String>) -> String {
    request_id
        .as_ref()
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default()
}

fn retry_after_suffix(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!("; retry after {}s", d.as_secs()))
        .unwrap_or_default()
}

impl SourceError {
    pub fn reason(&self) -> Reason {
        match self {
            SourceError::NotFound { .. } => Reason::SecretNotFound,
            SourceError::Disabled { .. } => Reason::SecretDisabled,
            SourceError::AccessDenied { .. } => Reason::AccessDenied,
            SourceError::Throttled { .. } => Reason::Throttled,
            SourceError::Unreachable { .. } => Reason::VaultUnreachable,
            SourceError::Identity { .. } => Reason::IdentityError,
            SourceError::NoValue { .. } => Reason::VaultUnreachable,
            SourceError::VaultNotAllowed { .. } => Reason::InvalidSpec,
        }
    }

    /// A vault's throttling told to a read of another of its secrets (Key Vault throttles
    /// whole vaults); any other failure as it is.
    pub fn for_secret(self, secret: &str) -> SourceError {
        match self {
            SourceError::Throttled {
                vault,
                retry_after,
                request_id,
                ..
            } => SourceError::Throttled {
                vault,
                name: secret.to_owned(),
                retry_after,
                request_id,
            },
            other => other,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SourceError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// How a failed HTTP answer from Key Vault is classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpFailure {
    NotFound,
    Disabled,
    Denied(String),
    Throttled(Option<Duration>),
    /// 5xx and anything else unexpected: possibly transient.
    Unavailable(String),
}

/// Classifies an error answer from its status, body and `Retry-After` header. The body
/// is parsed here rather than trusting the SDK's `error_code`, which falls back to the
/// status number when the message holds JSON escapes (as Key Vault's 403 message does).
pub fn classify(status: u16, body: &[u8], retry_after: Option<&str>) -> HttpFailure {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed["error"]["code"].as_str().unwrap_or_default();
    let inner = parsed["error"]["innererror"]["code"]
        .as_str()
        .unwrap_or_default();
    let message = parsed["error"]["message"].as_str().unwrap_or_default();
    let first_line = message.lines().next().unwrap_or_default().trim().to_owned();
    match status {
        404 => HttpFailure::NotFound,
        403 if inner.eq_ignore_ascii_case("SecretDisabled")
            || message.to_ascii_lowercase().contains("disabled secret") =>
        {
            HttpFailure::Disabled
        }
        401 | 403 => {
            let what = [code, inner]
                .iter()
                .filter(|c| !c.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            let what = if what.is_empty() {
                status.to_string()
            } else {
                what
            };
            HttpFailure::Denied(if first_line.is_empty() {
                what
            } else {
                format!("{what}: {first_line}")
            })
        }
        429 => HttpFailure::Throttled(
            retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        ),
        _ => HttpFailure::Unavailable(if first_line.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status} {code}: {first_line}")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_key_vault_answers() {
        let rbac = br#"{"error":{"code":"Forbidden","message":"Caller is not authorized to perform action on resource.\r\nCaller: appid=x","innererror":{"code":"ForbiddenByRbac"}}}"#;
        assert_eq!(
            classify(403, rbac, None),
            HttpFailure::Denied("Forbidden/ForbiddenByRbac: Caller is not authorized to perform action on resource.".into())
        );
        let disabled = br#"{"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled secret.","innererror":{"code":"SecretDisabled"}}}"#;
        assert_eq!(classify(403, disabled, None), HttpFailure::Disabled);
        assert_eq!(
            classify(404, br#"{"error":{"code":"SecretNotFound"}}"#, None),
            HttpFailure::NotFound
        );
        assert_eq!(
            classify(429, b"", Some("7")),
            HttpFailure::Throttled(Some(Duration::from_secs(7)))
        );
        assert_eq!(
            classify(429, b"", Some("soon")),
            HttpFailure::Throttled(None)
        );
        assert_eq!(
            classify(503, b"", None),
            HttpFailure::Unavailable("HTTP 503".into())
        );
        assert_eq!(
            classify(401, b"not json", None),
            HttpFailure::Denied("401".into())
        );
    }

    #[test]
    fn messages_name_the_secret_vault_and_request_id() {
        let e = SourceError::Throttled {
            vault: "https://v.vault.azure.net".into(),
            name: "db".into(),
            retry_after: Some(Duration::from_secs(2)),
            request_id: Some("rid-1".into()),
        };
        assert_eq!(
            e.to_string(),
            "Key Vault https://v.vault.azure.net throttled the read of 'db'; retry after 2s (request id rid-1)"
        );
        assert_eq!(e.reason(), Reason::Throttled);
    }

    #[test]
    fn an_answer_without_a_value_is_a_failure_and_a_refused_vault_a_spec_error() {
        let e = SourceError::NoValue {
            vault: "https://v.vault.azure.net".into(),
            name: "db".into(),
            request_id: Some("rid-2".into()),
        };
        assert_eq!(e.reason(), Reason::VaultUnreachable);
        assert_eq!(
            e.to_string(),
            "Key Vault https://v.vault.azure.net answered the read of 'db' without a value (HTTP 200 with no `value`); nothing was written (request id rid-2)"
        );
        let refused = SourceError::VaultNotAllowed {
            vault: "https://kubernetes.default.svc".into(),
            detail: "vaultUrl host 'kubernetes.default.svc' is not a Key Vault host".into(),
        };
        assert_eq!(refused.reason(), Reason::InvalidSpec);
        assert!(refused.to_string().contains("kubernetes.default.svc"));
    }
}
