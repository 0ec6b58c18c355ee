//! Chaos on the installed chart (issue 10, item 6): `charts/wasp` installed with the real Helm SDK,
//! its pods (2 operators, 2 APIs, Redis with AOF on its claim) and the session pods run as
//! processes by the local node, the WhatsApp simulator in-process ([`ChartWorld`]). Each test
//! breaks one part while a simulated contact writes to the user continuously, and checks what a
//! CRM sees through the API Service: its WebSocket (resuming with `?since=<last id>` whenever the
//! socket drops) and `/messages/<chat>`.
//!
//! - kill -9 of the session pod's process: back to Connected without a scan, every message
//!   exactly once on the stream and in the store;
//! - kill -9 of Redis: every message the device had acknowledged to the simulator survives,
//!   and in the end every message is there exactly once (this found a loss in the session pod:
//!   a message arriving while Redis restarted under a live socket was never stored; see
//!   `RedisAuthStore::fault`);
//! - kill -9 of the API replica serving the WebSocket: the client resumes through the Service
//!   with no gap and no duplicate;
//! - a webhook receiver down at the start of a burst, then kill -9 of the API replica
//!   delivering the webhook, and of Redis while it delivers: delivery resumes at the durable
//!   cursor, nothing lost, order kept, signatures verify with the
//!   reference library;
//! - a restart storm: all 20 session pods' processes killed at once: every session back without
//!   a scan, every message once, the logins paced by the fleet's admission bucket;
//! - the node agent restarted with 20 connected sessions (every pod of the node, the chart's
//!   Redis, operators and APIs too, stopped and started again): the same;
//! - `helm upgrade` with a changed operator value: the operators roll, the session pod's process
//!   and the CR's Connected phase do not change, messages keep flowing.
//!
//! The tests run one at a time (each installs its own release): the machine has 2 cores, and
//! timing-sensitive faults on four releases at once would measure the machine, not wasp.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt as _};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wasp_crds::names::session_name;
use wasp_crds::{Phase, WhatsAppSession};
use wasp_e2e::chart_world::{ChartWorld, Paired};
use wasp_e2e::eventually;
use wasp_e2e::stream_clients::{ResumingWs, StreamLog, WsClient};
use wasp_sim::client::SimClient;

use common::{WAIT, phase, wait_status};

/// One chaos test at a time in this binary (see the module's doc).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The contact's pace: 10 messages a second, steady.
const SEND_EVERY: Duration = Duration::from_millis(100);
/// How long the CRM's client waits before it reconnects a dropped WebSocket.
const RESUME_AFTER: Duration = Duration::from_millis(300);
/// The API's admin port (`api.adminPort`): `/metrics` per replica.
const API_ADMIN_PORT: u16 = 9090;

fn user(kind: &str) -> String {
    format!("dr-chaos-{kind}-{:x}@clinic.example", std::process::id())
}

/// Installs a release, runs `scenario` on it, prints the named pods' last log lines if it
/// failed, and uninstalls.
async fn with_world<F>(prefix: &str, values: Value, pods: &[&str], scenario: F) -> Result<()>
where
    F: AsyncFnOnce(&mut ChartWorld) -> Result<()>,
{
    common::init_tracing();
    let _serial = SERIAL.lock().await;
    let t0 = Instant::now();
    let mut world = ChartWorld::install(prefix, &values).await?;
    eprintln!("{prefix}: installed in {:?}", t0.elapsed());
    let result = scenario(&mut world).await;
    if let Err(e) = &result {
        eprintln!("{prefix} failed: {e:#}");
        for pod in pods {
            eprintln!(
                "--- pod {pod} (last 60 lines) ---\n{}",
                world.node.log_tail(pod, 60)
            );
        }
    }
    let shut = world.shutdown().await;
    eprintln!("{prefix}: whole test in {:?}", t0.elapsed());
    result?;
    shut
}

/// A message the contact sent: its body (`n-0001`, …) and the simulator's message id.
#[derive(Debug, Clone)]
struct Sent {
    body: String,
    id: String,
}

/// A contact writing to `to` at a steady pace until stopped.
struct Load {
    stop: CancellationToken,
    sent: Arc<Mutex<Vec<Sent>>>,
    task: JoinHandle<Result<()>>,
}

