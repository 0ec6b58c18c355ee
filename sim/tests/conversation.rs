//! Conversing with contacts through the unmodified client: replies, reactions, edits,
//! revokes, read/played receipts and typing both ways; number checks; profile pictures.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use tokio::sync::mpsc;
use wacore::types::events::Event;
use wacore::types::message::{EditAttribute, MessageInfo};
use wacore::types::presence::{ChatPresence, ChatPresenceMedia, ReceiptType};
use wacore_binary::Jid;
use waproto::whatsapp as wa;
use wasp_sim::client::ClientError;
use wasp_sim::conversation::{ChatState, ReadKind};
use whatsapp_rust::RevokeType;

/// Every library event of one client, as dispatched.
struct Raw(mpsc::UnboundedReceiver<Arc<Event>>);

impl Raw {
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.0.recv()).await {
                Ok(Some(e)) => {
                    if let Some(v) = pick(&e) {
                        return v;
                    }
                }
                Ok(None) => panic!("event stream ended while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// The next message with id `id`: its proto and info.
    async fn message(&mut self, id: &str) -> (wa::Message, MessageInfo) {
        self.wait_for(&format!("message {id}"), |e| match e {
            Event::Messages(batch) => batch
                .iter()
                .find(|m| m.info.id == id)
                .map(|m| ((*m.message).clone(), (*m.info).clone())),
            _ => None,
        })
        .await
    }
}

async fn client_with_raw(
    running: &wasp_sim::Running,
    sim: &wasp_sim::client::SimClient,
) -> (String, u16, TestClient, Raw) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (phone, device, client) = paired_client_opts(
        running,
        sim,
        ClientOpts {
            raw_events: Some(tx),
            ..Default::default()
        },
    )
    .await;
    (phone, device, client, Raw(rx))
}

