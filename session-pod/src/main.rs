use anyhow::Context as _;
use clap::Parser as _;
use wasp_session_pod::{Config, Listeners};

// One thread: a pod serves one user, and every worker thread costs its stack and a malloc
// arena of its own (measured in docs/benchmarks.md). The client runs on `PodRuntime`, which
// yields in its long loops. Blocking work (rare: file reads) gets a short-lived helper thread.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // Before anything allocates on another thread (docs/benchmarks.md: memory per session).
    wasp_malloc::one_arena();
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
