//! etcd on loopback, tuned for tests.

use std::path::Path;

use anyhow::Result;

use crate::ports::free_port;
use crate::process::ManagedProcess;
use crate::ready::wait_http_ok;
use crate::tools::tool;

pub struct Etcd {
    pub process: ManagedProcess,
    pub client_url: String,
}

impl Etcd {
    pub async fn start(dir: &Path) -> Result<Self> {
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let data_dir = dir.join("etcd-data");
        let args = vec![
            "--name=rotor-test".to_string(),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=rotor-test={peer_url}"),
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
            "--quota-backend-bytes=1073741824".to_string(),
        ];
        let mut process = ManagedProcess::spawn("etcd", &tool("etcd")?, &args, &[], dir)?;
        wait_http_ok(&mut process, &format!("{client_url}/health"), None).await?;
        Ok(Self {
            process,
            client_url,
        })
    }
}
