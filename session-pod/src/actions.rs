//! What the user does in a conversation besides sending: react, edit, revoke, mark read,
//! typing; and what it asks WhatsApp: group metadata, number checks, profile pictures.

use std::sync::Arc;

use waproto::whatsapp as wa;
use wasp_common::model::{
    self, ChatStateKind, GroupMetadata, GroupParticipant, Message, MessageKey, Reaction, Wid,
};
use whatsapp_rust::Jid;
use whatsapp_rust::client::Client;

use crate::conversation::{Actor, Change, Target};
use crate::session::{Session, SessionError};

/// Why a conversation action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no such message")]
    NotFound,
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("WhatsApp did not answer: {0}")]
    Upstream(String),
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl From<crate::store::StoreError> for ActionError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Session(e.into())
    }
}

fn jid_of(w: &Wid) -> Result<Jid, ActionError> {
    w.protocol_jid()
        .parse()
        .map_err(|_| ActionError::BadRequest(format!("not a WhatsApp id: {w}")))
}

/// The library's key of a stored message, as this user sends it in a reaction (pure).
pub fn wire_key(key: &MessageKey) -> wa::MessageKey {
    let remote = Wid::parse(&key.remote).map_or_else(|_| key.remote.clone(), |w| w.protocol_jid());
    wa::MessageKey {
        remote_jid: Some(remote),
        from_me: Some(key.from_me),
        id: Some(key.id.clone()),
        participant: key
            .participant
            .as_deref()
            .and_then(|p| Wid::parse(p).ok())
            .map(|p| p.protocol_jid()),
    }
}

/// A library group as whatsapp-web.js's `groupMetadata` (pure).
pub fn group_metadata(g: &whatsapp_rust::features::GroupMetadata) -> GroupMetadata {
    let wid = |j: &Jid| Wid::from_protocol(j.user.as_str(), j.server.as_str());
    GroupMetadata {
        id: wid(&g.id),
        subject: g.subject.clone(),
        owner: g.creator_pn.as_ref().or(g.creator.as_ref()).map(wid),
        creation: g.creation_time.map_or(0, |t| t as i64),
        desc: g.description.clone().filter(|d| !d.is_empty()),
        participants: g
            .participants
            .iter()
            .map(|p| GroupParticipant {
                id: wid(p.phone_number.as_ref().unwrap_or(&p.jid)),
                is_admin: p.is_admin(),
                is_super_admin: p.is_super_admin(),
            })
            .collect(),
        announce: g.is_announcement,
        restrict: g.is_locked,
    }
}

impl Session {
    /// The stored message `key` names (another user's keys name nothing here).
    pub async fn stored_message(&self, key: &MessageKey) -> Result<Message, ActionError> {
        self.store
            .message_json(&key.remote, &key.serialized)
            .await?
            .map(|(_, m)| m)
            .ok_or(ActionError::NotFound)
    }

    fn me(&self, client: &Client) -> Actor {
        let own = client
            .pn()
            .map(|j| Wid::from_protocol(j.user.as_str(), j.server.as_str()));
        Actor {
            is_me: true,
            wid: own.unwrap_or_else(|| Wid::from_protocol("", "c.us")),
        }
    }

    /// Reacts to a stored message (an empty emoji takes the reaction back).
    pub async fn react(&self, key: &MessageKey, emoji: &str) -> Result<Reaction, ActionError> {
        self.stored_message(key).await?;
        let client = self.connected_client()?;
        let chat = Wid::parse(&key.remote).map_err(|e| ActionError::BadRequest(e.to_string()))?;
        let sent = client
            .send_reaction(jid_of(&chat)?, wire_key(key), emoji)
            .await
            .map_err(|e| SessionError::Send(e.to_string()))?;
        self.metrics.messages_out.inc();
        let me = self.me(&client);
        let change = Change::React {
            target: target_of_key(key),
            emoji: emoji.to_owned(),
            at_ms: jiff::Timestamp::now().as_millisecond(),
        };
        let change_key = MessageKey::new(true, &chat.serialized, &sent.message_id, None);
        self.land_change(&change, key, &change_key, &me, Some(&me.wid), true)
            .await?;
        let at = jiff::Timestamp::now().as_second();
        Ok(Reaction {
            id: change_key,
            reaction: emoji.to_owned(),
            msg_id: key.clone(),
            sender_id: me.wid.serialized,
            timestamp: at,
            orphan: 0,
            read: false,
            ack: model::ack::SERVER,
        })
    }

