//! What every long-running rotor program does at start: structured logs, and one cancellation
//! token that SIGTERM or SIGINT cancels.

use crate::contract::{LogFormat, LogLevel};

use tokio_util::sync::CancellationToken;

/// Logs to stderr as JSON (`json`) or plain text, at `level` and above.
pub fn init_logging(format: LogFormat, level: LogLevel) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level.to_tracing())
        .with_target(false)
        .with_ansi(false);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

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
