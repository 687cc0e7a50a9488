//! The store client: Vault and OpenBao over their HTTP API.
//!
//! Paths are written as users write them (`secret/data/db` or `secret/db`). The client asks the
//! store which mount a path is on and that mount's KV version (`sys/internal/ui/mounts`, as the
//! vault CLI does), once per mount, and builds the right request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Map, Value};

use super::auth::Auth;
use super::error::StoreError;
use super::retry::RetryPolicy;

/// Connection settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `https://vault.example:8200`
    pub addr: String,
    /// Vault Enterprise / OpenBao namespace.
    pub namespace: Option<String>,
    /// PEM CA bundle to trust instead of the platform roots.
    pub ca_pem: Option<Vec<u8>>,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl StoreConfig {
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.trim_end_matches('/').to_string(),
            namespace: None,
            ca_pem: None,
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

/// A secret read from the store.
#[derive(Clone, Debug, Default)]
pub struct Secret {
    pub data: Map<String, Value>,
    /// KV v2 version read, when the mount is KV v2.
    pub version: Option<u64>,
    /// Lease of a dynamic secret.
    pub lease: Option<Lease>,
}

impl Secret {
    /// The value of `key` as a string (JSON values other than strings print as JSON).
    pub fn get(&self, path: &str, key: &str) -> Result<String, StoreError> {
        match self.data.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Ok(other.to_string()),
            None => Err(StoreError::MissingKey {
                path: path.to_string(),
                key: key.to_string(),
                available: self.data.len(),
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub duration: Duration,
    pub renewable: bool,
}

/// Which mount a path is on, and its KV version (`None`: not a KV mount).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// With a trailing slash: `secret/`.
    pub path: String,
    pub kv_version: Option<u8>,
}

impl MountInfo {
    /// The path relative to the mount, without a leading `data/` or `metadata/` on KV v2.
    fn relative<'a>(&self, path: &'a str) -> &'a str {
        let rel = path.strip_prefix(self.path.as_str()).unwrap_or(path);
        if self.kv_version == Some(2) {
            rel.strip_prefix("data/")
                .or_else(|| rel.strip_prefix("metadata/"))
                .unwrap_or(rel)
        } else {
            rel
        }
    }
}

pub struct StoreClient {
    http: reqwest::Client,
    config: StoreConfig,
    token: Option<String>,
    mounts: Mutex<HashMap<String, MountInfo>>,
}

impl Clone for StoreClient {
    fn clone(&self) -> Self {
        Self {
            http: self.http.clone(),
            config: self.config.clone(),
            token: self.token.clone(),
            mounts: Mutex::new(
                self.mounts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
        }
    }
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient")
            .field("addr", &self.config.addr)
            .field("namespace", &self.config.namespace)
            .field("logged_in", &self.token.is_some())
            .finish()
    }
}

impl StoreClient {
    pub fn new(config: StoreConfig) -> Result<Self, StoreError> {
        crate::install_crypto_provider();
        let builder = || {
            reqwest::Client::builder()
                .timeout(config.request_timeout)
                .connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
                .pool_idle_timeout(Duration::from_secs(30))
                .user_agent(concat!("rotor/", env!("CARGO_PKG_VERSION")))
        };
        let http = if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| StoreError::Config(format!("parsing the store CA bundle: {e}")))?;
            if certs.is_empty() {
                return Err(StoreError::Config(
                    "the store CA bundle holds no PEM certificate".to_string(),
                ));
            }
            builder().tls_certs_only(certs).build()
        } else {
            match builder().build() {
                Ok(client) => Ok(client),
                // No system CA store (a scratch or distroless root): plain HTTP needs none.
                Err(_) if config.addr.starts_with("http://") => {
                    builder().tls_certs_only(Vec::new()).build()
                }
                Err(e) => {
                    return Err(StoreError::Config(format!(
                        "no usable system CA certificates for {} ({e}); set ROTOR_CACERT to the store's CA bundle",
                        config.addr
                    )));
                }
            }
        }
        .map_err(|e| StoreError::Config(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            config,
            token: None,
            mounts: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Uses `token` for every request from now on.
    pub fn set_token(&mut self, token: String) {
        self.token = Some(token);
    }

    /// The client token, for a caller that must hand it on (never logged).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Logs in with `auth` (retrying transient failures) and keeps the client token.
    pub async fn login(&mut self, auth: &Auth) -> Result<(), StoreError> {
        let Some((path, body)) = auth.login_request()? else {
            if let Auth::Token(token) = auth {
                self.token = Some(token.clone());
            }
            return Ok(());
        };
        let op = format!("logging in with {} auth at {path}", auth.method());
        let answer = self
            .config
            .retry
            .run(|| self.call(reqwest::Method::POST, &path, Some(&body), &op))
            .await?;
        let token = answer
            .pointer("/auth/client_token")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::Decode {
                op: op.clone(),
                message: "no auth.client_token in the answer".to_string(),
            })?;
        self.token = Some(token.to_string());
        Ok(())
    }

    /// The mount `path` is on, asked once per mount.
    pub async fn mount_info(&self, path: &str) -> Result<MountInfo, StoreError> {
        if let Some(found) = self.cached_mount(path) {
            return Ok(found);
        }
        let op = format!("looking up the mount of {path}");
        let api_path = format!("sys/internal/ui/mounts/{path}");
        let answer = self
            .config
            .retry
            .run(|| self.call(reqwest::Method::GET, &api_path, None, &op))
            .await?;
        let data = answer.get("data").unwrap_or(&Value::Null);
        let mount_path = data
            .get("path")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| StoreError::Decode {
                op: op.clone(),
                message: "no data.path in the answer".to_string(),
            })?;
        let kind = data.get("type").and_then(Value::as_str).unwrap_or_default();
        let kv_version = match kind {
            "kv" | "generic" => Some(
                match data.pointer("/options/version").and_then(Value::as_str) {
                    Some("2") => 2,
                    _ => 1,
                },
            ),
            _ => None,
        };
        let info = MountInfo {
            path: format!("{}/", mount_path.trim_end_matches('/')),
            kv_version,
        };
        self.mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info.path.clone(), info.clone());
        Ok(info)
    }

    fn cached_mount(&self, path: &str) -> Option<MountInfo> {
        let mounts = self.mounts.lock().unwrap_or_else(|e| e.into_inner());
        mounts
            .values()
            .filter(|m| path.starts_with(m.path.as_str()))
            .max_by_key(|m| m.path.len())
            .cloned()
    }

    /// Reads the secret at `path` (KV v1, KV v2 with or without `/data/`, or any engine's read),
    /// at `version` when pinned (KV v2 only).
    pub async fn read(&self, path: &str, version: Option<u64>) -> Result<Secret, StoreError> {
        let mount = self.mount_info(path).await?;
        let op = match version {
            Some(v) => format!("reading {path} version {v}"),
            None => format!("reading {path}"),
        };
        if mount.kv_version != Some(2) {
            if version.is_some() {
                return Err(StoreError::Config(format!(
                    "{op}: {} is not a KV v2 mount, so it has no versions; drop the #VERSION pin",
                    mount.path
                )));
            }
            let answer = self
                .config
                .retry
                .run(|| self.call(reqwest::Method::GET, path, None, &op))
                .await?;
            return Ok(secret_from(&answer, None));
        }
        let mut api_path = format!("{}data/{}", mount.path, mount.relative(path));
        if let Some(v) = version {
            api_path.push_str(&format!("?version={v}"));
        }
        let answer = self
            .config
            .retry
            .run(|| self.call_kv2(&api_path, path, version, &op))
            .await?;
        let data = answer.pointer("/data/data").cloned().unwrap_or(Value::Null);
        let read_version = answer
            .pointer("/data/metadata/version")
            .and_then(Value::as_u64);
        Ok(Secret {
            data: match data {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            version: read_version,
            lease: None,
        })
    }

    async fn call_kv2(
        &self,
        api_path: &str,
        path: &str,
        version: Option<u64>,
        op: &str,
    ) -> Result<Value, StoreError> {
        // A deleted or destroyed version answers 404 with its metadata; tell that apart.
        let gone = |state| StoreError::VersionGone {
            path: path.to_string(),
            version: version.unwrap_or_default(),
            state,
        };
        let (status, body) = self.raw(reqwest::Method::GET, api_path, None, op).await?;
        if status == 404
            && let Ok(v) = serde_json::from_str::<Value>(&body)
        {
            if v.pointer("/data/metadata/destroyed")
                .and_then(Value::as_bool)
                == Some(true)
            {
                return Err(gone("destroyed"));
            }
            let deleted = v
                .pointer("/data/metadata/deletion_time")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty());
            if deleted {
                return Err(gone("deleted"));
            }
        }
        decode(status, &body, op)
    }

    /// One spelling for every way of writing a path: `secret/db` and `secret/data/db` on a KV v2
    /// mount both give `secret/db`. Other paths come back as they are.
    pub async fn canonical_path(&self, path: &str) -> Result<String, StoreError> {
        let mount = self.mount_info(path).await?;
        Ok(format!("{}{}", mount.path, mount.relative(path)))
    }

    /// The current version of a KV v2 secret, from its metadata (never its data).
    pub async fn current_version(&self, path: &str) -> Result<u64, StoreError> {
        let mount = self.mount_info(path).await?;
        let op = format!("reading the metadata of {path}");
        if mount.kv_version != Some(2) {
            return Err(StoreError::Config(format!(
                "{op}: {} is not a KV v2 mount; only KV v2 secrets have versions to watch",
                mount.path
            )));
        }
        let api_path = format!("{}metadata/{}", mount.path, mount.relative(path));
        let answer = self
            .config
            .retry
            .run(|| self.call(reqwest::Method::GET, &api_path, None, &op))
            .await?;
        answer
            .pointer("/data/current_version")
            .and_then(Value::as_u64)
            .ok_or_else(|| StoreError::Decode {
                op,
                message: "no data.current_version".to_string(),
            })
    }

    /// Writes `body` to `path` and returns the answer's data (dynamic secrets: `>>` references).
    pub async fn write(&self, path: &str, body: Option<&str>) -> Result<Secret, StoreError> {
        let op = format!("writing to {path}");
        let body: Value = match body {
            Some(b) => serde_json::from_str(b)
                .map_err(|e| StoreError::Config(format!("{op}: the body is not JSON: {e}")))?,
            None => Value::Object(Map::new()),
        };
        // Writes are not idempotent: retry only when the request never reached the store.
        let answer = self
            .config
            .retry
            .run(|| async {
                match self
                    .call(reqwest::Method::POST, path, Some(&body), &op)
                    .await
                {
                    Err(e @ StoreError::Status { .. })
                        if e.status() != Some(429) && e.status() != Some(503) =>
                    {
                        Err(StoreError::Status {
                            op: op.clone(),
                            status: e.status().unwrap_or_default(),
                            message: permanent_message(&e),
                        })
                    }
                    other => other,
                }
            })
            .await?;
        let lease = answer
            .get("lease_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(|id| Lease {
                id: id.to_string(),
                duration: Duration::from_secs(
                    answer
                        .get("lease_duration")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                ),
                renewable: answer
                    .get("renewable")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            });
        Ok(Secret {
            lease,
            ..secret_from(&answer, None)
        })
    }

    /// Renews a lease; returns the new duration.
    pub async fn renew_lease(
        &self,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Duration, StoreError> {
        let op = "renewing a lease".to_string();
        let body = serde_json::json!({ "lease_id": lease_id, "increment": increment.as_secs() });
        let answer = self
            .config
            .retry
            .run(|| self.call(reqwest::Method::PUT, "sys/leases/renew", Some(&body), &op))
            .await?;
        Ok(Duration::from_secs(
            answer
                .get("lease_duration")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        ))
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        op: &str,
    ) -> Result<Value, StoreError> {
        let (status, text) = self.raw(method, path, body, op).await?;
        decode(status, &text, op)
    }

    async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        op: &str,
    ) -> Result<(u16, String), StoreError> {
        let url = format!("{}/v1/{}", self.config.addr, path.trim_start_matches('/'));
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.header("X-Vault-Token", token);
        }
        if let Some(ns) = &self.config.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            let message = describe_transport(&e, &self.config.addr);
            if message.contains("certificate") {
                // Not transient: retrying cannot make an untrusted certificate trusted.
                StoreError::Config(format!(
                    "{op}: TLS: {message}; trust the store's CA with ROTOR_CACERT (or the chart's store.caConfigMap)"
                ))
            } else {
                StoreError::Transport { op: op.to_string(), message }
            }
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| StoreError::Transport {
            op: op.to_string(),
            message: format!(
                "reading the answer: {}",
                describe_transport(&e, &self.config.addr)
            ),
        })?;
        Ok((status, text))
    }
}

fn permanent_message(e: &StoreError) -> String {
    match e {
        StoreError::Status { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn secret_from(answer: &Value, version: Option<u64>) -> Secret {
    Secret {
        data: match answer.get("data") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        },
        version,
        lease: None,
    }
}

/// A 2xx answer as JSON; otherwise the store's `errors` list as the message. Error texts from
/// the store describe the request, never secret data.
fn decode(status: u16, text: &str, op: &str) -> Result<Value, StoreError> {
    if (200..300).contains(&status) {
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(text).map_err(|e| StoreError::Decode {
            op: op.to_string(),
            message: format!("not JSON ({e})"),
        });
    }
    let message = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            v.get("errors").and_then(Value::as_array).map(|errs| {
                errs.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .unwrap_or_default();
    let message = match (status, message.is_empty()) {
        (404, true) => "not found".to_string(),
        (403, true) => "permission denied".to_string(),
        (_, _) => message.chars().take(300).collect(),
    };
    Err(StoreError::Status {
        op: op.to_string(),
        status,
        message,
    })
}

fn describe_transport(e: &reqwest::Error, addr: &str) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        format!("{kind} to {addr}")
    } else {
        format!("{kind} to {addr}: {detail}")
    }
}
