//! One socket per user: a Redis lease with a fencing token.
//!
//! The lease key holds `<token>:<holder>` with a TTL. Acquiring takes a new token from a counter
//! that never goes back (`INCR lease:fence`), so a stale holder (a partitioned node whose lease
//! expired) is recognisable: every renewal checks the stored value is still its own, and the pod
//! drops its socket the moment a renewal fails. Atomic check-and-set via Lua scripts.
//!
//! **Same pod, new process.** A holder name starts with the pod's UID when the pod knows it
//! (`<uid>/<random>`). A process restarted in the same pod (kill -9, a crash) takes over a lease
//! whose holder has its own pod's UID at once, with a new token: a kubelet restarts a container
//! only after the previous one exited, so that holder is dead. A process of another pod (a
//! replacement, maybe while the old pod's node is cut off) waits for the lease to expire.

use std::time::Duration;

use redis::aio::ConnectionLike;
use wasp_common::keys::UserKeys;

const ACQUIRE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  local holder = sep and string.sub(cur, sep + 1) or ''
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(string.sub(cur, 1, sep - 1))
  end
  if ARGV[3] == '' or string.sub(holder, 1, string.len(ARGV[3])) ~= ARGV[3] then
    return -1
  end
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return token
"#;

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// A held lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub holder: String,
    pub token: u64,
}

impl Lease {
    fn value(&self) -> String {
        lease_value(self.token, &self.holder)
    }
}

/// The stored value of a lease.
pub fn lease_value(token: u64, holder: &str) -> String {
    format!("{token}:{holder}")
}

/// A holder name: `<pod uid>/<random>` when the pod's UID is known (see the module docs), else
/// `<session>-<random>` (never taken over).
pub fn holder_name(pod_uid: Option<&str>, session: &str, random: u64) -> String {
    match pod_uid.filter(|u| !u.is_empty()) {
        Some(uid) => format!("{uid}/{random:016x}"),
        None => format!("{session}-{random:016x}"),
    }
}

/// The prefix of the holders `holder` may take over: those of its own pod (`<uid>/`), none for
/// a holder without a pod UID.
pub fn takeover_prefix(holder: &str) -> &str {
    holder.find('/').map_or("", |i| &holder[..=i])
}

/// Tries once; `None` while another holder has it (a dead predecessor in the same pod does not
/// count: its lease is taken over).
pub async fn try_acquire<C: ConnectionLike + Send>(
    conn: &mut C,
    user_id: &str,
    holder: &str,
    ttl: Duration,
) -> redis::RedisResult<Option<Lease>> {
    let keys = UserKeys::for_user(user_id);
    let token: i64 = redis::Script::new(ACQUIRE)
        .key(keys.lease())
        .key(keys.lease_fence())
        .arg(holder)
        .arg(ttl.as_millis() as u64)
        .arg(takeover_prefix(holder))
        .invoke_async(conn)
        .await?;
    Ok(u64::try_from(token).ok().map(|token| Lease {
        key: keys.lease(),
        holder: holder.to_owned(),
        token,
    }))
}

/// When the next renewal is due: half the TTL after a success (the lease then has half its life
/// left), a fifteenth of it (2 s of 30 s) after a failure, but never past the fence
/// ([`fence_after`]). Half, not a third: each renewal is an `EVALSHA` and a wakeup of every
/// idle pod, and retrying soon after a failure keeps as many attempts before the fence.
pub fn renew_after(ttl: Duration, failed: bool, until_fence: Duration) -> Duration {
    if failed {
        (ttl / 15).min(until_fence)
    } else {
        ttl / 2
    }
}

/// How long a holder goes on without a confirmed renewal before it drops its socket: two thirds
/// of the TTL, a third before the lease can have expired for another process.
pub fn fence_after(ttl: Duration) -> Duration {
    ttl * 2 / 3
}

/// Extends the lease; `false` when it is no longer ours (expired and taken, or purged).
pub async fn renew<C: ConnectionLike + Send>(
    conn: &mut C,
    lease: &Lease,
    ttl: Duration,
) -> redis::RedisResult<bool> {
    let n: i64 = redis::Script::new(RENEW)
        .key(&lease.key)
        .arg(lease.value())
        .arg(ttl.as_millis() as u64)
        .invoke_async(conn)
        .await?;
    Ok(n == 1)
}

pub async fn release<C: ConnectionLike + Send>(
    conn: &mut C,
    lease: &Lease,
) -> redis::RedisResult<()> {
    let _: i64 = redis::Script::new(RELEASE)
        .key(&lease.key)
        .arg(lease.value())
        .invoke_async(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_come_at_half_the_ttl_and_retries_reach_the_fence_before_expiry() {
        let ttl = Duration::from_secs(30);
        assert_eq!(renew_after(ttl, false, ttl), Duration::from_secs(15));
        assert_eq!(fence_after(ttl), Duration::from_secs(20));
        // A renewal fails at 15 s: retries every 2 s, the last one at the fence itself.
        let mut t = renew_after(ttl, false, ttl);
        let mut attempts = vec![t];
        while t < fence_after(ttl) {
            t += renew_after(ttl, true, fence_after(ttl) - t);
            attempts.push(t);
        }
        let secs: Vec<f64> = attempts.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, [15.0, 17.0, 19.0, 20.0]);
        assert!(fence_after(ttl) < ttl);
    }

    #[test]
    fn holders_of_a_pod_take_over_only_their_own_pods_leases() {
        let a = holder_name(Some("7f3c-uid"), "wa-bob", 1);
        let b = holder_name(Some("7f3c-uid"), "wa-bob", 2);
        assert_eq!(a, "7f3c-uid/0000000000000001");
        assert_ne!(a, b);
        assert_eq!(takeover_prefix(&a), "7f3c-uid/");
        assert!(b.starts_with(takeover_prefix(&a)));
        let other_pod = holder_name(Some("9d21-uid"), "wa-bob", 1);
        assert!(!other_pod.starts_with(takeover_prefix(&a)));
        // Without a pod UID: the old name, and nothing to take over.
        let plain = holder_name(None, "wa-bob", 3);
        assert_eq!(plain, "wa-bob-0000000000000003");
        assert_eq!(takeover_prefix(&plain), "");
        assert_eq!(holder_name(Some(""), "wa-bob", 3), plain);
    }
}
