//! Shared by wasp-api's integration tests: an API replica in-process on the harness's real
//! kube-apiserver and Redis, tokens, session resources with the status the operator would write,
//! events written to Redis exactly as a session pod writes them, and WebSocket/SSE clients.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use prost::Message as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasp_api::pods::PodApi;
use wasp_api::{Config, run_with_pods};
use wasp_common::events::{Envelope, Kind, emit_pipeline, publish_only_cmd};
use wasp_common::keys::UserKeys;
use wasp_crds::{WhatsAppSession, names::session_name};
pub use wasp_e2e::stream_clients::{SseClient, WsClient};
use wasp_e2e::{TestEnv, eventually};

pub const SECRET: &str = "integration-secret-integration-secret";
pub const WAIT: Duration = Duration::from_secs(20);

pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

pub fn sign(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The webhook key of webhook tests and benches, and the flags that let a replica deliver to
/// the test receivers (plain http to 127.0.0.2 only).
pub const WEBHOOK_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
pub const WEBHOOK_FLAGS: [&str; 6] = [
    "--webhook-key",
    WEBHOOK_KEY,
    "--webhook-allow-http",
    "true",
    "--webhook-allow-nets",
    "127.0.0.2/32",
];

/// A token for `sub` valid for ten minutes.
pub fn token(sub: &str) -> String {
    sign(&json!({"sub": sub, "exp": now() + 600}))
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "wasp_api=info".into()))
        .try_init();
}

/// A fresh namespace with the CRDs installed, and a client.
pub async fn namespace(prefix: &str) -> Result<(Client, String)> {
    init_tracing();
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    env.install_crds(&client).await?;
    let ns = env.namespace(prefix).await?;
    Ok((client, ns))
}

/// One API replica in this process; stops when dropped.
pub struct Replica {
    pub base: String,
    pub ws_base: String,
    pub admin_base: String,
    stop: CancellationToken,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Replica {
    /// Stops serving (as dropping does).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Starts a replica serving namespace `ns`, calling session pods through `pods`, and waits
    /// until it is ready.
    pub async fn start(client: &Client, ns: &str, pods: Arc<dyn PodApi>) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::start_on(client, ns, pods, listener).await
    }

    /// [`Replica::start`] on a given listener (a restarted replica keeps its address).
    pub async fn start_on(
        client: &Client,
        ns: &str,
        pods: Arc<dyn PodApi>,
        listener: tokio::net::TcpListener,
    ) -> Result<Self> {
        Self::serve(client, ns, Some(pods), listener, &[]).await
    }

    /// [`Replica::start`] with `extra` flags after the defaults.
    pub async fn start_with(
        client: &Client,
        ns: &str,
        pods: Arc<dyn PodApi>,
        extra: &[&str],
    ) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(client, ns, Some(pods), listener, extra).await
    }

    /// A replica that calls session pods over HTTP as in production (`wasp_api::run`), with
    /// `extra` flags after the defaults (e.g. a lower rate limit).
    pub async fn start_http(client: &Client, ns: &str, extra: &[&str]) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(client, ns, None, listener, extra).await
    }

    async fn serve(
        client: &Client,
        ns: &str,
        pods: Option<Arc<dyn PodApi>>,
        listener: tokio::net::TcpListener,
        extra: &[&str],
    ) -> Result<Self> {
        let redis = TestEnv::get().redis_url();
        let mut args = vec![
            "wasp-api",
            "--namespace",
            ns,
            "--redis-url",
            &redis,
            "--jwt-secret",
            SECRET,
        ];
        if !extra.contains(&"--rate-limit-burst") {
            args.extend_from_slice(&[
                "--rate-limit-per-second",
                "1000",
                "--rate-limit-burst",
                "1000",
            ]);
        }
        args.extend_from_slice(extra);
        let config = Config::try_parse_from(args)?;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let admin_base = format!("http://{}", admin.local_addr()?);
        let stop = CancellationToken::new();
        tokio::spawn({
            let (client, stop) = (client.clone(), stop.clone());
            async move {
                let result = match pods {
                    Some(pods) => run_with_pods(config, client, listener, admin, pods, stop).await,
                    None => wasp_api::run(config, client, listener, admin, stop).await,
                };
                if let Err(e) = result {
                    panic!("wasp-api failed: {e}");
                }
            }
        });
        wasp_e2e::wait::http_ready(&format!("{admin_base}/readyz"), WAIT)
            .await
            .context("API never became ready")?;
        Ok(Self {
            base: format!("http://{addr}"),
            ws_base: format!("ws://{addr}"),
            admin_base,
            stop,
        })
    }

    /// `GET path` as `user`: status and JSON body.
    pub async fn get(&self, path: &str, user: &str) -> Result<(u16, Value)> {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(token(user))
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await?))
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(reqwest::get(format!("{}/metrics", self.admin_base))
            .await?
            .text()
            .await?)
    }
}

