//! Test harness: a simulator on loopback ports and unmodified `whatsapp-rust` clients pointed
//! at it (in-memory store, fixed version, certificate-chain check off by the library's feature).
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use wacore::net::{HttpClient, HttpRequest, HttpResponse};
use wacore::store::InMemoryBackend;
use wacore::types::events::Event;
use waproto::whatsapp as wa;
use wasp_sim::client::SimClient;
use wasp_sim::{Running, Sim, SimKeys};
use whatsapp_rust::TokioRuntime;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::client::Client;
use whatsapp_rust::proto_helpers::MessageExt as _;
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust_tokio_transport::TokioWebSocketTransportFactory;

mod http;
pub use http::MediaHttp;

pub const WAIT: Duration = Duration::from_secs(20);
/// A version that skips the client's fetch of web.whatsapp.com/sw.js.
pub const CLIENT_VERSION: (u32, u32, u32) = (2, 3000, 1_023_868_855);

pub async fn start_sim() -> (Running, SimClient) {
    init_logging();
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

/// What the tests observe of a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Qr(String),
    PairCode(String),
    PairSuccess {
        jid: String,
    },
    PairError(String),
    Connected,
    Disconnected,
    LoggedOut,
    StreamReplaced,
    Message {
        id: String,
        from: String,
        text: String,
        offline: bool,
    },
    /// A text in a group chat: `chat` is the group, `sender` its author.
    GroupMessage {
        id: String,
        chat: String,
        sender: String,
        push_name: String,
        text: String,
    },
    /// A history-sync chunk the client processed (`Event::HistorySync`), decoded.
    History(Box<HistorySeen>),
    /// A message without text (media, protocol messages…), whole.
    Content {
        id: String,
        from: String,
        message: Box<wa::Message>,
    },
    Other(String),
}

fn to_ev(e: &Event) -> Ev {
    match e {
        Event::PairingQrCode(q) => Ev::Qr(q.code.clone()),
        Event::PairingCode(p) => Ev::PairCode(p.code.clone()),
        Event::PairSuccess(p) => Ev::PairSuccess {
            jid: p.id.to_string(),
        },
        Event::PairError(p) => Ev::PairError(p.error.clone()),
        Event::Connected(_) => Ev::Connected,
        Event::Disconnected(_) => Ev::Disconnected,
        Event::LoggedOut(_) => Ev::LoggedOut,
        Event::StreamReplaced(_) => Ev::StreamReplaced,
        other => Ev::Other(format!("{:?}", std::mem::discriminant(other))),
    }
}

/// One history message as the client got it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryMsg {
    pub id: String,
    pub from_me: bool,
    pub text: String,
    pub timestamp: u64,
    pub push_name: Option<String>,
}

/// A history-sync chunk as the client's `Event::HistorySync` carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistorySeen {
    pub sync_type: i32,
    pub chunk_order: Option<u32>,
    pub progress: Option<u32>,
    /// `(conversation id, its messages)`.
    pub conversations: Vec<(String, Vec<HistoryMsg>)>,
    pub pushnames: Vec<(String, String)>,
    pub lid_mappings: usize,
}

impl HistorySeen {
    fn of(h: &wacore::types::events::LazyHistorySync) -> Self {
        let hs = h.get().expect("the history blob decodes");
        Self {
            sync_type: h.sync_type(),
            chunk_order: h.chunk_order(),
            progress: h.progress(),
            conversations: hs
                .conversations
                .iter()
                .map(|c| {
                    let msgs = c
                        .messages
                        .iter()
                        .filter_map(|m| m.message.as_option())
                        .map(|m| HistoryMsg {
                            id: m.key.id.clone().unwrap_or_default(),
                            from_me: m.key.from_me.unwrap_or(false),
                            text: m
                                .message
                                .as_option()
                                .and_then(|x| x.conversation.clone())
                                .unwrap_or_default(),
                            timestamp: m.message_timestamp.unwrap_or(0),
                            push_name: m.push_name.clone(),
                        })
                        .collect();
                    (c.id.clone(), msgs)
                })
                .collect(),
            pushnames: hs
                .pushnames
                .iter()
                .map(|p| {
                    (
                        p.id.clone().unwrap_or_default(),
                        p.pushname.clone().unwrap_or_default(),
                    )
                })
                .collect(),
            lid_mappings: hs.phone_number_to_lid_mappings.len(),
        }
    }
}

/// A dead HTTP client: nothing in these flows may reach the internet.
struct NoHttp;

#[async_trait::async_trait]
impl HttpClient for NoHttp {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        anyhow::bail!("no network in tests: {}", request.url)
    }
}

