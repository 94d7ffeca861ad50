//! Verifies Kubernetes ServiceAccount tokens the way Entra does for a federated
//! credential: keys from the issuer's OIDC discovery document and JWKS, fetched without
//! credentials, then signature, issuer, audience and lifetime.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

pub const FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Unknown key ids trigger a refetch, but not more often than this.
const REFETCH_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
pub struct AssertionClaims {
    pub sub: String,
}

/// Why an assertion was refused, in Entra's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssertionError {
    Malformed(String),
    Signature,
    Expired,
    Issuer,
    Audience,
    KeysUnavailable(String),
}

struct KeyCache {
    fetched_at: Instant,
    keys: Vec<(Option<String>, DecodingKey)>,
}

pub struct IssuerVerifier {
    issuer: String,
    http: reqwest::Client,
    cache: Mutex<Option<KeyCache>>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl IssuerVerifier {
    pub fn new(issuer: String, http: reqwest::Client) -> Self {
        Self {
            issuer,
            http,
            cache: Mutex::new(None),
        }
    }

    async fn fetch_keys(&self) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = get_json(&self.http, &url).await?;
        if discovery.issuer != self.issuer {
            return Err(format!(
                "discovery document names issuer {}, expected {}",
                discovery.issuer, self.issuer
            ));
        }
        let jwks: JwkSet = get_json(&self.http, &discovery.jwks_uri).await?;
        let keys = jwks
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk).ok()?)))
            .collect::<Vec<_>>();
        if keys.is_empty() {
            return Err(format!("no usable keys at {}", discovery.jwks_uri));
        }
        Ok(keys)
    }

    /// Keys matching `kid` (all keys when the token names none), refetched once when the
    /// cached set has no such key, since the API server may have rotated its signing key.
    async fn keys_for(&self, kid: Option<&str>) -> Result<Vec<DecodingKey>, String> {
        let mut cache = self.cache.lock().await;
        let pick = |c: &KeyCache| -> Vec<DecodingKey> {
            c.keys
                .iter()
                .filter(|(k, _)| kid.is_none() || k.as_deref() == kid)
                .map(|(_, key)| key.clone())
                .collect()
        };
        if let Some(c) = cache.as_ref() {
            let found = pick(c);
            if !found.is_empty() || c.fetched_at.elapsed() < REFETCH_AFTER {
                return Ok(found);
            }
        }
        let keys = self.fetch_keys().await?;
        let fresh = KeyCache {
            fetched_at: Instant::now(),
            keys,
        };
        let found = pick(&fresh);
        *cache = Some(fresh);
        Ok(found)
    }

    pub async fn verify(&self, assertion: &str) -> Result<AssertionClaims, AssertionError> {
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|e| AssertionError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(AssertionError::Malformed(format!(
                "unsupported algorithm {:?}",
                header.alg
            )));
        }
        let keys = self
            .keys_for(header.kid.as_deref())
            .await
            .map_err(AssertionError::KeysUnavailable)?;
        if keys.is_empty() {
            return Err(AssertionError::Signature);
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[FEDERATION_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        let mut last = AssertionError::Signature;
        for key in &keys {
            match jsonwebtoken::decode::<AssertionClaims>(assertion, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature => AssertionError::Signature,
                        K::ExpiredSignature | K::ImmatureSignature => AssertionError::Expired,
                        K::InvalidIssuer => AssertionError::Issuer,
                        K::InvalidAudience => AssertionError::Audience,
                        other => AssertionError::Malformed(format!("{other:?}")),
                    };
                    // Only a bad signature can be cured by another key with the same kid.
                    if last != AssertionError::Signature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    response
        .json::<T>()
        .await
        .map_err(|e| format!("GET {url}: {e}"))
}
