//! The `vaultsync` binary: flag parsing and wiring only; the logic lives in the library.
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "vaultsync", version, about = "Syncs Azure Key Vault secrets into Kubernetes Secrets")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the VaultSecret CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", vaultsync::crd::crd_yaml()?),
    }
    Ok(())
}
