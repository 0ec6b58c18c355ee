//! Everything the simulated WhatsApp knows: accounts (each with a simulated phone as its
//! primary device), the companion devices linked to them, contacts, and live sockets.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tokio::sync::mpsc;
use wacore::libsignal::protocol::KeyPair;
use wacore_binary::Node;

use crate::handshake::Pattern;
use crate::offline_queue::OfflineQueue;

pub type ConnId = u64;

/// What a connection task is told to write.
#[derive(Debug)]
pub enum Outbound {
    Stanza(Node),
    /// Write the stanza (if any), then close the socket.
    Close(Option<Node>),
    /// Drop the socket without a close frame, like a lost network.
    Drop,
}

/// A live socket.
#[derive(Debug)]
pub struct Conn {
    pub tx: mpsc::UnboundedSender<Outbound>,
    /// Set once the socket logged in as a paired device.
    pub device: Option<DeviceAddr>,
    pub pattern: Pattern,
    /// The device left passive mode: stanzas for it are written as they arrive.
    pub active: bool,
    /// Set while an unpaired device waits to be linked.
    pub pairing: Option<PendingPairing>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct DeviceAddr {
    pub phone: String,
    pub device: u16,
}

/// An unpaired companion that opened a socket with registration data.
#[derive(Debug, Clone)]
pub struct PendingPairing {
    pub refs: Vec<String>,
    pub noise_pub: [u8; 32],
    pub identity_pub: [u8; 32],
    pub registration_id: u32,
    pub signed_prekey: SignedPreKey,
    /// The pair-success iq id, once a phone scanned the QR or entered the code.
    pub success_iq: Option<String>,
    pub linking: Option<DeviceAddr>,
    /// Phone-number flow (`link_code_companion_reg`) state.
    pub pair_code: Option<crate::pair_code::CodeRequest>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignedPreKey {
    pub id: u32,
    #[serde(with = "hex32")]
    pub public: [u8; 32],
    #[serde(skip)]
    pub signature: Vec<u8>,
}

/// A companion device linked to an account.
#[derive(Debug)]
pub struct Device {
    pub id: u16,
    pub noise_pub: [u8; 32],
    pub identity_pub: [u8; 32],
    pub registration_id: u32,
    pub signed_prekey: SignedPreKey,
    /// One-time prekeys the device uploaded, consumed by prekey fetches.
    pub prekeys: BTreeMap<u32, [u8; 32]>,
    pub key_index: u32,
    /// The ADV identity the device countersigned (`pair-device-sign`), served with its
    /// prekey bundle so peers can check it belongs to the account.
    pub device_identity: Option<Vec<u8>>,
    pub conn: Option<ConnId>,
    pub offline: OfflineQueue,
    /// Unlinked by the phone: its credentials are refused from now on.
    pub removed: bool,
    pub logins: u32,
    /// App-state collections the device fetched since it was linked.
    pub synced_collections: std::collections::BTreeSet<String>,
}

/// An account: a phone number, its LID, and the simulated phone (device 0).
pub struct Account {
    pub phone: String,
    pub lid: String,
    pub push_name: String,
    /// The phone's identity key: signs ADV identities and is its Signal identity.
    pub identity: KeyPair,
    pub primary: std::sync::Arc<crate::signal::Participant>,
    pub app_state_key_id: Vec<u8>,
    pub app_state_key: Vec<u8>,
    pub devices: BTreeMap<u16, Device>,
    pub next_device: u16,
    pub next_key_index: u32,
    /// What the phone sends a newly linked device as its chat history.
    pub history: Option<crate::history::HistoryPlan>,
}

/// A simulated contact: another WhatsApp user with one device (its phone).
pub struct Contact {
    pub phone: String,
    pub lid: String,
    pub name: String,
    pub participant: std::sync::Arc<crate::signal::Participant>,
    /// Decrypted texts the contact received, in order.
    pub received: Vec<ReceivedText>,
    /// Receipts devices sent for the contact's messages (delivery, read…).
    pub receipts: Vec<ReceiptSeen>,
    /// How many times a device fetched the contact's prekey bundle (each fetch starts a new
    /// Signal session on the fetching side).
    pub bundle_fetches: u32,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ReceivedText {
    pub id: String,
    pub from: String,
    /// The text, or a media message's caption (empty without one).
    pub text: String,
    /// Set for an image/video/audio/document/sticker message: what it declared and what the
    /// contact downloaded and decrypted (or why it could not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<crate::media::ReceivedMedia>,
    /// A reply's quoted message (`context_info.stanza_id`), for text and media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quoted_id: Option<String>,
    /// A reaction (`reaction_message`): its target and emoji (empty = removal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<crate::conversation::ReactionSeen>,
    /// An edit (`protocol_message` MESSAGE_EDIT, or its message-secret encrypted form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<crate::conversation::EditSeen>,
    /// A revoke for everyone (`protocol_message` REVOKE): the revoked message's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_id: Option<String>,
    /// The group JID (`…@g.us`) for a message sent to a group; `None` for a 1:1 message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ReceiptSeen {
    pub id: String,
    /// The device that sent it (`phone:device`).
    pub from: String,
    /// `delivery` when the stanza had no type, else its type (`read`, `inactive`, …).
    pub kind: String,
}

#[derive(Default)]
pub struct World {
    pub accounts: BTreeMap<String, Account>,
    pub contacts: BTreeMap<String, Contact>,
    pub conns: HashMap<ConnId, Conn>,
    pub next_conn: ConnId,
    pub next_lid: u64,
    pub next_stanza: u64,
    /// Iqs the simulator had no specific answer for (a gap in the simulation).
    pub unhandled_iqs: Vec<String>,
    /// Every accepted login, oldest first (at most [`MAX_ADMISSIONS`]).
    pub admissions: std::collections::VecDeque<Admission>,
    /// History syncs to linked devices, by device.
    pub history: BTreeMap<DeviceAddr, crate::history::HistoryProgress>,
    /// What contacts said and saw beyond `received` (kept in memory only).
    pub conversation: crate::conversation::ConversationLog,
    /// Groups, by id (the user part of `…@g.us`).
    pub groups: BTreeMap<String, crate::groups::Group>,
}

/// Accepted logins remembered before the oldest are forgotten.
pub const MAX_ADMISSIONS: usize = 100_000;

/// One accepted login: a paired device's handshake completed and it was sent `<success>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Admission {
    /// Unix time, milliseconds.
    pub at_ms: i64,
    pub phone: String,
    pub device: u16,
}

/// The most admissions inside any window of `window_ms` (half-open `[t, t + window)`), for
/// admissions sorted by time.
pub fn max_in_window(admissions: &[Admission], window_ms: i64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..admissions.len() {
        while admissions[hi].at_ms - admissions[lo].at_ms >= window_ms {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

impl World {
    pub fn device(&self, addr: &DeviceAddr) -> Option<&Device> {
        self.accounts.get(&addr.phone)?.devices.get(&addr.device)
    }

    pub fn device_mut(&mut self, addr: &DeviceAddr) -> Option<&mut Device> {
        self.accounts
            .get_mut(&addr.phone)?
            .devices
            .get_mut(&addr.device)
    }

    /// The account whose phone number or LID user is `user`.
    pub fn account_by_user(&self, user: &str) -> Option<&Account> {
        self.accounts
            .get(user)
            .or_else(|| self.accounts.values().find(|a| a.lid == user))
    }

    pub fn contact_by_user(&self, user: &str) -> Option<&Contact> {
        self.contacts
            .get(user)
            .or_else(|| self.contacts.values().find(|c| c.lid == user))
    }

    pub fn contact_by_user_mut(&mut self, user: &str) -> Option<&mut Contact> {
        let key = if self.contacts.contains_key(user) {
            user.to_owned()
        } else {
            self.contacts
                .values()
                .find(|c| c.lid == user)?
                .phone
                .clone()
        };
        self.contacts.get_mut(&key)
    }

    pub fn alloc_lid(&mut self) -> String {
        self.next_lid += 1;
        format!("{}", 100_000_000_000_000 + self.next_lid)
    }

    /// A fresh stanza id, unique within this simulator.
    pub fn stanza_id(&mut self) -> String {
        self.next_stanza += 1;
        format!("3EB0SIM{:012X}", self.next_stanza)
    }

    /// The pending pairing whose QR ref is `pairing_ref`.
    pub fn pending_by_ref(&self, pairing_ref: &str) -> Option<ConnId> {
        self.conns.iter().find_map(|(id, c)| {
            c.pairing
                .as_ref()
                .filter(|p| p.refs.iter().any(|r| r == pairing_ref))
                .map(|_| *id)
        })
    }

    pub fn send(&self, conn: ConnId, out: Outbound) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.tx.send(out).is_ok())
    }
}

mod hex32 {
    pub fn serialize<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&data_encoding::HEXLOWER.encode(v))
    }
}

#[cfg(test)]
mod admission_log_tests {
    use super::*;

    fn at(ms: &[i64]) -> Vec<Admission> {
        ms.iter()
            .map(|&at_ms| Admission {
                at_ms,
                phone: "1".into(),
                device: 1,
            })
            .collect()
    }

    #[test]
    fn the_busiest_window() {
        assert_eq!(max_in_window(&[], 1000), 0);
        assert_eq!(max_in_window(&at(&[0, 999, 1000, 1500, 1999]), 1000), 3);
        assert_eq!(max_in_window(&at(&[0, 1000, 2000]), 1000), 1);
        assert_eq!(max_in_window(&at(&[5, 5, 5]), 1), 3);
    }
}
