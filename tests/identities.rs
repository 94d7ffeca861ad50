//! Zero-trust identities: a VaultSecret reads Key Vault as a ServiceAccount of its own
//! namespace (workload identity) or as a user-assigned managed identity, and the cost of
//! that stays one TokenRequest and one token exchange per identity and token lifetime.

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use vaultsync::api::VaultSecret;

const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";

/// A team: a namespace, a ServiceAccount annotated with a fresh client id that is
/// federated to it, and access to the team's own Key Vault secret only.
struct Team {
    ns: TempNamespace,
    sa: String,
    client_id: String,
    secret: String,
    vsecs: Api<VaultSecret>,
}

async fn team(client: &kube::Client, doubles: &Doubles, label: &str) -> Team {
    let ns = TempNamespace::create(client).await;
    let sa = format!("{label}-app");
    let client_id = uuid::Uuid::new_v4().to_string();
    let annotated = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(sa.clone()),
            annotations: Some(
                [
                    (CLIENT_ID_ANNOTATION.to_owned(), client_id.clone()),
                    (TENANT_ID_ANNOTATION.to_owned(), env("AZURE_TENANT_ID")),
                ]
                .into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &annotated)
        .await
        .unwrap();
    doubles.federate(&client_id, &ns.name, &sa).await;
    let secret = unique(&format!("{label}-secret"));
    KeyVault::first()
        .set(&secret, &format!("{label}-value"))
        .await;
    doubles.grant(&client_id, &[&secret]).await;
    let vsecs = Api::namespaced(client.clone(), &ns.name);
    Team {
        ns,
        sa,
        client_id,
        secret,
        vsecs,
    }
}

fn spec_as(identity: serde_json::Value, secret: &str) -> serde_json::Value {
    json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "identity": identity, "data": [{"key": "value", "remoteRef": {"name": secret}}]})
}

/// Key Vault let the identity through: the VaultSecret synced.
async fn wait_access_granted(api: &Api<VaultSecret>, name: &str) -> VaultSecret {
    wait_reason(api, name, "Synced").await
}

async fn reason_message(api: &Api<VaultSecret>, name: &str, reason: &str) -> String {
    let vsec = wait_reason(api, name, reason).await;
    outcome(&vsec).unwrap().message.clone()
}

/// No JWT (three base64url parts, the first a JSON header) in `text`.
fn assert_no_token(text: &str, place: &str) {
    let leaked = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .any(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            parts.len() == 3
                && parts[0].starts_with("eyJ")
                && parts[1].len() > 10
                && parts[2].len() > 10
        });
    assert!(!leaked, "a token leaked into {place}");
}

#[tokio::test]
async fn each_team_reads_its_own_secret_and_is_refused_the_others() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let doubles = Doubles::new();
    let a = team(&client, &doubles, "a").await;
    let b = team(&client, &doubles, "b").await;
    let operator_id = operator_identity(&doubles, &[]).await;
    let operator = Operator::start(&format!("{},{}", a.ns.name, b.ns.name), &operator_id, &[]);

    for (team, other) in [(&a, &b), (&b, &a)] {
        let own = vault_secret(
            "own",
            spec_as(json!({"serviceAccountName": team.sa}), &team.secret),
        );
        team.vsecs
            .create(&PostParams::default(), &own)
            .await
            .unwrap();
        let theirs = vault_secret(
            "theirs",
            spec_as(json!({"serviceAccountName": team.sa}), &other.secret),
        );
        team.vsecs
            .create(&PostParams::default(), &theirs)
            .await
            .unwrap();
    }
    for (team, other) in [(&a, &b), (&b, &a)] {
        wait_access_granted(&team.vsecs, "own").await;
        let message = reason_message(&team.vsecs, "theirs", "AccessDenied").await;
        assert!(
            message.contains(&format!("ServiceAccount {}/{}", team.ns.name, team.sa)),
            "{message}"
        );
        assert!(message.contains(&team.client_id), "{message}");
        assert!(message.contains(&other.secret), "{message}");
    }
    // Neither team's reads went out as the operator.
    assert_eq!(doubles.token_requests(&operator_id).await, 0);

    for team in [&a, &b] {
        let events = format!(
            "{:?}{:?}",
            events_of(&client, &team.ns.name, "own").await,
            events_of(&client, &team.ns.name, "theirs").await
        );
        assert_no_token(&events, "Events");
        for name in ["own", "theirs"] {
            assert_no_token(
                &serde_json::to_string(&team.vsecs.get(name).await.unwrap().status).unwrap(),
                "status",
            );
        }
    }
    assert_no_token(&operator.logs(), "the operator log");
}

