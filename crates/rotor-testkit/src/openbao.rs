//! OpenBao (`bao server -dev`) on loopback, and an admin client over its HTTP API.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::ports::free_port;
use crate::process::ManagedProcess;
use crate::ready::wait_http_ok;
use crate::tools::tool;

/// The dev server's root token (tests only).
pub const ROOT_TOKEN: &str = "rotor-test-root";

pub struct OpenBao {
    pub process: ManagedProcess,
    pub addr: String,
    /// The CA that signed the server's certificate, when started with TLS.
    pub ca_pem: Option<String>,
    ip: Ipv4Addr,
    port: u16,
    dir: PathBuf,
    tls: bool,
}

impl OpenBao {
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_with(dir, false, Ipv4Addr::LOCALHOST).await
    }

    /// Plain HTTP on `ip` (the node's bridge address, where pods can reach it).
    pub async fn start_on(dir: &Path, ip: Ipv4Addr) -> Result<Self> {
        Self::start_with(dir, false, ip).await
    }

    /// `bao server -dev -dev-tls`: HTTPS with a CA of its own ([`OpenBao::ca_pem`]).
    pub async fn start_tls(dir: &Path) -> Result<Self> {
        Self::start_with(dir, true, Ipv4Addr::LOCALHOST).await
    }

    async fn start_with(dir: &Path, tls: bool, ip: Ipv4Addr) -> Result<Self> {
        // A port free on loopback is free on the bridge address too (nothing binds 0.0.0.0 here).
        let port = free_port()?;
        let scheme = if tls { "https" } else { "http" };
        let mut bao = Self {
            process: spawn(dir, ip, port, tls)?,
            addr: format!("{scheme}://{ip}:{port}"),
            ca_pem: None,
            ip,
            port,
            dir: dir.to_path_buf(),
            tls,
        };
        bao.wait_ready().await?;
        if tls {
            let ca = dir.join("bao-tls").join("vault-ca.pem");
            bao.ca_pem = Some(
                std::fs::read_to_string(&ca)
                    .with_context(|| format!("reading {}", ca.display()))?,
            );
        }
        Ok(bao)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let url = format!("{}/v1/sys/health", self.addr);
        if self.tls {
            // The CA is only written once the server runs: accept any certificate for this probe.
            let client = crate::insecure_http_client()?;
            wait_http_ok(&mut self.process, &url, Some(&client)).await
        } else {
            wait_http_ok(&mut self.process, &url, None).await
        }
    }

    /// The admin client (root token).
    pub fn admin(&self) -> Result<BaoAdmin> {
        match &self.ca_pem {
            Some(ca) => BaoAdmin::with_ca(&self.addr, ROOT_TOKEN, ca),
            None => BaoAdmin::new(&self.addr, ROOT_TOKEN),
        }
    }

    /// Stops the server (an outage). Dev mode keeps nothing: `restart` starts an empty store.
    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(5));
    }

    /// Starts the server again on the same address, empty.
    pub async fn restart(&mut self) -> Result<()> {
        self.process.stop(Duration::from_secs(5));
        self.process = spawn(&self.dir, self.ip, self.port, self.tls)?;
        self.wait_ready().await
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel but never answered,
    /// the shape of a hung store. `resume` continues it with all its data.
    pub fn pause(&self) -> Result<()> {
        self.process.pause()
    }

    pub fn resume(&self) -> Result<()> {
        self.process.resume()
    }

    /// Every request the store has received, in order, from its audit log.
    pub fn audited_requests(&self) -> Result<Vec<AuditedRequest>> {
        let text = match std::fs::read_to_string(audit_log(&self.dir)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).context("reading the OpenBao audit log"),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "request")
            .map(|v| AuditedRequest {
                operation: v["request"]["operation"].as_str().unwrap_or("").to_string(),
                path: v["request"]["path"].as_str().unwrap_or("").to_string(),
            })
            .collect())
    }
}

fn audit_log(dir: &Path) -> PathBuf {
    dir.join("bao-audit.log")
}

/// One request as the store's audit log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditedRequest {
    pub operation: String,
    pub path: String,
}

fn spawn(dir: &Path, ip: Ipv4Addr, port: u16, tls: bool) -> Result<ManagedProcess> {
    let home = dir.join("bao-home");
    std::fs::create_dir_all(&home).context("creating the OpenBao home")?;
    let mut args = vec![
        "server".to_string(),
        "-dev".to_string(),
        format!("-dev-root-token-id={ROOT_TOKEN}"),
        format!("-dev-listen-address={ip}:{port}"),
        "-dev-no-store-token".to_string(),
        "-log-level=warn".to_string(),
    ];
    // Every request is written to an audit log (values hashed), so tests count what reached
    // the store from the store's own record.
    let audit = dir.join("bao-audit.hcl");
    std::fs::write(
        &audit,
        format!(
            "audit \"file\" \"rotor-audit\" {{\n  options {{\n    file_path = {:?}\n  }}\n}}\n",
            audit_log(dir).display().to_string()
        ),
    )
    .context("writing the OpenBao audit config")?;
    args.push(format!("-config={}", audit.display()));
    if tls {
        let certs = dir.join("bao-tls");
        std::fs::create_dir_all(&certs).context("creating the OpenBao TLS dir")?;
        args.push("-dev-tls".to_string());
        args.push(format!("-dev-tls-cert-dir={}", certs.display()));
    }
    let home = home.display().to_string();
    ManagedProcess::spawn(
        "openbao",
        &tool("bao")?,
        &args,
        &[("HOME", home.as_str()), ("BAO_ADDR", "")],
        dir,
    )
}

