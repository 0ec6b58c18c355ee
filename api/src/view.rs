//! JSON shapes of the answers, and the pure mapping from a `WhatsAppSession` to what a client
//! sees. Field names are camelCase like the seeds' JSON.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wasp_common::model::IdInput;
use wasp_crds::{DesiredState, Phase, WhatsAppSession};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// Always `ok`.
    pub status: String,
    pub version: String,
    /// RFC 3339.
    pub timestamp: String,
}

/// One user's session as the seeds' clients read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    pub user_id: String,
    /// Name of the `WhatsAppSession` resource.
    pub session_name: String,
    /// Seed-style status: `disconnected`, `initializing`, `qr`, `connected`, `reconnecting`,
    /// `logged_out` or `failed`.
    pub status: String,
    /// The resource's phase (`Pending`, `Starting`, `AwaitingScan`, `Connected`, `Reconnecting`,
    /// `Disconnected`, `LoggedOut`, `Failed`), or `NotFound` when the user has no session.
    pub phase: String,
    pub is_connected: bool,
    /// `connected` or `disconnected`: what the user last asked for.
    pub desired_state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// The WhatsApp push name of the connected account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<String>,
    pub reconnect_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The QR code to scan, while one is shown (`status: qr`): the raw pairing string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr: Option<String>,
    /// The same QR code as `data:image/png;base64,…` (seed 003's `qrDataUrl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr_data_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectResponse {
    pub success: bool,
    pub message: String,
    pub session: SessionStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionList {
    pub total: usize,
    pub sessions: Vec<SessionStatus>,
}

/// Seed 000's cleanup statistics, as the operator's stale-session sweeper records them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupStats {
    /// Sessions switched to disconnected since records began.
    pub total_stopped: u64,
    /// Sessions switched off by the last run.
    pub last_stopped: u64,
    /// When the sweeper last ran (RFC 3339), if ever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<String>,
    pub runs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostics {
    pub version: String,
    pub uptime_seconds: u64,
    /// Whether this replica's watched cache of sessions is synced.
    pub session_cache_ready: bool,
    /// The caller's own session.
    pub session: SessionStatus,
    /// Whether the caller's session pod has an endpoint the API can route to.
    pub pod_reachable: bool,
    /// Sessions per phase (admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_by_phase: Option<std::collections::BTreeMap<String, usize>>,
}

/// `POST /send` as JSON, as the OpenAPI document shows it: a text or a file ([`SendRequest`]
/// reads both).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // describes the body for the OpenAPI document
pub enum SendBody {
    Text(SendText),
    Media(SendMedia),
}

/// A text (seed 003).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct SendText {
    /// `41791234567@c.us`, `41791234567@s.whatsapp.net`, a phone number, a group `…@g.us` or a
    /// LID `…@lid`; the string or whatsapp-web.js's id object.
    pub chat_id: IdInput,
    /// The text: 1 to 65,536 characters, not blank.
    #[schema(min_length = 1, max_length = 65536, pattern = r"\S")]
    pub message: String,
    /// Reply to this message (whatsapp-web.js `quotedMessageId`): its `id._serialized`.
    #[schema(
        max_length = 300,
        pattern = r"^\s*(true|false)_(([1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}@(lid|newsletter)|status@broadcast)_[A-Za-z0-9]{1,128}|[0-9]{1,24}(-[0-9]{1,24})?@g\.us_[A-Za-z0-9]{1,128}(_([1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}@lid))?)\s*$"
    )]
    pub quoted_message_id: Option<String>,
}

/// A file: whatsapp-web.js's `MessageMedia` with the `sendMessage` options that choose how it
/// travels.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct SendMedia {
    /// As for a text.
    pub chat_id: IdInput,
    pub media: MediaInput,
    /// The file's caption (images, videos, documents), at most 4,096 characters.
    #[schema(max_length = 4096)]
    pub caption: Option<String>,
    /// The caption when `caption` is not given.
    #[schema(max_length = 4096)]
    pub message: Option<String>,
    /// Send an audio file as a voice note (`ptt`).
    pub send_audio_as_voice: Option<bool>,
    /// Send any file as a document.
    pub send_media_as_document: Option<bool>,
    /// Send an `image/webp` as a sticker.
    pub send_media_as_sticker: Option<bool>,
    /// Reply to this message (whatsapp-web.js `quotedMessageId`): its `id._serialized`.
    #[schema(
        max_length = 300,
        pattern = r"^\s*(true|false)_(([1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}@(lid|newsletter)|status@broadcast)_[A-Za-z0-9]{1,128}|[0-9]{1,24}(-[0-9]{1,24})?@g\.us_[A-Za-z0-9]{1,128}(_([1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}@lid))?)\s*$"
    )]
    pub quoted_message_id: Option<String>,
}

