//! The store client: Vault and OpenBao over their HTTP API.
//!
//! Paths are written as users write them (`secret/data/db` or `secret/db`). The client asks the
//! store which mount a path is on and that mount's KV version (`sys/internal/ui/mounts`, as the
//! vault CLI does), once per mount, and builds the right request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use super::auth::Auth;
use super::error::StoreError;
use super::retry::RetryPolicy;
use super::transport::{Answer, HttpTransport, Method, Request, Transport};

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
    pub fn relative<'a>(&self, path: &'a str) -> &'a str {
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

/// A client of one store. Clones share the connection pool, the token and the mount cache.
#[derive(Clone)]
pub struct StoreClient {
    transport: Arc<dyn Transport>,
    config: StoreConfig,
    token: Option<String>,
    mounts: Arc<Mutex<HashMap<String, MountInfo>>>,
    /// Held while a mount is looked up, so concurrent reads on one mount ask the store once.
    mount_lookup: Arc<tokio::sync::Mutex<()>>,
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
    /// A client over HTTP(S) to `config.addr`.
    pub fn new(config: StoreConfig) -> Result<Self, StoreError> {
        let transport = HttpTransport::new(
            &config.addr,
            config.ca_pem.as_deref(),
            config.request_timeout,
        )?;
        Ok(Self::with_transport(config, Arc::new(transport)))
    }

    /// A client over any transport (tests use an in-memory store).
    pub fn with_transport(config: StoreConfig, transport: Arc<dyn Transport>) -> Self {
        Self {
            transport,
            config,
            token: None,
            mounts: Arc::new(Mutex::new(HashMap::new())),
            mount_lookup: Arc::new(tokio::sync::Mutex::new(())),
        }
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
        // A login only creates a token; repeating one after a lost answer is harmless.
        let answer = self
            .config
            .retry
            .run(|| self.call(Method::Post, &path, Some(&body), &op))
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

    /// Revokes the client token (`auth/token/revoke-self`) and forgets it. One attempt: a
    /// token that cannot be revoked still expires with its TTL.
    pub async fn revoke_self(&mut self) -> Result<(), StoreError> {
        let op = "revoking the client token";
        let answer = self
            .send(Method::Post, "auth/token/revoke-self", None, op)
            .await?;
        decode(&answer, op)?;
        self.token = None;
        Ok(())
    }

    /// Whether the store still accepts the client token (`auth/token/lookup-self`, which every
    /// token may call). A 403 on a path means either that the path is forbidden or that the
    /// token is gone; only the second needs a new login.
    pub async fn token_accepted(&self) -> Result<bool, StoreError> {
        let op = "looking up the client token";
        let answer = self
            .config
            .retry
            .run(|| self.send(Method::Get, "auth/token/lookup-self", None, op))
            .await?;
        match answer.status {
            200..=299 => Ok(true),
            401 | 403 => Ok(false),
            _ => decode(&answer, op).map(|_| true),
        }
    }

    /// The mount `path` is on, asked once per mount: concurrent callers wait for the lookup in
    /// flight and then find its answer in the cache.
    pub async fn mount_info(&self, path: &str) -> Result<MountInfo, StoreError> {
        if let Some(found) = self.cached_mount(path) {
            return Ok(found);
        }
        let _lookup = self.mount_lookup.lock().await;
        if let Some(found) = self.cached_mount(path) {
            return Ok(found);
        }
        let op = format!("looking up the mount of {path}");
        let api_path = format!("sys/internal/ui/mounts/{path}");
        let answer = self
            .config
            .retry
            .run(|| self.call(Method::Get, &api_path, None, &op))
            .await?;
        let info = mount_from(&answer, &op)?;
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
                return Err(StoreError::NotKv2 {
                    op,
                    mount: mount.path,
                    fix: "drop the #VERSION pin",
                });
            }
            let answer = self
                .config
                .retry
                .run(|| self.call(Method::Get, path, None, &op))
                .await?;
            return Ok(secret_from(&answer));
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
        let answer = self.send(Method::Get, api_path, None, op).await?;
        // A deleted or destroyed version answers 404 with its metadata; tell that apart.
        if answer.status == 404
            && let Some(state) = gone_state(&answer.body)
        {
            return Err(StoreError::VersionGone {
                path: path.to_string(),
                version: version.unwrap_or_default(),
                state,
            });
        }
        decode(&answer, op)
    }

