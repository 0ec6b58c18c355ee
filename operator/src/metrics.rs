//! Prometheus metrics of the operator. No per-user labels: sessions are counted by phase only.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use wasp_crds::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Family<CategoryLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub sessions: Family<PhaseLabels, Gauge>,
    pub stale_cleanups: Counter,
    /// GETs of master-key Secrets (the key cache's misses: at most one per namespace per 10 s).
    pub master_key_reads: Counter,
    pub leader: Gauge,
    /// Each session's last phase, keyed by a hash of its namespace and name (8 bytes, not two
    /// strings and an object reference: at 10,000 sessions the difference is ≈ 2 MiB; a 64-bit
    /// collision among 10,000 keys has odds of about 3 in a trillion).
    phases: Mutex<HashMap<u64, Phase>>,
}

fn session_key(namespace: &str, name: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (namespace, name).hash(&mut h);
    h.finish()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wasp_operator");
        let reconciles = Counter::default();
        let reconcile_errors = Family::<CategoryLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let sessions = Family::<PhaseLabels, Gauge>::default();
        let stale_cleanups = Counter::default();
        let master_key_reads = Counter::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error category",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        registry.register("sessions", "WhatsAppSessions by phase", sessions.clone());
        registry.register(
            "stale_cleanups",
            "Stale sessions switched to disconnected",
            stale_cleanups.clone(),
        );
        registry.register(
            "master_key_reads",
            "Reads of a master-key Secret (cached for 10 s per namespace)",
            master_key_reads.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        for phase in Phase::ALL {
            sessions
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str().into(),
                })
                .set(0);
        }
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            sessions,
            stale_cleanups,
            master_key_reads,
            leader,
            phases: Mutex::default(),
        }
    }
}

impl Metrics {
    pub fn observe_reconcile(&self, took: Duration, error_category: Option<&str>) {
        self.reconciles.inc();
        self.reconcile_duration.observe(took.as_secs_f64());
        if let Some(category) = error_category {
            self.reconcile_errors
                .get_or_create(&CategoryLabels {
                    category: category.into(),
                })
                .inc();
        }
    }

    fn gauge(&self, phase: Phase) -> Gauge {
        self.sessions
            .get_or_create(&PhaseLabels {
                phase: phase.as_str().into(),
            })
            .clone()
    }

    pub fn set_phase(&self, namespace: &str, name: &str, phase: Phase) {
        let old = self
            .phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session_key(namespace, name), phase);
        if old != Some(phase) {
            if let Some(old) = old {
                self.gauge(old).dec();
            }
            self.gauge(phase).inc();
        }
    }

    pub fn forget_session(&self, namespace: &str, name: &str) {
        if let Some(old) = self
            .phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session_key(namespace, name))
        {
            self.gauge(old).dec();
        }
    }

    /// Forgets every session (a replica that stops leading no longer knows their phases).
    pub fn forget_all(&self) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        for (_, phase) in phases.drain() {
            self.gauge(phase).dec();
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_gauges_follow_sessions_without_user_labels() {
        let m = Metrics::default();
        m.set_phase("ns", "wa-a", Phase::Pending);
        m.set_phase("ns", "wa-b", Phase::Pending);
        m.set_phase("ns", "wa-a", Phase::Connected);
        m.set_phase("ns", "wa-a", Phase::Connected);
        assert_eq!(m.gauge(Phase::Pending).get(), 1);
        assert_eq!(m.gauge(Phase::Connected).get(), 1);
        m.set_phase("other", "wa-a", Phase::Pending);
        assert_eq!(
            m.gauge(Phase::Pending).get(),
            2,
            "same name, other namespace"
        );
        m.forget_session("ns", "wa-a");
        m.forget_session("other", "wa-a");
        assert_eq!(m.gauge(Phase::Connected).get(), 0);
        m.observe_reconcile(Duration::from_millis(3), Some("redis"));
        let text = m.encode();
        assert!(
            text.contains("wasp_operator_sessions{phase=\"Pending\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wasp_operator_reconcile_errors_total{category=\"redis\"} 1"),
            "{text}"
        );
        assert!(!text.contains("wa-b"));
        m.forget_all();
        assert_eq!(m.gauge(Phase::Pending).get(), 0);
    }
}
