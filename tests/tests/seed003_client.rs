//! Acceptance of issue 9: a CRM written for seed 003 works against wasp unchanged. The client is
//! JavaScript as such a CRM is written (`tests/js/seed003-crm.mjs`: `fetch`, a WebSocket,
//! whatsapp-web.js-shaped JSON, an HS256 token signed with Node's `crypto`), run by Node on the
//! real stack: kube-apiserver, the operator, session pods as processes of the local node, Redis,
//! wasp-sim and wasp-api. It knows nothing of wasp; this test plays the rest of the world from
//! the steps it prints: the phone scans its QR, a contact writes, the contact reads the reply.
//!
//! The session is made the kubectl way first (`examples/whatsappsession.yaml`, under its own
//! name), so the client's `/connect` patches it in place and every pod route (send, chats,
//! messages, chat-by-phone, logs, contacts, disconnect) reaches that pod.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use kube::api::{ListParams, PostParams};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use wasp_common::keys::UserKeys;
use wasp_crds::{DesiredState, Phase, StoragePolicy, WhatsAppSession};
use wasp_e2e::eventually;

use common::{ApiReplica, WAIT, World, phase, wait_status};

const JWT_SECRET: &str = "seed003-crm-secret-seed003-crm-secret";
/// The resource's name, as in `examples/whatsappsession.yaml` (not the name wasp-api derives).
const SESSION: &str = "dr-meier";
/// How long one step of the client may take (its own waits are 20 s).
const STEP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seed_003_crm_in_javascript_runs_unchanged_on_a_kubectl_made_session() -> Result<()> {
    let world = World::start("seed003").await?;
    let result = scenario(&world).await;
    if let Err(e) = &result {
        eprintln!(
            "seed 003 client test failed: {e:#}\n--- session pod {SESSION} (last 60 lines) ---\n{}",
            world.node.log_tail(SESSION, 60)
        );
    }
    world.shutdown().await?;
    result
}

/// A user id as a seed-003 main app (Supabase) issues them: a UUID in `sub`.
fn user() -> String {
    format!("6f1c0a4e-93d2-4c1b-8e0f-{:012x}", std::process::id())
}

/// `examples/whatsappsession.yaml` for `user`, wanted disconnected until the CRM connects, storing
/// every message as seed 003 does.
fn kubectl_session(user: &str) -> Result<WhatsAppSession> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/whatsappsession.yaml"
    );
    let mut s: WhatsAppSession = serde_yaml_ng::from_str(&std::fs::read_to_string(path)?)
        .context("examples/whatsappsession.yaml")?;
    ensure!(
        s.metadata.name.as_deref() == Some(SESSION),
        "the example's name changed"
    );
    s.spec.user_id = user.to_owned();
    s.spec.desired_state = DesiredState::Disconnected;
    s.spec.storage.policy = StoragePolicy::All;
    Ok(s)
}

/// The Node process running the CRM client, read step by step.
struct Crm {
    child: Child,
    steps: tokio::io::Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Crm {
    /// The whole CRM session (`args` empty) or one of its short modes, with a token living
    /// `expires_in` seconds (`none`: no `exp`).
    fn start(api: &ApiReplica, user: &str, args: &[&str], expires_in: &str) -> Result<Self> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/js/seed003-crm.mjs");
        let mut child = Command::new("node")
            .arg("--experimental-websocket")
            .arg(script)
            .args(args)
            .env("JWT_EXPIRES_IN", expires_in)
            .env("API_URL", &api.base)
            .env("JWT_SECRET", JWT_SECRET)
            .env("CRM_USER_ID", user)
            .env("CRM_EMAIL", "doctor@clinic.com")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting node (Node.js 20 or newer must be on PATH)")?;
        let stdout = child.stdout.take().context("node's stdout")?;
        let mut err = child.stderr.take().context("node's stderr")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        tokio::spawn({
            let stderr = stderr.clone();
            async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = err.read(&mut buf).await {
                    if let Ok(mut s) = stderr.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            }
        });
        Ok(Self {
            child,
            steps: BufReader::new(stdout).lines(),
            stderr,
        })
    }

