//! Seed 000's cleanup statistics: the Redis hash `wasp_common::keys::CLEANUP_STATS` that the
//! operator's stale-session sweeper writes (`totalStopped`, `lastStopped`, `lastRunAt`, `runs`).

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;
use wasp_common::keys::CLEANUP_STATS;

use crate::error::ApiError;
use crate::view::CleanupStats;

/// A Redis connection made on first use, so the API starts (and serves everything else) while
/// Redis is away.
pub struct Redis {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
}

impl Redis {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: OnceCell::new(),
            timeout,
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, ApiError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                tokio::time::timeout(self.timeout, ConnectionManager::new(self.client.clone()))
                    .await
                    .map_err(|_| ApiError::unavailable("redis", "connect timed out"))?
                    .map_err(|e| ApiError::unavailable("redis", e))
            })
            .await?;
        Ok(conn.clone())
    }

    pub async fn cleanup_stats(&self) -> Result<CleanupStats, ApiError> {
        let mut conn = self.conn().await?;
        let fields: HashMap<String, String> =
            tokio::time::timeout(self.timeout, conn.hgetall(CLEANUP_STATS))
                .await
                .map_err(|_| ApiError::unavailable("redis", "HGETALL timed out"))?
                .map_err(|e| ApiError::unavailable("redis", e))?;
        Ok(parse_cleanup_stats(&fields))
    }
}

pub fn parse_cleanup_stats(fields: &HashMap<String, String>) -> CleanupStats {
    let num = |k: &str| {
        fields
            .get(k)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    CleanupStats {
        total_stopped: num("totalStopped"),
        last_stopped: num("lastStopped"),
        last_run_at: fields.get("lastRunAt").filter(|v| !v.is_empty()).cloned(),
        runs: num("runs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_stats_from_the_operator_hash() {
        let fields: HashMap<String, String> = [
            ("totalStopped", "7"),
            ("lastStopped", "2"),
            ("lastRunAt", "2026-01-01T00:00:00Z"),
            ("runs", "12"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let s = parse_cleanup_stats(&fields);
        assert_eq!(s.total_stopped, 7);
        assert_eq!(s.last_stopped, 2);
        assert_eq!(s.runs, 12);
        assert_eq!(s.last_run_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(
            parse_cleanup_stats(&HashMap::new()),
            CleanupStats::default()
        );
    }
}
