//! The user's data in Redis (plain, not auth material): messages per chat, chat summaries, own
//! messages' acks, the contacts whitelist, session logs, and the event stream. Messages are the
//! shared model ([`wasp_common::model::Message`]). Every message is deduplicated, stored and
//! announced in one Lua script, so it lands exactly once in the store and on the stream or not at
//! all — which is what lets the client's ack of an inbound message wait for it.
//!
//! Layout (all under the user's prefix, see [`UserKeys`]): `msgs:<chat>` sorted set of message
//! keys by score, `msgdata:<chat>` hash key → JSON, `chat:<chat>` hash (newest key and score,
//! unread count, push name, arrival counter), `chats` sorted set of chats by newest score,
//! `acks` hash key → highest ack, `dedup` sorted set of keys by time.
//!
//! A message's score is `unix_ms * 1000 + arrival % 1000`: time order, and arrival order among
//! messages of the same second (inbound timestamps have whole seconds).

pub mod changes;

use std::collections::HashMap;

use prost::Message as _;
use redis::aio::ConnectionManager;
use wasp_common::control::{Contact, LogEntry};
use wasp_common::events::{Envelope, Kind};
use wasp_common::keys::UserKeys;
use wasp_common::model::{Chat, GroupMetadata, Message, Wid, chat_name};

/// Session log lines kept (seed 003 `/logs`).
pub const MAX_LOGS: isize = 1000;

const STORE_MESSAGE: &str = r#"
-- KEYS: dedup, order, data, chats, chat, events, channel, stats
-- ARGV: key, unix_ms, json, chat, envelope, maxlen, store, emit, inbound, push_name
if redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1]) == 0 then return 0 end
local json = ARGV[3]
if ARGV[8] == '1' then
  local id = redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[5])
  redis.call('PUBLISH', KEYS[7], ARGV[5])
  -- The model's JSON ends with '}' and has no eventId yet (it is serialized last).
  json = string.sub(json, 1, -2) .. ',"eventId":"' .. id .. '"}'
end
if ARGV[7] == '1' then
  local seq = redis.call('HINCRBY', KEYS[5], 'seq', 1)
  local score = tonumber(ARGV[2]) * 1000 + (seq % 1000)
  redis.call('ZADD', KEYS[2], score, ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1], json)
  local last = tonumber(redis.call('HGET', KEYS[5], 'lastScore') or '-1')
  if score > last then
    redis.call('HSET', KEYS[5], 'lastScore', score, 'lastKey', ARGV[1])
    redis.call('ZADD', KEYS[4], score, ARGV[4])
  end
  if ARGV[9] == '1' then
    redis.call('HINCRBY', KEYS[5], 'unread', 1)
    if ARGV[10] ~= '' then redis.call('HSET', KEYS[5], 'pushName', ARGV[10]) end
  else
    -- Writing in a chat reads it, as on the phone.
    redis.call('HSET', KEYS[5], 'unread', 0)
  end
else
  redis.call('HINCRBY', KEYS[8], 'notStored', 1)
end
return 1
"#;

/// Raises a message's ack, never lowers it: 1 if it rose.
const RAISE_ACK: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-2')
if tonumber(ARGV[2]) > cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"#;

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

/// Whether and how a message enters the store and the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub store: bool,
    pub emit: bool,
}

/// A message's ack as stored: the higher of its own and the raised one.
fn with_ack(mut m: Message, raised: Option<i8>) -> Message {
    if let Some(a) = raised {
        m.ack = m.ack.max(a);
    }
    m
}

/// The summary of a chat from its hash fields (pure).
pub fn chat_from_fields(
    id: &Wid,
    fields: &HashMap<String, String>,
    last: Option<Message>,
    contact_name: Option<&str>,
) -> Chat {
    let push_name = fields.get("pushName").map(String::as_str).unwrap_or("");
    let group_metadata: Option<GroupMetadata> = fields
        .get("meta")
        .and_then(|j| serde_json::from_str(j).ok());
    // A group is named by its subject, as on the phone.
    let own_name = group_metadata
        .as_ref()
        .map(|g| g.subject.as_str())
        .filter(|s| !s.is_empty())
        .or(contact_name);
    Chat {
        name: chat_name(id, own_name, push_name),
        is_group: id.is_group(),
        unread_count: fields
            .get("unread")
            .and_then(|u| u.parse::<i64>().ok())
            .map_or(0, |u| u.clamp(0, i64::from(u32::MAX)) as u32),
        timestamp: last.as_ref().map_or(0, |m| m.timestamp),
        last_message: last,
        group_metadata,
        id: id.clone(),
    }
}

