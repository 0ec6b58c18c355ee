//! The `/console` page in headless Chromium (wasp-e2e's `browser`) against wasp-api on the
//! harness's real kube-apiserver and Redis: the token from `#token=`, status, Connect, the live QR
//! and the connected state from the events a session pod writes to Redis, messages (live and
//! from `/chats` + `/messages`), resuming the WebSocket after the API restarts, and a rejected
//! token. No operator runs: the test writes the resource status the operator would, and session
//! pod calls go to a fake answering with fixtures. Screenshots land in
//! `target/test-artifacts/console/`.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use prost::Message as _;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use wasp_api::pods::{PodApi, PodCall, PodError, PodTarget};
use wasp_common::events::{self as ev, Envelope, Kind, emit_pipeline, publish_only_cmd};
use wasp_common::keys::UserKeys;
use wasp_crds::{DesiredState, WhatsAppSession, names::session_name};
use wasp_e2e::browser::Browser;
use wasp_e2e::{TestEnv, eventually};

mod common;
use common::{Replica, SECRET};

const WAIT: Duration = Duration::from_secs(20);
/// The session pod caps its stream at about this many entries.
const EVENTS_MAXLEN: usize = 1000;

/// A 37×37 PNG that looks like a QR code (the pod sends a real one; the page only shows it).
const QR_PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAACUAAAAlAQAAAADt5R2uAAAAsklEQVR42mP4DwIMmOQHAb8D9QzfL+XH1zN8ia0MBJLBLCAygPEiUPxuxf16hg+ioQ71DP8/SwPVfxM0b/nP8Hv5vb3/GX7Ibjnxn+FLnrIlUGWwgkY9w7eidxz/Gf6wOwLVf3+6D2R+zC8doF6Tksj/DB+jL7D+Z/huoWn/n+HXiSxhoPif1oNANeL9V4HiN2WSgPbGLeUBkjEXRIAmR3abAM25ES8EdIOQ3Yp6Bhy+AAB5w32ospnamgAAAABJRU5ErkJggg==";

const PHONE: &str = "41791234567";
const CONTACT: &str = "41790000002@c.us";

/// Answers the page's history calls with one stored message, and nothing else.
struct FakePods;

impl PodApi for FakePods {
    fn call<'a>(
        &'a self,
        _target: &'a PodTarget,
        call: PodCall,
    ) -> BoxFuture<'a, Result<Value, PodError>> {
        let mut stored = common::inbound_message("STORED1", "from the store");
        stored.timestamp -= 60;
        let answer = match call {
            PodCall::Chats { .. } => json!({"chats": [{
                "id": {"server": "c.us", "user": "41790000002", "_serialized": CONTACT},
                "name": "Ann", "isGroup": false, "unreadCount": 1,
                "timestamp": stored.timestamp, "lastMessage": stored,
            }]}),
            PodCall::Messages { chat, .. } if chat == CONTACT => json!([stored]),
            PodCall::Messages { .. } => json!([]),
            // No QR on the pod's status: the page must get it from the live event.
            _ => json!({}),
        };
        Box::pin(async move { Ok(answer) })
    }
}

