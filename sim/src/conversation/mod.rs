//! Contacts that converse as a phone does: they reply (quoting), react, edit and revoke their
//! own messages, send read/played receipts and typing; and what devices send them beyond
//! plain messages — replies, reactions, edits, revokes, chat states — is recorded.
//!
//! The wire shapes are the client library's own: a phone builds the same protos
//! (`wacore::proto_helpers::build_quote_context`, `build_reaction_message`, the
//! `protocol_message` of `Client::edit_message` / `revoke_message`) and the same stanzas its
//! parsers read (`wacore::stanza::receipt`, `wacore::iq::chatstate`).

mod api;
mod client;
mod picture;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use tracing::debug;
use wacore::proto_helpers::MessageExt as _;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp as wa;

use crate::contacts::Addressing;
use crate::sim::{Sim, SimError, split_jid};
use crate::stanza::attr;
use crate::world::{ConnId, DeviceAddr, Outbound};

pub(crate) use api::routes;
pub use api::{
    ContactEdit, ContactReact, ContactRead, ContactReply, ContactRevoke, SendChatState, SetPicture,
};
pub use picture::ProfilePictureInfo;
pub(crate) use picture::profile_picture;

/// A reaction a contact received: `target_id` is `reaction_message.key.id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReactionSeen {
    pub target_id: String,
    /// Empty when the reaction was removed.
    pub emoji: String,
}

/// An edit a contact received: the edited message and its new text (or caption).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EditSeen {
    pub target_id: String,
    pub text: String,
}

/// A typing state, as devices send it (`<composing/>`, `<composing media="audio"/>`,
/// `<paused/>`) and as contacts send it back.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChatState {
    Composing,
    Recording,
    Paused,
}

impl ChatState {
    /// The `<chatstate>` child a phone sends (what `Client::chatstate()` builds).
    fn node(self) -> Node {
        match self {
            Self::Composing => NodeBuilder::new("composing").build(),
            Self::Recording => NodeBuilder::new("composing").attr("media", "audio").build(),
            Self::Paused => NodeBuilder::new("paused").build(),
        }
    }

    fn of(child: &Node) -> Option<Self> {
        match child.tag.as_ref() {
            "composing" if attr(child, "media").as_deref() == Some("audio") => {
                Some(Self::Recording)
            }
            "composing" => Some(Self::Composing),
            "paused" => Some(Self::Paused),
            _ => None,
        }
    }
}

/// A chat state a device sent a contact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatStateSeen {
    /// The device (`phone:device`).
    pub from: String,
    pub state: ChatState,
    /// Unix milliseconds.
    pub at_ms: i64,
}

/// Which receipt a contact's phone sends for messages it got.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadKind {
    /// The chat was opened (`type="read"`).
    #[default]
    Read,
    /// A voice or video note was played (`type="played"`).
    Played,
}

impl ReadKind {
    fn wire(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Played => "played",
        }
    }
}

/// Messages a contact knows per chat (to quote or react to them) and what devices sent it
/// beyond messages. In memory only: a restarted simulator's contacts know no earlier ids.
#[derive(Default)]
pub struct ConversationLog {
    contacts: BTreeMap<String, ContactLog>,
}

#[derive(Default)]
struct ContactLog {
    messages: VecDeque<Known>,
    chatstates: VecDeque<ChatStateSeen>,
    /// Set by the control API; otherwise a contact created with a name has a picture.
    picture: Option<bool>,
}

/// A message in one of the contact's chats.
#[derive(Clone)]
struct Known {
    id: String,
    /// The account the chat is with.
    chat: String,
    /// The contact wrote it (else the account did).
    by_contact: bool,
    message: wa::Message,
}

/// Bounds, so long-running demos do not grow the simulator without end.
const MAX_KNOWN_PER_CONTACT: usize = 5_000;
const MAX_CHATSTATES_PER_CONTACT: usize = 10_000;

impl ConversationLog {
    fn contact(&mut self, contact: &str) -> &mut ContactLog {
        self.contacts.entry(contact.to_owned()).or_default()
    }

    fn remember(&mut self, contact: &str, known: Known) {
        let log = self.contact(contact);
        if log.messages.len() >= MAX_KNOWN_PER_CONTACT {
            log.messages.pop_front();
        }
        log.messages.push_back(known);
    }

