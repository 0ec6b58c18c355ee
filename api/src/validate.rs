//! Input checks of the routes that reach a session pod, done before any routing so bad input is a
//! clear 400 whatever the session's state. Chat ids are read by the shared
//! [`wasp_common::model::Wid`]: seed 003's `41791234567@c.us`, the protocol's
//! `…@s.whatsapp.net`, a phone number, a group or a LID, all to one canonical form.

use axum::http::HeaderMap;
use wasp_common::model::{MessageKey, Wid};
use wasp_common::phone::normalize_phone;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;
/// Longest text message, in characters (the session pod's limit).
pub const MAX_MESSAGE_CHARS: usize = wasp_common::control::MAX_TEXT_CHARS;
pub const MAX_NAME_CHARS: usize = wasp_common::control::MAX_NAME_CHARS;
/// Longest message id taken as a paging cursor.
pub const MAX_MESSAGE_ID_LEN: usize = 256;

/// `limit` of list routes: absent → 50; 1..=500.
pub fn limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// A chat id as the seed's clients send it, in its canonical form.
pub fn chat_id(input: &str) -> Result<Wid, ApiError> {
    Wid::parse(input).map_err(|e| ApiError::bad_request("invalid_chat_id", e.to_string()))
}

/// A message id used as a paging cursor (`id._serialized` or the plain id).
pub fn message_id(input: &str) -> Result<String, ApiError> {
    let id = input.trim();
    if id.is_empty() || id.len() > MAX_MESSAGE_ID_LEN || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_message_id",
            format!("a message id is 1 to {MAX_MESSAGE_ID_LEN} printable characters"),
        ));
    }
    Ok(id.to_owned())
}

/// The header that makes a send idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A message named by whatsapp-web.js's `id._serialized` (what reactions, edits, revokes and
/// replies take), in its canonical spelling.
pub fn message_key(input: &str) -> Result<String, ApiError> {
    MessageKey::parse(input)
        .map(|k| k.serialized)
        .map_err(|e| ApiError::bad_request("invalid_message_id", e.to_string()))
}

/// `quotedMessageId` of a send: absent or blank is no quote, else a message key.
pub fn quoted(input: Option<&str>) -> Result<Option<String>, ApiError> {
    input
        .filter(|q| !q.trim().is_empty())
        .map(message_key)
        .transpose()
}

/// A reaction: an emoji, or empty (after trimming) to take one back.
pub fn reaction(emoji: &str) -> Result<String, ApiError> {
    let emoji = emoji.trim();
    wasp_common::model::conversation::check_reaction(emoji)
        .map_err(|m| ApiError::bad_request("invalid_reaction", m))?;
    Ok(emoji.to_owned())
}

/// A group's id (`…@g.us`; any spelling [`Wid::parse`] takes).
pub fn group_id(input: &str) -> Result<Wid, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_group_id", m);
    let wid = Wid::parse(input).map_err(|e| bad(e.to_string()))?;
    if !wid.is_group() {
        return Err(bad("a group id looks like 120363012345678901@g.us".into()));
    }
    Ok(wid)
}

/// The `Idempotency-Key` header: absent, or 1 to 255 visible ASCII characters (once).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_idempotency_key", m);
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad("give one Idempotency-Key header".into()));
    }
    // Bytes beyond visible ASCII are refused by the check like any other bad key.
    let key = value.to_str().unwrap_or("\u{0}");
    wasp_common::control::check_idempotency_key(key).map_err(bad)?;
    Ok(Some(key.to_owned()))
}

/// A phone number to E.164 digits, with `wasp_common::phone`'s explanation on failure.
pub fn phone(input: &str) -> Result<String, ApiError> {
    normalize_phone(input).map_err(|e| ApiError::bad_request("invalid_phone", e.to_string()))
}

