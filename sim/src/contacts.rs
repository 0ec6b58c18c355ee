//! Simulated contacts: other WhatsApp users (one device each, their phone) who send
//! end-to-end encrypted texts to paired devices and decrypt what the devices send them.

use std::sync::Arc;

use tracing::{debug, info, warn};
use wacore_binary::Node;
use waproto::whatsapp as wa;

use crate::media::ReceivedMedia;
use crate::messaging::{device_address, message_stanza, text_of};
use crate::sim::{Sim, SimError, split_jid};
use crate::stanza::{self, attr};
use crate::world::{ConnId, DeviceAddr, ReceivedText};

/// The contact `user` decrypts the `<enc>` a device sent it; returns the contact's phone
/// number when it got the message.
pub(crate) async fn receive(
    sim: &Sim,
    sender: &DeviceAddr,
    user: &str,
    id: &str,
    enc: &Node,
) -> Option<String> {
    let (contact_phone, participant) = sim
        .world()
        .contact_by_user(user)
        .map(|c| (c.phone.clone(), c.participant.clone()))?;
    let kind = attr(enc, "type").unwrap_or_default();
    let version: u8 = attr(enc, "v").and_then(|v| v.parse().ok()).unwrap_or(2);
    let body = stanza::bytes(enc).unwrap_or_default().to_vec();
    let from = device_address(&sender.phone, sender.device);
    let padded = match participant.decrypt(&from, &kind, &body).await {
        Ok(p) => p,
        Err(e) => {
            warn!(%id, "contact could not decrypt: {e}");
            return None;
        }
    };
    let m = match wacore::messages::decode_plaintext(&padded, version) {
        Ok(m) => m,
        Err(e) => {
            warn!(%id, "contact could not decode the plaintext: {e}");
            return None;
        }
    };
    let details = sim.contact_reads_message(&contact_phone, sender, id, &m);
    let received = if let Some(media) = crate::media::media_of(&m) {
        Some(receive_media(sim, &contact_phone, id, &media).await)
    } else if let Some(text) = text_of(&m) {
        Some((text, None))
    } else if !details.is_empty() {
        // A reaction, edit or revoke: nothing of its own to show.
        Some((String::new(), None))
    } else {
        debug!(%id, "contact received a message with neither text nor media");
        None
    };
    if let Some((text, media)) = received {
        info!(contact = %contact_phone, %id, media = media.is_some(), "contact received a message");
        if let Some(c) = sim.world().contacts.get_mut(&contact_phone) {
            c.received.push(ReceivedText {
                id: id.to_owned(),
                from: sender.phone.clone(),
                text,
                media,
                quoted_id: details.quoted_id,
                reaction: details.reaction,
                edit: details.edit,
                revoked_id: details.revoked_id,
                group: None,
            });
        }
    }
    Some(contact_phone)
}

/// The contact downloads, verifies and decrypts the media a device sent it (keeping the
/// plaintext for [`Sim::contact_received_media`]); the caption is the message's text.
pub(crate) async fn receive_media(
    sim: &Sim,
    contact: &str,
    id: &str,
    media: &crate::media::MediaOf<'_>,
) -> (String, Option<ReceivedMedia>) {
    let d = media.downloadable;
    let fetched = crate::media::fetch_and_decrypt(sim.media(), d).await;
    let mut received = ReceivedMedia {
        kind: media.kind,
        mimetype: media.mimetype.clone(),
        filename: media.filename.clone(),
        caption: media.caption.clone(),
        size: 0,
        sha256: String::new(),
        error: None,
    };
    match fetched {
        Ok(plain) => {
            received.size = plain.len() as u64;
            received.sha256 = crate::media::sha256_hex(&plain);
            sim.media().keep_received(contact, id, plain.into());
        }
        Err(e) => {
            warn!(%contact, %id, "contact could not get the media: {e}");
            received.error = Some(e);
        }
    }
    (media.caption.clone().unwrap_or_default(), Some(received))
}

