//! Seeding the environment's Key Vault through its REST API, as any Key Vault client
//! would: no back door into the emulator's state. Requests go straight to a vault of the
//! emulator (or lowkey-vault), not through the gateway, so they neither need a grant nor
//! count as the operator's reads.

use super::*;
use serde_json::{Value, json};

/// One vault of the environment's Key Vault backend.
pub struct KeyVault {
    base: String,
    http: reqwest::Client,
}

impl KeyVault {
    /// Vault 1, the one behind `VAULTSYNC_TEST_VAULT_URL`.
    pub fn first() -> Self {
        Self::at(env("VAULTSYNC_TEST_EMULATOR_URL"))
    }

    /// Vault 2, the one behind `VAULTSYNC_TEST_VAULT2_URL`.
    pub fn second() -> Self {
        Self::at(env("VAULTSYNC_TEST_EMULATOR2_URL"))
    }

    pub fn at(base: String) -> Self {
        assert!(
            !base.is_empty(),
            "the environment has no Key Vault vault URL"
        );
        Self {
            base,
            http: http_client(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!(
            "{}{path}?api-version={KEY_VAULT_API_VERSION}",
            self.base.trim_end_matches('/')
        );
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth("test-seed");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("Key Vault reachable");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Sets a new version of `name`; returns its version id.
    pub async fn set(&self, name: &str, value: &str) -> String {
        self.set_with(name, json!({ "value": value })).await
    }

    /// Sets a new version from a full request body (`value`, `attributes`, `contentType`,
    /// `tags`); returns its version id.
    pub async fn set_with(&self, name: &str, body: Value) -> String {
        if let Some(value) = body["value"].as_str() {
            super::leak::register_value(value);
        }
        let bundle = self
            .call(
                reqwest::Method::PUT,
                &format!("/secrets/{name}"),
                Some(body),
            )
            .await;
        version_of(&bundle)
    }

    /// Updates a version's attributes (`{"enabled": false}`, ...).
    pub async fn update(&self, name: &str, version: &str, attributes: Value) {
        self.call(
            reqwest::Method::PATCH,
            &format!("/secrets/{name}/{version}"),
            Some(json!({ "attributes": attributes })),
        )
        .await;
    }

    pub async fn delete(&self, name: &str) {
        self.call(reqwest::Method::DELETE, &format!("/secrets/{name}"), None)
            .await;
    }

    pub async fn recover(&self, name: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/deletedsecrets/{name}/recover"),
            None,
        )
        .await;
    }

    pub async fn purge(&self, name: &str) {
        self.call(
            reqwest::Method::DELETE,
            &format!("/deletedsecrets/{name}"),
            None,
        )
        .await;
    }
}

/// The version id at the end of a bundle's `id`.
fn version_of(bundle: &Value) -> String {
    bundle["id"]
        .as_str()
        .and_then(|id| id.rsplit('/').next())
        .unwrap_or_else(|| panic!("a secret bundle with an id: {bundle}"))
        .to_owned()
}
