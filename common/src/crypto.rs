//! Encryption of a user's auth state at rest: AES-256-GCM with a per-user key derived by
//! HKDF-SHA256 from the master key (salt: a fixed label, info: the user id), the Redis key (and
//! field) as associated data, so a ciphertext moved to another key or another user fails to open.
//!
//! Sealed value layout: `version (1 byte) ‖ nonce (12 bytes) ‖ ciphertext+tag`. The version
//! names the master-key generation; [`AuthCipher`] opens every version it holds a key for and
//! seals with the newest, which is how a master key is rotated.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

/// Version byte of values sealed with the first master-key generation.
pub const VERSION_1: u8 = 1;
const NONCE_LEN: usize = 12;
const HKDF_SALT: &[u8] = b"wasp/auth-state/v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("master key must be 32 bytes, as 64 hex characters or base64")]
    BadMasterKey,
    #[error("sealed value is too short")]
    Truncated,
    #[error("no key for version {0}")]
    UnknownVersion(u8),
    #[error("authentication failed (wrong key, user or redis key)")]
    Open,
    #[error("encryption failed")]
    Seal,
}

impl CryptoError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::BadMasterKey => "bad_master_key",
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
}

/// The per-user cipher.
#[derive(Clone)]
pub struct AuthCipher {
    /// `(version, cipher)`, newest last.
    keys: Vec<(u8, Aes256Gcm)>,
}

impl std::fmt::Debug for AuthCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthCipher(..)")
    }
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

impl AuthCipher {
    /// A cipher for one user with one master key (version 1).
    pub fn new(master: &MasterKey, user_id: &str) -> Self {
        Self::with_generations(&[(VERSION_1, master.clone())], user_id)
    }

    /// A cipher for one user over several master-key generations `(version, key)`; the last
    /// one seals, all open.
    pub fn with_generations(generations: &[(u8, MasterKey)], user_id: &str) -> Self {
        let keys = generations
            .iter()
            .map(|(v, mk)| {
                let key = derive_user_key(mk, user_id);
                (*v, Aes256Gcm::new(&key.into()))
            })
            .collect();
        Self { keys }
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (version, cipher) = self.keys.last().ok_or(CryptoError::Seal)?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(*version);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < 1 + NONCE_LEN + 16 {
            return Err(CryptoError::Truncated);
        }
        let version = sealed[0];
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(v, _)| *v == version)
            .ok_or(CryptoError::UnknownVersion(version))?;
        let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_LEN]);
        cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad,
                },
            )
            .map_err(|_| CryptoError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(b: u8) -> MasterKey {
        MasterKey::from_bytes([b; 32])
    }

    #[test]
    fn seal_open_round_trip_with_version_byte() {
        let c = AuthCipher::new(&mk(7), "alice");
        let sealed = c.seal(b"k1", b"secret").unwrap();
        assert_eq!(sealed[0], VERSION_1);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(c.open(b"k1", &sealed).unwrap(), b"secret");
        // fresh nonce every time
        assert_ne!(c.seal(b"k1", b"secret").unwrap(), sealed);
    }

    #[test]
    fn wrong_aad_user_or_master_fails() {
        let c = AuthCipher::new(&mk(7), "alice");
        let sealed = c.seal(b"k1", b"secret").unwrap();
        assert_eq!(c.open(b"k2", &sealed), Err(CryptoError::Open));
        let bob = AuthCipher::new(&mk(7), "bob");
        assert_eq!(bob.open(b"k1", &sealed), Err(CryptoError::Open));
        let other = AuthCipher::new(&mk(8), "alice");
        assert_eq!(other.open(b"k1", &sealed), Err(CryptoError::Open));
        assert_eq!(c.open(b"k1", &sealed[..10]), Err(CryptoError::Truncated));
    }

    #[test]
    fn rotation_opens_old_and_seals_new() {
        let old = AuthCipher::new(&mk(1), "u");
        let sealed_old = old.seal(b"k", b"v").unwrap();
        let rotated = AuthCipher::with_generations(&[(1, mk(1)), (2, mk(2))], "u");
        assert_eq!(rotated.open(b"k", &sealed_old).unwrap(), b"v");
        let sealed_new = rotated.seal(b"k", b"v").unwrap();
        assert_eq!(sealed_new[0], 2);
        assert_eq!(
            old.open(b"k", &sealed_new),
            Err(CryptoError::UnknownVersion(2))
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
}