/// Receipts for a contact's messages reach the contact's phone.
pub(crate) fn relay_receipt(sim: &Arc<Sim>, conn: ConnId, receipt: &Node) {
    let (Some(to), Some(id)) = (attr(receipt, "to"), attr(receipt, "id")) else {
        return;
    };
    let Some((user, _)) = split_jid(&to) else {
        return;
    };
    let mut w = sim.world();
    let Some(sender) = w.conns.get(&conn).and_then(|c| c.device.clone()) else {
        return;
    };
    let Some(contact) = w.contact_by_user_mut(&user) else {
        return;
    };
    let kind = attr(receipt, "type").unwrap_or_else(|| "delivery".to_owned());
    let from = format!("{}:{}", sender.phone, sender.device);
    // A batched receipt (`mark_as_read` of several messages) lists the ids after the first.
    let listed = stanza::child(receipt, "list")
        .into_iter()
        .flat_map(|l| stanza::children(l, "item"))
        .filter_map(|i| attr(i, "id"));
    for id in std::iter::once(id).chain(listed) {
        contact.receipts.push(crate::world::ReceiptSeen {
            id,
            from: from.clone(),
            kind: kind.clone(),
        });
    }
    drop(w);
    sim.notify_changed();
}

/// How a contact's messages name their sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Addressing {
    /// `from` is the contact's phone-number JID.
    #[default]
    Pn,
    /// `from` is the contact's LID, with its phone number in `sender_pn`.
    Lid,
}

impl Sim {
    /// A contact sends a text to every linked device of `to_phone`'s account. Devices that
    /// are offline get it when they reconnect; it is redelivered until each device acks it.
    pub async fn contact_send_text(
        &self,
        contact: &str,
        to_phone: &str,
        text: &str,
    ) -> Result<String, SimError> {
        self.contact_send_text_as(contact, to_phone, text, Addressing::Pn)
            .await
    }

    /// [`Sim::contact_send_text`], choosing how the contact is addressed: by phone number
    /// (`from=…@s.whatsapp.net`) or by LID (`from=…@lid` with `sender_pn`), as WhatsApp does
    /// for accounts it has moved to LIDs.
    pub async fn contact_send_text_as(
        &self,
        contact: &str,
        to_phone: &str,
        text: &str,
        addressing: Addressing,
    ) -> Result<String, SimError> {
        let msg = wa::Message {
            conversation: Some(text.to_owned()),
            ..Default::default()
        };
        self.contact_send_message(contact, to_phone, &msg, addressing)
            .await
    }

    /// A contact sends media: the plaintext is encrypted with the library's media encryption,
    /// the blob goes to the media server, and every linked device of `to_phone` gets a
    /// `<message type="media">` whose `image_message` / `video_message` / `audio_message` /
    /// `document_message` / `sticker_message` names it, as a phone sends it.
    pub async fn contact_send_media(
        &self,
        contact: &str,
        to_phone: &str,
        media: crate::media::ContactMedia,
    ) -> Result<String, SimError> {
        self.contact_and_targets(contact, to_phone)?;
        let stored = self
            .store_media(media.data, media.kind.media_type())
            .await?;
        let msg = crate::media::media_message(
            media.kind,
            &stored,
            &media.mimetype,
            media.filename.as_deref(),
            media.caption.as_deref(),
        );
        self.contact_send_message(contact, to_phone, &msg, Addressing::Pn)
            .await
    }

    /// The contact's Signal participant, names, and the live (not removed) devices of
    /// `to_phone`'s account.
    fn contact_and_targets(
        &self,
        contact: &str,
        to_phone: &str,
    ) -> Result<(SenderParts, Vec<u16>), SimError> {
        let w = self.world();
        let c = w
            .contacts
            .get(contact)
            .ok_or_else(|| SimError::NotFound(format!("contact {contact}")))?;
        let parts = SenderParts {
            participant: c.participant.clone(),
            phone: c.phone.clone(),
            lid: c.lid.clone(),
            name: c.name.clone(),
        };
        let a = w
            .accounts
            .get(to_phone)
            .ok_or_else(|| SimError::NotFound(format!("phone {to_phone}")))?;
        let targets = a
            .devices
            .values()
            .filter(|d| !d.removed)
            .map(|d| d.id)
            .collect();
        Ok((parts, targets))
    }

