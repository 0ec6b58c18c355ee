//! The stable, DNS-safe hash of a user id. User ids come from JWTs (emails, UUIDs, Supabase
//! subs) and may hold any character; everything that must be a name or a key uses this hash.

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};

/// Characters of the hash: 16 base32 characters carry 80 bits, so two distinct user ids share a
/// hash with probability 2^-80 — far below any chance that matters for one cluster's users.
pub const USER_HASH_LEN: usize = 16;

/// `sha256(user_id)` in lowercase base32, first [`USER_HASH_LEN`] characters (`[a-z2-7]`).
pub fn user_hash(user_id: &str) -> String {
    let digest = Sha256::digest(user_id.as_bytes());
    let mut encoded = BASE32_NOPAD.encode(&digest).to_ascii_lowercase();
    encoded.truncate(USER_HASH_LEN);
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_deterministic_dns_safe_and_fixed_length() {
        for id in ["doctor@clinic.com", "", "日本語", "a".repeat(5000).as_str()] {
            let h = user_hash(id);
            assert_eq!(h, user_hash(id));
            assert_eq!(h.len(), USER_HASH_LEN);
            assert!(
                h.chars()
                    .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)),
                "{h}"
            );
        }
    }

    #[test]
    fn ids_differing_only_in_case_get_different_hashes() {
        assert_ne!(user_hash("Bob@x.io"), user_hash("bob@x.io"));
    }
}
