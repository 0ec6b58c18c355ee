//! Groups (`…@g.us`): their members (the accounts whose devices are wasp sessions, and
//! simulated contacts), the group messages between them with sender keys as WhatsApp sends
//! them, and their receipts. The metadata iqs are in `iq/groups.rs`.
//!
//! A group message is encrypted once with the sender's sender key (`skmsg`); each member
//! device that does not hold that key yet gets it beside the message, pairwise encrypted
//! (`pkmsg`/`msg` carrying a `SenderKeyDistributionMessage`). Every step is
//! `wacore::libsignal`'s group cipher; the simulator only routes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};
use wacore::libsignal::protocol::SenderKeyName;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp as wa;

use crate::messaging::{device_address, text_of};
use crate::sim::{Sim, SimError, now_secs, split_jid};
use crate::stanza::{self, attr, child, children};
use crate::world::{ConnId, DeviceAddr, Outbound, ReceiptSeen, ReceivedText, World};

/// The server part of a group JID.
pub const GROUP_SERVER: &str = "g.us";

/// A group as the simulated WhatsApp server keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    /// The user part of the JID (`120363…`).
    pub id: String,
    pub subject: String,
    /// The creating account's phone number.
    pub creator: String,
    /// Unix seconds.
    pub creation: u64,
    /// Members in the order they were added (the creator first).
    pub members: Vec<Member>,
    /// For each contact member, the devices already given its sender key for this group:
    /// later messages to them carry only the `skmsg`, as WhatsApp's do.
    #[serde(default)]
    pub distributed: BTreeMap<String, BTreeSet<DeviceAddr>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// An account's or a simulated contact's phone number.
    pub phone: String,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Admin,
    Superadmin,
}

impl Role {
    /// `<participant type=…>`; a plain member has none.
    fn wire(self) -> Option<&'static str> {
        match self {
            Role::Member => None,
            Role::Admin => Some("admin"),
            Role::Superadmin => Some("superadmin"),
        }
    }
}

/// A group as the control API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupInfo {
    /// `<id>@g.us`.
    pub jid: String,
    pub subject: String,
    pub participants: Vec<GroupParticipant>,
    /// The creator's phone-number JID.
    pub creator: String,
    /// Unix seconds.
    pub creation: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupParticipant {
    /// `<phone>@s.whatsapp.net` (the group is phone-number addressed).
    pub jid: String,
    pub phone: String,
    pub lid: String,
    pub role: Role,
    /// A simulated contact (else an account, whose linked devices are sessions).
    pub contact: bool,
}

/// `120363…@g.us` or `120363…` → the group id.
pub fn group_id(jid: &str) -> &str {
    jid.strip_suffix("@g.us").unwrap_or(jid)
}

fn group_jid(id: &str) -> String {
    format!("{id}@{GROUP_SERVER}")
}

fn pn_jid(phone: &str) -> String {
    format!("{phone}@s.whatsapp.net")
}

/// The member's phone number and LID, if it is still an account or a contact.
fn member_lid(w: &World, phone: &str) -> Option<(String, bool)> {
    if let Some(a) = w.accounts.get(phone) {
        return Some((a.lid.clone(), false));
    }
    w.contacts.get(phone).map(|c| (c.lid.clone(), true))
}

fn info_of(w: &World, g: &Group) -> GroupInfo {
    GroupInfo {
        jid: group_jid(&g.id),
        subject: g.subject.clone(),
        participants: g
            .members
            .iter()
            .filter_map(|m| {
                let (lid, contact) = member_lid(w, &m.phone)?;
                Some(GroupParticipant {
                    jid: pn_jid(&m.phone),
                    phone: m.phone.clone(),
                    lid,
                    role: m.role,
                    contact,
                })
            })
            .collect(),
        creator: pn_jid(&g.creator),
        creation: g.creation,
    }
}

/// `<group …><participant …/>…</group>`, as WhatsApp answers a group query (read by the
/// library's `GroupInfoResponse` parser). Phone-number addressed.
pub(crate) fn metadata_node(g: &Group) -> Node {
    let participants = g.members.iter().map(|m| {
        let mut p = NodeBuilder::new("participant").attr("jid", pn_jid(&m.phone));
        if let Some(t) = m.role.wire() {
            p = p.attr("type", t);
        }
        p.build()
    });
    NodeBuilder::new("group")
        .attr("id", g.id.as_str())
        .attr("subject", g.subject.as_str())
        .attr("s_t", g.creation.to_string())
        .attr("s_o", pn_jid(&g.creator))
        .attr("creation", g.creation.to_string())
        .attr("creator", pn_jid(&g.creator))
        .attr("size", g.members.len().to_string())
        .attr("addressing_mode", "pn")
        .children(participants)
        .build()
}

