//! Graceful shutdown for rotor's servers (the webhook and the reloader): one cancellation token
//! that SIGTERM or SIGINT cancels. Behind the `shutdown-signal` feature, so rotor-init, which
//! handles signals itself, builds without it.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT. Needs a running Tokio runtime.
pub fn cancel_on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot listen for SIGTERM/SIGINT; shutdown will not be graceful");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown signal received");
        token.cancel();
    });
    cancel
}
