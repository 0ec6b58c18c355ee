//! What a WebSocket or SSE client receives, as pure functions of the session pod's envelopes:
//! seed 003's `{type, data, timestamp}` plus `id`, the event id to resume from (`null` for
//! ephemeral events such as QR codes, which are never replayed). Events are named as
//! whatsapp-web.js names them: a new message is `message_create` (every message, own sends
//! too) and, when it came from the other side, `message` as well — both from one stream entry,
//! with its id; `message_ack` when a receipt raises an own message's ack. Message `data` is the
//! shared message model ([`wasp_common::model::Message`]), the same JSON the REST routes give.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use utoipa::ToSchema;
use wasp_common::events::{Envelope, Kind};
use wasp_crds::Phase;

use crate::view::{SessionStatus, status_word};
use wasp_common::model::Message;

/// One event as sent to clients (a WebSocket text frame, an SSE `data:` line).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClientEvent {
    /// `status`, `qr`, `ready`, `message`, `message_create`, `message_ack`,
    /// `message_reaction`, `message_edit`, `message_revoke_everyone`, `disconnected`, `error`,
    /// and the wasp extras `chat_state` (live only), `pairing_code`, `log`. Clients ignore types
    /// they do not know.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event's JSON as written (a message is the message model's JSON byte for byte as the
    /// REST routes give it: a `Value` would reorder its keys).
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
    /// RFC 3339, when the session pod produced the event.
    pub timestamp: String,
    /// The event id (the user's Redis stream entry id) to resume after; `null` for events that
    /// are not replayed (QR and pairing codes, the greeting status).
    pub id: Option<String>,
    /// Position among the events of one stream entry (`message_create` 0, `message` 1).
    #[serde(skip)]
    pub part: u8,
}

impl ClientEvent {
    pub fn stream_id(&self) -> Option<StreamId> {
        self.id.as_deref().and_then(|i| i.parse().ok())
    }

