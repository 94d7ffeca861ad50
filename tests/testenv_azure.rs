//! Smoke tests of the Azure test doubles with the real Azure SDK: workload and managed
//! identity tokens, the Key Vault challenge, access control, faults, and the emulator
//! behind the gateway.

mod common;

use common::keyvault::KeyVault;

use azure_core::credentials::TokenCredential;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use base64::Engine as _;
use common::*;
use serde_json::json;

async fn post_assertion(client_id: &str, assertion: &str) -> (u16, serde_json::Value) {
    let url = format!(
        "{}/{}/oauth2/v2.0/token",
        env("AZURE_AUTHORITY_HOST"),
        env("AZURE_TENANT_ID")
    );
    let response = http_client()
        .post(url)
        .form(&[
            ("client_id", client_id),
            ("client_assertion", assertion),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("grant_type", "client_credentials"),
            ("scope", "https://vault.azure.net/.default"),
        ])
        .send()
        .await
        .expect("token endpoint reachable");
    let status = response.status().as_u16();
    (status, response.json().await.expect("an Entra JSON body"))
}

fn error_codes(body: &serde_json::Value) -> Vec<u64> {
    body["error_codes"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_u64()).collect())
        .unwrap_or_default()
}

/// A token with the real token's header (key id) and chosen claims, signed with the API
/// server's own service-account key: only the claims can make it fail.
fn sign_with_issuer_key(real_token: &str, claims: serde_json::Value) -> String {
    let header = jsonwebtoken::decode_header(real_token).expect("a JWT header");
    let key = std::fs::read(env("VAULTSYNC_TEST_SA_SIGNING_KEY_FILE"))
        .expect("the service-account signing key");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&key).expect("an RSA key");
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn the_token_endpoint_accepts_a_federated_token_and_refuses_forged_expired_and_wrong_audience_ones()
 {
    let client = kube_client().await;
    let doubles = Doubles::new();
    let identity = FederatedIdentity::create(&client, &doubles).await;
    let ns = &identity.namespace.name;
    let real = std::fs::read_to_string(&identity.token_file).unwrap();
    let subject = format!("system:serviceaccount:{ns}:{}", identity.service_account);

    let (status, body) = post_assertion(&identity.client_id, &real).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 0);

    // Forged: the payload names another subject, the signature is the real token's.
    let mut parts: Vec<String> = real.split('.').map(str::to_owned).collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: serde_json::Value =
        serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
    payload["sub"] = json!(format!("system:serviceaccount:{ns}:intruder"));
    parts[1] = b64.encode(serde_json::to_vec(&payload).unwrap());
    let (status, body) = post_assertion(&identity.client_id, &parts.join(".")).await;
    assert_eq!((status, error_codes(&body)), (401, vec![700027]), "{body}");

    let issuer = env("VAULTSYNC_TEST_SA_ISSUER");
    let expired = sign_with_issuer_key(
        &real,
        json!({"iss": issuer, "aud": [FEDERATION_AUDIENCE], "sub": subject, "iat": now() - 7200, "nbf": now() - 7200, "exp": now() - 3600}),
    );
    let (status, body) = post_assertion(&identity.client_id, &expired).await;
    assert_eq!((status, error_codes(&body)), (401, vec![700024]), "{body}");

    let other_issuer = sign_with_issuer_key(
        &real,
        json!({"iss": "https://issuer.example", "aud": [FEDERATION_AUDIENCE], "sub": subject, "iat": now(), "exp": now() + 600}),
    );
    let (status, body) = post_assertion(&identity.client_id, &other_issuer).await;
    assert_eq!((status, error_codes(&body)), (401, vec![700211]), "{body}");

    let wrong_audience = service_account_token(
        &client,
        ns,
        &identity.service_account,
        "api://SomethingElse",
    )
    .await;
    let (status, body) = post_assertion(&identity.client_id, &wrong_audience).await;
    assert_eq!((status, error_codes(&body)), (401, vec![700212]), "{body}");

    // A real token of a ServiceAccount that the federated credential does not name.
    create_service_account(&client, ns, "other").await;
    let other = service_account_token(&client, ns, "other", FEDERATION_AUDIENCE).await;
    let (status, body) = post_assertion(&identity.client_id, &other).await;
    assert_eq!((status, error_codes(&body)), (401, vec![700213]), "{body}");

    let (status, body) = post_assertion(&uuid::Uuid::new_v4().to_string(), &real).await;
    assert_eq!((status, error_codes(&body)), (400, vec![700016]), "{body}");

    assert_eq!(doubles.token_requests(&identity.client_id).await, 6);
}

