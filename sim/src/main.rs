//! `wasp-sim`: runs the simulator standalone.

use anyhow::Context as _;
use clap::Parser as _;
use wasp_sim::config::Config;
use wasp_sim::crypto::{generate_key_pair, key_pair_from_private};
use wasp_sim::{Sim, SimKeys};

fn key(hex: Option<&str>, what: &str) -> anyhow::Result<wacore::libsignal::protocol::KeyPair> {
    match hex {
        None => Ok(generate_key_pair()),
        Some(h) => {
            let bytes = data_encoding::HEXLOWER_PERMISSIVE
                .decode(h.as_bytes())
                .with_context(|| format!("{what} is not hex"))?;
            key_pair_from_private(&bytes).with_context(|| format!("{what} is not a private key"))
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log))
        .init();
    let keys = SimKeys {
        server_static: key(config.static_key.as_deref(), "--static-key")?,
        root: key(config.root_key.as_deref(), "--root-key")?,
    };
    let sim = Sim::new(keys).context("creating the simulator")?;
    let running = wasp_sim::start(sim, config.listen, config.control_listen).await?;
    tracing::info!(ws = %running.ws_url, control = %running.control_url, "wasp-sim ready");
    shutdown_signal().await?;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// SIGINT or SIGTERM (what a pod's grace period sends).
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
