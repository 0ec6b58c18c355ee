//! The small iqs of the login sequence: passive/active, props, AB props, blocklist, privacy,
//! app-state sync, and friends.

use std::sync::Arc;

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use super::unknown;
use crate::sim::Sim;
use crate::stanza::{self, attr, child, children};
use crate::world::{ConnId, DeviceAddr, Outbound};

/// `iq passive set <active/>`: the device leaves passive mode, so WhatsApp flushes what it
/// holds for it and then tells it the offline backlog is done.
pub fn passive(sim: &Arc<Sim>, conn: ConnId, dev: &DeviceAddr, iq: &Node) {
    let mut w = sim.world();
    w.send(conn, Outbound::Stanza(stanza::iq_result(iq).build()));
    let active = child(iq, "active").is_some();
    if let Some(c) = w.conns.get_mut(&conn) {
        c.active = active;
    }
    if !active {
        return;
    }
    let queued = w
        .device_mut(dev)
        .map(|d| d.offline.take_for_delivery())
        .unwrap_or_default();
    let count = queued.len();
    for stanza in queued {
        w.send(conn, Outbound::Stanza(stanza));
    }
    let done = NodeBuilder::new("ib")
        .attr("from", stanza::SERVER_JID)
        .children([NodeBuilder::new("offline")
            .attr("count", count.to_string())
            .build()])
        .build();
    w.send(conn, Outbound::Stanza(done));
}

pub fn handle(sim: &Arc<Sim>, dev: &DeviceAddr, xmlns: &str, iq: &Node) -> Node {
    let kind = attr(iq, "type").unwrap_or_default();
    match (xmlns, kind.as_str()) {
        ("w", "get") if child(iq, "props").is_some() => stanza::iq_result(iq)
            .children([NodeBuilder::new("props")
                .attr("protocol", "2")
                .attr("hash", "sim")
                .attr("refresh", "86400")
                .build()])
            .build(),
        ("abt", "get") => stanza::iq_result(iq)
            .children([NodeBuilder::new("props")
                .attr("protocol", "1")
                .attr("ab_key", "sim")
                .attr("hash", "sim")
                .attr("refresh", "86400")
                .build()])
            .build(),
        ("blocklist", "get") => stanza::iq_result(iq)
            .children([NodeBuilder::new("list").build()])
            .build(),
        ("privacy", "get") => stanza::iq_result(iq)
            .children([NodeBuilder::new("privacy")
                .children(
                    [
                        ("readreceipts", "all"),
                        ("last", "all"),
                        ("online", "all"),
                        ("profile", "all"),
                        ("status", "all"),
                        ("groupadd", "all"),
                        ("calladd", "all"),
                    ]
                    .into_iter()
                    .map(|(n, v)| {
                        NodeBuilder::new("category")
                            .attr("name", n)
                            .attr("value", v)
                            .build()
                    }),
                )
                .build()])
            .build(),
        // `privacy set <tokens>` (trusted-contact tokens) and privacy setting changes.
        ("privacy", "set") => stanza::iq_result(iq).build(),
        ("w:sync:app:state", "set") => {
            let reply = app_state_sync(iq);
            if let Some(d) = sim.world().device_mut(dev) {
                d.synced_collections.extend(requested_collections(iq));
            }
            sim.notify_changed();
            reply
        }
        ("md", "set") if child(iq, "remove-companion-device").is_some() => {
            remove_companion(sim, dev, iq)
        }
        ("w:m", "set") if child(iq, "media_conn").is_some() => media_conn(sim, iq),
        ("md", _)
        | ("w:m", _)
        | ("status", _)
        | ("w:profile:picture", _)
        | ("disappearing_mode", _) => stanza::iq_result(iq).build(),
        _ => unknown(sim, dev, iq),
    }
}

/// `iq w:m set <media_conn/>`: the media server's host and the auth token uploads carry.
fn media_conn(sim: &Sim, iq: &Node) -> Node {
    use wacore::iq::mediaconn::{HostType, MediaConnHostExtended, MediaConnResponseExtended};
    use wacore::protocol::ProtocolNode as _;
    let media = sim.media();
    let host = media.host().unwrap_or_else(|| "127.0.0.1".to_owned());
    let conn = MediaConnResponseExtended {
        auth: media.auth(),
        ttl: MEDIA_CONN_TTL,
        auth_ttl: Some(MEDIA_AUTH_TTL),
        max_buckets: Some(12),
        ip_token: None,
        set_ip_token: None,
        hosts: vec![MediaConnHostExtended::simple(host, HostType::Primary)],
    };
    stanza::iq_result(iq).children([conn.into_node()]).build()
}

/// Seconds a client may reuse its `media_conn` routes, and its auth token.
const MEDIA_CONN_TTL: u64 = 300;
const MEDIA_AUTH_TTL: u64 = 21_600;

/// The account's app-state collections. The simulator keeps none, so every requested
/// collection answers at version 0 with no patches (what an account with no chats
/// settings looks like); the client marks it synced.
fn app_state_sync(iq: &Node) -> Node {
    let collections: Vec<Node> = requested_collections(iq)
        .map(|name| {
            NodeBuilder::new("collection")
                .attr("name", name)
                .attr("version", "0")
                .build()
        })
        .collect();
    stanza::iq_result(iq)
        .children([NodeBuilder::new("sync").children(collections).build()])
        .build()
}

fn requested_collections(iq: &Node) -> impl Iterator<Item = String> + '_ {
    child(iq, "sync")
        .into_iter()
        .flat_map(|sync| children(sync, "collection"))
        .filter_map(|c| attr(c, "name"))
}

/// `iq md set <remove-companion-device jid=…>`: a device logs itself (or another companion of
/// the same account) out. Its credentials stop working; the client closes its own socket.
fn remove_companion(sim: &Arc<Sim>, dev: &DeviceAddr, iq: &Node) -> Node {
    let target = child(iq, "remove-companion-device")
        .and_then(|r| attr(r, "jid"))
        .and_then(|jid| crate::sim::split_jid(&jid));
    let mut w = sim.world();
    let phone = w
        .account_by_user(target.as_ref().map_or("", |(u, _)| u.as_str()))
        .map(|a| a.phone.clone());
    match (phone, target) {
        (Some(phone), Some((_, device))) if phone == dev.phone && device != 0 => {
            if let Some(d) = w.device_mut(&DeviceAddr { phone, device }) {
                d.removed = true;
                d.offline.clear();
            }
            drop(w);
            sim.notify_changed();
            stanza::iq_result(iq).build()
        }
        _ => stanza::iq_error(iq, 403, "forbidden"),
    }
}
