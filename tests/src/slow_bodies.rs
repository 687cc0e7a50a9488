//! Clients that hold the webhook's HTTPS port with slow request bodies, and a legitimate client
//! that measures review latency meanwhile (the e2e test and the `admission_under_attack` bench).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What one attacking connection does after declaring a body of the largest size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Sends one byte a second (the attack the in-flight budget fell to when it was reserved
    /// from the declared length).
    Trickle,
    /// Sends all but the last byte at once and stalls.
    FillAndStall,
    /// Completes the TLS handshake and sends nothing.
    Idle,
    /// Completes the TLS handshake, sends the HTTP/2 preface and nothing more.
    Http2Preface,
}

/// The declared length of every attacking body: the API server's own limit on a request.
pub const DECLARED: usize = 3 * 1024 * 1024;

/// Attacking connections, reconnecting whenever the server cuts one, until dropped.
pub struct Attackers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Attackers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The loopback address attacker `i` connects from: one address for all (`shared`), or one
/// each (127.0.1.x; the legitimate client uses 127.0.0.1).
pub fn attacker_source(i: usize, shared: bool) -> IpAddr {
    if shared {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))
    } else {
        let i = u8::try_from(i % 250).unwrap_or(0);
        IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + i))
    }
}

/// Starts `count` attackers of one `shape` against `port`.
pub fn attack(port: u16, ca_pem: &str, count: usize, shape: Attack, shared: bool) -> Attackers {
    let tasks = (0..count)
        .map(|i| {
            let (ca, source) = (ca_pem.to_string(), attacker_source(i, shared));
            tokio::spawn(async move {
                loop {
                    // An error (reset, refused at the connection limit) is a cut: reconnect.
                    let _ = one_attack(port, &ca, source, shape).await;
                    // Connections that hold a slot without a request come back at once in
                    // numbers; 4 a second each keeps the pressure without the test's own
                    // reconnect storm taking both cores.
                    let pause = match shape {
                        Attack::Idle | Attack::Http2Preface => 250,
                        Attack::Trickle | Attack::FillAndStall => 50,
                    };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            })
        })
        .collect();
    Attackers { tasks }
}

/// One connection's attack, until the server answers or closes it.
async fn one_attack(port: u16, ca: &str, source: IpAddr, shape: Attack) -> Result<()> {
    let tls = crate::fixtures::connect_tls_from(source, port, ca).await?;
    let (mut reader, mut writer) = tokio::io::split(tls);
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {DECLARED}\r\n\r\n"
    );
    let sender = tokio::spawn(async move {
        match shape {
            Attack::Idle => {}
            Attack::Http2Preface => {
                writer
                    .write_all(
                        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
                    )
                    .await?;
                writer.flush().await?;
            }
            Attack::Trickle | Attack::FillAndStall => writer.write_all(head.as_bytes()).await?,
        }
        match shape {
            Attack::Idle | Attack::Http2Preface => {}
            Attack::Trickle => {
                for _ in 0..DECLARED - 1 {
                    writer.write_all(b" ").await?;
                    writer.flush().await?;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Attack::FillAndStall => fill_all_but_last_byte(&mut writer, DECLARED).await?,
        }
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    // Any answer or a close ends this connection's attack.
    let mut buf = [0u8; 512];
    let _ = reader.read(&mut buf).await;
    sender.abort();
    Ok(())
}

/// Latencies of `count` legitimate reviews sent one after another over one connection from
/// 127.0.0.1, and how many were not answered 200 with `allowed: true`.
pub async fn legitimate_reviews(
    port: u16,
    ca_pem: &str,
    body: Arc<Vec<u8>>,
    count: usize,
) -> Result<(Vec<Duration>, usize)> {
    reviews_from(port, ca_pem, body, count, false).await
}

/// [`legitimate_reviews`], each on a new connection (a TLS handshake each, as an API server
/// that opens connections while the port is under attack), the latency including it.
pub async fn legitimate_reviews_on_new_connections(
    port: u16,
    ca_pem: &str,
    body: Arc<Vec<u8>>,
    count: usize,
) -> Result<(Vec<Duration>, usize)> {
    reviews_from(port, ca_pem, body, count, true).await
}

async fn reviews_from(
    port: u16,
    ca_pem: &str,
    body: Arc<Vec<u8>>,
    count: usize,
    new_connections: bool,
) -> Result<(Vec<Duration>, usize)> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("reading the CA")?;
    let build = || {
        reqwest::Client::builder()
            .tls_certs_only([ca.clone()])
            .local_address(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .timeout(Duration::from_secs(30))
            .build()
    };
    let mut client = build()?;
    let url = format!("https://localhost:{port}/mutate");
    let mut latencies = Vec::with_capacity(count);
    let mut refused = 0;
    for _ in 0..count {
        if new_connections {
            client = build()?;
        }
        let started = Instant::now();
        let answer = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.as_ref().clone())
            .send()
            .await;
        let allowed = match answer {
            Ok(a) if a.status().is_success() => a
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["response"]["allowed"] == true),
            _ => false,
        };
        latencies.push(started.elapsed());
        if !allowed {
            refused += 1;
        }
    }
    Ok((latencies, refused))
}

/// Writes all but the last byte of a `length`-byte body (spaces, 64 KiB at a time) and
/// flushes: a body the server holds and that never completes.
pub async fn fill_all_but_last_byte<W>(writer: &mut W, length: usize) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt as _;
    let chunk = vec![b' '; 64 * 1024];
    let mut left = length.saturating_sub(1);
    while left > 0 {
        let n = left.min(chunk.len());
        writer.write_all(&chunk[..n]).await?;
        left -= n;
    }
    writer.flush().await
}

/// The `p`-quantile (0..=1) of sorted latencies.
pub fn quantile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i]
}

/// Runs `measure` on a current-thread runtime of its own, in a thread of its own: a client
/// that measures must not queue behind the attackers' tasks (it would time the test's own
/// scheduler, not the server).
pub fn measured_apart<F, T>(measure: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(measure)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the measuring client's thread panicked"))?
}
