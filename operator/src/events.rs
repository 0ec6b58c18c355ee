//! Kubernetes Events about sessions (`events.k8s.io/v1`), with the series aggregation of
//! kube-runtime's `Recorder` but a compact cache.
//!
//! kube-runtime 5's `Recorder` keeps a clone of every Event it published for six minutes (to turn
//! repeats into a series), keyed by a struct of owned strings and the whole object reference,
//! and scans that map on every publish. At 10,000 sessions that is tens of MiB and a quadratic
//! scan (docs/benchmarks.md, "wasp-operator: 1,000 sessions"). This one keeps, per key, a 64-bit
//! hash and what a repeat needs (the Event's name and namespace, its count, when it was last
//! seen), and drops expired entries at most once a minute.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client};

/// How long a published Event can still become a series (as kube-runtime and client-go).
const CACHE_TTL: SignedDuration = SignedDuration::from_mins(6);
/// Expired entries are dropped at most this often.
const GC_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// A published Event, as a repeat needs it: no strings (its name is the regarded object's
/// and the first publish's time; its namespace the object's), ≈ 48 bytes a session.
struct Seen {
    /// When the Event was created, in nanoseconds: the suffix of its name.
    first: i128,
    count: i32,
    last: Timestamp,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<u64, Seen>,
    last_gc: Option<Timestamp>,
}

/// Publishes Events; a repeat (same type, action, reason and object) within six minutes patches
/// the first Event's series instead of creating another.
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    cache: Mutex<Cache>,
}

fn key(ev: &Event, regarding: &ObjectReference) -> u64 {
    let mut h = DefaultHasher::new();
    matches!(ev.type_, EventType::Warning).hash(&mut h);
    ev.action.hash(&mut h);
    ev.reason.hash(&mut h);
    regarding.api_version.hash(&mut h);
    regarding.kind.hash(&mut h);
    regarding.namespace.hash(&mut h);
    regarding.name.hash(&mut h);
    regarding.uid.hash(&mut h);
    h.finish()
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            cache: Mutex::default(),
        }
    }

    /// The name of the Event about `regarding` first published at `first` (nanoseconds).
    fn event_name(&self, regarding: &ObjectReference, first: i128) -> String {
        format!(
            "{}.{first:x}",
            regarding.name.as_ref().unwrap_or(&self.reporter.controller)
        )
    }

    fn event(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(self.event_name(regarding, now.as_nanosecond())),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(match ev.type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            related: ev.secondary.clone(),
            ..Default::default()
        }
    }

    /// Creates the Event, or bumps the series of the same Event published less than six minutes
    /// ago.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> kube::Result<()> {
        let now = Timestamp::now();
        let k = key(ev, regarding);
        let repeat = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.last_gc.is_none_or(|t| t + GC_EVERY <= now) {
                cache.entries.retain(|_, s| s.last + CACHE_TTL > now);
                cache.entries.shrink_to_fit();
                cache.last_gc = Some(now);
            }
            cache
                .entries
                .get(&k)
                .filter(|s| s.last + CACHE_TTL > now)
                .map(|s| (s.first, s.count + 1))
        };
        // The key covers the namespace: a repeat's Event is in this one.
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let seen = match repeat {
            Some((first, count)) => {
                let series = EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                };
                events
                    .patch(
                        &self.event_name(regarding, first),
                        &PatchParams::default(),
                        &Patch::Merge(&serde_json::json!({ "series": series })),
                    )
                    .await?;
                Seen {
                    first,
                    count,
                    last: now,
                }
            }
            None => {
                let event = self.event(ev, regarding, now);
                events.create(&PostParams::default(), &event).await?;
                Seen {
                    first: now.as_nanosecond(),
                    count: 1,
                    last: now,
                }
            }
        };
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .insert(k, seen);
        Ok(())
    }
}