#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    keys: UserKeys,
    user_hash: String,
    events_maxlen: usize,
    script: redis::Script,
    raise_ack: redis::Script,
}

impl Store {
    pub fn new(conn: ConnectionManager, user_id: &str, events_maxlen: usize) -> Self {
        Self {
            conn,
            keys: UserKeys::for_user(user_id),
            user_hash: wasp_common::user_hash(user_id),
            events_maxlen,
            script: redis::Script::new(STORE_MESSAGE),
            raise_ack: redis::Script::new(RAISE_ACK),
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

    /// Stores and announces a new message exactly once per message key.
    pub async fn put_message(&self, m: &Message, keep: Keep) -> Result<StoreOutcome, StoreError> {
        self.put(m, keep, !m.from_me).await
    }

    /// Stores a message of the history the phone sent after linking: not announced, and it
    /// counts as read (the phone's unread state is its own).
    pub async fn put_history(&self, m: &Message) -> Result<StoreOutcome, StoreError> {
        self.put(
            m,
            Keep {
                store: true,
                emit: false,
            },
            false,
        )
        .await
    }

    async fn put(&self, m: &Message, keep: Keep, unread: bool) -> Result<StoreOutcome, StoreError> {
        let json = m.to_json();
        let event = self
            .envelope(Kind::Message(wasp_common::events::ChatMessage {
                json: json.clone(),
            }))
            .encode_to_vec();
        let unix_ms = m.timestamp.saturating_mul(1000);
        let n: i64 = self
            .script
            .key(self.keys.dedup())
            .key(self.keys.messages(&m.chat_id))
            .key(self.keys.message_data(&m.chat_id))
            .key(self.keys.chats())
            .key(self.keys.chat(&m.chat_id))
            .key(self.keys.events())
            .key(self.keys.events_channel())
            .key(self.keys.stats())
            .arg(m.key())
            .arg(unix_ms)
            .arg(json)
            .arg(&m.chat_id)
            .arg(event)
            .arg(self.events_maxlen)
            .arg(if keep.store { "1" } else { "0" })
            .arg(if keep.emit { "1" } else { "0" })
            .arg(if unread { "1" } else { "0" })
            .arg(if unread { m.push_name.as_str() } else { "" })
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(if n == 1 {
            StoreOutcome::New
        } else {
            StoreOutcome::Duplicate
        })
    }

    /// Raises a message's ack; the message (stored copy, or `fallback`) with its new ack when it
    /// rose, `None` when it did not. Publishes `message_ack` when it rose.
    pub async fn raise_ack(
        &self,
        chat: &str,
        key: &str,
        ack: i8,
        fallback: impl FnOnce() -> Message,
    ) -> Result<Option<Message>, StoreError> {
        let mut conn = self.conn.clone();
        let rose: i64 = self
            .raise_ack
            .key(self.keys.acks())
            .arg(key)
            .arg(ack)
            .invoke_async(&mut conn)
            .await?;
        if rose == 0 {
            return Ok(None);
        }
        let stored: Option<String> = redis::cmd("HGET")
            .arg(self.keys.message_data(chat))
            .arg(key)
            .query_async(&mut conn)
            .await?;
        let mut m = match stored {
            Some(j) => serde_json::from_str(&j)?,
            None => fallback(),
        };
        m.ack = m.ack.max(ack);
        self.emit(Kind::MessageAck(wasp_common::events::MessageAck {
            json: m.to_json(),
        }))
        .await?;
        Ok(Some(m))
    }

    /// Stored messages by key, each with its raised ack.
    async fn load(&self, chat: &str, keys: &[String]) -> Result<Vec<Message>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (raw, acks): (Vec<Option<String>>, Vec<Option<i8>>) = redis::pipe()
            .cmd("HMGET")
            .arg(self.keys.message_data(chat))
            .arg(keys)
            .cmd("HMGET")
            .arg(self.keys.acks())
            .arg(keys)
            .query_async(&mut self.conn.clone())
            .await?;
        raw.into_iter()
            .zip(acks)
            .filter_map(|(j, a)| j.map(|j| (j, a)))
            .map(|(j, a)| Ok(with_ack(serde_json::from_str(&j)?, a)))
            .collect()
    }

    /// Chats from `offset`, newest activity first, and whether more follow.
    pub async fn chats(&self, offset: u32, limit: u32) -> Result<(Vec<Chat>, bool), StoreError> {
        let mut conn = self.conn.clone();
        let end = i64::from(offset) + i64::from(limit.max(1)); // one more: is there a next page?
        let mut ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(self.keys.chats())
            .arg(offset)
            .arg(end)
            .query_async(&mut conn)
            .await?;
        let more = ids.len() > limit as usize;
        ids.truncate(limit as usize);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(chat) = self.chat(&id).await? {
                out.push(chat);
            }
        }
        Ok((out, more))
    }

