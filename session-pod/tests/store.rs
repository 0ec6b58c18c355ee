//! The message store against a real Redis: chronological pages with a `before` cursor, chats
//! newest first in pages, a chat's newest message that never moves back, unread counts, names
//! that an own send never blanks, acks that only rise, and the stored JSON carrying its event id.
#![allow(clippy::unwrap_used)]

mod common;

use common::{redis_url, unique_user};
use wasp_common::model::{Message, MessageParts, Wid, ack};
use wasp_session_pod::store::{Keep, Store, StoreOutcome};

const KEEP: Keep = Keep {
    store: true,
    emit: true,
};

async fn store(user: &str) -> Store {
    let conn = redis::Client::open(redis_url())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    Store::new(conn, user, 1000)
}

fn msg(chat: &str, id: &str, from_me: bool, ts: i64, body: &str, push_name: &str) -> Message {
    let chat = Wid::parse(chat).unwrap();
    let me = Wid::parse("41790000009@c.us").unwrap();
    Message::new(MessageParts {
        id,
        chat: &chat,
        own: Some(&me),
        author: None,
        from_me,
        body,
        kind: "chat",
        timestamp: ts,
        has_media: false,
        has_quoted_msg: false,
        push_name,
    })
}

const ANA: &str = "41790000001@c.us";
const BEN: &str = "41790000002@c.us";

#[tokio::test]
async fn messages_page_back_in_time_oldest_first() {
    let s = store(&unique_user("pages")).await;
    // Same second for several: arrival order breaks the tie.
    for (i, ts) in [100, 100, 100, 101, 102, 102].into_iter().enumerate() {
        let m = msg(ANA, &format!("M{i}"), false, ts, &format!("m{i}"), "Ana");
        assert_eq!(s.put_message(&m, KEEP).await.unwrap(), StoreOutcome::New);
    }
    let bodies = |v: Vec<Message>| v.into_iter().map(|m| m.body).collect::<Vec<_>>();
    assert_eq!(
        bodies(s.messages(ANA, None, 3).await.unwrap()),
        ["m3", "m4", "m5"]
    );
    let oldest = "false_41790000001@c.us_M3";
    assert_eq!(
        bodies(s.messages(ANA, Some(oldest), 10).await.unwrap()),
        ["m0", "m1", "m2"]
    );
    assert_eq!(
        s.find_key(ANA, "M3").await.unwrap().as_deref(),
        Some(oldest)
    );
    assert_eq!(s.find_key(ANA, "nope").await.unwrap(), None);
    // A duplicate is recognised and changes nothing.
    let again = msg(ANA, "M0", false, 100, "m0", "Ana");
    assert_eq!(
        s.put_message(&again, KEEP).await.unwrap(),
        StoreOutcome::Duplicate
    );
    assert_eq!(s.message_count(ANA).await.unwrap(), 6);
}

#[tokio::test]
async fn chats_list_newest_first_in_pages_and_keep_their_newest_message_and_name() {
    let s = store(&unique_user("chats")).await;
    s.put_message(&msg(ANA, "A1", false, 200, "hi from Ana", "Ana"), KEEP)
        .await
        .unwrap();
    s.put_message(&msg(BEN, "B1", false, 300, "hi from Ben", "Ben"), KEEP)
        .await
        .unwrap();
    s.put_message(&msg(ANA, "A2", false, 400, "again", "Ana"), KEEP)
        .await
        .unwrap();
    // An older message arriving late (offline queue) does not become the newest.
    s.put_message(&msg(ANA, "A0", false, 150, "old", "Ana"), KEEP)
        .await
        .unwrap();

    let (page, more) = s.chats(0, 1).await.unwrap();
    assert!(more);
    assert_eq!(page[0].id.serialized, ANA);
    assert_eq!(page[0].name, "Ana");
    assert_eq!(page[0].unread_count, 3);
    assert_eq!(page[0].timestamp, 400);
    assert_eq!(page[0].last_message.as_ref().unwrap().body, "again");
    let (page, more) = s.chats(1, 1).await.unwrap();
    assert!(!more);
    assert_eq!(page[0].id.serialized, BEN);

    // The user answers Ana: the chat is read, keeps its name, and the answer is the newest.
    s.put_message(&msg(ANA, "R1", true, 500, "see you", ""), KEEP)
        .await
        .unwrap();
    let ana = s.chat(ANA).await.unwrap().unwrap();
    assert_eq!(
        (ana.name.as_str(), ana.unread_count, ana.timestamp),
        ("Ana", 0, 500)
    );
    assert!(ana.last_message.unwrap().from_me);
    let (all, _) = s.chats(0, 10).await.unwrap();
    assert_eq!(all[0].id.serialized, ANA, "newest activity first");
    // A name from the whitelist beats the push name.
    s.add_contact(&wasp_common::control::Contact {
        phone: "41790000002".into(),
        mobile_no: "+41790000002".into(),
        name: "Ben (patient)".into(),
        added_at: 0,
    })
    .await
    .unwrap();
    assert_eq!(s.chat(BEN).await.unwrap().unwrap().name, "Ben (patient)");
    assert!(s.chat("41790000003@c.us").await.unwrap().is_none());
}