/// A text (seed 003: `{chatId, message}`) or a file (whatsapp-web.js's `MessageMedia` in
/// `media`, with `caption` and the `sendMessage` options that choose how it travels).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendRequest {
    /// `41791234567@c.us`, `41791234567@s.whatsapp.net`, a phone number, a group `…@g.us` or a
    /// LID `…@lid`; the string or whatsapp-web.js's id object.
    pub chat_id: IdInput,
    /// The text: 1 to 65,536 characters, not blank. Required without `media`; with it, the
    /// caption unless `caption` is given.
    #[serde(default)]
    pub message: Option<String>,
    /// A file to send.
    #[serde(default)]
    pub media: Option<MediaInput>,
    /// The file's caption (images, videos, documents), at most 4,096 characters.
    #[serde(default)]
    pub caption: Option<String>,
    /// Send an audio file as a voice note (`ptt`).
    #[serde(default)]
    pub send_audio_as_voice: bool,
    /// Send any file as a document.
    #[serde(default)]
    pub send_media_as_document: bool,
    /// Send an `image/webp` as a sticker.
    #[serde(default)]
    pub send_media_as_sticker: bool,
    /// Reply to this message (whatsapp-web.js `quotedMessageId`): its `id._serialized`.
    #[serde(default)]
    pub quoted_message_id: Option<String>,
}

/// whatsapp-web.js's `MessageMedia`: a file as base64.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaInput {
    /// `image/jpeg`, `application/pdf`, `audio/ogg; codecs=opus`, …
    #[schema(min_length = 3, max_length = 255, example = "application/pdf")]
    pub mimetype: String,
    /// The file, base64 (standard alphabet); at most `MAX_FILE_SIZE` bytes decoded.
    #[schema(min_length = 1, format = Byte)]
    pub data: String,
    /// The file name shown with a document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 255)]
    pub filename: Option<String>,
    /// The file's size in bytes (answers only; ignored in a request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesize: Option<u64>,
}

/// `POST /send` as `multipart/form-data`, for large files: the fields first, the file last.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // describes the form for the OpenAPI document
pub struct SendForm {
    /// As in the JSON request.
    pub chat_id: String,
    /// The file's caption (or `message`).
    pub caption: Option<String>,
    /// Overrides the file part's `Content-Type`.
    pub mimetype: Option<String>,
    /// `true` to send an audio file as a voice note.
    pub send_audio_as_voice: Option<bool>,
    /// `true` to send any file as a document.
    pub send_media_as_document: Option<bool>,
    /// `true` to send an `image/webp` as a sticker.
    pub send_media_as_sticker: Option<bool>,
    /// Reply to this message (whatsapp-web.js `quotedMessageId`): its `id._serialized`.
    #[schema(
        max_length = 300,
        pattern = r"^\s*(true|false)_(([1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}@(lid|newsletter)|status@broadcast)_[A-Za-z0-9]{1,128}|[0-9]{1,24}(-[0-9]{1,24})?@g\.us_[A-Za-z0-9]{1,128}(_([1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}@lid))?)\s*$"
    )]
    pub quoted_message_id: Option<String>,
    /// The file (its part's file name and `Content-Type` are used), last in the form.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    pub file: String,
}

/// A file's raw bytes (for the OpenAPI document).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct FileBytes(Vec<u8>);

/// Query of `GET /messages/{chatId}/{messageId}/media`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MediaQuery {
    /// `json`: whatsapp-web.js's `MessageMedia` (`{mimetype, data, filename, filesize}`, files
    /// up to `MAX_FILE_SIZE`) instead of the raw file.
    pub format: Option<MediaFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaFormat {
    Raw,
    Json,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactAddRequest {
    /// Phone number, E.164 preferred (`+41791234567`).
    #[schema(
        min_length = 7,
        max_length = 32,
        example = "+41791234567",
        pattern = r"^\s*(\+|00)?[1-9]([ ().-]?[0-9]){6,14}\s*$"
    )]
    pub mobile_no: String,
    /// At most 256 printable characters.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// 1 to 500; default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// How many of the newest messages (1 to 500; default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// A message id (`id._serialized` or the plain id): only messages older than it, for
    /// paging back in time.
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub before: Option<String>,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PhoneQuery {
    /// Phone number, e.g. `+41791234567`.
    #[param(
        min_length = 7,
        max_length = 32,
        pattern = r"^\s*(\+|00)?[1-9]([ ().-]?[0-9]){6,14}\s*$"
    )]
    pub phone: String,
}

/// `POST /react` (whatsapp-web.js `Message.react`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReactBody {
    /// The message's `id._serialized`.
    #[schema(
        max_length = 300,
        pattern = r"^\s*(true|false)_(([1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}@(lid|newsletter)|status@broadcast)_[A-Za-z0-9]{1,128}|[0-9]{1,24}(-[0-9]{1,24})?@g\.us_[A-Za-z0-9]{1,128}(_([1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}@lid))?)\s*$"
    )]
    pub message_id: String,
    /// The emoji (at most 32 characters); empty takes the caller's reaction back.
    #[schema(
        max_length = 32,
        pattern = r"^[^A-Za-z0-9\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub emoji: String,
}

/// `POST /messages/{messageId}/edit` (whatsapp-web.js `Message.edit`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EditBody {
    /// The new text (a media message's new caption): 1 to 65,536 characters, not blank.
    #[schema(min_length = 1, max_length = 65536, pattern = r"\S")]
    pub body: String,
}

