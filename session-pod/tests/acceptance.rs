//! The issue's acceptance tests: real Redis, the simulator, the pod as a process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use reqwest::Method;
use wasp_common::events::Kind;
use wasp_common::keys::UserKeys;

fn chat_of(phone: &str) -> String {
    format!("{phone}@c.us")
}

async fn stored_count(user: &str, chat: &str) -> usize {
    let mut conn = redis().await;
    redis::cmd("ZCARD")
        .arg(UserKeys::for_user(user).messages(chat))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_messages_across_two_kill_9_restarts_exactly_once() {
    const N: usize = 1000;
    let (running, sim) = start_sim().await;
    let user = unique_user("bulk");
    let opts = PodOpts::new(&user, &running.ws_url);
    let (pod, phone, _) = paired_pod(&running, &sim, opts.clone()).await;
    let alice = sim.create_contact(None, Some("Alice")).await.unwrap();

    let sent = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn({
        let sim = sim.clone();
        let (alice, phone, sent) = (alice.phone.clone(), phone.clone(), sent.clone());
        async move {
            let mut ids = Vec::with_capacity(N);
            for i in 0..N {
                ids.push(
                    sim.contact_send(&alice, &phone, &format!("msg {i}"))
                        .await
                        .unwrap(),
                );
                sent.fetch_add(1, Ordering::Relaxed);
            }
            ids
        }
    });

    let mut events = Events::new(&user).await;
    let mut seen: Vec<String> = Vec::new();
    let mut pods = vec![pod];
    let mut kills = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(240);
    while seen.len() < N {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {N} message events; pod log:\n{}",
            seen.len(),
            pods.last().unwrap().log_tail()
        );
        for (_, e) in events.read(std::time::Duration::from_secs(5)).await {
            if let Some(Kind::Message(m)) = e.kind
                && let Some(m) = m.message()
                && !m.from_me
            {
                seen.push(m.id.id);
            }
        }
        // Kill -9 at a third and at two thirds of the way, while messages are in flight.
        if kills < 2 && seen.len() >= (kills + 1) * N / 3 {
            pods.last().unwrap().kill9();
            pods.push(Pod::start(&opts));
            kills += 1;
        }
    }
    let ids = sender.await.unwrap();
    // Drain whatever is still on the stream: it must hold no duplicate.
    for (_, e) in events.read(std::time::Duration::from_millis(500)).await {
        if let Some(Kind::Message(m)) = e.kind
            && let Some(m) = m.message()
            && !m.from_me
        {
            seen.push(m.id.id);
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a message was published twice");
    assert_eq!(unique, ids.iter().collect::<HashSet<_>>(), "stream = sent");
    assert_eq!(stored_count(&user, &chat_of(&alice.phone)).await, N);
    assert_eq!(kills, 2);
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_only_stores_known_senders_only() {
    let (running, sim) = start_sim().await;
    let user = unique_user("whitelist");
    let mut opts = PodOpts::new(&user, &running.ws_url);
    opts.storage_policy = "contactsOnly";
    let (pod, phone, _) = paired_pod(&running, &sim, opts).await;
    let alice = sim.create_contact(None, Some("Alice")).await.unwrap();
    let mallory = sim.create_contact(None, Some("Mallory")).await.unwrap();
    let (st, body) = pod
        .api(
            Method::POST,
            "/v1/contacts",
            Some(serde_json::json!({"phone": format!("+{}", alice.phone), "name": "Alice"})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let mut events = Events::tail(&user).await;
    let stranger_id = sim
        .contact_send(&mallory.phone, &phone, "spam")
        .await
        .unwrap();
    // The stranger's message is counted and logged, not stored, not published as a message.
    events
        .wait_for("the not-stored log line", |k| match k {
            Kind::Log(l) if l.message.contains(&stranger_id) => Some(()),
            Kind::Message(m) if m.message().is_some_and(|m| m.id.id == stranger_id) => {
                panic!("stranger's message published")
            }
            _ => None,
        })
        .await;
    let known_id = sim
        .contact_send(&alice.phone, &phone, "hello doctor")
        .await
        .unwrap();
    events
        .wait_for("the contact's message", |k| match k {
            Kind::Message(m) if m.message().is_some_and(|m| m.id.id == known_id) => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(stored_count(&user, &chat_of(&mallory.phone)).await, 0);
    assert_eq!(stored_count(&user, &chat_of(&alice.phone)).await, 1);
    let (st, msgs) = pod
        .api(
            Method::GET,
            &format!("/v1/messages/{}", chat_of(&alice.phone)),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(msgs[0]["body"], "hello doctor");
    let (_, page) = pod.api(Method::GET, "/v1/chats", None).await;
    let chats = page["chats"].as_array().unwrap();
    assert_eq!(chats.len(), 1, "{page}");
    assert_eq!(page.get("nextOffset"), None, "one page");
    // Named from the whitelist, one unread message, the newest message inline.
    assert_eq!(chats[0]["id"]["_serialized"], chat_of(&alice.phone));
    assert_eq!(chats[0]["name"], "Alice");
    assert_eq!(chats[0]["unreadCount"], 1);
    assert_eq!(chats[0]["lastMessage"]["body"], "hello doctor");
    let (_, byphone) = pod
        .api(
            Method::GET,
            &format!("/v1/chat-by-phone?phone=%2B{}", alice.phone),
            None,
        )
        .await;
    assert_eq!(byphone["exists"], true, "{byphone}");
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_out_by_the_phone_purges_auth_state() {
    let (running, sim) = start_sim().await;
    let user = unique_user("logout");
    let opts = PodOpts::new(&user, &running.ws_url);
    let (pod, phone, device) = paired_pod(&running, &sim, opts).await;
    let mut events = Events::tail(&user).await;
    sim.remove_device(&phone, device).await.unwrap();
    events
        .wait_for("logged_out", |k| {
            matches!(k, Kind::LoggedOut(_)).then_some(())
        })
        .await;
    // (Failed once under a loaded full suite; the pod's log says why if it does again.)
    let status = events
        .try_wait_for(|k| match k {
            Kind::Status(s) if s.phase == "LoggedOut" => Some(()),
            _ => None,
        })
        .await;
    assert!(
        status.is_some(),
        "timed out waiting for status LoggedOut; pod log:\n{}",
        pod.log_tail()
    );
    let mut conn = redis().await;
    let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg(UserKeys::for_user(&user).auth_scan_pattern())
        .arg("COUNT")
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "auth keys left: {keys:?}");
    let state = wasp_common::session_state::read_state(&mut conn, &user)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.phase, wasp_common::SessionPhase::LoggedOut);
    drop(running);
}

/// A SIGTERM stops the pod within seconds while Redis is away, at start or mid-run: it neither
/// waits for a reconnect nor for its last writes (a kubelet would wait out the grace period,
/// then SIGKILL). A pod whose Redis comes up late waits for it in its process, live and not
/// ready, then runs. The restarted pod is not Ready and no one believes the stale record meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_pod_while_redis_is_away() {
    let (running, _sim) = start_sim().await;
    let exits_soon = |pod: &Pod, what: &str, limit: Duration| {
        let t0 = std::time::Instant::now();
        pod.term();
        while pod.proc.exited().is_none() {
            assert!(
                t0.elapsed() < limit,
                "{what}: still running {limit:?} after SIGTERM:\n{}",
                pod.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{what}: exited {:?} after SIGTERM", t0.elapsed());
    };

    // Redis unreachable from the start.
    let mut opts = PodOpts::new(&unique_user("noredis"), &running.ws_url);
    let nothing = wasp_e2e::redis_server::free_port().unwrap();
    opts.extra_env = vec![("REDIS_URL".into(), format!("redis://127.0.0.1:{nothing}"))];
    let pod = Pod::start(&opts);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pod.proc.exited().is_none(), "{}", pod.log_tail());
    // Not after the client's own connect retries give up (seconds): at once.
    exits_soon(&pod, "Redis never reachable", Duration::from_secs(2));

    // Redis comes up late: the pod waits in its process (live, not ready), past the client's
    // own connect retries, instead of exiting into a restart loop; then it runs.
    let mut server = wasp_e2e::redis_server::RedisServer::start().unwrap();
    let st = std::process::Command::new("kill")
        .args(["-9", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut opts = PodOpts::new(&unique_user("lateredis"), &running.ws_url);
    opts.extra_env = vec![("REDIS_URL".into(), server.url())];
    let pod = Pod::start(&opts);
    pod.wait_up().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(pod.proc.exited().is_none(), "{}", pod.log_tail());
    let http = reqwest::Client::new();
    let status = |path: &'static str| {
        let (http, admin) = (http.clone(), pod.admin.clone());
        async move {
            http.get(format!("{admin}{path}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(status("/healthz").await, 200, "{}", pod.log_tail());
    assert_eq!(status("/readyz").await, 503, "{}", pod.log_tail());
    server.restart().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while status("/readyz").await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline && pod.proc.exited().is_none(),
            "not ready after Redis came up:\n{}",
            pod.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        pod.log_tail().contains("Redis not reachable yet"),
        "{}",
        pod.log_tail()
    );
    exits_soon(&pod, "Redis reachable late", Duration::from_secs(10));
    drop(server);

    // Redis goes away under a running pod (holding its lease, showing a QR code).
    let server = wasp_e2e::redis_server::RedisServer::start().unwrap();
    let mut opts = PodOpts::new(&unique_user("lostredis"), &running.ws_url);
    opts.extra_env = vec![("REDIS_URL".into(), server.url())];
    let pod = Pod::start(&opts);
    pod.wait_up().await;
    pod.wait_ready().await;
    let st = std::process::Command::new("kill")
        .args(["-9", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Its last writes are bounded (3 s), then it stops.
    exits_soon(&pod, "Redis lost mid-run", Duration::from_secs(10));
    drop(running);
}

/// A renewal Redis does not answer (the server stopped, its sockets still open) fences the pod
/// at ⅔ of the TTL: it is no longer Ready before the lease can have expired for another
/// process. (Before each attempt was bounded by the fence, it hung until the connection's 5 s
/// response timeout, past the 3 s TTL.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_redis_never_answers_fences_the_pod_before_the_lease_expires() {
    let (running, _sim) = start_sim().await;
    let server = wasp_e2e::redis_server::RedisServer::start().unwrap();
    let mut opts = PodOpts::new(&unique_user("hungredis"), &running.ws_url);
    opts.extra_env = vec![("REDIS_URL".into(), server.url())];
    let ttl = Duration::from_millis(opts.lease_ttl_ms);
    let pod = Pod::start(&opts);
    pod.wait_up().await;
    pod.wait_ready().await;
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &server.pid().to_string()])
            .status()
            .unwrap()
            .success()
    };
    assert!(signal("-STOP"));
    let stopped = std::time::Instant::now();
    while pod.is_ready().await {
        assert!(stopped.elapsed() < WAIT, "{}", pod.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = stopped.elapsed();
    assert!(signal("-CONT"));
    assert!(
        took < ttl,
        "still Ready {took:?} after Redis stopped answering (lease TTL {ttl:?}):\n{}",
        pod.log_tail()
    );
    assert!(
        pod.log_tail().contains("no answer before the fence"),
        "{}",
        pod.log_tail()
    );
    drop(running);
}

/// kill -9, and the process restarted in the same pod (the same WASP_POD_UID) takes the lease
/// over at once instead of waiting out the dead one's 15 s; a process of another pod still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_restarted_in_the_same_pod_takes_over_its_lease_at_once() {
    let (running, sim) = start_sim().await;
    let user = unique_user("samepod");
    let mut opts = PodOpts::new(&user, &running.ws_url);
    opts.lease_ttl_ms = 15_000;
    opts.extra_env = vec![("WASP_POD_UID".into(), "uid-first-pod".into())];
    let (a, phone, device) = paired_pod(&running, &sim, opts.clone()).await;
    let (_, status_a) = a.api(Method::GET, "/v1/status", None).await;
    let token_a = status_a["leaseToken"].as_u64().unwrap();

    let mut stranger_opts = opts.clone();
    stranger_opts.extra_env = vec![("WASP_POD_UID".into(), "uid-other-pod".into())];
    let stranger = Pod::start(&stranger_opts);
    stranger.wait_up().await;

    let mut events = Events::tail(&user).await;
    a.kill9();
    let t0 = std::time::Instant::now();
    let again = Pod::start(&opts);
    events.ready().await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "reconnected after {took:?}: it waited for the dead process's lease"
    );
    let (_, status) = again.api(Method::GET, "/v1/status", None).await;
    assert!(status["leaseToken"].as_u64().unwrap() > token_a, "{status}");
    let (_, other) = stranger.api(Method::GET, "/v1/status", None).await;
    assert!(
        other.get("leaseToken").is_none(),
        "another pod never takes over: {other}"
    );
    let d = sim.device(&phone, device).await.unwrap().unwrap();
    assert!(d.connected);
    eprintln!("same pod: reconnected {took:?} after kill -9 (lease TTL 15 s)");
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_one_socket() {
    let (running, sim) = start_sim().await;
    let user = unique_user("twice");
    let opts = PodOpts::new(&user, &running.ws_url);
    let (a, phone, device) = paired_pod(&running, &sim, opts.clone()).await;

    // Watch every change of the simulator's world: never two sockets of this phone at once.
    let max_sockets = Arc::new(AtomicUsize::new(0));
    let monitor = tokio::spawn({
        let sim = running.sim.clone();
        let (phone, max) = (phone.clone(), max_sockets.clone());
        async move {
            sim.wait_for(std::time::Duration::from_secs(600), |w| {
                let n = w
                    .conns
                    .values()
                    .filter(|c| c.device.as_ref().is_some_and(|d| d.phone == phone))
                    .count();
                max.fetch_max(n, Ordering::Relaxed);
                None::<()>
            })
            .await
        }
    });
    let b = Pod::start(&opts);
    b.wait_up().await;
    let (st, status) = b.api(Method::GET, "/v1/status", None).await;
    assert_eq!(st, 200);
    assert!(status.get("leaseToken").is_none(), "{status}");
    let (_, status_a) = a.api(Method::GET, "/v1/status", None).await;
    let token_a = status_a["leaseToken"].as_u64().unwrap();
    // The record in Redis is still A's.
    let mut conn = redis().await;
    let state = wasp_common::session_state::read_state(&mut conn, &user)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.phase, wasp_common::SessionPhase::Connected);
    assert_eq!(
        state.lease_token,
        Some(token_a),
        "the record names its writer's lease"
    );
    // B is up but not Ready while A holds the lease (issue 14: a Ready pod with a dead
    // predecessor's Connected record made the operator show Connected for a dead socket).
    let http = reqwest::Client::new();
    let readyz = |admin: String| {
        let http = http.clone();
        async move {
            http.get(format!("{admin}/readyz"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(readyz(b.admin.clone()).await, 503);
    assert_eq!(readyz(a.admin.clone()).await, 200);

    // A dies without releasing; B takes over once the lease expires, with a newer token.
    let mut events = Events::tail(&user).await;
    a.kill9();
    events.ready().await;
    let (_, status_b) = b.api(Method::GET, "/v1/status", None).await;
    let token_b = status_b["leaseToken"].as_u64().unwrap();
    assert!(token_b > token_a, "{status_b}");
    assert_eq!(readyz(b.admin.clone()).await, 200);
    let (state, lease) = wasp_common::session_state::read_state_and_lease(&mut conn, &user)
        .await
        .unwrap();
    let state = state.unwrap();
    assert_eq!((state.lease_token, lease), (Some(token_b), Some(token_b)));
    assert!(state.is_current(lease));
    let d = sim.device(&phone, device).await.unwrap().unwrap();
    assert!(d.connected);
    monitor.abort();
    assert_eq!(max_sockets.load(Ordering::Relaxed), 1);
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_rejects_bad_input_and_bad_tokens() {
    let (running, _sim) = start_sim().await;
    let user = unique_user("api");
    let pod = Pod::start(&PodOpts::new(&user, &running.ws_url));
    pod.wait_up().await;
    let http = reqwest::Client::new();
    let routes: &[(Method, &str)] = &[
        (Method::GET, "/v1/status"),
        (Method::POST, "/v1/connect"),
        (Method::POST, "/v1/disconnect"),
        (Method::POST, "/v1/logout"),
        (Method::POST, "/v1/send"),
        (Method::GET, "/v1/chats"),
        (Method::GET, "/v1/messages/41791234567@c.us"),
        (Method::GET, "/v1/chat-by-phone?phone=41791234567"),
        (Method::GET, "/v1/contacts"),
        (Method::POST, "/v1/contacts"),
        (Method::DELETE, "/v1/contacts/41791234567"),
        (Method::GET, "/v1/logs"),
        (Method::GET, "/v1/nope"),
    ];
    for (m, path) in routes {
        for auth in [None, Some("wrong"), Some("")] {
            let mut req = http.request(m.clone(), format!("{}{path}", pod.control));
            if let Some(t) = auth {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 401, "{m} {path} {auth:?}");
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    let bad: &[(Method, &str, Option<&str>, u16)] = &[
        (Method::POST, "/v1/send", Some("{"), 400),
        (
            Method::POST,
            "/v1/send",
            Some(r#"{"to":"41791234567"}"#),
            422,
        ),
        (
            Method::POST,
            "/v1/send",
            Some(r#"{"to":"abc","body":"hi"}"#),
            400,
        ),
        (
            Method::POST,
            "/v1/send",
            Some(r#"{"to":"41791234567","body":""}"#),
            400,
        ),
        (
            Method::POST,
            "/v1/send",
            Some(r#"{"to":"x@evil.com","body":"hi"}"#),
            400,
        ),
        (
            Method::POST,
            "/v1/send",
            Some(r#"{"to":"41791234567","body":"hi","x":1}"#),
            422,
        ),
        (
            Method::POST,
            "/v1/send",
            Some(r#"{"to":"41791234567","body":"hi"}"#),
            409,
        ),
        (Method::GET, "/v1/chats?limit=0", None, 400),
        (Method::GET, "/v1/chats?limit=abc", None, 400),
        (Method::GET, "/v1/chats?limit=100000", None, 400),
        (Method::GET, "/v1/messages/not-a-chat", None, 400),
        (
            Method::GET,
            // A cursor naming no message of the chat.
            "/v1/messages/41791234567@c.us?before=x",
            None,
            404,
        ),
        (Method::GET, "/v1/chat-by-phone", None, 400),
        (Method::GET, "/v1/chat-by-phone?phone=12", None, 400),
        (
            Method::POST,
            "/v1/contacts",
            Some(r#"{"phone":"nope"}"#),
            400,
        ),
        (Method::POST, "/v1/contacts", Some(r#"[]"#), 422),
        (Method::DELETE, "/v1/contacts/abc", None, 400),
        (Method::DELETE, "/v1/contacts/41791234567", None, 404),
        (Method::GET, "/v1/logs?limit=-1", None, 400),
        (Method::PUT, "/v1/status", None, 405),
        (Method::GET, "/v1/nope", None, 404),
    ];
    for (m, path, body, want) in bad {
        let mut req = http
            .request(m.clone(), format!("{}{path}", pod.control))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        assert_eq!(status, *want, "{m} {path} {body:?}: {text}");
        assert_eq!(ct.as_deref(), Some("application/json"), "{m} {path}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{text}"
        );
    }
    // Without a content type the body is refused as JSON too.
    let resp = http
        .post(format!("{}/v1/send", pod.control))
        .bearer_auth(TOKEN)
        .body(r#"{"to":"41791234567","body":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    // Admin port.
    let r = http
        .get(format!("{}/readyz", pod.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let m = http
        .get(format!("{}/metrics", pod.admin))
        .send()
        .await
        .unwrap();
    assert!(m.text().await.unwrap().contains("wasp_session_messages_in"));
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_connect_send_and_graceful_sigterm() {
    let (running, sim) = start_sim().await;
    let user = unique_user("lifecycle");
    let opts = PodOpts::new(&user, &running.ws_url);
    let (pod, phone, device) = paired_pod(&running, &sim, opts).await;
    let alice = sim.create_contact(None, Some("Alice")).await.unwrap();
    let mut events = Events::tail(&user).await;

    let (st, _) = pod.api(Method::POST, "/v1/disconnect", None).await;
    assert_eq!(st, 202);
    events
        .wait_for("Disconnected", |k| match k {
            Kind::Status(s) if s.phase == "Disconnected" => Some(()),
            _ => None,
        })
        .await;
    let (st, _) = pod.api(Method::POST, "/v1/connect", None).await;
    assert_eq!(st, 202);
    events.ready().await;

    let (st, sent) = pod
        .api(
            Method::POST,
            "/v1/send",
            Some(
                serde_json::json!({"to": format!("+{}", alice.phone), "body": "your appointment"}),
            ),
        )
        .await;
    assert_eq!(st, 200, "{sent}");
    let got = sim.contact_received(&alice.phone, 1, WAIT).await.unwrap();
    assert_eq!(got[0].text, "your appointment");
    events
        .wait_for("the outbound message event", |k| match k {
            Kind::Message(m)
                if m.message().is_some_and(|m| {
                    m.from_me && m.id.serialized == sent["message"]["id"]["_serialized"]
                }) =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    assert_eq!(stored_count(&user, &chat_of(&alice.phone)).await, 1);

    // SIGTERM: clean close, state Disconnected, lease released, exit 0.
    pod.term();
    events
        .wait_for("Disconnected on SIGTERM", |k| match k {
            Kind::Status(s) if s.phase == "Disconnected" => Some(()),
            _ => None,
        })
        .await;
    let status = running
        .sim
        .wait_for(WAIT, |w| {
            w.accounts[&phone].devices[&device]
                .conn
                .is_none()
                .then_some(())
        })
        .await;
    assert!(status.is_some(), "the socket was closed");
    let deadline = tokio::time::Instant::now() + WAIT;
    let exit = loop {
        if let Some(s) = pod.proc.exited() {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "pod did not exit");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}\n{}", pod.log_tail());
    let mut conn = redis().await;
    let lease: Option<String> = redis::cmd("GET")
        .arg(UserKeys::for_user(&user).lease())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(lease, None);
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_code_links_the_device() {
    let (running, sim) = start_sim().await;
    let user = unique_user("paircode");
    let phone = sim.create_phone(None, Some("Dr Code")).await.unwrap();
    let mut opts = PodOpts::new(&user, &running.ws_url);
    opts.pairing = Some(format!("+{}", phone.phone));
    let mut events = Events::new(&user).await;
    let mut live = Live::subscribe(&user).await;
    let pod = Pod::start(&opts);
    let code = live
        .wait_for("a pairing code", |k| match k {
            Kind::PairingCode(p) => Some(p.code.clone()),
            _ => None,
        })
        .await;
    let (_, status) = pod.api(Method::GET, "/v1/status", None).await;
    assert_eq!(status["pairingCode"], code.as_str(), "{status}");
    assert_eq!(status["phase"], "AwaitingScan");
    sim.enter_pair_code(&phone.phone, &code).await.unwrap();
    let ready = events.ready().await;
    assert_eq!(ready.phone, phone.phone);
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_then_fails_past_the_maximum() {
    let (running, sim) = start_sim().await;
    let user = unique_user("failing");
    let opts = PodOpts::new(&user, &running.ws_url);
    let (_pod, phone, device) = paired_pod(&running, &sim, opts).await;
    let mut events = Events::tail(&user).await;
    // WhatsApp unreachable for longer than 5 attempts at 200 ms base take (≤ 6.2 s).
    sim.refuse_connections(std::time::Duration::from_secs(120))
        .await
        .unwrap();
    sim.inject(&phone, device, wasp_sim::faults::SocketFault::Drop)
        .await
        .unwrap();
    let mut reconnecting = 0;
    let failed = events
        .wait_for("Failed", |k| match k {
            Kind::Status(s) if s.phase == "Reconnecting" => {
                reconnecting += 1;
                None
            }
            Kind::Status(s) if s.phase == "Failed" => Some(s.clone()),
            _ => None,
        })
        .await;
    assert_eq!(failed.reconnect_count, 5, "{failed:?}");
    assert!(reconnecting >= 1);
    let mut conn = redis().await;
    let state = wasp_common::session_state::read_state(&mut conn, &user)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.phase, wasp_common::SessionPhase::Failed);
    assert_eq!(state.reconnect_count, 5);
    drop(running);
}

/// Issue 4's send regression: a burst of sends through the control API to a contact the
/// pod never wrote to. Every answer is 200, so every message must reach the contact,
/// decrypted, exactly once. Two faults lost all but the first few: the simulator handed the
/// same one-time prekey to every bundle fetch, and the client (racing itself) fetched one per
/// concurrent first send — the contact consumed the prekey with the first `pkmsg` and could
/// not open the later sessions' ones. Frames to the client are slowed during the burst so the
/// first send's usync and prekey round trips overlap every other request, which made the
/// old code fail every time instead of one run in three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_sends_to_a_new_contact_arrives_exactly_once() {
    const N: usize = 200;
    let (running, sim) = start_sim().await;
    let user = unique_user("burst");
    let opts = PodOpts::new(&user, &running.ws_url);
    let (pod, _phone, _) = paired_pod(&running, &sim, opts).await;
    let alice = sim.create_contact(None, Some("Alice")).await.unwrap();

    sim.delay_frames(std::time::Duration::from_millis(5))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let requests = (0..N).map(|i| {
        http.post(format!("{}/v1/send", pod.control))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"to": alice.phone, "body": format!("burst {i}")}))
            .send()
    });
    let answers = futures::future::join_all(requests).await;
    sim.delay_frames(std::time::Duration::ZERO).await.unwrap();
    let mut sent_ids = HashSet::new();
    for a in answers {
        let a = a.unwrap();
        let status = a.status().as_u16();
        let body: serde_json::Value = a.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(sent_ids.insert(body["message"]["id"]["id"].as_str().unwrap().to_owned()));
    }

    let got = sim.contact_received(&alice.phone, N, WAIT).await.unwrap();
    let ids: HashSet<&str> = got.iter().map(|m| m.id.as_str()).collect();
    let texts: HashSet<&str> = got.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        got.len(),
        N,
        "the contact decrypted {} of {N}; pod log:\n{}",
        got.len(),
        pod.log_tail()
    );
    assert_eq!(ids.len(), N, "a message arrived twice");
    assert_eq!(
        ids,
        sent_ids.iter().map(String::as_str).collect::<HashSet<_>>()
    );
    let expected: HashSet<String> = (0..N).map(|i| format!("burst {i}")).collect();
    assert_eq!(
        texts,
        expected.iter().map(String::as_str).collect::<HashSet<_>>()
    );
    // One Signal session with the contact, not one per racing request.
    let fetches = running
        .sim
        .wait_for(WAIT, |w| Some(w.contacts[&alice.phone].bundle_fetches));
    assert_eq!(
        fetches.await,
        Some(1),
        "prekey bundle fetches of the contact"
    );
    assert_eq!(stored_count(&user, &chat_of(&alice.phone)).await, N);
    drop(running);
}

/// A contact that WhatsApp addresses by LID (its phone number only in `sender_pn`): the chat is
/// filed under the phone number, so a CRM finds it as `<phone>@c.us` and by phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lid_addressed_contact_is_filed_under_its_phone_number() {
    let (running, sim) = start_sim().await;
    let user = unique_user("lid");
    let opts = PodOpts::new(&user, &running.ws_url);
    let (pod, phone, _) = paired_pod(&running, &sim, opts).await;
    let carol = sim.create_contact(None, Some("Carol")).await.unwrap();
    let mut events = Events::tail(&user).await;
    let id = sim
        .contact_send_as(
            &carol.phone,
            &phone,
            "via lid",
            wasp_sim::contacts::Addressing::Lid,
        )
        .await
        .unwrap();
    let m = events
        .wait_for("the LID contact's message", |k| match k {
            Kind::Message(m) => m.message().filter(|m| m.id.id == id),
            _ => None,
        })
        .await;
    assert_eq!(m.chat_id, chat_of(&carol.phone), "{m:?}");
    assert_eq!(m.from, chat_of(&carol.phone));
    assert_eq!(m.body, "via lid");
    let (st, byphone) = pod
        .api(
            Method::GET,
            &format!("/v1/chat-by-phone?phone=%2B{}", carol.phone),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(byphone["exists"], true, "{byphone}");
    assert_eq!(byphone["chat"]["lastMessage"]["body"], "via lid");
    drop(running);
}

/// WhatsApp refusing the session is reported, not retried: a temporary ban and an outdated
/// client each give an `error` event and phase Failed with the reason in the state record (the
/// operator shows it on the resource), instead of reconnecting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_or_an_outdated_client_fails_the_session_with_its_reason() {
    use wasp_sim::faults::LoginFailure;
    let (running, sim) = start_sim().await;
    let user = unique_user("banned");
    let opts = PodOpts::new(&user, &running.ws_url);
    let (pod, phone, device) = paired_pod(&running, &sim, opts).await;
    for (failure, category, reason) in [
        (
            LoginFailure {
                reason: "402".into(),
                code: Some(101),
                expire: Some(3600),
            },
            "temporary_ban",
            "TemporaryBan",
        ),
        (
            LoginFailure {
                reason: "405".into(),
                code: None,
                expire: None,
            },
            "client_outdated",
            "ClientOutdated",
        ),
    ] {
        let mut events = Events::tail(&user).await;
        let before = wasp_common::session_state::read_state(&mut redis().await, &user)
            .await
            .unwrap()
            .unwrap()
            .reconnect_count;
        sim.login_failure(Some(failure)).await.unwrap();
        // The network drops; the reconnect meets the refusal.
        sim.inject(&phone, device, wasp_sim::faults::SocketFault::Drop)
            .await
            .unwrap();
        events
            .wait_for(category, |k| match k {
                Kind::Error(e) if e.category == category => Some(()),
                _ => None,
            })
            .await;
        events
            .wait_for("status Failed", |k| match k {
                Kind::Status(s) if s.phase == "Failed" => Some(()),
                _ => None,
            })
            .await;
        let mut conn = redis().await;
        let state = wasp_common::session_state::read_state(&mut conn, &user)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.phase, wasp_common::SessionPhase::Failed);
        assert_eq!(state.error_reason.as_deref(), Some(reason), "{state:?}");
        assert!(
            state.reconnect_count <= before + 1,
            "a refused session is not retried: {state:?}"
        );
        // The refusal lifted, the user connects again: back without a scan.
        sim.login_failure(None).await.unwrap();
        let (st, _) = pod.api(Method::POST, "/v1/connect", None).await;
        assert_eq!(st, 202);
        events.ready().await;
    }
    drop(running);
}
