//! wasp-api on the whole stack, as a CRM written against seed 003 (and an ERP client of seed 000)
//! uses it: two API replicas, the operator, session pods run as processes by the local node,
//! Redis and the WhatsApp simulator, every part real. Connect → QR on the WebSocket → the phone
//! scans → `ready` → a contact's message arrives as `message` (on both replicas, WebSocket and
//! SSE) → `/send` → the contact decrypts it; a client that reconnects with its last id misses
//! nothing; `/disconnect` logs out and stops the pod.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use wasp_common::keys::UserKeys;
use wasp_crds::{Phase, names::session_name};
use wasp_e2e::eventually;
use wasp_e2e::stream_clients::{SseClient, WsClient};

use common::{ApiReplica, WAIT, World, phase, wait_status};

const JWT_SECRET: &str = "api-stack-secret-api-stack-secret-api";

fn token(user: &str) -> String {
    common::token(user, JWT_SECRET)
}

async fn call(
    method: reqwest::Method,
    url: &str,
    user: &str,
    body: Option<Value>,
) -> Result<Value> {
    common::api_call(method, url, &token(user), body).await
}

/// `GET /status` once it satisfies `ok`.
async fn status_when(api: &ApiReplica, user: &str, ok: impl Fn(&Value) -> bool) -> Result<Value> {
    eventually(WAIT, || async {
        let s = call(
            reqwest::Method::GET,
            &format!("{}/status", api.base),
            user,
            None,
        )
        .await
        .ok()?;
        ok(&s).then_some(s)
    })
    .await
    .context("GET /status never showed what was waited for")
}

