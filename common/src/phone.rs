//! Phone numbers as users type them (`+41 79 123 45 67`, `0041791234567`, `41791234567`) to the
//! digits WhatsApp addresses (`41791234567`, JID `41791234567@s.whatsapp.net`).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    #[error(
        "phone number may contain only digits, spaces, dashes, dots, parentheses and a leading +"
    )]
    InvalidCharacter,
    #[error("phone number must have 7 to 15 digits including the country code (E.164), got {0}")]
    Length(usize),
    #[error("phone number must start with a country code, not 0")]
    LeadingZero,
}

/// Normalises to E.164 digits without `+`. The international prefix `00` is accepted; a national
/// number starting with a single `0` is rejected, because its country cannot be known.
pub fn normalize_phone(input: &str) -> Result<String, PhoneError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(PhoneError::Empty);
    }
    let rest = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(PhoneError::InvalidCharacter),
        }
    }
    let digits = match digits.strip_prefix("00") {
        Some(international) if !trimmed.starts_with('+') => international.to_owned(),
        _ => digits,
    };
    if digits.starts_with('0') {
        return Err(PhoneError::LeadingZero);
    }
    if !(7..=15).contains(&digits.len()) {
        return Err(PhoneError::Length(digits.len()));
    }
    Ok(digits)
}

/// The user JID WhatsApp uses for a phone number.
pub fn phone_to_jid(input: &str) -> Result<String, PhoneError> {
    Ok(format!("{}@s.whatsapp.net", normalize_phone(input)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_spellings_normalise_to_e164_digits() {
        for input in [
            "+41791234567",
            "+41 79 123 45 67",
            "0041791234567",
            "41791234567",
            " +41-79-123.45.67 ",
            "+41 (79) 1234567",
        ] {
            assert_eq!(normalize_phone(input), Ok("41791234567".into()), "{input}");
        }
        assert_eq!(
            phone_to_jid("+1 555 0100 999"),
            Ok("15550100999@s.whatsapp.net".into())
        );
    }

    #[test]
    fn bad_numbers_get_a_clear_error() {
        assert_eq!(normalize_phone(""), Err(PhoneError::Empty));
        assert_eq!(normalize_phone("   "), Err(PhoneError::Empty));
        assert_eq!(normalize_phone("+41abc"), Err(PhoneError::InvalidCharacter));
        assert_eq!(
            normalize_phone("++41791234567"),
            Err(PhoneError::InvalidCharacter)
        );
        assert_eq!(normalize_phone("123"), Err(PhoneError::Length(3)));
        assert_eq!(
            normalize_phone("1234567890123456"),
            Err(PhoneError::Length(16))
        );
        assert_eq!(normalize_phone("0791234567"), Err(PhoneError::LeadingZero));
    }
}
