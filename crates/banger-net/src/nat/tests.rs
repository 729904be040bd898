use std::net::Ipv4Addr;

use super::*;
use crate::command::CommandOutput;
use crate::command::fake::{FakeRunner, failed};

const VM: &str = "0123456789ab";

fn listing(rules: &[(&str, u64, &str)]) -> Vec<u8> {
    let rules: Vec<String> = rules
        .iter()
        .map(|(chain, handle, comment)| {
            format!(
                r#"{{"rule": {{"family": "inet", "table": "banger", "chain": "{chain}", "handle": {handle}, "comment": "{comment}", "expr": []}}}}"#
            )
        })
        .collect();
    format!(r#"{{"nftables": [{}]}}"#, rules.join(",")).into_bytes()
}

fn runner_listing(rules: &'static [(&'static str, u64, &'static str)]) -> FakeRunner {
    FakeRunner::new(move |spec| {
        if spec.args.first().is_some_and(|arg| arg == "-j") {
            Ok(CommandOutput {
                stdout: listing(rules),
                ..CommandOutput::default()
            })
        } else {
            Ok(CommandOutput::default())
        }
    })
}

#[tokio::test]
async fn enable_runs_base_list_apply_in_order() {
    let runner = runner_listing(&[]);
    let forward = tempfile::NamedTempFile::new().unwrap();
    let nat = Nat::new(&runner, "banger0", Pool::default())
        .unwrap()
        .with_ip_forward_path(forward.path());

    let state = nat
        .enable(VM, Ipv4Addr::new(172, 30, 0, 5), "eth0")
        .await
        .unwrap();
    assert_eq!(state.uplink, "eth0");

    let calls = runner.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].args, ["-f", "-"]);
    assert_eq!(
        calls[0].stdin.as_deref(),
        Some(rules::base_script().as_bytes())
    );
    assert_eq!(calls[1].args, ["-j", "list", "table", "inet", "banger"]);
    let script = String::from_utf8(calls[2].stdin.clone().unwrap()).unwrap();
    assert!(script.contains("comment \"vm=0123456789ab\""), "{script}");
    assert!(calls.iter().all(|call| call.program == NFT));
    assert_eq!(std::fs::read_to_string(forward.path()).unwrap(), "1\n");
}

#[tokio::test]
async fn enable_rejects_bad_arguments_without_commands() {
    let runner = FakeRunner::succeeding();
    let nat = Nat::new(&runner, "banger0", Pool::default()).unwrap();
    let gateway = Ipv4Addr::new(172, 30, 0, 1);
    let outside = Ipv4Addr::new(10, 0, 0, 5);
    let inside = Ipv4Addr::new(172, 30, 0, 5);

    let error = nat.enable(VM, gateway, "eth0").await.unwrap_err();
    assert!(matches!(error, NatError::Pool(_)), "{error}");
    let error = nat.enable(VM, outside, "eth0").await.unwrap_err();
    assert!(matches!(error, NatError::Pool(_)), "{error}");
    let error = nat.enable("vm\"; drop", inside, "eth0").await.unwrap_err();
    assert!(matches!(error, NatError::Name(_)), "{error}");
    let error = nat.enable(VM, inside, "eth0\" drop").await.unwrap_err();
    assert!(matches!(error, NatError::Name(_)), "{error}");
    assert!(runner.calls().is_empty());
}

#[test]
fn new_rejects_foreign_bridge() {
    let runner = FakeRunner::succeeding();
    assert!(matches!(
        Nat::new(&runner, "docker0", Pool::default()),
        Err(NatError::Name(_))
    ));
}

#[tokio::test]
async fn disable_deletes_only_tagged_rules() {
    let runner = runner_listing(&[
        ("forward", 4, "vm=0123456789ab"),
        ("forward", 5, "bridge=banger0"),
        ("postrouting", 6, "vm=0123456789ab"),
        ("postrouting", 7, "vm=ffffffffffff"),
    ]);
    let nat = Nat::new(&runner, "banger0", Pool::default()).unwrap();
    assert_eq!(nat.disable(VM).await.unwrap(), 2);

    let calls = runner.calls();
    assert_eq!(calls.len(), 2);
    let script = String::from_utf8(calls[1].stdin.clone().unwrap()).unwrap();
    assert_eq!(
        script,
        "delete rule inet banger forward handle 4\ndelete rule inet banger postrouting handle 6\n"
    );
}

#[tokio::test]
async fn disable_without_table_is_noop() {
    let runner = FakeRunner::new(|spec| {
        Err(failed(
            spec,
            1,
            "Error: No such file or directory\nlist table inet banger",
        ))
    });
    let nat = Nat::new(&runner, "banger0", Pool::default()).unwrap();
    assert_eq!(nat.disable(VM).await.unwrap(), 0);
    assert_eq!(runner.calls().len(), 1, "only the listing runs");
}

#[tokio::test]
async fn sweep_keeps_listed_vms() {
    let runner = runner_listing(&[
        ("forward", 4, "vm=0123456789ab"),
        ("forward", 5, "bridge=banger0"),
        ("forward", 8, "vm=aaaaaaaaaaaa"),
        ("postrouting", 6, "vm=0123456789ab"),
        ("postrouting", 7, "vm=ffffffffffff"),
    ]);
    let nat = Nat::new(&runner, "banger0", Pool::default()).unwrap();
    let removed = nat.sweep(&[VM.to_owned()]).await.unwrap();
    assert_eq!(removed, ["aaaaaaaaaaaa", "ffffffffffff"]);

    let script = String::from_utf8(runner.calls()[1].stdin.clone().unwrap()).unwrap();
    assert!(script.contains("forward handle 8"), "{script}");
    assert!(script.contains("postrouting handle 7"), "{script}");
    assert!(!script.contains("handle 4"), "{script}");
    assert!(!script.contains("handle 5"), "{script}");
}

#[tokio::test]
async fn nft_failure_names_action_and_command() {
    let runner = FakeRunner::new(|spec| {
        Err(failed(
            spec,
            1,
            "Error: Could not process rule: Operation not permitted",
        ))
    });
    let nat = Nat::new(&runner, "banger0", Pool::default()).unwrap();
    let error = nat
        .enable(VM, Ipv4Addr::new(172, 30, 0, 5), "eth0")
        .await
        .unwrap_err();
    let text = crate::error_chain(&error);
    assert!(
        text.starts_with("creating table inet banger failed: `nft -f -` failed"),
        "{text}"
    );
    assert!(text.contains("Operation not permitted"), "{text}");
}
