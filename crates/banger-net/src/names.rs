//! Names of banger's network devices and the VM ids they derive from.
//!
//! banger only creates and deletes devices whose names carry its prefixes,
//! so a request can never name a device banger does not own.

use thiserror::Error;

/// Bridge name used when the configuration names none.
pub const DEFAULT_BRIDGE: &str = "banger0";

/// Prefix every bridge name must start with.
pub const BRIDGE_PREFIX: &str = "banger";

/// Prefix of every tap device name.
pub const TAP_PREFIX: &str = "bgt";

/// Maximum length of a Linux interface name in bytes (`IFNAMSIZ` minus the
/// terminating NUL).
pub const MAX_DEVICE_NAME_LEN: usize = 15;

/// Length of a VM id: 12 lowercase hex digits, as bangerd generates them.
pub const VM_ID_LEN: usize = 12;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NameError {
    #[error("invalid device name {name:?}: {reason}")]
    InvalidDevice { name: String, reason: &'static str },
    #[error("invalid bridge name {name:?}: it must start with {BRIDGE_PREFIX:?}")]
    BridgePrefix { name: String },
    #[error("invalid tap name {name:?}: it must start with {TAP_PREFIX:?}")]
    TapPrefix { name: String },
    #[error("invalid VM id {id:?}: expected {VM_ID_LEN} lowercase hex digits")]
    InvalidVmId { id: String },
    #[error(
        "invalid uplink interface name {name:?}: expected 1 to 15 ASCII letters, digits, '.', '_' or '-'"
    )]
    InvalidUplink { name: String },
}

/// Checks the rules every device name follows here: 1 to 15 bytes of
/// lowercase ASCII letters, digits and hyphens.
pub fn validate_device_name(name: &str) -> Result<(), NameError> {
    let invalid = |reason| {
        Err(NameError::InvalidDevice {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("the name is empty");
    }
    if name.len() > MAX_DEVICE_NAME_LEN {
        return invalid("the name is longer than 15 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("only lowercase letters, digits and hyphens are allowed");
    }
    Ok(())
}

/// Checks a bridge name: a valid device name starting with `banger`.
pub fn validate_bridge_name(name: &str) -> Result<(), NameError> {
    validate_device_name(name)?;
    if !name.starts_with(BRIDGE_PREFIX) {
        return Err(NameError::BridgePrefix {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Checks a tap name: a valid device name starting with `bgt` and longer
/// than the prefix alone.
pub fn validate_tap_name(name: &str) -> Result<(), NameError> {
    validate_device_name(name)?;
    if !name.starts_with(TAP_PREFIX) || name.len() == TAP_PREFIX.len() {
        return Err(NameError::TapPrefix {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Checks a VM id: exactly 12 lowercase hex digits.
pub fn validate_vm_id(id: &str) -> Result<(), NameError> {
    let valid = id.len() == VM_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if valid {
        Ok(())
    } else {
        Err(NameError::InvalidVmId { id: id.to_owned() })
    }
}

/// Checks the name of the uplink interface, a device banger does not own
/// and so does not name: 1 to 15 bytes of ASCII letters, digits, `.`, `_`
/// and `-`. That covers names such as `eth0`, `enp0s31f6` and `eth0.100`,
/// and keeps quotes and whitespace out of nftables scripts.
pub fn validate_uplink_name(name: &str) -> Result<(), NameError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_DEVICE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(NameError::InvalidUplink {
            name: name.to_owned(),
        })
    }
}

/// Returns the tap device name of a VM: `bgt` followed by its 12-digit id,
/// 15 bytes in all.
pub fn tap_name(vm_id: &str) -> Result<String, NameError> {
    validate_vm_id(vm_id)?;
    Ok(format!("{TAP_PREFIX}{vm_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_name_from_vm_id() {
        let name = tap_name("0123456789ab").unwrap();
        assert_eq!(name, "bgt0123456789ab");
        assert_eq!(name.len(), MAX_DEVICE_NAME_LEN);
        assert_eq!(validate_tap_name(&name), Ok(()));
    }

    #[test]
    fn tap_name_rejects_bad_vm_ids() {
        for id in [
            "",
            "0123456789a",
            "0123456789abc",
            "0123456789AB",
            "0123456789ag",
            "../../etc/x",
        ] {
            assert_eq!(
                tap_name(id),
                Err(NameError::InvalidVmId { id: id.to_owned() }),
                "{id:?}"
            );
        }
    }

    #[test]
    fn device_name_rules() {
        assert_eq!(validate_device_name("banger0"), Ok(()));
        assert_eq!(validate_device_name("a-1"), Ok(()));
        for (name, reason) in [
            ("", "the name is empty"),
            ("bgt0123456789abc", "the name is longer than 15 bytes"),
            (
                "Banger0",
                "only lowercase letters, digits and hyphens are allowed",
            ),
            (
                "bgt 1",
                "only lowercase letters, digits and hyphens are allowed",
            ),
            (
                "bgt/1",
                "only lowercase letters, digits and hyphens are allowed",
            ),
            (
                "bgt\"x",
                "only lowercase letters, digits and hyphens are allowed",
            ),
            (
                "bgt\u{e9}",
                "only lowercase letters, digits and hyphens are allowed",
            ),
        ] {
            assert_eq!(
                validate_device_name(name),
                Err(NameError::InvalidDevice {
                    name: name.to_owned(),
                    reason
                }),
                "{name:?}"
            );
        }
    }

    #[test]
    fn bridge_name_needs_prefix() {
        assert_eq!(validate_bridge_name(DEFAULT_BRIDGE), Ok(()));
        assert_eq!(validate_bridge_name("banger-test1"), Ok(()));
        assert_eq!(
            validate_bridge_name("br0"),
            Err(NameError::BridgePrefix { name: "br0".into() })
        );
        assert!(matches!(
            validate_bridge_name("banger-much-too-long"),
            Err(NameError::InvalidDevice { .. })
        ));
    }

    #[test]
    fn tap_name_needs_prefix() {
        assert_eq!(
            validate_tap_name("eth0"),
            Err(NameError::TapPrefix {
                name: "eth0".into()
            })
        );
        assert_eq!(
            validate_tap_name("bgt"),
            Err(NameError::TapPrefix { name: "bgt".into() })
        );
        assert_eq!(
            validate_tap_name("banger0"),
            Err(NameError::TapPrefix {
                name: "banger0".into()
            })
        );
    }

    #[test]
    fn uplink_name_rules() {
        for name in ["eth0", "enp0s31f6", "eth0.100", "wlan_1", "Wi-Fi"] {
            assert_eq!(validate_uplink_name(name), Ok(()), "{name:?}");
        }
        for name in [
            "",
            "eth0\"",
            "eth 0",
            "eth0\n",
            "a-very-long-uplink0",
            "eth0;drop",
        ] {
            assert_eq!(
                validate_uplink_name(name),
                Err(NameError::InvalidUplink {
                    name: name.to_owned()
                }),
                "{name:?}"
            );
        }
    }

    #[test]
    fn vm_id_rules() {
        assert_eq!(validate_vm_id("00000000ffff"), Ok(()));
        assert!(validate_vm_id("00000000fff").is_err());
        assert!(validate_vm_id("vm=1 drop").is_err());
    }
}