    fn known(&self, contact: &str, chat: &str, id: &str) -> Option<&Known> {
        self.contacts
            .get(contact)?
            .messages
            .iter()
            .rev()
            .find(|k| k.id == id && k.chat == chat)
    }

    fn known_mut(&mut self, contact: &str, chat: &str, id: &str) -> Option<&mut Known> {
        self.contacts
            .get_mut(contact)?
            .messages
            .iter_mut()
            .rev()
            .find(|k| k.id == id && k.chat == chat)
    }
}

/// Whether a message is content a chat shows (and so can be quoted or reacted to), rather
/// than an add-on to another message.
fn is_content(m: &wa::Message) -> bool {
    let base = m.get_base_message();
    !(base.reaction_message.is_set()
        || base.protocol_message.is_set()
        || base.secret_encrypted_message.is_set()
        || base.enc_reaction_message.is_set())
}

/// The `context_info` of the message kinds a reply can be.
fn context_info(m: &wa::Message) -> Option<&wa::ContextInfo> {
    let b = m.get_base_message();
    b.extended_text_message
        .as_option()
        .and_then(|x| x.context_info.as_option())
        .or_else(|| b.image_message.as_option()?.context_info.as_option())
        .or_else(|| b.video_message.as_option()?.context_info.as_option())
        .or_else(|| b.audio_message.as_option()?.context_info.as_option())
        .or_else(|| b.document_message.as_option()?.context_info.as_option())
        .or_else(|| b.sticker_message.as_option()?.context_info.as_option())
}

fn edited_text(m: &wa::Message) -> String {
    m.text_content()
        .or_else(|| m.get_caption())
        .unwrap_or_default()
        .to_owned()
}

fn pn_jid(user: &str) -> String {
    format!("{user}@s.whatsapp.net")
}

/// What a decrypted message from a device is, beyond its text and media.
#[derive(Debug, Default)]
pub(crate) struct Details {
    pub quoted_id: Option<String>,
    pub reaction: Option<ReactionSeen>,
    pub edit: Option<EditSeen>,
    pub revoked_id: Option<String>,
}

impl Details {
    pub fn is_empty(&self) -> bool {
        self.quoted_id.is_none()
            && self.reaction.is_none()
            && self.edit.is_none()
            && self.revoked_id.is_none()
    }
}

