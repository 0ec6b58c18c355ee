//! One socket per user: a Redis lease with a fencing token.
//!
//! The lease key holds `<token>:<holder>` with a TTL. Acquiring takes a new token from a counter
//! that never goes back (`INCR lease:fence`), so a stale holder (a partitioned node whose lease
//! expired) is recognisable: every renewal checks the stored value is still its own, and the pod
//! drops its socket the moment a renewal fails. Atomic check-and-set via Lua scripts.

use std::time::Duration;

use redis::aio::ConnectionLike;
use wasp_common::keys::UserKeys;

const ACQUIRE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  if sep and string.sub(cur, sep + 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(string.sub(cur, 1, sep - 1))
  end
  return -1
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

/// Tries once; `None` while another holder has it.
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
        .invoke_async(conn)
        .await?;
    Ok(u64::try_from(token).ok().map(|token| Lease {
        key: keys.lease(),
        holder: holder.to_owned(),
        token,
    }))
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