impl Load {
    fn start(sim: SimClient, contact: String, to: String) -> Self {
        let stop = CancellationToken::new();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, sent) = (stop.clone(), sent.clone());
            async move {
                let mut tick = tokio::time::interval(SEND_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for n in 1.. {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tick.tick() => {}
                    }
                    let body = format!("n-{n:04}");
                    // The simulator queues for the device whatever its state: sends never wait
                    // for the session pod.
                    let id = sim
                        .contact_send(&contact, &to, &body)
                        .await
                        .with_context(|| format!("the contact sending {body}"))?;
                    lock(&sent).push(Sent { body, id });
                }
                Ok(())
            }
        });
        Self { stop, sent, task }
    }

    fn count(&self) -> usize {
        lock(&self.sent).len()
    }

    /// Stops sending; every message sent.
    async fn finish(self) -> Result<Vec<Sent>> {
        self.stop.cancel();
        self.task.await??;
        Ok(lock(&self.sent).clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the CRM's WebSocket saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// `message` events in arrival order: (body, message id).
    messages: Vec<(String, String)>,
    /// `qr` events (a restarted session must not show one).
    qrs: usize,
    /// Sockets opened after a drop, each with `?since=<last id>`.
    resumes: usize,
    /// Why sockets ended.
    drops: Vec<String>,
}

/// A seed-003 client's WebSocket that reconnects with `?since=<last event id>` whenever its
/// socket ends, as docs/api.md tells clients to ([`ResumingWs`]), with the waits these
/// scenarios need.
struct Collector {
    ws: ResumingWs,
}

impl From<&StreamLog> for Seen {
    fn from(log: &StreamLog) -> Self {
        Self {
            messages: log
                .messages
                .iter()
                .map(|m| (m.body.clone(), m.id.clone()))
                .collect(),
            qrs: log.qrs,
            resumes: log.resumes,
            drops: log.drops.clone(),
        }
    }
}

impl Collector {
    /// Reads `ws` (already past `ready`, whose event id is `last_id`); `url` is the socket's URL
    /// without `since`. A client backs off before it reconnects (the console: 1–15 s), so
    /// events are written while it has no socket: it must get them from `since`, not live.
    fn start(ws: WsClient, url: String, last_id: Option<String>) -> Self {
        Self {
            ws: ResumingWs::start(ws, url, last_id, RESUME_AFTER),
        }
    }

    fn seen(&self) -> Seen {
        self.ws.with_log(|log| Seen::from(log))
    }

    /// Waits until every body of `bodies` arrived (at least once).
    async fn wait_for(&self, bodies: &[String], what: &str) -> Result<()> {
        let found = eventually(WAIT, || async {
            let seen = self.seen();
            let got: BTreeSet<&str> = seen.messages.iter().map(|(b, _)| b.as_str()).collect();
            bodies
                .iter()
                .all(|b| got.contains(b.as_str()))
                .then_some(())
        })
        .await;
        if found.is_err() {
            let seen = self.seen();
            let got: BTreeSet<&str> = seen.messages.iter().map(|(b, _)| b.as_str()).collect();
            let missing: Vec<&String> = bodies
                .iter()
                .filter(|b| !got.contains(b.as_str()))
                .collect();
            bail!(
                "{what}: {} of {} messages never arrived on the WebSocket: {missing:?} (drops {:?}, resumes {})",
                missing.len(),
                bodies.len(),
                seen.drops,
                seen.resumes
            );
        }
        Ok(())
    }

    /// Waits until at least `n` messages arrived.
    async fn wait_count(&self, n: usize, what: &str) -> Result<()> {
        eventually(WAIT, || async {
            (self.seen().messages.len() >= n).then_some(())
        })
        .await
        .with_context(|| format!("{what}: fewer than {n} messages arrived"))?;
        Ok(())
    }

    /// Waits until a message sent after `after` (by count) arrived: the stream is live again.
    async fn wait_beyond(&self, load: &Load, what: &str) -> Result<()> {
        let mark = load.count();
        eventually(WAIT, || async {
            let seen = self.seen();
            seen.messages
                .iter()
                .any(|(b, _)| number(b).is_some_and(|n| n > mark))
                .then_some(())
        })
        .await
        .with_context(|| format!("{what}: no message sent after #{mark} arrived"))?;
        Ok(())
    }

    /// Stops reading; what was seen.
    fn stop(&self) -> Seen {
        Seen::from(&self.ws.stop())
    }
}

fn number(body: &str) -> Option<usize> {
    body.strip_prefix("n-")?.parse().ok()
}

/// `got` (body, message id) holds each of `expected` exactly once, with the simulator's
/// message id, and nothing else of the contact's.
fn exactly_once(expected: &[Sent], got: &[(String, String)], what: &str) -> Result<()> {
    let mut counts: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (body, id) in got {
        counts.entry(body).or_default().push(id);
    }
    let missing: Vec<&str> = expected
        .iter()
        .map(|s| s.body.as_str())
        .filter(|b| !counts.contains_key(b))
        .collect();
    let doubled: Vec<(&str, usize)> = counts
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(b, ids)| (*b, ids.len()))
        .collect();
    let wrong_id: Vec<&str> = expected
        .iter()
        .filter(|s| {
            counts
                .get(s.body.as_str())
                .is_some_and(|ids| ids.iter().any(|id| *id != s.id))
        })
        .map(|s| s.body.as_str())
        .collect();
    ensure!(
        missing.is_empty() && doubled.is_empty() && wrong_id.is_empty(),
        "{what}: of {} messages, missing {missing:?}, doubled {doubled:?}, with another id {wrong_id:?}",
        expected.len()
    );
    Ok(())
}