    /// `data` as a JSON value (for reading fields).
    pub fn data(&self) -> Value {
        serde_json::from_str(self.data.get()).unwrap_or(Value::Null)
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
    matches!(
        kind,
        Kind::Qr(_) | Kind::PairingCode(_) | Kind::ChatState(_)
    )
}

fn rfc3339_ms(at_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(at_ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn seed_status(phase: &str) -> &'static str {
    status_word(Phase::ALL.into_iter().find(|p| p.as_str() == phase))
}

/// JSON of a value that always serialises (plain structs, `json!` values).
pub fn raw(v: &impl Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The message of an envelope's payload, with `eventId` set to `id` when it has none yet.
fn message_data(json: &str, id: Option<StreamId>) -> Option<(Box<RawValue>, bool)> {
    let mut m: Message = serde_json::from_str(json).ok()?;
    if m.event_id.is_empty()
        && let Some(id) = id
    {
        m.event_id = id.to_string();
    }
    Some((raw(&m), m.from_me))
}

/// The client events of an envelope read from the stream (`id`) or the live channel (`None`):
/// none when the envelope carries no event (or an unreadable one), two for an inbound message.
pub fn from_envelope(env: &Envelope, id: Option<StreamId>) -> Vec<ClientEvent> {
    let Some(kind) = env.kind.as_ref() else {
        return Vec::new();
    };
    let event = |kind: &str, data: Box<RawValue>, part: u8| ClientEvent {
        kind: kind.to_owned(),
        data,
        timestamp: rfc3339_ms(env.at_ms),
        id: id.map(|i| i.to_string()),
        part,
    };
    let one = |kind: &str, data: Value| vec![event(kind, raw(&data), 0)];
    // A payload the pod wrote as one of the model's documents, passed on as it is.
    let json_event = |kind: &str, json: &str| match RawValue::from_string(json.to_owned()) {
        Ok(data) => vec![event(kind, data, 0)],
        Err(_) => Vec::new(),
    };
    match kind {
        Kind::Qr(q) => one("qr", json!({ "qr": q.code, "qrDataUrl": q.data_url })),
        Kind::PairingCode(p) => one("pairing_code", json!({ "code": p.code, "phone": p.phone })),
        Kind::Ready(r) => one(
            "ready",
            json!({ "phone": r.phone, "pushName": r.push_name, "jid": r.jid }),
        ),
        Kind::Status(s) => one(
            "status",
            json!({
                "status": seed_status(&s.phase),
                "phase": s.phase,
                "detail": s.detail,
                "reconnectCount": s.reconnect_count,
            }),
        ),
        Kind::Message(m) => {
            let Some((data, from_me)) = message_data(&m.json, id) else {
                return Vec::new();
            };
            let mut out = vec![event("message_create", data.clone(), 0)];
            if !from_me {
                out.push(event("message", data, 1));
            }
            out
        }
        Kind::MessageAck(a) => match message_data(&a.json, None) {
            Some((data, _)) => vec![event("message_ack", data, 0)],
            None => Vec::new(),
        },
        Kind::Reaction(j) => json_event("message_reaction", &j.json),
        Kind::MessageEdit(j) => json_event("message_edit", &j.json),
        Kind::MessageRevoke(j) => json_event("message_revoke_everyone", &j.json),
        Kind::ChatState(j) => json_event("chat_state", &j.json),
        Kind::Disconnected(d) => one(
            "disconnected",
            json!({ "reason": d.reason, "loggedOut": false }),
        ),
        Kind::LoggedOut(l) => one(
            "disconnected",
            json!({ "reason": l.reason, "loggedOut": true }),
        ),
        Kind::Error(e) => one(
            "error",
            json!({ "category": e.category, "message": e.message }),
        ),
        Kind::Log(l) => one(
            "log",
            json!({ "level": l.level, "eventType": l.event_type, "message": l.message }),
        ),
    }
}

/// The first event on every connection: the session as `GET /status` shows it.
pub fn greeting(status: &SessionStatus) -> ClientEvent {
    ClientEvent {
        kind: "status".into(),
        data: raw(status),
        timestamp: jiff::Timestamp::now().to_string(),
        id: None,
        part: 0,
    }
}

/// Per-client delivery order: durable events go out once each, in id order, whether they came
/// from a replay or the live feed (which overlap while a client catches up); ephemeral events
/// (no id) always go out.
/// Resuming after an id skips every event of that stream entry.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    last: Option<(StreamId, u8)>,
}

impl Cursor {
    pub fn after(last: Option<StreamId>) -> Self {
        Self {
            last: last.map(|id| (id, u8::MAX)),
        }
    }

    pub fn last(&self) -> Option<StreamId> {
        self.last.map(|(id, _)| id)
    }

    /// Whether to send `ev`; advances past it if so.
    pub fn admit(&mut self, ev: &ClientEvent) -> bool {
        match (ev.stream_id(), self.last) {
            (None, _) => ev.id.is_none(),
            (Some(id), Some(last)) if (id, ev.part) <= last => false,
            (Some(id), _) => {
                self.last = Some((id, ev.part));
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
            data: raw(&Value::Null),
            timestamp: String::new(),
            id: Some(id.into()),
            part: 0,
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

    fn one(env: &Envelope, id: Option<StreamId>) -> ClientEvent {
        let mut evs = from_envelope(env, id);
        assert_eq!(evs.len(), 1, "{evs:?}");
        evs.remove(0)
    }

    fn message_json(from_me: bool) -> String {
        let chat = wasp_common::model::Wid::parse("15550001@c.us").unwrap();
        let me = wasp_common::model::Wid::parse("15550009@c.us").unwrap();
        Message::new(wasp_common::model::MessageParts {
            id: "M1",
            chat: &chat,
            own: Some(&me),
            author: None,
            from_me,
            body: "hi",
            kind: "chat",
            timestamp: 1_700_000_000,
            has_media: false,
            has_quoted_msg: false,
            push_name: "Ana",
        })
        .to_json()
    }

    #[test]
    fn envelopes_map_to_the_seed_event_shapes() {
        let qr = one(
            &env(Kind::Qr(ev::Qr {
                code: "2@abc".into(),
                svg: "<svg/>".into(),
                data_url: "data:image/png;base64,AAA".into(),
            })),
            None,
        );
        assert_eq!(qr.kind, "qr");
        assert_eq!(qr.data()["qrDataUrl"], "data:image/png;base64,AAA");
        assert_eq!(qr.data().get("svg"), None, "frames stay small");
        assert_eq!(qr.id, None);
        assert_eq!(qr.timestamp, "2023-11-14T22:13:20.123Z");

        let id: StreamId = "5-1".parse().unwrap();
        let status = one(
            &env(Kind::Status(ev::Status {
                phase: "AwaitingScan".into(),
                detail: String::new(),
                reconnect_count: 2,
            })),
            Some(id),
        );
        assert_eq!(status.data()["status"], "qr");
        assert_eq!(status.data()["reconnectCount"], 2);

        let out = one(
            &env(Kind::LoggedOut(ev::LoggedOut {
                reason: "removed".into(),
            })),
            Some(id),
        );
        assert_eq!(
            (out.kind.as_str(), &out.data()["loggedOut"]),
            ("disconnected", &json!(true))
        );
        let dropped = one(
            &env(Kind::Disconnected(ev::Disconnected {
                reason: "transport".into(),
            })),
            Some(id),
        );
        assert_eq!(
            (dropped.kind.as_str(), &dropped.data()["loggedOut"]),
            ("disconnected", &json!(false))
        );
        let code = one(
            &env(Kind::PairingCode(ev::PairingCode {
                code: "ABCD-EFGH".into(),
                phone: "41791234567".into(),
            })),
            None,
        );
        assert_eq!(
            (code.kind.as_str(), &code.data()["code"]),
            ("pairing_code", &json!("ABCD-EFGH"))
        );
        let ready = one(
            &env(Kind::Ready(ev::Ready {
                phone: "15550002".into(),
                push_name: "Dr".into(),
                jid: "15550002@s.whatsapp.net".into(),
            })),
            Some(id),
        );
        assert_eq!(ready.data()["phone"], "15550002");
        let error = one(
            &env(Kind::Error(ev::Error {
                category: "temporary_ban".into(),
                message: "banned".into(),
            })),
            Some(id),
        );
        assert_eq!(
            (error.kind.as_str(), &error.data()["category"]),
            ("error", &json!("temporary_ban"))
        );
        let log = one(
            &env(Kind::Log(ev::Log {
                level: "info".into(),
                message: "paired".into(),
                event_type: "paired".into(),
            })),
            Some(id),
        );
        assert_eq!(log.data()["eventType"], "paired");
        assert!(
            from_envelope(
                &Envelope {
                    kind: None,
                    ..env(Kind::Log(ev::Log::default()))
                },
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn an_inbound_message_is_message_create_then_message_with_the_same_json() {
        let id: StreamId = "5-1".parse().unwrap();
        let evs = from_envelope(
            &env(Kind::Message(ev::ChatMessage {
                json: message_json(false),
            })),
            Some(id),
        );
        let kinds: Vec<&str> = evs.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["message_create", "message"]);
        assert_eq!(evs[0].data.get(), evs[1].data.get());
        assert!(evs.iter().all(|e| e.id.as_deref() == Some("5-1")));
        let data = evs[1].data();
        assert_eq!(
            data["eventId"], "5-1",
            "the entry id is the message's eventId"
        );
        assert_eq!(data["from"], "15550001@c.us");
        assert_eq!(data["id"]["_serialized"], "false_15550001@c.us_M1");
        // Byte for byte what serialising the model gives (the REST routes' bytes).
        let mut m: Message = serde_json::from_str(&message_json(false)).unwrap();
        m.event_id = "5-1".into();
        assert_eq!(evs[0].data.get(), serde_json::to_string(&m).unwrap());
    }

    #[test]
    fn an_own_message_is_only_message_create_and_acks_keep_the_event_id() {
        let id: StreamId = "6-0".parse().unwrap();
        let evs = from_envelope(
            &env(Kind::Message(ev::ChatMessage {
                json: message_json(true),
            })),
            Some(id),
        );
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind, "message_create");
        let mut acked: Message = serde_json::from_str(&message_json(true)).unwrap();
        acked.ack = 3;
        acked.event_id = "6-0".into();
        let ack = one(
            &env(Kind::MessageAck(ev::MessageAck {
                json: acked.to_json(),
            })),
            Some("7-0".parse().unwrap()),
        );
        assert_eq!(ack.kind, "message_ack");
        assert_eq!(
            (&ack.data()["ack"], &ack.data()["eventId"]),
            (&json!(3), &json!("6-0"))
        );
        assert!(
            from_envelope(
                &env(Kind::Message(ev::ChatMessage {
                    json: "not json".into()
                })),
                Some(id)
            )
            .is_empty()
        );
    }

    #[test]
    fn conversation_events_carry_the_models_json_as_written() {
        use wasp_common::model::{
            ChatState, ChatStateKind, MessageEdit, MessageKey, MessageRevoke, Reaction,
        };
        let id: StreamId = "8-0".parse().unwrap();
        let message: Message = serde_json::from_str(&message_json(true)).unwrap();
        let reaction = Reaction {
            id: MessageKey::new(false, "15550001@c.us", "R1", None),
            reaction: "👍".into(),
            msg_id: MessageKey::new(true, "15550001@c.us", "M1", None),
            sender_id: "15550001@c.us".into(),
            timestamp: 1_700_000_001,
            orphan: 0,
            read: false,
            ack: 1,
        };
        let edit = MessageEdit {
            message: message.clone(),
            new_body: "hi".into(),
            prev_body: "hu".into(),
        };
        let revoke = MessageRevoke {
            message: message.clone(),
            revoked_msg: Some(message.clone()),
        };
        let state = ChatState {
            chat_id: "120363000000000001@g.us".into(),
            author: Some("15550001@c.us".into()),
            state: ChatStateKind::Typing,
        };
        let cases = [
            (
                Kind::Reaction(ev::Json::of(&reaction)),
                "message_reaction",
                serde_json::to_string(&reaction).unwrap(),
            ),
            (
                Kind::MessageEdit(ev::Json::of(&edit)),
                "message_edit",
                serde_json::to_string(&edit).unwrap(),
            ),
            (
                Kind::MessageRevoke(ev::Json::of(&revoke)),
                "message_revoke_everyone",
                serde_json::to_string(&revoke).unwrap(),
            ),
        ];
        for (kind, name, json) in cases {
            assert!(!is_ephemeral(&kind), "{name} is durable");
            let e = one(&env(kind), Some(id));
            assert_eq!(e.kind, name);
            assert_eq!(e.data.get(), json, "{name}: the payload byte for byte");
            assert_eq!(e.id.as_deref(), Some("8-0"));
        }
        let r = one(&env(Kind::Reaction(ev::Json::of(&reaction))), Some(id));
        assert_eq!(
            (&r.data()["reaction"], &r.data()["msgId"]["_serialized"]),
            (&json!("👍"), &json!("true_15550001@c.us_M1"))
        );
        let e = one(&env(Kind::MessageEdit(ev::Json::of(&edit))), Some(id));
        assert_eq!(
            (&e.data()["newBody"], &e.data()["prevBody"]),
            (&json!("hi"), &json!("hu"))
        );
        let v = one(&env(Kind::MessageRevoke(ev::Json::of(&revoke))), Some(id));
        assert_eq!(
            v.data()["revokedMsg"]["id"]["_serialized"],
            "true_15550001@c.us_M1"
        );

        // Typing is live only: never in the durable stream, no id to resume from.
        let kind = Kind::ChatState(ev::Json::of(&state));
        assert!(is_ephemeral(&kind));
        let typing = one(&env(kind), None);
        assert_eq!(typing.kind, "chat_state");
        assert_eq!(typing.id, None);
        assert_eq!(
            typing.data(),
            json!({"chatId": "120363000000000001@g.us", "author": "15550001@c.us", "state": "typing"})
        );
        // An unreadable payload is no event.
        assert!(
            from_envelope(
                &env(Kind::Reaction(ev::Json {
                    json: "{not json".into()
                })),
                Some(id)
            )
            .is_empty()
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
        // The two events of one entry pass once each; resuming after the entry skips both.
        let mut c = Cursor::default();
        let create = durable("8-0");
        let inbound = ClientEvent {
            part: 1,
            ..durable("8-0")
        };
        assert!(c.admit(&create) && c.admit(&inbound));
        assert!(!c.admit(&create) && !c.admit(&inbound));
        let mut resumed = Cursor::after(Some("8-0".parse().unwrap()));
        assert!(!resumed.admit(&create) && !resumed.admit(&inbound));
        let mut fresh = Cursor::default();
        assert!(fresh.admit(&durable("0-1")));
        let garbage = ClientEvent {
            id: Some("x".into()),
            ..durable("0-0")
        };
        assert!(!fresh.admit(&garbage), "an unparsable id is never sent");
    }
}
