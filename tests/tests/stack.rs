//! The whole stack below wasp-api on one machine, every part real: kube-apiserver +
//! controller-manager (1.20), Redis, the operator (in-process), the WhatsApp simulator
//! (in-process), and session pods run as processes of the built `wasp-session-pod` by the local
//! node (`wasp_e2e::node::LocalNode`, standing in for the kubelet).
//!
//! Needs the session pod binary built with `insecure-sim`: `cargo test --workspace` builds it
//! (`wasp_e2e::bins::session_pod` says how otherwise).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::conditions::is_deleted;
use kube::{Api, Client, ResourceExt};
use prost::Message as _;
use tokio::task::JoinHandle;
use wasp_common::events::{Envelope, Kind};
use wasp_common::keys::UserKeys;
use wasp_crds::conditions::{self, is_true};
use wasp_crds::{Phase, WhatsAppSession};
use wasp_e2e::node::LocalNode;
use wasp_e2e::{TestEnv, eventually, wait_for};
use wasp_sim::client::SimClient;

mod common;
use common::{CONTROL_PORT, WAIT, World, phase, wait_status};

/// Every envelope published on the user's live channel, as it arrives.
struct Live {
    seen: Arc<Mutex<Vec<(Instant, Kind)>>>,
    task: JoinHandle<()>,
}

impl Live {
    async fn subscribe(redis_url: &str, user: &str) -> Result<Self> {
        let mut ps = redis::Client::open(redis_url)?.get_async_pubsub().await?;
        ps.subscribe(UserKeys::for_user(user).events_channel())
            .await?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut msgs = ps.into_on_message();
                while let Some(msg) = msgs.next().await {
                    let bytes: Vec<u8> = msg.get_payload().unwrap_or_default();
                    if let Ok(Envelope {
                        kind: Some(kind), ..
                    }) = Envelope::decode(bytes.as_slice())
                    {
                        seen.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((Instant::now(), kind));
                    }
                }
            }
        });
        Ok(Self { seen, task })
    }

    fn qr_codes_since(&self, since: Instant) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(at, _)| *at >= since)
            .filter_map(|(_, k)| match k {
                Kind::Qr(q) => Some(q.code.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A stream entry as XRANGE/XREAD return it: id, then field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// The id of the newest entry of `stream` ("0-0" when empty).
async fn last_stream_id(
    redis: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> Result<String> {
    let last: Vec<StreamEntry> = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(redis)
        .await?;
    Ok(last
        .first()
        .map_or_else(|| "0-0".into(), |(id, _)| id.clone()))
}

/// Waits for a `ready` event on `stream` after id `after` (blocking XREADs: no polling).
async fn next_ready_event(
    redis: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    after: &str,
) -> Result<wasp_common::events::Ready> {
    type Reply = Option<Vec<(String, Vec<StreamEntry>)>>;
    let deadline = Instant::now() + WAIT;
    let mut last = after.to_owned();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(!left.is_zero(), "no ready event on {stream} after {after}");
        let reply: Reply = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(left.as_millis().clamp(1, 5000) as u64)
            .arg("STREAMS")
            .arg(stream)
            .arg(&last)
            .query_async(redis)
            .await?;
        for (_, entries) in reply.unwrap_or_default() {
            for (id, fields) in entries {
                last = id;
                for (_, bytes) in fields {
                    if let Ok(Envelope {
                        kind: Some(Kind::Ready(r)),
                        ..
                    }) = Envelope::decode(bytes.as_slice())
                    {
                        return Ok(r);
                    }
                }
            }
        }
    }
}

/// When (after the kill), the phase, and `status.connectedAt`.
type PhaseSeen = (Duration, Option<Phase>, Option<String>);

/// The phases a WhatsAppSession goes through, with the time since `since` (one watch).
struct Timeline {
    seen: Arc<Mutex<Vec<PhaseSeen>>>,
    task: JoinHandle<()>,
}

fn phase_timeline(sessions: Api<WhatsAppSession>, name: &str, since: Instant) -> Timeline {
    use kube::runtime::{WatchStreamExt as _, watcher};
    let seen = Arc::new(Mutex::new(Vec::<PhaseSeen>::new()));
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut events = watcher(sessions, config).applied_objects().boxed();
            while let Some(Ok(s)) = events.next().await {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let connected_at = s
                    .status
                    .as_ref()
                    .and_then(|st| st.connected_at.as_ref())
                    .map(|t| t.0.to_string());
                let now = (phase(&s), connected_at);
                if seen.last().map(|(_, p, c)| (*p, c.clone())) != Some(now.clone()) {
                    seen.push((since.elapsed(), now.0, now.1));
                }
            }
        }
    });
    Timeline { seen, task }
}

fn connected_at_of(s: &WhatsAppSession) -> Option<Time> {
    s.status.as_ref().and_then(|st| st.connected_at.clone())
}

