//! Webhook endpoints as stored in Redis, shared by the two parts that write them: wasp-api
//! (`PUT /webhooks`, the user's own endpoint, and the dispatcher that delivers) and the operator
//! (`spec.webhooks` of a `WhatsAppSession`). Both seal signing secrets the same way, under the
//! webhook key, and check URLs with the same [`policy::UrlPolicy`].
//!
//! An endpoint lives in the user's `webhooks` hash (field: its id) with its delivery state in
//! `webhook_state(id)`; the set [`WEBHOOK_USERS`] names the users that have any, and
//! [`WEBHOOK_VERSION`] moves on every change so dispatchers reload.

pub mod policy;

use std::collections::HashMap;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use serde::{Deserialize, Serialize};

use crate::crypto::{AuthCipher, CryptoError, MasterKey};
use crate::keys::{UserKeys, WEBHOOK_USERS, WEBHOOK_VERSION};

/// The id of the endpoint a user sets through `PUT /webhooks` (one per user).
pub const USER_ENDPOINT: &str = "api";

/// The id of a `spec.webhooks` entry: `spec-<name>`.
pub fn spec_endpoint_id(name: &str) -> String {
    format!("{SPEC_PREFIX}{name}")
}

/// Ids of endpoints the operator owns (from `spec.webhooks`) start with this.
pub const SPEC_PREFIX: &str = "spec-";

/// Ids of the global endpoints (the API's configuration, every user's events) start with this.
pub const GLOBAL_PREFIX: &str = "global-";

/// An endpoint's cursor as stored: the stream entry id and the part of it handled last
/// (`u8::MAX`: the whole entry).
pub fn cursor_text(entry_id: &str, part: u8) -> String {
    format!("{entry_id}/{part}")
}

/// Event types a webhook can ask for: the durable events of the user's stream (QR and pairing
/// codes are never in it, they carry key material). `*` is every one of them.
pub const EVENT_TYPES: [&str; 11] = [
    "message",
    "message_create",
    "message_ack",
    "message_reaction",
    "message_edit",
    "message_revoke_everyone",
    "status",
    "ready",
    "disconnected",
    "error",
    "log",
];

/// An endpoint's event filter as configured: known names only, `*` alone, no duplicates;
/// `None` is `["message"]`.
pub fn parse_events(events: Option<Vec<String>>) -> Result<Vec<String>, String> {
    let mut events = events.unwrap_or_else(|| vec!["message".into()]);
    for e in events.iter_mut() {
        *e = e.trim().to_owned();
    }
    events.sort();
    events.dedup();
    if events.is_empty() {
        return Err("events must name at least one event type (or \"*\")".into());
    }
    if events.iter().any(|e| e == "*") {
        return if events.len() == 1 {
            Ok(events)
        } else {
            Err("\"*\" already means every event type".into())
        };
    }
    if let Some(bad) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
        return Err(format!(
            "unknown event type {bad:?}; known: {}",
            EVENT_TYPES.join(", ")
        ));
    }
    Ok(events)
}

/// One endpoint as stored in the user's `webhooks` hash. The signing secret is sealed with the
/// webhook key (AES-256-GCM, per-user key, the Redis key and endpoint id as associated data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEndpoint {
    pub id: String,
    pub user_id: String,
    pub url: String,
    pub events: Vec<String>,
    /// base64 of the sealed `whsec_…` secret.
    pub secret_sealed: String,
    pub created_at: i64,
}

/// Seals and opens signing secrets with a per-user key derived from the webhook key.
#[derive(Clone)]
pub struct SecretBox {
    key: MasterKey,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn new(key: MasterKey) -> Self {
        Self { key }
    }

    fn aad(user_id: &str, endpoint: &str) -> Vec<u8> {
        format!("{}#{endpoint}", UserKeys::for_user(user_id).webhooks()).into_bytes()
    }

    pub fn seal(&self, user_id: &str, endpoint: &str, secret: &str) -> Result<String, CryptoError> {
        let sealed = AuthCipher::new(&self.key, user_id)
            .seal(&Self::aad(user_id, endpoint), secret.as_bytes())?;
        Ok(data_encoding::BASE64.encode(&sealed))
    }

