//! Seed 000's Server-Sent Events (`/api/whatsapp/qr`): each event is one unnamed
//! SSE message (so `EventSource.onmessage` sees all of them) whose `data` is the same JSON as a
//! WebSocket frame, with the SSE `id` set for durable events so the browser's automatic
//! reconnect resumes with `Last-Event-ID`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};

use super::event::ClientEvent;
use super::{StreamQuery, events, lifetime, open, parse_since};
use crate::app::AppState;
use crate::auth::extract::StreamUser;
use crate::error::{ApiError, ApiQuery, AuthRefusals, ErrorBody};
use crate::metrics::Metrics;

/// How long a browser waits before reconnecting a dropped stream.
const RETRY: Duration = Duration::from_secs(2);

/// One event as an SSE message.
pub fn sse_event(ev: &ClientEvent) -> Event {
    let e = Event::default().data(ev.to_json());
    match &ev.id {
        Some(id) => e.id(id),
        None => e,
    }
}

/// Live events of the caller's session as Server-Sent Events (seed 000's QR stream): the session
/// status first, then `qr`, `ready`, `message`, ... as JSON `{type, data, timestamp, id}`.
#[utoipa::path(get, path = "/api/whatsapp/qr", tag = "seed-000", security(("bearer" = [])),
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (wins over `since`)")),
    responses(
        (status = 200, description = "`text/event-stream` of `ClientEvent` JSON", body = String, content_type = "text/event-stream"),
        (status = 400, description = "Bad `since` or `Last-Event-ID`", body = ErrorBody),
        AuthRefusals,
        (status = 503, description = "Redis unavailable", body = ErrorBody)))]
pub async fn qr_events(
    State(state): State<AppState>,
    StreamUser(me): StreamUser,
    ApiQuery(query): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request("invalid_since", "Last-Event-ID is not text"))
        })
        .transpose()?;
    let since = parse_since(last_event_id.or(query.since.as_deref()))?;
    let (first, subscription) = open(&state, &me, since).await?;
    let metrics = state.auth.metrics.clone();
    let stop = state.shutdown.clone();
    let expires = lifetime(&me).unwrap_or(Duration::from_secs(u32::MAX.into()));
    let guard = ClientGauge::new(metrics);
    let head = futures::stream::iter(first.into_iter().map(Arc::new));
    let stream = head
        .chain(events(subscription))
        .enumerate()
        .map(move |(i, ev)| {
            let _keep = &guard;
            let e = sse_event(&ev);
            Ok(if i == 0 { e.retry(RETRY) } else { e })
        })
        .take_until(async move {
            tokio::select! {
                _ = tokio::time::sleep(expires) => {}
                _ = stop.cancelled() => {}
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Counts an SSE client while its stream exists.
struct ClientGauge(Arc<Metrics>);

impl ClientGauge {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.stream_client("sse", 1);
        Self(metrics)
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        self.0.stream_client("sse", -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durable_events_carry_their_id_ephemeral_ones_none() {
        let ev = ClientEvent {
            kind: "message".into(),
            data: crate::stream::event::raw(&json!({"body": "hi\nthere"})),
            part: 0,
            timestamp: "t".into(),
            id: Some("9-1".into()),
        };
        // Event's Debug shows the wire buffer.
        let wire = format!("{:?}", sse_event(&ev));
        assert!(wire.contains("id: 9-1"), "{wire}");
        assert!(
            wire.contains(r#"\"body\":\"hi\\nthere\""#),
            "newlines stay escaped in JSON: {wire}"
        );
        assert!(!wire.contains("event:"), "unnamed, for onmessage: {wire}");
        let qr = ClientEvent { id: None, ..ev };
        assert!(!format!("{:?}", sse_event(&qr)).contains("id:"));
    }
}