/// Every message of `chat` through `GET /messages/<chat>` (paged back with `before`), oldest
/// first, each answer checked against the OpenAPI document: (body, message id).
async fn stored_messages(
    world: &ChartWorld,
    user: &str,
    chat: &str,
) -> Result<Vec<(String, String)>> {
    let mut all: Vec<(String, String)> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut url = format!("{}/messages/{chat}?limit=500", world.api_base());
        if let Some(b) = &before {
            url.push_str(&format!("&before={b}"));
        }
        let page = common::api_call(reqwest::Method::GET, &url, &world.token(user), None).await?;
        let page = page.as_array().context("/messages answers a list")?;
        let mut batch: Vec<(String, String)> = page
            .iter()
            .map(|m| {
                (
                    m["body"].as_str().unwrap_or_default().to_owned(),
                    m["id"]["id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        batch.append(&mut all);
        all = batch;
        if page.len() < 500 {
            return Ok(all);
        }
        before = page[0]["id"]["_serialized"].as_str().map(str::to_owned);
    }
}

/// A paired user with a contact writing to them and the CRM's WebSocket collecting.
struct Scene {
    user: String,
    pod: String,
    phone: String,
    contact: String,
    chat: String,
    /// The simulator's device of the user's session.
    device: u16,
    collector: Collector,
}

impl Scene {
    async fn pair(world: &ChartWorld, kind: &str) -> Result<Self> {
        let user = user(kind);
        let Paired { phone, ws, ready } = world.pair(&user, "Dr Chaos").await?;
        let devices: Vec<_> = world
            .sim
            .devices()
            .await?
            .into_iter()
            .filter(|d| d.phone == phone)
            .collect();
        ensure!(devices.len() == 1, "one device after pairing: {devices:?}");
        let contact = world.sim.create_contact(None, Some("Ann")).await?.phone;
        let url = format!("ws://{}/?token={}", world.api_addr, world.token(&user));
        let collector = Collector::start(ws, url, ready["id"].as_str().map(str::to_owned));
        Ok(Self {
            pod: session_name(&user),
            chat: format!("{contact}@c.us"),
            device: devices[0].device,
            user,
            phone,
            contact,
            collector,
        })
    }

    fn load(&self, world: &ChartWorld) -> Load {
        Load::start(world.sim.clone(), self.contact.clone(), self.phone.clone())
    }

    /// The session's device at the simulator: (logins, connected).
    async fn device(&self, world: &ChartWorld) -> Result<(u32, bool)> {
        let d = world
            .sim
            .device(&self.phone, self.device)
            .await?
            .context("the session's device at the simulator")?;
        ensure!(!d.removed, "the device was unlinked: {d:?}");
        Ok((d.logins, d.connected))
    }

    /// The phone still has exactly the one device it paired: nothing paired again.
    async fn same_device(&self, world: &ChartWorld) -> Result<()> {
        let devices: Vec<_> = world
            .sim
            .devices()
            .await?
            .into_iter()
            .filter(|d| d.phone == self.phone)
            .collect();
        ensure!(
            devices.len() == 1 && devices[0].device == self.device && !devices[0].removed,
            "the phone's devices changed (a new pairing?): {devices:?}"
        );
        Ok(())
    }

    /// Waits until the device logged in again after `logins` and is connected.
    async fn relogged_in(&self, world: &ChartWorld, logins: u32) -> Result<()> {
        eventually(WAIT, || async {
            let (n, connected) = self.device(world).await.ok()?;
            (n > logins && connected).then_some(())
        })
        .await
        .context("the session never logged in to the simulator again")?;
        Ok(())
    }

    async fn connected(&self, world: &ChartWorld, what: &str) -> Result<WhatsAppSession> {
        let sessions: Api<WhatsAppSession> = Api::namespaced(world.client.clone(), &world.ns);
        wait_status(&sessions, &self.pod, what, |s| {
            phase(s) == Some(Phase::Connected)
        })
        .await
    }

    /// The ids of the contact's messages the session's device acknowledged (its receipts).
    async fn acknowledged(&self, world: &ChartWorld) -> Result<BTreeSet<String>> {
        Ok(world
            .sim
            .contact_receipts(&self.contact)
            .await?
            .into_iter()
            .filter(|r| r.from.split(':').next() == Some(self.phone.as_str()))
            .map(|r| r.id)
            .collect())
    }

    /// The simulator holds nothing unacknowledged for the device any more.
    async fn nothing_queued(&self, world: &ChartWorld) -> Result<()> {
        let found = eventually(WAIT, || async {
            let d = world.sim.device(&self.phone, self.device).await.ok()??;
            (d.queued == 0).then_some(())
        })
        .await;
        if found.is_err() {
            let d = world.sim.device(&self.phone, self.device).await?;
            bail!("the simulator still queues unacknowledged stanzas for the device: {d:?}");
        }
        Ok(())
    }
}

/// kill -9 of the session pod's process while the contact writes: the node restarts it, it
/// waits out its predecessor's lease, logs in with the stored credentials (no QR, same device),
/// and what the killed process had not acknowledged is redelivered: every message arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_session_pod_under_inbound_load_loses_and_doubles_nothing() -> Result<()> {
    let pod = session_name(&user("pod"));
    with_world("chaos-pod", json!({}), &[&pod], async |world| {
        let scene = Scene::pair(world, "pod").await?;
        let node = &world.node;
        let load = scene.load(world);
        scene.collector.wait_count(20, "before the kill").await?;
        let (logins, _) = scene.device(world).await?;
        let pid = node
            .process_of(&scene.pod)
            .context("the session pod's process")?;
        let connected_at = |s: &WhatsAppSession| s.status.as_ref().and_then(|s| s.connected_at.clone());
        let before = connected_at(&scene.connected(world, "Connected before the kill").await?);
        let (phases, watch) = phases(world, &scene.pod);

        let t_kill = Instant::now();
        let killed = node.kill9(&scene.pod).await?;
        ensure!(killed == pid, "killed {killed}, the pod's process was {pid}");
        let new_pid = eventually(WAIT, || async {
            node.process_of(&scene.pod).filter(|p| *p != killed)
        })
        .await
        .context("the node did not restart the killed process")?;
        ensure!(
            node.restarts(&scene.pod) == Some(1),
            "{:?}",
            node.runs(&scene.pod)
        );
        scene.relogged_in(world, logins).await?;
        let t_back = t_kill.elapsed();
        // The CR reports the new connection (not the dead process's record).
        let sessions: Api<WhatsAppSession> = Api::namespaced(world.client.clone(), &world.ns);
        wait_status(&sessions, &scene.pod, "Connected again after kill -9", |s| {
            phase(s) == Some(Phase::Connected) && connected_at(s) > before
        })
        .await?;
        watch.abort();
        let phases_seen = lock(&phases).clone();
        // Live again: messages sent after the reconnection arrive too.
        scene
            .collector
            .wait_beyond(&load, "after the restart")
            .await?;
        let sent = load.finish().await?;
        let bodies: Vec<String> = sent.iter().map(|s| s.body.clone()).collect();
        scene.collector.wait_for(&bodies, "after kill -9").await?;
        scene.nothing_queued(world).await?;
        // A late duplicate (a redelivery the store did not deduplicate) would come now.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let seen = scene.collector.stop();
        exactly_once(&sent, &seen.messages, "the WebSocket")?;
        let stored = stored_messages(world, &scene.user, &scene.chat).await?;
        exactly_once(&sent, &stored, "GET /messages")?;
        ensure!(seen.qrs == 0, "the restarted session showed {} QR codes", seen.qrs);
        scene.same_device(world).await?;
        ensure!(
            node.process_of(&scene.pod) == Some(new_pid),
            "{:?}",
            node.runs(&scene.pod)
        );
        eprintln!(
            "chaos pod: {} messages at {SEND_EVERY:?} intervals; kill -9 → logged in again in {t_back:?}; CR phases {phases_seen:?}; socket drops {}, resumes {}",
            sent.len(),
            seen.drops.len(),
            seen.resumes
        );
        Ok(())
    })
    .await
}

/// kill -9 of the chart's Redis (AOF on, `appendfsync everysec`) while the contact writes: the
/// node restarts redis-server on the same claim directory, it loads its append-only file, and
/// every message the session's device acknowledged to the simulator is still in the store and
/// on the event stream, exactly once; the session is Connected again without a scan.
///
/// Why the claim holds: the session pod acknowledges an inbound message only after its store
/// script committed it (session-pod/src/session.rs: the client library's
/// `InboundDurabilityHook` defers the receipt until `commit_inbound` returned `Ok`; store.rs
/// stores and announces in one Lua script). Redis appends each write to the AOF file (write(2)
/// into the kernel) before it sends the reply, in the same event-loop turn; `everysec` only
/// decides when that file is fsynced. A killed process leaves what it wrote in the kernel's page
/// cache, so a kill -9 loses no acknowledged write; only a machine crash could lose the last
/// second, and that is not what this test does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_redis_under_inbound_load_keeps_every_acknowledged_message() -> Result<()> {
    const REDIS_POD: &str = "wasp-redis-0";
    let pod = session_name(&user("redis"));
    with_world("chaos-redis", json!({}), &[&pod, REDIS_POD], async |world| {
        let node = &world.node;
        let scene = Scene::pair(world, "redis").await?;
        let load = scene.load(world);
        // Two seconds of traffic stored before the kill.
        scene.collector.wait_count(20, "before the kill").await?;
        let session_pid = node.process_of(&scene.pod).context("the session pod")?;
        let redis_pid = node.process_of(REDIS_POD).context("the Redis pod")?;

        // What the device had acknowledged when Redis died: only the AOF can keep these.
        let acked_before = scene.acknowledged(world).await?;
        let t_kill = Instant::now();
        ensure!(node.kill9(REDIS_POD).await? == redis_pid);
        eventually(WAIT, || async {
            node.process_of(REDIS_POD).filter(|p| *p != redis_pid)
        })
        .await
        .context("the node did not restart redis-server")?;
        // Redis answers again (through its Service, once it loaded its AOF) with the data it had.
        let dbsize = eventually(WAIT, || async {
            let mut redis = world.redis().await.ok()?;
            redis::cmd("DBSIZE").query_async::<u64>(&mut redis).await.ok()
        })
        .await
        .context("Redis never answered again")?;
        let t_redis = t_kill.elapsed();
        ensure!(dbsize > 0, "Redis came back empty: the AOF was not replayed");
        // The stream is live again after the restart; two more seconds of traffic.
        scene
            .collector
            .wait_beyond(&load, "after the Redis restart")
            .await?;
        let t_live = t_kill.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        scene.connected(world, "Connected after the Redis restart").await?;
        let sent = load.finish().await?;

        // Acknowledged before the kill: in the store and on the stream, exactly once.
        let before: Vec<Sent> = sent
            .iter()
            .filter(|s| acked_before.contains(&s.id))
            .cloned()
            .collect();
        ensure!(
            before.len() == acked_before.len() && !before.is_empty(),
            "receipts before the kill: {} of {} sent messages",
            acked_before.len(),
            sent.len()
        );
        let stored = stored_messages(world, &scene.user, &scene.chat).await?;
        let only = |got: &[(String, String)], of: &[Sent]| -> Vec<(String, String)> {
            got.iter()
                .filter(|(b, _)| of.iter().any(|s| s.body == *b))
                .cloned()
                .collect()
        };
        exactly_once(&before, &only(&stored, &before), "GET /messages (acknowledged before the kill)")?;
        exactly_once(
            &before,
            &only(&scene.collector.seen().messages, &before),
            "the WebSocket (acknowledged before the kill)",
        )?;

        // And in the end every message is acknowledged — what arrived while Redis was down was
        // left unacknowledged and redelivered — and each is there exactly once.
        scene.nothing_queued(world).await?;
        let acked = scene.acknowledged(world).await?;
        let unacked: Vec<&Sent> = sent.iter().filter(|s| !acked.contains(&s.id)).collect();
        ensure!(unacked.is_empty(), "never acknowledged: {unacked:?}");
        let bodies: Vec<String> = sent.iter().map(|s| s.body.clone()).collect();
        scene
            .collector
            .wait_for(&bodies, "after the Redis restart")
            .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let seen = scene.collector.stop();
        exactly_once(&sent, &seen.messages, "the WebSocket")?;
        let stored = stored_messages(world, &scene.user, &scene.chat).await?;
        exactly_once(&sent, &stored, "GET /messages")?;
        ensure!(seen.qrs == 0, "the session showed {} QR codes", seen.qrs);
        scene.same_device(world).await?;
        eprintln!(
            "chaos redis: {} sent, {} acknowledged before the kill; Redis answered after {t_redis:?}, stream live after {t_live:?}; session pod pid {session_pid} → {:?} ({} runs), device logins {:?}; socket drops {:?}, resumes {}",
            sent.len(),
            before.len(),
            node.process_of(&scene.pod),
            node.runs(&scene.pod).len(),
            scene.device(world).await?.0,
            seen.drops,
            seen.resumes
        );
        Ok(())
    })
    .await
}

/// The API pods of the release, by name.
async fn api_pods(world: &ChartWorld) -> Result<Vec<Pod>> {
    pods_of(world, "api").await
}

async fn pods_of(world: &ChartWorld, component: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), &world.ns);
    let lp = ListParams::default().labels(&format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
        ChartWorld::RELEASE
    ));
    Ok(pods
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

/// The WebSocket clients a replica serves (`wasp_api_stream_clients{transport="websocket"}` on
/// its admin port).
async fn websocket_clients(ip: std::net::Ipv4Addr) -> Result<i64> {
    api_metric(ip, r#"wasp_api_stream_clients{transport="websocket"} "#).await
}

/// One value of an API replica's metrics (the line starting with `prefix`; 0 when absent).
async fn api_metric(ip: std::net::Ipv4Addr, prefix: &str) -> Result<i64> {
    let text = reqwest::get(format!("http://{ip}:{API_ADMIN_PORT}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// The API pod whose process serves the one WebSocket of this test.
async fn serving_replica(world: &ChartWorld) -> Result<String> {
    eventually(WAIT, || async {
        let mut serving = Vec::new();
        for p in api_pods(world).await.ok()? {
            let name = p.name_any();
            let ip = world.node.pod_ip(&name)?;
            if websocket_clients(ip).await.ok()? > 0 {
                serving.push(name);
            }
        }
        (serving.len() == 1).then(|| serving.remove(0))
    })
    .await
    .context("no single API replica serves the WebSocket")
}

/// kill -9 of the API replica that serves a CRM's WebSocket while the contact writes: the
/// socket ends, the client backs off (messages keep coming meanwhile) and reconnects through
/// the Service with its last event id, and sees every message exactly once, across the switch.
/// The Service picks any ready replica: the other one, or the killed pod's restarted process
/// if it is ready again by then — either has only Redis to resume from (printed which).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_api_replica_serving_a_websocket_loses_and_doubles_nothing() -> Result<()> {
    let pod = session_name(&user("api"));
    with_world("chaos-api", json!({}), &[&pod], async |world| {
        let node = &world.node;
        let scene = Scene::pair(world, "api").await?;
        let load = scene.load(world);
        scene.collector.wait_count(20, "before the kill").await?;
        let replicas = api_pods(world).await?;
        ensure!(replicas.len() == 2, "two API replicas: {}", replicas.len());
        let serving = serving_replica(world).await?;
        let pid = node.process_of(&serving).context("the API pod's process")?;
        let resumes = scene.collector.seen().resumes;

        let t_kill = Instant::now();
        let sent_at_kill = load.count();
        ensure!(node.kill9(&serving).await? == pid);
        // The socket ended with the process, and the client resumed on a live replica.
        eventually(WAIT, || async {
            (scene.collector.seen().resumes > resumes).then_some(())
        })
        .await
        .context("the WebSocket never reconnected after its replica was killed")?;
        let t_resumed = t_kill.elapsed();
        // The contact wrote while the client had no socket: those come from `since`.
        let sent_while_away = load.count() - sent_at_kill;
        ensure!(sent_while_away > 0, "nothing was sent while the client was away");
        scene
            .collector
            .wait_beyond(&load, "after the API kill")
            .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now_serving = serving_replica(world).await?;
        let sent = load.finish().await?;
        let bodies: Vec<String> = sent.iter().map(|s| s.body.clone()).collect();
        scene.collector.wait_for(&bodies, "after the API kill").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let seen = scene.collector.stop();
        exactly_once(&sent, &seen.messages, "the WebSocket")?;
        let stored = stored_messages(world, &scene.user, &scene.chat).await?;
        exactly_once(&sent, &stored, "GET /messages")?;
        ensure!(
            node.restarts(&serving) == Some(1),
            "{:?}",
            node.runs(&serving)
        );
        eprintln!(
            "chaos api: {} messages, {sent_while_away} sent while the client was away; killed {serving} (pid {pid}), resumed in {t_resumed:?} on {now_serving}; drops {:?}, resumes {}",
            sent.len(),
            seen.drops,
            seen.resumes
        );
        Ok(())
    })
    .await
}

/// The webhook endpoints an API replica delivers to (`wasp_api_webhook_endpoints`).
async fn webhook_endpoints(ip: std::net::Ipv4Addr) -> Result<i64> {
    api_metric(ip, "wasp_api_webhook_endpoints ").await
}

/// The chart values of the webhook chaos tests: http to the test's receiver, quick retries.
fn webhook_values() -> Value {
    json!({"api": {"webhooks": {
        "allowHttp": true, "allowNets": ["127.0.0.2/32"],
        "retryBaseMs": 100, "retryMaxMs": 1000, "leaseTtlMs": 2000
    }}})
}

/// Sets the scene's user a webhook to a new receiver; the receiver and the signing secret.
async fn webhook_for(
    world: &ChartWorld,
    scene: &Scene,
) -> Result<(wasp_e2e::webhook_receiver::Receiver, String)> {
    let receiver = wasp_e2e::webhook_receiver::Receiver::start().await?;
    let created: Value = reqwest::Client::new()
        .put(format!("{}/webhooks", world.api_base()))
        .bearer_auth(world.token(&scene.user))
        .json(&json!({"url": format!("{}/crm", receiver.base)}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let secret = created["secret"].as_str().context("no secret")?.to_owned();
    Ok((receiver, secret))
}

/// Waits until every sent message reached the receiver, then checks: the first deliveries are
/// in the order sent, a repeat carries the same webhook id as the first delivery of its
/// message (and, with `only_in_flight`, repeats only the delivery just before), and every
/// delivery verifies with the reference library. The deliveries, and how many were repeats.
async fn all_delivered_in_order(
    receiver: &wasp_e2e::webhook_receiver::Receiver,
    sent: &[Sent],
    secret: &str,
    only_in_flight: bool,
) -> Result<(usize, usize)> {
    let bodies: Vec<String> = sent.iter().map(|s| s.body.clone()).collect();
    let got = eventually(Duration::from_secs(60), || async {
        let got = receiver.got();
        // Accepted deliveries only: an attempt the receiver refused does not count.
        let seen: BTreeSet<String> = got
            .iter()
            .filter(|g| (200..300).contains(&g.status))
            .filter_map(|g| g.json()["data"]["body"].as_str().map(str::to_owned))
            .collect();
        bodies.iter().all(|b| seen.contains(b)).then_some(got)
    })
    .await
    .context("not every message reached the webhook")?;
    let index: BTreeMap<&str, usize> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_str(), i))
        .collect();
    let mut first_id: BTreeMap<usize, String> = BTreeMap::new();
    let (mut last, mut newest, mut repeats) = (None::<usize>, None::<usize>, 0);
    for g in &got {
        let body = g.json()["data"]["body"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let i = *index
            .get(body.as_str())
            .context("a delivery of a message never sent")?;
        match first_id.get(&i) {
            Some(id) => {
                ensure!(g.id() == id, "a repeat of message {i} with another id");
                ensure!(
                    !only_in_flight || last == Some(i),
                    "message {i} repeated after {last:?}"
                );
                repeats += 1;
            }
            None => {
                ensure!(
                    newest.map_or(i == 0, |n| i == n + 1),
                    "out of order: message {i} first delivered after {newest:?}"
                );
                first_id.insert(i, g.id().to_owned());
                newest = Some(i);
            }
        }
        last = Some(i);
    }
    ensure!(wasp_e2e::webhook_receiver::verify_with_reference(secret, &got)? == got.len());
    Ok((got.len(), repeats))
}

/// The receiver is down (503) for the first seconds of the contact's burst, then kill -9 of the
/// API replica delivering the CRM's webhook while the contact writes: the other replica takes
/// the endpoint over (once the dead one's heartbeat and lease have expired) at the durable
/// cursor, and every message reaches the receiver, signed, in order; a repeat is only the
/// event that was in flight (or refused), with the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_api_replica_delivering_a_webhook_loses_nothing() -> Result<()> {
    let pod = session_name(&user("hooks"));
    with_world("chaos-hooks", webhook_values(), &[&pod], async |world| {
        let node = &world.node;
        let scene = Scene::pair(world, "hooks").await?;
        let (receiver, secret) = webhook_for(world, &scene).await?;
        receiver.answer(503);
        let load = scene.load(world);
        // Down while the burst starts (back-off up to retryMaxMs between attempts), then up.
        eventually(WAIT, || async {
            (load.count() >= 30 && receiver.got().len() >= 5).then_some(())
        })
        .await
        .context("the burst never reached the receiver")?;
        let refused = receiver.got().len();
        receiver.answer(204);
        receiver
            .wait_for(20, WAIT, |g| g.status == 204)
            .await
            .context("no delivery after the receiver came back")?;
        let delivering = eventually(WAIT, || async {
            let mut found = Vec::new();
            for p in api_pods(world).await.ok()? {
                let name = p.name_any();
                if webhook_endpoints(node.pod_ip(&name)?).await.ok()? > 0 {
                    found.push(name);
                }
            }
            (found.len() == 1).then(|| found.remove(0))
        })
        .await
        .context("no single API replica delivers the webhook")?;
        let pid = node.process_of(&delivering).context("the API pod's process")?;
        let at_kill = receiver.got().len();
        let t_kill = Instant::now();
        ensure!(node.kill9(&delivering).await? == pid);
        receiver
            .wait_for(at_kill + 10, Duration::from_secs(60), |_| true)
            .await
            .context("deliveries never resumed after the kill")?;
        let t_resumed = t_kill.elapsed();
        let sent = load.finish().await?;
        let (deliveries, repeats) = all_delivered_in_order(&receiver, &sent, &secret, true).await?;
        eprintln!(
            "chaos hooks: {} messages, {deliveries} deliveries ({repeats} repeats, {refused} refused while down); killed {delivering} (pid {pid}), deliveries resumed in {t_resumed:?}",
            sent.len()
        );
        Ok(())
    })
    .await
}

/// kill -9 of the chart's Redis (AOF) while a webhook delivers: the cursor, the endpoint and
/// the stream come back from the AOF, the dispatcher's worker starts again at the cursor, and
/// every message reaches the receiver in order, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_redis_while_a_webhook_delivers_loses_nothing() -> Result<()> {
    const REDIS_POD: &str = "wasp-redis-0";
    let pod = session_name(&user("hooks-redis"));
    with_world("chaos-hooks-redis", webhook_values(), &[&pod, REDIS_POD], async |world| {
        let node = &world.node;
        let scene = Scene::pair(world, "hooks-redis").await?;
        let (receiver, secret) = webhook_for(world, &scene).await?;
        let load = scene.load(world);
        receiver.wait_for(20, WAIT, |_| true).await?;
        let redis_pid = node.process_of(REDIS_POD).context("the Redis pod")?;
        let at_kill = receiver.got().len();
        let t_kill = Instant::now();
        ensure!(node.kill9(REDIS_POD).await? == redis_pid);
        receiver
            .wait_for(at_kill + 20, Duration::from_secs(90), |_| true)
            .await
            .context("deliveries never resumed after the Redis restart")?;
        let t_resumed = t_kill.elapsed();
        let sent = load.finish().await?;
        let (deliveries, repeats) =
            all_delivered_in_order(&receiver, &sent, &secret, false).await?;
        eprintln!(
            "chaos hooks-redis: {} messages, {deliveries} deliveries ({repeats} repeats); Redis killed, deliveries resumed in {t_resumed:?}",
            sent.len()
        );
        Ok(())
    })
    .await
}

/// Phases as a watch saw them, in order.
type Phases = Arc<Mutex<Vec<Option<Phase>>>>;

/// The phases a WhatsAppSession shows, in order (one watch).
fn phases(world: &ChartWorld, name: &str) -> (Phases, JoinHandle<()>) {
    use kube::runtime::{WatchStreamExt as _, watcher};
    let sessions: Api<WhatsAppSession> = Api::namespaced(world.client.clone(), &world.ns);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut events = watcher(sessions, config).applied_objects().boxed();
            while let Some(Ok(s)) = events.next().await {
                lock(&seen).push(phase(&s));
            }
        }
    });
    (seen, task)
}

