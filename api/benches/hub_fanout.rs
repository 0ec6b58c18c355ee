//! The replica's event fan-out (`wasp_api::stream::hub`) on a real Redis: N watched users, each
//! with one subscription, then M durable events, one every `--gap-ms`, each for a random user
//! and written exactly as a session pod writes it (`XADD` + `PUBLISH` in one pipeline). Measures
//! the time from sending the write to the event coming out of that user's subscription (what a
//! WebSocket or SSE client's task then sends), and checks that no other user got it.
//!
//! ```sh
//! cargo bench -p wasp-api --bench hub_fanout -- --users 1000 --events 1000 --gap-ms 20
//! ```
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wasp_api::metrics::Metrics;
use wasp_api::redis_conn::Redis;
use wasp_api::stream::hub::Hub;
use wasp_common::events::{self as ev, Envelope, Kind, emit_pipeline};
use wasp_common::keys::UserKeys;
use wasp_e2e::bench_arg as arg;
use wasp_e2e::redis_server::RedisServer;

fn user(i: usize) -> String {
    format!("bench-hub-{i:04}")
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> Result<()> {
    let users = arg("--users", 1000);
    let events = arg("--events", 1000);
    let gap = Duration::from_millis(arg("--gap-ms", 20) as u64);
    let server = RedisServer::start()?;
    let timeout = Duration::from_secs(5);
    let redis = Arc::new(Redis::new(&server.url(), timeout)?);
    let stop = CancellationToken::new();
    let hub = Hub::start(redis, Arc::new(Metrics::new()), timeout, stop.clone());

    // One subscription per user, each drained by its own task (as a client's task does).
    let (got_tx, mut got) = mpsc::unbounded_channel::<(usize, Option<String>, Instant)>();
    let started = Instant::now();
    for i in 0..users {
        let mut sub = hub.subscribe(&user(i), None).await?;
        let got_tx = got_tx.clone();
        tokio::spawn(async move {
            while let Some(e) = sub.next().await {
                let _ = got_tx.send((i, e.id.clone(), Instant::now()));
            }
        });
    }
    ensure!(hub.feeds() == users, "{} feeds, not {users}", hub.feeds());
    println!(
        "{users} users watched in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let client = redis::Client::open(server.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut samples = Vec::with_capacity(events);
    for k in 0..events {
        let target = rand::random_range(0..users);
        let name = user(target);
        let envelope = Envelope {
            user_hash: wasp_common::user_hash(&name),
            at_ms: jiff::Timestamp::now().as_millisecond(),
            kind: Some(Kind::Log(ev::Log {
                level: "info".into(),
                event_type: "bench".into(),
                message: format!("event {k}"),
            })),
        }
        .encode_to_vec();
        let wrote = Instant::now();
        let (id,): (String,) = emit_pipeline(&UserKeys::for_user(&name), 10_000, &envelope)
            .query_async(&mut conn)
            .await?;
        let (to, got_id, at) = tokio::time::timeout(Duration::from_secs(10), got.recv())
            .await
            .with_context(|| format!("event {k} for {name} never delivered"))?
            .context("the subscriptions ended")?;
        ensure!(
            to == target && got_id.as_deref() == Some(id.as_str()),
            "event {k} ({id} for user {target}) came out as {got_id:?} for user {to}"
        );
        samples.push(at - wrote);
        tokio::time::sleep(gap).await;
    }
    // Nothing else came out (another user's copy, a duplicate).
    tokio::time::sleep(Duration::from_millis(200)).await;
    ensure!(got.try_recv().is_err(), "an event was delivered twice");
    samples.sort();
    println!(
        "XADD → subscription, {users} users: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {events}, one every {} ms)",
        pct(&samples, 0.5),
        pct(&samples, 0.99),
        pct(&samples, 1.0),
        gap.as_millis()
    );
    stop.cancel();
    Ok(())
}