    /// Edits an own text message for everyone.
    pub async fn edit(&self, key: &MessageKey, body: &str) -> Result<Message, ActionError> {
        let stored = self.stored_message(key).await?;
        if !key.from_me {
            return Err(ActionError::NotAllowed(
                "only own messages can be edited".into(),
            ));
        }
        if stored.kind != "chat" {
            return Err(ActionError::NotAllowed(
                "only text messages can be edited".into(),
            ));
        }
        let client = self.connected_client()?;
        let chat = Wid::parse(&key.remote).map_err(|e| ActionError::BadRequest(e.to_string()))?;
        client
            .edit_message(
                jid_of(&chat)?,
                key.id.clone(),
                wa::Message {
                    conversation: Some(body.to_owned()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| SessionError::Send(e.to_string()))?;
        self.metrics.messages_out.inc();
        let at = jiff::Timestamp::now().as_millisecond();
        let me = self.me(&client);
        let change = Change::Edit {
            target: target_of_key(key),
            body: body.to_owned(),
            at_ms: at,
        };
        // The change's own key: unique per edit, never the message's (already deduplicated).
        let change_key = MessageKey::new(true, &chat.serialized, &format!("edit{at}"), None);
        let (new, _) = self
            .land_change(&change, key, &change_key, &me, Some(&me.wid), true)
            .await?;
        Ok(new.unwrap_or(stored))
    }

    /// Deletes an own message for everyone.
    pub async fn revoke(&self, key: &MessageKey) -> Result<Message, ActionError> {
        let stored = self.stored_message(key).await?;
        if !key.from_me {
            return Err(ActionError::NotAllowed(
                "only own messages can be deleted for everyone".into(),
            ));
        }
        if stored.kind == model::REVOKED_TYPE {
            return Ok(stored);
        }
        let client = self.connected_client()?;
        let chat = Wid::parse(&key.remote).map_err(|e| ActionError::BadRequest(e.to_string()))?;
        client
            .revoke_message(
                jid_of(&chat)?,
                key.id.clone(),
                whatsapp_rust::send::RevokeType::Sender,
            )
            .await
            .map_err(|e| SessionError::Send(e.to_string()))?;
        self.metrics.messages_out.inc();
        let me = self.me(&client);
        let change = Change::Revoke {
            target: target_of_key(key),
        };
        let change_key =
            MessageKey::new(true, &chat.serialized, &format!("revoke{}", key.id), None);
        let (new, _) = self
            .land_change(&change, key, &change_key, &me, Some(&me.wid), true)
            .await?;
        Ok(new.unwrap_or(stored))
    }

    /// Sends read receipts for the chat's unread messages and resets its unread count; the
    /// number of messages read.
    pub async fn seen(&self, chat: &Wid) -> Result<u32, ActionError> {
        let client = self.connected_client()?;
        let unread = self.store.unread_inbound(&chat.serialized, 500).await?;
        let chat_jid = jid_of(chat)?;
        // A group's receipts go per author.
        let mut by_author: Vec<(Option<String>, Vec<&str>)> = Vec::new();
        for m in &unread {
            let author = m.author.clone().filter(|_| chat.is_group());
            match by_author.iter_mut().find(|(a, _)| *a == author) {
                Some((_, ids)) => ids.push(m.id.id.as_str()),
                None => by_author.push((author, vec![m.id.id.as_str()])),
            }
        }
        for (author, ids) in &by_author {
            let sender = match author {
                Some(a) => Some(jid_of(
                    &Wid::parse(a).map_err(|e| ActionError::BadRequest(e.to_string()))?,
                )?),
                None => None,
            };
            client
                .mark_as_read(&chat_jid, sender.as_ref(), ids)
                .await
                .map_err(|e| SessionError::Send(e.to_string()))?;
        }
        self.store.mark_chat_read(&chat.serialized).await?;
        Ok(unread.len() as u32)
    }

    /// Shows this user typing, recording, or neither in a chat.
    pub async fn chat_state(&self, chat: &Wid, state: ChatStateKind) -> Result<(), ActionError> {
        let client = self.connected_client()?;
        let jid = jid_of(chat)?;
        let cs = client.chatstate();
        let res = match state {
            ChatStateKind::Typing => cs.send_composing(&jid).await,
            ChatStateKind::Recording => cs.send_recording(&jid).await,
            ChatStateKind::Paused => cs.send_paused(&jid).await,
        };
        res.map_err(|e| SessionError::Send(e.to_string()).into())
    }

    /// A group's metadata from WhatsApp, recorded for `/chats`.
    pub async fn group(&self, group: &Wid) -> Result<GroupMetadata, ActionError> {
        let client = self.connected_client()?;
        self.refresh_group(&client, group).await
    }

    pub(crate) async fn refresh_group(
        &self,
        client: &Client,
        group: &Wid,
    ) -> Result<GroupMetadata, ActionError> {
        let meta = client
            .groups()
            .get_metadata(&jid_of(group)?)
            .await
            // WhatsApp answers groups one is not in like groups that do not exist.
            .map_err(|e| {
                tracing::info!(error = %e, "group metadata refused");
                ActionError::NotFound
            })?;
        let meta = group_metadata(&meta);
        self.store.put_group(&meta).await?;
        Ok(meta)
    }

    /// Records every group this user is in (after connecting), so `/chats` lists them.
    pub(crate) async fn sync_groups(self: Arc<Self>, client: &Client) {
        match client.groups().get_participating().await {
            Ok(groups) => {
                for g in groups.values() {
                    if let Err(e) = self.store.put_group(&group_metadata(g)).await {
                        tracing::warn!(error = %e, "recording a group");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing this user's groups"),
        }
    }

    /// Whether `phone` (E.164 digits) has a WhatsApp account.
    pub async fn number_exists(&self, phone: &str) -> Result<bool, ActionError> {
        let client = self.connected_client()?;
        let jid: Jid = format!("{phone}@s.whatsapp.net")
            .parse()
            .map_err(|_| ActionError::BadRequest("invalid phone number".into()))?;
        let answers = client
            .contacts()
            .is_on_whatsapp(std::slice::from_ref(&jid))
            .await
            .map_err(|e| ActionError::Upstream(e.to_string()))?;
        // One number asked: any registered answer is its (the answer may name it by its LID).
        Ok(answers.iter().any(|a| a.is_registered))
    }

    /// The URL of a user's or group's profile picture, if it has one visible to this user.
    pub async fn profile_picture(&self, id: &Wid) -> Result<Option<String>, ActionError> {
        let client = self.connected_client()?;
        let picture = client
            .contacts()
            .get_profile_picture(&jid_of(id)?, false)
            .await
            .map_err(|e| ActionError::Upstream(e.to_string()))?;
        Ok(picture.map(|p| p.url).filter(|u| !u.is_empty()))
    }
}

/// The target of an own change, in this user's frame (the actor is this user) (pure).
fn target_of_key(key: &MessageKey) -> Target {
    Target {
        id: key.id.clone(),
        by_actor: key.from_me,
        participant: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_key_goes_on_the_wire_with_protocol_ids() {
        let k = MessageKey::new(
            false,
            "120363000000000001@g.us",
            "ABC",
            Some("41790000001@c.us"),
        );
        let w = wire_key(&k);
        assert_eq!(w.remote_jid.as_deref(), Some("120363000000000001@g.us"));
        assert_eq!(w.participant.as_deref(), Some("41790000001@s.whatsapp.net"));
        assert_eq!(w.from_me, Some(false));
        let k = MessageKey::new(true, "41790000001@c.us", "ABC", None);
        assert_eq!(
            wire_key(&k).remote_jid.as_deref(),
            Some("41790000001@s.whatsapp.net")
        );
    }
}
