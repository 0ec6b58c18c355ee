//! Redis ACL users: each session pod authenticates as its own user, allowed only its user's
//! keys and channels (`wasp:{<hash>}:*`), the commands the pod sends, and PUBLISH (nothing else)
//! on the operator's global [`STATE_CHANGED_CHANNEL`]. A compromised pod can then neither read
//! nor change another user's data, nor list anyone's keys (no SCAN, no KEYS: key names hold chat
//! ids), nor listen to which sessions change state. The operator (Redis admin) creates, updates
//! and deletes the users (`operator/src/acl.rs`); the rules themselves are pure and live here.

use redis::aio::ConnectionLike;
use sha2::{Digest, Sha256};

use crate::ids::user_hash;
use crate::keys::{ADMISSION, STATE_CHANGED_CHANNEL, UserKeys};

/// Every command a session pod sends, its Lua scripts included (Redis checks the commands a
/// script calls against the caller's ACL too). Grouped by what uses them; a new command in the
/// pod needs an entry here, or the pod's tests (which run under this user) fail with NOPERM.
pub const SESSION_POD_COMMANDS: &[&str] = &[
    // connection: health probe; scripts (EVALSHA first, SCRIPT LOAD on NOSCRIPT). Not
    // `CLIENT SETINFO`, which redis-rs sends on connect and ignores the answer of: Redis 7.0
    // has no such command, and an unknown name fails the whole SETUSER.
    "ping",
    // the login admission script's clock (keyless)
    "time",
    "evalsha",
    "eval",
    "script|load",
    // strings: state record, lease (scripts), fencing counter
    "get",
    "set",
    "del",
    "unlink",
    "exists",
    "incr",
    "pexpire",
    // hashes: auth tables, message data, chat summaries, acks, contacts, stats
    "hget",
    "hset",
    "hdel",
    "hexists",
    "hmget",
    "hgetall",
    "hvals",
    "hkeys",
    "hscan",
    "hincrby",
    // sets: the auth state's index of per-group tables
    "sadd",
    "srem",
    "smembers",
    // sorted sets: chats, message order, dedup
    "zadd",
    "zrem",
    "zscore",
    "zcard",
    "zrange",
    "zrevrange",
    "zrangebyscore",
    "zrevrangebyscore",
    "zremrangebyscore",
    // lists: session logs
    "lpush",
    "ltrim",
    "lrange",
    // the event stream and pub/sub
    "xadd",
    "publish",
    "subscribe",
    "unsubscribe",
];

/// What every session pod's ACL user name starts with.
pub const SESSION_USER_PREFIX: &str = "wasp-session-";

/// ACL user name of a user's session pod: `wasp-session-<user hash>`.
pub fn session_user_name(user_id: &str) -> String {
    format!("{SESSION_USER_PREFIX}{}", user_hash(user_id))
}

/// The form Redis stores a password in (`#<sha256 hex>` rules): the operator never sends the
/// password itself, and `ACL LIST` shows only hashes.
pub fn password_hash(password: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(password.as_bytes()))
}

/// The `ACL SETUSER` rules of a user's session pod, `passwords` being the accepted passwords
/// (during a master-key rotation, the current key's and each previous one's, so a pod started
/// before the rotation keeps working until it is replaced). `reset` first: the user ends up with
/// exactly these rules whatever it had.
pub fn session_user_rules(user_id: &str, passwords: &[String]) -> Vec<String> {
    let keys = UserKeys::for_user(user_id);
    let own = format!("{}*", keys.prefix());
    let mut rules = vec!["reset".to_owned(), "on".to_owned()];
    rules.extend(passwords.iter().map(|p| format!("#{}", password_hash(p))));
    rules.push(format!("~{own}"));
    rules.push(format!("&{own}"));
    rules.push("-@all".to_owned());
    rules.extend(SESSION_POD_COMMANDS.iter().map(|c| format!("+{c}")));
    // Selectors: PUBLISH, and only PUBLISH, on the global announcement channel; and the one
    // shared key, the fleet's login admission bucket, with what its script calls. ACLs cannot
    // limit a key to a script, so a compromised pod could write the bucket directly: the worst
    // it does is delay logins, and a pod waits at most 15 minutes for a slot
    // (session-pod/src/admission.rs).
    rules.push(format!("(+publish &{STATE_CHANGED_CHANNEL})"));
    rules.push(format!(
        "(~{ADMISSION} +eval +evalsha +script|load +get +set +time)"
    ));
    rules
}

