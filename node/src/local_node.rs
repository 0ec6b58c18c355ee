//! [`LocalNode`]: the node agent, standing in for the kubelet, the scheduler, kube-proxy and a
//! volume provisioner of one local node (DESIGN §3 "wasp-node"; docs/node.md), so that pods of
//! known images really run — as local processes — in a cluster without container runtime.
//!
//! It watches Pods (of some namespaces or all, optionally by label selector). A new pod whose
//! every container image it knows ([`Images`]: image repository suffix → local binary) is
//! **bound** to the node through `pods/<name>/binding` (as the scheduler does; once its claims
//! are Bound), gets its own loopback address `127.<block>.x.y`, and each container is started
//! as a process of that binary:
//!
//! - **env** is resolved like the kubelet does ([`crate::env::resolve_env`]) over the image's own
//!   env, then the node's conventions apply to env values and args ([`crate::env::rewrite_value`]):
//!   listen addresses on all interfaces become the pod's address, Service names the Service's
//!   address ([`crate::hosts`], [`crate::proxy`]), mount paths the volumes' directories
//!   ([`crate::volumes`]);
//! - **credentials**: a pod with a service account gets `KUBECONFIG` with that account's token
//!   ([`crate::accounts`]);
//! - **status** is written like a kubelet's ([`crate::kubelet::pod_status`]); `Ready` follows the
//!   readiness probe (HTTP GET, TCP or exec, polled every [`NodeOptions::probe_interval`]), a
//!   failing liveness probe (at its own `periodSeconds`) restarts the container, a startup
//!   probe holds both back until it passes;
//! - **exits** restart per `restartPolicy` with a kubelet-shaped back-off ([`Backoff`]);
//! - **deletion**: SIGTERM, up to the grace period, SIGKILL, the final status, then the pod is
//!   deleted with grace 0 — the kubelet's confirmation that removes it from the API;
//! - [`LocalNode::kill9`] kills a pod's process the hard way, for crash and restart tests.
//!
//! **Why bind.** The 1.20 apiserver deletes an *unbound* pod at once, whatever its grace period,
//! so without binding a deleted pod would vanish from the API while its process still runs: the
//! operator's finalizer would see "pod gone" and purge the user's Redis keys while the session
//! pod is still writing them, which is not what a cluster does. A bound pod stays Terminating
//! until its node confirms, so the operator sees the real order (pod stopped, then gone). Binding
//! needs a Node object (the pod-GC controller force-deletes pods bound to a missing Node after
//! about a minute), so the node registers one (`wasp-node-<random>`, Ready, heartbeat every 10 s)
//! and deletes it in [`LocalNode::shutdown`]. Pods whose images the node does not know are left
//! alone (unbound), so fake pods of other tests behave as they always did.
//!
//! Processes are tied to the node: dropping the `LocalNode` kills them (`kill_on_drop`), and each
//! has a watchdog ([`crate::procs::Watchdog`]) that stops it if the node's process dies.
//!
//! ```no_run
//! # async fn f(client: kube::Client, ns: &str) -> anyhow::Result<()> {
//! use wasp_node::{Image, Images, LocalNode};
//! let images = Images::new().with("session-pod", Image::new("/path/to/wasp-session-pod"));
//! let node = LocalNode::start(client, ns, images).await?;
//! // ... create a WhatsAppSession; the operator creates its pod; the node runs it:
//! let pid = node.process_of("wa-doc-abc");
//! node.kill9("wa-doc-abc").await?; // restarted (restartPolicy Always)
//! node.shutdown().await?;
//! # let _ = pid; Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo, Pod,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::accounts::ApiAccess;
use crate::images::Images;
use crate::policy::{self, Backoff};
use crate::procs::scratch_dir;
use crate::proxy::{self, PodEvent, ServiceTable};
use crate::start_queue::StartQueue;
use crate::watch::watch_all;
use crate::worker::{self, Msg};

/// Label on the Node objects local nodes register.
pub const NODE_LABEL: &str = "wasp.dev/wasp-node";

/// How often the node reports itself Ready (the node lifecycle controller marks a node that is
/// silent for 40 s NotReady and then evicts its pods).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Pods started at once by default. Unbounded, a node restart with 1,000 pods sent every pod's
/// status and Secret reads to the apiserver together, and the chart's operator, first in line,
/// waited 30 s for its Secret behind them (docs/benchmarks.md, "The fleet"). A kubelet is
/// bounded the same way by its client's QPS limit.
pub const DEFAULT_PARALLEL_STARTS: usize = 16;

