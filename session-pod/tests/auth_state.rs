//! Auth state in Redis: encrypted at rest, and a kill -9 → restart resumes without a new scan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use wasp_common::crypto::{AuthCipher, MasterKey, user_keyring};
use wasp_common::keys::UserKeys;

/// Every value of every key of the user, as bytes (strings, hashes, lists, sets, zsets, streams).
async fn all_bytes(user: &str) -> Vec<(String, Vec<u8>)> {
    let mut conn = redis().await;
    let pattern = UserKeys::for_user(user).scan_pattern();
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut out = Vec::new();
    for key in keys {
        let t: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let vals: Vec<Vec<u8>> = match t.as_str() {
            "string" => vec![
                redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
            ],
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "set" => redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "stream" => {
                let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                entries.into_iter().flat_map(|(_, f)| f).collect()
            }
            other => panic!("unexpected type {other} of {key}"),
        };
        out.push((key.clone(), key.clone().into_bytes()));
        for v in vals {
            out.push((key.clone(), v));
        }
    }
    out
}

/// The forms a 32-byte key could take in a value: raw, hex, base64, a JSON byte array.
fn encodings(key: &[u8]) -> Vec<Vec<u8>> {
    let json = format!(
        "[{}]",
        key.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
    );
    vec![
        key.to_vec(),
        data_encoding::HEXLOWER.encode(key).into_bytes(),
        data_encoding::HEXUPPER.encode(key).into_bytes(),
        data_encoding::BASE64.encode(key).into_bytes(),
        data_encoding::BASE64_NOPAD.encode(key).into_bytes(),
        json.clone().into_bytes(),
        json.replace(',', ", ").into_bytes(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paired_state_is_encrypted_and_survives_kill_9() {
    let (running, sim) = start_sim().await;
    let user = unique_user("auth");
    let opts = PodOpts::new(&user, &running.ws_url);
    let (pod, phone, device) = paired_pod(&running, &sim, opts.clone()).await;

    // The keys the client generated: its Noise and identity key pairs, from the decrypted device
    // record (proving the record is there and opens with the right key), and the public halves
    // the simulator registered.
    let mut conn = redis().await;
    let dev_key = format!("{}device", UserKeys::for_user(&user).auth_prefix());
    let sealed: Vec<u8> = redis::cmd("HGET")
        .arg(&dev_key)
        .arg("device")
        .query_async(&mut conn)
        .await
        .unwrap();
    let cipher = AuthCipher::new(&MasterKey::parse(MASTER_KEY).unwrap(), &user);
    let mut aad = dev_key.clone().into_bytes();
    aad.push(0);
    aad.extend_from_slice(b"device");
    let plain = cipher.open(&aad, &sealed).expect("device record opens");
    let device_rec: wacore::store::Device = serde_json::from_slice(&plain).unwrap();
    assert!(device_rec.pn.is_some(), "the stored device is paired");
    // A different user's key does not open it.
    assert!(
        AuthCipher::new(&MasterKey::parse(MASTER_KEY).unwrap(), "someone-else")
            .open(&aad, &sealed)
            .is_err()
    );

    let (noise_pub, identity_pub) = running
        .sim
        .wait_for(WAIT, |w| {
            let d = &w.accounts[&phone].devices[&device];
            Some((d.noise_pub, d.identity_pub))
        })
        .await
        .unwrap();
    // Every one-time prekey the device uploaded is stored and opens. The pairing's batch of
    // them is written in several requests (auth_store's MAX_WRITE_BYTES): none may be lost
    // at a request boundary.
    let uploaded: Vec<u32> = running
        .sim
        .wait_for(WAIT, |w| {
            let d = &w.accounts[&phone].devices[&device];
            (!d.prekeys.is_empty()).then(|| d.prekeys.keys().copied().collect())
        })
        .await
        .unwrap();
    let prekey_table = format!("{}prekey", UserKeys::for_user(&user).auth_prefix());
    let stored: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(&prekey_table)
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored: std::collections::BTreeMap<u32, Vec<u8>> = stored
        .into_iter()
        .map(|(f, v)| (f.parse().unwrap(), v))
        .collect();
    assert!(uploaded.len() >= 100, "{} prekeys uploaded", uploaded.len());
    for id in &uploaded {
        let sealed = stored
            .get(id)
            .unwrap_or_else(|| panic!("prekey {id} not stored"));
        assert!(
            cipher
                .open(&crate::aad(&prekey_table, &id.to_string()), sealed)
                .is_ok()
        );
    }

    let mut secrets: Vec<(&str, Vec<u8>)> = vec![
        (
            "noise private",
            device_rec.noise_key.private_key.serialize().to_vec(),
        ),
        (
            "identity private",
            device_rec.identity_key.private_key.serialize().to_vec(),
        ),
        (
            "signed prekey private",
            device_rec.signed_pre_key.private_key.serialize().to_vec(),
        ),
        ("adv secret", device_rec.adv_secret_key.to_vec()),
        ("noise public", noise_pub.to_vec()),
        ("identity public", identity_pub.to_vec()),
    ];
    secrets.retain(|(_, k)| k.len() >= 16);
    assert_eq!(secrets.len(), 6);
    let dump = all_bytes(&user).await;
    assert!(
        dump.len() > 10,
        "auth state is in Redis: {} values",
        dump.len()
    );
    for (what, key) in &secrets {
        for form in encodings(key) {
            for (redis_key, v) in &dump {
                assert!(
                    !v.windows(form.len()).any(|w| w == form.as_slice()),
                    "{what} found in plaintext under {redis_key}"
                );
            }
        }
    }

    // kill -9 and restart: connected again with the same device, no QR.
    let logins_before = sim.device(&phone, device).await.unwrap().unwrap().logins;
    let mut events = Events::tail(&user).await;
    pod.kill9();
    let pod2 = Pod::start(&opts);
    let ready = events
        .wait_for("ready after restart", |k| match k {
            wasp_common::events::Kind::Qr(_) => panic!("a new QR after restart"),
            wasp_common::events::Kind::Ready(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(ready.phone, phone);
    let d = sim.device(&phone, device).await.unwrap().unwrap();
    assert!(d.connected && d.logins > logins_before, "{d:?}");
    // No second pairing: the phone still has exactly the one linked companion.
    let companions: Vec<_> = sim
        .devices()
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.phone == phone && d.device != 0)
        .collect();
    assert_eq!(companions.len(), 1, "{companions:?}");
    let (status, body) = pod2.api(reqwest::Method::GET, "/v1/status", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["phase"], "Connected", "{body}");
    assert_eq!(body["phoneNumber"], phone.as_str());
    let mut conn = redis().await;
    let state = wasp_common::session_state::read_state(&mut conn, &user)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.phase, wasp_common::SessionPhase::Connected);
    drop(running);
}

/// Every auth-state row of the user: `(redis key, field, sealed value)`.
async fn auth_rows(user: &str) -> Vec<(String, String, Vec<u8>)> {
    let mut conn = redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(UserKeys::for_user(user).auth_scan_pattern())
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut rows = Vec::new();
    // The table index and its marker are bookkeeping, not rows.
    for key in keys.into_iter().filter(|k| !k.contains(":auth:#")) {
        let fields: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        rows.extend(fields.into_iter().map(|(f, v)| (key.clone(), f, v)));
    }
    rows
}

fn aad(key: &str, field: &str) -> Vec<u8> {
    let mut a = key.as_bytes().to_vec();
    a.push(0);
    a.extend_from_slice(field.as_bytes());
    a
}

/// Waits for `ready` on the live channel; a QR (a new scan) fails the test.
async fn ready_without_scan(live: &mut Live, what: &str) -> wasp_common::events::Ready {
    live.wait_for(what, |k| match k {
        wasp_common::events::Kind::Qr(_) | wasp_common::events::Kind::PairingCode(_) => {
            panic!("{what}: the pod asked for a new scan")
        }
        wasp_common::events::Kind::Ready(r) => Some(r.clone()),
        _ => None,
    })
    .await
}

/// Stops a pod with SIGTERM and waits for its exit (no sleeps: polls the process).
async fn stop(pod: &Pod) {
    pod.term();
    let deadline = tokio::time::Instant::now() + WAIT;
    while pod.proc.exited().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "pod did not exit");
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Master-key rotation: paired under key A; restarted with the user's keyring of current B and
/// previous [A] (what the operator gives) it connects without a scan and re-seals every row
/// under B; restarted with the master key B alone it still connects. A is then useless:
/// nothing of the user opens with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_keeps_the_pairing() {
    const KEY_B: &str = "0202020202020202020202020202020202020202020202020202020202020202";
    let (running, sim) = start_sim().await;
    let user = unique_user("rotate");
    let opts = PodOpts::new(&user, &running.ws_url);
    let (pod, phone, device) = paired_pod(&running, &sim, opts.clone()).await;
    let key_a = MasterKey::parse(MASTER_KEY).unwrap();
    let key_b = MasterKey::parse(KEY_B).unwrap();
    let only_a = AuthCipher::new(&key_a, &user);
    let only_b = AuthCipher::new(&key_b, &user);
    stop(&pod).await;
    let logins_paired = sim.device(&phone, device).await.unwrap().unwrap().logins;
    let before = auth_rows(&user).await;
    assert!(before.len() > 10, "{} auth rows", before.len());
    for (k, f, v) in &before {
        assert!(only_a.open(&aad(k, f), v).is_ok(), "{k} {f} is under A");
        assert!(only_b.open(&aad(k, f), v).is_err(), "{k} {f} opens with B");
    }

    // current = B, previous = [A], the operator's way: only the user's keyring derived from
    // them (WASP_USER_KEYS), no master key.
    let mut rotated = opts.clone();
    rotated.master_key = None;
    rotated.extra_env = vec![(
        "WASP_USER_KEYS".into(),
        user_keyring(&key_b, std::slice::from_ref(&key_a), &user),
    )];
    let mut live = Live::subscribe(&user).await;
    let pod = Pod::start(&rotated);
    let ready = ready_without_scan(&mut live, "ready with B, previous A").await;
    assert_eq!(ready.phone, phone);
    stop(&pod).await;
    // Every row — including those the client never rewrote — is now under B only.
    let after = auth_rows(&user).await;
    assert!(
        after.len() >= before.len(),
        "{} → {}",
        before.len(),
        after.len()
    );
    for (k, f, v) in &after {
        assert_eq!(v[0], only_b.current_key_id(), "{k} {f} carries B's id");
        assert!(only_b.open(&aad(k, f), v).is_ok(), "{k} {f} opens with B");
        assert!(
            only_a.open(&aad(k, f), v).is_err(),
            "{k} {f} still opens with A"
        );
    }

    // B alone, as a master key given directly: still paired, still the same device.
    let mut only_b_opts = opts.clone();
    only_b_opts.master_key = Some(KEY_B.into());
    let mut live = Live::subscribe(&user).await;
    let pod = Pod::start(&only_b_opts);
    let ready = ready_without_scan(&mut live, "ready with B alone").await;
    assert_eq!(ready.phone, phone);
    let companions: Vec<_> = sim
        .devices()
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.phone == phone && d.device != 0)
        .collect();
    assert_eq!(companions.len(), 1, "{companions:?}");
    assert_eq!(companions[0].device, device);
    // Two logins since pairing, with the same credentials.
    assert!(
        companions[0].logins >= logins_paired + 2,
        "{logins_paired} → {:?}",
        companions[0]
    );
    let (status, body) = pod.api(reqwest::Method::GET, "/v1/status", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["phase"], "Connected", "{body}");
    drop(running);
}

/// A write that fails (Redis unreachable or refusing) fences the store for the rest of the
/// client run: later writes fail too, even once Redis accepts them again, so that nothing the
/// run decrypted after the failure persists (the supervisor reconnects with a new client, see
/// `RedisAuthStore::fault`); `reopen` (the next run) lifts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_fences_the_auth_store_until_the_next_client_run() {
    use std::time::Duration;
    use wacore::store::traits::SignalStore as _;
    use wasp_session_pod::auth_store::RedisAuthStore;

    // A Redis of its own, made to refuse writes (and only writes) for a while.
    let server = wasp_e2e::redis_server::RedisServer::start().unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client.clone())
        .await
        .unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let refuse_writes = |on: bool| {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET")
            .arg("min-replicas-to-write")
            .arg(if on { 1 } else { 0 });
        cmd
    };
    let user = unique_user("fence");
    let cipher = AuthCipher::new(&MasterKey::parse(MASTER_KEY).unwrap(), &user);
    let store = RedisAuthStore::new(conn, cipher, &user);
    let fenced = |store: &RedisAuthStore| {
        let store = store.clone();
        async move {
            tokio::time::timeout(Duration::from_millis(200), store.faulted())
                .await
                .is_ok()
        }
    };
    let session = |s: Option<bytes::Bytes>| s.map(|b| b.to_vec());

    store.put_session("peer.0", b"v1").await.unwrap();
    assert!(!fenced(&store).await);

    refuse_writes(true)
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    assert!(store.put_session("peer.0", b"v2").await.is_err());
    assert!(fenced(&store).await, "a failed write fences the run");
    refuse_writes(false)
        .query_async::<()>(&mut admin)
        .await
        .unwrap();

    // Redis takes writes again; this run's store does not.
    assert!(store.put_session("peer.0", b"v3").await.is_err());
    assert!(store.delete_session("peer.0").await.is_err());
    assert_eq!(
        session(store.get_session("peer.0").await.unwrap()),
        Some(b"v1".to_vec())
    );

    // The next client run writes again.
    store.reopen().await;
    assert!(!fenced(&store).await, "reopen lifts the fence");
    store.put_session("peer.0", b"v4").await.unwrap();
    assert_eq!(
        session(store.get_session("peer.0").await.unwrap()),
        Some(b"v4".to_vec())
    );
}