fn token(sub: &str, secret: &str) -> String {
    let claims = json!({"sub": sub, "exp": jiff::Timestamp::now().as_second() + 600});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// wasp-api on a real apiserver and Redis, in this process.
struct TestApi {
    addr: SocketAddr,
    ns: String,
    client: Client,
    replica: Replica,
}

impl TestApi {
    async fn start() -> Result<Self> {
        let (client, ns) = common::namespace("console").await?;
        let replica = Replica::start(&client, &ns, Arc::new(FakePods)).await?;
        let addr = replica.base.trim_start_matches("http://").parse()?;
        Ok(Self {
            addr,
            ns,
            client,
            replica,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn sessions(&self) -> Api<WhatsAppSession> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Writes the status the operator would.
    async fn set_status(&self, user: &str, status: Value) -> Result<()> {
        self.sessions()
            .patch_status(
                &session_name(user),
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await?;
        Ok(())
    }
}

/// Writes events the way a session pod does (`session-pod/src/store.rs`, through the same
/// `wasp_common::events` helpers): durable ones to the user's stream and live channel, QR codes
/// to the live channel only.
struct PodEvents {
    conn: MultiplexedConnection,
    keys: UserKeys,
    user_hash: String,
}

impl PodEvents {
    async fn for_user(user: &str) -> Result<Self> {
        let conn = redis::Client::open(TestEnv::get().redis_url())?
            .get_multiplexed_async_connection()
            .await?;
        Ok(Self {
            conn,
            keys: UserKeys::for_user(user),
            user_hash: wasp_common::user_hash(user),
        })
    }

    fn encode(&self, kind: Kind) -> Vec<u8> {
        Envelope {
            user_hash: self.user_hash.clone(),
            at_ms: jiff::Timestamp::now().as_millisecond(),
            kind: Some(kind),
        }
        .encode_to_vec()
    }

    /// A durable event (stream + live channel); returns its event id.
    async fn emit(&mut self, kind: Kind) -> Result<String> {
        let (id,): (String,) = emit_pipeline(&self.keys, EVENTS_MAXLEN, &self.encode(kind))
            .query_async(&mut self.conn)
            .await?;
        Ok(id)
    }

    /// An ephemeral event (QR and pairing codes carry key material and never enter the stream).
    async fn publish_only(&mut self, kind: Kind) -> Result<()> {
        publish_only_cmd(&self.keys, &self.encode(kind))
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(())
    }

    async fn status(&mut self, phase: &str) -> Result<String> {
        self.emit(Kind::Status(ev::Status {
            phase: phase.into(),
            ..Default::default()
        }))
        .await
    }

    async fn message(&mut self, id: &str, text: &str) -> Result<String> {
        self.emit(Kind::Message(ev::ChatMessage {
            json: common::inbound_message(id, text).to_json(),
        }))
        .await
    }
}

/// `document.body.dataset.state`, the page's seed-style status.
fn state_is(state: &str) -> String {
    format!("document.body.dataset.state === {state:?}")
}

/// The bodies of the listed messages, top (newest) first.
const MESSAGE_BODIES: &str =
    "[...document.querySelectorAll('[data-testid=message-body]')].map(e => e.textContent)";

async fn message_bodies(browser: &Browser) -> Result<Vec<String>> {
    Ok(serde_json::from_value(browser.eval(MESSAGE_BODIES).await?)?)
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_without_a_token() -> Result<()> {
    let api = TestApi::start().await?;
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let r = http.get(api.url(path)).send().await?;
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff");
    }
    Ok(())
}

#[tokio::test]
async fn console_follows_the_session_from_connect_to_qr_to_connected() -> Result<()> {
    let api = TestApi::start().await?;
    let user = "console-doctor@clinic.example";
    let jwt = token(user, SECRET);
    let mut pod = PodEvents::for_user(user).await?;
    let browser = Browser::start().await?;

    // The token arrives in the fragment; the page keeps it in sessionStorage and clears the
    // address bar.
    browser
        .open(&format!("{}#token={jwt}", api.url("/console")))
        .await?;
    browser
        .wait_until(WAIT, "no session yet", &state_is("disconnected"))
        .await?;
    let href = browser.eval("location.href").await?;
    assert_eq!(href, json!(api.url("/console")), "token left in the URL");
    assert_eq!(
        browser
            .eval("sessionStorage.getItem('wasp.console.token')")
            .await?,
        json!(jwt)
    );
    assert_eq!(browser.text("#phase").await?.as_deref(), Some("NotFound"));
    browser
        .wait_until(
            WAIT,
            "the event stream",
            "document.body.dataset.live === 'open'",
        )
        .await?;

    // Connect creates the resource; the page shows it starting.
    browser.click("[data-testid=connect]").await?;
    browser
        .wait_until(WAIT, "the session to start", &state_is("initializing"))
        .await?;
    let cr = api.sessions().get(&session_name(user)).await?;
    assert_eq!(cr.spec.desired_state, DesiredState::Connected);
    assert_eq!(browser.text("#phase").await?.as_deref(), Some("Pending"));

    // The session pod asks for a scan: a status event, then the QR on the live channel.
    api.set_status(
        user,
        json!({"phase": "AwaitingScan", "endpoint": "127.0.0.9:8080"}),
    )
    .await?;
    pod.status("AwaitingScan").await?;
    browser
        .wait_until(WAIT, "the QR phase", &state_is("qr"))
        .await?;
    let data_url = format!("data:image/png;base64,{QR_PNG_BASE64}");
    pod.publish_only(Kind::Qr(ev::Qr {
        code: "2@console-test,qr".into(),
        svg: String::new(),
        data_url: data_url.clone(),
    }))
    .await?;
    browser
        .wait_until(
            WAIT,
            "the QR image, decoded",
            "(() => { const i = document.querySelector('[data-testid=qr-image]'); \
             return !document.querySelector('[data-testid=qr]').hidden && i.complete \
             && i.naturalWidth > 0 ? i.getAttribute('src') : null; })()",
        )
        .await
        .map(|src| assert_eq!(src, json!(data_url)))?;
    browser.screenshot("console/qr").await?;

    // Scanned: the pod reports connected, then ready with the phone.
    pod.status("Connected").await?;
    pod.emit(Kind::Ready(ev::Ready {
        phone: PHONE.into(),
        push_name: "Dr Console".into(),
        jid: format!("{PHONE}:3@s.whatsapp.net"),
    }))
    .await?;
    browser
        .wait_until(WAIT, "the connected state", &state_is("connected"))
        .await?;
    let shown = browser
        .wait_for_text(WAIT, "[data-testid=connected]", "+41791234567")
        .await?;
    assert!(shown.contains("Dr Console"), "{shown}");
    assert_eq!(
        browser.text("#phone").await?.as_deref(),
        Some("+41791234567")
    );
    assert_eq!(
        browser
            .eval("document.querySelector('[data-testid=qr]').hidden")
            .await?,
        json!(true),
        "QR still shown once connected"
    );

    // A message arrives live, above the stored one the history brought.
    pod.message("LIVE1", "hello, <b>console</b>").await?;
    browser
        .wait_for_text(WAIT, "#messages", "hello, <b>console</b>")
        .await?;
    eventually(WAIT, || async {
        let bodies = message_bodies(&browser).await.ok()?;
        (bodies.first().map(String::as_str) == Some("hello, <b>console</b>")).then_some(())
    })
    .await
    .context("the live message is not on top")?;
    // Text, never markup.
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#messages b').length")
            .await?,
        json!(0)
    );
    browser.screenshot("console/connected").await?;

    // A fresh load of a connected session: connected from `GET /status`, history from
    // `/chats` + `/messages`.
    api.set_status(
        user,
        json!({"phase": "Connected", "phoneNumber": PHONE, "pushName": "Dr Console",
               "endpoint": "127.0.0.9:8080"}),
    )
    .await?;
    eventually(WAIT, || async {
        let s: Value = reqwest::Client::new()
            .get(api.url("/status"))
            .bearer_auth(&jwt)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (s["phase"] == "Connected").then_some(())
    })
    .await
    .context("the API's cache never showed Connected")?;
    browser.open(&api.url("/console")).await?;
    browser
        .wait_until(WAIT, "connected on load", &state_is("connected"))
        .await?;
    browser
        .wait_for_text(WAIT, "[data-testid=connected-phone]", "+41791234567")
        .await?;
    browser
        .wait_for_text(WAIT, "#messages", "from the store")
        .await?;
    browser
        .wait_until(
            WAIT,
            "the event stream",
            "document.body.dataset.live === 'open'",
        )
        .await?;
    // An event after the reload gives the page an id to resume from.
    pod.message("LIVE2", "before the restart").await?;
    browser
        .wait_for_text(WAIT, "#messages", "before the restart")
        .await?;

    // The API restarts on the same address: the page reconnects with `since` and gets what it
    // missed meanwhile, once.
    api.replica.stop();
    browser
        .wait_until(
            WAIT,
            "the stream to drop",
            "document.body.dataset.live === 'closed'",
        )
        .await?;
    pod.message("LIVE3", "while the API was away").await?;
    let listener = eventually(WAIT, || async {
        tokio::net::TcpListener::bind(api.addr).await.ok()
    })
    .await
    .context("rebinding the API's address")?;
    let _restarted = Replica::start_on(&api.client, &api.ns, Arc::new(FakePods), listener).await?;
    browser
        .wait_for_text(
            Duration::from_secs(40),
            "#messages",
            "while the API was away",
        )
        .await?;
    browser
        .wait_until(
            WAIT,
            "the stream back",
            "document.body.dataset.live === 'open'",
        )
        .await?;
    let bodies = message_bodies(&browser).await?;
    assert_eq!(
        bodies
            .iter()
            .filter(|b| *b == "while the API was away")
            .count(),
        1,
        "{bodies:?}"
    );
    assert_eq!(
        bodies.first().map(String::as_str),
        Some("while the API was away")
    );
    browser.close().await
}

/// Cancels an API instance when dropped.
#[tokio::test]
async fn a_rejected_token_says_so_and_a_pasted_one_signs_in() -> Result<()> {
    let api = TestApi::start().await?;
    let browser = Browser::start().await?;
    let forged = token(
        "intruder@clinic.example",
        "not-the-api-secret-not-the-api-secret",
    );
    browser
        .open(&format!("{}#token={forged}", api.url("/console")))
        .await?;
    browser
        .wait_until(WAIT, "the token to be refused", &state_is("token_rejected"))
        .await?;
    let error = browser
        .text("[data-testid=error]")
        .await?
        .unwrap_or_default();
    assert!(
        error.to_lowercase().contains("token rejected"),
        "error shown: {error:?}"
    );
    assert_eq!(
        browser
            .eval("sessionStorage.getItem('wasp.console.token')")
            .await?,
        Value::Null,
        "a refused token is not kept"
    );
    assert_eq!(
        browser
            .eval("document.querySelector('[data-testid=signin]').hidden")
            .await?,
        json!(false)
    );
    browser.screenshot("console/token-rejected").await?;

    // Pasting a valid token signs in.
    let pasted = "console-paste@clinic.example";
    let good = token(pasted, SECRET);
    browser.type_into("#token", &good).await?;
    browser.click("#token-form button[type=submit]").await?;
    browser
        .wait_until(WAIT, "the pasted token to work", &state_is("disconnected"))
        .await?;
    assert_eq!(
        browser
            .eval("document.querySelector('[data-testid=error]').hidden")
            .await?,
        json!(true)
    );

    // Connect, then Disconnect (which logs out, so the page asks first).
    browser.click("[data-testid=connect]").await?;
    browser
        .wait_until(WAIT, "the session to start", &state_is("initializing"))
        .await?;
    browser.click("[data-testid=disconnect]").await?;
    let question = browser.client().get_alert_text().await?;
    assert!(question.contains("log this device out"), "{question}");
    browser.client().accept_alert().await?;
    browser
        .wait_until(WAIT, "the session to stop", &state_is("disconnected"))
        .await?;
    let cr = api.sessions().get(&session_name(pasted)).await?;
    assert_eq!(cr.spec.desired_state, DesiredState::Disconnected);
    browser.close().await
}