impl Sim {
    /// Reads what `m` (from `sender`'s account to `contact`) quotes, reacts to, edits or
    /// revokes, and remembers it when it is content. An edit in the message-secret form is
    /// decrypted with the secret the target message carried, as a phone does.
    pub(crate) fn contact_reads_message(
        &self,
        contact: &str,
        sender: &DeviceAddr,
        id: &str,
        m: &wa::Message,
    ) -> Details {
        use wa::message::protocol_message::Type;
        let base = m.get_base_message();
        let mut d = Details {
            quoted_id: context_info(m).and_then(|c| c.stanza_id.clone()),
            ..Default::default()
        };
        if let Some(r) = base.reaction_message.as_option() {
            d.reaction = Some(ReactionSeen {
                target_id: r.key.id.clone().unwrap_or_default(),
                emoji: r.text.clone().unwrap_or_default(),
            });
        }
        if let Some(p) = base.protocol_message.as_option() {
            let target = p.key.id.clone().unwrap_or_default();
            match p.r#type {
                Some(Type::REVOKE) => d.revoked_id = Some(target),
                Some(Type::MESSAGE_EDIT) => {
                    d.edit = Some(EditSeen {
                        target_id: target,
                        text: p
                            .edited_message
                            .as_option()
                            .map(edited_text)
                            .unwrap_or_default(),
                    })
                }
                _ => {}
            }
        }
        if let Some(s) = base.secret_encrypted_message.as_option() {
            d.edit = self.decrypt_secret_edit(contact, &sender.phone, s);
        }
        if is_content(m) {
            self.world().conversation.remember(
                contact,
                Known {
                    id: id.to_owned(),
                    chat: sender.phone.clone(),
                    by_contact: false,
                    message: m.clone(),
                },
            );
        }
        d
    }

    /// `secret_encrypted_message` MESSAGE_EDIT: the new content encrypted under the target
    /// message's `message_secret`, keyed by the original sender and the editor (both the
    /// account, as only own messages can be edited).
    fn decrypt_secret_edit(
        &self,
        contact: &str,
        account: &str,
        s: &wa::message::SecretEncryptedMessage,
    ) -> Option<EditSeen> {
        use wa::message::secret_encrypted_message::SecretEncType;
        if s.secret_enc_type != Some(SecretEncType::MESSAGE_EDIT) {
            return None;
        }
        let target_id = s.target_message_key.id.clone()?;
        let secret = self
            .world()
            .conversation
            .known(contact, account, &target_id)?
            .message
            .message_context_info
            .as_option()?
            .message_secret
            .clone()?;
        let author = pn_jid(account);
        let ctx = wacore::message_edit::MessageEditContext {
            original_msg_id: &target_id,
            original_sender_jid: &author,
            editor_jid: &author,
        };
        let inner = wacore::message_edit::decrypt_message_edit(
            s.enc_payload.as_deref()?,
            s.enc_iv.as_deref()?,
            &secret,
            &ctx,
        );
        match inner {
            Ok(inner) => Some(EditSeen {
                target_id,
                text: inner
                    .protocol_message
                    .as_option()
                    .and_then(|p| p.edited_message.as_option())
                    .map(edited_text)
                    .unwrap_or_default(),
            }),
            Err(e) => {
                debug!(%contact, "contact could not decrypt an edit: {e}");
                None
            }
        }
    }

    /// A contact's own message, remembered so it can be quoted, reacted to, edited, revoked.
    pub(crate) fn contact_sent(&self, contact: &str, to_phone: &str, id: &str, m: &wa::Message) {
        if is_content(m) {
            self.world().conversation.remember(
                contact,
                Known {
                    id: id.to_owned(),
                    chat: to_phone.to_owned(),
                    by_contact: true,
                    message: m.clone(),
                },
            );
        }
    }

    fn known_message(&self, contact: &str, to_phone: &str, id: &str) -> Result<Known, SimError> {
        self.world()
            .conversation
            .known(contact, to_phone, id)
            .cloned()
            .ok_or_else(|| {
                SimError::NotFound(format!(
                    "message {id} in the chat of contact {contact} with {to_phone}"
                ))
            })
    }

    /// The contact replies to message `quoted_id` of its chat with `to_phone` (one it got or
    /// sent): an `extended_text_message` whose `context_info` names the quoted message
    /// (`stanza_id`), its sender (`participant`) and carries a copy (`quoted_message`).
    pub async fn contact_reply(
        &self,
        contact: &str,
        to_phone: &str,
        quoted_id: &str,
        text: &str,
    ) -> Result<String, SimError> {
        let quoted = self.known_message(contact, to_phone, quoted_id)?;
        let author = if quoted.by_contact { contact } else { to_phone };
        let msg = wa::Message {
            extended_text_message: buffa::MessageField::some(wa::message::ExtendedTextMessage {
                text: Some(text.to_owned()),
                context_info: buffa::MessageField::some(
                    wacore::proto_helpers::build_quote_context(
                        quoted_id,
                        pn_jid(author),
                        &quoted.message,
                    ),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.contact_send_message(contact, to_phone, &msg, Addressing::Pn)
            .await
    }

    /// The contact reacts to message `target_id` of its chat with `to_phone` (empty `emoji`
    /// removes its reaction). The key names the message as the contact sees it: the chat is
    /// `to_phone`'s JID and `from_me` says whether the contact wrote it.
    pub async fn contact_react(
        &self,
        contact: &str,
        to_phone: &str,
        target_id: &str,
        emoji: &str,
    ) -> Result<String, SimError> {
        let target = self.known_message(contact, to_phone, target_id)?;
        let key = wa::MessageKey {
            remote_jid: Some(pn_jid(to_phone)),
            from_me: Some(target.by_contact),
            id: Some(target_id.to_owned()),
            participant: None,
        };
        let msg = wacore::proto_helpers::build_reaction_message(
            key,
            emoji,
            chrono::Utc::now().timestamp_millis(),
        );
        self.contact_send_message(contact, to_phone, &msg, Addressing::Pn)
            .await
    }

    fn own_message(&self, contact: &str, to_phone: &str, id: &str) -> Result<(), SimError> {
        if self.known_message(contact, to_phone, id)?.by_contact {
            Ok(())
        } else {
            Err(SimError::BadRequest(format!(
                "message {id} is not contact {contact}'s own"
            )))
        }
    }

    /// The contact edits its own message `target_id`: `protocol_message { type:
    /// MESSAGE_EDIT, key { remote_jid, from_me: true, id }, edited_message, timestamp_ms }`,
    /// sent with `edit="1"` under a fresh id, as `Client::edit_message` does.
    pub async fn contact_edit(
        &self,
        contact: &str,
        to_phone: &str,
        target_id: &str,
        text: &str,
    ) -> Result<String, SimError> {
        self.own_message(contact, to_phone, target_id)?;
        let edited = wa::Message {
            conversation: Some(text.to_owned()),
            ..Default::default()
        };
        let msg = wa::Message {
            protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
                key: buffa::MessageField::some(own_key(to_phone, target_id)),
                r#type: Some(wa::message::protocol_message::Type::MESSAGE_EDIT),
                edited_message: buffa::MessageField::some(edited.clone()),
                timestamp_ms: Some(chrono::Utc::now().timestamp_millis()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .contact_send_message(contact, to_phone, &msg, Addressing::Pn)
            .await?;
        // Later quotes carry the edited text, as the phone shows it.
        if let Some(k) = self
            .world()
            .conversation
            .known_mut(contact, to_phone, target_id)
        {
            k.message = edited;
        }
        Ok(id)
    }

    /// The contact deletes its own message `target_id` for everyone: `protocol_message {
    /// type: REVOKE, key { remote_jid, from_me: true, id } }` with `edit="7"`.
    pub async fn contact_revoke(
        &self,
        contact: &str,
        to_phone: &str,
        target_id: &str,
    ) -> Result<String, SimError> {
        self.own_message(contact, to_phone, target_id)?;
        let msg = wa::Message {
            protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
                key: buffa::MessageField::some(own_key(to_phone, target_id)),
                r#type: Some(wa::message::protocol_message::Type::REVOKE),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.contact_send_message(contact, to_phone, &msg, Addressing::Pn)
            .await
    }

    /// The contact's phone reports messages it got from `to_phone`'s account as read (or
    /// played): `<receipt from=contact type id=ids[0]><list><item id=…/>…</list></receipt>`
    /// — the library's parser takes the stanza id plus every listed id — to every linked
    /// device, queued for offline ones until they ack it.
    pub fn contact_read(
        &self,
        contact: &str,
        to_phone: &str,
        ids: &[String],
        kind: ReadKind,
    ) -> Result<(), SimError> {
        let Some((first, rest)) = ids.split_first() else {
            return Err(SimError::BadRequest("no message ids".into()));
        };
        let devices = {
            let w = self.world();
            let c = w
                .contacts
                .get(contact)
                .ok_or_else(|| SimError::NotFound(format!("contact {contact}")))?;
            if let Some(unknown) = ids.iter().find(|id| {
                !c.received
                    .iter()
                    .any(|r| &r.id == *id && r.from == to_phone)
            }) {
                return Err(SimError::NotFound(format!(
                    "message {unknown} from {to_phone} to contact {contact}"
                )));
            }
            live_devices(&w, to_phone)?
        };
        let mut b = NodeBuilder::new("receipt")
            .attr("from", pn_jid(contact))
            .attr("id", first.as_str())
            .attr("type", kind.wire())
            .attr("t", chrono::Utc::now().timestamp().to_string());
        if !rest.is_empty() {
            b = b.children([NodeBuilder::new("list")
                .children(
                    rest.iter()
                        .map(|id| NodeBuilder::new("item").attr("id", id.as_str()).build()),
                )
                .build()]);
        }
        let receipt = b.build();
        let key = receipt_queue_key(kind.wire(), first);
        for device in devices {
            self.deliver(
                &DeviceAddr {
                    phone: to_phone.to_owned(),
                    device,
                },
                &key,
                receipt.clone(),
            );
        }
        Ok(())
    }

    /// The contact types (or records audio, or stops) in its chat with `to_phone`:
    /// `<chatstate from=contact><composing/></chatstate>` to every live device. Not queued:
    /// WhatsApp drops chat states for offline devices. Returns how many devices got it.
    pub fn contact_chatstate(
        &self,
        contact: &str,
        to_phone: &str,
        state: ChatState,
    ) -> Result<usize, SimError> {
        let w = self.world();
        if !w.contacts.contains_key(contact) {
            return Err(SimError::NotFound(format!("contact {contact}")));
        }
        let stanza = NodeBuilder::new("chatstate")
            .attr("from", pn_jid(contact))
            .children([state.node()])
            .build();
        let a = w
            .accounts
            .get(to_phone)
            .ok_or_else(|| SimError::NotFound(format!("phone {to_phone}")))?;
        let conns: Vec<ConnId> = a
            .devices
            .values()
            .filter(|d| !d.removed)
            .filter_map(|d| d.conn)
            .filter(|c| w.conns.get(c).is_some_and(|c| c.active))
            .collect();
        for &conn in &conns {
            w.send(conn, Outbound::Stanza(stanza.clone()));
        }
        Ok(conns.len())
    }

    /// The chat states devices sent the contact, oldest first.
    pub fn contact_chatstates(&self, contact: &str) -> Result<Vec<ChatStateSeen>, SimError> {
        let w = self.world();
        if !w.contacts.contains_key(contact) {
            return Err(SimError::NotFound(format!("contact {contact}")));
        }
        Ok(w.conversation
            .contacts
            .get(contact)
            .map(|l| l.chatstates.iter().cloned().collect())
            .unwrap_or_default())
    }
}

fn own_key(to_phone: &str, id: &str) -> wa::MessageKey {
    wa::MessageKey {
        remote_jid: Some(pn_jid(to_phone)),
        from_me: Some(true),
        id: Some(id.to_owned()),
        participant: None,
    }
}

fn live_devices(w: &crate::world::World, phone: &str) -> Result<Vec<u16>, SimError> {
    let a = w
        .accounts
        .get(phone)
        .ok_or_else(|| SimError::NotFound(format!("phone {phone}")))?;
    Ok(a.devices
        .values()
        .filter(|d| !d.removed)
        .map(|d| d.id)
        .collect())
}

/// The offline-queue key of a receipt a contact sent: distinct from the message ids (a
/// device's other companions may hold the message itself) and per type (read, then played).
fn receipt_queue_key(kind: &str, id: &str) -> String {
    format!("receipt:{kind}:{id}")
}

/// The queue key an `<ack class="receipt" id type>` from a device acknowledges, if any.
pub(crate) fn acked_receipt_key(ack: &Node) -> Option<String> {
    if attr(ack, "class").as_deref() != Some("receipt") {
        return None;
    }
    Some(receipt_queue_key(&attr(ack, "type")?, &attr(ack, "id")?))
}

/// A `<chatstate to=contact>` from a device: recorded for the contact (chat states for
/// accounts are not relayed).
pub(crate) fn chatstate_from_device(sim: &Sim, conn: ConnId, node: &Node) {
    let Some((user, _)) = attr(node, "to").and_then(|to| split_jid(&to)) else {
        return;
    };
    let Some(state) = node
        .children()
        .and_then(|c| c.first())
        .and_then(ChatState::of)
    else {
        return;
    };
    let mut w = sim.world();
    let Some(sender) = w.conns.get(&conn).and_then(|c| c.device.clone()) else {
        return;
    };
    let Some(contact) = w.contact_by_user(&user).map(|c| c.phone.clone()) else {
        return;
    };
    let log = w.conversation.contact(&contact);
    if log.chatstates.len() >= MAX_CHATSTATES_PER_CONTACT {
        log.chatstates.pop_front();
    }
    log.chatstates.push_back(ChatStateSeen {
        from: format!("{}:{}", sender.phone, sender.device),
        state,
        at_ms: chrono::Utc::now().timestamp_millis(),
    });
    drop(w);
    sim.notify_changed();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_states_read_back_as_sent() {
        for s in [
            ChatState::Composing,
            ChatState::Recording,
            ChatState::Paused,
        ] {
            assert_eq!(ChatState::of(&s.node()), Some(s));
        }
        assert_eq!(ChatState::of(&NodeBuilder::new("gone").build()), None);
    }

    #[test]
    fn a_receipt_ack_names_its_queue_key() {
        let ack = NodeBuilder::new("ack")
            .attr("class", "receipt")
            .attr("type", "played")
            .attr("id", "M1")
            .build();
        assert_eq!(
            acked_receipt_key(&ack).as_deref(),
            Some("receipt:played:M1")
        );
        // Delivery receipts (no type) and message acks are not contacts' queued receipts.
        let bare = NodeBuilder::new("ack")
            .attr("class", "receipt")
            .attr("id", "M1")
            .build();
        assert_eq!(acked_receipt_key(&bare), None);
        let msg = NodeBuilder::new("ack")
            .attr("class", "message")
            .attr("type", "read")
            .attr("id", "M1")
            .build();
        assert_eq!(acked_receipt_key(&msg), None);
    }
}
