//! helm for the tests that install the chart (`deploy/charts/vaultsync`): the binary built
//! from its Go module into the cache on first use (hack/build-helm.sh), and a release that
//! is uninstalled when dropped.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The chart's directory in the repository.
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/charts/vaultsync");

/// Runs `command` with `input` on stdin; panics with its output when it fails. Returns stdout.
pub fn run(mut command: Command, input: Option<&str>) -> String {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {description}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(input.unwrap_or_default().as_bytes())
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{description} failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The path of helm, built from its Go module into the cache on first use.
pub fn helm_binary() -> &'static str {
    static HELM: OnceLock<String> = OnceLock::new();
    HELM.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/build-helm.sh");
        run(Command::new(script), None).trim().to_owned()
    })
}

/// Runs helm with `args`; panics with its output when it fails. Returns stdout.
pub fn helm(args: &[&str]) -> String {
    let mut command = Command::new(helm_binary());
    command.args(args);
    run(command, None)
}

/// A release of the chart in `namespace`; uninstalled when dropped (also when a test
/// fails), since its ClusterRoles and admission policy outlive the namespace.
pub struct Release {
    pub name: String,
    pub namespace: String,
}

impl Release {
    /// `helm install NAME CHART --namespace NAMESPACE` followed by `args` (`--set`,
    /// `--set-json`, ...).
    pub fn install(name: &str, namespace: &str, args: &[&str]) -> Self {
        let mut command = vec!["install", name, CHART, "--namespace", namespace];
        command.extend_from_slice(args);
        helm(&command);
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    /// `helm uninstall --wait`; dropping the release afterwards does nothing.
    pub fn uninstall(&mut self) {
        if !self.name.is_empty() {
            helm(&[
                "uninstall",
                &self.name,
                "--namespace",
                &self.namespace,
                "--wait",
            ]);
            self.name.clear();
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            let _ = Command::new(helm_binary())
                .args(["uninstall", &self.name, "--namespace", &self.namespace])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
