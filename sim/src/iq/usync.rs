//! `xmlns="usync"`: user sync queries — device lists (own and peers'), phone-number → LID
//! mapping, and whether a number is on WhatsApp.

use std::sync::Arc;

use buffa::Message as _;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp as wa;

use crate::crypto::new_rng;
use crate::sim::Sim;
use crate::stanza::{self, attr, child, children};
use crate::world::{DeviceAddr, World};

/// Prefix of the account signature over a key-index list.
const ADV_PREFIX_KEY_INDEX_LIST: &[u8] = &[6, 2];

/// A user as usync reports it.
struct UserView {
    phone: String,
    lid: String,
    /// `(device id, key index)`; device 0 (the phone) has none.
    devices: Vec<(u16, Option<u32>)>,
    key_index_list: Option<Vec<u8>>,
}

fn view(w: &World, user: &str) -> Option<UserView> {
    if let Some(a) = w.account_by_user(user) {
        let live: Vec<_> = a.devices.values().filter(|d| !d.removed).collect();
        let mut devices = vec![(0u16, None)];
        devices.extend(live.iter().map(|d| (d.id, Some(d.key_index))));
        let key_index_list = (!live.is_empty()).then(|| {
            let details = wa::ADVKeyIndexList {
                raw_id: Some(1),
                timestamp: Some(chrono::Utc::now().timestamp().max(0) as u64),
                current_index: live.iter().map(|d| d.key_index).max(),
                valid_indexes: live.iter().map(|d| d.key_index).collect(),
                account_type: Some(wa::ADVEncryptionType::E2EE),
            }
            .encode_to_vec();
            let mut msg = ADV_PREFIX_KEY_INDEX_LIST.to_vec();
            msg.extend_from_slice(&details);
            let signature = a
                .identity
                .private_key
                .calculate_signature(&msg, &mut new_rng())
                .map(|s| s.to_vec())
                .unwrap_or_default();
            wa::ADVSignedKeyIndexList {
                details: Some(details),
                account_signature: Some(signature),
                account_signature_key: Some(a.identity.public_key.public_key_bytes().to_vec()),
            }
            .encode_to_vec()
        });
        return Some(UserView {
            phone: a.phone.clone(),
            lid: a.lid.clone(),
            devices,
            key_index_list,
        });
    }
    w.contact_by_user(user).map(|c| UserView {
        phone: c.phone.clone(),
        lid: c.lid.clone(),
        devices: vec![(0, None)],
        key_index_list: None,
    })
}

fn user_part(jid: &str) -> &str {
    let bare = jid.split('@').next().unwrap_or(jid);
    bare.split([':', '.']).next().unwrap_or(bare)
}

