//! The operator under test: the real `vaultsync` binary, one process per test, watching
//! only that test's namespace, at debug level, with its logs (text or JSON, in turn) and
//! its `/metrics` kept for the run's leak scan (see [`super::leak`]).

use super::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResourceExt;
use kube::api::{Patch, PatchParams};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vaultsync::api::VaultSecret;

/// Installs (server-side applies) the CRD and waits until it is served.
pub async fn ensure_crd(client: &Client) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = VaultSecret::crd();
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("vaultsync-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply the CRD");
    for _ in 0..120 {
        let current = crds.get(&name).await.expect("read the CRD");
        let established = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the VaultSecret CRD was not established");
}

/// One test's namespace with the APIs a test of the operator uses, the CRD installed.
pub struct Setup {
    pub client: Client,
    pub doubles: Doubles,
    pub ns: TempNamespace,
    pub vsecs: Api<VaultSecret>,
    pub secrets: Api<k8s_openapi::api::core::v1::Secret>,
}

pub async fn setup() -> Setup {
    let client = kube_client().await;
    ensure_crd(&client).await;
    let ns = TempNamespace::create(&client).await;
    Setup {
        doubles: Doubles::new(),
        vsecs: Api::namespaced(client.clone(), &ns.name),
        secrets: Api::namespaced(client.clone(), &ns.name),
        ns,
        client,
    }
}

/// A client id for one test's operator: federated to the environment's operator
/// ServiceAccount, with access to exactly the given secrets.
pub async fn operator_identity(doubles: &Doubles, secrets: &[&str]) -> String {
    let client_id = uuid::Uuid::new_v4().to_string();
    doubles
        .federate(
            &client_id,
            &env("VAULTSYNC_TEST_OPERATOR_NAMESPACE"),
            &env("VAULTSYNC_TEST_OPERATOR_SERVICE_ACCOUNT"),
        )
        .await;
    doubles.grant(&client_id, secrets).await;
    client_id
}

/// The binary under test: Cargo's build for integration tests, or the one named by
/// `VAULTSYNC_OPERATOR_BINARY` (the benchmark runs a release build).
pub fn operator_binary() -> String {
    std::env::var("VAULTSYNC_OPERATOR_BINARY")
        .ok()
        .or_else(|| option_env!("CARGO_BIN_EXE_vaultsync").map(str::to_owned))
        .expect("set VAULTSYNC_OPERATOR_BINARY outside integration tests")
}

pub struct Operator {
    child: Child,
    pub log_file: PathBuf,
    health_port: u16,
}

impl Operator {
    /// Starts `vaultsync run` for `namespace` with the environment's settings, acting as
    /// `client_id`, plus `extra` flags.
    pub fn start(namespace: &str, client_id: &str, extra: &[&str]) -> Self {
        Self::start_with_env(namespace, client_id, extra, &[])
    }

