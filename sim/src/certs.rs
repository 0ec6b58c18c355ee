//! The Noise certificate chain the server hello carries: root → intermediate → leaf, where the
//! leaf key is the server's static Noise key. The chain is signed (XEdDSA, as WhatsApp does)
//! by a simulator root key, so a client that checks signatures against a configurable root
//! accepts it. The stock client pins WhatsApp's root and must be built with its
//! `danger-skip-cert-chain-verify` feature to talk to the simulator.

use buffa::Message as _;
use wacore::libsignal::protocol::{KeyPair, PublicKey};
use waproto::whatsapp::{self as wa, cert_chain::noise_certificate};

use crate::crypto::{CryptoError, new_rng};

/// Validity window: wide enough that the client's IK clock checks always pass.
const NOT_BEFORE: u64 = 1_600_000_000;
const NOT_AFTER: u64 = 4_000_000_000;

/// Builds the encoded `CertChain` for `leaf_key`, signed by `root` through a fresh intermediate.
pub fn build_cert_chain(root: &KeyPair, leaf_key: &[u8; 32]) -> Result<Vec<u8>, CryptoError> {
    let mut rng = new_rng();
    let intermediate = KeyPair::generate(&mut rng);
    let intermediate_details = noise_certificate::Details {
        serial: Some(1),
        // The client requires the intermediate to be issued by serial 0 (the root).
        issuer_serial: Some(0),
        key: Some(intermediate.public_key.public_key_bytes().to_vec()),
        not_before: Some(NOT_BEFORE),
        not_after: Some(NOT_AFTER),
    }
    .encode_to_vec();
    let leaf_details = noise_certificate::Details {
        serial: Some(2),
        issuer_serial: Some(1),
        key: Some(leaf_key.to_vec()),
        not_before: Some(NOT_BEFORE),
        not_after: Some(NOT_AFTER),
    }
    .encode_to_vec();
    let intermediate_sig = root
        .private_key
        .calculate_signature(&intermediate_details, &mut rng)?;
    let leaf_sig = intermediate
        .private_key
        .calculate_signature(&leaf_details, &mut rng)?;
    Ok(wa::CertChain {
        leaf: buffa::MessageField::some(wa::cert_chain::NoiseCertificate {
            details: Some(leaf_details),
            signature: Some(leaf_sig.to_vec()),
        }),
        intermediate: buffa::MessageField::some(wa::cert_chain::NoiseCertificate {
            details: Some(intermediate_details),
            signature: Some(intermediate_sig.to_vec()),
        }),
    }
    .encode_to_vec())
}

/// Verifies a chain the way a client with a configurable root would; used by the tests and by
/// anyone who wants to check the simulator's chain against its published root key.
pub fn verify_cert_chain(chain: &[u8], root_pub: &[u8; 32], leaf_key: &[u8; 32]) -> bool {
    let Ok(chain) = wa::CertChain::decode_from_slice(chain) else {
        return false;
    };
    let (Some(intermediate), Some(leaf)) = (chain.intermediate.as_option(), chain.leaf.as_option())
    else {
        return false;
    };
    let (Some(i_details), Some(i_sig), Some(l_details), Some(l_sig)) = (
        intermediate.details.as_deref(),
        intermediate.signature.as_deref(),
        leaf.details.as_deref(),
        leaf.signature.as_deref(),
    ) else {
        return false;
    };
    let Ok(root) = PublicKey::from_djb_public_key_bytes(root_pub) else {
        return false;
    };
    let Ok(i) = noise_certificate::Details::decode_from_slice(i_details) else {
        return false;
    };
    let Ok(l) = noise_certificate::Details::decode_from_slice(l_details) else {
        return false;
    };
    let Some(Ok(i_key)) = i.key.as_deref().map(PublicKey::from_djb_public_key_bytes) else {
        return false;
    };
    root.verify_signature(i_details, i_sig)
        && i_key.verify_signature(l_details, l_sig)
        && l.issuer_serial == i.serial
        && l.key.as_deref() == Some(leaf_key.as_slice())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chain_verifies_against_its_root_and_not_another() {
        let mut rng = new_rng();
        let root = KeyPair::generate(&mut rng);
        let other = KeyPair::generate(&mut rng);
        let leaf = [9u8; 32];
        let chain = build_cert_chain(&root, &leaf).unwrap();
        let root_pub: [u8; 32] = root.public_key.public_key_bytes().try_into().unwrap();
        let other_pub: [u8; 32] = other.public_key.public_key_bytes().try_into().unwrap();
        assert!(verify_cert_chain(&chain, &root_pub, &leaf));
        assert!(!verify_cert_chain(&chain, &other_pub, &leaf));
        assert!(!verify_cert_chain(&chain, &root_pub, &[8u8; 32]));
    }

    #[test]
    fn chain_passes_the_clients_own_structural_checks() {
        let root = KeyPair::generate(&mut new_rng());
        let leaf = [7u8; 32];
        let chain = build_cert_chain(&root, &leaf).unwrap();
        // Unless the client's skip feature is unified into this build, its verifier also
        // checks the signature against WhatsApp's pinned root — which must be the only
        // thing that fails.
        match wacore_noise::HandshakeUtils::verify_server_cert(&chain, &leaf) {
            Ok(verified) => assert_eq!(verified.leaf_key, leaf),
            Err(e) => assert!(e.to_string().contains("intermediate signature"), "{e}"),
        }
    }
}
