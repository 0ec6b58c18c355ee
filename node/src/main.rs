use clap::Parser;
use wasp_common::telemetry::{self, LogFormat};
use wasp_node::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(LogFormat::from_name(&config.log_format));
    let shutdown = wasp_common::shutdown::on_signal();
    wasp_node::run(config, shutdown).await
}
