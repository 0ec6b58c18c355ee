//! Encryption of a user's auth state at rest: AES-256-GCM with a per-user key derived by
//! HKDF-SHA256 from the master key (salt: a fixed label, info: the user id), the Redis key (and
//! field) as associated data, so a ciphertext moved to another key or another user fails to open.
//!
//! Sealed value layout: `key id (1 byte) ‖ nonce (12 bytes) ‖ ciphertext+tag`. The key id names
//! the master key that sealed the value ([`key_id`], derived from the key, in `2..=255`); `1`
//! marks values written before key ids existed (sealed with whatever key was configured then).
//!
//! **Rotation**: an [`AuthCipher`] holds the current master key and any number of previous
//! ones. It seals with the current key and opens with any of them (trying the keys whose id
//! matches the value's first byte; every key for legacy `1`). [`AuthCipher::open_checked`]
//! says whether a value needs re-sealing under the current key. The id is only a hint: two
//! keys may share one (1 in 254), and the AEAD tag decides which key really opens a value.
//!
//! **Per-user keyrings**: the operator holds the master keys and hands each session pod only
//! its user's derived keys ([`user_keyring`]), as text: one `<key id>:<base64 of the 32-byte
//! derived key>` entry per master key, the current one first, then the previous ones. A pod
//! builds its cipher with [`AuthCipher::from_keyring`]; it behaves exactly like
//! [`AuthCipher::with_previous`] over the same master keys, and cannot open another user's
//! values (it never sees the master key they derive from).

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

/// First byte of values sealed before key ids existed (any configured key may open them).
pub const LEGACY_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const HKDF_SALT: &[u8] = b"wasp/auth-state/v1";
const KEY_ID_SALT: &[u8] = b"wasp/master-key-id/v1";
const REDIS_PASSWORD_SALT: &[u8] = b"wasp/redis-password/v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("master key must be 32 bytes, as 64 hex characters or base64")]
    BadMasterKey,
    #[error("sealed value is too short")]
    Truncated,
    #[error("no configured master key has id {0}")]
    UnknownVersion(u8),
    #[error("authentication failed (wrong key, user or redis key)")]
    Open,
    #[error("encryption failed")]
    Seal,
    /// Names the entry's position only, never its text.
    #[error(
        "user keyring entry #{0} is not `<key id 2..=255>:<base64 of 32 bytes>` (or the keyring is empty)"
    )]
    BadKeyring(usize),
}

impl CryptoError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::BadMasterKey => "bad_master_key",
            Self::BadKeyring(_) => "bad_keyring",
            Self::Truncated | Self::UnknownVersion(_) | Self::Open => "open",
            Self::Seal => "seal",
        }
    }
}

/// A 32-byte master key. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex characters or standard/url-safe base64 of 32 bytes (surrounding
    /// whitespace, as in a mounted Secret file, is ignored).
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            data_encoding::HEXLOWER_PERMISSIVE
                .decode(text.as_bytes())
                .ok()
        } else {
            [
                &data_encoding::BASE64,
                &data_encoding::BASE64URL,
                &data_encoding::BASE64_NOPAD,
                &data_encoding::BASE64URL_NOPAD,
            ]
            .iter()
            .find_map(|enc| enc.decode(text.as_bytes()).ok())
        };
        let bytes = decoded.ok_or(CryptoError::BadMasterKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadMasterKey)?;
        Ok(Self(key))
    }

    /// Keys separated by commas, spaces or newlines; `#` starts a comment to the end of the
    /// line (the previous master keys of a rotation). An error names the 1-based position of
    /// the bad key, never its text.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, (usize, CryptoError)> {
        entries(text)
            .enumerate()
            .map(|(i, k)| Self::parse(k).map_err(|e| (i + 1, e)))
            .collect()
    }
}

/// The non-empty entries of a list separated by commas or whitespace, `#` comments removed.
fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| l.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|k| !k.is_empty())
}

/// The per-user cipher over the current master key and the previous ones.
#[derive(Clone)]
pub struct AuthCipher {
    current: UserKey,
    previous: Vec<UserKey>,
}

#[derive(Clone)]
struct UserKey {
    id: u8,
    cipher: Aes256Gcm,
}

impl UserKey {
    fn new(id: u8, derived: [u8; 32]) -> Self {
        Self {
            id,
            cipher: Aes256Gcm::new(&derived.into()),
        }
    }
}

