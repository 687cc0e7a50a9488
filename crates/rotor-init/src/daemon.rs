//! Daemon and signal mode: rotor-init stays as the parent of the app, forwards signals, renews
//! leases, re-renders files on rotation (`rotation.rs`), and stops the app (SIGTERM, then SIGKILL after a grace period) when a lease can no longer be
//! renewed, so the kubelet restarts the container with fresh credentials.

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rotor_core::store::{Lease, StoreClient};
use tokio::signal::unix::{SignalKind, signal};

/// Runs `child` to completion; returns the exit code rotor-init exits with.
pub async fn supervise(
    mut child: tokio::process::Child,
    client: StoreClient,
    leases: Vec<Lease>,
    grace: Duration,
    rotation: Option<crate::rotation::Rotation>,
) -> i32 {
    let Some(pid) = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw)
    else {
        return 1;
    };
    let kinds = [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
        SignalKind::quit(),
        SignalKind::user_defined1(),
        SignalKind::user_defined2(),
        SignalKind::window_change(),
    ];
    let mut streams = Vec::new();
    for kind in kinds {
        match signal(kind) {
            Ok(s) => streams.push((kind, s)),
            Err(e) => tracing::warn!(error = %e, "cannot forward a signal"),
        }
    }
    let (lost_tx, mut lost_rx) = tokio::sync::mpsc::channel::<String>(1);
    for lease in leases.into_iter().filter(|l| !l.duration.is_zero()) {
        tokio::spawn(renew_until_lost(client.clone(), lease, lost_tx.clone()));
    }
    drop(lost_tx);
    let forward = async {
        let mut futures: Vec<_> = streams
            .iter_mut()
            .map(|(kind, s)| Box::pin(async move { s.recv().await.map(|_| *kind) }))
            .collect();
        loop {
            let (got, _, rest) = futures::future::select_all(futures).await;
            if let Some(kind) = got
                && let Ok(sig) = Signal::try_from(kind.as_raw_value())
            {
                tracing::debug!(signal = %sig, "forwarding signal to the app");
                let _ = kill(pid, sig);
            }
            futures = rest;
            if futures.is_empty() {
                std::future::pending::<()>().await;
            }
        }
    };
    let rotations = async {
        match rotation {
            Some(r) => r.run(pid).await,
            None => std::future::pending().await,
        }
    };
    let status = tokio::select! {
        status = child.wait() => status,
        _ = forward => unreachable_status(),
        () = rotations => unreachable_status(),
        Some(reason) = lost_rx.recv() => {
            tracing::warn!(%reason, "a lease can no longer be renewed: stopping the app so it restarts with fresh credentials");
            let _ = kill(pid, Signal::SIGTERM);
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    tracing::warn!(?grace, "the app did not stop within the grace period: SIGKILL");
                    let _ = kill(pid, Signal::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    exit_code_of(status)
}

fn unreachable_status() -> std::io::Result<ExitStatus> {
    Err(std::io::Error::other("signal forwarding ended"))
}

fn exit_code_of(status: std::io::Result<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(e) => {
            tracing::error!(error = %e, "waiting for the app failed");
            1
        }
    }
}

async fn renew_until_lost(
    client: StoreClient,
    lease: Lease,
    lost: tokio::sync::mpsc::Sender<String>,
) {
    let requested = lease.duration;
    let mut remaining = lease.duration;
    loop {
        // Renew at two thirds of what is left.
        tokio::time::sleep(remaining * 2 / 3).await;
        if !lease.renewable {
            let _ = lost
                .send(format!(
                    "lease {} is not renewable and expires",
                    short(&lease.id)
                ))
                .await;
            return;
        }
        match client.renew_lease(&lease.id, requested).await {
            Ok(granted) if granted >= requested => {
                tracing::info!(lease = %short(&lease.id), granted_s = granted.as_secs(), "lease renewed");
                remaining = granted;
            }
            Ok(granted) => {
                // Capped by the lease's max TTL: it ends in `granted`; stop the app before that.
                tracing::info!(lease = %short(&lease.id), ends_in_s = granted.as_secs(), "lease reached its max TTL");
                tokio::time::sleep(granted * 2 / 3).await;
                let _ = lost
                    .send(format!("lease {} reaches its max TTL", short(&lease.id)))
                    .await;
                return;
            }
            Err(e) => {
                let _ = lost
                    .send(format!("renewing lease {}: {e}", short(&lease.id)))
                    .await;
                return;
            }
        }
    }
}

/// Lease ids name the path (`database/creds/app/AbC...`); the random tail is not secret but is
/// long, so logs show the path part.
fn short(id: &str) -> &str {
    id.rsplit_once('/').map_or(id, |(path, _)| path)
}
