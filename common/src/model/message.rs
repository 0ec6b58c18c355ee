//! The one message model of wasp: the store, every REST answer, every event and webhook carry a
//! message as this JSON, which is how whatsapp-web.js serializes a `Message` (so a client written
//! against seed 003 reads it unchanged), plus wasp's additions `chatId`, `pushName`, `eventId`.

use serde::{Deserialize, Serialize};

use super::wid::Wid;

/// whatsapp-web.js's `MessageAck` scale.
pub mod ack {
    pub const ERROR: i8 = -1;
    pub const PENDING: i8 = 0;
    /// The server has it (a sent message).
    pub const SERVER: i8 = 1;
    /// Delivered to the recipient's device.
    pub const DEVICE: i8 = 2;
    pub const READ: i8 = 3;
    /// A voice note or video was played.
    pub const PLAYED: i8 = 4;
}

/// whatsapp-web.js's message id object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MessageKey {
    pub from_me: bool,
    /// The chat (`…@c.us`, `…@g.us`).
    pub remote: String,
    /// The message's own id as WhatsApp gave it.
    pub id: String,
    /// The group member who wrote it (group messages of others only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    /// `<fromMe>_<remote>_<id>[_<participant>]`: unique per user, the id routes take.
    #[serde(rename = "_serialized")]
    pub serialized: String,
}

impl MessageKey {
    pub fn new(from_me: bool, remote: &str, id: &str, participant: Option<&str>) -> Self {
        let mut serialized = format!("{from_me}_{remote}_{id}");
        if let Some(p) = participant {
            serialized.push('_');
            serialized.push_str(p);
        }
        Self {
            from_me,
            remote: remote.to_owned(),
            id: id.to_owned(),
            participant: participant.map(str::to_owned),
            serialized,
        }
    }
}

/// A message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: MessageKey,
    /// The text, or a media message's caption.
    pub body: String,
    /// whatsapp-web.js's `MessageTypes`: `chat` for text; `image`, `video`, `audio`, `ptt`,
    /// `document`, `sticker`, `location`, `vcard`, … for the others; `unknown` otherwise.
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// Who sent it: the chat for 1:1 messages of others, the own id for own messages, the
    /// group for group messages (the member is in `author`).
    pub from: String,
    /// The other side: the own id for messages of others, the chat for own messages.
    pub to: String,
    /// The group member who wrote a group message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub from_me: bool,
    pub has_media: bool,
    /// [`ack`]: -1 error, 0 pending, 1 server, 2 delivered, 3 read, 4 played.
    #[cfg_attr(feature = "openapi", schema(minimum = -1, maximum = 4))]
    pub ack: i8,
    pub has_quoted_msg: bool,
    /// wasp: the quoted message's `id._serialized` (replies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quoted_msg_id: Option<String>,
    /// Someone reacted to it (whatsapp-web.js `hasReaction`).
    #[serde(default)]
    pub has_reaction: bool,
    /// wasp: the current reaction of each sender, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<super::conversation::ReactionEntry>,
    /// Unix milliseconds of the latest edit (whatsapp-web.js `latestEditSenderTimestampMs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_edit_sender_timestamp_ms: Option<i64>,
    /// wasp: the chat (`_serialized`), the same for both sides of a conversation.
    pub chat_id: String,
    /// wasp: the sender's WhatsApp push name, if it sent one.
    pub push_name: String,
    /// Media messages: the file's mimetype (whatsapp-web.js `_data.mimetype`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mimetype: Option<String>,
    /// Media messages: the file name the sender gave (documents mostly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Media messages: the file's size in bytes (whatsapp-web.js `_data.size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// wasp: the id of the event that announced this message (resume the event stream after
    /// it with `since`). Empty only for a message whose event was never written.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event_id: String,
}

/// What a message is made from, in protocol-neutral terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageParts<'a> {
    pub id: &'a str,
    pub chat: &'a Wid,
    /// The own account's id, if known.
    pub own: Option<&'a Wid>,
    /// For group messages of others: the member who wrote it.
    pub author: Option<&'a Wid>,
    pub from_me: bool,
    pub body: &'a str,
    pub kind: &'a str,
    pub timestamp: i64,
    pub has_media: bool,
    pub has_quoted_msg: bool,
    pub push_name: &'a str,
}

impl Message {
    /// The message as whatsapp-web.js would show it: `from`/`to` by direction, the id object,
    /// `ack` 1 (the server has it) for own messages and received ones alike.
    pub fn new(p: MessageParts<'_>) -> Self {
        let own = p.own.map(|w| w.serialized.clone()).unwrap_or_default();
        let chat = p.chat.serialized.clone();
        let author = p
            .author
            .filter(|_| p.chat.is_group() && !p.from_me)
            .map(|a| a.serialized.clone());
        let (from, to) = if p.from_me {
            (own, chat.clone())
        } else {
            (chat.clone(), own)
        };
        Self {
            id: MessageKey::new(p.from_me, &chat, p.id, author.as_deref()),
            body: p.body.to_owned(),
            kind: p.kind.to_owned(),
            timestamp: p.timestamp,
            from,
            to,
            author,
            from_me: p.from_me,
            has_media: p.has_media,
            ack: ack::SERVER,
            has_quoted_msg: p.has_quoted_msg,
            quoted_msg_id: None,
            has_reaction: false,
            reactions: Vec::new(),
            latest_edit_sender_timestamp_ms: None,
            chat_id: chat,
            push_name: p.push_name.to_owned(),
            mimetype: None,
            filename: None,
            size: None,
            event_id: String::new(),
        }
    }

