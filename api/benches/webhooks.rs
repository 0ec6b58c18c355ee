//! Webhook delivery on the real parts: one API replica in-process (its dispatcher), the real
//! Redis and kube-apiserver of the test harness, 100 sessions each with its own webhook, and a
//! real HTTP receiver on 127.0.0.2. Events are written to Redis exactly as a session pod
//! writes an inbound message (the `message_create` + `message` stream entry); each webhook
//! asks for `message`.
//!
//! - added latency: one event at a time, from the pod's write (XADD) to the request at the
//!   receiver (the contact → pod part is the same as for a WebSocket client:
//!   `tests/benches/api.rs`);
//! - throughput: 100 events per session written at once (10,000 in all), delivered per
//!   endpoint in order; deliveries per second until the last one arrives.
//!
//! ```sh
//! cargo bench -p wasp-api --bench webhooks
//! ```
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use serde_json::json;
use wasp_api::pods::NotWired;
use wasp_e2e::webhook_receiver::Receiver;

use common::{Producer, Replica, namespace, put_session, text_message, token};

const SESSIONS: usize = 100;
const LATENCY_SAMPLES: usize = 1_000;
const PER_SESSION: usize = 100;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn user(i: usize) -> String {
    format!("bench-wh-{i:03}")
}

/// The `message N` number of a delivery.
fn number(body: &serde_json::Value) -> usize {
    body["data"]["body"]
        .as_str()
        .and_then(|b| b.strip_prefix("message "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; there is nothing to select.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> Result<()> {
    let (client, ns) = namespace("bench-wh").await?;
    let api = Replica::start_with(&client, &ns, Arc::new(NotWired), &common::WEBHOOK_FLAGS).await?;
    let rx = Receiver::start().await?;
    let http = reqwest::Client::new();
    for i in 0..SESSIONS {
        let u = user(i);
        put_session(&client, &ns, &api, &u, "Connected", None).await?;
        let resp = http
            .put(format!("{}/webhooks", api.base))
            .bearer_auth(token(&u))
            .json(&json!({"url": format!("{}/{u}", rx.base)}))
            .send()
            .await?;
        ensure!(resp.status() == 201, "PUT /webhooks: {}", resp.status());
    }
    let producer = Producer::connect().await?;
    // Every endpoint's worker running: one event each, all delivered.
    let mut n = 0;
    for i in 0..SESSIONS {
        producer.clone().emit(&user(i), text_message(n)).await?;
        n += 1;
    }
    rx.wait_for(SESSIONS, Duration::from_secs(60), |_| true)
        .await?;
    println!("{SESSIONS} sessions, each with a webhook; every worker delivering");

    // Added latency: one event at a time, round robin over the sessions.
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for k in 0..LATENCY_SAMPLES {
        let before = rx.got().len();
        let wrote = Instant::now();
        producer
            .clone()
            .emit(&user(k % SESSIONS), text_message(n))
            .await?;
        let got = rx
            .wait_for(before + 1, Duration::from_secs(10), |_| true)
            .await?;
        let g = got.last().unwrap();
        ensure!(number(&g.json()) == n, "an unexpected delivery");
        samples.push(g.at - wrote);
        n += 1;
    }
    samples.sort();
    println!(
        "stream write → webhook request: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {LATENCY_SAMPLES})",
        pct(&samples, 0.5),
        pct(&samples, 0.99),
        pct(&samples, 1.0)
    );

    // Throughput: 100 events per session written at once.
    let before = rx.got().len();
    let first = n;
    let start = Instant::now();
    for _ in 0..PER_SESSION {
        let writes = (0..SESSIONS).map(|i| {
            let mut p = producer.clone();
            let k = n + i;
            async move { p.emit(&user(i), text_message(k)).await }
        });
        for r in futures::future::join_all(writes).await {
            r?;
        }
        n += SESSIONS;
    }
    let written = start.elapsed();
    let total = SESSIONS * PER_SESSION;
    let got = rx
        .wait_for(before + total, Duration::from_secs(600), |_| true)
        .await
        .context("not every event was delivered")?;
    let burst = &got[before..];
    let last = burst.iter().map(|g| g.at).max().unwrap();
    let took = last - start;
    // Each endpoint got its events in the order written, each once.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for g in burst {
        let k = number(&g.json());
        ensure!(k >= first && k < n, "an unexpected delivery {k}");
        let prev = seen.insert(g.path.clone(), k);
        ensure!(prev.is_none_or(|p| p < k), "out of order at {}", g.path);
    }
    println!(
        "{total} events written in {:.2} s, all delivered in {:.2} s: {:.0} deliveries/s",
        written.as_secs_f64(),
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    Ok(())
}
