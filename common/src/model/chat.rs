//! A chat as whatsapp-web.js's `getChats()` gives it, and the pure rules behind its fields.

use serde::{Deserialize, Serialize};

use super::message::Message;
use super::wid::Wid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Chat {
    pub id: Wid,
    /// The contact's name (the user's contact list, else the push name the contact sent, else
    /// the number as `+<digits>`), or a group's subject (else its id). Never empty.
    pub name: String,
    pub is_group: bool,
    /// Messages of the other side since the user last wrote in the chat.
    pub unread_count: u32,
    /// Unix seconds of the newest message.
    pub timestamp: i64,
    /// The newest message (never an older one, whatever order messages arrive in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<Message>,
    /// Groups: subject, members and settings (whatsapp-web.js `GroupChat.groupMetadata`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_metadata: Option<super::conversation::GroupMetadata>,
}

/// A chat's display name: the first non-empty of the user's own name for the contact, the
/// group subject, the push name the contact sent; else `+<number>` (a group: its id).
pub fn chat_name(id: &Wid, contact_name: Option<&str>, subject_or_push_name: &str) -> String {
    let pick = |s: Option<&str>| {
        s.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    pick(contact_name)
        .or_else(|| pick(Some(subject_or_push_name)))
        .unwrap_or_else(|| match id.phone_digits() {
            Some(d) => format!("+{d}"),
            None => id.user.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_prefer_the_users_contact_then_the_push_name_then_the_number() {
        let id = Wid::parse("41790000001@c.us").unwrap();
        assert_eq!(
            chat_name(&id, Some("Ana (patient)"), "Ana"),
            "Ana (patient)"
        );
        assert_eq!(chat_name(&id, Some("  "), "Ana"), "Ana");
        assert_eq!(chat_name(&id, None, ""), "+41790000001");
        let group = Wid::parse("120363000000000001@g.us").unwrap();
        assert_eq!(chat_name(&group, None, "Clinic team"), "Clinic team");
        assert_eq!(chat_name(&group, None, ""), "120363000000000001");
        let lid = Wid::parse("100000012345678@lid").unwrap();
        assert_eq!(chat_name(&lid, None, ""), "100000012345678");
    }
}
