//! Media between the unmodified client and simulated contacts, through the simulator's HTTPS
//! media server: the client's own upload/download code against `media_conn`, the contacts
//! encrypting and decrypting with the library's media crypto.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use wacore::download::MediaType;
use wacore_binary::Jid;
use waproto::whatsapp as wa;
use wasp_sim::media::{ContactMedia, MediaKind};
use whatsapp_rust::upload::UploadResponse;

/// Media needs more than the text tests' patience in a debug build (AES and SHA-256 of
/// several MiB, twice).
const MEDIA_WAIT: Duration = Duration::from_secs(60);

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// A PNG signature followed by filler: the simulator does not parse images.
fn png(len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend(bytes(len, 7));
    v
}

async fn media_client(
    running: &wasp_sim::Running,
    sim: &wasp_sim::client::SimClient,
) -> (String, TestClient, MediaHttp) {
    let http = MediaHttp::new(&running.media_ca_pem);
    let (phone, _, client) = paired_client_opts(
        running,
        sim,
        ClientOpts {
            http: Some(http.clone()),
            ..Default::default()
        },
    )
    .await;
    (phone, client, http)
}

fn image_message(up: &UploadResponse, mimetype: &str, caption: &str) -> wa::Message {
    wa::Message {
        image_message: buffa::MessageField::some(wa::message::ImageMessage {
            url: Some(up.url.clone()),
            direct_path: Some(up.direct_path.clone()),
            media_key: Some(up.media_key.to_vec()),
            file_sha256: Some(up.file_sha256.to_vec()),
            file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
            file_length: Some(up.file_length),
            media_key_timestamp: Some(up.media_key_timestamp),
            mimetype: Some(mimetype.to_owned()),
            caption: Some(caption.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn document_message(up: &UploadResponse, mimetype: &str, file_name: &str) -> wa::Message {
    wa::Message {
        document_message: buffa::MessageField::some(wa::message::DocumentMessage {
            url: Some(up.url.clone()),
            direct_path: Some(up.direct_path.clone()),
            media_key: Some(up.media_key.to_vec()),
            file_sha256: Some(up.file_sha256.to_vec()),
            file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
            file_length: Some(up.file_length),
            media_key_timestamp: Some(up.media_key_timestamp),
            mimetype: Some(mimetype.to_owned()),
            file_name: Some(file_name.to_owned()),
            title: Some(file_name.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_uploads_an_image_and_a_document_and_the_contact_decrypts_them() {
    let (running, sim) = start_sim().await;
    let (phone, client, http) = media_client(&running, &sim).await;
    let contact = sim.create_contact(None, Some("Alice")).await.unwrap();
    let to = Jid::pn(contact.phone.as_str());

    let image = png(40_000);
    let up = client
        .client()
        .upload(image.clone(), MediaType::Image, Default::default())
        .await
        .unwrap();
    assert!(
        up.direct_path.starts_with("/v/t62.7118-24/"),
        "{}",
        up.direct_path
    );
    assert!(up.url.starts_with(&running.media_url), "{}", up.url);
    client
        .client()
        .send_message(to.clone(), image_message(&up, "image/png", "look at this"))
        .await
        .unwrap();
    let received = sim
        .contact_received(&contact.phone, 1, MEDIA_WAIT)
        .await
        .unwrap();
    assert_eq!(received[0].from, phone);
    assert_eq!(received[0].text, "look at this");
    let media = received[0].media.clone().unwrap();
    assert_eq!(media.error, None);
    assert_eq!(media.kind, MediaKind::Image);
    assert_eq!(media.mimetype, "image/png");
    assert_eq!(media.caption.as_deref(), Some("look at this"));
    assert_eq!(media.size, image.len() as u64);
    let got = running
        .sim
        .contact_received_media(&contact.phone, &received[0].id)
        .unwrap();
    assert!(
        got == image,
        "the contact decrypted the image byte for byte"
    );

    let pdf = [b"%PDF-1.7\n".to_vec(), bytes(120_000, 3)].concat();
    let up = client
        .client()
        .upload(pdf.clone(), MediaType::Document, Default::default())
        .await
        .unwrap();
    assert!(up.direct_path.starts_with("/v/t62.7119-24/"));
    client
        .client()
        .send_message(to, document_message(&up, "application/pdf", "report.pdf"))
        .await
        .unwrap();
    let received = sim
        .contact_received(&contact.phone, 2, MEDIA_WAIT)
        .await
        .unwrap();
    let media = received[1].media.clone().unwrap();
    assert_eq!(
        (
            media.kind,
            media.filename.as_deref(),
            media.error.as_deref()
        ),
        (MediaKind::Document, Some("report.pdf"), None)
    );
    assert_eq!(received[1].text, "");
    // Over the control API: the bytes and the declared mimetype.
    let (got, mimetype) = sim
        .contact_received_media(&contact.phone, &received[1].id)
        .await
        .unwrap();
    assert!(got == pdf);
    assert_eq!(mimetype, "application/pdf");

    // Both uploads went through the buffered path (small files: no resume check).
    let posts: Vec<_> = http
        .exchanges()
        .into_iter()
        .filter(|e| e.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert!(posts.iter().all(|e| e.status == 200 && e.via == "execute"));
    assert!(posts[0].path.contains("/mms/image/"), "{posts:?}");
    assert!(posts[1].path.ends_with(&format!(
        "/mms/document/{}",
        wasp_sim::media::token_of(&up.file_enc_sha256)
    )));
    assert!(
        running.sim.unhandled_iqs().is_empty(),
        "{:?}",
        running.sim.unhandled_iqs()
    );
    client.stop().await;
    running.shutdown().await;
}

/// Sends the first `n` bytes of an upload of `ciphertext` over raw TLS and hangs up, as a
/// client whose connection broke mid-upload.
async fn interrupted_upload(running: &wasp_sim::Running, mms: &str, ciphertext: &[u8], n: usize) {
    use rustls::pki_types::pem::PemObject as _;
    use tokio::io::AsyncWriteExt as _;
    let token = wasp_sim::media::token_of(&sha2_of(ciphertext));
    let auth = running.sim.media().auth();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            rustls::pki_types::CertificateDer::from_pem_slice(running.media_ca_pem.as_bytes())
                .unwrap(),
        )
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let addr = running.media_url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let head = format!(
        "POST /mms/{mms}/{token}?auth={auth}&token={token} HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        ciphertext.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&ciphertext[..n]).await.unwrap();
    tls.flush().await.unwrap();
    // Hang up mid-body; the server keeps what arrived.
    drop(tls);
    let store = running.sim.media();
    let kept = running
        .sim
        .wait_for(MEDIA_WAIT, |_| {
            matches!(
                store.upload_state(&token),
                wasp_sim::media::UploadState::Partial(_)
            )
            .then_some(())
        })
        .await;
    assert!(kept.is_some(), "the interrupted upload was kept");
}

fn sha2_of(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_document_is_streamed_checked_for_resume_and_resumed() {
    let (running, sim) = start_sim().await;
    let (_phone, client, http) = media_client(&running, &sim).await;
    let contact = sim.create_contact(None, Some("Bob")).await.unwrap();
    let to = Jid::pn(contact.phone.as_str());

    // 6 MiB, over the client's 5 MiB resumable threshold. Encrypted with the library's
    // streaming encryption, uploaded with its streaming upload.
    let doc = bytes(6 * 1024 * 1024, 11);
    let mut ciphertext = Vec::new();
    let info =
        wacore::upload::encrypt_media_streaming(&doc[..], &mut ciphertext, MediaType::Document)
            .unwrap();
    let ciphertext = bytes::Bytes::from(ciphertext);

    // A first attempt broke off after 1 MiB; the server kept what arrived.
    interrupted_upload(&running, "document", &ciphertext, 1024 * 1024).await;
    let kept = match running
        .sim
        .media()
        .upload_state(&wasp_sim::media::token_of(&info.file_enc_sha256))
    {
        wasp_sim::media::UploadState::Partial(n) => n,
        other => panic!("{other:?}"),
    };
    assert!(kept > 0 && kept <= 1024 * 1024);

    let up = client
        .client()
        .upload_stream(ciphertext.clone(), info, MediaType::Document)
        .await
        .unwrap();
    let posts: Vec<_> = http
        .exchanges()
        .into_iter()
        .filter(|e| e.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2, "{posts:?}");
    // The resume check found the partial upload…
    assert!(
        posts[0].query.ends_with("&resume=1") && posts[0].status == 200,
        "{posts:?}"
    );
    // …and the client streamed only the rest.
    assert_eq!(posts[1].via, "upload");
    assert!(
        posts[1].query.ends_with(&format!("&file_offset={kept}")),
        "{posts:?}"
    );
    assert_eq!(posts[1].status, 200);

    client
        .client()
        .send_message(
            to.clone(),
            document_message(&up, "application/octet-stream", "big.bin"),
        )
        .await
        .unwrap();
    let received = sim
        .contact_received(&contact.phone, 1, MEDIA_WAIT)
        .await
        .unwrap();
    let media = received[0].media.clone().unwrap();
    assert_eq!(media.error, None);
    assert_eq!(media.size, doc.len() as u64);
    assert!(
        running
            .sim
            .contact_received_media(&contact.phone, &received[0].id)
            .unwrap()
            == doc,
        "the resumed upload decrypts to the original"
    );

    // The same ciphertext again: the resume check says it is complete; nothing is sent.
    let mut again = Vec::new();
    let info = wacore::upload::encrypt_media_streaming_with_key(
        &doc[..],
        &mut again,
        MediaType::Document,
        Some(&up.media_key),
        None,
    )
    .unwrap();
    let before = http.exchanges().len();
    let up2 = client
        .client()
        .upload_stream(bytes::Bytes::from(again), info, MediaType::Document)
        .await
        .unwrap();
    assert_eq!(up2.direct_path, up.direct_path);
    let new: Vec<_> = http.exchanges()[before..].to_vec();
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].query.ends_with("&resume=1"));

    // A fresh large file: nothing to resume (404), so a full streamed upload.
    let other = bytes(5 * 1024 * 1024 + 100, 99);
    let mut ct = Vec::new();
    let info =
        wacore::upload::encrypt_media_streaming(&other[..], &mut ct, MediaType::Document).unwrap();
    let before = http.exchanges().len();
    client
        .client()
        .upload_stream(bytes::Bytes::from(ct), info, MediaType::Document)
        .await
        .unwrap();
    let new: Vec<_> = http.exchanges()[before..].to_vec();
    assert_eq!(
        new.iter().map(|e| (e.status, e.via)).collect::<Vec<_>>(),
        vec![(404, "execute"), (200, "upload")],
        "{new:?}"
    );
    assert!(!new[1].query.contains("file_offset"));
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contact_sends_an_image_and_a_pdf_and_the_client_downloads_them() {
    let (running, sim) = start_sim().await;
    let (phone, mut client, http) = media_client(&running, &sim).await;
    let contact = sim.create_contact(None, Some("Carol")).await.unwrap();

    let image = png(70_000);
    let id = running
        .sim
        .contact_send_media(
            &contact.phone,
            &phone,
            ContactMedia {
                kind: MediaKind::Image,
                data: image.clone(),
                mimetype: "image/jpeg".into(),
                filename: None,
                caption: Some("the view from here".into()),
            },
        )
        .await
        .unwrap();
    let msg = next_content(&mut client, &id).await;
    let img = msg.image_message.as_option().unwrap();
    assert_eq!(img.caption.as_deref(), Some("the view from here"));
    assert_eq!(img.mimetype.as_deref(), Some("image/jpeg"));
    let got = client.client().download(img).await.unwrap();
    assert!(
        got == image,
        "the client decrypted the contact's image byte for byte"
    );

    // A PDF through the control API.
    let pdf = [b"%PDF-1.4\n".to_vec(), bytes(200_000, 5)].concat();
    let id = sim
        .contact_send_media(
            &contact.phone,
            &phone,
            &ContactMedia {
                kind: MediaKind::Document,
                data: pdf.clone(),
                mimetype: "application/pdf".into(),
                filename: Some("invoice.pdf".into()),
                caption: None,
            },
        )
        .await
        .unwrap();
    let msg = next_content(&mut client, &id).await;
    let doc = msg.document_message.as_option().unwrap();
    assert_eq!(doc.file_name.as_deref(), Some("invoice.pdf"));
    assert!(client.client().download(doc).await.unwrap() == pdf);

    // A captioned document travels as WhatsApp's apps send it.
    let id = running
        .sim
        .contact_send_media(
            &contact.phone,
            &phone,
            ContactMedia {
                kind: MediaKind::Document,
                data: b"a,b\n1,2\n".to_vec(),
                mimetype: "text/csv".into(),
                filename: Some("data.csv".into()),
                caption: Some("the numbers".into()),
            },
        )
        .await
        .unwrap();
    let msg = next_content(&mut client, &id).await;
    let inner = msg
        .document_with_caption_message
        .as_option()
        .and_then(|f| f.message.as_option())
        .and_then(|m| m.document_message.as_option())
        .unwrap();
    assert_eq!(inner.caption.as_deref(), Some("the numbers"));
    assert_eq!(
        client.client().download(inner).await.unwrap(),
        b"a,b\n1,2\n"
    );

    // A voice note.
    let voice = bytes(9_000, 1);
    let id = running
        .sim
        .contact_send_media(
            &contact.phone,
            &phone,
            ContactMedia {
                kind: MediaKind::Ptt,
                data: voice.clone(),
                mimetype: "audio/ogg; codecs=opus".into(),
                filename: None,
                caption: None,
            },
        )
        .await
        .unwrap();
    let msg = next_content(&mut client, &id).await;
    let audio = msg.audio_message.as_option().unwrap();
    assert_eq!(audio.ptt, Some(true));
    assert!(client.client().download(audio).await.unwrap() == voice);

    // The client downloaded through its streaming path, with the media auth.
    let gets: Vec<_> = http
        .exchanges()
        .into_iter()
        .filter(|e| e.method == "GET")
        .collect();
    assert_eq!(gets.len(), 4, "{gets:?}");
    assert!(
        gets.iter()
            .all(|e| e.status == 200 && e.via == "streaming" && e.query.starts_with("auth="))
    );
    assert!(running.sim.unhandled_iqs().is_empty());
    client.stop().await;
    running.shutdown().await;
}

async fn next_content(client: &mut TestClient, want: &str) -> wa::Message {
    client
        .wait_for("a media message", |e| match e {
            Ev::Content { id, message, .. } if id == want => Some((**message).clone()),
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_media_auth_is_refused_and_the_client_refreshes_it() {
    let (running, sim) = start_sim().await;
    let (phone, mut client, http) = media_client(&running, &sim).await;
    let contact = sim.create_contact(None, None).await.unwrap();

    client
        .client()
        .upload(png(1000), MediaType::Image, Default::default())
        .await
        .unwrap();
    let first_auth = running.sim.media().auth();

    // The server rotates its media auth; the client's cached media_conn is stale.
    sim.rotate_media_auth().await.unwrap();
    let before = http.exchanges().len();
    client
        .client()
        .upload(png(2000), MediaType::Image, Default::default())
        .await
        .unwrap();
    let new: Vec<_> = http.exchanges()[before..].to_vec();
    assert_eq!(
        new.iter().map(|e| e.status).collect::<Vec<_>>(),
        vec![401, 200],
        "{new:?}"
    );
    assert!(new[0].query.contains(&format!("auth={first_auth}")));
    assert!(
        new[1]
            .query
            .contains(&format!("auth={}", running.sim.media().auth()))
    );

    // Downloads take the same path.
    let image = png(3000);
    let id = running
        .sim
        .contact_send_media(
            &contact.phone,
            &phone,
            ContactMedia {
                kind: MediaKind::Sticker,
                data: image.clone(),
                mimetype: "image/webp".into(),
                filename: None,
                caption: None,
            },
        )
        .await
        .unwrap();
    let msg = next_content(&mut client, &id).await;
    sim.rotate_media_auth().await.unwrap();
    let before = http.exchanges().len();
    let got = client
        .client()
        .download(msg.sticker_message.as_option().unwrap())
        .await
        .unwrap();
    assert!(got == image);
    let new: Vec<_> = http.exchanges()[before..].to_vec();
    assert_eq!(
        new.iter().map(|e| e.status).collect::<Vec<_>>(),
        vec![401, 200],
        "{new:?}"
    );
    client.stop().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_server_refuses_bad_requests() {
    let (running, sim) = start_sim().await;
    let ca = reqwest::Certificate::from_pem(running.media_ca_pem.as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let auth = running.sim.media().auth();
    let body = b"not what the token names".to_vec();
    let token = wasp_sim::media::token_of(&sha2_of(b"something else"));
    let post = |query: String| {
        http.post(format!("{}/mms/image/{token}?{query}", running.media_url))
            .body(body.clone())
            .send()
    };
    // The body does not hash to the token.
    let r = post(format!("auth={auth}&token={token}")).await.unwrap();
    assert_eq!(r.status(), 400);
    // Wrong or missing auth.
    assert_eq!(
        post(format!("auth=nope&token={token}"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(post(format!("token={token}")).await.unwrap().status(), 401);
    // A correct upload, then downloads.
    let good = wasp_sim::media::token_of(&sha2_of(&body));
    let r = http
        .post(format!(
            "{}/mms/image/{good}?auth={auth}&token={good}",
            running.media_url
        ))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let path = v["direct_path"].as_str().unwrap().to_owned();
    assert_eq!(
        v["url"].as_str().unwrap(),
        format!("{}{path}", running.media_url)
    );
    let get = |q: String| http.get(format!("{}{path}?{q}", running.media_url)).send();
    assert_eq!(
        get(format!("auth={auth}&token={good}"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        &body[..]
    );
    assert_eq!(get(format!("token={good}")).await.unwrap().status(), 200);
    assert_eq!(
        get(format!("auth=stale&token={good}"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get(format!("auth={auth}&token={token}"))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(get(format!("auth={auth}")).await.unwrap().status(), 400);
    let r = http
        .get(format!(
            "{}/v/t62.7118-24/nothing.enc?token={good}",
            running.media_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The certificate is the simulator CA's: a client trusting only the public roots
    // refuses it.
    let public = reqwest::Client::new();
    assert!(
        public
            .get(format!("{}{path}?token={good}", running.media_url))
            .send()
            .await
            .is_err()
    );

    // The CA certificate is served on the WebSocket listener.
    let base = running
        .ws_url
        .replacen("ws://", "http://", 1)
        .trim_end_matches("/ws/chat")
        .to_owned();
    let pem = reqwest::get(format!("{base}/sim/media-ca.pem"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pem, running.media_ca_pem);
    assert_eq!(sim.info().await.unwrap().media_url, running.media_url);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_the_contact_cannot_fetch_is_recorded_with_an_error() {
    let (running, sim) = start_sim().await;
    let (_phone, client, _http) = media_client(&running, &sim).await;
    let contact = sim.create_contact(None, None).await.unwrap();
    // A message naming a blob the media server never had.
    let msg = wa::Message {
        image_message: buffa::MessageField::some(wa::message::ImageMessage {
            direct_path: Some("/v/t62.7118-24/1_2_3_n.enc".into()),
            media_key: Some(vec![1; 32]),
            file_sha256: Some(vec![2; 32]),
            file_enc_sha256: Some(vec![3; 32]),
            file_length: Some(10),
            mimetype: Some("image/png".into()),
            caption: Some("ghost".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    client
        .client()
        .send_message(Jid::pn(contact.phone.as_str()), msg)
        .await
        .unwrap();
    let received = sim.contact_received(&contact.phone, 1, WAIT).await.unwrap();
    assert_eq!(received[0].text, "ghost");
    let media = received[0].media.clone().unwrap();
    assert!(
        media.error.as_deref().unwrap().contains("no media"),
        "{media:?}"
    );
    assert_eq!(media.size, 0);
    assert!(
        sim.contact_received_media(&contact.phone, &received[0].id)
            .await
            .is_err()
    );
    client.stop().await;
    running.shutdown().await;
}
