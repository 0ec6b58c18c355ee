//! The hub (`wasp_api::stream::hub`) on its own private real Redis: durable events written
//! exactly as a session pod writes them (`XADD` + `PUBLISH`, one pipeline) or, to stand for a
//! lost publish, `XADD` only. Many watched users, one of them written to: only that user gets
//! it, promptly; a burst longer than one read page arrives in order, each event once.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wasp_api::metrics::Metrics;
use wasp_api::redis_conn::Redis;
use wasp_api::stream::hub::{Hub, SWEEP};
use wasp_common::events::{self as ev, Envelope, Kind, STREAM_FIELD, emit_pipeline};
use wasp_common::keys::UserKeys;
use wasp_e2e::redis_server::RedisServer;

fn envelope(user: &str, n: usize) -> Vec<u8> {
    Envelope {
        user_hash: wasp_common::user_hash(user),
        at_ms: jiff::Timestamp::now().as_millisecond(),
        kind: Some(Kind::Log(ev::Log {
            level: "info".into(),
            event_type: "test".into(),
            message: format!("event {n}"),
        })),
    }
    .encode_to_vec()
}

struct World {
    _server: RedisServer,
    conn: redis::aio::MultiplexedConnection,
    hub: Hub,
    stop: CancellationToken,
}

impl World {
    async fn start() -> Result<Self> {
        let server = RedisServer::start()?;
        let timeout = Duration::from_secs(5);
        let redis = Arc::new(Redis::new(&server.url(), timeout)?);
        let stop = CancellationToken::new();
        let hub = Hub::start(redis, Arc::new(Metrics::new()), timeout, stop.clone());
        let conn = redis::Client::open(server.url())?
            .get_multiplexed_async_connection()
            .await?;
        Ok(Self {
            _server: server,
            conn,
            hub,
            stop,
        })
    }

    /// Subscribes `user`; what comes out goes to `out` as (index, event id).
    async fn watch(&self, user: &str, i: usize, out: &mpsc::UnboundedSender<(usize, String)>) {
        let mut sub = self.hub.subscribe(user, None).await.unwrap();
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(e) = sub.next().await {
                let _ = out.send((i, e.id.clone().unwrap_or_default()));
            }
        });
    }

    /// A durable event as the pod writes it: its stream id.
    async fn emit(&mut self, user: &str, n: usize) -> Result<String> {
        let (id,): (String,) = emit_pipeline(&UserKeys::for_user(user), 10_000, &envelope(user, n))
            .query_async(&mut self.conn)
            .await?;
        Ok(id)
    }

    /// The stream entry alone, its publish lost.
    async fn xadd_only(&mut self, user: &str, n: usize) -> Result<String> {
        let id: String = redis::cmd("XADD")
            .arg(UserKeys::for_user(user).events())
            .arg("*")
            .arg(STREAM_FIELD)
            .arg(envelope(user, n))
            .query_async(&mut self.conn)
            .await?;
        Ok(id)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn next(
    rx: &mut mpsc::UnboundedReceiver<(usize, String)>,
    within: Duration,
) -> Result<(usize, String)> {
    tokio::time::timeout(within, rx.recv())
        .await
        .context("no event in time")?
        .context("the subscriptions ended")
}

#[tokio::test]
async fn an_event_whose_publish_was_lost_is_delivered_by_the_sweep() -> Result<()> {
    let mut w = World::start().await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    w.watch("lost@clinic", 0, &tx).await;
    w.watch("other@clinic", 1, &tx).await;
    let id = w.xadd_only("lost@clinic", 1).await?;
    let started = Instant::now();
    let got = next(&mut rx, SWEEP * 3).await?;
    assert_eq!(got, (0, id), "the stream entry, to its user");
    assert!(started.elapsed() <= SWEEP * 2, "{:?}", started.elapsed());
    // Then the live path still works, and nothing came twice.
    let id = w.emit("lost@clinic", 2).await?;
    assert_eq!(next(&mut rx, Duration::from_secs(5)).await?, (0, id));
    tokio::time::sleep(SWEEP + Duration::from_millis(500)).await;
    assert!(rx.try_recv().is_err(), "a duplicate");
    Ok(())
}

#[tokio::test]
async fn with_300_users_watched_an_event_reaches_only_its_user_promptly_and_bursts_keep_order()
-> Result<()> {
    const USERS: usize = 300;
    const BURST: usize = 600;
    let mut w = World::start().await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let user = |i: usize| format!("many-{i:03}@clinic");
    for i in 0..USERS {
        w.watch(&user(i), i, &tx).await;
    }
    assert_eq!(w.hub.feeds(), USERS);
    // One event at a time for a spread of users: each well within a sweep, to its user only.
    for k in 0..20 {
        let target = (k * 37 + 11) % USERS;
        let id = w.emit(&user(target), k).await?;
        let started = Instant::now();
        let got = next(&mut rx, Duration::from_secs(5)).await?;
        assert_eq!(got, (target, id), "event {k}");
        let took = started.elapsed();
        assert!(
            took < SWEEP / 2,
            "event {k} took {took:?}: not woken by its publish"
        );
    }
    // A burst for one user longer than a read page: in order, each once, to that user only.
    let target = 123;
    let mut ids = Vec::with_capacity(BURST);
    for k in 0..BURST {
        ids.push(w.emit(&user(target), 1000 + k).await?);
    }
    for (k, id) in ids.iter().enumerate() {
        let got = next(&mut rx, Duration::from_secs(10)).await?;
        ensure!(
            got == (target, id.clone()),
            "burst event {k}: {got:?}, not {id}"
        );
    }
    tokio::time::sleep(SWEEP + Duration::from_millis(500)).await;
    assert!(rx.try_recv().is_err(), "a duplicate or a stray event");
    Ok(())
}
