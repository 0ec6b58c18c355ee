//! Conversation features on the whole stack (operator, session pods run as processes by the
//! local node, Redis, the WhatsApp simulator, an API replica), with the unmodified client in the
//! pod: replies, reactions, edits and revokes both ways, receipts (own messages from ack 1 to 3;
//! `seen` reaching the contact), typing both ways, a group of three contacts both ways, number
//! checks and profile pictures, idempotent sends (also across a kill -9 of the pod), send pacing
//! from the resource's spec, and bad input / another user's ids on every new route.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kube::api::PostParams;
use serde_json::{Value, json};
use wasp_crds::{Phase, SendRateLimit, WhatsAppSession, names::session_name};
use wasp_e2e::stream_clients::WsClient;
use wasp_sim::conversation::{ChatState, ReadKind};

use common::{ApiReplica, WAIT, World, phase, wait_status};

const JWT_SECRET: &str = "conversation-test-secret-conversation-x";

fn token(user: &str) -> String {
    common::token(user, JWT_SECRET)
}

fn user(tag: &str) -> String {
    format!(
        "conv-{tag}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() % 1_000_000_000)
            .unwrap_or_default()
    )
}

/// Connects `user`'s session and pairs a new simulated phone with it: the phone's number.
async fn pair(world: &World, api: &ApiReplica, user: &str) -> Result<(String, WsClient)> {
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
    let code = qr["data"]["qr"].as_str().context("qr")?.to_owned();
    let phone = world
        .sim
        .create_phone(None, Some("Dr Conversation"))
        .await?;
    world.sim.scan_qr(&phone.phone, &code).await?;
    ws.next_of("ready").await?;
    wait_connected(world, user).await?;
    Ok((phone.phone, ws))
}

async fn wait_connected(world: &World, user: &str) -> Result<()> {
    wait_status(&world.sessions(), &session_name(user), "Connected", |s| {
        phase(s) == Some(Phase::Connected)
    })
    .await?;
    Ok(())
}

/// A call that must succeed, its answer checked against the OpenAPI document.
async fn call(
    api: &ApiReplica,
    user: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    common::api_call(method, &format!("{}{path}", api.base), &token(user), body).await
}

/// A call's status, headers and JSON body (`Null` when empty), whatever the status.
async fn raw(
    api: &ApiReplica,
    user: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    idempotency_key: Option<&str>,
) -> Result<(u16, reqwest::header::HeaderMap, Value)> {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", api.base))
        .bearer_auth(token(user));
    if let Some(k) = idempotency_key {
        req = req.header("Idempotency-Key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("{path}: not JSON: {text}"))?
    };
    Ok((status, headers, body))
}

/// The next WebSocket event of `kind` whose data satisfies `pred` (others of that kind are
/// skipped).
async fn next_matching(
    ws: &mut WsClient,
    kind: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = ws.next_of(kind).await?;
            if pred(&e["data"]) {
                return Ok::<_, anyhow::Error>(e);
            }
        }
    })
    .await
    .with_context(|| format!("no matching {kind} event"))?
}

