//! The three processes of the system; each runs until its shutdown token is cancelled.

pub mod frontend;
pub mod ground;
pub mod simulator;

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        token.cancel();
    });
}

pub async fn bind(ip: IpAddr, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::new(ip, port);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} port {addr}"))
}

/// Waits for the first task to fail or for shutdown; a failed task shuts the others down.
pub async fn supervise(
    mut tasks: tokio::task::JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => { outcome = Err(e); break }
                Some(Err(e)) => { outcome = Err(e.into()); break }
            },
        }
    }
    shutdown.cancel();
    // Tasks watch the token; give them a moment to finish what they were doing.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(std::time::Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("tasks still running 10 s after shutdown; abandoning them");
    }
    outcome
}
