//! End to end on the installed chart (issue 10): `charts/wasp` installed into a fresh namespace
//! with the real Helm SDK, its pods (2 operators, 2 APIs, Redis) and the session pods run as
//! processes of the built binaries by the local node, the WhatsApp simulator in-process. A CRM's
//! flow through the API's Service address: WebSocket → POST /connect → `qr` → the phone scans →
//! `ready` → a contact writes → `message` → POST /send → the contact decrypts it → POST
//! /disconnect → the WhatsAppSession is deleted, its finalizer runs, and the user's keys are gone
//! from the chart's Redis. Then the release is uninstalled.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use futures::StreamExt as _;
use kube::Api;
use kube::api::{DeleteParams, WatchEvent, WatchParams};
use kube::runtime::wait::conditions::is_deleted;
use serde_json::{Value, json};
use wasp_common::keys::UserKeys;
use wasp_crds::{Phase, WhatsAppSession, names::session_name};
use wasp_e2e::chart_world::ChartWorld;
use wasp_e2e::{eventually, wait_for};

use common::{WAIT, phase, wait_status};

fn user() -> String {
    format!("dr-chart-{:x}@clinic.example", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_installed_chart_connects_chats_and_cleans_up() -> Result<()> {
    common::init_tracing();
    let t0 = Instant::now();
    let world = ChartWorld::install("chart-stack", &json!({})).await?;
    eprintln!(
        "chart stack: helm install → API ready behind its Service in {:?}",
        t0.elapsed()
    );
    let result = scenario(&world).await;
    if let Err(e) = &result {
        let name = session_name(&user());
        eprintln!(
            "chart stack test failed: {e:#}\n--- session pod {name} (last 60 lines) ---\n{}",
            world.node.log_tail(&name, 60)
        );
    }
    let shut = world.shutdown().await;
    result?;
    shut
}

async fn call(
    world: &ChartWorld,
    method: reqwest::Method,
    path: &str,
    user: &str,
    body: Option<Value>,
) -> Result<Value> {
    let url = format!("{}{path}", world.api_base());
    common::api_call(method, &url, &world.token(user), body).await
}

async fn scenario(world: &ChartWorld) -> Result<()> {
    let t_start = Instant::now();
    let (client, ns, sim, node) = (&world.client, world.ns.as_str(), &world.sim, &world.node);
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), ns);
    let user = user();
    let name = session_name(&user);
    let api_addr = &world.api_addr;

    // When the WhatsAppSession appears (the API creates it on /connect): a watch open before
    // the connect.
    let wp = WatchParams::default().fields(&format!("metadata.name={name}"));
    let mut stream = sessions.watch(&wp, "0").await?.boxed();
    let seen = tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            if matches!(ev?, WatchEvent::Added(_) | WatchEvent::Modified(_)) {
                return Ok(Instant::now());
            }
        }
        anyhow::bail!("the watch of the WhatsAppSession ended")
    });

    let mut ws = wasp_e2e::stream_clients::WsClient::connect(&format!(
        "ws://{api_addr}/?token={}",
        world.token(&user)
    ))
    .await?;
    let hello = ws.next().await?;
    ensure!(hello["type"] == "status", "{hello}");

    let t0 = Instant::now();
    let connected = call(world, reqwest::Method::POST, "/connect", &user, None).await?;
    ensure!(connected["success"] == true, "{connected}");
    let qr = ws.next_of("qr").await?;
    let t_qr = Instant::now();
    let created = tokio::time::timeout(WAIT, seen)
        .await
        .context("the WhatsAppSession never appeared")???;
    eprintln!(
        "chart stack: connect → QR in {:?} ({:?} from the WhatsAppSession's creation)",
        t_qr - t0,
        t_qr.saturating_duration_since(created)
    );
    let code = qr["data"]["qr"].as_str().context("qr code")?.to_owned();

    // The phone scans: `ready`, and the session is Connected.
    let phone = sim.create_phone(None, Some("Dr Chart")).await?;
    sim.scan_qr(&phone.phone, &code).await?;
    let ready = ws.next_of("ready").await?;
    ensure!(
        ready["data"]["phone"]
            .as_str()
            .is_some_and(|p| p.contains(&phone.phone)),
        "{ready}"
    );
    wait_status(&sessions, &name, "Connected", |s| {
        phase(s) == Some(Phase::Connected)
    })
    .await?;

    // A contact writes: `message` on the WebSocket.
    let contact = sim.create_contact(None, Some("Ann")).await?;
    sim.contact_send(&contact.phone, &phone.phone, "hello from the chart")
        .await?;
    let chat = format!("{}@c.us", contact.phone);
    let msg = ws.next_of("message").await?;
    ensure!(msg["data"]["body"] == "hello from the chart", "{msg}");
    ensure!(msg["data"]["from"] == chat.as_str(), "{msg}");
    ensure!(msg["data"]["fromMe"] == false, "{msg}");

    // The answer through /send; the contact decrypts it.
    let sent = call(
        world,
        reqwest::Method::POST,
        "/send",
        &user,
        Some(json!({"chatId": chat, "message": "see you at 10"})),
    )
    .await?;
    ensure!(sent["success"] == true, "{sent}");
    let received = sim
        .contact_received(&contact.phone, 1, Duration::from_secs(30))
        .await?;
    ensure!(
        received.iter().any(|m| m.text == "see you at 10"),
        "{received:?}"
    );

    // Who is connected to the chart's Redis: the session pod as its own user, the API as
    // `wasp-api`, neither as the admin (the operator's default user).
    let mut admin = world.redis().await?;
    let pod_user = wasp_common::acl::session_user_name(&user);
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await?;
    let users: Vec<&str> = clients
        .lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("user=")))
        .collect();
    ensure!(
        users.contains(&pod_user.as_str()),
        "no client of {pod_user}: {users:?}"
    );
    ensure!(
        users.contains(&"wasp-api"),
        "the API is not connected as wasp-api: {users:?}"
    );
    ensure!(
        wasp_common::acl::user_exists(&mut admin, &pod_user).await?,
        "no ACL user {pod_user}"
    );

    // /disconnect logs out: the session pod stops.
    let out = call(world, reqwest::Method::POST, "/disconnect", &user, None).await?;
    ensure!(out["message"] == "logged out and disconnecting", "{out}");
    eventually(WAIT, || async { node.finished(&name).then_some(()) })
        .await
        .context("the session pod kept running after /disconnect")?;
    ws.close().await;

    // The user's data is in the chart's Redis (reached through its Service, with the Secret's
    // password) until the session is deleted.
    let mut redis = world.redis().await?;
    let pattern = UserKeys::for_user(&user).scan_pattern();
    let before = scan(&mut redis, &pattern).await?;
    ensure!(!before.is_empty(), "no keys {pattern} in the chart's Redis");

    // Deleting the session: the operator's finalizer runs, then the object is gone, and with it
    // every key of the user.
    let uid = sessions
        .get(&name)
        .await?
        .metadata
        .uid
        .context("the session has no uid")?;
    sessions.delete(&name, &DeleteParams::default()).await?;
    wait_for(&sessions, &name, WAIT, is_deleted(&uid))
        .await
        .context("the WhatsAppSession was never deleted (finalizer)")?;
    let left = scan(&mut redis, &pattern).await?;
    ensure!(
        left.is_empty(),
        "the user's keys outlived the session: {left:?}"
    );
    ensure!(
        !wasp_common::acl::user_exists(&mut redis, &pod_user).await?,
        "the session's Redis user outlived it"
    );
    eprintln!("chart stack: whole flow in {:?}", t_start.elapsed());
    Ok(())
}

/// Every key matching `pattern`, by SCAN.
async fn scan(redis: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        found.extend(keys);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}