    /// One stored chat by its id (`_serialized`).
    pub async fn chat(&self, id: &str) -> Result<Option<Chat>, StoreError> {
        let Ok(wid) = Wid::parse(id) else {
            return Ok(None);
        };
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.chat(&wid.serialized))
            .query_async(&mut conn)
            .await?;
        // A chat is one with a message, or a group this user is in.
        if !fields.contains_key("lastKey") && !fields.contains_key("meta") {
            return Ok(None);
        }
        let last = match fields.get("lastKey") {
            Some(k) => self
                .load(&wid.serialized, std::slice::from_ref(k))
                .await?
                .pop(),
            None => None,
        };
        let contact = match wid.phone_digits() {
            Some(p) => self.contact(p).await?.map(|c| c.name),
            None => None,
        };
        Ok(Some(chat_from_fields(
            &wid,
            &fields,
            last,
            contact.as_deref(),
        )))
    }

    /// The last `limit` messages of a chat (older than message `before` if given), oldest first.
    pub async fn messages(
        &self,
        chat: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let mut conn = self.conn.clone();
        let max = match before {
            Some(key) => {
                let score: Option<f64> = redis::cmd("ZSCORE")
                    .arg(self.keys.messages(chat))
                    .arg(key)
                    .query_async(&mut conn)
                    .await?;
                match score {
                    Some(s) => format!("({s}"),
                    None => return Ok(Vec::new()),
                }
            }
            None => "+inf".to_owned(),
        };
        let mut keys: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(self.keys.messages(chat))
            .arg(max)
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        keys.reverse();
        self.load(chat, &keys).await
    }

    /// The key of a stored message of `chat` given its plain id or its `_serialized` id.
    pub async fn find_key(&self, chat: &str, id: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        let candidates = if id.contains('_') {
            vec![id.to_owned()]
        } else {
            vec![format!("false_{chat}_{id}"), format!("true_{chat}_{id}")]
        };
        for key in candidates {
            let present: bool = redis::cmd("HEXISTS")
                .arg(self.keys.message_data(chat))
                .arg(&key)
                .query_async(&mut conn)
                .await?;
            if present {
                return Ok(Some(key));
            }
        }
        Ok(None)
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

    pub async fn contact(&self, phone: &str) -> Result<Option<Contact>, StoreError> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(self.keys.contacts())
            .arg(phone)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(raw.map(|c| serde_json::from_str(&c)).transpose()?)
    }

    pub async fn is_contact(&self, phone: &str) -> Result<bool, StoreError> {
        Ok(redis::cmd("HEXISTS")
            .arg(self.keys.contacts())
            .arg(phone)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// A session log entry: kept in the capped list and sent as a `log` event.
    pub async fn log(&self, level: &str, event_type: &str, data: &str) -> Result<(), StoreError> {
        let entry = LogEntry {
            event_type: event_type.to_owned(),
            event_data: data.to_owned(),
            level: level.to_owned(),
            timestamp: jiff::Timestamp::now().to_string(),
        };
        redis::pipe()
            .lpush(self.keys.logs(), serde_json::to_string(&entry)?)
            .ignore()
            .ltrim(self.keys.logs(), 0, MAX_LOGS - 1)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        self.emit(Kind::Log(wasp_common::events::Log {
            level: entry.level,
            message: entry.event_data,
            event_type: entry.event_type,
        }))
        .await
    }

    pub async fn logs(&self, limit: u32) -> Result<Vec<LogEntry>, StoreError> {
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(self.keys.logs())
            .arg(0)
            .arg(i64::from(limit.max(1)) - 1)
            .query_async(&mut self.conn.clone())
            .await?;
        // Entries of an older layout are skipped rather than failing the whole list.
        Ok(raw
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    pub async fn stat(&self, name: &str) -> Result<i64, StoreError> {
        let v: Option<i64> = redis::cmd("HGET")
            .arg(self.keys.stats())
            .arg(name)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// Deletes messages, dedup keys, acks and chats older than `cutoff_ms`; returns messages
    /// removed.
    pub async fn apply_retention(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let chats: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.chats())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let cutoff_score = format!("({}", cutoff_ms.saturating_mul(1000));
        let mut removed = 0usize;
        for chat in &chats {
            let old: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(self.keys.messages(chat))
                .arg("-inf")
                .arg(&cutoff_score)
                .query_async(&mut conn)
                .await?;
            if old.is_empty() {
                continue;
            }
            let mut p = redis::pipe();
            p.cmd("ZREMRANGEBYSCORE")
                .arg(self.keys.messages(chat))
                .arg("-inf")
                .arg(&cutoff_score)
                .ignore()
                .cmd("HDEL")
                .arg(self.keys.message_data(chat))
                .arg(&old)
                .ignore()
                .cmd("HDEL")
                .arg(self.keys.acks())
                .arg(&old)
                .ignore();
            p.query_async::<()>(&mut conn).await?;
            removed += old.len();
        }
        let stale: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.chats())
            .arg("-inf")
            .arg(&cutoff_score)
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
            for chat in &stale {
                p.cmd("DEL").arg(self.keys.chat(chat)).ignore();
            }
        }
        p.query_async::<()>(&mut conn).await?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_common::model::MessageParts;

    fn msg(ack: i8) -> Message {
        let chat = Wid::parse("41790000001@c.us").unwrap();
        let mut m = Message::new(MessageParts {
            id: "A",
            chat: &chat,
            own: None,
            author: None,
            from_me: true,
            body: "x",
            kind: "chat",
            timestamp: 7,
            has_media: false,
            has_quoted_msg: false,
            push_name: "",
        });
        m.ack = ack;
        m
    }

    #[test]
    fn acks_only_rise() {
        assert_eq!(with_ack(msg(1), Some(3)).ack, 3);
        assert_eq!(with_ack(msg(3), Some(2)).ack, 3);
        assert_eq!(with_ack(msg(1), None).ack, 1);
    }

    #[test]
    fn chat_summaries_name_count_and_date_from_their_fields() {
        let id = Wid::parse("41790000001@c.us").unwrap();
        let mut f = HashMap::new();
        f.insert("unread".to_owned(), "4".to_owned());
        f.insert("pushName".to_owned(), "Ana".to_owned());
        let c = chat_from_fields(&id, &f, Some(msg(1)), None);
        assert_eq!(
            (c.name.as_str(), c.unread_count, c.timestamp),
            ("Ana", 4, 7)
        );
        assert!(!c.is_group);
        let c = chat_from_fields(&id, &f, None, Some("Ana M."));
        assert_eq!((c.name.as_str(), c.timestamp), ("Ana M.", 0));
        f.insert("unread".to_owned(), "-3".to_owned());
        f.remove("pushName");
        let c = chat_from_fields(&id, &f, None, None);
        assert_eq!((c.name.as_str(), c.unread_count), ("+41790000001", 0));
    }
}
