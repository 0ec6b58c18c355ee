//! Webhooks against a real Redis and kube-apiserver: API replicas in-process (each with its
//! dispatcher), events written to Redis exactly as a session pod writes them, and a real HTTP
//! receiver in the test on 127.0.0.2 (the replicas allow http to that one address only).
//! Signatures are verified with the Standard Webhooks reference implementation from PyPI.
//!
//! The tests of this binary run one at a time: the dispatchers of all replicas on one Redis
//! share the work, so a replica of one test would deliver another test's endpoints.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use wasp_api::pods::NotWired;
use wasp_e2e::eventually;

use wasp_e2e::webhook_receiver::{Got, Receiver, verify_with_reference};

use common::{Producer, Replica, namespace, own_message, put_session, text_message, token};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Everything this binary logs: wasp's crates at trace level, the libraries at debug. Every
/// test installs it before anything else can install a subscriber, so the secrets test
/// searches what all of them logged.
static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> String {
    let buf = LOGS.get_or_init(|| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug,wasp_api=trace,wasp_common=trace,wasp_e2e=trace")
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init()
            .expect("the log capture is this binary's first subscriber");
        buf
    });
    String::from_utf8_lossy(
        &buf.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned()
}

/// One test at a time, with the log capture on.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    logs();
    SERIAL.lock().await
}

use common::WEBHOOK_KEY;

fn flags(extra: &[&'static str]) -> Vec<&'static str> {
    let mut f = common::WEBHOOK_FLAGS.to_vec();
    f.extend_from_slice(&[
        "--webhook-retry-base-ms",
        "50",
        "--webhook-retry-max-ms",
        "300",
        "--webhook-lease-ttl-ms",
        "1000",
    ]);
    f.extend_from_slice(extra);
    f
}

async fn call(
    method: reqwest::Method,
    url: &str,
    user: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token(user));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

async fn put_webhook(r: &Replica, user: &str, body: Value) -> Result<(u16, Value)> {
    call(
        reqwest::Method::PUT,
        &format!("{}/webhooks", r.base),
        user,
        Some(body),
    )
    .await
}

#[tokio::test]
async fn webhooks_are_validated_isolated_and_the_secret_is_shown_once() -> Result<()> {
    let _serial = serial().await;
    let (client, ns) = namespace("wh-config").await?;
    let api = Replica::start_with(&client, &ns, Arc::new(NotWired), &flags(&[])).await?;
    let rx = Receiver::start().await?;
    let url = format!("{}/hook", rx.base);

    // Refused targets: loopback, private, link-local (cloud metadata), internal names, http to
    // an address not allowed, credentials in the URL.
    for bad in [
        "http://127.0.0.1:9/hook",
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://localhost/hook",
        "https://vm/hook",
        "https://redis.wasp.svc.cluster.local/",
        "https://user:pw@crm.example.com/",
        "ftp://crm.example.com/",
        "not a url",
    ] {
        let (status, body) = put_webhook(&api, "doc-a", json!({"url": bad})).await?;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], "webhook_url_refused", "{bad}: {body}");
    }
    let (status, body) = put_webhook(
        &api,
        "doc-a",
        json!({"url": "https://no-such-host.invalid/h"}),
    )
    .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("webhook_url_unresolvable"))
    );
    let (status, body) = put_webhook(&api, "doc-a", json!({"url": url, "events": ["qr"]})).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_events")),
        "{body}"
    );
    let (status, body) = put_webhook(&api, "doc-a", json!({"url": url, "colour": 1})).await?;
    assert_eq!(status, 422, "unknown fields are refused: {body}");
    let (status, _) = reqwest::Client::new()
        .get(format!("{}/webhooks", api.base))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))?;
    assert_eq!(status, 401, "no token, no webhooks");

    // Created: the secret once; updates keep it unless rotated.
    let (status, created) = put_webhook(&api, "doc-a", json!({"url": url})).await?;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created["events"], json!(["message"]));
    let (status, updated) =
        put_webhook(&api, "doc-a", json!({"url": url, "events": ["*"]})).await?;
    assert_eq!(
        (status, &updated["secret"]),
        (200, &Value::Null),
        "{updated}"
    );
    let (_, listed) = call(
        reqwest::Method::GET,
        &format!("{}/webhooks", api.base),
        "doc-a",
        None,
    )
    .await?;
    assert_eq!(listed["webhooks"][0]["events"], json!(["*"]));
    assert!(
        !listed.to_string().contains(&secret[6..]),
        "GET never shows the secret"
    );
    let (_, rotated) = put_webhook(
        &api,
        "doc-a",
        json!({"url": url, "events": ["*"], "rotateSecret": true}),
    )
    .await?;
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);

    // Another user sees none of it and cannot remove it.
    let (_, theirs) = call(
        reqwest::Method::GET,
        &format!("{}/webhooks", api.base),
        "doc-b",
        None,
    )
    .await?;
    assert_eq!(theirs["webhooks"], json!([]));
    let (status, body) = call(
        reqwest::Method::DELETE,
        &format!("{}/webhooks", api.base),
        "doc-b",
        None,
    )
    .await?;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (_, still) = call(
        reqwest::Method::GET,
        &format!("{}/webhooks", api.base),
        "doc-a",
        None,
    )
    .await?;
    assert_eq!(still["webhooks"].as_array().unwrap().len(), 1);
    // The dead-letter routes are the admin's.
    let (status, _) = call(
        reqwest::Method::GET,
        &format!("{}/admin/webhooks/dead-letters?userId=doc-a", api.base),
        "doc-b",
        None,
    )
    .await?;
    assert_eq!(status, 403);

    // Nothing in Redis holds the secret in the clear.
    let mut redis = redis::Client::open(wasp_e2e::TestEnv::get().redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let stored: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(wasp_common::keys::UserKeys::for_user("doc-a").webhooks())
        .query_async(&mut redis)
        .await?;
    let stored = stored.values().cloned().collect::<String>();
    assert!(!stored.is_empty() && !stored.contains(&new_secret[6..]));

    let (status, _) = call(
        reqwest::Method::DELETE,
        &format!("{}/webhooks", api.base),
        "doc-a",
        None,
    )
    .await?;
    assert_eq!(status, 200);
    let (_, gone) = call(
        reqwest::Method::GET,
        &format!("{}/webhooks", api.base),
        "doc-a",
        None,
    )
    .await?;
    assert_eq!(gone["webhooks"], json!([]));
    Ok(())
}

