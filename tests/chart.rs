//! The Helm chart (`deploy/charts/vaultsync`) and the kustomization (`deploy/`): `helm lint`,
//! values mapped to real flags, a server-side dry run of both renders, the two sets
//! compared, a real install and uninstall, the admission policy on the operator's
//! TokenRequests, and the namespaced mode with the operator under exactly the chart's rights.

mod common;

use common::helm::*;
use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use vaultsync::api::VaultSecret;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";

fn kubectl(args: &[&str], input: Option<&str>) -> String {
    let mut command = Command::new("kubectl");
    command.args(args);
    run(command, input)
}

/// The objects of a YAML stream; comment-only documents dropped.
fn documents(yaml: &str) -> Vec<Value> {
    format!("\n{yaml}")
        .split("\n---")
        .filter(|doc| {
            doc.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap_or_else(|e| panic!("{e}: {doc}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of the chart, CRDs included, with `--set` values.
fn render(release: &str, namespace: &str, set: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        release,
        CHART,
        "--namespace",
        namespace,
        "--include-crds",
    ];
    for value in set {
        args.extend(["--set", value]);
    }
    documents(&helm(&args))
}

fn kustomize() -> Vec<Value> {
    documents(&kubectl(&["kustomize", DEPLOY], None))
}

/// `(kind, namespace, name)` of an object.
fn key(object: &Value) -> (String, String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        text(&object["kind"]),
        text(&object["metadata"]["namespace"]),
        text(&object["metadata"]["name"]),
    )
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "a {kind} {name} in {:?}",
                objects.iter().map(key).collect::<Vec<_>>()
            )
        })
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects.iter().map(|o| key(o).0).collect()
}

/// The rendered container's args.
fn args(objects: &[Value]) -> Vec<String> {
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// RBAC rules in a canonical order, so that two spellings of one set compare equal.
fn rules(object: &Value) -> BTreeSet<String> {
    object["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            let sorted = |field: &str| {
                let mut items: Vec<String> = rule[field]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default();
                items.sort();
                items.join(",")
            };
            format!(
                "{}|{}|{}|{}",
                sorted("apiGroups"),
                sorted("resources"),
                sorted("resourceNames"),
                sorted("verbs")
            )
        })
        .collect()
}

#[test]
fn helm_lint_passes_in_every_mode() {
    helm(&["lint", "--strict", CHART]);
    helm(&[
        "lint",
        "--strict",
        CHART,
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "operatorIdentity.type=managedIdentity",
        "--set",
        "operatorIdentity.clientId=00000000-0000-0000-0000-000000000001",
        "--set",
        "extraCA.secret.name=corporate-ca",
    ]);
}