fn text(t: &str) -> wa::Message {
    wa::Message {
        conversation: Some(t.into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contact_records_what_the_client_does() {
    let (running, sim) = start_sim().await;
    let (phone, device, client, mut raw) = client_with_raw(&running, &sim).await;
    let alice = sim.create_contact(None, Some("Alice")).await.unwrap();
    let alice_jid = Jid::pn(alice.phone.as_str());
    let wa = client.client();

    let hello = sim
        .contact_send(&alice.phone, &phone, "hello")
        .await
        .unwrap();
    let (hello_msg, _) = raw.message(&hello).await;

    // A reply quoting Alice's message, as the library builds the quote.
    let reply = wa::Message {
        extended_text_message: buffa::MessageField::some(wa::message::ExtendedTextMessage {
            text: Some("a reply".into()),
            context_info: buffa::MessageField::some(wacore::proto_helpers::build_quote_context(
                hello.as_str(),
                alice_jid.to_string(),
                &hello_msg,
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    wa.send_message(alice_jid.clone(), reply).await.unwrap();
    // A reaction to her message, and its removal.
    let her_key = wa::MessageKey {
        remote_jid: Some(alice_jid.to_string()),
        from_me: Some(false),
        id: Some(hello.clone()),
        participant: None,
    };
    wa.send_reaction(alice_jid.clone(), her_key.clone(), "👍")
        .await
        .unwrap();
    wa.send_reaction(alice_jid.clone(), her_key, "")
        .await
        .unwrap();
    // An edit and a revoke of the client's own message.
    let own = wa
        .send_message(alice_jid.clone(), text("tpyo"))
        .await
        .unwrap()
        .message_id;
    wa.edit_message(alice_jid.clone(), own.clone(), text("typo"))
        .await
        .unwrap();
    wa.revoke_message(alice_jid.clone(), own.clone(), RevokeType::Sender)
        .await
        .unwrap();
    // The message-secret form of an edit, decrypted with the secret the original carried.
    let secret = [7u8; 32];
    let with_secret = wa::Message {
        conversation: Some("secret tpyo".into()),
        message_context_info: buffa::MessageField::some(wa::MessageContextInfo {
            message_secret: Some(secret.to_vec()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let secret_id = wa
        .send_message(alice_jid.clone(), with_secret)
        .await
        .unwrap()
        .message_id;
    wa.edit_message_encrypted(
        alice_jid.clone(),
        secret_id.clone(),
        &secret,
        text("secret typo"),
    )
    .await
    .unwrap();

    let got = sim.contact_received(&alice.phone, 8, WAIT).await.unwrap();
    assert_eq!(got.len(), 8, "{got:#?}");
    assert_eq!(got[0].text, "a reply");
    assert_eq!(got[0].quoted_id.as_deref(), Some(hello.as_str()));
    let reaction = |i: usize| got[i].reaction.clone().unwrap();
    assert_eq!(
        (reaction(1).target_id, reaction(1).emoji),
        (hello.clone(), "👍".into())
    );
    assert_eq!(
        (reaction(2).target_id, reaction(2).emoji),
        (hello.clone(), String::new())
    );
    assert_eq!(
        (got[3].id.as_str(), got[3].text.as_str()),
        (own.as_str(), "tpyo")
    );
    assert!(got[3].quoted_id.is_none() && got[3].reaction.is_none());
    let edit = got[4].edit.clone().unwrap();
    assert_eq!(
        (edit.target_id, edit.text, got[4].text.as_str()),
        (own.clone(), "typo".into(), "")
    );
    assert_eq!(got[5].revoked_id.as_deref(), Some(own.as_str()));
    assert_eq!(got[6].text, "secret tpyo");
    let edit = got[7].edit.clone().unwrap();
    assert_eq!(
        (edit.target_id, edit.text),
        (secret_id, "secret typo".into())
    );

    // Read receipts for two of Alice's messages in one stanza: she records both ids.
    let second = sim
        .contact_send(&alice.phone, &phone, "are you there?")
        .await
        .unwrap();
    raw.message(&second).await;
    wa.mark_as_read(&alice_jid, None, &[hello.as_str(), second.as_str()])
        .await
        .unwrap();
    let from = format!("{phone}:{device}");
    let read = running
        .sim
        .wait_for(WAIT, |w| {
            let r = &w.contacts[&alice.phone].receipts;
            let read: Vec<_> = r.iter().filter(|r| r.kind == "read").cloned().collect();
            (read.len() >= 2).then_some(read)
        })
        .await
        .unwrap();
    let mut ids: Vec<_> = read.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    let mut want = vec![hello.clone(), second.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert!(read.iter().all(|r| r.from == from));

    // Typing, recording and pausing, in order; presence needs no answer.
    wa.presence().set_available().await.unwrap();
    let chat = wa.chatstate();
    chat.send_composing(&alice_jid).await.unwrap();
    chat.send_recording(&alice_jid).await.unwrap();
    chat.send_paused(&alice_jid).await.unwrap();
    let states = sim.contact_chatstates(&alice.phone, 3, WAIT).await.unwrap();
    let states: Vec<_> = states.iter().map(|s| (s.from.as_str(), s.state)).collect();
    assert_eq!(
        states,
        vec![
            (from.as_str(), ChatState::Composing),
            (from.as_str(), ChatState::Recording),
            (from.as_str(), ChatState::Paused),
        ]
    );
    assert!(sim.unhandled_iqs().await.unwrap().is_empty());
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sees_what_the_contact_does() {
    let (running, sim) = start_sim().await;
    let (phone, device, client, mut raw) = client_with_raw(&running, &sim).await;
    let bob = sim.create_contact(None, Some("Bob")).await.unwrap();
    let bob_jid = Jid::pn(bob.phone.as_str());
    let my_jid = format!("{phone}@s.whatsapp.net");
    let wa = client.client();

    let question = wa
        .send_message(bob_jid.clone(), text("question?"))
        .await
        .unwrap()
        .message_id;
    sim.contact_received(&bob.phone, 1, WAIT).await.unwrap();

    // A reply: `extended_text_message` quoting the client's message.
    let id = sim
        .contact_reply(&bob.phone, &phone, &question, "answer!")
        .await
        .unwrap();
    let (m, info) = raw.message(&id).await;
    let ext = m.extended_text_message.as_option().unwrap();
    assert_eq!(ext.text.as_deref(), Some("answer!"));
    let ctx = ext.context_info.as_option().unwrap();
    assert_eq!(ctx.stanza_id.as_deref(), Some(question.as_str()));
    assert_eq!(ctx.participant.as_deref(), Some(my_jid.as_str()));
    assert_eq!(
        ctx.quoted_message
            .as_option()
            .unwrap()
            .conversation
            .as_deref(),
        Some("question?")
    );
    assert_eq!(info.source.sender.user, bob.phone);
    assert!(!info.source.is_from_me);

    // A reaction to the client's message: the key in Bob's frame (chat = the client's
    // account, from_me = false).
    let id = sim
        .contact_react(&bob.phone, &phone, &question, "❤️")
        .await
        .unwrap();
    let (m, info) = raw.message(&id).await;
    let r = m.reaction_message.as_option().unwrap();
    assert_eq!(r.text.as_deref(), Some("❤️"));
    assert!(r.sender_timestamp_ms.is_some());
    let key = r.key.as_option().unwrap();
    assert_eq!(
        (key.remote_jid.as_deref(), key.from_me, key.id.as_deref()),
        (Some(my_jid.as_str()), Some(false), Some(question.as_str()))
    );
    assert_eq!(info.edit, EditAttribute::Empty);

    // Bob's own message: quoting, reacting (from_me = true), removing, editing, revoking.
    let own = sim.contact_send(&bob.phone, &phone, "frist").await.unwrap();
    raw.message(&own).await;
    let id = sim
        .contact_react(&bob.phone, &phone, &own, "")
        .await
        .unwrap();
    let (m, info) = raw.message(&id).await;
    let r = m.reaction_message.as_option().unwrap();
    assert_eq!(r.text.as_deref(), Some(""));
    assert_eq!(r.key.as_option().unwrap().from_me, Some(true));
    assert_eq!(info.edit, EditAttribute::SenderRevoke);

    let id = sim
        .contact_edit(&bob.phone, &phone, &own, "first")
        .await
        .unwrap();
    let (m, info) = raw.message(&id).await;
    let p = m.protocol_message.as_option().unwrap();
    assert_eq!(
        p.r#type,
        Some(wa::message::protocol_message::Type::MESSAGE_EDIT)
    );
    let key = p.key.as_option().unwrap();
    assert_eq!(
        (key.remote_jid.as_deref(), key.from_me, key.id.as_deref()),
        (Some(my_jid.as_str()), Some(true), Some(own.as_str()))
    );
    assert_eq!(
        p.edited_message
            .as_option()
            .unwrap()
            .conversation
            .as_deref(),
        Some("first")
    );
    assert!(p.timestamp_ms.is_some());
    assert_eq!(info.edit, EditAttribute::MessageEdit);

    // A quote of the edited message carries its new text.
    let id = sim
        .contact_reply(&bob.phone, &phone, &own, "(fixed)")
        .await
        .unwrap();
    let (m, _) = raw.message(&id).await;
    let ctx = m
        .extended_text_message
        .as_option()
        .unwrap()
        .context_info
        .as_option()
        .unwrap();
    assert_eq!(
        ctx.participant,
        Some(format!("{}@s.whatsapp.net", bob.phone))
    );
    assert_eq!(
        ctx.quoted_message
            .as_option()
            .unwrap()
            .conversation
            .as_deref(),
        Some("first")
    );

    let id = sim.contact_revoke(&bob.phone, &phone, &own).await.unwrap();
    let (m, info) = raw.message(&id).await;
    let p = m.protocol_message.as_option().unwrap();
    assert_eq!(p.r#type, Some(wa::message::protocol_message::Type::REVOKE));
    assert_eq!(p.key.as_option().unwrap().id.as_deref(), Some(own.as_str()));
    assert_eq!(p.key.as_option().unwrap().from_me, Some(true));
    assert_eq!(info.edit, EditAttribute::SenderRevoke);

    // What a contact may not do.
    let status = |e: ClientError| match e {
        ClientError::Api { status, .. } => status,
        e => panic!("{e}"),
    };
    let e = sim.contact_edit(&bob.phone, &phone, &question, "x").await;
    assert_eq!(status(e.unwrap_err()), 400, "editing the client's message");
    let e = sim.contact_react(&bob.phone, &phone, "NOPE", "👍").await;
    assert_eq!(
        status(e.unwrap_err()),
        404,
        "reacting to an unknown message"
    );
    let e = sim
        .contact_read(&bob.phone, &phone, &["NOPE"], ReadKind::Read)
        .await;
    assert_eq!(status(e.unwrap_err()), 404, "reading an unknown message");

    // Read receipts for two messages in one stanza: one `Receipt` with both ids.
    let second = wa
        .send_message(bob_jid.clone(), text("and another"))
        .await
        .unwrap()
        .message_id;
    sim.contact_received(&bob.phone, 2, WAIT).await.unwrap();
    sim.contact_read(
        &bob.phone,
        &phone,
        &[question.as_str(), second.as_str()],
        ReadKind::Read,
    )
    .await
    .unwrap();
    let receipt = raw
        .wait_for("a read receipt", |e| match e {
            Event::Receipt(r) if r.r#type == ReceiptType::Read => Some(r.clone()),
            _ => None,
        })
        .await;
    let mut ids = receipt.message_ids.clone();
    ids.sort();
    let mut want = vec![question.clone(), second.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(receipt.source.chat, bob_jid);
    assert_eq!(receipt.source.sender, bob_jid);
    assert!(!receipt.source.is_from_me);

    // Typing, recording, pausing.
    for state in [
        ChatState::Composing,
        ChatState::Recording,
        ChatState::Paused,
    ] {
        let reached = sim
            .contact_chatstate(&bob.phone, &phone, state)
            .await
            .unwrap();
        assert_eq!(reached, 1);
        let (got, media) = raw
            .wait_for("a chat state", |e| match e {
                Event::ChatPresence(p) => {
                    assert_eq!(p.source.chat, bob_jid);
                    assert_eq!(p.source.sender, bob_jid);
                    Some((p.state, p.media))
                }
                _ => None,
            })
            .await;
        let want = match state {
            ChatState::Composing => (ChatPresence::Composing, ChatPresenceMedia::Text),
            ChatState::Recording => (ChatPresence::Composing, ChatPresenceMedia::Audio),
            ChatState::Paused => (ChatPresence::Paused, ChatPresenceMedia::Text),
        };
        assert_eq!((got, media), want);
    }

    // A played receipt sent while the client is offline is queued, delivered on reconnect
    // and acknowledged.
    let drained = |running: &wasp_sim::Running| {
        let sim = running.sim.clone();
        let phone = phone.clone();
        async move {
            sim.wait_for(WAIT, |w| {
                w.accounts[&phone].devices[&device]
                    .offline
                    .is_empty()
                    .then_some(())
            })
            .await
            .is_some()
        }
    };
    // Everything so far acknowledged (the read receipt's ack may still be on its way).
    assert!(drained(&running).await);
    let (tx, rx) = mpsc::unbounded_channel();
    let backend = client.stop().await;
    sim.contact_read(&bob.phone, &phone, &[second.as_str()], ReadKind::Played)
        .await
        .unwrap();
    assert_eq!(sim.devices().await.unwrap()[0].queued, 1);
    let mut client = start_client_opts(
        &running.ws_url,
        ClientOpts {
            backend: Some(backend),
            raw_events: Some(tx),
            ..Default::default()
        },
    )
    .await;
    let mut raw = Raw(rx);
    let receipt = raw
        .wait_for("a played receipt", |e| match e {
            Event::Receipt(r) if r.r#type == ReceiptType::Played => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(receipt.message_ids, vec![second.clone()]);
    assert!(
        drained(&running).await,
        "the client acknowledged the receipt"
    );
    client.wait(Ev::Connected).await;
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_and_profile_pictures() {
    let (running, sim) = start_sim().await;
    let (phone, _device, client) = paired_client(&running, &sim).await;
    let other = sim.create_phone(None, None).await.unwrap();
    let named = sim.create_contact(None, Some("Carol")).await.unwrap();
    let nameless = sim.create_contact(None, None).await.unwrap();
    let wa = client.client();

    // No account or contact gets a 1999… number.
    let unknown = "19990000001";
    let results = wa
        .contacts()
        .is_on_whatsapp(&[
            Jid::pn(named.phone.as_str()),
            Jid::pn(unknown),
            Jid::pn(other.phone.as_str()),
            Jid::pn(phone.as_str()),
        ])
        .await
        .unwrap();
    let registered = |user: &str| {
        results
            .iter()
            .find(|r| r.jid.user == user)
            .unwrap_or_else(|| panic!("no result for {user}: {results:?}"))
    };
    assert!(registered(&named.phone).is_registered);
    assert_eq!(
        registered(&named.phone)
            .lid
            .as_ref()
            .map(|l| l.user.to_string()),
        Some(named.lid.clone())
    );
    assert!(!registered(unknown).is_registered);
    assert!(registered(unknown).lid.is_none());
    assert!(registered(&other.phone).is_registered);
    assert!(registered(&phone).is_registered);

    // A named contact has a picture; a nameless one none (`Ok(None)` from the 404).
    let expected = sim.contact_picture(&named.phone).await.unwrap().unwrap();
    let pic = wa
        .contacts()
        .get_profile_picture(&Jid::pn(named.phone.as_str()), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pic.id, expected.id);
    assert_eq!(pic.url, expected.url);
    assert!(
        pic.url.ends_with(&format!("/v/pp/{}.jpg", named.phone)),
        "{}",
        pic.url
    );
    assert_eq!(
        pic.direct_path.as_deref(),
        Some(expected.direct_path.as_str())
    );
    let preview = wa
        .contacts()
        .get_profile_picture(&Jid::pn(named.phone.as_str()), true)
        .await
        .unwrap();
    assert_eq!(preview.map(|p| p.id), Some(expected.id));
    let none = wa
        .contacts()
        .get_profile_picture(&Jid::pn(nameless.phone.as_str()), false)
        .await
        .unwrap();
    assert!(none.is_none());
    // Pictures can be given and taken away.
    sim.set_contact_picture(&nameless.phone, true)
        .await
        .unwrap();
    sim.set_contact_picture(&named.phone, false).await.unwrap();
    let now = wa
        .contacts()
        .get_profile_picture(&Jid::pn(nameless.phone.as_str()), false)
        .await
        .unwrap();
    assert!(now.is_some());
    let gone = wa
        .contacts()
        .get_profile_picture(&Jid::pn(named.phone.as_str()), false)
        .await
        .unwrap();
    assert!(gone.is_none());
    assert!(sim.unhandled_iqs().await.unwrap().is_empty());
    client.stop().await;
    running.shutdown().await;
}