#[tokio::test]
async fn the_gateway_challenges_requests_without_a_token() {
    let response = http_client()
        .get(format!(
            "{}/secrets/anything/?api-version={KEY_VAULT_API_VERSION}",
            env("VAULTSYNC_TEST_VAULT_URL")
        ))
        .send()
        .await
        .expect("gateway reachable");
    assert_eq!(response.status().as_u16(), 401);
    // The headers every recorded Key Vault answer carries, the 401 included.
    for header in [
        "cache-control",
        "pragma",
        "expires",
        "strict-transport-security",
        "x-content-type-options",
        "x-ms-request-id",
        "x-ms-keyvault-service-version",
        "x-ms-keyvault-region",
        "x-ms-keyvault-network-info",
    ] {
        assert!(response.headers().contains_key(header), "no {header}");
    }
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let authority = format!("{}/{}", env("AZURE_AUTHORITY_HOST"), env("AZURE_TENANT_ID"));
    assert!(
        challenge.contains(&format!("authorization=\"{authority}\"")),
        "{challenge}"
    );
    assert!(
        challenge.contains("resource=\"https://vault.azure.net\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn an_identity_without_access_gets_forbidden_by_rbac() {
    let client = kube_client().await;
    let doubles = Doubles::new();
    let identity = FederatedIdentity::create(&client, &doubles).await;
    doubles
        .grant(&identity.client_id, &["some-other-secret"])
        .await;
    let secrets = secret_client(identity.credential());

    let name = unique("smoke-denied");
    let err = secrets
        .get_secret(&name, None)
        .await
        .expect_err("no access to this secret");
    let (status, _, _, body) = http_failure(&err, "retry-after");
    assert_eq!(status, 403);
    // Read from the body: azure_core cannot borrow the code out of a body whose message
    // holds escapes (Key Vault's 403 message has \r\n), and then reports "403" instead.
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "Forbidden");
    assert_eq!(body["error"]["innererror"]["code"], "ForbiddenByRbac");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&identity.client_id)
    );
    // The challenge round trip and the authorized retry both reached the gateway.
    assert_eq!(doubles.vault_requests("GET", &name).await, 2);
    assert_eq!(doubles.token_requests(&identity.client_id).await, 1);
}

#[tokio::test]
async fn injected_faults_answer_as_key_vault_would() {
    let client = kube_client().await;
    let doubles = Doubles::new();
    let identity = FederatedIdentity::create(&client, &doubles).await;
    let name = unique("smoke-fault");
    doubles.grant(&identity.client_id, &[&name]).await;
    let secrets = secret_client(identity.credential());

    doubles
        .put(
            "/faults",
            json!({"secret": name, "kind": "throttle", "retryAfterSeconds": 7, "count": 1}),
        )
        .await;
    let err = secrets
        .get_secret(&name, None)
        .await
        .expect_err("throttled");
    let (status, code, retry_after, _) = http_failure(&err, "retry-after");
    assert_eq!(
        (status, code.as_deref(), retry_after.as_deref()),
        (429, Some("Throttled"), Some("7"))
    );

    doubles
        .put(
            "/faults",
            json!({"secret": name, "kind": "error", "status": 503, "count": 1}),
        )
        .await;
    let err = secrets
        .get_secret(&name, None)
        .await
        .expect_err("injected 503");
    assert_eq!(http_failure(&err, "retry-after").0, 503);

    doubles
        .put(
            "/faults",
            json!({"secret": name, "kind": "reset", "count": 1}),
        )
        .await;
    let err = secrets
        .get_secret(&name, None)
        .await
        .expect_err("injected reset");
    assert!(
        err.http_status().is_none(),
        "a reset has no HTTP status: {err}"
    );

    // Every fault was used up: the next answer comes from behind the gateway.
    let after = secrets.get_secret(&name, None).await;
    if let Err(err) = after {
        let status = http_failure(&err, "retry-after").0;
        assert!(
            status != 429 && status != 503,
            "fault still active: {status}"
        );
    }
}

#[tokio::test]
async fn the_managed_identity_endpoint_serves_registered_client_ids_only() {
    let doubles = Doubles::new();
    let client_id = uuid::Uuid::new_v4().to_string();
    let credential = || {
        ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: Some(UserAssignedId::ClientId(client_id.clone())),
            client_options: azure_client_options(),
        }))
        .expect("a managed identity credential")
    };
    let refused = credential()
        .get_token(&["https://vault.azure.net/.default"], None)
        .await;
    let refused = refused.expect_err("unregistered").to_string();
    assert!(refused.contains("has not been assigned"), "{refused}");

    doubles
        .put(&format!("/managed-identities/{client_id}"), json!({}))
        .await;
    let token = credential()
        .get_token(&["https://vault.azure.net/.default"], None)
        .await
        .expect("a token");
    assert!(token.expires_on > time::OffsetDateTime::now_utc());

    // The gateway accepts it as the identity it names: authorized, though granted nothing.
    let err = secret_client(credential())
        .get_secret("smoke-mi", None)
        .await
        .expect_err("no access");
    assert_eq!(http_failure(&err, "retry-after").0, 403);
    assert_eq!(
        doubles.stats().await["managedIdentityRequests"][&client_id],
        3
    );
}

#[tokio::test]
async fn a_secret_seeded_in_the_emulator_is_read_through_the_gateway() {
    let client = kube_client().await;
    let doubles = Doubles::new();
    let identity = FederatedIdentity::create(&client, &doubles).await;
    let name = unique("smoke-read");
    doubles.grant(&identity.client_id, &[&name]).await;

    KeyVault::first().set(&name, "MyAKSExampleSecret").await;

    let secret = secret_client(identity.credential())
        .get_secret(&name, None)
        .await
        .expect("read through the gateway");
    let secret = secret.into_model().expect("a secret bundle");
    assert_eq!(secret.value.as_deref(), Some("MyAKSExampleSecret"));
    assert_eq!(doubles.vault_requests("GET", &name).await, 2);
}
