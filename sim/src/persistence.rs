//! Snapshots of the simulator's state (keys, accounts, devices, contacts with their Signal
//! sessions, offline queues), so a restarted simulator keeps its paired devices: without
//! one, every device logging in after a restart would be refused and logged out.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::crypto::{key_pair_from_private, to_32};
use crate::offline_queue::OfflineQueue;
use crate::signal::{HexBytes, Participant, ParticipantSnapshot};
use crate::sim::{Sim, SimError, SimKeys};
use crate::stanza;
use crate::world::{Account, Contact, Device, ReceiptSeen, ReceivedText, SignedPreKey};

#[derive(Debug, Error)]
pub enum PersistError {
    #[error("state file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("state file is not valid: {0}")]
    Format(#[from] serde_json::Error),
    #[error("state file content: {0}")]
    Content(String),
    #[error(transparent)]
    Sim(#[from] SimError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub server_static_private: HexBytes,
    pub root_private: HexBytes,
    pub next_lid: u64,
    pub next_stanza: u64,
    pub accounts: Vec<AccountSnapshot>,
    pub contacts: Vec<ContactSnapshot>,
    /// The media CA's private key (PKCS#8 PEM): a restarted simulator's media certificate
    /// still chains to the CA certificate clients fetched before. (The media blobs
    /// themselves are not kept.) Absent in older snapshots: a new CA is made.
    #[serde(default)]
    pub media_ca_key: Option<String>,
    /// Groups, with which devices hold each contact's sender key (the keys themselves are
    /// in the participants' snapshots). Absent in older snapshots.
    #[serde(default)]
    pub groups: Vec<crate::groups::Group>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountSnapshot {
    pub phone: String,
    pub lid: String,
    pub push_name: String,
    pub primary: ParticipantSnapshot,
    pub app_state_key_id: HexBytes,
    pub app_state_key: HexBytes,
    pub next_device: u16,
    pub next_key_index: u32,
    pub devices: Vec<DeviceSnapshot>,
    /// The phone's history plan (histories in progress are not resumed).
    #[serde(default)]
    pub history: Option<crate::history::HistoryPlan>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceSnapshot {
    pub id: u16,
    pub noise_pub: HexBytes,
    pub identity_pub: HexBytes,
    pub registration_id: u32,
    pub signed_prekey_id: u32,
    pub signed_prekey: HexBytes,
    pub signed_prekey_signature: HexBytes,
    pub prekeys: Vec<(u32, HexBytes)>,
    pub key_index: u32,
    pub device_identity: Option<HexBytes>,
    pub removed: bool,
    pub logins: u32,
    /// `(stanza id, encoded stanza)` still waiting for the device's acknowledgement.
    pub offline: Vec<(String, HexBytes)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactSnapshot {
    pub phone: String,
    pub lid: String,
    pub name: String,
    pub participant: ParticipantSnapshot,
    pub received: Vec<ReceivedText>,
    pub receipts: Vec<ReceiptSeen>,
}

fn content(what: &str) -> impl Fn(crate::crypto::CryptoError) -> PersistError + '_ {
    move |e| PersistError::Content(format!("{what}: {e}"))
}

impl Sim {
    /// A consistent copy of the simulator's state (live sockets excluded).
    pub async fn snapshot(&self) -> Result<Snapshot, PersistError> {
        let (mut snap, accounts, contacts) = {
            let w = self.world();
            let snap = Snapshot {
                server_static_private: HexBytes(
                    self.server_identity()
                        .static_kp
                        .private_key
                        .serialize()
                        .to_vec(),
                ),
                root_private: HexBytes(self.root_private().to_vec()),
                next_lid: w.next_lid,
                next_stanza: w.next_stanza,
                accounts: Vec::new(),
                contacts: Vec::new(),
                media_ca_key: Some(self.media_ca().key_pem().to_owned()),
                groups: w.groups.values().cloned().collect(),
            };
            let accounts: Vec<(AccountSnapshotParts, Arc<Participant>)> = w
                .accounts
                .values()
                .map(|a| (AccountSnapshotParts::of(a), a.primary.clone()))
                .collect();
            let contacts: Vec<(ContactParts, Arc<Participant>)> = w
                .contacts
                .values()
                .map(|c| {
                    (
                        ContactParts {
                            phone: c.phone.clone(),
                            lid: c.lid.clone(),
                            name: c.name.clone(),
                            received: c.received.clone(),
                            receipts: c.receipts.clone(),
                        },
                        c.participant.clone(),
                    )
                })
                .collect();
            (snap, accounts, contacts)
        };
        for (parts, primary) in accounts {
            snap.accounts.push(
                parts.finish(
                    primary
                        .snapshot()
                        .await
                        .map_err(|e| PersistError::Content(e.to_string()))?,
                ),
            );
        }
        for (parts, participant) in contacts {
            snap.contacts.push(ContactSnapshot {
                phone: parts.phone,
                lid: parts.lid,
                name: parts.name,
                participant: participant
                    .snapshot()
                    .await
                    .map_err(|e| PersistError::Content(e.to_string()))?,
                received: parts.received,
                receipts: parts.receipts,
            });
        }
        Ok(snap)
    }

    /// A simulator with the state of `snap` (and its keys).
    pub fn from_snapshot(snap: &Snapshot) -> Result<Arc<Sim>, PersistError> {
        let keys = SimKeys {
            server_static: key_pair_from_private(&snap.server_static_private.0)
                .map_err(content("server key"))?,
            root: key_pair_from_private(&snap.root_private.0).map_err(content("root key"))?,
        };
        let media_ca = match &snap.media_ca_key {
            Some(pem) => crate::media_server::MediaCa::from_key_pem(pem).map_err(SimError::from)?,
            None => crate::media_server::MediaCa::generate().map_err(SimError::from)?,
        };
        let sim = Sim::with_media_ca(keys, media_ca)?;
        {
            let mut w = sim.world();
            w.next_lid = snap.next_lid;
            w.next_stanza = snap.next_stanza;
            for g in &snap.groups {
                w.groups.insert(g.id.clone(), g.clone());
            }
            for a in &snap.accounts {
                let primary = Participant::restore(&a.primary)
                    .map_err(|e| PersistError::Content(e.to_string()))?;
                let identity = key_pair_from_private(&a.primary.identity_private)
                    .map_err(content("phone identity"))?;
                let mut devices = std::collections::BTreeMap::new();
                for d in &a.devices {
                    devices.insert(d.id, restore_device(d)?);
                }
                w.accounts.insert(
                    a.phone.clone(),
                    Account {
                        phone: a.phone.clone(),
                        lid: a.lid.clone(),
                        push_name: a.push_name.clone(),
                        identity,
                        primary: Arc::new(primary),
                        app_state_key_id: a.app_state_key_id.0.clone(),
                        app_state_key: a.app_state_key.0.clone(),
                        devices,
                        next_device: a.next_device,
                        next_key_index: a.next_key_index,
                        history: a.history.clone(),
                    },
                );
            }
            for c in &snap.contacts {
                let participant = Participant::restore(&c.participant)
                    .map_err(|e| PersistError::Content(e.to_string()))?;
                w.contacts.insert(
                    c.phone.clone(),
                    Contact {
                        phone: c.phone.clone(),
                        lid: c.lid.clone(),
                        name: c.name.clone(),
                        participant: Arc::new(participant),
                        received: c.received.clone(),
                        receipts: c.receipts.clone(),
                        bundle_fetches: 0,
                    },
                );
            }
        }
        Ok(sim)
    }
}

fn restore_device(d: &DeviceSnapshot) -> Result<Device, PersistError> {
    let mut offline = OfflineQueue::default();
    for (id, encoded) in &d.offline {
        let node = stanza::decode(&encoded.0)
            .map_err(|e| PersistError::Content(format!("queued stanza: {e}")))?;
        offline.push(id.clone(), node);
    }
    let mut prekeys = std::collections::BTreeMap::new();
    for (id, key) in &d.prekeys {
        prekeys.insert(*id, to_32(&key.0).map_err(content("prekey"))?);
    }
    Ok(Device {
        id: d.id,
        noise_pub: to_32(&d.noise_pub.0).map_err(content("noise key"))?,
        identity_pub: to_32(&d.identity_pub.0).map_err(content("identity key"))?,
        registration_id: d.registration_id,
        signed_prekey: SignedPreKey {
            id: d.signed_prekey_id,
            public: to_32(&d.signed_prekey.0).map_err(content("signed prekey"))?,
            signature: d.signed_prekey_signature.0.clone(),
        },
        prekeys,
        key_index: d.key_index,
        device_identity: d.device_identity.as_ref().map(|b| b.0.clone()),
        conn: None,
        offline,
        removed: d.removed,
        logins: d.logins,
        synced_collections: Default::default(),
    })
}

/// The synchronous part of an account's snapshot, taken under the world lock.
struct AccountSnapshotParts {
    phone: String,
    lid: String,
    push_name: String,
    app_state_key_id: Vec<u8>,
    app_state_key: Vec<u8>,
    next_device: u16,
    next_key_index: u32,
    devices: Vec<DeviceSnapshot>,
    history: Option<crate::history::HistoryPlan>,
}

impl AccountSnapshotParts {
    fn of(a: &Account) -> Self {
        Self {
            phone: a.phone.clone(),
            lid: a.lid.clone(),
            push_name: a.push_name.clone(),
            app_state_key_id: a.app_state_key_id.clone(),
            app_state_key: a.app_state_key.clone(),
            next_device: a.next_device,
            next_key_index: a.next_key_index,
            history: a.history.clone(),
            devices: a
                .devices
                .values()
                .map(|d| DeviceSnapshot {
                    id: d.id,
                    noise_pub: HexBytes(d.noise_pub.to_vec()),
                    identity_pub: HexBytes(d.identity_pub.to_vec()),
                    registration_id: d.registration_id,
                    signed_prekey_id: d.signed_prekey.id,
                    signed_prekey: HexBytes(d.signed_prekey.public.to_vec()),
                    signed_prekey_signature: HexBytes(d.signed_prekey.signature.clone()),
                    prekeys: d
                        .prekeys
                        .iter()
                        .map(|(id, k)| (*id, HexBytes(k.to_vec())))
                        .collect(),
                    key_index: d.key_index,
                    device_identity: d.device_identity.clone().map(HexBytes),
                    removed: d.removed,
                    logins: d.logins,
                    offline: d
                        .offline
                        .items()
                        .filter_map(|q| {
                            Some((q.id.clone(), HexBytes(stanza::encode(&q.stanza).ok()?)))
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn finish(self, primary: ParticipantSnapshot) -> AccountSnapshot {
        AccountSnapshot {
            phone: self.phone,
            lid: self.lid,
            push_name: self.push_name,
            primary,
            app_state_key_id: HexBytes(self.app_state_key_id),
            app_state_key: HexBytes(self.app_state_key),
            next_device: self.next_device,
            next_key_index: self.next_key_index,
            devices: self.devices,
            history: self.history,
        }
    }
}

struct ContactParts {
    phone: String,
    lid: String,
    name: String,
    received: Vec<ReceivedText>,
    receipts: Vec<ReceiptSeen>,
}

/// Reads a snapshot; `None` when the file does not exist yet.
pub fn load(path: &Path) -> Result<Option<Snapshot>, PersistError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PersistError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Writes a snapshot atomically (temporary file, then rename).
pub fn save(path: &Path, snap: &Snapshot) -> Result<(), PersistError> {
    let io = |source| PersistError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(snap)?).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