fn uids(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().filter_map(|p| p.uid()).collect()
}

/// `helm upgrade` changing an operator value: the operator Deployment rolls (two new pods, one
/// of them leads and reconciles), nothing else does — the API and Redis pods stay, the session
/// pod's process is the same one (no restart), its CR never leaves Connected — and messages flow
/// both ways afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chart_upgrade_rolls_the_operators_and_keeps_sessions_connected() -> Result<()> {
    let pod = session_name(&user("upgrade"));
    with_world("chaos-upgrade", json!({}), &[&pod], async |world| {
        let node = &world.node;
        let scene = Scene::pair(world, "upgrade").await?;
        let sessions: Api<WhatsAppSession> = Api::namespaced(world.client.clone(), &world.ns);
        let before = scene.connected(world, "Connected before the upgrade").await?;
        let operators = pods_of(world, "operator").await?;
        ensure!(operators.len() == 2, "two operators: {}", operators.len());
        let (apis, redis) = (pods_of(world, "api").await?, pods_of(world, "redis").await?);
        let pid = node.process_of(&scene.pod).context("the session pod")?;
        let (restarts, runs) = (node.restarts(&scene.pod), node.runs(&scene.pod).len());
        let pods: Api<Pod> = Api::namespaced(world.client.clone(), &world.ns);
        let session_pod_uid = pods.get(&scene.pod).await?.uid();
        let (phases, watch) = phases(world, &scene.pod);

        let t0 = Instant::now();
        let upgraded = world
            .upgrade(&json!({"operator": {"reconcileConcurrency": 4}}))
            .await?;
        ensure!(upgraded["revision"] == 2, "{upgraded}");
        // The rollout: two operator pods, none of the old ones, all ready.
        let deployments: Api<Deployment> = Api::namespaced(world.client.clone(), &world.ns);
        let old = uids(&operators);
        let new = eventually(Duration::from_secs(120), || async {
            let d = deployments.get("wasp-operator").await.ok()?;
            let st = d.status?;
            let now = pods_of(world, "operator").await.ok()?;
            let rolled = st.updated_replicas == Some(2)
                && st.ready_replicas == Some(2)
                && st.replicas == Some(2)
                && now.len() == 2
                && uids(&now).is_disjoint(&old);
            rolled.then_some(now)
        })
        .await
        .context("the operator Deployment never rolled to two new pods")?;
        let t_rolled = t0.elapsed();
        // One of the new pods leads (its identity is its host name, the pod name, and a suffix).
        let leases: Api<Lease> = Api::namespaced(world.client.clone(), &world.ns);
        let names: Vec<String> = new.iter().map(|p| p.name_any()).collect();
        let leader = eventually(Duration::from_secs(60), || async {
            let holder = leases
                .get("wasp-operator")
                .await
                .ok()?
                .spec?
                .holder_identity?;
            names.iter().find(|n| holder.starts_with(n.as_str())).cloned()
        })
        .await
        .context("no new operator pod took the leader lease")?;
        // A candidate that saw the old leader's lock sleeps until that lock would expire
        // (kube-lease-manager does not watch the Lease), so the takeover can take up to
        // `leaseDurationSeconds` (15 s) even though the old leader released it on SIGTERM.
        let t_leader = t0.elapsed();
        // The old operators stopped on SIGTERM by themselves (exit 0, no SIGKILL).
        for p in &operators {
            let runs = node.runs(&p.name_any());
            ensure!(
                !runs.is_empty()
                    && runs
                        .iter()
                        .all(|r| r.end.as_ref().is_some_and(|e| e.graceful())),
                "old operator {}: {runs:?}\n{}",
                p.name_any(),
                node.log_tail(&p.name_any(), 40)
            );
        }

        // A message flows in and the new leader reconciles the session's activity into the CR.
        let activity_before = before.status.as_ref().and_then(|s| s.last_activity.clone());
        world
            .sim
            .contact_send(&scene.contact, &scene.phone, "after the upgrade")
            .await?;
        eventually(WAIT, || async {
            let seen = scene.collector.seen();
            seen.messages
                .iter()
                .any(|(b, _)| b == "after the upgrade")
                .then_some(())
        })
        .await
        .context("no message after the upgrade")?;
        eventually(WAIT, || async {
            let s = sessions.get(&scene.pod).await.ok()?;
            let now = s.status?.last_activity;
            (now.is_some() && now > activity_before).then_some(())
        })
        .await
        .context("the new operator leader never updated the CR's lastActivity")?;
        let sent = common::api_call(
            reqwest::Method::POST,
            &format!("{}/send", world.api_base()),
            &world.token(&scene.user),
            Some(json!({"chatId": scene.chat, "message": "answer after the upgrade"})),
        )
        .await?;
        ensure!(sent["success"] == true, "{sent}");
        let received = world
            .sim
            .contact_received(&scene.contact, 1, Duration::from_secs(30))
            .await?;
        ensure!(
            received.iter().any(|m| m.text == "answer after the upgrade"),
            "{received:?}"
        );

        // The session was never touched.
        watch.abort();
        let seen = lock(&phases).clone();
        ensure!(
            !seen.is_empty() && seen.iter().all(|p| *p == Some(Phase::Connected)),
            "the CR left Connected during the upgrade: {seen:?}"
        );
        ensure!(
            node.process_of(&scene.pod) == Some(pid)
                && node.restarts(&scene.pod) == restarts
                && node.runs(&scene.pod).len() == runs,
            "the session pod's process changed: {:?}",
            node.runs(&scene.pod)
        );
        ensure!(
            pods.get(&scene.pod).await?.uid() == session_pod_uid,
            "the session pod was replaced"
        );
        let seen_ws = scene.collector.stop();
        ensure!(seen_ws.qrs == 0, "a QR code during the upgrade");
        ensure!(
            seen_ws.drops.is_empty(),
            "the CRM's WebSocket dropped: {:?}",
            seen_ws.drops
        );
        // Only the operators rolled.
        ensure!(
            uids(&pods_of(world, "api").await?) == uids(&apis),
            "the API pods were replaced"
        );
        ensure!(
            uids(&pods_of(world, "redis").await?) == uids(&redis),
            "the Redis pod was replaced"
        );
        scene.same_device(world).await?;
        eprintln!(
            "chaos upgrade: operators rolled in {t_rolled:?}, {leader} leads after {t_leader:?}; CR phases seen {seen:?}"
        );
        Ok(())
    })
    .await
}

