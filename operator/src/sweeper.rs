//! Periodic stale-session cleanup (seed `SESSION_CLEANUP_INTERVAL`): every interval, sessions that
//! `stale::is_stale` flags are switched to `desiredState: disconnected`, reported with an Event,
//! and counted in Redis for the admin statistics.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wasp_common::keys::CLEANUP_STATS;
use wasp_crds::WhatsAppSession;

use crate::controller::{Context, publish};
use crate::{listing, stale};

pub async fn sweep(
    ctx: Arc<Context>,
    default_timeout: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Timestamp::now();
        let mut stopped = 0u64;
        let mut sessions = std::pin::pin!(listing::sessions(ctx.sessions_api()));
        loop {
            let session = match sessions.try_next().await {
                Ok(Some(session)) => session,
                Ok(None) => break,
                Err(e) => {
                    // The next interval reads them again.
                    warn!(error = %e, "could not list sessions to look for stale ones");
                    break;
                }
            };
            if !stale::is_stale(&session, now, default_timeout) {
                continue;
            }
            match stop_session(&session, &ctx, default_timeout).await {
                Ok(()) => stopped += 1,
                Err(e) => {
                    warn!(session = %session.name_any(), error = %e, "could not stop stale session")
                }
            }
        }
        ctx.metrics.stale_cleanups.inc_by(stopped);
        record_stats(&ctx, stopped, now).await;
    }
}

async fn stop_session(
    session: &WhatsAppSession,
    ctx: &Context,
    default_timeout: Duration,
) -> Result<(), kube::Error> {
    let Some(ns) = session.namespace() else {
        return Ok(());
    };
    let api: Api<WhatsAppSession> = Api::namespaced(ctx.client.clone(), &ns);
    // A merge patch of one field: the API keeps owning desiredState for later connects.
    let patch = json!({ "spec": { "desiredState": "disconnected" } });
    api.patch(
        &session.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    let timeout = stale::stale_timeout(session, default_timeout);
    let phase = session
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or("unknown", |p| p.as_str());
    let note = format!(
        "stopped: {phase} for longer than the stale timeout ({}s)",
        timeout.as_secs()
    );
    info!(session = %session.name_any(), namespace = %ns, %note, "stale session stopped");
    publish(
        ctx,
        session,
        EventType::Normal,
        "StaleSessionStopped",
        "Cleanup",
        note,
    )
    .await;
    Ok(())
}

async fn record_stats(ctx: &Context, stopped: u64, now: Timestamp) {
    let mut redis = ctx.redis.clone();
    let result: redis::RedisResult<()> = redis::pipe()
        .hincr(CLEANUP_STATS, "totalStopped", stopped)
        .ignore()
        .hset(CLEANUP_STATS, "lastRunAt", now.to_string())
        .ignore()
        .hset(CLEANUP_STATS, "lastStopped", stopped)
        .ignore()
        .hincr(CLEANUP_STATS, "runs", 1)
        .ignore()
        .query_async(&mut redis)
        .await;
    if let Err(e) = result {
        warn!(error = %e, "could not record cleanup statistics");
    }
}
