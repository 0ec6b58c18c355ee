//! Starting the simulator: the WebSocket endpoint and the control API on their listeners.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::connection;
use crate::control_api;
use crate::media_server;
use crate::sim::Sim;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the control API must listen on loopback, not {0}")]
    NotLoopback(SocketAddr),
    #[error("media server TLS: {0}")]
    Tls(#[from] crate::media_server::TlsError),
}

/// A running simulator.
pub struct Running {
    pub sim: Arc<Sim>,
    /// `ws://…/ws/chat`, what clients connect to.
    pub ws_url: String,
    /// `http://…`, the control API base.
    pub control_url: String,
    /// `https://127.0.0.1:<port>`, the media server (what `media_conn` names as its host).
    pub media_url: String,
    /// The CA certificate (PEM) the media server's certificate chains to; also served at
    /// `GET /sim/media-ca.pem` on the WebSocket listener.
    pub media_ca_pem: String,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, then drops every live socket (clients see a lost connection).
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        self.sim.drop_all_sockets();
        for t in std::mem::take(&mut self.tasks) {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.sim.drop_all_sockets();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds the three listeners — WebSocket (`/ws/chat`, `/sim/media-ca.pem`), control API and
/// HTTPS media server — (port 0 picks free ports) and serves until shut down.
pub async fn start(
    sim: Arc<Sim>,
    listen: SocketAddr,
    control_listen: SocketAddr,
    media_listen: SocketAddr,
) -> Result<Running, ServerError> {
    if !control_listen.ip().is_loopback() {
        return Err(ServerError::NotLoopback(control_listen));
    }
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })
    };
    let ws_listener = bind(listen).await?;
    let control_listener = bind(control_listen).await?;
    let media_listener = bind(media_listen).await?;
    let ws_addr = ws_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
    let control_addr = control_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: control_listen,
            source,
        })?;
    let media_addr = media_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: media_listen,
            source,
        })?;
    // Clients are told to reach the media server at this host (loopback when it listens on
    // every address).
    let media_host = if media_addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], media_addr.port()))
    } else {
        media_addr
    };
    sim.media().set_host(media_host.to_string());
    let shutdown = CancellationToken::new();

    let ws_app = Router::new()
        .route("/ws/chat", get(ws_upgrade))
        .route("/sim/media-ca.pem", get(media_server::ca_pem))
        .with_state(sim.clone());
    let control_app = control_api::router(sim.clone());
    let serve = |listener: TcpListener, app: Router, token: CancellationToken| {
        // WhatsApp frames and control answers are small writes that must go out at once:
        // with Nagle on, a frame written while an earlier one is unacknowledged waits for the
        // peer's delayed ACK (≈40 ms on Linux loopback).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!("TCP_NODELAY: {e}");
            }
        });
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                tracing::error!("server stopped: {e}");
            }
        })
    };
    let (media_tls, acceptor) =
        media_server::TlsListener::new(media_listener, sim.media_ca().server_config()?).map_err(
            |source| ServerError::Bind {
                addr: media_listen,
                source,
            },
        )?;
    let media_app = media_server::router(sim.clone());
    let media_token = shutdown.clone();
    let media_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(media_tls, media_app)
            .with_graceful_shutdown(media_token.cancelled_owned())
            .await
        {
            tracing::error!("media server stopped: {e}");
        }
    });
    let tasks = vec![
        serve(ws_listener, ws_app, shutdown.clone()),
        serve(control_listener, control_app, shutdown.clone()),
        acceptor,
        media_task,
    ];
    Ok(Running {
        media_url: format!("https://{media_host}"),
        media_ca_pem: sim.media_ca_pem().to_owned(),
        sim,
        ws_url: format!("ws://{ws_addr}/ws/chat"),
        control_url: format!("http://{control_addr}"),
        shutdown,
        tasks,
    })
}

async fn ws_upgrade(State(sim): State<Arc<Sim>>, ws: WebSocketUpgrade) -> Response {
    if sim.refusing_connections() {
        // What a client sees while WhatsApp's edge is unreachable or shedding load.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    ws.on_upgrade(move |socket| connection::serve(sim, socket))
}