#[tokio::test]
async fn identity_problems_are_identity_errors_that_name_the_service_account() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let doubles = Doubles::new();
    let t = team(&client, &doubles, "t").await;
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &t.ns.name);
    // Annotated with a client id that has no federated credential for it.
    let unfederated = uuid::Uuid::new_v4().to_string();
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("unfederated".into()),
            annotations: Some([(CLIENT_ID_ANNOTATION.to_owned(), unfederated.clone())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    sas.create(&PostParams::default(), &sa).await.unwrap();
    create_service_account(&client, &t.ns.name, "unannotated").await;
    let operator_id = operator_identity(&doubles, &[]).await;
    let _operator = Operator::start(&t.ns.name, &operator_id, &["--operator-identity=none"]);

    for (name, sa) in [
        ("missing", "does-not-exist"),
        ("unannotated", "unannotated"),
        ("unfederated", "unfederated"),
    ] {
        t.vsecs
            .create(
                &PostParams::default(),
                &vault_secret(name, spec_as(json!({"serviceAccountName": sa}), &t.secret)),
            )
            .await
            .unwrap();
    }
    let message = reason_message(&t.vsecs, "missing", "IdentityError").await;
    assert!(
        message.contains(&format!("ServiceAccount {}/does-not-exist", t.ns.name))
            && message.contains("not found"),
        "{message}"
    );
    let message = reason_message(&t.vsecs, "unannotated", "IdentityError").await;
    assert!(
        message.contains(CLIENT_ID_ANNOTATION) && message.contains("unannotated"),
        "{message}"
    );
    let message = reason_message(&t.vsecs, "unfederated", "IdentityError").await;
    assert!(
        message.contains(&unfederated)
            && message.contains("unfederated")
            && message.contains("700016"),
        "{message}"
    );

    // A changed annotation is noticed: point the working ServiceAccount at the
    // unfederated client id and its VaultSecret turns into an IdentityError.
    // Identities are resolved on every Key Vault read; a 10s refresh makes one happen soon
    // whether or not the first read synced.
    let mut working = spec_as(json!({"serviceAccountName": t.sa}), &t.secret);
    working["refreshInterval"] = json!("10s");
    t.vsecs
        .create(&PostParams::default(), &vault_secret("working", working))
        .await
        .unwrap();
    wait_access_granted(&t.vsecs, "working").await;
    let patch = json!({"metadata": {"annotations": {CLIENT_ID_ANNOTATION: unfederated}}});
    sas.patch(&t.sa, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let message = reason_message(&t.vsecs, "working", "IdentityError").await;
    assert!(message.contains(&unfederated), "{message}");
}

#[tokio::test]
async fn fifty_vault_secrets_sharing_a_service_account_cost_one_token_exchange() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let doubles = Doubles::new();
    let t = team(&client, &doubles, "many").await;
    let operator_id = operator_identity(&doubles, &[]).await;
    let operator = Operator::start(&t.ns.name, &operator_id, &[]);
    for i in 0..50 {
        let vsec = vault_secret(
            &format!("app-{i}"),
            spec_as(json!({"serviceAccountName": t.sa}), &t.secret),
        );
        t.vsecs.create(&PostParams::default(), &vsec).await.unwrap();
    }
    for i in 0..50 {
        wait_access_granted(&t.vsecs, &format!("app-{i}")).await;
    }
    assert_eq!(
        doubles.token_requests(&t.client_id).await,
        1,
        "one token exchange for 50 VaultSecrets"
    );
    let metrics = operator.metrics().await;
    let token_requests = metrics
        .lines()
        .find(|l| l.starts_with("vaultsync_service_account_token_requests_total"))
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        token_requests.split_whitespace().last(),
        Some("1"),
        "one TokenRequest: {token_requests}"
    );
}