/// How a [`LocalNode`] runs.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Node name; `wasp-node-<random>` when unset.
    pub name: Option<String>,
    /// Watch pods (and Services, claims) in these namespaces only; all namespaces when empty.
    pub namespaces: Vec<String>,
    /// Only pods matching this label selector.
    pub label_selector: Option<String>,
    /// Readiness probe period (the spec's `periodSeconds` is ignored for readiness; liveness
    /// probes keep theirs). 100 ms.
    pub probe_interval: Duration,
    /// Restart back-off.
    pub backoff: Backoff,
    /// Retry delay for a container that could not start (missing Secret, ...). 500 ms.
    pub config_retry: Duration,
    /// Where pod directories, logs and provisioned volumes go (`pods/`, `logs/`, `volumes/`);
    /// kept. When unset, a scratch directory that goes away with the node (tests).
    pub state_dir: Option<PathBuf>,
    /// The apiserver as pods should reach it (pods with a service account get a kubeconfig
    /// for it); without it such pods get no credentials.
    pub api: Option<ApiAccess>,
    /// Pod addresses come from `127.<pod_block>.0.0/16`; a random block in 100–249 when unset.
    pub pod_block: Option<u8>,
    /// Service addresses come from `127.<service_block>.0.0/16`; a random block in 20–99 when
    /// unset.
    pub service_block: Option<u8>,
    /// Make a PersistentVolume for every unbound claim of the watched namespaces.
    pub provision_volumes: bool,
    /// How many pods are being started at once (status, credentials, Secrets and ConfigMaps
    /// read, process spawned); the rest wait their turn in the order the node took them. 16.
    pub parallel_starts: usize,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            name: None,
            namespaces: Vec::new(),
            label_selector: None,
            probe_interval: Duration::from_millis(100),
            backoff: Backoff::default(),
            config_retry: Duration::from_millis(500),
            state_dir: None,
            api: None,
            pod_block: None,
            service_block: None,
            provision_volumes: true,
            parallel_starts: DEFAULT_PARALLEL_STARTS,
        }
    }
}

impl NodeOptions {
    /// Default options, watching one namespace.
    pub fn namespaced(namespace: &str) -> Self {
        Self {
            namespaces: vec![namespace.into()],
            ..Self::default()
        }
    }
}

/// One process the node ran for a container (each restart is a new run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRun {
    pub pod_uid: String,
    pub container: String,
    pub pid: u32,
    /// `None` while it runs.
    pub end: Option<ProcessEnd>,
}

/// How a process ended, and what the node did to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessEnd {
    /// The exit code, `None` if a signal ended it.
    pub exit_code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// The node sent SIGTERM (pod deletion or node stop).
    pub sigterm_sent: bool,
    /// The node sent SIGKILL (grace period over, [`LocalNode::kill9`], force deletion).
    pub sigkill_sent: bool,
}

impl ProcessEnd {
    /// Exited by itself with code 0 after the node's SIGTERM, without needing a SIGKILL.
    pub fn graceful(&self) -> bool {
        self.sigterm_sent && !self.sigkill_sent && self.exit_code == Some(0)
    }
}

/// The node's view of one pod (one incarnation: a pod recreated under the same name is a new
/// record).
pub(crate) struct PodRecord {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) dir: PathBuf,
    pub(crate) containers: Vec<ContainerRecord>,
    pub(crate) runs: Vec<ProcessRun>,
    pub(crate) tx: mpsc::UnboundedSender<Msg>,
    pub(crate) finished: bool,
}

pub(crate) struct ContainerRecord {
    pub(crate) name: String,
    pub(crate) log: PathBuf,
    /// Where this pod incarnation's output starts in `log` (the file is per pod name).
    pub(crate) log_offset: u64,
    pub(crate) pid: Option<u32>,
    pub(crate) restarts: u32,
}

#[derive(Default)]
pub(crate) struct NodeState {
    /// In the order the node took them.
    pub(crate) pods: Vec<PodRecord>,
}

