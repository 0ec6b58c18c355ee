//! The session pod's event envelope (protobuf, `proto/events.proto`). Hand-written `prost`
//! derives instead of a build script: no `protoc` in the build. Keep the tags in sync with the
//! `.proto` file, which is what other languages generate from.
//!
//! Transport: each event is `XADD <events> MAXLEN ~ N * e <bytes>` on the user's durable stream
//! (the entry id is the event id, replayable with `XRANGE`/`XREAD`) and `PUBLISH <events:live>
//! <bytes>` for low latency, always in that order. Consumers (wasp-api) subscribe to the channel;
//! a durable envelope there tells them to `XRANGE` the stream after the last id they saw.

/// Field name of the envelope bytes in a stream entry.
pub const STREAM_FIELD: &str = "e";

#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    #[prost(string, tag = "1")]
    pub user_hash: String,
    #[prost(int64, tag = "2")]
    pub at_ms: i64,
    #[prost(
        oneof = "Kind",
        tags = "10, 11, 12, 13, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24"
    )]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(message, tag = "10")]
    Qr(Qr),
    #[prost(message, tag = "11")]
    Ready(Ready),
    #[prost(message, tag = "12")]
    Status(Status),
    #[prost(message, tag = "13")]
    Message(ChatMessage),
    /// A receipt raised a message's `ack` (whatsapp-web.js `message_ack`).
    #[prost(message, tag = "20")]
    MessageAck(MessageAck),
    /// A reaction was set or taken back (whatsapp-web.js `message_reaction`).
    #[prost(message, tag = "21")]
    Reaction(Json),
    /// A message was edited (`message_edit`).
    #[prost(message, tag = "22")]
    MessageEdit(Json),
    /// A message was revoked for everyone (`message_revoke_everyone`).
    #[prost(message, tag = "23")]
    MessageRevoke(Json),
    /// The other side is typing or recording (`chat_state`; live channel only).
    #[prost(message, tag = "24")]
    ChatState(Json),
    #[prost(message, tag = "15")]
    Disconnected(Disconnected),
    #[prost(message, tag = "16")]
    LoggedOut(LoggedOut),
    #[prost(message, tag = "17")]
    Error(Error),
    #[prost(message, tag = "18")]
    Log(Log),
    #[prost(message, tag = "19")]
    PairingCode(PairingCode),
}

/// The pipeline that records a durable event in one round trip: `XADD` to the user's capped
/// stream (about `maxlen` entries kept) and `PUBLISH` on the user's live channel.
pub fn emit_pipeline(
    keys: &crate::keys::UserKeys,
    maxlen: usize,
    envelope: &[u8],
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.cmd("XADD")
        .arg(keys.events())
        .arg("MAXLEN")
        .arg("~")
        .arg(maxlen)
        .arg("*")
        .arg(STREAM_FIELD)
        .arg(envelope)
        .publish(keys.events_channel(), envelope)
        .ignore();
    pipe
}

/// The command that sends an ephemeral event (QR, pairing code) on the live channel only.
pub fn publish_only_cmd(keys: &crate::keys::UserKeys, envelope: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg(keys.events_channel()).arg(envelope);
    cmd
}

impl Kind {
    /// Stable name (for logs and metric labels).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Qr(_) => "qr",
            Self::Ready(_) => "ready",
            Self::Status(_) => "status",
            Self::Message(_) => "message",
            Self::MessageAck(_) => "message_ack",
            Self::Reaction(_) => "message_reaction",
            Self::MessageEdit(_) => "message_edit",
            Self::MessageRevoke(_) => "message_revoke_everyone",
            Self::ChatState(_) => "chat_state",
            Self::Disconnected(_) => "disconnected",
            Self::LoggedOut(_) => "logged_out",
            Self::Error(_) => "error",
            Self::Log(_) => "log",
            Self::PairingCode(_) => "pairing_code",
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Qr {
    #[prost(string, tag = "1")]
    pub code: String,
    #[prost(string, tag = "2")]
    pub svg: String,
    /// `data:image/png;base64,…` (seed 003's `qrDataUrl`).
    #[prost(string, tag = "3")]
    pub data_url: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PairingCode {
    #[prost(string, tag = "1")]
    pub code: String,
    #[prost(string, tag = "2")]
    pub phone: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ready {
    #[prost(string, tag = "1")]
    pub phone: String,
    #[prost(string, tag = "2")]
    pub push_name: String,
    #[prost(string, tag = "3")]
    pub jid: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "1")]
    pub phase: String,
    #[prost(string, tag = "2")]
    pub detail: String,
    #[prost(uint32, tag = "3")]
    pub reconnect_count: u32,
}

/// A new message (own or inbound). The payload is the message model's JSON
/// ([`crate::model::Message`]): one definition and one serializer for the store, REST answers
/// and events, so they cannot drift apart. `eventId` is not in it: it is this entry's id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChatMessage {
    #[prost(string, tag = "9")]
    pub json: String,
}

impl ChatMessage {
    /// The message (`None` if the payload is not the model's JSON).
    pub fn message(&self) -> Option<crate::model::Message> {
        serde_json::from_str(&self.json).ok()
    }
}

/// A message whose `ack` rose: the message model's JSON with the new `ack` (and the `eventId`
/// of the event that announced the message, if it was stored).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MessageAck {
    #[prost(string, tag = "1")]
    pub json: String,
}

/// An event whose payload is one of the model's JSON documents
/// ([`crate::model::Reaction`], [`crate::model::MessageEdit`], [`crate::model::MessageRevoke`],
/// [`crate::model::ChatState`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Json {
    #[prost(string, tag = "1")]
    pub json: String,
}

impl Json {
    /// The payload of a model value (which always serialises).
    pub fn of(v: &impl serde::Serialize) -> Self {
        Self {
            json: serde_json::to_string(v).unwrap_or_default(),
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Disconnected {
    #[prost(string, tag = "1")]
    pub reason: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LoggedOut {
    #[prost(string, tag = "1")]
    pub reason: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Error {
    #[prost(string, tag = "1")]
    pub category: String,
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Log {
    #[prost(string, tag = "1")]
    pub level: String,
    #[prost(string, tag = "2")]
    pub message: String,
    /// What happened (`paired`, `logged_out`, …): seed 003's `event_type`.
    #[prost(string, tag = "3")]
    pub event_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn envelope_round_trips() {
        let e = Envelope {
            user_hash: "abc".into(),
            at_ms: 42,
            kind: Some(Kind::Message(ChatMessage {
                json: r#"{"body":"hi"}"#.into(),
            })),
        };
        let bytes = e.encode_to_vec();
        let back = Envelope::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.kind.unwrap().name(), "message");
    }
}