/// Storm sizes at CI scale: 20 sessions, a bucket of 5 logins and 5 a second.
const STORM_N: usize = 20;
const STORM_RATE: usize = 5;
const STORM_BURST: usize = 5;

/// What a storm left for its test's own checks.
struct Storm {
    /// From the disruption until every session had logged in again.
    back_in: Duration,
    /// The simulator's logins since just before the disruption.
    log: Vec<wasp_sim::world::Admission>,
    busiest: usize,
}

/// The common part of both storms: `STORM_N` sessions paired and connected, `disrupt` run, one
/// message from each contact while its user is down; then every session back Connected on its
/// one device without a QR code, logins paced by the fleet-wide bucket (no more than burst +
/// rate in a second, plus two for handshake latency), every message exactly once at the CRM's
/// WebSocket; `check` sees what each WebSocket saw.
async fn storm(
    world: &mut ChartWorld,
    kind: &str,
    disrupt: impl AsyncFnOnce(&mut ChartWorld, &[Scene]) -> Result<()>,
    check: impl Fn(&Scene, &Seen) -> Result<()>,
) -> Result<Storm> {
    let mut scenes = Vec::new();
    for i in 0..STORM_N {
        scenes.push(Scene::pair(world, &format!("{kind}{i}")).await?);
    }
    let mut logins = Vec::new();
    for s in &scenes {
        s.connected(world, "Connected before the storm").await?;
        logins.push(s.device(world).await?.0);
    }
    let since = jiff::Timestamp::now().as_millisecond();
    let t0 = Instant::now();
    disrupt(world, &scenes).await?;
    let body = "written during the storm";
    let mut sent = Vec::new();
    for s in &scenes {
        let id = world.sim.contact_send(&s.contact, &s.phone, body).await?;
        sent.push(vec![Sent {
            body: body.into(),
            id,
        }]);
    }
    for (s, l) in scenes.iter().zip(&logins) {
        s.relogged_in(world, *l).await?;
    }
    let back_in = t0.elapsed();
    for s in &scenes {
        s.connected(world, "Connected after the storm").await?;
    }

    let log = world.sim.admissions(since).await?;
    let phones: BTreeSet<&str> = log.iter().map(|a| a.phone.as_str()).collect();
    for s in &scenes {
        ensure!(
            phones.contains(s.phone.as_str()),
            "{} never logged in: {log:?}",
            s.phone
        );
    }
    let busiest = wasp_sim::world::max_in_window(&log, 1000);
    // Slots are exact; a login completes a handshake after its slot, so allow two of
    // latency spread on top of burst + rate.
    ensure!(
        busiest <= STORM_BURST + STORM_RATE + 2,
        "{busiest} logins within one second (burst {STORM_BURST}, rate {STORM_RATE}/s): {log:?}"
    );

    let bodies = vec![body.to_owned()];
    for s in &scenes {
        s.collector.wait_for(&bodies, "after the storm").await?;
    }
    // A late duplicate would come now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (s, sent) in scenes.iter().zip(&sent) {
        let seen = s.collector.stop();
        exactly_once(sent, &seen.messages, "the WebSocket")?;
        ensure!(seen.qrs == 0, "{} showed {} QR codes", s.pod, seen.qrs);
        check(s, &seen)?;
        s.same_device(world).await?;
    }
    Ok(Storm {
        back_in,
        log,
        busiest,
    })
}

