//! wasp-api benchmarks on the whole stack (the world of `tests/tests/common`: local apiserver,
//! Redis, operator, local node running session pod processes, the WhatsApp simulator):
//!
//! - `POST /connect` (the CR is created) → QR event on an API WebSocket;
//! - inbound message: the simulated contact sends → the `message` event reaches a WebSocket
//!   client of the API;
//! - `/send` throughput through the API for one session, every message decrypted by the contact;
//! - routing overhead: the same calls through the API and straight to the session pod.
//!
//! ```sh
//! cargo build --release -p wasp-session-pod --features insecure-sim --bins
//! WASP_POD_BIN=target/release/wasp-session-pod cargo bench -p wasp-e2e --bench api
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;
use wasp_crds::names::session_name;
use wasp_e2e::stream_clients::WsClient;

use common::{ApiReplica, World};

const SECRET: &str = "bench-secret-bench-secret-bench-secret";
const CONNECTS: usize = 10;
const INBOUND: usize = 300;
const SENDS: usize = 2000;
const CONCURRENCY: usize = 32;
const CALLS: usize = 500;

fn token(user: &str) -> String {
    common::token(user, SECRET)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})",
        pct(&samples, 0.5),
        pct(&samples, 0.99),
        pct(&samples, 1.0),
        samples.len()
    );
}

/// `n` requests with `concurrency` in flight; all must succeed. Requests per second.
async fn throughput(
    n: usize,
    concurrency: usize,
    request: impl Fn(usize) -> reqwest::RequestBuilder,
) -> Result<f64> {
    let start = Instant::now();
    let results: Vec<Result<reqwest::StatusCode, reqwest::Error>> =
        futures::stream::iter((0..n).map(|i| {
            let req = request(i);
            async move { req.send().await.map(|r| r.status()) }
        }))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let failed = results
        .iter()
        .filter(|r| !r.as_ref().is_ok_and(|s| s.is_success()))
        .count();
    ensure!(failed == 0, "{failed} of {n} requests failed");
    Ok(n as f64 / elapsed.as_secs_f64())
}

async fn sequential(
    n: usize,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = request().send().await?;
        ensure!(r.status().is_success(), "{}", r.status());
        r.bytes().await?;
        out.push(t.elapsed());
    }
    Ok(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let world = World::start("bench-api").await?;
    let result = run(&world).await;
    world.shutdown().await?;
    result
}

async fn run(world: &World) -> Result<()> {
    let api = ApiReplica::start(world, SECRET).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;

    // 1. POST /connect → QR on the WebSocket, one new user (CR, pod process, client) each time.
    let mut to_qr = Vec::new();
    let mut first = None;
    for i in 0..CONNECTS {
        let user = format!("bench-{i}@clinic.example");
        let mut ws = WsClient::connect(&format!("{}/?token={}", api.ws_base, token(&user))).await?;
        ws.next().await?;
        let t = Instant::now();
        let r = http
            .post(format!("{}/connect", api.base))
            .bearer_auth(token(&user))
            .send()
            .await?;
        ensure!(r.status().is_success(), "connect: {}", r.status());
        let qr = ws.next_of("qr").await?;
        to_qr.push(t.elapsed());
        if first.is_none() {
            first = Some((
                user,
                ws,
                qr["data"]["qr"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    report("POST /connect → QR on the API WebSocket", to_qr);

    // The first user pairs; the others stay waiting for a scan.
    let (user, mut ws, code) = first.context("no session")?;
    let phone = world.sim.create_phone(None, Some("Dr Bench")).await?;
    world.sim.scan_qr(&phone.phone, &code).await?;
    ws.next_of("ready").await?;
    let contact = world.sim.create_contact(None, Some("Ann")).await?;

    // 2. Inbound: contact → simulator → session pod → Redis → API → WebSocket client.
    let mut inbound = Vec::with_capacity(INBOUND);
    for n in 0..INBOUND {
        let text = format!("inbound {n}");
        let t = Instant::now();
        world
            .sim
            .contact_send(&contact.phone, &phone.phone, &text)
            .await?;
        loop {
            let e = ws.next_of("message").await?;
            if e["data"]["body"] == text.as_str() {
                break;
            }
        }
        inbound.push(t.elapsed());
    }
    report("inbound message: simulator → API WebSocket client", inbound);

    // 3. /send through the API, one session; every message must reach the contact.
    let chat = format!("{}@c.us", contact.phone);
    let bearer = token(&user);
    let (url, http2, chat2, bearer2) = (
        format!("{}/send", api.base),
        http.clone(),
        chat.clone(),
        bearer.clone(),
    );
    let api_rate = throughput(SENDS, CONCURRENCY, move |i| {
        http2
            .post(&url)
            .bearer_auth(&bearer2)
            .json(&json!({"chatId": chat2, "message": format!("api send {i}")}))
    })
    .await?;
    let got = world
        .sim
        .contact_received(&contact.phone, SENDS, Duration::from_secs(120))
        .await?;
    let delivered = got
        .iter()
        .filter(|m| m.text.starts_with("api send "))
        .count();
    println!(
        "/send through the API: {api_rate:.0} msg/s ({SENDS} sends, concurrency {CONCURRENCY}; {delivered} decrypted by the contact)"
    );
    ensure!(
        delivered == SENDS,
        "only {delivered} of {SENDS} sends arrived"
    );

    // 4. Routing overhead: the same calls straight to the pod with its control token.
    let name = session_name(&user);
    let session = world.sessions().get(&name).await?;
    let endpoint = session
        .status
        .and_then(|s| s.endpoint)
        .context("no endpoint")?;
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), &world.ns);
    let control = secrets.get(&format!("{name}-control")).await?;
    let pod_token = String::from_utf8(
        control
            .data
            .and_then(|d| d.get("token").cloned())
            .context("control token")?
            .0,
    )?;
    let pod_token = Arc::new(pod_token);
    let (url, http2, pt) = (
        format!("http://{endpoint}/v1/send"),
        http.clone(),
        pod_token.clone(),
    );
    let jid = format!("{}@s.whatsapp.net", contact.phone);
    let pod_rate = throughput(SENDS, CONCURRENCY, move |i| {
        http2
            .post(&url)
            .bearer_auth(pt.as_str())
            .json(&json!({"to": jid, "text": format!("pod send {i}")}))
    })
    .await?;
    println!(
        "/v1/send straight to the pod: {pod_rate:.0} msg/s ({SENDS} sends, concurrency {CONCURRENCY})"
    );
    let via_api = sequential(CALLS, || {
        http.get(format!("{}/chats", api.base)).bearer_auth(&bearer)
    })
    .await?;
    let direct = sequential(CALLS, || {
        http.get(format!("http://{endpoint}/v1/chats"))
            .bearer_auth(pod_token.as_str())
    })
    .await?;
    report("GET /chats through the API", via_api);
    report("GET /v1/chats straight to the pod", direct);
    Ok(())
}
