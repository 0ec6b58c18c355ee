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

/// Deletes only the user's auth state (the device was logged out; a new scan is needed).
pub async fn purge_auth<C: ConnectionLike + Send>(
    conn: &mut C,
    user_id: &str,
) -> redis::RedisResult<usize> {
    delete_matching(conn, &UserKeys::for_user(user_id).auth_scan_pattern()).await
}
