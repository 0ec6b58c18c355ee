//! History sync after pairing: the simulated phone sends the unmodified client its chat
//! history as WhatsApp's phones do (HISTORY_SYNC_NOTIFICATION peer messages naming
//! zlib-compressed, media-encrypted `HistorySync` blobs on the media server).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use wasp_sim::history::HistoryPlan;

const INITIAL_BOOTSTRAP: i32 = 0;
const RECENT: i32 = 3;
const PUSH_NAME: i32 = 4;

/// Long enough for a debug build to compress, encrypt, download, decrypt and parse 10,000
/// messages on a loaded 2-core machine.
const HISTORY_WAIT: Duration = Duration::from_secs(90);

fn history_client() -> ClientOpts {
    ClientOpts {
        history_sync: true,
        ..Default::default()
    }
}

/// Collects the client's history chunks until `messages` messages arrived (and the push
/// names chunk); returns the chunks in arrival order.
async fn collect_history(client: &mut TestClient, messages: usize) -> Vec<HistorySeen> {
    let deadline = tokio::time::Instant::now() + HISTORY_WAIT;
    let mut chunks = Vec::new();
    let mut count = 0;
    let mut pushnames = false;
    while count < messages || !pushnames {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Some(Ev::History(h))) => {
                count += h.conversations.iter().map(|(_, m)| m.len()).sum::<usize>();
                pushnames |= h.sync_type == PUSH_NAME;
                chunks.push(*h);
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("client events ended"),
            Err(_) => panic!(
                "timed out with {count} of {messages} history messages; client warnings: {:#?}; \
                 client's history lines: {:#?}",
                client_warnings(),
                client_lines_with(&["istory", "retry", "decrypt"])
            ),
        }
    }
    assert_eq!(count, messages, "no message twice");
    chunks
}

