//! Answers to the iqs a client sends. Dispatch is by `xmlns` (and the first child), as on
//! WhatsApp's side; anything unknown gets an empty result and a warning in the simulator log,
//! so a missing answer shows up there rather than as a client timeout.

mod groups;
mod login;
mod prekeys;
mod usync;

use std::sync::Arc;

use tracing::{debug, warn};
use wacore_binary::Node;

use crate::sim::Sim;
use crate::stanza::{self, attr, child, first_child_tag};
use crate::world::{ConnId, DeviceAddr, Outbound};

/// Handles an `<iq>` from the client.
pub async fn handle(sim: &Arc<Sim>, conn: ConnId, iq: Node) {
    let kind = attr(&iq, "type").unwrap_or_default();
    if kind == "result" || kind == "error" {
        on_reply(sim, conn, &iq).await;
        return;
    }
    let xmlns = attr(&iq, "xmlns").unwrap_or_default();
    let device = sim.world().conns.get(&conn).and_then(|c| c.device.clone());
    let reply = match (xmlns.as_str(), device) {
        ("w:p", _) => Some(stanza::iq_result(&iq).build()),
        ("md", None) if child(&iq, "link_code_companion_reg").is_some() => {
            sim.on_link_code_iq(conn, &iq)
        }
        (_, None) => {
            // Before login only pairing iqs are meaningful.
            debug!(conn, "iq before login: {}", stanza::describe(&iq));
            Some(stanza::iq_result(&iq).build())
        }
        ("passive", Some(dev)) => {
            login::passive(sim, conn, &dev, &iq);
            None
        }
        ("encrypt", Some(dev)) => Some(prekeys::handle(sim, &dev, &iq).await),
        ("usync", Some(dev)) => Some(usync::handle(sim, &dev, &iq)),
        ("w:profile:picture", Some(_)) if kind == "get" => {
            Some(crate::conversation::profile_picture(sim, &iq))
        }
        ("w:g2", Some(dev)) => Some(groups::handle(sim, &dev, &iq)),
        (ns, Some(dev)) => Some(login::handle(sim, &dev, ns, &iq)),
    };
    if let Some(reply) = reply {
        sim.world().send(conn, Outbound::Stanza(reply));
    }
}

/// Results of iqs the server sent (pairing).
async fn on_reply(sim: &Arc<Sim>, conn: ConnId, iq: &Node) {
    if let Some(sign) = child(iq, "pair-device-sign") {
        let identity = child(sign, "device-identity")
            .and_then(stanza::bytes)
            .map(<[u8]>::to_vec);
        sim.pairing_confirmed(conn, identity).await;
    } else if attr(iq, "type").as_deref() == Some("error") {
        warn!(
            conn,
            "client answered with an error: {}",
            stanza::describe(iq)
        );
    }
}

const MAX_UNHANDLED_KEPT: usize = 1000;

/// Logs an iq the simulator has no specific answer for.
fn unknown(sim: &Sim, dev: &DeviceAddr, iq: &Node) -> Node {
    {
        let mut w = sim.world();
        // Bounded: a client looping on an unknown iq must not grow the simulator forever.
        if w.unhandled_iqs.len() < MAX_UNHANDLED_KEPT {
            w.unhandled_iqs.push(stanza::describe(iq));
        }
    }
    warn!(
        ?dev,
        child = first_child_tag(iq).unwrap_or(""),
        "unhandled iq, answering with an empty result: {}",
        stanza::describe(iq)
    );
    stanza::iq_result(iq).build()
}
