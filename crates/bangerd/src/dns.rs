//! The DNS server for `NAME.vm`, on `[network] dns_addr`.

use std::sync::Arc;

use banger_net::dns::DnsServer;

use crate::daemon::Daemon;

/// Binds the DNS server and serves it in a task. A bind failure is logged
/// and the daemon goes on without DNS.
pub async fn start(daemon: &Arc<Daemon>) {
    let addr = daemon.config.network.dns_addr;
    let server = match DnsServer::bind(addr, daemon.net.records.clone()).await {
        Ok(server) => server,
        Err(error) => {
            tracing::warn!(%addr, error = %banger_net::error_chain(&error), "DNS server not started; NAME.vm names will not resolve");
            return;
        }
    };
    let _ = daemon.net.dns_addr.set(server.local_addr());
    tokio::spawn(async move {
        if let Err(error) = server.serve().await {
            tracing::warn!(error = %banger_net::error_chain(&error), "the DNS server stopped");
        }
    });
}
