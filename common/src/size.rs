//! Sizes as the seeds write them (`MAX_FILE_SIZE=10mb`).

/// Parses sizes as the seed's Express `bytes` package does: `10mb`, `512kb`, `1gb`, `100b` or a
/// plain number of bytes; units are powers of 1024, case-insensitive.
pub fn parse_size(input: &str) -> Result<usize, String> {
    let s = input.trim().to_ascii_lowercase();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {input:?}: expected e.g. 10mb"))?;
    let factor: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "kb" | "k" => 1024.0,
        "mb" | "m" => 1024.0 * 1024.0,
        "gb" | "g" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("invalid size unit {other:?} in {input:?}")),
    };
    let bytes = (number * factor).floor();
    if !bytes.is_finite() || bytes < 1.0 || bytes > (4u64 << 30) as f64 {
        return Err(format!("size {input:?} out of range (1 byte to 4gb)"));
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_the_seed() {
        assert_eq!(parse_size("10mb"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("10MB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("512kb"), Ok(512 * 1024));
        assert_eq!(parse_size("1.5kb"), Ok(1536));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size(" 2 gb "), Ok(2 << 30));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10tb").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("").is_err());
    }
}
