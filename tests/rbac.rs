//! The operator runs with exactly the permissions of `deploy/rbac.yaml` (bound in one
//! namespace, except reading Namespaces, which only a cluster-wide binding allows) and
//! still does its job: watches, reads Secrets, writes status and Events.

mod common;

use common::operator::*;
use common::*;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;
use vaultsync::api::VaultSecret;

/// The object of `kind` in deploy/rbac.yaml.
fn shipped_rbac<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml")).unwrap();
    let doc = text
        .split("\n---")
        .map(|doc| serde_saphyr::from_str::<serde_json::Value>(doc).unwrap())
        .find(|doc| doc["kind"] == kind)
        .unwrap_or_else(|| panic!("a {kind} in deploy/rbac.yaml"));
    serde_json::from_value(doc).unwrap()
}

/// The ClusterRole from deploy/rbac.yaml, under a name of this test run.
async fn apply_cluster_role(client: &kube::Client, name: &str) {
    let mut role: ClusterRole = shipped_rbac("ClusterRole");
    role.metadata.name = Some(name.to_owned());
    Api::<ClusterRole>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("vaultsync-tests").force(),
            &Patch::Apply(&role),
        )
        .await
        .unwrap();
}

/// The shipped ClusterRole's rules on Namespaces alone, as a ClusterRole of this test run
/// bound cluster-wide to the test namespace's `operator`: Namespaces are cluster-scoped,
/// so a RoleBinding cannot grant listing and watching them. Returns a clean-up.
async fn bind_namespace_rules(client: &kube::Client, name: &str, namespace: &str) -> ClusterWide {
    let mut role: ClusterRole = shipped_rbac("ClusterRole");
    role.metadata.name = Some(name.to_owned());
    let rules = role.rules.take().unwrap_or_default();
    role.rules = Some(
        rules
            .into_iter()
            .filter(|r| r.resources.iter().flatten().any(|res| res == "namespaces"))
            .collect(),
    );
    assert!(
        !role.rules.as_ref().unwrap().is_empty(),
        "deploy/rbac.yaml lets the operator read Namespaces"
    );
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    ClusterWide(name.to_owned())
}

/// Deletes the ClusterRole and ClusterRoleBinding of this name when dropped.
struct ClusterWide(String);

impl Drop for ClusterWide {
    fn drop(&mut self) {
        for kind in ["clusterrolebinding", "clusterrole"] {
            let _ = std::process::Command::new("kubectl")
                .args(["delete", kind, &self.0, "--ignore-not-found"])
                .stdout(std::process::Stdio::null())
                .status();
        }
    }
}

