//! Test harness: one Redis per test binary (URL shared, connections per test runtime), a
//! simulator per test, and the session pod run as a supervised child process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use prost::Message as _;
use redis::aio::MultiplexedConnection;
use wasp_common::events::{Envelope, Kind};
use wasp_common::keys::UserKeys;
use wasp_e2e::procs::Supervised;
use wasp_e2e::redis_server::RedisServer;
use wasp_sim::client::SimClient;
use wasp_sim::{Running, Sim, SimKeys};

pub const WAIT: Duration = Duration::from_secs(30);
pub const MASTER_KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";
pub const TOKEN: &str = "test-control-token";

static REDIS: OnceLock<RedisServer> = OnceLock::new();

pub fn redis_url() -> String {
    REDIS
        .get_or_init(|| RedisServer::start().expect("redis-server"))
        .url()
}

pub async fn redis() -> MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

pub async fn start_sim() -> (Running, SimClient) {
    let sim = Sim::new(SimKeys::generate()).unwrap();
    let running = wasp_sim::start(
        sim,
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let client = SimClient::new(&running.control_url);
    (running, client)
}

pub fn unique_user(tag: &str) -> String {
    format!("{tag}-{:08x}@clinic.test", rand::random::<u32>())
}

/// The URL a session pod of `user` gets: its own Redis ACL user, as the operator makes it, so
/// every test of the pod also proves the ACL allows what the pod does (a missing command fails
/// the test with NOPERM).
pub fn session_redis_url(user: &str) -> String {
    let password = format!("test-{}", wasp_common::user_hash(user));
    let name = wasp_common::acl::session_user_name(user);
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&name)
        .arg(wasp_common::acl::session_user_rules(
            user,
            std::slice::from_ref(&password),
        ))
        .query(&mut conn)
        .unwrap();
    wasp_common::acl::with_credentials(&redis_url(), &name, &password).unwrap()
}

/// Options of one pod process.
#[derive(Clone, Debug)]
pub struct PodOpts {
    pub user: String,
    pub ws_url: String,
    pub storage_policy: &'static str,
    pub lease_ttl_ms: u64,
    pub pairing: Option<String>,
    /// `WASP_MASTER_KEY`; `None` when the test gives the keys otherwise (a keyring).
    pub master_key: Option<String>,
    pub extra_env: Vec<(String, String)>,
}

impl PodOpts {
    pub fn new(user: &str, ws_url: &str) -> Self {
        Self {
            user: user.to_owned(),
            ws_url: ws_url.to_owned(),
            storage_policy: "all",
            lease_ttl_ms: 3000,
            pairing: None,
            master_key: Some(MASTER_KEY.to_owned()),
            extra_env: Vec::new(),
        }
    }
}

/// A running pod process.
pub struct Pod {
    pub proc: Supervised,
    pub control: String,
    pub admin: String,
    pub log: PathBuf,
}

fn free_port() -> u16 {
    wasp_e2e::redis_server::free_port().unwrap()
}

