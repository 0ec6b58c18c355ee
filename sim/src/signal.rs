//! A simulated WhatsApp user's Signal identity (a contact's phone, or an account's primary
//! phone), using the library's own Signal implementation with in-memory stores. The only
//! code here is storage; every cryptographic step is `wacore::libsignal`'s.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Mutex;
use wacore::libsignal::protocol::{
    CiphertextMessage, Direction, IdentityChange, IdentityKey, IdentityKeyPair, IdentityKeyStore,
    KeyPair, PreKeyBundle, PreKeyId, PreKeyRecord, PreKeySignalMessage, PreKeyStore,
    ProtocolAddress, PublicKey, SenderKeyDistributionMessage, SenderKeyName, SenderKeyRecord,
    SenderKeyStore, SessionRecord, SessionStore, SignalMessage, SignalProtocolError,
    SignedPreKeyId, SignedPreKeyRecord, SignedPreKeyStore, UsePQRatchet,
    create_sender_key_distribution_message, group_decrypt, group_encrypt, message_decrypt,
    message_encrypt, process_prekey_bundle, process_sender_key_distribution_message,
};
use wacore::libsignal::store::record_helpers::{
    new_signed_pre_key_record, signed_prekey_structure_to_record,
};

use crate::crypto::{new_rng, public_bytes};

type SignalResult<T> = Result<T, SignalProtocolError>;

