//! Logging set-up shared by rotor's programs: structured, to stderr, format and level by flag.

use crate::contract::{LogFormat, LogLevel};

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