/// Merges the chunks' conversations by id.
fn by_conversation(chunks: &[HistorySeen]) -> BTreeMap<String, Vec<HistoryMsg>> {
    let mut out: BTreeMap<String, Vec<HistoryMsg>> = BTreeMap::new();
    for c in chunks {
        for (id, msgs) in &c.conversations {
            out.entry(id.clone())
                .or_default()
                .extend(msgs.iter().cloned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_client_receives_the_planned_history() {
    let (running, sim) = start_sim().await;
    let phone = sim.create_phone(None, Some("History Owner")).await.unwrap();
    let alice = sim.create_contact(None, Some("Alice")).await.unwrap();
    let bob = sim.create_contact(None, Some("Bob")).await.unwrap();
    sim.set_history(
        &phone.phone,
        &HistoryPlan {
            chats: 50,
            messages_per_chat: 3,
            contacts: vec![alice.phone.clone(), bob.phone.clone()],
            chunk_messages: 40,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        sim.history(&phone.phone).await.unwrap().plan.unwrap().chats,
        50
    );

    let mut opts = history_client();
    opts.http = Some(MediaHttp::new(&running.media_ca_pem));
    let (_, device, mut client) = paired_client_for(&running, &sim, &phone.phone, opts).await;
    let chunks = collect_history(&mut client, 150).await;

    // INITIAL_BOOTSTRAP (every chat with its newest message), PUSH_NAME, then RECENT. The
    // client processes chunks concurrently, so its events may come in another order.
    let mut chunks = chunks;
    let phase = |t: i32| match t {
        INITIAL_BOOTSTRAP => 0,
        PUSH_NAME => 1,
        _ => 2,
    };
    chunks.sort_by_key(|c| (phase(c.sync_type), c.chunk_order));
    let kinds: Vec<(i32, Option<u32>)> = chunks
        .iter()
        .map(|c| (c.sync_type, c.chunk_order))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (INITIAL_BOOTSTRAP, Some(1)),
            (INITIAL_BOOTSTRAP, Some(2)),
            (PUSH_NAME, Some(1)),
            (RECENT, Some(1)),
            (RECENT, Some(2)),
            (RECENT, Some(3)),
        ]
    );
    assert_eq!(chunks[1].progress, Some(100));
    assert_eq!(chunks.last().unwrap().progress, Some(100));
    assert!(chunks[0].progress.unwrap() < 100);
    // The first bootstrap chunk maps the simulated contacts' numbers to their LIDs.
    assert_eq!(chunks[0].lid_mappings, 2);

    let convs = by_conversation(&chunks);
    assert_eq!(convs.len(), 50);
    let now = chrono::Utc::now().timestamp() as u64;
    let alice_jid = format!("{}@s.whatsapp.net", alice.phone);
    for (jid, msgs) in &convs {
        assert_eq!(msgs.len(), 3, "{jid}");
        let ids: BTreeSet<_> = msgs.iter().map(|m| &m.id).collect();
        assert_eq!(ids.len(), 3);
        assert!(msgs.iter().any(|m| m.from_me) && msgs.iter().any(|m| !m.from_me));
        assert!(msgs.iter().all(|m| m.timestamp > 0 && m.timestamp < now));
        assert!(
            msgs.iter()
                .all(|m| !m.text.is_empty() && m.push_name.is_some())
        );
    }
    let alice_msgs = &convs[&alice_jid];
    assert!(
        alice_msgs
            .iter()
            .any(|m| !m.from_me && m.push_name.as_deref() == Some("Alice"))
    );
    assert!(alice_msgs.iter().any(|m| m.text.contains("from Alice")));
    // Push names of every partner, and the phone's own.
    let pushnames: BTreeMap<_, _> = chunks
        .iter()
        .flat_map(|c| c.pushnames.iter().cloned())
        .collect();
    assert_eq!(pushnames.len(), 51);
    assert_eq!(pushnames[&alice_jid], "Alice");
    assert_eq!(
        pushnames[&format!("{}@s.whatsapp.net", phone.phone)],
        "History Owner"
    );

    // The phone saw every chunk acknowledged.
    let done = running
        .sim
        .wait_for(WAIT, |w| {
            w.history
                .values()
                .find(|p| p.phone == phone.phone && p.done)
                .cloned()
        })
        .await
        .unwrap();
    assert_eq!((done.device, done.chunks, done.messages), (device, 6, 150));
    assert!(running.sim.unhandled_iqs().is_empty());
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_of_ten_thousand_messages_arrives_completely() {
    let (running, sim) = start_sim().await;
    let phone = sim.create_phone(None, Some("Busy Phone")).await.unwrap();
    sim.set_history(
        &phone.phone,
        &HistoryPlan {
            chats: 200,
            messages_per_chat: 50,
            contacts: vec![],
            chunk_messages: 0,
        },
    )
    .await
    .unwrap();

    // Linked by pairing code this time.
    let mut client = start_client_opts(
        &running.ws_url,
        ClientOpts {
            pair_phone: Some(phone.phone.clone()),
            http: Some(MediaHttp::new(&running.media_ca_pem)),
            history_sync: true,
            ..Default::default()
        },
    )
    .await;
    let code = client
        .wait_for("a pairing code", |e| match e {
            Ev::PairCode(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    sim.enter_pair_code(&phone.phone, &code).await.unwrap();
    let chunks = collect_history(&mut client, 10_000).await;
    let convs = by_conversation(&chunks);
    assert_eq!(convs.len(), 200);
    assert!(convs.values().all(|m| m.len() == 50));
    let ids: BTreeSet<_> = convs.values().flatten().map(|m| m.id.clone()).collect();
    assert_eq!(ids.len(), 10_000);
    // Chunks of at most 500 messages (the default): 1 bootstrap, push names, 20 recent.
    assert_eq!(chunks.len(), 22);
    assert!(
        chunks
            .iter()
            .all(|c| c.conversations.iter().map(|(_, m)| m.len()).sum::<usize>() <= 500)
    );
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_skips_history_still_acknowledges_every_chunk() {
    let (running, sim) = start_sim().await;
    let phone = sim.create_phone(None, None).await.unwrap();
    sim.set_history(
        &phone.phone,
        &HistoryPlan {
            chats: 10,
            messages_per_chat: 2,
            contacts: vec![],
            chunk_messages: 4,
        },
    )
    .await
    .unwrap();
    // skip_history_sync(): the client acknowledges every chunk without downloading it.
    let http = MediaHttp::new(&running.media_ca_pem);
    let opts = ClientOpts {
        http: Some(http.clone()),
        ..Default::default()
    };
    let (_, device, mut client) = paired_client_for(&running, &sim, &phone.phone, opts).await;
    let status = running
        .sim
        .wait_for(HISTORY_WAIT, |w| {
            w.history
                .values()
                .find(|p| p.phone == phone.phone && p.device == device && p.done)
                .cloned()
        })
        .await
        .unwrap();
    // 3 bootstrap chunks of up to 4 chats, push names, 3 recent chunks.
    assert_eq!((status.chunks, status.messages), (7, 20));
    let dev = sim.device(&phone.phone, device).await.unwrap().unwrap();
    assert_eq!(dev.queued, 0);
    assert!(http.exchanges().is_empty(), "{:?}", http.exchanges());
    while let Some(ev) = client.try_next_event() {
        assert!(
            !matches!(ev, Ev::History(_)),
            "a skipped history was processed"
        );
    }
    // Setting an empty plan turns it off; unknown contacts are refused.
    sim.set_history(&phone.phone, &HistoryPlan::default())
        .await
        .unwrap();
    assert!(sim.history(&phone.phone).await.unwrap().plan.is_none());
    let err = sim
        .set_history(
            &phone.phone,
            &HistoryPlan {
                chats: 1,
                messages_per_chat: 1,
                contacts: vec!["19999999999".into()],
                chunk_messages: 0,
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    client.stop().await;
    running.shutdown().await;
}