/// The leader-election Role of deploy/rbac.yaml, in `namespace`, bound to its `operator`.
async fn apply_leader_election_role(client: &kube::Client, namespace: &str) {
    let mut role: Role = shipped_rbac("Role");
    role.metadata.namespace = Some(namespace.to_owned());
    let name = role.metadata.name.clone().unwrap();
    Api::<Role>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// ClusterRole `role` bound in `namespace` to its ServiceAccount `operator`.
async fn bind_in_namespace(client: &kube::Client, role: &str, namespace: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// A kubeconfig of ServiceAccount `operator` of `ns`, which has exactly the shipped rules:
/// the ClusterRole bound in `ns`, its Namespace rules cluster-wide (dropped with the
/// returned clean-ups, with the ClusterRole).
async fn shipped_operator(
    client: &kube::Client,
    ns: &str,
) -> (std::path::PathBuf, [ClusterWide; 2]) {
    let role = unique("vaultsync-rbac");
    apply_cluster_role(client, &role).await;
    create_service_account(client, ns, "operator").await;
    bind_in_namespace(client, &role, ns).await;
    let namespaces = bind_namespace_rules(client, &unique("vaultsync-rbac-ns"), ns).await;
    let token =
        service_account_token(client, ns, "operator", &env("VAULTSYNC_TEST_SA_ISSUER")).await;
    (
        kubeconfig_for_token(&token),
        [namespaces, ClusterWide(role)],
    )
}

#[tokio::test]
async fn the_operator_works_with_the_shipped_rbac_only() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let ns = TempNamespace::create(&client).await;
    let (kubeconfig, _namespaces) = shipped_operator(&client, &ns.name).await;

    let doubles = Doubles::new();
    let denied = unique("rbac-denied");
    let client_id = operator_identity(&doubles, &["nothing"]).await;
    // Leader election too, under the shipped Role, in the test namespace.
    apply_leader_election_role(&client, &ns.name).await;
    let flags = [
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--leader-election",
        "--leader-election-namespace",
        &ns.name,
    ];
    let _operator = Operator::start(&ns.name, &client_id, &flags);
    let vsecs = Api::<VaultSecret>::namespaced(client.clone(), &ns.name);
    let spec = json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "data": [{"key": "k", "remoteRef": {"name": denied}}]});
    vsecs
        .create(&PostParams::default(), &vault_secret("denied", spec))
        .await
        .unwrap();
    // Status patch and a Warning Event, under the shipped role.
    wait_reason(&vsecs, "denied", "AccessDenied").await;
    // The data-hash key Secret, read or created at start-up in the operator's namespace
    // (here the test namespace), under the shipped role.
    let key = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get(vaultsync::controller::data_hash::KEY_SECRET_NAME)
        .await
        .expect("the operator made its data-hash key under the shipped RBAC");
    assert_eq!(key.data.unwrap()["key"].0.len(), 32);
    wait_events_of(
        &client,
        &ns.name,
        "denied",
        "an AccessDenied Event",
        |events| events.iter().any(|(_, r, _)| r == "AccessDenied"),
    )
    .await;

    // Reading a foreign Secret for the ownership guard, under the shipped role.
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("taken".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let spec = json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "data": [{"key": "k", "remoteRef": {"name": denied}}], "target": {"name": "taken"}});
    vsecs
        .create(&PostParams::default(), &vault_secret("conflict", spec))
        .await
        .unwrap();
    wait_reason(&vsecs, "conflict", "OwnershipConflict").await;

    // A ServiceAccount identity: reading its annotations and requesting its token.
    let sa_client_id = uuid::Uuid::new_v4().to_string();
    let sa: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": "app", "annotations": {"azure.workload.identity/client-id": sa_client_id}},
    }))
    .unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    doubles.federate(&sa_client_id, &ns.name, "app").await;
    let spec = json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "identity": {"serviceAccountName": "app"},
                      "data": [{"key": "k", "remoteRef": {"name": denied}}]});
    vsecs
        .create(&PostParams::default(), &vault_secret("as-sa", spec))
        .await
        .unwrap();
    // AccessDenied (no grant for this client id) means the token exchange succeeded.
    let vsec = wait_reason(&vsecs, "as-sa", "AccessDenied").await;
    assert!(
        vsec.ready_condition()
            .unwrap()
            .message
            .contains(&sa_client_id)
    );
    assert_eq!(doubles.token_requests(&sa_client_id).await, 1);
    let _ = std::fs::remove_file(kubeconfig);
}