#[test]
fn values_outside_the_schema_are_refused() {
    for (value, why) in [
        ("logFormat=xml", "/logFormat"),
        (
            "operatorIdentity.type=clientSecret",
            "/operatorIdentity/type",
        ),
        (
            "operatorIdentity.scope=everywhere",
            "/operatorIdentity/scope",
        ),
        // The operator asks for hour-long tokens; a lower cap would refuse them all.
        (
            "admissionPolicy.maxExpirationSeconds=600",
            "/admissionPolicy/maxExpirationSeconds",
        ),
        ("replicas=-1", "/replicas"),
    ] {
        let output = Command::new(helm_binary())
            .args(["template", "vaultsync", CHART, "--set", value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(why),
            "{value}: {stderr}"
        );
    }
}

#[test]
fn the_default_render_is_hardened_and_complete() {
    let objects = render("vaultsync", "vaultsync-system", &[]);
    let expected: BTreeSet<String> = [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    .map(str::to_owned)
    .into();
    // No ServiceMonitor unless asked for: its CRD is not in every cluster.
    assert_eq!(kinds(&objects), expected);

    // The CRD comes from the chart's crds/ (never deleted by `helm uninstall`), a copy
    // of crds/vaultsecret.yaml that tests/crd_file.rs keeps equal to the generated one.
    let crd = find(
        &objects,
        "CustomResourceDefinition",
        "vaultsecrets.vaultsync.io",
    );
    let repo_crd: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/crds/vaultsecret.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(crd, &repo_crd);

    let deployment = find(&objects, "Deployment", "vaultsync");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "vaultsync:0.1.0");
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    // Room after SIGTERM for the leader to stop and release its Lease.
    assert!(pod["terminationGracePeriodSeconds"].as_i64().unwrap() >= 15);
    let args = args(&objects);
    for flag in [
        "--leader-election=true",
        "--leader-election-lease-name=vaultsync",
        "--operator-identity=namespaces",
        "--log-format=json",
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--namespaces")));
    assert_eq!(
        pod["serviceAccountName"],
        find(&objects, "ServiceAccount", "vaultsync")["metadata"]["name"]
    );
}

#[test]
fn chart_values_map_to_real_flags() {
    let objects = render(
        "vaultsync",
        "vaultsync-system",
        &[
            "watchNamespaces={team-a,team-b}",
            "logFormat=text",
            "operatorIdentity.type=none",
            "extraCA.configMap.name=corporate-ca",
            "extraCA.configMap.key=roots.pem",
            "extraVaultSuffixes={vault.example.internal}",
            "leaderElection.leaseSeconds=20",
            "image.repository=registry.example/vaultsync",
            "image.tag=1.2.3",
            "image.pullPolicy=Never",
            "metrics.serviceMonitor.enabled=true",
            "metrics.perObject=true",
            "shutdownTimeoutSeconds=40",
            "terminationGracePeriodSeconds=60",
            "rolloutRestarts.enabled=true",
            "rolloutRestarts.windowSeconds=30",
            "expiryWarning=24h",
        ],
    );
    let args = args(&objects);
    for flag in [
        "--per-object-metrics=true",
        "--allow-rollout-restarts=true",
        "--rollout-restart-window-seconds=30",
        "--expiry-warning=24h",
        "--shutdown-timeout-seconds=40",
        "--namespaces=team-a,team-b",
        "--log-format=text",
        "--operator-identity=none",
        "--extra-ca-file=/etc/vaultsync/extra-ca/ca.crt",
        "--extra-vault-suffixes=vault.example.internal",
        "--leader-election-lease-seconds=20",
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
    // Every flag the chart passes is one `vaultsync run` knows.
    let help = run(
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_vaultsync"));
            c.args(["run", "--help"]);
            c
        },
        None,
    );
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{flag} "))
                || help.contains(&format!("{flag}\n"))
                || help.contains(&format!("{flag} <")),
            "vaultsync run knows {flag}"
        );
    }
    let deployment = find(&objects, "Deployment", "vaultsync");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.example/vaultsync:1.2.3"
    );
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "Never");
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "corporate-ca");
    assert_eq!(
        pod["volumes"][0]["configMap"]["items"][0]["key"],
        "roots.pem"
    );
    // Identity off: no workload identity label for the webhook.
    assert!(
        pod.get("metadata").is_none()
            && deployment["spec"]["template"]["metadata"]["labels"]
                .get("azure.workload.identity/use")
                .is_none()
    );
    find(&objects, "ServiceMonitor", "vaultsync");
    // The namespaced mode: a Role per watched namespace, Namespaces readable by name only.
    assert!(
        !objects
            .iter()
            .any(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == "vaultsync")
    );
    for ns in ["team-a", "team-b"] {
        let role = objects
            .iter()
            .find(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("a Role in {ns}"));
        assert!(rules(role).iter().any(|r| r.contains("secrets")));
    }
    let namespaces = find(&objects, "ClusterRole", "vaultsync-namespaces");
    assert_eq!(
        rules(namespaces),
        BTreeSet::from(["|namespaces|team-a,team-b|get,list,watch".to_owned()])
    );

    // Workload identity: the ServiceAccount names the client id; without AKS's webhook the
    // chart projects the token and sets what the webhook would.
    let objects = render(
        "vaultsync",
        "vaultsync-system",
        &[
            "operatorIdentity.clientId=00000000-0000-0000-0000-000000000001",
            "operatorIdentity.tenantId=00000000-0000-0000-0000-000000000002",
            "operatorIdentity.workloadIdentity.injectedByWebhook=false",
        ],
    );
    let sa = find(&objects, "ServiceAccount", "vaultsync");
    assert_eq!(
        sa["metadata"]["annotations"][CLIENT_ID_ANNOTATION],
        "00000000-0000-0000-0000-000000000001"
    );
    let pod = &find(&objects, "Deployment", "vaultsync")["spec"]["template"]["spec"];
    let env: BTreeMap<String, Value> = pod["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].clone()))
        .collect();
    assert_eq!(
        env["AZURE_CLIENT_ID"],
        "00000000-0000-0000-0000-000000000001"
    );
    assert!(env.contains_key("AZURE_FEDERATED_TOKEN_FILE"));
    assert_eq!(
        pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        FEDERATION_AUDIENCE
    );
}

