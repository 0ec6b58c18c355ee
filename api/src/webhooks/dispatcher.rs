//! The delivery loop of one API replica. Every replica runs it; they share the work:
//! - each replica heartbeats into a registry of live dispatchers, and an endpoint belongs to
//!   the live replica that rendezvous hashing picks ([`owner`]);
//! - the owner takes the endpoint's lease in Redis (renewed while it delivers), so at most one
//!   replica delivers to an endpoint at a time and its order holds;
//! - delivery reads the user's durable stream through this replica's [`Hub`] from the
//!   endpoint's cursor (stored in Redis after each event), one event at a time: a replica killed
//!   mid-delivery loses nothing, its successor (owner once the heartbeat is gone, holder once
//!   the lease expires) resumes at the cursor and sends the in-flight event again, same id.
//!
//! One worker task per endpoint: a slow or dead endpoint waits in its own task and never
//! delays another endpoint or another user.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use standardwebhooks::Webhook;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::GlobalWebhook;
use super::deliver::{Outcome, Sender};
use super::model::{DeadLetter, Delivery, DeliveryError, Endpoint, before, payload, webhook_id};
use super::schedule::{Backoff, owner};
use super::store::{SecretBox, Store};
use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::stream::event::{ClientEvent, StreamId};
use crate::stream::hub::Hub;

/// How often the dispatcher heartbeats and looks for endpoints to take or give up.
const TICK: Duration = Duration::from_millis(500);
/// A replica whose heartbeat is older than this is gone.
const REPLICA_TTL: Duration = Duration::from_secs(5);
/// Reload the endpoint list at least this often (it also reloads when the version moves).
const RELOAD: Duration = Duration::from_secs(10);

/// Timing of the dispatcher (operator settings; tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub backoff: Backoff,
    /// The endpoint lease: a dead holder's endpoints wait at most this long.
    pub lease_ttl: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            lease_ttl: Duration::from_secs(10),
        }
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    pub store: Store,
    pub hub: Hub,
    pub sessions: Sessions,
    pub sender: Sender,
    /// Opens users' signing secrets; `None` (no webhook key): only global webhooks go out.
    pub secrets: Option<SecretBox>,
    pub globals: Arc<Vec<GlobalWebhook>>,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
    /// This replica's name in the registry.
    pub me: String,
}