async fn user_keys(
    redis: &mut redis::aio::MultiplexedConnection,
    user: &str,
) -> Result<Vec<String>> {
    let pattern = UserKeys::for_user(user).scan_pattern();
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// CR → pod process → QR → scan → Connected; kill -9 → restarted by the node → Connected again
/// without a scan; CR deleted → logout, SIGTERM, graceful exit, pod gone, Redis purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_pairs_survives_kill_9_and_is_purged_on_delete() -> Result<()> {
    let world = World::start("stack").await?;
    let mut redis = world.redis().await?;
    let user = format!("stack-{:x}@clinic.example", std::process::id());
    let session = WhatsAppSession::for_user(&user);
    let name = session.name_any();
    let result = scenario(
        &world.client,
        &world.ns,
        &world.node,
        &world.sim,
        &mut redis,
        &user,
        session,
    )
    .await;
    if let Err(e) = &result {
        eprintln!(
            "stack test failed: {e:#}\n--- session pod {name} (last 60 lines) ---\n{}",
            world.node.log_tail(&name, 60)
        );
    }
    world.shutdown().await?;
    result
}

async fn scenario(
    client: &Client,
    ns: &str,
    node: &LocalNode,
    sim: &SimClient,
    redis: &mut redis::aio::MultiplexedConnection,
    user: &str,
    session: WhatsAppSession,
) -> Result<()> {
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = session.name_any();
    let keys = UserKeys::for_user(user);
    let live = Live::subscribe(&TestEnv::get().redis_url(), user).await?;

    // 1. The CR becomes a pod, the node runs it, the pod shows a QR code.
    let t0 = Instant::now();
    sessions.create(&PostParams::default(), &session).await?;
    let pid = eventually(WAIT, || async { node.process_of(&name) })
        .await
        .context("the node never started the session pod")?;
    let t_process = t0.elapsed();
    let ip = node.pod_ip(&name).context("pod address")?;
    let qr = eventually(WAIT, || async {
        live.qr_codes_since(t0).into_iter().next()
    })
    .await
    .context("no QR event on the live channel")?;
    let t_qr = t0.elapsed();
    let pod = pods.get(&name).await?;
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(node.name()),
        "the node binds the pods it runs"
    );

    // 2. The phone scans: the CR reaches Connected with the phone and the pod's endpoint.
    let phone = sim.create_phone(None, Some("Dr Stack")).await?;
    let addr = sim.scan_qr(&phone.phone, &qr).await?;
    let endpoint = format!("{ip}:{CONTROL_PORT}");
    let connected = wait_status(&sessions, &name, "Connected after the scan", |s| {
        phase(s) == Some(Phase::Connected)
            && s.status.as_ref().and_then(|st| st.endpoint.as_deref()) == Some(endpoint.as_str())
    })
    .await?;
    let t_connected = t0.elapsed();
    let session_uid = connected.uid().context("uid")?;
    let st = connected.status.context("status")?;
    assert_eq!(st.phone_number.as_deref(), Some(phone.phone.as_str()));
    assert_eq!(st.pod_name.as_deref(), Some(name.as_str()));
    for c in [conditions::READY, conditions::PAIRED, conditions::POD_READY] {
        assert!(is_true(&st.conditions, c), "{c}: {:?}", st.conditions);
    }
    // The endpoint really is the pod: its control API answers with the session's state.
    let token = {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let s = secrets.get(&format!("{name}-control")).await?;
        let bytes = s
            .data
            .and_then(|d| d.get("token").cloned())
            .context("token")?;
        String::from_utf8(bytes.0)?
    };
    let http = reqwest::Client::builder().no_proxy().build()?;
    let status: serde_json::Value = http
        .get(format!("http://{endpoint}/v1/status"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(status["phase"], "Connected", "{status}");
    assert_eq!(status["phoneNumber"], phone.phone.as_str(), "{status}");
    let pod = pods.get(&name).await?;
    let pod_status = pod.status.context("pod status")?;
    assert_eq!(pod_status.pod_ip.as_deref(), Some(ip.to_string().as_str()));
    assert_eq!(pod_status.phase.as_deref(), Some("Running"));
    eprintln!(
        "stack: CR → process {t_process:?}, → QR {t_qr:?}, → Connected {t_connected:?} (pod {name} at {ip}, pid {pid})"
    );

    // 3. kill -9: the node restarts the process in the same pod; it resumes without a scan.
    let logins_before = sim
        .device(&phone.phone, addr.device)
        .await?
        .map(|d| d.logins)
        .context("the paired device")?;
    let stream_mark = last_stream_id(redis, &keys.events()).await?;
    let old_connected_at = connected_at_of(&sessions.get(&name).await?);
    ensure!(
        old_connected_at.is_some(),
        "a Connected session has connectedAt"
    );
    // connectedAt has whole seconds: the restarted process's differs from this one's.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t_kill = Instant::now();
    let timeline = phase_timeline(sessions.clone(), &name, t_kill);
    let killed = node.kill9(&name).await?;
    assert_eq!(killed, pid);
    let new_pid = eventually(WAIT, || async {
        node.process_of(&name).filter(|p| *p != killed)
    })
    .await
    .context("the node did not restart the killed process")?;
    assert_eq!(node.restarts(&name), Some(1));
    let ready = next_ready_event(redis, &keys.events(), &stream_mark).await?;
    let t_reconnected = t_kill.elapsed();
    let seen = timeline.seen.clone();
    assert!(ready.phone.contains(&phone.phone), "{ready:?}");
    let reconnected = eventually(WAIT, || async {
        let d = sim.device(&phone.phone, addr.device).await.ok()??;
        (d.connected && d.logins > logins_before).then_some(d)
    })
    .await
    .context("the restarted pod never logged in to the simulator")?;
    assert!(!reconnected.removed);
    let devices_of_phone = sim
        .devices()
        .await?
        .into_iter()
        .filter(|d| d.phone == phone.phone)
        .count();
    assert_eq!(devices_of_phone, 1, "no second device: no new pairing");
    let again = wait_status(&sessions, &name, "Connected after kill -9", |s| {
        phase(s) == Some(Phase::Connected)
            && s.status.as_ref().and_then(|st| st.endpoint.as_deref()) == Some(endpoint.as_str())
            && s.status.as_ref().and_then(|st| st.connected_at.as_ref())
                != old_connected_at.as_ref()
    })
    .await?;
    // What a client of the CR saw: once the operator noticed the kill (the first phase other
    // than Connected), never Connected again for the dead process (its connectedAt), though
    // its record in Redis said Connected until the restarted process, which waits for the dead
    // one's lease (3 s here) before it is ready, wrote its own (issue 14, item 3).
    tokio::time::sleep(Duration::from_millis(500)).await;
    timeline.task.abort();
    let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
    eprintln!("stack: CR phases after kill -9 (ready event at {t_reconnected:?}): {seen:?}");
    let old_at = old_connected_at.as_ref().map(|t| t.0.to_string());
    let noticed = seen
        .iter()
        .position(|(_, p, _)| *p != Some(Phase::Connected))
        .context("the CR never showed the killed process's session as anything but Connected")?;
    for (at, p, c) in &seen[noticed..] {
        assert!(
            !(*p == Some(Phase::Connected) && *c == old_at),
            "at {at:?} after the kill the CR said Connected for the dead process: {seen:?}"
        );
    }
    assert_eq!(
        again.status.and_then(|s| s.phone_number).as_deref(),
        Some(phone.phone.as_str())
    );
    let pod = pods.get(&name).await?;
    let cs = pod
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default();
    assert_eq!(cs.first().map(|c| c.restart_count), Some(1), "{cs:?}");
    let last = cs
        .first()
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|t| t.exit_code), Some(137), "{cs:?}");
    assert!(
        live.qr_codes_since(t_kill).is_empty(),
        "the restarted pod showed a QR code"
    );
    eprintln!("stack: kill -9 → restarted (pid {new_pid}) and reconnected in {t_reconnected:?}");

    // 4. Deleting the CR: logout, SIGTERM, a graceful exit, the pod gone, the user's keys purged.
    let t_delete = Instant::now();
    sessions.delete(&name, &DeleteParams::default()).await?;
    wait_for(&sessions, &name, WAIT, is_deleted(&session_uid))
        .await
        .context("the WhatsAppSession was not released")?;
    let t_deleted = t_delete.elapsed();
    ensure!(
        pods.get_opt(&name).await?.is_none(),
        "the pod outlived its session"
    );
    ensure!(node.finished(&name), "the node still runs the pod");
    assert_eq!(node.process_of(&name), None);
    let runs = node.runs(&name);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let first = runs[0].end.clone().unwrap_or_default();
    assert_eq!(first.signal, Some(9), "{runs:?}");
    let last = runs[1]
        .end
        .clone()
        .context("the last process never ended")?;
    assert!(
        last.graceful(),
        "SIGTERM and exit 0 without SIGKILL: {last:?}"
    );
    // The process is gone for the OS too (its PID no longer names a live process of ours).
    let proc_stat = std::fs::read_to_string(format!("/proc/{new_pid}/stat")).unwrap_or_default();
    assert!(
        proc_stat.is_empty() || !proc_stat.contains("wasp-session-p"),
        "session pod process {new_pid} still exists: {proc_stat}"
    );
    let left = user_keys(redis, user).await?;
    assert!(left.is_empty(), "keys left after purge: {left:?}");
    // The finalizer asked the pod to log out: the phone no longer lists the device.
    let device = sim.device(&phone.phone, addr.device).await?;
    assert!(
        device.as_ref().is_none_or(|d| d.removed),
        "the simulator still lists the device after the logout: {device:?}"
    );
    eprintln!("stack: delete → session released in {t_deleted:?}");
    Ok(())
}
