//! WhatsApp ids as whatsapp-web.js serializes them (`{server, user, _serialized}`, 1:1 chats as
//! `<phone>@c.us`), and the parsing of every spelling a client may send for a chat: the wwebjs
//! `@c.us` form, the protocol's `@s.whatsapp.net`, a bare phone number, a LID (`@lid`), a group
//! (`@g.us`), or the id object itself.

use serde::{Deserialize, Deserializer, Serialize};

use crate::phone::normalize_phone;

/// whatsapp-web.js's server of phone-number users (the protocol says `s.whatsapp.net`).
pub const USER_SERVER: &str = "c.us";
/// The protocol's server of phone-number users.
pub const PROTOCOL_USER_SERVER: &str = "s.whatsapp.net";
pub const GROUP_SERVER: &str = "g.us";
pub const LID_SERVER: &str = "lid";

/// Longest chat id accepted (far above any real one).
pub const MAX_CHAT_ID_LEN: usize = 128;

/// [`Wid::parse`]'s accepted spellings as an ECMA-262 regular expression, for the OpenAPI
/// document (wasp-api's request fuzzer checks the two agree).
pub const CHAT_ID_PATTERN: &str = r"^\s*((\+|00)?[1-9]([ ().-]?[0-9]){6,14}|[1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}(-[0-9]{1,24})?@g\.us|[0-9]{1,24}@(lid|newsletter)|status@broadcast)\s*$";

/// A WhatsApp id (`ChatId`/`ContactId` in whatsapp-web.js).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Wid {
    /// `c.us` (phone number), `g.us` (group), `lid` (WhatsApp's hidden user id), `broadcast`,
    /// `newsletter`.
    pub server: String,
    /// The number, LID or group id before the `@`.
    pub user: String,
    /// `user@server`, the form every route accepts.
    #[serde(rename = "_serialized")]
    pub serialized: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a WhatsApp chat id: use 41791234567@c.us, 41791234567@s.whatsapp.net, a phone number \
     in E.164 (+41791234567), 1203630xxxx@g.us or a LID (…@lid)"
)]
pub struct BadWid;

fn digits(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
}

impl Wid {
    fn new(user: &str, server: &str) -> Self {
        Self {
            server: server.to_owned(),
            user: user.to_owned(),
            serialized: format!("{user}@{server}"),
        }
    }

    /// A phone number's chat (`<digits>@c.us`).
    pub fn phone(phone: &str) -> Result<Self, BadWid> {
        let digits = normalize_phone(phone).map_err(|_| BadWid)?;
        Ok(Self::new(&digits, USER_SERVER))
    }

    /// Any accepted spelling of a chat id → its canonical form (`@c.us` for phone users).
    /// Device suffixes (`user:3@…`) name a device, not a chat, and are refused.
    pub fn parse(input: &str) -> Result<Self, BadWid> {
        let input = input.trim();
        if input.is_empty() || input.len() > MAX_CHAT_ID_LEN {
            return Err(BadWid);
        }
        let Some((user, server)) = input.split_once('@') else {
            return Self::phone(input);
        };
        match server {
            USER_SERVER | PROTOCOL_USER_SERVER => {
                // Exactly the digits: `+41…@c.us` or `41 79…@c.us` are not ids.
                normalize_phone(user)
                    .ok()
                    .filter(|d| d == user)
                    .map(|d| Self::new(&d, USER_SERVER))
                    .ok_or(BadWid)
            }
            GROUP_SERVER => {
                // New groups: digits; old groups: `creator-timestamp`.
                let mut parts = user.split('-');
                let first = parts.next().is_some_and(|p| digits(p, 24));
                let rest: Vec<&str> = parts.collect();
                (first && rest.len() <= 1 && rest.iter().all(|p| digits(p, 24)))
                    .then(|| Self::new(user, GROUP_SERVER))
                    .ok_or(BadWid)
            }
            LID_SERVER | "newsletter" => digits(user, 24)
                .then(|| Self::new(user, server))
                .ok_or(BadWid),
            "broadcast" if user == "status" => Ok(Self::new(user, server)),
            _ => Err(BadWid),
        }
    }

    /// From the protocol's parts of a JID (device and agent already dropped).
    pub fn from_protocol(user: &str, server: &str) -> Self {
        let server = if server == PROTOCOL_USER_SERVER {
            USER_SERVER
        } else {
            server
        };
        Self::new(user, server)
    }

    /// The JID the WhatsApp protocol (and the client library) uses for this id.
    pub fn protocol_jid(&self) -> String {
        if self.server == USER_SERVER {
            format!("{}@{PROTOCOL_USER_SERVER}", self.user)
        } else {
            self.serialized.clone()
        }
    }

    pub fn is_group(&self) -> bool {
        self.server == GROUP_SERVER
    }

