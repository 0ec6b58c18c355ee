//! The API's Redis: one shared connection for commands (made on first use, so the API starts
//! and serves everything else while Redis is away), and the client for the dedicated
//! connections of the event fan-out.

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use crate::error::ApiError;

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

    pub async fn conn(&self) -> Result<ConnectionManager, ApiError> {
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

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The timeout of every Redis call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}
