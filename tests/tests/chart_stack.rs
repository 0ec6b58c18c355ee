//! End to end on the installed chart (issue 10): `charts/wasp` installed into a fresh namespace
//! with the real Helm SDK, its pods (2 operators, 2 APIs, Redis) and the session pods run as
//! processes of the built binaries by the local node, the WhatsApp simulator in-process. A CRM's
//! flow through the API's Service address: WebSocket → POST /connect → `qr` → the phone scans →
//! `ready` → a contact writes → `message` → POST /send → the contact decrypts it → POST
//! /disconnect → the WhatsAppSession is deleted, its finalizer runs, and the user's keys are gone
//! from the chart's Redis. Then the release is uninstalled.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use kube::api::{DeleteParams, WatchEvent, WatchParams};
use kube::runtime::wait::conditions::is_deleted;
use serde_json::{Value, json};
use wasp_common::keys::UserKeys;
use wasp_crds::{Phase, WhatsAppSession, names::session_name};
use wasp_e2e::helm::Release;
use wasp_e2e::node::{Image, Images, LocalNode, NodeOptions};
use wasp_e2e::{TestEnv, bins, eventually, wait_for};
use wasp_sim::client::SimClient;
use wasp_sim::{Sim, SimKeys};

use common::{WAIT, phase, wait_status};

const JWT_SECRET: &str = "chart-stack-secret-chart-stack-secret";
const RELEASE: &str = "wasp";
/// The node's annotation with a Service's address (docs/node.md).
const NODE_ADDRESS: &str = "wasp.dev/node-address";

fn token(user: &str) -> String {
    common::token(user, JWT_SECRET)
}

fn user() -> String {
    format!("dr-chart-{:x}@clinic.example", std::process::id())
}

/// A binary on `PATH` (the node's library takes paths; the binary's `--image` looks names up).
fn on_path(name: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not on PATH (scripts/install-deps.sh)"))
}