/// What the node's tasks share.
pub(crate) struct NodeCtx {
    pub(crate) client: Client,
    pub(crate) name: String,
    pub(crate) images: Images,
    pub(crate) opts: NodeOptions,
    pub(crate) http: reqwest::Client,
    pub(crate) state_dir: PathBuf,
    /// The state directory is a scratch one, removed with the node.
    scratch: bool,
    pub(crate) services: Arc<ServiceTable>,
    pod_block: u8,
    pub(crate) state: Mutex<NodeState>,
    /// Turns to start a pod ([`NodeOptions::parallel_starts`]), in the order the node took
    /// them.
    pub(crate) starts: StartQueue,
}

impl NodeCtx {
    /// `<state>/logs/`: `<ns>_<pod>_<container>.log`.
    pub(crate) fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// `<state>/pods/`: one directory per pod incarnation (volumes, credentials).
    pub(crate) fn pods_dir(&self) -> PathBuf {
        self.state_dir.join("pods")
    }

    /// `<state>/volumes/`: provisioned PersistentVolumes.
    pub(crate) fn volumes_dir(&self) -> PathBuf {
        self.state_dir.join("volumes")
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Updates the open run of process `pid` of pod `uid`.
    pub(crate) fn mark_run(&self, uid: &str, pid: u32, f: impl FnOnce(&mut ProcessEnd)) {
        let mut state = self.lock();
        if let Some(run) = state
            .pods
            .iter_mut()
            .filter(|p| p.uid == uid)
            .flat_map(|p| p.runs.iter_mut())
            .rev()
            .find(|r| r.pid == pid)
        {
            f(run.end.get_or_insert_with(ProcessEnd::default));
        }
    }

    /// The next free pod address: unique in this process (one block of `127.<b>.0.0/16` per
    /// process unless set, picked at random so concurrent test binaries rarely meet) and with
    /// `ports` free.
    pub(crate) fn allocate_address(&self, ports: &[u16]) -> anyhow::Result<Ipv4Addr> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let block = self.pod_block;
        for _ in 0..1000 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let Some(ip) = policy::pod_address(block, n) else {
                bail!("the local node's address block 127.{block}.0.0/16 is used up");
            };
            if worker::ports_free(ip, ports) {
                return Ok(ip);
            }
            debug!(%ip, ?ports, "address busy, trying the next");
        }
        bail!("no local pod address with ports {ports:?} free")
    }
}

/// What the node's main task is told.
enum NodeMsg {
    Shutdown(oneshot::Sender<()>),
}

/// A local node running pods of known images as processes; see the module documentation.
/// Dropping it kills its processes (prefer [`LocalNode::shutdown`], which also stops them
/// gracefully and removes the Node object).
pub struct LocalNode {
    ctx: Arc<NodeCtx>,
    control: mpsc::UnboundedSender<NodeMsg>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNode")
            .field("name", &self.ctx.name)
            .field("namespaces", &self.ctx.opts.namespaces)
            .field("state_dir", &self.ctx.state_dir)
            .finish_non_exhaustive()
    }
}

impl LocalNode {
    /// Registers a node and runs the pods of `namespace` whose images are in `images`. Returns
    /// once the node watches (pods created from now on are seen).
    pub async fn start(client: Client, namespace: &str, images: Images) -> anyhow::Result<Self> {
        Self::start_with(client, images, NodeOptions::namespaced(namespace)).await
    }

    /// A node whose client and pods' credentials come from `config` (the apiserver URL and CA
    /// go into the kubeconfigs of pods with a service account); otherwise [`LocalNode::start_with`].
    pub async fn start_from_config(
        config: kube::Config,
        images: Images,
        mut opts: NodeOptions,
    ) -> anyhow::Result<Self> {
        opts.api
            .get_or_insert_with(|| ApiAccess::from_config(&config));
        let client = Client::try_from(config).context("building a kube client")?;
        Self::start_with(client, images, opts).await
    }

