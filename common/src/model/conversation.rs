//! What happens to messages after they are sent — reactions, edits, revokes, receipts — and the
//! conversation around them (typing, groups), shaped as whatsapp-web.js gives them to its
//! clients: the data of its `message_reaction`, `message_edit`, `message_revoke_everyone`
//! events, a `GroupChat`'s `groupMetadata`, and the rules that tie them to stored messages
//! (pure).

use serde::{Deserialize, Serialize};

use super::message::{Message, MessageKey};
use super::wid::Wid;

/// whatsapp-web.js's type of a message revoked for everyone.
pub const REVOKED_TYPE: &str = "revoked";

/// Longest reaction accepted, in characters (an emoji with modifiers and joiners is a handful).
pub const MAX_REACTION_CHARS: usize = 32;

/// whatsapp-web.js's `Reaction` (the data of `message_reaction`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Reaction {
    /// The reaction message's own key.
    pub id: MessageKey,
    /// The emoji; empty when the sender took its reaction back.
    pub reaction: String,
    /// The message reacted to.
    pub msg_id: MessageKey,
    /// Who reacted (`…@c.us`; the own id for own reactions).
    pub sender_id: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// 0: the reacted message is known; whatsapp-web.js's orphan flag.
    pub orphan: u8,
    pub read: bool,
    pub ack: i8,
}

/// One sender's current reaction, as kept on the stored message (`reactions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReactionEntry {
    pub sender_id: String,
    pub reaction: String,
    /// Unix seconds.
    pub timestamp: i64,
}

/// The data of `message_edit`: whatsapp-web.js's `(message, newBody, prevBody)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MessageEdit {
    /// The message as it is now (the new body).
    pub message: Message,
    pub new_body: String,
    pub prev_body: String,
}

/// The data of `message_revoke_everyone`: whatsapp-web.js's `(message, revoked_msg)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MessageRevoke {
    /// The message as it is now: `type` `revoked`, empty body.
    pub message: Message,
    /// The message before it was revoked, when it was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_msg: Option<Message>,
}

/// What a chat's other side is doing (the data of wasp's `chat_state` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChatState {
    pub chat_id: String,
    /// In a group: the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub state: ChatStateKind,
}

/// whatsapp-web.js's `sendStateTyping` / `sendStateRecording` / `clearState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ChatStateKind {
    Typing,
    Recording,
    Paused,
}

impl ChatStateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Typing => "typing",
            Self::Recording => "recording",
            Self::Paused => "paused",
        }
    }
}

/// A group member as whatsapp-web.js's `GroupParticipant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupParticipant {
    pub id: Wid,
    pub is_admin: bool,
    pub is_super_admin: bool,
}

/// whatsapp-web.js's `GroupChat.groupMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupMetadata {
    pub id: Wid,
    pub subject: String,
    /// The creator, when WhatsApp names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Wid>,
    /// Unix seconds.
    pub creation: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    pub participants: Vec<GroupParticipant>,
    /// Only admins may send.
    pub announce: bool,
    /// Only admins may edit the group's settings.
    pub restrict: bool,
}

/// Why a message id given by a client names no message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a message id is whatsapp-web.js's id._serialized: \
     <true|false>_<chat id>_<message id>[_<participant>]"
)]
pub struct BadMessageKey;

/// Longest serialized message id accepted.
pub const MAX_MESSAGE_KEY_LEN: usize = 300;

fn plain_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl MessageKey {
    /// Parses whatsapp-web.js's `id._serialized` (`fromMe_remote_id[_participant]`) back into
    /// the key; chat and participant in their canonical spelling.
    pub fn parse(serialized: &str) -> Result<Self, BadMessageKey> {
        let s = serialized.trim();
        if s.len() > MAX_MESSAGE_KEY_LEN {
            return Err(BadMessageKey);
        }
        let mut parts = s.split('_');
        let from_me = match parts.next() {
            Some("true") => true,
            Some("false") => false,
            _ => return Err(BadMessageKey),
        };
        let remote = parts.next().ok_or(BadMessageKey)?;
        let id = parts.next().ok_or(BadMessageKey)?;
        let participant = parts.next();
        if parts.next().is_some() || !plain_id(id) || !remote.contains('@') {
            return Err(BadMessageKey);
        }
        let chat = Wid::parse(remote).map_err(|_| BadMessageKey)?;
        let participant = match participant {
            Some(p) => {
                let p = Wid::parse(p).map_err(|_| BadMessageKey)?;
                if !chat.is_group() {
                    return Err(BadMessageKey);
                }
                Some(p.serialized)
            }
            None => None,
        };
        Ok(Self::new(
            from_me,
            &chat.serialized,
            id,
            participant.as_deref(),
        ))
    }
}

/// A stored message with `sender`'s reaction set (an empty `emoji` removes it): the reactions
/// list keeps one entry per sender, newest last.
pub fn apply_reaction(mut m: Message, sender: &str, emoji: &str, timestamp: i64) -> Message {
    m.reactions.retain(|r| r.sender_id != sender);
    if !emoji.is_empty() {
        m.reactions.push(ReactionEntry {
            sender_id: sender.to_owned(),
            reaction: emoji.to_owned(),
            timestamp,
        });
    }
    m.has_reaction = !m.reactions.is_empty();
    m
}

/// A stored message with its new body after an edit (`prevBody` is the old one).
pub fn apply_edit(mut m: Message, new_body: &str, edited_at_ms: i64) -> MessageEdit {
    let prev_body = std::mem::replace(&mut m.body, new_body.to_owned());
    m.latest_edit_sender_timestamp_ms = Some(edited_at_ms);
    MessageEdit {
        new_body: new_body.to_owned(),
        prev_body,
        message: m,
    }
}

