//! The replica's event fan-out: one Redis reader for all the users that have a client on this
//! replica, broadcasting to that replica's WebSocket and SSE clients.
//!
//! Where events come from:
//! - **Durable events** (messages, status, ready, ...) are read from each user's Redis stream by
//!   one blocking `XREAD` over all the watched streams. The stream is the source of truth and
//!   every entry carries its id, so resuming (`?since=`, `Last-Event-ID`) and catching up after a
//!   slow client fell behind are one `XRANGE` each, with no second copy to deduplicate against.
//!   `XREAD BLOCK` wakes on the `XADD` itself: no added latency.
//! - **Ephemeral events** (QR and pairing codes, which the session pod never writes to the
//!   stream because they carry key material) come from the users' pub/sub channels, subscribed
//!   while the user has a client here. The durable copies on the channel are ignored.
//!
//! A user's feed exists while at least one client of that user is connected to this replica.
//! Each replica reads Redis for its own clients only, so any number of replicas can serve the
//! same user.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Value};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wasp_common::events::{Envelope, STREAM_FIELD};
use wasp_common::keys::UserKeys;

use super::event::{ClientEvent, Cursor, StreamId, from_envelope, is_ephemeral};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::redis_conn::Redis;

/// How long one `XREAD` blocks. A new feed interrupts it (`CLIENT UNBLOCK`); this bounds the
/// wait only when that interruption raced the read being sent.
const READ_BLOCK: Duration = Duration::from_millis(1000);
/// Entries per `XREAD`/`XRANGE` call.
const PAGE: usize = 256;
/// Events a client may fall behind the live feed before it catches up from the stream.
const CLIENT_BUFFER: usize = 512;

/// Fan-out of one replica. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Arc<Redis>,
    feeds: Mutex<HashMap<String, Feed>>,
    /// A feed was added: the reader takes its key into the next `XREAD`.
    changed: Notify,
    /// `CLIENT ID` of the reader's blocking connection (0 while it has none).
    reader_id: AtomicI64,
    live: mpsc::UnboundedSender<LiveCmd>,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

struct Feed {
    keys: UserKeys,
    tx: broadcast::Sender<Arc<ClientEvent>>,
    /// The last stream entry read for this feed: the reader continues after it.
    last: StreamId,
    clients: usize,
}

enum LiveCmd {
    Subscribe(String, oneshot::Sender<bool>),
    Unsubscribe(String),
}

impl Inner {
    fn feeds(&self) -> MutexGuard<'_, HashMap<String, Feed>> {
        self.feeds.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Hub {
    /// Starts the reader and the live-channel listener; both stop with `shutdown`.
    pub fn start(
        redis: Arc<Redis>,
        metrics: Arc<Metrics>,
        timeout: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let (live, live_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            redis,
            feeds: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            reader_id: AtomicI64::new(0),
            live,
            metrics,
            timeout,
        });
        tokio::spawn(read_streams(inner.clone(), shutdown.clone()));
        tokio::spawn(listen_live(inner.clone(), live_rx, shutdown));
        Self { inner }
    }

    /// Subscribes a client of `user_id` to the user's events: everything after `since` (a
    /// replay, then live), or only what happens from now on.
    pub async fn subscribe(
        &self,
        user_id: &str,
        since: Option<StreamId>,
    ) -> Result<Subscription, ApiError> {
        let keys = UserKeys::for_user(user_id);
        let hash = wasp_common::user_hash(user_id);
        let wanted = UserKeys::for_user(user_id);
        let existing = {
            let mut feeds = self.inner.feeds();
            feeds.get_mut(&hash).map(|f| {
                f.clients += 1;
                f.tx.subscribe()
            })
        };
        let rx = match existing {
            Some(rx) => rx,
            None => self.open_feed(&hash, keys).await?,
        };
        self.ask_for_codes(&wanted).await;
        let sub = Subscription {
            inner: self.inner.clone(),
            hash,
            rx,
            cursor: Cursor::after(since),
            pending: VecDeque::new(),
            catching_up: since.is_some(),
        };
        Ok(sub)
    }

