//! One pod on the local node: wait for its claims, bind it, give it an address, prepare its
//! volumes and credentials, run its containers as processes, restart them, probe them, report
//! status, stop them on deletion. All the IO of a pod; the decisions come from `policy`, `env`,
//! `images`, `volumes`, `accounts` and `kubelet::pod_status`.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Container, ObjectReference, PersistentVolumeClaim, Pod, PodStatus, Secret,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{debug, info, warn};

use crate::env::{self, EnvSources, Rewrites};
use crate::images::{self, Image};
use crate::kubelet::{self, ContainerView, Exit, HOST_IP, PodView, RunState};
use crate::local_node::{ContainerRecord, NodeCtx, PodRecord, ProcessEnd, ProcessRun};
use crate::policy::{self, ProbePlan, ProbeTarget, Readiness};
use crate::procs::Watchdog;
use crate::start_queue::StartPermit;
use crate::{accounts, volumes};

/// What a pod's worker is told.
#[derive(Debug)]
pub(crate) enum Msg {
    /// The pod has a deletion timestamp: stop its containers within `grace`, then delete it.
    Terminate { grace: Duration },
    /// The pod is gone from the API (force-deleted): kill its processes now.
    Gone,
    /// The node is shutting down: stop the processes, leave the pod as it is.
    NodeStop,
    /// SIGKILL the first container's process (a test simulating a crash); answers its PID.
    Kill9(oneshot::Sender<Result<u32, String>>),
    /// A probe's verdict changed.
    Probe {
        container: usize,
        generation: u64,
        kind: ProbeKind,
        ok: bool,
    },
}

/// Which probe a verdict is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

/// How long a node stop waits for SIGTERM before SIGKILL.
const NODE_STOP_GRACE: Duration = Duration::from_secs(5);
/// How soon a failed status write is retried.
const STATUS_RETRY: Duration = Duration::from_millis(200);
/// How often a pod waiting for its claims looks again.
const CLAIM_POLL: Duration = Duration::from_millis(250);

/// One container of the pod.
struct Slot {
    spec: Container,
    image: Image,
    view: ContainerView,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
    pid: Option<u32>,
    started: Option<(Instant, Timestamp)>,
    /// Exits in a row without a run of `backoff.reset_after`.
    crashes: u32,
    /// When to (re)start it.
    start_at: Option<Instant>,
    probes: Vec<JoinHandle<()>>,
    /// The liveness and readiness probes a startup probe holds back until it passes.
    after_startup: Vec<(ProbePlan, ProbeKind, ExecContext)>,
    /// Distinguishes this run's probe verdicts from an earlier run's.
    generation: u64,
    log: PathBuf,
}

impl Slot {
    fn stop_probe(&mut self) {
        for p in self.probes.drain(..) {
            p.abort();
        }
        self.after_startup.clear();
        self.generation += 1;
        self.view.ready = false;
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stop_probe();
        // The child itself is killed by `kill_on_drop`; its watchdog then fires too (a no-op on
        // a process that is already dying).
    }
}

pub(crate) struct Worker {
    ctx: Arc<NodeCtx>,
    pods: Api<Pod>,
    pod: Pod,
    namespace: String,
    name: String,
    uid: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    slots: Vec<Slot>,
    start_time: Timestamp,
    last_status: Option<PodStatus>,
    status_retry: Option<Instant>,
    terminating: bool,
    /// The pod's kubeconfig, once made (`Some(None)`: the pod gets no credentials).
    kubeconfig: Option<Option<PathBuf>>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
}

/// Runs pod `pod` until it is deleted (or the node stops); binds it first if `bind`, once every
/// claim it names is Bound (as a scheduler waits for them).
///
/// `turn`: its place in the node's start queue, if taken already; the pod is started (and
/// bound) when its turn comes, and gives the turn back once its containers' first start is done.
pub(crate) async fn run_pod(
    ctx: Arc<NodeCtx>,
    pod: Pod,
    bind: bool,
    turn: Option<oneshot::Receiver<StartPermit>>,
    tx: mpsc::UnboundedSender<Msg>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) {
    let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    if bind && !claims_bound(&ctx, &pod, &mut rx).await {
        return;
    }
    let turn = turn.unwrap_or_else(|| ctx.starts.enqueue());
    let Some(permit) = wait_for_turn(turn, &mut rx).await else {
        return;
    };
    match Worker::new(ctx, pod, bind, tx, rx).await {
        Ok(Some(mut w)) => {
            w.run(permit).await;
            w.finish();
        }
        Ok(None) => {}
        Err(e) => warn!(pod = %key, error = %format!("{e:#}"), "local node could not take the pod"),
    }
}