    /// One spelling for every way of writing a path: `secret/db` and `secret/data/db` on a KV v2
    /// mount both give `secret/db`. Other paths come back as they are.
    pub async fn canonical_path(&self, path: &str) -> Result<String, StoreError> {
        let mount = self.mount_info(path).await?;
        Ok(format!("{}{}", mount.path, mount.relative(path)))
    }

    /// The current version of a KV v2 secret, from its metadata (never its data).
    pub async fn current_version(&self, path: &str) -> Result<u64, StoreError> {
        self.current_version_info(path)
            .await
            .map(|(version, _)| version)
    }

    /// The current version of a KV v2 secret and when it was written (`created_time`, RFC 3339,
    /// when the store says), from one metadata request.
    pub async fn current_version_info(
        &self,
        path: &str,
    ) -> Result<(u64, Option<String>), StoreError> {
        let mount = self.mount_info(path).await?;
        let op = format!("reading the metadata of {path}");
        if mount.kv_version != Some(2) {
            return Err(StoreError::NotKv2 {
                op,
                mount: mount.path,
                fix: "only KV v2 secrets have versions to watch",
            });
        }
        let api_path = format!("{}metadata/{}", mount.path, mount.relative(path));
        let answer = self
            .config
            .retry
            .run(|| self.call(Method::Get, &api_path, None, &op))
            .await?;
        let version = answer
            .pointer("/data/current_version")
            .and_then(Value::as_u64)
            .ok_or_else(|| StoreError::Decode {
                op,
                message: "no data.current_version".to_string(),
            })?;
        let created = answer
            .pointer(&format!("/data/versions/{version}/created_time"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok((version, created))
    }

    /// Writes `body` to `path` and returns the answer's data (dynamic secrets: `>>` references).
    /// Writes are not idempotent (each one may mint a credential and a lease), so a failure is
    /// retried only when the store cannot have acted on the request.
    pub async fn write(&self, path: &str, body: Option<&str>) -> Result<Secret, StoreError> {
        let op = format!("writing to {path}");
        let body: Value = match body {
            Some(b) => serde_json::from_str(b).map_err(|e| StoreError::BadBody {
                op: op.clone(),
                message: e.to_string(),
            })?,
            None => Value::Object(Map::new()),
        };
        let answer = self
            .config
            .retry
            .run_when(StoreError::store_did_not_act, || {
                self.call(Method::Post, path, Some(&body), &op)
            })
            .await?;
        Ok(Secret {
            lease: lease_from(&answer),
            ..secret_from(&answer)
        })
    }

    /// Writes `data` as the next version of the KV v2 secret at `path` only while its current
    /// version is `cas` (0: it does not exist yet): the store refuses the write otherwise, so
    /// two writers never both succeed. Retried only when the store cannot have acted (a lost
    /// answer shows as the version having moved). Returns the version written.
    pub async fn write_kv2_cas(
        &self,
        path: &str,
        data: &Map<String, Value>,
        cas: u64,
    ) -> Result<u64, StoreError> {
        let mount = self.mount_info(path).await?;
        let op = format!("writing a new version of {path}");
        if mount.kv_version != Some(2) {
            return Err(StoreError::NotKv2 {
                op,
                mount: mount.path,
                fix: "rotate KV v2 secrets",
            });
        }
        let api_path = format!("{}data/{}", mount.path, mount.relative(path));
        let body = serde_json::json!({ "options": { "cas": cas }, "data": data });
        let answer = self
            .config
            .retry
            .run_when(StoreError::store_did_not_act, || {
                self.call(Method::Post, &api_path, Some(&body), &op)
            })
            .await?;
        answer
            .pointer("/data/version")
            .and_then(Value::as_u64)
            .ok_or_else(|| StoreError::Decode {
                op,
                message: "no data.version in the answer".to_string(),
            })
    }

    /// Revokes a lease (`sys/leases/revoke/<lease id>`, so a policy can allow it per path:
    /// `update` on `sys/leases/revoke/pki/issue/web/*`): the credential it holds stops working.
    pub async fn revoke_lease(&self, lease_id: &str) -> Result<(), StoreError> {
        let op = "revoking a lease".to_string();
        // The id comes from the store's answer: as path segments only, so it cannot steer the
        // request to another endpoint (`../`, `?`, `%2F`).
        if !is_lease_id(lease_id) {
            return Err(StoreError::Decode {
                op,
                message: "the store's lease id is not a plain path (empty, dot or encoded segments, or ? # % \\ or control characters); not revoked, it ends with its TTL".to_string(),
            });
        }
        let path = format!("sys/leases/revoke/{lease_id}");
        self.config
            .retry
            .run(|| self.call(Method::Put, &path, None, &op))
            .await
            .map(drop)
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
            .run(|| self.call(Method::Put, "sys/leases/renew", Some(&body), &op))
            .await?;
        Ok(Duration::from_secs(
            answer
                .get("lease_duration")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        ))
    }

    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        op: &str,
    ) -> Result<Value, StoreError> {
        let answer = self.send(method, path, body, op).await?;
        decode(&answer, op)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        op: &str,
    ) -> Result<Answer, StoreError> {
        self.transport
            .send(Request {
                method,
                path,
                body,
                token: self.token.as_deref(),
                namespace: self.config.namespace.as_deref(),
                op,
            })
            .await
    }
}

/// `sys/internal/ui/mounts` answer → the mount and its KV version.
fn mount_from(answer: &Value, op: &str) -> Result<MountInfo, StoreError> {
    let data = answer.get("data").unwrap_or(&Value::Null);
    let mount_path = data
        .get("path")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| StoreError::Decode {
            op: op.to_string(),
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
    Ok(MountInfo {
        path: format!("{}/", mount_path.trim_end_matches('/')),
        kv_version,
    })
}

/// Whether a KV v2 404 body describes a destroyed or deleted version.
fn gone_state(body: &str) -> Option<&'static str> {
    let v = serde_json::from_str::<Value>(body).ok()?;
    if v.pointer("/data/metadata/destroyed")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Some("destroyed");
    }
    v.pointer("/data/metadata/deletion_time")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
        .then_some("deleted")
}

