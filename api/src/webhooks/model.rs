//! What a webhook is (as stored and as the routes show it), the event filter, the payload and
//! the ids a receiver deduplicates on. Pure.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::stream::event::{ClientEvent, StreamId};

pub use wasp_common::webhooks::{StoredEndpoint, parse_events};

/// An endpoint the dispatcher delivers to: a user's own or a global one, for one user.
/// `Debug` leaves the secret out.
#[derive(Clone)]
pub struct Endpoint {
    /// `api` (the user's, set through `PUT /webhooks`), `spec-<name>` (the CR's `spec.webhooks`,
    /// written by the operator) or `global-<name>`.
    pub id: String,
    pub user_id: String,
    pub url: String,
    pub events: Vec<String>,
    /// `whsec_…`.
    pub secret: String,
    /// Where a global endpoint's first delivery for this user starts (unix ms): the later of
    /// the session's creation and the global webhook's first appearance. Users' own endpoints
    /// get their cursor when they are configured.
    pub start_ms: i64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("start_ms", &self.start_ms)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Where its lease, cursor and state live (unique per user and endpoint).
    pub fn key(&self) -> String {
        format!("{}/{}", wasp_common::user_hash(&self.user_id), self.id)
    }

    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == kind)
    }
}

/// `PUT /webhooks`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookRequest {
    /// Where events are POSTed: `https://…` (plain http only where the server allows it);
    /// internal addresses are refused.
    pub url: String,
    /// Event types to send (`message`, `message_create`, `message_ack`, `status`, `ready`,
    /// `disconnected`, `error`, `log`), or `["*"]` for all. Default: `["message"]`.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Make a new signing secret (the old one stops working at once).
    #[serde(default)]
    pub rotate_secret: bool,
}

/// A webhook as `GET /webhooks` shows it (never the secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    /// `api`: the user's own (`PUT /webhooks`); `spec-<name>`: from the session's
    /// `spec.webhooks` (set by the platform team, not changeable here).
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// The last successful delivery: `{at, eventId, status}`.
    pub last_delivery: Option<Delivery>,
    /// The last failed attempt: `{at, eventId, error}`.
    pub last_error: Option<DeliveryError>,
    /// Unix seconds since when deliveries fail (`null` when the last attempt succeeded).
    pub failing_since: Option<i64>,
    /// Events given up on (after `maxAge`) and kept for an admin to replay.
    pub dead_letters: u64,
}

/// `PUT /webhooks`'s answer: the webhook, and its signing secret when it was made now.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_…` (Standard Webhooks): shown only in the answer that created it.
    pub secret: Option<String>,
}

/// `GET /webhooks`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub at: i64,
    pub event_id: String,
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryError {
    pub at: i64,
    pub event_id: String,
    pub error: String,
}

/// An event given up on, as the dead-letter list keeps it (the payload is what was signed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub endpoint_id: String,
    pub webhook_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The event JSON as it would have been POSTed.
    pub payload: String,
    /// When the event happened (unix ms).
    pub event_at_ms: i64,
    pub failed_at: i64,
    pub attempts: u32,
    pub last_error: String,
}

/// The `webhook-id` of one event: the same on every retry and every replica, different for the
/// two events of one stream entry (`message_create`, `message`) and for different users.
pub fn webhook_id(user_hash: &str, id: StreamId, part: u8) -> String {
    format!("evt_{user_hash}_{id}_{part}")
}

/// The POSTed body: the WebSocket's event JSON, plus the user and session it belongs to (global
/// webhooks receive every user's events).
pub fn payload(ev: &ClientEvent, user_id: &str) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        data: &'a serde_json::value::RawValue,
        timestamp: &'a str,
        id: Option<&'a str>,
        user_id: &'a str,
        session: String,
    }
    serde_json::to_string(&Body {
        kind: &ev.kind,
        data: &ev.data,
        timestamp: &ev.timestamp,
        id: ev.id.as_deref(),
        user_id,
        session: wasp_crds::names::session_name(user_id),
    })
    .unwrap_or_else(|_| "{}".into())
}

/// The stream id just before `id` (a resume point that replays `id` itself).
pub fn before(id: StreamId) -> Option<StreamId> {
    match (id.ms, id.seq) {
        (0, 0) => None,
        (ms, 0) => Some(StreamId {
            ms: ms - 1,
            seq: u64::MAX,
        }),
        (ms, seq) => Some(StreamId { ms, seq: seq - 1 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::event::raw;

    #[test]
    fn an_endpoint_wants_the_events_it_names_and_hides_its_secret() {
        let ep = Endpoint {
            id: "api".into(),
            user_id: "u".into(),
            url: String::new(),
            events: vec!["message".into()],
            secret: String::new(),
            start_ms: 0,
        };
        assert!(ep.wants("message") && !ep.wants("message_create"));
        let shown = format!(
            "{:?}",
            Endpoint {
                secret: "whsec_c2VjcmV0".into(),
                ..ep.clone()
            }
        );
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(
            Endpoint {
                events: vec!["*".into()],
                ..ep
            }
            .wants("status")
        );
    }

    #[test]
    fn ids_are_stable_per_event_and_distinct_per_part_and_user() {
        let id = StreamId { ms: 17, seq: 2 };
        assert_eq!(webhook_id("abc", id, 1), "evt_abc_17-2_1");
        assert_ne!(webhook_id("abc", id, 0), webhook_id("abc", id, 1));
        assert_ne!(webhook_id("abc", id, 0), webhook_id("abd", id, 0));
        assert_eq!(before(id), Some(StreamId { ms: 17, seq: 1 }));
        assert_eq!(
            before(StreamId { ms: 17, seq: 0 }),
            Some(StreamId {
                ms: 16,
                seq: u64::MAX
            })
        );
        assert_eq!(before(StreamId::ZERO), None);
    }

    #[test]
    fn the_payload_is_the_websocket_event_naming_user_and_session() {
        let ev = ClientEvent {
            kind: "message".into(),
            data: raw(&serde_json::json!({"body": "hi"})),
            timestamp: "2026-12-02T10:00:00Z".into(),
            id: Some("17-2".into()),
            part: 1,
        };
        let body: serde_json::Value = serde_json::from_str(&payload(&ev, "doc-1")).unwrap();
        assert_eq!(body["type"], "message");
        assert_eq!(body["data"]["body"], "hi");
        assert_eq!(body["id"], "17-2");
        assert_eq!(body["userId"], "doc-1");
        assert_eq!(body["session"], wasp_crds::names::session_name("doc-1"));
    }
}