#[tokio::test]
async fn a_message_reaches_the_receiver_signed_by_the_standard() -> Result<()> {
    let _serial = serial().await;
    let (client, ns) = namespace("wh-signed").await?;
    let api = Replica::start_with(&client, &ns, Arc::new(NotWired), &flags(&[])).await?;
    let rx = Receiver::start().await?;
    let user = "doc-signed";
    put_session(&client, &ns, &api, user, "Connected", None).await?;
    let (status, created) = put_webhook(
        &api,
        user,
        json!({"url": format!("{}/in", rx.base), "events": ["message", "message_create"]}),
    )
    .await?;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();

    let mut producer = Producer::connect().await?;
    let sent = Instant::now();
    let id = producer.emit(user, text_message(1)).await?;
    let got = rx.wait_for(2, Duration::from_secs(20), |_| true).await?;
    println!("first delivery {:?} after the event", got[0].at - sent);
    // Once the endpoint's worker runs, a new event goes out at once.
    let sent = Instant::now();
    let id2 = producer.emit(user, own_message(2)).await?;
    let next = rx.wait_for(3, Duration::from_secs(20), |_| true).await?;
    let latency = next[2].at - sent;
    println!("next delivery {latency:?} after the event");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    let got = &got[..2];
    let kinds: Vec<&str> = got
        .iter()
        .map(|g| g.headers["webhook-id"].as_str())
        .collect();
    let hash = wasp_common::user_hash(user);
    assert_eq!(
        kinds,
        [format!("evt_{hash}_{id}_0"), format!("evt_{hash}_{id}_1")],
        "message_create then message, each its own id"
    );
    let body = got[1].json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["userId"], user);
    assert_eq!(body["data"]["body"], "message 1");
    assert_eq!(got[0].json()["type"], "message_create");
    assert_eq!(got[0].headers["content-type"], "application/json");
    assert_eq!(verify_with_reference(&secret, got)?, 2);
    // A tampered body does not verify with the reference implementation.
    let mut forged = got[1].clone();
    forged.body = forged.body.replace("message 1", "message 2");
    assert!(verify_with_reference(&secret, &[forged]).is_err());

    // The user sees the last delivery.
    let (_, listed) = call(
        reqwest::Method::GET,
        &format!("{}/webhooks", api.base),
        user,
        None,
    )
    .await?;
    let last = &listed["webhooks"][0]["lastDelivery"];
    assert_eq!(
        (last["eventId"].as_str(), last["status"].as_u64()),
        (Some(id2.as_str()), Some(204)),
        "{listed}"
    );
    Ok(())
}

