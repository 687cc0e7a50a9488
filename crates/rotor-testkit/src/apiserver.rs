//! kube-apiserver on loopback with its own PKI, RBAC and a service-account issuer.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::pki::{CertifiedKey, Pki, key_pair_pem};
use crate::ports::free_port;
use crate::process::ManagedProcess;
use crate::ready::wait_http_ok;
use crate::tools::tool;

/// The issuer written into service-account tokens (and checked by OpenBao's kubernetes auth).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

pub struct ApiServer {
    pub process: ManagedProcess,
    pub url: String,
    pub kubeconfig: PathBuf,
    pub ca_pem: String,
    pub ca_file: PathBuf,
    pub service_account_key_file: PathBuf,
    pub admin: CertifiedKey,
}

impl ApiServer {
    /// Starts kube-apiserver on `ip` (loopback, or the node's bridge address so that pods can
    /// reach it); `extra_args` are added (or replace a default flag of the same name).
    pub async fn start(
        dir: &Path,
        pki: &Pki,
        etcd_url: &str,
        ip: Ipv4Addr,
        extra_args: &[String],
    ) -> Result<Self> {
        let port = free_port()?;
        let url = format!("https://{ip}:{port}");
        let serving = pki.server_cert_with_ips(
            "kube-apiserver",
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            &[IpAddr::V4(ip)],
        )?;
        let admin = pki.client_cert("rotor-test-admin", Some("system:masters"))?;
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };
        let ca_file = write("ca.crt", pki.ca_pem())?;
        let cert_file = write("apiserver.crt", &serving.cert_pem)?;
        let key_file = write("apiserver.key", &serving.key_pem)?;
        let (sa_private, sa_public) = key_pair_pem()?;
        let sa_key_file = write("service-account.key", &sa_private)?;
        let sa_pub_file = write("service-account.pub", &sa_public)?;
        let kubeconfig = write(
            "admin.kubeconfig",
            &kubeconfig_yaml(&url, pki.ca_pem(), &admin),
        )?;

        let args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={ip}"),
            format!("--advertise-address={ip}"),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", cert_file.display()),
            format!("--tls-private-key-file={}", key_file.display()),
            format!("--client-ca-file={}", ca_file.display()),
            format!("--service-account-key-file={}", sa_pub_file.display()),
            format!(
                "--service-account-signing-key-file={}",
                sa_key_file.display()
            ),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            "--authorization-mode=RBAC".to_string(),
            "--service-cluster-ip-range=10.96.0.0/16".to_string(),
            "--endpoint-reconciler-type=none".to_string(),
            "--allow-privileged=true".to_string(),
            "--profiling=false".to_string(),
            "--enable-priority-and-fairness=false".to_string(),
            "--storage-media-type=application/json".to_string(),
            "--v=1".to_string(),
        ];
        let flag = |a: &String| a.split('=').next().unwrap_or_default().to_string();
        let mut args: Vec<String> = args
            .into_iter()
            .filter(|a| !extra_args.iter().any(|e| flag(e) == flag(a)))
            .collect();
        args.extend(extra_args.iter().cloned());
        let mut process =
            ManagedProcess::spawn("kube-apiserver", &tool("kube-apiserver")?, &args, &[], dir)?;
        let http = admin_http_client(pki.ca_pem(), &admin)?;
        wait_http_ok(&mut process, &format!("{url}/readyz"), Some(&http)).await?;
        Ok(Self {
            process,
            url,
            kubeconfig,
            ca_pem: pki.ca_pem().to_string(),
            ca_file,
            service_account_key_file: sa_key_file,
            admin,
        })
    }
}

fn admin_http_client(ca_pem: &str, admin: &CertifiedKey) -> Result<reqwest::Client> {
    crate::install_crypto_provider();
    let identity =
        reqwest::Identity::from_pem(format!("{}\n{}", admin.cert_pem, admin.key_pem).as_bytes())
            .context("loading the admin identity")?;
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("loading the CA")?;
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(identity)
        .build()
        .context("building the apiserver HTTP client")
}

/// A kubeconfig for `url` with the given client certificate, usable by kube-rs, helm and kubectl.
pub fn kubeconfig_yaml(url: &str, ca_pem: &str, user: &CertifiedKey) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: rotor-test\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: rotor-test\n  context:\n    cluster: rotor-test\n    user: admin\n    namespace: default\ncurrent-context: rotor-test\n",
        ca = b64(ca_pem),
        cert = b64(&user.cert_pem),
        key = b64(&user.key_pem),
    )
}
