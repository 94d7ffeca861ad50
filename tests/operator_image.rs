//! The operator's image (`make image`, imported into the node's containerd) running as the
//! Deployment the chart installs on the environment's node: two replicas with leader
//! election, the chart's ServiceAccount, RBAC and probes, its own workload identity from a
//! projected token, and the environment's CA from a ConfigMap. It syncs the article's
//! secret; when the leading pod is deleted, another replica (the running standby or the
//! Deployment's replacement) takes the Lease over and keeps syncing.
//!
//! The pods run on the pods' network, each with its own address (so both replicas serve
//! their probes on the chart's port): they reach the API server and the Azure doubles at the
//! host's address on their bridge (`VAULTSYNC_TEST_POD_GATEWAY`, hack/testenv-node.sh), as a
//! cluster's pods reach its API server and Azure.

mod common;

use common::helm::Release;
use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// The release's pods that are ready and not being deleted, as `(name, pod IP)`, once
/// there are `count` of them.
async fn ready_pods(
    pods: &Api<Pod>,
    ns: &str,
    release: &str,
    count: usize,
) -> Vec<(String, String)> {
    let selector = format!("app.kubernetes.io/instance={release}");
    for _ in 0..480 {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("list the release's pods");
        let ready: Vec<(String, String)> = list
            .items
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter_map(|pod| {
                let status = pod.status?;
                let ready = status
                    .container_statuses
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.ready);
                ready.then(|| {
                    (
                        pod.metadata.name.unwrap_or_default(),
                        status.pod_ip.unwrap_or_default(),
                    )
                })
            })
            .collect();
        if ready.len() == count {
            return ready;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let described = Command::new("kubectl")
        .args(["describe", "pods", "-n", ns, "-l", &selector])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    panic!("release {release} never had {count} ready pods:\n{described}");
}

/// A `/metrics` counter of the pod at `ip`, read from the host over the pods' network.
async fn pod_metric(ip: &str, line_start: &str) -> u64 {
    // Straight to the pod: a proxy from the environment must not carry this.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{ip}:8080/metrics");
    let text = client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .expect("metrics text");
    metric(&text, line_start)
}

/// `url` with its host replaced by the pods' gateway, where pods reach the same service.
fn from_pods(url: &str, gateway: &str) -> String {
    url.replacen("127.0.0.1", gateway, 1)
}

async fn lease_holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .expect("read the Lease")
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Waits until a replica other than `former` holds the Lease, and names it.
async fn wait_lease_taken_over(leases: &Api<Lease>, name: &str, former: &str) -> String {
    let mut last = None;
    for _ in 0..480 {
        last = lease_holder(leases, name).await;
        if let Some(holder) = last.as_deref().filter(|h| !h.is_empty() && *h != former) {
            return holder.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Lease {name} never left {former}; last holder: {last:?}");
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
async fn the_image_runs_as_the_charts_two_replicas_syncs_and_another_replica_takes_over() {
    let s = setup().await;
    let ns = s.ns.name.clone();
    let release = unique("vaultsync");
    let gateway = env("VAULTSYNC_TEST_POD_GATEWAY");
    let api_port = env("VAULTSYNC_TEST_API_PORT");
    // The vault gateway and Entra as pods reach them; the test seeds the same vault.
    let vault_url = from_pods(&env("VAULTSYNC_TEST_VAULT_URL"), &gateway);
    let authority = from_pods(&env("AZURE_AUTHORITY_HOST"), &gateway);
    let vault_host = vault_url
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let port_of = |url: &str| {
        url.rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_owned()
    };

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

    let extra_env = json!([
        // Only for the emulator behind the gateway, whose host never passes the check.
        {"name": "VAULTSYNC_SKIP_CHALLENGE_VERIFICATION_FOR", "value": vault_host},
        // No service proxy on this node: the API server where pods reach it.
        {"name": "KUBERNETES_SERVICE_HOST", "value": gateway},
        {"name": "KUBERNETES_SERVICE_PORT", "value": api_port},
    ])
    .to_string();
    // The chart's defaults otherwise: two replicas, leader election, probes on 8080.
    let sets = [
        "image.pullPolicy=Never".to_owned(),
        format!("watchNamespaces={{{ns}}}"),
        "operatorIdentity.workloadIdentity.injectedByWebhook=false".to_owned(),
        format!("operatorIdentity.clientId={client_id}"),
        format!("operatorIdentity.tenantId={}", env("AZURE_TENANT_ID")),
        format!("operatorIdentity.workloadIdentity.authorityHost={authority}"),
        "extraCA.configMap.name=testenv-ca".to_owned(),
        format!("extraVaultSuffixes={{{gateway}}}"),
        format!(
            "networkPolicy.egressPorts={{{api_port},{},{}}}",
            port_of(&authority),
            port_of(&vault_url)
        ),
    ];
    let mut args = vec![];
    for set in &sets {
        args.extend(["--set", set.as_str()]);
    }
    let extra_env = format!("extraEnv={extra_env}");
    args.extend(["--set-json", &extra_env]);
    let _release = Release::install(&release, &ns, &args);

    let pods = Api::<Pod>::namespaced(s.client.clone(), &ns);
    let leases = Api::<Lease>::namespaced(s.client.clone(), &ns);
    // Ready means each pod's own readiness probe answered: the leader once its caches
    // synced, the standby once it read the Lease.
    let replicas = ready_pods(&pods, &ns, &release, 2).await;
    assert_ne!(
        replicas[0].1, replicas[1].1,
        "each replica has an address of its own"
    );
    for (name, _) in &replicas {
        let spec = pods.get(name).await.unwrap().spec.unwrap();
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some(format!("vaultsync:{}", env!("CARGO_PKG_VERSION")).as_str())
        );
        assert_eq!(spec.host_network, None, "pods on the pods' network");
        assert_eq!(
            spec.node_name.as_deref(),
            Some(env("VAULTSYNC_TEST_NODE").as_str())
        );
    }
    let mut leader = None;
    for _ in 0..480 {
        leader = lease_holder(&leases, &release).await;
        if leader
            .as_ref()
            .is_some_and(|l| replicas.iter().any(|(n, _)| n == l))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let leader = leader.expect("a replica holds the Lease");
    let (leader_ip, standby, standby_ip) = if replicas[0].0 == leader {
        (
            replicas[0].1.clone(),
            replicas[1].0.clone(),
            replicas[1].1.clone(),
        )
    } else {
        (
            replicas[1].1.clone(),
            replicas[0].0.clone(),
            replicas[0].1.clone(),
        )
    };

    create_synced(
        &s.vsecs,
        "example-secret",
        json!({
            "vaultUrl": vault_url,
            "refreshInterval": "10s",
            "data": [{"key": "password", "remoteRef": {"name": kv_name}}],
        }),
    )
    .await;
    wait_secret_value(&s, "example-secret", "password", &first).await;
    // The leader wrote it; the standby, which also runs, wrote nothing.
    const WRITES: &str = "vaultsync_secret_writes_total ";
    assert!(pod_metric(&leader_ip, WRITES).await >= 1);
    assert_eq!(pod_metric(&standby_ip, WRITES).await, 0);

    // The leader's pod goes: it releases the Lease on SIGTERM. The running standby and the
    // Deployment's replacement pod are then both candidates; whichever asks first after the
    // release takes it (the standby asks every retry period, the replacement as it starts),
    // and that replica syncs the next rotation.
    pods.delete(&leader, &DeleteParams::default())
        .await
        .expect("delete the leading pod");
    let successor = wait_lease_taken_over(&leases, &release, &leader).await;
    let successor_ip = if successor == standby {
        standby_ip
    } else {
        ready_pods(&pods, &ns, &release, 2)
            .await
            .into_iter()
            .find(|(name, _)| *name == successor)
            .map(|(_, ip)| ip)
            .unwrap_or_else(|| panic!("the new leader {successor} is not a ready pod"))
    };
    eprintln!(
        "the Lease went from {leader} to {successor} ({})",
        if successor == standby {
            "the running standby"
        } else {
            "the Deployment's replacement pod"
        }
    );
    vault.set(&kv_name, &second).await;
    wait_secret_value(&s, "example-secret", "password", &second).await;
    assert!(pod_metric(&successor_ip, WRITES).await >= 1);
}
