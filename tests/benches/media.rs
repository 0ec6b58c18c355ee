//! Media through the whole stack (the world of `tests/tests/common`): a 10 MB file sent through
//! the API as a multipart form (API → session pod: encrypt to /tmp, upload to the simulator's
//! HTTPS media server → the contact decrypts it) and fetched back through the API's media route
//! (pod: download from the media server, decrypt and check into /tmp, stream out). Reports the
//! time of each and the session pod's resident memory: its peak during the transfers over its
//! level before (sampled every 5 ms from /proc, plus the kernel's VmHWM).
//!
//! ```sh
//! cargo build --release -p wasp-session-pod --features insecure-sim --bins
//! WASP_POD_BIN=target/release/wasp-session-pod cargo bench -p wasp-e2e --bench media
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use wasp_crds::{Phase, names::session_name};
use wasp_e2e::stream_clients::WsClient;

use common::{ApiReplica, World, phase, wait_status};

const SECRET: &str = "bench-secret-bench-secret-bench-secret";
const SIZE: usize = 10 * 1000 * 1000;
const ROUNDS: usize = 5;

fn token(user: &str) -> String {
    common::token(user, SECRET)
}

/// Samples the RSS of `pid` until stopped; the highest seen.
fn sample_peak(
    pid: u32,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            peak.fetch_max(wasp_e2e::proc_status_kib(pid, "VmRSS:"), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<()> {
    let world = World::start("bench-media").await?;
    let result = run(&world).await;
    world.shutdown().await?;
    result
}

async fn run(world: &World) -> Result<()> {
    let api = ApiReplica::start_with(world, SECRET, &["--max-file-size", "16mb"]).await?;
    let user = "bench-media-user";
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
    let phone = world.sim.create_phone(None, Some("Bench")).await?;
    world
        .sim
        .scan_qr(&phone.phone, qr["data"]["qr"].as_str().context("qr")?)
        .await?;
    ws.next_of("ready").await?;
    let name = session_name(user);
    wait_status(&world.sessions(), &name, "Connected", |s| {
        phase(s) == Some(Phase::Connected)
    })
    .await?;
    let pid = world.node.process_of(&name).context("the pod's process")?;
    let contact = world
        .sim
        .create_contact(None, Some("Bench contact"))
        .await?;
    let chat = format!("{}@c.us", contact.phone);
    let data = wasp_e2e::test_file(SIZE, 9);
    let http = reqwest::Client::new();
    // Settle: one small send first (Signal session, media connection).
    common::api_call(
        reqwest::Method::POST,
        &format!("{}/send", api.base),
        &token(user),
        Some(serde_json::json!({"chatId": chat, "message": "hello"})),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = wasp_e2e::proc_status_kib(pid, "VmRSS:");
    let hwm_before = wasp_e2e::proc_status_kib(pid, "VmHWM:");
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = sample_peak(pid, stop.clone(), peak.clone());
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let form = reqwest::multipart::Form::new()
            .text("chatId", chat.clone())
            .part(
                "file",
                reqwest::multipart::Part::bytes(data.clone())
                    .file_name(format!("scan-{round}.pdf"))
                    .mime_str("application/pdf")?,
            );
        let t = Instant::now();
        let r = http
            .post(format!("{}/send", api.base))
            .bearer_auth(token(user))
            .multipart(form)
            .send()
            .await?;
        ensure!(r.status().is_success(), "send: {}", r.status());
        let sent: Value = r.json().await?;
        ups.push(t.elapsed());
        let key = sent["message"]["id"]["_serialized"]
            .as_str()
            .context("key")?
            .to_owned();
        let id = sent["message"]["id"]["id"]
            .as_str()
            .context("id")?
            .to_owned();
        let t = Instant::now();
        let r = http
            .get(format!("{}/messages/{chat}/{key}/media", api.base))
            .bearer_auth(token(user))
            .send()
            .await?;
        ensure!(r.status().is_success(), "download: {}", r.status());
        let body = r.bytes().await?;
        downs.push(t.elapsed());
        ensure!(
            body.as_ref() == data.as_slice(),
            "the file came back different"
        );
        let got = wasp_e2e::eventually(Duration::from_secs(60), || async {
            world
                .running
                .sim
                .contact_received_media(&contact.phone, &id)
        })
        .await
        .context("the contact never decrypted the file")?;
        ensure!(got == data, "the contact decrypted another file");
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let peak = peak.load(Ordering::Relaxed);
    let hwm = wasp_e2e::proc_status_kib(pid, "VmHWM:");
    let ms = |d: &[Duration]| {
        let mut v: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        v.sort_by(f64::total_cmp);
        format!(
            "median {:.0} ms, min {:.0} ms, max {:.0} ms",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1]
        )
    };
    println!("file: {SIZE} bytes ({ROUNDS} rounds)");
    println!(
        "send (multipart → pod → encrypted upload → sent): {}",
        ms(&ups)
    );
    println!(
        "download (media route → pod fetch, decrypt, check → client): {}",
        ms(&downs)
    );
    println!(
        "pod RSS: {before} KiB before, peak {peak} KiB sampled (+{} KiB), VmHWM {hwm_before} → {hwm} KiB (+{} KiB); file {} KiB",
        peak.saturating_sub(before),
        hwm.saturating_sub(hwm_before),
        SIZE / 1024
    );
    Ok(())
}
