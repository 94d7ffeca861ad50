//! HTTP transports that count what the operator asks of Azure: Key Vault requests by status
//! class with their duration, and token exchanges by result. They wrap the one HTTP client
//! (timeout, extra CA) at the transport, below the SDK's policies, so each request that
//! really goes out is counted once, whatever the SDK retries or caches.

use crate::telemetry::{ClassLabels, SourceMetrics, TokenExchangeLabels};
use azure_core::http::headers::AUTHORIZATION;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, Transport};
use std::sync::Arc;
use std::time::Instant;

/// What a transport counts.
#[derive(Clone)]
enum Observe {
    KeyVault,
    /// Token exchanges of one kind of identity (`operator`, `service_account`,
    /// `managed_identity`).
    TokenExchange(&'static str),
}

/// An [`HttpClient`] that counts each request into [`SourceMetrics`] and passes it on.
/// Only status codes and timings are looked at: never a header's value or a body.
pub struct ObservedClient {
    inner: Arc<dyn HttpClient>,
    metrics: SourceMetrics,
    observe: Observe,
}

impl std::fmt::Debug for ObservedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedClient").finish_non_exhaustive()
    }
}

impl ObservedClient {
    /// A transport for Key Vault clients.
    pub fn key_vault(inner: Arc<dyn HttpClient>, metrics: SourceMetrics) -> Transport {
        Self::transport(inner, metrics, Observe::KeyVault)
    }

    /// A transport for the credentials of one kind of identity.
    pub fn token_exchange(
        inner: Arc<dyn HttpClient>,
        metrics: SourceMetrics,
        identity: &'static str,
    ) -> Transport {
        Self::transport(inner, metrics, Observe::TokenExchange(identity))
    }

    fn transport(
        inner: Arc<dyn HttpClient>,
        metrics: SourceMetrics,
        observe: Observe,
    ) -> Transport {
        Transport::new(Arc::new(Self {
            inner,
            metrics,
            observe,
        }))
    }
}

#[async_trait::async_trait]
impl HttpClient for ObservedClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let started = Instant::now();
        let result = self.inner.execute_request(request).await;
        let status = result.as_ref().ok().map(|r| u16::from(r.status()));
        match &self.observe {
            Observe::KeyVault => {
                // Key Vault's authentication handshake: a client's first request goes out
                // without a token and is answered 401 with the challenge. That answer is
                // the protocol, not a failure; counting it would put a 4xx on every new
                // client. A 401 to a request that carried a token is counted.
                let challenge = status == Some(401)
                    && request.headers().get_optional_str(&AUTHORIZATION).is_none();
                if !challenge {
                    let class = ClassLabels::of(status);
                    self.metrics
                        .keyvault_request_duration
                        .get_or_create(&class)
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.keyvault_requests.get_or_create(&class).inc();
                }
            }
            Observe::TokenExchange(identity) => {
                self.metrics
                    .token_exchanges
                    .get_or_create(&TokenExchangeLabels::new(identity, status))
                    .inc();
            }
        }
        result
    }
}