    /// [`LocalNode::start`] with every option.
    pub async fn start_with(
        client: Client,
        images: Images,
        opts: NodeOptions,
    ) -> anyhow::Result<Self> {
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| format!("wasp-node-{}", base36(random_u64(), 6)));
        let (state_dir, scratch) = match &opts.state_dir {
            Some(d) => (d.clone(), false),
            None => (scratch_dir(&format!("wasp-node-{name}"))?, true),
        };
        for sub in ["logs", "pods", "volumes"] {
            let d = state_dir.join(sub);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("building the probe client")?;
        register_node(&client, &name).await?;
        static POD_BLOCK: OnceLock<u8> = OnceLock::new();
        static SERVICE_BLOCK: OnceLock<u8> = OnceLock::new();
        let pod_block = opts
            .pod_block
            .unwrap_or_else(|| *POD_BLOCK.get_or_init(|| 100 + (random_u64() % 150) as u8));
        let service_block = opts
            .service_block
            .unwrap_or_else(|| *SERVICE_BLOCK.get_or_init(|| 20 + (random_u64() % 80) as u8));
        let services = Arc::new(ServiceTable::new(service_block, opts.namespaces.clone()));
        let starts = StartQueue::new(opts.parallel_starts);
        let ctx = Arc::new(NodeCtx {
            client,
            name,
            images,
            opts,
            http,
            state_dir,
            scratch,
            services,
            pod_block,
            state: Mutex::default(),
            starts,
        });
        let (control, control_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(run_node(ctx.clone(), control_rx, ready_tx));
        let node = Self {
            ctx,
            control,
            task: Some(task),
        };
        match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
            Ok(Ok(())) => Ok(node),
            _ => bail!("local node {}: the pod watch did not start", node.ctx.name),
        }
    }

    /// The Node object's name.
    pub fn name(&self) -> &str {
        &self.ctx.name
    }

    /// The state directory (`logs/`, `pods/`, `volumes/`). A scratch one (no
    /// [`NodeOptions::state_dir`]) is deleted on drop, unless `WASP_TEST_KEEP_STATE=1` or the
    /// thread is panicking.
    pub fn state_dir(&self) -> &Path {
        &self.ctx.state_dir
    }

    /// Where the pods' process output goes: `<namespace>_<pod>_<container>.log`, appended to
    /// by every run of every pod of that name.
    pub fn log_dir(&self) -> PathBuf {
        self.ctx.logs_dir()
    }

    /// The address standing in for Service `service` (`name` in the node's first namespace, or
    /// `namespace/name`), once the node has handed one out.
    pub fn service_ip(&self, service: &str) -> Option<Ipv4Addr> {
        let (ns, name) = match service.split_once('/') {
            Some((ns, name)) => (ns.to_owned(), name),
            None => (self.ctx.opts.namespaces.first()?.clone(), service),
        };
        self.ctx.services.lookup(&ns, name)
    }