/// The participant list hash (`phash`) a client sends with a cached group query: the same
/// digest, over the same JIDs, means the group did not change.
pub(crate) fn participant_hash(g: &Group) -> Option<String> {
    let jids: Vec<wacore_binary::Jid> = g
        .members
        .iter()
        .filter_map(|m| pn_jid(&m.phone).parse().ok())
        .collect();
    wacore::messages::MessageUtils::participant_list_hash(&jids).ok()
}

impl World {
    /// The live (not removed) companion devices of the group's member accounts.
    fn group_account_devices(&self, g: &Group) -> Vec<DeviceAddr> {
        g.members
            .iter()
            .filter_map(|m| self.accounts.get(&m.phone))
            .flat_map(|a| {
                a.devices
                    .values()
                    .filter(|d| !d.removed)
                    .map(|d| DeviceAddr {
                        phone: a.phone.clone(),
                        device: d.id,
                    })
            })
            .collect()
    }

    /// The phone number of the account or contact `user` (a number or a LID) names.
    fn phone_of(&self, user: &str) -> Option<String> {
        self.account_by_user(user)
            .map(|a| a.phone.clone())
            .or_else(|| self.contact_by_user(user).map(|c| c.phone.clone()))
    }
}

impl Sim {
    /// Creates a group owned by `owner_phone`'s account (its creator and superadmin) with
    /// `participants` (simulated contacts, or other accounts) as members. Every live device
    /// of a member account gets the `w:gp2` `<create>` notification WhatsApp sends.
    pub fn create_group(
        &self,
        owner_phone: &str,
        subject: &str,
        participants: &[String],
    ) -> Result<GroupInfo, SimError> {
        let mut w = self.world();
        if !w.accounts.contains_key(owner_phone) {
            return Err(SimError::NotFound(format!("phone {owner_phone}")));
        }
        let mut members = vec![Member {
            phone: owner_phone.to_owned(),
            role: Role::Superadmin,
        }];
        for p in participants {
            let phone = w
                .phone_of(p)
                .ok_or_else(|| SimError::NotFound(format!("contact or phone {p}")))?;
            if !members.iter().any(|m| m.phone == phone) {
                members.push(Member {
                    phone,
                    role: Role::Member,
                });
            }
        }
        // WhatsApp's group ids: `120363` and a serial.
        w.next_lid += 1;
        let id = format!("120363{:012}", w.next_lid);
        let group = Group {
            id: id.clone(),
            subject: subject.to_owned(),
            creator: owner_phone.to_owned(),
            creation: now_secs(),
            members,
            distributed: BTreeMap::new(),
        };
        let info = info_of(&w, &group);
        let targets = w.group_account_devices(&group);
        let notify = w
            .accounts
            .get(owner_phone)
            .map(|a| a.push_name.clone())
            .unwrap_or_default();
        let create = NodeBuilder::new("create")
            .attr("reason", "create")
            .children([metadata_node(&group)])
            .build();
        w.groups.insert(id.clone(), group);
        let mut notes = Vec::with_capacity(targets.len());
        for addr in targets {
            let nid = w.stanza_id();
            let note = NodeBuilder::new("notification")
                .attr("from", group_jid(&id))
                .attr("type", "w:gp2")
                .attr("id", nid.as_str())
                .attr("participant", pn_jid(owner_phone))
                .attr("notify", notify.as_str())
                .attr("t", now_secs().to_string())
                .children([create.clone()])
                .build();
            notes.push((addr, nid, note));
        }
        drop(w);
        for (addr, nid, note) in notes {
            self.deliver(&addr, &nid, note);
        }
        info!(group = %info.jid, members = info.participants.len(), "group created");
        self.notify_changed();
        Ok(info)
    }

