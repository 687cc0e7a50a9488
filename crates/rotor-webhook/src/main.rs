//! rotor-webhook: `serve` runs the admission webhook; `inject` mutates manifests offline.

use anyhow::Result;
use clap::{Parser, Subcommand};
use rotor_webhook::inject_command::InjectArgs;
use rotor_webhook::serve::ServeArgs;

#[derive(Parser)]
#[command(version, about = "rotor's mutating admission webhook")]
struct Args {
    #[command(flatten)]
    log: rotor_runtime::LogArgs,
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
        let Self { log, command } = self;
        log.init();
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