fn storm_values() -> Value {
    json!({"operator": {"admission": {"rate": STORM_RATE, "burst": STORM_BURST}}})
}

/// The restart storm (issue 14, item 2), at CI size: 20 connected sessions, every session
/// pod's process killed at once (the node restarts them all together), each contact writing
/// while its user's pod is down: all back as `storm` says, and the logins spread over the
/// bucket's pace. Unpaced (or with the bucket refused by the pods' Redis ACL, where they fall
/// back to a random wait within a second) all 20 log in within about a second, which fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_storm_of_20_session_pods_is_paced_and_needs_no_scan() -> Result<()> {
    let pods = [
        session_name(&user("storm0")),
        session_name(&user("storm19")),
    ];
    let pods: Vec<&str> = pods.iter().map(String::as_str).collect();
    with_world("chaos-storm", storm_values(), &pods, async |world| {
        let kill_all = async |world: &mut ChartWorld, scenes: &[Scene]| {
            for s in scenes {
                world.node.kill9(&s.pod).await?;
            }
            Ok(())
        };
        let Storm {
            back_in,
            log,
            busiest,
        } = storm(world, "storm", kill_all, |_, _| Ok(())).await?;
        let span_ms = log.last().map_or(0, |a| a.at_ms) - log.first().map_or(0, |a| a.at_ms);
        let paced_ms = ((STORM_N - STORM_BURST) * 1000 / STORM_RATE) as i64;
        // The span is between completed logins, not slots: the first ones may finish their
        // handshake late under load (seen: 313 ms with the whole suite running), which
        // shortens it. Unpaced, 20 logins land within about one second.
        ensure!(
            span_ms >= paced_ms - 500,
            "the logins took {span_ms} ms, pacing needs about {paced_ms} ms: {log:?}"
        );
        eprintln!(
            "chaos storm: {STORM_N} pods killed at once → all logged in again in {back_in:?}; {} logins over {span_ms} ms, busiest second {busiest} (burst {STORM_BURST}, rate {STORM_RATE}/s)",
            log.len()
        );
        Ok(())
    })
    .await
}

