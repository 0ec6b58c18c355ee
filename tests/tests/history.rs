//! The chat history after linking, on the whole stack: the simulated phone sends its history
//! (history-sync notifications, encrypted blobs on the simulator's media server) to the session
//! pod's unmodified client right after pairing; `/chats` then shows the phone's chats. Under
//! `contactsOnly` only the whitelisted contacts' chats are kept.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use wasp_crds::{Phase, names::session_name};
use wasp_e2e::stream_clients::WsClient;
use wasp_sim::history::HistoryPlan;

use common::{ApiReplica, WAIT, World, phase, wait_status};

const JWT_SECRET: &str = "history-test-secret-history-test-secret";
const CHATS: u32 = 50;
const PER_CHAT: u32 = 3;

fn token(user: &str) -> String {
    common::token(user, JWT_SECRET)
}

fn user(tag: &str) -> String {
    format!(
        "hist-{tag}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() % 1_000_000_000)
            .unwrap_or_default()
    )
}

async fn call(
    api: &ApiReplica,
    method: reqwest::Method,
    path: &str,
    user: &str,
    body: Option<Value>,
) -> Result<Value> {
    common::api_call(method, &format!("{}{path}", api.base), &token(user), body).await
}

/// `/chats` once it lists `n` chats (validated against the OpenAPI document).
async fn chats_when(api: &ApiReplica, user: &str, n: usize) -> Result<Vec<Value>> {
    let last = std::sync::atomic::AtomicUsize::new(0);
    let found = wasp_e2e::eventually(WAIT, || async {
        let chats = call(api, reqwest::Method::GET, "/chats", user, None)
            .await
            .ok()?;
        let chats = chats.as_array()?.clone();
        last.store(chats.len(), std::sync::atomic::Ordering::Relaxed);
        (chats.len() >= n).then_some(chats)
    })
    .await;
    found.with_context(|| {
        format!(
            "/chats never listed {n} chats (last: {})",
            last.load(std::sync::atomic::Ordering::Relaxed)
        )
    })
}

/// Waits until the phone's every history chunk was acknowledged by the device and the pod
/// logged each as processed (chunks are processed concurrently, in any order).
async fn history_stored(world: &World, api: &ApiReplica, user: &str, phone: &str) -> Result<()> {
    let chunks = wasp_e2e::eventually(WAIT, || async {
        let p = world.running.sim.history_progress(phone);
        p.iter().find(|d| d.done).map(|d| d.chunks as usize)
    })
    .await
    .context("the phone never finished sending its history")?;
    wasp_e2e::eventually(WAIT, || async {
        let logs = call(api, reqwest::Method::GET, "/logs?limit=500", user, None)
            .await
            .ok()?;
        let n = logs
            .as_array()?
            .iter()
            .filter(|l| l["eventType"] == "history_sync")
            .count();
        (n >= chunks).then_some(())
    })
    .await
    .with_context(|| format!("the pod never logged all {chunks} history chunks"))
}

