//! Azure test doubles for vaultsync's local environment (dev only): an Entra token
//! endpoint for workload identity federation, an App Service style managed identity
//! endpoint, Key Vault gateways in front of Key Vault emulators, the project's own Key
//! Vault secrets emulator (`keyvault`), and an admin API.

mod admin;
mod gateway;
mod identity;
mod keyvault;
mod oidc;
mod state;
mod tls;
mod tokens;

use anyhow::Context as _;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(about = "Azure test doubles for the vaultsync local environment")]
struct Args {
    /// TLS listener for the Entra token endpoint and the managed identity endpoint.
    #[arg(long)]
    identity_listen: SocketAddr,
    /// TLS listener for a Key Vault gateway (repeatable); the i-th forwards to the i-th
    /// `--upstream`, and answers 502 when it has none.
    #[arg(long, required = true)]
    vault_listen: Vec<SocketAddr>,
    /// Plain HTTP listener for the admin API (loopback only).
    #[arg(long)]
    admin_listen: SocketAddr,
    #[arg(long)]
    tls_cert: PathBuf,
    #[arg(long)]
    tls_key: PathBuf,
    /// CA trusted for the ServiceAccount issuer and the emulator.
    #[arg(long)]
    ca_file: PathBuf,
    /// The Kubernetes ServiceAccount issuer whose tokens federated credentials accept.
    #[arg(long)]
    issuer: String,
    /// The only tenant the token endpoint knows.
    #[arg(long)]
    tenant_id: String,
    /// The secret the managed identity endpoint expects in `X-IDENTITY-HEADER`.
    #[arg(long, env = "AZURE_DOUBLES_IDENTITY_HEADER", hide_env_values = true)]
    identity_header: String,
    /// The Key Vault emulator a gateway forwards authorized requests to (repeatable,
    /// paired in order with `--vault-listen`).
    #[arg(long)]
    upstream: Vec<reqwest::Url>,
    /// TLS listener for one Key Vault secrets emulator vault (repeatable; each listener is
    /// an independent vault with its own state).
    #[arg(long)]
    keyvault_listen: Vec<SocketAddr>,
    /// Soft-delete retention of the emulated vaults, 7 to 90 days.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(7..=90))]
    keyvault_recoverable_days: u32,
    /// How long the emulated vaults take to settle after a delete, recover or purge, in
    /// milliseconds (0 = at once). See the `keyvault` module.
    #[arg(long, default_value_t = 0)]
    keyvault_settle_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a TLS crypto provider was already installed"))?;
    let args = Args::parse();
    if args.upstream.len() > args.vault_listen.len() {
        anyhow::bail!(
            "{} --upstream given for {} --vault-listen; they pair in order",
            args.upstream.len(),
            args.vault_listen.len()
        );
    }
    if !args.admin_listen.ip().is_loopback() {
        anyhow::bail!(
            "the admin API must listen on loopback, not {}",
            args.admin_listen
        );
    }

    let ca =
        std::fs::read(&args.ca_file).with_context(|| format!("read {}", args.ca_file.display()))?;
    let ca = reqwest::Certificate::from_pem(&ca).context("parse the CA file")?;
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("build the HTTP client")?;

    let identity_addr = args.identity_listen;
    let authority = format!("https://{identity_addr}");
    let registry = Arc::new(state::Registry::default());
    let tokens = Arc::new(tokens::TokenIssuer::new(format!(
        "{authority}/{}/v2.0",
        args.tenant_id
    )));

    let identity_state = Arc::new(identity::IdentityState {
        registry: registry.clone(),
        tokens: tokens.clone(),
        verifier: oidc::IssuerVerifier::new(args.issuer.clone(), http.clone()),
        tenant_id: args.tenant_id.clone(),
        identity_header: args.identity_header.clone(),
    });
    let authorization_uri = format!("{authority}/{}", args.tenant_id);

    let acceptor = tls::acceptor(&args.tls_cert, &args.tls_key)?;
    let bind = |addr: SocketAddr, what: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind the {what} listener on {addr}"))
    };
    let identity_listener = bind(args.identity_listen, "identity").await?;
    let mut gateway_listeners = Vec::new();
    for addr in &args.vault_listen {
        gateway_listeners.push(bind(*addr, "vault gateway").await?);
    }
    let mut keyvault_listeners = Vec::new();
    for addr in &args.keyvault_listen {
        keyvault_listeners.push(bind(*addr, "Key Vault emulator").await?);
    }
    let admin_listener = bind(args.admin_listen, "admin").await?;

    let identity_router = identity::router(identity_state);
    let identity_registry = registry.clone();
    let identity_service = hyper::service::service_fn(move |req| {
        identity::handle(identity_router.clone(), identity_registry.clone(), req)
    });
    tokio::spawn(tls::serve(
        identity_listener,
        acceptor.clone(),
        identity_service,
    ));
    for (i, listener) in gateway_listeners.into_iter().enumerate() {
        let gateway = Arc::new(gateway::Gateway {
            registry: registry.clone(),
            tokens: tokens.clone(),
            authorization_uri: authorization_uri.clone(),
            upstream: args.upstream.get(i).cloned(),
            http: http.clone(),
        });
        let service = hyper::service::service_fn(move |req| gateway.clone().handle(req));
        tokio::spawn(tls::serve(listener, acceptor.clone(), service));
    }
    let keyvault_config = keyvault::Config {
        recoverable_days: args.keyvault_recoverable_days,
        settle_ms: args.keyvault_settle_ms,
    };
    for (addr, listener) in args.keyvault_listen.iter().zip(keyvault_listeners) {
        let vault = Arc::new(keyvault::Vault::new(
            keyvault_config,
            authorization_uri.clone(),
            addr.to_string(),
        ));
        let service =
            hyper::service::service_fn(move |req| keyvault::api::handle(vault.clone(), req));
        tokio::spawn(tls::serve(listener, acceptor.clone(), service));
    }
    tracing::info!(
        identity = %args.identity_listen,
        vault = ?args.vault_listen,
        admin = %args.admin_listen,
        issuer = %args.issuer,
        upstream = ?args.upstream.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        keyvault = ?args.keyvault_listen,
        keyvault_recoverable_days = args.keyvault_recoverable_days,
        keyvault_settle_ms = args.keyvault_settle_ms,
        "azure doubles listening"
    );

    let admin = axum::serve(admin_listener, admin::router(registry, tokens));
    tokio::select! {
        result = admin => result.context("admin server")?,
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
