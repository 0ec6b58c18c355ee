//! Media both ways on the whole stack (operator, session pods run as processes by the local node,
//! Redis, the WhatsApp simulator with its HTTPS media server, an API replica), with the unmodified
//! client in the pod: a contact's image with a caption and a PDF arrive as events and in
//! `/messages`, and the media route returns the contact's bytes; the CRM's image (base64 JSON)
//! and document (multipart) reach the contact byte for byte; bad input gets 4xx JSON and another
//! user's message ids get 404.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use wasp_crds::{Phase, names::session_name};
use wasp_e2e::stream_clients::WsClient;
use wasp_sim::media::{ContactMedia, MediaKind};

use common::{ApiReplica, WAIT, World, phase, wait_status};

const JWT_SECRET: &str = "media-test-secret-media-test-secret-xx";
/// The API replica's MAX_FILE_SIZE (the pods keep the operator's 10 MB).
const API_MAX: usize = 1 << 20;

fn token(user: &str) -> String {
    common::token(user, JWT_SECRET)
}

fn user(tag: &str) -> String {
    format!(
        "media-{tag}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() % 1_000_000_000)
            .unwrap_or_default()
    )
}

/// Connects `user`'s session and pairs a new simulated phone with it: the phone's number.
async fn pair(world: &World, api: &ApiReplica, user: &str) -> Result<(String, WsClient)> {
    let mut ws = WsClient::connect(&format!("{}/?token={}", api.ws_base, token(user))).await?;
    ws.next_of("status").await?;
    common::api_call(
        reqwest::Method::POST,
        &format!("{}/connect", api.base),
        &token(user),
        None,
    )
    .await?;
    let qr = ws.next_of("qr").await?;
    let code = qr["data"]["qr"].as_str().context("qr")?.to_owned();
    let phone = world.sim.create_phone(None, Some("Dr Media")).await?;
    world.sim.scan_qr(&phone.phone, &code).await?;
    ws.next_of("ready").await?;
    wait_status(&world.sessions(), &session_name(user), "Connected", |s| {
        phase(s) == Some(Phase::Connected)
    })
    .await?;
    Ok((phone.phone, ws))
}

/// The next `message` event of a media message.
async fn next_media_event(ws: &mut WsClient) -> Result<Value> {
    loop {
        let e = ws.next_of("message").await?;
        if e["data"]["hasMedia"] == true {
            return Ok(e);
        }
    }
}

/// `GET` with the user's token: status and body.
async fn get(url: &str, user: &str) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(token(user))
        .send()
        .await?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    Ok((status, headers, r.bytes().await?.to_vec()))
}

