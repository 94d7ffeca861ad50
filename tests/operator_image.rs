//! The operator's image (`make image`, imported into the node's containerd) running as the
//! chart's Deployment on the environment's node: the chart's ServiceAccount, RBAC, probes
//! and leader election, its own workload identity from a projected token, and the
//! environment's CA from a ConfigMap. It syncs the article's secret; when its pod is
//! deleted, the replacement pod takes the Lease over and keeps syncing.
//!
//! The pod uses the host's network: the environment's API server and Azure doubles listen
//! on loopback only, and the node has no service proxy. One node and the host's network
//! leave room for one replica (both would bind the same health port), so the chart runs
//! with `replicas=1` here.

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/charts/vaultsync");

fn helm(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/build-helm.sh");
    let binary = Command::new(script).output().expect("run build-helm.sh");
    assert!(binary.status.success(), "hack/build-helm.sh failed");
    let binary = String::from_utf8(binary.stdout).unwrap().trim().to_owned();
    let output = Command::new(binary).args(args).output().expect("run helm");
    assert!(
        output.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The chart's release; uninstalled when dropped, also when the test fails, since its
/// cluster-scoped objects outlive the namespace.
struct Release {
    name: String,
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "\"$({}/hack/build-helm.sh)\" uninstall {} --namespace {}",
                env!("CARGO_MANIFEST_DIR"),
                self.name,
                self.namespace
            ))
            .stdout(Stdio::null())
            .status();
    }
}

/// The one pod of the release that is running and ready, other than `except`.
async fn running_pod(pods: &Api<Pod>, ns: &str, release: &str, except: Option<&str>) -> String {
    let selector = format!("app.kubernetes.io/instance={release}");
    for _ in 0..480 {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("list the release's pods");
        for pod in list.items {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if Some(name.as_str()) == except || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let status = pod.status.unwrap_or_default();
            let ready = status
                .container_statuses
                .unwrap_or_default()
                .iter()
                .any(|c| c.ready);
            if ready {
                return name;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let described = Command::new("kubectl")
        .args(["describe", "pods", "-n", ns, "-l", &selector])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    panic!("no ready pod of release {release}:\n{described}");
}

async fn lease_holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .expect("read the Lease")
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

async fn wait_lease_holder(leases: &Api<Lease>, name: &str, holder: &str) {
    let mut last = None;
    for _ in 0..480 {
        last = lease_holder(leases, name).await;
        if last.as_deref() == Some(holder) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Lease {name} never held by {holder}; last holder: {last:?}");
}

async fn wait_secret_value(s: &Setup, name: &str, key: &str, want: &str) {
    for _ in 0..480 {
        let value = s
            .secrets
            .get_opt(name)
            .await
            .expect("read the Secret")
            .and_then(|secret| secret.data)
            .and_then(|data| data.get(key).cloned());
        if value.as_ref().map(|v| v.0.as_slice()) == Some(want.as_bytes()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Secret {name} key {key} never got the expected value");
}

#[tokio::test]
async fn the_image_runs_as_the_charts_deployment_syncs_and_hands_the_lease_over() {
    let s = setup().await;
    let ns = s.ns.name.clone();
    let release = unique("vaultsync");

    // The article's secret, under a name of this test's own: tests share the vault.
    let kv_name = unique("ExampleSecret");
    let first = format!("MyAKSExampleSecret-{}", unique("v1"));
    let second = format!("MyAKSExampleSecret-{}", unique("v2"));
    let vault = KeyVault::first();
    vault.set(&kv_name, &first).await;

    // The release's ServiceAccount (named after the release) is the operator's identity.
    let client_id = uuid::Uuid::new_v4().to_string();
    s.doubles.federate(&client_id, &ns, &release).await;
    s.doubles.grant(&client_id, &[&kv_name]).await;

    let ca = ConfigMap {
        metadata: ObjectMeta {
            name: Some("testenv-ca".into()),
            ..Default::default()
        },
        data: Some([("ca.crt".to_owned(), String::from_utf8(ca_pem()).unwrap())].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(s.client.clone(), &ns)
        .create(&PostParams::default(), &ca)
        .await
        .expect("create the CA ConfigMap");

    let health_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let extra_env = json!([
        {"name": "VAULTSYNC_SKIP_CHALLENGE_VERIFICATION_FOR", "value": env("VAULTSYNC_SKIP_CHALLENGE_VERIFICATION_FOR")},
        // No service proxy on this node: the API server where it listens.
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": env("VAULTSYNC_TEST_API_PORT")},
    ])
    .to_string();
    let sets = [
        "image.pullPolicy=Never".to_owned(),
        format!("watchNamespaces={{{ns}}}"),
        "operatorIdentity.workloadIdentity.injectedByWebhook=false".to_owned(),
        format!("operatorIdentity.clientId={client_id}"),
        format!("operatorIdentity.tenantId={}", env("AZURE_TENANT_ID")),
        format!(
            "operatorIdentity.workloadIdentity.authorityHost={}",
            env("AZURE_AUTHORITY_HOST")
        ),
        "extraCA.configMap.name=testenv-ca".to_owned(),
        "extraVaultSuffixes={127.0.0.1,localhost}".to_owned(),
        format!("healthPort={health_port}"),
        "leaderElection.leaseSeconds=15".to_owned(),
    ];
    let mut args = vec!["install", &release, CHART, "--namespace", &ns];
    for set in &sets {
        args.extend(["--set", set]);
    }
    let extra_env = format!("extraEnv={extra_env}");
    args.extend(["--set-json", &extra_env]);
    // Created with no pod, then given the host's network (not a chart value) and one.
    args.extend(["--set", "replicas=0"]);
    helm(&args);
    let _release = Release {
        name: release.clone(),
        namespace: ns.clone(),
    };
    let patched = Command::new("kubectl")
        .args([
            "patch",
            "deployment",
            &release,
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":1,"template":{"spec":{"hostNetwork":true}}}}"#,
        ])
        .output()
        .expect("run kubectl");
    assert!(
        patched.status.success(),
        "{}",
        String::from_utf8_lossy(&patched.stderr)
    );

    let pods = Api::<Pod>::namespaced(s.client.clone(), &ns);
    let leases = Api::<Lease>::namespaced(s.client.clone(), &ns);
    // Ready means the readiness probe on the image's health server answered.
    let leader = running_pod(&pods, &ns, &release, None).await;
    let pod = pods.get(&leader).await.unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some(format!("vaultsync:{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(
        spec.node_name.as_deref(),
        Some(env("VAULTSYNC_TEST_NODE").as_str())
    );
    wait_lease_holder(&leases, &release, &leader).await;

    s.vsecs
        .create(
            &PostParams::default(),
            &vault_secret(
                "example-secret",
                json!({
                    "vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"),
                    "refreshInterval": "10s",
                    "data": [{"key": "password", "remoteRef": {"name": kv_name}}],
                }),
            ),
        )
        .await
        .expect("create the VaultSecret");
    wait_ready(&s.vsecs, "example-secret", "Ready", |status, _, _| {
        status == "True"
    })
    .await;
    wait_secret_value(&s, "example-secret", "password", &first).await;

    // The leader's pod goes: it releases the Lease on SIGTERM, the Deployment's new pod
    // takes it and syncs the next rotation.
    pods.delete(&leader, &DeleteParams::default())
        .await
        .expect("delete the leading pod");
    let successor = running_pod(&pods, &ns, &release, Some(&leader)).await;
    wait_lease_holder(&leases, &release, &successor).await;
    vault.set(&kv_name, &second).await;
    wait_secret_value(&s, "example-secret", "password", &second).await;
}
