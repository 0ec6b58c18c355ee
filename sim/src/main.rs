//! `wasp-sim`: runs the simulator standalone.

use anyhow::Context as _;
use clap::Parser as _;
use wasp_sim::config::Config;
use wasp_sim::crypto::{generate_key_pair, key_pair_from_private};
use wasp_sim::persistence;
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let snapshot = match &config.state_file {
        Some(path) => persistence::load(path)?,
        None => None,
    };
    let sim = match &snapshot {
        Some(snap) => {
            tracing::info!(
                accounts = snap.accounts.len(),
                contacts = snap.contacts.len(),
                "state restored"
            );
            Sim::from_snapshot(snap)?
        }
        None => Sim::new(SimKeys {
            server_static: key(config.static_key.as_deref(), "--static-key")?,
            root: key(config.root_key.as_deref(), "--root-key")?,
        })
        .context("creating the simulator")?,
    };
    let running = wasp_sim::start(
        sim.clone(),
        config.listen,
        config.control_listen,
        config.media_listen,
    )
    .await?;
    tracing::info!(
        ws = %running.ws_url,
        control = %running.control_url,
        media = %running.media_url,
        "wasp-sim ready"
    );
    let saver = config.state_file.clone().map(|path| {
        let sim = sim.clone();
        tokio::spawn(async move {
            let mut saved = sim.change_count();
            let mut tick = tokio::time::interval(SAVE_EVERY);
            loop {
                tick.tick().await;
                let now = sim.change_count();
                if now != saved {
                    match save(&sim, &path).await {
                        Ok(()) => saved = now,
                        Err(e) => tracing::warn!("saving state: {e:#}"),
                    }
                }
            }
        })
    });
    shutdown_signal().await?;
    tracing::info!("shutting down");
    if let Some(saver) = saver {
        saver.abort();
    }
    running.shutdown().await;
    if let Some(path) = &config.state_file {
        save(&sim, path).await?;
    }
    Ok(())
}

/// How often changed state is written to the state file.
const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

async fn save(sim: &Sim, path: &std::path::Path) -> anyhow::Result<()> {
    let snap = sim.snapshot().await?;
    persistence::save(path, &snap).with_context(|| format!("writing {}", path.display()))
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
