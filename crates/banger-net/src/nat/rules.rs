//! nftables scripts for banger's table and the parsing of `nft -j` output.
//! Everything here is pure: it builds text and reads JSON.
//!
//! The table `inet banger` has two base chains:
//!
//! - `forward` (filter hook, policy accept): per VM, an accept rule for
//!   packets from the VM's address on the bridge to the uplink, and one drop
//!   rule for any other packet routed from the bridge to another interface.
//!   The accept rules are inserted at the head, so they come first.
//! - `postrouting` (nat hook): per VM, a masquerade rule for packets from
//!   the VM's address leaving through the uplink.
//!
//! Every VM rule carries the comment `vm=<id>`; the drop rule carries
//! `bridge=<name>`. Removal goes by those comments and the rule handles
//! that `nft -j list table` reports.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde_json::Value;

/// nftables family of banger's table.
pub const TABLE_FAMILY: &str = "inet";

/// Name of banger's table.
pub const TABLE_NAME: &str = "banger";

/// Chain with the forward rules.
pub const FORWARD_CHAIN: &str = "forward";

/// Chain with the masquerade rules.
pub const POSTROUTING_CHAIN: &str = "postrouting";

/// One rule of banger's table as `nft -j list table` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEntry {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

impl RuleEntry {
    /// Returns the VM id of a rule tagged `vm=<id>`.
    pub fn vm_id(&self) -> Option<&str> {
        self.comment.as_deref()?.strip_prefix("vm=")
    }
}

/// Returns the comment that tags a VM's rules.
pub fn vm_comment(vm_id: &str) -> String {
    format!("vm={vm_id}")
}

/// Returns the comment of the bridge's drop rule.
pub fn bridge_comment(bridge: &str) -> String {
    format!("bridge={bridge}")
}

/// Script that creates the table and its base chains unless they exist.
/// nftables treats a table block in a script as `add`, which leaves
/// existing rules alone.
pub fn base_script() -> String {
    format!(
        "table {TABLE_FAMILY} {TABLE_NAME} {{\n\
         \tchain {FORWARD_CHAIN} {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t}}\n\
         \tchain {POSTROUTING_CHAIN} {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t}}\n\
         }}\n"
    )
}

/// Names and addresses of one VM's NAT rules. The names must have passed
/// [`crate::names`] validation, which keeps quotes and whitespace out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRule<'a> {
    pub vm_id: &'a str,
    pub address: Ipv4Addr,
    pub bridge: &'a str,
    pub uplink: &'a str,
}

/// Script that replaces the VM's rules in one transaction: it deletes the
/// `existing` rules tagged with the VM's id, inserts the new ones and adds
/// the bridge's drop rule when `existing` has none.
pub fn enable_script(existing: &[RuleEntry], rule: &VmRule<'_>) -> String {
    let comment = vm_comment(rule.vm_id);
    let stale: Vec<&RuleEntry> = existing
        .iter()
        .filter(|entry| entry.comment.as_deref() == Some(comment.as_str()))
        .collect();
    let mut script = delete_script(&stale);

    let VmRule {
        address,
        bridge,
        uplink,
        ..
    } = rule;
    let _ = writeln!(
        script,
        "insert rule {TABLE_FAMILY} {TABLE_NAME} {FORWARD_CHAIN} \
         iifname \"{bridge}\" oifname \"{uplink}\" ip saddr {address} accept comment \"{comment}\""
    );
    let _ = writeln!(
        script,
        "add rule {TABLE_FAMILY} {TABLE_NAME} {POSTROUTING_CHAIN} \
         oifname \"{uplink}\" ip saddr {address} masquerade comment \"{comment}\""
    );

    let drop_comment = bridge_comment(bridge);
    let has_drop = existing.iter().any(|entry| {
        entry.chain == FORWARD_CHAIN && entry.comment.as_deref() == Some(drop_comment.as_str())
    });
    if !has_drop {
        let _ = writeln!(
            script,
            "add rule {TABLE_FAMILY} {TABLE_NAME} {FORWARD_CHAIN} \
             iifname \"{bridge}\" oifname != \"{bridge}\" drop comment \"{drop_comment}\""
        );
    }
    script
}

/// Script that deletes the given rules by handle.
pub fn delete_script(entries: &[&RuleEntry]) -> String {
    let mut script = String::new();
    for entry in entries {
        let _ = writeln!(
            script,
            "delete rule {TABLE_FAMILY} {TABLE_NAME} {} handle {}",
            entry.chain, entry.handle
        );
    }
    script
}

