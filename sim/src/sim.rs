//! The simulator's shared state and the operations on it that sockets, the simulated phones
//! and contacts, and the control API perform.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, mpsc};
use tracing::info;
use wacore::libsignal::protocol::KeyPair;

use crate::certs::build_cert_chain;
use crate::crypto::{CryptoError, generate_key_pair, public_bytes};
use crate::faults::{GlobalFaults, SocketFault};
use crate::handshake::{Pattern, ServerIdentity};
use crate::pairing::PairingError;
use crate::signal::SignalError;
use crate::stanza::{stream_conflict, stream_error_code};
use crate::world::{Conn, ConnId, DeviceAddr, Outbound, World};

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
    #[error(transparent)]
    Tls(#[from] crate::media_server::TlsError),
    #[error("media: {0}")]
    Media(String),
    #[error("{0}")]
    BadRequest(String),
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
    /// The media server's blobs and auth token.
    media: crate::media::MediaStore,
    /// The CA the media server's TLS certificate chains to.
    media_ca: crate::media_server::MediaCa,
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

pub(crate) fn now_secs() -> u64 {
    chrono::Utc::now().timestamp().max(0) as u64
}

impl Sim {
    pub fn new(keys: SimKeys) -> Result<Arc<Self>, SimError> {
        Self::with_media_ca(keys, crate::media_server::MediaCa::generate()?)
    }

    pub(crate) fn with_media_ca(
        keys: SimKeys,
        media_ca: crate::media_server::MediaCa,
    ) -> Result<Arc<Self>, SimError> {
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
            media: crate::media::MediaStore::new(),
            media_ca,
        }))
    }

    /// The media server's store (blobs, auth token, host).
    pub fn media(&self) -> &crate::media::MediaStore {
        &self.media
    }

    pub fn media_ca(&self) -> &crate::media_server::MediaCa {
        &self.media_ca
    }

    /// The media CA certificate (PEM) clients must trust for the media server.
    pub fn media_ca_pem(&self) -> &str {
        self.media_ca.cert_pem()
    }

    /// A new media auth token: requests still carrying the old one get 401, so clients
    /// refresh their `media_conn` and retry.
    pub fn rotate_media_auth(&self) {
        self.media.rotate_auth();
        info!("media auth token rotated");
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

    /// Refuses every login with `failure` (a ban, an outdated client) until cleared.
    pub fn set_login_failure(&self, failure: Option<crate::faults::LoginFailure>) {
        lock(&self.faults).set_login_failure(failure);
    }

    pub fn login_failure(&self) -> Option<crate::faults::LoginFailure> {
        lock(&self.faults).login_failure()
    }

    /// While on, devices' receipts and acks are dropped, so what they received stays queued
    /// and is redelivered on their next connection.
    pub fn set_ignore_acks(&self, on: bool) {
        lock(&self.faults).set_ignore_acks(on);
    }

    pub(crate) fn ignoring_acks(&self) -> bool {
        lock(&self.faults).ignoring_acks()
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

    /// The admission log: every accepted login (a paired device's handshake completed and
    /// answered `<success>`) at or after `since_ms` (Unix milliseconds), oldest first.
    pub fn admissions(&self, since_ms: i64) -> Vec<crate::world::Admission> {
        let w = self.world();
        w.admissions
            .iter()
            .filter(|a| a.at_ms >= since_ms)
            .cloned()
            .collect()
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
}

pub(crate) use crate::directory::split_jid;
