//! The WhatsAppSession name of a user id: deterministic (the API finds a user's session without a
//! lookup), DNS-safe (a valid object, pod and label-value name: at most 63 characters of
//! `[a-z0-9-]`), readable (it keeps a slug of the id) and collision-free (it ends with the id's
//! hash, so `Bob@x.io` and `bob@x.io`, whose slugs agree, still differ).

use wasp_common::user_hash;

/// Longest slug kept from the user id: `wa-` + slug + `-` + 16-char hash stays within 63.
const MAX_SLUG: usize = 40;

pub fn session_name(user_id: &str) -> String {
    let hash = user_hash(user_id);
    let slug = slug(user_id);
    if slug.is_empty() {
        format!("wa-{hash}")
    } else {
        format!("wa-{slug}-{hash}")
    }
}

/// Lowercase ASCII alphanumerics of the id, other runs folded into one `-`, trimmed.
fn slug(user_id: &str) -> String {
    let mut out = String::with_capacity(MAX_SLUG);
    let mut pending_dash = false;
    for c in user_id.chars() {
        if c.is_ascii_alphanumeric() {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push(c.to_ascii_lowercase());
        } else {
            pending_dash = true;
        }
        if out.len() >= MAX_SLUG {
            break;
        }
    }
    out.truncate(MAX_SLUG);
    out.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn typical_user_ids_give_readable_dns_labels() {
        let cases = [
            ("doctor@clinic.com", "wa-doctor-clinic-com-"),
            (
                "2f1e6c1a-7d43-4a8e-9a55-0c2b8f0e1d3f",
                "wa-2f1e6c1a-7d43-4a8e-9a55-0c2b8f0e1d3f-",
            ),
            ("user-123", "wa-user-123-"),
        ];
        for (id, prefix) in cases {
            let name = session_name(id);
            assert!(name.starts_with(prefix), "{id} -> {name}");
            assert!(is_dns_label(&name), "{name}");
        }
    }

    #[test]
    fn odd_and_very_long_ids_still_give_dns_labels() {
        let long = "X".repeat(10_000);
        for id in [
            "",
            "---",
            "日本語ユーザー",
            "  Bob  ",
            "a.b_c/d\\e",
            long.as_str(),
            "-a-",
        ] {
            let name = session_name(id);
            assert!(is_dns_label(&name), "{id:?} -> {name}");
        }
        assert_eq!(
            session_name("日本語"),
            format!("wa-{}", user_hash("日本語"))
        );
    }

    #[test]
    fn names_are_deterministic_and_differ_when_slugs_collide() {
        assert_eq!(session_name("Bob@x.io"), session_name("Bob@x.io"));
        assert_ne!(session_name("Bob@x.io"), session_name("bob@x.io"));
        assert_ne!(session_name("a.b"), session_name("a-b"));
        let long_a = format!("{}a", "x".repeat(100));
        let long_b = format!("{}b", "x".repeat(100));
        assert_ne!(session_name(&long_a), session_name(&long_b));
    }
}
