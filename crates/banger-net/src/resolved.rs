//! Routing of the `vm` DNS domain to banger's DNS server on hosts that run
//! systemd-resolved, through `resolvectl`.
//!
//! The settings are per link: `resolvectl dns BRIDGE 127.0.0.1:PORT` and
//! `resolvectl domain BRIDGE ~vm` send queries for names under `vm` to
//! banger's server, and `resolvectl revert BRIDGE` drops both. resolved
//! drops them too when it restarts or the bridge goes away, so the caller
//! applies them again after ensuring the bridge.

use thiserror::Error;

use crate::command::{self, CommandError, CommandRunner};
use crate::names::{NameError, validate_bridge_name};

/// The systemd-resolved command-line program.
pub const RESOLVECTL: &str = "resolvectl";

/// DNS domain of the VMs; `~` makes it a routing-only domain in resolved.
pub const VM_DOMAIN: &str = "vm";

#[derive(Debug, Error)]
pub enum ResolvedError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("invalid DNS port 0: use the port banger's DNS server listens on")]
    PortZero,
    #[error(
        "{action} on link {link} through systemd-resolved failed; is systemd-resolved running?"
    )]
    Resolvectl {
        action: &'static str,
        link: String,
        #[source]
        source: CommandError,
    },
}

/// Points the `vm` domain at `127.0.0.1:port` on link `bridge`.
pub async fn route_vm_domain(
    runner: &dyn CommandRunner,
    bridge: &str,
    port: u16,
) -> Result<(), ResolvedError> {
    validate_bridge_name(bridge)?;
    if port == 0 {
        return Err(ResolvedError::PortZero);
    }
    let server = format!("127.0.0.1:{port}");
    let routing_domain = format!("~{VM_DOMAIN}");
    run(
        runner,
        "setting the DNS server",
        bridge,
        ["dns", bridge, server.as_str()],
    )
    .await?;
    run(
        runner,
        "setting the routing domain",
        bridge,
        ["domain", bridge, routing_domain.as_str()],
    )
    .await
}

/// Drops the DNS settings of link `bridge`.
pub async fn unroute_vm_domain(
    runner: &dyn CommandRunner,
    bridge: &str,
) -> Result<(), ResolvedError> {
    validate_bridge_name(bridge)?;
    run(
        runner,
        "reverting the DNS settings",
        bridge,
        ["revert", bridge],
    )
    .await
}

async fn run<const N: usize>(
    runner: &dyn CommandRunner,
    action: &'static str,
    link: &str,
    args: [&str; N],
) -> Result<(), ResolvedError> {
    let spec = command::spec(RESOLVECTL, args);
    runner
        .run(&spec)
        .await
        .map(drop)
        .map_err(|source| ResolvedError::Resolvectl {
            action,
            link: link.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandSpec;
    use crate::command::fake::{FakeRunner, failed};

    #[tokio::test]
    async fn route_runs_dns_then_domain() {
        let runner = FakeRunner::succeeding();
        route_vm_domain(&runner, "banger0", 42069).await.unwrap();
        let lines: Vec<String> = runner.calls().iter().map(CommandSpec::describe).collect();
        assert_eq!(
            lines,
            [
                "resolvectl dns banger0 127.0.0.1:42069",
                "resolvectl domain banger0 '~vm'"
            ]
        );
    }

    #[tokio::test]
    async fn unroute_reverts_link() {
        let runner = FakeRunner::succeeding();
        unroute_vm_domain(&runner, "banger0").await.unwrap();
        assert_eq!(runner.calls()[0].describe(), "resolvectl revert banger0");
    }

    #[tokio::test]
    async fn route_rejects_bad_input_without_commands() {
        let runner = FakeRunner::succeeding();
        let error = route_vm_domain(&runner, "eth0", 53).await.unwrap_err();
        assert!(matches!(error, ResolvedError::Name(_)), "{error}");
        let error = route_vm_domain(&runner, "banger0", 0).await.unwrap_err();
        assert!(matches!(error, ResolvedError::PortZero), "{error}");
        assert!(runner.calls().is_empty());
    }

    #[tokio::test]
    async fn failure_names_link_and_action() {
        let runner =
            FakeRunner::new(|spec| Err(failed(spec, 1, "Failed to resolve interface \"banger0\"")));
        let error = route_vm_domain(&runner, "banger0", 42069)
            .await
            .unwrap_err();
        let text = crate::error_chain(&error);
        assert!(
            text.starts_with(
                "setting the DNS server on link banger0 through systemd-resolved failed"
            ),
            "{text}"
        );
        assert!(
            text.contains("`resolvectl dns banger0 127.0.0.1:42069` failed"),
            "{text}"
        );
        assert_eq!(
            runner.calls().len(),
            1,
            "the domain is not set after a failure"
        );
    }
}
