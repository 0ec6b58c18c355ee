//! The simulator itself restarts from a saved snapshot: paired devices log in again (IK, same
//! server key) and their Signal sessions with contacts continue.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use wacore_binary::Jid;
use waproto::whatsapp as wa;
use wasp_sim::Sim;
use wasp_sim::client::SimClient;

fn text(s: &str) -> wa::Message {
    wa::Message {
        conversation: Some(s.into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_sessions_survive_a_simulator_restart() {
    let (running, sim) = start_sim().await;
    let (phone, device, mut client) = paired_client(&running, &sim).await;
    let contact = sim.create_contact(None, Some("Carol")).await.unwrap();
    sim.contact_send(&contact.phone, &phone, "before")
        .await
        .unwrap();
    assert_eq!(client.next_message().await.2, "before");
    client
        .client()
        .send_message(Jid::pn(contact.phone.as_str()), text("reply before"))
        .await
        .unwrap();
    sim.contact_received(&contact.phone, 1, WAIT).await.unwrap();
    let acked = running
        .sim
        .wait_for(WAIT, |w| {
            w.accounts[&phone].devices[&device]
                .offline
                .is_empty()
                .then_some(())
        })
        .await;
    assert!(acked.is_some());

    // Snapshot through JSON, as the binary's state file does; stop; start again on the same
    // WebSocket address.
    let snap = running.sim.snapshot().await.unwrap();
    let snap = serde_json::from_slice(&serde_json::to_vec(&snap).unwrap()).unwrap();
    let ws_addr: SocketAddr = running.ws_url["ws://".len()..]
        .trim_end_matches("/ws/chat")
        .parse()
        .unwrap();
    running.shutdown().await;
    client.wait(Ev::Disconnected).await;

    let restored = Sim::from_snapshot(&snap).unwrap();
    let running = wasp_sim::start(
        restored,
        ws_addr,
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let sim = SimClient::new(&running.control_url);
    client.wait(Ev::Connected).await;
    let sockets = sim.sockets().await.unwrap();
    assert_eq!(sockets.len(), 1);
    assert_eq!(sockets[0].pattern, wasp_sim::handshake::Pattern::Ik);

    // Existing sessions continue both ways.
    sim.contact_send(&contact.phone, &phone, "after")
        .await
        .unwrap();
    assert_eq!(client.next_message().await.2, "after");
    client
        .client()
        .send_message(Jid::pn(contact.phone.as_str()), text("reply after"))
        .await
        .unwrap();
    let received = sim.contact_received(&contact.phone, 2, WAIT).await.unwrap();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].text, "reply after");
    client.stop().await;
    running.shutdown().await;
}
