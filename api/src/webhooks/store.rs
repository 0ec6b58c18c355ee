//! The webhooks' Redis side: endpoints (secrets sealed), each endpoint's durable cursor and
//! delivery state, the delivery leases, the live-dispatcher registry, dead letters and replays.
//! Every key of a user is under the user's hash tag (`wasp_common::keys::UserKeys`), so
//! deleting the session purges its webhooks with the rest.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use wasp_common::keys::{
    UserKeys, WEBHOOK_GLOBAL_SINCE, WEBHOOK_REPLICAS, WEBHOOK_USERS, WEBHOOK_VERSION,
};

use super::model::{DeadLetter, Delivery, DeliveryError, StoredEndpoint};
use crate::error::ApiError;
use crate::stream::event::StreamId;
pub use wasp_common::webhooks::{SecretBox, new_secret};

/// Dead letters kept per user (oldest dropped first).
pub const DEAD_LETTER_CAP: isize = 10_000;

/// One Redis call with the API's timeout.
pub async fn run<T>(
    timeout: Duration,
    what: &'static str,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| ApiError::unavailable("redis", format!("{what} timed out")))?
        .map_err(|e| ApiError::unavailable("redis", e))
}

/// Where an endpoint stands for one user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointState {
    /// The last event handled (delivered, filtered out or dead-lettered).
    pub cursor: Option<(StreamId, u8)>,
    pub last_delivery: Option<Delivery>,
    pub last_error: Option<DeliveryError>,
    pub failing_since: Option<i64>,
}

pub fn parse_cursor(text: &str) -> Option<(StreamId, u8)> {
    let (id, part) = text.split_once('/')?;
    Some((id.parse().ok()?, part.parse().ok()?))
}

pub fn format_cursor((id, part): (StreamId, u8)) -> String {
    wasp_common::webhooks::cursor_text(&id.to_string(), part)
}

pub fn parse_state(fields: &HashMap<String, String>) -> EndpointState {
    fn json<T: serde::de::DeserializeOwned>(
        fields: &HashMap<String, String>,
        k: &str,
    ) -> Option<T> {
        fields.get(k).and_then(|v| serde_json::from_str(v).ok())
    }
    EndpointState {
        cursor: fields.get("cursor").and_then(|c| parse_cursor(c)),
        last_delivery: json(fields, "lastDelivery"),
        last_error: json(fields, "lastError"),
        failing_since: fields.get("failingSince").and_then(|v| v.parse().ok()),
    }
}

/// The Redis side of webhooks for one API replica.
#[derive(Clone)]
pub struct Store {
    pub conn: ConnectionManager,
    pub timeout: Duration,
}

impl Store {
    pub async fn endpoints(&self, user_id: &str) -> Result<Vec<StoredEndpoint>, ApiError> {
        let mut conn = self.conn.clone();
        run(
            self.timeout,
            "HGETALL",
            wasp_common::webhooks::endpoints(&mut conn, user_id),
        )
        .await
    }

    /// Saves an endpoint (`wasp_common::webhooks::put`: a new one starts at the stream's end).
    pub async fn put(&self, ep: &StoredEndpoint) -> Result<(), ApiError> {
        let mut conn = self.conn.clone();
        run(
            self.timeout,
            "HSET",
            wasp_common::webhooks::put(&mut conn, ep),
        )
        .await
    }

    /// Removes an endpoint and its state; whether it existed.
    pub async fn delete(&self, user_id: &str, id: &str) -> Result<bool, ApiError> {
        let mut conn = self.conn.clone();
        run(
            self.timeout,
            "HDEL",
            wasp_common::webhooks::delete(&mut conn, user_id, id),
        )
        .await
    }

