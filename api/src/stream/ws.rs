//! Seed 003's WebSocket: `GET /?token=<jwt>[&since=<id>]`, one JSON text frame per event.
//! The socket loop ([`pump`]) is generic over `Sink`/`Stream`, so it is unit-tested without a
//! network.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::StatusCode;
use axum::response::Response;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::event::ClientEvent;
use super::{StreamQuery, events, lifetime, open, parse_since};
use crate::app::AppState;
use crate::auth::extract::StreamUser;
use crate::error::{ApiError, ApiQuery, AuthRefusals, ErrorBody};

/// Server pings keep idle connections open through proxies and find dead peers.
const HEARTBEAT: Duration = Duration::from_secs(25);
/// Close code when the token expires: the client reconnects with a fresh token.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Close code when the event feed ends (Redis lost, replica stopping): reconnect with `since`.
pub const CLOSE_TRY_AGAIN: u16 = 1013;

/// Live events of the caller's session (seed 003): `{type, data, timestamp, id}` text frames;
/// first the session status, then `qr`, `ready`, `message`, `status`, `disconnected`, `error`.
#[utoipa::path(get, path = "/", tag = "events", security(("bearer" = [])),
    params(StreamQuery),
    responses(
        (status = 101, description = "WebSocket of `ClientEvent` JSON frames"),
        (status = 400, description = "Bad `since`", body = ErrorBody),
        AuthRefusals,
        (status = 426, description = "Not a WebSocket handshake", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody)))]
pub async fn websocket(
    State(state): State<AppState>,
    StreamUser(me): StreamUser,
    ApiQuery(query): ApiQuery<StreamQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let since = parse_since(query.since.as_deref())?;
    let upgrade = upgrade.map_err(|_| ApiError::Rejected {
        status: StatusCode::UPGRADE_REQUIRED,
        code: "upgrade_required",
        message: "connect with a WebSocket client: ws://<host>/?token=<jwt>".into(),
    })?;
    let (first, subscription) = open(&state, &me, since).await?;
    let expires = lifetime(&me);
    let metrics = state.auth.metrics.clone();
    let shutdown = state.shutdown.clone();
    Ok(upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket: WebSocket| async move {
            metrics.stream_client("websocket", 1);
            let (sink, incoming) = socket.split();
            let feed = Box::pin(events(subscription));
            let ended = pump(first, feed, sink, incoming, expires, HEARTBEAT, shutdown).await;
            tracing::debug!(?ended, "websocket closed");
            metrics.stream_client("websocket", -1);
        }))
}

/// Why a socket loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client closed or went away.
    ClientGone,
    /// The token expired; closed with [`CLOSE_TOKEN_EXPIRED`].
    TokenExpired,
    /// The event feed ended; closed with [`CLOSE_TRY_AGAIN`].
    FeedEnded,
    /// The API is shutting down; closed with 1012 (service restart).
    Shutdown,
}

