//! The log flags both servers take (`--log-format`, `--log-level`, with their `ROTOR_*`
//! variables), and starting the logger from them.

use rotor_core::contract::{LogFormat, LogLevel, var};

#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// Log format: plain or json.
    #[arg(long, env = var::LOG_FORMAT, default_value = "json", global = true)]
    pub log_format: LogFormat,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, env = var::LOG_LEVEL, default_value = "info", global = true)]
    pub log_level: LogLevel,
}

impl LogArgs {
    /// Starts the process's logger (once, before anything logs).
    pub fn init(&self) {
        rotor_core::logging::init_logging(self.log_format, self.log_level);
    }
}