    /// The pods this agent (since its start or last [`LocalNode::restart`]) began to start, by
    /// name, in the order their turns came.
    pub fn pods_taken(&self) -> Vec<String> {
        self.ctx
            .lock()
            .pods
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    /// Runs `f` on the newest record of `pod` (`name`, or `namespace/name`).
    fn with_pod<T>(&self, pod: &str, f: impl FnOnce(&PodRecord) -> T) -> Option<T> {
        let state = self.ctx.lock();
        state.pods.iter().rev().find(|p| matches_pod(p, pod)).map(f)
    }

    /// The address the node gave `pod` (`name`, or `namespace/name`; the newest pod of that name).
    pub fn pod_ip(&self, pod: &str) -> Option<Ipv4Addr> {
        self.with_pod(pod, |p| p.ip)
    }

    /// The PID of `pod`'s first container while its process runs.
    pub fn process_of(&self, pod: &str) -> Option<u32> {
        self.with_pod(pod, |p| p.containers.first().and_then(|c| c.pid))
            .flatten()
    }

    /// The PID of container `container` of `pod` while its process runs.
    pub fn process_of_container(&self, pod: &str, container: &str) -> Option<u32> {
        self.with_pod(pod, |p| {
            p.containers
                .iter()
                .find(|c| c.name == container)
                .and_then(|c| c.pid)
        })
        .flatten()
    }

    /// How often `pod`'s first container has been restarted (in this pod incarnation).
    pub fn restarts(&self, pod: &str) -> Option<u32> {
        self.with_pod(pod, |p| p.containers.first().map(|c| c.restarts))
            .flatten()
    }

    /// Every process run for pods of this name, oldest first, over all incarnations.
    pub fn runs(&self, pod: &str) -> Vec<ProcessRun> {
        let state = self.ctx.lock();
        state
            .pods
            .iter()
            .filter(|p| matches_pod(p, pod))
            .flat_map(|p| p.runs.iter().cloned())
            .collect()
    }

    /// `true` once the node has stopped every process of the newest pod of this name and let
    /// go of it (deleted, force-deleted, or node stopped).
    pub fn finished(&self, pod: &str) -> bool {
        self.with_pod(pod, |p| p.finished).unwrap_or(false)
    }

    /// The output of `pod`'s first container (every run of the newest incarnation).
    pub fn logs(&self, pod: &str) -> String {
        self.container_logs(pod, None)
    }

    /// The output of container `container` of `pod` (first container when `None`), every run
    /// of the newest incarnation.
    pub fn container_logs(&self, pod: &str, container: Option<&str>) -> String {
        let found = self
            .with_pod(pod, |p| {
                p.containers
                    .iter()
                    .find(|c| container.is_none_or(|n| c.name == n))
                    .map(|c| (c.log.clone(), c.log_offset))
            })
            .flatten();
        let Some((log, offset)) = found else {
            return String::new();
        };
        let bytes = std::fs::read(log).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// The last `lines` lines of [`LocalNode::logs`].
    pub fn log_tail(&self, pod: &str, lines: usize) -> String {
        let logs = self.logs(pod);
        let all: Vec<&str> = logs.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The pod's own directory (its volumes, service-account credentials); removed once the
    /// pod is deleted.
    pub fn pod_dir(&self, pod: &str) -> Option<PathBuf> {
        self.with_pod(pod, |p| p.dir.clone())
    }

    /// SIGKILLs the process of `pod`'s first container, as a crash would; the node then
    /// restarts it per the pod's `restartPolicy`. Returns the PID it killed.
    pub async fn kill9(&self, pod: &str) -> anyhow::Result<u32> {
        let tx = self
            .with_pod(pod, |p| (!p.finished).then(|| p.tx.clone()))
            .flatten()
            .with_context(|| format!("the local node runs no pod {pod}"))?;
        let (reply, answer) = oneshot::channel();
        tx.send(Msg::Kill9(reply))
            .map_err(|_| anyhow::anyhow!("pod {pod} is no longer run by the node"))?;
        answer
            .await
            .context("the pod's worker ended")?
            .map_err(|e| anyhow::anyhow!("kill -9 of pod {pod}: {e}"))
    }

    /// Stops every process (SIGTERM, up to 5 s, SIGKILL) and deletes the Node object (and a
    /// scratch state directory, unless `WASP_TEST_KEEP_STATE=1`). Pods stay in the API as they
    /// are.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_all().await;
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        match nodes.delete(&self.ctx.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).context("deleting the Node"),
        }
        Ok(())
    }

    /// Restarts the node agent in place, as a `wasp-node` stopped with SIGTERM and started
    /// again with the same name and state directory: every process stops as in
    /// [`LocalNode::shutdown`] (here the processes are the node's children, so unlike a
    /// kubelet over a container runtime a restart stops them), the Node object stays, and the
    /// new agent takes up the pods bound to it again, with the same volumes (claims keep their
    /// data) and the same Service addresses (the table is kept, so nothing else can take them
    /// in between). Pods get new addresses, as after a sandbox restart. Returns once the new
    /// agent watches.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop_all().await;
        let old = &self.ctx;
        let ctx = Arc::new(NodeCtx {
            client: old.client.clone(),
            name: old.name.clone(),
            images: old.images.clone(),
            opts: old.opts.clone(),
            http: old.http.clone(),
            state_dir: old.state_dir.clone(),
            scratch: old.scratch,
            services: old.services.clone(),
            pod_block: old.pod_block,
            state: Mutex::default(),
            starts: StartQueue::new(old.opts.parallel_starts),
        });
        register_node(&ctx.client, &ctx.name).await?;
        let (control, control_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        self.task = Some(tokio::spawn(run_node(ctx.clone(), control_rx, ready_tx)));
        self.ctx = ctx;
        self.control = control;
        match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
            Ok(Ok(())) => Ok(()),
            _ => bail!(
                "local node {}: the pod watch did not start again",
                self.ctx.name
            ),
        }
    }

