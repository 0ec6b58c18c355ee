//! Command-line / environment configuration of the `wasp-sim` binary.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "wasp-sim",
    about = "A WhatsApp Web simulator speaking the real wire protocol"
)]
pub struct Config {
    /// Where clients connect (`ws://<addr>/ws/chat`).
    #[arg(long, env = "WASP_SIM_LISTEN", default_value = "127.0.0.1:8480")]
    pub listen: SocketAddr,
    /// The HTTP/JSON control API. Must be a loopback address.
    #[arg(
        long,
        env = "WASP_SIM_CONTROL_LISTEN",
        default_value = "127.0.0.1:8481"
    )]
    pub control_listen: SocketAddr,
    /// The HTTPS media server (uploads, downloads); `media_conn` names it as the media host.
    /// Its certificate chains to a CA the simulator makes, served at
    /// `GET /sim/media-ca.pem` on `--listen`.
    #[arg(long, env = "WASP_SIM_MEDIA_LISTEN", default_value = "127.0.0.1:8482")]
    pub media_listen: SocketAddr,
    /// Hex of the server's 32-byte static Noise private key. Keep it stable across restarts
    /// so clients keep resuming with IK; generated when absent.
    #[arg(long, env = "WASP_SIM_STATIC_KEY")]
    pub static_key: Option<String>,
    /// Hex of the 32-byte root private key that signs the certificate chain.
    #[arg(long, env = "WASP_SIM_ROOT_KEY")]
    pub root_key: Option<String>,
    /// Keep accounts, devices, contacts and queues here across restarts (JSON). Loaded at
    /// start when present (its keys win over --static-key/--root-key), saved every few seconds
    /// when something changed and at shutdown.
    #[arg(long, env = "WASP_SIM_STATE_FILE")]
    pub state_file: Option<std::path::PathBuf>,
    /// Log filter (`tracing` env-filter syntax).
    #[arg(long, env = "WASP_SIM_LOG", default_value = "info")]
    pub log: String,
}
