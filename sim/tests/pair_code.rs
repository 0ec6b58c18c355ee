//! Linking by phone number: the client shows a code, the simulated phone's user types it.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_by_pairing_code() {
    let (running, sim) = start_sim().await;
    let phone = sim.create_phone(None, Some("Code Pairer")).await.unwrap();
    let mut client = start_client_with(&running.ws_url, None, Some(&phone.phone)).await;
    let code = client
        .wait_for("a pairing code", |e| match e {
            Ev::PairCode(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    let addr = sim.enter_pair_code(&phone.phone, &code).await.unwrap();
    assert_eq!(addr.phone, phone.phone);
    let jid = client
        .wait_for("pair success", |e| match e {
            Ev::PairSuccess { jid } => Some(jid.clone()),
            Ev::PairError(e) => panic!("pairing failed: {e}"),
            _ => None,
        })
        .await;
    assert_eq!(
        jid,
        format!("{}:{}@s.whatsapp.net", phone.phone, addr.device)
    );
    client.wait(Ev::Connected).await;
    settle(&running, &phone.phone, addr.device).await;

    // Linked for real: the device gets E2E messages.
    let contact = sim.create_contact(None, None).await.unwrap();
    sim.contact_send(&contact.phone, &phone.phone, "linked by code")
        .await
        .unwrap();
    assert_eq!(client.next_message().await.2, "linked by code");
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_for_an_unknown_number_is_rejected() {
    let (running, sim) = start_sim().await;
    assert!(
        sim.enter_pair_code("15559999999", "ABCD2345")
            .await
            .is_err()
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanning_a_stale_or_malformed_qr_is_rejected() {
    let (running, sim) = start_sim().await;
    let phone = sim.create_phone(None, None).await.unwrap();
    let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let stale = format!("2@gone,{key},{key},{key},1");
    match sim.scan_qr(&phone.phone, &stale).await {
        Err(wasp_sim::client::ClientError::Api { status, .. }) => assert_eq!(status, 404),
        other => panic!("unexpected {other:?}"),
    }
    match sim.scan_qr(&phone.phone, "not a qr").await {
        Err(wasp_sim::client::ClientError::Api { status, .. }) => assert_eq!(status, 400),
        other => panic!("unexpected {other:?}"),
    }
    running.shutdown().await;
}
