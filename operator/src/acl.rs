//! The session pods' own Redis users (`wasp_common::acl` holds the rules): the operator, as the
//! Redis admin, creates each user before its pod starts, brings it up to date when the master
//! keys change (the password is derived from them), re-creates every user after Redis restarts
//! (ACL users created at run time are not in the append-only file), and deletes it with the
//! session. With `--redis-acl shared` none of this runs and the pods share the Secret's URL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::TryStreamExt;
use kube::ResourceExt;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wasp_common::acl::{self, UrlError};
use wasp_crds::DesiredState;

use crate::controller::Context;
use crate::error::Result;
use crate::keys::MasterKeys;

/// How often the Redis server's `run_id` is read: a restarted Redis (new run id) has lost the
/// session users, and each pod's reconnects fail until they are back.
pub const RESTART_POLL: Duration = Duration::from_secs(1);

/// The session users this operator applied: ACL user name → fingerprint of the rules and the
/// Redis run (`INFO server`'s run id, as last read by [`keep_after_restarts`], numbered) they
/// were applied under. A reconcile sends `ACL SETUSER` only when the rules changed or Redis may have
/// restarted since; the keeper applies, in pipelines, every user not applied under the current
/// run id (at its first look: every user), so a restart at any moment is caught.
pub struct SessionUsers {
    base_url: String,
    state: Mutex<Applied>,
}

#[derive(Default)]
struct Applied {
    /// The run id the keeper last read; `None` before its first read.
    run_id: Option<String>,
    /// Counts the run ids read: a user records this number, not the 40-character id.
    run: u64,
    /// `None`: applied before the keeper's first read.
    users: HashMap<String, ([u8; 32], Option<u64>)>,
}

impl Applied {
    /// The run users applied now are recorded under.
    fn run(&self) -> Option<u64> {
        self.run_id.as_ref().map(|_| self.run)
    }

    fn current(&self, name: &str, fingerprint: &[u8; 32]) -> bool {
        self.run_id.is_some()
            && self
                .users
                .get(name)
                .is_some_and(|(f, run)| f == fingerprint && *run == self.run())
    }

    /// Applied by this operator under the Redis run it knows: nothing to do for the keeper.
    fn applied_this_run(&self, name: &str) -> bool {
        self.run_id.is_some()
            && self
                .users
                .get(name)
                .is_some_and(|(_, run)| *run == self.run())
    }
}

/// `ACL SETUSER`s the keeper sends in one pipeline: after a Redis restart a thousand users are
/// back in a few round trips instead of a thousand.
const SETUSER_BATCH: usize = 128;

/// One user's rules as they are about to be applied.
struct Pending {
    name: String,
    rules: Vec<String>,
    fingerprint: [u8; 32],
}

impl SessionUsers {
    /// `base_url`: the operator's own Redis URL; each pod gets it with its user's credentials.
    pub fn new(base_url: &str) -> Result<Self, UrlError> {
        acl::with_credentials(base_url, "check", "check")?;
        Ok(Self {
            base_url: base_url.to_owned(),
            state: Mutex::default(),
        })
    }

    /// Creates or updates the user's ACL user (a no-op when this operator already applied the
    /// same rules to this Redis run); returns the Redis URL its session pod uses.
    pub async fn ensure(
        &self,
        redis: &mut ConnectionManager,
        user_id: &str,
        keys: &MasterKeys,
    ) -> Result<String> {
        let passwords = keys.redis_passwords(user_id);
        let pending = Self::pending(user_id, &passwords);
        let name = pending.name.clone();
        if !self.lock().current(&name, &pending.fingerprint) {
            self.apply(redis, vec![pending]).await?;
        }
        // The URL parsed at start; replacing its credentials cannot fail now.
        Ok(acl::with_credentials(&self.base_url, &name, &passwords[0]).unwrap_or_default())
    }

    fn pending(user_id: &str, passwords: &[String]) -> Pending {
        let rules = acl::session_user_rules(user_id, passwords);
        Pending {
            name: acl::session_user_name(user_id),
            fingerprint: Sha256::digest(rules.join("\n").as_bytes()).into(),
            rules,
        }
    }

    /// `ACL SETUSER` of each, in one pipeline; recorded as applied only when all went in.
    async fn apply(&self, redis: &mut ConnectionManager, batch: Vec<Pending>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // The run id as known *before* the write: if Redis restarts after it, the keeper
        // reads a newer one and applies the users again.
        let run = self.lock().run();
        acl::set_users(
            redis,
            batch.iter().map(|p| (p.name.as_str(), p.rules.as_slice())),
        )
        .await?;
        let mut state = self.lock();
        for p in batch {
            state.users.insert(p.name, (p.fingerprint, run));
        }
        Ok(())
    }

    /// Deletes the user's ACL user (Redis closes its connections); `true` if it existed.
    pub async fn delete(&self, redis: &mut ConnectionManager, user_id: &str) -> Result<bool> {
        let name = acl::session_user_name(user_id);
        let existed = acl::delete_user(redis, &name).await?;
        self.lock().users.remove(&name);
        Ok(existed)
    }

