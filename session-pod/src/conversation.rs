//! Reactions, edits and revokes — the contact's, arriving as messages, and the user's own, sent
//! through the control API — and what they do to stored messages; replies' quotes.
//!
//! A change names its target by the key as the actor sees it (`from_me` = the actor wrote it);
//! [`target_key`] turns that into the key in this user's store. Changes land compare-and-set
//! ([`crate::store::changes`]), the stored message and the event in one step.

use waproto::whatsapp as wa;
use wasp_common::events::{Json, Kind};
use wasp_common::model::{
    self, Message, MessageEdit, MessageKey, MessageParts, MessageRevoke, Reaction, Wid,
};
use whatsapp_rust::proto_helpers::MessageExt as _;

use crate::session::{Session, SessionError};
use crate::store::changes::{ChangeOutcome, MAX_CHANGE_ATTEMPTS};

/// A change to an earlier message that a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    React {
        target: Target,
        emoji: String,
        at_ms: i64,
    },
    Edit {
        target: Target,
        body: String,
        at_ms: i64,
    },
    Revoke {
        target: Target,
    },
}

impl Change {
    pub fn target(&self) -> &Target {
        match self {
            Self::React { target, .. } | Self::Edit { target, .. } | Self::Revoke { target } => {
                target
            }
        }
    }
}

/// The message a change names, as the actor's key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    /// The actor wrote the target (`key.from_me` in the actor's frame).
    pub by_actor: bool,
    /// `key.participant`: in a group, the target's author (a JID) when not the actor.
    pub participant: Option<String>,
}

fn target_of(key: &wa::MessageKey) -> Option<Target> {
    let id = key.id.clone().filter(|i| !i.is_empty())?;
    Some(Target {
        id,
        by_actor: key.from_me.unwrap_or(false),
        participant: key.participant.clone().filter(|p| !p.is_empty()),
    })
}

/// The change a message carries, if it is a reaction, an edit or a revoke (pure).
pub fn classify(m: &wa::Message) -> Option<Change> {
    use wa::message::protocol_message::Type;
    let base = m.get_base_message();
    if let Some(r) = base.reaction_message.as_option() {
        return Some(Change::React {
            target: target_of(r.key.as_option()?)?,
            emoji: r.text.clone().unwrap_or_default(),
            at_ms: r.sender_timestamp_ms.unwrap_or(0),
        });
    }
    let p = base.protocol_message.as_option()?;
    let target = target_of(p.key.as_option()?)?;
    if p.r#type == Some(Type::MESSAGE_EDIT) {
        let edited = p.edited_message.as_option()?;
        let body = edited.text_content().or_else(|| edited.get_caption())?;
        Some(Change::Edit {
            target,
            body: body.to_owned(),
            at_ms: p.timestamp_ms.unwrap_or(0),
        })
    } else if p.r#type == Some(Type::REVOKE) {
        Some(Change::Revoke { target })
    } else {
        None
    }
}

/// Who made a change: this user (from any of its devices) or a contact (canonical id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub is_me: bool,
    pub wid: Wid,
}

/// The target's key in this user's store (pure). `participant` is the target's `key.participant`
/// in canonical form and `participant_is_me` whether it names this user.
pub fn target_key(
    chat: &Wid,
    t: &Target,
    actor: &Actor,
    participant: Option<&Wid>,
    participant_is_me: bool,
) -> MessageKey {
    if !chat.is_group() {
        // 1:1: a message the actor wrote is ours exactly when we are the actor.
        let from_me = t.by_actor == actor.is_me;
        return MessageKey::new(from_me, &chat.serialized, &t.id, None);
    }
    let (from_me, author) = if t.by_actor {
        (actor.is_me, Some(&actor.wid))
    } else {
        (participant_is_me, participant)
    };
    let author = author.filter(|_| !from_me).map(|a| a.serialized.as_str());
    MessageKey::new(from_me, &chat.serialized, &t.id, author)
}