/// Creates `user`'s session resource with the status the operator would write (phase, and the
/// pod endpoint), then waits until `replica`'s cache shows the phase.
pub async fn put_session(
    client: &Client,
    ns: &str,
    replica: &Replica,
    user: &str,
    phase: &str,
    endpoint: Option<&str>,
) -> Result<()> {
    let api: Api<WhatsAppSession> = Api::namespaced(client.clone(), ns);
    let name = session_name(user);
    if api.get_opt(&name).await?.is_none() {
        let mut s = WhatsAppSession::for_user(user);
        s.metadata.name = Some(name.clone());
        api.create(&PostParams::default(), &s).await?;
    }
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": phase, "endpoint": endpoint}})),
    )
    .await?;
    eventually(WAIT, || async {
        let (_, s) = replica.get("/status", user).await.ok()?;
        (s["phase"] == phase).then_some(())
    })
    .await
    .with_context(|| format!("status of {user} never showed {phase}"))?;
    Ok(())
}

/// Writes events to Redis exactly as a session pod does (clones share one connection).
#[derive(Clone)]
pub struct Producer {
    conn: redis::aio::MultiplexedConnection,
}

impl Producer {
    pub async fn connect() -> Result<Self> {
        let client = redis::Client::open(TestEnv::get().redis_url())?;
        Ok(Self {
            conn: client.get_multiplexed_async_connection().await?,
        })
    }

    fn envelope(user: &str, kind: Kind) -> Vec<u8> {
        Envelope {
            user_hash: wasp_common::user_hash(user),
            at_ms: jiff::Timestamp::now().as_millisecond(),
            kind: Some(kind),
        }
        .encode_to_vec()
    }

    /// A durable event (stream + live channel); returns its event id.
    pub async fn emit(&mut self, user: &str, kind: Kind) -> Result<String> {
        let keys = UserKeys::for_user(user);
        let (id,): (String,) = emit_pipeline(&keys, 10_000, &Self::envelope(user, kind))
            .query_async(&mut self.conn)
            .await?;
        Ok(id)
    }

    /// An ephemeral event (live channel only).
    pub async fn publish(&mut self, user: &str, kind: Kind) -> Result<()> {
        let keys = UserKeys::for_user(user);
        publish_only_cmd(&keys, &Self::envelope(user, kind))
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(())
    }
}

/// An inbound text message of the contact `41790000002@c.us`, numbered `n`, in the shared model.
pub fn inbound_message(id: &str, text: &str) -> wasp_common::model::Message {
    let chat = wasp_common::model::Wid::parse("41790000002@c.us").expect("a valid id");
    let me = wasp_common::model::Wid::parse("41791234567@c.us").expect("a valid id");
    wasp_common::model::Message::new(wasp_common::model::MessageParts {
        id,
        chat: &chat,
        own: Some(&me),
        author: None,
        from_me: false,
        body: text,
        kind: "chat",
        timestamp: now(),
        has_media: false,
        has_quoted_msg: false,
        push_name: "Ann",
    })
}

/// An own sent message numbered `n`: one `message_create` event.
pub fn own_message(n: usize) -> Kind {
    let mut m = inbound_message(&format!("S{n}"), &format!("message {n}"));
    m.from_me = true;
    std::mem::swap(&mut m.from, &mut m.to);
    m.id = wasp_common::model::MessageKey::new(true, &m.chat_id, &format!("S{n}"), None);
    Kind::Message(wasp_common::events::ChatMessage { json: m.to_json() })
}

/// A new inbound message event (`message_create` + `message`) numbered `n`.
pub fn text_message(n: usize) -> Kind {
    Kind::Message(wasp_common::events::ChatMessage {
        json: inbound_message(&format!("M{n}"), &format!("message {n}")).to_json(),
    })
}
