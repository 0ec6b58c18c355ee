//! Prometheus metrics of the API, served on the admin port. Labels are bounded: the matched route
//! template (not the raw path), the method, the status code, an auth-failure reason; never a user.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    /// `websocket` or `sse`.
    pub transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The event type (a fixed set: `message`, `qr`, `status`, ...).
    pub r#type: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    auth_failures: Family<ReasonLabels, Counter>,
    rate_limited: Counter,
    stream_clients: Family<TransportLabels, Gauge>,
    stream_feeds: Gauge,
    stream_events: Family<EventLabels, Counter>,
    stream_lagged: Counter,
    pub webhooks: WebhookMetrics,
}

/// The webhook dispatcher's metrics (this replica's share of the work).
#[derive(Default)]
pub struct WebhookMetrics {
    /// Events delivered (2xx).
    pub delivered: Counter,
    /// Failed attempts by reason (`connect`, `timeout`, `status_5xx`, `refused_address`, ...).
    pub failures: Family<ReasonLabels, Counter>,
    /// Events given up on (after the maximum age) and filed as dead letters.
    pub dead_letters: Counter,
    /// Endpoints this replica delivers to.
    pub endpoints: Gauge,
    /// Endpoints whose head event is waiting for a retry (each holds its events back, in order).
    pub retrying: Gauge,
    /// Age of the oldest event waiting for a retry on this replica, in seconds.
    pub oldest_pending_seconds: Gauge,
}

impl WebhookMetrics {
    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "webhook_deliveries",
            "Webhook events delivered (2xx)",
            self.delivered.clone(),
        );
        registry.register(
            "webhook_failures",
            "Failed webhook attempts, by reason",
            self.failures.clone(),
        );
        registry.register(
            "webhook_dead_letters",
            "Webhook events given up on and filed as dead letters",
            self.dead_letters.clone(),
        );
        registry.register(
            "webhook_endpoints",
            "Webhook endpoints this replica delivers to",
            self.endpoints.clone(),
        );
        registry.register(
            "webhook_retrying_endpoints",
            "Webhook endpoints waiting to retry their oldest event",
            self.retrying.clone(),
        );
        registry.register(
            "webhook_oldest_pending_age_seconds",
            "Age of the oldest webhook event waiting for a retry on this replica",
            self.oldest_pending_seconds.clone(),
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wasp_api");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        let rate_limited = Counter::default();
        let stream_clients = Family::<TransportLabels, Gauge>::default();
        let stream_feeds = Gauge::default();
        let stream_events = Family::<EventLabels, Counter>::default();
        let stream_lagged = Counter::default();
        let webhooks = WebhookMetrics::default();
        webhooks.register(&mut registry);
        registry.register(
            "stream_clients",
            "Connected event-stream clients, by transport",
            stream_clients.clone(),
        );
        registry.register(
            "stream_feeds",
            "Users with at least one event-stream client on this replica",
            stream_feeds.clone(),
        );
        registry.register(
            "stream_events",
            "Events read from Redis for this replica's clients, by type",
            stream_events.clone(),
        );
        registry.register(
            "stream_client_lagged",
            "Times a client fell behind the live feed and caught up from the stream",
            stream_lagged.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            duration.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused by authentication, by reason",
            auth_failures.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by the per-user rate limit",
            rate_limited.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            duration,
            auth_failures,
            rate_limited,
            stream_clients,
            stream_feeds,
            stream_events,
            stream_lagged,
            webhooks,
        }
    }

    /// A streaming client connected (`+1`) or left (`-1`).
    pub fn stream_client(&self, transport: &str, delta: i64) {
        self.stream_clients
            .get_or_create(&TransportLabels {
                transport: transport.to_owned(),
            })
            .inc_by(delta);
    }

    pub fn stream_feeds(&self, delta: i64) {
        self.stream_feeds.inc_by(delta);
    }

    pub fn stream_event(&self, kind: &str) {
        self.stream_events
            .get_or_create(&EventLabels {
                r#type: kind.to_owned(),
            })
            .inc();
    }

    pub fn stream_lagged(&self) {
        self.stream_lagged.inc();
    }

    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
