//! Pairing by phone number: the companion asks for a code (`companion_hello`), the user types
//! it on the phone, the phone answers (`primary_hello`, its ephemeral key wrapped with the
//! code), the companion sends its key bundle (`companion_finish`), and the phone derives the
//! same ADV secret and links the device. Every primitive is the library's (`PairCodeUtils`,
//! HKDF, AES-GCM, X25519).

use std::time::Duration;

use tracing::{info, warn};
use wacore::libsignal::crypto::aes_256_gcm_decrypt;
use wacore::libsignal::protocol::{KeyPair, PublicKey};
use wacore::pair_code::PairCodeUtils;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use crate::crypto::{generate_key_pair, public_bytes, to_32};
use crate::pairing::PairingError;
use crate::sim::{Sim, SimError, split_jid};
use crate::stanza::{self, SERVER_JID, attr, bytes, child};
use crate::world::{ConnId, DeviceAddr, Outbound};

/// The phone-number flow's state on a pending companion socket.
#[derive(Debug, Clone)]
pub struct CodeRequest {
    pub phone: String,
    pub pairing_ref: Vec<u8>,
    /// The companion's ephemeral public key, wrapped with the code it displays.
    pub wrapped_companion_ephemeral: Vec<u8>,
    /// Set once the phone's user entered a code.
    pub primary: Option<PrimaryHello>,
    pub failed: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PrimaryHello {
    pub companion_ephemeral: [u8; 32],
    pub primary_ephemeral_private: [u8; 32],
}

/// How long `enter_pair_code` waits for the companion to finish.
const FINISH_TIMEOUT: Duration = Duration::from_secs(20);

/// Unwraps the companion's ephemeral key and decrypts its key bundle; returns the ADV secret
/// both sides derive, checking the bundle names the expected identities.
pub fn derive_adv_secret(
    hello: &PrimaryHello,
    primary_identity: &KeyPair,
    companion_identity: &[u8; 32],
    wrapped_bundle: &[u8],
) -> Result<[u8; 32], PairingError> {
    let crypto = |e: &dyn std::fmt::Display| PairingError::Crypto(e.to_string());
    let primary_eph = crate::crypto::key_pair_from_private(&hello.primary_ephemeral_private)?;
    let companion_eph =
        PublicKey::from_djb_public_key_bytes(&hello.companion_ephemeral).map_err(|e| crypto(&e))?;
    let ephemeral_shared = primary_eph
        .private_key
        .calculate_agreement(&companion_eph)
        .map_err(|e| crypto(&e))?;
    if wrapped_bundle.len() < 32 + 12 + 16 {
        return Err(PairingError::BadPairingCode);
    }
    let (salt, rest) = wrapped_bundle.split_at(32);
    let (iv, ciphertext) = rest.split_at(12);
    let mut enc_key = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(
        &ephemeral_shared,
        Some(salt),
        b"link_code_pairing_key_bundle_encryption_key",
        &mut enc_key,
    )
    .map_err(|e| crypto(&e))?;
    let iv: [u8; 12] = iv.try_into().map_err(|_| PairingError::BadPairingCode)?;
    let mut bundle = Vec::with_capacity(96);
    // A wrong code gives the phone a wrong companion key, so the bundle does not decrypt.
    aes_256_gcm_decrypt(&enc_key, &iv, b"", ciphertext, &mut bundle)
        .map_err(|_| PairingError::BadPairingCode)?;
    if bundle.len() != 96
        || bundle[..32] != companion_identity[..]
        || bundle[32..64] != public_bytes(primary_identity)[..]
    {
        return Err(PairingError::KeyMismatch);
    }
    let companion_identity_key =
        PublicKey::from_djb_public_key_bytes(companion_identity).map_err(|e| crypto(&e))?;
    let identity_shared = primary_identity
        .private_key
        .calculate_agreement(&companion_identity_key)
        .map_err(|e| crypto(&e))?;
    let mut secret_input = Vec::with_capacity(96);
    secret_input.extend_from_slice(&ephemeral_shared);
    secret_input.extend_from_slice(&identity_shared);
    secret_input.extend_from_slice(&bundle[64..]);
    let mut adv_secret = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(&secret_input, None, b"adv_secret", &mut adv_secret)
        .map_err(|e| crypto(&e))?;
    Ok(adv_secret)
}

impl Sim {
    /// `iq md set <link_code_companion_reg stage=…>` from an unpaired companion; `None` when
    /// the answer was already queued.
    pub(crate) fn on_link_code_iq(&self, conn: ConnId, iq: &Node) -> Option<Node> {
        let Some(reg) = child(iq, "link_code_companion_reg") else {
            return Some(stanza::iq_error(iq, 400, "bad-request"));
        };
        match attr(reg, "stage").as_deref() {
            Some("companion_hello") => Some(self.companion_hello(conn, iq, reg)),
            Some("companion_finish") => self.companion_finish(conn, iq, reg),
            _ => Some(stanza::iq_error(iq, 400, "bad-request")),
        }
    }