pub fn handle(sim: &Arc<Sim>, dev: &DeviceAddr, iq: &Node) -> Node {
    let Some(usync) = child(iq, "usync") else {
        return super::unknown(sim, dev, iq);
    };
    let protocols: Vec<String> = child(usync, "query")
        .and_then(|q| q.children())
        .map(|c| c.iter().map(|n| n.tag.to_string()).collect())
        .unwrap_or_default();
    let wants = |p: &str| protocols.iter().any(|x| x == p);
    let queried: Vec<Node> = child(usync, "list")
        .map(|l| children(l, "user").cloned().collect())
        .unwrap_or_default();
    let w = sim.world();
    let mut users = Vec::with_capacity(queried.len());
    for q in &queried {
        // A user is named by jid, or by a phone number in `<contact>+1555…</contact>`.
        let (jid, user) = match attr(q, "jid") {
            Some(jid) => {
                let user = user_part(&jid).to_owned();
                (jid, user)
            }
            None => {
                let number = child(q, "contact")
                    .and_then(|c| stanza::bytes(c))
                    .map(|b| {
                        String::from_utf8_lossy(b)
                            .trim_start_matches('+')
                            .to_owned()
                    })
                    .unwrap_or_default();
                (format!("{number}@s.whatsapp.net"), number)
            }
        };
        let found = view(&w, &user);
        let mut kids = Vec::new();
        if wants("contact") {
            kids.push(
                NodeBuilder::new("contact")
                    .attr("type", if found.is_some() { "in" } else { "out" })
                    .build(),
            );
        }
        if let Some(u) = &found {
            if wants("devices") {
                let mut dev_kids = vec![
                    NodeBuilder::new("device-list")
                        .children(u.devices.iter().map(|(id, ki)| {
                            let mut b = NodeBuilder::new("device").attr("id", id.to_string());
                            if let Some(ki) = ki {
                                b = b.attr("key-index", ki.to_string());
                            }
                            b.build()
                        }))
                        .build(),
                ];
                if let Some(kil) = &u.key_index_list {
                    dev_kids.push(
                        NodeBuilder::new("key-index-list")
                            .attr("ts", chrono::Utc::now().timestamp().to_string())
                            .bytes(kil.clone())
                            .build(),
                    );
                }
                kids.push(NodeBuilder::new("devices").children(dev_kids).build());
            }
            if wants("lid") {
                kids.push(
                    NodeBuilder::new("lid")
                        .attr("val", format!("{}@lid", u.lid))
                        .build(),
                );
            }
        }
        let mut b = NodeBuilder::new("user").attr("jid", jid.as_str());
        if let Some(u) = &found
            && jid.ends_with("@lid")
        {
            b = b.attr("pn_jid", format!("{}@s.whatsapp.net", u.phone));
        }
        users.push(b.children(kids).build());
    }
    let mut usync_attrs = NodeBuilder::new("usync");
    for key in ["sid", "mode", "context"] {
        if let Some(v) = attr(usync, key) {
            usync_attrs = usync_attrs.attr(key, v);
        }
    }
    stanza::iq_result(iq)
        .children([usync_attrs
            .attr("index", "0")
            .attr("last", "true")
            .children([NodeBuilder::new("list").children(users).build()])
            .build()])
        .build()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sim::SimKeys;
    use crate::world::{Device, SignedPreKey};

    fn device(id: u16, key_index: u32) -> Device {
        Device {
            id,
            noise_pub: [1; 32],
            identity_pub: [2; 32],
            registration_id: 7,
            signed_prekey: SignedPreKey {
                id: 1,
                public: [3; 32],
                signature: vec![0; 64],
            },
            prekeys: Default::default(),
            key_index,
            device_identity: None,
            conn: None,
            offline: Default::default(),
            removed: false,
            logins: 0,
            synced_collections: Default::default(),
        }
    }

    #[test]
    fn device_list_carries_a_key_index_list_the_library_accepts() {
        let sim = Sim::new(SimKeys::generate()).unwrap();
        let phone = sim.create_phone(None, None).unwrap().phone;
        let mut w = sim.world();
        let account = w.accounts.get_mut(&phone).unwrap();
        account.devices.insert(2, device(2, 5));
        let mut removed = device(3, 6);
        removed.removed = true;
        account.devices.insert(3, removed);

        let u = view(&w, &phone).unwrap();
        assert_eq!(u.devices, vec![(0, None), (2, Some(5))]);
        let bytes = u.key_index_list.unwrap();
        let decoded = wacore::adv::decode_key_index_list(&bytes).unwrap();
        assert!(wacore::adv::is_key_index_valid(Some(5), &decoded));
        assert_eq!(decoded.valid_indexes, vec![5]);
        // Signed by the account's identity key.
        let signed = wa::ADVSignedKeyIndexList::decode_from_slice(&bytes).unwrap();
        let mut msg = ADV_PREFIX_KEY_INDEX_LIST.to_vec();
        msg.extend_from_slice(signed.details.as_deref().unwrap());
        let account = &w.accounts[&phone];
        assert!(
            account
                .identity
                .public_key
                .verify_signature(&msg, signed.account_signature.as_deref().unwrap())
        );
    }

    #[test]
    fn a_contact_has_only_its_phone() {
        let sim = Sim::new(SimKeys::generate()).unwrap();
        let contact = sim.create_contact(None, None).unwrap();
        let w = sim.world();
        let u = view(&w, &contact.lid).unwrap();
        assert_eq!(u.phone, contact.phone);
        assert_eq!(u.devices, vec![(0, None)]);
        assert!(u.key_index_list.is_none());
        assert_eq!(user_part("123.1:4@lid"), "123");
    }
}
