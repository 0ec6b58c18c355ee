//! `xmlns="w:g2"`: group metadata. `get <query request="interactive" phash?/>` to a group
//! answers its `<group>` (none when the client's `phash` still matches: not modified);
//! `get <participating>` to `g.us` answers every group the account is in. An unknown group
//! is 404 `item-not-found`, a group the account is not in 403 `forbidden`, as on WhatsApp.

use std::sync::Arc;

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use crate::groups::{group_id, metadata_node, participant_hash};
use crate::sim::Sim;
use crate::stanza::{attr, child};
use crate::world::DeviceAddr;

pub fn handle(sim: &Arc<Sim>, dev: &DeviceAddr, iq: &Node) -> Node {
    let kind = attr(iq, "type").unwrap_or_default();
    if kind != "get" {
        return super::unknown(sim, dev, iq);
    }
    if let Some(query) = child(iq, "query") {
        let to = attr(iq, "to").unwrap_or_default();
        let w = sim.world();
        let Some(g) = w.groups.get(group_id(&to)) else {
            return error(iq, 404, "item-not-found");
        };
        if !g.members.iter().any(|m| m.phone == dev.phone) {
            return error(iq, 403, "forbidden");
        }
        let unchanged = attr(query, "phash").is_some_and(|h| Some(h) == participant_hash(g));
        let reply = result(iq);
        return if unchanged {
            reply.build()
        } else {
            reply.children([metadata_node(g)]).build()
        };
    }
    if child(iq, "participating").is_some() {
        let w = sim.world();
        let groups = w
            .groups
            .values()
            .filter(|g| g.members.iter().any(|m| m.phone == dev.phone))
            .map(metadata_node);
        return result(iq)
            .children([NodeBuilder::new("groups").children(groups).build()])
            .build();
    }
    super::unknown(sim, dev, iq)
}

/// A result from the JID the iq was sent to (the group, or `g.us`), as WhatsApp answers.
fn result(iq: &Node) -> NodeBuilder {
    NodeBuilder::new("iq")
        .attr("from", attr(iq, "to").unwrap_or_else(|| "g.us".to_owned()))
        .attr("type", "result")
        .attr("id", attr(iq, "id").unwrap_or_default())
}

fn error(iq: &Node, code: u16, text: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("from", attr(iq, "to").unwrap_or_else(|| "g.us".to_owned()))
        .attr("type", "error")
        .attr("id", attr(iq, "id").unwrap_or_default())
        .children([NodeBuilder::new("error")
            .attr("code", code.to_string())
            .attr("text", text)
            .build()])
        .build()
}
