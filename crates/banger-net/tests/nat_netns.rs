//! NAT rules in the table `inet banger`, applied with the real `nft` inside
//! a test network namespace. One peer namespace plays the upstream network
//! and another a guest. Traffic goes only between these namespaces.
//!
//! ```text
//!  guest ns                 test ns (host stand-in)              upstream ns
//!  eth0 172.30.0.5/24 -- vmeth0 [banger0 172.30.0.1/24]
//!                           up0 198.51.100.1/24 ------------- wan0 198.51.100.2/24
//! ```

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use banger_net::command::SystemRunner;
use banger_net::link::Netlink;
use banger_net::nat::{Nat, rules};
use banger_net::pool::Pool;
use common::{block_on, in_namespace_thread, ns_run_ok, run_isolated, run_ok};

const VM_A: &str = "0123456789ab";
const VM_B: &str = "ba9876543210";
const VM_C: &str = "cccccccccccc";
const GUEST_ADDRESS: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 5);
const UPLINK_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const UPSTREAM_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const UPSTREAM_PORT: u16 = 9999;

/// Connects the upstream and guest namespaces to this one and creates the
/// bridge.
async fn build_topology(upstream: &str, guest: &str) {
    run_ok("ip", &["link", "set", "lo", "up"]);
    run_ok(
        "ip",
        &[
            "link", "add", "up0", "type", "veth", "peer", "name", "wan0", "netns", upstream,
        ],
    );
    run_ok("ip", &["addr", "add", "198.51.100.1/24", "dev", "up0"]);
    run_ok("ip", &["link", "set", "up0", "up"]);
    run_ok(
        "ip",
        &[
            "route",
            "add",
            "default",
            "via",
            "198.51.100.2",
            "dev",
            "up0",
        ],
    );
    ns_run_ok(
        upstream,
        "ip",
        &["addr", "add", "198.51.100.2/24", "dev", "wan0"],
    );
    ns_run_ok(upstream, "ip", &["link", "set", "wan0", "up"]);
    ns_run_ok(upstream, "ip", &["link", "set", "lo", "up"]);

    let netlink = Netlink::connect().unwrap();
    netlink
        .ensure_bridge("banger0", &Pool::default())
        .await
        .unwrap();
    // A veth in a namespace plays the VM, because a tap has no carrier
    // until a VMM attaches to it.
    run_ok(
        "ip",
        &[
            "link", "add", "vmeth0", "type", "veth", "peer", "name", "eth0", "netns", guest,
        ],
    );
    run_ok("ip", &["link", "set", "vmeth0", "master", "banger0", "up"]);
    ns_run_ok(
        guest,
        "ip",
        &["addr", "add", "172.30.0.5/24", "dev", "eth0"],
    );
    ns_run_ok(guest, "ip", &["link", "set", "eth0", "up"]);
    ns_run_ok(guest, "ip", &["link", "set", "lo", "up"]);
    ns_run_ok(
        guest,
        "ip",
        &["route", "add", "default", "via", "172.30.0.1"],
    );
}