    pub fn is_lid(&self) -> bool {
        self.server == LID_SERVER
    }

    /// The phone number (digits) of a phone user's id.
    pub fn phone_digits(&self) -> Option<&str> {
        (self.server == USER_SERVER).then_some(self.user.as_str())
    }
}

impl std::fmt::Display for Wid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.serialized)
    }
}

/// A chat or message id as a client may send it: the plain string (`"41791234567@c.us"`) or
/// whatsapp-web.js's object (`{"_serialized": "…"}`, or `{"user", "server"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct IdInput(pub String);

/// What [`IdInput`] accepts: a string, or an object with `_serialized` (or `user` and `server`).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for IdInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let text = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_CHAT_ID_LEN))
                .pattern(Some(CHAT_ID_PATTERN))
        };
        OneOfBuilder::new()
            .item(text().examples(["41791234567@c.us"]))
            .item(
                ObjectBuilder::new()
                    .property("_serialized", text())
                    .property("user", ObjectBuilder::new().schema_type(Type::String))
                    .property("server", ObjectBuilder::new().schema_type(Type::String))
                    .required("_serialized"),
            )
            .description(Some(
                "A chat id: the string, or whatsapp-web.js's id object `{server, user, _serialized}`",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for IdInput {
    fn name() -> std::borrow::Cow<'static, str> {
        "IdInput".into()
    }
}

impl<'de> Deserialize<'de> for IdInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Object {
                #[serde(rename = "_serialized")]
                serialized: Option<String>,
                user: Option<String>,
                server: Option<String>,
            },
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected an id string or an object with `_serialized`")
        })? {
            Raw::Text(s) => Ok(Self(s)),
            Raw::Object {
                serialized: Some(s),
                ..
            } => Ok(Self(s)),
            Raw::Object {
                user: Some(u),
                server: Some(s),
                ..
            } => Ok(Self(format!("{u}@{s}"))),
            Raw::Object { .. } => Err(serde::de::Error::custom(
                "an id object needs `_serialized` (or `user` and `server`)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_phone_chat_is_the_c_us_id() {
        for input in [
            "41791234567@c.us",
            "41791234567@s.whatsapp.net",
            "+41 79 123 45 67",
            "0041791234567",
            " 41791234567@c.us ",
        ] {
            let w = Wid::parse(input).unwrap();
            assert_eq!(w.serialized, "41791234567@c.us", "{input}");
            assert_eq!(
                (w.user.as_str(), w.server.as_str()),
                ("41791234567", "c.us")
            );
            assert_eq!(w.protocol_jid(), "41791234567@s.whatsapp.net");
            assert_eq!(w.phone_digits(), Some("41791234567"));
        }
    }

    #[test]
    fn groups_lids_and_broadcasts_keep_their_server() {
        assert_eq!(
            Wid::parse("120363025246125244@g.us")
                .unwrap()
                .protocol_jid(),
            "120363025246125244@g.us"
        );
        assert!(
            Wid::parse("41791234567-1600000000@g.us")
                .unwrap()
                .is_group()
        );
        let lid = Wid::parse("100000012345678@lid").unwrap();
        assert!(lid.is_lid() && lid.phone_digits().is_none());
        assert_eq!(lid.protocol_jid(), "100000012345678@lid");
        assert!(Wid::parse("status@broadcast").is_ok());
    }

    #[test]
    fn bad_ids_are_refused() {
        for bad in [
            "",
            "abc",
            "x@evil.com",
            "@c.us",
            "+41791234567@c.us",
            "41791234567:3@s.whatsapp.net",
            "12<script>@g.us",
            "1-2-3@g.us",
            "abc@lid",
            "other@broadcast",
            &"1".repeat(200),
        ] {
            assert_eq!(Wid::parse(bad), Err(BadWid), "{bad:?}");
        }
    }

    #[test]
    fn protocol_jids_become_wwebjs_ids() {
        let w = Wid::from_protocol("41791234567", "s.whatsapp.net");
        assert_eq!(w.serialized, "41791234567@c.us");
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            serde_json::json!({"server": "c.us", "user": "41791234567", "_serialized": "41791234567@c.us"})
        );
    }

    #[test]
    fn an_id_is_accepted_as_a_string_or_the_wwebjs_object() {
        let parse = |j: &str| serde_json::from_str::<IdInput>(j).map(|i| i.0);
        assert_eq!(parse(r#""1@c.us""#).unwrap(), "1@c.us");
        assert_eq!(
            parse(r#"{"server":"c.us","user":"1","_serialized":"1@c.us"}"#).unwrap(),
            "1@c.us"
        );
        assert_eq!(parse(r#"{"user":"1","server":"c.us"}"#).unwrap(), "1@c.us");
        assert!(parse(r#"{"user":"1"}"#).is_err());
        assert!(parse("42").is_err());
    }
}