/// The receiver is down (503) for the first part of a burst of 500 messages, and the replica
/// delivering is stopped mid-burst: all 500 arrive after recovery, each id at least once, a
/// repeated id only as the in-flight event again, in order. A 429 with `Retry-After` is waited
/// out.
#[tokio::test]
async fn a_burst_survives_a_dead_receiver_and_a_replica_stopping_mid_delivery() -> Result<()> {
    let _serial = serial().await;
    let (client, ns) = namespace("wh-burst").await?;
    let a = Replica::start_with(&client, &ns, Arc::new(NotWired), &flags(&[])).await?;
    let b = Replica::start_with(&client, &ns, Arc::new(NotWired), &flags(&[])).await?;
    let rx = Receiver::start().await?;
    let user = "doc-burst";
    put_session(&client, &ns, &a, user, "Connected", None).await?;
    let (status, _) = put_webhook(&a, user, json!({"url": format!("{}/in", rx.base)})).await?;
    assert_eq!(status, 201);

    rx.answer(503);
    let mut producer = Producer::connect().await?;
    let mut ids = Vec::new();
    for n in 0..250 {
        ids.push(producer.emit(user, text_message(n)).await?);
    }
    rx.wait_for(5, Duration::from_secs(20), |_| true).await?;
    // Down for a while (retries back off to 300 ms), then throttling with Retry-After: 1.
    tokio::time::sleep(Duration::from_secs(3)).await;
    rx.retry_after.store(1, Ordering::SeqCst);
    rx.answer(429);
    let throttled = rx.got().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = rx.got().len() - throttled;
    assert!(
        during <= 3,
        "Retry-After: 1 honoured ({during} attempts in 1.5 s)"
    );
    rx.retry_after.store(0, Ordering::SeqCst);
    rx.answer(204);
    for n in 250..500 {
        ids.push(producer.emit(user, text_message(n)).await?);
    }
    // Stop whichever replica delivers, mid-burst: the other takes over at the cursor.
    rx.wait_for(100, Duration::from_secs(30), |g| {
        g.json()["type"] == "message"
    })
    .await?;
    let holder: String = redis::cmd("GET")
        .arg(wasp_common::keys::UserKeys::for_user(user).webhook_lease("api"))
        .query_async(
            &mut redis::Client::open(wasp_e2e::TestEnv::get().redis_url())?
                .get_multiplexed_async_connection()
                .await?,
        )
        .await?;
    let delivered = |m: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix("wasp_api_webhook_deliveries_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let (by_a, by_b) = (
        delivered(&a.metrics().await?),
        delivered(&b.metrics().await?),
    );
    assert!(
        (by_a == 0) != (by_b == 0),
        "one replica delivers (lease {holder}): {by_a} and {by_b}"
    );
    let delivering_a = by_a > 0;
    if delivering_a {
        a.stop()
    } else {
        b.stop()
    }
    let hash = wasp_common::user_hash(user);
    let wanted: Vec<String> = ids.iter().map(|id| format!("evt_{hash}_{id}_1")).collect();
    let all = eventually(Duration::from_secs(60), || async {
        let got: Vec<Got> = rx
            .got()
            .into_iter()
            .filter(|g| g.headers.contains_key("webhook-id"))
            .collect();
        let ok: std::collections::HashSet<&str> = got
            .iter()
            .filter(|g| g.path == "/in")
            .map(|g| g.id())
            .collect();
        wanted
            .iter()
            .all(|w| ok.contains(w.as_str()))
            .then_some(got)
    })
    .await
    .context("not every message was delivered")?;
    // Order: the ids in arrival order never go back, except to repeat the one just sent.
    let mut last: Option<usize> = None;
    let index: HashMap<&str, usize> = wanted
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i))
        .collect();
    let mut repeats = 0;
    for g in &all {
        let i = index[g.id()];
        if let Some(l) = last {
            assert!(i == l || i == l + 1, "out of order: {i} after {l}");
            if i == l {
                repeats += 1;
            }
        } else {
            assert_eq!(i, 0, "the first event first");
        }
        last = Some(i);
    }
    println!(
        "deliveries {} (repeats of an in-flight or failed event: {repeats})",
        all.len()
    );
    let ordered = all.windows(2).all(|w| w[0].at <= w[1].at);
    assert!(ordered);
    Ok(())
}

