//! Changes to stored messages (reactions, edits, revokes), read state, group metadata and
//! idempotent-send records.
//!
//! A change is applied compare-and-set: the new JSON is written only if the stored JSON is still
//! the one the change was computed from, and the change's own message key is deduplicated and
//! its event appended in the same script — so a redelivered reaction is applied once, and two
//! changes racing on one message (a reaction and an edit) both land.

use prost::Message as _;
use wasp_common::events::Kind;
use wasp_common::model::{GroupMetadata, Message};

use super::{Store, StoreError};

const APPLY_CHANGE: &str = r#"
-- KEYS: dedup, data, events, channel
-- ARGV: change key, target key, old json ('' = absent), new json ('' = no write), envelope,
--       maxlen, unix_ms, emit
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local cur = redis.call('HGET', KEYS[2], ARGV[2])
if (cur or '') ~= ARGV[3] then return -1 end
redis.call('ZADD', KEYS[1], ARGV[7], ARGV[1])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], ARGV[2], ARGV[4]) end
if ARGV[8] == '1' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[5])
  redis.call('PUBLISH', KEYS[4], ARGV[5])
end
return 1
"#;

/// Sets an idempotency record to `pending` unless it exists; the record otherwise.
const CLAIM_IDEMPOTENCY: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
"#;

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOutcome {
    Applied,
    /// The change's key was seen before (a redelivery).
    Duplicate,
    /// The stored message changed since it was read: read it again.
    Conflict,
}

/// Attempts of a compare-and-set change before giving up (each lost race means another change
/// landed, so this is only reached under a storm of changes to one message).
pub const MAX_CHANGE_ATTEMPTS: usize = 8;

impl Store {
    /// One stored message by key, as JSON (the compare-and-set's "old" value) and parsed.
    pub async fn message_json(
        &self,
        chat: &str,
        key: &str,
    ) -> Result<Option<(String, Message)>, StoreError> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(self.keys.message_data(chat))
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await?;
        match raw {
            Some(j) => {
                let m = serde_json::from_str(&j)?;
                Ok(Some((j, m)))
            }
            None => Ok(None),
        }
    }

    /// The raised ack of a message, if a receipt raised it.
    pub async fn ack(&self, key: &str) -> Result<Option<i8>, StoreError> {
        Ok(redis::cmd("HGET")
            .arg(self.keys.acks())
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Applies one change: `new` replaces `old` (the stored JSON it was computed from, `None`
    /// when the target is not stored, `new` then `None` too) and `event` is announced if `emit`.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply_change(
        &self,
        change_key: &str,
        chat: &str,
        target_key: &str,
        old: Option<&str>,
        new: Option<&Message>,
        event: Kind,
        emit: bool,
    ) -> Result<ChangeOutcome, StoreError> {
        let envelope = self.envelope(event).encode_to_vec();
        let n: i64 = redis::Script::new(APPLY_CHANGE)
            .key(self.keys.dedup())
            .key(self.keys.message_data(chat))
            .key(self.keys.events())
            .key(self.keys.events_channel())
            .arg(change_key)
            .arg(target_key)
            .arg(old.unwrap_or_default())
            .arg(new.map(Message::to_json).unwrap_or_default())
            .arg(envelope)
            .arg(self.events_maxlen)
            .arg(jiff::Timestamp::now().as_millisecond())
            .arg(if emit { "1" } else { "0" })
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match n {
            1 => ChangeOutcome::Applied,
            0 => ChangeOutcome::Duplicate,
            _ => ChangeOutcome::Conflict,
        })
    }

    /// The newest inbound messages of a chat that are still unread (at most `max`), oldest
    /// first.
    pub async fn unread_inbound(&self, chat: &str, max: u32) -> Result<Vec<Message>, StoreError> {
        let unread: Option<i64> = redis::cmd("HGET")
            .arg(self.keys.chat(chat))
            .arg("unread")
            .query_async(&mut self.conn.clone())
            .await?;
        let n = unread.unwrap_or(0).clamp(0, i64::from(max)) as u32;
        if n == 0 {
            return Ok(Vec::new());
        }
        // The unread ones are the newest inbound: read a little more to skip own messages.
        let window = n.saturating_mul(2).min(max);
        let mut inbound: Vec<Message> = self
            .messages(chat, None, window)
            .await?
            .into_iter()
            .filter(|m| !m.from_me)
            .collect();
        let skip = inbound.len().saturating_sub(n as usize);
        Ok(inbound.split_off(skip))
    }

    /// The chat's unread count back to 0 (it was read).
    pub async fn mark_chat_read(&self, chat: &str) -> Result<(), StoreError> {
        let exists: bool = redis::cmd("EXISTS")
            .arg(self.keys.chat(chat))
            .query_async(&mut self.conn.clone())
            .await?;
        if exists {
            redis::cmd("HSET")
                .arg(self.keys.chat(chat))
                .arg("unread")
                .arg(0)
                .query_async::<()>(&mut self.conn.clone())
                .await?;
        }
        Ok(())
    }

    /// Records a group's metadata; the group becomes a chat (listed by its creation time until
    /// a message in it is newer).
    pub async fn put_group(&self, g: &GroupMetadata) -> Result<(), StoreError> {
        let score = g.creation.max(0).saturating_mul(1_000_000);
        redis::pipe()
            .cmd("HSET")
            .arg(self.keys.chat(&g.id.serialized))
            .arg("meta")
            .arg(serde_json::to_string(g)?)
            .ignore()
            .cmd("ZADD")
            .arg(self.keys.chats())
            .arg("NX")
            .arg(score)
            .arg(&g.id.serialized)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Whether a group's metadata is recorded.
    pub async fn has_group(&self, group: &str) -> Result<bool, StoreError> {
        Ok(redis::cmd("HEXISTS")
            .arg(self.keys.chat(group))
            .arg("meta")
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Claims an idempotency key for `owner` (`pending` for `ttl_secs`): `None` when claimed,
    /// else the record already there (`pending:<owner>` or the first answer).
    pub async fn claim_idempotency(
        &self,
        record: &str,
        owner: &str,
        ttl_secs: u64,
    ) -> Result<Option<String>, StoreError> {
        Ok(redis::Script::new(CLAIM_IDEMPOTENCY)
            .key(self.keys.idempotency(record))
            .arg(format!("pending:{owner}"))
            .arg(ttl_secs)
            .invoke_async(&mut self.conn.clone())
            .await?)
    }

    /// Takes over a pending claim left by a process that is gone.
    pub async fn take_over_idempotency(
        &self,
        record: &str,
        owner: &str,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        redis::cmd("SET")
            .arg(self.keys.idempotency(record))
            .arg(format!("pending:{owner}"))
            .arg("EX")
            .arg(ttl_secs)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Keeps the first answer under its key for `ttl_secs`.
    pub async fn finish_idempotency(
        &self,
        record: &str,
        answer: &str,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        redis::cmd("SET")
            .arg(self.keys.idempotency(record))
            .arg(answer)
            .arg("EX")
            .arg(ttl_secs)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Drops a claim whose send failed, so the caller may retry with the same key.
    pub async fn release_idempotency(&self, record: &str) -> Result<(), StoreError> {
        redis::cmd("DEL")
            .arg(self.keys.idempotency(record))
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}
