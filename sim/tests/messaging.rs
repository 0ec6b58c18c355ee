//! End-to-end encrypted 1:1 text between an unmodified client and simulated contacts.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use wacore_binary::Jid;
use waproto::whatsapp as wa;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_and_client_exchange_e2e_text() {
    let (running, sim) = start_sim().await;
    let (phone, _device, mut client) = paired_client(&running, &sim).await;
    let contact = sim.create_contact(None, Some("Alice")).await.unwrap();

    let sent_id = sim
        .contact_send(&contact.phone, &phone, "hello from alice")
        .await
        .unwrap();
    let (id, from, text) = client.next_message().await;
    assert_eq!(text, "hello from alice");
    assert_eq!(id, sent_id);
    assert!(from.starts_with(&contact.phone), "sender {from}");

    client
        .client()
        .send_message(
            Jid::pn(contact.phone.as_str()),
            wa::Message {
                conversation: Some("hi alice, from the CRM".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let received = sim.contact_received(&contact.phone, 1, WAIT).await.unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].text, "hi alice, from the CRM");
    assert_eq!(received[0].from, phone);

    // The device's delivery receipt for Alice's message reached her phone.
    let receipts = sim.contact_receipts(&contact.phone).await.unwrap();
    assert!(receipts.iter().any(|r| r.id == sent_id), "{receipts:?}");

    // The session continues both ways (Signal `msg`, no new prekey message).
    sim.contact_send(&contact.phone, &phone, "second")
        .await
        .unwrap();
    let (_, _, text) = client.next_message().await;
    assert_eq!(text, "second");

    // A client that writes first fetches the contact's prekey bundle (pkmsg path).
    let bob = sim.create_contact(None, Some("Bob")).await.unwrap();
    client
        .client()
        .send_message(
            Jid::pn(bob.phone.as_str()),
            wa::Message {
                conversation: Some("hello bob".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let received = sim.contact_received(&bob.phone, 1, WAIT).await.unwrap();
    assert_eq!(received[0].text, "hello bob");
    sim.contact_send(&bob.phone, &phone, "hi CRM")
        .await
        .unwrap();
    let (_, _, text) = client.next_message().await;
    assert_eq!(text, "hi CRM");

    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_offline_arrive_once_after_reconnect() {
    let (running, sim) = start_sim().await;
    let (phone, device, client) = paired_client(&running, &sim).await;
    let contact = sim.create_contact(None, None).await.unwrap();

    let backend = client.stop().await;
    let first = sim
        .contact_send(&contact.phone, &phone, "while you were away 1")
        .await
        .unwrap();
    let second = sim
        .contact_send(&contact.phone, &phone, "while you were away 2")
        .await
        .unwrap();
    let queued = sim.devices().await.unwrap();
    assert_eq!(queued[0].queued, 2);

    let mut client = start_client(&running.ws_url, Some(backend)).await;
    // The backlog is delivered before `Connected`; the client may dispatch the two message
    // events in either order (it decrypts concurrently).
    let mut got = Vec::new();
    let mut connected = false;
    while got.len() < 2 || !connected {
        client
            .wait_for("the backlog and connected", |e| match e {
                Ev::Message { id, text, .. } => {
                    got.push((id.clone(), text.clone()));
                    Some(())
                }
                Ev::Connected => {
                    connected = true;
                    Some(())
                }
                _ => None,
            })
            .await;
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            (first, "while you were away 1".to_owned()),
            (second, "while you were away 2".to_owned())
        ]
    );
    // Acknowledged by the client's delivery receipts: nothing stays queued.
    let drained = running
        .sim
        .wait_for(WAIT, |w| {
            w.accounts[&phone].devices[&device]
                .offline
                .is_empty()
                .then_some(())
        })
        .await;
    assert!(drained.is_some(), "the device acknowledged both messages");

    // Another restart brings nothing again: everything before `Connected` is offline backlog.
    let backend = client.stop().await;
    let mut client = start_client(&running.ws_url, Some(backend)).await;
    client
        .wait_for("connected without redelivery", |e| match e {
            Ev::Message { text, .. } => panic!("redelivered after ack: {text}"),
            Ev::Connected => Some(()),
            _ => None,
        })
        .await;
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_paired_clients_message_each_other_through_the_relay() {
    let (running, sim) = start_sim().await;
    let (alice_phone, _, mut alice) = paired_client(&running, &sim).await;
    let (bob_phone, _, mut bob) = paired_client(&running, &sim).await;

    alice
        .client()
        .send_message(
            Jid::pn(bob_phone.as_str()),
            wa::Message {
                conversation: Some("hi bob, it's alice's CRM".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (_, from, text) = bob.next_message().await;
    assert_eq!(text, "hi bob, it's alice's CRM");
    assert!(from.starts_with(&alice_phone), "sender {from}");

    bob.client()
        .send_message(
            Jid::pn(alice_phone.as_str()),
            wa::Message {
                conversation: Some("hello alice".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (_, from, text) = alice.next_message().await;
    assert_eq!(text, "hello alice");
    assert!(from.starts_with(&bob_phone), "sender {from}");

    alice.stop().await;
    bob.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_message_is_redelivered_on_reconnect_and_shown_once() {
    let (running, sim) = start_sim().await;
    let (phone, device, mut client) = paired_client(&running, &sim).await;
    let contact = sim.create_contact(None, None).await.unwrap();

    // The device's receipt is lost: the message stays queued.
    sim.ignore_acks(true).await.unwrap();
    let id = sim
        .contact_send(&contact.phone, &phone, "lost receipt")
        .await
        .unwrap();
    let (got, _, text) = client.next_message().await;
    assert_eq!((got.as_str(), text.as_str()), (id.as_str(), "lost receipt"));
    assert_eq!(sim.devices().await.unwrap()[0].queued, 1);
    sim.ignore_acks(false).await.unwrap();

    // The connection drops; the server redelivers on the next one, the client acknowledges
    // it this time, and the application does not see the message twice.
    sim.inject(&phone, device, wasp_sim::faults::SocketFault::Drop)
        .await
        .unwrap();
    client.wait(Ev::Disconnected).await;
    let drained = running
        .sim
        .wait_for(WAIT, |w| {
            let d = &w.accounts[&phone].devices[&device];
            (d.conn.is_some() && d.offline.is_empty()).then_some(())
        })
        .await;
    assert!(
        drained.is_some(),
        "the redelivered message was acknowledged"
    );
    client
        .wait_for("connected without a second copy", |e| match e {
            Ev::Message { text, .. } => panic!("shown twice: {text}"),
            Ev::Connected => Some(()),
            _ => None,
        })
        .await;
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lid_addressed_contact_is_understood_and_answered() {
    let (running, sim) = start_sim().await;
    let (phone, _device, mut client) = paired_client(&running, &sim).await;
    let contact = sim.create_contact(None, Some("Lidia")).await.unwrap();

    sim.contact_send_as(
        &contact.phone,
        &phone,
        "from my lid",
        wasp_sim::contacts::Addressing::Lid,
    )
    .await
    .unwrap();
    let (_, from, text) = client.next_message().await;
    assert_eq!(text, "from my lid");
    assert!(from.starts_with(&contact.lid), "sender {from}");

    // The client answers the chat it saw (the LID); the contact decrypts it.
    client
        .client()
        .send_message(
            from.parse::<Jid>().unwrap().to_non_ad(),
            wa::Message {
                conversation: Some("answer to your lid".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let received = sim.contact_received(&contact.phone, 1, WAIT).await.unwrap();
    assert_eq!(received[0].text, "answer to your lid");

    // Later messages by phone number keep working.
    sim.contact_send(&contact.phone, &phone, "now by number")
        .await
        .unwrap();
    assert_eq!(client.next_message().await.2, "now by number");
    client.stop().await;
    running.shutdown().await;
}