/// Sends one datagram from the guest to the upstream namespace, which
/// echoes it. Returns the source address upstream saw, or `None` when
/// nothing arrived, and whether the echo made it back to the guest.
fn probe(upstream: &str, guest: &str) -> (Option<SocketAddr>, bool) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let listener = in_namespace_thread(upstream, move || {
        let socket = UdpSocket::bind((UPSTREAM_ADDRESS, UPSTREAM_PORT)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buffer = [0u8; 64];
        let (len, peer) = socket.recv_from(&mut buffer).ok()?;
        socket.send_to(&buffer[..len], peer).unwrap();
        Some(peer)
    });
    ready_rx.recv().unwrap();
    let sender = in_namespace_thread(guest, move || {
        let socket = UdpSocket::bind((GUEST_ADDRESS, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        socket
            .send_to(b"banger", (UPSTREAM_ADDRESS, UPSTREAM_PORT))
            .unwrap();
        let mut buffer = [0u8; 64];
        matches!(socket.recv_from(&mut buffer), Ok((6, _)))
    });
    (listener.join().unwrap(), sender.join().unwrap())
}

fn tagged(rules: &[rules::RuleEntry], vm_id: &str) -> Vec<String> {
    let mut chains: Vec<String> = rules
        .iter()
        .filter(|rule| rule.vm_id() == Some(vm_id))
        .map(|rule| rule.chain.clone())
        .collect();
    chains.sort();
    chains
}

fn read_ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn nat_rules_in_netns() {
    run_isolated("nat_rules_in_netns", 2, |scenario| {
        let upstream = scenario.peers[0].clone();
        let guest = scenario.peers[1].clone();
        block_on(async {
            build_topology(&upstream, &guest).await;
            // Another table, with a comment that looks like banger's.
            run_ok("nft", &["add", "table", "ip", "other"]);
            run_ok(
                "nft",
                &[
                    "add",
                    "chain",
                    "ip",
                    "other",
                    "input",
                    "{ type filter hook input priority 0; }",
                ],
            );
            run_ok(
                "nft",
                &[
                    "add",
                    "rule",
                    "ip",
                    "other",
                    "input",
                    "counter",
                    "comment",
                    "\"vm=cccccccccccc\"",
                ],
            );
            let other_before = run_ok("nft", &["-j", "list", "table", "ip", "other"]).stdout;

            assert_eq!(read_ip_forward(), "0");
            assert_eq!(
                probe(&upstream, &guest),
                (None, false),
                "no forwarding before NAT"
            );

            let runner = SystemRunner;
            let nat = Nat::new(&runner, "banger0", Pool::default()).unwrap();
            let uplink = Netlink::connect()
                .unwrap()
                .default_route_interface()
                .await
                .unwrap();
            assert_eq!(uplink, "up0");

            let state = nat.enable(VM_A, GUEST_ADDRESS, &uplink).await.unwrap();
            assert_eq!(state.address, GUEST_ADDRESS);
            assert_eq!(read_ip_forward(), "1");
            let listed = nat.list().await.unwrap();
            assert_eq!(tagged(&listed, VM_A), ["forward", "postrouting"]);
            assert_eq!(
                listed.len(),
                3,
                "two VM rules and the bridge's drop rule: {listed:?}"
            );
            let text =
                String::from_utf8(run_ok("nft", &["list", "table", "inet", "banger"]).stdout)
                    .unwrap();
            assert!(
                text.contains(
                    "oifname \"up0\" ip saddr 172.30.0.5 masquerade comment \"vm=0123456789ab\""
                ),
                "{text}"
            );
            assert!(
                text.contains(
                    "iifname \"banger0\" oifname != \"banger0\" drop comment \"bridge=banger0\""
                ),
                "{text}"
            );

            let (seen, echoed) = probe(&upstream, &guest);
            assert_eq!(
                seen.map(|peer| peer.ip()),
                Some(UPLINK_ADDRESS.into()),
                "upstream sees the uplink address"
            );
            assert!(echoed, "the reply reaches the guest");

            nat.enable(VM_A, GUEST_ADDRESS, &uplink).await.unwrap();
            let listed = nat.list().await.unwrap();
            assert_eq!(
                tagged(&listed, VM_A),
                ["forward", "postrouting"],
                "enabling twice keeps one set"
            );
            assert_eq!(listed.len(), 3);

            nat.enable(VM_B, Ipv4Addr::new(172, 30, 0, 6), &uplink)
                .await
                .unwrap();
            assert_eq!(nat.disable(VM_A).await.unwrap(), 2);
            let listed = nat.list().await.unwrap();
            assert!(tagged(&listed, VM_A).is_empty());
            assert_eq!(tagged(&listed, VM_B), ["forward", "postrouting"]);
            assert_eq!(
                probe(&upstream, &guest),
                (None, false),
                "the drop rule stops the disabled VM"
            );
            assert_eq!(
                nat.disable(VM_A).await.unwrap(),
                0,
                "disabling twice finds nothing"
            );

            nat.enable(VM_C, Ipv4Addr::new(172, 30, 0, 7), &uplink)
                .await
                .unwrap();
            let removed = nat.sweep(&[VM_B.to_owned()]).await.unwrap();
            assert_eq!(removed, [VM_C]);
            let listed = nat.list().await.unwrap();
            assert_eq!(tagged(&listed, VM_B), ["forward", "postrouting"]);
            assert!(tagged(&listed, VM_C).is_empty());
            assert_eq!(nat.sweep(&[]).await.unwrap(), [VM_B]);
            let listed = nat.list().await.unwrap();
            assert_eq!(listed.len(), 1, "only the drop rule is left: {listed:?}");
            assert_eq!(listed[0].comment.as_deref(), Some("bridge=banger0"));

            let other_after = run_ok("nft", &["-j", "list", "table", "ip", "other"]).stdout;
            assert_eq!(other_after, other_before, "the other table is untouched");
        });
    });
}

#[test]
fn nat_without_table_in_netns() {
    run_isolated("nat_without_table_in_netns", 0, |_| {
        block_on(async {
            let runner = SystemRunner;
            let nat = Nat::new(&runner, "banger0", Pool::default()).unwrap();
            assert!(nat.list().await.unwrap().is_empty());
            assert_eq!(nat.disable(VM_A).await.unwrap(), 0);
            assert!(nat.sweep(&[]).await.unwrap().is_empty());
            let tables = run_ok("nft", &["list", "tables"]).stdout;
            assert!(
                tables.is_empty(),
                "nothing was created: {}",
                String::from_utf8_lossy(&tables)
            );
        });
    });
}
