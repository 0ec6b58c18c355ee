//! History after linking through the whole stack (the world of `tests/tests/common`): a phone
//! with 10,000 messages of history (100 chats × 100) links a session; the simulator sends it in
//! chunks (encrypted blobs on its media server) and the session pod streams them into the store.
//! Reports the time from the scan to the last chunk stored, what was stored, and the pod's
//! resident memory: its peak during the sync over its level while waiting for the scan
//! (sampled every 5 ms from /proc, and the kernel's VmHWM).
//!
//! ```sh
//! cargo build --release -p wasp-session-pod --features insecure-sim --bins
//! WASP_POD_BIN=target/release/wasp-session-pod cargo bench -p wasp-e2e --bench history
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use wasp_crds::names::session_name;
use wasp_e2e::stream_clients::WsClient;
use wasp_sim::history::HistoryPlan;

use common::{ApiReplica, World};

const SECRET: &str = "bench-secret-bench-secret-bench-secret";
const CHATS: u32 = 100;
const PER_CHAT: u32 = 100;

fn token(user: &str) -> String {
    common::token(user, SECRET)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<()> {
    let world = World::start("bench-history").await?;
    let result = run(&world).await;
    world.shutdown().await?;
    result
}

async fn run(world: &World) -> Result<()> {
    let api = ApiReplica::start(world, SECRET).await?;
    let user = "bench-history-user";
    let name = session_name(user);
    let mut ws = WsClient::connect(&format!("{}/?token={}", api.ws_base, token(user))).await?;
    ws.next_of("status").await?;
    common::api_call(
        reqwest::Method::POST,
        &format!("{}/connect", api.base),
        &token(user),
        None,
    )
    .await?;
    let qr = ws.next_of("qr").await?;
    let pid = world.node.process_of(&name).context("the pod's process")?;
    let phone = world.sim.create_phone(None, Some("Bench")).await?;
    world.running.sim.set_history(
        &phone.phone,
        HistoryPlan {
            chats: CHATS,
            messages_per_chat: PER_CHAT,
            contacts: Vec::new(),
            chunk_messages: 0,
        },
    )?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = wasp_e2e::proc_status_kib(pid, "VmRSS:");
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(wasp_e2e::proc_status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let t = Instant::now();
    world
        .sim
        .scan_qr(&phone.phone, qr["data"]["qr"].as_str().context("qr")?)
        .await?;
    let chunks = wasp_e2e::eventually(Duration::from_secs(300), || async {
        let p = world.running.sim.history_progress(&phone.phone);
        p.iter().find(|d| d.done).map(|d| d.chunks as usize)
    })
    .await
    .context("the phone never finished sending its history")?;
    let logs = wasp_e2e::eventually(Duration::from_secs(300), || async {
        let logs = common::api_call(
            reqwest::Method::GET,
            &format!("{}/logs?limit=500", api.base),
            &token(user),
            None,
        )
        .await
        .ok()?;
        let n = logs
            .as_array()?
            .iter()
            .filter(|l| l["eventType"] == "history_sync")
            .count();
        (n >= chunks).then_some(logs)
    })
    .await
    .context("the pod never processed every chunk")?;
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let stored: usize = logs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["eventType"] == "history_sync")
        .filter_map(|l| {
            let d = l["eventData"].as_str()?;
            let n = d.split(" conversations, ").nth(1)?.split(' ').next()?;
            n.parse::<usize>().ok()
        })
        .sum();
    let chats = common::api_call(
        reqwest::Method::GET,
        &format!("{}/chats", api.base),
        &token(user),
        None,
    )
    .await?;
    let peak = peak.load(Ordering::Relaxed);
    println!("history: {CHATS} chats × {PER_CHAT} messages");
    println!(
        "scan → last chunk stored: {:.2} s; {stored} messages stored, {} chats listed",
        took.as_secs_f64(),
        chats.as_array().map_or(0, Vec::len)
    );
    println!(
        "pod RSS: {before} KiB before, peak {peak} KiB (+{} KiB), VmHWM {} KiB",
        peak.saturating_sub(before),
        wasp_e2e::proc_status_kib(pid, "VmHWM:")
    );
    Ok(())
}
