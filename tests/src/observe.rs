//! Waiting for evidence: a condition polled until it holds, and a metric read from an admin
//! port.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Polls `check` every 200 ms until it holds; fails naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("timed out after {timeout:?} waiting until {what}")
}

/// A metric of the Prometheus text at `admin`/metrics (0 when absent): `name` summed over its
/// labels, or one series when `name` carries them (`refused_total{reason="body_timeout"}`).
pub async fn metric(admin: &str, name: &str) -> Result<f64> {
    let text = reqwest::get(format!("{admin}/metrics"))
        .await?
        .text()
        .await?;
    Ok(sum_of(&text, name))
}

/// [`metric`] over the exposition `text`.
pub fn sum_of(text: &str, name: &str) -> f64 {
    let follows: &[char] = if name.ends_with('}') {
        &[' ']
    } else {
        &['{', ' ']
    };
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(follows))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU time (user + system) of process `pid` so far, in seconds (0 when it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// Peak resident memory (VmHWM) of process `pid`, in KiB (0 when it is gone).
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_metric_is_summed_over_its_labels_or_read_as_one_series() {
        let text = "# HELP x_total X\nx_total{reason=\"a\"} 2\nx_total{reason=\"b\"} 3\nx_totals 9\ny 1.5\n";
        assert_eq!(super::sum_of(text, "x_total"), 5.0);
        assert_eq!(super::sum_of(text, "x_total{reason=\"b\"}"), 3.0);
        assert_eq!(super::sum_of(text, "y"), 1.5);
        assert_eq!(super::sum_of(text, "z"), 0.0);
    }
}
