//! rotor-webhook: `serve` runs the admission webhook; `inject` mutates manifests offline.

use anyhow::Result;
use clap::{Parser, Subcommand};
use rotor_webhook::inject_command::InjectArgs;
use rotor_webhook::serve::ServeArgs;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "rotor's mutating admission webhook")]
struct Args {
    /// Log format: plain or json.
    #[arg(long, env = "ROTOR_LOG_FORMAT", default_value = "json", global = true)]
    log_format: String,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, env = "ROTOR_LOG_LEVEL", default_value = "info", global = true)]
    log_level: tracing::Level,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admission webhook over HTTPS.
    Serve(ServeArgs),
    /// Print manifests with rotor injected (Pods and workload pod templates).
    Inject(InjectArgs),
}

impl Args {
    async fn run(self) -> Result<()> {
        let Self {
            log_format,
            log_level,
            command,
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
        match command {
            Command::Serve(args) => {
                let cancel = CancellationToken::new();
                tokio::spawn(cancel_on_signal(cancel.clone()));
                args.run(cancel).await
            }
            Command::Inject(args) => args.run(),
        }
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
