//! `xmlns="w:profile:picture"` get: a contact's profile picture, as WhatsApp answers it.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use crate::sim::{Sim, SimError, split_jid};
use crate::stanza::{self, attr, child};

/// A contact's profile picture (`GET /v1/contacts/{phone}/picture`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProfilePictureInfo {
    pub id: String,
    pub url: String,
    pub direct_path: String,
}

impl Sim {
    /// The contact's picture: by default a contact created with a name has one (the URL is
    /// deterministic: `https://<media host>/v/pp/<phone>.jpg`, not served), one without a
    /// name has none; [`Sim::set_contact_picture`] overrides that.
    pub fn contact_picture(&self, contact: &str) -> Result<Option<ProfilePictureInfo>, SimError> {
        let w = self.world();
        let c = w
            .contacts
            .get(contact)
            .ok_or_else(|| SimError::NotFound(format!("contact {contact}")))?;
        let named = c.name != format!("Contact {}", c.phone);
        let present = w
            .conversation
            .contacts
            .get(contact)
            .and_then(|l| l.picture)
            .unwrap_or(named);
        if !present {
            return Ok(None);
        }
        let host = self
            .media()
            .host()
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let direct_path = format!("/v/pp/{}.jpg", c.phone);
        // A stable numeric id, as WhatsApp's picture ids are.
        let digest = sha2::Sha256::digest(c.phone.as_bytes());
        let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
        Ok(Some(ProfilePictureInfo {
            id: (1_000_000_000 + n % 9_000_000_000).to_string(),
            url: format!("https://{host}{direct_path}"),
            direct_path,
        }))
    }

    /// Gives the contact a picture or takes it away (kept in memory only).
    pub fn set_contact_picture(&self, contact: &str, present: bool) -> Result<(), SimError> {
        let mut w = self.world();
        if !w.contacts.contains_key(contact) {
            return Err(SimError::NotFound(format!("contact {contact}")));
        }
        w.conversation.contact(contact).picture = Some(present);
        Ok(())
    }
}

/// `<iq xmlns="w:profile:picture" type="get" target=jid><picture type query="url"/></iq>`:
/// `<picture id url direct_path type>` for a contact with a picture, else the
/// `item-not-found` error (404) WhatsApp sends, which the library returns as `Ok(None)`.
pub(crate) fn profile_picture(sim: &Sim, iq: &Node) -> Node {
    let contact = attr(iq, "target")
        .and_then(|t| split_jid(&t))
        .and_then(|(user, _)| sim.world().contact_by_user(&user).map(|c| c.phone.clone()));
    let picture = contact
        .as_deref()
        .and_then(|c| sim.contact_picture(c).ok().flatten());
    let Some(p) = picture else {
        return stanza::iq_error(iq, 404, "item-not-found");
    };
    let kind = child(iq, "picture")
        .and_then(|p| attr(p, "type"))
        .unwrap_or_else(|| "image".to_owned());
    let mut reply = stanza::iq_result(iq);
    if let Some(target) = attr(iq, "target") {
        reply = reply.attr("from", target);
    }
    reply
        .children([NodeBuilder::new("picture")
            .attr("id", p.id)
            .attr("type", kind)
            .attr("url", p.url)
            .attr("direct_path", p.direct_path)
            .build()])
        .build()
}
