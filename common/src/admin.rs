//! The admin port every wasp binary serves, apart from its public port: `/metrics`
//! (OpenMetrics text), `/healthz` (the process is alive) and `/readyz` (it can do its work; what
//! that means is the binary's to say through the `ready` flag).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Renders the binary's metrics registry.
pub type EncodeMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Says whether the binary can do its work now (`/readyz`).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
pub struct AdminPort {
    encode: EncodeMetrics,
    ready: Readiness,
}

impl AdminPort {
    /// Ready while `ready` is set.
    pub fn new(
        encode: impl Fn() -> String + Send + Sync + 'static,
        ready: Arc<AtomicBool>,
    ) -> Self {
        Self::with_readiness(encode, move || ready.load(Ordering::Relaxed))
    }

    /// Ready while `ready()` says so (asked at every probe).
    pub fn with_readiness(
        encode: impl Fn() -> String + Send + Sync + 'static,
        ready: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            encode: Arc::new(encode),
            ready: Arc::new(ready),
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(self)
    }

    /// Serves until `stop` fires.
    pub async fn serve(
        self,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    }
}

async fn metrics(State(port): State<AdminPort>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        (port.encode)(),
    )
}

async fn readyz(State(port): State<AdminPort>) -> impl IntoResponse {
    if (port.ready)() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let ready = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(
            AdminPort::new(|| "up 1\n".into(), ready.clone()).serve(listener, stop.clone()),
        );
        assert!(http_get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(http_get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::Relaxed);
        assert!(http_get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(http_get(addr, "/metrics").await.ends_with("up 1\n"));
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