/// Blast radius of one user (issue 14): a pod that has only user A's keyring cannot open user
/// B's auth state. B is paired under its own keyring; a process that claims to be B but holds
/// only A's keyring (what a compromised pod of A could try with Redis access) opens none of
/// B's rows: it never logs in as B's device but asks for a new scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_only_its_own_keyring_cannot_open_another_users_auth_state() {
    let (running, sim) = start_sim().await;
    let master = MasterKey::parse(MASTER_KEY).unwrap();
    let (alice, bob) = (unique_user("alice"), unique_user("bob"));
    let mut bob_opts = PodOpts::new(&bob, &running.ws_url);
    bob_opts.master_key = None;
    bob_opts.extra_env = vec![("WASP_USER_KEYS".into(), user_keyring(&master, &[], &bob))];
    let (pod, phone, device) = paired_pod(&running, &sim, bob_opts.clone()).await;
    stop(&pod).await;
    let logins = sim.device(&phone, device).await.unwrap().unwrap().logins;
    let rows = auth_rows(&bob).await;
    assert!(rows.len() > 10, "{} auth rows", rows.len());
    let alice_ring = user_keyring(&master, &[], &alice);
    let with_alices = AuthCipher::from_keyring(&alice_ring).unwrap();
    let with_bobs = AuthCipher::new(&master, &bob);
    for (k, f, v) in &rows {
        assert!(with_bobs.open(&aad(k, f), v).is_ok(), "{k} {f} is B's");
        assert!(
            with_alices.open(&aad(k, f), v).is_err(),
            "{k} {f} opens with A's keyring"
        );
    }

    // The pod process itself: user B, A's keyring only. It cannot load B's device record, so
    // it never connects (no login, no QR, nothing written), and gives up as Failed.
    let mut intruder = bob_opts.clone();
    intruder.extra_env = vec![("WASP_USER_KEYS".into(), alice_ring)];
    let pod = Pod::start(&intruder);
    pod.wait_up().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = pod.api(reqwest::Method::GET, "/v1/status", None).await;
        assert_ne!(body["phase"], "Connected", "{body}");
        assert_ne!(body["phase"], "AwaitingScan", "{body}");
        if body["phase"] == "Failed" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{body}\n{}",
            pod.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let log = pod.proc.log_tail(200);
    assert!(
        log.contains("failed to initialize the device store"),
        "{log}"
    );
    stop(&pod).await;
    assert_eq!(
        sim.device(&phone, device).await.unwrap().unwrap().logins,
        logins,
        "B's device logged in"
    );
    let mut after = auth_rows(&bob).await;
    let mut before = rows.clone();
    after.sort();
    before.sort();
    assert!(after == before, "the intruder changed B's auth state");

    // B's own pod is unaffected: connected without a scan.
    let mut live = Live::subscribe(&bob).await;
    let pod = Pod::start(&bob_opts);
    let ready = ready_without_scan(&mut live, "B again with its own keyring").await;
    assert_eq!(ready.phone, phone);
    stop(&pod).await;
    drop(running);
}

