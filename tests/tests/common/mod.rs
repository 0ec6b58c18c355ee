//! The world of the full-stack tests, every part real: kube-apiserver + controller-manager
//! (1.20), Redis, the operator (in-process), the WhatsApp simulator (in-process), session pods run
//! as processes of the built `wasp-session-pod` by the local node, and wasp-api replicas
//! (in-process, calling the pods over HTTP with their control tokens).
#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use clap::Parser as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wasp_crds::{Phase, WhatsAppSession};
use wasp_e2e::node::{Image, Images, LocalNode};
use wasp_e2e::{TestEnv, bins, eventually};
use wasp_sim::client::SimClient;
use wasp_sim::{Sim, SimKeys};

pub const WAIT: Duration = Duration::from_secs(60);
pub const MASTER_KEY: &str = "4242424242424242424242424242424242424242424242424242424242424242";
/// The operator's default control port (resources.rs): the endpoint is `<pod IP>:8080`.
pub const CONTROL_PORT: u16 = 8080;
/// Image env of the session pod in these tests: a 3 s single-socket lease instead of 15 s, so a
/// process restarted after kill -9 waits at most 3 s for its predecessor's lease to expire.
pub const LEASE_TTL_MS: &str = "3000";

/// An HS256 token for `user`, valid for an hour, signed with `secret`.
pub fn token(user: &str, secret: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let exp = jiff::Timestamp::now().as_second() + 3600;
    encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": user, "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

pub fn init_tracing() {
    let filter = std::env::var("RUST_LOG")
        .unwrap_or_else(|_| "wasp_operator=info,wasp_api=info,wasp_e2e=info".into());
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(filter)
        .try_init();
}

/// Webhook settings of the test world's operator and of API replicas that deliver: one key,
/// plain http allowed to the test receivers (127.0.0.2) only.
pub const WEBHOOK_FLAGS: [&str; 6] = [
    "--webhook-key",
    "5e1f0a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7",
    "--webhook-allow-http",
    "true",
    "--webhook-allow-nets",
    "127.0.0.2/32",
];

/// The operator, in-process, watching one namespace.
pub struct Operator {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Operator {
    pub async fn start(client: &Client, ns: &str, whatsapp_url: &str) -> Result<Self> {
        let redis_url = TestEnv::get().redis_url();
        let config = wasp_operator::Config::try_parse_from(
            [
                "wasp-operator",
                "--namespace",
                ns,
                "--redis-url",
                &redis_url,
                "--whatsapp-url",
                whatsapp_url,
                "--leader-election",
                "false",
                "--log-format",
                "text",
            ]
            .into_iter()
            .chain(WEBHOOK_FLAGS),
        )?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let handle = wasp_operator::Handle::new(&config);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (client, stop) = (client.clone(), stop.clone());
            async move {
                if let Err(e) = wasp_operator::run(config, client, listener, handle, stop).await {
                    panic!("operator failed: {e}");
                }
            }
        });
        Ok(Self { stop, task })
    }

    pub async fn stop(self) -> Result<()> {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .context("operator did not stop")??;
        Ok(())
    }
}

pub fn secret(name: &str, key: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([(key.to_owned(), ByteString(value.as_bytes().to_vec()))].into()),
        ..Default::default()
    }
}

/// A namespace with the Secrets session pods need, the simulator, a local node running session
/// pods and the operator.
pub struct World {
    pub client: Client,
    pub ns: String,
    pub redis_url: String,
    pub sim: SimClient,
    pub running: wasp_sim::server::Running,
    pub node: LocalNode,
    pub operator: Operator,
}

impl World {
    pub async fn start(prefix: &str) -> Result<Self> {
        init_tracing();
        let env = TestEnv::get();
        let client = env.kube_client().await?;
        env.install_crds(&client).await?;
        let ns = env.namespace(prefix).await?;
        let redis_url = env.redis_url();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        for s in [
            secret("wasp-redis", "url", &redis_url),
            secret("wasp-master-key", "masterKey", MASTER_KEY),
        ] {
            secrets.create(&PostParams::default(), &s).await?;
        }
        let running = wasp_sim::start(
            Sim::new(SimKeys::generate())?,
            "127.0.0.1:0".parse()?,
            "127.0.0.1:0".parse()?,
            "127.0.0.1:0".parse()?,
        )
        .await?;
        let sim = SimClient::new(&running.control_url);
        let images = Images::new().with(
            "session-pod",
            Image::new(bins::session_pod()?)
                .env("RUST_LOG", "info,wasp_session_pod=debug")
                .env("WASP_LEASE_TTL_MS", LEASE_TTL_MS),
        );
        let node = LocalNode::start(client.clone(), &ns, images).await?;
        let operator = Operator::start(&client, &ns, &running.ws_url).await?;
        Ok(Self {
            client,
            ns,
            redis_url,
            sim,
            running,
            node,
            operator,
        })
    }