    /// Stops every process (SIGTERM, up to 5 s, SIGKILL) and the node's tasks.
    async fn stop_all(&mut self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(NodeMsg::Shutdown(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // Aborting drops every pod worker, whose children are killed on drop.
            task.abort();
        }
        if !self.ctx.scratch {
            return;
        }
        let keep = std::env::var("WASP_TEST_KEEP_STATE").is_ok_and(|v| v == "1");
        if keep || std::thread::panicking() {
            eprintln!(
                "local node {}: state (logs/) kept in {}",
                self.ctx.name,
                self.ctx.state_dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.ctx.state_dir);
        }
    }
}

fn matches_pod(p: &PodRecord, pod: &str) -> bool {
    match pod.split_once('/') {
        Some((ns, name)) => p.namespace == ns && p.name == name,
        None => p.name == pod,
    }
}

/// Whether the node takes `pod`: every container's image known, no init containers, its node
/// selector (if any) matched by the node's labels.
fn runnable(pod: &Pod, images: &Images, node_labels: &BTreeMap<String, String>) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    !spec.containers.is_empty()
        && spec.init_containers.as_ref().is_none_or(Vec::is_empty)
        && spec.containers.iter().all(|c| {
            c.image
                .as_deref()
                .is_some_and(|i| images.lookup(i).is_some())
        })
        && spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| node_labels.get(k) == Some(v))
}

fn node_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".into(), name.into()),
        ("kubernetes.io/os".into(), "linux".into()),
        ("kubernetes.io/arch".into(), go_arch().into()),
        (NODE_LABEL.into(), "true".into()),
    ])
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Creates the Node (an existing one of that name is taken over) and reports it Ready.
async fn register_node(client: &Client, name: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(node_labels(name)),
            ..Default::default()
        },
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).with_context(|| format!("registering node {name}")),
    }
    heartbeat(&nodes, name, true).await
}

/// Writes the node's status: Ready with a fresh heartbeat (and, when `full`, its addresses,
/// capacity and version).
async fn heartbeat(nodes: &Api<Node>, name: &str, full: bool) -> anyhow::Result<()> {
    let now = Time(Timestamp::now());
    let ready = NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        message: Some("wasp-node is posting ready status".into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now),
    };
    let status = if full {
        let resources = BTreeMap::from([
            ("cpu".to_owned(), Quantity("8".into())),
            ("memory".to_owned(), Quantity("32Gi".into())),
            ("pods".to_owned(), Quantity("10000".into())),
        ]);
        serde_json::to_value(NodeStatus {
            conditions: Some(vec![ready]),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: kubelet_host_ip().into(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.into(),
                },
            ]),
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            node_info: Some(NodeSystemInfo {
                architecture: go_arch().into(),
                operating_system: "linux".into(),
                kubelet_version: "v1.20.2-wasp-node".into(),
                kube_proxy_version: "v1.20.2-wasp-node".into(),
                container_runtime_version: "wasp-node://local-processes".into(),
                ..Default::default()
            }),
            ..Default::default()
        })?
    } else {
        // Keep the transition time: only the heartbeat moves.
        let mut c = serde_json::to_value(&ready)?;
        if let Some(o) = c.as_object_mut() {
            o.remove("lastTransitionTime");
        }
        json!({ "conditions": [c] })
    };
    let patch = json!({ "status": status });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .with_context(|| format!("writing the status of node {name}"))?;
    Ok(())
}

fn kubelet_host_ip() -> &'static str {
    crate::kubelet::HOST_IP
}