#[derive(Debug, Error)]
pub enum SignalError {
    #[error("signal: {0}")]
    Protocol(#[from] SignalProtocolError),
    #[error("key: {0}")]
    Curve(#[from] wacore::libsignal::protocol::CurveError),
    #[error("unknown ciphertext type {0:?}")]
    UnknownType(String),
    #[error("no session with {0} and no prekey bundle to start one")]
    NoSession(String),
    #[error("bad snapshot: {0}")]
    Snapshot(String),
}

/// The public half of a participant's prekey bundle, as the server hands it out.
#[derive(Debug, Clone)]
pub struct PublicBundle {
    pub registration_id: u32,
    pub identity: [u8; 32],
    pub signed_prekey_id: u32,
    pub signed_prekey: [u8; 32],
    pub signed_prekey_signature: Vec<u8>,
    pub prekey: Option<(u32, [u8; 32])>,
}

impl PublicBundle {
    pub fn to_library(&self, device_id: u32) -> Result<PreKeyBundle, SignalError> {
        Ok(PreKeyBundle::new(
            self.registration_id,
            device_id.into(),
            self.prekey
                .map(|(id, key)| PublicKey::from_djb_public_key_bytes(&key).map(|k| (id.into(), k)))
                .transpose()?,
            self.signed_prekey_id.into(),
            PublicKey::from_djb_public_key_bytes(&self.signed_prekey)?,
            self.signed_prekey_signature.clone(),
            IdentityKey::new(PublicKey::from_djb_public_key_bytes(&self.identity)?),
        )?)
    }
}

/// Encrypted payload as it travels in `<enc type=… v="2">`.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `pkmsg` or `msg`.
    pub kind: &'static str,
    pub body: Vec<u8>,
}

pub struct Participant {
    pub identity_pub: [u8; 32],
    pub registration_id: u32,
    identity_private: [u8; 32],
    signed_private: [u8; 32],
    bundle: PublicBundle,
    store: Mutex<MemStore>,
}

/// How many one-time prekeys a participant publishes.
const ONE_TIME_PREKEYS: u32 = 20;

/// Everything needed to bring a participant back after a simulator restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParticipantSnapshot {
    #[serde(with = "hex_bytes")]
    pub identity_private: Vec<u8>,
    pub registration_id: u32,
    #[serde(with = "hex_bytes")]
    pub signed_private: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub signed_signature: Vec<u8>,
    /// Serialized one-time prekey records still unused.
    pub prekeys: Vec<(u32, HexBytes)>,
    /// `(peer name, peer device, serialized session record)`.
    pub sessions: Vec<(String, u32, HexBytes)>,
    /// `(peer name, peer device, identity key)`.
    pub identities: Vec<(String, u32, HexBytes)>,
    /// One-time prekeys below this id were already handed out (0 in older snapshots).
    #[serde(default)]
    pub next_prekey: u32,
    /// `(group, sender, serialized sender key record)`: group chains the participant
    /// holds, its own and those distributed to it.
    #[serde(default)]
    pub sender_keys: Vec<(String, String, HexBytes)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HexBytes(#[serde(with = "hex_bytes")] pub Vec<u8>);

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&data_encoding::HEXLOWER.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

impl Participant {
    pub fn new(identity: KeyPair) -> Result<Self, SignalError> {
        use rand::RngExt as _;
        let mut rng = new_rng();
        let registration_id = rng.random_range(1..16380);
        let signed = KeyPair::generate(&mut rng);
        // WhatsApp signs the type-prefixed (33-byte) serialization of the signed prekey.
        let signature = identity
            .private_key
            .calculate_signature(&signed.public_key.serialize(), &mut rng)
            .map_err(SignalProtocolError::from)?;
        let prekeys = (1..=ONE_TIME_PREKEYS)
            .map(|id| {
                (
                    id,
                    PreKeyRecord::new(id.into(), &KeyPair::generate(&mut rng)),
                )
            })
            .collect();
        Self::from_parts(
            &identity,
            registration_id,
            &signed,
            signature,
            prekeys,
            HashMap::new(),
            HashMap::new(),
        )
    }

    fn from_parts(
        identity: &KeyPair,
        registration_id: u32,
        signed: &KeyPair,
        signature: [u8; 64],
        prekeys: HashMap<u32, PreKeyRecord>,
        sessions: HashMap<ProtocolAddress, SessionRecord>,
        known: HashMap<ProtocolAddress, IdentityKey>,
    ) -> Result<Self, SignalError> {
        let identity_pub = public_bytes(identity);
        let signed_record = signed_prekey_structure_to_record(new_signed_pre_key_record(
            1,
            signed,
            signature,
            chrono::Utc::now(),
        ))?;
        let bundle = PublicBundle {
            registration_id,
            identity: identity_pub,
            signed_prekey_id: 1,
            signed_prekey: public_bytes(signed),
            signed_prekey_signature: signature.to_vec(),
            prekey: None,
        };
        let mut signed_prekeys = HashMap::new();
        signed_prekeys.insert(1, signed_record);
        Ok(Self {
            identity_pub,
            registration_id,
            identity_private: *identity.private_key.serialize(),
            signed_private: *signed.private_key.serialize(),
            bundle,
            store: Mutex::new(MemStore {
                next_prekey: 0,
                sessions: Sessions(sessions),
                identities: Identities {
                    pair: IdentityKeyPair::new(
                        IdentityKey::new(identity.public_key),
                        identity.private_key.clone(),
                    ),
                    registration_id,
                    known,
                },
                prekeys: PreKeys(prekeys),
                signed: SignedPreKeys(signed_prekeys),
                sender_keys: SenderKeys(HashMap::new()),
            }),
        })
    }

    pub async fn snapshot(&self) -> Result<ParticipantSnapshot, SignalError> {
        let store = self.store.lock().await;
        let mut prekeys = Vec::with_capacity(store.prekeys.0.len());
        for (id, rec) in &store.prekeys.0 {
            prekeys.push((*id, HexBytes(rec.serialize()?)));
        }
        let mut sessions = Vec::with_capacity(store.sessions.0.len());
        for (addr, rec) in &store.sessions.0 {
            sessions.push((
                addr.name().to_owned(),
                u32::from(addr.device_id()),
                HexBytes(rec.serialize()?),
            ));
        }
        let identities = store
            .identities
            .known
            .iter()
            .map(|(addr, key)| {
                (
                    addr.name().to_owned(),
                    u32::from(addr.device_id()),
                    HexBytes(key.serialize().to_vec()),
                )
            })
            .collect();
        let mut sender_keys = Vec::with_capacity(store.sender_keys.0.len());
        for (name, rec) in &store.sender_keys.0 {
            sender_keys.push((
                name.group_id().to_owned(),
                name.sender_id().to_owned(),
                HexBytes(rec.serialize()?),
            ));
        }
        Ok(ParticipantSnapshot {
            identity_private: self.identity_private.to_vec(),
            registration_id: self.registration_id,
            signed_private: self.signed_private.to_vec(),
            signed_signature: self.bundle.signed_prekey_signature.clone(),
            prekeys,
            sessions,
            identities,
            next_prekey: store.next_prekey,
            sender_keys,
        })
    }

    pub fn restore(snap: &ParticipantSnapshot) -> Result<Self, SignalError> {
        let identity = crate::crypto::key_pair_from_private(&snap.identity_private)
            .map_err(|e| SignalError::Snapshot(e.to_string()))?;
        let signed = crate::crypto::key_pair_from_private(&snap.signed_private)
            .map_err(|e| SignalError::Snapshot(e.to_string()))?;
        let signature: [u8; 64] = snap
            .signed_signature
            .as_slice()
            .try_into()
            .map_err(|_| SignalError::Snapshot("signature length".into()))?;
        let mut prekeys = HashMap::new();
        for (id, rec) in &snap.prekeys {
            prekeys.insert(*id, PreKeyRecord::deserialize(&rec.0)?);
        }
        let mut sessions = HashMap::new();
        for (name, device, rec) in &snap.sessions {
            sessions.insert(
                ProtocolAddress::new(name, (*device).into()),
                SessionRecord::deserialize(&rec.0)?,
            );
        }
        let mut known = HashMap::new();
        for (name, device, key) in &snap.identities {
            known.insert(
                ProtocolAddress::new(name, (*device).into()),
                IdentityKey::decode(&key.0)?,
            );
        }
        let mut participant = Self::from_parts(
            &identity,
            snap.registration_id,
            &signed,
            signature,
            prekeys,
            sessions,
            known,
        )?;
        let store = participant.store.get_mut();
        store.next_prekey = snap.next_prekey;
        for (group, sender, rec) in &snap.sender_keys {
            store.sender_keys.0.insert(
                SenderKeyName::from_parts(group, sender),
                SenderKeyRecord::deserialize(&rec.0)?,
            );
        }
        Ok(participant)
    }

    /// The bundle a peer fetches to start a session with this participant. As WhatsApp's
    /// server does, each one-time prekey is handed out **once** (its private half stays here
    /// until a `pkmsg` uses it): two peers — or one client racing itself — never get the same
    /// one, or the second `pkmsg` would name a prekey the first one already consumed. When the
    /// handed-out stock runs low the participant publishes a fresh batch, as a phone does
    /// when the server reports a low prekey count.
    pub async fn take_bundle(&self) -> PublicBundle {
        let mut store = self.store.lock().await;
        let store = &mut *store;
        if store.prekeys.0.keys().all(|id| *id < store.next_prekey) {
            let mut rng = new_rng();
            let first = store
                .prekeys
                .0
                .keys()
                .copied()
                .max()
                .unwrap_or(0)
                .max(store.next_prekey.saturating_sub(1))
                + 1;
            for id in first..first + ONE_TIME_PREKEYS {
                store.prekeys.0.insert(
                    id,
                    PreKeyRecord::new(id.into(), &KeyPair::generate(&mut rng)),
                );
            }
        }
        let mut b = self.bundle.clone();
        let next = store
            .prekeys
            .0
            .iter()
            .filter(|(id, _)| **id >= store.next_prekey)
            .min_by_key(|(id, _)| **id)
            .and_then(|(id, rec)| {
                let key = rec.public_key().ok()?;
                let bytes: [u8; 32] = key.public_key_bytes().try_into().ok()?;
                Some((*id, bytes))
            });
        if let Some((id, _)) = next {
            store.next_prekey = id + 1;
        }
        b.prekey = next;
        b
    }

    pub async fn has_session(&self, peer: &ProtocolAddress) -> bool {
        self.store.lock().await.sessions.0.contains_key(peer)
    }

    /// Encrypts `plaintext` to `peer`, first starting a session from `bundle` if there is none.
    pub async fn encrypt(
        &self,
        peer: &ProtocolAddress,
        bundle: Option<&PublicBundle>,
        plaintext: &[u8],
    ) -> Result<Envelope, SignalError> {
        let mut store = self.store.lock().await;
        let MemStore {
            sessions,
            identities,
            ..
        } = &mut *store;
        if !sessions.0.contains_key(peer) {
            let bundle = bundle.ok_or_else(|| SignalError::NoSession(peer.to_string()))?;
            let bundle = bundle.to_library(peer.device_id().into())?;
            process_prekey_bundle(
                peer,
                sessions,
                identities,
                &bundle,
                &mut new_rng(),
                UsePQRatchet::No,
            )
            .await?;
        }
        let ct = message_encrypt(plaintext, peer, sessions, identities).await?;
        Ok(match ct {
            CiphertextMessage::PreKeySignalMessage(m) => Envelope {
                kind: "pkmsg",
                body: m.serialized().to_vec(),
            },
            CiphertextMessage::SignalMessage(m) => Envelope {
                kind: "msg",
                body: m.serialized().to_vec(),
            },
            other => {
                return Err(SignalError::UnknownType(format!(
                    "{:?}",
                    other.message_type()
                )));
            }
        })
    }

    /// Decrypts a `pkmsg`/`msg` from `peer`.
    pub async fn decrypt(
        &self,
        peer: &ProtocolAddress,
        kind: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, SignalError> {
        let ct = match kind {
            "pkmsg" => CiphertextMessage::PreKeySignalMessage(PreKeySignalMessage::try_from(body)?),
            "msg" => CiphertextMessage::SignalMessage(SignalMessage::try_from(body)?),
            other => return Err(SignalError::UnknownType(other.to_owned())),
        };
        let mut store = self.store.lock().await;
        let MemStore {
            sessions,
            identities,
            prekeys,
            signed,
            ..
        } = &mut *store;
        let result = message_decrypt(
            &ct,
            peer,
            sessions,
            identities,
            prekeys,
            signed,
            &mut new_rng(),
            UsePQRatchet::No,
        )
        .await?;
        // The library leaves deleting a consumed one-time prekey to its caller.
        if let Some(id) = result.consumed_prekey_id {
            prekeys.0.remove(&u32::from(id));
        }
        Ok(result.plaintext)
    }

    /// Takes in a sender key another member distributed (the serialized
    /// `SenderKeyDistributionMessage` of a group message's pairwise part).
    pub async fn process_sender_key_distribution(
        &self,
        name: &SenderKeyName,
        skdm: &[u8],
    ) -> Result<(), SignalError> {
        let skdm = SenderKeyDistributionMessage::try_from(skdm)?;
        let mut store = self.store.lock().await;
        process_sender_key_distribution_message(name, &skdm, &mut store.sender_keys).await?;
        Ok(())
    }

    /// Decrypts an `skmsg` with the sender key filed under `name`.
    pub async fn group_decrypt(
        &self,
        name: &SenderKeyName,
        skmsg: &[u8],
    ) -> Result<Vec<u8>, SignalError> {
        let mut store = self.store.lock().await;
        Ok(group_decrypt(skmsg, &mut store.sender_keys, name).await?)
    }

    /// Encrypts `plaintext` with the participant's own sender key `name` (created on first
    /// use) and returns the distribution message for that key (serialized, at the chain
    /// position of this message, so a member given it can read this message and the
    /// following ones) and the `skmsg`.
    pub async fn group_encrypt(
        &self,
        name: &SenderKeyName,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), SignalError> {
        let mut store = self.store.lock().await;
        let mut rng = new_rng();
        let skdm =
            create_sender_key_distribution_message(name, &mut store.sender_keys, &mut rng).await?;
        let skmsg = group_encrypt(&mut store.sender_keys, name, plaintext, &mut rng).await?;
        Ok((skdm.serialized().to_vec(), skmsg.serialized().to_vec()))
    }
}

struct MemStore {
    /// One-time prekeys with a lower id have been handed out (see [`Participant::take_bundle`]).
    next_prekey: u32,
    sessions: Sessions,
    identities: Identities,
    prekeys: PreKeys,
    signed: SignedPreKeys,
    sender_keys: SenderKeys,
}

struct Sessions(HashMap<ProtocolAddress, SessionRecord>);

struct Identities {
    pair: IdentityKeyPair,
    registration_id: u32,
    known: HashMap<ProtocolAddress, IdentityKey>,
}

struct PreKeys(HashMap<u32, PreKeyRecord>);

struct SignedPreKeys(HashMap<u32, SignedPreKeyRecord>);

struct SenderKeys(HashMap<SenderKeyName, SenderKeyRecord>);

#[async_trait]
impl SessionStore for Sessions {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        Ok(self.0.get(address).cloned())
    }

    async fn has_session(&self, address: &ProtocolAddress) -> SignalResult<bool> {
        Ok(self.0.contains_key(address))
    }

    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: SessionRecord,
    ) -> SignalResult<()> {
        self.0.insert(address.clone(), record);
        Ok(())
    }
}

#[async_trait]
impl IdentityKeyStore for Identities {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(self.pair.clone())
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        match self.known.insert(address.clone(), *identity) {
            Some(old) if old != *identity => Ok(IdentityChange::ReplacedExisting),
            _ => Ok(IdentityChange::NewOrUnchanged),
        }
    }

