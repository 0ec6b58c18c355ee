//! What the simulated phone does to link a companion device: read the QR string and sign an
//! ADV device identity for it (account signature with the phone's identity key, HMAC with the
//! companion's ADV secret), as the primary device does in multi-device pairing.

use buffa::Message as _;
use data_encoding::BASE64;
use thiserror::Error;
use wacore::libsignal::crypto::hmac_sha256;
use wacore::libsignal::protocol::KeyPair;
use waproto::whatsapp::{self as wa, ADVEncryptionType};

use crate::crypto::{CryptoError, new_rng, to_32};

/// Prefix of the account signature over the device identity (`whatsmeow` / WA Web).
const ADV_PREFIX_ACCOUNT_SIGNATURE: &[u8] = &[6, 0];
/// Prefix WA Web puts in front of a QR scanned with the phone camera app.
const NATIVE_CAMERA_PREFIX: &str = "https://wa.me/settings/linked_devices#";

/// Number of QR refs WhatsApp hands out in one `pair-device` (60 s + 5 × 20 s of QR codes).
pub const QR_REF_COUNT: usize = 6;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PairingError {
    #[error("QR string is not `ref,noise,identity,adv[,type]`")]
    QrFormat,
    #[error("QR field is not valid base64 of a 32-byte key")]
    QrKey,
    #[error("no device is waiting for pairing ref {0:?}")]
    UnknownRef(String),
    #[error("QR keys do not match the device that holds the ref")]
    KeyMismatch,
    #[error("phone {0} does not exist")]
    UnknownPhone(String),
    #[error("pairing code is wrong or expired")]
    BadPairingCode,
    #[error("signing failed: {0}")]
    Crypto(String),
}

impl From<CryptoError> for PairingError {
    fn from(e: CryptoError) -> Self {
        Self::Crypto(e.to_string())
    }
}

/// The fields of a companion's QR code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrCode {
    pub pairing_ref: String,
    pub noise_pub: [u8; 32],
    pub identity_pub: [u8; 32],
    pub adv_secret: [u8; 32],
}

impl QrCode {
    pub fn parse(qr: &str) -> Result<Self, PairingError> {
        let body = qr.strip_prefix(NATIVE_CAMERA_PREFIX).unwrap_or(qr);
        let parts: Vec<&str> = body.split(',').collect();
        if parts.len() < 4 || parts[..4].iter().any(|p| p.is_empty()) {
            return Err(PairingError::QrFormat);
        }
        let key = |s: &str| -> Result<[u8; 32], PairingError> {
            let bytes = BASE64
                .decode(s.as_bytes())
                .map_err(|_| PairingError::QrKey)?;
            to_32(&bytes).map_err(|_| PairingError::QrKey)
        };
        Ok(Self {
            pairing_ref: parts[0].to_owned(),
            noise_pub: key(parts[1])?,
            identity_pub: key(parts[2])?,
            adv_secret: key(parts[3])?,
        })
    }
}

/// Builds the `<device-identity>` payload (`ADVSignedDeviceIdentityHMAC`) for a companion.
pub fn sign_device_identity(
    account_identity: &KeyPair,
    companion_identity_pub: &[u8; 32],
    adv_secret: &[u8; 32],
    key_index: u32,
    timestamp: u64,
) -> Result<Vec<u8>, PairingError> {
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(key_index),
        timestamp: Some(timestamp),
        key_index: Some(key_index),
        account_type: Some(ADVEncryptionType::E2EE),
        device_type: Some(ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let mut to_sign = Vec::with_capacity(2 + details.len() + 32);
    to_sign.extend_from_slice(ADV_PREFIX_ACCOUNT_SIGNATURE);
    to_sign.extend_from_slice(&details);
    to_sign.extend_from_slice(companion_identity_pub);
    let account_signature = account_identity
        .private_key
        .calculate_signature(&to_sign, &mut new_rng())
        .map_err(|e| PairingError::Crypto(e.to_string()))?;
    let signed = wa::ADVSignedDeviceIdentity {
        details: Some(details),
        account_signature_key: Some(account_identity.public_key.public_key_bytes().to_vec()),
        account_signature: Some(account_signature.to_vec()),
        device_signature: None,
    }
    .encode_to_vec();
    let hmac = hmac_sha256(adv_secret, &signed);
    Ok(wa::ADVSignedDeviceIdentityHMAC {
        details: Some(signed),
        hmac: Some(hmac.to_vec()),
        account_type: Some(ADVEncryptionType::E2EE),
    }
    .encode_to_vec())
}

/// Fresh QR refs for a `pair-device` iq.
pub fn new_refs() -> Vec<String> {
    use rand::RngExt as _;
    let mut rng = new_rng();
    (0..QR_REF_COUNT)
        .map(|_| {
            let bytes: [u8; 18] = rng.random();
            format!("2@{}", BASE64.encode(&bytes))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::{generate_key_pair, public_bytes};
    use wacore::pair::{DeviceState, PairUtils};

    fn companion() -> DeviceState {
        DeviceState {
            identity_key: generate_key_pair(),
            noise_key: generate_key_pair(),
            adv_secret_key: [5u8; 32],
        }
    }

    #[test]
    fn the_library_accepts_the_signed_identity() {
        let dev = companion();
        let phone = generate_key_pair();
        let payload = sign_device_identity(
            &phone,
            &public_bytes(&dev.identity_key),
            &dev.adv_secret_key,
            3,
            1_700_000_000,
        )
        .unwrap();
        let (_, key_index) = PairUtils::do_pair_crypto(&dev, &payload).unwrap();
        assert_eq!(key_index, 3);
    }

    #[test]
    fn a_wrong_adv_secret_is_rejected_by_the_library() {
        let dev = companion();
        let payload = sign_device_identity(
            &generate_key_pair(),
            &public_bytes(&dev.identity_key),
            &[6u8; 32],
            1,
            0,
        )
        .unwrap();
        let err = PairUtils::do_pair_crypto(&dev, &payload).unwrap_err();
        assert_eq!(err.code, 401);
    }

    #[test]
    fn parses_the_qr_the_library_renders() {
        let dev = companion();
        let qr = PairUtils::make_qr_data(
            &dev,
            "2@abc",
            wacore::companion_reg::CompanionWebClientType::Chrome,
        );
        let parsed = QrCode::parse(&qr).unwrap();
        assert_eq!(parsed.pairing_ref, "2@abc");
        assert_eq!(parsed.noise_pub, public_bytes(&dev.noise_key));
        assert_eq!(parsed.identity_pub, public_bytes(&dev.identity_key));
        assert_eq!(parsed.adv_secret, dev.adv_secret_key);
        assert_eq!(QrCode::parse("a,b"), Err(PairingError::QrFormat));
    }

    #[test]
    fn refs_are_distinct() {
        let refs = new_refs();
        assert_eq!(refs.len(), QR_REF_COUNT);
        let set: std::collections::HashSet<_> = refs.iter().collect();
        assert_eq!(set.len(), QR_REF_COUNT);
    }
}
