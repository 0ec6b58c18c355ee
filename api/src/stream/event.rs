//! What a WebSocket or SSE client receives, as pure functions of the session pod's envelopes:
//! seed 003's `{type, data, timestamp}` plus `id`, the event id to resume from (`null` for
//! ephemeral events such as QR codes, which are never replayed).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use wasp_common::events::{Envelope, Kind};
use wasp_crds::Phase;

use crate::view::{SessionStatus, status_word};

/// One event as sent to clients (a WebSocket text frame, an SSE `data:` line).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ClientEvent {
    /// `status`, `qr`, `ready`, `message`, `disconnected`, `error`, and the wasp extras
    /// `pairing_code`, `receipt`, `log`. Clients ignore types they do not know.
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
    /// RFC 3339, when the session pod produced the event.
    pub timestamp: String,
    /// The event id (the user's Redis stream entry id) to resume after; `null` for events that
    /// are not replayed (QR and pairing codes, the greeting status).
    pub id: Option<String>,
}

impl ClientEvent {
    pub fn stream_id(&self) -> Option<StreamId> {
        self.id.as_deref().and_then(|i| i.parse().ok())
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and a JSON value always serialises.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// A Redis stream entry id `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event id looks like 1700000000000-0")]
pub struct BadStreamId;

impl FromStr for StreamId {
    type Err = BadStreamId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').ok_or(BadStreamId)?;
        let num = |p: &str| {
            if p.is_empty() || p.len() > 20 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadStreamId);
            }
            p.parse::<u64>().map_err(|_| BadStreamId)
        };
        Ok(StreamId {
            ms: num(ms)?,
            seq: num(seq)?,
        })
    }
}

/// Whether an event kind only travels on the live channel (never in the durable stream).
pub fn is_ephemeral(kind: &Kind) -> bool {
    matches!(kind, Kind::Qr(_) | Kind::PairingCode(_))
}

fn rfc3339_ms(at_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(at_ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn seed_status(phase: &str) -> &'static str {
    status_word(Phase::ALL.into_iter().find(|p| p.as_str() == phase))
}

/// The client event of an envelope read from the stream (`id`) or the live channel (`None`).
/// `None` when the envelope carries no event.
pub fn from_envelope(env: &Envelope, id: Option<StreamId>) -> Option<ClientEvent> {
    let (kind, data) = match env.kind.as_ref()? {
        Kind::Qr(q) => ("qr", json!({ "qr": q.code, "qrDataUrl": q.data_url })),
        Kind::PairingCode(p) => ("pairing_code", json!({ "code": p.code, "phone": p.phone })),
        Kind::Ready(r) => (
            "ready",
            json!({ "phone": r.phone, "pushName": r.push_name, "jid": r.jid }),
        ),
        Kind::Status(s) => (
            "status",
            json!({
                "status": seed_status(&s.phase),
                "phase": s.phase,
                "detail": s.detail,
                "reconnectCount": s.reconnect_count,
            }),
        ),
        Kind::Message(m) => (
            "message",
            json!({
                "id": m.id,
                "chatId": m.chat,
                "from": m.sender,
                "fromMe": m.from_me,
                "body": m.text,
                "timestamp": m.timestamp,
                "pushName": m.push_name,
                "type": m.kind,
            }),
        ),
        Kind::Receipt(r) => (
            "receipt",
            json!({ "ids": r.ids, "chatId": r.chat, "type": r.kind }),
        ),
        Kind::Disconnected(d) => (
            "disconnected",
            json!({ "reason": d.reason, "loggedOut": false }),
        ),
        Kind::LoggedOut(l) => (
            "disconnected",
            json!({ "reason": l.reason, "loggedOut": true }),
        ),
        Kind::Error(e) => (
            "error",
            json!({ "category": e.category, "message": e.message }),
        ),
        Kind::Log(l) => ("log", json!({ "level": l.level, "message": l.message })),
    };
    Some(ClientEvent {
        kind: kind.to_owned(),
        data,
        timestamp: rfc3339_ms(env.at_ms),
        id: id.map(|i| i.to_string()),
    })
}

/// The first event on every connection: the session as `GET /status` shows it.
pub fn greeting(status: &SessionStatus) -> ClientEvent {
    ClientEvent {
        kind: "status".into(),
        data: serde_json::to_value(status).unwrap_or(Value::Null),
        timestamp: jiff::Timestamp::now().to_string(),
        id: None,
    }
}

/// Per-client delivery order: durable events go out once each, in id order, whether they came
/// from a replay or the live feed (which overlap while a client catches up); ephemeral events
/// (no id) always go out.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    last: Option<StreamId>,
}

impl Cursor {
    pub fn after(last: Option<StreamId>) -> Self {
        Self { last }
    }

    pub fn last(&self) -> Option<StreamId> {
        self.last
    }

