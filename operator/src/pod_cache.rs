//! The operator's cache of its session pods: per pod only what the reconciler reads, fed by one
//! pod watch whose events also trigger the owning session's reconcile.
//!
//! A kube-runtime reflector keeps every `Pod` whole in an `Arc`: ≈ 2.1 KiB inline even with the
//! spec dropped (`Option<PodSpec>` and `Option<PodStatus>` live in the struct) plus ≈ 0.9 KiB of
//! strings and maps, ≈ 3 KiB a pod, the largest part of the operator's heap at thousands of
//! sessions (heap profile in docs/benchmarks.md). This cache keeps ≈ 0.25 KiB a pod.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;
use tracing::debug;
use wasp_crds::WhatsAppSession;

use crate::resources;
use crate::status::PodView;

/// What the reconciler reads of a session pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPod {
    pub view: PodView,
    /// Deletes are preconditioned on it (never delete a newer pod of the same name).
    pub uid: Option<String>,
    /// The spec-hash annotation the pod was created with.
    pub spec_hash: Option<String>,
}

impl CachedPod {
    pub fn of(pod: &Pod) -> Self {
        Self {
            view: PodView::of(pod),
            uid: pod.metadata.uid.clone(),
            spec_hash: resources::pod_spec_hash(pod).map(str::to_owned),
        }
    }
}

/// How a pod is kept: its name is the key of its namespace's map, each namespace is kept once,
/// the phase of a pod is one of five words, and its IP is parsed. About 100 bytes inline and
/// three short strings a pod, instead of a `CachedPod`'s 200 bytes and seven strings: the map's
/// table is sized for the inline part (docs/benchmarks.md, "Run 4").
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    phase: Cow<'static, str>,
    ready: bool,
    terminating: bool,
    pod_ip: Option<IpAddr>,
    uid: Option<Box<str>>,
    spec_hash: Option<Box<str>>,
}

/// Pod phases (`PodStatus.phase`) a cached pod names without a string of its own.
const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

impl Stored {
    fn of(pod: &Pod) -> Self {
        let CachedPod {
            view,
            uid,
            spec_hash,
        } = CachedPod::of(pod);
        Self {
            phase: match PHASES.iter().find(|p| **p == view.phase) {
                Some(p) => Cow::Borrowed(p),
                None => Cow::Owned(view.phase),
            },
            ready: view.ready,
            terminating: view.terminating,
            // A pod IP that does not parse is no address to reach the pod at.
            pod_ip: view.pod_ip.and_then(|ip| ip.parse().ok()),
            uid: uid.map(String::into_boxed_str),
            spec_hash: spec_hash.map(String::into_boxed_str),
        }
    }

    fn cached(&self, name: &str) -> CachedPod {
        CachedPod {
            view: PodView {
                name: name.to_owned(),
                phase: self.phase.clone().into_owned(),
                ready: self.ready,
                pod_ip: self.pod_ip.map(|ip| ip.to_string()),
                terminating: self.terminating,
            },
            uid: self.uid.as_deref().map(str::to_owned),
            spec_hash: self.spec_hash.as_deref().map(str::to_owned),
        }
    }
}

/// Namespace → pod name → pod.
type Pods = HashMap<Box<str>, HashMap<Box<str>, Stored>>;

fn insert(pods: &mut Pods, pod: &Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let names = match pods.get_mut(ns.as_str()) {
        Some(names) => names,
        None => pods.entry(ns.into_boxed_str()).or_default(),
    };
    names.insert(pod.name_any().into_boxed_str(), Stored::of(pod));
}

fn remove(pods: &mut Pods, pod: &Pod) {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(names) = pods.get_mut(ns.as_str()) {
        names.remove(pod.name_any().as_str());
        if names.is_empty() {
            pods.remove(ns.as_str());
        }
    }
}