    pub async fn state(&self, user_id: &str, id: &str) -> Result<EndpointState, ApiError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = run(
            self.timeout,
            "HGETALL",
            conn.hgetall(UserKeys::for_user(user_id).webhook_state(id)),
        )
        .await?;
        Ok(parse_state(&fields))
    }

    /// The cursor, starting a new one just before `start_ms` (every event from then on).
    pub async fn cursor_or_start(
        &self,
        user_id: &str,
        id: &str,
        start_ms: i64,
    ) -> Result<(StreamId, u8), ApiError> {
        if let Some(c) = self.state(user_id, id).await?.cursor {
            return Ok(c);
        }
        let start = StreamId {
            ms: start_ms.max(0) as u64,
            seq: 0,
        };
        let start = (
            super::model::before(start).unwrap_or(StreamId::ZERO),
            u8::MAX,
        );
        let mut conn = self.conn.clone();
        let _: () = run(
            self.timeout,
            "HSETNX",
            conn.hset_nx(
                UserKeys::for_user(user_id).webhook_state(id),
                "cursor",
                format_cursor(start),
            ),
        )
        .await?;
        Ok(self.state(user_id, id).await?.cursor.unwrap_or(start))
    }

    /// When a global webhook was first configured anywhere in the fleet (unix ms; set once).
    pub async fn global_since(&self, name: &str) -> Result<i64, ApiError> {
        let key = format!("{WEBHOOK_GLOBAL_SINCE}{name}");
        let now = jiff::Timestamp::now().as_millisecond();
        let mut conn = self.conn.clone();
        let _: bool = run(self.timeout, "SETNX", conn.set_nx(&key, now)).await?;
        let since: Option<i64> = run(self.timeout, "GET", conn.get(&key)).await?;
        Ok(since.unwrap_or(now))
    }

    pub async fn advance(
        &self,
        user_id: &str,
        id: &str,
        cursor: (StreamId, u8),
    ) -> Result<(), ApiError> {
        let mut conn = self.conn.clone();
        run(
            self.timeout,
            "HSET",
            conn.hset::<_, _, _, ()>(
                UserKeys::for_user(user_id).webhook_state(id),
                "cursor",
                format_cursor(cursor),
            ),
        )
        .await
    }

    /// Records a delivery; whether the endpoint was failing until now.
    pub async fn delivered(
        &self,
        user_id: &str,
        id: &str,
        cursor: Option<(StreamId, u8)>,
        delivery: &Delivery,
    ) -> Result<bool, ApiError> {
        let key = UserKeys::for_user(user_id).webhook_state(id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(
                &key,
                "lastDelivery",
                serde_json::to_string(delivery).unwrap_or_default(),
            )
            .ignore()
            .hdel(&key, "failingSince");
        if let Some(c) = cursor {
            pipe.hset(&key, "cursor", format_cursor(c)).ignore();
        }
        let mut conn = self.conn.clone();
        let (cleared,): (i64,) = run(self.timeout, "HSET", pipe.query_async(&mut conn)).await?;
        Ok(cleared == 1)
    }

    /// Records a failed attempt; whether the endpoint started failing now.
    pub async fn failed(
        &self,
        user_id: &str,
        id: &str,
        error: &DeliveryError,
    ) -> Result<bool, ApiError> {
        let key = UserKeys::for_user(user_id).webhook_state(id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(
                &key,
                "lastError",
                serde_json::to_string(error).unwrap_or_default(),
            )
            .ignore()
            .hset_nx(&key, "failingSince", error.at);
        let mut conn = self.conn.clone();
        let (started,): (bool,) = run(self.timeout, "HSET", pipe.query_async(&mut conn)).await?;
        Ok(started)
    }

    /// Tells the operator that a session's webhooks changed health (its `WebhooksHealthy`
    /// condition), on the channel session pods announce their state on.
    pub async fn announce(&self, namespace: &str, name: &str) -> Result<(), ApiError> {
        let mut conn = self.conn.clone();
        run(
            self.timeout,
            "PUBLISH",
            conn.publish::<_, _, ()>(
                wasp_common::keys::STATE_CHANGED_CHANNEL,
                format!("{namespace}/{name}"),
            ),
        )
        .await
    }

    /// Files an event as given up on and moves the cursor past it, in one step.
    pub async fn dead_letter(
        &self,
        user_id: &str,
        letter: &DeadLetter,
        cursor: Option<(StreamId, u8)>,
    ) -> Result<(), ApiError> {
        let keys = UserKeys::for_user(user_id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .lpush(
                keys.webhook_dead(),
                serde_json::to_string(letter).unwrap_or_default(),
            )
            .ignore()
            .ltrim(keys.webhook_dead(), 0, DEAD_LETTER_CAP - 1)
            .ignore();
        if let Some(c) = cursor {
            pipe.hset(
                keys.webhook_state(&letter.endpoint_id),
                "cursor",
                format_cursor(c),
            )
            .ignore();
        }
        let mut conn = self.conn.clone();
        run(self.timeout, "LPUSH", pipe.query_async::<()>(&mut conn)).await
    }

    pub async fn dead_letters(&self, user_id: &str) -> Result<Vec<DeadLetter>, ApiError> {
        let mut conn = self.conn.clone();
        let raw: Vec<String> = run(
            self.timeout,
            "LRANGE",
            conn.lrange(UserKeys::for_user(user_id).webhook_dead(), 0, -1),
        )
        .await?;
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    pub async fn dead_letter_count(&self, user_id: &str) -> Result<u64, ApiError> {
        let mut conn = self.conn.clone();
        run(
            self.timeout,
            "LLEN",
            conn.llen(UserKeys::for_user(user_id).webhook_dead()),
        )
        .await
    }

    /// Moves every dead letter to its endpoint's replay list, oldest first (one transaction:
    /// none is lost or doubled); how many.
    pub async fn replay_dead_letters(&self, user_id: &str) -> Result<usize, ApiError> {
        let keys = UserKeys::for_user(user_id);
        let script = redis::Script::new(
            r"
            local letters = redis.call('LRANGE', KEYS[1], 0, -1)
            redis.call('DEL', KEYS[1])
            for i = #letters, 1, -1 do
              local ep = cjson.decode(letters[i])['endpointId']
              redis.call('RPUSH', ARGV[1] .. ep, letters[i])
            end
            return #letters
            ",
        );
        let mut conn = self.conn.clone();
        let prefix = keys.webhook_replay("");
        let n: usize = run(
            self.timeout,
            "EVAL",
            script
                .key(keys.webhook_dead())
                .arg(prefix)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(n)
    }

    /// The next dead letter to deliver again for an endpoint.
    pub async fn next_replay(
        &self,
        user_id: &str,
        id: &str,
    ) -> Result<Option<DeadLetter>, ApiError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = run(
            self.timeout,
            "LINDEX",
            conn.lindex(UserKeys::for_user(user_id).webhook_replay(id), 0),
        )
        .await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    pub async fn replay_done(&self, user_id: &str, id: &str) -> Result<(), ApiError> {
        let mut conn = self.conn.clone();
        run(
            self.timeout,
            "LPOP",
            conn.lpop::<_, ()>(UserKeys::for_user(user_id).webhook_replay(id), None),
        )
        .await
    }

    /// Users with endpoints of their own.
    pub async fn users(&self) -> Result<Vec<String>, ApiError> {
        let mut conn = self.conn.clone();
        run(self.timeout, "SMEMBERS", conn.smembers(WEBHOOK_USERS)).await
    }

    pub async fn version(&self) -> Result<i64, ApiError> {
        let mut conn = self.conn.clone();
        let v: Option<i64> = run(self.timeout, "GET", conn.get(WEBHOOK_VERSION)).await?;
        Ok(v.unwrap_or(0))
    }

    /// Records this replica as alive and returns every live replica (heartbeat within `ttl`).
    pub async fn heartbeat(&self, me: &str, ttl: Duration) -> Result<Vec<String>, ApiError> {
        let now = jiff::Timestamp::now().as_millisecond();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zadd(WEBHOOK_REPLICAS, me, now)
            .ignore()
            .zrembyscore(WEBHOOK_REPLICAS, "-inf", now - ttl.as_millis() as i64)
            .ignore()
            .zrange(WEBHOOK_REPLICAS, 0, -1);
        let mut conn = self.conn.clone();
        let (live,): (Vec<String>,) =
            run(self.timeout, "ZADD", pipe.query_async(&mut conn)).await?;
        Ok(live)
    }

    pub async fn leave(&self, me: &str) -> Result<(), ApiError> {
        let mut conn = self.conn.clone();
        run(
            self.timeout,
            "ZREM",
            conn.zrem::<_, _, ()>(WEBHOOK_REPLICAS, me),
        )
        .await
    }

    /// Takes or keeps an endpoint's lease; whether this replica holds it now.
    pub async fn hold_lease(
        &self,
        user_id: &str,
        id: &str,
        me: &str,
        ttl: Duration,
    ) -> Result<bool, ApiError> {
        let script = redis::Script::new(
            r"
            local holder = redis.call('GET', KEYS[1])
            if holder == ARGV[1] then
              redis.call('PEXPIRE', KEYS[1], ARGV[2])
              return 1
            end
            if not holder then
              redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
              return 1
            end
            return 0
            ",
        );
        let mut conn = self.conn.clone();
        let held: i64 = run(
            self.timeout,
            "EVAL",
            script
                .key(UserKeys::for_user(user_id).webhook_lease(id))
                .arg(me)
                .arg(ttl.as_millis() as u64)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(held == 1)
    }

    pub async fn release_lease(&self, user_id: &str, id: &str, me: &str) -> Result<(), ApiError> {
        let script = redis::Script::new(
            r"
            if redis.call('GET', KEYS[1]) == ARGV[1] then
              return redis.call('DEL', KEYS[1])
            end
            return 0
            ",
        );
        let mut conn = self.conn.clone();
        let _: i64 = run(
            self.timeout,
            "EVAL",
            script
                .key(UserKeys::for_user(user_id).webhook_lease(id))
                .arg(me)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_and_state_round_trip() {
        let c = (StreamId { ms: 17, seq: 2 }, 1);
        assert_eq!(parse_cursor(&format_cursor(c)), Some(c));
        assert_eq!(parse_cursor("17-2"), None);
        assert_eq!(parse_cursor("17-2/x"), None);
        let fields: HashMap<String, String> = [
            ("cursor", "5-0/255"),
            ("lastDelivery", r#"{"at":3,"eventId":"5-0","status":204}"#),
            ("failingSince", "9"),
            ("lastError", "garbage"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let s = parse_state(&fields);
        assert_eq!(s.cursor, Some((StreamId { ms: 5, seq: 0 }, 255)));
        assert_eq!(s.last_delivery.map(|d| d.status), Some(204));
        assert_eq!(s.failing_since, Some(9));
        assert_eq!(s.last_error, None, "an unreadable field reads as absent");
    }
}