/// The node's main loop: the pod watch, the workers, the heartbeat; beside it the Service
/// proxy (fed with the same pod events) and the volume provisioner.
async fn run_node(
    ctx: Arc<NodeCtx>,
    mut control: mpsc::UnboundedReceiver<NodeMsg>,
    ready: oneshot::Sender<()>,
) {
    let namespaces = ctx.opts.namespaces.clone();
    let mut config = watcher::Config::default();
    if let Some(sel) = &ctx.opts.label_selector {
        config = config.labels(sel);
    }
    let mut events = watch_all::<Pod>(&ctx.client, &namespaces, &config);
    let (proxy_tx, proxy_rx) = mpsc::unbounded_channel();
    let mut helpers = JoinSet::new();
    helpers.spawn(proxy::run(
        ctx.client.clone(),
        namespaces.clone(),
        ctx.services.clone(),
        proxy_rx,
    ));
    if ctx.opts.provision_volumes {
        helpers.spawn(crate::provisioner::run(
            ctx.client.clone(),
            namespaces.clone(),
            ctx.name.clone(),
            ctx.volumes_dir(),
        ));
    }
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let labels = node_labels(&ctx.name);
    let mut ready = Some(ready);
    let mut listed: HashSet<usize> = HashSet::new();
    let streams = namespaces.len().max(1);
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut seen: HashMap<usize, HashSet<String>> = HashMap::new();
    // Pods of a (re)list, held until the list is complete so they start in creation order.
    let mut initial: HashMap<usize, Vec<Pod>> = HashMap::new();
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some((i, Ok(watcher::Event::Init))) => {
                    seen.insert(i, HashSet::new());
                    initial.insert(i, Vec::new());
                }
                Some((i, Ok(watcher::Event::InitApply(pod)))) => {
                    if let (Some(seen), Some(uid)) = (seen.get_mut(&i), pod.uid()) {
                        seen.insert(uid);
                    }
                    let _ = proxy_tx.send(PodEvent::Apply(Box::new(pod.clone())));
                    initial.entry(i).or_default().push(pod);
                }
                Some((i, Ok(watcher::Event::InitDone))) => {
                    // The listed pods start oldest first, as the kubelet handles them
                    // (`HandlePodAdditions` sorts by creation time): after a node restart the
                    // chart's Redis and operator, created before the sessions, are not queued
                    // behind the session pods the listing orders first by name.
                    let mut listed_pods = initial.remove(&i).unwrap_or_default();
                    sort_by_creation(&mut listed_pods);
                    for pod in listed_pods {
                        on_pod(&ctx, &labels, pod, &mut workers, &mut tasks);
                    }
                    // Pods that went away while the watch was down.
                    let ns = namespaces.get(i).cloned();
                    if let Some(seen) = seen.remove(&i) {
                        for (uid, w) in &workers {
                            let in_scope = ns.as_ref().is_none_or(|n| *n == w.namespace);
                            if in_scope && !seen.contains(uid) {
                                let _ = w.tx.send(Msg::Gone);
                            }
                        }
                        let _ = proxy_tx.send(PodEvent::Relisted(ns, seen));
                    }
                    listed.insert(i);
                    if listed.len() >= streams
                        && let Some(r) = ready.take()
                    {
                        let _ = r.send(());
                    }
                }
                Some((_, Ok(watcher::Event::Apply(pod)))) => {
                    let _ = proxy_tx.send(PodEvent::Apply(Box::new(pod.clone())));
                    on_pod(&ctx, &labels, pod, &mut workers, &mut tasks);
                }
                Some((_, Ok(watcher::Event::Delete(pod)))) => {
                    if let Some(uid) = pod.uid() {
                        let _ = proxy_tx.send(PodEvent::Delete(uid.clone()));
                        if let Some(w) = workers.get(&uid) {
                            let _ = w.tx.send(Msg::Gone);
                        }
                    }
                }
                Some((_, Err(e))) => warn!(node = %ctx.name, error = %e, "pod watch failed; retrying"),
                None => return,
            },
            Some(done) = tasks.join_next() => {
                if let Ok(uid) = done {
                    workers.remove(&uid);
                }
            }
            _ = beat.tick() => {
                if let Err(e) = heartbeat(&nodes, &ctx.name, false).await {
                    warn!(node = %ctx.name, error = %format!("{e:#}"), "node heartbeat failed");
                }
            }
            msg = control.recv() => match msg {
                Some(NodeMsg::Shutdown(reply)) => {
                    helpers.abort_all();
                    for w in workers.values() {
                        let _ = w.tx.send(Msg::NodeStop);
                    }
                    while tasks.join_next().await.is_some() {}
                    let _ = reply.send(());
                    return;
                }
                None => return,
            },
        }
    }
}