    /// Whether to send `ev`; advances past it if so.
    pub fn admit(&mut self, ev: &ClientEvent) -> bool {
        match (ev.stream_id(), self.last) {
            (None, _) => ev.id.is_none(),
            (Some(id), Some(last)) if id <= last => false,
            (Some(id), _) => {
                self.last = Some(id);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_common::events as ev;

    fn env(kind: Kind) -> Envelope {
        Envelope {
            user_hash: "h".into(),
            at_ms: 1_700_000_000_123,
            kind: Some(kind),
        }
    }

    fn durable(id: &str) -> ClientEvent {
        ClientEvent {
            kind: "message".into(),
            data: Value::Null,
            timestamp: String::new(),
            id: Some(id.into()),
        }
    }

    #[test]
    fn stream_ids_parse_and_order_like_redis() {
        let a: StreamId = "1700000000000-2".parse().unwrap();
        let b: StreamId = "1700000000000-10".parse().unwrap();
        let c: StreamId = "1700000000001-0".parse().unwrap();
        assert!(a < b && b < c, "numeric, not lexical, order");
        assert_eq!(a.to_string(), "1700000000000-2");
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1",
            "a-1",
            "1-1-1",
            "+1-1",
            " 1-1",
            "99999999999999999999999-0",
        ] {
            assert_eq!(bad.parse::<StreamId>(), Err(BadStreamId), "{bad:?}");
        }
    }

    #[test]
    fn envelopes_map_to_the_seed_event_shapes() {
        let qr = from_envelope(
            &env(Kind::Qr(ev::Qr {
                code: "2@abc".into(),
                svg: "<svg/>".into(),
                data_url: "data:image/png;base64,AAA".into(),
            })),
            None,
        )
        .unwrap();
        assert_eq!(qr.kind, "qr");
        assert_eq!(qr.data["qrDataUrl"], "data:image/png;base64,AAA");
        assert_eq!(qr.data.get("svg"), None, "frames stay small");
        assert_eq!(qr.id, None);
        assert_eq!(qr.timestamp, "2023-11-14T22:13:20.123Z");

        let id: StreamId = "5-1".parse().unwrap();
        let msg = from_envelope(
            &env(Kind::Message(ev::ChatMessage {
                id: "M1".into(),
                chat: "15550001@s.whatsapp.net".into(),
                sender: "15550001@s.whatsapp.net".into(),
                from_me: false,
                text: "hi".into(),
                timestamp: 1_700_000_000,
                push_name: "Ana".into(),
                kind: "text".into(),
            })),
            Some(id),
        )
        .unwrap();
        assert_eq!(msg.kind, "message");
        assert_eq!(msg.id.as_deref(), Some("5-1"));
        assert_eq!(msg.data["chatId"], "15550001@s.whatsapp.net");
        assert_eq!(msg.data["body"], "hi");
        assert_eq!(msg.data["fromMe"], false);

        let status = from_envelope(
            &env(Kind::Status(ev::Status {
                phase: "AwaitingScan".into(),
                detail: String::new(),
                reconnect_count: 2,
            })),
            Some(id),
        )
        .unwrap();
        assert_eq!(status.data["status"], "qr");
        assert_eq!(status.data["reconnectCount"], 2);

        let out = from_envelope(
            &env(Kind::LoggedOut(ev::LoggedOut {
                reason: "removed".into(),
            })),
            Some(id),
        )
        .unwrap();
        assert_eq!(
            (out.kind.as_str(), &out.data["loggedOut"]),
            ("disconnected", &json!(true))
        );
        let ready = from_envelope(
            &env(Kind::Ready(ev::Ready {
                phone: "15550002".into(),
                push_name: "Dr".into(),
                jid: "15550002@s.whatsapp.net".into(),
            })),
            Some(id),
        )
        .unwrap();
        assert_eq!(ready.data["phone"], "15550002");
        assert_eq!(
            from_envelope(
                &Envelope {
                    kind: None,
                    ..env(Kind::Log(ev::Log::default()))
                },
                None
            ),
            None
        );
    }

    #[test]
    fn only_codes_are_ephemeral() {
        assert!(is_ephemeral(&Kind::Qr(ev::Qr::default())));
        assert!(is_ephemeral(&Kind::PairingCode(ev::PairingCode::default())));
        assert!(!is_ephemeral(&Kind::Message(ev::ChatMessage::default())));
        assert!(!is_ephemeral(&Kind::Ready(ev::Ready::default())));
    }

    #[test]
    fn the_cursor_sends_each_durable_event_once_in_order() {
        let mut c = Cursor::after(Some("5-0".parse().unwrap()));
        assert!(!c.admit(&durable("4-9")), "before the resume point");
        assert!(!c.admit(&durable("5-0")), "the resume point itself");
        assert!(c.admit(&durable("5-1")));
        assert!(c.admit(&durable("7-0")));
        assert!(
            !c.admit(&durable("6-0")),
            "the live feed overlapping a replay"
        );
        assert!(!c.admit(&durable("7-0")), "a duplicate");
        assert_eq!(c.last(), Some("7-0".parse().unwrap()));
        let qr = ClientEvent {
            id: None,
            ..durable("0-0")
        };
        assert!(c.admit(&qr) && c.admit(&qr), "ephemeral events always pass");
        let mut fresh = Cursor::default();
        assert!(fresh.admit(&durable("0-1")));
        let garbage = ClientEvent {
            id: Some("x".into()),
            ..durable("0-0")
        };
        assert!(!fresh.admit(&garbage), "an unparsable id is never sent");
    }
}
