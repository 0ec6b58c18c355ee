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

/// Why a session is not working (or a message could not be read), by stable CamelCase names
/// shared by the session pod, which writes them into [`SessionState::error_reason`] (and may use
/// them as the `category` of its `error` events), and the operator, which shows them as the
/// `Ready` condition's reason and as Kubernetes Event reasons. The record keeps the name as a
/// string, so a reason added by a newer session pod does not stop an older operator reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    /// WhatsApp banned the account for a while (`Event::TemporaryBan`); reconnecting before the
    /// ban ends does not help and may lengthen it.
    TemporaryBan,
    /// WhatsApp refuses this client version (`Event::ClientOutdated`, connect failure 405): the
    /// session pod image needs an update.
    ClientOutdated,
    /// A connect attempt failed (`Event::ConnectFailure` for another reason, or no socket).
    ConnectFailed,
    /// The login ended: the phone removed the device, or WhatsApp logged it out
    /// (`Event::LoggedOut`); a new scan is needed.
    LoggedOut,
    /// Another client took over this device's connection (`Event::StreamReplaced`).
    StreamReplaced,
    /// A message could not be decrypted (`Event::UndecryptableMessage`). A problem of one
    /// message, not of the connection: it never changes the session's phase or Ready reason.
    UndecryptableMessage,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 6] = [
        ErrorReason::TemporaryBan,
        ErrorReason::ClientOutdated,
        ErrorReason::ConnectFailed,
        ErrorReason::LoggedOut,
        ErrorReason::StreamReplaced,
        ErrorReason::UndecryptableMessage,
    ];

    /// The name as written in the record and shown in Kubernetes.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorReason::TemporaryBan => "TemporaryBan",
            ErrorReason::ClientOutdated => "ClientOutdated",
            ErrorReason::ConnectFailed => "ConnectFailed",
            ErrorReason::LoggedOut => "LoggedOut",
            ErrorReason::StreamReplaced => "StreamReplaced",
            ErrorReason::UndecryptableMessage => "UndecryptableMessage",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The message shown when the session pod gave none.
    pub const fn describe(self) -> &'static str {
        match self {
            ErrorReason::TemporaryBan => "WhatsApp temporarily banned this account",
            ErrorReason::ClientOutdated => {
                "WhatsApp refuses this client version; update the session pod image"
            }
            ErrorReason::ConnectFailed => "connecting to WhatsApp failed",
            ErrorReason::LoggedOut => "the device was logged out; scan a new QR code",
            ErrorReason::StreamReplaced => "another client took over this device's connection",
            ErrorReason::UndecryptableMessage => "a message could not be decrypted",
        }
    }

    /// Whether the reason is about the connection (and so about the session's state), rather
    /// than about one message.
    pub const fn is_connection(self) -> bool {
        !matches!(self, ErrorReason::UndecryptableMessage)
    }

    /// Whether retrying alone cannot bring the session back (a ban to wait out, a client to
    /// update): the operator then shows the session as Failed rather than Reconnecting.
    pub const fn needs_attention(self) -> bool {
        matches!(
            self,
            ErrorReason::TemporaryBan | ErrorReason::ClientOutdated
        )
    }
}

impl std::fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// The human-readable message of the latest problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The latest problem's [`ErrorReason`] name (`errorReason`); cleared when the session
    /// connects again. Set it with [`SessionState::set_error`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// The fencing token of the lease the writer held (`leaseToken`): the record describes a
    /// live process only while the user's lease still holds this token. `None` in records of
    /// session pods older than the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<u64>,
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
            error_reason: None,
            lease_token: None,
            updated_at: now,
        }
    }

    /// Whether the record can be believed as it stands, given the token the user's lease holds
    /// now (`None`: no one holds it). A phase that claims a live socket (`Connected`,
    /// `AwaitingScan`, `Reconnecting`) is only true while its writer still holds the lease: after
    /// a kill -9 the record keeps saying `Connected` until a new process writes, and the dead
    /// process's lease expires or is taken meanwhile. Outcomes (`LoggedOut`, `Failed`,
    /// `Disconnected`) and `Starting` stay true without a writer. A record without a token (an
    /// older session pod) is believed, as before.
    pub fn is_current(&self, lease_token: Option<u64>) -> bool {
        let live = matches!(
            self.phase,
            SessionPhase::Connected | SessionPhase::AwaitingScan | SessionPhase::Reconnecting
        );
        !live || self.lease_token.is_none() || self.lease_token == lease_token
    }

    /// Records a problem: its reason and its message (`lastError`).
    pub fn set_error(&mut self, reason: ErrorReason, message: impl Into<String>) {
        self.error_reason = Some(reason.as_str().to_owned());
        self.last_error = Some(message.into());
    }

    /// Forgets the last problem (on connect).
    pub fn clear_error(&mut self) {
        self.error_reason = None;
        self.last_error = None;
    }

    /// The recorded reason, if it is one this build knows.
    pub fn reason(&self) -> Option<ErrorReason> {
        self.error_reason
            .as_deref()
            .and_then(ErrorReason::from_name)
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

/// Reads the record and the fencing token the user's lease holds now (`None` when no one holds
/// it), in one round trip: what [`SessionState::is_current`] needs.
pub async fn read_state_and_lease<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    user_id: &str,
) -> Result<(Option<SessionState>, Option<u64>), StateError> {
    let keys = UserKeys::for_user(user_id);
    let (raw, lease): (Option<String>, Option<String>) = redis::pipe()
        .get(keys.state())
        .get(keys.lease())
        .query_async(conn)
        .await?;
    let state = raw.map(|s| serde_json::from_str(&s)).transpose()?;
    Ok((state, lease.as_deref().and_then(lease_token_of)))
}

