//! rotor-reloader: roll exactly the workloads whose secrets rotated, once.

use anyhow::Result;
use clap::Parser;
use rotor_reloader::run::RunArgs;

#[derive(Parser)]
#[command(version, about = "rotor's rotation controller")]
struct Args {
    #[command(flatten)]
    log: rotor_runtime::LogArgs,
    #[command(flatten)]
    run: RunArgs,
}

impl Args {
    async fn run(self) -> Result<()> {
        let Self { log, run } = self;
        log.init();
        run.run(rotor_core::shutdown::cancel_on_signal()).await
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    rotor_core::install_crypto_provider();
    Args::parse().run().await
}
