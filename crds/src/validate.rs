//! Checks the schema cannot express. A spec that fails them is "malformed": the operator reports
//! it with a Warning event and a Failed status, and moves on to other sessions.

use wasp_common::phone::normalize_phone;

use crate::{PairingMethod, WhatsAppSessionSpec};

/// Every problem of the spec, as messages a user can act on; empty when the spec is usable.
pub fn validate_spec(spec: &WhatsAppSessionSpec) -> Vec<String> {
    let mut problems = Vec::new();
    if spec.user_id.trim().is_empty() {
        problems.push("spec.userId must not be blank".to_owned());
    }
    if spec.user_id.chars().any(char::is_control) {
        problems.push("spec.userId must not contain control characters".to_owned());
    }
    match (&spec.pairing.method, &spec.pairing.phone_number) {
        (PairingMethod::PairingCode, None) => problems.push(
            "spec.pairing.phoneNumber is required when spec.pairing.method is pairingCode"
                .to_owned(),
        ),
        (_, Some(phone)) => {
            if let Err(e) = normalize_phone(phone) {
                problems.push(format!("spec.pairing.phoneNumber: {e}"));
            }
        }
        (PairingMethod::Qr, None) => {}
    }
    if let Some(image) = &spec.pod.image
        && (image.trim().is_empty() || image.chars().any(char::is_whitespace))
    {
        problems
            .push("spec.pod.image must be a non-empty image reference without spaces".to_owned());
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WhatsAppSession;

    fn spec() -> WhatsAppSessionSpec {
        WhatsAppSession::for_user("doctor@clinic.com").spec
    }

    #[test]
    fn defaults_are_valid() {
        assert!(validate_spec(&spec()).is_empty());
    }

    #[test]
    fn pairing_code_needs_a_valid_phone() {
        let mut s = spec();
        s.pairing.method = PairingMethod::PairingCode;
        assert_eq!(validate_spec(&s).len(), 1);
        s.pairing.phone_number = Some("12ab".into());
        assert!(validate_spec(&s)[0].contains("phoneNumber"));
        s.pairing.phone_number = Some("+41 79 123 45 67".into());
        assert!(validate_spec(&s).is_empty());
    }

    #[test]
    fn blank_user_and_bad_image_are_reported_together() {
        let mut s = spec();
        s.user_id = "  ".into();
        s.pod.image = Some("bad image".into());
        assert_eq!(validate_spec(&s).len(), 2);
    }
}