#[tokio::test]
async fn the_shipped_manifests_are_accepted_by_the_api_server() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let client = kube_client().await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
    let mut checked = 0;
    for file in ["rbac.yaml", "operator.yaml"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        for doc in text.split("\n---") {
            let object: DynamicObject =
                serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
            let types = object.types.clone().expect("apiVersion and kind");
            let (group, version) = types
                .api_version
                .split_once('/')
                .unwrap_or(("", &types.api_version));
            let resource =
                ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &types.kind));
            // Dry-run server-side apply validates against the real schema without storing.
            let api: Api<DynamicObject> = match object.metadata.namespace.as_deref() {
                Some(_) => Api::namespaced_with(client.clone(), "default", &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            let mut object = object;
            object.metadata.namespace = object
                .metadata
                .namespace
                .as_ref()
                .map(|_| "default".to_owned());
            let name = object.metadata.name.clone().unwrap();
            let params = PatchParams::apply("vaultsync-tests").dry_run();
            api.patch(&name, &params, &Patch::Apply(&object))
                .await
                .unwrap_or_else(|e| panic!("{file} {}: {e}", types.kind));
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}

/// A watch that stays broken fails `/livez`: the operator may list VaultSecrets but not
/// watch them (a permission removed for real on the API server), so its VaultSecret watch
/// fails again and again; past the threshold (2 s here, `--watch-failure-threshold-seconds`)
/// `/livez` answers 503 naming the watch. With the permission back, the watch works
/// again and `/livez` answers 200.
#[tokio::test]
async fn a_watch_that_stays_broken_fails_livez_until_it_works_again() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let ns = TempNamespace::create(&client).await;
    let role = unique("vaultsync-nowatch");
    let _role = ClusterWide(role.clone());
    apply_cluster_role(&client, &role).await;
    // The shipped rules, without `watch` on VaultSecrets.
    let roles = Api::<ClusterRole>::all(client.clone());
    let mut crippled = roles.get(&role).await.unwrap();
    let shipped_rules = crippled.rules.clone().unwrap_or_default();
    for rule in crippled.rules.iter_mut().flatten() {
        if rule.resources.iter().flatten().any(|r| r == "vaultsecrets") {
            rule.verbs.retain(|v| v != "watch");
        }
    }
    roles
        .replace(&role, &PostParams::default(), &crippled)
        .await
        .unwrap();
    create_service_account(&client, &ns.name, "operator").await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "vaultsync"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns.name}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let _namespaces =
        bind_namespace_rules(&client, &unique("vaultsync-nowatch-ns"), &ns.name).await;
    let token = service_account_token(
        &client,
        &ns.name,
        "operator",
        &env("VAULTSYNC_TEST_SA_ISSUER"),
    )
    .await;
    let kubeconfig = kubeconfig_for_token(&token);
    let doubles = Doubles::new();
    let client_id = operator_identity(&doubles, &["nothing"]).await;
    let flags = [
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--leader-election-namespace",
        &ns.name,
        "--watch-failure-threshold-seconds",
        "2",
    ];
    let operator = Operator::start(&ns.name, &client_id, &flags);
    let mut livez = (0, String::new());
    for _ in 0..480 {
        livez = operator.livez().await;
        if livez.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(livez.0, 503, "{livez:?}");
    assert!(livez.1.contains("VaultSecrets"), "{livez:?}");
    assert!(
        operator.logs().contains("watch failed"),
        "watch errors are logged as warnings"
    );

    // The permission back: the next watch works, and its first event shows it.
    crippled.rules = Some(shipped_rules);
    crippled.metadata.resource_version = None;
    roles
        .replace(&role, &PostParams::default(), &crippled)
        .await
        .unwrap();
    let vsecs = Api::<VaultSecret>::namespaced(client.clone(), &ns.name);
    let spec = json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "data": [{"key": "k", "remoteRef": {"name": "anything"}}]});
    vsecs
        .create(&PostParams::default(), &vault_secret("touched", spec))
        .await
        .unwrap();
    for i in 0..480 {
        livez = operator.livez().await;
        if livez.0 == 200 {
            break;
        }
        // Events for the watch to deliver once it runs again.
        let patch = json!({"metadata": {"labels": {"touch": i.to_string()}}});
        vsecs
            .patch("touched", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(livez.0, 200, "{livez:?}");
    let _ = std::fs::remove_file(kubeconfig);
}

/// The opt-in rule of `deploy/components/rollout-restarts/rbac.yaml` (the chart's
/// `rolloutRestarts.enabled`) is all the operator needs beyond the shipped rules to
/// restart a workload, and without it the restart is refused and reported, the sync intact.
#[tokio::test]
async fn rollout_restarts_work_with_the_opt_in_rule_and_are_refused_without_it() {
    use k8s_openapi::api::apps::v1::Deployment;
    let client = kube_client().await;
    ensure_crd(&client).await;
    let ns = TempNamespace::create(&client).await;
    let (kubeconfig, _cleanup) = shipped_operator(&client, &ns.name).await;
    let doubles = Doubles::new();
    let kv_name = unique("rbac-restart");
    let vault = common::keyvault::KeyVault::first();
    vault.set(&kv_name, "v1").await;
    let client_id = operator_identity(&doubles, &[&kv_name]).await;
    let flags = [
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--leader-election-namespace",
        &ns.name,
        "--allow-rollout-restarts",
        "--rollout-restart-window-seconds",
        "1",
    ];
    let _operator = Operator::start(&ns.name, &client_id, &flags);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "none", "imagePullPolicy": "Never"}]}}},
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let vsecs = Api::<VaultSecret>::namespaced(client.clone(), &ns.name);
    let spec = json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
                      "data": [{"key": "k", "remoteRef": {"name": kv_name}}],
                      "rolloutRestartTargets": [{"kind": "Deployment", "name": "web"}]});
    vsecs
        .create(&PostParams::default(), &vault_secret("app", spec))
        .await
        .unwrap();
    wait_reason(&vsecs, "app", "Synced").await;
    let rotate = |value: &'static str, refresh: &'static str| {
        let (vault, vsecs, kv_name) = (&vault, &vsecs, &kv_name);
        async move {
            vault.set(kv_name, value).await;
            vsecs
                .patch(
                    "app",
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"vaultsync.io/refresh": refresh}}}),
                    ),
                )
                .await
                .unwrap();
        }
    };
    let restart_reason = |reason: &'static str| {
        move |v: &VaultSecret| {
            condition_of(v, vaultsync::api::ROLLOUT_RESTARTS).is_some_and(|(_, r, _)| r == reason)
        }
    };

    // The shipped rules alone: the patch is refused (403), reported, the sync stays Ready.
    rotate("v2", "1").await;
    let vsec = wait_for(
        &vsecs,
        "app",
        "RolloutRestartFailed",
        restart_reason("RolloutRestartFailed"),
    )
    .await;
    let (_, _, message) = condition_of(&vsec, vaultsync::api::ROLLOUT_RESTARTS).unwrap();
    assert!(message.contains("403"), "{message}");
    assert_eq!(condition_of(&vsec, "Ready").unwrap().0, "True");
    assert_eq!(
        deployments.get("web").await.unwrap().metadata.generation,
        Some(1)
    );

    // With the opt-in rule: the next change restarts the Deployment.
    let mut opt_in: ClusterRole = serde_saphyr::from_str(
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/components/rollout-restarts/rbac.yaml"
        ))
        .unwrap()
        .split("\n---")
        .next()
        .unwrap(),
    )
    .unwrap();
    let role = unique("vaultsync-rollout");
    opt_in.metadata.name = Some(role.clone());
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &opt_in)
        .await
        .unwrap();
    let _role = ClusterWide(role.clone());
    bind_in_namespace(&client, &role, &ns.name).await;
    rotate("v3", "2").await;
    wait_for(
        &vsecs,
        "app",
        "RolloutRestarted",
        restart_reason("RolloutRestarted"),
    )
    .await;
    assert_eq!(
        deployments.get("web").await.unwrap().metadata.generation,
        Some(2)
    );
    let _ = std::fs::remove_file(kubeconfig);
}

