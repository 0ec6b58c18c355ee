//! Session-pod benchmarks against the simulator and a local Redis (numbers for
//! docs/benchmarks.md). The pod under test is a release binary; the harness (simulator,
//! HTTP client) may be a dev build:
//!   cargo build --release -p wasp-session-pod --features insecure-sim --bins
//!   WASP_POD_BIN=$CARGO_TARGET_DIR/release/wasp-session-pod \
//!     cargo run -p wasp-session-pod --example bench
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use wasp_common::events::Kind;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// What the RSS is made of: anonymous vs file-backed, threads, and the largest mappings
/// (from /proc/PID/smaps: heap, anonymous arenas, the binary's text, stacks).
fn rss_breakdown(pid: u32) -> String {
    let mut out = format!(
        "RssAnon {} KiB, RssFile {} KiB, Threads {}\n",
        status_kib(pid, "RssAnon:"),
        status_kib(pid, "RssFile:"),
        status_kib(pid, "Threads:")
    );
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut maps: Vec<(u64, String)> = Vec::new();
    let mut current = String::new();
    for line in smaps.lines() {
        if let Some(rss) = line.strip_prefix("Rss:") {
            let kib = rss
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            maps.push((kib, current.clone()));
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-'))
        {
            let cols: Vec<&str> = line.split_whitespace().collect();
            current = format!(
                "{} {} {}",
                cols[0],
                cols[1],
                cols.get(5).unwrap_or(&"[anon]")
            );
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    for (kib, name) in maps.iter().take(12) {
        out.push_str(&format!("  {kib:>6} KiB  {name}\n"));
    }
    out
}

#[tokio::main]
async fn main() {
    let (running, sim) = start_sim().await;

    // 1. process start → QR event (pub/sub), p50 over 15 runs.
    let mut qr_ms = Vec::new();
    for _ in 0..15 {
        let user = unique_user("bench-qr");
        let mut live = Live::subscribe(&user).await;
        let t0 = Instant::now();
        let pod = Pod::start(&PodOpts::new(&user, &running.ws_url));
        live.next_qr().await;
        qr_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        pod.kill9();
    }
    let qr_p50 = pct(&mut qr_ms, 0.5);

    // 2. RSS of a connected idle session (after 10 s idle).
    let user = unique_user("bench");
    let opts = PodOpts::new(&user, &running.ws_url);
    let (pod, phone, _) = paired_pod(&running, &sim, opts).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_idle = rss_kib(pod.proc.pid());
    let breakdown = rss_breakdown(pod.proc.pid());

    // 3. sends through the control API to a simulated contact.
    let alice = sim.create_contact(None, Some("Alice")).await.unwrap();
    let n_send = 2000usize;
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    let mut tasks = futures::stream::FuturesUnordered::new();
    let conc = 32;
    let mut issued = 0;
    let mut done = 0;
    use futures::StreamExt as _;
    while done < n_send {
        while issued < n_send && tasks.len() < conc {
            let req = http
                .post(format!("{}/v1/send", pod.control))
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({"to": alice.phone, "body": format!("out {issued}")}))
                .send();
            tasks.push(req);
            issued += 1;
        }
        let r = tasks.next().await.unwrap().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
        done += 1;
    }
    let send_secs = t0.elapsed().as_secs_f64();
    let received = sim
        .contact_received(&alice.phone, n_send, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(received.len() >= n_send, "contact got {}", received.len());
    let sends_per_s = n_send as f64 / send_secs;

    // 4. inbound message → event on Redis (pub/sub), sequential.
    let mut live = Live::subscribe(&user).await;
    let mut lat = Vec::new();
    for i in 0..500 {
        let t0 = Instant::now();
        let id = sim
            .contact_send(&alice.phone, &phone, &format!("in {i}"))
            .await
            .unwrap();
        live.wait_for("message", |k| match k {
            Kind::Message(m) if m.message().is_some_and(|m| m.id.id == id) => Some(()),
            _ => None,
        })
        .await;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let rss_after = rss_kib(pod.proc.pid());
    println!("start_to_qr_p50_ms {qr_p50:.1}");
    println!("rss_idle_connected_kib {rss_idle}\n{breakdown}");
    println!("sends_per_s {sends_per_s:.0} ({n_send} sends, concurrency {conc}, {send_secs:.2} s)");
    println!(
        "inbound_to_event_ms p50 {:.2} p99 {:.2} (500 sequential)",
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat, 0.99)
    );
    println!("rss_after_load_kib {rss_after}");
    drop(running);
}
