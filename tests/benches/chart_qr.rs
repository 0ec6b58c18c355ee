//! CR created → QR on the API WebSocket, on the chart-installed system (issue 10; DESIGN.md §4
//! target: p50 ≤ 1.5 s). The world of [`ChartWorld`]: `charts/wasp` installed with the Helm SDK
//! into the local control plane, its pods (operator ×2, API ×2, Redis) and the session pods run
//! as processes of the built binaries by wasp-node, the WhatsApp simulator in-process.
//!
//! Each sample is one new user: a WebSocket open on the API Service (`/?token=`, its first
//! frame read), then the user's `WhatsAppSession` created with kube (as a platform team or the
//! API's `/connect` does), timed until the `qr` frame arrives on that WebSocket. Sequential
//! samples (one user at a time), then bursts (that many users created at once), after one
//! warm-up user (the first CR after install also waits for the operators' leader election). The
//! sessions stay up (waiting for a scan) until the end, so later samples run beside earlier ones.
//! For each sample the stages are timed from outside the processes: the Pod object appearing (a
//! watch), its process started (wasp-node's state, polled each millisecond), the QR published on
//! the user's Redis channel (a subscriber of the chart's Redis), the frame on the WebSocket.
//!
//! The chart runs the binaries next to the bench executable's directory (`target/release/`), so
//! build them with the release profile of the images first, the session pod with `insecure-sim`
//! (it trusts the simulator):
//!
//! ```sh
//! cargo build --release --locked -p wasp-operator -p wasp-api --bins
//! cargo build --release --locked -p wasp-session-pod --features insecure-sim --bin wasp-session-pod
//! cargo bench --locked -p wasp-e2e --bench chart_qr -- [--users 30] [--burst 10] [--bursts 3]
//! ```
//!
//! The session pod needs a build of its own: `--features wasp-session-pod/insecure-sim` beside
//! other `-p` packages leaves the feature off (a pod that then fails the simulator's certificate
//! chain, and no QR). `WASP_OPERATOR_BIN`, `WASP_API_BIN`, `WASP_POD_BIN` name other builds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, ResourceExt as _};
use prost::Message as _;
use serde_json::json;
use tokio::sync::Barrier;
use tokio::task::JoinHandle;
use wasp_common::events::{Envelope, Kind};
use wasp_common::keys::UserKeys;
use wasp_crds::WhatsAppSession;
use wasp_crds::names::session_name;
use wasp_e2e::bench_arg as arg;
use wasp_e2e::chart_world::{ChartWorld, WAIT, chart_images};
use wasp_e2e::stream_clients::WsClient;

/// How long one sample may take before the run fails.
const SAMPLE_WAIT: Duration = Duration::from_secs(30);

/// When each session's Pod object and first QR were first seen, by session name and by the
/// user's live channel.
#[derive(Default)]
struct Seen {
    pods: HashMap<String, Instant>,
    qrs: HashMap<String, Instant>,
}

/// The outside observers: a watch of the namespace's pods and a pattern subscription to every
/// user's live channel on the chart's Redis.
struct Probes {
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Probes {
    async fn start(world: &ChartWorld) -> Result<Self> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let pods: Api<Pod> = Api::namespaced(world.client.clone(), &world.ns);
        let (listed_tx, listed) = tokio::sync::oneshot::channel();
        let watch = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut listed_tx = Some(listed_tx);
                let mut events = watcher(pods, watcher::Config::default()).boxed();
                while let Some(ev) = events.next().await {
                    let now = Instant::now();
                    match ev {
                        Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                            lock(&seen).pods.entry(p.name_any()).or_insert(now);
                        }
                        Ok(watcher::Event::InitDone) => {
                            if let Some(tx) = listed_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        _ => {}
                    }
                }
            }
        });
        tokio::time::timeout(WAIT, listed)
            .await
            .context("the pod watch never listed")??;

        // The chart's Redis may still be starting when the API already answers /health.
        let url = world.redis_url().await?;
        let ps = wasp_e2e::eventually(WAIT, || async {
            let mut ps = redis::Client::open(url.as_str())
                .ok()?
                .get_async_pubsub()
                .await
                .ok()?;
            // Every user's `wasp:{<hash>}:events:live` (braces are not special in Redis globs).
            ps.psubscribe("wasp:*:events:live").await.ok()?;
            Some(ps)
        })
        .await
        .context("no subscriber on the chart's Redis through its Service")?;
        let live = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut msgs = ps.into_on_message();
                while let Some(msg) = msgs.next().await {
                    let now = Instant::now();
                    let bytes: Vec<u8> = msg.get_payload().unwrap_or_default();
                    if let Ok(Envelope {
                        kind: Some(Kind::Qr(_)),
                        ..
                    }) = Envelope::decode(bytes.as_slice())
                    {
                        let channel = msg.get_channel_name().to_owned();
                        lock(&seen).qrs.entry(channel).or_insert(now);
                    }
                }
            }
        });
        Ok(Self {
            seen,
            tasks: vec![watch, live],
        })
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One user's timeline, each from the create call's start.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// The Pod object seen by the watch (apiserver + operator reconcile: Secret, Pod).
    pod: Duration,
    /// The pod's process started (wasp-node: its watch, bind, env, spawn).
    spawned: Duration,
    /// The QR published on the user's Redis channel (session pod start, WhatsApp handshake).
    published: Duration,
    /// The `qr` frame on the API WebSocket (the API's fan-out).
    ws: Duration,
}