    /// Every group, oldest first.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let w = self.world();
        let mut all: Vec<_> = w.groups.values().map(|g| info_of(&w, g)).collect();
        all.sort_by_key(|g| g.creation);
        all
    }

    /// One group, by JID or id.
    pub fn group(&self, jid: &str) -> Option<GroupInfo> {
        let w = self.world();
        w.groups.get(group_id(jid)).map(|g| info_of(&w, g))
    }

    /// A member contact sends `text` to the group: see
    /// [`Sim::contact_send_group_message`].
    pub async fn contact_send_group_text(
        &self,
        contact: &str,
        group: &str,
        text: &str,
    ) -> Result<String, SimError> {
        let msg = wa::Message {
            conversation: Some(text.to_owned()),
            ..Default::default()
        };
        self.contact_send_group_message(contact, group, &msg).await
    }

    /// A member contact sends `msg` to the group. It is encrypted once with the contact's
    /// sender key for the group (created on its first message); every live device of every
    /// member account gets `<message from="<group>" participant="<contact>">` with that
    /// `skmsg`, preceded — for devices not given the key yet — by a pairwise `pkmsg`/`msg`
    /// carrying the `SenderKeyDistributionMessage`. Queued until each device acknowledges it.
    pub async fn contact_send_group_message(
        &self,
        contact: &str,
        group: &str,
        msg: &wa::Message,
    ) -> Result<String, SimError> {
        let gid = group_id(group).to_owned();
        let (participant, phone, lid, name, targets, holders, id) = {
            let mut w = self.world();
            let g = w
                .groups
                .get(&gid)
                .ok_or_else(|| SimError::NotFound(format!("group {group}")))?;
            let c = w
                .contacts
                .get(contact)
                .ok_or_else(|| SimError::NotFound(format!("contact {contact}")))?;
            if !g.members.iter().any(|m| m.phone == c.phone) {
                return Err(SimError::BadRequest(format!(
                    "contact {contact} is not a member of group {gid}"
                )));
            }
            let (participant, phone, lid, name) = (
                c.participant.clone(),
                c.phone.clone(),
                c.lid.clone(),
                c.name.clone(),
            );
            let targets = w.group_account_devices(g);
            let holders = g.distributed.get(&phone).cloned().unwrap_or_default();
            let id = w.stanza_id();
            (participant, phone, lid, name, targets, holders, id)
        };
        let gjid = group_jid(&gid);
        let own_key = SenderKeyName::from_parts(&gjid, &device_address(&phone, 0).to_string());
        let plaintext = wacore::messages::MessageUtils::encode_and_pad(msg);
        let (skdm, skmsg) = participant.group_encrypt(&own_key, &plaintext).await?;
        let distribution = wacore::messages::MessageUtils::encode_and_pad(&wa::Message {
            sender_key_distribution_message: buffa::MessageField::some(
                wa::message::SenderKeyDistributionMessage {
                    group_id: Some(gjid.clone()),
                    axolotl_sender_key_distribution_message: Some(skdm),
                },
            ),
            ..Default::default()
        });
        let kind = wacore::send::stanza_type_from_message(msg);
        let mediatype = wacore::send::media_type_from_message(msg);
        let mut content = NodeBuilder::new("enc")
            .attr("v", "2")
            .attr("type", "skmsg")
            .bytes(skmsg);
        if let Some(mt) = mediatype {
            content = content.attr("mediatype", mt);
        }
        let content = content.build();

        let mut given = Vec::new();
        for addr in targets {
            let mut kids = Vec::with_capacity(2);
            if !holders.contains(&addr) {
                let peer = device_address(&addr.phone, addr.device);
                let bundle = if participant.has_session(&peer).await {
                    None
                } else {
                    self.take_bundle(&format!("{}:{}@s.whatsapp.net", addr.phone, addr.device))
                        .await
                        .map(|(b, _)| b)
                };
                let env = participant
                    .encrypt(&peer, bundle.as_ref(), &distribution)
                    .await?;
                // The key share goes first: the client reads the `skmsg` with it.
                kids.push(
                    NodeBuilder::new("enc")
                        .attr("v", "2")
                        .attr("type", env.kind)
                        .bytes(env.body)
                        .build(),
                );
                given.push(addr.clone());
            }
            kids.push(content.clone());
            let stanza = NodeBuilder::new("message")
                .attr("from", gjid.as_str())
                .attr("participant", pn_jid(&phone))
                .attr("participant_lid", format!("{lid}@lid"))
                .attr("addressing_mode", "pn")
                .attr("id", id.as_str())
                .attr("type", kind)
                .attr("notify", name.as_str())
                .attr("t", now_secs().to_string())
                .children(kids)
                .build();
            self.deliver(&addr, &id, stanza);
        }
        if !given.is_empty()
            && let Some(g) = self.world().groups.get_mut(&gid)
        {
            g.distributed
                .entry(phone.clone())
                .or_default()
                .extend(given);
        }
        info!(contact = %phone, group = %gjid, %id, "contact sent a group message");
        Ok(id)
    }
}