/// The sessions a pod event concerns: the pod's controlling `WhatsAppSession` owner.
fn owners(pod: &Pod) -> Vec<ObjectRef<WhatsAppSession>> {
    let kind = WhatsAppSession::kind(&());
    let ns = pod.namespace();
    pod.owner_references()
        .iter()
        .filter(|o| o.kind == kind && o.controller == Some(true))
        .map(|o| {
            let r = ObjectRef::new(&o.name);
            match &ns {
                Some(ns) => r.within(ns),
                None => r,
            }
        })
        .collect()
}

/// A read handle of the cache, shared by every reconcile.
#[derive(Clone)]
pub struct PodCache {
    pods: Arc<RwLock<Pods>>,
    ready: watch::Receiver<bool>,
}

impl PodCache {
    /// The pod `name` in `namespace`, as last seen.
    pub fn get(&self, namespace: &str, name: &str) -> Option<CachedPod> {
        let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
        pods.get(namespace)?.get(name).map(|p| p.cached(name))
    }

    /// Returns once the cache holds the first complete list (or its writer is gone, at shutdown;
    /// lookups then just miss).
    pub async fn wait_until_ready(&self) {
        let _ = self.ready.clone().wait_for(|ready| *ready).await;
    }
}

/// Applies watch events to the cache (pure bookkeeping, no IO): a relist is buffered and swapped
/// in whole at its end, as kube-runtime's reflector does, so a pod deleted while the watch was
/// down does not linger.
pub struct PodCacheWriter {
    pods: Arc<RwLock<Pods>>,
    buffer: Pods,
    ready: watch::Sender<bool>,
}

impl PodCacheWriter {
    pub fn new() -> (Self, PodCache) {
        let pods = Arc::default();
        let (ready, ready_rx) = watch::channel(false);
        let cache = PodCache {
            pods: Arc::clone(&pods),
            ready: ready_rx,
        };
        let writer = Self {
            pods,
            buffer: HashMap::new(),
            ready,
        };
        (writer, cache)
    }

    /// Updates the cache and returns the sessions to reconcile because of this event.
    pub fn apply(&mut self, event: watcher::Event<Pod>) -> Vec<ObjectRef<WhatsAppSession>> {
        match event {
            watcher::Event::Init => {
                self.buffer = HashMap::new();
                Vec::new()
            }
            watcher::Event::InitApply(pod) => {
                insert(&mut self.buffer, &pod);
                owners(&pod)
            }
            watcher::Event::InitDone => {
                let listed = std::mem::take(&mut self.buffer);
                *self.pods.write().unwrap_or_else(|e| e.into_inner()) = listed;
                self.ready.send_replace(true);
                Vec::new()
            }
            watcher::Event::Apply(pod) => {
                insert(
                    &mut self.pods.write().unwrap_or_else(|e| e.into_inner()),
                    &pod,
                );
                owners(&pod)
            }
            watcher::Event::Delete(pod) => {
                remove(
                    &mut self.pods.write().unwrap_or_else(|e| e.into_inner()),
                    &pod,
                );
                owners(&pod)
            }
        }
    }
}