    /// Like [`Operator::start`], with extra environment variables (flags as `VAULTSYNC_*`).
    pub fn start_with_env(
        namespace: &str,
        client_id: &str,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Self {
        let binary = operator_binary();
        // Each started operator takes the other format than the one before it in this
        // process, so the leak scan sees both writers at work.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let format = if STARTED
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(2)
        {
            "json"
        } else {
            "text"
        };
        let log_name = format!(
            "{}-{}.{format}.log",
            namespace.replace(',', "+"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let log_file = super::leak::dir("operator-logs")
            .unwrap_or_else(std::env::temp_dir)
            .join(log_name);
        let log = std::fs::File::create(&log_file).expect("create the operator log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .args([
                "run",
                "--namespaces",
                namespace,
                "--log-format",
                format,
                "--health-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .args(extra)
            .env("AZURE_CLIENT_ID", client_id)
            .env(
                "VAULTSYNC_LOG",
                "debug,hyper=info,rustls=info,tower=info,h2=info,reqwest=info,kube_client=info",
            )
            .envs(vars.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start vaultsync");
        Self {
            child,
            log_file,
            health_port: port,
        }
    }

    /// The operator's `/metrics` text, once its health server answers (also kept for the
    /// leak scan).
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.health_port);
        for _ in 0..120 {
            if let Ok(response) = reqwest::get(&url).await {
                let text = response.text().await.expect("metrics text");
                self.keep_metrics(&text);
                return text;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("the operator's metrics endpoint never answered");
    }

    /// `/livez`'s status code and body, once the health server answers.
    pub async fn livez(&self) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}/livez", self.health_port);
        for _ in 0..120 {
            if let Ok(response) = reqwest::get(&url).await {
                let code = response.status().as_u16();
                return (code, response.text().await.unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("the operator's health endpoint never answered");
    }

    /// Stops the operator as Kubernetes does (SIGTERM) and waits for it to exit.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, as the kubelet does, and waits at most `grace` (the pod's
    /// terminationGracePeriodSeconds) for the process to exit: its exit status, or `None`
    /// if it was still running then (the kubelet would have killed it).
    pub fn terminate_within(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = std::time::Instant::now() + grace;
        while std::time::Instant::now() < until {
            if let Some(status) = self.child.try_wait().expect("wait for the operator") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Kills the operator with SIGKILL, as a crash or the OOM killer would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has exited (a crash, or a deliberate exit such as a lost Lease).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }
}

impl Operator {
    fn keep_metrics(&self, text: &str) {
        if let Some(dir) = super::leak::dir("metrics") {
            let name = format!("{}.txt", uuid::Uuid::new_v4().simple());
            let _ = std::fs::write(dir.join(name), text);
        }
    }

    /// `/metrics` as the operator ends, with a plain blocking request: Drop cannot await.
    fn final_metrics(&self) -> Option<String> {
        use std::io::{Read as _, Write as _};
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.health_port));
        let mut stream =
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        Some(response)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(text) = self.final_metrics() {
            self.keep_metrics(&text);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The log stays for the run's leak scan (under .testenv/leak-scan/operator-logs).
        if std::thread::panicking() {
            eprintln!("operator log kept at {}", self.log_file.display());
        }
    }
}

/// A VaultSecret from JSON `spec`.
pub fn vault_secret(name: &str, spec: serde_json::Value) -> VaultSecret {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "vaultsync.io/v1alpha1",
        "kind": "VaultSecret",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("a VaultSecret")
}

/// The condition that says how the last sync ended: `Refreshed` while `Ready` is True (a
/// refresh may have failed since this generation synced), otherwise `Ready` (a first
/// sync, a spec change, or a Secret that lost its data).
pub fn outcome(vsec: &VaultSecret) -> Option<&Condition> {
    let status = vsec.status.as_ref()?;
    match status.ready_condition() {
        Some(ready) if ready.status == "True" => status.refreshed_condition().or(Some(ready)),
        ready => ready,
    }
}

/// Polls until the last outcome (see [`outcome`]) satisfies `check(status, reason,
/// message)`, returning the object. The bound only keeps a broken run from hanging; it
/// asserts nothing about speed.
pub async fn wait_ready(
    api: &Api<VaultSecret>,
    name: &str,
    what: &str,
    check: impl Fn(&str, &str, &str) -> bool,
) -> VaultSecret {
    wait_for(api, name, what, |vsec| {
        outcome(vsec).is_some_and(|c| check(&c.status, &c.reason, &c.message))
    })
    .await
}

/// Creates VaultSecret `name` from JSON `spec` and waits until it is `Ready=True`.
pub async fn create_synced(api: &Api<VaultSecret>, name: &str, spec: serde_json::Value) {
    api.create(&PostParams::default(), &vault_secret(name, spec))
        .await
        .expect("create the VaultSecret");
    wait_ready(api, name, "Ready", |status, _, _| status == "True").await;
}

/// Asks for a refresh (`vaultsync.io/refresh` set to `value`) and waits until the operator
/// handled it (`status.lastRefreshRequest`), so that whatever that reconcile decided is in
/// status.
pub async fn refresh(s: &Setup, name: &str, value: &str) -> VaultSecret {
    s.vsecs
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {vaultsync::api::REFRESH_ANNOTATION: value}}
            })),
        )
        .await
        .expect("annotate the VaultSecret");
    wait_for(&s.vsecs, name, "the refresh handled", |v| {
        v.status
            .as_ref()
            .and_then(|st| st.last_refresh_request.as_deref())
            == Some(value)
    })
    .await
}

/// Polls until `check` holds for the VaultSecret, returning it.
pub async fn wait_for(
    api: &Api<VaultSecret>,
    name: &str,
    what: &str,
    check: impl Fn(&VaultSecret) -> bool,
) -> VaultSecret {
    let mut last = None;
    for _ in 0..480 {
        let vsec = api.get_opt(name).await.expect("read the VaultSecret");
        if let Some(vsec) = vsec {
            if check(&vsec) {
                return vsec;
            }
            last = vsec.status.map(|s| s.conditions);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("VaultSecret {name} never reached {what}; last conditions: {last:?}");
}

/// Polls until the last outcome has `reason` (`Synced`: the last refresh succeeded).
pub async fn wait_reason(api: &Api<VaultSecret>, name: &str, reason: &str) -> VaultSecret {
    wait_ready(api, name, reason, |_, r, _| r == reason).await
}

/// The condition `type_` of `vsec`, as `(status, reason, message)`.
pub fn condition_of(vsec: &VaultSecret, type_: &str) -> Option<(String, String, String)> {
    let c = vsec.status.as_ref()?.condition(type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// How many times a Warning Event with `reason` was published about `name`, counting the
/// repeats an Event series aggregates.
pub async fn warnings(client: &Client, namespace: &str, name: &str, reason: &str) -> i32 {
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), namespace);
    let list = events.list(&Default::default()).await.expect("list Events");
    list.items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

/// A counter of the operator's `/metrics` text (a `name{labels} value` line, or a bare
/// `name value`), 0 when absent.
pub fn metric(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Events about one object, as `(type, reason, note)`.
pub async fn events_of(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Vec<(String, String, String)> {
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), namespace);
    let list = events.list(&Default::default()).await.expect("list Events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// Polls [`events_of`] for up to 120 s until `found` holds, and returns the Events it
/// held then. An Event is published after the write or status it reports, so a test that
/// has just seen the write may list the Events before it lands.
///
/// # Panics
/// When `found` never holds, naming `what` and the last Events listed.
pub async fn wait_events_of(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    found: impl Fn(&[(String, String, String)]) -> bool,
) -> Vec<(String, String, String)> {
    let mut events = Vec::new();
    for _ in 0..480 {
        events = events_of(client, namespace, name).await;
        if found(&events) {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("{name} never had {what}: {events:?}");
}
