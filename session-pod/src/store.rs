//! The user's data in Redis (plain, not auth material): chats by last activity, messages per
//! chat, the contacts whitelist, session logs, and the event stream. Every inbound message is
//! stored, deduplicated and published in one Lua script, so it lands exactly once in the store
//! and on the stream or not at all — which is what lets the client's ack wait for it.

use prost::Message as _;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use wasp_common::events::{Envelope, Kind};
use wasp_common::keys::UserKeys;

/// Session log lines kept (seed 003 `/logs`).
pub const MAX_LOGS: isize = 1000;

const STORE_MESSAGE: &str = r#"
-- KEYS: dedup, msgs, chats, chat_meta, events, channel, stats
-- ARGV: dedup_id, score_ms, message_json, chat, meta_json, event, maxlen, store, emit
if redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1]) == 0 then return 0 end
if ARGV[8] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[3], 'GT', ARGV[2], ARGV[4])
  redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[4])
  redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
else
  redis.call('HINCRBY', KEYS[7], 'notStored', 1)
end
if ARGV[9] == '1' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*', 'e', ARGV[6])
  redis.call('PUBLISH', KEYS[6], ARGV[6])
end
return 1
"#;

/// A stored message (JSON in the per-chat sorted set; the API returns it as is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    pub id: String,
    pub chat: String,
    pub sender: String,
    pub from_me: bool,
    pub text: String,
    /// Unix milliseconds.
    pub timestamp: i64,
    #[serde(default)]
    pub push_name: String,
    pub kind: String,
}

/// Chat summary (hash `chats:meta`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatSummary {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub last_message: String,
    pub last_activity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    pub phone: String,
    #[serde(default)]
    pub name: String,
    pub added_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    pub at: i64,
    pub level: String,
    pub message: String,
}

/// What happened to a message offered to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    New,
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl StoreError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Json(_) => "json",
        }
    }
}

/// Deduplication id: stanza ids are unique only within `(chat, sender)`.
pub fn dedup_id(chat: &str, sender: &str, id: &str) -> String {
    format!("{chat}|{sender}|{id}")
}

/// One-line preview of a message for the chat list.
pub fn preview(text: &str) -> String {
    const MAX: usize = 100;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    keys: UserKeys,
    user_hash: String,
    events_maxlen: usize,
    script: redis::Script,
}

impl Store {
    pub fn new(conn: ConnectionManager, user_id: &str, events_maxlen: usize) -> Self {
        Self {
            conn,
            keys: UserKeys::for_user(user_id),
            user_hash: wasp_common::user_hash(user_id),
            events_maxlen,
            script: redis::Script::new(STORE_MESSAGE),
        }
    }

    pub fn keys(&self) -> &UserKeys {
        &self.keys
    }

    pub fn envelope(&self, kind: Kind) -> Envelope {
        Envelope {
            user_hash: self.user_hash.clone(),
            at_ms: jiff::Timestamp::now().as_millisecond(),
            kind: Some(kind),
        }
    }

    /// Publishes an event on the live channel only. For QR codes and pairing codes: the QR
    /// payload carries the companion's ADV secret and public keys, which must not sit in the
    /// durable stream; a late consumer reads the current one from `/v1/status`.
    pub async fn publish_only(&self, kind: Kind) -> Result<(), StoreError> {
        let bytes = self.envelope(kind).encode_to_vec();
        wasp_common::events::publish_only_cmd(&self.keys, &bytes)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Appends an event to the stream and publishes it.
    pub async fn emit(&self, kind: Kind) -> Result<(), StoreError> {
        let bytes = self.envelope(kind).encode_to_vec();
        wasp_common::events::emit_pipeline(&self.keys, self.events_maxlen, &bytes)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Stores (if `store`) and publishes (if `emit`) a message exactly once per dedup id.
    pub async fn put_message(
        &self,
        m: &StoredMessage,
        store: bool,
        emit: bool,
    ) -> Result<StoreOutcome, StoreError> {
        let event = self
            .envelope(Kind::Message(wasp_common::events::ChatMessage {
                id: m.id.clone(),
                chat: m.chat.clone(),
                sender: m.sender.clone(),
                from_me: m.from_me,
                text: m.text.clone(),
                timestamp: m.timestamp / 1000,
                push_name: m.push_name.clone(),
                kind: m.kind.clone(),
            }))
            .encode_to_vec();
        let meta = ChatSummary {
            id: m.chat.clone(),
            name: if m.from_me {
                String::new()
            } else {
                m.push_name.clone()
            },
            last_message: preview(&m.text),
            last_activity: m.timestamp,
        };
        let n: i64 = self
            .script
            .key(self.keys.dedup())
            .key(self.keys.messages(&m.chat))
            .key(self.keys.chats())
            .key(self.keys.chat_meta())
            .key(self.keys.events())
            .key(self.keys.events_channel())
            .key(self.keys.stats())
            .arg(dedup_id(&m.chat, &m.sender, &m.id))
            .arg(m.timestamp)
            .arg(serde_json::to_string(m)?)
            .arg(&m.chat)
            .arg(serde_json::to_string(&meta)?)
            .arg(event)
            .arg(self.events_maxlen)
            .arg(if store { "1" } else { "0" })
            .arg(if emit { "1" } else { "0" })
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(if n == 1 {
            StoreOutcome::New
        } else {
            StoreOutcome::Duplicate
        })
    }

    /// Chats, most recent activity first.
    pub async fn chats(&self, offset: usize, limit: usize) -> Result<Vec<ChatSummary>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(self.keys.chats())
            .arg(offset)
            .arg(offset + limit.max(1) - 1)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let metas: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.chat_meta())
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
        metas
            .into_iter()
            .flatten()
            .map(|m| Ok(serde_json::from_str(&m)?))
            .collect()
    }