/// The message a change to an unstored target is shown with: only its key (pure).
pub fn placeholder(key: &MessageKey, own: Option<&Wid>, kind: &str, body: &str) -> Message {
    let chat = Wid::parse(&key.remote).unwrap_or_else(|_| Wid::from_protocol("", "c.us"));
    let author = key.participant.as_deref().and_then(|p| Wid::parse(p).ok());
    Message::new(MessageParts {
        id: &key.id,
        chat: &chat,
        own,
        author: author.as_ref(),
        from_me: key.from_me,
        body,
        kind,
        timestamp: jiff::Timestamp::now().as_second(),
        has_media: false,
        has_quoted_msg: false,
        push_name: "",
    })
}

/// What a change makes of the stored target (`None` when it is not stored): the message to
/// store and the event (pure).
pub fn compute(
    change: &Change,
    stored: Option<Message>,
    key: &MessageKey,
    change_key: &MessageKey,
    actor: &Actor,
    own: Option<&Wid>,
) -> (Option<Message>, Kind) {
    match change {
        Change::React { emoji, at_ms, .. } => {
            let secs = if *at_ms > 0 {
                at_ms / 1000
            } else {
                jiff::Timestamp::now().as_second()
            };
            let reaction = Reaction {
                id: change_key.clone(),
                reaction: emoji.clone(),
                msg_id: key.clone(),
                sender_id: actor.wid.serialized.clone(),
                timestamp: secs,
                orphan: u8::from(stored.is_none()),
                read: false,
                ack: 0,
            };
            let new = stored.map(|m| model::apply_reaction(m, &actor.wid.serialized, emoji, secs));
            (new, Kind::Reaction(Json::of(&reaction)))
        }
        Change::Edit { body, at_ms, .. } => {
            let at = if *at_ms > 0 {
                *at_ms
            } else {
                jiff::Timestamp::now().as_millisecond()
            };
            match stored {
                Some(m) => {
                    let edit = model::apply_edit(m, body, at);
                    (
                        Some(edit.message.clone()),
                        Kind::MessageEdit(Json::of(&edit)),
                    )
                }
                None => {
                    let mut m = placeholder(key, own, "chat", body);
                    m.latest_edit_sender_timestamp_ms = Some(at);
                    let edit = MessageEdit {
                        message: m,
                        new_body: body.clone(),
                        prev_body: String::new(),
                    };
                    (None, Kind::MessageEdit(Json::of(&edit)))
                }
            }
        }
        Change::Revoke { .. } => match stored {
            Some(m) => {
                let revoke = model::apply_revoke(m);
                (
                    Some(revoke.message.clone()),
                    Kind::MessageRevoke(Json::of(&revoke)),
                )
            }
            None => {
                let revoke = MessageRevoke {
                    message: placeholder(key, own, model::REVOKED_TYPE, ""),
                    revoked_msg: None,
                };
                (None, Kind::MessageRevoke(Json::of(&revoke)))
            }
        },
    }
}

/// The reply context a message carries (text or media), if any.
pub fn context_of(m: &wa::Message) -> Option<&wa::ContextInfo> {
    let b = m.get_base_message();
    b.extended_text_message
        .as_option()
        .and_then(|x| x.context_info.as_option())
        .or_else(|| {
            b.image_message
                .as_option()
                .and_then(|x| x.context_info.as_option())
        })
        .or_else(|| {
            b.video_message
                .as_option()
                .and_then(|x| x.context_info.as_option())
        })
        .or_else(|| {
            b.audio_message
                .as_option()
                .and_then(|x| x.context_info.as_option())
        })
        .or_else(|| {
            b.document_message
                .as_option()
                .and_then(|x| x.context_info.as_option())
        })
        .or_else(|| {
            b.sticker_message
                .as_option()
                .and_then(|x| x.context_info.as_option())
        })
        .filter(|c| c.stanza_id.as_deref().is_some_and(|s| !s.is_empty()))
}