/// A stored message revoked for everyone: whatsapp-web.js shows it as type `revoked`, without
/// body, media or reactions.
pub fn apply_revoke(before: Message) -> MessageRevoke {
    let mut m = before.clone();
    m.kind = REVOKED_TYPE.to_owned();
    m.body.clear();
    m.has_media = false;
    m.mimetype = None;
    m.filename = None;
    m.size = None;
    m.reactions.clear();
    m.has_reaction = false;
    MessageRevoke {
        message: m,
        revoked_msg: Some(before),
    }
}

/// Checks a reaction: at most [`MAX_REACTION_CHARS`] characters, no control characters
/// (empty removes).
pub fn check_reaction(emoji: &str) -> Result<(), String> {
    if emoji.chars().count() > MAX_REACTION_CHARS {
        return Err(format!(
            "reaction must be at most {MAX_REACTION_CHARS} characters"
        ));
    }
    if emoji
        .chars()
        .any(|c| c.is_control() || c.is_ascii_alphanumeric())
    {
        return Err("reaction must be an emoji (or empty to remove one)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MessageParts;

    fn message(body: &str) -> Message {
        let chat = Wid::parse("41790000001@c.us").unwrap();
        Message::new(MessageParts {
            id: "3EB0AA",
            chat: &chat,
            own: None,
            author: None,
            from_me: false,
            body,
            kind: "chat",
            timestamp: 10,
            has_media: false,
            has_quoted_msg: false,
            push_name: "",
        })
    }

    #[test]
    fn serialized_ids_parse_back_into_their_keys() {
        let k = MessageKey::new(true, "41790000001@c.us", "3EB0AA", None);
        assert_eq!(MessageKey::parse(&k.serialized).unwrap(), k);
        let g = MessageKey::new(
            false,
            "120363000000000001@g.us",
            "ABC123",
            Some("41790000002@c.us"),
        );
        assert_eq!(MessageKey::parse(&g.serialized).unwrap(), g);
        // The protocol's spelling becomes the canonical one.
        assert_eq!(
            MessageKey::parse("false_41790000001@s.whatsapp.net_X1")
                .unwrap()
                .serialized,
            "false_41790000001@c.us_X1"
        );
        for bad in [
            "",
            "3EB0AA",
            "yes_41790000001@c.us_X",
            "true_41790000001@c.us_",
            "true_41790000001@c.us_X_41790000002@c.us",
            "true_41790000001@c.us_X-1",
            "true_41790000001_X1",
            "true_120363000000000001@g.us_X1_nobody@c.us",
            "true_120363000000000001@g.us_X1_41790000002@c.us_more",
        ] {
            assert!(MessageKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_reaction_per_sender_and_empty_removes_it() {
        let m = apply_reaction(message("hi"), "41790000009@c.us", "👍", 11);
        let m = apply_reaction(m, "41790000008@c.us", "❤️", 12);
        let m = apply_reaction(m, "41790000009@c.us", "😂", 13);
        assert!(m.has_reaction);
        let got: Vec<_> = m
            .reactions
            .iter()
            .map(|r| (r.sender_id.as_str(), r.reaction.as_str()))
            .collect();
        assert_eq!(
            got,
            [("41790000008@c.us", "❤️"), ("41790000009@c.us", "😂")]
        );
        let m = apply_reaction(m, "41790000009@c.us", "", 14);
        let m = apply_reaction(m, "41790000008@c.us", "", 15);
        assert!(!m.has_reaction && m.reactions.is_empty());
    }

    #[test]
    fn edits_keep_the_previous_body_and_revokes_empty_the_message() {
        let e = apply_edit(message("helo"), "hello", 20);
        assert_eq!(
            (e.prev_body.as_str(), e.new_body.as_str()),
            ("helo", "hello")
        );
        assert_eq!(e.message.body, "hello");
        assert_eq!(e.message.latest_edit_sender_timestamp_ms, Some(20));

        let media = message("caption").with_media("image/jpeg", None, 10);
        let media = apply_reaction(media, "41790000009@c.us", "👍", 1);
        let r = apply_revoke(media.clone());
        assert_eq!(r.message.kind, REVOKED_TYPE);
        assert!(r.message.body.is_empty() && !r.message.has_media && !r.message.has_reaction);
        assert_eq!(r.message.mimetype, None);
        assert_eq!(r.revoked_msg, Some(media));
        assert_eq!(r.message.key(), "false_41790000001@c.us_3EB0AA");
    }

    #[test]
    fn reactions_are_emoji_or_empty() {
        assert!(check_reaction("👍").is_ok());
        assert!(check_reaction("👩🏽‍⚕️").is_ok());
        assert!(check_reaction("").is_ok());
        assert!(check_reaction("ok").is_err());
        assert!(check_reaction("\u{7}").is_err());
        assert!(check_reaction(&"👍".repeat(40)).is_err());
    }

    #[test]
    fn group_metadata_reads_like_whatsapp_web_js() {
        let g = GroupMetadata {
            id: Wid::parse("120363000000000001@g.us").unwrap(),
            subject: "Clinic".into(),
            owner: Some(Wid::parse("41790000009@c.us").unwrap()),
            creation: 1_700_000_000,
            desc: None,
            participants: vec![GroupParticipant {
                id: Wid::parse("41790000009@c.us").unwrap(),
                is_admin: true,
                is_super_admin: true,
            }],
            announce: false,
            restrict: false,
        };
        let v = serde_json::to_value(&g).unwrap();
        assert_eq!(v["id"]["_serialized"], "120363000000000001@g.us");
        assert_eq!(v["participants"][0]["isSuperAdmin"], true);
        assert_eq!(serde_json::from_value::<GroupMetadata>(v).unwrap(), g);
    }
}