/// The binary under test: `WASP_POD_BIN` if set, else cargo's for tests, else the one next to
/// the running executable (examples).
fn pod_binary() -> PathBuf {
    if let Ok(p) = std::env::var("WASP_POD_BIN") {
        return PathBuf::from(p);
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_wasp-session-pod") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("wasp-session-pod")
}

impl Pod {
    pub fn start(o: &PodOpts) -> Pod {
        let (cp, ap) = (free_port(), free_port());
        let dir = wasp_e2e::procs::scratch_dir("wasp-pod-test").unwrap();
        let log = dir.join("pod.log");
        let mut cmd = Command::new(pod_binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,wasp_session_pod=debug")
            .env("WASP_USER_ID", &o.user)
            .env("WASP_SESSION_NAME", "wa-test")
            .env("WASP_SESSION_NAMESPACE", "default")
            .env("WASP_CONTROL_ADDR", format!("127.0.0.1:{cp}"))
            .env("WASP_ADMIN_ADDR", format!("127.0.0.1:{ap}"))
            .env("REDIS_URL", session_redis_url(&o.user))
            .env("WASP_CONTROL_TOKEN", TOKEN)
            .env("WASP_STORAGE_POLICY", o.storage_policy)
            .env("WASP_WHATSAPP_URL", &o.ws_url)
            .env("WASP_LEASE_TTL_MS", o.lease_ttl_ms.to_string())
            .env("MAX_RECONNECT_ATTEMPTS", "5")
            .env("RECONNECT_INTERVAL", "200");
        if let Some(key) = &o.master_key {
            cmd.env("WASP_MASTER_KEY", key);
        }
        if let Some(phone) = &o.pairing {
            cmd.env("WASP_PAIRING_METHOD", "pairingCode")
                .env("WASP_PAIRING_PHONE", phone);
        }
        for (k, v) in &o.extra_env {
            cmd.env(k, v);
        }
        let proc = Supervised::spawn("wasp-session-pod", cmd, &log, Some(&dir)).unwrap();
        Pod {
            proc,
            control: format!("http://127.0.0.1:{cp}"),
            admin: format!("http://127.0.0.1:{ap}"),
            log,
        }
    }

    pub fn kill9(&self) {
        let st = Command::new("kill")
            .args(["-9", &self.proc.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    pub fn term(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.proc.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    pub fn log_tail(&self) -> String {
        self.proc.log_tail(40)
    }

    /// Waits until the control port answers (the process is up).
    pub async fn wait_up(&self) {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if http
                .get(format!("{}/healthz", self.admin))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline && self.proc.exited().is_none(),
                "pod did not come up:\n{}",
                self.log_tail()
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/readyz` answers 200 (Redis reachable, the user's lease held).
    pub async fn is_ready(&self) -> bool {
        reqwest::Client::new()
            .get(format!("{}/readyz", self.admin))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    }

    /// Waits until the pod is Ready.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.is_ready().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.control))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// Reads a user's event stream with blocking XREADs: waits on events, never on time.
pub struct Events {
    conn: MultiplexedConnection,
    key: String,
    pub last_id: String,
    /// Read but not yet looked at: a batch can hold the awaited event and the next one.
    pending: std::collections::VecDeque<Envelope>,
}

impl Events {
    /// From the beginning of the stream.
    pub async fn new(user: &str) -> Self {
        Self {
            conn: redis().await,
            key: UserKeys::for_user(user).events(),
            last_id: "0-0".into(),
            pending: Default::default(),
        }
    }

    /// From now on.
    pub async fn tail(user: &str) -> Self {
        let mut e = Self::new(user).await;
        e.last_id = "$".into();
        // Resolve "$" to the current last id so later reads continue from it.
        let last: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XREVRANGE")
            .arg(&e.key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut e.conn)
            .await
            .unwrap();
        e.last_id = last.first().map_or("0-0".into(), |(id, _)| id.clone());
        e
    }

    /// Next batch of events (blocks up to `block`).
    pub async fn read(&mut self, block: Duration) -> Vec<(String, Envelope)> {
        type Reply = Option<Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>>;
        let reply: Reply = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(&self.last_id)
            .query_async(&mut self.conn)
            .await
            .unwrap();
        let mut out = Vec::new();
        for (_, entries) in reply.unwrap_or_default() {
            for (id, fields) in entries {
                self.last_id = id.clone();
                let bytes = &fields[1];
                out.push((id, Envelope::decode(bytes.as_slice()).unwrap()));
            }
        }
        out
    }

    /// Waits for an event `pick` accepts.
    pub async fn wait_for<T>(&mut self, what: &str, pick: impl FnMut(&Kind) -> Option<T>) -> T {
        self.try_wait_for(pick)
            .await
            .unwrap_or_else(|| panic!("timed out waiting for {what}"))
    }

    /// Waits up to [`WAIT`] for an event `pick` accepts (`None`: none came).
    /// Events after a match stay pending for the next wait (two events written back to back,
    /// e.g. `logged_out` then the LoggedOut `status`, often come in one read).
    pub async fn try_wait_for<T>(&mut self, mut pick: impl FnMut(&Kind) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            while let Some(e) = self.pending.pop_front() {
                if let Some(k) = &e.kind
                    && let Some(v) = pick(k)
                {
                    return Some(v);
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let batch = self.read(left.min(Duration::from_secs(5))).await;
            self.pending.extend(batch.into_iter().map(|(_, e)| e));
        }
    }

    pub async fn next_qr(&mut self) -> String {
        self.wait_for("a qr event", |k| match k {
            Kind::Qr(q) => Some(q.code.clone()),
            _ => None,
        })
        .await
    }

    pub async fn ready(&mut self) -> wasp_common::events::Ready {
        self.wait_for("a ready event", |k| match k {
            Kind::Ready(r) => Some(r.clone()),
            _ => None,
        })
        .await
    }
}

/// The live pub/sub channel of a user (QR and pairing codes are published only there).
pub struct Live {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = redis::Msg> + Send>>,
}

impl Live {
    pub async fn subscribe(user: &str) -> Self {
        let mut ps = redis::Client::open(redis_url())
            .unwrap()
            .get_async_pubsub()
            .await
            .unwrap();
        ps.subscribe(UserKeys::for_user(user).events_channel())
            .await
            .unwrap();
        Self {
            stream: Box::pin(ps.into_on_message()),
        }
    }

    pub async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Kind) -> Option<T>) -> T {
        use futures::StreamExt as _;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .expect("pubsub ended");
            let bytes: Vec<u8> = msg.get_payload().unwrap();
            let e = Envelope::decode(bytes.as_slice()).unwrap();
            if let Some(k) = &e.kind
                && let Some(v) = pick(k)
            {
                return v;
            }
        }
    }

    pub async fn next_qr(&mut self) -> String {
        self.wait_for("a qr event", |k| match k {
            Kind::Qr(q) => Some(q.code.clone()),
            _ => None,
        })
        .await
    }
}

/// Starts a pod for a new user and pairs it by QR with a new phone.
pub async fn paired_pod(running: &Running, sim: &SimClient, opts: PodOpts) -> (Pod, String, u16) {
    let phone = sim.create_phone(None, Some("Dr Wasp")).await.unwrap();
    let mut events = Events::new(&opts.user).await;
    let mut live = Live::subscribe(&opts.user).await;
    let pod = Pod::start(&opts);
    let qr = live.next_qr().await;
    let addr = sim.scan_qr(&phone.phone, &qr).await.unwrap();
    events.ready().await;
    // The same client follows the post-pairing 515 and runs the initial app-state sync.
    running
        .sim
        .wait_for(WAIT, |w| {
            // …and, after its first login, uploads its one-time prekeys (the last of the
            // post-pairing writes to the auth state).
            let d = &w.accounts[&phone.phone].devices[&addr.device];
            (d.synced_collections.contains("regular") && !d.prekeys.is_empty()).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("app-state sync; pod log:\n{}", pod.proc.log_tail(60)));
    (pod, phone.phone, addr.device)
}