/// A refusal: the status and the JSON error's code.
async fn refusal(req: reqwest::RequestBuilder) -> Result<(u16, String)> {
    let r = req.send().await?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.context("a refusal must be a JSON error")?;
    Ok((
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// What the contact decrypted of message `id` (waits for it).
async fn contact_got(world: &World, contact: &str, id: &str) -> Result<Vec<u8>> {
    wasp_e2e::eventually(WAIT, || async {
        world.running.sim.contact_received_media(contact, id)
    })
    .await
    .with_context(|| format!("the contact never decrypted the media of {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_flows_both_ways_byte_for_byte() -> Result<()> {
    let world = World::start("media").await?;
    let users = [user("a"), user("b")];
    let result = scenario(&world, &users).await;
    if let Err(e) = &result {
        for u in &users {
            let name = session_name(u);
            eprintln!(
                "media test failed: {e:#}\n--- session pod {name} (last 80 lines) ---\n{}",
                world.node.log_tail(&name, 80)
            );
        }
    }
    world.shutdown().await?;
    result
}

async fn scenario(world: &World, users: &[String; 2]) -> Result<()> {
    let max = API_MAX.to_string();
    let api = ApiReplica::start_with(world, JWT_SECRET, &["--max-file-size", &max]).await?;
    let me = users[0].clone();
    let (phone, mut ws) = pair(world, &api, &me).await?;
    let contact = world.sim.create_contact(None, Some("Ana")).await?;
    let chat = format!("{}@c.us", contact.phone);

    // In: a photo with a caption and a PDF, as a patient's phone sends them.
    let photo = wasp_e2e::test_file(300_000, 1);
    let pdf = wasp_e2e::test_file(120_000, 2);
    let photo_id = world
        .running
        .sim
        .contact_send_media(
            &contact.phone,
            &phone,
            ContactMedia {
                kind: MediaKind::Image,
                data: photo.clone(),
                mimetype: "image/jpeg".into(),
                filename: None,
                caption: Some("my rash, day 3".into()),
            },
        )
        .await?;
    let event = next_media_event(&mut ws).await?;
    let m = &event["data"];
    assert_eq!(m["type"], "image", "{m}");
    assert_eq!(m["body"], "my rash, day 3", "{m}");
    assert_eq!(m["mimetype"], "image/jpeg", "{m}");
    assert_eq!(m["size"], photo.len(), "{m}");
    assert_eq!(m["id"]["id"], photo_id.as_str(), "{m}");
    let event_text = event.to_string();
    for secret in [
        "mediaKey",
        "directPath",
        "media_key",
        "direct_path",
        "fileSha256",
    ] {
        ensure!(
            !event_text.contains(secret),
            "the event carries {secret}: {event_text}"
        );
    }
    let pdf_id = world
        .running
        .sim
        .contact_send_media(
            &contact.phone,
            &phone,
            ContactMedia {
                kind: MediaKind::Document,
                data: pdf.clone(),
                mimetype: "application/pdf".into(),
                filename: Some("Befund März.pdf".into()),
                caption: None,
            },
        )
        .await?;
    let event = next_media_event(&mut ws).await?;
    assert_eq!(event["data"]["type"], "document", "{event}");
    assert_eq!(event["data"]["filename"], "Befund März.pdf", "{event}");
    let photo_key = format!("false_{chat}_{photo_id}");
    // And a text, which has no media.
    let text_id = world
        .sim
        .contact_send(&contact.phone, &phone, "just text")
        .await?;
    loop {
        let e = ws.next_of("message").await?;
        if e["data"]["body"] == "just text" {
            break;
        }
    }

    // /messages shows both (validated against the OpenAPI document).
    let listed: Vec<Value> = serde_json::from_str(
        &common::checked_text(
            reqwest::Client::new()
                .get(format!("{}/messages/{chat}?limit=10", api.base))
                .bearer_auth(token(&me)),
        )
        .await?,
    )?;
    let kinds: Vec<&str> = listed.iter().filter_map(|m| m["type"].as_str()).collect();
    assert_eq!(kinds, ["image", "document", "chat"], "{listed:?}");

    // The media route: the contact's bytes, raw and as whatsapp-web.js's MessageMedia.
    let (status, headers, body) = get(
        &format!("{}/messages/{chat}/{photo_key}/media", api.base),
        &me,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jpeg");
    ensure!(
        body == photo,
        "the photo came back different ({} bytes)",
        body.len()
    );
    let (status, headers, body) =
        get(&format!("{}/messages/{chat}/{pdf_id}/media", api.base), &me).await?;
    assert_eq!(status, 200);
    ensure!(body == pdf, "the PDF came back different");
    let disposition = headers["content-disposition"].to_str()?;
    assert!(
        disposition.contains("filename*=UTF-8''Befund%20M%C3%A4rz.pdf"),
        "{disposition}"
    );
    let (status, _, body) = get(
        &format!("{}/messages/{chat}/{pdf_id}/media?format=json", api.base),
        &me,
    )
    .await?;
    assert_eq!(status, 200);
    let media: Value = serde_json::from_slice(&body)?;
    assert_eq!(media["mimetype"], "application/pdf");
    assert_eq!(media["filename"], "Befund März.pdf");
    assert_eq!(
        data_encoding::BASE64.decode(media["data"].as_str().unwrap_or("").as_bytes())?,
        pdf
    );

    // Out: an image as base64 JSON (seed 003 clients with whatsapp-web.js's MessageMedia).
    let picture = wasp_e2e::test_file(200_000, 3);
    let sent = common::api_call(
        reqwest::Method::POST,
        &format!("{}/send", api.base),
        &token(&me),
        Some(json!({
            "chatId": chat,
            "media": {"mimetype": "image/png", "data": data_encoding::BASE64.encode(&picture)},
            "caption": "aftercare",
        })),
    )
    .await?;
    assert_eq!(sent["message"]["type"], "image", "{sent}");
    assert_eq!(sent["message"]["hasMedia"], true, "{sent}");
    assert_eq!(sent["message"]["body"], "aftercare", "{sent}");
    let id = sent["message"]["id"]["id"].as_str().context("id")?;
    ensure!(
        contact_got(world, &contact.phone, id).await? == picture,
        "the contact decrypted another picture"
    );
    // And a document as a multipart form, streamed.
    let plan = wasp_e2e::test_file(700_000, 4);
    let form = reqwest::multipart::Form::new()
        .text("chatId", chat.clone())
        .text("caption", "treatment plan")
        .part(
            "file",
            reqwest::multipart::Part::bytes(plan.clone())
                .file_name("plan.pdf")
                .mime_str("application/pdf")?,
        );
    let r = reqwest::Client::new()
        .post(format!("{}/send", api.base))
        .bearer_auth(token(&me))
        .multipart(form)
        .send()
        .await?;
    ensure!(r.status().is_success(), "multipart send: {}", r.status());
    let sent: Value = r.json().await?;
    assert_eq!(sent["message"]["type"], "document", "{sent}");
    assert_eq!(sent["message"]["filename"], "plan.pdf", "{sent}");
    assert_eq!(sent["message"]["size"], plan.len(), "{sent}");
    let id = sent["message"]["id"]["id"].as_str().context("id")?;
    ensure!(
        contact_got(world, &contact.phone, id).await? == plan,
        "the contact decrypted another plan"
    );
    let received = world
        .sim
        .contact_received(&contact.phone, 2, Duration::from_secs(30))
        .await?;
    let got = received
        .iter()
        .find(|r| r.id == id)
        .and_then(|r| r.media.as_ref())
        .context("the plan's media")?;
    assert_eq!(got.filename.as_deref(), Some("plan.pdf"));
    assert_eq!(got.caption.as_deref(), Some("treatment plan"));
    // A voice note, a sticker and a video travel as such (whatsapp-web.js's options).
    for (mimetype, option, kind) in [
        ("audio/ogg; codecs=opus", "sendAudioAsVoice", MediaKind::Ptt),
        ("image/webp", "sendMediaAsSticker", MediaKind::Sticker),
        ("video/mp4", "sendMediaAsDocument", MediaKind::Document),
        ("video/mp4", "", MediaKind::Video),
    ] {
        let bytes = wasp_e2e::test_file(50_000, 7);
        let mut body = json!({
            "chatId": chat,
            "media": {"mimetype": mimetype, "data": data_encoding::BASE64.encode(&bytes)},
        });
        if !option.is_empty() {
            body[option] = json!(true);
        }
        let sent = common::api_call(
            reqwest::Method::POST,
            &format!("{}/send", api.base),
            &token(&me),
            Some(body),
        )
        .await?;
        let id = sent["message"]["id"]["id"].as_str().context("id")?;
        ensure!(
            contact_got(world, &contact.phone, id).await? == bytes,
            "{mimetype} {option}"
        );
        let received = world
            .sim
            .contact_received(&contact.phone, 0, Duration::ZERO)
            .await?;
        let got = received
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.media.as_ref())
            .context("the media")?;
        assert_eq!(got.kind, kind, "{mimetype} {option}");
        assert_eq!(sent["message"]["type"], kind.mediatype_attr(), "{sent}");
    }
    // The sender can fetch what it sent.
    let own_key = sent["message"]["id"]["_serialized"]
        .as_str()
        .context("key")?;
    let (status, _, body) = get(
        &format!("{}/messages/{chat}/{own_key}/media", api.base),
        &me,
    )
    .await?;
    assert_eq!(status, 200);
    ensure!(body == plan, "the own plan came back different");

    // Bad input: 4xx JSON, nothing sent.
    let sends_before = world
        .sim
        .contact_received(&contact.phone, 0, Duration::ZERO)
        .await?
        .len();
    let post = || {
        reqwest::Client::new()
            .post(format!("{}/send", api.base))
            .bearer_auth(token(&me))
    };
    let big = data_encoding::BASE64.encode(&wasp_e2e::test_file(API_MAX + 1, 5));
    let cases = [
        (
            post().json(&json!({"chatId": chat, "media": {"mimetype": "image/png", "data": big}})),
            413,
        ),
        (
            post().multipart(
                reqwest::multipart::Form::new()
                    .text("chatId", chat.clone())
                    .part(
                        "file",
                        reqwest::multipart::Part::bytes(wasp_e2e::test_file(API_MAX + 1, 6))
                            .file_name("x.bin"),
                    ),
            ),
            413,
        ),
        (
            post().json(&json!({"chatId": chat, "sendMediaAsSticker": true,
                "media": {"mimetype": "image/png", "data": "aGVsbG8="}})),
            415,
        ),
        (
            post().header("content-type", "text/plain").body("hello"),
            415,
        ),
        (
            post().json(&json!({"chatId": chat, "media": {"mimetype": "png", "data": "aGVsbG8="}})),
            400,
        ),
        (
            post()
                .json(&json!({"chatId": chat, "media": {"mimetype": "image/png", "data": "%%%"}})),
            400,
        ),
        (
            post().json(&json!({"chatId": chat,
                "media": {"mimetype": "application/pdf", "data": "aGVsbG8=", "filename": "../x"}})),
            400,
        ),
        (
            post().multipart(
                reqwest::multipart::Form::new()
                    .part(
                        "file",
                        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x.bin"),
                    )
                    .text("chatId", chat.clone()),
            ),
            400,
        ),
    ];
    for (i, (req, want)) in cases.into_iter().enumerate() {
        let (status, code) = refusal(req).await?;
        assert_eq!(status, want, "case {i}: {code}");
        assert!(!code.is_empty(), "case {i}: an error code");
    }
    let media_url = |id: &str| format!("{}/messages/{chat}/{id}/media", api.base);
    for (url, want) in [
        (media_url("false_1@c.us_NOPE"), 404),
        (media_url("NOPE"), 404),
        // A text message has no media.
        (media_url(&text_id), 404),
        (
            format!("{}/messages/not-a-chat/{photo_id}/media", api.base),
            400,
        ),
        (
            format!("{}/messages/{chat}/{photo_id}/media?format=xml", api.base),
            400,
        ),
    ] {
        let (status, code) =
            refusal(reqwest::Client::new().get(&url).bearer_auth(token(&me))).await?;
        assert_eq!(status, want, "{url}: {code}");
    }
    let after = world
        .sim
        .contact_received(&contact.phone, 0, Duration::ZERO)
        .await?
        .len();
    assert_eq!(after, sends_before, "a refused send reached the contact");

    // Another user, with a session of their own: the first user's ids are not theirs.
    let other = users[1].clone();
    let (_other_phone, _ws) = pair(world, &api, &other).await?;
    for id in [photo_key.as_str(), photo_id.as_str(), pdf_id.as_str()] {
        let (status, _) = refusal(
            reqwest::Client::new()
                .get(media_url(id))
                .bearer_auth(token(&other)),
        )
        .await?;
        assert_eq!(status, 404, "another user's message {id}");
    }
    let (status, _) = refusal(reqwest::Client::new().get(media_url(&photo_key))).await?;
    assert_eq!(status, 401);
    Ok(())
}
