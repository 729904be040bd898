//! Bridge and tap devices, created through netlink inside a test network
//! namespace.

mod common;

use std::path::Path;
use std::process::Command;

use banger_net::link::{LinkError, Netlink};
use banger_net::names::tap_name;
use banger_net::pool::Pool;
use common::{block_on, run_isolated, run_ok};

const OWNER: u32 = 4242;

fn sys(tap: &str, attribute: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{tap}/{attribute}"))
        .unwrap_or_else(|e| panic!("reading {attribute} of {tap}: {e}"))
        .trim()
        .to_owned()
}

/// Reads the device's `IFF_*` flags.
fn flags(link: &str) -> u32 {
    u32::from_str_radix(sys(link, "flags").trim_start_matches("0x"), 16).unwrap()
}

fn master_of(tap: &str) -> String {
    let target = std::fs::read_link(format!("/sys/class/net/{tap}/master")).unwrap();
    target.file_name().unwrap().to_string_lossy().into_owned()
}

fn link_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn bridge_and_taps_in_netns() {
    run_isolated("bridge_and_taps_in_netns", 0, |_| {
        block_on(async {
            let netlink = Netlink::connect().unwrap();
            let pool = Pool::default();

            let first = netlink.ensure_bridge("banger0", &pool).await.unwrap();
            assert!(first.created);
            assert_eq!(first.address.to_string(), "172.30.0.1");
            assert_eq!(first.prefix_len, 24);
            let again = netlink.ensure_bridge("banger0", &pool).await.unwrap();
            assert!(!again.created, "the second call finds the bridge");
            assert_eq!(again.index, first.index);
            let addresses = run_ok("ip", &["-4", "-o", "addr", "show", "dev", "banger0"]);
            let addresses = String::from_utf8_lossy(&addresses.stdout).into_owned();
            assert_eq!(addresses.matches("inet ").count(), 1, "{addresses}");
            assert!(addresses.contains("inet 172.30.0.1/24"), "{addresses}");
            assert_eq!(flags("banger0") & 1, 1, "banger0 is up");

            let taps = [
                tap_name("0123456789ab").unwrap(),
                tap_name("ba9876543210").unwrap(),
            ];
            for tap in &taps {
                let state = netlink.create_tap(tap, OWNER, "banger0").await.unwrap();
                assert!(state.created);
                assert_eq!(state.owner_uid, OWNER);
            }
            for tap in &taps {
                assert_eq!(sys(tap, "owner"), OWNER.to_string());
                assert_eq!(master_of(tap), "banger0");
                assert_eq!(flags(tap) & 1, 1, "{tap} is up");
                // IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_PERSIST
                assert_eq!(sys(tap, "tun_flags"), "0x5802");
            }
            let mut ports = netlink.bridge_ports(first.index).await.unwrap();
            ports.sort();
            assert_eq!(ports, taps);

            let repeated = netlink
                .create_tap(&taps[0], OWNER, "banger0")
                .await
                .unwrap();
            assert!(!repeated.created, "creating an existing tap again succeeds");
            assert_eq!(sys(&taps[0], "owner"), OWNER.to_string());

            qemu_attaches_as_owner_only(&taps[0]);

            for tap in &taps {
                assert!(netlink.delete_tap(tap).await.unwrap());
                assert!(
                    !netlink.delete_tap(tap).await.unwrap(),
                    "a second delete finds nothing"
                );
                assert!(!Path::new("/sys/class/net").join(tap).exists());
            }
            assert!(netlink.bridge_ports(first.index).await.unwrap().is_empty());
            assert_eq!(
                link_names(),
                ["banger0", "lo"],
                "nothing but the bridge is left"
            );
        });
    });
}

