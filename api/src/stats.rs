//! Seed 000's cleanup statistics: the Redis hash `wasp_common::keys::CLEANUP_STATS` that the
//! operator's stale-session sweeper writes (`totalStopped`, `lastStopped`, `lastRunAt`, `runs`).

use std::collections::HashMap;

use redis::AsyncCommands;
use wasp_common::keys::CLEANUP_STATS;

use crate::error::ApiError;
use crate::redis_conn::Redis;
use crate::view::CleanupStats;

impl Redis {
    pub async fn cleanup_stats(&self) -> Result<CleanupStats, ApiError> {
        let mut conn = self.conn().await?;
        let fields: HashMap<String, String> =
            tokio::time::timeout(self.timeout(), conn.hgetall(CLEANUP_STATS))
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