    pub fn sessions(&self) -> Api<WhatsAppSession> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn redis(&self) -> Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?)
    }

    pub async fn shutdown(self) -> Result<()> {
        self.operator.stop().await?;
        self.node.shutdown().await?;
        self.running.shutdown().await;
        Ok(())
    }
}

pub async fn wait_status(
    sessions: &Api<WhatsAppSession>,
    name: &str,
    what: &str,
    check: impl Fn(&WhatsAppSession) -> bool,
) -> Result<WhatsAppSession> {
    let found = eventually(WAIT, || async {
        let s = sessions.get_opt(name).await.ok().flatten()?;
        check(&s).then_some(s)
    })
    .await;
    match found {
        Ok(s) => Ok(s),
        Err(e) => {
            let last = sessions.get_opt(name).await?.map(|s| s.status);
            bail!("{e} ({what}); last status of {name}: {last:?}")
        }
    }
}

pub fn phase(s: &WhatsAppSession) -> Option<Phase> {
    s.status.as_ref().and_then(|st| st.phase)
}

/// wasp-api in-process, calling session pods over HTTP with their control tokens, as in
/// production; stops when dropped.
pub struct ApiReplica {
    pub base: String,
    pub ws_base: String,
    stop: CancellationToken,
}

impl Drop for ApiReplica {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ApiReplica {
    pub async fn start(world: &World, jwt_secret: &str) -> Result<Self> {
        Self::start_with(world, jwt_secret, &[]).await
    }
}

impl ApiReplica {
    /// [`ApiReplica::start`] with more command-line settings (e.g. `--jwt-require-exp false`).
    pub async fn start_with(world: &World, jwt_secret: &str, extra: &[&str]) -> Result<Self> {
        let mut args = vec![
            "wasp-api",
            "--namespace",
            &world.ns,
            "--redis-url",
            &world.redis_url,
            "--jwt-secret",
            jwt_secret,
            "--rate-limit-per-second",
            "100000",
            "--rate-limit-burst",
            "100000",
        ];
        args.extend_from_slice(extra);
        let config = wasp_api::Config::try_parse_from(args)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let ready = format!("http://{}/readyz", admin.local_addr()?);
        let stop = CancellationToken::new();
        tokio::spawn({
            let (client, stop) = (world.client.clone(), stop.clone());
            async move {
                if let Err(e) = wasp_api::run(config, client, listener, admin, stop).await {
                    panic!("wasp-api failed: {e}");
                }
            }
        });
        wasp_e2e::wait::http_ready(&ready, WAIT)
            .await
            .context("API never became ready")?;
        Ok(Self {
            base: format!("http://{addr}"),
            ws_base: format!("ws://{addr}"),
            stop,
        })
    }
}

/// An API call with bearer `token`; the answer's JSON, checked by [`checked_text`].
pub async fn api_call(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    Ok(serde_json::from_str(&checked_text(req).await?)?)
}

/// A successful answer's body as sent, byte for byte; checked against the OpenAPI document
/// (status documented, body fits the schema with no undocumented field).
pub async fn checked_text(req: reqwest::RequestBuilder) -> Result<String> {
    let (client, req) = req.build_split();
    let req = req?;
    let method = req.method().as_str().to_owned();
    let path = req.url().path().to_owned();
    let r = client.execute(req).await?;
    let status = r.status();
    let body = r.text().await?;
    ensure!(status.is_success(), "{method} {path}: {status} {body}");
    let doc = wasp_e2e::openapi::Document::load()?;
    let template = doc
        .template_of(&method, &path)
        .with_context(|| format!("{method} {path} is not in the OpenAPI document"))?;
    doc.validate_response_strict(
        &method,
        &template,
        status.as_u16(),
        &serde_json::from_str(&body)?,
    )
    .with_context(|| {
        format!("the answer of {method} {path} is not what the document says: {body}")
    })?;
    Ok(body)
}