impl std::fmt::Debug for AuthCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthCipher(..)")
    }
}

/// Which key opened a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedWith {
    /// The current master key, with its own id: nothing to do.
    Current,
    /// A previous master key, or the current one under the legacy id: re-seal it.
    Stale,
}

/// HKDF-SHA256(master, salt = label, info = user id) → 32-byte AES key.
pub fn derive_user_key(master: &MasterKey, user_id: &str) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &master.0);
    let mut okm = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    #[allow(clippy::expect_used)]
    hk.expand(user_id.as_bytes(), &mut okm)
        .expect("32 bytes is a valid HKDF output length");
    okm
}

/// The password of the user's own Redis ACL user (`crate::acl`): HKDF-SHA256 with its own salt,
/// so it says nothing about the auth-state keys; 64 hex characters. Derived, not stored: the
/// operator re-creates every ACL user after a Redis restart from the master keys alone.
pub fn redis_password(master: &MasterKey, user_id: &str) -> String {
    let hk = Hkdf::<Sha256>::new(Some(REDIS_PASSWORD_SALT), &master.0);
    let mut okm = [0u8; 32];
    #[allow(clippy::expect_used)]
    hk.expand(user_id.as_bytes(), &mut okm)
        .expect("32 bytes is a valid HKDF output length");
    data_encoding::HEXLOWER.encode(&okm)
}

/// The one-byte id of a master key, in `2..=255` (HKDF-SHA256 with its own salt, so it says
/// nothing about the per-user keys). Safe to log: it tells keys apart, not what they are.
pub fn key_id(master: &MasterKey) -> u8 {
    let hk = Hkdf::<Sha256>::new(Some(KEY_ID_SALT), &master.0);
    let mut okm = [0u8; 1];
    #[allow(clippy::expect_used)]
    hk.expand(b"", &mut okm)
        .expect("1 byte is a valid HKDF output length");
    2 + okm[0] % 254
}

/// The user's derived keys with their ids: the current master key's first, then each previous
/// one's (a previous key equal to the current one is skipped).
fn user_keys(current: &MasterKey, previous: &[MasterKey], user_id: &str) -> Vec<(u8, [u8; 32])> {
    std::iter::once(current)
        .chain(previous.iter().filter(|k| k.0 != current.0))
        .map(|k| (key_id(k), derive_user_key(k, user_id)))
        .collect()
}

