//! The node as kube-proxy: every Service of the watched namespaces gets a loopback address of its
//! own (`127.<service block>.x.y`, the stand-in for its ClusterIP), and each of its TCP ports a
//! userspace forwarder to one of the Service's ready endpoints (round robin, the next one if a
//! connect fails). Processes reach it by name through the host-name convention
//! ([`crate::hosts`]).
//!
//! **Why the node computes endpoints itself.** The apiserver refuses loopback addresses in
//! Endpoints (`may not be in the loopback range`), and every pod here has one, so the endpoints
//! controller cannot record them. The node derives them from the pods it watches exactly as that
//! controller does: the Service's selector, pods not being deleted, with a pod IP and condition
//! Ready (every pod when `publishNotReadyAddresses`), the port's `targetPort` (a number, or a
//! container port's name). A changed endpoint set applies to new connections; open ones stay
//! until either side closes them (as with kube-proxy).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::hosts::{HostForm, ServiceName};
use crate::policy;
use crate::watch::watch_all;

/// A Service: namespace and name.
pub type ServiceKey = (String, String);

/// The Service addresses of a node: handed out on first use (by the host-name convention, which
/// may run before the Service exists, or by the proxy), kept for the node's life.
#[derive(Debug)]
pub struct ServiceTable {
    block: u8,
    namespaces: Vec<String>,
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    addresses: HashMap<ServiceKey, Ipv4Addr>,
    existing: HashSet<ServiceKey>,
    /// ExternalName Services: their names are left alone (nothing would listen).
    external: HashSet<ServiceKey>,
}

impl ServiceTable {
    /// Addresses from `127.<block>.0.0/16`, for Services of `namespaces` (all when empty).
    pub fn new(block: u8, namespaces: Vec<String>) -> Self {
        Self {
            block,
            namespaces,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watches(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }

    /// The address of Service `name` in `namespace`, handed out now if it has none yet; `None`
    /// for a namespace the node does not watch (nothing would ever listen there).
    pub fn address(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        if !self.watches(namespace) {
            return None;
        }
        let mut t = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(ip) = t.addresses.get(&key) {
            return Some(*ip);
        }
        // Shared by every node of this process, so two nodes never hand out one address; an
        // address adopted from a Service's annotation is skipped.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let ip = loop {
            let ip = policy::pod_address(self.block, NEXT.fetch_add(1, Ordering::Relaxed))?;
            if take(ip) {
                break ip;
            }
        };
        t.addresses.insert(key, ip);
        Some(ip)
    }

    /// Takes over the address a Service's annotation shows (a restarted node keeps its Services'
    /// addresses, as a cluster keeps ClusterIPs), when the Service has none yet here, the address
    /// is in this node's block and no other Service of this process has it. Returns whether the
    /// Service now has that address.
    pub fn adopt(&self, namespace: &str, name: &str, ip: Ipv4Addr) -> bool {
        if !self.watches(namespace) || ip.octets()[..2] != [127, self.block] {
            return false;
        }
        let mut t = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(have) = t.addresses.get(&key) {
            return *have == ip;
        }
        if !take(ip) {
            return false;
        }
        t.addresses.insert(key, ip);
        true
    }

    /// The address already handed out to a Service, if any.
    pub fn lookup(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        self.lock()
            .addresses
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }

    /// The host-name convention's resolver: qualified names always (in watched namespaces),
    /// `<svc>.<ns>` only for a Service the proxy has seen.
    pub fn resolve(&self, n: ServiceName<'_>) -> Option<Ipv4Addr> {
        let key = (n.namespace.to_owned(), n.service.to_owned());
        {
            let t = self.lock();
            if t.external.contains(&key)
                || (n.form == HostForm::Short && !t.existing.contains(&key))
            {
                return None;
            }
        }
        self.address(n.namespace, n.service)
    }

    fn set_existing(&self, keys: HashSet<ServiceKey>, external: HashSet<ServiceKey>) {
        let mut t = self.lock();
        t.existing = keys;
        t.external = external;
    }
}

/// The Service addresses of every table of this process.
static TAKEN: Mutex<Option<HashSet<Ipv4Addr>>> = Mutex::new(None);

/// Marks `ip` as a Service address of this process; false if it already was one.
fn take(ip: Ipv4Addr) -> bool {
    TAKEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(ip)
}

/// A stopped node's addresses are free again (for a node restarted in the same process).
impl Drop for ServiceTable {
    fn drop(&mut self) {
        let t = self.lock();
        if let Some(taken) = TAKEN.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            for ip in t.addresses.values() {
                taken.remove(ip);
            }
        }
    }
}