fn lease_from(answer: &Value) -> Option<Lease> {
    let id = answer
        .get("lease_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())?;
    Some(Lease {
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
    })
}

fn secret_from(answer: &Value) -> Secret {
    Secret {
        data: match answer.get("data") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        },
        version: None,
        lease: None,
    }
}

/// The longest excerpt of a store's own error text that rotor repeats.
const STORE_TEXT_MAX: usize = 300;

/// A store's error text as rotor may log it: anything token-like masked (a JWT, a store token, a
/// long run of letters and digits, as a store that echoes what it was sent would put there), then
/// cut to [`STORE_TEXT_MAX`] characters. Words are judged between `/` and other separators, so
/// paths and role names stay readable.
pub(crate) fn store_text_excerpt(text: &str) -> String {
    let token_char =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '=' | '~');
    let token_like = |word: &str| {
        let jwt = word.starts_with("eyJ") && word.matches('.').count() >= 2;
        let letters = word.chars().filter(char::is_ascii_alphabetic).count();
        let digits = word.chars().filter(char::is_ascii_digit).count();
        jwt || (word.len() >= 16 && letters > 0 && digits > 0)
    };
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if token_like(word) {
            out.push_str("<redacted>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if token_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(if c.is_control() { ' ' } else { c });
        }
    }
    flush(&mut word, &mut out);
    out.chars().take(STORE_TEXT_MAX).collect()
}

/// A 2xx answer as JSON; otherwise the store's `errors` list as the message. Error texts from
/// the store describe the request, never secret data.
fn decode(answer: &Answer, op: &str) -> Result<Value, StoreError> {
    let Answer { status, body } = answer;
    if *status == 400 && body.contains("Client sent an HTTP request to an HTTPS server") {
        return Err(StoreError::PlainHttpToHttps { op: op.to_string() });
    }
    if (200..300).contains(status) {
        if body.trim().is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(body).map_err(|e| StoreError::Decode {
            op: op.to_string(),
            message: format!("not JSON ({e})"),
        });
    }
    let message = serde_json::from_str::<Value>(body)
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
    let message = match (*status, message.is_empty()) {
        (300..=399, _) => {
            "the store answered with a redirect, which rotor never follows (a token must not go \
             to another origin); set the address to the store itself"
                .to_string()
        }
        (404, true) => "not found".to_string(),
        (403, true) => "permission denied".to_string(),
        (_, _) => store_text_excerpt(&message),
    };
    Err(StoreError::Status {
        op: op.to_string(),
        status: *status,
        message,
    })
}

/// Whether `id` is a lease id that is only path segments: non-empty segments, none `.` or
/// `..`, no character a URL would read apart from the path (`?`, `#`, `%`, `\\`, spaces,
/// control characters).
pub fn is_lease_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 1024
        && id
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
        && !id
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '?' | '#' | '%' | '\\'))
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
