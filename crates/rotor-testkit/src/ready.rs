//! Waiting for a server to answer.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::process::ManagedProcess;

/// How long any one server gets to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Polls `url` until it answers 2xx, failing early (with the log tail) if the process exits.
pub async fn wait_http_ok(
    process: &mut ManagedProcess,
    url: &str,
    client: Option<&reqwest::Client>,
) -> Result<()> {
    let default_client;
    let client = match client {
        Some(c) => c,
        None => {
            default_client = crate::http_client()?;
            &default_client
        }
    };
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    while start.elapsed() < READY_TIMEOUT {
        if let Some(status) = process.exited() {
            bail!(
                "{} exited ({status}) before {url} answered; log tail:\n{}",
                process.log_path().display(),
                process.log_tail(30)
            );
        }
        match client.get(url).timeout(Duration::from_secs(2)).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => last = format!("HTTP {}", resp.status()),
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{url} not ready after {READY_TIMEOUT:?} (last: {last}); log tail of {}:\n{}",
        process.log_path().display(),
        process.log_tail(30)
    )
}
