//! Groups with the unmodified client: metadata and participating queries, the client's
//! sender-key group sends decrypted by member contacts, and contacts' group messages.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use wacore_binary::{Jid, Node};
use waproto::whatsapp as wa;
use wasp_sim::sim::ContactInfo;

fn text(t: &str) -> wa::Message {
    wa::Message {
        conversation: Some(t.into()),
        ..Default::default()
    }
}

/// The `<enc type>`s of the stanza `id` still queued for the device.
async fn queued_enc_types(
    running: &wasp_sim::Running,
    phone: &str,
    device: u16,
    id: &str,
) -> Vec<String> {
    running
        .sim
        .wait_for(WAIT, |w| {
            let queued = w.accounts[phone].devices[&device]
                .offline
                .items()
                .find(|q| q.id == id)?;
            let stanza: &Node = &queued.stanza;
            Some(
                stanza
                    .get_children_by_tag("enc")
                    .filter_map(|e| e.attrs.get("type").map(|v| v.as_str().into_owned()))
                    .collect(),
            )
        })
        .await
        .expect("the stanza is queued")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_contacts_and_the_account() {
    let (running, sim) = start_sim().await;
    let (phone, device, mut client) = paired_client(&running, &sim).await;
    let mut contacts: Vec<ContactInfo> = Vec::new();
    for name in ["Ann", "Ben", "Cat"] {
        contacts.push(sim.create_contact(None, Some(name)).await.unwrap());
    }
    let phones: Vec<&str> = contacts.iter().map(|c| c.phone.as_str()).collect();
    let group = sim.create_group(&phone, "Project", &phones).await.unwrap();
    assert!(group.jid.ends_with("@g.us"), "{}", group.jid);
    assert_eq!(sim.groups().await.unwrap(), vec![group.clone()]);
    let jid: Jid = group.jid.parse().unwrap();

    // Metadata, as the library reads it.
    let meta = client.client().groups().get_metadata(&jid).await.unwrap();
    assert_eq!(meta.id, jid);
    assert_eq!(meta.subject, "Project");
    assert_eq!(meta.participants.len(), 4);
    assert_eq!(
        meta.creator.as_ref().map(Jid::to_string),
        Some(group.creator.clone())
    );
    assert_eq!(meta.creation_time, Some(group.creation));
    let owner = meta
        .participants
        .iter()
        .find(|p| p.jid.user == phone)
        .expect("the account is a participant");
    assert!(owner.is_super_admin());
    for c in &contacts {
        let p = meta
            .participants
            .iter()
            .find(|p| p.jid.user == c.phone)
            .unwrap();
        assert!(!p.is_admin());
    }
    let all = client.client().groups().get_participating().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[&jid].subject, "Project");
    assert_eq!(all[&jid].participants.len(), 4);

    // The client sends to the group: every contact takes in its sender key and decrypts.
    let sent = client
        .client()
        .send_message(jid.clone(), text("hello group"))
        .await
        .unwrap();
    for c in &contacts {
        let got = sim.contact_received(&c.phone, 1, WAIT).await.unwrap();
        assert_eq!(got.len(), 1, "{}: {got:?}", c.name);
        assert_eq!(got[0].id, sent.message_id);
        assert_eq!(got[0].text, "hello group");
        assert_eq!(got[0].from, phone);
        assert_eq!(got[0].group.as_deref(), Some(group.jid.as_str()));
    }
    // A second send is the skmsg alone (the client remembers who holds its key).
    client
        .client()
        .send_message(jid.clone(), text("second to the group"))
        .await
        .unwrap();
    for c in &contacts {
        let got = sim.contact_received(&c.phone, 2, WAIT).await.unwrap();
        assert_eq!(got[1].text, "second to the group");
    }

    // Each contact writes to the group; the client sees the group as the chat.
    let mut first_ids = Vec::new();
    for c in &contacts {
        let id = sim
            .contact_send_group_text(&c.phone, &group.jid, &format!("hi from {}", c.name))
            .await
            .unwrap();
        let (got_id, chat, sender, push_name, body) = client
            .wait_for("a group message", |e| match e {
                Ev::GroupMessage {
                    id,
                    chat,
                    sender,
                    push_name,
                    text,
                } => Some((
                    id.clone(),
                    chat.clone(),
                    sender.clone(),
                    push_name.clone(),
                    text.clone(),
                )),
                Ev::Message { text, .. } => panic!("a group message seen as 1:1: {text}"),
                _ => None,
            })
            .await;
        assert_eq!(got_id, id);
        assert_eq!(chat, group.jid);
        assert_eq!(sender, format!("{}@s.whatsapp.net", c.phone));
        assert_eq!(push_name, c.name);
        assert_eq!(body, format!("hi from {}", c.name));
        first_ids.push(id);
    }
    // The device's delivery receipts (`inactive`: the test client never goes online) name
    // the group and the author, and reach each author.
    for (c, id) in contacts.iter().zip(&first_ids) {
        let seen = running
            .sim
            .wait_for(WAIT, |w| {
                w.contacts[&c.phone]
                    .receipts
                    .iter()
                    .any(|r| r.id == *id)
                    .then_some(())
            })
            .await;
        assert!(seen.is_some(), "{}'s receipt for {id}", c.name);
    }

    // A second message from the same contact carries no new key share.
    sim.ignore_acks(true).await.unwrap();
    let again = sim
        .contact_send_group_text(&contacts[0].phone, &group.jid, "again from Ann")
        .await
        .unwrap();
    assert_eq!(
        queued_enc_types(&running, &phone, device, &again).await,
        ["skmsg"]
    );
    let (_, chat, _, _, body) = client
        .wait_for("the second group message", |e| match e {
            Ev::GroupMessage {
                id,
                chat,
                sender,
                push_name,
                text,
            } => Some((
                id.clone(),
                chat.clone(),
                sender.clone(),
                push_name.clone(),
                text.clone(),
            )),
            _ => None,
        })
        .await;
    assert_eq!(
        (chat.as_str(), body.as_str()),
        (group.jid.as_str(), "again from Ann")
    );
    sim.ignore_acks(false).await.unwrap();

    // Any message proto goes through the generic route.
    let extended = wa::Message {
        extended_text_message: buffa::MessageField::some(wa::message::ExtendedTextMessage {
            text: Some("extended from Ben".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = sim
        .contact_send_group_message(&contacts[1].phone, &group.jid, &extended)
        .await
        .unwrap();
    let got = client
        .wait_for("the extended text", |e| match e {
            Ev::GroupMessage { id, text, .. } => Some((id.clone(), text.clone())),
            _ => None,
        })
        .await;
    assert_eq!(got, (id, "extended from Ben".to_owned()));
    assert_eq!(sim.group(&group.jid).await.unwrap(), group);

    // An unknown group is an error.
    let unknown: Jid = "120363999999999999@g.us".parse().unwrap();
    assert!(
        client
            .client()
            .groups()
            .get_metadata(&unknown)
            .await
            .is_err()
    );

    assert_eq!(sim.unhandled_iqs().await.unwrap(), Vec::<String>::new());
    let warnings = client_warnings();
    assert!(warnings.is_empty(), "client warnings: {warnings:?}");
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_in_a_group_read_each_others_messages() {
    let (running, sim) = start_sim().await;
    let (alice_phone, _, mut alice) = paired_client(&running, &sim).await;
    let (bob_phone, _, mut bob) = paired_client(&running, &sim).await;
    let carol = sim.create_contact(None, Some("Carol")).await.unwrap();
    let group = sim
        .create_group(&alice_phone, "Both", &[&bob_phone, &carol.phone])
        .await
        .unwrap();
    let jid: Jid = group.jid.parse().unwrap();

    alice
        .client()
        .send_message(jid.clone(), text("hi bob and carol"))
        .await
        .unwrap();
    let (chat, sender, body) = bob
        .wait_for("alice's group message", |e| match e {
            Ev::GroupMessage {
                chat, sender, text, ..
            } => Some((chat.clone(), sender.clone(), text.clone())),
            _ => None,
        })
        .await;
    assert_eq!(chat, group.jid);
    assert!(sender.starts_with(&alice_phone), "sender {sender}");
    assert_eq!(body, "hi bob and carol");
    let got = sim.contact_received(&carol.phone, 1, WAIT).await.unwrap();
    assert_eq!(got[0].text, "hi bob and carol");

    bob.client()
        .send_message(jid.clone(), text("hello alice"))
        .await
        .unwrap();
    let (chat, sender, body) = alice
        .wait_for("bob's group message", |e| match e {
            Ev::GroupMessage {
                chat, sender, text, ..
            } => Some((chat.clone(), sender.clone(), text.clone())),
            _ => None,
        })
        .await;
    assert_eq!(chat, group.jid);
    assert!(sender.starts_with(&bob_phone), "sender {sender}");
    assert_eq!(body, "hello alice");

    alice.stop().await;
    bob.stop().await;
    running.shutdown().await;
}