/// The reply context quoting a stored message: its id, its author's JID and a copy, as
/// WhatsApp's clients send it (pure). `own_jid`: this user's phone-number JID.
pub fn quote_context(quoted: &Message, own_jid: Option<&str>) -> wa::ContextInfo {
    let participant = if quoted.from_me {
        own_jid.map(str::to_owned)
    } else {
        let author = quoted
            .author
            .as_deref()
            .unwrap_or(quoted.id.remote.as_str());
        Wid::parse(author).ok().map(|w| w.protocol_jid())
    };
    wa::ContextInfo {
        stanza_id: Some(quoted.id.id.clone()),
        participant,
        quoted_message: buffa::MessageField::some(wa::Message {
            conversation: Some(quoted.body.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Session {
    /// Lands a change on `key` in `chat`: re-read and retried while another change wins the
    /// race; the stored message after it (or the placeholder the event shows).
    pub(crate) async fn land_change(
        &self,
        change: &Change,
        key: &MessageKey,
        change_key: &MessageKey,
        actor: &Actor,
        own: Option<&Wid>,
        emit: bool,
    ) -> Result<(Option<Message>, ChangeOutcome), SessionError> {
        let chat = key.remote.as_str();
        for _ in 0..MAX_CHANGE_ATTEMPTS {
            let stored = self.store.message_json(chat, &key.serialized).await?;
            let (old_json, old) = match stored {
                Some((j, m)) => (Some(j), Some(m)),
                None => (None, None),
            };
            let (new, event) = compute(change, old, key, change_key, actor, own);
            let outcome = self
                .store
                .apply_change(
                    &change_key.serialized,
                    chat,
                    &key.serialized,
                    old_json.as_deref(),
                    new.as_ref(),
                    event,
                    emit,
                )
                .await?;
            if outcome != ChangeOutcome::Conflict {
                return Ok((new, outcome));
            }
        }
        Err(SessionError::Send(format!(
            "message {} changed too often to apply this change",
            key.id
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wa::message::protocol_message::Type;

    fn key(
        from_me: bool,
        id: &str,
        participant: Option<&str>,
    ) -> buffa::MessageField<wa::MessageKey> {
        buffa::MessageField::some(wa::MessageKey {
            remote_jid: Some("41790000009@s.whatsapp.net".into()),
            from_me: Some(from_me),
            id: Some(id.into()),
            participant: participant.map(str::to_owned),
        })
    }

    fn contact() -> Actor {
        Actor {
            is_me: false,
            wid: Wid::parse("41790000001@c.us").unwrap(),
        }
    }

    #[test]
    fn reactions_edits_and_revokes_are_read_from_their_protos() {
        let react = wa::Message {
            reaction_message: buffa::MessageField::some(wa::message::ReactionMessage {
                key: key(false, "A1", None),
                text: Some("👍".into()),
                sender_timestamp_ms: Some(1_700_000_000_123),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            classify(&react),
            Some(Change::React {
                target: Target {
                    id: "A1".into(),
                    by_actor: false,
                    participant: None
                },
                emoji: "👍".into(),
                at_ms: 1_700_000_000_123
            })
        );
        let edit = wa::Message {
            protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
                key: key(true, "B2", None),
                r#type: Some(Type::MESSAGE_EDIT),
                edited_message: buffa::MessageField::some(wa::Message {
                    conversation: Some("fixed".into()),
                    ..Default::default()
                }),
                timestamp_ms: Some(5),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            matches!(classify(&edit), Some(Change::Edit { ref body, at_ms: 5, .. }) if body == "fixed")
        );
        let revoke = wa::Message {
            protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
                key: key(true, "C3", None),
                r#type: Some(Type::REVOKE),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            matches!(classify(&revoke), Some(Change::Revoke { ref target }) if target.id == "C3")
        );
        let text = wa::Message {
            conversation: Some("hi".into()),
            ..Default::default()
        };
        assert_eq!(classify(&text), None);
        // Other protocol messages (key shares, history notifications) are no change.
        let other = wa::Message {
            protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
                key: key(true, "D4", None),
                r#type: Some(Type::HISTORY_SYNC_NOTIFICATION),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(classify(&other), None);
    }

    #[test]
    fn a_key_in_the_actors_frame_becomes_the_stored_key() {
        let chat = Wid::parse("41790000001@c.us").unwrap();
        let t = |by_actor| Target {
            id: "X".into(),
            by_actor,
            participant: None,
        };
        // The contact reacts to our message (not theirs) and to its own.
        assert_eq!(
            target_key(&chat, &t(false), &contact(), None, false).serialized,
            "true_41790000001@c.us_X"
        );
        assert_eq!(
            target_key(&chat, &t(true), &contact(), None, false).serialized,
            "false_41790000001@c.us_X"
        );
        // We react (from the phone) to the contact's message.
        let me = Actor {
            is_me: true,
            wid: Wid::parse("41790000009@c.us").unwrap(),
        };
        assert_eq!(
            target_key(&chat, &t(false), &me, None, false).serialized,
            "false_41790000001@c.us_X"
        );
        // Groups: the author is in the key of others' messages.
        let group = Wid::parse("120363000000000001@g.us").unwrap();
        let other = Wid::parse("41790000002@c.us").unwrap();
        assert_eq!(
            target_key(&group, &t(true), &contact(), None, false).serialized,
            "false_120363000000000001@g.us_X_41790000001@c.us"
        );
        assert_eq!(
            target_key(&group, &t(false), &contact(), Some(&other), false).serialized,
            "false_120363000000000001@g.us_X_41790000002@c.us"
        );
        assert_eq!(
            target_key(&group, &t(false), &contact(), None, true).serialized,
            "true_120363000000000001@g.us_X"
        );
    }

    fn stored() -> Message {
        let chat = Wid::parse("41790000001@c.us").unwrap();
        Message::new(MessageParts {
            id: "X",
            chat: &chat,
            own: None,
            author: None,
            from_me: true,
            body: "hello",
            kind: "chat",
            timestamp: 7,
            has_media: false,
            has_quoted_msg: false,
            push_name: "",
        })
    }

    #[test]
    fn changes_update_the_stored_message_and_name_their_event() {
        let key = stored().id;
        let ck = MessageKey::new(false, &key.remote, "R", None);
        let react = Change::React {
            target: Target {
                id: "X".into(),
                by_actor: false,
                participant: None,
            },
            emoji: "❤".into(),
            at_ms: 9_000,
        };
        let (new, event) = compute(&react, Some(stored()), &key, &ck, &contact(), None);
        let new = new.unwrap();
        assert!(new.has_reaction);
        assert_eq!(new.reactions[0].reaction, "❤");
        let Kind::Reaction(j) = event else {
            panic!("not a reaction event")
        };
        let r: Reaction = serde_json::from_str(&j.json).unwrap();
        assert_eq!((r.orphan, r.timestamp, r.msg_id), (0, 9, key.clone()));
        // Not stored: no write, an orphan reaction.
        let (new, event) = compute(&react, None, &key, &ck, &contact(), None);
        assert!(new.is_none());
        let Kind::Reaction(j) = event else {
            panic!("not a reaction event")
        };
        assert!(j.json.contains("\"orphan\":1"));
        let revoke = Change::Revoke {
            target: react.target().clone(),
        };
        let (new, event) = compute(&revoke, Some(stored()), &key, &ck, &contact(), None);
        assert_eq!(new.unwrap().kind, model::REVOKED_TYPE);
        let Kind::MessageRevoke(j) = event else {
            panic!("not a revoke event")
        };
        let r: MessageRevoke = serde_json::from_str(&j.json).unwrap();
        assert_eq!(r.revoked_msg.unwrap().body, "hello");
    }

    #[test]
    fn a_quote_names_the_quoted_message_and_its_author() {
        let ctx = quote_context(&stored(), Some("41790000009@s.whatsapp.net"));
        assert_eq!(ctx.stanza_id.as_deref(), Some("X"));
        assert_eq!(
            ctx.participant.as_deref(),
            Some("41790000009@s.whatsapp.net")
        );
        let mut theirs = stored();
        theirs.from_me = false;
        let ctx = quote_context(&theirs, None);
        assert_eq!(
            ctx.participant.as_deref(),
            Some("41790000001@s.whatsapp.net")
        );
        let reply = wa::Message {
            extended_text_message: buffa::MessageField::some(wa::message::ExtendedTextMessage {
                text: Some("re".into()),
                context_info: buffa::MessageField::some(ctx),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            context_of(&reply).and_then(|c| c.stanza_id.as_deref()),
            Some("X")
        );
    }
}
