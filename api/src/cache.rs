//! Watched caches of Kubernetes objects (sessions, control Secrets): one reflector per kind,
//! driven by a task until shutdown, so handlers read objects without an API call.

use futures::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// Starts watching `api` into a cache; `what` names the kind in watch-error logs.
pub fn spawn<K>(
    api: Api<K>,
    config: watcher::Config,
    stop: CancellationToken,
    what: &'static str,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    spawn_trimmed(api, config, stop, what, |_| {})
}

/// As [`spawn`], keeping of each object only what `trim` leaves.
pub fn spawn_trimmed<K>(
    api: Api<K>,
    config: watcher::Config,
    stop: CancellationToken,
    what: &'static str,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                item = stream.next() => match item {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::warn!(error = %e, "{what} watch error"),
                    None => break,
                },
            }
        }
    });
    store
}