/// A `<message to="…@g.us">` a device sent: the server acks it; each member contact takes
/// in the sender key distributed to it (if any) and decrypts the `skmsg`, then its phone
/// confirms delivery; each other live device of a member account gets the message from the
/// group, with its own key share if the sender included one.
pub(crate) async fn from_device(sim: &Arc<Sim>, conn: ConnId, sender: DeviceAddr, msg: Node) {
    let id = attr(&msg, "id").unwrap_or_default();
    let to = attr(&msg, "to").unwrap_or_default();
    let gid = group_id(&to).to_owned();
    let gjid = group_jid(&gid);
    let ack = NodeBuilder::new("ack")
        .attr("class", "message")
        .attr("id", id.as_str())
        .attr("from", gjid.as_str())
        .attr("t", now_secs().to_string())
        .build();
    sim.world().send(conn, Outbound::Stanza(ack));

    // `(phone, device)` → that device's pairwise `<enc>` (the sender-key share).
    let (members, account_devices, shares, sender_name) = {
        let w = sim.world();
        let Some(g) = w.groups.get(&gid) else {
            warn!(group = %gjid, %id, "message to an unknown group dropped");
            return;
        };
        if !g.members.iter().any(|m| m.phone == sender.phone) {
            warn!(group = %gjid, %id, ?sender, "message from a non-member dropped");
            return;
        }
        let mut shares: HashMap<(String, u16), Node> = HashMap::new();
        if let Some(parts) = child(&msg, "participants") {
            for t in children(parts, "to") {
                if let (Some(jid), Some(enc)) = (attr(t, "jid"), child(t, "enc"))
                    && let Some((user, device)) = split_jid(&jid)
                    && let Some(phone) = w.phone_of(&user)
                {
                    shares.insert((phone, device), enc.clone());
                }
            }
        }
        let sender_name = w
            .accounts
            .get(&sender.phone)
            .map(|a| a.push_name.clone())
            .unwrap_or_default();
        (
            g.members.clone(),
            w.group_account_devices(g),
            shares,
            sender_name,
        )
    };
    let content = children(&msg, "enc")
        .find(|e| attr(e, "type").as_deref() == Some("skmsg"))
        .cloned();

    for m in &members {
        let is_contact = sim.world().contacts.contains_key(&m.phone);
        if !is_contact {
            continue;
        }
        let share = shares.get(&(m.phone.clone(), 0));
        if contact_receives(sim, &sender, &m.phone, &gjid, &id, share, content.as_ref()).await {
            // The contact's phone confirms delivery, naming itself as the participant.
            let receipt = NodeBuilder::new("receipt")
                .attr("from", gjid.as_str())
                .attr("participant", pn_jid(&m.phone))
                .attr("id", id.as_str())
                .attr("t", now_secs().to_string())
                .build();
            sim.world().send(conn, Outbound::Stanza(receipt));
            sim.notify_changed();
        }
    }

    let kind = attr(&msg, "type").unwrap_or_else(|| "text".to_owned());
    for addr in account_devices.into_iter().filter(|a| *a != sender) {
        let mut kids = Vec::with_capacity(3);
        if let Some(share) = shares.get(&(addr.phone.clone(), addr.device)) {
            kids.push(share.clone());
            if attr(share, "type").as_deref() == Some("pkmsg")
                && let Some(identity) = child(&msg, "device-identity")
            {
                kids.push(identity.clone());
            }
        }
        kids.extend(content.clone());
        if kids.is_empty() {
            continue;
        }
        let mut relayed = NodeBuilder::new("message")
            .attr("from", gjid.as_str())
            .attr(
                "participant",
                format!("{}:{}@s.whatsapp.net", sender.phone, sender.device),
            )
            .attr("addressing_mode", "pn")
            .attr("id", id.as_str())
            .attr("type", kind.as_str())
            .attr("t", now_secs().to_string());
        if addr.phone != sender.phone {
            relayed = relayed.attr("notify", sender_name.as_str());
        }
        sim.deliver(&addr, &id, relayed.children(kids).build());
    }
}