/// A session pod's own Redis user (what the operator creates, `wasp_common::acl`): its keys
/// and channels work; another user's keys, channels and scripts over them, listing keys, the
/// global announcement channel (but for PUBLISH) and admin commands get NOPERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_pods_redis_user_gets_noperm_outside_its_own_user() {
    let (me, other) = (unique_user("acl-me"), unique_user("acl-other"));
    let (mine, theirs) = (UserKeys::for_user(&me), UserKeys::for_user(&other));
    // The other user's data exists: NOPERM, not an empty answer, is what keeps it private.
    let mut admin = redis().await;
    let _: () = redis::cmd("HSET")
        .arg(theirs.auth_prefix() + "session")
        .arg("f")
        .arg("v")
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = session_redis_url(&me);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    let _: () = redis::cmd("SET")
        .arg(mine.state())
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let n: i64 = redis::cmd("PUBLISH")
        .arg(wasp_common::keys::STATE_CHANGED_CHANNEL)
        .arg("default/wa-test")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(n >= 0);

    let noperm = |what: &str, r: redis::RedisResult<redis::Value>| match r {
        Err(e) if e.code() == Some("NOPERM") => {}
        other => panic!("{what}: expected NOPERM, got {other:?}"),
    };
    let other_auth = theirs.auth_prefix() + "session";
    let cases: Vec<(&str, redis::Cmd)> = vec![
        (
            "GET of another user's key",
            redis::cmd("GET").arg(theirs.state()).clone(),
        ),
        (
            "HGETALL of another user's auth table",
            redis::cmd("HGETALL").arg(&other_auth).clone(),
        ),
        (
            "SET of another user's key",
            redis::cmd("SET").arg(theirs.lease()).arg("mine").clone(),
        ),
        (
            "DEL of another user's key",
            redis::cmd("DEL").arg(&other_auth).clone(),
        ),
        (
            "a script declaring another user's key",
            redis::cmd("EVAL")
                .arg("return redis.call('HGETALL', KEYS[1])")
                .arg(1)
                .arg(&other_auth)
                .clone(),
        ),
        (
            "a script reaching another user's key undeclared",
            redis::cmd("EVAL")
                .arg("return redis.call('HGETALL', ARGV[1])")
                .arg(1)
                .arg(mine.state())
                .arg(&other_auth)
                .clone(),
        ),
        (
            "PUBLISH on another user's channel",
            redis::cmd("PUBLISH")
                .arg(theirs.events_channel())
                .arg("forged")
                .clone(),
        ),
        (
            "SCAN",
            redis::cmd("SCAN").arg(0).arg("COUNT").arg(1000).clone(),
        ),
        ("KEYS", redis::cmd("KEYS").arg("*").clone()),
        ("FLUSHALL", redis::cmd("FLUSHALL").clone()),
        (
            "CONFIG GET",
            redis::cmd("CONFIG").arg("GET").arg("*").clone(),
        ),
        (
            "ACL SETUSER",
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg("evil")
                .arg("on")
                .clone(),
        ),
    ];
    for (what, cmd) in cases {
        let r = cmd.query_async::<redis::Value>(&mut conn).await;
        if what.starts_with("a script") {
            // A script's refused call is a script error: NOPERM, or Redis 7.0's wording.
            let e = r.expect_err(what).to_string();
            assert!(
                e.contains("NOPERM") || e.contains("can't access at least one of the keys"),
                "{what}: {e}"
            );
        } else {
            noperm(what, r);
        }
    }

    // Subscriptions: its own events channel yes; another user's, or the global one, no.
    let mut ps = client.get_async_pubsub().await.unwrap();
    ps.subscribe(mine.events_channel()).await.unwrap();
    // (A plain connection: redis-rs's async pub/sub does not surface a refused SUBSCRIBE.)
    let refused = |args: &[&str]| {
        let mut c = client.get_connection().unwrap();
        let e = redis::cmd(args[0])
            .arg(&args[1..])
            .query::<redis::Value>(&mut c)
            .expect_err(args[1]);
        assert_eq!(e.code(), Some("NOPERM"), "{args:?}: {e}");
    };
    refused(&["SUBSCRIBE", &theirs.events_channel()]);
    refused(&["SUBSCRIBE", wasp_common::keys::STATE_CHANGED_CHANNEL]);
    refused(&["PSUBSCRIBE", "wasp:*"]);

    // The data the refused commands aimed at is untouched.
    let v: Option<String> = redis::cmd("HGET")
        .arg(&other_auth)
        .arg("f")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("v"));
}