/// One user's keyring (module docs): what a session pod needs to read and write that user's
/// auth state, and nothing that opens another user's. Secret material: store it in a Secret.
pub fn user_keyring(current: &MasterKey, previous: &[MasterKey], user_id: &str) -> String {
    user_keys(current, previous, user_id)
        .iter()
        .map(|(id, key)| format!("{id}:{}", data_encoding::BASE64.encode(key)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ids of a keyring's keys, comma separated, current first (safe to show: the same for
/// every user, they tell master keys apart and say nothing about them).
pub fn keyring_ids(current: &MasterKey, previous: &[MasterKey]) -> String {
    std::iter::once(current)
        .chain(previous.iter().filter(|k| k.0 != current.0))
        .map(|k| key_id(k).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl AuthCipher {
    /// A cipher for one user with one master key.
    pub fn new(master: &MasterKey, user_id: &str) -> Self {
        Self::with_previous(master, &[], user_id)
    }

    /// A cipher for one user that seals with `current` and also opens values sealed with any
    /// of `previous` (master-key rotation).
    pub fn with_previous(current: &MasterKey, previous: &[MasterKey], user_id: &str) -> Self {
        let mut keys = user_keys(current, previous, user_id).into_iter();
        let Some((id, key)) = keys.next() else {
            unreachable!("user_keys always yields the current key first")
        };
        Self {
            current: UserKey::new(id, key),
            previous: keys.map(|(id, key)| UserKey::new(id, key)).collect(),
        }
    }

    /// The cipher of a keyring made by [`user_keyring`]: seals with its first key, opens with
    /// any (the same ids and keys as [`AuthCipher::with_previous`] over the master keys it was
    /// derived from). Entries are separated by commas or whitespace; `#` starts a comment.
    pub fn from_keyring(text: &str) -> Result<Self, CryptoError> {
        let mut keys: Vec<(u8, [u8; 32])> = Vec::new();
        for (i, entry) in entries(text).enumerate() {
            let bad = || CryptoError::BadKeyring(i + 1);
            let (id, key) = entry.split_once(':').ok_or_else(bad)?;
            let id: u8 = id.parse().map_err(|_| bad())?;
            if id <= LEGACY_VERSION {
                return Err(bad());
            }
            let key: [u8; 32] = data_encoding::BASE64
                .decode(key.as_bytes())
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or_else(bad)?;
            // As `with_previous`: a previous key equal to the current one is not a second key.
            if keys.first().is_none_or(|(_, current)| *current != key) {
                keys.push((id, key));
            }
        }
        let mut keys = keys.into_iter();
        let (id, key) = keys.next().ok_or(CryptoError::BadKeyring(1))?;
        Ok(Self {
            current: UserKey::new(id, key),
            previous: keys.map(|(id, key)| UserKey::new(id, key)).collect(),
        })
    }

    /// Whether previous master keys are configured (then stale values may exist).
    pub fn has_previous(&self) -> bool {
        !self.previous.is_empty()
    }

    /// The id the current master key writes as a value's first byte.
    pub fn current_key_id(&self) -> u8 {
        self.current.id
    }

    /// The ids of all keys, current first (safe to log).
    pub fn key_ids(&self) -> Vec<u8> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|k| k.id)
            .collect()
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.open_checked(aad, sealed).map(|(plain, _)| plain)
    }

    /// Opens a value and says whether it should be re-sealed with the current key.
    pub fn open_checked(
        &self,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<(Vec<u8>, SealedWith), CryptoError> {
        if sealed.len() < 1 + NONCE_LEN + 16 {
            return Err(CryptoError::Truncated);
        }
        let id = sealed[0];
        let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_LEN]);
        let mut tried = false;
        for (i, key) in std::iter::once(&self.current)
            .chain(&self.previous)
            .enumerate()
        {
            if id != LEGACY_VERSION && id != key.id {
                continue;
            }
            tried = true;
            if let Ok(plain) = key.cipher.decrypt(
                nonce,
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad,
                },
            ) {
                let with = if i == 0 && id == self.current.id {
                    SealedWith::Current
                } else {
                    SealedWith::Stale
                };
                return Ok((plain, with));
            }
        }
        Err(if tried {
            CryptoError::Open
        } else {
            CryptoError::UnknownVersion(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(b: u8) -> MasterKey {
        MasterKey::from_bytes([b; 32])
    }

    #[test]
    fn seal_open_round_trip_with_key_id_byte() {
        let c = AuthCipher::new(&mk(7), "alice");
        let sealed = c.seal(b"k1", b"secret").unwrap();
        assert_eq!(sealed[0], key_id(&mk(7)));
        assert_eq!(sealed[0], c.current_key_id());
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            c.open_checked(b"k1", &sealed).unwrap(),
            (b"secret".to_vec(), SealedWith::Current)
        );
        // fresh nonce every time
        assert_ne!(c.seal(b"k1", b"secret").unwrap(), sealed);
    }

    #[test]
    fn key_ids_are_stable_never_legacy_and_tell_keys_apart() {
        let ids: std::collections::HashSet<u8> = (0..=255u8).map(|b| key_id(&mk(b))).collect();
        assert!(ids.iter().all(|id| *id >= 2));
        // Not a constant: 256 keys spread over many ids.
        assert!(ids.len() > 100, "{}", ids.len());
        assert_eq!(key_id(&mk(3)), key_id(&mk(3)));
    }

    #[test]
    fn wrong_aad_user_or_master_fails() {
        let c = AuthCipher::new(&mk(7), "alice");
        let sealed = c.seal(b"k1", b"secret").unwrap();
        assert_eq!(c.open(b"k2", &sealed), Err(CryptoError::Open));
        let bob = AuthCipher::new(&mk(7), "bob");
        assert_eq!(bob.open(b"k1", &sealed), Err(CryptoError::Open));
        let other = AuthCipher::new(&mk(8), "alice");
        let expected = if key_id(&mk(8)) == key_id(&mk(7)) {
            CryptoError::Open
        } else {
            CryptoError::UnknownVersion(key_id(&mk(7)))
        };
        assert_eq!(other.open(b"k1", &sealed), Err(expected));
        assert_eq!(c.open(b"k1", &sealed[..10]), Err(CryptoError::Truncated));
    }

    #[test]
    fn rotation_opens_old_marks_it_stale_and_seals_new() {
        let old = AuthCipher::new(&mk(1), "u");
        let sealed_old = old.seal(b"k", b"v").unwrap();
        let rotated = AuthCipher::with_previous(&mk(2), &[mk(1)], "u");
        assert!(rotated.has_previous());
        assert_eq!(
            rotated.open_checked(b"k", &sealed_old).unwrap(),
            (b"v".to_vec(), SealedWith::Stale)
        );
        let sealed_new = rotated.seal(b"k", b"v").unwrap();
        assert_eq!(sealed_new[0], key_id(&mk(2)));
        assert_eq!(
            rotated.open_checked(b"k", &sealed_new).unwrap().1,
            SealedWith::Current
        );
        // The old key alone cannot read what the rotated cipher wrote; the new one alone can.
        assert!(old.open(b"k", &sealed_new).is_err());
        assert_eq!(
            AuthCipher::new(&mk(2), "u")
                .open(b"k", &sealed_new)
                .unwrap(),
            b"v"
        );
        // Without the previous key, the old value is unreadable.
        assert!(
            AuthCipher::new(&mk(2), "u")
                .open(b"k", &sealed_old)
                .is_err()
        );
    }

    #[test]
    fn legacy_values_open_with_any_configured_key_and_are_stale() {
        // A value written before key ids: first byte 1, sealed with what is now a previous key.
        let mut legacy = AuthCipher::new(&mk(1), "u").seal(b"k", b"v").unwrap();
        legacy[0] = LEGACY_VERSION;
        let rotated = AuthCipher::with_previous(&mk(2), &[mk(1)], "u");
        assert_eq!(
            rotated.open_checked(b"k", &legacy).unwrap(),
            (b"v".to_vec(), SealedWith::Stale)
        );
        // Under the current key too: readable, re-sealed to carry the key id.
        assert_eq!(
            AuthCipher::new(&mk(1), "u")
                .open_checked(b"k", &legacy)
                .unwrap(),
            (b"v".to_vec(), SealedWith::Stale)
        );
        assert_eq!(
            AuthCipher::new(&mk(3), "u").open(b"k", &legacy),
            Err(CryptoError::Open)
        );
    }

    #[test]
    fn a_keyring_cipher_is_the_master_key_cipher_both_ways() {
        let (current, previous) = (mk(2), [mk(1), mk(3)]);
        let ring = user_keyring(&current, &previous, "u");
        let from_ring = AuthCipher::from_keyring(&ring).unwrap();
        let from_master = AuthCipher::with_previous(&current, &previous, "u");
        assert_eq!(from_ring.key_ids(), from_master.key_ids());
        assert_eq!(
            from_ring.key_ids(),
            vec![key_id(&mk(2)), key_id(&mk(1)), key_id(&mk(3))]
        );
        assert_eq!(
            keyring_ids(&current, &previous),
            format!("{},{},{}", key_id(&mk(2)), key_id(&mk(1)), key_id(&mk(3)))
        );
        assert!(from_ring.has_previous());
        for (a, b) in [(&from_ring, &from_master), (&from_master, &from_ring)] {
            let sealed = a.seal(b"k", b"v").unwrap();
            assert_eq!(
                b.open_checked(b"k", &sealed).unwrap(),
                (b"v".to_vec(), SealedWith::Current)
            );
        }
        // A value under a previous key is Stale through the keyring too.
        let old = AuthCipher::new(&mk(3), "u").seal(b"k", b"v").unwrap();
        assert_eq!(
            from_ring.open_checked(b"k", &old).unwrap(),
            (b"v".to_vec(), SealedWith::Stale)
        );
        // One key: no previous, nothing to re-seal.
        let single = AuthCipher::from_keyring(&user_keyring(&mk(2), &[], "u")).unwrap();
        assert!(!single.has_previous());
        // A previous key equal to the current one is dropped on both sides.
        let dup = user_keyring(&mk(2), &[mk(2)], "u");
        assert_eq!(dup.lines().count(), 1);
        assert_eq!(keyring_ids(&mk(2), &[mk(2)]), key_id(&mk(2)).to_string());
        let dup_text = format!("{}, {}", dup, dup);
        assert!(!AuthCipher::from_keyring(&dup_text).unwrap().has_previous());
    }

    #[test]
    fn one_users_keyring_opens_nothing_of_another_user() {
        let bob = AuthCipher::with_previous(&mk(2), &[mk(1)], "bob");
        let sealed = bob.seal(b"k", b"v").unwrap();
        let old = AuthCipher::new(&mk(1), "bob").seal(b"k", b"v").unwrap();
        let alice = AuthCipher::from_keyring(&user_keyring(&mk(2), &[mk(1)], "alice")).unwrap();
        assert_eq!(alice.open(b"k", &sealed), Err(CryptoError::Open));
        assert_eq!(alice.open(b"k", &old), Err(CryptoError::Open));
        // And the keyring text holds no master key.
        let ring = user_keyring(&mk(2), &[mk(1)], "alice");
        for m in [mk(1), mk(2)] {
            assert!(!ring.contains(&data_encoding::BASE64.encode(&m.0)));
        }
    }

    #[test]
    fn bad_keyrings_are_refused_by_position_without_echoing() {
        let good = user_keyring(&mk(2), &[], "u");
        let key = data_encoding::BASE64.encode(&[7u8; 32]);
        for (text, pos) in [
            ("".to_owned(), 1),
            ("# only a comment\n".to_owned(), 1),
            (format!("{good}\nnope"), 2),
            (format!("1:{key}"), 1),
            (format!("0:{key}"), 1),
            (format!("256:{key}"), 1),
            (
                format!("{good},9:{}", data_encoding::BASE64.encode(&[7u8; 31])),
                2,
            ),
            (
                format!("9:{}", data_encoding::HEXLOWER.encode(&[7u8; 32])),
                1,
            ),
        ] {
            let err = AuthCipher::from_keyring(&text).unwrap_err();
            assert_eq!(err, CryptoError::BadKeyring(pos), "{text}");
            assert!(!err.to_string().contains(&key), "{err}");
        }
        // Comments and separators as in the previous-keys lists.
        let c =
            AuthCipher::from_keyring(&format!("# rotated\n{good} # current\n, 9:{key}\n")).unwrap();
        assert_eq!(c.key_ids(), vec![key_id(&mk(2)), 9]);
        assert_eq!(format!("{c:?}"), "AuthCipher(..)");
    }

    #[test]
    fn master_key_lists_have_comments_and_name_bad_positions() {
        let a = "01".repeat(32);
        let b = data_encoding::BASE64.encode(&[2u8; 32]);
        let keys =
            MasterKey::parse_list(&format!("# rotated 2026-11\n{a}, {b}\n\n  {a} # again\n"))
                .unwrap();
        assert_eq!(keys.len(), 3);
        assert!(MasterKey::parse_list("").unwrap().is_empty());
        assert_eq!(
            MasterKey::parse_list(&format!("{a},nope")).unwrap_err(),
            (2, CryptoError::BadMasterKey)
        );
    }

    #[test]
    fn per_user_keys_differ_and_are_deterministic() {
        assert_eq!(derive_user_key(&mk(1), "a"), derive_user_key(&mk(1), "a"));
        assert_ne!(derive_user_key(&mk(1), "a"), derive_user_key(&mk(1), "b"));
    }

    #[test]
    fn master_key_parses_hex_and_base64_only_at_32_bytes() {
        let hex = "ab".repeat(32);
        assert!(MasterKey::parse(&format!("{hex}\n")).is_ok());
        let b64 = data_encoding::BASE64.encode(&[9u8; 32]);
        assert!(MasterKey::parse(&b64).is_ok());
        assert_eq!(
            MasterKey::parse("short").unwrap_err(),
            CryptoError::BadMasterKey
        );
        assert_eq!(
            format!("{:?}", MasterKey::parse(&hex).unwrap()),
            "MasterKey(..)"
        );
    }

    #[test]
    fn redis_passwords_are_per_user_per_master_key_and_unlike_the_auth_keys() {
        let (m1, m2) = (
            MasterKey::from_bytes([1; 32]),
            MasterKey::from_bytes([2; 32]),
        );
        let p = redis_password(&m1, "a@x");
        assert_eq!(p, redis_password(&m1, "a@x"));
        assert_eq!(p.len(), 64);
        assert_ne!(p, redis_password(&m1, "b@x"));
        assert_ne!(p, redis_password(&m2, "a@x"));
        assert_ne!(
            p,
            data_encoding::HEXLOWER.encode(&derive_user_key(&m1, "a@x"))
        );
    }
}