/// Watches `api`'s pods selected by `config` into a new cache; the stream (to be polled by the
/// controller, as a `reconcile_on` trigger) yields the sessions whose pods changed.
pub fn watch(
    api: Api<Pod>,
    config: watcher::Config,
) -> (
    PodCache,
    impl Stream<Item = ObjectRef<WhatsAppSession>> + Send,
) {
    let (mut writer, cache) = PodCacheWriter::new();
    let triggers = watcher(api, config)
        .default_backoff()
        .flat_map(move |event| {
            let sessions = match event {
                Ok(event) => writer.apply(event),
                Err(e) => {
                    debug!(error = %e, "pod watch failed; retrying");
                    Vec::new()
                }
            };
            futures::stream::iter(sessions)
        });
    (cache, triggers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;
    use std::collections::BTreeMap;
    use wasp_crds::labels;

    fn pod(name: &str, owner: &str, controller: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("clinic".into()),
                uid: Some(format!("uid-{name}")),
                annotations: Some(BTreeMap::from([
                    (labels::POD_SPEC_HASH.to_owned(), "h1".to_owned()),
                    ("other".to_owned(), "x".repeat(500)),
                ])),
                owner_references: Some(vec![OwnerReference {
                    api_version: "wasp.dev/v1alpha1".into(),
                    kind: "WhatsAppSession".into(),
                    name: owner.into(),
                    uid: "u".into(),
                    controller: Some(controller),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.0.0.7".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_cached_pod_keeps_what_the_reconciler_reads() {
        let cached = CachedPod::of(&pod("p", "s", true));
        assert_eq!(cached.uid.as_deref(), Some("uid-p"));
        assert_eq!(cached.spec_hash.as_deref(), Some("h1"));
        assert_eq!(
            cached.view,
            PodView {
                name: "p".into(),
                phase: "Running".into(),
                ready: true,
                pod_ip: Some("10.0.0.7".into()),
                terminating: false,
            }
        );
    }

    #[test]
    fn what_is_kept_reads_back_as_the_pod_was_seen() {
        let mut p = pod("p", "s", true);
        let seen = CachedPod::of(&p);
        let kept = Stored::of(&p);
        assert!(
            matches!(kept.phase, Cow::Borrowed(_)),
            "a known phase is no string of its own"
        );
        assert_eq!(kept.cached("p"), seen);
        // An unknown phase, a pod without IP, status or annotations: kept as seen.
        p.status.as_mut().unwrap().phase = Some("Evicting".into());
        p.status.as_mut().unwrap().pod_ip = None;
        p.metadata.annotations = None;
        assert_eq!(Stored::of(&p).cached("p"), CachedPod::of(&p));
        p.status = None;
        p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert_eq!(Stored::of(&p).cached("p"), CachedPod::of(&p));
        let v6 = {
            let mut p = pod("p", "s", true);
            p.status.as_mut().unwrap().pod_ip = Some("fd00::7".into());
            p
        };
        assert_eq!(Stored::of(&v6).cached("p"), CachedPod::of(&v6));
    }

    #[test]
    fn events_update_the_cache_and_name_the_controlling_session() {
        let (mut w, cache) = PodCacheWriter::new();
        assert!(w.apply(watcher::Event::Init).is_empty());
        let owners = w.apply(watcher::Event::InitApply(pod("a", "sa", true)));
        assert_eq!(owners, vec![ObjectRef::new("sa").within("clinic")]);
        // Not visible until the list is complete.
        assert!(cache.get("clinic", "a").is_none());
        assert!(!*cache.ready.borrow());
        w.apply(watcher::Event::InitDone);
        assert!(*cache.ready.borrow());
        assert!(cache.get("clinic", "a").is_some());

        // A pod owned but not controlled by a session triggers nothing.
        assert!(
            w.apply(watcher::Event::Apply(pod("b", "sb", false)))
                .is_empty()
        );
        assert_eq!(cache.pods.read().unwrap()["clinic"].len(), 2);
        let owners = w.apply(watcher::Event::Delete(pod("a", "sa", true)));
        assert_eq!(owners, vec![ObjectRef::new("sa").within("clinic")]);
        assert!(cache.get("clinic", "a").is_none());
        assert!(cache.get("other", "b").is_none());
    }

    #[test]
    fn a_relist_drops_pods_deleted_while_the_watch_was_down() {
        let (mut w, cache) = PodCacheWriter::new();
        w.apply(watcher::Event::Init);
        w.apply(watcher::Event::InitApply(pod("gone", "s1", true)));
        w.apply(watcher::Event::InitApply(pod("kept", "s2", true)));
        w.apply(watcher::Event::InitDone);
        w.apply(watcher::Event::Init);
        w.apply(watcher::Event::InitApply(pod("kept", "s2", true)));
        // Until the relist ends, the last complete view stands.
        assert!(cache.get("clinic", "gone").is_some());
        w.apply(watcher::Event::InitDone);
        assert!(cache.get("clinic", "gone").is_none());
        assert!(cache.get("clinic", "kept").is_some());
    }
}
