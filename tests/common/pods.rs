//! Pods on the environment's node (hack/testenv-node.sh): images are imported locally, so
//! every container uses `imagePullPolicy: Never`.

use super::*;
use k8s_openapi::api::core::v1::Pod;
use std::process::Command;
use std::time::Duration;

/// The busybox image the environment imported into the node's containerd.
pub fn busybox_image() -> String {
    env("VAULTSYNC_TEST_BUSYBOX_IMAGE")
}

/// Where [`secret_reader`] mounts the Secret, as the article's pod does.
pub const SECRET_MOUNT: &str = "/mnt/secrets-store";
/// The environment variable [`secret_reader`] takes from the Secret.
pub const SECRET_ENV: &str = "EXAMPLE_SECRET";

/// A pod that reads key `key` of Secret `secret` as environment variable [`SECRET_ENV`]
/// and as file `SECRET_MOUNT/key`, and otherwise sleeps. busybox's `sleep` ignores
/// SIGTERM as PID 1, so the grace period is one second.
pub fn secret_reader(name: &str, secret: &str, key: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "reader",
                "image": busybox_image(),
                "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
                "env": [{"name": SECRET_ENV, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}],
                "volumeMounts": [{"name": "secret", "mountPath": SECRET_MOUNT, "readOnly": true}],
            }],
            "volumes": [{"name": "secret", "secret": {"secretName": secret}}],
        },
    }))
    .expect("a Pod")
}

/// Polls until pod `name` is Running with every container ready; panics with its status
/// when it fails or the bound (which only keeps a broken run from hanging) passes.
pub async fn wait_running(pods: &Api<Pod>, name: &str) -> Pod {
    let mut last = None;
    for _ in 0..480 {
        if let Some(pod) = pods.get_opt(name).await.expect("read the Pod") {
            let status = pod.status.clone().unwrap_or_default();
            let ready = status
                .container_statuses
                .as_ref()
                .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready));
            if status.phase.as_deref() == Some("Running") && ready {
                return pod;
            }
            assert_ne!(
                status.phase.as_deref(),
                Some("Failed"),
                "pod {name} failed: {status:?}"
            );
            last = Some(status);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("pod {name} never ran; last status: {last:?}");
}

/// `kubectl exec` into a pod, as the article does: the API server streams from the
/// kubelet. Returns stdout; panics with stderr on failure.
pub fn exec(namespace: &str, pod: &str, command: &[&str]) -> String {
    let output = Command::new("kubectl")
        .args(["exec", "-n", namespace, pod, "--"])
        .args(command)
        .output()
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "kubectl exec {pod} -- {command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// The value of `name` in the pod's environment (busybox has `env`, not `printenv`).
pub fn env_var(namespace: &str, pod: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    exec(namespace, pod, &["env"])
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
}