#[tokio::test]
async fn acks_only_rise_and_the_stored_json_carries_its_event_id() {
    let s = store(&unique_user("acks")).await;
    let sent = msg(ANA, "S1", true, 600, "your plan", "");
    s.put_message(&sent, KEEP).await.unwrap();
    let stored = s.messages(ANA, None, 1).await.unwrap().remove(0);
    assert!(
        stored.event_id.contains('-'),
        "the stream entry id: {stored:?}"
    );
    assert_eq!(stored.ack, ack::SERVER);

    let key = sent.key().to_owned();
    let fallback = || sent.clone();
    let read = s
        .raise_ack(ANA, &key, ack::READ, fallback)
        .await
        .unwrap()
        .expect("rose");
    assert_eq!(read.ack, ack::READ);
    assert_eq!(read.event_id, stored.event_id, "the message keeps its id");
    // A late delivery receipt does not lower it.
    assert!(
        s.raise_ack(ANA, &key, ack::DEVICE, || sent.clone())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.messages(ANA, None, 1).await.unwrap()[0].ack, ack::READ);
    let chat = s.chat(ANA).await.unwrap().unwrap();
    assert_eq!(chat.last_message.unwrap().ack, ack::READ);
}

#[tokio::test]
async fn nothing_is_stored_when_the_policy_says_so() {
    let s = store(&unique_user("none")).await;
    let m = msg(ANA, "N1", false, 700, "not kept", "Ana");
    let keep = Keep {
        store: false,
        emit: true,
    };
    assert_eq!(s.put_message(&m, keep).await.unwrap(), StoreOutcome::New);
    assert!(s.messages(ANA, None, 10).await.unwrap().is_empty());
    assert_eq!(s.chats(0, 10).await.unwrap().0, Vec::new());
    assert_eq!(s.stat("notStored").await.unwrap(), 1);
}

#[tokio::test]
async fn a_change_lands_once_and_only_on_the_json_it_was_computed_from() {
    use wasp_common::events::{Json, Kind};
    use wasp_session_pod::store::changes::ChangeOutcome;
    let s = store(&unique_user("changes")).await;
    let m = msg(ANA, "T1", true, 100, "hello", "");
    s.put_message(&m, KEEP).await.unwrap();
    let key = m.id.serialized.clone();
    let (old, stored) = s.message_json(ANA, &key).await.unwrap().unwrap();
    let reacted = wasp_common::model::apply_reaction(stored.clone(), ANA, "👍", 101);
    let event = || Kind::Reaction(Json::of(&serde_json::json!({"r": 1})));
    let apply = |change: &'static str, old: Option<String>, new: Message| {
        let s = s.clone();
        let key = key.clone();
        async move {
            s.apply_change(change, ANA, &key, old.as_deref(), Some(&new), event(), true)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        apply("R1", Some(old.clone()), reacted.clone()).await,
        ChangeOutcome::Applied
    );
    // The same change again (a redelivery): nothing happens.
    assert_eq!(
        apply("R1", Some(old.clone()), reacted.clone()).await,
        ChangeOutcome::Duplicate
    );
    // A change computed from the JSON before R1 lost the race: it must re-read.
    let edited = wasp_common::model::apply_edit(stored, "hello!", 5).message;
    assert_eq!(
        apply("E1", Some(old), edited).await,
        ChangeOutcome::Conflict
    );
    let (_, now) = s.message_json(ANA, &key).await.unwrap().unwrap();
    assert!(now.has_reaction);
    assert_eq!(now.body, "hello");
    // Re-read, it lands on top of the reaction.
    let (fresh, now) = s.message_json(ANA, &key).await.unwrap().unwrap();
    let edited = wasp_common::model::apply_edit(now, "hello!", 5).message;
    assert_eq!(
        apply("E1", Some(fresh), edited).await,
        ChangeOutcome::Applied
    );
    let (_, now) = s.message_json(ANA, &key).await.unwrap().unwrap();
    assert_eq!((now.body.as_str(), now.has_reaction), ("hello!", true));
}

#[tokio::test]
async fn an_idempotency_key_is_claimed_once_then_answers_its_first_answer() {
    let s = store(&unique_user("idem")).await;
    assert_eq!(s.claim_idempotency("rec", "p1", 60).await.unwrap(), None);
    assert_eq!(
        s.claim_idempotency("rec", "p2", 60)
            .await
            .unwrap()
            .as_deref(),
        Some("pending:p1")
    );
    s.finish_idempotency("rec", "{\"ok\":true}", 60)
        .await
        .unwrap();
    assert_eq!(
        s.claim_idempotency("rec", "p2", 60)
            .await
            .unwrap()
            .as_deref(),
        Some("{\"ok\":true}")
    );
    // A failed send gives the key back.
    assert_eq!(s.claim_idempotency("rec2", "p1", 60).await.unwrap(), None);
    s.release_idempotency("rec2").await.unwrap();
    assert_eq!(s.claim_idempotency("rec2", "p2", 60).await.unwrap(), None);
}