struct Running {
    endpoint: Endpoint,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Dispatcher {
    /// Runs until `shutdown`, then gives its leases and its registry entry up.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut own: Vec<Endpoint> = Vec::new();
        let mut global_since: Vec<i64> = Vec::new();
        let mut version = -1;
        let mut loaded = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let live = match self.store.heartbeat(&self.me, REPLICA_TTL).await {
                Ok(live) => live,
                Err(e) => {
                    tracing::debug!(error = %e, "webhook heartbeat failed");
                    continue;
                }
            };
            let now_version = self.store.version().await.unwrap_or(version);
            if now_version != version || loaded.elapsed() >= RELOAD {
                match self.user_endpoints().await {
                    Ok(list) => {
                        tracing::debug!(
                            endpoints = list.len(),
                            version = now_version,
                            "webhook endpoints loaded"
                        );
                        own = list;
                        version = now_version;
                        loaded = tokio::time::Instant::now();
                    }
                    Err(e) => tracing::debug!(error = %e, "loading webhook endpoints failed"),
                }
            }
            // Global endpoints follow the sessions cache (in memory) at every tick.
            if global_since.len() != self.globals.len() {
                let mut since = Vec::new();
                for g in self.globals.iter() {
                    match self.store.global_since(&g.name).await {
                        Ok(s) => since.push(s),
                        Err(_) => break,
                    }
                }
                global_since = since;
            }
            let endpoints: Vec<Endpoint> = match self.global_endpoints(&global_since).await {
                Ok(globals) => own.iter().cloned().chain(globals).collect(),
                Err(_) => own.clone(),
            };
            running.retain(|_, r| !r.task.is_finished());
            let wanted: HashMap<String, &Endpoint> = endpoints
                .iter()
                .filter(|e| owner(&e.key(), &live) == Some(self.me.as_str()))
                .map(|e| (e.key(), e))
                .collect();
            // Give up endpoints this replica no longer owns, or whose configuration changed.
            running.retain(|key, r| {
                let keep = wanted.get(key).is_some_and(|e| same(e, &r.endpoint));
                if !keep {
                    r.stop.cancel();
                }
                keep
            });
            for (key, ep) in wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key) {
                    tracing::debug!(endpoint = %slot.key(), "delivering to a webhook endpoint");
                    let stop = shutdown.child_token();
                    let task = tokio::spawn(self.clone().work(ep.clone(), stop.clone()));
                    slot.insert(Running {
                        endpoint: ep.clone(),
                        stop,
                        task,
                    });
                }
            }
            self.metrics.webhooks.endpoints.set(running.len() as i64);
        }
        for (_, r) in running.drain() {
            r.stop.cancel();
            let _ = r.task.await;
        }
        let _ = self.store.leave(&self.me).await;
    }

    /// The users' own endpoints (from Redis).
    async fn user_endpoints(&self) -> Result<Vec<Endpoint>, crate::error::ApiError> {
        let mut out = Vec::new();
        let Some(secrets) = &self.secrets else {
            return Ok(out);
        };
        for user in self.store.users().await? {
            for stored in self.store.endpoints(&user).await? {
                let Some(secret) = secrets.open(&user, &stored.id, &stored.secret_sealed) else {
                    tracing::warn!(endpoint = %stored.id, "a webhook secret does not open with the webhook key; skipping it");
                    continue;
                };
                out.push(Endpoint {
                    id: stored.id,
                    user_id: stored.user_id,
                    url: stored.url,
                    events: stored.events,
                    secret,
                    start_ms: 0,
                });
            }
        }
        Ok(out)
    }

    /// Each global endpoint for every session.
    async fn global_endpoints(
        &self,
        global_since: &[i64],
    ) -> Result<Vec<Endpoint>, crate::error::ApiError> {
        let mut out = Vec::new();
        if !self.globals.is_empty() {
            for session in self.sessions.all().await? {
                let created_ms = session
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(0, |t| t.0.as_millisecond());
                for (g, since) in self.globals.iter().zip(global_since) {
                    out.push(Endpoint {
                        id: g.endpoint_id(),
                        user_id: session.spec.user_id.clone(),
                        url: g.url.clone(),
                        events: g.events.clone(),
                        secret: g.secret.clone(),
                        start_ms: created_ms.max(*since),
                    });
                }
            }
        }
        Ok(out)
    }

    /// One endpoint's worker: takes the lease, then delivers in order until stopped or the
    /// lease is lost.
    async fn work(self, ep: Endpoint, stop: CancellationToken) {
        let ttl = self.timing.lease_ttl;
        loop {
            if let Ok(true) = self
                .store
                .hold_lease(&ep.user_id, &ep.id, &self.me, ttl)
                .await
            {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
        let lost = stop.child_token();
        let keeper = tokio::spawn({
            let (store, me, lost) = (self.store.clone(), self.me.clone(), lost.clone());
            let (user, id) = (ep.user_id.clone(), ep.id.clone());
            async move {
                loop {
                    tokio::select! {
                        _ = lost.cancelled() => return,
                        _ = tokio::time::sleep(ttl / 3) => {}
                    }
                    if !matches!(store.hold_lease(&user, &id, &me, ttl).await, Ok(true)) {
                        tracing::info!(endpoint = %id, "webhook lease lost; stopping delivery");
                        lost.cancel();
                        return;
                    }
                }
            }
        });
        if let Err(e) = self.deliver_all(&ep, &lost).await {
            tracing::debug!(endpoint = %ep.id, error = %e, "webhook worker stopped");
        }
        lost.cancel();
        let _ = keeper.await;
        let _ = self
            .store
            .release_lease(&ep.user_id, &ep.id, &self.me)
            .await;
    }

    async fn deliver_all(
        &self,
        ep: &Endpoint,
        stop: &CancellationToken,
    ) -> Result<(), crate::error::ApiError> {
        let mut cursor = self
            .store
            .cursor_or_start(&ep.user_id, &ep.id, ep.start_ms)
            .await?;
        let mut sub = self
            .hub
            .subscribe(&ep.user_id, Some(resume_point(cursor)))
            .await?;
        let hash = wasp_common::user_hash(&ep.user_id);
        let mut failing = false;
        loop {
            if let Some(letter) = self.store.next_replay(&ep.user_id, &ep.id).await? {
                self.replay(ep, letter, stop).await?;
                continue;
            }
            let ev = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                // Look at the replay list now and then while the stream is quiet.
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                ev = sub.next() => match ev {
                    Some(ev) => ev,
                    None => return Ok(()),
                },
            };
            let Some(id) = ev.stream_id() else { continue };
            let at = (id, ev.part);
            // The resume point replays the cursor's entry; skip what was handled.
            if handled(at, cursor) {
                continue;
            }
            if !ep.wants(&ev.kind) {
                cursor = at;
                self.store.advance(&ep.user_id, &ep.id, cursor).await?;
                continue;
            }
            let body = payload(&ev, &ep.user_id);
            let wid = webhook_id(&hash, id, ev.part);
            match self
                .attempts(ep, &wid, &body, id.ms as i64, failing, stop)
                .await
            {
                Attempts::Delivered(status) => {
                    failing = false;
                    cursor = at;
                    let recovered = self
                        .store
                        .delivered(&ep.user_id, &ep.id, Some(cursor), &delivery(&ev, status))
                        .await?;
                    if recovered {
                        self.health_changed(ep).await;
                    }
                }
                Attempts::GaveUp { attempts, error } => {
                    failing = true;
                    cursor = at;
                    let letter = DeadLetter {
                        endpoint_id: ep.id.clone(),
                        webhook_id: wid,
                        kind: ev.kind.clone(),
                        payload: body,
                        event_at_ms: id.ms as i64,
                        failed_at: jiff::Timestamp::now().as_second(),
                        attempts,
                        last_error: error,
                    };
                    self.store
                        .dead_letter(&ep.user_id, &letter, Some(cursor))
                        .await?;
                    self.metrics.webhooks.dead_letters.inc();
                }
                Attempts::Stopped => return Ok(()),
            }
        }
    }

    /// Delivers a dead letter again (its age counts from now); back to the dead letters if it
    /// fails for a whole maximum age again.
    async fn replay(
        &self,
        ep: &Endpoint,
        mut letter: DeadLetter,
        stop: &CancellationToken,
    ) -> Result<(), crate::error::ApiError> {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        match self
            .attempts(ep, &letter.webhook_id, &letter.payload, now_ms, false, stop)
            .await
        {
            Attempts::Delivered(status) => {
                let d = Delivery {
                    at: jiff::Timestamp::now().as_second(),
                    event_id: letter.webhook_id.clone(),
                    status,
                };
                if self.store.delivered(&ep.user_id, &ep.id, None, &d).await? {
                    self.health_changed(ep).await;
                }
            }
            Attempts::GaveUp { attempts, error } => {
                letter.attempts += attempts;
                letter.last_error = error;
                letter.failed_at = jiff::Timestamp::now().as_second();
                self.store.dead_letter(&ep.user_id, &letter, None).await?;
                self.metrics.webhooks.dead_letters.inc();
            }
            Attempts::Stopped => return Ok(()),
        }
        self.store.replay_done(&ep.user_id, &ep.id).await
    }

    /// An endpoint started or stopped failing: the operator updates the session's
    /// `WebhooksHealthy` condition (global endpoints are the platform's, seen in the metrics).
    async fn health_changed(&self, ep: &Endpoint) {
        if ep.id.starts_with(wasp_common::webhooks::GLOBAL_PREFIX) {
            return;
        }
        let Ok(Some(session)) = self.sessions.get(&ep.user_id).await else {
            return;
        };
        let ns = session
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(self.sessions.namespace());
        let name = session.metadata.name.as_deref().unwrap_or_default();
        if let Err(e) = self.store.announce(ns, name).await {
            tracing::debug!(endpoint = %ep.id, error = %e, "announcing a webhook health change failed");
        }
    }

    /// Attempts one event until it is delivered, given up on or the worker stops.
    async fn attempts(
        &self,
        ep: &Endpoint,
        wid: &str,
        body: &str,
        event_at_ms: i64,
        failing: bool,
        stop: &CancellationToken,
    ) -> Attempts {
        let backoff = self.timing.backoff;
        let age = || {
            let ms = jiff::Timestamp::now().as_millisecond() - event_at_ms;
            Duration::from_millis(ms.max(0) as u64)
        };
        // The endpoint has been failing for longer than the maximum age: what is older than
        // that goes to the dead letters without another attempt, so a long outage drains.
        if failing && backoff.give_up(age(), Duration::ZERO) {
            return Attempts::GaveUp {
                attempts: 0,
                error: "the endpoint was failing when the event reached the maximum age".into(),
            };
        }
        let signer = match Webhook::new(&ep.secret) {
            Ok(s) => s,
            Err(_) => {
                return Attempts::GaveUp {
                    attempts: 0,
                    error: "the signing secret is not a Standard Webhooks secret".into(),
                };
            }
        };
        let mut attempt = 0u32;
        let mut retrying = false;
        let outcome = loop {
            if stop.is_cancelled() {
                break Attempts::Stopped;
            }
            attempt += 1;
            let ts = jiff::Timestamp::now().as_second();
            let Ok(signature) = signer.sign(wid, ts, body.as_bytes()) else {
                break Attempts::GaveUp {
                    attempts: attempt,
                    error: "the event is not UTF-8".into(),
                };
            };
            let headers = [
                ("webhook-id", wid.to_owned()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", signature),
            ];
            let outcome = tokio::select! {
                _ = stop.cancelled() => break Attempts::Stopped,
                o = self.sender.send(&ep.url, &headers, body.to_owned()) => o,
            };
            match outcome {
                Outcome::Delivered(status) => {
                    self.metrics.webhooks.delivered.inc();
                    break Attempts::Delivered(status);
                }
                Outcome::Failed {
                    reason,
                    error,
                    retry_after,
                } => {
                    self.metrics.webhooks.failure(reason);
                    let started = self
                        .store
                        .failed(
                            &ep.user_id,
                            &ep.id,
                            &DeliveryError {
                                at: ts,
                                event_id: wid.to_owned(),
                                error: error.clone(),
                            },
                        )
                        .await;
                    if matches!(started, Ok(true)) {
                        self.health_changed(ep).await;
                    }
                    let wait = backoff.wait(attempt, rand::random::<f64>(), retry_after);
                    if backoff.give_up(age(), wait) {
                        break Attempts::GaveUp {
                            attempts: attempt,
                            error,
                        };
                    }
                    if !retrying {
                        retrying = true;
                        self.metrics.webhooks.retrying.inc();
                    }
                    let oldest = age().as_secs() as i64;
                    if oldest > self.metrics.webhooks.oldest_pending_seconds.get() {
                        self.metrics.webhooks.oldest_pending_seconds.set(oldest);
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break Attempts::Stopped,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        };
        if retrying {
            self.metrics.webhooks.retrying.dec();
            if self.metrics.webhooks.retrying.get() == 0 {
                self.metrics.webhooks.oldest_pending_seconds.set(0);
            }
        }
        outcome
    }
}

enum Attempts {
    Delivered(u16),
    GaveUp { attempts: u32, error: String },
    Stopped,
}

fn delivery(ev: &ClientEvent, status: u16) -> Delivery {
    Delivery {
        at: jiff::Timestamp::now().as_second(),
        event_id: ev.id.clone().unwrap_or_default(),
        status,
    }
}

/// Whether a running worker's endpoint is still the one configured.
fn same(a: &Endpoint, b: &Endpoint) -> bool {
    a.url == b.url && a.events == b.events && a.secret == b.secret
}

/// Where the stream is read from for a cursor: after its entry when the whole entry was handled,
/// else from the entry itself (its remaining events follow; [`handled`] skips the rest).
pub fn resume_point((id, part): (StreamId, u8)) -> StreamId {
    if part == u8::MAX {
        id
    } else {
        before(id).unwrap_or(StreamId::ZERO)
    }
}

/// Whether the event at `at` was handled already, given the cursor (`part` `u8::MAX`: the
/// whole entry).
pub fn handled(at: (StreamId, u8), cursor: (StreamId, u8)) -> bool {
    at <= cursor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_covers_the_parts_it_names() {
        let id = StreamId { ms: 5, seq: 1 };
        let next = StreamId { ms: 5, seq: 2 };
        assert!(handled((id, 0), (id, 0)));
        assert!(
            !handled((id, 1), (id, 0)),
            "the second event of the entry is not done"
        );
        assert!(handled((id, 1), (id, u8::MAX)), "the whole entry");
        assert!(!handled((next, 0), (id, u8::MAX)));
        assert_eq!(resume_point((id, u8::MAX)), id);
        assert_eq!(resume_point((id, 0)), StreamId { ms: 5, seq: 0 });
        assert_eq!(
            resume_point((StreamId::ZERO, u8::MAX)),
            StreamId::ZERO,
            "all of a new stream"
        );
    }
}
