//! The chart-installed system of issue 10, as a platform team installs it: `charts/wasp` installed
//! into a fresh namespace with the real Helm SDK, its pods (2 operators, 2 APIs, Redis) and the
//! session pods run as processes of the built binaries by the local node (`wasp-node`), next to
//! the WhatsApp simulator (in-process). Shared by the installed-chart end-to-end and chaos tests
//! and the CR → QR benchmark.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use serde_json::{Value, json};
use wasp_node::proxy::ADDRESS_ANNOTATION;
use wasp_sim::client::SimClient;
use wasp_sim::{Running as RunningSim, Sim, SimKeys};

use crate::helm::Release;
use crate::node::{Image, Images, LocalNode, NodeOptions};
use crate::stream_clients::WsClient;
use crate::{TestEnv, bins, eventually};

/// How long the world waits for a part to come up.
pub const WAIT: Duration = Duration::from_secs(90);

/// A binary on `PATH` (the node's library takes paths; the binary's `--image` looks names up).
pub fn on_path(name: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not on PATH (scripts/install-deps.sh)"))
}

/// The chart's images mapped to the built binaries and Debian's redis-server, as `scripts/up`
/// does (`charts/wasp/ci/local-values.yaml` names them).
pub fn chart_images() -> Result<Images> {
    let operator = bins::find("wasp-operator", "WASP_OPERATOR_BIN", "-p wasp-operator")?;
    let api = bins::find("wasp-api", "WASP_API_BIN", "-p wasp-api")?;
    Ok(Images::new()
        .with("session-pod", Image::new(bins::session_pod()?))
        .with("operator", Image::new(operator))
        .with("api", Image::new(api))
        .with("redis", Image::new(on_path("redis-server")?)))
}

/// The node's address of Service `name` in `ns`, once it shows it.
pub async fn service_address(client: &kube::Client, ns: &str, name: &str) -> Result<String> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    eventually(WAIT, || async {
        let svc = services.get_opt(name).await.ok()??;
        svc.metadata.annotations?.get(ADDRESS_ANNOTATION).cloned()
    })
    .await
    .with_context(|| format!("Service {name} never got a node address"))
}

/// How long [`ChartWorld::install`] took, from the start of `helm install` (the simulator, node
/// and namespace were ready before it).
#[derive(Debug, Clone, Copy)]
pub struct InstallTimes {
    /// The Helm SDK's install call: the release's objects created (no `--wait`).
    pub helm: Duration,
    /// Until an API replica answered `/health` through the API Service.
    pub api_ready: Duration,
}

/// A user paired by [`ChartWorld::pair`].
pub struct Paired {
    /// The simulated phone's number.
    pub phone: String,
    /// The user's WebSocket on the API Service, read past `ready`.
    pub ws: WsClient,
    /// The `ready` event (its `id` is where a client resumes with `?since=`).
    pub ready: Value,
}

/// One installed release with its node and simulator.
pub struct ChartWorld {
    pub client: kube::Client,
    pub ns: String,
    pub release: Release,
    pub node: LocalNode,
    pub sim: SimClient,
    /// The in-process simulator (its `sim` for direct inspection).
    pub running: RunningSim,
    /// The HS256 secret the release's API verifies tokens with.
    pub jwt_secret: String,
    /// The API Service's node address (its IP; the Service's port is 80), once a replica
    /// answered `/health` there.
    pub api_addr: String,
    /// The values the release was installed with, after the local values file: the world's own
    /// (simulator URL, JWT secret), then the caller's. [`ChartWorld::upgrade`] passes them again.
    pub values: [Value; 2],
    /// How long the install took (the CR → QR benchmark reports it).
    pub install_times: InstallTimes,
}

impl ChartWorld {
    /// The release's name in every chart world.
    pub const RELEASE: &'static str = "wasp";

    /// Starts the simulator and a node in a fresh namespace (`prefix-<n>`), installs the chart
    /// with `values` on top of the local values (the simulator's URL and a JWT secret are set
    /// here), and waits until the API answers `/health` through its Service and the chart's Redis
    /// answers PING.
    pub async fn install(prefix: &str, values: &Value) -> Result<Self> {
        let env = TestEnv::get();
        let client = env.kube_client().await?;
        let ns = env.namespace(prefix).await?;
        let running = wasp_sim::start(
            Sim::new(SimKeys::generate())?,
            "127.0.0.1:0".parse()?,
            "127.0.0.1:0".parse()?,
            "127.0.0.1:0".parse()?,
        )
        .await?;
        let sim = SimClient::new(&running.control_url);
        // Pods with a service account get a kubeconfig for the apiserver: the chart's RBAC applies.
        let node = LocalNode::start_from_config(
            env.kube_config().await?,
            chart_images()?,
            NodeOptions::namespaced(&ns),
        )
        .await?;
        let release = Release::new(env.repo_root(), env.kubeconfig_path(), &ns, Self::RELEASE);
        let jwt_secret = format!(
            "{prefix}-jwt-secret-{:x}-0123456789abcdef",
            std::process::id()
        );
        let base = json!({
            "api": {"auth": {"jwtSecret": {"value": jwt_secret}}},
            "session": {"whatsappUrl": running.ws_url},
        });
        let t_helm = Instant::now();
        let installed = tokio::task::spawn_blocking({
            let (release, base, values) = (release.clone(), base.clone(), values.clone());
            move || release.install(&[&base, &values])
        })
        .await??;
        let helm = t_helm.elapsed();
        ensure!(installed["status"] == "deployed", "{installed}");
        let api_addr = service_address(&client, &ns, &format!("{}-api", Self::RELEASE)).await?;
        if let Err(e) = crate::wait::http_ready(&format!("http://{api_addr}/health"), WAIT).await {
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(client.clone(), &ns);
            let mut logs = String::new();
            for p in pods.list(&Default::default()).await?.items {
                let name = kube::ResourceExt::name_any(&p);
                if name.contains("-api-") {
                    logs.push_str(&format!("--- {name} ---\n{}\n", node.log_tail(&name, 20)));
                }
            }
            return Err(e).context(format!(
                "the chart's API never answered /health through its Service\n{logs}"
            ));
        }
        let install_times = InstallTimes {
            helm,
            api_ready: t_helm.elapsed(),
        };
        let world = Self {
            client,
            ns,
            release,
            node,
            sim,
            running,
            jwt_secret,
            api_addr,
            values: [base, values.clone()],
            install_times,
        };
        // The API answers before Redis may: tests that read the chart's Redis start after it.
        eventually(WAIT, || async {
            let mut conn = world.redis().await.ok()?;
            let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
            pong.ok()
        })
        .await
        .context("the chart's Redis never answered PING through its Service")?;
        Ok(world)
    }

