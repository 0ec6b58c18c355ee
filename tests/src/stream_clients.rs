//! Clients of wasp-api's event streams, as a CRM or browser uses them: seed 003's WebSocket
//! (`/?token=`) and seed 000's Server-Sent Events. Each waits at most [`STREAM_WAIT`] for an event.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long a client waits for the next event before failing.
pub const STREAM_WAIT: Duration = Duration::from_secs(30);

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A seed-003 WebSocket client.
pub struct WsClient {
    ws: WsStream,
}

impl WsClient {
    pub async fn connect(url: &str) -> Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("WebSocket {url}"))?;
        Ok(Self { ws })
    }

    /// The next event frame (pings skipped); fails on close or after [`STREAM_WAIT`].
    pub async fn next(&mut self) -> Result<Value> {
        Ok(serde_json::from_str(&self.next_text().await?)?)
    }

    /// The next event frame's text as sent, byte for byte.
    pub async fn next_text(&mut self) -> Result<String> {
        loop {
            let msg = tokio::time::timeout(STREAM_WAIT, self.ws.next())
                .await
                .context("no WebSocket event in time")?
                .context("WebSocket ended")??;
            match msg {
                WsMessage::Text(t) => return Ok(t.as_str().to_owned()),
                WsMessage::Close(f) => bail!("WebSocket closed: {f:?}"),
                _ => {}
            }
        }
    }

    /// The next event of type `kind`, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Result<Value> {
        loop {
            let ev = self.next().await?;
            if ev["type"] == kind {
                return Ok(ev);
            }
        }
    }

    /// Waits for the server's close frame; its code.
    pub async fn closed(&mut self, within: Duration) -> Result<u16> {
        loop {
            let msg = tokio::time::timeout(within, self.ws.next())
                .await
                .context("socket not closed in time")?;
            match msg {
                Some(Ok(WsMessage::Close(Some(f)))) => return Ok(f.code.into()),
                Some(Ok(WsMessage::Close(None))) | None => return Ok(1005),
                Some(Err(e)) => bail!("socket error: {e}"),
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A Server-Sent Events client (seed 000's `EventSource`).
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    pub async fn connect(url: &str, bearer: &str, last_event_id: Option<&str>) -> Result<Self> {
        let mut req = reqwest::Client::new()
            .get(url)
            .bearer_auth(bearer)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let response = req.send().await?;
        anyhow::ensure!(response.status() == 200, "SSE {url}: {}", response.status());
        Ok(Self {
            response,
            buffer: String::new(),
        })
    }

    /// The next event: `(sse id, JSON data)`.
    pub async fn next(&mut self) -> Result<(Option<String>, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut data) = (None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment or retry hint
                }
                return Ok((id, serde_json::from_str(&data)?));
            }
            let chunk = tokio::time::timeout(STREAM_WAIT, self.response.chunk())
                .await
                .context("no SSE event in time")??
                .context("SSE stream ended")?;
            self.buffer.push_str(std::str::from_utf8(&chunk)?);
        }
    }

    pub async fn next_of(&mut self, kind: &str) -> Result<(Option<String>, Value)> {
        loop {
            let (id, ev) = self.next().await?;
            if ev["type"] == kind {
                return Ok((id, ev));
            }
        }
    }
}
