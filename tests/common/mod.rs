//! Shared helpers for the integration tests: they run on the local environment that
//! `make testenv-up` starts and describes in `.testenv/env.sh`.
#![allow(dead_code)] // each test binary uses its own subset

pub mod fleet;
pub mod helm;
pub mod invariants;
pub mod keyvault;
pub mod leak;
pub mod openssl;
pub mod operator;
pub mod pods;

use azure_core::http::{ClientOptions, RetryOptions, Transport};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::path::PathBuf;
use std::sync::Arc;

pub const FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Pinned so that an SDK update does not move the tests to an API version the emulator lacks.
pub const KEY_VAULT_API_VERSION: &str = "7.6";

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test`, or `make testenv-up && source .testenv/env.sh` first")
    })
}

pub fn install_crypto_provider() {
    // Several tests in one binary race to install it; only the first wins, which is fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub async fn kube_client() -> Client {
    install_crypto_provider();
    Client::try_default()
        .await
        .expect("a kube client from KUBECONFIG")
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// A namespace of one test, deleted when the test ends (also when it fails), so tests run
/// in parallel on one API server and leave nothing behind.
pub struct TempNamespace {
    pub name: String,
}

/// The Namespace annotation with which a cluster administrator grants the operator's own
/// identity to a namespace's VaultSecrets.
pub const OPERATOR_IDENTITY_GRANT: (&str, &str) = ("vaultsync.io/operator-identity", "allowed");
/// The Namespace annotation listing the managed identities granted to a namespace.
pub const MANAGED_IDENTITIES_GRANT: &str = "vaultsync.io/managed-identities";

impl TempNamespace {
    /// A namespace granted the operator's own identity: the test plays the cluster
    /// administrator, and most tests read as the operator.
    pub async fn create(client: &Client) -> Self {
        Self::create_with_annotations(client, &[OPERATOR_IDENTITY_GRANT]).await
    }

    /// A namespace without any identity grant.
    pub async fn create_ungranted(client: &Client) -> Self {
        Self::create_with_annotations(client, &[]).await
    }

    pub async fn create_with_annotations(client: &Client, annotations: &[(&str, &str)]) -> Self {
        let name = unique("vs-test");
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create the test namespace");
        Self { name }
    }
}

impl Drop for TempNamespace {
    fn drop(&mut self) {
        // What the namespace's objects said goes to the leak scan before they go.
        leak::keep_namespace_objects(&self.name);
        // Drop cannot await; kubectl (on PATH from env.sh) does the deletion synchronously.
        let _ = std::process::Command::new("kubectl")
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

pub async fn create_service_account(client: &Client, namespace: &str, name: &str) {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create a ServiceAccount");
}

/// A real TokenRequest token of a ServiceAccount.
pub async fn service_account_token(
    client: &Client,
    namespace: &str,
    name: &str,
    audience: &str,
) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.into()]),
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let issued = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    issued
        .status
        .and_then(|s| s.token)
        .expect("TokenRequest status with a token")
}

/// A kubeconfig file for the environment's API server that authenticates with `token`
/// alone (a ServiceAccount's), so that a process or client has exactly its rights.
pub fn kubeconfig_for_token(token: &str) -> PathBuf {
    let server = kube::config::Kubeconfig::read().unwrap().clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .server
        .clone()
        .unwrap();
    let path = std::env::temp_dir().join(format!("{}.kubeconfig", unique("token")));
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
        env("VAULTSYNC_TEST_CA_FILE")
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A client with the rights of the ServiceAccount `namespace/name` alone.
pub async fn client_as_service_account(client: &Client, namespace: &str, name: &str) -> Client {
    let token =
        service_account_token(client, namespace, name, &env("VAULTSYNC_TEST_SA_ISSUER")).await;
    let path = kubeconfig_for_token(&token);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read the kubeconfig");
    let _ = std::fs::remove_file(&path);
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("a config from the token's kubeconfig");
    Client::try_from(config).expect("a client for the ServiceAccount")
}

pub fn ca_pem() -> Vec<u8> {
    std::fs::read(env("VAULTSYNC_TEST_CA_FILE")).expect("read the environment's CA")
}

pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(&ca_pem()).expect("parse the environment's CA");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("an HTTP client")
}

/// Azure SDK client options trusting the environment's CA, without SDK retries so that
/// the tests see each answer of the doubles as it was sent.
pub fn azure_client_options() -> ClientOptions {
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http_client()))),
        retry: RetryOptions::none(),
        ..Default::default()
    }
}

/// Scripts the test doubles through their admin API.
pub struct Doubles {
    base: String,
    http: reqwest::Client,
}

impl Doubles {
    pub fn new() -> Self {
        Self {
            base: env("VAULTSYNC_TEST_AZURE_ADMIN_URL"),
            http: reqwest::Client::new(),
        }
    }

    /// Removes the injected Key Vault faults of `secret` (`DELETE /faults?secret=`), or
    /// every fault when `None`.
    pub async fn clear_faults(&self, secret: Option<&str>) {
        let query = secret.map(|s| format!("?secret={s}")).unwrap_or_default();
        let response = self
            .http
            .delete(format!("{}/faults{query}", self.base))
            .send()
            .await
            .expect("admin API reachable");
        assert!(
            response.status().is_success(),
            "DELETE /faults: {}",
            response.status()
        );
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) {
        let response = self
            .http
            .put(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("admin API reachable");
        assert!(
            response.status().is_success(),
            "PUT {path}: {}",
            response.status()
        );
    }

    pub async fn federate(&self, client_id: &str, namespace: &str, service_account: &str) {
        self.put(
            &format!("/federated-credentials/{client_id}"),
            serde_json::json!({ "subjects": [format!("system:serviceaccount:{namespace}:{service_account}")] }),
        )
        .await;
    }

    pub async fn grant(&self, client_id: &str, secrets: &[&str]) {
        self.put(
            &format!("/access/{client_id}"),
            serde_json::json!({ "secrets": secrets }),
        )
        .await;
    }

    pub async fn delete(&self, path: &str) {
        let response = self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .await
            .expect("admin API reachable");
        assert!(
            response.status().is_success() || response.status() == reqwest::StatusCode::NOT_FOUND,
            "DELETE {path}: {}",
            response.status()
        );
    }

    /// Injects a vault fault (the admin API's `PUT /faults` body).
    pub async fn fault(&self, fault: serde_json::Value) {
        self.put("/faults", fault).await;
    }

    /// Removes the vault faults scoped to `client_id` (`DELETE /faults?clientId=`).
    pub async fn clear_client_faults(&self, client_id: &str) {
        self.delete(&format!("/faults?clientId={client_id}")).await;
    }

    /// Makes the Entra token endpoint fail every request of `client_id`.
    pub async fn token_fault(&self, client_id: &str, fault: serde_json::Value) {
        self.put(&format!("/token-faults/{client_id}"), fault).await;
    }

    pub async fn clear_token_fault(&self, client_id: &str) {
        self.delete(&format!("/token-faults/{client_id}")).await;
    }

    /// Sets how long tokens issued to `client_id` live.
    pub async fn token_lifetime(&self, client_id: &str, seconds: u64) {
        self.put(
            &format!("/token-lifetimes/{client_id}"),
            serde_json::json!({ "seconds": seconds }),
        )
        .await;
    }

    pub async fn stats(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/stats", self.base))
            .send()
            .await
            .expect("admin API reachable")
            .json()
            .await
            .expect("stats JSON")
    }

    pub async fn token_requests(&self, client_id: &str) -> u64 {
        self.stats().await["tokenRequests"][client_id]
            .as_u64()
            .unwrap_or(0)
    }

    /// Key Vault reads of `kv_name` that carried a valid token (the challenge's first,
    /// token-less request is not one), over every spelling of the name: Key Vault names
    /// ignore case.
    pub async fn authorized_reads(&self, kv_name: &str) -> u64 {
        self.stats().await["vaultAuthorized"]["GET"]
            .as_object()
            .map(|by_name| {
                by_name
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(kv_name))
                    .filter_map(|(_, count)| count.as_u64())
                    .sum()
            })
            .unwrap_or(0)
    }

    pub async fn vault_requests(&self, method: &str, secret: &str) -> u64 {
        self.stats().await["vault"][method][secret]
            .as_u64()
            .unwrap_or(0)
    }
}

/// A ServiceAccount of a fresh namespace, federated to a fresh client id, with its
/// TokenRequest token in a file, as a workload identity pod would see it.
pub struct FederatedIdentity {
    pub namespace: TempNamespace,
    pub service_account: String,
    pub client_id: String,
    pub token_file: PathBuf,
}

impl FederatedIdentity {
    pub async fn create(client: &Client, doubles: &Doubles) -> Self {
        let namespace = TempNamespace::create(client).await;
        let service_account = "workload".to_owned();
        create_service_account(client, &namespace.name, &service_account).await;
        let client_id = uuid::Uuid::new_v4().to_string();
        doubles
            .federate(&client_id, &namespace.name, &service_account)
            .await;
        let token = service_account_token(
            client,
            &namespace.name,
            &service_account,
            FEDERATION_AUDIENCE,
        )
        .await;
        let token_file =
            std::env::temp_dir().join(format!("{}-{}.token", namespace.name, service_account));
        std::fs::write(&token_file, token).expect("write the token file");
        Self {
            namespace,
            service_account,
            client_id,
            token_file,
        }
    }

    pub fn credential(&self) -> Arc<azure_identity::WorkloadIdentityCredential> {
        azure_identity::WorkloadIdentityCredential::new(Some(
            azure_identity::WorkloadIdentityCredentialOptions {
                credential_options: azure_identity::ClientAssertionCredentialOptions {
                    client_options: azure_client_options(),
                },
                client_id: Some(self.client_id.clone()),
                tenant_id: Some(env("AZURE_TENANT_ID")),
                token_file_path: Some(self.token_file.clone()),
            },
        ))
        .expect("a workload identity credential")
    }
}

impl Drop for FederatedIdentity {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.token_file);
    }
}

pub fn secret_client(
    credential: Arc<dyn azure_core::credentials::TokenCredential>,
) -> azure_security_keyvault_secrets::SecretClient {
    azure_security_keyvault_secrets::SecretClient::new(
        &env("VAULTSYNC_TEST_VAULT_URL"),
        credential,
        Some(azure_security_keyvault_secrets::SecretClientOptions {
            api_version: KEY_VAULT_API_VERSION.into(),
            client_options: azure_client_options(),
            // The gateway listens on 127.0.0.1, which can never match the challenge resource.
            verify_challenge_resource: Some(false),
        }),
    )
    .expect("a SecretClient")
}

/// Status, Key Vault error code and a response header of a failed Azure SDK call.
pub fn http_failure(
    err: &azure_core::Error,
    header: &str,
) -> (u16, Option<String>, Option<String>, String) {
    match err.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let name = azure_core::http::headers::HeaderName::from(header.to_owned());
            let value = raw_response
                .as_ref()
                .and_then(|r| r.headers().get_optional_string(&name));
            let body = raw_response
                .as_ref()
                .map(|r| String::from_utf8_lossy(r.body()).into_owned())
                .unwrap_or_default();
            (u16::from(*status), error_code.clone(), value, body)
        }
        other => panic!("expected an HTTP error, got {other:?}: {err}"),
    }
}