    /// Trust on first use, and accept changes: a re-paired device legitimately has a new
    /// identity, and the simulator has no user to warn.
    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        _identity: &IdentityKey,
        _direction: Direction,
    ) -> SignalResult<bool> {
        Ok(true)
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        Ok(self.known.get(address).copied())
    }
}

#[async_trait]
impl PreKeyStore for PreKeys {
    async fn get_pre_key(&self, prekey_id: PreKeyId) -> SignalResult<PreKeyRecord> {
        self.0
            .get(&u32::from(prekey_id))
            .cloned()
            .ok_or(SignalProtocolError::InvalidPreKeyId)
    }

    async fn save_pre_key(
        &mut self,
        prekey_id: PreKeyId,
        record: &PreKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(prekey_id.into(), record.clone());
        Ok(())
    }

    async fn remove_pre_key(&mut self, prekey_id: PreKeyId) -> SignalResult<()> {
        self.0.remove(&u32::from(prekey_id));
        Ok(())
    }
}

#[async_trait]
impl SignedPreKeyStore for SignedPreKeys {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        self.0
            .get(&u32::from(id))
            .cloned()
            .ok_or(SignalProtocolError::InvalidSignedPreKeyId)
    }

    async fn save_signed_pre_key(
        &mut self,
        id: SignedPreKeyId,
        record: &SignedPreKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(id.into(), record.clone());
        Ok(())
    }
}

