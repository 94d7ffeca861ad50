//! Rollout restarts on the local environment: `spec.rolloutRestartTargets` patched by the
//! real operator when a sync changes the Secret's data, and kube-controller-manager's
//! Deployment controller rolling a new ReplicaSet for it. Restarts are counted by the
//! Deployment's generation and its ReplicaSets, never timed.

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use serde_json::json;
use std::time::Duration;
use vaultsync::api::{RESTARTED_AT_ANNOTATION, ROLLOUT_RESTARTS, VaultSecret};

/// A Deployment of one busybox pod that reads nothing: the Deployment controller rolls it
/// whether or not its pods run.
fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "app",
                        "image": pods_image(),
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "3600"],
                    }],
                },
            },
        },
    }))
    .expect("a Deployment")
}

fn pods_image() -> String {
    std::env::var("VAULTSYNC_TEST_BUSYBOX_IMAGE")
        .unwrap_or_else(|_| "localhost/vaultsync-testenv/busybox:1".into())
}

struct Workloads {
    deployments: Api<Deployment>,
    replica_sets: Api<ReplicaSet>,
}

impl Workloads {
    fn new(s: &Setup) -> Self {
        Self {
            deployments: Api::namespaced(s.client.clone(), &s.ns.name),
            replica_sets: Api::namespaced(s.client.clone(), &s.ns.name),
        }
    }

    /// Creates Deployment `name` and waits for its first ReplicaSet.
    async fn create(&self, name: &str) {
        self.deployments
            .create(&PostParams::default(), &deployment(name))
            .await
            .expect("create the Deployment");
        self.wait_replica_sets(name, 1).await;
    }

    async fn replica_sets(&self, name: &str) -> usize {
        self.replica_sets
            .list(&ListParams::default().labels(&format!("app={name}")))
            .await
            .expect("list ReplicaSets")
            .items
            .len()
    }