/// A thin admin client over OpenBao's HTTP API, for setting up tests.
#[derive(Clone)]
pub struct BaoAdmin {
    pub addr: String,
    token: String,
    http: reqwest::Client,
}

impl BaoAdmin {
    pub fn new(addr: &str, token: &str) -> Result<Self> {
        Ok(Self {
            addr: addr.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: crate::http_client()?,
        })
    }

    /// An admin client that trusts `ca_pem` (a TLS dev server).
    pub fn with_ca(addr: &str, token: &str, ca_pem: &str) -> Result<Self> {
        crate::install_crypto_provider();
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("parsing the CA")?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .context("building an HTTP client")?;
        Ok(Self {
            addr: addr.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        })
    }

    /// The same server with another token.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: token.to_string(),
            ..self.clone()
        }
    }

    /// Calls `METHOD /v1/<path>`; a non-2xx answer is an error carrying the server's message.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}/v1/{}", self.addr, path.trim_start_matches('/'));
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("X-Vault-Token", &self.token)
            .timeout(Duration::from_secs(10));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {url}: HTTP {status}: {text}");
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {url}: parsing the answer"))
    }

    pub async fn write(&self, path: &str, body: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn read(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// The keys a LIST of `path` returns (none when the path is empty).
    pub async fn list(&self, path: &str) -> Result<Vec<String>> {
        let method = reqwest::Method::from_bytes(b"LIST").context("the LIST method")?;
        let answer = match self.call(method, path, None).await {
            Ok(a) => a,
            Err(e) if e.to_string().contains("HTTP 404") => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(answer["data"]["keys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Writes a KV v2 secret at `<mount>/data/<name>`; returns the new version.
    pub async fn put_kv2(&self, mount: &str, name: &str, data: Value) -> Result<u64> {
        let answer = self
            .write(&format!("{mount}/data/{name}"), json!({ "data": data }))
            .await?;
        answer["data"]["version"]
            .as_u64()
            .context("KV v2 write answered without a version")
    }

    /// Mounts a secrets engine of `kind` at `path` with `options`.
    pub async fn mount(&self, path: &str, kind: &str, options: Value) -> Result<()> {
        self.write(
            &format!("sys/mounts/{path}"),
            json!({ "type": kind, "options": options }),
        )
        .await
        .map(drop)
    }

    /// A PKI engine at `mount` with a root CA for `domain` (24 h) and role `role` issuing
    /// certificates for its subdomains (at most 1 h).
    pub async fn enable_pki(&self, mount: &str, domain: &str, role: &str) -> Result<()> {
        self.mount(mount, "pki", json!({})).await?;
        self.write(
            &format!("sys/mounts/{mount}/tune"),
            json!({ "max_lease_ttl": "24h" }),
        )
        .await?;
        self.write(
            &format!("{mount}/root/generate/internal"),
            json!({ "common_name": domain, "ttl": "24h" }),
        )
        .await?;
        self.write(
            &format!("{mount}/roles/{role}"),
            json!({ "allowed_domains": domain, "allow_subdomains": true, "max_ttl": "1h" }),
        )
        .await?;
        Ok(())
    }

    pub async fn put_policy(&self, name: &str, hcl: &str) -> Result<()> {
        self.call(
            reqwest::Method::PUT,
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        )
        .await
        .map(drop)
    }

    /// Enables Kubernetes auth at `auth/<mount>` against the given API server.
    pub async fn enable_kubernetes_auth(
        &self,
        mount: &str,
        kubernetes_host: &str,
        ca_pem: &str,
        reviewer_jwt: &str,
    ) -> Result<()> {
        self.write(
            &format!("sys/auth/{mount}"),
            json!({ "type": "kubernetes" }),
        )
        .await?;
        self.write(
            &format!("auth/{mount}/config"),
            json!({
                "kubernetes_host": kubernetes_host,
                "kubernetes_ca_cert": ca_pem,
                "token_reviewer_jwt": reviewer_jwt,
                "disable_local_ca_jwt": true,
            }),
        )
        .await
        .map(drop)
    }

    /// Creates a Kubernetes auth role bound to service accounts in namespaces.
    pub async fn put_kubernetes_role(
        &self,
        mount: &str,
        role: &str,
        service_accounts: &[&str],
        namespaces: &[&str],
        policies: &[&str],
        audience: Option<&str>,
    ) -> Result<()> {
        let mut body = json!({
            "bound_service_account_names": service_accounts,
            "bound_service_account_namespaces": namespaces,
            "token_policies": policies,
            "token_ttl": "10m",
        });
        if let Some(aud) = audience {
            body["audience"] = json!(aud);
        }
        self.write(&format!("auth/{mount}/role/{role}"), body)
            .await
            .map(drop)
    }

    /// Logs in with a Kubernetes service-account JWT; returns the client token.
    pub async fn login_kubernetes(&self, mount: &str, role: &str, jwt: &str) -> Result<String> {
        let answer = self
            .write(
                &format!("auth/{mount}/login"),
                json!({ "role": role, "jwt": jwt }),
            )
            .await?;
        answer["auth"]["client_token"]
            .as_str()
            .map(str::to_string)
            .context("login answered without auth.client_token")
    }
}