#[tokio::test]
async fn a_user_assigned_managed_identity_reads_through_the_app_service_endpoint() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let doubles = Doubles::new();
    let mi = uuid::Uuid::new_v4().to_string();
    let unregistered = uuid::Uuid::new_v4().to_string();
    // Both granted to the namespace (ids compare case-insensitively), so that the managed
    // identity endpoint, not the grant, refuses the unregistered one.
    let granted = format!("{mi}, {}", unregistered.to_uppercase());
    let ns = TempNamespace::create_with_annotations(
        &client,
        &[
            OPERATOR_IDENTITY_GRANT,
            (MANAGED_IDENTITIES_GRANT, &granted),
        ],
    )
    .await;
    let vsecs = Api::<VaultSecret>::namespaced(client.clone(), &ns.name);
    let secret = unique("mi-secret");
    KeyVault::first().set(&secret, "mi-value").await;
    doubles
        .put(&format!("/managed-identities/{mi}"), json!({}))
        .await;
    doubles.grant(&mi, &[&secret]).await;
    let operator_id = operator_identity(&doubles, &[]).await;
    // The flag set through its environment variable, as a Deployment would; `none` refuses
    // the operator's identity even though the namespace grants it.
    let vars = [("VAULTSYNC_OPERATOR_IDENTITY", "none")];
    let _operator = Operator::start_with_env(&ns.name, &operator_id, &[], &vars);
    let operator_spec = json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "data": [{"key": "value", "remoteRef": {"name": secret}}]});
    vsecs
        .create(
            &PostParams::default(),
            &vault_secret("operator", operator_spec),
        )
        .await
        .unwrap();
    let message = reason_message(&vsecs, "operator", "IdentityError").await;
    assert!(message.contains("--operator-identity=none"), "{message}");

    vsecs
        .create(
            &PostParams::default(),
            &vault_secret(
                "mi",
                spec_as(json!({"managedIdentityClientId": mi}), &secret),
            ),
        )
        .await
        .unwrap();
    vsecs
        .create(
            &PostParams::default(),
            &vault_secret(
                "unknown",
                spec_as(json!({"managedIdentityClientId": unregistered}), &secret),
            ),
        )
        .await
        .unwrap();
    wait_access_granted(&vsecs, "mi").await;
    assert!(
        doubles.stats().await["managedIdentityRequests"][&mi]
            .as_u64()
            .unwrap()
            >= 1
    );
    let message = reason_message(&vsecs, "unknown", "IdentityError").await;
    assert!(message.contains(&unregistered), "{message}");
}

// ---- identities are granted, not claimed ---------------------------------------------

/// A spec without `spec.identity`: the operator's own identity.
fn operator_spec(secret: &str) -> serde_json::Value {
    json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "data": [{"key": "value", "remoteRef": {"name": secret}}]})
}

