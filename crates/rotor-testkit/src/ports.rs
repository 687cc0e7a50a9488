//! Free loopback ports for the servers a test starts.

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

use anyhow::{Context, Result};

static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A port on 127.0.0.1 that nothing listens on now and that this process has not handed out yet.
pub fn free_port() -> Result<u16> {
    for _ in 0..64 {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .context("binding 127.0.0.1:0 to find a free port")?;
        let port = listener
            .local_addr()
            .context("reading a bound port")?
            .port();
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed.contains(&port) {
            handed.push(port);
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port after 64 attempts")
}