#[test]
fn wrong_device_kinds_in_netns() {
    run_isolated("wrong_device_kinds_in_netns", 0, |_| {
        block_on(async {
            let netlink = Netlink::connect().unwrap();
            run_ok(
                "ip",
                &[
                    "link",
                    "add",
                    "bgt-veth",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "banger-peer",
                ],
            );

            let error = netlink
                .ensure_bridge("banger-peer", &Pool::default())
                .await
                .unwrap_err();
            assert!(matches!(error, LinkError::NotABridge { .. }), "{error}");
            assert_eq!(
                error.to_string(),
                "link banger-peer exists but is a veth device, not a bridge; delete it or configure another bridge name"
            );

            let error = netlink.delete_tap("bgt-veth").await.unwrap_err();
            assert!(matches!(error, LinkError::NotATap { .. }), "{error}");
            assert!(
                Path::new("/sys/class/net/bgt-veth").exists(),
                "the veth is left alone"
            );

            let error = netlink
                .create_tap("bgt-veth", OWNER, "banger-peer")
                .await
                .unwrap_err();
            assert!(matches!(error, LinkError::NotABridge { .. }), "{error}");

            let error = netlink
                .create_tap("bgt1", OWNER, "banger9")
                .await
                .unwrap_err();
            assert_eq!(
                error.to_string(),
                "bridge banger9 not found; ensure the bridge before creating taps"
            );
            assert!(
                !Path::new("/sys/class/net/bgt1").exists(),
                "no tap without a bridge"
            );

            netlink
                .ensure_bridge("banger0", &Pool::default())
                .await
                .unwrap();
            let error = netlink
                .create_tap("bgt-veth", OWNER, "banger0")
                .await
                .unwrap_err();
            assert!(matches!(error, LinkError::NotATap { .. }), "{error}");

            let error = netlink
                .create_tap("eth0", OWNER, "banger0")
                .await
                .unwrap_err();
            assert!(matches!(error, LinkError::Name(_)), "{error}");
            let error = netlink
                .ensure_bridge("br0", &Pool::default())
                .await
                .unwrap_err();
            assert!(matches!(error, LinkError::Name(_)), "{error}");
        });
    });
}

#[test]
fn default_route_interface_in_netns() {
    run_isolated("default_route_interface_in_netns", 0, |_| {
        block_on(async {
            let netlink = Netlink::connect().unwrap();
            let error = netlink.default_route_interface().await.unwrap_err();
            assert!(matches!(error, LinkError::NoDefaultRoute), "{error}");

            run_ok(
                "ip",
                &["link", "add", "up0", "type", "veth", "peer", "name", "up1"],
            );
            run_ok(
                "ip",
                &["link", "add", "up2", "type", "veth", "peer", "name", "up3"],
            );
            for (link, address) in [("up0", "192.0.2.1/24"), ("up2", "198.51.100.1/24")] {
                run_ok("ip", &["addr", "add", address, "dev", link]);
                run_ok("ip", &["link", "set", link, "up"]);
            }
            run_ok(
                "ip",
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    "192.0.2.2",
                    "dev",
                    "up0",
                    "metric",
                    "200",
                ],
            );
            run_ok(
                "ip",
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    "198.51.100.2",
                    "dev",
                    "up2",
                    "metric",
                    "100",
                ],
            );
            assert_eq!(
                netlink.default_route_interface().await.unwrap(),
                "up2",
                "the lower metric wins"
            );
        });
    });
}

/// Starts QEMU with `-netdev tap,ifname=TAP` as the tap's owner (it must
/// attach) and as another uid (it must not). /dev/net/tun may be 0600 on
/// the host, so QEMU runs in a private mount namespace where a 0666 copy
/// of the device node is mounted over it.
fn qemu_attaches_as_owner_only(tap: &str) {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        banger_test_support::skip_check(
            "the QEMU attach check",
            "qemu-system-x86_64 is not installed",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("tun");
    let script = format!(
        "mknod -m 0666 {node} c 10 200 && mount --bind {node} /dev/net/tun && \
         for uid in {OWNER} {other}; do \
           timeout 3 setpriv --reuid $uid --regid $uid --clear-groups \
             qemu-system-x86_64 -M none -nodefaults -display none -S \
             -netdev tap,id=n0,ifname={tap},script=no,downscript=no; \
           echo \"uid $uid status $?\"; \
         done",
        node = node.display(),
        other = OWNER + 1,
    );
    let output = run_ok(
        "unshare",
        &["--mount", "--propagation", "private", "sh", "-c", &script],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // timeout's status 124: QEMU attached and ran until it was stopped.
    assert!(
        stdout.contains(&format!("uid {OWNER} status 124")),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!("uid {} status 1", OWNER + 1)),
        "{stdout}{stderr}"
    );
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
}
