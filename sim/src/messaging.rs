//! Messages between devices: `<message>` stanzas carrying Signal ciphertexts, acked by the
//! server, relayed per recipient device, queued for offline devices, and receipts.

use std::sync::Arc;

use tracing::debug;
use wacore::libsignal::protocol::ProtocolAddress;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp as wa;

use crate::contacts;
use crate::signal::Envelope;
use crate::sim::{Sim, split_jid};
use crate::stanza::{self, attr, child, children};
use crate::world::{ConnId, DeviceAddr, Outbound};

/// A `<message>` as WhatsApp delivers it to a device.
pub fn message_stanza(
    id: &str,
    from: &str,
    category: Option<&str>,
    kind: &str,
    env: &Envelope,
) -> Node {
    let mut b = NodeBuilder::new("message")
        .attr("from", from)
        .attr("id", id)
        .attr("type", kind)
        .attr("t", chrono::Utc::now().timestamp().to_string());
    if let Some(c) = category {
        b = b.attr("category", c);
    }
    b.children([NodeBuilder::new("enc")
        .attr("v", "2")
        .attr("type", env.kind)
        .bytes(env.body.clone())
        .build()])
        .build()
}

/// The Signal address a simulated participant files a device's session under.
pub fn device_address(user: &str, device: u16) -> ProtocolAddress {
    ProtocolAddress::new(user, u32::from(device).into())
}

/// The text of a message, for the kinds a CRM sends.
pub fn text_of(msg: &wa::Message) -> Option<String> {
    msg.conversation.clone().or_else(|| {
        msg.extended_text_message
            .as_option()
            .and_then(|e| e.text.clone())
    })
}

/// A `<message>` the device sent: the server acks it, then each recipient device's `<enc>`
/// goes to a simulated contact (who decrypts it) or is relayed to a paired device.
pub async fn from_device(sim: &Arc<Sim>, conn: ConnId, msg: Node) {
    let Some(sender) = sim.world().conns.get(&conn).and_then(|c| c.device.clone()) else {
        return;
    };
    let id = attr(&msg, "id").unwrap_or_default();
    let to = attr(&msg, "to").unwrap_or_default();
    if to.ends_with("@g.us") {
        return crate::groups::from_device(sim, conn, sender, msg).await;
    }
    // `<enc>` directly (one recipient device) or `<participants><to jid><enc/></to>…`.
    let mut targets: Vec<(String, Node)> = Vec::new();
    if let Some(parts) = child(&msg, "participants") {
        for t in children(parts, "to") {
            if let (Some(jid), Some(enc)) = (attr(t, "jid"), child(t, "enc")) {
                targets.push((jid, enc.clone()));
            }
        }
    }
    for enc in children(&msg, "enc") {
        targets.push((to.clone(), enc.clone()));
    }
    let ack = NodeBuilder::new("ack")
        .attr("class", "message")
        .attr("id", id.as_str())
        .attr("from", to.as_str())
        .attr("t", chrono::Utc::now().timestamp().to_string())
        .build();
    sim.world().send(conn, Outbound::Stanza(ack));

    let mut delivered_to_contact = None;
    for (jid, enc) in targets {
        let Some((user, device)) = split_jid(&jid) else {
            continue;
        };
        let is_contact = sim.world().contact_by_user(&user).is_some();
        if !is_contact {
            relay_to_account_device(sim, &sender, &to, &msg, &jid, &enc);
        } else if device == 0
            && let Some(contact) = contacts::receive(sim, &sender, &user, &id, &enc).await
        {
            delivered_to_contact = Some(contact);
        }
    }
    if let Some(contact) = delivered_to_contact {
        // The contact's phone confirms delivery.
        let receipt = NodeBuilder::new("receipt")
            .attr("from", format!("{contact}@s.whatsapp.net"))
            .attr("id", id.as_str())
            .attr("t", chrono::Utc::now().timestamp().to_string())
            .build();
        sim.world().send(conn, Outbound::Stanza(receipt));
        sim.notify_changed();
    }
}