/// The `Idempotency-Key` header of the send routes (for the OpenAPI document; read by
/// [`crate::validate::idempotency_key`]).
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // describes the header for the OpenAPI document
pub struct IdempotencyHeader {
    /// A key of the caller's choosing (1 to 255 visible ASCII characters): the same key within
    /// 24 h answers the first request's answer again and sends nothing.
    #[serde(rename = "Idempotency-Key")]
    #[param(min_length = 1, max_length = 255, pattern = r"^[!-~]{1,255}$")]
    pub idempotency_key: Option<String>,
}

/// A plain success answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SuccessResponse {
    pub success: bool,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionsQuery {
    /// Include sessions that are switched off (default: only active ones).
    #[serde(default)]
    pub all: bool,
}

/// Seed-style status word of a phase.
pub fn status_word(phase: Option<Phase>) -> &'static str {
    match phase {
        None | Some(Phase::Disconnected) => "disconnected",
        Some(Phase::Pending | Phase::Starting) => "initializing",
        Some(Phase::AwaitingScan) => "qr",
        Some(Phase::Connected) => "connected",
        Some(Phase::Reconnecting) => "reconnecting",
        Some(Phase::LoggedOut) => "logged_out",
        Some(Phase::Failed) => "failed",
    }
}

fn desired_word(d: DesiredState) -> &'static str {
    match d {
        DesiredState::Connected => "connected",
        DesiredState::Disconnected => "disconnected",
    }
}

/// What a user sees of their session; `None` (no resource) reads as disconnected.
pub fn session_status(user_id: &str, session: Option<&WhatsAppSession>) -> SessionStatus {
    let name = wasp_crds::names::session_name(user_id);
    let Some(session) = session else {
        return SessionStatus {
            user_id: user_id.to_owned(),
            session_name: name,
            status: "disconnected".into(),
            phase: "NotFound".into(),
            is_connected: false,
            desired_state: "disconnected".into(),
            phone_number: None,
            display_name: None,
            connected_at: None,
            last_activity: None,
            reconnect_count: 0,
            last_error: None,
            qr: None,
            qr_data_url: None,
        };
    };
    let status = session.status.clone().unwrap_or_default();
    // A resource just created has no phase yet: it is pending.
    let phase = match (status.phase, session.spec.desired_state) {
        (None, DesiredState::Connected) => Some(Phase::Pending),
        (p, _) => p,
    };
    SessionStatus {
        user_id: session.spec.user_id.clone(),
        session_name: session.metadata.name.clone().unwrap_or(name),
        status: status_word(phase).into(),
        phase: phase.map_or("Disconnected", Phase::as_str).into(),
        is_connected: phase == Some(Phase::Connected),
        desired_state: desired_word(session.spec.desired_state).into(),
        phone_number: status.phone_number,
        display_name: status.push_name,
        connected_at: status.connected_at.map(|t| t.0.to_string()),
        last_activity: status.last_activity.map(|t| t.0.to_string()),
        reconnect_count: status.reconnect_count,
        last_error: status.last_error,
        qr: None,
        qr_data_url: None,
    }
}

/// Active: wanted connected, or still running down.
pub fn is_active(session: &WhatsAppSession) -> bool {
    session.spec.desired_state == DesiredState::Connected
        || matches!(
            session.status.as_ref().and_then(|s| s.phase),
            Some(Phase::Starting | Phase::AwaitingScan | Phase::Connected | Phase::Reconnecting)
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_crds::WhatsAppSessionStatus;

    #[test]
    fn no_session_reads_as_disconnected() {
        let s = session_status("u1", None);
        assert_eq!(s.status, "disconnected");
        assert_eq!(s.phase, "NotFound");
        assert!(!s.is_connected);
        assert_eq!(s.session_name, wasp_crds::names::session_name("u1"));
    }

    #[test]
    fn status_reflects_the_resource() {
        let mut cr = WhatsAppSession::for_user("u1");
        assert_eq!(session_status("u1", Some(&cr)).phase, "Pending");
        assert_eq!(session_status("u1", Some(&cr)).status, "initializing");
        cr.status = Some(WhatsAppSessionStatus {
            phase: Some(Phase::Connected),
            phone_number: Some("41791234567".into()),
            push_name: Some("Dr Ann".into()),
            reconnect_count: 2,
            ..Default::default()
        });
        let s = session_status("u1", Some(&cr));
        assert!(s.is_connected);
        assert_eq!(s.status, "connected");
        assert_eq!(s.display_name.as_deref(), Some("Dr Ann"));
        assert_eq!(s.reconnect_count, 2);
        assert!(is_active(&cr));
        cr.spec.desired_state = DesiredState::Disconnected;
        cr.status.as_mut().unwrap().phase = Some(Phase::Disconnected);
        assert!(!is_active(&cr));
        assert_eq!(
            session_status("u1", Some(&cr)).desired_state,
            "disconnected"
        );
    }

    #[test]
    fn every_phase_has_a_status_word() {
        for p in Phase::ALL {
            assert!(!status_word(Some(p)).is_empty());
        }
    }
}