/// The `vaultsync_*` metric names the README's metrics table lists.
fn documented_metrics() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("\n## Metrics\n")
        .nth(1)
        .expect("a Metrics section")
        .split("\n## ")
        .next()
        .unwrap();
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `vaultsync_"))
        .map(|l| format!("vaultsync_{}", l.split('`').next().unwrap()))
        .collect()
}

#[test]
fn the_prometheus_rule_is_opt_in_and_alerts_on_metrics_that_exist() {
    // Off by default (the default render's kinds are checked above); on, one rule with
    // the four alerts. Its CRD (the Prometheus Operator's) is not on the local API
    // server, so the rendered YAML is checked here rather than by a dry-run.
    let objects = render(
        "vaultsync",
        "vaultsync-system",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.labels.release=prometheus",
            "metrics.prometheusRule.maxSyncAgeSeconds=600",
        ],
    );
    let rule = find(&objects, "PrometheusRule", "vaultsync");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let rules: BTreeMap<String, &Value> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["alert"].as_str().unwrap().to_owned(), r))
        .collect();
    assert_eq!(
        rules.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "KeyVaultThrottled",
            "VaultSecretSyncStale",
            "VaultSecretsExpiring",
            "VaultSecretsNotReady"
        ]
    );
    assert_eq!(rules["VaultSecretsNotReady"]["for"], "15m");
    assert!(
        rules["VaultSecretSyncStale"]["expr"]
            .as_str()
            .unwrap()
            .ends_with("> 600")
    );
    assert!(
        rules["KeyVaultThrottled"]["expr"]
            .as_str()
            .unwrap()
            .contains(r#"class="429""#)
    );
    // Every metric an alert names is one the README documents; tests/metrics.rs checks
    // that the README's table is exactly what /metrics exports.
    let documented = documented_metrics();
    let metric_name = regex::Regex::new(r"vaultsync_[a-z_]+").unwrap();
    for (alert, rule) in &rules {
        let expr = rule["expr"].as_str().unwrap();
        let names: Vec<&str> = metric_name.find_iter(expr).map(|m| m.as_str()).collect();
        assert!(!names.is_empty(), "{alert}: {expr}");
        for name in names {
            assert!(
                documented.contains(name),
                "{alert} names {name}, not in {documented:?}"
            );
        }
    }
}

#[test]
fn the_grace_period_leaves_room_to_drain_and_release_the_lease() {
    let objects = render("vaultsync", "vaultsync-system", &[]);
    let pod = &find(&objects, "Deployment", "vaultsync")["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert!(args(&objects).contains(&"--shutdown-timeout-seconds=20".to_owned()));
    // 25 s would leave no room after a 20 s drain and the 5 s Lease release.
    let output = Command::new(helm_binary())
        .args([
            "template",
            "vaultsync",
            CHART,
            "--set",
            "terminationGracePeriodSeconds=25",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("must exceed shutdownTimeoutSeconds"),
        "{stderr}"
    );
}

/// `deploy/` with the rollout restarts component, through an overlay outside `deploy/`
/// (kustomize refuses an overlay inside the base it names, and absolute paths).
fn kustomize_with_rollout_restarts() -> Vec<Value> {
    let overlay = std::env::temp_dir().join(format!("{}-overlay", unique("kustomize")));
    std::fs::create_dir_all(&overlay).unwrap();
    let depth = overlay.components().count() - 1;
    let up = "../".repeat(depth);
    let deploy = DEPLOY.trim_start_matches('/');
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "resources: [{up}{deploy}]\ncomponents: [{up}{deploy}/components/rollout-restarts]\n"
        ),
    )
    .unwrap();
    let objects = documents(&kubectl(&["kustomize", overlay.to_str().unwrap()], None));
    let _ = std::fs::remove_dir_all(&overlay);
    objects
}

