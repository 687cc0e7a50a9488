//! kube-controller-manager: Deployments create ReplicaSets and Pods, namespaces get their
//! `default` ServiceAccount.

use std::path::Path;

use anyhow::Result;

use crate::apiserver::ApiServer;
use crate::ports::free_port;
use crate::process::ManagedProcess;
use crate::ready::wait_http_ok;
use crate::tools::tool;

pub struct ControllerManager {
    pub process: ManagedProcess,
}

impl ControllerManager {
    pub async fn start(dir: &Path, api: &ApiServer) -> Result<Self> {
        let port = free_port()?;
        let kubeconfig = api.kubeconfig.display().to_string();
        let args = vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", dir.join("kcm-certs").display()),
            "--leader-elect=false".to_string(),
            "--use-service-account-credentials=false".to_string(),
            format!("--root-ca-file={}", api.ca_file.display()),
            format!(
                "--service-account-private-key-file={}",
                api.service_account_key_file.display()
            ),
            "--controllers=*".to_string(),
            "--concurrent-deployment-syncs=10".to_string(),
            "--v=1".to_string(),
        ];
        let mut process = ManagedProcess::spawn(
            "kube-controller-manager",
            &tool("kube-controller-manager")?,
            &args,
            &[],
            dir,
        )?;
        let http = crate::insecure_http_client()?;
        wait_http_ok(
            &mut process,
            &format!("https://127.0.0.1:{port}/healthz"),
            Some(&http),
        )
        .await?;
        Ok(Self { process })
    }
}
