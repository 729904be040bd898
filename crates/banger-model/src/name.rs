use rand::seq::SliceRandom;
use thiserror::Error;

/// Longest VM name: one DNS label.
pub const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("invalid VM name {name:?}: {reason}")]
    Invalid { name: String, reason: &'static str },
}

impl NameError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        "use 1 to 63 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen, e.g. dev or web-2"
    }
}

/// Checks that `name` can serve as a hostname and a DNS label (`<name>.vm`).
pub fn validate_vm_name(name: &str) -> Result<(), NameError> {
    let invalid = |reason| {
        Err(NameError::Invalid {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("the name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("the name is longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("only lowercase letters, digits and hyphens are allowed");
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return invalid("the name must start with a letter");
    }
    if name.ends_with('-') {
        return invalid("the name must not end with a hyphen");
    }
    Ok(())
}

const ADJECTIVES: &[&str] = &[
    "amber", "brisk", "calm", "deft", "eager", "fleet", "gentle", "hardy", "keen", "lucid",
    "mellow", "nimble", "quiet", "rapid", "steady", "tidy", "vivid", "witty",
];
const NOUNS: &[&str] = &[
    "badger", "crane", "falcon", "gecko", "heron", "ibis", "lynx", "marten", "newt", "otter",
    "puffin", "raven", "stoat", "tern", "vole", "wren",
];

/// Generates a name such as `brisk-otter-42`; the caller retries on collision.
pub fn generate_vm_name() -> String {
    let mut rng = rand::thread_rng();
    let adjective = ADJECTIVES.choose(&mut rng).expect("non-empty list");
    let noun = NOUNS.choose(&mut rng).expect("non-empty list");
    let number: u8 = rand::Rng::gen_range(&mut rng, 10..100);
    format!("{adjective}-{noun}-{number}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hostname_safe_names() {
        for name in ["dev", "web-2", "a", "x1", &"a".repeat(63)] {
            assert_eq!(validate_vm_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn rejects_bad_names_with_reason() {
        let cases = [
            ("", "empty"),
            ("Dev", "lowercase"),
            ("my_vm", "lowercase"),
            ("dev.vm", "lowercase"),
            ("-dev", "start with a letter"),
            ("2dev", "start with a letter"),
            ("dev-", "end with a hyphen"),
            ("dév", "lowercase"),
        ];
        for (name, reason) in cases {
            let err = validate_vm_name(name).unwrap_err();
            assert!(err.to_string().contains(reason), "{name}: {err}");
            assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
        }
        let long = "a".repeat(64);
        assert!(
            validate_vm_name(&long)
                .unwrap_err()
                .to_string()
                .contains("longer than 63")
        );
    }

    #[test]
    fn generated_names_are_valid() {
        for _ in 0..200 {
            let name = generate_vm_name();
            assert_eq!(validate_vm_name(&name), Ok(()), "{name}");
        }
    }
}