#[async_trait]
impl SenderKeyStore for SenderKeys {
    async fn store_sender_key(
        &mut self,
        name: &SenderKeyName,
        record: SenderKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(name.clone(), record);
        Ok(())
    }

    async fn load_sender_key(&self, name: &SenderKeyName) -> SignalResult<Option<SenderKeyRecord>> {
        Ok(self.0.get(name).cloned())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::generate_key_pair;

    #[tokio::test]
    async fn two_participants_talk_both_ways() {
        let alice = Participant::new(generate_key_pair()).unwrap();
        let bob = Participant::new(generate_key_pair()).unwrap();
        // Survives a snapshot round trip before any traffic…
        let bob = Participant::restore(&bob.snapshot().await.unwrap()).unwrap();
        let bob_addr = ProtocolAddress::new("bob", 0.into());
        let alice_addr = ProtocolAddress::new("alice", 0.into());
        let bundle = bob.take_bundle().await;
        let first = alice
            .encrypt(&bob_addr, Some(&bundle), b"hi bob")
            .await
            .unwrap();
        assert_eq!(first.kind, "pkmsg");
        assert_eq!(
            bob.decrypt(&alice_addr, first.kind, &first.body)
                .await
                .unwrap(),
            b"hi bob"
        );
        let reply = bob.encrypt(&alice_addr, None, b"hi alice").await.unwrap();
        assert_eq!(reply.kind, "msg");
        assert_eq!(
            alice
                .decrypt(&bob_addr, reply.kind, &reply.body)
                .await
                .unwrap(),
            b"hi alice"
        );
        // The consumed one-time prekey is no longer offered.
        assert_ne!(bob.take_bundle().await.prekey, bundle.prekey);
    }

    /// Concurrent fetches of one participant's bundle (a client racing itself to start a
    /// session) get distinct one-time prekeys, and every resulting session's `pkmsg` opens.
    #[tokio::test]
    async fn each_one_time_prekey_is_handed_out_once() {
        let bob = Participant::new(generate_key_pair()).unwrap();
        let bob_addr = ProtocolAddress::new("bob", 0.into());
        let mut seen = std::collections::HashSet::new();
        // More fetches than the published stock: it is replenished, never repeated.
        for i in 0..(ONE_TIME_PREKEYS * 2 + 3) {
            let b = bob.take_bundle().await;
            let (id, _) = b.prekey.expect("a one-time prekey");
            assert!(seen.insert(id), "prekey {id} handed out twice (fetch {i})");
        }
        let senders: Vec<_> = (0..3)
            .map(|_| Participant::new(generate_key_pair()).unwrap())
            .collect();
        // Each fetched (and replenished) prekey opens its session's first `pkmsg`.
        let mut envelopes = Vec::new();
        for (i, s) in senders.iter().enumerate() {
            let bundle = bob.take_bundle().await;
            envelopes.push(
                s.encrypt(&bob_addr, Some(&bundle), format!("m{i}").as_bytes())
                    .await
                    .unwrap(),
            );
        }
        for (i, env) in envelopes.iter().enumerate() {
            assert_eq!(env.kind, "pkmsg");
            let from = ProtocolAddress::new(&format!("alice{i}"), 0.into());
            let plain = bob.decrypt(&from, env.kind, &env.body).await.unwrap();
            assert_eq!(plain, format!("m{i}").as_bytes());
        }
        // The cursor survives a snapshot.
        let restored = Participant::restore(&bob.snapshot().await.unwrap()).unwrap();
        let next = restored.take_bundle().await.prekey.unwrap().0;
        assert!(
            !seen.contains(&next),
            "prekey {next} handed out again after restore"
        );
    }

    #[tokio::test]
    async fn a_sender_key_reaches_a_member_and_survives_a_snapshot() {
        let alice = Participant::new(generate_key_pair()).unwrap();
        let bob = Participant::new(generate_key_pair()).unwrap();
        let own = SenderKeyName::from_parts("1203@g.us", "alice.0");
        let (skdm, first) = alice.group_encrypt(&own, b"hi group").await.unwrap();
        let at_bob = SenderKeyName::from_parts("1203@g.us", "alice:0");
        bob.process_sender_key_distribution(&at_bob, &skdm)
            .await
            .unwrap();
        assert_eq!(
            bob.group_decrypt(&at_bob, &first).await.unwrap(),
            b"hi group"
        );
        // The same chain continues, on both sides, across snapshots.
        let alice = Participant::restore(&alice.snapshot().await.unwrap()).unwrap();
        let bob = Participant::restore(&bob.snapshot().await.unwrap()).unwrap();
        let (again, second) = alice.group_encrypt(&own, b"second").await.unwrap();
        assert_ne!(
            again, skdm,
            "the distribution names the chain's current position"
        );
        assert_eq!(
            bob.group_decrypt(&at_bob, &second).await.unwrap(),
            b"second"
        );
    }
}
