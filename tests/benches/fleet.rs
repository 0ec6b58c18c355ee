//! The fleet benchmark and the restart storm (issue 14, items 1 and 2; DESIGN.md §4: 1,000
//! connected sessions on one 2-core machine, the whole box ≤ 4 GiB and idle CPU < 20 % of a
//! core; 1,000 sessions restarted → all back ≤ 2 min, jittered).
//!
//! The world of [`ChartWorld`]: `charts/wasp` installed with the Helm SDK into the local
//! control plane, its pods (operator ×2, API ×2, Redis) and the N session pods run as processes
//! by wasp-node, the WhatsApp simulator in-process. Phases, each timed with the load average at
//! its end:
//!
//! 1. **pair**: N users, a bounded number at a time (`--concurrency`), each as a CRM does it
//!    ([`ChartWorld::pair`]: WebSocket, `POST /connect`, QR, its own simulated phone scans,
//!    `ready`), then every `WhatsAppSession` Connected: time from the first CR to N Connected;
//! 2. **memory**: Σ PSS / RssAnon / RSS of the session pods (`/proc/<pid>/smaps_rollup`,
//!    `status`), and of the operators, APIs, Redis, the node's watchdogs, etcd, the apiserver,
//!    the controller-manager, and this process (simulator + wasp-node + the N clients);
//! 3. **idle**: the whole machine's busy CPU over `--idle-secs` (`/proc/stat`), and ours;
//! 4. **inbound**: one message from each user's contact, contact's send → the `message` frame
//!    on that user's API WebSocket, p50/p99;
//! 5. `--storm`: every session pod's process killed at once (kill -9), a message from each
//!    contact while it is down; `--node-restart`: the node agent restarted (every process of the
//!    node, chart pods too, stops and starts again), the same. Each: time until every device
//!    logged in again and every session is Connected, no QR, the same single device at the
//!    simulator, the admission log's busiest second against `rate`/`burst`, and each message
//!    exactly once on the WebSocket (the clients resume with `?since=`).
//!
//! ```sh
//! cargo bench --locked -p wasp-e2e --bench fleet -- --sessions 20 [--idle-secs 60] \
//!     [--concurrency 8] [--in-flight 1] [--send-gap-ms 0] [--rate 10 --burst 10] [--storm] \
//!     [--node-restart]
//! ```
//!
//! Binaries as for the chart_qr bench (`target/release/` next to the bench executable, or
//! `WASP_OPERATOR_BIN`, `WASP_API_BIN`, `WASP_POD_BIN`). Exits non-zero if a check failed,
//! after printing every figure.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt as _};
use serde_json::json;
use wasp_crds::names::session_name;
use wasp_crds::{Phase, WhatsAppSession};
use wasp_e2e::bench_arg as arg;
use wasp_e2e::chart_world::{ChartWorld, Paired, chart_images};
use wasp_e2e::proc_stats::{self as ps, Memory, mib};
use wasp_e2e::stream_clients::{Received, ResumingWs};

/// How long a CRM's client waits before it reopens a dropped WebSocket.
const RESUME_AFTER: Duration = Duration::from_millis(500);
/// How many contacts send at once in the restart phases (the inbound latency phase sends one
/// at a time, `--in-flight` to change it).
const SENDS_IN_FLIGHT: usize = 16;
/// How often the bench polls the simulator and the CRs while it waits.
const POLL: Duration = Duration::from_millis(250);

/// One paired user.
struct User {
    pod: String,
    phone: String,
    contact: String,
    device: u16,
    ws: ResumingWs,
}

/// The phases' durations and the load average at their end, printed at the end again.
#[derive(Default)]
struct Timeline {
    phases: Vec<(String, Duration, String)>,
    checks: Vec<(String, bool)>,
}

impl Timeline {
    fn phase(&mut self, name: &str, took: Duration) {
        let load = ps::load_average();
        println!(
            "== {name}: {:.1} s (load average {load})",
            took.as_secs_f64()
        );
        self.phases.push((name.into(), took, load));
    }

    fn check(&mut self, what: String, ok: bool) {
        println!("   [{}] {what}", if ok { " ok " } else { "FAIL" });
        self.checks.push((what, ok));
    }
}