    /// A contact sends `msg` (any `wa::Message`) end to end to every linked device of
    /// `to_phone`: one Signal encryption per device (starting a session from the device's
    /// prekeys if there is none), `type` and `<enc mediatype>` as the client library would
    /// put them, queued until each device acknowledges it.
    pub async fn contact_send_message(
        &self,
        contact: &str,
        to_phone: &str,
        msg: &wa::Message,
        addressing: Addressing,
    ) -> Result<String, SimError> {
        let (sender, targets) = self.contact_and_targets(contact, to_phone)?;
        let id = self.world().stanza_id();
        let plaintext = wacore::messages::MessageUtils::encode_and_pad(msg);
        let kind = wacore::send::stanza_type_from_message(msg);
        let mediatype = wacore::send::media_type_from_message(msg);
        for device in targets {
            let peer = device_address(to_phone, device);
            let bundle = if sender.participant.has_session(&peer).await {
                None
            } else {
                self.take_bundle(&format!("{to_phone}:{device}@s.whatsapp.net"))
                    .await
                    .map(|(b, _)| b)
            };
            let env = sender
                .participant
                .encrypt(&peer, bundle.as_ref(), &plaintext)
                .await?;
            let pn = format!("{}@s.whatsapp.net", sender.phone);
            let lid = format!("{}@lid", sender.lid);
            let mut stanza = match addressing {
                // WhatsApp names the sender's LID beside its number.
                Addressing::Pn => {
                    let mut m = message_stanza(&id, &pn, None, kind, &env);
                    m.attrs.insert("sender_lid", lid);
                    m
                }
                Addressing::Lid => {
                    let mut m = message_stanza(&id, &lid, None, kind, &env);
                    m.attrs.insert("sender_pn", pn);
                    m.attrs.insert("addressing_mode", "lid".to_owned());
                    m
                }
            };
            if let Some(mt) = mediatype {
                set_enc_mediatype(&mut stanza, mt);
            }
            // Edits, revokes and reaction removals carry `edit`, as the library sends them.
            if let Some(edit) = wacore::types::message::EditAttribute::infer_from_message(msg)
                .filter(|e| *e != wacore::types::message::EditAttribute::Empty)
            {
                stanza.attrs.insert("edit", edit.to_string_val().to_owned());
            }
            let stanza = with_notify(stanza, &sender.name);
            self.deliver(
                &DeviceAddr {
                    phone: to_phone.to_owned(),
                    device,
                },
                &id,
                stanza,
            );
        }
        self.contact_sent(contact, to_phone, &id, msg);
        Ok(id)
    }

    /// The decrypted media a contact received in message `id` (kept in memory, bounded).
    pub fn contact_received_media(&self, contact: &str, id: &str) -> Option<Vec<u8>> {
        self.media().received(contact, id).map(|b| b.to_vec())
    }
}

struct SenderParts {
    participant: Arc<crate::signal::Participant>,
    phone: String,
    lid: String,
    name: String,
}

/// `<enc mediatype=…>` on a message's ciphertext.
fn set_enc_mediatype(stanza: &mut Node, mediatype: &str) {
    if let Some(wacore_binary::NodeContent::Nodes(kids)) = &mut stanza.content {
        for k in kids.iter_mut().filter(|k| k.tag == "enc") {
            k.attrs.insert("mediatype", mediatype.to_owned());
        }
    }
}

fn with_notify(mut stanza: Node, name: &str) -> Node {
    stanza.attrs.insert("notify", name.to_owned());
    stanza
}
