//! Deleting a user's data from Redis: every key under the user's prefix (finalizer) or only the
//! auth state (logged out from the phone). Missing keys are success, so purges are idempotent.

use redis::aio::ConnectionLike;

use crate::keys::UserKeys;

/// How many keys one SCAN step asks for; large enough to finish a user in a few round trips.
const SCAN_COUNT: usize = 500;

/// Deletes every key matching the glob `pattern`; returns how many were deleted.
pub async fn delete_matching<C: ConnectionLike + Send>(
    conn: &mut C,
    pattern: &str,
) -> redis::RedisResult<usize> {
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            // UNLINK frees memory off the main thread; a key deleted meanwhile just counts 0.
            let n: usize = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// Deletes every key of the user (auth state, events, messages, state record, lease).
pub async fn purge_user<C: ConnectionLike + Send>(
    conn: &mut C,
    user_id: &str,
) -> redis::RedisResult<usize> {
    delete_matching(conn, &UserKeys::for_user(user_id).scan_pattern()).await
}

/// Deletes only the user's auth state (the device was logged out; a new scan is needed), every
/// key under its prefix (SCAN: the API and the operator; a session pod uses [`purge_own_auth`]).
pub async fn purge_auth<C: ConnectionLike + Send>(
    conn: &mut C,
    user_id: &str,
) -> redis::RedisResult<usize> {
    delete_matching(conn, &UserKeys::for_user(user_id).auth_scan_pattern()).await
}

/// [`purge_auth`] by the table index ([`UserKeys::auth_tables`]), for the session pod, whose
/// own Redis user may not SCAN.
pub async fn purge_own_auth<C: ConnectionLike + Send>(
    conn: &mut C,
    user_id: &str,
) -> redis::RedisResult<usize> {
    let keys = UserKeys::for_user(user_id);
    let tables: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys.auth_tables())
        .query_async(conn)
        .await?;
    let mut doomed: Vec<String> = tables
        .iter()
        .map(|t| format!("{}{t}", keys.auth_prefix()))
        .collect();
    doomed.push(keys.auth_tables());
    doomed.push(keys.auth_indexed());
    redis::cmd("UNLINK").arg(doomed).query_async(conn).await
}

/// Adds the auth tables written before the table index existed to it, once per user (SCAN:
/// run by the operator, the Redis admin, before it starts a session pod).
pub async fn index_auth_tables<C: ConnectionLike + Send>(
    conn: &mut C,
    user_id: &str,
) -> redis::RedisResult<()> {
    let keys = UserKeys::for_user(user_id);
    let done: bool = redis::cmd("EXISTS")
        .arg(keys.auth_indexed())
        .query_async(conn)
        .await?;
    if done {
        return Ok(());
    }
    let mut cursor: u64 = 0;
    let mut tables = Vec::new();
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(keys.auth_scan_pattern())
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(conn)
            .await?;
        tables.extend(
            found
                .iter()
                .filter_map(|k| k.strip_prefix(&keys.auth_prefix()))
                .filter(|t| !t.starts_with('#'))
                .map(str::to_owned),
        );
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut pipe = redis::pipe();
    if !tables.is_empty() {
        pipe.cmd("SADD")
            .arg(keys.auth_tables())
            .arg(&tables)
            .ignore();
    }
    pipe.cmd("SET").arg(keys.auth_indexed()).arg(1).ignore();
    pipe.query_async(conn).await
}
