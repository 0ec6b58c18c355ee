//! Per-device queue of stanzas WhatsApp holds for a companion: everything addressed to the
//! device stays queued until the device acknowledges it (a `<receipt>` or `<ack>` carrying the
//! stanza id), and every (re)connection redelivers whatever is still unacknowledged — so a
//! client that crashes between receiving and acknowledging gets the message again.

use std::collections::VecDeque;

use wacore_binary::Node;

#[derive(Debug, Clone)]
pub struct Queued {
    pub id: String,
    pub stanza: Node,
    /// How many times it has been written to a socket.
    pub deliveries: u32,
}

#[derive(Debug, Default)]
pub struct OfflineQueue {
    items: VecDeque<Queued>,
}

impl OfflineQueue {
    pub fn push(&mut self, id: String, stanza: Node) {
        if self.items.iter().any(|q| q.id == id) {
            return;
        }
        self.items.push_back(Queued {
            id,
            stanza,
            deliveries: 0,
        });
    }

    /// Removes the stanza the device acknowledged; returns whether it was queued.
    pub fn ack(&mut self, id: &str) -> bool {
        let before = self.items.len();
        self.items.retain(|q| q.id != id);
        self.items.len() != before
    }

    /// Everything still unacknowledged, in order, marked as delivered once more.
    pub fn take_for_delivery(&mut self) -> Vec<Node> {
        self.items
            .iter_mut()
            .map(|q| {
                q.deliveries += 1;
                q.stanza.clone()
            })
            .collect()
    }

    /// Marks one stanza as written to a live socket (it stays queued until acked).
    pub fn mark_delivered(&mut self, id: &str) {
        if let Some(q) = self.items.iter_mut().find(|q| q.id == id) {
            q.deliveries += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn items(&self) -> impl Iterator<Item = &Queued> {
        self.items.iter()
    }

    pub fn ids(&self) -> Vec<String> {
        self.items.iter().map(|q| q.id.clone()).collect()
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use wacore_binary::builder::NodeBuilder;

    fn msg(id: &str) -> Node {
        NodeBuilder::new("message").attr("id", id).build()
    }

    #[test]
    fn redelivers_until_acked() {
        let mut q = OfflineQueue::default();
        q.push("a".into(), msg("a"));
        q.push("b".into(), msg("b"));
        assert_eq!(q.take_for_delivery().len(), 2);
        assert!(q.ack("a"));
        let again = q.take_for_delivery();
        assert_eq!(again.len(), 1);
        assert_eq!(q.items[0].deliveries, 2);
        assert!(!q.ack("a"));
        assert!(q.ack("b"));
        assert!(q.is_empty());
    }

    #[test]
    fn duplicate_ids_are_queued_once() {
        let mut q = OfflineQueue::default();
        q.push("a".into(), msg("a"));
        q.push("a".into(), msg("a"));
        assert_eq!(q.len(), 1);
    }
}