/// The token of a stored lease value (`<token>:<holder>`, `session-pod/src/lease.rs`).
pub fn lease_token_of(value: &str) -> Option<u64> {
    value.split_once(':')?.0.parse().ok()
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
    fn error_reasons_are_stable_camel_case_names_in_the_record() {
        let names: Vec<&str> = ErrorReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "TemporaryBan",
                "ClientOutdated",
                "ConnectFailed",
                "LoggedOut",
                "StreamReplaced",
                "UndecryptableMessage"
            ]
        );
        for r in ErrorReason::ALL {
            assert_eq!(ErrorReason::from_name(r.as_str()), Some(r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(ErrorReason::from_name("temporaryBan"), None);

        let mut s = SessionState::new(SessionPhase::Reconnecting, Timestamp::UNIX_EPOCH);
        assert!(
            serde_json::to_value(&s)
                .unwrap()
                .get("errorReason")
                .is_none()
        );
        s.set_error(ErrorReason::TemporaryBan, "banned for 1h");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["errorReason"], "TemporaryBan");
        assert_eq!(json["lastError"], "banned for 1h");
        let back: SessionState = serde_json::from_value(json).unwrap();
        assert_eq!(back.reason(), Some(ErrorReason::TemporaryBan));
        s.clear_error();
        assert_eq!((s.error_reason, s.last_error), (None, None));

        // A record from an older pod (no field) and a newer one (an unknown reason) still read.
        let old: SessionState = serde_json::from_value(serde_json::json!({
            "phase": "Connected", "updatedAt": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(old.error_reason, None);
        let newer: SessionState = serde_json::from_value(serde_json::json!({
            "phase": "Reconnecting", "errorReason": "SomethingNew", "updatedAt": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(newer.error_reason.as_deref(), Some("SomethingNew"));
        assert_eq!(newer.reason(), None);
    }

    #[test]
    fn a_live_phase_is_believed_only_while_its_writer_holds_the_lease() {
        let mut s = SessionState::new(SessionPhase::Connected, Timestamp::UNIX_EPOCH);
        s.lease_token = Some(7);
        assert!(s.is_current(Some(7)));
        // Killed: its lease expired (no holder), or a new process took it (a higher token).
        assert!(!s.is_current(None));
        assert!(!s.is_current(Some(8)));
        for live in [SessionPhase::AwaitingScan, SessionPhase::Reconnecting] {
            s.phase = live;
            assert!(!s.is_current(Some(8)), "{live:?}");
        }
        // Outcomes stay true after their writer is gone.
        for outcome in [
            SessionPhase::LoggedOut,
            SessionPhase::Failed,
            SessionPhase::Disconnected,
            SessionPhase::Starting,
        ] {
            s.phase = outcome;
            assert!(s.is_current(None), "{outcome:?}");
        }
        // An older pod's record has no token: believed as before.
        s.phase = SessionPhase::Connected;
        s.lease_token = None;
        assert!(s.is_current(None));
        assert_eq!(serde_json::to_value(&s).unwrap().get("leaseToken"), None);
        s.lease_token = Some(9);
        assert_eq!(serde_json::to_value(&s).unwrap()["leaseToken"], 9);
    }

    #[test]
    fn lease_values_give_their_token() {
        assert_eq!(lease_token_of("42:wa-bob-0123456789abcdef"), Some(42));
        assert_eq!(lease_token_of("42"), None);
        assert_eq!(lease_token_of("x:holder"), None);
        assert_eq!(lease_token_of(""), None);
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
