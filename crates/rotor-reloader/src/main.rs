//! rotor-reloader: roll exactly the workloads whose secrets rotated, once.

use anyhow::Result;
use clap::Parser;
use rotor_reloader::run::RunArgs;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "rotor's rotation controller")]
struct Args {
    /// Log format: plain or json.
    #[arg(long, env = "ROTOR_LOG_FORMAT", default_value = "json")]
    log_format: String,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, env = "ROTOR_LOG_LEVEL", default_value = "info")]
    log_level: tracing::Level,
    #[command(flatten)]
    run: RunArgs,
}

impl Args {
    async fn run(self) -> Result<()> {
        let Self {
            log_format,
            log_level,
            run,
        } = self;
        let builder = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(log_level)
            .with_ansi(false);
        if log_format == "json" {
            builder.json().init();
        } else {
            builder.init();
        }
        let cancel = CancellationToken::new();
        tokio::spawn(cancel_on_signal(cancel.clone()));
        run.run(cancel).await
    }
}

async fn cancel_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutdown signal received");
    cancel.cancel();
}

#[tokio::main]
async fn main() -> Result<()> {
    rotor_core::install_crypto_provider();
    Args::parse().run().await
}
