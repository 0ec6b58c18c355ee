//! The replica's event fan-out: one Redis reader for all the users that have a client on this
//! replica, broadcasting to that replica's WebSocket and SSE clients.
//!
//! Where events come from:
//! - **Durable events** (messages, status, ready, ...) are read from each user's Redis stream.
//!   The stream is the source of truth and every entry carries its id, so resuming (`?since=`,
//!   `Last-Event-ID`) and catching up after a slow client fell behind are one `XRANGE` each,
//!   with no second copy to deduplicate against.
//! - **Ephemeral events** (QR and pairing codes, which the session pod never writes to the
//!   stream because they carry key material) come from the users' pub/sub channels, subscribed
//!   while the user has a client here.
//!
//! Which streams are read, and when: the pod writes a durable event as `XADD` then `PUBLISH`
//! of the same envelope on the user's channel (one pipeline, or one Lua script), so by the time
//! the envelope arrives here its entry is readable. The envelope itself is not delivered; it
//! marks the user's feed **dirty** and wakes the reader, which reads only the dirty feeds, each
//! with `XRANGE <stream> (<last> + COUNT 256`, pipelined in one round trip per 128 feeds. An
//! event thus costs a read of the one stream that changed, whatever the number of watched
//! users (a blocking `XREAD` over every watched stream cost milliseconds per wake at 1,000
//! users and grew with them: docs/benchmarks.md, "The hub's fan-out").
//!
//! Pub/sub is at-most-once, so the channel only speeds delivery up; these read regardless:
//! every (re)subscribe of the live connection marks all feeds dirty (what was published while
//! it was away), a new feed is marked dirty once its channel subscription is confirmed (what
//! was written between its start point and the subscription), a full page leaves a feed dirty,
//! and a sweep marks all feeds dirty every [`SWEEP`] (a lost publish is late by at most that).
//! Swept feeds fill what room the feeds a publish marked leave in a batch, so they do not delay
//! live events.
//!
//! A user's feed exists while at least one client of that user is connected to this replica.
//! Each replica reads Redis for its own clients only, so any number of replicas can serve the
//! same user.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use redis::AsyncCommands;
use redis::Value;
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wasp_common::events::{Envelope, STREAM_FIELD};
use wasp_common::keys::UserKeys;

use super::event::{ClientEvent, Cursor, StreamId, from_envelope, is_ephemeral};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::redis_conn::Redis;

/// Entries per `XRANGE` call.
const PAGE: usize = 256;
/// Feeds read per pipelined round trip.
const BATCH: usize = 128;
/// How often every feed is read although no publish said it changed: the bound on how late an
/// event whose publish was lost arrives.
/// Publishes are lost only with the live connection (whose reconnect reads every feed), so
/// this is a second net; at 1,000 feeds it costs 200 empty `XRANGE`s a second.
pub const SWEEP: Duration = Duration::from_secs(5);
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
    /// Feeds whose stream may have entries after their `last`.
    dirty: Mutex<Dirty>,
    /// A feed was marked dirty: the reader reads it.
    wake: Notify,
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

/// The feeds to read (by user hash): those a publish (or a full page, a new subscription)
/// marked, read first, and those a sweep or a reconnect marked, read after them.
#[derive(Debug, Default)]
struct Dirty {
    now: HashSet<String>,
    swept: HashSet<String>,
}

impl Dirty {
    fn mark(&mut self, hash: String) {
        self.swept.remove(&hash);
        self.now.insert(hash);
    }

    fn mark_all<'a>(&mut self, hashes: impl IntoIterator<Item = &'a String>) {
        for h in hashes {
            if !self.now.contains(h) {
                self.swept.insert(h.clone());
            }
        }
    }

    /// Up to `max` feeds to read next, marked ones first and swept ones to fill the batch (so a
    /// steady flow of publishes does not hold the sweep back); each is unmarked.
    fn take(&mut self, max: usize) -> Vec<String> {
        let mut batch: Vec<String> = self.now.iter().take(max).cloned().collect();
        for h in &batch {
            self.now.remove(h);
        }
        let rest: Vec<String> = self.swept.iter().take(max - batch.len()).cloned().collect();
        for h in &rest {
            self.swept.remove(h);
        }
        batch.extend(rest);
        batch
    }
}

impl Inner {
    fn feeds(&self) -> MutexGuard<'_, HashMap<String, Feed>> {
        self.feeds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dirty(&self) -> MutexGuard<'_, Dirty> {
        self.dirty.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The user's stream may have new entries: the reader reads it next.
    fn mark_dirty(&self, hash: &str) {
        self.dirty().mark(hash.to_owned());
        self.wake.notify_one();
    }

    /// Every feed's stream may have new entries (a sweep, a resubscription).
    fn mark_all_dirty(&self) {
        let hashes: Vec<String> = self.feeds().keys().cloned().collect();
        self.dirty().mark_all(&hashes);
        self.wake.notify_one();
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
            dirty: Mutex::new(Dirty::default()),
            wake: Notify::new(),
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
            // Events written after `last` but before the subscription was confirmed were
            // published to no one here: read them now (a failed subscription is covered by the
            // listener's reconnect and the sweep).
            self.inner.mark_dirty(hash);
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

/// The reader: reads the streams of the dirty feeds, broadcasting what it reads.
async fn read_streams(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut attempt = 0;
    while !shutdown.is_cancelled() {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = read_loop(&inner, &mut attempt) => r,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "event reader: Redis read failed; retrying");
            backoff(&mut attempt, &shutdown).await;
        }
    }
}

