//! Keeps an identity's access token until shortly before it expires, measured against the
//! token's own lifetime, and keeps using it while it is valid if Entra fails to renew it.
//!
//! Why a cache of our own: `azure_identity`'s credentials and `azure_core`'s bearer-token
//! policy both renew a token once it is within five minutes of expiry. A token that lives
//! five minutes or less (a tenant's token lifetime policy, a sovereign cloud, a test
//! setting) is therefore renewed before *every* Key Vault request: one Entra exchange per
//! read instead of one per lifetime. Here the renewal window is a tenth of the lifetime,
//! at most five minutes (a one-hour token is renewed five minutes early, as before; a
//! one-minute token six seconds early).

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use std::collections::HashMap;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// The most a token is renewed before its expiry.
pub const MAX_EARLY: Duration = Duration::minutes(5);

/// When a token obtained at `fetched` and expiring at `expires` should be renewed.
pub fn renew_at(fetched: OffsetDateTime, expires: OffsetDateTime) -> OffsetDateTime {
    let lifetime = (expires - fetched).max(Duration::ZERO);
    let early: Duration = lifetime / 10;
    expires - early.min(MAX_EARLY)
}

struct Cached {
    token: AccessToken,
    renew_at: OffsetDateTime,
}

/// A [`TokenCredential`] that caches `inner`'s tokens per scope set (see the module).
pub struct CachingCredential {
    inner: Arc<dyn TokenCredential>,
    /// One renewal at a time per credential: concurrent reads wait for it and share it.
    tokens: tokio::sync::Mutex<HashMap<Vec<String>, Cached>>,
}

impl std::fmt::Debug for CachingCredential {
    // Never the token: only what is wrapped.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingCredential")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl CachingCredential {
    pub fn new(inner: Arc<dyn TokenCredential>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            tokens: tokio::sync::Mutex::default(),
        })
    }
}

#[async_trait::async_trait]
impl TokenCredential for CachingCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let key: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let mut tokens = self.tokens.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(cached) = tokens.get(&key)
            && now < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        match self.inner.get_token(scopes, options).await {
            Ok(token) => {
                let renew_at = renew_at(OffsetDateTime::now_utc(), token.expires_on);
                tokens.insert(
                    key,
                    Cached {
                        token: token.clone(),
                        renew_at,
                    },
                );
                Ok(token)
            }
            // Renewal failed but the token still works: keep using it; the next read
            // tries again.
            Err(e) => match tokens.get(&key) {
                Some(cached) if OffsetDateTime::now_utc() < cached.token.expires_on => {
                    tracing::info!(error = %e, "token renewal failed; the current token is still valid");
                    Ok(cached.token.clone())
                }
                _ => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_a_tenth_of_the_lifetime_early_at_most_five_minutes() {
        let t = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            renew_at(t, t + Duration::seconds(60)),
            t + Duration::seconds(54)
        );
        assert_eq!(
            renew_at(t, t + Duration::hours(1)),
            t + Duration::minutes(55)
        );
        assert_eq!(
            renew_at(t, t + Duration::hours(24)),
            t + Duration::hours(24) - MAX_EARLY
        );
        assert_eq!(
            renew_at(t, t - Duration::seconds(1)),
            t - Duration::seconds(1)
        );
    }
}