    pub async fn chat(&self, chat: &str) -> Result<Option<ChatSummary>, StoreError> {
        let m: Option<String> = redis::cmd("HGET")
            .arg(self.keys.chat_meta())
            .arg(chat)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(m.map(|m| serde_json::from_str(&m)).transpose()?)
    }

    /// Messages of a chat, newest first, older than `before` (unix ms) if given.
    pub async fn messages(
        &self,
        chat: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let max = before.map_or("+inf".to_owned(), |b| format!("({b}"));
        let raw: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(self.keys.messages(chat))
            .arg(max)
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn.clone())
            .await?;
        raw.iter().map(|m| Ok(serde_json::from_str(m)?)).collect()
    }

    pub async fn message_count(&self, chat: &str) -> Result<usize, StoreError> {
        Ok(redis::cmd("ZCARD")
            .arg(self.keys.messages(chat))
            .query_async(&mut self.conn.clone())
            .await?)
    }

    pub async fn add_contact(&self, c: &Contact) -> Result<bool, StoreError> {
        let added: i64 = redis::cmd("HSET")
            .arg(self.keys.contacts())
            .arg(&c.phone)
            .arg(serde_json::to_string(c)?)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(added == 1)
    }

    pub async fn remove_contact(&self, phone: &str) -> Result<bool, StoreError> {
        let n: i64 = redis::cmd("HDEL")
            .arg(self.keys.contacts())
            .arg(phone)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n == 1)
    }

    pub async fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        let raw: Vec<String> = redis::cmd("HVALS")
            .arg(self.keys.contacts())
            .query_async(&mut self.conn.clone())
            .await?;
        let mut out: Vec<Contact> = raw
            .iter()
            .map(|c| serde_json::from_str(c))
            .collect::<Result<_, _>>()?;
        out.sort_by(|a, b| a.phone.cmp(&b.phone));
        Ok(out)
    }

    pub async fn is_contact(&self, phone: &str) -> Result<bool, StoreError> {
        Ok(redis::cmd("HEXISTS")
            .arg(self.keys.contacts())
            .arg(phone)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// A session log line: kept in the capped list and sent as a `log` event.
    pub async fn log(&self, level: &str, message: &str) -> Result<(), StoreError> {
        let line = LogLine {
            at: jiff::Timestamp::now().as_millisecond(),
            level: level.to_owned(),
            message: message.to_owned(),
        };
        redis::pipe()
            .lpush(self.keys.logs(), serde_json::to_string(&line)?)
            .ignore()
            .ltrim(self.keys.logs(), 0, MAX_LOGS - 1)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        self.emit(Kind::Log(wasp_common::events::Log {
            level: line.level,
            message: line.message,
        }))
        .await
    }

    pub async fn logs(&self, limit: usize) -> Result<Vec<LogLine>, StoreError> {
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(self.keys.logs())
            .arg(0)
            .arg(limit.max(1) as isize - 1)
            .query_async(&mut self.conn.clone())
            .await?;
        raw.iter().map(|l| Ok(serde_json::from_str(l)?)).collect()
    }

    pub async fn stat(&self, name: &str) -> Result<i64, StoreError> {
        let v: Option<i64> = redis::cmd("HGET")
            .arg(self.keys.stats())
            .arg(name)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// Deletes messages, dedup ids and chats older than `cutoff_ms`; returns messages removed.
    pub async fn apply_retention(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let chats: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.chats())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let mut removed = 0usize;
        for chat in &chats {
            let n: usize = redis::cmd("ZREMRANGEBYSCORE")
                .arg(self.keys.messages(chat))
                .arg("-inf")
                .arg(format!("({cutoff_ms}"))
                .query_async(&mut conn)
                .await?;
            removed += n;
        }
        let stale: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.chats())
            .arg("-inf")
            .arg(format!("({cutoff_ms}"))
            .query_async(&mut conn)
            .await?;
        let mut p = redis::pipe();
        p.cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.dedup())
            .arg("-inf")
            .arg(format!("({cutoff_ms}"))
            .ignore();
        if !stale.is_empty() {
            p.cmd("ZREM").arg(self.keys.chats()).arg(&stale).ignore();
            p.cmd("HDEL")
                .arg(self.keys.chat_meta())
                .arg(&stale)
                .ignore();
        }
        p.query_async::<()>(&mut conn).await?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_ids_are_scoped_by_chat_and_sender() {
        assert_ne!(dedup_id("a", "b", "1"), dedup_id("a", "c", "1"));
        assert_eq!(dedup_id("a", "b", "1"), "a|b|1");
    }

    #[test]
    fn preview_cuts_on_char_boundaries() {
        assert_eq!(preview("hi"), "hi");
        let long = "é".repeat(150);
        let p = preview(&long);
        assert_eq!(p.chars().count(), 101);
        assert!(p.ends_with('…'));
    }
}
