use anyhow::Context as _;

use clap::Parser;
use wasp_common::telemetry::{self, LogFormat};
use wasp_operator::{Config, Handle};

// One thread is plenty for an IO-bound controller, and keeps glibc to one malloc arena: peak RSS
// at 1,000 sessions stays under the 40 MiB target (docs/benchmarks.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // Before any thread starts: blocking helpers (DNS for the Redis URL) would each leave an
    // arena of their own behind.
    wasp_malloc::one_arena();
    let config = Config::parse();
    telemetry::init(LogFormat::from_name(&config.log_format));
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let admin = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding the admin port {}", config.admin_addr))?;
    let shutdown = wasp_common::shutdown::on_signal();
    let handle = Handle::new(&config);
    wasp_operator::run(config, client, admin, handle, shutdown).await?;
    Ok(())
}