#[test]
fn rollout_restarts_are_opt_in_with_their_flag_and_rule() {
    let workload_rule = "apps|daemonsets,deployments,statefulsets||patch".to_owned();
    let grants_workloads = |objects: &[Value]| {
        objects
            .iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
            .any(|o| rules(o).iter().any(|r| r.starts_with("apps|")))
    };
    // Off by default: no flag, and no right on any workload.
    for objects in [render("vaultsync", "vaultsync-system", &[]), kustomize()] {
        assert!(!grants_workloads(&objects));
        assert!(!args(&objects).iter().any(|a| a.contains("rollout-restart")));
    }
    // On: the flag, and exactly the patch rule, in both sets and in the namespaced mode.
    let on = render(
        "vaultsync",
        "vaultsync-system",
        &["rolloutRestarts.enabled=true"],
    );
    assert!(
        args(&on)
            .iter()
            .any(|a| a == "--allow-rollout-restarts=true")
    );
    assert_eq!(
        rules(find(&on, "ClusterRole", "vaultsync-rollout-restarts")),
        BTreeSet::from([workload_rule.clone()])
    );
    let kustomized = kustomize_with_rollout_restarts();
    assert!(
        args(&kustomized)
            .iter()
            .any(|a| a == "--allow-rollout-restarts=true")
    );
    let namespaced = render(
        "vaultsync",
        "vaultsync-system",
        &["rolloutRestarts.enabled=true", "watchNamespaces={team-a}"],
    );
    let role = namespaced
        .iter()
        .find(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == "team-a")
        .unwrap();
    assert!(rules(role).contains(&workload_rule));
    assert!(
        !namespaced
            .iter()
            .any(|o| o["kind"] == "ClusterRole" && rules(o).contains(&workload_rule))
    );
}

#[test]
fn the_chart_and_the_kustomization_install_the_same_set() {
    same_set(render("vaultsync", "vaultsync-system", &[]), kustomize());
    same_set(
        render(
            "vaultsync",
            "vaultsync-system",
            &["rolloutRestarts.enabled=true"],
        ),
        kustomize_with_rollout_restarts(),
    );
}

fn same_set(chart: Vec<Value>, kustomized: Vec<Value>) {
    // The kustomization makes the namespace; helm leaves it to --create-namespace.
    let kustomized: Vec<Value> = kustomized
        .into_iter()
        .filter(|o| o["kind"] != "Namespace")
        .collect();
    let chart_keys: BTreeSet<_> = chart.iter().map(key).collect();
    let kustomized_keys: BTreeSet<_> = kustomized.iter().map(key).collect();
    assert_eq!(chart_keys, kustomized_keys);
    for object in &chart {
        let (kind, namespace, name) = key(object);
        let other = kustomized
            .iter()
            .find(|o| key(o) == (kind.clone(), namespace.clone(), name.clone()))
            .unwrap();
        match kind.as_str() {
            "ClusterRole" | "Role" => {
                assert_eq!(rules(object), rules(other), "{kind} {name}")
            }
            "ClusterRoleBinding" | "RoleBinding" => {
                assert_eq!(object["roleRef"], other["roleRef"], "{kind} {name}");
                assert_eq!(object["subjects"], other["subjects"], "{kind} {name}");
            }
            "ServiceAccount" => {}
            "CustomResourceDefinition" => assert_eq!(object, other),
            _ => assert_eq!(object["spec"], other["spec"], "{kind} {name}"),
        }
    }
}

#[tokio::test]
async fn the_chart_and_the_kustomization_pass_a_server_side_dry_run() {
    let dry_run = [
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "--field-manager=vaultsync-dry-run",
        "-f",
        "-",
    ];
    // The default render (no ServiceMonitor: this API server has no such CRD).
    let default = helm(&[
        "template",
        "vaultsync",
        CHART,
        "--namespace",
        "vaultsync-system",
        "--include-crds",
    ]);
    let applied = kubectl(&dry_run, Some(&default));
    assert!(applied.contains("validatingadmissionpolicy.admissionregistration.k8s.io/vaultsync-token-requests serverside-applied (server dry run)"), "{applied}");
    // The namespaced mode, for namespaces that exist here.
    let namespaced = helm(&[
        "template",
        "vaultsync",
        CHART,
        "--namespace",
        "vaultsync-system",
        "--set",
        "watchNamespaces={default,kube-public}",
    ]);
    kubectl(&dry_run, Some(&namespaced));
    let kustomized = kubectl(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--force-conflicts",
            "--field-manager=vaultsync-dry-run",
            "-k",
            DEPLOY,
        ],
        None,
    );
    assert!(
        kustomized.contains("deployment.apps/vaultsync serverside-applied (server dry run)"),
        "{kustomized}"
    );
}

/// Installs the chart in `namespace` with `replicas=0`: no pod of the chart runs the
/// operator here, where it would reconcile other tests' objects; each test runs the binary
/// under the chart's ServiceAccount instead.
fn install_without_pods(namespace: &str, set: &[&str]) -> Release {
    let mut args = vec!["--set", "replicas=0"];
    for value in set {
        args.extend(["--set", value]);
    }
    Release::install(&unique("vaultsync"), namespace, &args)
}

