//! The simulated phone links a companion (after a QR scan or a pairing code): signed ADV
//! identity in `pair-success`, the 515 restart, and the app-state key share.

use std::sync::Arc;

use tracing::{info, warn};
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp as wa;

use crate::pairing::{self, PairingError, QrCode};
use crate::signal::PublicBundle;
use crate::sim::{Sim, SimError, now_secs};
use crate::stanza::{SERVER_JID, stream_error_code};
use crate::world::{Account, ConnId, Device, DeviceAddr, Outbound, PendingPairing, World};

impl Sim {
    pub fn scan_qr(&self, phone: &str, qr: &str) -> Result<DeviceAddr, SimError> {
        let code = QrCode::parse(qr)?;
        let mut w = self.world();
        let conn = w
            .pending_by_ref(&code.pairing_ref)
            .ok_or_else(|| PairingError::UnknownRef(code.pairing_ref.clone()))?;
        let pending = w
            .conns
            .get(&conn)
            .and_then(|c| c.pairing.clone())
            .ok_or_else(|| PairingError::UnknownRef(code.pairing_ref.clone()))?;
        if pending.noise_pub != code.noise_pub || pending.identity_pub != code.identity_pub {
            return Err(PairingError::KeyMismatch.into());
        }
        self.link(&mut w, conn, phone, &pending, &code.adv_secret)
    }

    /// Signs the companion's identity, records the device, and sends `pair-success`.
    pub(crate) fn link(
        &self,
        w: &mut World,
        conn: ConnId,
        phone: &str,
        pending: &PendingPairing,
        adv_secret: &[u8; 32],
    ) -> Result<DeviceAddr, SimError> {
        let account = w
            .accounts
            .get_mut(phone)
            .ok_or_else(|| PairingError::UnknownPhone(phone.to_owned()))?;
        let device_id = account.next_device;
        let key_index = account.next_key_index;
        let identity = pairing::sign_device_identity(
            &account.identity,
            &pending.identity_pub,
            adv_secret,
            key_index,
            now_secs(),
        )?;
        account.next_device += 1;
        account.next_key_index += 1;
        account.devices.insert(
            device_id,
            Device {
                id: device_id,
                noise_pub: pending.noise_pub,
                identity_pub: pending.identity_pub,
                registration_id: pending.registration_id,
                signed_prekey: pending.signed_prekey.clone(),
                prekeys: Default::default(),
                key_index,
                device_identity: None,
                conn: None,
                offline: Default::default(),
                removed: false,
                logins: 0,
                synced_collections: Default::default(),
            },
        );
        let (lid, push_name) = (account.lid.clone(), account.push_name.clone());
        let addr = DeviceAddr {
            phone: phone.to_owned(),
            device: device_id,
        };
        let iq_id = w.stanza_id();
        if let Some(p) = w.conns.get_mut(&conn).and_then(|c| c.pairing.as_mut()) {
            p.success_iq = Some(iq_id.clone());
            p.linking = Some(addr.clone());
        }
        let success = NodeBuilder::new("iq")
            .attr("from", SERVER_JID)
            .attr("type", "set")
            .attr("id", iq_id)
            .attr("xmlns", "md")
            .children([NodeBuilder::new("pair-success")
                .children([
                    NodeBuilder::new("device-identity").bytes(identity).build(),
                    NodeBuilder::new("platform").attr("name", "android").build(),
                    NodeBuilder::new("device")
                        .attr("jid", format!("{phone}:{device_id}@s.whatsapp.net"))
                        .attr("lid", format!("{lid}:{device_id}@lid"))
                        .build(),
                    // The push name rides along as on a business account, so the client
                    // does not need the app-state sync to learn it.
                    NodeBuilder::new("biz").attr("name", push_name).build(),
                ])
                .build()])
            .build();
        w.send(conn, Outbound::Stanza(success));
        info!(?addr, conn, "phone linked a new device");
        Ok(addr)
    }