pub struct TestClient {
    pub handle: BotHandle,
    pub events: mpsc::UnboundedReceiver<Ev>,
    pub backend: Arc<dyn Backend>,
    /// History chunks a [`TestClient::wait_for`] passed over: the phone sends them as soon as
    /// the device is linked, and on a loaded machine the client can process them before its
    /// `Connected` event, while `paired_client_for` still waits. [`TestClient::next_event`]
    /// returns them first.
    skipped_history: std::collections::VecDeque<Ev>,
}

/// Starts a client on `backend` (pass the previous client's to simulate a process restart
/// with a persistent store).
pub async fn start_client(ws_url: &str, backend: Option<Arc<dyn Backend>>) -> TestClient {
    start_client_with(ws_url, backend, None).await
}

pub async fn start_client_with(
    ws_url: &str,
    backend: Option<Arc<dyn Backend>>,
    pair_phone: Option<&str>,
) -> TestClient {
    start_client_opts(
        ws_url,
        ClientOpts {
            backend,
            pair_phone: pair_phone.map(str::to_owned),
            ..Default::default()
        },
    )
    .await
}

/// How a test client is built.
#[derive(Default)]
pub struct ClientOpts {
    /// The previous client's store, to simulate a process restart.
    pub backend: Option<Arc<dyn Backend>>,
    /// Pair by code with this phone number instead of by QR.
    pub pair_phone: Option<String>,
    /// The client's HTTP client (media); none when `None`.
    pub http: Option<MediaHttp>,
    /// Process the history sync the phone sends after pairing (off by default, as the
    /// other tests have no use for it).
    pub history_sync: bool,
    /// Also receives every library event as it was dispatched (for tests that match on the
    /// library's own types).
    pub raw_events: Option<mpsc::UnboundedSender<Arc<Event>>>,
}

pub async fn start_client_opts(ws_url: &str, opts: ClientOpts) -> TestClient {
    let backend = opts
        .backend
        .unwrap_or_else(|| Arc::new(InMemoryBackend::new()));
    let (tx, events) = mpsc::unbounded_channel();
    let builder = Bot::builder()
        .with_backend_arc(backend.clone())
        .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(ws_url.to_owned()));
    let builder = match opts.http {
        Some(http) => builder.with_http_client(http),
        None => builder.with_http_client(NoHttp),
    };
    let mut builder = builder
        .with_runtime(TokioRuntime)
        .with_version(CLIENT_VERSION);
    if !opts.history_sync {
        builder = builder.skip_history_sync();
    }
    let raw = opts.raw_events;
    let mut builder = builder.on_event(move |event, _client: Arc<Client>| {
        let tx = tx.clone();
        if let Some(raw) = &raw {
            let _ = raw.send(event.clone());
        }
        async move {
            match &*event {
                Event::Messages(batch) => {
                    for m in batch.iter() {
                        if m.info.source.is_group
                            && let Some(text) = m.message.text_content()
                        {
                            let _ = tx.send(Ev::GroupMessage {
                                id: m.info.id.to_string(),
                                chat: m.info.source.chat.to_string(),
                                sender: m.info.source.sender.to_string(),
                                push_name: m.info.push_name.clone(),
                                text: text.to_owned(),
                            });
                        } else if let Some(text) = m.message.text_content() {
                            let _ = tx.send(Ev::Message {
                                id: m.info.id.to_string(),
                                from: m.info.source.sender.to_string(),
                                text: text.to_owned(),
                                offline: m.info.is_offline,
                            });
                        } else {
                            let _ = tx.send(Ev::Content {
                                id: m.info.id.to_string(),
                                from: m.info.source.sender.to_string(),
                                message: Box::new((*m.message).clone()),
                            });
                        }
                    }
                }
                Event::HistorySync(h) => {
                    let _ = tx.send(Ev::History(Box::new(HistorySeen::of(h))));
                }
                e => {
                    let _ = tx.send(to_ev(e));
                }
            }
        }
    });
    if let Some(phone) = opts.pair_phone {
        builder = builder.with_pair_code(whatsapp_rust::pair_code::PairCodeOptions {
            phone_number: phone,
            ..Default::default()
        });
    }
    let bot = builder.build().await.unwrap();
    TestClient {
        handle: bot.spawn(),
        events,
        backend,
        skipped_history: Default::default(),
    }
}