/// The chart's images mapped to the built binaries and Debian's redis-server, as scripts/up does.
fn images() -> Result<Images> {
    let operator = bins::find("wasp-operator", "WASP_OPERATOR_BIN", "-p wasp-operator")?;
    let api = bins::find("wasp-api", "WASP_API_BIN", "-p wasp-api")?;
    Ok(Images::new()
        .with("session-pod", Image::new(bins::session_pod()?))
        .with("operator", Image::new(operator))
        .with("api", Image::new(api))
        .with("redis", Image::new(on_path("redis-server")?)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_installed_chart_connects_chats_and_cleans_up() -> Result<()> {
    common::init_tracing();
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    let ns = env.namespace("chart-stack").await?;
    let running = wasp_sim::start(
        Sim::new(SimKeys::generate())?,
        "127.0.0.1:0".parse()?,
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let sim = SimClient::new(&running.control_url);
    // Pods with a service account get a kubeconfig for the apiserver: the chart's RBAC applies.
    let node = LocalNode::start_from_config(
        env.kube_config().await?,
        images()?,
        NodeOptions::namespaced(&ns),
    )
    .await?;
    let release = Release::new(env.repo_root(), env.kubeconfig_path(), &ns, RELEASE);
    let values = json!({
        "api": {"auth": {"jwtSecret": {"value": JWT_SECRET}}},
        "session": {"whatsappUrl": running.ws_url},
    });
    let t0 = Instant::now();
    let installed = tokio::task::spawn_blocking({
        let release = release.clone();
        move || release.install(&[&values])
    })
    .await??;
    ensure!(installed["status"] == "deployed", "{installed}");
    eprintln!("chart stack: helm install in {:?}", t0.elapsed());

    let result = scenario(&client, &ns, &sim, &node).await;
    if let Err(e) = &result {
        let name = session_name(&user());
        eprintln!(
            "chart stack test failed: {e:#}\n--- session pod {name} (last 60 lines) ---\n{}",
            node.log_tail(&name, 60)
        );
    }
    let uninstalled = tokio::task::spawn_blocking(move || release.uninstall()).await?;
    node.shutdown().await?;
    running.shutdown().await;
    result?;
    uninstalled?;
    Ok(())
}

/// The node's address of Service `name`, once it shows it.
async fn service_address(services: &Api<Service>, name: &str) -> Result<String> {
    eventually(WAIT, || async {
        let svc = services.get_opt(name).await.ok()??;
        svc.metadata.annotations?.get(NODE_ADDRESS).cloned()
    })
    .await
    .with_context(|| format!("Service {name} never got a node address"))
}

async fn call(
    method: reqwest::Method,
    url: &str,
    user: &str,
    body: Option<Value>,
) -> Result<Value> {
    common::api_call(method, url, &token(user), body).await
}

async fn scenario(
    client: &kube::Client,
    ns: &str,
    sim: &SimClient,
    node: &LocalNode,
) -> Result<()> {
    let t_start = Instant::now();
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), ns);
    let user = user();
    let name = session_name(&user);

    // The API through its Service (port 80), once a replica is ready behind it.
    let api_addr = service_address(&services, &format!("{RELEASE}-api")).await?;
    let base = format!("http://{api_addr}");
    wasp_e2e::wait::http_ready(&format!("{base}/health"), WAIT)
        .await
        .context("the chart's API never answered /health through its Service")?;
    eprintln!(
        "chart stack: API ready behind its Service in {:?}",
        t_start.elapsed()
    );

    // When the WhatsAppSession appears (the API creates it on /connect): a watch open before
    // the connect.
    let wp = WatchParams::default().fields(&format!("metadata.name={name}"));
    let mut stream = sessions.watch(&wp, "0").await?.boxed();
    let seen = tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            if matches!(ev?, WatchEvent::Added(_) | WatchEvent::Modified(_)) {
                return Ok(Instant::now());
            }
        }
        anyhow::bail!("the watch of the WhatsAppSession ended")
    });

    let mut ws = wasp_e2e::stream_clients::WsClient::connect(&format!(
        "ws://{api_addr}/?token={}",
        token(&user)
    ))
    .await?;
    let hello = ws.next().await?;
    ensure!(hello["type"] == "status", "{hello}");

    let t0 = Instant::now();
    let connected = call(
        reqwest::Method::POST,
        &format!("{base}/connect"),
        &user,
        None,
    )
    .await?;
    ensure!(connected["success"] == true, "{connected}");
    let qr = ws.next_of("qr").await?;
    let t_qr = Instant::now();
    let created = tokio::time::timeout(WAIT, seen)
        .await
        .context("the WhatsAppSession never appeared")???;
    eprintln!(
        "chart stack: connect → QR in {:?} ({:?} from the WhatsAppSession's creation)",
        t_qr - t0,
        t_qr.saturating_duration_since(created)
    );
    let code = qr["data"]["qr"].as_str().context("qr code")?.to_owned();

    // The phone scans: `ready`, and the session is Connected.
    let phone = sim.create_phone(None, Some("Dr Chart")).await?;
    sim.scan_qr(&phone.phone, &code).await?;
    let ready = ws.next_of("ready").await?;
    ensure!(
        ready["data"]["phone"]
            .as_str()
            .is_some_and(|p| p.contains(&phone.phone)),
        "{ready}"
    );
    wait_status(&sessions, &name, "Connected", |s| {
        phase(s) == Some(Phase::Connected)
    })
    .await?;

    // A contact writes: `message` on the WebSocket.
    let contact = sim.create_contact(None, Some("Ann")).await?;
    sim.contact_send(&contact.phone, &phone.phone, "hello from the chart")
        .await?;
    let chat = format!("{}@c.us", contact.phone);
    let msg = ws.next_of("message").await?;
    ensure!(msg["data"]["body"] == "hello from the chart", "{msg}");
    ensure!(msg["data"]["from"] == chat.as_str(), "{msg}");
    ensure!(msg["data"]["fromMe"] == false, "{msg}");

    // The answer through /send; the contact decrypts it.
    let sent = call(
        reqwest::Method::POST,
        &format!("{base}/send"),
        &user,
        Some(json!({"chatId": chat, "message": "see you at 10"})),
    )
    .await?;
    ensure!(sent["success"] == true, "{sent}");
    let received = sim
        .contact_received(&contact.phone, 1, Duration::from_secs(30))
        .await?;
    ensure!(
        received.iter().any(|m| m.text == "see you at 10"),
        "{received:?}"
    );

    // /disconnect logs out: the session pod stops.
    let out = call(
        reqwest::Method::POST,
        &format!("{base}/disconnect"),
        &user,
        None,
    )
    .await?;
    ensure!(out["message"] == "logged out and disconnecting", "{out}");
    eventually(WAIT, || async { node.finished(&name).then_some(()) })
        .await
        .context("the session pod kept running after /disconnect")?;
    ws.close().await;

    // The user's data is in the chart's Redis (reached through its Service, with the Secret's
    // password) until the session is deleted.
    let redis_addr = service_address(&services, &format!("{RELEASE}-redis")).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let url = secrets
        .get(&format!("{RELEASE}-redis"))
        .await?
        .data
        .and_then(|d| d.get("url").map(|b| b.0.clone()))
        .context("the chart's Redis Secret has no url")?;
    let url = String::from_utf8(url)?.replace(&format!("{RELEASE}-redis.{ns}.svc"), &redis_addr);
    let mut redis = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await
        .context("the chart's Redis through its Service")?;
    let pattern = UserKeys::for_user(&user).scan_pattern();
    let before = scan(&mut redis, &pattern).await?;
    ensure!(!before.is_empty(), "no keys {pattern} in the chart's Redis");

    // Deleting the session: the operator's finalizer runs, then the object is gone, and with it
    // every key of the user.
    let uid = sessions
        .get(&name)
        .await?
        .metadata
        .uid
        .context("the session has no uid")?;
    sessions.delete(&name, &DeleteParams::default()).await?;
    wait_for(&sessions, &name, WAIT, is_deleted(&uid))
        .await
        .context("the WhatsAppSession was never deleted (finalizer)")?;
    let left = scan(&mut redis, &pattern).await?;
    ensure!(
        left.is_empty(),
        "the user's keys outlived the session: {left:?}"
    );
    eprintln!("chart stack: whole flow in {:?}", t_start.elapsed());
    Ok(())
}

/// Every key matching `pattern`, by SCAN.
async fn scan(redis: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        found.extend(keys);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}