/// The running operator's flags for `release`: its ServiceAccount's rights (the
/// kubeconfig), and leader election on the release's Lease.
fn operator_flags(release: &Release, kubeconfig: &std::path::Path) -> Vec<String> {
    [
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--leader-election",
        "--leader-election-namespace",
        &release.namespace,
        "--leader-election-lease-name",
        &release.name,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The objects of the release, by kind, as the API server holds them.
fn release_objects(release: &str) -> BTreeSet<(String, String)> {
    let selector = format!("app.kubernetes.io/instance={release}");
    let mut found = BTreeSet::new();
    for (kind, namespaced) in [
        ("serviceaccounts", true),
        ("deployments.apps", true),
        ("services", true),
        ("poddisruptionbudgets.policy", true),
        ("networkpolicies.networking.k8s.io", true),
        ("roles.rbac.authorization.k8s.io", true),
        ("rolebindings.rbac.authorization.k8s.io", true),
        ("clusterroles.rbac.authorization.k8s.io", false),
        ("clusterrolebindings.rbac.authorization.k8s.io", false),
        (
            "validatingadmissionpolicies.admissionregistration.k8s.io",
            false,
        ),
        (
            "validatingadmissionpolicybindings.admissionregistration.k8s.io",
            false,
        ),
    ] {
        let mut args = vec!["get", kind, "-l", &selector, "-o", "name"];
        if namespaced {
            args.push("--all-namespaces");
        }
        for line in kubectl(&args, None).lines() {
            if let Some((kind, name)) = line.split_once('/') {
                found.insert((kind.to_owned(), name.to_owned()));
            }
        }
    }
    found
}

#[tokio::test]
async fn helm_installs_the_chart_and_uninstall_keeps_the_crd() {
    let s = setup().await;
    let mut release = install_without_pods(&s.ns.name, &[]);
    let name = release.name.clone();
    let created = release_objects(&release.name);
    let expected: BTreeSet<(String, String)> = [
        ("serviceaccount", name.clone()),
        ("deployment.apps", name.clone()),
        ("service", format!("{name}-metrics")),
        ("poddisruptionbudget.policy", name.clone()),
        ("networkpolicy.networking.k8s.io", name.clone()),
        (
            "role.rbac.authorization.k8s.io",
            format!("{name}-leader-election"),
        ),
        (
            "rolebinding.rbac.authorization.k8s.io",
            format!("{name}-leader-election"),
        ),
        ("clusterrole.rbac.authorization.k8s.io", name.clone()),
        ("clusterrolebinding.rbac.authorization.k8s.io", name.clone()),
        (
            "validatingadmissionpolicy.admissionregistration.k8s.io",
            format!("{name}-token-requests"),
        ),
        (
            "validatingadmissionpolicybinding.admissionregistration.k8s.io",
            format!("{name}-token-requests"),
        ),
        (
            "validatingadmissionpolicy.admissionregistration.k8s.io",
            format!("{name}-secret-writes"),
        ),
        (
            "validatingadmissionpolicybinding.admissionregistration.k8s.io",
            format!("{name}-secret-writes"),
        ),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(created, expected);
    let deployment = kubectl(
        &["get", "deployment", &name, "-n", &s.ns.name, "-o", "json"],
        None,
    );
    let deployment: Value = serde_json::from_str(&deployment).unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        name
    );
    let binding = kubectl(&["get", "clusterrolebinding", &name, "-o", "json"], None);
    let binding: Value = serde_json::from_str(&binding).unwrap();
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": name, "namespace": s.ns.name}])
    );

    release.uninstall();
    assert_eq!(release_objects(&name), BTreeSet::new());
    // helm never deletes what it installed from crds/.
    kubectl(&["get", "crd", "vaultsecrets.vaultsync.io"], None);
}

/// Asks for a token of `namespace/name` for `audiences`; `Err` is the API server's refusal.
async fn request_token(
    client: &Client,
    namespace: &str,
    name: &str,
    audiences: &[&str],
    expiration_seconds: Option<i64>,
) -> Result<String, String> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
            expiration_seconds,
            ..Default::default()
        }),
        ..Default::default()
    };
    match Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
    {
        Ok(issued) => Ok(issued.status.and_then(|s| s.token).expect("a token")),
        Err(kube::Error::Api(status)) => Err(format!("{} {}", status.code, status.message)),
        Err(e) => panic!("TokenRequest: {e}"),
    }
}

