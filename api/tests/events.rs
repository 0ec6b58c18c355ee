//! The event fan-out against a real Redis and kube-apiserver: two API replicas in-process, events
//! written to Redis exactly as a session pod writes them (durable: stream + live channel;
//! ephemeral: live channel only). WebSocket (`/?token=`, `?since=`) and SSE
//! (`/api/whatsapp/qr`, `Last-Event-ID`) clients on either replica; resume without gaps or
//! duplicates, also while events are being written; user isolation; refusals as JSON.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use wasp_api::pods::NotWired;
use wasp_common::events::{self as ev, Kind};

use common::{
    Producer, Replica, SseClient, WsClient, namespace, now, put_session, sign, text_message, token,
};

const QR_URL: &str = "data:image/png;base64,iVBORw0KGgo=";

fn ws_url(r: &Replica, user: &str, since: Option<&str>) -> String {
    let mut url = format!("{}/?token={}", r.ws_base, token(user));
    if let Some(s) = since {
        url.push_str(&format!("&since={s}"));
    }
    url
}

fn body_of(ev: &Value) -> &str {
    ev["data"]["body"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn events_reach_clients_on_both_replicas_and_resume_without_gaps() -> Result<()> {
    let (client, ns) = namespace("events").await?;
    let a = Replica::start(&client, &ns, Arc::new(NotWired)).await?;
    let b = Replica::start(&client, &ns, Arc::new(NotWired)).await?;
    let (alice, bob) = ("alice@clinic", "bob@clinic");
    put_session(&client, &ns, &a, alice, "Connected", Some("127.0.0.9:8080")).await?;

    // Greeting: the session status, as GET /status shows it.
    let mut ws_a = WsClient::connect(&ws_url(&a, alice, None)).await?;
    let hello = ws_a.next().await?;
    assert_eq!(hello["type"], "status");
    assert_eq!(hello["data"]["status"], "connected");
    assert_eq!(hello["data"]["userId"], alice);
    assert!(
        hello["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let mut ws_b = WsClient::connect(&ws_url(&b, alice, None)).await?;
    assert_eq!(ws_b.next().await?["type"], "status");
    let mut sse_b =
        SseClient::connect(&format!("{}/api/whatsapp/qr", b.base), &token(alice), None).await?;
    assert_eq!(sse_b.next().await?.1["type"], "status");
    let mut ws_bob = WsClient::connect(&ws_url(&a, bob, None)).await?;
    assert_eq!(ws_bob.next().await?["data"]["status"], "disconnected");

    // Durable events: in order, with their ids, on every client of the user, on both replicas.
    let mut producer = Producer::connect().await?;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(producer.emit(alice, text_message(n)).await?);
    }
    // An inbound message is `message_create` then `message` (whatsapp-web.js), one entry.
    for (n, id) in ids.iter().enumerate() {
        for kind in ["message_create", "message"] {
            let (x, y) = (ws_a.next().await?, ws_b.next().await?);
            let (sse_id, z) = sse_b.next().await?;
            for e in [&x, &y, &z] {
                assert_eq!(e["type"], kind);
                assert_eq!(body_of(e), format!("message {n}"));
                assert_eq!(e["id"], id.as_str());
                assert_eq!(e["data"]["eventId"], id.as_str());
                assert_eq!(e["data"]["chatId"], "41790000002@c.us");
                assert_eq!(e["data"]["from"], "41790000002@c.us");
            }
            assert_eq!(sse_id.as_deref(), Some(id.as_str()), "SSE id line");
        }
    }

    // Ephemeral events (a QR code) come from the live channel, without an id.
    producer
        .publish(
            alice,
            Kind::Qr(ev::Qr {
                code: "2@live".into(),
                svg: String::new(),
                data_url: QR_URL.into(),
            }),
        )
        .await?;
    let qr = ws_b.next().await?;
    assert_eq!(
        (qr["type"].as_str(), qr["id"].clone()),
        (Some("qr"), Value::Null)
    );
    assert_eq!(qr["data"]["qrDataUrl"], QR_URL);
    assert_eq!(ws_a.next().await?["data"]["qr"], "2@live");
    producer
        .emit(
            alice,
            Kind::Ready(ev::Ready {
                phone: "41791234567".into(),
                push_name: "Dr A".into(),
                jid: "41791234567@s.whatsapp.net".into(),
            }),
        )
        .await?;
    assert_eq!(ws_a.next_of("ready").await?["data"]["phone"], "41791234567");

    // Resume: a client that missed 30 events while away gets exactly those, then live ones.
    let (_, seen) = sse_b.next_of("ready").await?;
    let resume_from = seen["id"].as_str().unwrap().to_owned();
    drop(sse_b);
    let mut missed = Vec::new();
    for n in 100..130 {
        missed.push(producer.emit(alice, text_message(n)).await?);
    }
    let mut back = WsClient::connect(&ws_url(&b, alice, Some(&resume_from))).await?;
    assert_eq!(back.next().await?["type"], "status");
    for (i, id) in missed.iter().enumerate() {
        for kind in ["message_create", "message"] {
            let e = back.next().await?;
            assert_eq!(
                (&e["id"], &e["type"]),
                (&json!(id), &json!(kind)),
                "replayed in order, none skipped"
            );
            assert_eq!(body_of(&e), format!("message {}", 100 + i));
        }
    }
    let live = producer.emit(alice, text_message(200)).await?;
    assert_eq!(
        back.next().await?["id"],
        live.as_str(),
        "then live, no duplicates"
    );

    // The same over SSE with Last-Event-ID, on the other replica.
    let mut sse_a = SseClient::connect(
        &format!("{}/api/whatsapp/qr", a.base),
        &token(alice),
        Some(&missed[9]),
    )
    .await?;
    assert_eq!(sse_a.next().await?.1["type"], "status");
    // The rest of `live`'s pair is still due on `back`: resuming skips both of an entry.
    assert_eq!(back.next().await?["type"], "message");
    for id in missed[10..].iter().chain([&live]) {
        for _ in ["message_create", "message"] {
            assert_eq!(sse_a.next().await?.0.as_deref(), Some(id.as_str()));
        }
    }

    // Bob saw none of Alice's events: his next event is his own.
    producer.emit(bob, common::own_message(999)).await?;
    let e = ws_bob.next().await?;
    assert_eq!(body_of(&e), "message 999", "{e}");

    ws_a.close().await;
    ws_b.close().await;
    back.close().await;
    ws_bob.close().await;
    Ok(())
}

/// A client resuming while events are being written gets every event once, in order: the replay
/// and the live feed overlap and the client's cursor removes the overlap.
#[tokio::test]
async fn resuming_during_a_burst_misses_nothing_and_doubles_nothing() -> Result<()> {
    let (client, ns) = namespace("events-burst").await?;
    let api = Replica::start(&client, &ns, Arc::new(NotWired)).await?;
    let user = "carol@clinic";
    let mut producer = Producer::connect().await?;
    // Own sends: one event (`message_create`) per entry.
    let first = producer.emit(user, common::own_message(0)).await?;
    const N: usize = 600;
    let writer = tokio::spawn(async move {
        let mut p = Producer::connect().await.unwrap();
        let mut ids = Vec::new();
        for n in 1..=N {
            ids.push(p.emit(user, common::own_message(n)).await.unwrap());
            if n % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        ids
    });
    // Join mid-burst, resuming after the first event.
    let mut ws = WsClient::connect(&ws_url(&api, user, Some(&first))).await?;
    assert_eq!(ws.next().await?["type"], "status");
    let ids = writer.await?;
    for (i, id) in ids.iter().enumerate() {
        let e = ws.next().await?;
        assert_eq!(e["id"], id.as_str(), "event {} of {N}", i + 1);
    }
    let end = producer.emit(user, common::own_message(N + 1)).await?;
    assert_eq!(ws.next().await?["id"], end.as_str());
    ws.close().await;
    Ok(())
}

/// Codes are never in the stream: a client that arrives after the QR was published gets it
/// because the hub asks the pod to publish it again (the pod's side of that contract is played
/// here by a task that answers on the user's `codes_wanted_channel`).
#[tokio::test]
async fn a_client_arriving_after_the_qr_gets_the_current_one() -> Result<()> {
    use futures::StreamExt as _;
    let (client, ns) = namespace("events-qr").await?;
    let api = Replica::start(&client, &ns, Arc::new(NotWired)).await?;
    let user = "dave@clinic";
    put_session(
        &client,
        &ns,
        &api,
        user,
        "AwaitingScan",
        Some("127.0.0.9:8080"),
    )
    .await?;
    let keys = wasp_common::keys::UserKeys::for_user(user);
    let mut asks = redis::Client::open(wasp_e2e::TestEnv::get().redis_url())?
        .get_async_pubsub()
        .await?;
    asks.subscribe(keys.codes_wanted_channel()).await?;
    let pod = tokio::spawn(async move {
        let mut producer = Producer::connect().await.unwrap();
        let mut asks = asks.into_on_message();
        while asks.next().await.is_some() {
            let qr = Kind::Qr(ev::Qr {
                code: "2@current".into(),
                svg: String::new(),
                data_url: QR_URL.into(),
            });
            producer.publish("dave@clinic", qr).await.unwrap();
        }
    });
    let mut ws = WsClient::connect(&ws_url(&api, user, None)).await?;
    let status = ws.next().await?;
    assert_eq!(status["data"]["status"], "qr");
    let qr = ws.next().await?;
    assert_eq!(qr["type"], "qr");
    assert_eq!(qr["data"]["qr"], "2@current");
    assert_eq!(qr["data"]["qrDataUrl"], QR_URL);
    ws.close().await;
    pod.abort();
    Ok(())
}

#[tokio::test]
async fn streams_refuse_bad_calls_with_json_and_end_when_the_token_expires() -> Result<()> {
    let (client, ns) = namespace("events-refusals").await?;
    let api = Replica::start(&client, &ns, Arc::new(NotWired)).await?;
    let http = reqwest::Client::new();
    let user = "erin@clinic";
    let expired = sign(&json!({"sub": user, "exp": now() - 3600}));
    let other_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-not-the-secret-not"),
    )?;
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("{}/", api.base), 401, "unauthorized"),
        (format!("{}/?token=", api.base), 401, "unauthorized"),
        (
            format!("{}/?token={expired}", api.base),
            401,
            "unauthorized",
        ),
        (
            format!("{}/?token={other_key}", api.base),
            401,
            "unauthorized",
        ),
        (format!("{}/api/whatsapp/qr", api.base), 401, "unauthorized"),
        (
            format!("{}/api/whatsapp/qr?token={expired}", api.base),
            401,
            "unauthorized",
        ),
        (
            format!("{}/?token={}", api.base, token(user)),
            426,
            "upgrade_required",
        ),
        (
            format!("{}/?token={}&since=yesterday", api.base, token(user)),
            400,
            "invalid_since",
        ),
        (
            format!(
                "{}/api/whatsapp/qr?token={}&since=1-",
                api.base,
                token(user)
            ),
            400,
            "invalid_since",
        ),
    ];
    for (url, status, code) in cases {
        let r = http.get(&url).send().await?;
        let shown = url.split('?').next().unwrap_or_default().to_owned();
        assert_eq!(r.status().as_u16(), status, "{shown}");
        let body: Value = r.json().await?;
        assert_eq!(body["error"], code, "{shown}: {body}");
    }
    let r = http
        .get(format!("{}/api/whatsapp/qr", api.base))
        .bearer_auth(token(user))
        .header("last-event-id", "nope")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);
    assert!(
        tokio_tungstenite::connect_async(format!("{}/?token={expired}", api.ws_base))
            .await
            .is_err()
    );

    // A token that expires in two seconds: the socket is closed with 4001 then.
    let short = sign(&json!({"sub": user, "exp": now() + 2}));
    let mut ws = WsClient::connect(&format!("{}/?token={short}", api.ws_base)).await?;
    assert_eq!(ws.next().await?["type"], "status");
    assert_eq!(ws.closed(Duration::from_secs(10)).await?, 4001);

    let metrics = api.metrics().await?;
    assert!(
        metrics.contains("wasp_api_stream_clients{transport=\"websocket\"}"),
        "{metrics}"
    );
    Ok(())
}