/// The contact `phone` takes in the sender's key share (if the device sent it one) and
/// decrypts the group message; true when it got either.
async fn contact_receives(
    sim: &Sim,
    sender: &DeviceAddr,
    phone: &str,
    gjid: &str,
    id: &str,
    share: Option<&Node>,
    content: Option<&Node>,
) -> bool {
    let Some(participant) = sim
        .world()
        .contacts
        .get(phone)
        .map(|c| c.participant.clone())
    else {
        return false;
    };
    let from = device_address(&sender.phone, sender.device);
    let key = SenderKeyName::from_parts(gjid, &from.to_string());
    let mut got = false;
    if let Some(enc) = share {
        let kind = attr(enc, "type").unwrap_or_default();
        let body = stanza::bytes(enc).unwrap_or_default();
        match participant.decrypt(&from, &kind, body).await {
            Ok(padded) => match wacore::messages::decode_plaintext(&padded, version(enc)) {
                Ok(m) => {
                    got = true;
                    if let Some(skdm) = m.sender_key_distribution_message.as_option()
                        && let Some(bytes) = &skdm.axolotl_sender_key_distribution_message
                        && let Err(e) = participant
                            .process_sender_key_distribution(&key, bytes)
                            .await
                    {
                        warn!(%id, contact = %phone, "bad sender key distribution: {e}");
                    }
                    // A share normally carries nothing else; if it does, it is the message.
                    record(sim, phone, &sender.phone, gjid, id, &m).await;
                }
                Err(e) => warn!(%id, contact = %phone, "undecodable key share: {e}"),
            },
            Err(e) => warn!(%id, contact = %phone, "contact could not decrypt the key share: {e}"),
        }
    }
    if let Some(enc) = content {
        let body = stanza::bytes(enc).unwrap_or_default();
        match participant.group_decrypt(&key, body).await {
            Ok(padded) => match wacore::messages::decode_plaintext(&padded, version(enc)) {
                Ok(m) => {
                    got = true;
                    record(sim, phone, &sender.phone, gjid, id, &m).await;
                }
                Err(e) => warn!(%id, contact = %phone, "undecodable group message: {e}"),
            },
            Err(e) => warn!(%id, contact = %phone, "contact could not decrypt the skmsg: {e}"),
        }
    }
    got
}

fn version(enc: &Node) -> u8 {
    attr(enc, "v").and_then(|v| v.parse().ok()).unwrap_or(2)
}

/// Records a group message's text or media in the contact's `received`.
async fn record(sim: &Sim, contact: &str, from: &str, gjid: &str, id: &str, m: &wa::Message) {
    let (text, media) = if let Some(media) = crate::media::media_of(m) {
        crate::contacts::receive_media(sim, contact, id, &media).await
    } else if let Some(text) = text_of(m) {
        (text, None)
    } else {
        debug!(%id, "group message part with neither text nor media");
        return;
    };
    info!(%contact, group = %gjid, %id, "contact received a group message");
    if let Some(c) = sim.world().contacts.get_mut(contact) {
        c.received.push(ReceivedText {
            id: id.to_owned(),
            from: from.to_owned(),
            text,
            media,
            quoted_id: None,
            reaction: None,
            edit: None,
            revoked_id: None,
            group: Some(gjid.to_owned()),
        });
    }
    sim.notify_changed();
}