    /// Creates the user's feed (or joins one a concurrent client just created), starting after
    /// the stream's current last entry, and subscribes the user's live channel.
    async fn open_feed(
        &self,
        hash: &str,
        keys: UserKeys,
    ) -> Result<broadcast::Receiver<Arc<ClientEvent>>, ApiError> {
        let mut conn = self.inner.redis.conn().await?;
        let top: StreamRangeReply = tokio::time::timeout(
            self.inner.timeout,
            conn.xrevrange_count(keys.events(), "+", "-", 1),
        )
        .await
        .map_err(|_| ApiError::unavailable("redis", "XREVRANGE timed out"))?
        .map_err(|e| ApiError::unavailable("redis", e))?;
        let last = top
            .ids
            .first()
            .and_then(|e| e.id.parse().ok())
            .unwrap_or(StreamId::ZERO);
        let channel = keys.events_channel();
        let (rx, created) = {
            let mut feeds = self.inner.feeds();
            match feeds.get_mut(hash) {
                Some(f) => {
                    f.clients += 1;
                    (f.tx.subscribe(), false)
                }
                None => {
                    let (tx, rx) = broadcast::channel(CLIENT_BUFFER);
                    feeds.insert(
                        hash.to_owned(),
                        Feed {
                            keys,
                            tx,
                            last,
                            clients: 1,
                        },
                    );
                    (rx, true)
                }
            }
        };
        if created {
            self.inner.metrics.stream_feeds(1);
            self.inner.changed.notify_one();
            self.unblock_reader().await;
            // Wait for the subscription so a QR published from now on is not missed; a failure
            // (Redis away) is retried by the listener when it reconnects.
            let (ack, acked) = oneshot::channel();
            if self
                .inner
                .live
                .send(LiveCmd::Subscribe(channel, ack))
                .is_ok()
            {
                let _ = tokio::time::timeout(self.inner.timeout, acked).await;
            }
        }
        Ok(rx)
    }

    /// Asks the user's session pod to publish the QR or pairing code it is showing again, now
    /// that this client listens: codes are never in the stream, so a client that came after the
    /// code was published would otherwise wait for the next rotation. Best effort.
    async fn ask_for_codes(&self, keys: &UserKeys) {
        if let Ok(mut conn) = self.inner.redis.conn().await {
            let mut ask = redis::cmd("PUBLISH");
            ask.arg(keys.codes_wanted_channel()).arg("1");
            let _ =
                tokio::time::timeout(self.inner.timeout, ask.query_async::<i64>(&mut conn)).await;
        }
    }

    /// Interrupts the reader's `XREAD` so it reads the new feed's stream too.
    async fn unblock_reader(&self) {
        let id = self.inner.reader_id.load(Ordering::Acquire);
        if id == 0 {
            return;
        }
        if let Ok(mut conn) = self.inner.redis.conn().await {
            let mut unblock = redis::cmd("CLIENT");
            unblock.arg("UNBLOCK").arg(id);
            let _ = tokio::time::timeout(self.inner.timeout, unblock.query_async::<i64>(&mut conn))
                .await;
        }
    }

    /// Users with a feed on this replica (for tests and metrics).
    pub fn feeds(&self) -> usize {
        self.inner.feeds().len()
    }
}

/// One client's view of a user's events: a replay from the stream when resuming or catching
/// up, then the live feed, each durable event once and in order.
pub struct Subscription {
    inner: Arc<Inner>,
    hash: String,
    rx: broadcast::Receiver<Arc<ClientEvent>>,
    cursor: Cursor,
    pending: VecDeque<Arc<ClientEvent>>,
    /// Read the stream after the cursor before taking live events.
    catching_up: bool,
}