impl TestClient {
    /// The next event matching `pick`, skipping others; panics after [`WAIT`].
    pub async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Ev) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => {
                    if let Some(v) = pick(&ev) {
                        return v;
                    }
                    if matches!(ev, Ev::History(_)) {
                        self.skipped_history.push_back(ev);
                    }
                }
                Ok(None) => panic!("client event stream ended while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// The next event, history chunks an earlier `wait_for` passed over first.
    pub async fn next_event(&mut self) -> Option<Ev> {
        match self.skipped_history.pop_front() {
            Some(ev) => Some(ev),
            None => self.events.recv().await,
        }
    }

    /// [`TestClient::next_event`] without waiting.
    pub fn try_next_event(&mut self) -> Option<Ev> {
        self.skipped_history
            .pop_front()
            .or_else(|| self.events.try_recv().ok())
    }

    pub async fn wait(&mut self, want: Ev) {
        let label = format!("{want:?}");
        self.wait_for(&label, |e| (*e == want).then_some(())).await
    }

    pub async fn next_qr(&mut self) -> String {
        self.wait_for("a QR code", |e| match e {
            Ev::Qr(q) => Some(q.clone()),
            _ => None,
        })
        .await
    }

    pub async fn next_message(&mut self) -> (String, String, String) {
        self.wait_for("a message", |e| match e {
            Ev::Message { id, from, text, .. } => Some((id.clone(), from.clone(), text.clone())),
            _ => None,
        })
        .await
    }

    pub fn client(&self) -> Arc<Client> {
        self.handle.client()
    }

    pub async fn stop(self) -> Arc<dyn Backend> {
        let backend = self.backend.clone();
        self.handle.shutdown().await;
        backend
    }
}

/// Creates a phone, starts a fresh client, scans its QR and waits until it is connected.
pub async fn paired_client(running: &Running, sim: &SimClient) -> (String, u16, TestClient) {
    paired_client_opts(running, sim, ClientOpts::default()).await
}

/// [`paired_client`] with a client built from `opts`.
pub async fn paired_client_opts(
    running: &Running,
    sim: &SimClient,
    opts: ClientOpts,
) -> (String, u16, TestClient) {
    let phone = sim.create_phone(None, Some("Wasp Test")).await.unwrap();
    paired_client_for(running, sim, &phone.phone, opts).await
}

/// Starts a client from `opts`, lets `phone` scan its QR, and waits until it is connected.
pub async fn paired_client_for(
    running: &Running,
    sim: &SimClient,
    phone: &str,
    opts: ClientOpts,
) -> (String, u16, TestClient) {
    let mut client = start_client_opts(&running.ws_url, opts).await;
    let qr = client.next_qr().await;
    let addr = sim.scan_qr(phone, &qr).await.unwrap();
    client
        .wait_for("pair success", |e| {
            matches!(e, Ev::PairSuccess { .. }).then_some(())
        })
        .await;
    client.wait(Ev::Connected).await;
    settle(running, phone, addr.device).await;
    (phone.to_owned(), addr.device, client)
}

/// Waits until a freshly paired client fetched its regular app-state collections. The client
/// logs a warning when it is stopped while that first background sync is still in flight.
pub async fn settle(running: &Running, phone: &str, device: u16) {
    let synced = running
        .sim
        .wait_for(WAIT, |w| {
            w.accounts[phone].devices[&device]
                .synced_collections
                .contains("regular")
                .then_some(())
        })
        .await;
    assert!(
        synced.is_some(),
        "the client fetched its app-state collections"
    );
}

// ---- log capture: the client logs through `log`; tests assert it stayed quiet -----------

static WARNINGS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
/// Every client log line (debug and up), and a wake-up for those waiting on one.
static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
static LOGGED: OnceLock<tokio::sync::Notify> = OnceLock::new();

struct Capture {
    echo: bool,
}

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Debug
    }

    fn log(&self, r: &log::Record) {
        let line = format!("[{}] {}: {}", r.level(), r.target(), r.args());
        if std::env::var_os("SIM_TEST_DEBUG").is_some() {
            eprintln!("{line}");
        }
        if r.level() <= log::Level::Warn {
            WARNINGS
                .get_or_init(Default::default)
                .lock()
                .unwrap()
                .push(line.clone());
        }
        if self.echo && r.level() <= log::Level::Info {
            eprintln!("{line}");
        }
        LINES
            .get_or_init(Default::default)
            .lock()
            .unwrap()
            .push(line);
        LOGGED.get_or_init(Default::default).notify_waiters();
    }

    fn flush(&self) {}
}

pub fn init_logging() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let echo = std::env::var_os("SIM_TEST_LOG").is_some();
        let _ = log::set_boxed_logger(Box::new(Capture { echo }));
        log::set_max_level(log::LevelFilter::Debug);
        if echo {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("wasp_sim=debug"))
                .with_test_writer()
                .try_init();
        }
    });
}

/// Client warnings and errors logged so far.
pub fn client_warnings() -> Vec<String> {
    WARNINGS
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .clone()
}

/// Waits until the client logged a line containing `needle` (its own progress report, for
/// states with no event). Meaningful only in a test binary with one client at a time.
pub async fn wait_client_log(needle: &str) {
    let notify = LOGGED.get_or_init(Default::default);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if LINES
            .get_or_init(Default::default)
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
        {
            return;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            panic!("the client never logged {needle:?}");
        }
    }
}

/// Client log lines (debug and up) containing any of `needles`, for a failure's message.
pub fn client_lines_with(needles: &[&str]) -> Vec<String> {
    LINES
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .iter()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .cloned()
        .collect()
}