    /// The message with its media's description (`hasMedia` set).
    pub fn with_media(mut self, mimetype: &str, filename: Option<&str>, size: u64) -> Self {
        self.has_media = true;
        self.mimetype = Some(mimetype.to_owned());
        self.filename = filename.map(str::to_owned);
        self.size = Some(size);
        self
    }

    /// The key the store files the message under (its `_serialized` id).
    pub fn key(&self) -> &str {
        &self.id.serialized
    }

    /// The JSON every part reads. Serialising this struct cannot fail.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// whatsapp-web.js's message type of a message: `chat` for text, the media kind otherwise.
/// `media_type` is the protocol's (`image`, `video`, `audio`, `ptt`, `document`, `sticker`,
/// `gif`, `vcard`, `location`, …), `stanza_type` the stanza's `type` attribute.
pub fn message_type(has_text: bool, media_type: &str, stanza_type: &str) -> &'static str {
    match media_type {
        "" if has_text => "chat",
        "image" => "image",
        "video" | "gif" => "video",
        "audio" => "audio",
        "ptt" => "ptt",
        "document" => "document",
        "sticker" => "sticker",
        "vcard" | "contact_array" => "vcard",
        "location" | "livelocation" => "location",
        "" if stanza_type == "text" => "chat",
        _ => "unknown",
    }
}

/// Whether a message of this type carries media to download.
pub fn type_has_media(kind: &str) -> bool {
    matches!(
        kind,
        "image" | "video" | "audio" | "ptt" | "document" | "sticker"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wid(s: &str) -> Wid {
        Wid::parse(s).unwrap()
    }

    #[test]
    fn an_inbound_message_reads_like_whatsapp_web_js() {
        let chat = wid("41790000001@c.us");
        let me = wid("41790000009@c.us");
        let m = Message::new(MessageParts {
            id: "3EB0ABC",
            chat: &chat,
            own: Some(&me),
            author: None,
            from_me: false,
            body: "hello",
            kind: "chat",
            timestamp: 1_700_000_000,
            has_media: false,
            has_quoted_msg: false,
            push_name: "Ana",
        });
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({
                "id": {"fromMe": false, "remote": "41790000001@c.us", "id": "3EB0ABC",
                       "_serialized": "false_41790000001@c.us_3EB0ABC"},
                "body": "hello", "type": "chat", "timestamp": 1_700_000_000,
                "from": "41790000001@c.us", "to": "41790000009@c.us",
                "fromMe": false, "hasMedia": false, "ack": 1, "hasQuotedMsg": false,
                "hasReaction": false, "chatId": "41790000001@c.us", "pushName": "Ana"
            })
        );
    }

    #[test]
    fn own_and_group_messages_name_the_right_sides() {
        let chat = wid("41790000001@c.us");
        let me = wid("41790000009@c.us");
        let parts = MessageParts {
            id: "X1",
            chat: &chat,
            own: Some(&me),
            author: None,
            from_me: true,
            body: "hi",
            kind: "chat",
            timestamp: 1,
            has_media: false,
            has_quoted_msg: false,
            push_name: "",
        };
        let own = Message::new(parts.clone());
        assert_eq!(
            (own.from.as_str(), own.to.as_str()),
            ("41790000009@c.us", "41790000001@c.us")
        );
        assert_eq!(own.key(), "true_41790000001@c.us_X1");
        assert_eq!(own.author, None);

        let group = wid("120363000000000001@g.us");
        let member = wid("41790000002@c.us");
        let g = Message::new(MessageParts {
            chat: &group,
            author: Some(&member),
            from_me: false,
            ..parts
        });
        assert_eq!(g.from, "120363000000000001@g.us");
        assert_eq!(g.author.as_deref(), Some("41790000002@c.us"));
        assert_eq!(g.id.participant.as_deref(), Some("41790000002@c.us"));
        assert_eq!(g.key(), "false_120363000000000001@g.us_X1_41790000002@c.us");
    }

    #[test]
    fn the_json_round_trips_with_and_without_the_event_id() {
        let chat = wid("1555000100@c.us");
        let mut m = Message::new(MessageParts {
            id: "A",
            chat: &chat,
            own: None,
            author: None,
            from_me: false,
            body: "x",
            kind: "chat",
            timestamp: 5,
            has_media: false,
            has_quoted_msg: false,
            push_name: "",
        });
        assert!(!m.to_json().contains("eventId"));
        assert_eq!(serde_json::from_str::<Message>(&m.to_json()).unwrap(), m);
        m.event_id = "1700000000000-0".into();
        assert!(m.to_json().ends_with(r#","eventId":"1700000000000-0"}"#));
        assert_eq!(serde_json::from_str::<Message>(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn message_types_follow_whatsapp_web_js() {
        assert_eq!(message_type(true, "", "text"), "chat");
        assert_eq!(message_type(false, "", "text"), "chat");
        assert_eq!(message_type(false, "image", "media"), "image");
        assert_eq!(message_type(true, "image", "media"), "image", "a caption");
        assert_eq!(message_type(false, "gif", "media"), "video");
        assert_eq!(message_type(false, "ptt", "media"), "ptt");
        assert_eq!(message_type(false, "", "reaction"), "unknown");
        assert!(type_has_media("document") && !type_has_media("chat"));
    }
}