/// Relays one `<enc>` of a device's message to a companion device of a WhatsApp account (the
/// peer's, or the sender's own other companions, which get it with `recipient`). Copies for
/// a simulated phone (device 0) are not delivered: the phone does not read them.
fn relay_to_account_device(
    sim: &Sim,
    sender: &DeviceAddr,
    to: &str,
    msg: &Node,
    jid: &str,
    enc: &Node,
) {
    let Some((user, device)) = split_jid(jid) else {
        return;
    };
    let target = {
        let w = sim.world();
        w.account_by_user(&user)
            .filter(|a| a.devices.get(&device).is_some_and(|d| !d.removed))
            .map(|a| DeviceAddr {
                phone: a.phone.clone(),
                device,
            })
    };
    let Some(target) = target.filter(|t| *t != *sender) else {
        debug!(%jid, "message copy for a phone or unknown device not delivered");
        return;
    };
    let id = attr(msg, "id").unwrap_or_default();
    let mut relayed = msg.clone();
    relayed.attrs = Default::default();
    relayed.attrs.insert(
        "from",
        format!("{}:{}@s.whatsapp.net", sender.phone, sender.device),
    );
    relayed.attrs.insert("id", id.clone());
    relayed
        .attrs
        .insert("type", attr(msg, "type").unwrap_or_else(|| "text".into()));
    relayed
        .attrs
        .insert("t", chrono::Utc::now().timestamp().to_string());
    if target.phone == sender.phone {
        // A copy for the sender's own device says which chat it went to.
        relayed.attrs.insert("recipient", to.to_owned());
    } else if let Some(name) = sim
        .world()
        .accounts
        .get(&sender.phone)
        .map(|a| a.push_name.clone())
    {
        relayed.attrs.insert("notify", name);
    }
    // Only this device's ciphertext travels on; the device identity rides along for pkmsg.
    let mut kids = vec![enc.clone()];
    if let Some(identity) = child(msg, "device-identity") {
        kids.push(identity.clone());
    }
    relayed.content = Some(wacore_binary::NodeContent::Nodes(kids));
    sim.deliver(&target, &id, relayed);
}

/// A device's receipt for a message from another account's device goes to that account's
/// live companions, as `from` the receipting device.
fn relay_receipt_to_account(sim: &Sim, conn: ConnId, receipt: &Node) {
    let (Some(to), Some(id)) = (attr(receipt, "to"), attr(receipt, "id")) else {
        return;
    };
    let Some((user, _)) = split_jid(&to) else {
        return;
    };
    let w = sim.world();
    let Some(sender) = w.conns.get(&conn).and_then(|c| c.device.clone()) else {
        return;
    };
    let Some(account) = w.account_by_user(&user) else {
        return;
    };
    if account.phone == sender.phone {
        // Own-device receipts (peer_msg, sender copies) stay with the server.
        return;
    }
    let mut relayed = NodeBuilder::new("receipt")
        .attr(
            "from",
            format!("{}:{}@s.whatsapp.net", sender.phone, sender.device),
        )
        .attr("id", id)
        .attr("t", chrono::Utc::now().timestamp().to_string());
    if let Some(kind) = attr(receipt, "type") {
        relayed = relayed.attr("type", kind);
    }
    let relayed = relayed.build();
    for conn in account.devices.values().filter_map(|d| d.conn) {
        w.send(conn, Outbound::Stanza(relayed.clone()));
    }
}

/// A `<receipt>` from the device: it acknowledges a delivered stanza (removing it from the
/// device's queue); the server acks the receipt.
pub fn receipt_from_device(sim: &Arc<Sim>, conn: ConnId, receipt: &Node) {
    contacts::relay_receipt(sim, conn, receipt);
    crate::groups::relay_receipt(sim, conn, receipt);
    relay_receipt_to_account(sim, conn, receipt);
    if let Some(id) = attr(receipt, "id") {
        sim.acked(conn, &id);
        // Batched receipts list further ids.
        if let Some(list) = child(receipt, "list") {
            for item in children(list, "item") {
                if let Some(id) = attr(item, "id") {
                    sim.acked(conn, &id);
                }
            }
        }
    }
    // WhatsApp's ack names the chat the receipt was for.
    let to = attr(receipt, "to");
    let ack = stanza::ack_for(receipt, to.as_deref());
    sim.world().send(conn, Outbound::Stanza(ack));
}

impl Sim {
    /// The device acknowledged stanza `id`.
    pub(crate) fn acked(&self, conn: ConnId, id: &str) {
        if self.ignoring_acks() {
            debug!(conn, id, "acknowledgement lost (fault)");
            return;
        }
        let mut w = self.world();
        let Some(addr) = w.conns.get(&conn).and_then(|c| c.device.clone()) else {
            return;
        };
        if let Some(dev) = w.device_mut(&addr)
            && dev.offline.ack(id)
        {
            debug!(?addr, id, "device acknowledged a queued stanza");
            drop(w);
            self.notify_changed();
        }
    }

    /// Queues a stanza for a device and writes it to its socket if it is online.
    pub(crate) fn deliver(&self, addr: &DeviceAddr, id: &str, stanza: Node) {
        let mut w = self.world();
        let Some(dev) = w.device_mut(addr) else {
            return;
        };
        dev.offline.push(id.to_owned(), stanza.clone());
        // Written now only when the device is past login; otherwise the `active` iq flushes it.
        if let Some(conn) = dev.conn
            && w.conns.get(&conn).is_some_and(|c| c.active)
        {
            if let Some(dev) = w.device_mut(addr) {
                dev.offline.mark_delivered(id);
            }
            w.send(conn, Outbound::Stanza(stanza));
        }
        drop(w);
        self.notify_changed();
    }
}
