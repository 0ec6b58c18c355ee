//! The session pod's control API: its paths and the request and response types that the pod
//! serializes and wasp-api deserializes (bearer token on every route; JSON in and out). A new
//! pod feature is one type here and one handler on each side.

mod types;

pub use types::*;

/// `POST`: log the device out of WhatsApp (used by the operator's finalizer).
pub const LOGOUT_PATH: &str = "/v1/logout";
/// `GET` → [`PodStatus`]: the session state record plus the current QR / pairing code.
pub const STATUS_PATH: &str = "/v1/status";
/// `POST` → [`PodStatus`]: (re)start connecting (after a disconnect, logout or Failed).
pub const CONNECT_PATH: &str = "/v1/connect";
/// `POST` → [`PodStatus`]: close the socket and stay disconnected (auth state kept).
pub const DISCONNECT_PATH: &str = "/v1/disconnect";
/// `POST` [`SendRequest`] → [`SendResponse`]: send a text message.
pub const SEND_PATH: &str = "/v1/send";
/// `GET` [`ChatsQuery`] → [`ChatsPage`]: chats, newest activity first.
pub const CHATS_PATH: &str = "/v1/chats";
/// `GET /v1/messages/{chatId}` [`MessagesQuery`] → `[Message]`: the last `limit` messages
/// (before `before`), oldest first.
pub const MESSAGES_PATH: &str = "/v1/messages/{chat_id}";
/// `GET ?phone=` → [`ChatByPhone`]: the chat of a phone number.
pub const CHAT_BY_PHONE_PATH: &str = "/v1/chat-by-phone";
/// `GET` → `[Contact]`, `POST` [`ContactRequest`] → [`Contact`] (201 new, 200 updated).
pub const CONTACTS_PATH: &str = "/v1/contacts";
/// `DELETE` → 204: remove a contact (404 if unknown).
pub const CONTACT_PATH: &str = "/v1/contacts/{phone}";
/// `GET ?limit` → `[LogEntry]`: session log entries, newest first.
pub const LOGS_PATH: &str = "/v1/logs";
/// `POST ?`[`SendMediaQuery`] with the file as the raw body (`Content-Length` required) →
/// [`SendResponse`]: encrypt, upload and send a media message. 413 past the pod's limit.
pub const SEND_MEDIA_PATH: &str = "/v1/send-media";
/// `GET` → the decrypted file of a media message (`Content-Type`, `Content-Length`,
/// `Content-Disposition`, [`FILENAME_HEADER`]), fetched from WhatsApp's media servers on demand
/// and checked against its hashes before the first byte is sent. 404 for no such message or
/// one without media.
pub const MEDIA_PATH: &str = "/v1/messages/{chat_id}/{message_id}/media";
/// The file name of a media download, percent-encoded UTF-8 (what `Content-Disposition` names,
/// without parsing it).
pub const FILENAME_HEADER: &str = "x-wasp-filename";
/// `POST` [`ReactRequest`] → [`ReactResponse`]: react to a message (empty emoji: take it back).
pub const REACT_PATH: &str = "/v1/react";
/// `POST` [`EditRequest`] → [`SendResponse`]: edit an own message.
pub const EDIT_PATH: &str = "/v1/edit";
/// `POST` [`RevokeRequest`] → [`SendResponse`]: delete an own message for everyone.
pub const REVOKE_PATH: &str = "/v1/revoke";
/// `POST` → [`SeenResponse`]: read receipts for the chat's unread messages; unread count 0.
pub const SEEN_PATH: &str = "/v1/chats/{chat_id}/seen";
/// `POST` [`ChatStateRequest`] → 204: typing, recording or paused in a chat.
pub const CHAT_STATE_PATH: &str = "/v1/chats/{chat_id}/state";
/// `GET` → [`crate::model::GroupMetadata`] from WhatsApp (404: not a group of this user).
pub const GROUP_PATH: &str = "/v1/groups/{group_id}";
/// `GET` → [`NumberCheck`]: whether a phone number is on WhatsApp.
pub const NUMBER_PATH: &str = "/v1/numbers/{phone}";
/// `GET` → [`ProfilePicture`].
pub const PROFILE_PICTURE_PATH: &str = "/v1/profile-picture/{chat_id}";
/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Checks an `Idempotency-Key`: 1 to 255 visible ASCII characters (pure).
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
        ));
    }
    Ok(())
}