    fn companion_hello(&self, conn: ConnId, iq: &Node, reg: &Node) -> Node {
        let phone = attr(reg, "jid").and_then(|j| split_jid(&j)).map(|(u, _)| u);
        let wrapped =
            child(reg, "link_code_pairing_wrapped_companion_ephemeral_pub").and_then(bytes);
        let mut w = self.world();
        let (Some(phone), Some(wrapped)) = (phone, wrapped.filter(|b| b.len() == 80)) else {
            return stanza::iq_error(iq, 400, "bad-request");
        };
        if !w.accounts.contains_key(&phone) {
            // WhatsApp answers an unknown number this way.
            return stanza::iq_error(iq, 404, "item-not-found");
        }
        let pairing_ref = w.stanza_id().into_bytes();
        let Some(pending) = w.conns.get_mut(&conn).and_then(|c| c.pairing.as_mut()) else {
            return stanza::iq_error(iq, 401, "not-authorized");
        };
        pending.pair_code = Some(CodeRequest {
            phone,
            pairing_ref: pairing_ref.clone(),
            wrapped_companion_ephemeral: wrapped.to_vec(),
            primary: None,
            failed: None,
        });
        drop(w);
        self.notify_changed();
        stanza::iq_result(iq)
            .children([NodeBuilder::new("link_code_companion_reg")
                .children([NodeBuilder::new("link_code_pairing_ref")
                    .bytes(pairing_ref)
                    .build()])
                .build()])
            .build()
    }