/// DNS rebinding: a name that resolves to an allowed address when the webhook is set and to an
/// internal one later is refused at connect (and a name resolving to an internal address is
/// refused at configuration), through a real DNS server the test re-points.
#[tokio::test]
async fn a_name_re_pointed_at_an_internal_address_is_refused_at_connect() -> Result<()> {
    let _serial = serial().await;
    let dns = wasp_e2e::dns::DnsServer::start().await?;
    let (client, ns) = namespace("wh-rebind").await?;
    let server = dns.addr.to_string();
    let api = Replica::start_with(
        &client,
        &ns,
        Arc::new(NotWired),
        &flags(&["--webhook-dns-servers", server.leak()]),
    )
    .await?;
    let rx = Receiver::start().await?;
    rx.close_connections
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let port = rx.base.rsplit(':').next().unwrap().to_owned();
    let user = "doc-rebind";
    put_session(&client, &ns, &api, user, "Connected", None).await?;

    // At configuration: a name that resolves to a private address now is refused.
    dns.set("internal.rebind.test", "10.0.0.1".parse()?);
    let (status, body) = put_webhook(
        &api,
        user,
        json!({"url": format!("http://internal.rebind.test:{port}/in")}),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "webhook_url_refused", "{body}");
    assert!(body.to_string().contains("10.0.0.1"), "{body}");

    // A name that resolves to the (allowed) receiver: accepted, delivered.
    dns.set("hooks.rebind.test", "127.0.0.2".parse()?);
    let (status, body) = put_webhook(
        &api,
        user,
        json!({"url": format!("http://hooks.rebind.test:{port}/in")}),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let mut producer = Producer::connect().await?;
    producer.emit(user, text_message(1)).await?;
    rx.wait_for(1, Duration::from_secs(20), |_| true).await?;

    // Re-pointed at loopback: the next connect is refused, nothing reaches any receiver.
    dns.set("hooks.rebind.test", "127.0.0.1".parse()?);
    producer.emit(user, text_message(2)).await?;
    let listed = eventually(Duration::from_secs(20), || async {
        let (_, list) = call(
            reqwest::Method::GET,
            &format!("{}/webhooks", api.base),
            user,
            None,
        )
        .await
        .ok()?;
        let hook = list["webhooks"][0].clone();
        hook["lastError"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("127.0.0.1"))
            .then_some(hook)
    })
    .await
    .context("the re-pointed name was not refused")?;
    assert!(listed["failingSince"].is_i64(), "{listed}");
    let refused = api.metrics().await?;
    assert!(
        refused
            .lines()
            .any(|l| l.starts_with("wasp_api_webhook_failures_total{reason=\"refused_address\"}")),
        "{refused}"
    );
    assert_eq!(rx.got().len(), 1, "nothing was sent after the re-pointing");

    // Pointed back: the held event goes out (same endpoint, cursor kept).
    dns.set("hooks.rebind.test", "127.0.0.2".parse()?);
    let got = rx.wait_for(2, Duration::from_secs(20), |_| true).await?;
    assert_eq!(got[1].json()["data"]["body"], "message 2");
    Ok(())
}

/// Past the maximum age an event goes to the dead letters (visible to the admin, in the user's
/// `GET /webhooks`); a replay delivers it with its id once the receiver is back.
#[tokio::test]
async fn an_event_past_its_maximum_age_is_a_dead_letter_an_admin_can_replay() -> Result<()> {
    let _serial = serial().await;
    let (client, ns) = namespace("wh-dead").await?;
    let api = Replica::start_with(
        &client,
        &ns,
        Arc::new(NotWired),
        &flags(&["--webhook-max-age-seconds", "2"]),
    )
    .await?;
    let rx = Receiver::start().await?;
    let user = "doc-dead";
    put_session(&client, &ns, &api, user, "Connected", None).await?;
    put_webhook(&api, user, json!({"url": format!("{}/in", rx.base)})).await?;
    rx.answer(500);
    let mut producer = Producer::connect().await?;
    let id = producer.emit(user, text_message(7)).await?;
    let admin = common::sign(&json!({"sub": "ops", "role": "admin", "exp": common::now() + 600}));
    let dead_url = format!("{}/admin/webhooks/dead-letters?userId={user}", api.base);
    let letters = eventually(Duration::from_secs(20), || async {
        let r = reqwest::Client::new()
            .get(&dead_url)
            .bearer_auth(&admin)
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        (v["total"] == 1).then_some(v)
    })
    .await
    .context("no dead letter")?;
    let letter = &letters["letters"][0];
    let hash = wasp_common::user_hash(user);
    assert_eq!(letter["webhookId"], format!("evt_{hash}_{id}_1"));
    assert_eq!(letter["lastError"], "the receiver answered 500", "{letter}");
    assert!(letter["attempts"].as_u64().unwrap() >= 1, "{letter}");
    let (_, mine) = call(
        reqwest::Method::GET,
        &format!("{}/webhooks", api.base),
        user,
        None,
    )
    .await?;
    let view = &mine["webhooks"][0];
    assert_eq!(view["deadLetters"], 1, "{mine}");
    assert_eq!(view["lastError"]["error"], "the receiver answered 500");
    assert!(view["failingSince"].is_i64());
    // The counter moves just after the letter is written (the dispatcher's next step), so a
    // letter can be visible a moment before it is counted.
    let counted = eventually(Duration::from_secs(5), || async {
        let m = api.metrics().await.ok()?;
        m.contains("wasp_api_webhook_dead_letters_total 1")
            .then_some(())
    })
    .await;
    // On a miss, say what the counter and the list hold (a rare CI failure: not reproduced).
    if counted.is_err() {
        let m = api.metrics().await?;
        let line = m
            .lines()
            .find(|l| l.starts_with("wasp_api_webhook_dead_letters_total"));
        let letters: Value = reqwest::Client::new()
            .get(&dead_url)
            .bearer_auth(&admin)
            .send()
            .await?
            .json()
            .await?;
        anyhow::bail!(
            "the dead letter is not counted: {line:?}; letters now {}",
            letters["total"]
        );
    }

    rx.answer(204);
    let before = rx.got().len();
    let r = reqwest::Client::new()
        .post(format!(
            "{}/admin/webhooks/dead-letters/replay?userId={user}",
            api.base
        ))
        .bearer_auth(&admin)
        .send()
        .await?;
    assert_eq!(r.json::<Value>().await?["replayed"], 1);
    let got = rx
        .wait_for(before + 1, Duration::from_secs(20), |_| true)
        .await?;
    let replayed = got.last().unwrap();
    assert_eq!(replayed.id(), format!("evt_{hash}_{id}_1"), "the same id");
    assert_eq!(replayed.json()["data"]["body"], "message 7");
    let after: Value = reqwest::Client::new()
        .get(&dead_url)
        .bearer_auth(&admin)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(after["total"], 0);
    // Bad admin input is a JSON 400.
    let r = reqwest::Client::new()
        .get(format!("{}/admin/webhooks/dead-letters", api.base))
        .bearer_auth(&admin)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);
    Ok(())
}

