//! cllockd: the cluster lock daemon. It owns the `cllockd` port on every node address now;
//! the named locks with owners and leases arrive with the applications work.

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use tracing::info;

use crate::context::Context;

/// Run cllockd until it is told to stop.
pub async fn run(ctx: Context) -> Result<()> {
    let port = ctx.cluster().ports.cllockd;
    let mut listeners = Vec::new();
    for (network, address) in ctx.local_addresses() {
        let address = SocketAddr::new(address, port);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} ({network})"))?;
        info!(%address, "listening");
        listeners.push(listener);
    }
    for listener in listeners {
        tokio::spawn(async move {
            // Accept and close: no lock requests are served by this version yet.
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::select! {
        _ = terminate.recv() => info!("stopping"),
        // cldaemon starts a fresh cllockd on the new configuration.
        _ = hangup.recv() => info!("configuration changed: exiting to be restarted on it"),
    }
    Ok(())
}
