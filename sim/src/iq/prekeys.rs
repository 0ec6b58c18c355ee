//! `xmlns="encrypt"`: the server's prekey directory. Devices upload one-time prekeys and
//! rotate their signed prekey; peers fetch bundles (each fetch consumes a one-time prekey);
//! the device checks the server's copy with the digest.

use std::sync::Arc;

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use super::unknown;
use crate::crypto::to_32;
use crate::signal::PublicBundle;
use crate::sim::Sim;
use crate::stanza::{self, attr, bytes, child, children};
use crate::world::{DeviceAddr, SignedPreKey};

/// Key type byte for Curve25519 (`DJB_TYPE`).
const KEY_TYPE: u8 = 5;

pub async fn handle(sim: &Arc<Sim>, dev: &DeviceAddr, iq: &Node) -> Node {
    let kind = attr(iq, "type").unwrap_or_default();
    match kind.as_str() {
        "set" if child(iq, "list").is_some() || child(iq, "registration").is_some() => {
            upload(sim, dev, iq)
        }
        "set" if child(iq, "rotate").is_some() => rotate(sim, dev, iq),
        "get" if child(iq, "count").is_some() => {
            let count = sim.world().device(dev).map_or(0, |d| d.prekeys.len());
            stanza::iq_result(iq)
                .children([NodeBuilder::new("count")
                    .attr("value", count.to_string())
                    .build()])
                .build()
        }
        "get" if child(iq, "digest").is_some() => digest(sim, dev, iq),
        "get" if child(iq, "key").is_some() => fetch(sim, iq).await,
        _ => unknown(sim, dev, iq),
    }
}

fn id3(node: Option<&Node>) -> Option<u32> {
    let b = node.and_then(bytes)?;
    (b.len() == 3).then(|| u32::from_be_bytes([0, b[0], b[1], b[2]]))
}

fn read_skey(skey: &Node) -> Option<SignedPreKey> {
    Some(SignedPreKey {
        id: id3(child(skey, "id"))?,
        public: to_32(child(skey, "value").and_then(bytes)?).ok()?,
        signature: child(skey, "signature").and_then(bytes)?.to_vec(),
    })
}

fn upload(sim: &Arc<Sim>, dev: &DeviceAddr, iq: &Node) -> Node {
    let keys: Vec<(u32, [u8; 32])> = child(iq, "list")
        .map(|list| {
            children(list, "key")
                .filter_map(|k| {
                    Some((
                        id3(child(k, "id"))?,
                        to_32(child(k, "value").and_then(bytes)?).ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let skey = child(iq, "skey").and_then(read_skey);
    let mut w = sim.world();
    let Some(d) = w.device_mut(dev) else {
        return stanza::iq_error(iq, 404, "item-not-found");
    };
    d.prekeys.extend(keys);
    if let Some(skey) = skey {
        d.signed_prekey = skey;
    }
    drop(w);
    sim.notify_changed();
    stanza::iq_result(iq).build()
}

fn rotate(sim: &Arc<Sim>, dev: &DeviceAddr, iq: &Node) -> Node {
    let skey = child(iq, "rotate")
        .and_then(|r| child(r, "skey"))
        .and_then(read_skey);
    let mut w = sim.world();
    match (skey, w.device_mut(dev)) {
        (Some(skey), Some(d)) => {
            d.signed_prekey = skey;
            stanza::iq_result(iq).build()
        }
        _ => stanza::iq_error(iq, 400, "bad-request"),
    }
}

fn digest(sim: &Arc<Sim>, dev: &DeviceAddr, iq: &Node) -> Node {
    let w = sim.world();
    let Some(d) = w.device(dev) else {
        return stanza::iq_error(iq, 404, "item-not-found");
    };
    let ids: Vec<u32> = d.prekeys.keys().copied().collect();
    let pubs: Vec<&[u8]> = d.prekeys.values().map(|k| k.as_slice()).collect();
    let hash = wacore::prekeys::compute_key_bundle_digest(
        &d.identity_pub,
        &d.signed_prekey.public,
        &d.signed_prekey.signature,
        &pubs,
    );
    stanza::iq_result(iq)
        .children([NodeBuilder::new("digest")
            .children([
                NodeBuilder::new("type").bytes(vec![KEY_TYPE]).build(),
                NodeBuilder::new("registration")
                    .bytes(d.registration_id.to_be_bytes().to_vec())
                    .build(),
                NodeBuilder::new("identity")
                    .bytes(d.identity_pub.to_vec())
                    .build(),
                skey_node(
                    &d.signed_prekey.id,
                    &d.signed_prekey.public,
                    &d.signed_prekey.signature,
                ),
                NodeBuilder::new("list")
                    .children(ids.iter().map(|id| {
                        NodeBuilder::new("id")
                            .bytes(id.to_be_bytes()[1..].to_vec())
                            .build()
                    }))
                    .build(),
                NodeBuilder::new("hash").bytes(hash).build(),
            ])
            .build()])
        .build()
}

fn skey_node(id: &u32, public: &[u8; 32], signature: &[u8]) -> Node {
    NodeBuilder::new("skey")
        .children([
            NodeBuilder::new("id")
                .bytes(id.to_be_bytes()[1..].to_vec())
                .build(),
            NodeBuilder::new("value").bytes(public.to_vec()).build(),
            NodeBuilder::new("signature")
                .bytes(signature.to_vec())
                .build(),
        ])
        .build()
}

/// One `<user>` of a prekey fetch answer.
fn bundle_node(jid: &str, bundle: &PublicBundle, device_identity: Option<&[u8]>) -> Node {
    let mut kids = vec![
        NodeBuilder::new("registration")
            .bytes(bundle.registration_id.to_be_bytes().to_vec())
            .build(),
        NodeBuilder::new("type").bytes(vec![KEY_TYPE]).build(),
        NodeBuilder::new("identity")
            .bytes(bundle.identity.to_vec())
            .build(),
    ];
    if let Some((id, key)) = bundle.prekey {
        kids.push(
            NodeBuilder::new("key")
                .children([
                    NodeBuilder::new("id")
                        .bytes(id.to_be_bytes()[1..].to_vec())
                        .build(),
                    NodeBuilder::new("value").bytes(key.to_vec()).build(),
                ])
                .build(),
        );
    }
    kids.push(skey_node(
        &bundle.signed_prekey_id,
        &bundle.signed_prekey,
        &bundle.signed_prekey_signature,
    ));
    if let Some(di) = device_identity {
        kids.push(
            NodeBuilder::new("device-identity")
                .bytes(di.to_vec())
                .build(),
        );
    }
    NodeBuilder::new("user")
        .attr("jid", jid)
        .children(kids)
        .build()
}

/// `<key><user jid=…/></key>`: bundles for the requested devices (phones, contacts, or
/// companions), consuming one one-time prekey each.
async fn fetch(sim: &Arc<Sim>, iq: &Node) -> Node {
    let jids: Vec<String> = child(iq, "key")
        .map(|k| children(k, "user").filter_map(|u| attr(u, "jid")).collect())
        .unwrap_or_default();
    let mut users = Vec::with_capacity(jids.len());
    for jid in jids {
        users.push(match sim.take_bundle(&jid).await {
            Some((bundle, identity)) => bundle_node(&jid, &bundle, identity.as_deref()),
            None => NodeBuilder::new("user")
                .attr("jid", jid.as_str())
                .children([NodeBuilder::new("error")
                    .attr("code", "404")
                    .attr("text", "item-not-found")
                    .build()])
                .build(),
        });
    }
    stanza::iq_result(iq)
        .children([NodeBuilder::new("list").children(users).build()])
        .build()
}
