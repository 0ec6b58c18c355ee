//! Accounts (with their phones), linked devices and contacts, and the prekey directory
//! built from them.

use std::sync::Arc;

use wacore::libsignal::protocol::KeyPair;

use crate::crypto::generate_key_pair;
use crate::faults::SocketFault;
use crate::signal::{Participant, PublicBundle};
use crate::sim::{ContactInfo, DeviceInfo, PhoneInfo, Sim, SimError};
use crate::world::{Account, Contact, DeviceAddr, ReceivedText};

impl Sim {
    /// Creates an account with its simulated phone. `phone` defaults to a fresh number.
    pub fn create_phone(
        &self,
        phone: Option<String>,
        push_name: Option<String>,
    ) -> Result<PhoneInfo, SimError> {
        let identity = generate_key_pair();
        let primary = Arc::new(Participant::new(KeyPair::new(
            identity.public_key,
            identity.private_key.clone(),
        ))?);
        let mut w = self.world();
        let phone = match phone {
            Some(p) => p,
            None => loop {
                let candidate = format!("1555{:07}", w.next_lid + 1);
                w.next_lid += 1;
                if !w.accounts.contains_key(&candidate) && !w.contacts.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        if w.accounts.contains_key(&phone) || w.contacts.contains_key(&phone) {
            return Err(SimError::Exists(phone));
        }
        let lid = w.alloc_lid();
        let push_name = push_name.unwrap_or_else(|| format!("Sim {phone}"));
        use rand::RngExt as _;
        let mut rng = crate::crypto::new_rng();
        let key_id: [u8; 6] = rng.random();
        let key: [u8; 32] = rng.random();
        w.accounts.insert(
            phone.clone(),
            Account {
                phone: phone.clone(),
                lid: lid.clone(),
                push_name: push_name.clone(),
                identity,
                primary,
                app_state_key_id: key_id.to_vec(),
                app_state_key: key.to_vec(),
                devices: Default::default(),
                next_device: 1,
                next_key_index: 1,
                history: None,
            },
        );
        drop(w);
        self.notify_changed();
        Ok(PhoneInfo {
            phone,
            lid,
            push_name,
        })
    }

    pub fn phones(&self) -> Vec<PhoneInfo> {
        self.world()
            .accounts
            .values()
            .map(|a| PhoneInfo {
                phone: a.phone.clone(),
                lid: a.lid.clone(),
                push_name: a.push_name.clone(),
            })
            .collect()
    }

    pub fn devices(&self) -> Vec<DeviceInfo> {
        let w = self.world();
        w.accounts
            .values()
            .flat_map(|a| {
                a.devices.values().map(move |d| DeviceInfo {
                    phone: a.phone.clone(),
                    device: d.id,
                    jid: format!("{}:{}@s.whatsapp.net", a.phone, d.id),
                    lid: format!("{}:{}@lid", a.lid, d.id),
                    connected: d.conn.is_some(),
                    removed: d.removed,
                    logins: d.logins,
                    queued: d.offline.len(),
                    prekeys: d.prekeys.len(),
                })
            })
            .collect()
    }

    /// Removes a device as the phone's "log out this device" does.
    pub fn remove_device(&self, addr: &DeviceAddr) -> Result<(), SimError> {
        self.inject(addr, SocketFault::DeviceRemoved)
    }

    // ---- contacts -----------------------------------------------------------------------

    pub fn create_contact(
        &self,
        phone: Option<String>,
        name: Option<String>,
    ) -> Result<ContactInfo, SimError> {
        let participant = Arc::new(Participant::new(generate_key_pair())?);
        let mut w = self.world();
        let phone = match phone {
            Some(p) => p,
            None => loop {
                w.next_lid += 1;
                let candidate = format!("1666{:07}", w.next_lid);
                if !w.accounts.contains_key(&candidate) && !w.contacts.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        if w.accounts.contains_key(&phone) || w.contacts.contains_key(&phone) {
            return Err(SimError::Exists(phone));
        }
        let lid = w.alloc_lid();
        let name = name.unwrap_or_else(|| format!("Contact {phone}"));
        w.contacts.insert(
            phone.clone(),
            Contact {
                phone: phone.clone(),
                lid: lid.clone(),
                name: name.clone(),
                participant,
                received: Vec::new(),
                receipts: Vec::new(),
                bundle_fetches: 0,
            },
        );
        drop(w);
        self.notify_changed();
        Ok(ContactInfo { phone, lid, name })
    }

    pub fn contacts(&self) -> Vec<ContactInfo> {
        self.world()
            .contacts
            .values()
            .map(|c| ContactInfo {
                phone: c.phone.clone(),
                lid: c.lid.clone(),
                name: c.name.clone(),
            })
            .collect()
    }

    pub fn contact_receipts(
        &self,
        contact: &str,
    ) -> Result<Vec<crate::world::ReceiptSeen>, SimError> {
        self.world()
            .contacts
            .get(contact)
            .map(|c| c.receipts.clone())
            .ok_or_else(|| SimError::NotFound(format!("contact {contact}")))
    }

    /// Iqs the simulator answered with an empty result because it knows no better.
    pub fn unhandled_iqs(&self) -> Vec<String> {
        self.world().unhandled_iqs.clone()
    }

    pub fn contact_received(&self, contact: &str) -> Result<Vec<ReceivedText>, SimError> {
        self.world()
            .contacts
            .get(contact)
            .map(|c| c.received.clone())
            .ok_or_else(|| SimError::NotFound(format!("contact {contact}")))
    }
}

impl Sim {
    /// The prekey bundle of the device `jid` names (a phone, a companion or a contact), with
    /// the companion's signed ADV identity. Every fetch consumes one one-time prekey (each is
    /// handed out once, as WhatsApp's server does).
    pub(crate) async fn take_bundle(&self, jid: &str) -> Option<(PublicBundle, Option<Vec<u8>>)> {
        let (user, device) = split_jid(jid)?;
        let participant = {
            let mut w = self.world();
            if device == 0 {
                match w.account_by_user(&user).map(|a| a.primary.clone()) {
                    Some(p) => p,
                    None => {
                        let c = w.contact_by_user_mut(&user)?;
                        c.bundle_fetches += 1;
                        c.participant.clone()
                    }
                }
            } else {
                let phone = w.account_by_user(&user)?.phone.clone();
                let dev = w.device_mut(&DeviceAddr { phone, device })?;
                if dev.removed {
                    return None;
                }
                let prekey = dev.prekeys.pop_first();
                return Some((
                    PublicBundle {
                        registration_id: dev.registration_id,
                        identity: dev.identity_pub,
                        signed_prekey_id: dev.signed_prekey.id,
                        signed_prekey: dev.signed_prekey.public,
                        signed_prekey_signature: dev.signed_prekey.signature.clone(),
                        prekey,
                    },
                    dev.device_identity.clone(),
                ));
            }
        };
        Some((participant.take_bundle().await, None))
    }
}

/// `user[.agent][:device]@server` → (user, device).
pub(crate) fn split_jid(jid: &str) -> Option<(String, u16)> {
    let (local, _server) = jid.split_once('@')?;
    let (user_agent, device) = match local.split_once(':') {
        Some((u, d)) => (u, d.parse().ok()?),
        None => (local, 0),
    };
    let user = user_agent.split('.').next()?;
    Some((user.to_owned(), device))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn splits_jids() {
        assert_eq!(split_jid("155@s.whatsapp.net"), Some(("155".into(), 0)));
        assert_eq!(split_jid("155:3@s.whatsapp.net"), Some(("155".into(), 3)));
        assert_eq!(split_jid("9.1:2@lid"), Some(("9".into(), 2)));
        assert_eq!(split_jid("nope"), None);
    }
}