/// A global webhook (operator configuration) receives every user's events, each naming its
/// user and session; another global endpoint that is down does not hold it back.
#[tokio::test]
async fn global_webhooks_get_every_users_events_and_a_dead_one_delays_no_other() -> Result<()> {
    let _serial = serial().await;
    let (client, ns) = namespace("wh-global").await?;
    let rx = Receiver::start().await?;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let globals: &'static str = Box::leak(
        json!([
            {"name": "crm", "url": format!("{}/crm", rx.base), "events": ["message"], "secret": secret},
            {"name": "dead", "url": "http://127.0.0.2:1/closed", "secret": secret},
        ])
        .to_string()
        .into_boxed_str(),
    );
    let api = Replica::start_with(
        &client,
        &ns,
        Arc::new(NotWired),
        &flags(&["--global-webhooks", globals]),
    )
    .await?;
    for user in ["clinic-1", "clinic-2"] {
        put_session(&client, &ns, &api, user, "Connected", None).await?;
    }
    let mut producer = Producer::connect().await?;
    producer.emit("clinic-1", text_message(1)).await?;
    producer.emit("clinic-2", text_message(2)).await?;
    let got = rx
        .wait_for(2, Duration::from_secs(20), |g| g.path == "/crm")
        .await?;
    let mut users: Vec<String> = got
        .iter()
        .map(|g| g.json()["userId"].as_str().unwrap().to_owned())
        .collect();
    users.sort();
    assert_eq!(users, ["clinic-1", "clinic-2"]);
    for g in &got {
        let body = g.json();
        assert_eq!(
            body["session"],
            wasp_crds::names::session_name(body["userId"].as_str().unwrap())
        );
    }
    assert_eq!(verify_with_reference(secret, &got)?, 2);
    // The dead endpoint's attempts run beside the live one's: its first refusal may be counted
    // just after the live deliveries arrive.
    eventually(Duration::from_secs(20), || async {
        let metrics = api.metrics().await.ok()?;
        metrics
            .contains("wasp_api_webhook_failures_total{reason=\"connect\"}")
            .then_some(())
    })
    .await
    .context("the dead webhook's connect failure was never counted")?;
    Ok(())
}

