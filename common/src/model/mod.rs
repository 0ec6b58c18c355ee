//! The data model every part shares: WhatsApp ids, messages and chats shaped as
//! whatsapp-web.js serializes them (DESIGN §2, "The API ↔ pod contract and the message model").
//! One definition and one serializer: the session pod stores and publishes these, wasp-api
//! deserializes, documents (feature `openapi`) and answers with the same types.

pub mod chat;
pub mod conversation;
pub mod media;
pub mod message;
pub mod wid;

pub use chat::{Chat, chat_name};
pub use conversation::{
    ChatState, ChatStateKind, GroupMetadata, GroupParticipant, MessageEdit, MessageRevoke,
    REVOKED_TYPE, Reaction, ReactionEntry, apply_edit, apply_reaction, apply_revoke,
    check_reaction,
};
pub use media::{MediaKind, MediaRefusal, SendAs};
pub use message::{Message, MessageKey, MessageParts, ack, message_type};
pub use wid::{BadWid, IdInput, Wid};