fn has_flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// Nearest-rank percentile of sorted `v` (`p` in 0..=1).
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Raises the soft open-files limit to the hard one: this process holds the simulator's N
/// sockets, the N WebSocket clients, the node's proxy connections (two per connection to a
/// Service) and a pipe per watchdog; the children inherit the limit (Redis sizes `maxclients`
/// by it).
fn raise_nofile() -> Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        setrlimit(Resource::Nofile, l).context("raising RLIMIT_NOFILE")?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n = arg("--sessions", 20);
    let idle_secs = arg("--idle-secs", 60);
    let concurrency = arg("--concurrency", 8).max(1);
    let rate = arg("--rate", 10);
    let burst = arg("--burst", 10);
    let nofile = raise_nofile()?;
    let images = chart_images().context(
        "the chart's binaries (build them first: cargo build --release --locked -p wasp-operator \
         -p wasp-api --bins; cargo build --release --locked -p wasp-session-pod --features \
         insecure-sim --bin wasp-session-pod)",
    )?;
    println!(
        "fleet: {n} sessions, pairing {concurrency} at a time, admission rate {rate}/s burst {burst}, open files limit {nofile}"
    );
    for (image, bin) in images.rules() {
        println!("  {image:<12} {}", bin.binary().display());
    }
    println!(
        "load average at start: {}; memory in use on the machine: {:.0} MiB",
        ps::load_average(),
        mib(used_kib())
    );
    let mut tl = Timeline::default();
    let t0 = Instant::now();
    let values = json!({"operator": {"admission": {"rate": rate, "burst": burst}}});
    let mut world = ChartWorld::install("bench-fleet", &values).await?;
    tl.phase("install (helm install → API ready)", t0.elapsed());
    let result = run(&mut world, &mut tl, n, idle_secs, concurrency, rate, burst).await;
    let t_down = Instant::now();
    let shut = world.shutdown().await;
    println!(
        "uninstall and node stop: {:.1} s",
        t_down.elapsed().as_secs_f64()
    );
    println!();
    println!("summary ({n} sessions):");
    for (name, took, load) in &tl.phases {
        println!("  {name:<52} {:>8.1} s   load {load}", took.as_secs_f64());
    }
    let failed: Vec<&String> = tl.checks.iter().filter(|c| !c.1).map(|c| &c.0).collect();
    result?;
    shut?;
    if !failed.is_empty() {
        bail!("{} checks failed: {failed:#?}", failed.len());
    }
    Ok(())
}