/// Sets (or, with `None`, removes) an annotation of a Namespace, as a cluster
/// administrator would.
async fn annotate_namespace(
    client: &kube::Client,
    namespace: &str,
    key: &str,
    value: Option<&str>,
) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    Api::<Namespace>::all(client.clone())
        .patch(namespace, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_operator_identity_is_used_only_where_the_namespace_grants_it() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let doubles = Doubles::new();
    let granted = TempNamespace::create(&client).await;
    let ungranted = TempNamespace::create_ungranted(&client).await;
    let granted_secret = unique("granted");
    let ungranted_secret = unique("ungranted");
    KeyVault::first()
        .set(&granted_secret, "granted-value")
        .await;
    KeyVault::first()
        .set(&ungranted_secret, "ungranted-value")
        .await;
    // Key Vault would let the operator read both: only the namespace grant stands between.
    let operator_id = operator_identity(&doubles, &[&granted_secret, &ungranted_secret]).await;
    let _operator = Operator::start(
        &format!("{},{}", granted.name, ungranted.name),
        &operator_id,
        &[],
    );
    let granted_vsecs = Api::<VaultSecret>::namespaced(client.clone(), &granted.name);
    let ungranted_vsecs = Api::<VaultSecret>::namespaced(client.clone(), &ungranted.name);
    for (vsecs, secret) in [
        (&granted_vsecs, &granted_secret),
        (&ungranted_vsecs, &ungranted_secret),
    ] {
        vsecs
            .create(
                &PostParams::default(),
                &vault_secret("app", operator_spec(secret)),
            )
            .await
            .unwrap();
    }
    wait_access_granted(&granted_vsecs, "app").await;
    let message = reason_message(&ungranted_vsecs, "app", "IdentityError").await;
    let ns = &ungranted.name;
    assert!(
        message.contains(&format!(
            "namespace '{ns}' is not granted the operator's own identity"
        )) && message.contains("annotation vaultsync.io/operator-identity: \"allowed\"")
            && message.contains(&format!(
                "kubectl annotate namespace {ns} vaultsync.io/operator-identity=allowed --overwrite"
            )),
        "{message}"
    );
    wait_events_of(&client, ns, "app", "a Warning IdentityError", |events| {
        events
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == "IdentityError" && n == &message)
    })
    .await;

    // Granted: the Namespace change brings the VaultSecret back (how soon is not asserted:
    // this machine is shared, and timing belongs to `make bench`).
    assert_eq!(
        doubles.vault_requests("GET", &ungranted_secret).await,
        0,
        "no Key Vault request for a refused identity, on any retry"
    );
    let (key, value) = OPERATOR_IDENTITY_GRANT;
    annotate_namespace(&client, ns, key, Some(value)).await;
    wait_access_granted(&ungranted_vsecs, "app").await;
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns);
    let synced = secret.get("app").await.unwrap().data.unwrap()["value"]
        .0
        .clone();
    assert_eq!(synced, b"ungranted-value");

    // Withdrawn: refused at once, and the Secret keeps its last good data.
    annotate_namespace(&client, ns, key, None).await;
    wait_reason(&ungranted_vsecs, "app", "IdentityError").await;
    assert_eq!(
        secret.get("app").await.unwrap().data.unwrap()["value"].0,
        b"ungranted-value"
    );
}

#[tokio::test]
async fn a_managed_identity_is_used_only_in_namespaces_granted_it() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let doubles = Doubles::new();
    let mi = uuid::Uuid::new_v4().to_string();
    doubles
        .put(&format!("/managed-identities/{mi}"), json!({}))
        .await;
    let granted_secret = unique("mi-granted");
    let ungranted_secret = unique("mi-ungranted");
    KeyVault::first()
        .set(&granted_secret, "granted-value")
        .await;
    KeyVault::first()
        .set(&ungranted_secret, "ungranted-value")
        .await;
    doubles
        .grant(&mi, &[&granted_secret, &ungranted_secret])
        .await;
    // Whitespace around the ids and another case are tolerated.
    let list = format!(" {} , {} ", uuid::Uuid::new_v4(), mi.to_uppercase());
    let granted =
        TempNamespace::create_with_annotations(&client, &[(MANAGED_IDENTITIES_GRANT, &list)]).await;
    // Granted the operator's identity, which grants no managed identity.
    let ungranted = TempNamespace::create(&client).await;
    let operator_id = operator_identity(&doubles, &[]).await;
    let _operator = Operator::start(
        &format!("{},{}", granted.name, ungranted.name),
        &operator_id,
        &[],
    );
    let granted_vsecs = Api::<VaultSecret>::namespaced(client.clone(), &granted.name);
    let ungranted_vsecs = Api::<VaultSecret>::namespaced(client.clone(), &ungranted.name);
    for (vsecs, secret) in [
        (&granted_vsecs, &granted_secret),
        (&ungranted_vsecs, &ungranted_secret),
    ] {
        let spec = spec_as(json!({"managedIdentityClientId": mi}), secret);
        vsecs
            .create(&PostParams::default(), &vault_secret("app", spec))
            .await
            .unwrap();
    }
    wait_access_granted(&granted_vsecs, "app").await;
    let message = reason_message(&ungranted_vsecs, "app", "IdentityError").await;
    let ns = &ungranted.name;
    assert!(
        message.contains(&format!(
            "managed identity {mi} is not granted to namespace '{ns}'"
        )) && message.contains(&format!(
            "kubectl annotate namespace {ns} vaultsync.io/managed-identities={mi} --overwrite"
        )),
        "{message}"
    );
    assert_eq!(
        doubles.vault_requests("GET", &ungranted_secret).await,
        0,
        "no Key Vault request for a managed identity the namespace was not granted"
    );

    annotate_namespace(&client, ns, MANAGED_IDENTITIES_GRANT, Some(&mi)).await;
    wait_access_granted(&ungranted_vsecs, "app").await;
}

