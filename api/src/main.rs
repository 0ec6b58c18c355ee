use anyhow::Context as _;
use clap::Parser;
use wasp_api::Config;
use wasp_common::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(LogFormat::from_name(&config.log_format));
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let addr = std::net::SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let admin = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding the admin port {}", config.admin_addr))?;
    let shutdown = wasp_common::shutdown::on_signal();
    wasp_api::run(config, client, listener, admin, shutdown).await?;
    Ok(())
}