    /// Polls until Deployment `name` has `count` ReplicaSets (the bound only keeps a
    /// broken run from hanging).
    async fn wait_replica_sets(&self, name: &str, count: usize) {
        let mut seen = 0;
        for _ in 0..480 {
            seen = self.replica_sets(name).await;
            if seen == count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("Deployment {name} has {seen} ReplicaSets, never {count}");
    }

    async fn generation(&self, name: &str) -> i64 {
        self.deployments
            .get(name)
            .await
            .expect("read the Deployment")
            .metadata
            .generation
            .unwrap_or_default()
    }

    async fn restarted_at(&self, name: &str) -> Option<String> {
        self.deployments
            .get(name)
            .await
            .expect("read the Deployment")
            .spec?
            .template
            .metadata?
            .annotations?
            .get(RESTARTED_AT_ANNOTATION)
            .cloned()
    }
}

fn spec(kv_name: &str, targets: serde_json::Value) -> serde_json::Value {
    json!({
        "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
        "data": [{"key": "password", "remoteRef": {"name": kv_name}}],
        "rolloutRestartTargets": targets,
    })
}

fn restart_condition(vsec: &VaultSecret) -> Option<(String, String, String)> {
    condition_of(vsec, ROLLOUT_RESTARTS)
}

async fn wait_restart_reason(s: &Setup, name: &str, reason: &str) -> VaultSecret {
    wait_for(&s.vsecs, name, reason, |v| {
        restart_condition(v).is_some_and(|(_, r, _)| r == reason)
    })
    .await
}

#[tokio::test]
async fn a_rotation_rolls_the_deployment_once_and_equal_data_never() {
    let s = setup().await;
    let w = Workloads::new(&s);
    let kv_name = unique("rollout");
    let first = unique("first-value");
    let second = unique("second-value");
    let vault = KeyVault::first();
    vault.set(&kv_name, &first).await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let operator = Operator::start(&s.ns.name, &client_id, &["--allow-rollout-restarts"]);
    w.create("web").await;
    create_synced(
        &s.vsecs,
        "app",
        spec(&kv_name, json!([{"kind": "Deployment", "name": "web"}])),
    )
    .await;

    // The first sync restarts nothing.
    let vsec = refresh(&s, "app", "idle-1").await;
    assert!(restart_condition(&vsec).is_none(), "{:?}", vsec.status);
    assert!(vsec.status.unwrap().restarted_data_hash.is_some());
    assert_eq!(w.generation("web").await, 1);
    assert_eq!(w.replica_sets("web").await, 1);

    // A drift repair restores the same data: no restart. The refresh after it is a later
    // reconcile, so a restart wrongly made due would show in its status.
    s.secrets
        .delete("app", &DeleteParams::default())
        .await
        .expect("delete the Secret");
    for _ in 0..480 {
        if s.secrets.get_opt("app").await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let vsec = refresh(&s, "app", "idle-2").await;
    assert!(restart_condition(&vsec).is_none(), "{:?}", vsec.status);
    assert_eq!(w.generation("web").await, 1);

    // A rotation: one restart, and a new ReplicaSet rolled by the Deployment controller.
    vault.set(&kv_name, &second).await;
    refresh(&s, "app", "rotate").await;
    let vsec = wait_restart_reason(&s, "app", "RolloutRestarted").await;
    let (status, _, message) = restart_condition(&vsec).unwrap();
    assert_eq!(status, "True");
    assert!(message.contains("Deployment/web"), "{message}");
    w.wait_replica_sets("web", 2).await;
    assert_eq!(w.generation("web").await, 2);
    let at = w
        .restarted_at("web")
        .await
        .expect("the restartedAt annotation");
    at.parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{at} is RFC 3339: {e}"));
    let events = wait_events_of(
        &s.client,
        &s.ns.name,
        "app",
        "a RolloutRestarted Event",
        |events| {
            events.iter().any(|(t, r, n)| {
                t == "Normal" && r == "RolloutRestarted" && n.contains("Deployment/web")
            })
        },
    )
    .await;
    assert_eq!(
        s.secrets.get("app").await.unwrap().data.unwrap()["password"].0,
        second.as_bytes()
    );

    // An idle refresh after it rolls nothing more.
    let vsec = refresh(&s, "app", "idle-3").await;
    assert_eq!(restart_condition(&vsec).unwrap().1, "RolloutRestarted");
    assert_eq!(w.generation("web").await, 2);
    assert_eq!(w.replica_sets("web").await, 2);

    // No value anywhere the operator reports.
    let reported = format!(
        "{}{events:?}{}",
        serde_json::to_string(&vsec.status).unwrap(),
        operator.logs()
    );
    for value in [&first, &second] {
        assert!(!reported.contains(value.as_str()), "a value leaked");
    }
}

#[tokio::test]
async fn vaultsecrets_rotating_together_restart_a_shared_deployment_once() {
    let s = setup().await;
    let w = Workloads::new(&s);
    let (kv_a, kv_b) = (unique("together-a"), unique("together-b"));
    let vault = KeyVault::first();
    vault.set(&kv_a, "a1").await;
    vault.set(&kv_b, "b1").await;
    let client_id = operator_identity(&s.doubles, &[&kv_a, &kv_b]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &["--allow-rollout-restarts"]);
    w.create("web").await;
    let target = json!([{"kind": "Deployment", "name": "web"}]);
    create_synced(&s.vsecs, "a", spec(&kv_a, target.clone())).await;
    create_synced(&s.vsecs, "b", spec(&kv_b, target)).await;

    vault.set(&kv_a, "a2").await;
    vault.set(&kv_b, "b2").await;
    refresh(&s, "a", "rotate").await;
    refresh(&s, "b", "rotate").await;
    for name in ["a", "b"] {
        let vsec = wait_restart_reason(&s, name, "RolloutRestarted").await;
        assert_eq!(restart_condition(&vsec).unwrap().0, "True");
        wait_events_of(
            &s.client,
            &s.ns.name,
            name,
            "a RolloutRestarted Event",
            |events| {
                events
                    .iter()
                    .any(|(_, r, n)| r == "RolloutRestarted" && n.contains("Deployment/web"))
            },
        )
        .await;
    }
    // Both rotations are served: one restart for the two of them.
    w.wait_replica_sets("web", 2).await;
    assert_eq!(w.generation("web").await, 2);
    assert_eq!(w.replica_sets("web").await, 2);
}

#[tokio::test]
async fn a_missing_target_is_a_warning_and_the_sync_stays_ready() {
    let s = setup().await;
    let w = Workloads::new(&s);
    let kv_name = unique("missing-target");
    let vault = KeyVault::first();
    vault.set(&kv_name, "v1").await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &["--allow-rollout-restarts"]);
    w.create("web").await;
    create_synced(
        &s.vsecs,
        "app",
        spec(
            &kv_name,
            json!([{"kind": "Deployment", "name": "web"}, {"kind": "StatefulSet", "name": "ghost"}]),
        ),
    )
    .await;
    vault.set(&kv_name, "v2").await;
    refresh(&s, "app", "rotate").await;
    let vsec = wait_restart_reason(&s, "app", "RestartTargetNotFound").await;
    let (status, _, message) = restart_condition(&vsec).unwrap();
    assert_eq!(status, "False");
    assert!(message.contains("StatefulSet/ghost"), "{message}");
    // The sync itself succeeded, and the target that exists was restarted.
    let (ready, reason, _) = condition_of(&vsec, "Ready").unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Synced"));
    assert_eq!(condition_of(&vsec, "Refreshed").unwrap().0, "True");
    w.wait_replica_sets("web", 2).await;
    assert_eq!(
        warnings(&s.client, &s.ns.name, "app", "RestartTargetNotFound").await,
        1
    );
}

#[tokio::test]
async fn without_the_flag_nothing_is_patched_and_the_condition_says_why() {
    let s = setup().await;
    let w = Workloads::new(&s);
    let kv_name = unique("not-allowed");
    let vault = KeyVault::first();
    vault.set(&kv_name, "v1").await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    let _operator = Operator::start(&s.ns.name, &client_id, &[]);
    w.create("web").await;
    create_synced(
        &s.vsecs,
        "app",
        spec(&kv_name, json!([{"kind": "Deployment", "name": "web"}])),
    )
    .await;
    let vsec = wait_restart_reason(&s, "app", "RolloutRestartsNotAllowed").await;
    let (status, _, message) = restart_condition(&vsec).unwrap();
    assert_eq!(status, "False");
    assert!(message.contains("--allow-rollout-restarts"), "{message}");
    vault.set(&kv_name, "v2").await;
    let vsec = refresh(&s, "app", "rotate").await;
    assert_eq!(
        restart_condition(&vsec).unwrap().1,
        "RolloutRestartsNotAllowed"
    );
    assert_eq!(
        s.secrets.get("app").await.unwrap().data.unwrap()["password"].0,
        b"v2"
    );
    assert_eq!(w.generation("web").await, 1);
    assert_eq!(w.replica_sets("web").await, 1);
    assert_eq!(
        warnings(&s.client, &s.ns.name, "app", "RolloutRestartsNotAllowed").await,
        1
    );
}

#[tokio::test]
async fn admission_refuses_bad_restart_targets() {
    let s = setup().await;
    let raw: Api<DynamicObject> = Api::namespaced_with(
        s.client.clone(),
        &s.ns.name,
        &ApiResource::erase::<VaultSecret>(&()),
    );
    for (targets, why) in [
        (json!([{"kind": "Pod", "name": "web"}]), "an unknown kind"),
        (
            json!([{"kind": "Deployment", "name": "Web_1"}]),
            "a bad name",
        ),
        (json!([{"kind": "Deployment"}]), "no name"),
        (
            json!([{"kind": "Deployment", "name": "web"}, {"kind": "Deployment", "name": "web"}]),
            "a duplicate",
        ),
    ] {
        // As raw JSON: the Rust types cannot even hold some of these.
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "vaultsync.io/v1alpha1",
            "kind": "VaultSecret",
            "metadata": {"name": "bad"},
            "spec": spec("name", targets),
        }))
        .unwrap();
        let refused = raw.create(&PostParams::default(), &object).await;
        match refused {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 422, "{why}: {status:?}"),
            other => panic!("{why} was admitted: {other:?}"),
        }
    }
    let good = json!([{"kind": "Deployment", "name": "web"}, {"kind": "StatefulSet", "name": "web"}, {"kind": "DaemonSet", "name": "agent.v2"}]);
    s.vsecs
        .create(
            &PostParams::default(),
            &vault_secret("good", spec("name", good)),
        )
        .await
        .expect("valid targets are admitted");
}