    fn companion_finish(&self, conn: ConnId, iq: &Node, reg: &Node) -> Option<Node> {
        let wrapped_bundle = child(reg, "link_code_pairing_wrapped_key_bundle").and_then(bytes);
        let companion_identity = child(reg, "companion_identity_public")
            .and_then(bytes)
            .and_then(|b| to_32(b).ok());
        let mut w = self.world();
        let Some(pending) = w.conns.get(&conn).and_then(|c| c.pairing.clone()) else {
            return Some(stanza::iq_error(iq, 401, "not-authorized"));
        };
        let Some(request) = pending.pair_code.clone() else {
            return Some(stanza::iq_error(iq, 400, "bad-request"));
        };
        let (Some(hello), Some(bundle), Some(identity)) =
            (request.primary.clone(), wrapped_bundle, companion_identity)
        else {
            return Some(stanza::iq_error(iq, 400, "bad-request"));
        };
        let Some(account) = w.accounts.get(&request.phone) else {
            return Some(stanza::iq_error(iq, 404, "item-not-found"));
        };
        let outcome = if identity != pending.identity_pub {
            Err(PairingError::KeyMismatch)
        } else {
            derive_adv_secret(&hello, &account.identity, &identity, bundle)
        };
        let reply = match outcome {
            Ok(adv_secret) => {
                w.send(conn, Outbound::Stanza(stanza::iq_result(iq).build()));
                match self.link(&mut w, conn, &request.phone, &pending, &adv_secret) {
                    Ok(addr) => {
                        info!(?addr, "linked by pairing code");
                        None
                    }
                    Err(e) => Some(e.to_string()),
                }
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(err) = reply {
            warn!(conn, "pairing code flow failed: {err}");
            if let Some(rq) = w
                .conns
                .get_mut(&conn)
                .and_then(|c| c.pairing.as_mut())
                .and_then(|p| p.pair_code.as_mut())
            {
                rq.failed = Some(err);
            }
            drop(w);
            self.notify_changed();
            return Some(stanza::iq_error(iq, 400, "bad-request"));
        }
        drop(w);
        self.notify_changed();
        // The result was queued ahead of pair-success.
        None
    }

    /// The phone's user types the code a companion shows for this number. Returns once the
    /// companion finished and was linked.
    pub async fn enter_pair_code(&self, phone: &str, code: &str) -> Result<DeviceAddr, SimError> {
        let code: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_uppercase();
        let conn = {
            let mut w = self.world();
            let account = w
                .accounts
                .get(phone)
                .ok_or_else(|| PairingError::UnknownPhone(phone.to_owned()))?;
            let primary_identity_pub = public_bytes(&account.identity);
            let conn = w
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.pairing
                        .as_ref()
                        .and_then(|p| p.pair_code.as_ref())
                        .is_some_and(|r| r.phone == phone && r.primary.is_none())
                })
                .map(|(id, _)| *id)
                .max()
                .ok_or(PairingError::BadPairingCode)?;
            let Some(request) = w
                .conns
                .get_mut(&conn)
                .and_then(|c| c.pairing.as_mut())
                .and_then(|p| p.pair_code.as_mut())
            else {
                return Err(PairingError::BadPairingCode.into());
            };
            let companion_ephemeral = PairCodeUtils::decrypt_primary_ephemeral_pub(
                &request.wrapped_companion_ephemeral,
                &code,
            )
            .map_err(|_| PairingError::BadPairingCode)?;
            let primary_eph = generate_key_pair();
            let wrapped_primary =
                PairCodeUtils::encrypt_ephemeral_pub(&public_bytes(&primary_eph), &code);
            request.primary = Some(PrimaryHello {
                companion_ephemeral,
                primary_ephemeral_private: *primary_eph.private_key.serialize(),
            });
            let pairing_ref = request.pairing_ref.clone();
            let id = w.stanza_id();
            let hello = NodeBuilder::new("notification")
                .attr("from", SERVER_JID)
                .attr("type", "link_code_companion_reg")
                .attr("id", id)
                .attr("t", chrono::Utc::now().timestamp().to_string())
                .children([NodeBuilder::new("link_code_companion_reg")
                    .attr("stage", "primary_hello")
                    .children([
                        NodeBuilder::new("link_code_pairing_wrapped_primary_ephemeral_pub")
                            .bytes(wrapped_primary.to_vec())
                            .build(),
                        NodeBuilder::new("primary_identity_pub")
                            .bytes(primary_identity_pub.to_vec())
                            .build(),
                        NodeBuilder::new("link_code_pairing_ref")
                            .bytes(pairing_ref)
                            .build(),
                    ])
                    .build()])
                .build();
            w.send(conn, Outbound::Stanza(hello));
            conn
        };
        let outcome = self
            .wait_for(FINISH_TIMEOUT, |w| {
                let Some(c) = w.conns.get(&conn) else {
                    return Some(Err(PairingError::BadPairingCode));
                };
                let pending = c.pairing.as_ref()?;
                if let Some(addr) = &pending.linking {
                    return Some(Ok(addr.clone()));
                }
                pending
                    .pair_code
                    .as_ref()
                    .and_then(|r| r.failed.clone())
                    .map(|_| Err(PairingError::BadPairingCode))
            })
            .await;
        match outcome {
            Some(r) => Ok(r?),
            None => Err(PairingError::BadPairingCode.into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The phone's derivation matches the library's companion side.
    #[test]
    fn phone_and_companion_derive_the_same_adv_secret() {
        let code = "ABCD2345";
        let companion_eph = generate_key_pair();
        let companion_identity = generate_key_pair();
        let primary_identity = generate_key_pair();
        let wrapped_companion =
            PairCodeUtils::encrypt_ephemeral_pub(&public_bytes(&companion_eph), code);

        // Phone: unwrap the companion's key with the typed code, answer with its own.
        let primary_eph = generate_key_pair();
        let hello = PrimaryHello {
            companion_ephemeral: PairCodeUtils::decrypt_primary_ephemeral_pub(
                &wrapped_companion,
                code,
            )
            .unwrap(),
            primary_ephemeral_private: *primary_eph.private_key.serialize(),
        };
        // Companion: the library builds the key bundle and its ADV secret.
        let (bundle, companion_secret) = PairCodeUtils::prepare_key_bundle(
            &companion_eph,
            &public_bytes(&primary_eph),
            &public_bytes(&primary_identity),
            &companion_identity,
        )
        .unwrap();
        let phone_secret = derive_adv_secret(
            &hello,
            &primary_identity,
            &public_bytes(&companion_identity),
            &bundle,
        )
        .unwrap();
        assert_eq!(phone_secret, companion_secret);

        // A mistyped code unwraps a different key, and the bundle no longer decrypts.
        let wrong = PrimaryHello {
            companion_ephemeral: PairCodeUtils::decrypt_primary_ephemeral_pub(
                &wrapped_companion,
                "ZZZZ2345",
            )
            .unwrap(),
            ..hello
        };
        assert_eq!(
            derive_adv_secret(
                &wrong,
                &primary_identity,
                &public_bytes(&companion_identity),
                &bundle
            ),
            Err(PairingError::BadPairingCode)
        );
    }
}
