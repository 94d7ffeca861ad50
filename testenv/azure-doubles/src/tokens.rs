//! Access tokens issued by the Entra and managed identity doubles and checked by the vault
//! gateway. They are HS256 JWTs under a key that lives only in this process: nothing
//! outside the doubles needs to verify them.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

pub const TOKEN_LIFETIME_SECS: u64 = 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub appid: String,
    pub tid: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// `workload` or `managed`: which double issued it.
    pub src: String,
}

pub struct TokenIssuer {
    issuer: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    ledger: std::sync::Mutex<TokenLedger>,
}

/// Every token the doubles issued and every client assertion (a ServiceAccount token)
/// they were shown, for the tests' leak scan: none may appear where the operator writes.
#[derive(Debug, Default, Clone, Serialize)]
pub struct TokenLedger {
    pub issued: Vec<String>,
    pub assertions: Vec<String>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl TokenIssuer {
    pub fn new(issuer: String) -> Self {
        let key: [u8; 32] = std::array::from_fn(|_| rand_byte());
        Self {
            issuer,
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            ledger: Default::default(),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, TokenLedger> {
        // Plain lists: still consistent after a panic elsewhere.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a client assertion presented to the token endpoint.
    pub fn witness_assertion(&self, assertion: &str) {
        self.ledger().assertions.push(assertion.to_owned());
    }

    /// A copy of the ledger (the admin API's `GET /tokens`).
    pub fn ledger_snapshot(&self) -> TokenLedger {
        self.ledger().clone()
    }

    pub fn issue(
        &self,
        client_id: &str,
        tenant: &str,
        resource: &str,
        src: &str,
        lifetime_secs: u64,
    ) -> anyhow::Result<(String, u64)> {
        let now = now_secs();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: resource.to_owned(),
            sub: client_id.to_owned(),
            appid: client_id.to_owned(),
            tid: tenant.to_owned(),
            iat: now,
            nbf: now,
            exp: now + lifetime_secs,
            src: src.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        self.ledger().issued.push(token.clone());
        Ok((token, claims.exp))
    }

    /// Returns the claims of a valid token for `audience`, or why it is not.
    pub fn verify(&self, token: &str, audience: &str) -> Result<AccessClaims, String> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.leeway = 0;
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }
}

/// One byte from the OS random source via a fresh UUID: the doubles need unpredictability
/// only across runs, not cryptographic strength.
fn rand_byte() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_token_verifies_only_for_its_audience_and_issuer() {
        let issuer = TokenIssuer::new("https://login.test/t/v2.0".into());
        let (token, exp) = issuer
            .issue("client-1", "t", "https://vault.azure.net", "workload", 60)
            .unwrap();
        assert!(exp > now_secs());
        let claims = issuer.verify(&token, "https://vault.azure.net").unwrap();
        assert_eq!(claims.appid, "client-1");
        assert!(issuer.verify(&token, "https://storage.azure.com").is_err());
        let other = TokenIssuer::new("https://login.test/t/v2.0".into());
        assert!(other.verify(&token, "https://vault.azure.net").is_err());
        assert_eq!(issuer.ledger_snapshot().issued, vec![token]);
    }
}
