//! Simulated contacts: other WhatsApp users (one device each, their phone) who send
//! end-to-end encrypted texts to paired devices and decrypt what the devices send them.

use std::sync::Arc;

use tracing::{debug, info, warn};
use wacore_binary::Node;
use waproto::whatsapp as wa;

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
    match wacore::messages::decode_plaintext(&padded, version) {
        Ok(m) => {
            if let Some(text) = text_of(&m) {
                info!(contact = %contact_phone, %id, "contact received a message");
                if let Some(c) = sim.world().contacts.get_mut(&contact_phone) {
                    c.received.push(ReceivedText {
                        id: id.to_owned(),
                        from: sender.phone.clone(),
                        text,
                    });
                }
            } else {
                debug!(%id, "contact received a non-text message");
            }
            Some(contact_phone)
        }
        Err(e) => {
            warn!(%id, "contact could not decode the plaintext: {e}");
            None
        }
    }
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
    contact.receipts.push(crate::world::ReceiptSeen {
        id,
        from: format!("{}:{}", sender.phone, sender.device),
        kind,
    });
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
        let (participant, contact_phone, contact_lid, name) = {
            let w = self.world();
            let c = w
                .contacts
                .get(contact)
                .ok_or_else(|| SimError::NotFound(format!("contact {contact}")))?;
            (
                c.participant.clone(),
                c.phone.clone(),
                c.lid.clone(),
                c.name.clone(),
            )
        };
        let targets: Vec<u16> = {
            let w = self.world();
            let a = w
                .accounts
                .get(to_phone)
                .ok_or_else(|| SimError::NotFound(format!("phone {to_phone}")))?;
            a.devices
                .values()
                .filter(|d| !d.removed)
                .map(|d| d.id)
                .collect()
        };
        let id = self.world().stanza_id();
        let plaintext = wacore::messages::MessageUtils::encode_and_pad(&wa::Message {
            conversation: Some(text.to_owned()),
            ..Default::default()
        });
        for device in targets {
            let peer = device_address(to_phone, device);
            let bundle = if participant.has_session(&peer).await {
                None
            } else {
                self.take_bundle(&format!("{to_phone}:{device}@s.whatsapp.net"))
                    .await
                    .map(|(b, _)| b)
            };
            let env = participant
                .encrypt(&peer, bundle.as_ref(), &plaintext)
                .await?;
            let pn = format!("{contact_phone}@s.whatsapp.net");
            let stanza = match addressing {
                Addressing::Pn => message_stanza(&id, &pn, None, "text", &env),
                Addressing::Lid => {
                    let mut m =
                        message_stanza(&id, &format!("{contact_lid}@lid"), None, "text", &env);
                    m.attrs.insert("sender_pn", pn);
                    m.attrs.insert("addressing_mode", "lid".to_owned());
                    m
                }
            };
            let stanza = with_notify(stanza, &name);
            self.deliver(
                &DeviceAddr {
                    phone: to_phone.to_owned(),
                    device,
                },
                &id,
                stanza,
            );
        }
        Ok(id)
    }
}

fn with_notify(mut stanza: Node, name: &str) -> Node {
    stanza.attrs.insert("notify", name.to_owned());
    stanza
}
