use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("invalid size {value:?}: {reason}; write a number with a unit such as 512M, 8G or 1T")]
    Invalid { value: String, reason: &'static str },
}

/// Parses a size with a binary unit: `K`, `M`, `G` or `T`, optionally followed
/// by `iB` or `B` (`8G`, `8GiB` and `8gb` are all 8 GiB). A bare number is
/// rejected because users mean MiB as often as bytes.
pub fn parse_size(value: &str) -> Result<u64, SizeError> {
    let invalid = |reason| SizeError::Invalid {
        value: value.to_string(),
        reason,
    };
    let trimmed = value.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(invalid("it does not start with a number"));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| invalid("the number is too large"))?;
    if unit.starts_with(['.', ',']) {
        return Err(invalid(
            "it is not a whole number; use a smaller unit, such as 1536M for 1.5G",
        ));
    }
    let unit = unit.trim().to_ascii_lowercase();
    let shift = match unit.as_str() {
        "" => return Err(invalid("the unit is missing")),
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(invalid("the unit is not one of K, M, G, T")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| invalid("the size is too large"))
}

/// Formats a byte count in the largest binary unit that divides it evenly
/// (`8G`, `1536M`), the form `parse_size` reads back.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
    }

    #[test]
    fn rejects_bad_sizes() {
        for (value, reason) in [
            ("8", "unit is missing"),
            ("G", "does not start with a number"),
            ("8X", "not one of"),
            ("1.5G", "not a whole number"),
            ("2,5G", "not a whole number"),
            ("-1G", "does not start with a number"),
            ("99999999999999999999G", "too large"),
            ("20000000T", "too large"),
        ] {
            let err = parse_size(value).unwrap_err().to_string();
            assert!(err.contains(reason), "{value}: {err}");
            assert!(err.contains(value), "{err}");
        }
    }

    #[test]
    fn format_round_trips() {
        for bytes in [8u64 << 30, 1536 << 20, 1 << 40, 4096] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
        assert_eq!(format_size(8 << 30), "8G");
        assert_eq!(format_size(1536 << 20), "1536M");
    }
}
