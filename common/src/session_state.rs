//! The session state record: what a session pod knows about its WhatsApp connection, written to
//! Redis (`UserKeys::state`) whenever it changes and announced on [`STATE_CHANGED_CHANNEL`]. The
//! operator folds it into the WhatsAppSession status; the session pod has no Kubernetes access.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::keys::{STATE_CHANGED_CHANNEL, UserKeys};

/// The connection phase as the session pod sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionPhase {
    /// Process up, client not yet connected.
    Starting,
    /// Not paired: a QR code (or pairing code) is waiting for the phone.
    AwaitingScan,
    /// Logged in and connected to WhatsApp.
    Connected,
    /// Connection lost, retrying within the reconnect policy.
    Reconnecting,
    /// Not connected and not trying (asked to disconnect).
    Disconnected,
    /// The phone removed this device; auth state was purged; a new scan is needed.
    LoggedOut,
    /// Gave up (reconnect attempts exhausted, or an unrecoverable error).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionState {
    pub phase: SessionPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<Timestamp>,
    #[serde(default)]
    pub reconnect_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub updated_at: Timestamp,
}

impl SessionState {
    pub fn new(phase: SessionPhase, now: Timestamp) -> Self {
        Self {
            phase,
            phone_number: None,
            push_name: None,
            connected_at: None,
            last_activity: None,
            reconnect_count: 0,
            last_error: None,
            updated_at: now,
        }
    }
}

/// The WhatsAppSession a session pod belongs to, named in its state-change announcements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    pub namespace: String,
    pub name: String,
}

impl SessionRef {
    /// The announcement payload: `namespace/name`.
    pub fn to_payload(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn from_payload(payload: &str) -> Option<Self> {
        let (namespace, name) = payload.split_once('/')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then(|| Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("session state record is not valid JSON: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Stores the record and announces the change, in one round trip.
pub async fn write_state<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    session: &SessionRef,
    user_id: &str,
    state: &SessionState,
) -> Result<(), StateError> {
    let json = serde_json::to_string(state)?;
    redis::pipe()
        .set(UserKeys::for_user(user_id).state(), json)
        .ignore()
        .publish(STATE_CHANGED_CHANNEL, session.to_payload())
        .ignore()
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// Reads the record; `None` when the session pod has not written one (yet, or after a purge).
pub async fn read_state<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    user_id: &str,
) -> Result<Option<SessionState>, StateError> {
    let raw: Option<String> = redis::cmd("GET")
        .arg(UserKeys::for_user(user_id).state())
        .query_async(conn)
        .await?;
    Ok(raw.map(|s| serde_json::from_str(&s)).transpose()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_as_camel_case_json() {
        let mut s = SessionState::new(SessionPhase::Connected, Timestamp::UNIX_EPOCH);
        s.phone_number = Some("41791234567".into());
        s.reconnect_count = 2;
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["phase"], "Connected");
        assert_eq!(json["phoneNumber"], "41791234567");
        assert_eq!(json["reconnectCount"], 2);
        assert_eq!(serde_json::from_value::<SessionState>(json).unwrap(), s);
    }

    #[test]
    fn session_ref_payload_round_trips_and_rejects_garbage() {
        let r = SessionRef {
            namespace: "clinic".into(),
            name: "wa-bob-abc".into(),
        };
        assert_eq!(SessionRef::from_payload(&r.to_payload()), Some(r));
        for bad in ["", "noslash", "/name", "ns/", "a/b/c"] {
            assert_eq!(SessionRef::from_payload(bad), None, "{bad}");
        }
    }
}