/// The restart storm's other half (issue 14, item 2), at CI size: 20 connected sessions and the
/// node agent restarted while each contact writes. Every process of the node stops gracefully
/// and starts again: the 20 session pods, and the chart's operators, APIs and Redis too (so
/// every pod's Redis user is gone with Redis' memory, and the operator has to give it back).
/// All back as `storm` says, the CRM's WebSocket (which lost its replica) resuming with
/// `?since=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_agent_restart_brings_20_sessions_back_without_a_scan() -> Result<()> {
    let pods = [session_name(&user("node0")), session_name(&user("node19"))];
    let pods: Vec<&str> = pods.iter().map(String::as_str).collect();
    with_world("chaos-node", storm_values(), &pods, async |world| {
        let resumed = |s: &Scene, seen: &Seen| {
            ensure!(
                seen.resumes >= 1,
                "{}: the API restarted, yet the WebSocket never resumed (drops {:?})",
                s.pod,
                seen.drops
            );
            Ok(())
        };
        let restart = async |world: &mut ChartWorld, _: &[Scene]| world.restart_node().await;
        let Storm {
            back_in,
            log,
            busiest,
        } = storm(world, "node", restart, resumed).await?;
        eprintln!(
            "chaos node restart: all {STORM_N} logged in again after {back_in:?}; {} logins, busiest second {busiest} (burst {STORM_BURST}, rate {STORM_RATE}/s)",
            log.len()
        );
        Ok(())
    })
    .await
}
