//! Dispatches the client's stanzas by tag.

use std::sync::Arc;

use tracing::debug;
use wacore_binary::Node;

use crate::sim::Sim;
use crate::stanza::{self, attr};
use crate::world::{ConnId, Outbound};
use crate::{conversation, iq, messaging};

pub async fn handle(sim: &Arc<Sim>, conn: ConnId, node: Node) {
    match node.tag.as_ref() {
        "iq" => iq::handle(sim, conn, node).await,
        "message" => messaging::from_device(sim, conn, node).await,
        "receipt" => messaging::receipt_from_device(sim, conn, &node),
        "ack" => {
            // The device acknowledges a stanza we delivered (notifications, server messages).
            if let Some(id) = attr(&node, "id") {
                sim.acked(conn, &id);
            }
            // Receipts from contacts are queued under their own key.
            if let Some(key) = conversation::acked_receipt_key(&node) {
                sim.acked(conn, &key);
            }
        }
        "chatstate" => conversation::chatstate_from_device(sim, conn, &node),
        "notification" | "call" => {
            let ack = stanza::ack_for(&node, None);
            sim.world().send(conn, Outbound::Stanza(ack));
        }
        // Presence and `ib` (unified session) need no answer.
        _ => debug!(conn, "ignored {}", stanza::describe(&node)),
    }
}
