//! Prometheus metrics (no per-user labels: a pod serves one user anyway).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Default)]
pub struct Metrics {
    pub messages_in: Counter,
    pub messages_in_duplicate: Counter,
    pub messages_not_stored: Counter,
    pub messages_out: Counter,
    pub reconnects: Counter,
    pub store_errors: Counter,
    pub connected: Gauge,
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("wasp_session");
        r.register(
            "messages_in",
            "Inbound messages committed",
            self.messages_in.clone(),
        );
        r.register(
            "messages_in_duplicate",
            "Inbound messages already stored (redelivery)",
            self.messages_in_duplicate.clone(),
        );
        r.register(
            "messages_not_stored",
            "Inbound messages not stored by the storage policy",
            self.messages_not_stored.clone(),
        );
        r.register("messages_out", "Messages sent", self.messages_out.clone());
        r.register("reconnects", "Reconnect attempts", self.reconnects.clone());
        r.register(
            "store_errors",
            "Redis writes that failed (messages stay unacked)",
            self.store_errors.clone(),
        );
        r.register(
            "connected",
            "1 while connected to WhatsApp",
            self.connected.clone(),
        );
        r
    }
}
