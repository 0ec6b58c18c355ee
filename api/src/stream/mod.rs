//! Live events for browsers and CRMs: seed 003's WebSocket at `/` (`?token=`, resume with
//! `?since=`) and seed 000's Server-Sent Events at `/api/whatsapp/qr` (resume with
//! `Last-Event-ID`). Both serve one [`hub::Subscription`] per client; see [`hub`] for where the
//! events come from and why each durable event reaches a client exactly once.

pub mod event;
pub mod hub;
pub mod sse;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::view::session_status;
use event::{ClientEvent, StreamId};
use hub::Subscription;

/// Query of the streaming routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The JWT, for clients that cannot send an `Authorization` header (browsers' WebSocket and
    /// EventSource). The header wins when both are present.
    pub token: Option<String>,
    /// Resume after this event id (the `id` of the last event received): every durable event
    /// since is replayed first, in order, each once.
    pub since: Option<String>,
}

/// Parses a client's resume point.
pub fn parse_since(since: Option<&str>) -> Result<Option<StreamId>, ApiError> {
    match since.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|e: event::BadStreamId| ApiError::bad_request("invalid_since", e.to_string())),
    }
}

/// Subscribes the caller and builds what a new client sees first: its session's status. (The
/// QR code the pod is showing follows on the live channel: the hub asks the pod for it.)
pub async fn open(
    state: &AppState,
    me: &Identity,
    since: Option<StreamId>,
) -> Result<(Vec<ClientEvent>, Subscription), ApiError> {
    // Subscribe before reading the status: a change from now on arrives as an event.
    let subscription = state.hub.subscribe(&me.user_id, since).await?;
    let session = state.sessions.get(&me.user_id).await?;
    let first = vec![event::greeting(&session_status(
        &me.user_id,
        session.as_deref(),
    ))];
    Ok((first, subscription))
}

/// The subscription as a stream of events.
pub fn events(subscription: Subscription) -> impl Stream<Item = Arc<ClientEvent>> + Send {
    futures::stream::unfold(subscription, |mut s| async move {
        s.next().await.map(|ev| (ev, s))
    })
}

/// How long a stream may live: until the token expires (`None`: no expiry, development only).
pub fn lifetime(me: &Identity) -> Option<Duration> {
    let exp = me.expires_at?;
    let now = jiff::Timestamp::now().as_second();
    Some(Duration::from_secs(exp.saturating_sub(now).max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_must_be_a_stream_id() {
        assert_eq!(parse_since(None).unwrap(), None);
        assert_eq!(parse_since(Some(" ")).unwrap(), None);
        assert_eq!(
            parse_since(Some("17-3")).unwrap(),
            Some(StreamId { ms: 17, seq: 3 })
        );
        let err = parse_since(Some("yesterday")).unwrap_err();
        assert_eq!(err.code(), "invalid_since");
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn streams_end_when_the_token_expires() {
        let mut me = Identity {
            user_id: "u".into(),
            admin: false,
            expires_at: None,
        };
        assert_eq!(lifetime(&me), None);
        me.expires_at = Some(jiff::Timestamp::now().as_second() - 5);
        assert_eq!(lifetime(&me), Some(Duration::ZERO));
        me.expires_at = Some(jiff::Timestamp::now().as_second() + 100);
        let left = lifetime(&me).unwrap();
        assert!(left > Duration::from_secs(98) && left <= Duration::from_secs(100));
    }
}
