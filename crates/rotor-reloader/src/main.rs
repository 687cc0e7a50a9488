//! rotor-reloader: roll exactly the workloads whose secrets rotated, once.

use anyhow::Result;
use clap::Parser;
use rotor_core::contract::{LogFormat, LogLevel, var};
use rotor_reloader::run::RunArgs;

#[derive(Parser)]
#[command(version, about = "rotor's rotation controller")]
struct Args {
    /// Log format: plain or json.
    #[arg(long, env = var::LOG_FORMAT, default_value = "json")]
    log_format: LogFormat,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, env = var::LOG_LEVEL, default_value = "info")]
    log_level: LogLevel,
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
        rotor_core::logging::init_logging(log_format, log_level);
        run.run(rotor_core::shutdown::cancel_on_signal()).await
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    rotor_core::install_crypto_provider();
    Args::parse().run().await
}
