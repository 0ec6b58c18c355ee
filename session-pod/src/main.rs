use anyhow::Context as _;
use clap::Parser as _;
use wasp_session_pod::{Config, Listeners};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _filter = wasp_common::telemetry::init(wasp_common::telemetry::LogFormat::Json);
    let listeners = Listeners {
        control: tokio::net::TcpListener::bind(config.control_addr)
            .await
            .with_context(|| format!("binding {}", config.control_addr))?,
        admin: tokio::net::TcpListener::bind(config.admin_addr)
            .await
            .with_context(|| format!("binding {}", config.admin_addr))?,
    };
    tracing::info!(
        control = %listeners.control.local_addr()?,
        admin = %listeners.admin.local_addr()?,
        "wasp-session-pod listening"
    );
    let shutdown = wasp_common::shutdown::on_signal();
    wasp_session_pod::run(config, listeners, shutdown)
        .await
        .context("session pod")?;
    Ok(())
}