/// Waits until the contact has received a message that satisfies `pred`.
async fn contact_got(
    world: &World,
    contact: &str,
    what: &str,
    pred: impl Fn(&wasp_sim::world::ReceivedText) -> bool,
) -> Result<wasp_sim::world::ReceivedText> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = world
            .sim
            .contact_received(contact, 0, Duration::ZERO)
            .await?;
        if let Some(r) = got.iter().find(|r| pred(r)) {
            return Ok(r.clone());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the contact never got {what}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn send_text(chat: &str, text: &str) -> Value {
    json!({"chatId": chat, "message": text})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conversations_work_both_ways() -> Result<()> {
    let world = World::start("conversation").await?;
    let users = [user("a"), user("pace")];
    let result = scenario(&world, &users).await;
    if let Err(e) = &result {
        for u in &users {
            let name = session_name(u);
            eprintln!(
                "conversation test failed: {e:#}\n--- session pod {name} (last 100 lines) ---\n{}",
                world.node.log_tail(&name, 100)
            );
        }
    }
    world.shutdown().await?;
    result
}

async fn scenario(world: &World, users: &[String; 2]) -> Result<()> {
    let api = ApiReplica::start(world, JWT_SECRET).await?;
    let me = users[0].clone();
    let (phone, mut ws) = pair(world, &api, &me).await?;
    let ana = world.sim.create_contact(None, Some("Ana")).await?.phone;
    let chat = format!("{ana}@c.us");
    use reqwest::Method as M;

    // The contact writes; we reply quoting it, react to it, and it sees both.
    let a1 = world
        .sim
        .contact_send(&ana, &phone, "can I move my appointment?")
        .await?;
    next_matching(&mut ws, "message", |m| m["id"]["id"] == a1.as_str()).await?;
    let a1_key = format!("false_{chat}_{a1}");
    let mut reply = send_text(&chat, "yes, to Friday");
    reply["quotedMessageId"] = json!(a1_key);
    let sent = call(&api, &me, M::POST, "/send", Some(reply)).await?;
    let m1 = sent["message"]["id"]["id"]
        .as_str()
        .context("reply id")?
        .to_owned();
    assert_eq!(sent["message"]["hasQuotedMsg"], true, "{sent}");
    let got = contact_got(world, &ana, "the reply", |r| r.id == m1).await?;
    assert_eq!(got.quoted_id.as_deref(), Some(a1.as_str()), "{got:?}");
    assert_eq!(got.text, "yes, to Friday");

    let r = call(
        &api,
        &me,
        M::POST,
        "/react",
        Some(json!({"messageId": a1_key, "emoji": "👍"})),
    )
    .await?;
    assert_eq!(r["reaction"]["reaction"], "👍", "{r}");
    let got = contact_got(world, &ana, "the reaction", |r| r.reaction.is_some()).await?;
    let seen = got.reaction.context("reaction")?;
    assert_eq!(
        (seen.target_id.as_str(), seen.emoji.as_str()),
        (a1.as_str(), "👍")
    );

    // We edit our reply, then delete it for everyone: the contact sees both, and so does the store.
    let m1_key = format!("true_{chat}_{m1}");
    let edited = call(
        &api,
        &me,
        M::POST,
        &format!("/messages/{m1_key}/edit"),
        Some(json!({"body": "yes, to Friday 10:00"})),
    )
    .await?;
    assert_eq!(
        edited["message"]["body"], "yes, to Friday 10:00",
        "{edited}"
    );
    let got = contact_got(world, &ana, "the edit", |r| r.edit.is_some()).await?;
    let e = got.edit.context("edit")?;
    assert_eq!(
        (e.target_id.as_str(), e.text.as_str()),
        (m1.as_str(), "yes, to Friday 10:00")
    );
    next_matching(&mut ws, "message_edit", |d| {
        d["message"]["id"]["_serialized"] == m1_key.as_str()
    })
    .await?;
    let revoked = call(&api, &me, M::DELETE, &format!("/messages/{m1_key}"), None).await?;
    assert_eq!(revoked["message"]["type"], "revoked", "{revoked}");
    let got = contact_got(world, &ana, "the revoke", |r| r.revoked_id.is_some()).await?;
    assert_eq!(got.revoked_id.as_deref(), Some(m1.as_str()));

    // Own messages go from ack 1 to 3 as the contact's receipts arrive.
    let plain = call(
        &api,
        &me,
        M::POST,
        "/send",
        Some(send_text(&chat, "see you then")),
    )
    .await?;
    assert_eq!(plain["message"]["ack"], 1, "{plain}");
    let m2 = plain["message"]["id"]["id"]
        .as_str()
        .context("id")?
        .to_owned();
    let m2_key = format!("true_{chat}_{m2}");
    contact_got(world, &ana, "the plain message", |r| r.id == m2).await?;
    world
        .sim
        .contact_read(&ana, &phone, &[m2.as_str()], ReadKind::Read)
        .await?;
    next_matching(&mut ws, "message_ack", |d| {
        d["id"]["id"] == m2.as_str() && d["ack"] == 3
    })
    .await?;

    // The contact reacts to it, writes, edits and revokes what it wrote: each reaches us as
    // its whatsapp-web.js event, and the store shows the result.
    world.sim.contact_react(&ana, &phone, &m2, "❤️").await?;
    let e = next_matching(&mut ws, "message_reaction", |d| {
        d["msgId"]["_serialized"] == m2_key.as_str()
    })
    .await?;
    assert_eq!(e["data"]["reaction"], "❤️", "{e}");
    assert_eq!(e["data"]["senderId"], chat.as_str(), "{e}");
    let a2 = world
        .sim
        .contact_send(&ana, &phone, "I cant on Friday")
        .await?;
    next_matching(&mut ws, "message", |m| m["id"]["id"] == a2.as_str()).await?;
    world
        .sim
        .contact_edit(&ana, &phone, &a2, "I can't on Friday")
        .await?;
    let e = next_matching(&mut ws, "message_edit", |d| {
        d["message"]["id"]["id"] == a2.as_str()
    })
    .await?;
    assert_eq!(
        (
            e["data"]["newBody"].as_str(),
            e["data"]["prevBody"].as_str()
        ),
        (Some("I can't on Friday"), Some("I cant on Friday")),
        "{e}"
    );
    world.sim.contact_revoke(&ana, &phone, &a2).await?;
    let e = next_matching(&mut ws, "message_revoke_everyone", |d| {
        d["message"]["id"]["id"] == a2.as_str()
    })
    .await?;
    assert_eq!(e["data"]["revokedMsg"]["body"], "I can't on Friday", "{e}");
    let a3 = world
        .sim
        .contact_reply(&ana, &phone, &m2, "then Monday?")
        .await?;
    let e = next_matching(&mut ws, "message", |m| m["id"]["id"] == a3.as_str()).await?;
    assert_eq!(e["data"]["hasQuotedMsg"], true, "{e}");
    assert_eq!(e["data"]["quotedMsgId"], m2_key.as_str(), "{e}");
    let listed = call(
        &api,
        &me,
        M::GET,
        &format!("/messages/{chat}?limit=20"),
        None,
    )
    .await?;
    let by_id = |id: &str| {
        listed
            .as_array()
            .and_then(|l| l.iter().find(|m| m["id"]["id"] == id))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(by_id(&m2)["hasReaction"], true, "{listed}");
    assert_eq!(by_id(&m2)["ack"], 3, "{listed}");
    assert_eq!(by_id(&a2)["type"], "revoked", "{listed}");
    assert_eq!(by_id(&m1)["type"], "revoked", "{listed}");
    assert_eq!(by_id(&a1)["hasReaction"], true, "{listed}");

    // Seen: the contact gets a read receipt for what it wrote, and the chat is read.
    let chats = call(&api, &me, M::GET, "/chats", None).await?;
    let unread = |chats: &Value| {
        chats
            .as_array()
            .and_then(|l| l.iter().find(|c| c["id"]["_serialized"] == chat.as_str()))
            .map(|c| c["unreadCount"].clone())
    };
    ensure!(
        unread(&chats).is_some_and(|u| u.as_u64() > Some(0)),
        "no unread messages before seen: {chats}"
    );
    let seen = call(&api, &me, M::POST, &format!("/chats/{chat}/seen"), None).await?;
    ensure!(seen["read"].as_u64() >= Some(1), "{seen}");
    wasp_e2e::eventually(WAIT, || async {
        let receipts = world.sim.contact_receipts(&ana).await.ok()?;
        receipts
            .iter()
            .any(|r| r.id == a3 && r.kind == "read")
            .then_some(())
    })
    .await
    .context("the contact never got the read receipt")?;
    let chats = call(&api, &me, M::GET, "/chats", None).await?;
    assert_eq!(unread(&chats), Some(json!(0)), "{chats}");

    // Typing both ways.
    for route in ["typing", "recording", "clear-state"] {
        let (status, _, body) = raw(
            &api,
            &me,
            M::POST,
            &format!("/chats/{chat}/{route}"),
            None,
            None,
        )
        .await?;
        ensure!((200..300).contains(&status), "{route}: {status} {body}");
    }
    let states = world.sim.contact_chatstates(&ana, 3, WAIT).await?;
    let kinds: Vec<ChatState> = states.iter().map(|s| s.state).collect();
    assert_eq!(
        kinds,
        [
            ChatState::Composing,
            ChatState::Recording,
            ChatState::Paused
        ],
        "{states:?}"
    );
    world
        .sim
        .contact_chatstate(&ana, &phone, ChatState::Composing)
        .await?;
    let e = next_matching(&mut ws, "chat_state", |d| d["chatId"] == chat.as_str()).await?;
    assert_eq!(e["data"]["state"], "typing", "{e}");

    // Number checks and profile pictures.
    let yes = call(&api, &me, M::GET, &format!("/contacts/{ana}/exists"), None).await?;
    assert_eq!(
        (yes["exists"].as_bool(), yes["id"]["_serialized"].as_str()),
        (Some(true), Some(chat.as_str())),
        "{yes}"
    );
    let no = call(&api, &me, M::GET, "/contacts/19990000017/exists", None).await?;
    assert_eq!(no["exists"], false, "{no}");
    let pic = call(
        &api,
        &me,
        M::GET,
        &format!("/contacts/{ana}/profile-picture"),
        None,
    )
    .await?;
    ensure!(
        pic["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{pic}"
    );
    let nameless = world.sim.create_contact(None, None).await?.phone;
    let pic = call(
        &api,
        &me,
        M::GET,
        &format!("/contacts/{nameless}/profile-picture"),
        None,
    )
    .await?;
    assert_eq!(pic["url"], Value::Null, "{pic}");

    // A group of three contacts, both ways.
    let bob = world.sim.create_contact(None, Some("Bob")).await?.phone;
    let cat = world.sim.create_contact(None, Some("Cat")).await?.phone;
    let group = world
        .sim
        .create_group(&phone, "Aftercare", &[&ana, &bob, &cat])
        .await?;
    let g1 = world
        .sim
        .contact_send_group_text(&bob, &group.jid, "hello all")
        .await?;
    let e = next_matching(&mut ws, "message", |m| m["id"]["id"] == g1.as_str()).await?;
    assert_eq!(e["data"]["from"], group.jid.as_str(), "{e}");
    assert_eq!(e["data"]["author"], format!("{bob}@c.us").as_str(), "{e}");
    let sent = call(
        &api,
        &me,
        M::POST,
        "/send",
        Some(send_text(&group.jid, "welcome to the group")),
    )
    .await?;
    let gm = sent["message"]["id"]["id"]
        .as_str()
        .context("id")?
        .to_owned();
    for c in [&ana, &bob, &cat] {
        let got = contact_got(world, c, "the group message", |r| r.id == gm).await?;
        assert_eq!(got.group.as_deref(), Some(group.jid.as_str()), "{got:?}");
        assert_eq!(got.text, "welcome to the group");
    }
    let meta = call(&api, &me, M::GET, &format!("/groups/{}", group.jid), None).await?;
    assert_eq!(meta["subject"], "Aftercare", "{meta}");
    let members: Vec<String> = meta["participants"]
        .as_array()
        .context("participants")?
        .iter()
        .filter_map(|p| p["id"]["_serialized"].as_str().map(str::to_owned))
        .collect();
    for c in [&ana, &bob, &cat, &phone] {
        ensure!(
            members.contains(&format!("{c}@c.us")),
            "{c} not among {members:?}"
        );
    }
    wasp_e2e::eventually(WAIT, || async {
        let chats = call(&api, &me, M::GET, "/chats", None).await.ok()?;
        let g = chats
            .as_array()?
            .iter()
            .find(|c| c["id"]["_serialized"] == group.jid.as_str())?
            .clone();
        (g["name"] == "Aftercare"
            && g["isGroup"] == true
            && g["groupMetadata"]["participants"].as_array()?.len() == 4)
            .then_some(())
    })
    .await
    .context("the group never showed in /chats with its subject and members")?;

    // Idempotent sends: the same key twice, and once more after a kill -9 of the pod.
    let body = send_text(&chat, "your invoice is ready");
    let (s1, _, first) = raw(
        &api,
        &me,
        M::POST,
        "/send",
        Some(body.clone()),
        Some("invoice-4711"),
    )
    .await?;
    ensure!(s1 == 200, "{s1} {first}");
    let (s2, _, second) = raw(
        &api,
        &me,
        M::POST,
        "/send",
        Some(body.clone()),
        Some("invoice-4711"),
    )
    .await?;
    assert_eq!((s2, &second), (200, &first));
    world.node.kill9(&session_name(&me)).await?;
    wasp_e2e::eventually(WAIT * 2, || async {
        let (s, _, b) = raw(
            &api,
            &me,
            M::POST,
            "/send",
            Some(body.clone()),
            Some("invoice-4711"),
        )
        .await
        .ok()?;
        (s == 200).then_some(b)
    })
    .await
    .context("no answer after the kill")
    .and_then(|third| {
        ensure!(
            third == first,
            "a different answer after the kill: {third} vs {first}"
        );
        Ok(())
    })?;
    wait_connected(world, &me).await?;
    // The replay above is answered from Redis by the new process before it is Connected, and
    // until the operator has seen the kill the status written for the killed process still
    // says Connected: a client told `session_not_ready` retries, with an idempotency key so
    // that a retry never sends twice.
    let fresh = wasp_e2e::eventually(WAIT, || async {
        let (s, _, b) = raw(
            &api,
            &me,
            M::POST,
            "/send",
            Some(send_text(&chat, "marker after invoice")),
            Some("marker-after-invoice"),
        )
        .await
        .ok()?;
        (s == 200).then_some(b)
    })
    .await
    .context("the marker was never sent after the kill")?;
    let marker = fresh["message"]["id"]["id"]
        .as_str()
        .context("id")?
        .to_owned();
    contact_got(world, &ana, "the marker", |r| r.id == marker).await?;
    let got = world.sim.contact_received(&ana, 0, Duration::ZERO).await?;
    let copies = got
        .iter()
        .filter(|r| r.text == "your invoice is ready")
        .count();
    assert_eq!(
        copies, 1,
        "the contact got the idempotent send {copies} times"
    );

    // Bad input on every new route: 4xx JSON; another user's ids: 404.
    let other = users[1].clone();
    let bad: Vec<(M, String, Option<Value>)> = vec![
        (
            M::POST,
            "/react".into(),
            Some(json!({"messageId": "nope", "emoji": "👍"})),
        ),
        (
            M::POST,
            "/react".into(),
            Some(json!({"messageId": a1_key, "emoji": "abc"})),
        ),
        (M::POST, "/react".into(), Some(json!({"emoji": "👍"}))),
        (
            M::POST,
            format!("/messages/{m2_key}/edit"),
            Some(json!({"body": "  "})),
        ),
        (
            M::POST,
            "/messages/garbage/edit".into(),
            Some(json!({"body": "x"})),
        ),
        (M::DELETE, "/messages/garbage".into(), None),
        (M::POST, "/chats/not-a-chat/seen".into(), None),
        (M::POST, "/chats/not-a-chat/typing".into(), None),
        (M::GET, format!("/groups/{chat}"), None),
        (M::GET, "/contacts/12ab/exists".into(), None),
        (M::GET, "/contacts/not-a-chat/profile-picture".into(), None),
        (
            M::POST,
            "/send".into(),
            Some(json!({"chatId": chat, "message": "x", "quotedMessageId": "bad"})),
        ),
    ];
    for (method, path, body) in bad {
        let (status, _, answer) = raw(&api, &me, method.clone(), &path, body, None).await?;
        ensure!(
            (400..500).contains(&status) && answer["error"].is_string(),
            "{method} {path}: {status} {answer}"
        );
    }
    let (status, _, answer) = raw(
        &api,
        &me,
        M::POST,
        "/send",
        Some(body),
        Some("bad key with spaces"),
    )
    .await?;
    ensure!(status == 400, "a bad Idempotency-Key: {status} {answer}");
    // The other user (paired next) cannot touch this user's messages: their ids name nothing there.

    // Pacing from the resource's spec: a burst past the limit gets 429 with Retry-After, and
    // nothing is sent for it.
    let mut cr = WhatsAppSession::for_user(&other);
    cr.spec.send_rate_limit = Some(SendRateLimit {
        messages_per_minute: 2,
        burst: Some(2),
    });
    world.sessions().create(&PostParams::default(), &cr).await?;
    let (other_phone, _other_ws) = pair(world, &api, &other).await?;
    let _ = other_phone;
    for (method, path, body) in [
        (
            M::POST,
            "/react".to_owned(),
            Some(json!({"messageId": a1_key, "emoji": "👍"})),
        ),
        (
            M::POST,
            format!("/messages/{m2_key}/edit"),
            Some(json!({"body": "mine now"})),
        ),
        (M::DELETE, format!("/messages/{m2_key}"), None),
        (
            M::POST,
            "/send".to_owned(),
            Some(json!({"chatId": chat, "message": "x", "quotedMessageId": a1_key})),
        ),
    ] {
        let (status, _, answer) = raw(&api, &other, method.clone(), &path, body, None).await?;
        ensure!(
            status == 404,
            "another user's id, {method} {path}: {status} {answer}"
        );
    }
    let bea = world.sim.create_contact(None, Some("Bea")).await?.phone;
    let bea_chat = format!("{bea}@c.us");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..3 {
        let (status, headers, answer) = raw(
            &api,
            &other,
            M::POST,
            "/send",
            Some(send_text(&bea_chat, &format!("reminder {i}"))),
            None,
        )
        .await?;
        if status == 429 {
            retry_after = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            ensure!(answer["error"].is_string(), "{answer}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 429]);
    ensure!(
        retry_after.is_some_and(|s| (1..=30).contains(&s)),
        "Retry-After: {retry_after:?}"
    );
    let got = world.sim.contact_received(&bea, 2, WAIT).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got_later = world.sim.contact_received(&bea, 0, Duration::ZERO).await?;
    assert_eq!((got.len(), got_later.len()), (2, 2), "{got_later:?}");
    ensure!(
        !got_later.iter().any(|r| r.text == "reminder 2"),
        "the refused send went out"
    );
    Ok(())
}