/// The `data` of an event frame exactly as written.
fn raw_data(frame: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Frame<'a> {
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    Ok(serde_json::from_str::<Frame<'_>>(frame)?
        .data
        .get()
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crm_connects_scans_chats_and_resumes_through_two_api_replicas() -> Result<()> {
    let world = World::start("api-stack").await?;
    let result = scenario(&world).await;
    if let Err(e) = &result {
        let name = session_name(&user());
        eprintln!(
            "api stack test failed: {e:#}\n--- session pod {name} (last 60 lines) ---\n{}",
            world.node.log_tail(&name, 60)
        );
    }
    world.shutdown().await?;
    result
}

fn user() -> String {
    format!("dr-{:x}@clinic.example", std::process::id())
}

/// The replicas deliver webhooks, plain http allowed to the test's receiver only (the operator
/// of the `World` has the same key and policy, for `spec.webhooks`).
const WEBHOOK_FLAGS: [&str; 6] = common::WEBHOOK_FLAGS;

/// The `WebhooksHealthy` condition's status and reason.
fn webhooks_healthy(s: &wasp_crds::WhatsAppSession) -> Option<(String, String, String)> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "WebhooksHealthy")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The ids `GET /webhooks` lists.
async fn webhook_ids(api: &ApiReplica, user: &str) -> Result<Vec<String>> {
    let list = call(
        reqwest::Method::GET,
        &format!("{}/webhooks", api.base),
        user,
        None,
    )
    .await?;
    Ok(list["webhooks"]
        .as_array()
        .context("webhooks")?
        .iter()
        .filter_map(|w| w["id"].as_str().map(str::to_owned))
        .collect())
}

async fn scenario(world: &World) -> Result<()> {
    let a = ApiReplica::start_with(world, JWT_SECRET, &WEBHOOK_FLAGS).await?;
    let b = ApiReplica::start_with(world, JWT_SECRET, &WEBHOOK_FLAGS).await?;
    let receiver = wasp_e2e::webhook_receiver::Receiver::start().await?;
    let user = user();
    let name = session_name(&user);
    let ws_url = |r: &ApiReplica, since: Option<&str>| {
        let mut u = format!("{}/?token={}", r.ws_base, token(&user));
        if let Some(s) = since {
            u.push_str(&format!("&since={s}"));
        }
        u
    };

    // The CRM opens its WebSocket before connecting (seed 003's flow).
    let mut ws = WsClient::connect(&ws_url(&a, None)).await?;
    let hello = ws.next().await?;
    assert_eq!(hello["type"], "status");
    assert_eq!(hello["data"]["status"], "disconnected");

    // Connect on the other replica: the QR reaches the WebSocket on this one.
    let t0 = Instant::now();
    let connected = call(
        reqwest::Method::POST,
        &format!("{}/connect", b.base),
        &user,
        None,
    )
    .await?;
    assert_eq!(connected["success"], true);
    let qr = ws.next_of("qr").await?;
    let t_qr = t0.elapsed();
    let code = qr["data"]["qr"].as_str().context("qr code")?.to_owned();
    assert!(
        qr["data"]["qrDataUrl"]
            .as_str()
            .is_some_and(|u| u.starts_with("data:image/png;base64,")),
        "{qr}"
    );
    eprintln!("api stack: POST /connect → QR on the WebSocket in {t_qr:?}");
    // GET /status shows the same QR while it is up (seed 003's `qrDataUrl`).
    let status = status_when(&a, &user, |s| s["status"] == "qr" && s["qr"].is_string()).await?;
    assert!(
        status["qrDataUrl"]
            .as_str()
            .is_some_and(|u| u.starts_with("data:image/png;base64,")),
        "{status}"
    );

    eprintln!("api stack: sse connect at {:?}", t0.elapsed());
    // An ERP client arriving now on the seed-000 SSE route gets the QR the pod is showing.
    let mut sse =
        SseClient::connect(&format!("{}/api/whatsapp/qr", b.base), &token(&user), None).await?;
    let (_, status) = sse.next().await?;
    assert_eq!(status["type"], "status");
    let (_, sse_qr) = sse.next_of("qr").await?;
    assert!(
        sse_qr["data"]["qrDataUrl"]
            .as_str()
            .is_some_and(|u| u.starts_with("data:image/"))
    );

    eprintln!("api stack: scan at {:?}", t0.elapsed());
    // The phone scans: `ready` on both clients, and GET /status says connected.
    let phone = world.sim.create_phone(None, Some("Dr API")).await?;
    world.sim.scan_qr(&phone.phone, &code).await?;
    let ready = ws.next_of("ready").await?;
    assert!(
        ready["data"]["phone"]
            .as_str()
            .is_some_and(|p| p.contains(&phone.phone)),
        "{ready}"
    );
    let (_, sse_ready) = sse.next_of("ready").await?;
    assert_eq!(sse_ready["data"]["phone"], ready["data"]["phone"]);
    wait_status(&world.sessions(), &name, "Connected", |s| {
        phase(s) == Some(Phase::Connected)
    })
    .await?;
    let status = status_when(&a, &user, |s| s["status"] == "connected").await?;
    assert_eq!(status["phoneNumber"], phone.phone.as_str(), "{status}");

    eprintln!("api stack: contact at {:?}", t0.elapsed());
    // The CRM also has a webhook (it may run where no socket stays open).
    let hook = call(
        reqwest::Method::PUT,
        &format!("{}/webhooks", b.base),
        &user,
        Some(json!({"url": format!("{}/wasp", receiver.base), "events": ["message"]})),
    )
    .await?;
    let webhook_secret = hook["secret"]
        .as_str()
        .context("no webhook secret")?
        .to_owned();
    // The platform team adds one in the CR too: `spec.webhooks`, its secret in a Secret.
    let spec_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(world.client.clone(), &world.ns)
        .create(
            &Default::default(),
            &common::secret("crm-hooks", "crm", spec_secret),
        )
        .await?;
    let spec_hook = |url: &str| {
        json!({"spec": {"webhooks": [{"name": "crm", "url": url, "events": ["message"],
            "secretRef": {"name": "crm-hooks", "key": "crm"}}]}})
    };
    world
        .sessions()
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(spec_hook(&format!("{}/spec", receiver.base))),
        )
        .await?;
    eventually(WAIT, || async {
        let ids = webhook_ids(&a, &user).await.ok()?;
        (ids == ["api", "spec-crm"]).then_some(())
    })
    .await
    .context("the operator did not apply spec.webhooks")?;
    wait_status(&world.sessions(), &name, "WebhooksHealthy True", |s| {
        webhooks_healthy(s).is_some_and(|(st, reason, _)| st == "True" && reason == "Delivering")
    })
    .await?;
    // A contact writes: `message` on the WebSocket (replica a) and the SSE stream (replica b).
    let contact = world.sim.create_contact(None, Some("Ann")).await?;
    call(
        reqwest::Method::POST,
        &format!("{}/api/whatsapp/contact/add", a.base),
        &user,
        Some(json!({"mobileNo": format!("+{}", contact.phone), "name": "Ann"})),
    )
    .await?;
    world
        .sim
        .contact_send(&contact.phone, &phone.phone, "hello doctor")
        .await?;
    let (msg, msg_text) = loop {
        let text = ws.next_text().await?;
        let e: Value = serde_json::from_str(&text)?;
        if e["type"] == "message" {
            break (e, text);
        }
    };
    let chat = format!("{}@c.us", contact.phone);
    assert_eq!(msg["data"]["body"], "hello doctor", "{msg}");
    assert_eq!(msg["data"]["fromMe"], false);
    assert_eq!(msg["data"]["from"], chat.as_str(), "{msg}");
    assert_eq!(msg["data"]["chatId"], chat.as_str(), "{msg}");
    assert_eq!(msg["data"]["eventId"], msg["id"], "{msg}");
    // The REST copy of the message is the same JSON, byte for byte.
    let stored = common::checked_text(
        reqwest::Client::new()
            .get(format!("{}/messages/{chat}?limit=5", a.base))
            .bearer_auth(token(&user)),
    )
    .await?;
    let stored: Vec<&serde_json::value::RawValue> = serde_json::from_str(&stored)?;
    let event_json = raw_data(&msg_text)?;
    assert!(
        stored.iter().any(|m| m.get() == event_json),
        "REST {stored:?}\nevent {event_json}"
    );
    let (sse_id, sse_msg) = sse.next_of("message").await?;
    assert_eq!(sse_msg["data"]["body"], "hello doctor");
    assert_eq!(
        sse_id.as_deref(),
        msg["id"].as_str(),
        "the same event id on both replicas"
    );
    // The webhook got the same event, signed: verified with PyPI's standardwebhooks.
    let hooked = receiver.wait_for(1, WAIT, |g| g.path == "/wasp").await?;
    let delivered = hooked[0].json();
    assert_eq!(delivered["type"], "message", "{delivered}");
    assert_eq!(delivered["id"], msg["id"]);
    assert_eq!(delivered["userId"], user.as_str());
    assert_eq!(
        serde_json::to_string(&delivered["data"])?,
        serde_json::to_string(&msg["data"])?,
        "the WebSocket's message JSON"
    );
    assert_eq!(
        wasp_e2e::webhook_receiver::verify_with_reference(&webhook_secret, &hooked)?,
        1
    );
    // The CR's webhook got it too, signed with the Secret's secret.
    let spec_hooked = receiver.wait_for(1, WAIT, |g| g.path == "/spec").await?;
    assert_eq!(spec_hooked[0].json()["id"], msg["id"]);
    assert_eq!(
        wasp_e2e::webhook_receiver::verify_with_reference(spec_secret, &spec_hooked)?,
        1
    );

    eprintln!("api stack: send at {:?}", t0.elapsed());
    // The CRM answers through /send; the contact decrypts it.
    let sent = call(
        reqwest::Method::POST,
        &format!("{}/send", b.base),
        &user,
        Some(json!({"chatId": format!("{}@c.us", contact.phone), "message": "see you at 10"})),
    )
    .await?;
    assert_eq!(sent["success"], true, "{sent}");
    assert_eq!(sent["message"]["fromMe"], true, "{sent}");
    assert_eq!(sent["message"]["to"], chat.as_str(), "{sent}");
    let sent_id = sent["message"]["id"]["_serialized"].clone();
    let received = world
        .sim
        .contact_received(&contact.phone, 1, Duration::from_secs(30))
        .await?;
    assert!(
        received.iter().any(|m| m.text == "see you at 10"),
        "{received:?}"
    );
    let chats = call(
        reqwest::Method::GET,
        &format!("{}/chats", a.base),
        &user,
        None,
    )
    .await?;
    let listed = chats
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"]["_serialized"] == chat.as_str()))
        .with_context(|| format!("no chat {chat} in {chats}"))?;
    assert_eq!(listed["name"], "Ann", "the whitelist's name: {listed}");
    assert_eq!(
        listed["unreadCount"], 0,
        "answering reads the chat: {listed}"
    );
    // The contact's delivery receipt raises the reply's ack: `message_ack`.
    let acked = loop {
        let e = ws.next_of("message_ack").await?;
        if e["data"]["id"]["_serialized"] == sent_id {
            break e;
        }
    };
    assert!(acked["data"]["ack"].as_i64() >= Some(2), "{acked}");
    assert_eq!(acked["data"]["body"], "see you at 10", "{acked}");

    eprintln!("api stack: resume at {:?}", t0.elapsed());
    // The WebSocket drops; three messages arrive meanwhile; reconnecting with the last id
    // replays exactly those, in order, on the other replica.
    let last_id = msg["id"].as_str().context("event id")?.to_owned();
    ws.close().await;
    receiver.answer(500);
    for n in 1..=3 {
        world
            .sim
            .contact_send(&contact.phone, &phone.phone, &format!("while away {n}"))
            .await?;
    }
    let mut back = WsClient::connect(&ws_url(&b, Some(&last_id))).await?;
    assert_eq!(back.next().await?["type"], "status");
    let mut bodies = Vec::new();
    while bodies.len() < 3 {
        let e = back.next().await?;
        if e["type"] == "message" {
            assert_eq!(
                e["data"]["fromMe"], false,
                "own sends are never `message`: {e}"
            );
            bodies.push(e["data"]["body"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(bodies, ["while away 1", "while away 2", "while away 3"]);

    // The receiver was answering 500 meanwhile: the CR says so, and once it recovers every
    // message arrives, in order, and the condition turns back.
    wait_status(
        &world.sessions(),
        &name,
        "WebhooksHealthy DeliveryFailing",
        |s| {
            webhooks_healthy(s).is_some_and(|(st, reason, message)| {
                st == "False" && reason == "DeliveryFailing" && message.contains("spec-crm")
            })
        },
    )
    .await?;
    receiver.answer(204);
    wait_status(
        &world.sessions(),
        &name,
        "WebhooksHealthy True again",
        |s| webhooks_healthy(s).is_some_and(|(st, _, _)| st == "True"),
    )
    .await?;
    let spec_hooked = receiver
        .wait_for(4, WAIT, |g| g.path == "/spec" && g.status == 204)
        .await?;
    let away: Vec<String> = spec_hooked[1..4]
        .iter()
        .map(|g| {
            g.json()["data"]["body"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(away, ["while away 1", "while away 2", "while away 3"]);
    // Taken out of the spec: gone from the user's list; the user's own stays.
    world
        .sessions()
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"webhooks": null}})),
        )
        .await?;
    eventually(WAIT, || async {
        (webhook_ids(&a, &user).await.ok()? == ["api"]).then_some(())
    })
    .await
    .context("the operator did not remove the spec webhook")?;

    eprintln!("api stack: disconnect at {:?}", t0.elapsed());
    // /disconnect (seed 003: log out): the pod stops and the pairing is gone from Redis.
    let out = call(
        reqwest::Method::POST,
        &format!("{}/disconnect", a.base),
        &user,
        None,
    )
    .await?;
    assert_eq!(out["message"], "logged out and disconnecting", "{out}");
    eventually(WAIT, || async { world.node.finished(&name).then_some(()) })
        .await
        .context("the session pod kept running after /disconnect")?;
    let mut redis = world.redis().await?;
    let auth: Vec<String> = redis::cmd("KEYS")
        .arg(UserKeys::for_user(&user).auth_scan_pattern())
        .query_async(&mut redis)
        .await?;
    assert!(auth.is_empty(), "auth keys left after the logout: {auth:?}");
    // The phone forgot the device (the logout reached WhatsApp, not only Redis).
    let linked = world
        .sim
        .devices()
        .await?
        .into_iter()
        .filter(|d| d.phone == phone.phone && !d.removed)
        .count();
    assert_eq!(
        linked, 0,
        "the phone still lists the device after /disconnect"
    );
    back.close().await;
    Ok(())
}

/// The console page on the real stack, in headless Chromium: Connect → the session pod's QR
/// image → the simulator's phone scans that QR → "connected" with the phone number → a
/// contact's message shows. Screenshots: `target/test-artifacts/console-stack/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_shows_the_pods_qr_then_connected() -> Result<()> {
    let world = World::start("console-stack").await?;
    let user = format!("console-{:x}@clinic.example", std::process::id());
    let result = console_scenario(&world, &user).await;
    if let Err(e) = &result {
        let name = session_name(&user);
        eprintln!(
            "console stack test failed: {e:#}\n--- session pod {name} (last 60 lines) ---\n{}",
            world.node.log_tail(&name, 60)
        );
    }
    world.shutdown().await?;
    result
}

async fn console_scenario(world: &World, user: &str) -> Result<()> {
    use wasp_e2e::browser::Browser;
    // The same webhook settings as the other test's replicas: every dispatcher on this Redis
    // may be the one that delivers that test's webhook.
    let api = ApiReplica::start_with(world, JWT_SECRET, &WEBHOOK_FLAGS).await?;
    let state_is = |s: &str| format!("document.body.dataset.state === '{s}'");
    let browser = Browser::start().await?;
    browser
        .open(&format!("{}/console#token={}", api.base, token(user)))
        .await?;
    browser
        .wait_until(WAIT, "the page signed in", &state_is("disconnected"))
        .await?;
    browser
        .wait_until(
            WAIT,
            "the event stream",
            "document.body.dataset.live === 'open'",
        )
        .await?;

    // Connect: the operator starts the pod, the pod shows its QR, the page draws it.
    browser.click("[data-testid=connect]").await?;
    let src = browser
        .wait_until(
            WAIT,
            "the QR image, decoded",
            "(() => { const i = document.querySelector('[data-testid=qr-image]'); \
             return !document.querySelector('[data-testid=qr]').hidden && i.complete \
             && i.naturalWidth > 0 ? i.getAttribute('src') : null; })()",
        )
        .await?;
    ensure!(
        src.as_str()
            .is_some_and(|s| s.starts_with("data:image/png;base64,")),
        "{src}"
    );
    browser.screenshot("console-stack/qr").await?;

    // The phone scans the QR the pod is showing (the same code the page drew).
    let mut ws = WsClient::connect(&format!("{}/?token={}", api.ws_base, token(user))).await?;
    let qr = ws.next_of("qr").await?;
    ensure!(
        qr["data"]["qrDataUrl"] == src,
        "the page shows another QR than the pod's"
    );
    let code = qr["data"]["qr"].as_str().context("qr code")?;
    let phone = world.sim.create_phone(None, Some("Dr Console")).await?;
    world.sim.scan_qr(&phone.phone, code).await?;
    browser
        .wait_until(WAIT, "the connected state", &state_is("connected"))
        .await?;
    let shown = browser
        .wait_for_text(WAIT, "[data-testid=connected]", &phone.phone)
        .await?;
    ensure!(shown.contains("Dr Console"), "{shown}");

    // A contact writes; the message appears on the page.
    let contact = world.sim.create_contact(None, Some("Ann")).await?;
    world
        .sim
        .contact_send(&contact.phone, &phone.phone, "hello from the stack")
        .await?;
    browser
        .wait_for_text(WAIT, "#messages", "hello from the stack")
        .await?;
    browser.screenshot("console-stack/connected").await?;
    ws.close().await;
    browser.close().await
}
