//! moto's server mode on loopback (or the node's bridge): AWS Secrets Manager, SSM Parameter
//! Store and STS over HTTP, the way the AWS SDKs are tested. An admin client creates secrets and
//! parameters and counts the requests the server received.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use rotor_core::store::aws::Credentials;
use rotor_core::store::aws::sigv4::{Signable, sign};
use serde_json::{Value, json};

use crate::ports::free_port;
use crate::process::ManagedProcess;
use crate::ready::wait_http_ok;
use crate::tools::tool;

/// The account moto answers as.
pub const ACCOUNT: &str = "123456789012";

pub struct Moto {
    pub process: ManagedProcess,
    /// `http://IP:PORT`, what `AWS_ENDPOINT_URL` is set to.
    pub addr: String,
    dir: PathBuf,
}

impl Moto {
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_on(dir, Ipv4Addr::LOCALHOST).await
    }

    /// On `ip` (the node's bridge address, where pods reach it).
    pub async fn start_on(dir: &Path, ip: Ipv4Addr) -> Result<Self> {
        Self::spawn(dir, ip, None).await
    }

    /// With IAM enforced (moto's `INITIAL_NO_AUTH_ACTION_COUNT`): the first `setup_actions`
    /// requests are let through to set users, roles and secrets up; every later request must be
    /// signed with moto-issued credentials and is allowed only by their IAM policies.
    pub async fn start_with_iam(dir: &Path, setup_actions: u32) -> Result<Self> {
        Self::spawn(dir, Ipv4Addr::LOCALHOST, Some(setup_actions)).await
    }

    async fn spawn(dir: &Path, ip: Ipv4Addr, setup_actions: Option<u32>) -> Result<Self> {
        let port = free_port()?;
        let args = vec![
            "-H".to_string(),
            ip.to_string(),
            "-p".to_string(),
            port.to_string(),
        ];
        let home = dir.join(format!("moto-home-{port}"));
        std::fs::create_dir_all(&home).context("creating moto's home")?;
        let home = home.display().to_string();
        let mut envs = vec![("HOME", home.as_str()), ("MOTO_ACCOUNT_ID", ACCOUNT)];
        let setup = setup_actions.map(|n| n.to_string());
        if let Some(n) = &setup {
            envs.push(("INITIAL_NO_AUTH_ACTION_COUNT", n.as_str()));
        }
        let name = format!("moto-{port}");
        let mut process = ManagedProcess::spawn(&name, &tool("moto_server")?, &args, &envs, dir)?;
        let addr = format!("http://{ip}:{port}");
        wait_http_ok(&mut process, &format!("{addr}/moto-api/"), None).await?;
        Ok(Self {
            process,
            addr,
            dir: dir.to_path_buf(),
        })
    }

    pub fn admin(&self) -> Result<MotoAdmin> {
        Ok(MotoAdmin {
            addr: self.addr.clone(),
            http: crate::http_client()?,
        })
    }

    /// How many AWS API requests (POSTs to `/`) moto logged: its werkzeug access log lines.
    pub fn api_requests(&self) -> Result<usize> {
        let log = std::fs::read_to_string(self.process.log_path())
            .with_context(|| format!("reading {}", self.process.log_path().display()))?;
        Ok(log.lines().filter(|l| l.contains("\"POST / HTTP")).count())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// How one admin request is signed.
struct Signing<'a> {
    service: &'a str,
    region: &'a str,
    creds: &'a Credentials,
}

/// Keys for setting moto up (it reads the region from the signature and, without IAM enforced,
/// checks nothing else).
fn testkit_credentials() -> Credentials {
    Credentials {
        access_key_id: "AKIDTESTKIT".to_string(),
        secret_access_key: "testkit".to_string(),
        session_token: None,
        expires_at: None,
    }
}

/// Sets up secrets and parameters in moto (requests signed with throwaway keys: moto reads
/// the region from the signature and does not check it).
#[derive(Clone)]
pub struct MotoAdmin {
    pub addr: String,
    http: reqwest::Client,
}

impl MotoAdmin {
    /// One JSON API call to `service` in `region`; the answer, or an error with AWS's.
    pub async fn call(
        &self,
        service: &str,
        region: &str,
        target: &str,
        body: Value,
    ) -> Result<Value> {
        let body = serde_json::to_vec(&body)?;
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
        ];
        let signing = Signing {
            service,
            region,
            creds: &testkit_credentials(),
        };
        let text = self.send(signing, &headers, body, target).await?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// One query-API call (IAM, STS: a form body, an XML answer), signed with `creds` (the
    /// testkit's throwaway keys when `None`).
    pub async fn query(
        &self,
        service: &str,
        region: &str,
        params: &[(&str, &str)],
        creds: Option<&Credentials>,
    ) -> Result<String> {
        let form: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", rotor_core::store::aws::sigv4::uri_encode(v)))
            .collect();
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        let what = params.first().map_or("query", |(_, v)| *v);
        let testkit = testkit_credentials();
        let signing = Signing {
            service,
            region,
            creds: creds.unwrap_or(&testkit),
        };
        self.send(signing, &headers, form.join("&").into_bytes(), what)
            .await
    }

    async fn send(
        &self,
        signing: Signing<'_>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        what: &str,
    ) -> Result<String> {
        let host = self.addr.trim_start_matches("http://").to_string();
        let mut all = headers.to_vec();
        all.push(("host", host.as_str()));
        let signed = sign(
            &Signable {
                method: "POST",
                path: "/",
                query: "",
                headers: &all,
                body: &body,
                region: signing.region,
                service: signing.service,
            },
            signing.creds,
            SystemTime::now(),
        );
        let mut request = self
            .http
            .post(format!("{}/", self.addr))
            .body(body)
            .timeout(Duration::from_secs(30));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        for (k, v) in &signed {
            request = request.header(k.as_str(), v.as_str());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{what} to moto"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{what}: HTTP {status}: {text}");
        }
        Ok(text)
    }

    /// Creates a Secrets Manager secret; its full ARN.
    pub async fn create_secret(&self, region: &str, name: &str, value: &str) -> Result<String> {
        let answer = self
            .call(
                "secretsmanager",
                region,
                "secretsmanager.CreateSecret",
                json!({ "Name": name, "SecretString": value }),
            )
            .await?;
        answer["ARN"]
            .as_str()
            .map(str::to_string)
            .context("CreateSecret answered no ARN")
    }

    /// A new version of a secret (it becomes AWSCURRENT); its version id.
    pub async fn put_secret_value(&self, region: &str, arn: &str, value: &str) -> Result<String> {
        let answer = self
            .call(
                "secretsmanager",
                region,
                "secretsmanager.PutSecretValue",
                json!({ "SecretId": arn, "SecretString": value }),
            )
            .await?;
        answer["VersionId"]
            .as_str()
            .map(str::to_string)
            .context("PutSecretValue answered no VersionId")
    }

    /// Creates or overwrites an SSM SecureString parameter; its version.
    pub async fn put_parameter(&self, region: &str, name: &str, value: &str) -> Result<u64> {
        let answer = self
            .call(
                "ssm",
                region,
                "AmazonSSM.PutParameter",
                json!({ "Name": name, "Value": value, "Type": "SecureString", "Overwrite": true }),
            )
            .await?;
        answer["Version"]
            .as_u64()
            .context("PutParameter answered no Version")
    }
}
