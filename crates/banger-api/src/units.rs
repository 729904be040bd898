//! The systemd units that `banger system install` writes, and the settings
//! each must keep so that restarting a unit leaves VMs running and the
//! services stay confined. The CLI writes the units; the daemon's doctor
//! reads them back.

/// Unit of the root helper.
pub const ROOT_UNIT: &str = "banger-root.service";
/// Unit of the daemon.
pub const DAEMON_UNIT: &str = "bangerd.service";
/// Directory of the units, relative to the file system root.
pub const UNIT_DIR: &str = "etc/systemd/system";

/// `key=value` settings of the `[Service]` section that both units need.
const COMMON_SETTINGS: &[(&str, &str)] = &[
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    // Stopping a unit ends its main process only; VMMs live on.
    ("KillMode", "process"),
];

/// Returns the `[Service]` settings that `unit` needs.
pub fn required_settings(unit: &str) -> Vec<(&'static str, &'static str)> {
    let mut settings = COMMON_SETTINGS.to_vec();
    if unit == ROOT_UNIT {
        // systemd sends the helper no SIGKILL, so a request in progress is
        // not cut off.
        settings.push(("SendSIGKILL", "no"));
    }
    settings
}

/// Returns the required settings that the unit file text lacks or sets to
/// another value, as `Key=value` strings. A later assignment of a key
/// overrides an earlier one, as in systemd.
pub fn missing_settings(unit: &str, text: &str) -> Vec<String> {
    let mut section = "";
    let mut values: Vec<(&str, &str)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            section = line;
            continue;
        }
        if section != "[Service]" || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            values.push((key.trim(), value.trim()));
        }
    }
    required_settings(unit)
        .into_iter()
        .filter(|(key, value)| {
            values.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v) != Some(*value)
        })
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_HELPER: &str = "[Unit]\nDescription=x\n\n[Service]\nExecStart=/bin/true\nNoNewPrivileges=yes\nProtectSystem=strict\nRestrictSUIDSGID=yes\nLockPersonality=yes\nKillMode=process\nSendSIGKILL=no\n";

    #[test]
    fn complete_unit_misses_nothing() {
        assert!(missing_settings(ROOT_UNIT, GOOD_HELPER).is_empty());
    }

    #[test]
    fn helper_needs_sendsigkill_and_daemon_does_not() {
        let text = GOOD_HELPER.replace("SendSIGKILL=no\n", "");
        assert_eq!(missing_settings(ROOT_UNIT, &text), ["SendSIGKILL=no"]);
        assert!(missing_settings(DAEMON_UNIT, &text).is_empty());
    }

    #[test]
    fn later_assignment_wins() {
        let text = format!("{GOOD_HELPER}KillMode=control-group\n");
        assert_eq!(missing_settings(ROOT_UNIT, &text), ["KillMode=process"]);
    }

    #[test]
    fn settings_outside_service_do_not_count() {
        let text = GOOD_HELPER
            .replace("KillMode=process\n", "")
            .replace("[Unit]\n", "[Unit]\nKillMode=process\n");
        assert_eq!(missing_settings(ROOT_UNIT, &text), ["KillMode=process"]);
        let commented = GOOD_HELPER.replace("LockPersonality=yes", "# LockPersonality=yes");
        assert_eq!(
            missing_settings(ROOT_UNIT, &commented),
            ["LockPersonality=yes"]
        );
    }
}
