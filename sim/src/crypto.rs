//! Small helpers around the library's key types (all crypto itself is the library's).

use thiserror::Error;
use wacore::libsignal::protocol::{CurveError, KeyPair, PrivateKey};

#[derive(Debug, Error)]
pub enum CryptoError {
    #[error("curve25519: {0}")]
    Curve(#[from] CurveError),
    #[error("key must be 32 bytes, got {0}")]
    KeyLength(usize),
}

/// A CSPRNG of the `rand` generation the library's key APIs take.
pub fn new_rng() -> rand::rngs::StdRng {
    rand::make_rng::<rand::rngs::StdRng>()
}

pub fn generate_key_pair() -> KeyPair {
    KeyPair::generate(&mut new_rng())
}

/// Rebuilds a key pair from its 32-byte private key.
pub fn key_pair_from_private(private: &[u8]) -> Result<KeyPair, CryptoError> {
    if private.len() != 32 {
        return Err(CryptoError::KeyLength(private.len()));
    }
    let private_key = PrivateKey::deserialize(private)?;
    let public_key = private_key.public_key()?;
    Ok(KeyPair::new(public_key, private_key))
}

/// The 32 raw bytes of a key pair's public half.
pub fn public_bytes(kp: &KeyPair) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(kp.public_key.public_key_bytes());
    out
}

pub fn to_32(bytes: &[u8]) -> Result<[u8; 32], CryptoError> {
    bytes
        .try_into()
        .map_err(|_| CryptoError::KeyLength(bytes.len()))
}
