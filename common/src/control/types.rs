//! Bodies of the control API. Field names are camelCase like every JSON of wasp.

use serde::{Deserialize, Serialize};

use crate::model::{Chat, MediaKind, Message};
use crate::session_state::SessionState;

/// Longest text a send takes, in characters (JSON Schema's `maxLength` counts characters, so
/// the document and the check agree).
pub const MAX_TEXT_CHARS: usize = 65_536;
/// Largest page of any list.
pub const MAX_PAGE: u32 = 500;
/// Longest contact name, in characters.
pub const MAX_NAME_CHARS: usize = 256;

/// `POST /v1/send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendRequest {
    /// The chat, in any spelling [`crate::model::Wid::parse`] takes.
    pub to: String,
    pub body: String,
    /// The quoted message's `id._serialized` (a reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quoted: Option<String>,
    /// The caller's `Idempotency-Key`: the same key answers the first send's answer again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `POST /v1/send-media` (the file is the body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendMediaQuery {
    /// The chat, in any spelling [`crate::model::Wid::parse`] takes.
    pub to: String,
    pub kind: MediaKind,
    pub mimetype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// As in [`SendRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quoted: Option<String>,
    /// As in [`SendRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `POST /v1/react`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReactRequest {
    /// The message's `id._serialized`.
    pub message_id: String,
    /// The emoji; empty takes the reaction back.
    pub emoji: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The answer of `POST /v1/react`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReactResponse {
    pub success: bool,
    pub reaction: crate::model::Reaction,
}

/// `POST /v1/edit`: a new body for an own text message (or an own media message's caption).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EditRequest {
    pub message_id: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `POST /v1/revoke`: delete an own message for everyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeRequest {
    pub message_id: String,
}

/// The answer of `POST /v1/chats/{chatId}/seen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SeenResponse {
    pub success: bool,
    pub chat_id: String,
    /// Messages the read receipts named.
    pub read: u32,
}

/// `POST /v1/chats/{chatId}/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatStateRequest {
    pub state: crate::model::ChatStateKind,
}

/// The answer of `GET /v1/numbers/{phone}` (whatsapp-web.js `isRegisteredUser` / `getNumberId`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NumberCheck {
    /// E.164 digits.
    pub number: String,
    /// Whether the number has a WhatsApp account.
    pub exists: bool,
    /// Its chat id when it exists (whatsapp-web.js `getNumberId`), else `null`.
    pub id: Option<crate::model::Wid>,
}

/// The answer of `GET /v1/profile-picture/{chatId}` (whatsapp-web.js `getProfilePicUrl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfilePicture {
    /// `null` when there is none or it is not visible to this user.
    pub url: Option<String>,
}

/// The answer of a send (seed 003's `/send`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendResponse {
    /// Always `true` (failures are error answers).
    pub success: bool,
    pub message: Message,
}

/// `GET /v1/chats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatsQuery {
    #[serde(default)]
    pub offset: Option<u32>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One page of chats; `nextOffset` is where the next page starts, absent on the last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatsPage {
    pub chats: Vec<Chat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u32>,
}

/// `GET /v1/messages/{chatId}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessagesQuery {
    #[serde(default)]
    pub limit: Option<u32>,
    /// A message id (`id._serialized` or the plain id): only messages older than it.
    #[serde(default)]
    pub before: Option<String>,
}

/// `GET /v1/chat-by-phone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChatByPhone {
    /// `<digits>@c.us`.
    pub chat_id: String,
    /// E.164 digits.
    pub phone: String,
    /// Whether a chat with this number is stored.
    pub exists: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<Chat>,
}

/// A contact of the user's whitelist (seed 000: messages of known contacts are stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// E.164 digits.
    pub phone: String,
    /// Seed 000's spelling: `+<digits>`.
    pub mobile_no: String,
    pub name: String,
    /// Unix milliseconds.
    pub added_at: i64,
}

/// `POST /v1/contacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContactRequest {
    pub phone: String,
    #[serde(default)]
    pub name: String,
}

/// `GET /v1/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogsQuery {
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A session log entry, as seed 003's `session_logs` rows read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// What happened: `paired`, `logged_out`, `stream_replaced`, `message_not_stored`,
    /// `client_outdated`, `temporary_ban`, `connect_failure`, `undecryptable_message`, ….
    pub event_type: String,
    /// Details, human-readable.
    pub event_data: String,
    /// `info`, `warn` or `error`.
    pub level: String,
    /// RFC 3339.
    pub timestamp: String,
}

/// The QR code a session shows, in its three forms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QrCode {
    /// The raw pairing string.
    pub qr: String,
    pub qr_svg: String,
    /// `data:image/png;base64,…` (seed 003's `qrDataUrl`).
    pub qr_data_url: String,
}

/// `GET /v1/status`: the pod's own view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(flatten)]
    pub state: SessionState,
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub qr: Option<QrCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<u64>,
}

/// Every refusal of the control API: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlError {
    pub error: ControlErrorInner,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlErrorInner {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session_state::SessionPhase;

    #[test]
    fn a_status_with_a_qr_flattens_and_reads_back() {
        let s = PodStatus {
            state: SessionState::new(SessionPhase::AwaitingScan, jiff::Timestamp::UNIX_EPOCH),
            qr: Some(QrCode {
                qr: "2@x".into(),
                qr_svg: "<svg/>".into(),
                qr_data_url: "data:image/png;base64,AA".into(),
            }),
            pairing_code: None,
            lease_token: Some(3),
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["phase"], "AwaitingScan");
        assert_eq!(v["qrDataUrl"], "data:image/png;base64,AA");
        assert_eq!(serde_json::from_value::<PodStatus>(v).unwrap(), s);
        let none = PodStatus { qr: None, ..s };
        let v = serde_json::to_value(&none).unwrap();
        assert_eq!(serde_json::from_value::<PodStatus>(v).unwrap(), none);
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        assert!(serde_json::from_str::<SendRequest>(r#"{"to":"1","body":"x","y":1}"#).is_err());
        assert!(serde_json::from_str::<SendRequest>(r#"{"to":"1","body":"x"}"#).is_ok());
    }
}