/// Oldest first by `metadata.creationTimestamp` (then namespace and name, so that pods created
/// in the same second keep a stable order), as the kubelet's `PodsByCreationTime`.
fn sort_by_creation(pods: &mut [Pod]) {
    pods.sort_by(|a, b| {
        let key = |p: &Pod| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.metadata.namespace.clone(),
                p.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
}

/// A running pod worker, as the main loop knows it.
struct Worker {
    namespace: String,
    tx: mpsc::UnboundedSender<Msg>,
    terminating: bool,
}

/// A pod appeared or changed.
fn on_pod(
    ctx: &Arc<NodeCtx>,
    labels: &BTreeMap<String, String>,
    pod: Pod,
    workers: &mut HashMap<String, Worker>,
    tasks: &mut JoinSet<String>,
) {
    let Some(uid) = pod.uid() else { return };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    if let Some(w) = workers.get_mut(&uid) {
        if deleting && !w.terminating {
            w.terminating = true;
            let grace = policy::grace_period(&pod);
            let _ = w.tx.send(Msg::Terminate { grace });
        }
        return;
    }
    if deleting {
        return;
    }
    let bind = match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        None | Some("") if runnable(&pod, &ctx.images, labels) => true,
        Some(n) if n == ctx.name => false,
        _ => return,
    };
    // A terminal pod of ours (its processes ended for good) is not started again.
    if matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return;
    }
    debug!(node = %ctx.name, pod = %pod.name_any(), bind, "taking pod");
    let (tx, rx) = mpsc::unbounded_channel();
    workers.insert(
        uid.clone(),
        Worker {
            namespace: pod.namespace().unwrap_or_default(),
            tx: tx.clone(),
            terminating: false,
        },
    );
    // Queued now, in the order the node takes pods; a pod that waits for its claims queues
    // once they are bound.
    let turn = (!bind || crate::volumes::claims(&pod).is_empty()).then(|| ctx.starts.enqueue());
    let ctx = ctx.clone();
    tasks.spawn(async move {
        worker::run_pod(ctx, pod, bind, turn, tx, rx).await;
        uid
    });
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

fn base36(mut v: u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            let c = char::from_digit((v % 36) as u32, 36).unwrap_or('x');
            v /= 36;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::Image;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("a pod")
    }

    #[test]
    fn the_node_takes_pods_of_known_images_only() {
        let images = Images::new().with("session-pod", Image::new("/bin/true"));
        let labels = node_labels("wasp-node-x");
        let known = pod(
            json!({ "metadata": { "name": "a" }, "spec": { "containers": [{ "name": "c", "image": "wasp/session-pod:1" }] } }),
        );
        assert!(runnable(&known, &images, &labels));
        let unknown = pod(
            json!({ "metadata": { "name": "a" }, "spec": { "containers": [{ "name": "c", "image": "wasp.invalid/none:0" }] } }),
        );
        assert!(!runnable(&unknown, &images, &labels));
        let mixed = pod(
            json!({ "metadata": { "name": "a" }, "spec": { "containers": [
            { "name": "c", "image": "wasp/session-pod:1" }, { "name": "d", "image": "busybox" }] } }),
        );
        assert!(!runnable(&mixed, &images, &labels));
        let init = pod(json!({ "metadata": { "name": "a" }, "spec": {
            "initContainers": [{ "name": "i", "image": "wasp/session-pod:1" }],
            "containers": [{ "name": "c", "image": "wasp/session-pod:1" }] } }));
        assert!(!runnable(&init, &images, &labels));
        let selected = |sel: serde_json::Value| {
            pod(json!({ "metadata": { "name": "a" }, "spec": {
            "nodeSelector": sel, "containers": [{ "name": "c", "image": "wasp/session-pod:1" }] } }))
        };
        assert!(runnable(
            &selected(json!({ "kubernetes.io/os": "linux" })),
            &images,
            &labels
        ));
        assert!(!runnable(
            &selected(json!({ "pool": "gpu" })),
            &images,
            &labels
        ));
    }

    #[test]
    fn listed_pods_start_oldest_first_whatever_their_names() {
        let at = |name: &str, t: &str| {
            pod(
                json!({ "metadata": { "name": name, "namespace": "wasp", "creationTimestamp": t } }),
            )
        };
        let mut pods = vec![
            at("wa-doc-b", "2026-12-07T10:00:05Z"),
            at("wa-doc-a", "2026-12-07T10:00:05Z"),
            at("wasp-redis-0", "2026-12-07T09:59:00Z"),
            at("wasp-operator-7d9f", "2026-12-07T09:59:30Z"),
        ];
        sort_by_creation(&mut pods);
        let names: Vec<_> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            names,
            ["wasp-redis-0", "wasp-operator-7d9f", "wa-doc-a", "wa-doc-b"]
        );
    }

    #[test]
    fn names_are_dns_labels() {
        let n = base36(random_u64(), 6);
        assert_eq!(n.len(), 6);
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn graceful_means_sigterm_and_exit_0_without_sigkill() {
        let mut end = ProcessEnd {
            exit_code: Some(0),
            sigterm_sent: true,
            ..Default::default()
        };
        assert!(end.graceful());
        end.sigkill_sent = true;
        assert!(!end.graceful());
        let crashed = ProcessEnd {
            signal: Some(9),
            ..Default::default()
        };
        assert!(!crashed.graceful());
    }
}