/// `ACL SETUSER <name> <rules…>` for each `(name, rules)`, in one pipeline (one round trip).
pub async fn set_users<'a, C: ConnectionLike + Send>(
    conn: &mut C,
    users: impl IntoIterator<Item = (&'a str, &'a [String])>,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for (name, rules) in users {
        pipe.cmd("ACL").arg("SETUSER").arg(name).arg(rules).ignore();
    }
    pipe.query_async(conn).await
}

/// `ACL DELUSER <name>`: `true` when the user existed. Redis closes its connections.
pub async fn delete_user<C: ConnectionLike + Send>(
    conn: &mut C,
    name: &str,
) -> redis::RedisResult<bool> {
    let n: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(name)
        .query_async(conn)
        .await?;
    Ok(n > 0)
}

/// Whether the user exists (`ACL GETUSER`).
pub async fn user_exists<C: ConnectionLike + Send>(
    conn: &mut C,
    name: &str,
) -> redis::RedisResult<bool> {
    let v: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(name)
        .query_async(conn)
        .await?;
    Ok(!matches!(v, redis::Value::Nil))
}

/// `url` (a `redis://` or `rediss://` URL) with its credentials replaced by `user`/`password`:
/// the session pod's URL is the operator's own with the pod's user in it.
pub fn with_credentials(url: &str, user: &str, password: &str) -> Result<String, UrlError> {
    let mut parsed = url::Url::parse(url).map_err(|_| UrlError::Unparsable)?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return Err(UrlError::Scheme);
    }
    parsed
        .set_username(user)
        .and_then(|()| parsed.set_password(Some(password)))
        .map_err(|()| UrlError::Unparsable)?;
    Ok(parsed.into())
}

/// Why a Redis URL cannot carry a session user (the message shows no part of the URL: it may
/// hold a password).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("the Redis URL cannot be parsed")]
    Unparsable,
    #[error("per-session Redis users need a redis:// or rediss:// URL (not a unix socket)")]
    Scheme,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_allow_only_the_users_own_prefix_and_publish_on_the_global_channel() {
        let rules = session_user_rules("doctor@clinic.com", &["pw1".into(), "pw2".into()]);
        let h = user_hash("doctor@clinic.com");
        assert_eq!(
            rules[0], "reset",
            "reset first: nothing of an older rule set survives"
        );
        assert!(rules.contains(&format!("~wasp:{{{h}}}:*")));
        assert!(rules.contains(&format!("&wasp:{{{h}}}:*")));
        assert_eq!(
            rules.iter().filter(|r| r.starts_with('~')).count(),
            1,
            "one key pattern"
        );
        assert_eq!(
            rules.iter().filter(|r| r.starts_with('&')).count(),
            1,
            "one channel pattern outside the selector"
        );
        assert!(rules.contains(&"(+publish &wasp:session-state-changed)".to_owned()));
        assert!(
            rules.contains(
                &"(~wasp:admission +eval +evalsha +script|load +get +set +time)".to_owned()
            )
        );
        assert!(rules.contains(&format!("#{}", password_hash("pw1"))));
        assert!(rules.contains(&format!("#{}", password_hash("pw2"))));
        assert!(
            !rules.iter().any(|r| r.contains("pw1")),
            "the password itself never goes to Redis"
        );
        let minus_all = rules.iter().position(|r| r == "-@all").unwrap();
        assert!(rules[minus_all..].iter().any(|r| r == "+hset"));
        for forbidden in [
            "+scan",
            "+keys",
            "+psubscribe",
            "+acl",
            "+config",
            "+flushall",
        ] {
            assert!(!rules.iter().any(|r| r == forbidden), "{forbidden}");
        }
    }

    #[test]
    fn user_names_are_per_user_and_valid_acl_names() {
        let a = session_user_name("a@x");
        assert_ne!(a, session_user_name("b@x"));
        assert!(a.starts_with("wasp-session-"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn password_hash_is_sha256_hex() {
        assert_eq!(
            password_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn credentials_replace_those_of_the_url() {
        assert_eq!(
            with_credentials("redis://:admin@redis.wasp:6379/0", "wasp-session-x", "p@ss").unwrap(),
            "redis://wasp-session-x:p%40ss@redis.wasp:6379/0"
        );
        assert_eq!(
            with_credentials("rediss://old:o@r:6380", "u", "p").unwrap(),
            "rediss://u:p@r:6380"
        );
        assert_eq!(
            with_credentials("redis+unix:///run/redis.sock", "u", "p"),
            Err(UrlError::Scheme)
        );
        assert_eq!(
            with_credentials("not a url", "u", "p"),
            Err(UrlError::Unparsable)
        );
    }
}
