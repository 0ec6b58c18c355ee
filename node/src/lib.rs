//! wasp-node: the node agent of wasp's local cluster. It registers a Node and runs the pods of
//! known images as local processes, standing in for the kubelet, the scheduler, kube-proxy and a
//! volume provisioner (docs/node.md). The tests embed it as a library ([`LocalNode`]); the
//! `wasp-node` binary runs it against any cluster ([`run`]).
#![forbid(unsafe_code)]

pub mod accounts;
pub mod config;
pub mod env;
pub mod hosts;
pub mod images;
pub mod kubelet;
mod local_node;
pub mod policy;
pub mod procs;
pub mod provisioner;
pub mod proxy;
mod start_queue;
pub mod volumes;
mod watch;
mod worker;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use accounts::ApiAccess;
pub use config::Config;
pub use images::{Image, Images};
pub use local_node::{
    DEFAULT_PARALLEL_STARTS, LocalNode, NODE_LABEL, NodeOptions, ProcessEnd, ProcessRun,
};
pub use policy::Backoff;

/// Runs a node with `config` until `shutdown` fires, then stops its processes (SIGTERM, 5 s,
/// SIGKILL) and removes the Node object. Pods stay in the API.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let images = config.images()?;
    let kube_config = config.kube_config().await?;
    let opts = config.node_options();
    let node = LocalNode::start_from_config(kube_config, images, opts).await?;
    info!(node = %node.name(), state_dir = %node.state_dir().display(), "wasp-node is running");
    shutdown.cancelled().await;
    info!(node = %node.name(), "stopping");
    node.shutdown().await.context("stopping the node")
}
