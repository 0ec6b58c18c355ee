//! An unmodified client pairs by QR, restarts, and logs in again with IK — quietly.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_by_qr_then_reconnects_with_ik_after_restart() {
    let (running, sim) = start_sim().await;
    let phone = sim.create_phone(None, Some("Wasp Test")).await.unwrap();
    let mut client = start_client(&running.ws_url, None).await;
    let qr = client.next_qr().await;

    let scanned = Instant::now();
    let addr = sim.scan_qr(&phone.phone, &qr).await.unwrap();
    let jid = client
        .wait_for("pair success", |e| match e {
            Ev::PairSuccess { jid } => Some(jid.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        jid,
        format!("{}:{}@s.whatsapp.net", phone.phone, addr.device)
    );
    client.wait(Ev::Connected).await;
    let pairing_to_connected = scanned.elapsed();
    eprintln!("scan → connected: {pairing_to_connected:?}");
    assert!(
        pairing_to_connected < Duration::from_secs(3),
        "pairing → connected took {pairing_to_connected:?} (the key share must spare the 10 s grace)"
    );

    // Stopping the client while its first app-state sync is still being processed makes it
    // warn (correctly); wait until it reports the sync done.
    wait_client_log("Initial App State Sync completed").await;
    settle(&running, &phone.phone, addr.device).await;
    // The sync answer is processed on the client's side right after; one more round trip
    // through its stanza pipeline makes sure it was.
    let contact = sim.create_contact(None, None).await.unwrap();
    sim.contact_send(&contact.phone, &phone.phone, "ping")
        .await
        .unwrap();
    client.next_message().await;
    // …and its delivery receipt reached the server (else the restart redelivers it).
    let acked = running
        .sim
        .wait_for(WAIT, |w| {
            w.accounts[&phone.phone].devices[&addr.device]
                .offline
                .is_empty()
                .then_some(())
        })
        .await;
    assert!(acked.is_some());

    // Restart the client process on the same store: no QR, IK handshake, connected.
    let backend = client.stop().await;
    let mut client = start_client(&running.ws_url, Some(backend)).await;
    client
        .wait_for("connected after restart", |e| match e {
            Ev::Qr(_) => panic!("a restarted paired client must not ask to pair again"),
            Ev::Connected => Some(()),
            _ => None,
        })
        .await;
    let sockets = sim.sockets().await.unwrap();
    let live = sockets
        .iter()
        .find(|s| s.phone.as_deref() == Some(phone.phone.as_str()))
        .expect("the device's socket");
    assert_eq!(live.pattern, wasp_sim::handshake::Pattern::Ik);
    let devices = sim.devices().await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].logins, 2);
    // The prekey upload runs detached from login; wait for the server to have it.
    let uploaded = running
        .sim
        .wait_for(WAIT, |w| {
            w.accounts[&phone.phone].devices[&addr.device]
                .prekeys
                .len()
                .checked_sub(1)
                .map(|_| ())
        })
        .await;
    assert!(uploaded.is_some(), "the client uploaded prekeys");

    assert_eq!(sim.unhandled_iqs().await.unwrap(), Vec::<String>::new());
    let warnings = client_warnings();
    assert!(
        warnings.is_empty(),
        "client warnings:\n{}",
        warnings.join("\n")
    );
    client.stop().await;
    running.shutdown().await;
}