    /// Waits for the client to exit; its exit status.
    async fn exit(mut self) -> Result<std::process::ExitStatus> {
        tokio::time::timeout(STEP, self.child.wait())
            .await
            .context("the client did not exit after its last step")?
            .map_err(Into::into)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The client's next step, which must be `name`.
    async fn step(&mut self, name: &str) -> Result<Value> {
        let line = match tokio::time::timeout(STEP, self.steps.next_line()).await {
            Err(_) => bail!("the client printed no step within {STEP:?} (waiting for {name})"),
            Ok(line) => line?,
        };
        let Some(line) = line else {
            let status = self.child.wait().await?;
            bail!(
                "the client ended ({status}) before step {name}; stderr:\n{}",
                self.stderr()
            );
        };
        let step: Value = serde_json::from_str(&line)
            .with_context(|| format!("a step that is not JSON: {line}"))?;
        if step["step"] == "fail" {
            bail!(
                "the client failed: {} {}\nstderr:\n{}",
                step["message"],
                step["detail"],
                self.stderr()
            );
        }
        ensure!(step["step"] == name, "expected step {name}, got {line}");
        eprintln!("seed003 client: {line}");
        Ok(step)
    }
}

async fn scenario(world: &World) -> Result<()> {
    let api = ApiReplica::start(world, JWT_SECRET).await?;
    let user = user();
    let sessions = world.sessions();
    sessions
        .create(&PostParams::default(), &kubectl_session(&user)?)
        .await?;

    let mut crm = Crm::start(&api, &user, &[], "3600")?;
    let open = crm.step("ws_open").await?;
    assert_eq!(open["status"], "disconnected", "{open}");
    let before = crm.step("status_before").await?;
    assert_eq!(before["status"], "disconnected", "{before}");
    let connect = crm.step("connect").await?;
    assert_eq!(
        connect["sessionName"], SESSION,
        "/connect found the kubectl-made session"
    );

    // The doctor's phone scans the QR the CRM shows.
    let qr = crm.step("qr").await?;
    let code = qr["qr"].as_str().context("the raw QR code")?;
    let doctor = world.sim.create_phone(None, Some("Dr Meier")).await?;
    world.sim.scan_qr(&doctor.phone, code).await?;
    let ready = crm.step("ready").await?;
    assert!(
        ready["phone"]
            .as_str()
            .is_some_and(|p| p.contains(&doctor.phone)),
        "{ready}"
    );
    // /connect patched the resource in place: one session, the kubectl-made one, running.
    wait_status(&sessions, SESSION, "Connected", |s| {
        phase(s) == Some(Phase::Connected)
    })
    .await?;
    let all = sessions.list(&ListParams::default()).await?;
    let names: Vec<_> = all
        .items
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(names, [SESSION], "one session, never a second derived one");
    let auth_keys = || async {
        let mut redis = world.redis().await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(UserKeys::for_user(&user).auth_scan_pattern())
            .query_async(&mut redis)
            .await?;
        anyhow::Ok(keys)
    };
    ensure!(
        !auth_keys().await?.is_empty(),
        "no auth state after pairing"
    );

    // A patient writes; the CRM answers; the patient's phone decrypts the answer.
    let patient = world.sim.create_contact(None, Some("Ann")).await?;
    world
        .sim
        .contact_send(&patient.phone, &doctor.phone, "hello doctor")
        .await?;
    let message = crm.step("message").await?;
    assert_eq!(message["body"], "hello doctor", "{message}");
    assert_eq!(
        message["from"],
        format!("{}@c.us", patient.phone),
        "{message}"
    );
    let sent = crm.step("sent").await?;
    let reply = sent["body"].as_str().context("the reply's body")?;
    let received = world.sim.contact_received(&patient.phone, 1, STEP).await?;
    assert!(
        received.iter().any(|m| m.text == reply),
        "the patient did not get the reply: {received:?}"
    );
    let acked = crm.step("acked").await?;
    assert_eq!(acked["id"], sent["id"], "{acked}");

    let chats = crm.step("chats").await?;
    assert_eq!(
        chats["name"], "Ann",
        "the push name, not blanked by the reply: {chats}"
    );
    assert_eq!(
        chats["unreadCount"], 0,
        "read once the doctor answered: {chats}"
    );
    let messages = crm.step("messages").await?;
    assert_eq!(
        messages["bodies"],
        serde_json::json!(["hello doctor", reply]),
        "{messages}"
    );
    let status = crm.step("status").await?;
    assert_eq!(status["phoneNumber"], doctor.phone.as_str(), "{status}");
    crm.step("chat_by_phone").await?;
    let logs = crm.step("logs").await?;
    assert!(
        logs["eventTypes"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "paired")),
        "{logs}"
    );
    crm.step("contacts").await?;
    let out = crm.step("disconnect").await?;
    assert_eq!(out["loggedOut"], true, "{out}");
    crm.step("done").await?;
    let stderr = crm.stderr();
    let exit = crm.exit().await?;
    ensure!(exit.success(), "the client exited {exit}:\n{stderr}");

    // /disconnect reached the kubectl-made session: wanted disconnected, pod gone, pairing gone.
    let s = sessions.get(SESSION).await?;
    assert_eq!(s.spec.desired_state, DesiredState::Disconnected);
    eventually(WAIT, || async {
        world.node.finished(SESSION).then_some(())
    })
    .await
    .context("the session pod kept running after /disconnect")?;
    let left = auth_keys().await?;
    assert!(left.is_empty(), "auth keys left after the logout: {left:?}");

    // Seed 003's example token has no `exp`: refused by default, taken with
    // JWT_REQUIRE_EXP=false.
    let lax = ApiReplica::start_with(world, JWT_SECRET, &["--jwt-require-exp", "false"]).await?;
    let mut crm = Crm::start(&lax, &user, &["status"], "none")?;
    let status = crm.step("status").await?;
    assert_eq!(status["sessionName"], SESSION, "{status}");
    crm.step("done").await?;
    ensure!(
        crm.exit().await?.success(),
        "a token without exp was refused"
    );
    let mut strict = Crm::start(&api, &user, &["status"], "none")?;
    let refused = strict.step("status").await;
    let refusal = format!(
        "{:#}",
        refused
            .err()
            .context("the default took a token without exp")?
    );
    ensure!(refusal.contains("401"), "{refusal}");
    ensure!(!strict.exit().await?.success());
    Ok(())
}
