//! The simulator's shared state and the operations on it that sockets, the simulated phones
//! and contacts, and the control API perform.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, mpsc};
use tracing::{info, warn};
use wacore::libsignal::protocol::KeyPair;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp as wa;

use crate::certs::build_cert_chain;
use crate::crypto::{CryptoError, generate_key_pair, public_bytes, to_32};
use crate::faults::{GlobalFaults, SocketFault};
use crate::handshake::{Pattern, ServerIdentity};
use crate::pairing::{self, PairingError, QrCode};
use crate::signal::{Participant, PublicBundle, SignalError};
use crate::stanza::SERVER_JID;
use crate::world::{
    Account, Conn, ConnId, Contact, Device, DeviceAddr, Outbound, PendingPairing, ReceivedText,
    SignedPreKey, World,
};

/// Keys the simulator is started with. Both are generated when not given; the server key
/// must stay the same across restarts for clients to keep using IK.
pub struct SimKeys {
    pub server_static: KeyPair,
    pub root: KeyPair,
}

impl SimKeys {
    pub fn generate() -> Self {
        Self {
            server_static: generate_key_pair(),
            root: generate_key_pair(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Pairing(#[from] PairingError),
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("device {0:?} has no live socket")]
    NotConnected(DeviceAddr),
}

pub struct Sim {
    /// Swapped whole when the server key rotates; a handshake uses one consistent identity.
    server: std::sync::RwLock<Arc<ServerIdentity>>,
    root: KeyPair,
    root_pub: [u8; 32],
    world: Mutex<World>,
    faults: Mutex<GlobalFaults>,
    /// Woken on every change a waiter may care about (messages received, devices, sockets).
    changed: Notify,
    /// Counts those changes, so a periodic saver knows whether to write.
    changes: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PhoneInfo {
    pub phone: String,
    pub lid: String,
    pub push_name: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ContactInfo {
    pub phone: String,
    pub lid: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DeviceInfo {
    pub phone: String,
    pub device: u16,
    pub jid: String,
    pub lid: String,
    pub connected: bool,
    pub removed: bool,
    pub logins: u32,
    pub queued: usize,
    pub prekeys: usize,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SocketInfo {
    pub id: ConnId,
    pub pattern: Pattern,
    pub phone: Option<String>,
    pub device: Option<u16>,
    pub pairing: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_secs() -> u64 {
    chrono::Utc::now().timestamp().max(0) as u64
}

impl Sim {
    pub fn new(keys: SimKeys) -> Result<Arc<Self>, SimError> {
        let static_pub = public_bytes(&keys.server_static);
        let cert_chain = build_cert_chain(&keys.root, &static_pub)?;
        Ok(Arc::new(Self {
            server: std::sync::RwLock::new(Arc::new(ServerIdentity {
                static_kp: keys.server_static,
                static_pub,
                cert_chain,
            })),
            root_pub: public_bytes(&keys.root),
            root: keys.root,
            world: Mutex::new(World::default()),
            faults: Mutex::new(GlobalFaults::default()),
            changed: Notify::new(),
            changes: Default::default(),
        }))
    }

    pub fn server_identity(&self) -> Arc<ServerIdentity> {
        self.server
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the server's static Noise key (with a new chain from the same root), as
    /// WhatsApp rotates its keys: clients that cached the old one try IK, fail, and complete
    /// the handshake through XXfallback.
    pub fn rotate_server_key(&self) -> Result<(), SimError> {
        let static_kp = generate_key_pair();
        let static_pub = public_bytes(&static_kp);
        let cert_chain = build_cert_chain(&self.root, &static_pub)?;
        *self.server.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ServerIdentity {
            static_kp,
            static_pub,
            cert_chain,
        });
        info!("server static key rotated");
        Ok(())
    }

    pub(crate) fn root_private(&self) -> [u8; 32] {
        *self.root.private_key.serialize()
    }

    /// The root key the certificate chain is signed with.
    pub fn root_public_key(&self) -> [u8; 32] {
        self.root_pub
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    pub(crate) fn notify_changed(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Grows on every state change.
    pub fn change_count(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `check` returns `Some`, re-evaluating on every change.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&World) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = check(&self.world()) {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(&self.world());
            }
        }
    }

    // ---- faults -------------------------------------------------------------------------

    pub fn refusing_connections(&self) -> bool {
        lock(&self.faults).refusing()
    }

    pub fn refuse_connections_for(&self, d: Duration) {
        lock(&self.faults).refuse_connections_for(d);
    }

    pub fn set_frame_delay(&self, d: Duration) {
        lock(&self.faults).set_frame_delay(d);
    }

    pub(crate) fn frame_delay(&self) -> Duration {
        lock(&self.faults).frame_delay()
    }

    /// Applies a fault to a device's live socket.
    pub fn inject(&self, addr: &DeviceAddr, fault: SocketFault) -> Result<(), SimError> {
        let mut w = self.world();
        let dev = w
            .device_mut(addr)
            .ok_or_else(|| SimError::NotFound(format!("device {addr:?}")))?;
        let conn = dev.conn;
        if fault == SocketFault::DeviceRemoved {
            dev.removed = true;
            dev.offline.clear();
        }
        let Some(conn) = conn else {
            return if fault == SocketFault::DeviceRemoved {
                Ok(())
            } else {
                Err(SimError::NotConnected(addr.clone()))
            };
        };
        let out = match fault {
            SocketFault::Drop => Outbound::Drop,
            SocketFault::Replaced => Outbound::Close(Some(stream_conflict("replaced", None))),
            SocketFault::RestartRequired => Outbound::Close(Some(stream_error_code("515"))),
            SocketFault::DeviceRemoved => {
                Outbound::Close(Some(stream_conflict("device_removed", Some("401"))))
            }
        };
        info!(?addr, ?fault, "injecting fault");
        w.send(conn, out);
        Ok(())
    }

    // ---- sockets ------------------------------------------------------------------------

    pub(crate) fn register_conn(
        &self,
        tx: mpsc::UnboundedSender<Outbound>,
        pattern: Pattern,
    ) -> ConnId {
        let mut w = self.world();
        w.next_conn += 1;
        let id = w.next_conn;
        w.conns.insert(
            id,
            Conn {
                tx,
                device: None,
                pattern,
                active: false,
                pairing: None,
            },
        );
        drop(w);
        self.notify_changed();
        id
    }

    /// Drops every live socket, as when the server goes away.
    pub fn drop_all_sockets(&self) {
        let w = self.world();
        for c in w.conns.values() {
            let _ = c.tx.send(Outbound::Drop);
        }
    }

    pub(crate) fn unregister_conn(&self, id: ConnId) {
        let mut w = self.world();
        if let Some(conn) = w.conns.remove(&id)
            && let Some(addr) = conn.device
            && let Some(dev) = w.device_mut(&addr)
            && dev.conn == Some(id)
        {
            dev.conn = None;
        }
        drop(w);
        self.notify_changed();
    }

    pub fn sockets(&self) -> Vec<SocketInfo> {
        let w = self.world();
        let mut out: Vec<SocketInfo> = w
            .conns
            .iter()
            .map(|(id, c)| SocketInfo {
                id: *id,
                pattern: c.pattern,
                phone: c.device.as_ref().map(|d| d.phone.clone()),
                device: c.device.as_ref().map(|d| d.device),
                pairing: c.pairing.is_some(),
            })
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }

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

    // ---- accounts, phones and pairing ---------------------------------------------------

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

    /// The phone scans a companion's QR code and links it.
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
    pub(crate) async fn pairing_confirmed(&self, conn: ConnId, device_identity: Option<Vec<u8>>) {
        let (addr, primary, bundle, key_share) = {
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
            let primary = account.primary.clone();
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
            (addr, primary, bundle, key_share)
        };
        // The phone shares the app-state key with its new companion right away, as a real
        // primary does; the message waits in the device's queue until it logs in.
        let peer = crate::messaging::device_address(&addr.phone, addr.device);
        match primary.encrypt(&peer, Some(&bundle), &key_share).await {
            Ok(env) => {
                let mut w = self.world();
                let id = w.stanza_id();
                let stanza = crate::messaging::message_stanza(
                    &id,
                    &format!("{}@s.whatsapp.net", addr.phone),
                    Some("peer"),
                    "text",
                    &env,
                );
                if let Some(dev) = w.device_mut(&addr) {
                    dev.offline.push(id, stanza);
                }
            }
            Err(e) => warn!(
                ?addr,
                "phone could not encrypt the app-state key share: {e}"
            ),
        }
        self.notify_changed();
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

/// `<failure reason=…/>`, the login refusal.
fn failure(reason: &str) -> Node {
    NodeBuilder::new("failure")
        .attr("reason", reason)
        .attr("location", "sim")
        .build()
}

fn stream_error_code(code: &str) -> Node {
    NodeBuilder::new("stream:error").attr("code", code).build()
}

fn stream_conflict(kind: &str, code: Option<&str>) -> Node {
    let mut b = NodeBuilder::new("stream:error");
    if let Some(code) = code {
        b = b.attr("code", code);
    }
    b.children([NodeBuilder::new("conflict").attr("type", kind).build()])
        .build()
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

impl Sim {
    /// The prekey bundle of the device `jid` names (a phone, a companion or a contact), with
    /// the companion's signed ADV identity. Consumes a companion's one-time prekey.
    pub(crate) async fn take_bundle(&self, jid: &str) -> Option<(PublicBundle, Option<Vec<u8>>)> {
        let (user, device) = split_jid(jid)?;
        let participant = {
            let mut w = self.world();
            if device == 0 {
                w.account_by_user(&user)
                    .map(|a| a.primary.clone())
                    .or_else(|| w.contact_by_user(&user).map(|c| c.participant.clone()))?
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
        Some((participant.public_bundle().await, None))
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