/// MemTotal − MemAvailable of `/proc/meminfo`, KiB: the whole machine, other work included.
fn used_kib() -> u64 {
    let m = ps::kib_fields(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
    m.get("MemTotal").copied().unwrap_or(0) - m.get("MemAvailable").copied().unwrap_or(0)
}

async fn run(
    world: &mut ChartWorld,
    tl: &mut Timeline,
    n: usize,
    idle_secs: usize,
    concurrency: usize,
    rate: usize,
    burst: usize,
) -> Result<()> {
    let users = pair_all(world, tl, n, concurrency).await?;
    memory(world, &users).await?;
    idle(world, tl, &users, idle_secs).await?;
    inbound(world, tl, &users, "inbound").await?;
    if has_flag("--storm") {
        restart(world, tl, &users, Restart::Kill9, rate, burst).await?;
    }
    if has_flag("--node-restart") {
        restart(world, tl, &users, Restart::Node, rate, burst).await?;
    }
    Ok(())
}

async fn pair_all(
    world: &ChartWorld,
    tl: &mut Timeline,
    n: usize,
    concurrency: usize,
) -> Result<Vec<User>> {
    let tag = format!("{:x}", std::process::id());
    let t0 = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let paired: Vec<Result<(usize, String, Paired, String)>> = futures::stream::iter(0..n)
        .map(|i| {
            let (tag, done) = (&tag, &done);
            async move {
                let user = format!("fleet-{i}-{tag}@clinic.example");
                let p = world
                    .pair(&user, &format!("Dr Fleet {i}"))
                    .await
                    .with_context(|| {
                        format!(
                            "pairing {user}\n--- its pod (last 20 lines) ---\n{}",
                            world.node.log_tail(&session_name(&user), 20)
                        )
                    })?;
                let contact = world.sim.create_contact(None, Some("Ann")).await?.phone;
                let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if k % 50 == 0 || k == n {
                    println!(
                        "   {k} paired after {:.1} s (load {})",
                        t0.elapsed().as_secs_f64(),
                        ps::load_average()
                    );
                }
                Ok((i, user, p, contact))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let t_paired = t0.elapsed();
    let devices: HashMap<String, Vec<u16>> =
        world
            .sim
            .devices()
            .await?
            .into_iter()
            .fold(HashMap::new(), |mut m, d| {
                m.entry(d.phone).or_default().push(d.device);
                m
            });
    let mut users = Vec::with_capacity(n);
    for r in paired {
        let (_, user, Paired { phone, ws, ready }, contact) = r?;
        let device = match devices.get(&phone).map(Vec::as_slice) {
            Some([d]) => *d,
            other => bail!("{phone} has devices {other:?} after pairing"),
        };
        let url = format!("ws://{}/?token={}", world.api_addr, world.token(&user));
        let ws = ResumingWs::start(
            ws,
            url,
            ready["id"].as_str().map(str::to_owned),
            RESUME_AFTER,
        );
        users.push(User {
            pod: session_name(&user),
            phone,
            contact,
            device,
            ws,
        });
    }
    println!("   all {n} paired ({} per second)", per_second(n, t_paired));
    let pods: Vec<&str> = users.iter().map(|u| u.pod.as_str()).collect();
    all_connected(world, &pods, wait_for(n, 10)).await?;
    tl.phase(
        &format!("pair {n} (first CR → {n} Connected)"),
        t0.elapsed(),
    );
    Ok(users)
}

fn per_second(n: usize, d: Duration) -> String {
    format!("{:.1}", n as f64 / d.as_secs_f64().max(1e-9))
}

/// A deadline for `n` sessions at about `per_second` a second, with a minute's margin.
fn wait_for(n: usize, per_second: usize) -> Duration {
    Duration::from_secs(60 + (3 * n / per_second.max(1)) as u64)
}

/// Waits until every session of `pods` shows Connected.
async fn all_connected(world: &ChartWorld, pods: &[&str], within: Duration) -> Result<()> {
    let sessions: Api<WhatsAppSession> = Api::namespaced(world.client.clone(), &world.ns);
    let deadline = Instant::now() + within;
    loop {
        let phases: HashMap<String, Option<Phase>> = sessions
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .map(|s| (s.name_any(), s.status.and_then(|st| st.phase)))
            .collect();
        let missing: Vec<(&str, Option<&Option<Phase>>)> = pods
            .iter()
            .map(|p| (*p, phases.get(*p)))
            .filter(|(_, ph)| !matches!(ph, Some(Some(Phase::Connected))))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} sessions not Connected within {within:?}: {:?}",
                missing.len(),
                pods.len(),
                &missing[..missing.len().min(10)]
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The chart's pods by role (operator, api, redis), from their names.
async fn chart_pods(world: &ChartWorld) -> Result<BTreeMap<&'static str, Vec<String>>> {
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), &world.ns);
    let mut by_role: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for p in pods.list(&Default::default()).await?.items {
        let name = p.name_any();
        let prefix = format!("{}-", ChartWorld::RELEASE);
        let role = ["operator", "api", "redis"]
            .into_iter()
            .find(|r| name.starts_with(&format!("{prefix}{r}-")));
        if let Some(role) = role {
            by_role.entry(role).or_default().push(name);
        }
    }
    Ok(by_role)
}

fn print_memory(what: &str, (m, count): (Memory, usize)) {
    println!(
        "   {what:<58} {count:>5}  PSS {:>8.1}  RssAnon {:>8.1}  RSS {:>8.1} MiB",
        mib(m.pss),
        mib(m.anon),
        mib(m.rss)
    );
}

/// Our processes in groups, by what they are: the session pods, the chart's pods by role, the
/// node's watchdogs, other children of the bench, the control plane, and this process.
async fn groups(world: &ChartWorld, users: &[User]) -> Result<Vec<(String, Vec<u32>)>> {
    let mut out = Vec::new();
    let pods: Vec<u32> = users
        .iter()
        .filter_map(|u| world.node.process_of(&u.pod))
        .collect();
    let mut known = pods.clone();
    out.push(("session pods".to_owned(), pods));
    for (role, names) in chart_pods(world).await? {
        let pids: Vec<u32> = names
            .iter()
            .filter_map(|p| world.node.process_of(p))
            .collect();
        known.extend(&pids);
        out.push((format!("chart {role}"), pids));
    }
    let me = std::process::id();
    let children = ps::descendants(me);
    let watchdogs: Vec<u32> = children
        .iter()
        .filter(|(p, s)| s.comm == "bash" && !known.contains(p))
        .map(|(p, _)| *p)
        .collect();
    known.extend(&watchdogs);
    out.push((
        "wasp-node's watchdogs (bash, one per process)".to_owned(),
        watchdogs,
    ));
    let others: Vec<(u32, String)> = children
        .iter()
        .filter(|(p, _)| !known.contains(p))
        .map(|(p, s)| (*p, s.comm.clone()))
        .collect();
    let mut names: Vec<&str> = others.iter().map(|(_, c)| c.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    out.push((
        format!("other children of the bench ({})", names.join(", ")),
        others.iter().map(|(p, _)| *p).collect(),
    ));
    if let Some(dir) = wasp_e2e::TestEnv::get().kube_state_dir() {
        for (name, pid) in ps::pid_files(&dir.join("pids")) {
            out.push((format!("control plane: {name}"), vec![pid]));
        }
    }
    out.push((
        "this process (simulator, wasp-node, the N WebSocket clients)".to_owned(),
        vec![me],
    ));
    Ok(out)
}

async fn memory(world: &ChartWorld, users: &[User]) -> Result<()> {
    println!("== memory (processes; Σ over each group, MiB):");
    let mut total = Memory::default();
    for (what, pids) in groups(world, users).await? {
        let s = Memory::sum(pids);
        total += s.0;
        print_memory(&what, s);
        if what == "session pods" && s.1 > 0 {
            println!(
                "   per session pod: PSS {:.2}, RssAnon {:.2}, RSS {:.2} MiB",
                mib(s.0.pss) / s.1 as f64,
                mib(s.0.anon) / s.1 as f64,
                mib(s.0.rss) / s.1 as f64
            );
        }
    }
    println!(
        "   whole box, Σ PSS of the above: {:.1} MiB ({:.2} GiB; target < 4 GiB); Σ RSS {:.1} MiB; \
         machine memory in use (MemTotal − MemAvailable, other work included): {:.1} MiB",
        mib(total.pss),
        mib(total.pss) / 1024.0,
        mib(total.rss),
        mib(used_kib())
    );
    Ok(())
}

/// CPU ticks of each group's processes now.
fn group_ticks(groups: &[(String, Vec<u32>)]) -> Vec<u64> {
    groups
        .iter()
        .map(|(_, pids)| {
            pids.iter()
                .filter_map(|p| ps::pid_stat(*p).map(|s| s.ticks))
                .sum()
        })
        .collect()
}

async fn idle(world: &ChartWorld, tl: &mut Timeline, users: &[User], secs: usize) -> Result<()> {
    let groups = groups(world, users).await?;
    let t0 = Instant::now();
    let (m0, g0) = (ps::machine_cpu().unwrap_or_default(), group_ticks(&groups));
    tokio::time::sleep(Duration::from_secs(secs as u64)).await;
    let (m1, g1) = (ps::machine_cpu().unwrap_or_default(), group_ticks(&groups));
    let took = t0.elapsed().as_secs_f64();
    let machine = ps::percent_of_a_core(m1.busy - m0.busy, took);
    println!("   idle CPU over {took:.0} s, % of one core:");
    let mut ours = 0.0;
    for ((what, _), (a, b)) in groups.iter().zip(g0.iter().zip(&g1)) {
        let p = ps::percent_of_a_core(b.saturating_sub(*a), took);
        ours += p;
        println!("   {what:<58} {p:>6.1} %");
    }
    println!(
        "   Σ this bench's processes {ours:.1} % (target < 20 %); the whole machine {machine:.1} % \
         (other work on the machine included)"
    );
    tl.check(
        format!("idle CPU of the bench's processes {ours:.1} % < 20 % of one core (machine: {machine:.1} %)"),
        ours < 20.0,
    );
    tl.phase(&format!("idle {secs} s"), t0.elapsed());
    Ok(())
}

/// Each contact sends `<tag>-<i>` to its user, `in_flight` at a time; when each send
/// started.
async fn send_each(
    world: &ChartWorld,
    users: &[User],
    tag: &str,
    in_flight: usize,
    gap: Duration,
) -> Result<Vec<(Instant, i64)>> {
    let start = tokio::time::Instant::now();
    let sent: Vec<Result<(usize, (Instant, i64))>> =
        futures::stream::iter(users.iter().enumerate())
            .map(|(i, u)| async move {
                if gap > Duration::ZERO {
                    tokio::time::sleep_until(start + gap * i as u32).await;
                }
                let t = (Instant::now(), jiff::Timestamp::now().as_millisecond());
                world
                    .sim
                    .contact_send(&u.contact, &u.phone, &format!("{tag}-{i}"))
                    .await
                    .with_context(|| format!("contact of {} sending", u.pod))?;
                Ok((i, t))
            })
            .buffer_unordered(in_flight.max(1))
            .collect()
            .await;
    let mut at = vec![(Instant::now(), 0); users.len()];
    for r in sent {
        let (i, t) = r?;
        at[i] = t;
    }
    Ok(at)
}

/// Waits until every user's `<tag>-<i>` arrived on its WebSocket; the users still missing it.
async fn wait_arrived(users: &[User], tag: &str, within: Duration) -> Vec<usize> {
    let deadline = Instant::now() + within;
    loop {
        let missing: Vec<usize> = users
            .iter()
            .enumerate()
            .filter(|(i, u)| u.ws.with_log(|l| l.count(&format!("{tag}-{i}")) == 0))
            .map(|(i, _)| i)
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn inbound(world: &ChartWorld, tl: &mut Timeline, users: &[User], tag: &str) -> Result<()> {
    let t0 = Instant::now();
    let in_flight = arg("--in-flight", 1);
    // `--send-gap-ms`: the i-th send starts i·gap after the first, so the latency is measured
    // without the previous messages queued ahead of it.
    let gap = Duration::from_millis(arg("--send-gap-ms", 0) as u64);
    let sent = send_each(world, users, tag, in_flight, gap).await?;
    let missing = wait_arrived(users, tag, wait_for(users.len(), 50)).await;
    // (user index, what arrived): the index is kept, not parsed back out of the body.
    let got: Vec<(usize, Received)> = users
        .iter()
        .enumerate()
        .filter_map(|(i, u)| {
            u.ws.with_log(|l| l.first(&format!("{tag}-{i}")).cloned())
                .map(|r| (i, r))
        })
        .collect();
    let mut lat: Vec<Duration> = got.iter().map(|(i, r)| r.at - sent[*i].0).collect();
    lat.sort();
    // Where the time goes, by the wall clock (ms resolution): the contact's send → the pod's
    // XADD (simulator, wasp-node's proxy, the session pod, Redis), then XADD → the frame read
    // (the API's XRANGE, its fan-out, the proxy, this client).
    let xadd_ms =
        |r: &Received| -> Option<i64> { r.event_id.as_deref()?.split('-').next()?.parse().ok() };
    let mut to_xadd: Vec<Duration> = Vec::new();
    let mut to_frame: Vec<Duration> = Vec::new();
    for (i, r) in &got {
        if let Some(x) = xadd_ms(r) {
            let s = sent[*i].1;
            to_xadd.push(Duration::from_millis((x - s).max(0) as u64));
            to_frame.push(Duration::from_millis((r.at_unix_ms - x).max(0) as u64));
        }
    }
    to_xadd.sort();
    to_frame.sort();
    println!(
        "   split by the event id's XADD time (ms resolution): send → XADD p50 {:.0} / p99 {:.0} ms; XADD → frame p50 {:.0} / p99 {:.0} ms",
        ms(pct(&to_xadd, 0.5)),
        ms(pct(&to_xadd, 0.99)),
        ms(pct(&to_frame, 0.5)),
        ms(pct(&to_frame, 0.99)),
    );
    println!(
        "   one message to each of {} users: contact's send → WebSocket frame p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({in_flight} in flight; target p50 ≤ 5, p99 ≤ 25 ms)",
        users.len(),
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(pct(&lat, 1.0)),
    );
    tl.check(
        format!("every inbound message arrived ({} missing)", missing.len()),
        missing.is_empty(),
    );
    tl.phase(&format!("inbound to {} users", users.len()), t0.elapsed());
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// kill -9 of every session pod's process at once.
    Kill9,
    /// The node agent restarted: every process of the node stops and starts again.
    Node,
}

async fn restart(
    world: &mut ChartWorld,
    tl: &mut Timeline,
    users: &[User],
    how: Restart,
    rate: usize,
    burst: usize,
) -> Result<()> {
    let (tag, what) = match how {
        Restart::Kill9 => ("storm", "restart storm: kill -9 of every session pod"),
        Restart::Node => ("node", "node agent restart"),
    };
    println!("== {what}");
    let n = users.len();
    let logins: HashMap<(String, u16), u32> = world
        .sim
        .devices()
        .await?
        .into_iter()
        .map(|d| ((d.phone, d.device), d.logins))
        .collect();
    let qrs_before: usize = users.iter().map(|u| u.ws.with_log(|l| l.qrs)).sum();
    let restarts_before = session_restarts(world, users).await?;
    let since = jiff::Timestamp::now().as_millisecond();
    let t0 = Instant::now();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Milestones::default()));
    // The node restart takes Redis down: its figures count from Redis answering again.
    seen.lock().unwrap_or_else(|e| e.into_inner()).down = matches!(how, Restart::Kill9);
    let probe = tokio::spawn(milestones(world.redis_url().await?, n, t0, seen.clone()));
    match how {
        Restart::Kill9 => {
            let killed =
                futures::future::join_all(users.iter().map(|u| world.node.kill9(&u.pod))).await;
            killed.into_iter().collect::<Result<Vec<_>>>()?;
        }
        Restart::Node => world.restart_node().await?,
    }
    let t_action = t0.elapsed();
    println!("   {what}: done after {:.2} s", t_action.as_secs_f64());
    let _sent = send_each(world, users, tag, SENDS_IN_FLIGHT, Duration::ZERO).await?;
    let t_sent = t0.elapsed();
    let down_at_send = world
        .sim
        .devices()
        .await?
        .iter()
        .filter(|d| !d.connected && users.iter().any(|u| u.phone == d.phone))
        .count();
    println!(
        "   each contact sent one message by {:.2} s; {down_at_send} of {n} devices still offline then",
        t_sent.as_secs_f64()
    );

    // Every device logged in again (the simulator's view), then every CR Connected.
    let within = wait_for(n, rate);
    let deadline = Instant::now() + within;
    let back = loop {
        let devices = world.sim.devices().await?;
        let back = users
            .iter()
            .filter(|u| {
                devices.iter().any(|d| {
                    d.phone == u.phone
                        && d.device == u.device
                        && d.connected
                        && d.logins
                            > logins
                                .get(&(u.phone.clone(), u.device))
                                .copied()
                                .unwrap_or(0)
                })
            })
            .count();
        if back == n || Instant::now() > deadline {
            break back;
        }
        tokio::time::sleep(POLL).await;
    };
    let t_logged_in = t0.elapsed();
    tl.check(
        format!("{what}: {back} of {n} devices logged in again within {within:?}"),
        back == n,
    );
    let pods: Vec<&str> = users.iter().map(|u| u.pod.as_str()).collect();
    let connected = all_connected(world, &pods, within).await;
    let t_connected = t0.elapsed();
    tl.check(
        format!(
            "{what}: every session Connected again{}",
            connected
                .as_ref()
                .err()
                .map(|e| format!(": {e:#}"))
                .unwrap_or_default()
        ),
        connected.is_ok(),
    );
    println!(
        "   all logged in again at the simulator after {:.1} s, all CRs Connected after {:.1} s (target ≤ 120 s at 1,000)",
        t_logged_in.as_secs_f64(),
        t_connected.as_secs_f64()
    );
    probe.abort();
    let m = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let at =
        |t: Option<Duration>| t.map_or("never".to_owned(), |t| format!("{:.1} s", t.as_secs_f64()));
    // A node restart starts every pod afresh (its counts begin again at 0): then the count is
    // of the exits since.
    let restarts = session_restarts(world, users).await?;
    let restarts = match how {
        Restart::Kill9 => restarts - restarts_before,
        Restart::Node => restarts,
    };
    println!(
        "   breakdown: Redis answering {}, the {n} session Redis users back {}; session pod exits wasp-node restarted: {restarts}",
        at(m.redis_up),
        at(m.users_back),
    );

    // Pacing: the simulator's admissions since the restart.
    let log = world.sim.admissions(since).await?;
    let busiest = wasp_sim::world::max_in_window(&log, 1000);
    let span_ms = log.last().map_or(0, |a| a.at_ms) - log.first().map_or(0, |a| a.at_ms);
    println!(
        "   admissions: {} logins over {:.1} s, busiest second {busiest} (burst {burst}, rate {rate}/s; paced minimum span {:.1} s)",
        log.len(),
        span_ms as f64 / 1000.0,
        n.saturating_sub(burst) as f64 / rate.max(1) as f64
    );
    // The spread: the first login after the restart, then logins per 5 s. The simulator logs a
    // login when its handshake completes, so on a saturated box slots granted apart can land
    // together.
    if let Some(first) = log.first() {
        let mut per5: BTreeMap<i64, usize> = BTreeMap::new();
        for a in &log {
            *per5.entry((a.at_ms - since) / 5000).or_default() += 1;
        }
        let spread: Vec<String> = per5
            .iter()
            .map(|(k, c)| format!("{}s:{c}", k * 5))
            .collect();
        println!(
            "   first login {:.1} s after the restart; logins per 5 s from the restart: {}",
            (first.at_ms - since) as f64 / 1000.0,
            spread.join(" ")
        );
    }
    tl.check(
        format!(
            "{what}: busiest second {busiest} ≤ burst + rate + 2 = {}",
            burst + rate + 2
        ),
        busiest <= burst + rate + 2,
    );

    // Nothing lost, nothing doubled, no scan, the same single device.
    let missing = wait_arrived(users, tag, wait_for(n, 50)).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // a late duplicate would come now
    let doubled = users
        .iter()
        .enumerate()
        .filter(|(i, u)| u.ws.with_log(|l| l.count(&format!("{tag}-{i}")) > 1))
        .count();
    tl.check(
        format!(
            "{what}: each contact's message exactly once on the WebSocket (missing {}, doubled {doubled})",
            missing.len()
        ),
        missing.is_empty() && doubled == 0,
    );
    let qrs: usize = users
        .iter()
        .map(|u| u.ws.with_log(|l| l.qrs))
        .sum::<usize>()
        - qrs_before;
    let resumes: usize = users.iter().map(|u| u.ws.with_log(|l| l.resumes)).sum();
    tl.check(format!("{what}: no QR shown ({qrs})"), qrs == 0);
    let devices = world.sim.devices().await?;
    let changed = users
        .iter()
        .filter(|u| {
            let mine: Vec<_> = devices.iter().filter(|d| d.phone == u.phone).collect();
            !(mine.len() == 1 && mine[0].device == u.device && !mine[0].removed)
        })
        .count();
    tl.check(
        format!("{what}: every phone has its one device still ({changed} changed)"),
        changed == 0,
    );
    println!("   WebSocket resumes (all clients, so far): {resumes}");
    tl.phase(&format!("{what} → all Connected"), t_connected);
    Ok(())
}

/// When, after a restart began, the chart's Redis answered again and the session pods' own
/// Redis users were all there again (the operator re-creates them after a Redis restart).
#[derive(Default)]
struct Milestones {
    /// A poll failed: Redis went away (the node restart takes it down too).
    down: bool,
    redis_up: Option<Duration>,
    users_back: Option<Duration>,
}

/// Polls the chart's Redis as its admin into `seen` until the task is aborted.
async fn milestones(
    url: String,
    n: usize,
    t0: Instant,
    seen: std::sync::Arc<std::sync::Mutex<Milestones>>,
) {
    let Ok(client) = redis::Client::open(url.as_str()) else {
        return;
    };
    loop {
        let conn = tokio::time::timeout(
            Duration::from_secs(1),
            client.get_multiplexed_async_connection(),
        )
        .await;
        let users: Option<Vec<String>> = match conn {
            Ok(Ok(mut conn)) => redis::cmd("ACL")
                .arg("USERS")
                .query_async(&mut conn)
                .await
                .ok(),
            _ => None,
        };
        {
            let mut m = seen.lock().unwrap_or_else(|e| e.into_inner());
            match users {
                None => m.down = true,
                Some(users) if m.down => {
                    let now = t0.elapsed();
                    m.redis_up.get_or_insert(now);
                    let sessions = users
                        .iter()
                        .filter(|u| u.starts_with(wasp_common::acl::SESSION_USER_PREFIX))
                        .count();
                    if sessions >= n {
                        m.users_back.get_or_insert(now);
                    }
                }
                Some(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Σ restart counts of the users' session pod containers, as wasp-node reports them.
async fn session_restarts(world: &ChartWorld, users: &[User]) -> Result<i64> {
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), &world.ns);
    let mine: std::collections::HashSet<&str> = users.iter().map(|u| u.pod.as_str()).collect();
    Ok(pods
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|p| mine.contains(p.name_any().as_str()))
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .map(|c| i64::from(c.restart_count))
        .sum())
}
