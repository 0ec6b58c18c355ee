//! Faults injected through the control API, and how the unmodified client reacts to each —
//! as it would against WhatsApp.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use wasp_sim::faults::SocketFault;

fn device_sockets(sockets: &[wasp_sim::sim::SocketInfo], phone: &str) -> Vec<u64> {
    sockets
        .iter()
        .filter(|s| s.phone.as_deref() == Some(phone))
        .map(|s| s.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_socket_and_stream_restart_are_reconnected() {
    let (running, sim) = start_sim().await;
    let (phone, device, mut client) = paired_client(&running, &sim).await;
    let before = device_sockets(&sim.sockets().await.unwrap(), &phone);

    sim.inject(&phone, device, SocketFault::Drop).await.unwrap();
    client.wait(Ev::Disconnected).await;
    client.wait(Ev::Connected).await;

    sim.inject(&phone, device, SocketFault::RestartRequired)
        .await
        .unwrap();
    client.wait(Ev::Connected).await;

    let after = device_sockets(&sim.sockets().await.unwrap(), &phone);
    assert_eq!(after.len(), 1);
    assert!(
        !before.contains(&after[0]),
        "a new socket replaced the old one"
    );
    // Still usable: a message gets through on the new socket.
    let contact = sim.create_contact(None, None).await.unwrap();
    sim.contact_send(&contact.phone, &phone, "after reconnect")
        .await
        .unwrap();
    assert_eq!(client.next_message().await.2, "after reconnect");
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_until_the_server_accepts() {
    let (running, sim) = start_sim().await;
    let (phone, device, mut client) = paired_client(&running, &sim).await;
    sim.refuse_connections(Duration::from_millis(1500))
        .await
        .unwrap();
    let refused_at = Instant::now();
    sim.inject(&phone, device, SocketFault::Drop).await.unwrap();
    client.wait(Ev::Disconnected).await;
    client.wait(Ev::Connected).await;
    assert!(
        refused_at.elapsed() >= Duration::from_millis(1500),
        "connected while the server was refusing"
    );
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_stream_is_reported() {
    let (running, sim) = start_sim().await;
    let (phone, device, mut client) = paired_client(&running, &sim).await;
    sim.inject(&phone, device, SocketFault::Replaced)
        .await
        .unwrap();
    client.wait(Ev::StreamReplaced).await;
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_device_is_logged_out_and_refused() {
    let (running, sim) = start_sim().await;
    let (phone, device, mut client) = paired_client(&running, &sim).await;
    sim.remove_device(&phone, device).await.unwrap();
    client.wait(Ev::LoggedOut).await;
    let backend = client.stop().await;

    // Its credentials no longer work: a restarted client is refused at login.
    let devices = sim.devices().await.unwrap();
    assert!(devices[0].removed);
    let mut client = start_client(&running.ws_url, Some(backend)).await;
    client.wait(Ev::LoggedOut).await;
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_frames_still_arrive() {
    let (running, sim) = start_sim().await;
    let (phone, _device, mut client) = paired_client(&running, &sim).await;
    let contact = sim.create_contact(None, None).await.unwrap();
    sim.delay_frames(Duration::from_millis(300)).await.unwrap();
    let sent = Instant::now();
    sim.contact_send(&contact.phone, &phone, "slow network")
        .await
        .unwrap();
    assert_eq!(client.next_message().await.2, "slow network");
    assert!(sent.elapsed() >= Duration::from_millis(300));
    sim.delay_frames(Duration::ZERO).await.unwrap();
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_server_key_is_recovered_through_xx_fallback() {
    let (running, sim) = start_sim().await;
    let (phone, device, mut client) = paired_client(&running, &sim).await;
    sim.rotate_server_key().await.unwrap();
    sim.inject(&phone, device, SocketFault::Drop).await.unwrap();
    client.wait(Ev::Disconnected).await;
    client.wait(Ev::Connected).await;
    let sockets = sim.sockets().await.unwrap();
    let live = sockets
        .iter()
        .find(|s| s.phone.as_deref() == Some(phone.as_str()))
        .unwrap();
    assert_eq!(live.pattern, wasp_sim::handshake::Pattern::XxFallback);

    // The client cached the new key: the next reconnect is IK again.
    sim.inject(&phone, device, SocketFault::Drop).await.unwrap();
    client.wait(Ev::Disconnected).await;
    client.wait(Ev::Connected).await;
    let sockets = sim.sockets().await.unwrap();
    let live = sockets
        .iter()
        .find(|s| s.phone.as_deref() == Some(phone.as_str()))
        .unwrap();
    assert_eq!(live.pattern, wasp_sim::handshake::Pattern::Ik);
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_logout_unlinks_the_device() {
    let (running, sim) = start_sim().await;
    let (phone, device, mut client) = paired_client(&running, &sim).await;
    client.client().logout().await;
    client.wait(Ev::LoggedOut).await;
    let removed = running
        .sim
        .wait_for(WAIT, |w| {
            w.accounts[&phone].devices[&device].removed.then_some(())
        })
        .await;
    assert!(removed.is_some(), "the simulator unlinked the device");
    client.stop().await;
    running.shutdown().await;
}