/// The text of `/send`.
pub fn message(text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_message",
            "message must not be empty",
        ));
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::bad_request(
            "invalid_message",
            format!("message must be at most {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    Ok(())
}

/// A contact's display name (seed 000's `/contact/add`): optional, trimmed, bounded.
pub fn contact_name(name: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("name must be at most {MAX_NAME_CHARS} printable characters"),
        ));
    }
    Ok(Some(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_to_50_and_are_bounded() {
        assert_eq!(limit(None).unwrap(), 50);
        assert_eq!(limit(Some(1)).unwrap(), 1);
        assert_eq!(limit(Some(500)).unwrap(), 500);
        assert_eq!(limit(Some(0)).unwrap_err().code(), "invalid_limit");
        assert_eq!(limit(Some(501)).unwrap_err().code(), "invalid_limit");
    }

    #[test]
    fn seed_chat_ids_normalise_to_the_c_us_form() {
        let ok = [
            ("41791234567@c.us", "41791234567@c.us"),
            ("41791234567@s.whatsapp.net", "41791234567@c.us"),
            ("+41 79 123 45 67", "41791234567@c.us"),
            ("120363012345678901@g.us", "120363012345678901@g.us"),
            ("41791234567-1600000000@g.us", "41791234567-1600000000@g.us"),
            ("123456789012345@lid", "123456789012345@lid"),
            ("status@broadcast", "status@broadcast"),
        ];
        for (input, jid) in ok {
            assert_eq!(chat_id(input).unwrap().serialized, jid, "{input}");
        }
    }

    #[test]
    fn bad_chat_ids_are_400() {
        let long = format!("{}@c.us", "1".repeat(200));
        for input in [
            "",
            " ",
            "@c.us",
            "abc@c.us",
            "0791234567@c.us",
            "+41791234567@c.us",
            "4179@c.us",
            "41791234567@example.com",
            "41791234567:3@s.whatsapp.net",
            "a-b@g.us",
            "1-2-3@g.us",
            "x@broadcast",
            "hello",
            "../../etc@c.us",
            long.as_str(),
        ] {
            let e = chat_id(input).unwrap_err();
            assert_eq!(e.code(), "invalid_chat_id", "{input:?}");
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn phones_messages_and_names() {
        assert_eq!(phone("+41 79 123 45 67").unwrap(), "41791234567");
        let e = phone("079 123 45 67").unwrap_err();
        assert_eq!(e.code(), "invalid_phone");
        assert!(
            e.body().message.contains("country code"),
            "{}",
            e.body().message
        );
        assert!(message("hi").is_ok());
        assert!(message("  ").is_err());
        assert!(message(&"x".repeat(MAX_MESSAGE_CHARS)).is_ok());
        assert!(message(&"x".repeat(MAX_MESSAGE_CHARS + 1)).is_err());
        assert!(
            message(&"é".repeat(MAX_MESSAGE_CHARS)).is_ok(),
            "characters, not bytes"
        );
        assert_eq!(contact_name(Some("  Ann ")).unwrap(), Some("Ann".into()));
        assert_eq!(contact_name(Some("")).unwrap(), None);
        assert_eq!(contact_name(None).unwrap(), None);
        assert!(contact_name(Some("a\u{7}b")).is_err());
        assert_eq!(message_id(" true_1@c.us_AB ").unwrap(), "true_1@c.us_AB");
        assert!(message_id("").is_err() && message_id(&"x".repeat(300)).is_err());
    }

    #[test]
    fn message_keys_are_whatsapp_web_js_serialized_ids() {
        assert_eq!(
            message_key(" true_41791234567@s.whatsapp.net_3EB0AB ").unwrap(),
            "true_41791234567@c.us_3EB0AB"
        );
        assert_eq!(
            message_key("false_120363000000000001@g.us_ABC_41790000002@c.us").unwrap(),
            "false_120363000000000001@g.us_ABC_41790000002@c.us"
        );
        for bad in ["", "3EB0AB", "maybe_41791234567@c.us_X", "true_nope@c.us_X"] {
            let e = message_key(bad).unwrap_err();
            assert_eq!(
                (e.status().as_u16(), e.code()),
                (400, "invalid_message_id"),
                "{bad:?}"
            );
        }
        assert_eq!(quoted(None).unwrap(), None);
        assert_eq!(quoted(Some("  ")).unwrap(), None);
        assert_eq!(
            quoted(Some("true_41791234567@c.us_AB")).unwrap().as_deref(),
            Some("true_41791234567@c.us_AB")
        );
        assert_eq!(quoted(Some("AB")).unwrap_err().code(), "invalid_message_id");
    }

    #[test]
    fn reactions_groups_and_idempotency_keys() {
        assert_eq!(reaction(" 👍 ").unwrap(), "👍");
        assert_eq!(reaction("").unwrap(), "");
        assert_eq!(reaction("ok").unwrap_err().code(), "invalid_reaction");
        assert_eq!(
            reaction(&"👍".repeat(33)).unwrap_err().status().as_u16(),
            400
        );

        assert_eq!(
            group_id("120363000000000001@g.us").unwrap().serialized,
            "120363000000000001@g.us"
        );
        for bad in ["41791234567@c.us", "+41791234567", "nope@g.us", ""] {
            assert_eq!(
                group_id(bad).unwrap_err().code(),
                "invalid_group_id",
                "{bad:?}"
            );
        }

        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h).unwrap(), None);
        h.insert(IDEMPOTENCY_KEY, "order-42/attempt".parse().unwrap());
        assert_eq!(
            idempotency_key(&h).unwrap().as_deref(),
            Some("order-42/attempt")
        );
        h.append(IDEMPOTENCY_KEY, "again".parse().unwrap());
        assert_eq!(
            idempotency_key(&h).unwrap_err().code(),
            "invalid_idempotency_key"
        );
        for bad in ["", "has space", &"k".repeat(256)] {
            let mut h = HeaderMap::new();
            h.insert(IDEMPOTENCY_KEY, bad.parse().unwrap());
            let e = idempotency_key(&h).unwrap_err();
            assert_eq!(
                (e.status().as_u16(), e.code()),
                (400, "invalid_idempotency_key"),
                "{bad:?}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert(
            IDEMPOTENCY_KEY,
            axum::http::HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
        );
        assert_eq!(
            idempotency_key(&h).unwrap_err().code(),
            "invalid_idempotency_key"
        );
    }
}