impl Subscription {
    /// The next event, or `None` when the subscription cannot go on (Redis lost while catching
    /// up, the hub stopped): the client then reconnects with its last id.
    pub async fn next(&mut self) -> Option<Arc<ClientEvent>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                if self.cursor.admit(&ev) {
                    return Some(ev);
                }
                continue;
            }
            if self.catching_up {
                match self.read_page().await {
                    Ok(full) => self.catching_up = full,
                    Err(e) => {
                        tracing::warn!(error = %e, "event replay failed; closing the client");
                        return None;
                    }
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(ev) => {
                    if self.cursor.admit(&ev) {
                        return Some(ev);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "client fell behind; catching up from the stream");
                    self.inner.metrics.stream_lagged();
                    self.catching_up = true;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The id of the last durable event handed out.
    pub fn last_id(&self) -> Option<StreamId> {
        self.cursor.last()
    }

    /// Reads the next page of the stream after the cursor into `pending`; whether it was full
    /// (more may follow).
    async fn read_page(&mut self) -> Result<bool, ApiError> {
        let keys = UserKeys::for_hash(&self.hash);
        let start = match self.cursor.last() {
            Some(id) => format!("({id}"),
            None => "-".to_owned(),
        };
        let mut conn = self.inner.redis.conn().await?;
        let page: StreamRangeReply = tokio::time::timeout(
            self.inner.timeout,
            conn.xrange_count(keys.events(), start, "+", PAGE),
        )
        .await
        .map_err(|_| ApiError::unavailable("redis", "XRANGE timed out"))?
        .map_err(|e| ApiError::unavailable("redis", e))?;
        let full = page.ids.len() >= PAGE;
        self.pending
            .extend(page.ids.iter().flat_map(decode_entry).map(Arc::new));
        Ok(full)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut feeds = self.inner.feeds();
        let Some(feed) = feeds.get_mut(&self.hash) else {
            return;
        };
        feed.clients = feed.clients.saturating_sub(1);
        if feed.clients == 0 {
            let channel = feed.keys.events_channel();
            feeds.remove(&self.hash);
            self.inner.metrics.stream_feeds(-1);
            let _ = self.inner.live.send(LiveCmd::Unsubscribe(channel));
        }
    }
}

/// A stream entry as client events (none for an entry that is not an envelope).
fn decode_entry(entry: &redis::streams::StreamId) -> Vec<ClientEvent> {
    let Ok(id) = entry.id.parse::<StreamId>() else {
        return Vec::new();
    };
    let Some(Value::BulkString(bytes)) = entry.map.get(STREAM_FIELD) else {
        return Vec::new();
    };
    match Envelope::decode(bytes.as_slice()) {
        Ok(env) => from_envelope(&env, Some(id)),
        Err(_) => Vec::new(),
    }
}

async fn backoff(attempt: &mut u32, shutdown: &CancellationToken) {
    let ms = 100u64.saturating_mul(1 << (*attempt).min(6)).min(5_000);
    *attempt += 1;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
    }
}

/// The reader: `XREAD BLOCK` over the streams of every feed, broadcasting what it reads.
async fn read_streams(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut attempt = 0;
    while !shutdown.is_cancelled() {
        let conn = match reader_connection(&inner).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "event reader: Redis unavailable");
                backoff(&mut attempt, &shutdown).await;
                continue;
            }
        };
        attempt = 0;
        let result = tokio::select! {
            _ = shutdown.cancelled() => Ok(()),
            r = read_loop(&inner, conn) => r,
        };
        inner.reader_id.store(0, Ordering::Release);
        if let Err(e) = result {
            tracing::warn!(error = %e, "event reader: Redis read failed; reconnecting");
            backoff(&mut attempt, &shutdown).await;
        }
    }
}

async fn reader_connection(inner: &Inner) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(inner.timeout)
        .set_response_timeout(READ_BLOCK + inner.timeout);
    let mut conn = inner
        .redis
        .client()
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut conn)
        .await?;
    inner.reader_id.store(id, Ordering::Release);
    Ok(conn)
}