/// Answers a message that comes before the pod runs; `false` when the pod went away or the
/// node stops.
fn answer_before_start(msg: Option<Msg>) -> bool {
    match msg {
        None | Some(Msg::Gone | Msg::Terminate { .. } | Msg::NodeStop) => false,
        Some(Msg::Kill9(reply)) => {
            let _ = reply.send(Err("the pod is not running yet".into()));
            true
        }
        Some(Msg::Probe { .. }) => true,
    }
}

/// Waits for the pod's turn to start; `None` if the pod went away (or the node stopped)
/// meanwhile.
async fn wait_for_turn(
    mut turn: oneshot::Receiver<StartPermit>,
    rx: &mut mpsc::UnboundedReceiver<Msg>,
) -> Option<StartPermit> {
    loop {
        tokio::select! {
            permit = &mut turn => return permit.ok(),
            msg = rx.recv() => if !answer_before_start(msg) { return None },
        }
    }
}

/// Waits until every claim of `pod` is Bound; `false` if the pod went away meanwhile.
async fn claims_bound(ctx: &NodeCtx, pod: &Pod, rx: &mut mpsc::UnboundedReceiver<Msg>) -> bool {
    let claims = volumes::claims(pod);
    if claims.is_empty() {
        return true;
    }
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let mut logged = false;
    loop {
        let mut all = true;
        for c in &claims {
            let bound = matches!(api.get_opt(c).await, Ok(Some(pvc))
                if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"));
            all &= bound;
        }
        if all {
            return true;
        }
        if !logged {
            debug!(pod = %format!("{ns}/{}", pod.name_any()), ?claims, "waiting for the pod's claims to be bound");
            logged = true;
        }
        tokio::select! {
            msg = rx.recv() => if !answer_before_start(msg) { return false },
            () = sleep(CLAIM_POLL) => {}
        }
    }
}

impl Worker {
    /// Binds (if asked), allocates the address and the pod's directory, registers the pod.
    /// `None` when the pod went to someone else or away meanwhile.
    async fn new(
        ctx: Arc<NodeCtx>,
        pod: Pod,
        bind: bool,
        tx: mpsc::UnboundedSender<Msg>,
        rx: mpsc::UnboundedReceiver<Msg>,
    ) -> anyhow::Result<Option<Self>> {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        if bind && !bind_pod(&pods, &name, &uid, &ctx.name).await? {
            return Ok(None);
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let ports: Vec<u16> = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect();
        let ip = ctx.allocate_address(&ports)?;
        let short_uid: String = uid.chars().take(8).collect();
        let dir = ctx
            .pods_dir()
            .join(format!("{namespace}_{name}_{short_uid}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut slots = Vec::new();
        for c in &spec.containers {
            let image_ref = c.image.clone().unwrap_or_default();
            let image = ctx
                .images
                .lookup(&image_ref)
                .cloned()
                .with_context(|| format!("no local binary for image {image_ref}"))?;
            slots.push(Slot {
                view: ContainerView::creating(&c.name, &image_ref),
                spec: c.clone(),
                image,
                child: None,
                watchdog: None,
                pid: None,
                started: None,
                crashes: 0,
                start_at: Some(Instant::now()),
                probes: Vec::new(),
                after_startup: Vec::new(),
                generation: 0,
                log: ctx
                    .logs_dir()
                    .join(format!("{namespace}_{name}_{}.log", c.name)),
            });
        }
        ctx.lock().pods.push(PodRecord {
            namespace: namespace.clone(),
            name: name.clone(),
            uid: uid.clone(),
            ip,
            dir: dir.clone(),
            containers: slots
                .iter()
                .map(|s| ContainerRecord {
                    name: s.spec.name.clone(),
                    log: s.log.clone(),
                    log_offset: std::fs::metadata(&s.log).map(|m| m.len()).unwrap_or(0),
                    pid: None,
                    restarts: 0,
                })
                .collect(),
            runs: Vec::new(),
            tx: tx.clone(),
            finished: false,
        });
        info!(pod = %format!("{namespace}/{name}"), %ip, node = %ctx.name, "local node runs the pod");
        Ok(Some(Self {
            ctx,
            pods,
            pod,
            namespace,
            name,
            uid,
            ip,
            dir,
            slots,
            start_time: Timestamp::now(),
            last_status: None,
            status_retry: None,
            terminating: false,
            kubeconfig: None,
            tx,
            rx,
        }))
    }

    fn restart_policy(&self) -> String {
        kubelet::restart_policy(&self.pod).to_owned()
    }

    /// `start_permit`: the node's permit to start this pod, given back once the containers'
    /// first start is done (or failed and is retried later).
    async fn run(&mut self, start_permit: StartPermit) {
        let mut permit = Some(start_permit);
        // A start (a restart after an exit, a retry) queues for its turn like a first start:
        // after a storm of exits a thousand restarts would otherwise read their Secrets and
        // spawn at the same moment.
        let mut turn: Option<oneshot::Receiver<StartPermit>> = None;
        self.sync_status().await;
        loop {
            if permit.is_some() {
                self.start_due().await;
                permit = None;
            }
            if self.sync_status().await == Synced::Gone {
                self.kill_all().await;
                self.remove_dir();
                return;
            }
            let next_start = self.slots.iter().filter_map(|s| s.start_at).min();
            let retry = self.status_retry;
            tokio::select! {
                (i, status) = wait_any(&mut self.slots) => self.on_exit(i, status),
                msg = self.rx.recv() => match msg {
                    None | Some(Msg::Gone) => {
                        self.kill_all().await;
                        self.remove_dir();
                        return;
                    }
                    Some(Msg::NodeStop) => {
                        // Unlike a crashed kubelet, report the stopped containers (not ready), so
                        // that nothing keeps routing to the pod.
                        self.stop_all(NODE_STOP_GRACE).await;
                        self.sync_status().await;
                        return;
                    }
                    Some(Msg::Terminate { grace }) => {
                        self.terminate(grace).await;
                        return;
                    }
                    Some(Msg::Kill9(reply)) => {
                        let _ = reply.send(self.kill9());
                    }
                    Some(Msg::Probe { container, generation, kind, ok }) => {
                        self.on_probe(container, generation, kind, ok);
                    }
                },
                () = sleep_until(next_start.unwrap_or_else(far_future)), if next_start.is_some() && turn.is_none() => {
                    turn = Some(self.ctx.starts.enqueue());
                }
                got = async { turn.as_mut().expect("guarded").await }, if turn.is_some() => {
                    turn = None;
                    permit = got.ok();
                }
                () = sleep_until(retry.unwrap_or_else(far_future)), if retry.is_some() => {
                    self.status_retry = None;
                }
            }
        }
    }

    /// Starts every container whose time has come.
    async fn start_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if self.slots[i].start_at.is_some_and(|t| t <= now) && !self.slots[i].alive() {
                self.slots[i].start_at = None;
                if let Err((reason, message)) = self.start(i).await {
                    let slot = &mut self.slots[i];
                    warn!(pod = %self.name, container = %slot.spec.name, %reason, %message, "container not started");
                    slot.view.state = RunState::Waiting {
                        reason: reason.into(),
                        message: Some(message),
                    };
                    slot.start_at = Some(Instant::now() + self.ctx.opts.config_retry);
                }
            }
        }
    }

    /// Prepares the pod's volumes and credentials, resolves the container's environment (reading
    /// its Secrets and ConfigMaps now, as a kubelet does at each start), applies the node's
    /// conventions and starts its process.
    async fn start(&mut self, i: usize) -> Result<(), (&'static str, String)> {
        let config_error = |e: String| ("CreateContainerConfigError", e);
        let spec = self.slots[i].spec.clone();
        let image = self.slots[i].image.clone();
        let prepare = volumes::Prepare {
            client: &self.ctx.client,
            namespace: &self.namespace,
            pod_dir: &self.dir,
        };
        let dirs = volumes::prepare(&prepare, &self.pod)
            .await
            .map_err(config_error)?;
        let mounts = volumes::mounts(&spec, &dirs);
        let kubeconfig = self.kubeconfig().await.map_err(config_error)?;
        let refs = env::referenced(&spec);
        let mut secrets = BTreeMap::new();
        let secrets_api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for name in refs.secrets {
            match secrets_api.get_opt(&name).await {
                Ok(Some(s)) => {
                    secrets.insert(name, s);
                }
                Ok(None) => {}
                Err(e) => return Err(config_error(format!("reading secret {name}: {e}"))),
            }
        }
        let mut config_maps = BTreeMap::new();
        let cms_api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for name in refs.config_maps {
            match cms_api.get_opt(&name).await {
                Ok(Some(c)) => {
                    config_maps.insert(name, c);
                }
                Ok(None) => {}
                Err(e) => return Err(config_error(format!("reading configmap {name}: {e}"))),
            }
        }
        let sources = EnvSources {
            secrets: &secrets,
            config_maps: &config_maps,
            pod_ip: self.ip,
            host_ip: HOST_IP,
            node_name: &self.ctx.name,
        };
        let resolved = env::resolve_env(&self.pod, &spec, &sources, image.image_env())
            .map_err(|e| config_error(e.to_string()))?;
        let services = self.ctx.services.clone();
        let resolve = move |n: crate::hosts::ServiceName<'_>| services.resolve(n);
        let rewrites = Rewrites {
            pod_ip: self.ip,
            services: &resolve,
            mounts: &mounts,
        };
        let mut vars = self.base_env(&mounts, kubeconfig.as_deref());
        for (k, v) in resolved {
            vars.retain(|(name, _)| *name != k);
            vars.push((k, env::rewrite_value(&v, &rewrites)));
        }
        let lookup = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let (program, args) = images::command_line(&image, &spec, |s| {
            env::rewrite_value(&env::expand(s, lookup), &rewrites)
        })
        .map_err(|e| ("RunContainerError", e))?;
        let workdir = spec
            .working_dir
            .as_deref()
            .and_then(|w| volumes::rewrite_path(w, &mounts))
            .map_or_else(|| self.dir.clone(), PathBuf::from);

        let run_error = |e: String| ("RunContainerError", e);
        let vars = Arc::new(vars);
        let slot = &mut self.slots[i];
        let out = File::options()
            .create(true)
            .append(true)
            .open(&slot.log)
            .map_err(|e| run_error(format!("opening {}: {e}", slot.log.display())))?;
        let err = out.try_clone().map_err(|e| run_error(e.to_string()))?;
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .env_clear()
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| run_error(format!("starting {}: {e}", program.display())))?;
        let pid = child.id().unwrap_or_default();
        let watchdog = match Watchdog::spawn(&format!("wasp-node-{}", self.name), pid, None) {
            Ok(w) => w,
            Err(e) => {
                let _ = child.start_kill();
                return Err(run_error(format!("{e:#}")));
            }
        };
        let now = (Instant::now(), Timestamp::now());
        if slot.started.is_some() || slot.view.last_exit.is_some() {
            slot.view.restart_count += 1;
        }
        slot.child = Some(child);
        slot.watchdog = Some(watchdog);
        slot.pid = Some(pid);
        slot.started = Some(now);
        slot.view.state = RunState::Running {
            started_at: now.1,
            container_id: format!("wasp-node://{}/{pid}", self.ctx.name),
        };
        slot.generation += 1;
        let exec = ExecContext {
            env: vars,
            dir: workdir,
        };
        // Exec probes' commands follow the conventions too (a Service name, a mount path).
        let conventions = |plan: ProbePlan| match plan.target {
            ProbeTarget::Exec(cmd) => ProbePlan {
                target: ProbeTarget::Exec(
                    cmd.iter()
                        .map(|a| env::rewrite_value(a, &rewrites))
                        .collect(),
                ),
                ..plan
            },
            _ => plan,
        };
        let mut probes = Vec::new();
        if let Some(plan) = policy::liveness_probe(&spec, self.ip).map(conventions) {
            probes.push((plan, ProbeKind::Liveness, exec.clone()));
        }
        let readiness = policy::readiness_probe(&spec, self.ip).map(conventions);
        slot.view.ready = readiness.is_none();
        if let Some(plan) = readiness {
            probes.push((plan, ProbeKind::Readiness, exec.clone()));
        }
        // As a kubelet: liveness and readiness wait for the startup probe to pass.
        let startup = policy::startup_probe(&spec, self.ip).map(conventions);
        slot.view.startup_passed = startup.is_none();
        match startup {
            Some(plan) => {
                slot.after_startup = probes;
                slot.probes.push(spawn_probe(
                    self.ctx.clone(),
                    plan,
                    ProbeKind::Startup,
                    exec,
                    i,
                    slot.generation,
                    self.tx.clone(),
                ));
            }
            None => {
                let spawned = spawn_probes(&self.ctx, &self.tx, probes, i, slot.generation);
                slot.probes.extend(spawned);
            }
        }
        let restarts = u32::try_from(slot.view.restart_count).unwrap_or(0);
        {
            let mut state = self.ctx.lock();
            if let Some(rec) = state.pods.iter_mut().find(|p| p.uid == self.uid) {
                if let Some(c) = rec.containers.get_mut(i) {
                    c.pid = Some(pid);
                    c.restarts = restarts;
                }
                rec.runs.push(ProcessRun {
                    pod_uid: self.uid.clone(),
                    container: spec.name.clone(),
                    pid,
                    end: None,
                });
            }
        }
        info!(pod = %format!("{}/{}", self.namespace, self.name), container = %spec.name, pid, restarts, "container started");
        Ok(())
    }

    /// The pod's kubeconfig (made once; a failure is retried at the next start).
    async fn kubeconfig(&mut self) -> Result<Option<PathBuf>, String> {
        if let Some(k) = &self.kubeconfig {
            return Ok(k.clone());
        }
        let made = match &self.ctx.opts.api {
            Some(api) => accounts::credentials(&self.ctx.client, api, &self.pod, &self.dir).await?,
            None => {
                if accounts::token_source(&self.pod).is_some() {
                    debug!(pod = %self.name, "no API access configured: the pod gets no credentials");
                }
                None
            }
        };
        self.kubeconfig = Some(made.clone());
        Ok(made)
    }

    /// What every process gets before the image's and the pod's variables: the host's `PATH`,
    /// `HOSTNAME` = the pod's name, `HOME` = the pod's directory, `TMPDIR` = the directory of
    /// a volume mounted at `/tmp`, `WASP_NODE_VOLUME_<NAME>` per mounted volume, and
    /// `KUBECONFIG` when the pod has credentials.
    fn base_env(
        &self,
        mounts: &[volumes::Mount],
        kubeconfig: Option<&std::path::Path>,
    ) -> Vec<(String, String)> {
        let mut vars = vec![
            (
                "PATH".to_owned(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            ),
            ("HOSTNAME".to_owned(), self.name.clone()),
            ("HOME".to_owned(), self.dir.to_string_lossy().into_owned()),
        ];
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        if let Some(tmp) = mounts.iter().find(|m| m.mount_path == "/tmp") {
            vars.push(("TMPDIR".to_owned(), path(&tmp.host_path)));
        }
        for m in mounts {
            let name = volumes::volume_env_name(&m.volume);
            if !vars.iter().any(|(k, _)| *k == name) {
                vars.push((name, path(&m.host_path)));
            }
        }
        if let Some(k) = kubeconfig {
            vars.push(("KUBECONFIG".to_owned(), path(k)));
        }
        vars
    }

    /// A process ended: record it, then restart per policy (with back-off) or leave it
    /// terminated.
    fn on_exit(&mut self, i: usize, status: std::io::Result<ExitStatus>) {
        let policy = self.restart_policy();
        let backoff = self.ctx.opts.backoff;
        let terminating = self.terminating;
        let slot = &mut self.slots[i];
        slot.child = None;
        if let Some(w) = slot.watchdog.take() {
            w.disarm();
        }
        slot.stop_probe();
        let (code, signal) = match &status {
            Ok(s) => (s.code(), s.signal()),
            Err(_) => (None, None),
        };
        let (started_inst, started_at) = slot
            .started
            .map_or((None, None), |(i, t)| (Some(i), Some(t)));
        let exit = Exit {
            exit_code: code.unwrap_or(128 + signal.unwrap_or(0)),
            signal,
            started_at,
            finished_at: Timestamp::now(),
            container_id: slot
                .pid
                .map(|p| format!("wasp-node://{}/{p}", self.ctx.name)),
        };
        let pid = slot.pid.take();
        {
            let mut state = self.ctx.lock();
            if let Some(rec) = state.pods.iter_mut().find(|p| p.uid == self.uid) {
                if let Some(c) = rec.containers.get_mut(i) {
                    c.pid = None;
                }
                if let Some(run) = rec.runs.iter_mut().rev().find(|r| Some(r.pid) == pid) {
                    let end = run.end.get_or_insert_with(ProcessEnd::default);
                    end.exit_code = code;
                    end.signal = signal;
                }
            }
        }
        info!(pod = %format!("{}/{}", self.namespace, self.name), container = %slot.spec.name, ?pid, ?code, ?signal, "container exited");
        if terminating {
            slot.view.state = RunState::Terminated(exit);
            return;
        }
        if started_inst.is_some_and(|t| t.elapsed() >= backoff.reset_after) {
            slot.crashes = 0;
        }
        slot.crashes += 1;
        if policy::should_restart(&policy, exit.exit_code) {
            let delay = backoff.delay(slot.crashes);
            slot.view.last_exit = Some(exit.clone());
            slot.view.state = if delay.is_zero() {
                RunState::Terminated(exit)
            } else {
                RunState::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(format!(
                        "back-off {delay:?} restarting failed container={} pod={}",
                        slot.spec.name, self.name
                    )),
                }
            };
            slot.start_at = Some(Instant::now() + delay);
        } else {
            slot.view.state = RunState::Terminated(exit);
        }
    }

    fn on_probe(&mut self, container: usize, generation: u64, kind: ProbeKind, ok: bool) {
        let terminating = self.terminating;
        let Some(slot) = self.slots.get_mut(container) else {
            return;
        };
        if slot.generation != generation || !slot.alive() || terminating {
            return;
        }
        match kind {
            ProbeKind::Startup if ok => {
                debug!(pod = %self.name, container = %slot.spec.name, "startup probe passed");
                slot.view.startup_passed = true;
                let held = std::mem::take(&mut slot.after_startup);
                let spawned = spawn_probes(&self.ctx, &self.tx, held, container, generation);
                slot.probes.extend(spawned);
            }
            ProbeKind::Readiness => {
                debug!(pod = %self.name, container = %slot.spec.name, ready = ok, "readiness changed");
                slot.view.ready = ok;
            }
            ProbeKind::Startup | ProbeKind::Liveness if !ok => {
                // As the kubelet: kill the unhealthy container; restartPolicy decides the rest.
                info!(pod = %self.name, container = %slot.spec.name, probe = ?kind, "probe failed: restarting the container");
                if let (Some(pid), Some(child)) = (slot.pid, slot.child.as_mut()) {
                    let _ = child.start_kill();
                    self.ctx
                        .mark_run(&self.uid, pid, |end| end.sigkill_sent = true);
                }
                slot.stop_probe();
            }
            ProbeKind::Startup | ProbeKind::Liveness => {}
        }
    }

    /// SIGKILL of the first container's process, as a crash would end it.
    fn kill9(&mut self) -> Result<u32, String> {
        let slot = self.slots.first_mut().ok_or("the pod has no containers")?;
        let pid = slot.pid.ok_or("the container is not running")?;
        let child = slot.child.as_mut().ok_or("the container is not running")?;
        child.start_kill().map_err(|e| e.to_string())?;
        self.ctx
            .mark_run(&self.uid, pid, |end| end.sigkill_sent = true);
        Ok(pid)
    }

    /// Graceful deletion, as a kubelet does it: SIGTERM to every process, SIGKILL to those still
    /// running after `grace`, the final status, then the pod's deletion with grace 0 (which
    /// removes it from the API).
    async fn terminate(&mut self, grace: Duration) {
        info!(pod = %format!("{}/{}", self.namespace, self.name), ?grace, "pod deleted: stopping its containers");
        self.stop_all(grace).await;
        self.sync_status().await;
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.pods.delete(&self.name, &params).await {
            Ok(_) => debug!(pod = %self.name, "pod removed"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => warn!(pod = %self.name, error = %e, "could not remove the pod"),
        }
        self.remove_dir();
    }

    /// The pod is gone for good: its directory (emptyDirs, credentials) goes too.
    fn remove_dir(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(pod = %self.name, dir = %self.dir.display(), error = %e, "could not remove the pod's directory");
        }
    }

    /// SIGTERM, up to `grace`, SIGKILL; returns once every process has been reaped, with the
    /// pod marked finished (before a deletion is confirmed: whoever sees the pod gone also sees
    /// `LocalNode::finished`). A `Gone` meanwhile kills at once.
    async fn stop_all(&mut self, grace: Duration) {
        self.terminating = true;
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            slot.start_at = None;
            slot.stop_probe();
            if let (Some(pid), true) = (slot.pid, slot.alive()) {
                if let Err(e) = signal(pid, rustix::process::Signal::TERM) {
                    warn!(pod = %self.name, pid, error = %e, "SIGTERM failed");
                }
                self.ctx
                    .mark_run(&self.uid, pid, |end| end.sigterm_sent = true);
            }
        }
        self.sync_status().await;
        let deadline = Instant::now() + grace;
        let mut killed = false;
        while self.slots.iter().any(Slot::alive) {
            tokio::select! {
                (i, status) = wait_any(&mut self.slots) => self.on_exit(i, status),
                () = sleep_until(deadline), if !killed => {
                    killed = true;
                    self.kill_remaining();
                }
                msg = self.rx.recv() => match msg {
                    None | Some(Msg::Gone) if !killed => {
                        killed = true;
                        self.kill_remaining();
                    }
                    Some(Msg::Kill9(reply)) => {
                        let _ = reply.send(self.kill9());
                    }
                    _ => {}
                },
            }
        }
        self.finish();
    }

    fn kill_remaining(&mut self) {
        for slot in &mut self.slots {
            if let (Some(pid), Some(child)) = (slot.pid, slot.child.as_mut()) {
                let _ = child.start_kill();
                self.ctx
                    .mark_run(&self.uid, pid, |end| end.sigkill_sent = true);
            }
        }
    }

    async fn kill_all(&mut self) {
        self.terminating = true;
        self.kill_remaining();
        while self.slots.iter().any(Slot::alive) {
            let (i, status) = wait_any(&mut self.slots).await;
            self.on_exit(i, status);
        }
        self.finish();
    }

    /// Writes the pod's status if it changed since the last write.
    async fn sync_status(&mut self) -> Synced {
        if self.status_retry.is_some() {
            return Synced::Later;
        }
        let views: Vec<ContainerView> = self.slots.iter().map(|s| s.view.clone()).collect();
        let policy = self.restart_policy();
        let ip = self.ip.to_string();
        let view = PodView {
            restart_policy: &policy,
            pod_ip: Some(&ip),
            start_time: Some(self.start_time),
            containers: &views,
        };
        let status = kubelet::pod_status(&view, self.last_status.as_ref(), Timestamp::now());
        if self.last_status.as_ref() == Some(&status) {
            return Synced::Unchanged;
        }
        match kubelet::patch_status(&self.pods, &self.name, status.clone()).await {
            Ok(_) => {
                self.last_status = Some(status);
                Synced::Written
            }
            Err(e) => {
                let gone = e
                    .downcast_ref::<kube::Error>()
                    .is_some_and(|k| matches!(k, kube::Error::Api(s) if s.code == 404));
                if gone {
                    return Synced::Gone;
                }
                debug!(pod = %self.name, error = %format!("{e:#}"), "status write failed; retrying");
                self.status_retry = Some(Instant::now() + STATUS_RETRY);
                Synced::Later
            }
        }
    }

    /// Marks the pod finished (idempotent).
    fn finish(&mut self) {
        let mut state = self.ctx.lock();
        if let Some(rec) = state.pods.iter_mut().find(|p| p.uid == self.uid) {
            rec.finished = true;
            for c in &mut rec.containers {
                c.pid = None;
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Synced {
    Written,
    Unchanged,
    Later,
    Gone,
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

/// The next process of `slots` to exit (pending forever when none runs). Cancel-safe.
async fn wait_any(slots: &mut [Slot]) -> (usize, std::io::Result<ExitStatus>) {
    let mut waits: FuturesUnordered<_> = slots
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| s.child.as_mut().map(|c| async move { (i, c.wait().await) }))
        .collect();
    match waits.next().await {
        Some(r) => r,
        None => std::future::pending().await,
    }
}

/// Sends `sig` to process `pid` (the caller still holds the unreaped child, so the PID is ours).
fn signal(pid: u32, sig: rustix::process::Signal) -> std::io::Result<()> {
    let raw = i32::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    let pid = rustix::process::Pid::from_raw(raw).ok_or_else(|| std::io::Error::other("pid 0"))?;
    rustix::process::kill_process(pid, sig).map_err(std::io::Error::from)
}

/// Binds the pod to the node (`pods/<name>/binding`, as the scheduler does). `false` when the pod
/// is gone or already bound elsewhere.
async fn bind_pod(pods: &Api<Pod>, name: &str, uid: &str, node: &str) -> anyhow::Result<bool> {
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..Default::default()
        },
    };
    match pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => {
            debug!(pod = name, reason = %e.message, "not bound");
            Ok(false)
        }
        Err(e) => Err(e).with_context(|| format!("binding pod {name} to {node}")),
    }
}

/// What an exec probe runs with: the container's environment and working directory.
#[derive(Clone)]
struct ExecContext {
    env: Arc<Vec<(String, String)>>,
    dir: PathBuf,
}

/// [`spawn_probe`] for each of `probes`.
fn spawn_probes(
    ctx: &Arc<NodeCtx>,
    tx: &mpsc::UnboundedSender<Msg>,
    probes: Vec<(ProbePlan, ProbeKind, ExecContext)>,
    container: usize,
    generation: u64,
) -> Vec<JoinHandle<()>> {
    probes
        .into_iter()
        .map(|(plan, kind, exec)| {
            spawn_probe(
                ctx.clone(),
                plan,
                kind,
                exec,
                container,
                generation,
                tx.clone(),
            )
        })
        .collect()
}

/// Probes one container run until aborted; sends each change of the verdict.
fn spawn_probe(
    ctx: Arc<NodeCtx>,
    plan: ProbePlan,
    kind: ProbeKind,
    exec: ExecContext,
    container: usize,
    generation: u64,
    tx: mpsc::UnboundedSender<Msg>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        sleep(plan.initial_delay).await;
        let since = Instant::now();
        let mut verdict = match kind {
            ProbeKind::Startup | ProbeKind::Readiness => Readiness::default(),
            ProbeKind::Liveness => Readiness::alive(),
        };
        loop {
            let ok = probe_once(&ctx.http, &plan, &exec).await;
            // A startup probe reports once: passed, or given up on (it then stops).
            let report = match kind {
                ProbeKind::Startup => {
                    (ok || policy::startup_gave_up(since.elapsed(), &plan)).then_some(ok)
                }
                _ => verdict.record(&plan, ok).then_some(verdict.ready),
            };
            if let Some(ok) = report {
                let sent = tx.send(Msg::Probe {
                    container,
                    generation,
                    kind,
                    ok,
                });
                if sent.is_err() || kind == ProbeKind::Startup {
                    return;
                }
            }
            // Startup and readiness at the node's interval until they pass (tests should not
            // wait 5 s for Ready), readiness then at the spec's period; liveness at the spec's,
            // so nothing is killed sooner than a kubelet would.
            sleep(match kind {
                ProbeKind::Startup => ctx.opts.probe_interval.min(plan.period),
                ProbeKind::Readiness => {
                    verdict.next_readiness_probe(ok, ctx.opts.probe_interval, plan.period)
                }
                ProbeKind::Liveness => plan.period,
            })
            .await;
        }
    })
}

