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
    /// The time (a parameter so that tests can move it).
    now: fn() -> OffsetDateTime,
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
        Self::with_clock(inner, OffsetDateTime::now_utc)
    }

    fn with_clock(inner: Arc<dyn TokenCredential>, now: fn() -> OffsetDateTime) -> Arc<Self> {
        Arc::new(Self {
            inner,
            now,
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
        let now = (self.now)();
        if let Some(cached) = tokens.get(&key)
            && now < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        match self.inner.get_token(scopes, options).await {
            Ok(token) => {
                let renew_at = renew_at((self.now)(), token.expires_on);
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
                Some(cached) if (self.now)() < cached.token.expires_on => {
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

    /// Seconds added to a fixed start by the test running on this thread.
    mod clock {
        use std::cell::Cell;
        use time::{Duration, OffsetDateTime};
        thread_local!(static OFFSET: Cell<i64> = const { Cell::new(0) });
        pub const START: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;
        pub fn now() -> OffsetDateTime {
            START + Duration::seconds(OFFSET.with(Cell::get))
        }
        pub fn set(seconds: i64) {
            OFFSET.with(|o| o.set(seconds));
        }
    }

    /// An identity whose tokens live `lifetime` from the test clock; counts its exchanges.
    #[derive(Debug)]
    struct Entra {
        exchanges: std::sync::atomic::AtomicUsize,
        down: std::sync::atomic::AtomicBool,
        lifetime: Duration,
    }

    impl Entra {
        fn new(lifetime: Duration) -> Arc<Self> {
            Arc::new(Self {
                exchanges: Default::default(),
                down: Default::default(),
                lifetime,
            })
        }
        fn exchanges(&self) -> usize {
            self.exchanges.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl TokenCredential for Entra {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            use std::sync::atomic::Ordering::SeqCst;
            // Others asking meanwhile must wait for this exchange, not start their own.
            tokio::task::yield_now().await;
            let n = self.exchanges.fetch_add(1, SeqCst) + 1;
            if self.down.load(SeqCst) {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "AADSTS90033",
                ));
            }
            Ok(AccessToken::new(
                format!("issued-token-{n}"),
                clock::now() + self.lifetime,
            ))
        }
    }

    const SCOPE: &[&str] = &["https://vault.azure.net/.default"];

    #[tokio::test]
    async fn one_exchange_per_lifetime_however_many_readers() {
        clock::set(0);
        let entra = Entra::new(Duration::seconds(60));
        let cache = CachingCredential::with_clock(entra.clone(), clock::now);
        let tokens = futures::future::join_all((0..20).map(|_| cache.get_token(SCOPE, None))).await;
        assert!(
            tokens
                .iter()
                .all(|t| t.as_ref().unwrap().token.secret() == "issued-token-1")
        );
        assert_eq!(
            entra.exchanges(),
            1,
            "20 readers at once share one exchange"
        );
        clock::set(53);
        cache.get_token(SCOPE, None).await.unwrap();
        assert_eq!(
            entra.exchanges(),
            1,
            "kept until a tenth of its lifetime is left"
        );
        clock::set(54);
        let renewed = cache.get_token(SCOPE, None).await.unwrap();
        assert_eq!(renewed.token.secret(), "issued-token-2");
        assert_eq!(entra.exchanges(), 2);
    }

    #[tokio::test]
    async fn a_valid_token_outlives_a_failed_renewal_and_an_expired_one_does_not() {
        clock::set(0);
        let entra = Entra::new(Duration::seconds(60));
        let cache = CachingCredential::with_clock(entra.clone(), clock::now);
        cache.get_token(SCOPE, None).await.unwrap();
        entra.down.store(true, std::sync::atomic::Ordering::SeqCst);
        clock::set(55);
        let kept = cache.get_token(SCOPE, None).await.unwrap();
        assert_eq!(kept.token.secret(), "issued-token-1");
        assert_eq!(entra.exchanges(), 2, "the renewal was tried");
        clock::set(60);
        assert!(cache.get_token(SCOPE, None).await.is_err());
    }

    #[tokio::test]
    async fn debug_output_never_holds_a_token() {
        clock::set(0);
        let cache = CachingCredential::with_clock(Entra::new(Duration::hours(1)), clock::now);
        let token = cache.get_token(SCOPE, None).await.unwrap();
        let debug = format!("{cache:?}");
        assert!(!debug.contains(token.token.secret()), "{debug}");
    }
}