async fn read_loop(inner: &Inner, mut conn: MultiplexedConnection) -> redis::RedisResult<()> {
    loop {
        let notified = inner.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let watched: Vec<(String, String, StreamId)> = inner
            .feeds()
            .iter()
            .map(|(hash, f)| (hash.clone(), f.keys.events(), f.last))
            .collect();
        if watched.is_empty() {
            notified.await;
            continue;
        }
        let keys: Vec<&str> = watched.iter().map(|(_, k, _)| k.as_str()).collect();
        let ids: Vec<String> = watched.iter().map(|(_, _, id)| id.to_string()).collect();
        let options = StreamReadOptions::default()
            .block(READ_BLOCK.as_millis() as usize)
            .count(PAGE);
        let reply: Option<StreamReadReply> = conn.xread_options(&keys, &ids, &options).await?;
        let Some(reply) = reply else { continue };
        let by_key: HashMap<&str, &str> = watched
            .iter()
            .map(|(hash, key, _)| (key.as_str(), hash.as_str()))
            .collect();
        let mut feeds = inner.feeds();
        for stream in reply.keys {
            let Some(feed) = by_key
                .get(stream.key.as_str())
                .and_then(|h| feeds.get_mut(*h))
            else {
                continue;
            };
            for entry in &stream.ids {
                let Ok(id) = entry.id.parse::<StreamId>() else {
                    continue;
                };
                // A feed re-created while this read was in flight starts later.
                if id <= feed.last {
                    continue;
                }
                feed.last = id;
                for ev in decode_entry(entry) {
                    inner.metrics.stream_event(&ev.kind);
                    let _ = feed.tx.send(Arc::new(ev));
                }
            }
        }
    }
}

/// The live-channel listener: ephemeral events (QR, pairing codes) of the users with a feed.
async fn listen_live(
    inner: Arc<Inner>,
    mut cmds: mpsc::UnboundedReceiver<LiveCmd>,
    shutdown: CancellationToken,
) {
    let mut attempt = 0;
    while !shutdown.is_cancelled() {
        let pubsub = match tokio::time::timeout(
            inner.timeout,
            inner.redis.client().get_async_pubsub(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "live listener: Redis unavailable");
                refuse_pending(&mut cmds);
                backoff(&mut attempt, &shutdown).await;
                continue;
            }
            Err(_) => {
                tracing::warn!("live listener: Redis connect timed out");
                refuse_pending(&mut cmds);
                backoff(&mut attempt, &shutdown).await;
                continue;
            }
        };
        attempt = 0;
        let (mut sink, mut messages) = pubsub.split();
        // Feeds that exist now; later ones arrive as commands, in order.
        let channels: Vec<String> = inner
            .feeds()
            .values()
            .map(|f| f.keys.events_channel())
            .collect();
        let mut healthy = channels.is_empty() || sink.subscribe(&channels).await.is_ok();
        while healthy {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(LiveCmd::Subscribe(channel, ack)) => {
                        healthy = sink.subscribe(&channel).await.is_ok();
                        let _ = ack.send(healthy);
                    }
                    Some(LiveCmd::Unsubscribe(channel)) => {
                        healthy = sink.unsubscribe(&channel).await.is_ok();
                    }
                },
                msg = messages.next() => match msg {
                    None => healthy = false,
                    Some(msg) => deliver_live(&inner, &msg),
                },
            }
        }
        tracing::warn!("live listener: connection lost; reconnecting");
        backoff(&mut attempt, &shutdown).await;
    }
}

/// While Redis is away: answer waiting subscribers at once (the reconnect subscribes them all).
fn refuse_pending(cmds: &mut mpsc::UnboundedReceiver<LiveCmd>) {
    while let Ok(cmd) = cmds.try_recv() {
        if let LiveCmd::Subscribe(_, ack) = cmd {
            let _ = ack.send(false);
        }
    }
}

fn deliver_live(inner: &Inner, msg: &redis::Msg) {
    let Ok(env) = Envelope::decode(msg.get_payload_bytes()) else {
        return;
    };
    if !env.kind.as_ref().is_some_and(is_ephemeral) {
        return; // durable: delivered from the stream, with its id
    }
    let feeds = inner.feeds();
    let Some(feed) = feeds.get(&env.user_hash) else {
        return;
    };
    if feed.keys.events_channel() != msg.get_channel_name() {
        return; // an envelope naming another user than its channel
    }
    for ev in from_envelope(&env, None) {
        inner.metrics.stream_event(&ev.kind);
        let _ = feed.tx.send(Arc::new(ev));
    }
}
