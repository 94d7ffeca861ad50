//! The `vaultsync` binary: flag parsing and wiring only; the logic lives in the library.
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "vaultsync",
    version,
    about = "Syncs Azure Key Vault secrets into Kubernetes Secrets"
)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