async fn probe_once(http: &reqwest::Client, plan: &ProbePlan, exec: &ExecContext) -> bool {
    match &plan.target {
        ProbeTarget::Http { host, port, path } => {
            let url = format!("http://{host}:{port}{path}");
            match http.get(&url).timeout(plan.timeout).send().await {
                Ok(r) => policy::probe_status_ok(r.status().as_u16()),
                Err(_) => false,
            }
        }
        ProbeTarget::Tcp { host, port } => {
            let addr = format!("{host}:{port}");
            matches!(
                tokio::time::timeout(plan.timeout, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            )
        }
        ProbeTarget::Exec(command) => {
            let mut cmd = Command::new(&command[0]);
            cmd.args(&command[1..])
                .env_clear()
                .envs(exec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .current_dir(&exec.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            match cmd.spawn() {
                Ok(mut child) => matches!(
                    tokio::time::timeout(plan.timeout, child.wait()).await,
                    Ok(Ok(status)) if status.success()
                ),
                Err(_) => false,
            }
        }
        ProbeTarget::Unsupported(_) => true,
    }
}

/// `true` if every port can be bound on `ip` right now (nothing else listens there).
pub(crate) fn ports_free(ip: Ipv4Addr, ports: &[u16]) -> bool {
    ports
        .iter()
        .all(|p| TcpListener::bind(SocketAddrV4::new(ip, *p)).is_ok())
}
