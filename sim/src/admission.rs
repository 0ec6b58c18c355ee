//! What a freshly handshaken socket is: a paired device logging in (checked against the
//! device's registered Noise key), or a new device asking to be linked.

use tracing::{info, warn};
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp as wa;

use crate::crypto::to_32;
use crate::pairing;
use crate::sim::{Sim, now_secs};
use crate::stanza::{SERVER_JID, failure, stream_conflict};
use crate::world::{ConnId, DeviceAddr, Outbound, PendingPairing, SignedPreKey};

impl Sim {
    /// Decides what a freshly handshaken socket is: a paired device logging in, or a new
    /// device that wants to be linked.
    pub(crate) async fn admit(
        &self,
        conn: ConnId,
        payload: &wa::ClientPayload,
        client_static: [u8; 32],
    ) {
        if let Some(user) = payload.username {
            self.login(
                conn,
                user.to_string(),
                payload.device.unwrap_or(0) as u16,
                client_static,
            );
        } else if let Some(reg) = payload.device_pairing_data.as_option() {
            self.start_pairing(conn, reg, client_static);
        } else {
            warn!(conn, "client payload neither logs in nor registers");
            self.world()
                .send(conn, Outbound::Close(Some(failure("400"))));
        }
    }

    fn login(&self, conn: ConnId, phone: String, device: u16, client_static: [u8; 32]) {
        if let Some(f) = self.login_failure() {
            info!(conn, reason = %f.reason, "login refused (fault)");
            self.world()
                .send(conn, Outbound::Close(Some(crate::stanza::failure_of(&f))));
            return;
        }
        let addr = DeviceAddr { phone, device };
        let mut w = self.world();
        let lid = w.accounts.get(&addr.phone).map(|a| a.lid.clone());
        let admitted = match (lid, w.device(&addr)) {
            (Some(lid), Some(dev)) if !dev.removed && dev.noise_pub == client_static => Some(lid),
            _ => None,
        };
        let Some(lid) = admitted else {
            info!(?addr, "login refused: unknown or removed device");
            w.send(conn, Outbound::Close(Some(failure("401"))));
            return;
        };
        // WhatsApp allows one socket per device: the older one is told it was replaced.
        let previous = w.device(&addr).and_then(|d| d.conn);
        if let Some(prev) = previous.filter(|p| *p != conn) {
            w.send(
                prev,
                Outbound::Close(Some(stream_conflict("replaced", None))),
            );
        }
        if let Some(dev) = w.device_mut(&addr) {
            dev.conn = Some(conn);
            dev.logins += 1;
        }
        if w.admissions.len() >= crate::world::MAX_ADMISSIONS {
            w.admissions.pop_front();
        }
        w.admissions.push_back(crate::world::Admission {
            at_ms: chrono::Utc::now().timestamp_millis(),
            phone: addr.phone.clone(),
            device: addr.device,
        });
        if let Some(c) = w.conns.get_mut(&conn) {
            c.device = Some(addr.clone());
        }
        let success = NodeBuilder::new("success")
            .attr("t", now_secs().to_string())
            .attr("props", "1")
            .attr("abprops", "1")
            .attr("location", "sim")
            .attr("creation", now_secs().to_string())
            .attr("lid", format!("{lid}:{}@lid", addr.device))
            .build();
        w.send(conn, Outbound::Stanza(success));
        drop(w);
        info!(?addr, conn, "device logged in");
        self.notify_changed();
    }

    fn start_pairing(
        &self,
        conn: ConnId,
        reg: &wa::client_payload::DevicePairingRegistrationData,
        client_static: [u8; 32],
    ) {
        let parsed = (|| -> Option<PendingPairing> {
            let reg_id = reg.e_regid.as_deref()?;
            let skey_id = reg.e_skey_id.as_deref()?;
            Some(PendingPairing {
                refs: pairing::new_refs(),
                noise_pub: client_static,
                identity_pub: to_32(reg.e_ident.as_deref()?).ok()?,
                registration_id: u32::from_be_bytes(reg_id.try_into().ok()?),
                signed_prekey: SignedPreKey {
                    id: u32::from_be_bytes([
                        0,
                        *skey_id.first()?,
                        *skey_id.get(1)?,
                        *skey_id.get(2)?,
                    ]),
                    public: to_32(reg.e_skey_val.as_deref()?).ok()?,
                    signature: reg.e_skey_sig.clone()?,
                },
                success_iq: None,
                linking: None,
                pair_code: None,
            })
        })();
        let mut w = self.world();
        let Some(pending) = parsed else {
            warn!(conn, "malformed registration data");
            w.send(conn, Outbound::Close(Some(failure("400"))));
            return;
        };
        let id = w.stanza_id();
        let refs = pending.refs.clone();
        if let Some(c) = w.conns.get_mut(&conn) {
            c.pairing = Some(pending);
        }
        let iq = NodeBuilder::new("iq")
            .attr("from", SERVER_JID)
            .attr("type", "set")
            .attr("id", id)
            .attr("xmlns", "md")
            .children([NodeBuilder::new("pair-device")
                .children(
                    refs.into_iter()
                        .map(|r| NodeBuilder::new("ref").bytes(r.into_bytes()).build()),
                )
                .build()])
            .build();
        w.send(conn, Outbound::Stanza(iq));
        drop(w);
        info!(conn, "new device waiting for pairing");
        self.notify_changed();
    }
}