/// Reads the rules of banger's table from the output of
/// `nft -j list table inet banger`. Objects other than rules, and rules of
/// other tables, are skipped.
pub fn parse_rules(json: &[u8]) -> Result<Vec<RuleEntry>, serde_json::Error> {
    let document: Value = serde_json::from_slice(json)?;
    let objects = document
        .get("nftables")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut rules = Vec::new();
    for object in objects {
        let Some(rule) = object.get("rule") else {
            continue;
        };
        let field = |name: &str| rule.get(name).and_then(Value::as_str);
        if field("family") != Some(TABLE_FAMILY) || field("table") != Some(TABLE_NAME) {
            continue;
        }
        let (Some(chain), Some(handle)) =
            (field("chain"), rule.get("handle").and_then(Value::as_u64))
        else {
            continue;
        };
        rules.push(RuleEntry {
            chain: chain.to_owned(),
            handle,
            comment: field("comment").map(str::to_owned),
        });
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(chain: &str, handle: u64, comment: Option<&str>) -> RuleEntry {
        RuleEntry {
            chain: chain.to_owned(),
            handle,
            comment: comment.map(str::to_owned),
        }
    }

    const RULE: VmRule<'static> = VmRule {
        vm_id: "0123456789ab",
        address: Ipv4Addr::new(172, 30, 0, 5),
        bridge: "banger0",
        uplink: "eth0",
    };

    #[test]
    fn enable_script_for_empty_table() {
        assert_eq!(
            enable_script(&[], &RULE),
            "insert rule inet banger forward iifname \"banger0\" oifname \"eth0\" ip saddr 172.30.0.5 accept comment \"vm=0123456789ab\"\n\
             add rule inet banger postrouting oifname \"eth0\" ip saddr 172.30.0.5 masquerade comment \"vm=0123456789ab\"\n\
             add rule inet banger forward iifname \"banger0\" oifname != \"banger0\" drop comment \"bridge=banger0\"\n"
        );
    }

    #[test]
    fn enable_script_replaces_old_rules_only() {
        let existing = [
            entry("forward", 4, Some("vm=0123456789ab")),
            entry("forward", 5, Some("bridge=banger0")),
            entry("forward", 6, Some("vm=ffffffffffff")),
            entry("postrouting", 7, Some("vm=0123456789ab")),
            entry("postrouting", 8, None),
        ];
        let script = enable_script(&existing, &RULE);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "delete rule inet banger forward handle 4");
        assert_eq!(lines[1], "delete rule inet banger postrouting handle 7");
        assert_eq!(lines.len(), 4, "{script}");
        assert!(!script.contains("handle 6"));
        assert!(!script.contains("handle 8"));
        assert!(!script.contains("drop"), "the drop rule exists already");
    }

    #[test]
    fn parse_rules_reads_nft_json() {
        let json = br#"{"nftables": [
            {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
            {"table": {"family": "inet", "name": "banger", "handle": 1}},
            {"chain": {"family": "inet", "table": "banger", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
            {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 4, "comment": "vm=0123456789ab", "expr": []}},
            {"rule": {"family": "inet", "table": "banger", "chain": "postrouting", "handle": 5, "expr": []}},
            {"rule": {"family": "ip", "table": "nat", "chain": "postrouting", "handle": 9, "comment": "vm=0123456789ab", "expr": []}}
        ]}"#;
        let rules = parse_rules(json).unwrap();
        assert_eq!(
            rules,
            vec![
                entry("forward", 4, Some("vm=0123456789ab")),
                entry("postrouting", 5, None),
            ]
        );
        assert_eq!(rules[0].vm_id(), Some("0123456789ab"));
        assert_eq!(rules[1].vm_id(), None);
    }

    #[test]
    fn parse_rules_rejects_malformed_json() {
        assert!(parse_rules(b"{\"nftables\": [").is_err());
        assert_eq!(parse_rules(b"{}").unwrap(), vec![]);
    }

    #[test]
    fn base_script_declares_both_chains() {
        let script = base_script();
        assert!(script.starts_with("table inet banger {\n"));
        assert!(script.contains("type filter hook forward priority filter; policy accept;"));
        assert!(script.contains("type nat hook postrouting priority srcnat; policy accept;"));
    }
}