    /// Records the run id just read; `true` if some user was applied under another one (or
    /// before any was read) and must be applied again.
    fn observe_run(&self, run_id: &str) -> bool {
        let mut state = self.lock();
        if state.run_id.as_deref() != Some(run_id) {
            state.run_id = Some(run_id.to_owned());
            state.run += 1;
        }
        let run = state.run();
        state.users.values().any(|(_, r)| *r != run)
    }

    fn applied_this_run(&self, user_id: &str) -> bool {
        self.lock()
            .applied_this_run(&acl::session_user_name(user_id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `run_id` line of `INFO server`.
pub fn run_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(str::trim)
}

/// Re-creates the session users when Redis restarts (its `run_id` changes), and at the first
/// look applies every user this operator has not applied yet (after a node restart Redis and
/// the operator come back together, and the pods wait for their users), until `stop`.
pub async fn keep_after_restarts(ctx: std::sync::Arc<Context>, stop: CancellationToken) {
    let Some(users) = ctx.session_users.as_ref() else {
        return;
    };
    let mut first_look = true;
    let mut first_poll = true;
    loop {
        if !first_poll {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RESTART_POLL) => {}
            }
        }
        first_poll = false;
        let mut redis = ctx.redis.clone();
        let info: String = match redis::cmd("INFO")
            .arg("server")
            .query_async(&mut redis)
            .await
        {
            Ok(info) => info,
            Err(_) => continue, // Redis away: the next poll sees the new run id.
        };
        let Some(now) = run_id(&info) else {
            continue;
        };
        if !users.observe_run(now) && !first_look {
            continue;
        }
        let started = std::time::Instant::now();
        match apply_missing(&ctx, users, &mut redis).await {
            Ok((applied, failed)) => {
                first_look = false;
                info!(
                    applied,
                    failed,
                    took_ms = started.elapsed().as_millis() as u64,
                    "session Redis users applied (Redis restarted, or first look)"
                );
            }
            // The users not reached are still to do: the next poll tries again.
            Err(e) => warn!(error = %e, "could not list sessions to apply their Redis users"),
        }
    }
}

/// Applies the users of every Connected session not applied under the current Redis run;
/// `(applied, failed)`.
async fn apply_missing(
    ctx: &Context,
    users: &SessionUsers,
    redis: &mut ConnectionManager,
) -> std::result::Result<(usize, usize), kube::Error> {
    let (mut applied, mut failed) = (0usize, 0usize);
    let mut batch = Vec::with_capacity(SETUSER_BATCH);
    let mut sessions = std::pin::pin!(crate::listing::sessions(ctx.sessions_api()));
    let mut flush = async |batch: &mut Vec<Pending>, applied: &mut usize, failed: &mut usize| {
        let n = batch.len();
        match users.apply(redis, std::mem::take(batch)).await {
            Ok(()) => *applied += n,
            Err(e) => {
                *failed += n;
                warn!(users = n, error = %e, "could not apply session Redis users");
            }
        }
    };
    while let Some(session) = sessions.try_next().await? {
        if session.spec.desired_state != DesiredState::Connected
            || session.metadata.deletion_timestamp.is_some()
            || users.applied_this_run(&session.spec.user_id)
        {
            continue;
        }
        let Some(ns) = session.namespace() else {
            continue;
        };
        let Ok(Ok(keys)) = ctx.keys.get(&ns).await else {
            failed += 1;
            continue;
        };
        let passwords = keys.redis_passwords(&session.spec.user_id);
        batch.push(SessionUsers::pending(&session.spec.user_id, &passwords));
        if batch.len() == SETUSER_BATCH {
            flush(&mut batch, &mut applied, &mut failed).await;
        }
    }
    flush(&mut batch, &mut applied, &mut failed).await;
    Ok((applied, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\ntcp_port:6379\r\n";
        assert_eq!(run_id(info), Some("abc123"));
        assert_eq!(run_id("# Server\r\n"), None);
    }

    #[test]
    fn users_applied_under_another_run_id_before_the_first_read_or_never_are_to_do() {
        let users = SessionUsers::new("redis://r:6379").unwrap();
        let fp = [7; 32];
        let name = acl::session_user_name("a@x");
        // Applied before the keeper's first read: to do at that read, even if nothing restarted.
        users.lock().users.insert(name.clone(), (fp, None));
        assert!(!users.applied_this_run("a@x"));
        assert!(users.observe_run("A"));
        assert!(!users.applied_this_run("a@x"));
        let run = users.lock().run();
        users.lock().users.insert(name.clone(), (fp, run));
        assert!(!users.observe_run("A"));
        assert!(users.applied_this_run("a@x"));
        assert!(users.lock().current(&name, &fp));
        assert!(!users.lock().current(&name, &[8; 32]), "other rules");
        // Redis restarted.
        assert!(users.observe_run("B"));
        assert!(!users.applied_this_run("a@x"));
        assert!(!users.lock().current(&name, &fp));
        // Never applied by this operator (it just started): the first look applies it.
        assert!(!users.applied_this_run("never-applied@x"));
    }

    #[test]
    fn a_url_that_cannot_carry_a_user_is_refused_at_start() {
        assert!(SessionUsers::new("redis://:pw@redis:6379").is_ok());
        assert!(SessionUsers::new("redis+unix:///tmp/redis.sock").is_err());
    }
}