/// Connects `user`'s session (the QR is up when this returns) and gives the WebSocket.
async fn connect(api: &ApiReplica, user: &str) -> Result<(WsClient, String)> {
    let mut ws = WsClient::connect(&format!("{}/?token={}", api.ws_base, token(user))).await?;
    ws.next_of("status").await?;
    call(api, reqwest::Method::POST, "/connect", user, None).await?;
    let qr = ws.next_of("qr").await?;
    let code = qr["data"]["qr"].as_str().context("qr")?.to_owned();
    Ok((ws, code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_linked_phones_history_shows_in_chats_as_the_storage_policy_allows() -> Result<()> {
    let world = World::start("history").await?;
    let users = [user("all"), user("contacts")];
    let result = scenario(&world, &users).await;
    if let Err(e) = &result {
        for u in &users {
            let name = session_name(u);
            eprintln!(
                "history test failed: {e:#}\n--- session pod {name} (last 60 lines) ---\n{}",
                world.node.log_tail(&name, 60)
            );
        }
    }
    world.shutdown().await?;
    result
}

async fn scenario(world: &World, users: &[String; 2]) -> Result<()> {
    let api = ApiReplica::start(world, JWT_SECRET).await?;
    let ana = world.sim.create_contact(None, Some("Ana")).await?;
    let ben = world.sim.create_contact(None, Some("Ben")).await?;
    let plan = |_: ()| HistoryPlan {
        chats: CHATS,
        messages_per_chat: PER_CHAT,
        contacts: vec![ana.phone.clone(), ben.phone.clone()],
        chunk_messages: 40,
    };

    // Storage `all`: every chat of the phone.
    let all = &users[0];
    let (mut ws, code) = connect(&api, all).await?;
    let phone = world.sim.create_phone(None, Some("Dr History")).await?;
    world.running.sim.set_history(&phone.phone, plan(()))?;
    world.sim.scan_qr(&phone.phone, &code).await?;
    ws.next_of("ready").await?;
    wait_status(&world.sessions(), &session_name(all), "Connected", |s| {
        phase(s) == Some(Phase::Connected)
    })
    .await?;
    history_stored(world, &api, all, &phone.phone).await?;
    let chats = chats_when(&api, all, CHATS as usize).await?;
    assert_eq!(chats.len(), CHATS as usize, "{chats:?}");
    let ana_chat = format!("{}@c.us", ana.phone);
    let listed = chats
        .iter()
        .find(|c| c["id"]["_serialized"] == ana_chat.as_str())
        .context("Ana's chat is in /chats")?;
    ensure!(listed["lastMessage"].is_object(), "{listed}");
    let msgs = call(
        &api,
        reqwest::Method::GET,
        &format!("/messages/{ana_chat}?limit=50"),
        all,
        None,
    )
    .await?;
    let msgs = msgs.as_array().context("messages")?;
    assert_eq!(msgs.len(), PER_CHAT as usize, "{msgs:?}");
    ensure!(
        msgs.windows(2)
            .all(|w| w[0]["timestamp"].as_i64() <= w[1]["timestamp"].as_i64()),
        "oldest first: {msgs:?}"
    );
    ensure!(
        msgs.iter().any(|m| m["fromMe"] == true) && msgs.iter().any(|m| m["fromMe"] == false),
        "both sides of the conversation: {msgs:?}"
    );
    // History is stored, not announced as new messages.
    let early = tokio::time::timeout(Duration::from_millis(500), ws.next_of("message")).await;
    ensure!(early.is_err(), "a history message was announced: {early:?}");

    // Storage `contactsOnly` (the API's default for the sessions it makes) with Ana whitelisted
    // before the scan: only Ana's chat.
    let api = ApiReplica::start_with(
        world,
        JWT_SECRET,
        &["--default-storage-policy", "contactsOnly"],
    )
    .await?;
    let only = &users[1];
    let (mut ws, code) = connect(&api, only).await?;
    let phone = world.sim.create_phone(None, Some("Dr Whitelist")).await?;
    world.running.sim.set_history(&phone.phone, plan(()))?;
    wait_status(
        &world.sessions(),
        &session_name(only),
        "AwaitingScan",
        |s| phase(s) == Some(Phase::AwaitingScan),
    )
    .await?;
    call(
        &api,
        reqwest::Method::POST,
        "/api/whatsapp/contact/add",
        only,
        Some(json!({"mobileNo": format!("+{}", ana.phone), "name": "Ana"})),
    )
    .await?;
    world.sim.scan_qr(&phone.phone, &code).await?;
    ws.next_of("ready").await?;
    let chats = chats_when(&api, only, 1).await?;
    // Wait for every chunk: the phone has them all acknowledged, and the pod logged each.
    history_stored(world, &api, only, &phone.phone).await?;
    let chats_after = call(&api, reqwest::Method::GET, "/chats", only, None).await?;
    let ids: Vec<&str> = chats_after
        .as_array()
        .context("chats")?
        .iter()
        .filter_map(|c| c["id"]["_serialized"].as_str())
        .collect();
    assert_eq!(
        ids,
        [ana_chat.as_str()],
        "only the whitelisted contact's chat: {chats:?}"
    );
    Ok(())
}