/// Whether the caller of `client` may do `verb` on `resource` (a SelfSubjectAccessReview:
/// the API server's own answer for that identity, the same one every request gets).
async fn may(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    subresource: &str,
    namespace: &str,
) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: Some(subresource.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("a SelfSubjectAccessReview")
        .status
        .expect("a review status")
        .allowed
}

/// The shipped ClusterRole, bound cluster-wide as deploy/rbac.yaml binds it, grants what the
/// operator uses and nothing else that could widen a breach: every operation below is one
/// a compromised operator would want, and the API server refuses each. The first list is
/// what the operator needs (so the review itself is shown to answer "yes").
#[tokio::test]
async fn the_shipped_rbac_refuses_what_the_operator_does_not_need() {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let ns = TempNamespace::create(&client).await;
    let other = TempNamespace::create(&client).await;
    let role = unique("vaultsync-least");
    apply_cluster_role(&client, &role).await;
    create_service_account(&client, &ns.name, "operator").await;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns.name}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let _cleanup = ClusterWide(role.clone());
    apply_leader_election_role(&client, &ns.name).await;
    let operator = client_as_service_account(&client, &ns.name, "operator").await;
    let o = other.name.as_str();

    let needed = [
        ("watch", "vaultsync.io", "vaultsecrets", ""),
        ("patch", "vaultsync.io", "vaultsecrets", "status"),
        ("patch", "", "secrets", ""),
        ("create", "", "serviceaccounts", "token"),
        ("create", "events.k8s.io", "events", ""),
    ];
    for (verb, group, resource, sub) in needed {
        assert!(
            may(&operator, verb, group, resource, sub, o).await,
            "the operator needs {verb} {resource}/{sub}"
        );
    }
    let refused = [
        // The VaultSecret spec is the user's: the operator never edits or deletes it.
        ("update", "vaultsync.io", "vaultsecrets", ""),
        ("patch", "vaultsync.io", "vaultsecrets", ""),
        ("create", "vaultsync.io", "vaultsecrets", ""),
        ("delete", "vaultsync.io", "vaultsecrets", ""),
        ("update", "vaultsync.io", "vaultsecrets", "status"),
        // Secrets: server-side apply only; never a bulk delete.
        ("update", "", "secrets", ""),
        ("deletecollection", "", "secrets", ""),
        // ServiceAccounts: read one's annotations, never list, change or make them.
        ("list", "", "serviceaccounts", ""),
        ("create", "", "serviceaccounts", ""),
        ("patch", "", "serviceaccounts", ""),
        ("delete", "", "serviceaccounts", ""),
        // Workloads and their data: nothing.
        ("get", "", "configmaps", ""),
        ("list", "", "pods", ""),
        ("create", "", "pods", ""),
        ("create", "", "pods", "exec"),
        ("patch", "apps", "deployments", ""),
        ("create", "batch", "jobs", ""),
        // Events through the old API only; never edited or removed.
        ("create", "", "events", ""),
        ("delete", "events.k8s.io", "events", ""),
        // No way to widen its own rights or act as someone else.
        ("create", "rbac.authorization.k8s.io", "rolebindings", ""),
        ("create", "rbac.authorization.k8s.io", "roles", ""),
        ("escalate", "rbac.authorization.k8s.io", "roles", ""),
        ("bind", "rbac.authorization.k8s.io", "clusterroles", ""),
        ("impersonate", "", "serviceaccounts", ""),
        (
            "create",
            "certificates.k8s.io",
            "certificatesigningrequests",
            "",
        ),
        ("create", "authentication.k8s.io", "tokenreviews", ""),
        // Namespaces are read for their grants, never changed (an annotation is a grant).
        ("patch", "", "namespaces", ""),
        ("update", "", "namespaces", ""),
        ("delete", "", "namespaces", ""),
        // Leader election: its own Lease, in its own namespace only.
        ("get", "coordination.k8s.io", "leases", ""),
        ("update", "coordination.k8s.io", "leases", ""),
    ];
    let mut granted = Vec::new();
    for (verb, group, resource, sub) in refused {
        if may(&operator, verb, group, resource, sub, o).await {
            granted.push(format!("{verb} {group}/{resource}/{sub} in {o}"));
        }
    }
    // Cluster-scoped objects that would switch off a guard or change the API.
    for (verb, group, resource) in [
        (
            "update",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
        ),
        (
            "delete",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
        ),
        (
            "delete",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
        ),
        (
            "update",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicybindings",
        ),
        (
            "create",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
        ),
        ("list", "", "nodes"),
        ("create", "rbac.authorization.k8s.io", "clusterrolebindings"),
    ] {
        if may(&operator, verb, group, resource, "", "").await {
            granted.push(format!("{verb} {group}/{resource}"));
        }
    }
    assert!(
        granted.is_empty(),
        "the shipped RBAC grants what the operator does not need:\n{}",
        granted.join("\n")
    );

    // And for real, not only as reviews: the API server refuses the requests themselves.
    use k8s_openapi::api::core::v1::ConfigMap;
    let forbidden = |e: kube::Error| matches!(e, kube::Error::Api(ref s) if s.code == 403);
    let configmaps = Api::<ConfigMap>::namespaced(operator.clone(), o);
    assert!(forbidden(
        configmaps.list(&Default::default()).await.unwrap_err()
    ));
    let rolebinding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "widen"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns.name}],
    }))
    .unwrap();
    let rolebindings = Api::<RoleBinding>::namespaced(operator.clone(), o);
    assert!(forbidden(
        rolebindings
            .create(&PostParams::default(), &rolebinding)
            .await
            .unwrap_err()
    ));
    let vsecs = Api::<VaultSecret>::namespaced(client.clone(), o);
    let spec = json!({"vaultUrl": "https://my-vault.vault.azure.net", "data": [{"key": "k", "remoteRef": {"name": "s"}}]});
    vsecs
        .create(&PostParams::default(), &vault_secret("users", spec))
        .await
        .unwrap();
    let as_operator = Api::<VaultSecret>::namespaced(operator.clone(), o);
    let edit = json!({"spec": {"target": {"name": "elsewhere"}}});
    assert!(forbidden(
        as_operator
            .patch("users", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .unwrap_err()
    ));
    assert!(forbidden(
        as_operator
            .delete("users", &Default::default())
            .await
            .unwrap_err()
    ));
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(operator.clone());
    let grant = json!({"metadata": {"annotations": {OPERATOR_IDENTITY_GRANT.0: "allowed"}}});
    assert!(forbidden(
        namespaces
            .patch(o, &PatchParams::default(), &Patch::Merge(&grant))
            .await
            .unwrap_err()
    ));
    println!(
        "least privilege: {} needed operations allowed, {} unneeded refused as reviews, 5 refused as requests",
        needed.len(),
        refused.len() + 7
    );
}
