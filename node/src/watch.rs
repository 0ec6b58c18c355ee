//! One watch over several namespaces (or all of them).

use std::fmt::Debug;

use futures::stream::{BoxStream, StreamExt as _};
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// A watch event and the index of the namespace (in the node's list; 0 when it watches all)
/// whose watch produced it: `Init`/`InitDone` come per namespace.
pub(crate) type Tagged<K> = (usize, Result<watcher::Event<K>, watcher::Error>);

/// Watches `K` in each of `namespaces` (all namespaces when empty), merged.
pub(crate) fn watch_all<K>(
    client: &Client,
    namespaces: &[String],
    config: &watcher::Config,
) -> BoxStream<'static, Tagged<K>>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let apis: Vec<Api<K>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let streams = apis.into_iter().enumerate().map(|(i, api)| {
        watcher(api, config.clone())
            .default_backoff()
            .map(move |e| (i, e))
            .boxed()
    });
    futures::stream::select_all(streams).boxed()
}
