//! Syntax checks for Debian names passed to apt-get and mmdebstrap.

/// Returns true for a package name in Debian policy syntax: lowercase
/// letters, digits, `+`, `-` and `.`, at least two characters, starting with
/// a letter or digit. The first-character rule also keeps a name from being
/// read as a command-line option.
pub fn is_valid_package_name(name: &str) -> bool {
    let valid_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    name.len() >= 2 && valid_start && valid_chars
}

/// Returns true for a suite or codename such as `bookworm` or
/// `stable-updates`: lowercase letters, digits and `-`, starting with a letter.
pub fn is_valid_suite_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names() {
        for good in ["linux-image-cloud-amd64", "g++-12", "systemd-sysv", "0ad"] {
            assert!(is_valid_package_name(good), "{good:?}");
        }
        for bad in ["", "-o", "Linux", "a b", "x", "../etc", "pkg,other"] {
            assert!(!is_valid_package_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn suite_names() {
        assert!(is_valid_suite_name("bookworm"));
        assert!(is_valid_suite_name("stable-updates"));
        for bad in ["", "-x", "Bookworm", "book worm", "../x"] {
            assert!(!is_valid_suite_name(bad), "{bad:?}");
        }
    }
}