#[tokio::test]
async fn the_operator_identity_flag_overrides_namespace_grants() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let doubles = Doubles::new();
    let granted = TempNamespace::create(&client).await;
    let ungranted = TempNamespace::create_ungranted(&client).await;
    let none_secret = unique("policy-none");
    let all_secret = unique("policy-all");
    KeyVault::first().set(&none_secret, "none-value").await;
    KeyVault::first().set(&all_secret, "all-value").await;
    let none_id = operator_identity(&doubles, &[&none_secret]).await;
    let all_id = operator_identity(&doubles, &[&all_secret]).await;
    let _none = Operator::start(&granted.name, &none_id, &["--operator-identity=none"]);
    let _all = Operator::start(&ungranted.name, &all_id, &["--operator-identity", "all"]);
    let granted_vsecs = Api::<VaultSecret>::namespaced(client.clone(), &granted.name);
    let ungranted_vsecs = Api::<VaultSecret>::namespaced(client.clone(), &ungranted.name);
    granted_vsecs
        .create(
            &PostParams::default(),
            &vault_secret("app", operator_spec(&none_secret)),
        )
        .await
        .unwrap();
    ungranted_vsecs
        .create(
            &PostParams::default(),
            &vault_secret("app", operator_spec(&all_secret)),
        )
        .await
        .unwrap();

    // `none` refuses even in a granted namespace ...
    let message = reason_message(&granted_vsecs, "app", "IdentityError").await;
    assert!(message.contains("--operator-identity=none"), "{message}");
    assert_eq!(doubles.vault_requests("GET", &none_secret).await, 0);
    assert_eq!(doubles.token_requests(&none_id).await, 0);
    // ... and `all` allows in an ungranted one.
    wait_access_granted(&ungranted_vsecs, "app").await;
}

/// Whatever a VaultSecret's spec says, it reaches no other namespace: a ServiceAccount name
/// that exists only in another namespace gets no token (the operator asks for the
/// VaultSecret's own namespace's ServiceAccount, which is not there, and Entra is never
/// asked for the other team's client id); a target named like another team's Secret is
/// written in the VaultSecret's own namespace and the other team's Secret is untouched.
/// (Paths and namespace-qualified names are refused at admission: tests/admission_sweep.rs.)
#[tokio::test]
async fn a_vault_secret_reaches_no_other_namespace_whatever_its_spec_says() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let doubles = Doubles::new();
    let a = team(&client, &doubles, "a").await;
    let b = team(&client, &doubles, "b").await;
    // Team b's own Secret, as team b made it.
    let theirs = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &b.ns.name);
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "shared-name"}, "stringData": {"k": "team-b-own-data"},
    }))
    .unwrap();
    let before = theirs
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let operator_id = operator_identity(&doubles, &[]).await;
    let _operator = Operator::start(&format!("{},{}", a.ns.name, b.ns.name), &operator_id, &[]);

    // Team b's ServiceAccount name and team b's Key Vault secret, from team a.
    a.vsecs
        .create(
            &PostParams::default(),
            &vault_secret(
                "borrow",
                spec_as(json!({"serviceAccountName": b.sa}), &b.secret),
            ),
        )
        .await
        .unwrap();
    let message = reason_message(&a.vsecs, "borrow", "IdentityError").await;
    assert!(
        message.contains(&format!("{}/{}", a.ns.name, b.sa)),
        "{message}"
    );
    assert_eq!(doubles.token_requests(&b.client_id).await, 0);

    // Team a's own identity, its target named like team b's Secret.
    let mut spec = spec_as(json!({"serviceAccountName": a.sa}), &a.secret);
    spec["target"] = json!({"name": "shared-name"});
    a.vsecs
        .create(&PostParams::default(), &vault_secret("same-name", spec))
        .await
        .unwrap();
    wait_reason(&a.vsecs, "same-name", "Synced").await;
    let ours = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &a.ns.name);
    assert!(ours.get("shared-name").await.is_ok());
    let after = theirs.get("shared-name").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "team b's Secret was written"
    );
}