fn text(ev: &ClientEvent) -> Message {
    Message::Text(ev.to_json().into())
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Sends `first`, then every event of `feed`, until the client leaves, the token expires
/// (`expires` from now), the feed ends or `shutdown`. Answers nothing the client sends but
/// close (pings are answered by the WebSocket layer).
pub async fn pump<F, Si, St>(
    first: Vec<ClientEvent>,
    mut feed: F,
    mut sink: Si,
    mut incoming: St,
    expires: Option<Duration>,
    heartbeat: Duration,
    shutdown: CancellationToken,
) -> Ended
where
    F: Stream<Item = Arc<ClientEvent>> + Unpin,
    Si: Sink<Message> + Unpin,
    St: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    for ev in &first {
        if sink.send(text(ev)).await.is_err() {
            return Ended::ClientGone;
        }
    }
    let expiry = tokio::time::sleep(expires.unwrap_or(Duration::from_secs(u32::MAX.into())));
    tokio::pin!(expiry);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let (ended, frame) = loop {
        tokio::select! {
            ev = feed.next() => match ev {
                Some(ev) => {
                    if sink.send(text(&ev)).await.is_err() {
                        return Ended::ClientGone;
                    }
                }
                None => break (Ended::FeedEnded, close(CLOSE_TRY_AGAIN, "event feed ended, reconnect with since")),
            },
            msg = incoming.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ended::ClientGone,
                Some(Ok(_)) => {}
            },
            _ = &mut expiry, if expires.is_some() => {
                break (Ended::TokenExpired, close(CLOSE_TOKEN_EXPIRED, "token expired"));
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return Ended::ClientGone;
                }
            }
            _ = shutdown.cancelled() => break (Ended::Shutdown, close(1012, "service restart")),
        }
    };
    let _ = sink.send(frame).await;
    let _ = sink.close().await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use serde_json::{Value, json};

    fn ev(kind: &str, id: Option<&str>) -> ClientEvent {
        ClientEvent {
            kind: kind.into(),
            data: crate::stream::event::raw(&json!({"n": 1})),
            part: 0,
            timestamp: "2026-01-01T00:00:00Z".into(),
            id: id.map(str::to_owned),
        }
    }

    fn frames(rx: &mut mpsc::UnboundedReceiver<Message>) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(m);
        }
        out
    }

    fn json_of(m: &Message) -> Value {
        match m {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("not text: {other:?}"),
        }
    }

    fn close_code(m: &Message) -> u16 {
        match m {
            Message::Close(Some(f)) => f.code,
            other => panic!("not a close frame: {other:?}"),
        }
    }

    #[tokio::test]
    async fn greeting_then_events_then_the_client_closes() {
        let (sink, mut out) = mpsc::unbounded::<Message>();
        let (feed_tx, feed) = mpsc::unbounded::<Arc<ClientEvent>>();
        let (in_tx, incoming) = mpsc::unbounded::<Result<Message, axum::Error>>();
        feed_tx
            .unbounded_send(Arc::new(ev("message", Some("1-0"))))
            .unwrap();
        in_tx
            .unbounded_send(Ok(Message::Text("hello".into())))
            .unwrap();
        let task = tokio::spawn(pump(
            vec![ev("status", None)],
            feed,
            sink,
            incoming,
            None,
            Duration::from_secs(3600),
            CancellationToken::new(),
        ));
        tokio::task::yield_now().await;
        in_tx.unbounded_send(Ok(Message::Close(None))).unwrap();
        assert_eq!(task.await.unwrap(), Ended::ClientGone);
        let got = frames(&mut out);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(json_of(&got[0])["type"], "status");
        assert_eq!(json_of(&got[0])["id"], Value::Null);
        assert_eq!(json_of(&got[1])["type"], "message");
        assert_eq!(json_of(&got[1])["id"], "1-0");
        assert_eq!(json_of(&got[1])["timestamp"], "2026-01-01T00:00:00Z");
        drop(feed_tx);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_closes_with_4001_and_idle_sockets_get_pings() {
        let (sink, mut out) = mpsc::unbounded::<Message>();
        let (_feed_tx, feed) = mpsc::unbounded::<Arc<ClientEvent>>();
        let (_in_tx, incoming) = mpsc::unbounded::<Result<Message, axum::Error>>();
        let ended = pump(
            Vec::new(),
            feed,
            sink,
            incoming,
            Some(Duration::from_secs(60)),
            Duration::from_secs(25),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(ended, Ended::TokenExpired);
        let got = frames(&mut out);
        let pings = got.iter().filter(|m| matches!(m, Message::Ping(_))).count();
        assert_eq!(pings, 2, "at 25 s and 50 s: {got:?}");
        assert_eq!(close_code(got.last().unwrap()), CLOSE_TOKEN_EXPIRED);
    }

    /// Runs the loop with no events and no client input; what it ended with and sent.
    async fn idle_run(
        first: Vec<ClientEvent>,
        feed_open: bool,
        client_listening: bool,
        stop: CancellationToken,
    ) -> (Ended, Vec<Message>) {
        let (sink, mut out) = mpsc::unbounded::<Message>();
        if !client_listening {
            out.close();
        }
        let (feed_tx, feed) = mpsc::unbounded::<Arc<ClientEvent>>();
        if !feed_open {
            drop(feed_tx.clone());
            feed_tx.close_channel();
        }
        let (_in_tx, incoming) = mpsc::unbounded::<Result<Message, axum::Error>>();
        let ended = pump(
            first,
            feed,
            sink,
            incoming,
            None,
            Duration::from_secs(3600),
            stop,
        )
        .await;
        drop(feed_tx);
        (ended, frames(&mut out))
    }

    #[tokio::test]
    async fn a_finished_feed_or_a_shutdown_asks_the_client_to_come_back() {
        let (ended, sent) = idle_run(Vec::new(), false, true, CancellationToken::new()).await;
        assert_eq!(ended, Ended::FeedEnded);
        assert_eq!(close_code(&sent[0]), CLOSE_TRY_AGAIN);

        let stop = CancellationToken::new();
        stop.cancel();
        let (ended, sent) = idle_run(Vec::new(), true, true, stop).await;
        assert_eq!(ended, Ended::Shutdown);
        assert_eq!(close_code(&sent[0]), 1012);
    }

    #[tokio::test]
    async fn a_client_that_went_away_ends_the_loop() {
        let (ended, _) = idle_run(
            vec![ev("status", None)],
            true,
            false,
            CancellationToken::new(),
        )
        .await;
        assert_eq!(ended, Ended::ClientGone);
    }
}