/// The Service's ready endpoints for `port`, from `pods` (any namespace; only the Service's own
/// count). Empty for a Service without a selector (its Endpoints are someone else's).
pub fn ready_endpoints<'a>(
    service: &Service,
    port: &ServicePort,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Vec<SocketAddrV4> {
    let ns = service.namespace().unwrap_or_default();
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let selector: BTreeMap<String, String> = spec.selector.clone().unwrap_or_default();
    if selector.is_empty() {
        return Vec::new();
    }
    let not_ready_too = spec.publish_not_ready_addresses == Some(true);
    let mut out: Vec<SocketAddrV4> = pods
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let labels = p.labels();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .filter(|p| not_ready_too || pod_ready(p))
        .filter_map(|p| {
            let ip: Ipv4Addr = p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
            Some(SocketAddrV4::new(ip, target_port(port, p)?))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A port's `targetPort` on `pod`: its number, a container port's name, or the Service port.
fn target_port(port: &ServicePort, pod: &Pod) -> Option<u16> {
    match &port.target_port {
        None => u16::try_from(port.port).ok(),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok().filter(|n| *n != 0),
        Some(IntOrString::String(name)) => pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Whether the node forwards for this Service (ExternalName and headless ones have no ClusterIP
/// to stand in for, but a headless one still gets an address, so its name reaches a pod).
fn proxied(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .is_some_and(|s| s.type_.as_deref() != Some("ExternalName"))
}

/// What the proxy learns from the node's pod watch.
#[derive(Debug)]
pub(crate) enum PodEvent {
    Apply(Box<Pod>),
    Delete(String),
    /// The watch of namespace index `.0` re-listed: only these pods of it exist.
    Relisted(Option<String>, HashSet<String>),
}

struct Forwarder {
    endpoints: watch::Sender<Vec<SocketAddrV4>>,
    task: JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the proxy until `pods` closes.
pub(crate) async fn run(
    client: Client,
    namespaces: Vec<String>,
    table: std::sync::Arc<ServiceTable>,
    mut pods: mpsc::UnboundedReceiver<PodEvent>,
) {
    let mut events = watch_all::<Service>(&client, &namespaces, &watcher::Config::default());
    let mut services: HashMap<ServiceKey, Service> = HashMap::new();
    let mut pod_store: HashMap<String, Pod> = HashMap::new();
    let mut forwarders: HashMap<(String, String, u16), Forwarder> = HashMap::new();
    let mut seen: HashMap<usize, HashSet<ServiceKey>> = HashMap::new();
    let mut failed: HashSet<(String, String, u16)> = HashSet::new();
    let mut annotated: HashSet<(String, String, Ipv4Addr)> = HashSet::new();
    // Binds that failed (an address taken by someone else) are retried.
    let mut retry = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some((i, Ok(watcher::Event::Init))) => { seen.insert(i, HashSet::new()); }
                Some((i, Ok(watcher::Event::InitApply(s)))) => {
                    let key = (s.namespace().unwrap_or_default(), s.name_any());
                    adopt_shown(&table, &key, &s);
                    seen.entry(i).or_default().insert(key.clone());
                    services.insert(key, s);
                }
                Some((i, Ok(watcher::Event::InitDone))) => {
                    if let Some(keep) = seen.remove(&i) {
                        let ns = namespaces.get(i).cloned();
                        services.retain(|k, _| ns.as_ref().is_some_and(|n| *n != k.0) || keep.contains(k));
                    }
                }
                Some((_, Ok(watcher::Event::Apply(s)))) => {
                    let key = (s.namespace().unwrap_or_default(), s.name_any());
                    adopt_shown(&table, &key, &s);
                    services.insert(key, s);
                }
                Some((_, Ok(watcher::Event::Delete(s)))) => {
                    services.remove(&(s.namespace().unwrap_or_default(), s.name_any()));
                }
                Some((_, Err(e))) => warn!(error = %e, "service watch failed; retrying"),
                None => return,
            },
            msg = pods.recv() => match msg {
                Some(PodEvent::Apply(p)) => {
                    if let Some(uid) = p.uid() { pod_store.insert(uid, *p); }
                }
                Some(PodEvent::Delete(uid)) => { pod_store.remove(&uid); }
                Some(PodEvent::Relisted(ns, uids)) => {
                    pod_store.retain(|uid, p| {
                        uids.contains(uid) || ns.as_ref().is_some_and(|n| p.namespace().as_deref() != Some(n.as_str()))
                    });
                }
                None => return,
            },
            _ = retry.tick(), if !failed.is_empty() => {}
        }
        failed = sync(&table, &services, &pod_store, &mut forwarders).await;
        for ((ns, name), svc) in &services {
            let Some(ip) = table.lookup(ns, name).filter(|_| proxied(svc)) else {
                continue;
            };
            let shown = svc
                .annotations()
                .get(ADDRESS_ANNOTATION)
                .map(String::as_str);
            if shown != Some(ip.to_string().as_str())
                && annotated.insert((ns.clone(), name.clone(), ip))
            {
                tokio::spawn(annotate(client.clone(), ns.clone(), name.clone(), ip));
            }
        }
    }
}

/// Keeps the address a Service's annotation shows (set by this node before a restart).
fn adopt_shown(table: &ServiceTable, (ns, name): &ServiceKey, svc: &Service) {
    let shown = svc
        .annotations()
        .get(ADDRESS_ANNOTATION)
        .and_then(|a| a.parse::<Ipv4Addr>().ok());
    if let Some(ip) = shown
        && table.lookup(ns, name).is_none()
        && table.adopt(ns, name, ip)
    {
        debug!(service = %format!("{ns}/{name}"), %ip, "kept the Service's address");
    }
}

/// Annotation on each proxied Service: the address standing in for its ClusterIP here (so
/// `kubectl get svc -o yaml` and scripts can find it).
pub const ADDRESS_ANNOTATION: &str = "wasp.dev/node-address";

async fn annotate(client: Client, ns: String, name: String, ip: Ipv4Addr) {
    let api: Api<Service> = Api::namespaced(client, &ns);
    let patch = serde_json::json!({ "metadata": { "annotations": { ADDRESS_ANNOTATION: ip.to_string() } } });
    if let Err(e) = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        debug!(service = %format!("{ns}/{name}"), error = %e, "cannot annotate the Service with its address");
    }
}

/// Brings the forwarders in line with the Services and pods; returns the binds that failed.
async fn sync(
    table: &ServiceTable,
    services: &HashMap<ServiceKey, Service>,
    pods: &HashMap<String, Pod>,
    forwarders: &mut HashMap<(String, String, u16), Forwarder>,
) -> HashSet<(String, String, u16)> {
    table.set_existing(
        services.keys().cloned().collect(),
        services
            .iter()
            .filter(|(_, s)| !proxied(s))
            .map(|(k, _)| k.clone())
            .collect(),
    );
    let mut desired: HashMap<(String, String, u16), (Ipv4Addr, Vec<SocketAddrV4>)> = HashMap::new();
    for ((ns, name), svc) in services {
        if !proxied(svc) {
            continue;
        }
        let Some(ip) = table.address(ns, name) else {
            continue;
        };
        for port in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let eps = ready_endpoints(svc, port, pods.values());
            desired.insert((ns.clone(), name.clone(), number), (ip, eps));
        }
    }
    forwarders.retain(|k, _| desired.contains_key(k));
    let mut failed = HashSet::new();
    for (key, (ip, eps)) in desired {
        if let Some(f) = forwarders.get(&key) {
            f.endpoints.send_if_modified(|old| {
                let changed = *old != eps;
                if changed {
                    debug!(service = %format!("{}/{}", key.0, key.1), port = key.2, endpoints = ?eps, "endpoints changed");
                    *old = eps.clone();
                }
                changed
            });
            continue;
        }
        match TcpListener::bind(SocketAddrV4::new(ip, key.2)).await {
            Ok(listener) => {
                info!(service = %format!("{}/{}", key.0, key.1), address = %format!("{ip}:{}", key.2), endpoints = ?eps, "service proxy listening");
                let (tx, rx) = watch::channel(eps);
                let task = tokio::spawn(forward(listener, rx));
                forwarders.insert(
                    key,
                    Forwarder {
                        endpoints: tx,
                        task,
                    },
                );
            }
            Err(e) => {
                warn!(service = %format!("{}/{}", key.0, key.1), address = %format!("{ip}:{}", key.2), error = %e, "service proxy cannot listen; retrying");
                failed.insert(key);
            }
        }
    }
    failed
}

/// Accepts connections and splices each to an endpoint.
async fn forward(listener: TcpListener, endpoints: watch::Receiver<Vec<SocketAddrV4>>) {
    let mut next = 0usize;
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let eps = endpoints.borrow().clone();
        if eps.is_empty() {
            // No ready endpoint: refuse, as kube-proxy does.
            drop(inbound);
            continue;
        }
        let start = next;
        next = next.wrapping_add(1);
        tokio::spawn(async move {
            for k in 0..eps.len() {
                let target = SocketAddr::V4(eps[(start + k) % eps.len()]);
                let connect = TcpStream::connect(target);
                if let Ok(Ok(mut out)) = tokio::time::timeout(Duration::from_secs(3), connect).await
                {
                    let _ = out.set_nodelay(true);
                    let _ = inbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("a service")
    }

    fn pod(name: &str, ip: &str, ready: bool, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "clinic", "uid": name, "labels": labels },
            "spec": { "containers": [{ "name": "c", "ports": [{ "name": "redis", "containerPort": 6380 }] }] },
            "status": { "podIP": ip, "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] }
        }))
        .expect("a pod")
    }

    #[test]
    fn endpoints_are_ready_selected_pods_on_the_target_port() {
        let svc = service(json!({
            "metadata": { "name": "wasp-redis", "namespace": "clinic" },
            "spec": { "selector": { "app": "redis" }, "ports": [
                { "port": 6379 },
                { "port": 7000, "targetPort": "redis" },
                { "port": 7001, "targetPort": 9999 },
            ] }
        }));
        let pods = [
            pod("a", "127.1.0.2", true, json!({ "app": "redis", "x": "y" })),
            pod("b", "127.1.0.3", false, json!({ "app": "redis" })),
            pod("c", "127.1.0.4", true, json!({ "app": "api" })),
        ];
        let mut other_ns = pod("d", "127.1.0.5", true, json!({ "app": "redis" }));
        other_ns.metadata.namespace = Some("elsewhere".into());
        let mut deleting = pod("e", "127.1.0.6", true, json!({ "app": "redis" }));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let all: Vec<&Pod> = pods.iter().chain([&other_ns, &deleting]).collect();
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        let ep = |i: usize| ready_endpoints(&svc, &ports[i], all.iter().copied());
        let a = Ipv4Addr::new(127, 1, 0, 2);
        assert_eq!(ep(0), vec![SocketAddrV4::new(a, 6379)]);
        assert_eq!(ep(1), vec![SocketAddrV4::new(a, 6380)], "named target port");
        assert_eq!(ep(2), vec![SocketAddrV4::new(a, 9999)]);

        let mut everyone = svc.clone();
        if let Some(s) = everyone.spec.as_mut() {
            s.publish_not_ready_addresses = Some(true);
        }
        assert_eq!(
            ready_endpoints(&everyone, &ports[0], all.iter().copied()).len(),
            2
        );

        let no_selector = service(
            json!({ "metadata": { "name": "x", "namespace": "clinic" }, "spec": { "ports": [{ "port": 1 }] } }),
        );
        assert!(ready_endpoints(&no_selector, &ports[0], all.iter().copied()).is_empty());
    }

    #[test]
    fn a_restarted_node_keeps_the_addresses_its_services_show() {
        let t = ServiceTable::new(47, vec!["keep".into()]);
        let shown = Ipv4Addr::new(127, 47, 9, 9);
        assert!(t.adopt("keep", "wasp-api", shown));
        assert_eq!(t.address("keep", "wasp-api"), Some(shown));
        assert!(t.adopt("keep", "wasp-api", shown), "idempotent");
        assert!(!t.adopt("keep", "wasp-api", Ipv4Addr::new(127, 47, 9, 10)));
        // Another Service cannot take it, nor an address outside the block or namespace.
        assert!(!t.adopt("keep", "other", shown));
        assert!(!t.adopt("keep", "other", Ipv4Addr::new(127, 48, 0, 1)));
        assert!(!t.adopt("elsewhere", "x", Ipv4Addr::new(127, 47, 9, 11)));
        // Fresh addresses skip adopted ones (also another table's: the counter is per process).
        let other = ServiceTable::new(47, vec!["keep".into()]);
        let adopted: HashSet<Ipv4Addr> = (0..300)
            .filter_map(|n| policy::pod_address(47, n))
            .filter(|ip| other.adopt("keep", &format!("old-{ip}"), *ip))
            .collect();
        assert!(adopted.len() > 250, "{}", adopted.len());
        for i in 0..5 {
            let ip = t.address("keep", &format!("svc-{i}")).unwrap();
            assert!(ip != shown && !adopted.contains(&ip), "{ip}");
        }
    }

    #[test]
    fn addresses_are_stable_per_service_and_short_names_need_the_service() {
        let t = ServiceTable::new(31, vec!["clinic".into()]);
        let a = t.address("clinic", "wasp-redis").expect("an address");
        assert_eq!(t.address("clinic", "wasp-redis"), Some(a));
        assert_ne!(t.address("clinic", "wasp-api"), Some(a));
        assert_eq!(t.address("elsewhere", "wasp-redis"), None);
        assert_eq!(a.octets()[..2], [127, 31]);
        let short = ServiceName {
            service: "wasp-redis",
            namespace: "clinic",
            form: HostForm::Short,
        };
        assert_eq!(t.resolve(short), None);
        let key = |n: &str| ("clinic".to_owned(), n.to_owned());
        t.set_existing(
            HashSet::from([key("wasp-redis"), key("mail")]),
            HashSet::from([key("mail")]),
        );
        assert_eq!(t.resolve(short), Some(a));
        let qualified = ServiceName {
            form: HostForm::Qualified,
            service: "later",
            ..short
        };
        assert!(
            t.resolve(qualified).is_some(),
            "qualified names resolve before the Service exists"
        );
        let external = ServiceName {
            service: "mail",
            ..qualified
        };
        assert_eq!(
            t.resolve(external),
            None,
            "ExternalName Services are not proxied"
        );
    }
}