    pub fn open(&self, user_id: &str, endpoint: &str, sealed: &str) -> Option<String> {
        let bytes = data_encoding::BASE64.decode(sealed.as_bytes()).ok()?;
        let plain = AuthCipher::new(&self.key, user_id)
            .open(&Self::aad(user_id, endpoint), &bytes)
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

/// A new Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", data_encoding::BASE64.encode(&bytes))
}

/// Whether `secret` is a Standard Webhooks signing secret (`whsec_` + base64).
pub fn is_signing_secret(secret: &str) -> bool {
    secret.starts_with("whsec_") && standardwebhooks::Webhook::new(secret).is_ok()
}

/// The user's endpoints, by id.
pub async fn endpoints(
    conn: &mut ConnectionManager,
    user_id: &str,
) -> redis::RedisResult<Vec<StoredEndpoint>> {
    let all: HashMap<String, String> = conn.hgetall(UserKeys::for_user(user_id).webhooks()).await?;
    let mut list: Vec<StoredEndpoint> = all
        .values()
        .filter_map(|v| serde_json::from_str(v).ok())
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(list)
}

/// Saves an endpoint. A new one starts at the end of the user's stream: it receives what
/// happens from now on, not the history; a changed one keeps its cursor.
pub async fn put(conn: &mut ConnectionManager, ep: &StoredEndpoint) -> redis::RedisResult<()> {
    let keys = UserKeys::for_user(&ep.user_id);
    let top: StreamRangeReply = conn.xrevrange_count(keys.events(), "+", "-", 1).await?;
    let start = top
        .ids
        .first()
        .map_or_else(|| "0-0".to_owned(), |e| e.id.clone());
    let json = serde_json::to_string(ep).unwrap_or_default();
    redis::pipe()
        .atomic()
        .hset(keys.webhooks(), &ep.id, json)
        .ignore()
        .hset_nx(
            keys.webhook_state(&ep.id),
            "cursor",
            cursor_text(&start, u8::MAX),
        )
        .ignore()
        .sadd(WEBHOOK_USERS, &ep.user_id)
        .ignore()
        .incr(WEBHOOK_VERSION, 1)
        .ignore()
        .query_async(conn)
        .await
}

/// Removes an endpoint and its state; whether it existed.
pub async fn delete(
    conn: &mut ConnectionManager,
    user_id: &str,
    id: &str,
) -> redis::RedisResult<bool> {
    let keys = UserKeys::for_user(user_id);
    let (removed, left): (i64, i64) = redis::pipe()
        .atomic()
        .hdel(keys.webhooks(), id)
        .del(keys.webhook_state(id))
        .ignore()
        .del(keys.webhook_replay(id))
        .ignore()
        .hlen(keys.webhooks())
        .incr(WEBHOOK_VERSION, 1)
        .ignore()
        .query_async(conn)
        .await?;
    if left == 0 {
        conn.srem::<_, _, ()>(WEBHOOK_USERS, user_id).await?;
    }
    Ok(removed > 0)
}

/// An endpoint that keeps failing: since when (unix seconds) and the last error's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub id: String,
    pub since: i64,
    pub error: String,
}

/// Which of the user's endpoints are failing now (their `failingSince` is set).
pub async fn failing(
    conn: &mut ConnectionManager,
    user_id: &str,
    ids: &[String],
) -> redis::RedisResult<Vec<Failing>> {
    let keys = UserKeys::for_user(user_id);
    let mut out = Vec::new();
    for id in ids {
        let (since, error): (Option<i64>, Option<String>) = conn
            .hget(keys.webhook_state(id), &["failingSince", "lastError"])
            .await?;
        if let Some(since) = since {
            let error = error
                .and_then(|e| serde_json::from_str::<serde_json::Value>(&e).ok())
                .and_then(|e| e["error"].as_str().map(str::to_owned))
                .unwrap_or_default();
            out.push(Failing {
                id: id.clone(),
                since,
                error,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_filter_takes_known_names_or_everything() {
        assert_eq!(parse_events(None).unwrap(), ["message"]);
        assert_eq!(
            parse_events(Some(vec![
                "message_ack".into(),
                " message".into(),
                "message".into()
            ]))
            .unwrap(),
            ["message", "message_ack"]
        );
        assert_eq!(parse_events(Some(vec!["*".into()])).unwrap(), ["*"]);
        assert!(parse_events(Some(vec![])).is_err());
        assert!(parse_events(Some(vec!["*".into(), "message".into()])).is_err());
        let err = parse_events(Some(vec!["qr".into()])).unwrap_err();
        assert!(err.contains("\"qr\""), "{err}");
    }

    #[test]
    fn secrets_are_sealed_per_user_and_endpoint() {
        let b = SecretBox::new(MasterKey::from_bytes([7; 32]));
        let s = new_secret();
        assert!(s.starts_with("whsec_") && s.len() > 40);
        assert!(is_signing_secret(&s));
        assert!(!is_signing_secret("whsec_not base64!") && !is_signing_secret("c2VjcmV0"));
        assert_ne!(s, new_secret());
        let sealed = b.seal("u1", "api", &s).unwrap();
        assert!(!sealed.contains(&s[6..]));
        assert_eq!(b.open("u1", "api", &sealed).as_deref(), Some(s.as_str()));
        assert_eq!(b.open("u2", "api", &sealed), None, "another user's key");
        assert_eq!(b.open("u1", "other", &sealed), None, "another endpoint");
        let other = SecretBox::new(MasterKey::from_bytes([8; 32]));
        assert_eq!(other.open("u1", "api", &sealed), None);
        assert_eq!(spec_endpoint_id("crm"), "spec-crm");
    }
}