/// A device's receipt for a group message (`to="…@g.us" participant="<author>"`): kept by a
/// contact author, relayed to an account author's live devices as from the group.
pub(crate) fn relay_receipt(sim: &Sim, conn: ConnId, receipt: &Node) {
    let (Some(to), Some(id), Some(author)) = (
        attr(receipt, "to"),
        attr(receipt, "id"),
        attr(receipt, "participant"),
    ) else {
        return;
    };
    if !to.ends_with("@g.us") {
        return;
    }
    let Some((user, _)) = split_jid(&author) else {
        return;
    };
    let mut w = sim.world();
    let Some(from) = w.conns.get(&conn).and_then(|c| c.device.clone()) else {
        return;
    };
    let kind = attr(receipt, "type");
    if let Some(c) = w.contact_by_user_mut(&user) {
        c.receipts.push(ReceiptSeen {
            id,
            from: format!("{}:{}", from.phone, from.device),
            kind: kind.unwrap_or_else(|| "delivery".to_owned()),
        });
        drop(w);
        sim.notify_changed();
        return;
    }
    let Some(account) = w.account_by_user(&user) else {
        return;
    };
    if account.phone == from.phone {
        return;
    }
    let mut relayed = NodeBuilder::new("receipt")
        .attr("from", to.as_str())
        .attr(
            "participant",
            format!("{}:{}@s.whatsapp.net", from.phone, from.device),
        )
        .attr("id", id)
        .attr("t", now_secs().to_string());
    if let Some(kind) = kind {
        relayed = relayed.attr("type", kind);
    }
    let relayed = relayed.build();
    for conn in account.devices.values().filter_map(|d| d.conn) {
        w.send(conn, Outbound::Stanza(relayed.clone()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sim::SimKeys;
    use wacore::iq::groups::GroupInfoResponse;
    use wacore::protocol::ProtocolNode as _;

    #[test]
    fn the_library_reads_the_metadata_the_simulator_writes() {
        let sim = Sim::new(SimKeys::generate()).unwrap();
        let owner = sim.create_phone(None, None).unwrap().phone;
        let c1 = sim.create_contact(None, None).unwrap();
        let c2 = sim.create_contact(None, None).unwrap();
        let info = sim
            .create_group(&owner, "Team", &[c1.phone.clone(), c2.lid.clone()])
            .unwrap();
        assert_eq!(info.participants.len(), 3);
        assert_eq!(info.participants[2].phone, c2.phone, "named by its LID");

        let w = sim.world();
        let g = &w.groups[group_id(&info.jid)];
        let encoded = wacore_binary::marshal::marshal(&metadata_node(g)).unwrap();
        let unpacked = wacore_binary::util::unpack(&encoded).unwrap();
        let node = wacore_binary::marshal::unmarshal_ref(&unpacked).unwrap();
        let parsed = GroupInfoResponse::try_from_node_ref(&node).unwrap();
        assert_eq!(parsed.id.to_string(), info.jid);
        assert_eq!(parsed.subject.as_str(), "Team");
        assert_eq!(parsed.creator.unwrap().to_string(), info.creator);
        assert_eq!(parsed.creation_time, Some(info.creation));
        let jids: Vec<String> = parsed
            .participants
            .iter()
            .map(|p| p.jid.to_string())
            .collect();
        assert_eq!(
            jids,
            info.participants
                .iter()
                .map(|p| p.jid.clone())
                .collect::<Vec<_>>()
        );
        assert!(parsed.participants[0].participant_type.is_admin());
        assert!(!parsed.participants[1].participant_type.is_admin());
        // The hash a client sends over those participants is the simulator's.
        let ours = participant_hash(g).unwrap();
        let theirs = wacore::messages::MessageUtils::participant_list_hash(
            &parsed
                .participants
                .iter()
                .map(|p| p.jid.clone())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn unknown_members_are_refused() {
        let sim = Sim::new(SimKeys::generate()).unwrap();
        let owner = sim.create_phone(None, None).unwrap().phone;
        assert!(matches!(
            sim.create_group(&owner, "x", &["nobody".to_owned()]),
            Err(SimError::NotFound(_))
        ));
        assert!(matches!(
            sim.create_group("nobody", "x", &[]),
            Err(SimError::NotFound(_))
        ));
        assert!(sim.groups().is_empty());
    }

    #[tokio::test]
    async fn groups_and_sender_keys_survive_a_snapshot() {
        let sim = Sim::new(SimKeys::generate()).unwrap();
        let owner = sim.create_phone(None, None).unwrap().phone;
        let c = sim.create_contact(None, None).unwrap();
        let info = sim
            .create_group(&owner, "Kept", std::slice::from_ref(&c.phone))
            .unwrap();
        // The contact's first message creates its sender key (no devices to deliver to).
        sim.contact_send_group_text(&c.phone, &info.jid, "one")
            .await
            .unwrap();
        let snap = sim.snapshot().await.unwrap();
        let restored = Sim::from_snapshot(&snap).unwrap();
        assert_eq!(restored.groups(), vec![info.clone()]);
        let participant = restored.world().contacts[&c.phone].participant.clone();
        let key = SenderKeyName::from_parts(&info.jid, &device_address(&c.phone, 0).to_string());
        let (skdm, _) = participant.group_encrypt(&key, b"two").await.unwrap();
        let before = sim.world().contacts[&c.phone].participant.clone();
        let (first_skdm, _) = before.group_encrypt(&key, b"two").await.unwrap();
        // Same chain (id and signing key) after the restore.
        let chain = |b: &[u8]| {
            let m = wacore::libsignal::protocol::SenderKeyDistributionMessage::try_from(b).unwrap();
            (m.chain_id(), *m.signing_key())
        };
        assert_eq!(chain(&skdm), chain(&first_skdm));
    }
}