/// Signing secrets (the user's, rotated, and a global one), the webhook key, the JWT and its
/// key never reach the logs: everything wasp logged at trace level (libraries at debug) while
/// webhooks were created, rotated, delivered to, failed and recovered.
#[tokio::test]
async fn secrets_never_reach_the_logs() -> Result<()> {
    let _serial = serial().await;
    let (client, ns) = namespace("wh-logs").await?;
    let rx = Receiver::start().await?;
    let global_secret = "whsec_bG9nLXRlc3QtZ2xvYmFsLXNlY3JldC0xMjM0NTY=";
    let globals: &'static str = Box::leak(
        json!([{"name": "crm", "url": format!("{}/global", rx.base), "secret": global_secret}])
            .to_string()
            .into_boxed_str(),
    );
    let api = Replica::start_with(
        &client,
        &ns,
        Arc::new(NotWired),
        &flags(&["--global-webhooks", globals]),
    )
    .await?;
    let user = "doc-logs";
    put_session(&client, &ns, &api, user, "Connected", None).await?;
    let url = format!("{}/own", rx.base);
    let (status, created) = put_webhook(&api, user, json!({"url": url, "events": ["*"]})).await?;
    assert_eq!(status, 201, "{created}");
    let first = created["secret"].as_str().unwrap().to_owned();
    let (_, rotated) = put_webhook(
        &api,
        user,
        json!({"url": url, "events": ["*"], "rotateSecret": true}),
    )
    .await?;
    let second = rotated["secret"].as_str().unwrap().to_owned();

    // Deliveries that fail, then succeed, to both endpoints.
    rx.answer(500);
    let mut producer = Producer::connect().await?;
    producer.emit(user, text_message(1)).await?;
    rx.wait_for(3, Duration::from_secs(20), |g| g.path == "/own")
        .await?;
    rx.answer(204);
    producer.emit(user, text_message(2)).await?;
    let own = rx
        .wait_for(1, Duration::from_secs(20), |g| {
            g.path == "/own" && g.json()["data"]["body"] == "message 2"
        })
        .await?;
    // `message_create` and `message`.
    assert_eq!(verify_with_reference(&second, &own)?, own.len());
    let global = rx
        .wait_for(1, Duration::from_secs(20), |g| {
            g.path == "/global" && g.json()["data"]["body"] == "message 2"
        })
        .await?;
    assert_eq!(verify_with_reference(global_secret, &global)?, global.len());

    let logged = logs();
    // The capture works: the deliveries and their failures were logged.
    for expected in [
        "delivering to a webhook endpoint",
        "webhook endpoints loaded",
        "127.0.0.2",
    ] {
        assert!(
            logged.contains(expected),
            "the log capture lacks {expected:?}"
        );
    }
    let mut secrets: Vec<(&str, &str)> = vec![
        ("the webhook key", WEBHOOK_KEY),
        ("the JWT key", common::SECRET),
        // Every bearer token of the test starts so (base64 of `{"alg":`).
        ("a JWT", "eyJhbGciOi"),
    ];
    for (what, s) in [
        ("the first secret", first.as_str()),
        ("the rotated secret", second.as_str()),
        ("the global secret", global_secret),
    ] {
        secrets.push((what, s));
        // The key part alone (what an HMAC is keyed with, base64).
        secrets.push((what, s.trim_start_matches("whsec_")));
    }
    for (what, s) in secrets {
        let lines: Vec<&str> = logged.lines().filter(|l| l.contains(s)).take(3).collect();
        assert!(lines.is_empty(), "{what} is in the logs: {lines:#?}");
    }
    println!("searched {} log lines", logged.lines().count());
    Ok(())
}
