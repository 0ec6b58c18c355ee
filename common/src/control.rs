//! Paths of the session pod's control API (bearer token on every route; JSON in and out).

/// `POST`: log the device out of WhatsApp (used by the operator's finalizer).
pub const LOGOUT_PATH: &str = "/v1/logout";
/// `GET`: the session state record plus the current QR / pairing code.
pub const STATUS_PATH: &str = "/v1/status";
/// `POST`: (re)start connecting (after a disconnect, logout or Failed).
pub const CONNECT_PATH: &str = "/v1/connect";
/// `POST`: close the socket and stay disconnected (auth state kept).
pub const DISCONNECT_PATH: &str = "/v1/disconnect";
/// `POST {to, text}`: send a text message.
pub const SEND_PATH: &str = "/v1/send";
/// `GET ?limit&offset`: chats by last activity.
pub const CHATS_PATH: &str = "/v1/chats";
/// `GET /v1/messages/{chatId}?limit&before`: a chat's messages, newest first.
pub const MESSAGES_PATH: &str = "/v1/messages/{chat_id}";
/// `GET ?phone=`: the chat of a phone number.
pub const CHAT_BY_PHONE_PATH: &str = "/v1/chat-by-phone";
/// `GET` list, `POST {phone, name}` add.
pub const CONTACTS_PATH: &str = "/v1/contacts";
/// `DELETE`: remove a contact.
pub const CONTACT_PATH: &str = "/v1/contacts/{phone}";
/// `GET ?limit`: session log lines, newest first.
pub const LOGS_PATH: &str = "/v1/logs";
