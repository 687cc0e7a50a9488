//! rotor-webhook: `serve` runs the admission webhook; `inject` mutates manifests offline.

use anyhow::Result;
use clap::{Parser, Subcommand};
use rotor_core::contract::{LogFormat, LogLevel, var};
use rotor_webhook::inject_command::InjectArgs;
use rotor_webhook::serve::ServeArgs;

#[derive(Parser)]
#[command(version, about = "rotor's mutating admission webhook")]
struct Args {
    /// Log format: plain or json.
    #[arg(long, env = var::LOG_FORMAT, default_value = "json", global = true)]
    log_format: LogFormat,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, env = var::LOG_LEVEL, default_value = "info", global = true)]
    log_level: LogLevel,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admission webhook over HTTPS.
    Serve(Box<ServeArgs>),
    /// Print manifests with rotor injected (Pods and workload pod templates).
    Inject(Box<InjectArgs>),
}

impl Args {
    async fn run(self) -> Result<()> {
        let Self {
            log_format,
            log_level,
            command,
        } = self;
        rotor_core::logging::init_logging(log_format, log_level);
        match command {
            Command::Serve(args) => args.run(rotor_core::shutdown::cancel_on_signal()).await,
            Command::Inject(args) => args.run(),
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    rotor_core::install_crypto_provider();
    Args::parse().run().await
}