async fn create_annotated_service_account(
    client: &Client,
    namespace: &str,
    name: &str,
    annotations: Value,
) {
    let sa: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
    }))
    .unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_admission_policy_limits_the_operators_token_requests() {
    let s = setup().await;
    let apps = TempNamespace::create(&s.client).await;
    let release = install_without_pods(&s.ns.name, &[]);
    let client_id = uuid::Uuid::new_v4().to_string();
    create_annotated_service_account(
        &s.client,
        &apps.name,
        "annotated",
        json!({CLIENT_ID_ANNOTATION: client_id}),
    )
    .await;
    create_annotated_service_account(&s.client, &apps.name, "plain", json!({})).await;
    create_annotated_service_account(
        &s.client,
        &apps.name,
        "blank",
        json!({CLIENT_ID_ANNOTATION: ""}),
    )
    .await;
    let operator = client_as_service_account(&s.client, &s.ns.name, &release.name).await;

    // The API server applies a new policy once its informers have seen it: wait until
    // a request it forbids is refused. The bound only keeps a broken run from hanging.
    let mut refusal = None;
    for _ in 0..240 {
        match request_token(
            &operator,
            &apps.name,
            "annotated",
            &["https://kubernetes.default.svc"],
            Some(600),
        )
        .await
        {
            Err(e) => {
                refusal = Some(e);
                break;
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
    let refusal = refusal.expect("the admission policy took effect");
    assert!(
        refusal.starts_with("403")
            && refusal.contains("only for the audience api://AzureADTokenExchange"),
        "{refusal}"
    );

    // What the token exchange needs passes: the audience, an annotated ServiceAccount, an
    // hour or less (the default is an hour).
    request_token(
        &operator,
        &apps.name,
        "annotated",
        &[FEDERATION_AUDIENCE],
        Some(3600),
    )
    .await
    .unwrap();
    request_token(
        &operator,
        &apps.name,
        "annotated",
        &[FEDERATION_AUDIENCE],
        Some(600),
    )
    .await
    .unwrap();
    request_token(
        &operator,
        &apps.name,
        "annotated",
        &[FEDERATION_AUDIENCE],
        None,
    )
    .await
    .unwrap();
    // Such a token is for Entra alone: the API server does not take it.
    let exchange_only = request_token(
        &operator,
        &apps.name,
        "annotated",
        &[FEDERATION_AUDIENCE],
        None,
    )
    .await
    .unwrap();
    let kubeconfig = kubeconfig_for_token(&exchange_only);
    let as_token = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let _ = std::fs::remove_file(kubeconfig);
    let refused = Api::<Namespace>::all(Client::try_from(as_token).unwrap())
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 401),
        "{refused:?}"
    );
    // Nor can the operator annotate a ServiceAccount to make it eligible (RBAC: get only).
    let annotate = Api::<ServiceAccount>::namespaced(operator.clone(), &apps.name)
        .patch(
            "plain",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {CLIENT_ID_ANNOTATION: "x"}}}),
            ),
        )
        .await;
    assert!(forbidden(annotate).await);
    // Everything else is refused.
    for (sa, audiences, expiration, why) in [
        (
            "annotated",
            vec![FEDERATION_AUDIENCE, "https://kubernetes.default.svc"],
            Some(600),
            "only for the audience",
        ),
        ("annotated", vec![], Some(600), "only for the audience"),
        (
            "annotated",
            vec![FEDERATION_AUDIENCE],
            Some(3601),
            "at most 3600 seconds",
        ),
        (
            "annotated",
            vec![FEDERATION_AUDIENCE],
            Some(86400),
            "at most 3600 seconds",
        ),
        (
            "plain",
            vec![FEDERATION_AUDIENCE],
            Some(600),
            "annotated azure.workload.identity/client-id",
        ),
        (
            "blank",
            vec![FEDERATION_AUDIENCE],
            Some(600),
            "annotated azure.workload.identity/client-id",
        ),
        (
            "default",
            vec![FEDERATION_AUDIENCE],
            Some(600),
            "annotated azure.workload.identity/client-id",
        ),
    ] {
        let refusal = request_token(&operator, &apps.name, sa, &audiences, expiration)
            .await
            .expect_err(&format!("{sa} {audiences:?} {expiration:?} refused"));
        assert!(
            refusal.starts_with("403") && refusal.contains(why),
            "{sa} {audiences:?} {expiration:?}: {refusal}"
        );
    }
    // The operator's own ServiceAccount has no client-id annotation here either.
    let refusal = request_token(
        &operator,
        &s.ns.name,
        &release.name,
        &[FEDERATION_AUDIENCE],
        Some(600),
    )
    .await
    .unwrap_err();
    assert!(
        refusal.contains("annotated azure.workload.identity/client-id"),
        "{refusal}"
    );
    // The policy concerns the operator alone: an administrator is not limited by it.
    request_token(
        &s.client,
        &apps.name,
        "plain",
        &["https://kubernetes.default.svc"],
        Some(7200),
    )
    .await
    .unwrap();

    // Secrets that RBAC would let it write and that are credentials themselves: a
    // service-account-token Secret (the token controller fills in a non-expiring token of
    // the named ServiceAccount) and a bootstrap token (node join); and deleting a Secret
    // that is not its own.
    let secrets_of = |ns: &str| Api::<Secret>::namespaced(operator.clone(), ns);
    for (ns, type_, annotations) in [
        (
            apps.name.as_str(),
            "kubernetes.io/service-account-token",
            json!({"kubernetes.io/service-account.name": "plain"}),
        ),
        ("kube-system", "bootstrap.kubernetes.io/token", json!({})),
    ] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": unique("forged"), "annotations": annotations},
            "type": type_,
            "stringData": {"token-id": "abcdef", "token-secret": "0123456789abcdef"},
        }))
        .unwrap();
        let refused = secrets_of(ns).create(&PostParams::default(), &secret).await;
        assert!(
            matches!(&refused, Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("may not write Secrets of type")),
            "{type_}: {refused:?}"
        );
    }
    let bystander = Secret {
        metadata: ObjectMeta {
            name: Some("bystander".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Secret>::namespaced(s.client.clone(), &apps.name)
        .create(&PostParams::default(), &bystander)
        .await
        .unwrap();
    let refused = secrets_of(&apps.name)
        .delete("bystander", &Default::default())
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("may delete only Secrets labelled")),
        "{refused:?}"
    );

    // Normal syncs still work: the operator under the chart's ServiceAccount and RBAC
    // reads Key Vault as an annotated ServiceAccount.
    let secret = unique("chart-vap");
    KeyVault::first()
        .set(&secret, "synced through the policy")
        .await;
    s.doubles
        .federate(&client_id, &apps.name, "annotated")
        .await;
    s.doubles.grant(&client_id, &[&secret]).await;
    let token = service_account_token(
        &s.client,
        &s.ns.name,
        &release.name,
        &env("VAULTSYNC_TEST_SA_ISSUER"),
    )
    .await;
    let kubeconfig = kubeconfig_for_token(&token);
    let flags = operator_flags(&release, &kubeconfig);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let own_identity = operator_identity(&s.doubles, &[]).await;
    let _operator = Operator::start(&apps.name, &own_identity, &flags);
    let vsecs = Api::<VaultSecret>::namespaced(s.client.clone(), &apps.name);
    let spec = json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "identity": {"serviceAccountName": "annotated"},
                      "data": [{"key": "k", "remoteRef": {"name": secret}}]});
    vsecs
        .create(&PostParams::default(), &vault_secret("via-sa", spec))
        .await
        .unwrap();
    wait_reason(&vsecs, "via-sa", "Synced").await;
    let synced = Api::<Secret>::namespaced(s.client.clone(), &apps.name)
        .get("via-sa")
        .await
        .unwrap();
    assert_eq!(synced.data.unwrap()["k"].0, b"synced through the policy");
    assert_eq!(s.doubles.token_requests(&client_id).await, 1);
    let _ = std::fs::remove_file(kubeconfig);
}

async fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

#[tokio::test]
async fn the_namespaced_mode_reads_no_secret_outside_its_namespaces() {
    let s = setup().await; // s.ns: the watched namespace, granted the operator's identity
    let home = TempNamespace::create_ungranted(&s.client).await;
    let other = TempNamespace::create(&s.client).await;
    let watch = format!("watchNamespaces={{{}}}", s.ns.name);
    let release = install_without_pods(&home.name, &[&watch]);
    let name = &release.name;
    let created = release_objects(&release.name);
    assert!(!created.contains(&(
        "clusterrole.rbac.authorization.k8s.io".to_owned(),
        name.clone()
    )));
    assert!(created.contains(&(
        "clusterrole.rbac.authorization.k8s.io".to_owned(),
        format!("{name}-namespaces")
    )));
    kubectl(&["get", "role", name, "-n", &s.ns.name], None);

    for ns in [&home.name, &other.name, &s.ns.name] {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("bystander".into()),
                ..Default::default()
            },
            string_data: Some([("k".to_owned(), "not for the operator".to_owned())].into()),
            ..Default::default()
        };
        Api::<Secret>::namespaced(s.client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    let operator = client_as_service_account(&s.client, &home.name, name).await;
    // No Secret outside the watched namespace: not another namespace's, not one of its
    // own namespace but the data-hash key, not a cluster-wide list.
    for ns in [&home.name, &other.name] {
        let secrets = Api::<Secret>::namespaced(operator.clone(), ns);
        assert!(
            forbidden(secrets.get("bystander").await).await,
            "get a Secret in {ns}"
        );
        assert!(
            forbidden(secrets.list(&ListParams::default()).await).await,
            "list Secrets in {ns}"
        );
    }
    assert!(
        forbidden(
            Api::<Secret>::all(operator.clone())
                .list(&ListParams::default())
                .await
        )
        .await
    );
    assert!(
        forbidden(
            Api::<VaultSecret>::all(operator.clone())
                .list(&ListParams::default())
                .await
        )
        .await
    );
    // Namespaces: the watched one alone, by name.
    let namespaces = Api::<Namespace>::all(operator.clone());
    assert!(forbidden(namespaces.get(&other.name).await).await);
    assert!(forbidden(namespaces.list(&ListParams::default()).await).await);
    namespaces
        .list(&ListParams::default().fields(&format!("metadata.name={}", s.ns.name)))
        .await
        .expect("the watched Namespace by name");
    Api::<Secret>::namespaced(operator.clone(), &s.ns.name)
        .get("bystander")
        .await
        .expect("a Secret of the watched namespace");

    // The operator under exactly these rights syncs in the watched namespace, as its own
    // identity and as a ServiceAccount's.
    let secret = unique("chart-ns");
    KeyVault::first().set(&secret, "namespaced value").await;
    let own_identity = operator_identity(&s.doubles, &[&secret]).await;
    let sa_client_id = uuid::Uuid::new_v4().to_string();
    create_annotated_service_account(
        &s.client,
        &s.ns.name,
        "app",
        json!({CLIENT_ID_ANNOTATION: sa_client_id}),
    )
    .await;
    s.doubles.federate(&sa_client_id, &s.ns.name, "app").await;
    s.doubles.grant(&sa_client_id, &[&secret]).await;
    let token = service_account_token(
        &s.client,
        &home.name,
        name,
        &env("VAULTSYNC_TEST_SA_ISSUER"),
    )
    .await;
    let kubeconfig = kubeconfig_for_token(&token);
    let flags = operator_flags(&release, &kubeconfig);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _operator = Operator::start(&s.ns.name, &own_identity, &flags);
    let data = json!([{"key": "k", "remoteRef": {"name": secret}}]);
    s.vsecs
        .create(
            &PostParams::default(),
            &vault_secret(
                "own",
                json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "data": data}),
            ),
        )
        .await
        .unwrap();
    s.vsecs.create(&PostParams::default(), &vault_secret("as-app", json!({"vaultUrl": env("VAULTSYNC_TEST_VAULT_URL"), "identity": {"serviceAccountName": "app"}, "data": data}))).await.unwrap();
    for name in ["own", "as-app"] {
        wait_reason(&s.vsecs, name, "Synced").await;
        let synced = s.secrets.get(name).await.unwrap();
        assert_eq!(synced.data.unwrap()["k"].0, b"namespaced value");
    }
    // Its data-hash key, in the release namespace, made under the hash-key Role.
    Api::<Secret>::namespaced(s.client.clone(), &home.name)
        .get(vaultsync::controller::data_hash::KEY_SECRET_NAME)
        .await
        .expect("the data-hash key in the release namespace");
    let _ = std::fs::remove_file(kubeconfig);
}

#[tokio::test]
async fn without_the_admission_policy_rbac_alone_lets_the_operator_mint_any_token() {
    // What the policy is for: the same release without it lets the operator's token mint
    // an API server token of any ServiceAccount, for as long as it likes.
    let s = setup().await;
    let release = install_without_pods(&s.ns.name, &["admissionPolicy.enabled=false"]);
    let operator = client_as_service_account(&s.client, &s.ns.name, &release.name).await;
    let issuer = env("VAULTSYNC_TEST_SA_ISSUER");
    request_token(&operator, "kube-system", "default", &[&issuer], Some(86400))
        .await
        .expect("RBAC alone allows any ServiceAccount, audience and lifetime");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": unique("forged"), "annotations": {"kubernetes.io/service-account.name": "default"}},
        "type": "kubernetes.io/service-account-token",
    }))
    .unwrap();
    Api::<Secret>::namespaced(operator.clone(), &s.ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .expect("RBAC alone allows a service-account-token Secret");
}
