use anyhow::Context as _;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use wasp_common::telemetry::{self, LogFormat};
use wasp_operator::{Config, Handle};

// One thread is plenty for an IO-bound controller, and keeps glibc to one malloc arena: peak RSS
// at 1,000 sessions stays under the 40 MiB target (docs/benchmarks.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(if config.log_format == "text" {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let admin = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding the admin port {}", config.admin_addr))?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            shutdown.cancel();
        }
    });
    let handle = Handle::new(&config);
    wasp_operator::run(config, client, admin, handle, shutdown).await?;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