impl Sample {
    /// The stages, each the time since the previous mark.
    fn stages(&self) -> [Duration; 4] {
        [
            self.pod,
            self.spawned.saturating_sub(self.pod),
            self.published.saturating_sub(self.spawned),
            self.ws.saturating_sub(self.published),
        ]
    }
}

const STAGES: [&str; 4] = [
    "CR → Pod object (apiserver, operator reconcile)",
    "Pod → process started (wasp-node)",
    "process → QR on Redis (session pod start)",
    "Redis → qr frame on the WebSocket (API fan-out)",
];

/// One user: the WebSocket opened and its first frame read, then (after `barrier`, when
/// bursting) the session created and timed until the `qr` frame.
async fn sample(
    world: &ChartWorld,
    probes: &Probes,
    user: &str,
    barrier: Option<&Barrier>,
) -> Result<Sample> {
    let name = session_name(user);
    let channel = UserKeys::for_user(user).events_channel();
    let sessions: Api<WhatsAppSession> = Api::namespaced(world.client.clone(), &world.ns);
    let mut ws = WsClient::connect(&format!(
        "ws://{}/?token={}",
        world.api_addr,
        world.token(user)
    ))
    .await?;
    let hello = ws.next().await?;
    ensure!(hello["type"] == "status", "{hello}");
    if let Some(b) = barrier {
        b.wait().await;
    }

    let t0 = Instant::now();
    let create = async {
        sessions
            .create(&PostParams::default(), &WhatsAppSession::for_user(user))
            .await
            .with_context(|| format!("creating {name}"))
    };
    // Bounded as a whole: a pod that cannot reach the simulator keeps sending status frames.
    let qr = async {
        tokio::time::timeout(SAMPLE_WAIT, ws.next_of("qr"))
            .await
            .with_context(|| format!("no qr for {name} within {SAMPLE_WAIT:?}"))??;
        anyhow::Ok(Instant::now())
    };
    let spawned = tokio::time::timeout(SAMPLE_WAIT, async {
        loop {
            if world.node.process_of(&name).is_some() {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let (created, qr, spawned) = tokio::join!(create, qr, spawned);
    created?;
    let t_ws = match qr {
        Ok(t) => t,
        Err(e) => bail!(
            "{e:#}\n--- session pod {name} (last 40 lines) ---\n{}",
            world.node.log_tail(&name, 40)
        ),
    };
    let t_spawned = spawned.context("the session pod's process never started")?;
    ws.close().await;
    // The observers may lag the frame by a scheduling slice; give them a moment.
    let (t_pod, t_published) = wasp_e2e::eventually(Duration::from_secs(5), || async {
        let seen = lock(&probes.seen);
        Some((*seen.pods.get(&name)?, *seen.qrs.get(&channel)?))
    })
    .await
    .with_context(|| format!("the probes never saw {name}'s Pod or QR"))?;
    Ok(Sample {
        pod: t_pod - t0,
        spawned: t_spawned - t0,
        published: t_published - t0,
        ws: t_ws - t0,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted `v` (`p` in 0..=1).
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

fn print_line(what: &str, v: Vec<Duration>) {
    let v = sorted(v);
    if v.is_empty() {
        return;
    }
    println!(
        "{what:<50} {:>4} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
        v.len(),
        ms(pct(&v, 0.5)),
        ms(pct(&v, 0.9)),
        ms(pct(&v, 0.99)),
        ms(pct(&v, 1.0))
    );
}

fn print_sample(label: &str, s: &Sample) {
    let [a, b, c, d] = s.stages().map(ms);
    println!(
        "  {label:<12} {:>8.1} ms  (pod {a:.1}, process {b:.1}, QR on Redis {c:.1}, WebSocket {d:.1})",
        ms(s.ws)
    );
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let users = arg("--users", 30);
    let burst = arg("--burst", 10);
    let bursts = arg("--bursts", 3);
    let images = chart_images().context(
        "the chart's binaries (build them first: cargo build --release --locked -p wasp-operator \
         -p wasp-api --bins; cargo build --release --locked -p wasp-session-pod --features \
         insecure-sim --bin wasp-session-pod)",
    )?;
    println!("binaries (wasp-node's images):");
    for (image, bin) in images.rules() {
        println!("  {image:<12} {}", bin.binary().display());
    }
    println!("load average at start: {}", load());

    let t0 = Instant::now();
    let world = ChartWorld::install("bench-chart-qr", &json!({})).await?;
    let t = world.install_times;
    println!(
        "install: world {:.2} s in all; helm install (SDK, objects created) {:.2} s → API ready \
         behind its Service {:.2} s",
        t0.elapsed().as_secs_f64(),
        t.helm.as_secs_f64(),
        t.api_ready.as_secs_f64()
    );
    let result = run(&world, users, burst, bursts).await;
    let shut = world.shutdown().await;
    result?;
    shut
}

async fn run(world: &ChartWorld, users: usize, burst: usize, bursts: usize) -> Result<()> {
    // When helm install started, on the wall clock (the install has just returned).
    let helm_at =
        jiff::Timestamp::now() - jiff::SignedDuration::try_from(world.install_times.api_ready)?;
    let probes = Probes::start(world).await?;
    let user =
        |kind: &str, i: usize| format!("bench-{kind}-{i}-{:x}@clinic.example", std::process::id());

    let warm_at = jiff::Timestamp::now();
    let warm = sample(world, &probes, &user("warm", 0), None).await?;
    print_sample("warm-up", &warm);
    // What the first CR waited for: the operators' leader election (the Lease's acquireTime,
    // microseconds, from the same clock).
    let leases: Api<Lease> = Api::namespaced(world.client.clone(), &world.ns);
    let acquired = leases
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|l| l.spec?.acquire_time.map(|t| t.0))
        .min();
    match acquired {
        Some(at) => println!(
            "  operator leader lease acquired {:.2} s after helm install started; the warm-up CR \
             was created {:.2} s after it",
            at.duration_since(helm_at).as_secs_f64(),
            warm_at.duration_since(helm_at).as_secs_f64()
        ),
        None => println!("  no operator Lease with an acquireTime in {}", world.ns),
    }

    let mut seq = Vec::with_capacity(users);
    for i in 0..users {
        let s = sample(world, &probes, &user("seq", i), None).await?;
        print_sample(&format!("seq {i}"), &s);
        seq.push(s);
    }

    let mut conc = Vec::with_capacity(burst * bursts);
    for b in 0..bursts {
        let barrier = Barrier::new(burst);
        let names: Vec<String> = (0..burst).map(|i| user(&format!("burst{b}"), i)).collect();
        let got = futures::future::join_all(
            names
                .iter()
                .map(|u| sample(world, &probes, u, Some(&barrier))),
        )
        .await;
        let got = got.into_iter().collect::<Result<Vec<_>>>()?;
        for (i, s) in got.iter().enumerate() {
            print_sample(&format!("burst {b}.{i}"), s);
        }
        println!(
            "  burst {b}: all {burst} QRs in {:.1} ms",
            got.iter().map(|s| ms(s.ws)).fold(0.0, f64::max)
        );
        conc.extend(got);
    }

    println!();
    println!(
        "CR created → qr frame on the API WebSocket, chart-installed (ms; nearest-rank \
         percentiles, load average now {})",
        load()
    );
    println!(
        "{:<50} {:>4} {:>9} {:>9} {:>9} {:>9}",
        "", "n", "p50", "p90", "p99", "max"
    );
    print_line("first CR after install (warm-up)", vec![warm.ws]);
    print_line(
        "sequential (one user at a time)",
        seq.iter().map(|s| s.ws).collect(),
    );
    print_line(
        &format!("bursts of {burst} users at once (×{bursts})"),
        conc.iter().map(|s| s.ws).collect(),
    );
    for (label, samples) in [("sequential", &seq), ("bursts", &conc)] {
        if samples.is_empty() {
            continue;
        }
        println!("where the time goes, {label}:");
        for (stage, what) in STAGES.iter().enumerate() {
            print_line(
                &format!("  {what}"),
                samples.iter().map(|s| s.stages()[stage]).collect(),
            );
        }
    }
    Ok(())
}