    /// `helm upgrade` with the install's values and `extra` on top. Helm's upgrade (the SDK's,
    /// as `scripts/helm.py` calls it) does not reuse the previous release's values, so without
    /// them the simulator URL would fall back to the local values file's. The new revision's
    /// summary, once it is deployed.
    pub async fn upgrade(&self, extra: &Value) -> Result<Value> {
        let upgraded = tokio::task::spawn_blocking({
            let (release, [base, values], extra) =
                (self.release.clone(), self.values.clone(), extra.clone());
            move || release.upgrade(&[&base, &values, &extra])
        })
        .await??;
        ensure!(upgraded["status"] == "deployed", "{upgraded}");
        Ok(upgraded)
    }

    /// `http://<API Service address>`.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// The simulator's WebSocket URL (the session pods' `whatsappUrl`).
    pub fn whatsapp_url(&self) -> &str {
        &self.running.ws_url
    }

    /// An HS256 token for `user`, valid for an hour, that the release's API accepts.
    pub fn token(&self, user: &str) -> String {
        use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
        let exp = jiff::Timestamp::now().as_second() + 3600;
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": user, "exp": exp}),
            &EncodingKey::from_secret(self.jwt_secret.as_bytes()),
        )
        .unwrap_or_default()
    }

    /// The node's address of one of the release's Services (`<release>-<suffix>`).
    pub async fn service(&self, suffix: &str) -> Result<String> {
        service_address(
            &self.client,
            &self.ns,
            &format!("{}-{suffix}", Self::RELEASE),
        )
        .await
    }

    /// The chart's Redis URL (from its Secret, with its password) pointed at the node's address
    /// of the Redis Service.
    pub async fn redis_url(&self) -> Result<String> {
        let addr = self.service("redis").await?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let url = secrets
            .get(&format!("{}-redis", Self::RELEASE))
            .await?
            .data
            .and_then(|d| d.get("url").map(|b| b.0.clone()))
            .context("the chart's Redis Secret has no url")?;
        Ok(String::from_utf8(url)?.replace(
            &format!("{}-redis.{}.svc:6379", Self::RELEASE, self.ns),
            &addr,
        ))
    }

    /// A connection to the chart's Redis.
    pub async fn redis(&self) -> Result<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.redis_url().await?.as_str())?
            .get_multiplexed_async_connection()
            .await
            .context("the chart's Redis through its Service")
    }

    /// A CRM's first steps for `user`: a WebSocket open on the API Service (its hello read), POST
    /// /connect, the `qr` event, a new simulated phone (`push_name`) scanning it, and `ready`.
    /// The WebSocket is returned open, after `ready`.
    pub async fn pair(&self, user: &str, push_name: &str) -> Result<Paired> {
        let mut ws = WsClient::connect(&format!(
            "ws://{}/?token={}",
            self.api_addr,
            self.token(user)
        ))
        .await?;
        let hello = ws.next().await?;
        ensure!(hello["type"] == "status", "{hello}");
        let connected = reqwest::Client::new()
            .post(format!("{}/connect", self.api_base()))
            .bearer_auth(self.token(user))
            .send()
            .await?;
        ensure!(
            connected.status().is_success(),
            "POST /connect: {}",
            connected.status()
        );
        let qr = ws.next_of("qr").await?;
        let code = qr["data"]["qr"].as_str().context("qr code")?;
        let phone = self.sim.create_phone(None, Some(push_name)).await?;
        self.sim.scan_qr(&phone.phone, code).await?;
        let ready = ws.next_of("ready").await?;
        ensure!(
            ready["data"]["phone"]
                .as_str()
                .is_some_and(|p| p.contains(&phone.phone)),
            "{ready}"
        );
        Ok(Paired {
            phone: phone.phone,
            ws,
            ready,
        })
    }

    /// Restarts the node agent (wasp-node) in place ([`LocalNode::restart`]): every pod's
    /// process (the chart's operators, APIs and Redis, and every session pod) stops gracefully
    /// and the new agent starts them again on the same volumes and Service addresses, so
    /// [`ChartWorld::api_addr`] stays valid. Returns when the new agent watches again.
    pub async fn restart_node(&mut self) -> Result<()> {
        self.node.restart().await
    }

    /// Uninstalls the release, then stops the node (and so every pod) and the simulator. The
    /// uninstall's error is returned after everything stopped.
    pub async fn shutdown(self) -> Result<()> {
        let release = self.release.clone();
        let uninstalled = tokio::task::spawn_blocking(move || release.uninstall()).await?;
        self.node.shutdown().await?;
        self.running.shutdown().await;
        uninstalled.map(drop)
    }
}
