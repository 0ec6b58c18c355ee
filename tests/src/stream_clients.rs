//! Clients of wasp-api's event streams, as a CRM or browser uses them: seed 003's WebSocket
//! (`/?token=`) and seed 000's Server-Sent Events. Each waits at most [`STREAM_WAIT`] for an event.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long a client waits for the next event before failing.
pub const STREAM_WAIT: Duration = Duration::from_secs(30);
/// How long `next_of` skips other events before it gives up on the kind it waits for.
pub const KIND_WAIT: Duration = Duration::from_secs(60);

/// The events a `next_of` skipped: how many, and the last few, for its error.
#[derive(Default)]
struct Skipped {
    count: usize,
    last: std::collections::VecDeque<String>,
}

impl Skipped {
    fn push(&mut self, ev: &Value) {
        self.count += 1;
        let mut text = ev.to_string();
        text.truncate(300);
        if self.last.len() == 5 {
            self.last.pop_front();
        }
        self.last.push_back(text);
    }

    fn fail<T>(&self, kind: &str) -> Result<T> {
        bail!(
            "no {kind:?} event within {KIND_WAIT:?}; {} others came, the last: {:?}",
            self.count,
            self.last
        )
    }
}

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

    /// The next event of type `kind`, skipping others, within [`KIND_WAIT`] in all: a stream
    /// that keeps sending other events (a pod retrying, its `error`s) fails the wait with what
    /// it sent instead of holding the test forever.
    pub async fn next_of(&mut self, kind: &str) -> Result<Value> {
        let mut skipped = Skipped::default();
        let found = tokio::time::timeout(KIND_WAIT, async {
            loop {
                let ev = self.next().await?;
                if ev["type"] == kind {
                    return Ok(ev);
                }
                skipped.push(&ev);
            }
        })
        .await;
        found.unwrap_or_else(|_| skipped.fail(kind))
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

    /// As [`WsClient::next_of`].
    pub async fn next_of(&mut self, kind: &str) -> Result<(Option<String>, Value)> {
        let mut skipped = Skipped::default();
        let found = tokio::time::timeout(KIND_WAIT, async {
            loop {
                let (id, ev) = self.next().await?;
                if ev["type"] == kind {
                    return Ok((id, ev));
                }
                skipped.push(&ev);
            }
        })
        .await;
        found.unwrap_or_else(|_| skipped.fail(kind))
    }
}

/// A `message` event a [`ResumingWs`] received.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: String,
    /// The WhatsApp message id (`data.id.id`).
    pub id: String,
    /// When the frame was read.
    pub at: std::time::Instant,
    /// The same moment on the wall clock, Unix ms: compared with the event id's XADD time.
    pub at_unix_ms: i64,
    /// The event's durable id (`<XADD ms>-<seq>`).
    pub event_id: Option<String>,
}

/// What a [`ResumingWs`] saw.
#[derive(Debug, Clone, Default)]
pub struct StreamLog {
    /// `message` events in arrival order.
    pub messages: Vec<Received>,
    /// `qr` events (a session that resumes without a scan shows none).
    pub qrs: usize,
    /// Sockets opened again after a drop, each with `&since=<last id>`.
    pub resumes: usize,
    /// Why sockets ended.
    pub drops: Vec<String>,
    /// The newest durable event id.
    pub last_id: Option<String>,
}

impl StreamLog {
    /// How often a message with `body` arrived.
    pub fn count(&self, body: &str) -> usize {
        self.messages.iter().filter(|m| m.body == body).count()
    }

    /// The first arrival of `body`.
    pub fn first(&self, body: &str) -> Option<&Received> {
        self.messages.iter().find(|m| m.body == body)
    }
}

/// A CRM's WebSocket as docs/api.md tells clients to keep one: read in a task of its own, and
/// whenever the socket ends, opened again after `resume_after` with `&since=<last event id>`,
/// so nothing written while it had no socket is missed. Stopped when dropped.
pub struct ResumingWs {
    log: std::sync::Arc<std::sync::Mutex<StreamLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl ResumingWs {
    /// Reads `ws` (already past the event whose id is `last_id`); `url` is the socket's URL
    /// without `since` (it has `?token=`).
    pub fn start(
        ws: WsClient,
        url: String,
        last_id: Option<String>,
        resume_after: Duration,
    ) -> Self {
        let log = std::sync::Arc::new(std::sync::Mutex::new(StreamLog {
            last_id,
            ..StreamLog::default()
        }));
        let task = tokio::spawn({
            let log = log.clone();
            async move {
                let mut ws = Some(ws);
                loop {
                    let Some(socket) = ws.as_mut() else {
                        tokio::time::sleep(resume_after).await;
                        let since = lock(&log).last_id.clone();
                        let url = match since {
                            Some(id) => format!("{url}&since={id}"),
                            None => url.clone(),
                        };
                        // No replica behind the Service yet: back off again.
                        if let Ok(s) = WsClient::connect(&url).await {
                            ws = Some(s);
                            lock(&log).resumes += 1;
                        }
                        continue;
                    };
                    // No deadline while idle: a connected session may say nothing for minutes.
                    let next = socket.ws.next().await;
                    let at = std::time::Instant::now();
                    let at_unix_ms = jiff::Timestamp::now().as_millisecond();
                    let text = match next {
                        Some(Ok(WsMessage::Text(t))) => t,
                        Some(Ok(WsMessage::Close(f))) => {
                            lock(&log).drops.push(format!("closed: {f:?}"));
                            ws = None;
                            continue;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => {
                            lock(&log).drops.push(e.to_string());
                            ws = None;
                            continue;
                        }
                        None => {
                            lock(&log).drops.push("ended".into());
                            ws = None;
                            continue;
                        }
                    };
                    let Ok(ev) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    let mut got = lock(&log);
                    if let Some(id) = ev["id"].as_str() {
                        got.last_id = Some(id.to_owned());
                    }
                    match ev["type"].as_str() {
                        Some("message") => got.messages.push(Received {
                            body: ev["data"]["body"].as_str().unwrap_or_default().to_owned(),
                            id: ev["data"]["id"]["id"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            at,
                            at_unix_ms,
                            event_id: ev["id"].as_str().map(str::to_owned),
                        }),
                        Some("qr") => got.qrs += 1,
                        _ => {}
                    }
                }
            }
        });
        Self { log, task }
    }

    /// What it saw so far.
    pub fn log(&self) -> StreamLog {
        lock(&self.log).clone()
    }

    /// Stops reading (the socket closes); what it saw.
    pub fn stop(&self) -> StreamLog {
        self.task.abort();
        self.log()
    }

    /// Runs `f` on what it saw so far, without copying it.
    pub fn with_log<T>(&self, f: impl FnOnce(&StreamLog) -> T) -> T {
        f(&lock(&self.log))
    }
}

impl Drop for ResumingWs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