    /// The client confirmed the pairing (`pair-device-sign`): keep its signed identity, queue
    /// the phone's app-state key share for it, and restart its stream (515) as WhatsApp does.
    pub(crate) async fn pairing_confirmed(
        self: &Arc<Self>,
        conn: ConnId,
        device_identity: Option<Vec<u8>>,
    ) {
        let (addr, bundle, key_share) = {
            let mut w = self.world();
            let Some(addr) = w
                .conns
                .get_mut(&conn)
                .and_then(|c| c.pairing.take())
                .and_then(|p| p.linking)
            else {
                return;
            };
            let Some(account) = w.accounts.get(&addr.phone) else {
                return;
            };
            let key_share = app_state_key_share(account);
            let Some(dev) = w.device_mut(&addr) else {
                return;
            };
            dev.device_identity = device_identity;
            let bundle = PublicBundle {
                registration_id: dev.registration_id,
                identity: dev.identity_pub,
                signed_prekey_id: dev.signed_prekey.id,
                signed_prekey: dev.signed_prekey.public,
                signed_prekey_signature: dev.signed_prekey.signature.clone(),
                prekey: None,
            };
            w.send(conn, Outbound::Close(Some(stream_error_code("515"))));
            (addr, bundle, key_share)
        };
        // The phone shares the app-state key with its new companion right away, as a real
        // primary does; the message waits in the device's queue until it logs in.
        if let Err(e) = self.phone_send(&addr, &key_share, Some(&bundle)).await {
            warn!(
                ?addr,
                "phone could not encrypt the app-state key share: {e}"
            );
        }
        // Then its chat history, if the account has one.
        self.start_history(&addr);
        self.notify_changed();
    }

    /// The phone (device 0) sends `msg` to its own companion `addr`: a Signal-encrypted
    /// `category="peer"` message from the account's number, queued until acknowledged.
    /// Without a session the phone starts one from `bundle`, or from the device's prekeys.
    pub(crate) async fn phone_send_to_device(
        &self,
        addr: &DeviceAddr,
        msg: &wa::Message,
    ) -> Result<String, SimError> {
        let plaintext = wacore::messages::MessageUtils::encode_and_pad(msg);
        self.phone_send(addr, &plaintext, None).await
    }

    async fn phone_send(
        &self,
        addr: &DeviceAddr,
        padded: &[u8],
        bundle: Option<&PublicBundle>,
    ) -> Result<String, SimError> {
        let primary = self
            .world()
            .accounts
            .get(&addr.phone)
            .map(|a| a.primary.clone())
            .ok_or_else(|| SimError::NotFound(format!("phone {}", addr.phone)))?;
        let peer = crate::messaging::device_address(&addr.phone, addr.device);
        let fetched;
        let bundle = match bundle {
            Some(b) => Some(b),
            None if primary.has_session(&peer).await => None,
            None => {
                fetched = self
                    .take_bundle(&format!("{}:{}@s.whatsapp.net", addr.phone, addr.device))
                    .await
                    .map(|(b, _)| b);
                fetched.as_ref()
            }
        };
        let env = primary.encrypt(&peer, bundle, padded).await?;
        let id = self.world().stanza_id();
        let stanza = crate::messaging::message_stanza(
            &id,
            &format!("{}@s.whatsapp.net", addr.phone),
            Some("peer"),
            "text",
            &env,
        );
        self.deliver(addr, &id, stanza);
        Ok(id)
    }
}

/// The padded `Message` with the account's app-state sync key, as the phone shares it.
fn app_state_key_share(account: &Account) -> Vec<u8> {
    use wa::message::{
        AppStateSyncKey, AppStateSyncKeyData, AppStateSyncKeyFingerprint, AppStateSyncKeyId,
        AppStateSyncKeyShare, ProtocolMessage, protocol_message,
    };
    let msg = wa::Message {
        protocol_message: buffa::MessageField::some(ProtocolMessage {
            r#type: Some(protocol_message::Type::APP_STATE_SYNC_KEY_SHARE),
            app_state_sync_key_share: buffa::MessageField::some(AppStateSyncKeyShare {
                keys: vec![AppStateSyncKey {
                    key_id: buffa::MessageField::some(AppStateSyncKeyId {
                        key_id: Some(account.app_state_key_id.clone()),
                    }),
                    key_data: buffa::MessageField::some(AppStateSyncKeyData {
                        key_data: Some(account.app_state_key.clone()),
                        fingerprint: buffa::MessageField::some(AppStateSyncKeyFingerprint {
                            raw_id: Some(1),
                            current_index: Some(0),
                            device_indexes: vec![0],
                        }),
                        timestamp: Some((now_secs() * 1000) as i64),
                    }),
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    wacore::messages::MessageUtils::encode_and_pad(&msg)
}