async fn read_loop(inner: &Inner, attempt: &mut u32) -> Result<(), ApiError> {
    let mut conn = inner.redis.conn().await?;
    let mut swept = tokio::time::Instant::now();
    loop {
        let notified = inner.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if swept.elapsed() >= SWEEP {
            swept = tokio::time::Instant::now();
            inner.mark_all_dirty();
        }
        let batch = inner.dirty().take(BATCH);
        if batch.is_empty() {
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(swept + SWEEP) => {}
            }
            continue;
        }
        if let Err(e) = read_batch(inner, &mut conn, &batch).await {
            // Read them again once Redis answers.
            let mut dirty = inner.dirty();
            for hash in batch {
                dirty.mark(hash);
            }
            return Err(e);
        }
        *attempt = 0;
    }
}

/// The `XRANGE` start that reads the entries after `last` (exclusive).
fn after(last: StreamId) -> String {
    format!("({last}")
}

/// Reads the feeds of `batch` (hashes whose feed is gone are skipped), one pipelined `XRANGE`
/// each from its `last`, and delivers the entries after its `last`. A full page leaves the feed
/// dirty: more may follow.
async fn read_batch(
    inner: &Inner,
    conn: &mut ConnectionManager,
    batch: &[String],
) -> Result<(), ApiError> {
    let watched: Vec<(&str, String, StreamId)> = {
        let feeds = inner.feeds();
        batch
            .iter()
            .filter_map(|h| feeds.get(h).map(|f| (h.as_str(), f.keys.events(), f.last)))
            .collect()
    };
    if watched.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (_, key, last) in &watched {
        pipe.cmd("XRANGE")
            .arg(key)
            .arg(after(*last))
            .arg("+")
            .arg("COUNT")
            .arg(PAGE);
    }
    let pages: Vec<StreamRangeReply> = tokio::time::timeout(inner.timeout, pipe.query_async(conn))
        .await
        .map_err(|_| ApiError::unavailable("redis", "XRANGE timed out"))?
        .map_err(|e| ApiError::unavailable("redis", e))?;
    let mut more = Vec::new();
    {
        let mut feeds = inner.feeds();
        for ((hash, _, _), page) in watched.iter().zip(&pages) {
            let Some(feed) = feeds.get_mut(*hash) else {
                continue;
            };
            for entry in &page.ids {
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
            if page.ids.len() >= PAGE {
                more.push(*hash);
            }
        }
    }
    if !more.is_empty() {
        let mut dirty = inner.dirty();
        for hash in more {
            dirty.mark(hash.to_owned());
        }
    }
    Ok(())
}

/// The live-channel listener: ephemeral events (QR, pairing codes) of the users with a feed,
/// and the wake-ups of their durable events.
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
        if healthy {
            // What was published while this connection was away reached no one here.
            inner.mark_all_dirty();
        }
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
    let ephemeral = env.kind.as_ref().is_some_and(is_ephemeral);
    let feeds = inner.feeds();
    let Some(feed) = feeds.get(&env.user_hash) else {
        return;
    };
    if feed.keys.events_channel() != msg.get_channel_name() {
        return; // an envelope naming another user than its channel
    }
    if !ephemeral {
        // Durable: its entry is in the stream (written before the publish); the reader
        // delivers it from there, with its id.
        drop(feeds);
        inner.mark_dirty(&env.user_hash);
        return;
    }
    for ev in from_envelope(&env, None) {
        inner.metrics.stream_event(&ev.kind);
        let _ = feed.tx.send(Arc::new(ev));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn marked_feeds_are_read_before_swept_ones_and_each_once() {
        let mut d = Dirty::default();
        d.mark_all(&hashes(&["a", "b", "c", "d"]));
        d.mark("c".into());
        d.mark("e".into());
        // Marked first; a marked feed leaves the sweep.
        assert_eq!(sorted(d.take(2)), hashes(&["c", "e"]));
        // A sweep does not re-queue a feed that is already marked; room left in a batch goes
        // to the sweep.
        d.mark("a".into());
        d.mark_all(&hashes(&["a", "b"]));
        let batch = d.take(2);
        assert_eq!(batch[0], "a");
        assert_eq!(batch.len(), 2);
        let mut all = batch;
        all.extend(d.take(10));
        assert_eq!(sorted(all), hashes(&["a", "b", "d"]));
        assert!(d.take(10).is_empty());
    }

    #[test]
    fn takes_at_most_a_batch() {
        let mut d = Dirty::default();
        for i in 0..5 {
            d.mark(format!("m{i}"));
        }
        d.mark_all(&hashes(&["s0", "s1", "s2"]));
        let first = d.take(3);
        assert_eq!(first.len(), 3);
        assert!(first.iter().all(|h| h.starts_with('m')));
        let second = d.take(3);
        assert_eq!(second.len(), 3);
        assert!(
            second[..2].iter().all(|h| h.starts_with('m')),
            "the marked ones first"
        );
        assert!(second[2].starts_with('s'), "then the sweep fills the batch");
        assert_eq!(d.take(3).len(), 2);
        assert!(d.take(3).is_empty());
    }

    #[test]
    fn reads_start_after_the_last_entry() {
        assert_eq!(after(StreamId { ms: 17, seq: 3 }), "(17-3");
        assert_eq!(after(StreamId::ZERO), "(0-0");
    }
}
