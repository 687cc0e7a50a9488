//! An in-memory store for unit tests: the parts of the Vault/OpenBao HTTP API rotor uses (mount
//! lookup, KV v1 and v2 with versions, metadata, logins, dynamic-secret writes, lease renewal),
//! a log of every request, and failures scripted per path.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::error::StoreError;
use super::transport::{Answer, Method, Request, Transport};

/// A failure the store gives instead of an answer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Failure {
    /// An error status with an `errors` body.
    Status(u16),
    /// The connection is refused: the store never sees the request.
    Refused,
    /// The request was sent and no answer came (the store may have acted).
    LostAnswer,
}

struct Version {
    data: Map<String, Value>,
    state: Option<&'static str>,
}

#[derive(Default)]
struct State {
    /// (mount path with a trailing slash, engine type, KV version option)
    mounts: Vec<(String, &'static str, Option<&'static str>)>,
    /// KV v2 secrets by `mount/relative` path.
    kv2: HashMap<String, Vec<Version>>,
    /// KV v1 and other engines' readable paths.
    plain: HashMap<String, Map<String, Value>>,
    /// Scripted failures: (path prefix, failure), used in order, each once.
    failures: VecDeque<(String, Failure)>,
    /// Every request as `METHOD path`.
    log: Vec<String>,
    /// Tokens the store no longer accepts.
    revoked: Vec<String>,
    minted: u32,
}

#[derive(Default)]
pub(crate) struct FakeStore {
    state: Mutex<State>,
}

fn map(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect()
}

impl FakeStore {
    /// A store with `secret/` (KV v2), `kv1/` (KV v1) and `database/` (dynamic credentials).
    pub(crate) fn new() -> Self {
        let store = Self::default();
        {
            let mut s = store.lock();
            s.mounts.push(("secret/".into(), "kv", Some("2")));
            s.mounts.push(("kv1/".into(), "kv", Some("1")));
            s.mounts.push(("database/".into(), "database", None));
        }
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a version of the KV v2 secret `secret/<name>`.
    pub(crate) fn put(&self, name: &str, pairs: &[(&str, &str)]) {
        self.lock()
            .kv2
            .entry(format!("secret/{name}"))
            .or_default()
            .push(Version {
                data: map(pairs),
                state: None,
            });
    }

    /// Marks version `version` (from 1) of `secret/<name>` deleted or destroyed.
    pub(crate) fn retire(&self, name: &str, version: usize, state: &'static str) {
        if let Some(v) = self
            .lock()
            .kv2
            .get_mut(&format!("secret/{name}"))
            .and_then(|versions| versions.get_mut(version - 1))
        {
            v.state = Some(state);
        }
    }

    /// Sets the KV v1 secret `kv1/<name>`.
    pub(crate) fn put_v1(&self, name: &str, pairs: &[(&str, &str)]) {
        self.lock().plain.insert(format!("kv1/{name}"), map(pairs));
    }

    /// The next request whose path starts with `prefix` fails with `failure`.
    pub(crate) fn fail_next(&self, prefix: &str, failure: Failure) {
        self.lock()
            .failures
            .push_back((prefix.to_string(), failure));
    }

    /// The store stops accepting `token`.
    pub(crate) fn revoke(&self, token: &str) {
        self.lock().revoked.push(token.to_string());
    }

    /// Every request so far, as `METHOD path`.
    pub(crate) fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// How many requests so far have a path starting with `prefix`.
    pub(crate) fn count(&self, prefix: &str) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, p)| p.starts_with(prefix))
            })
            .count()
    }

    fn answer(&self, request: &Request<'_>) -> Result<Answer, StoreError> {
        let mut s = self.lock();
        s.log.push(format!("{:?} {}", request.method, request.path));
        if let Some(i) = s
            .failures
            .iter()
            .position(|(prefix, _)| request.path.starts_with(prefix.as_str()))
            && let Some((_, failure)) = s.failures.remove(i)
        {
            return match failure {
                Failure::Status(status) => Ok(reply(status, json!({ "errors": ["scripted"] }))),
                Failure::Refused | Failure::LostAnswer => Err(StoreError::Unreachable {
                    op: request.op.to_string(),
                    message: format!("{failure:?}"),
                    sent: matches!(failure, Failure::LostAnswer),
                }),
            };
        }
        let (path, query) = request.path.split_once('?').unwrap_or((request.path, ""));
        let token_ok = request
            .token
            .is_some_and(|t| !s.revoked.iter().any(|r| r == t));
        if path == "auth/token/revoke-self" {
            if let (true, Some(t)) = (token_ok, request.token) {
                s.revoked.push(t.to_string());
                return Ok(reply(204, Value::Null));
            }
            return Ok(reply(403, json!({ "errors": ["permission denied"] })));
        }
        if path == "auth/token/lookup-self" {
            return Ok(match token_ok {
                true => reply(200, json!({ "data": { "ttl": 3600 } })),
                false => reply(403, json!({ "errors": ["permission denied"] })),
            });
        }
        if path.starts_with("auth/") && path.ends_with("/login") {
            s.minted += 1;
            return Ok(reply(
                200,
                json!({ "auth": { "client_token": format!("token-{}", s.minted) } }),
            ));
        }
        if !token_ok || path.starts_with("forbidden/") {
            return Ok(reply(403, json!({ "errors": ["permission denied"] })));
        }
        if let Some(target) = path.strip_prefix("sys/internal/ui/mounts/") {
            return Ok(match s.mount_of(target) {
                Some((mount, kind, version)) => reply(
                    200,
                    json!({ "data": { "path": mount, "type": kind, "options": { "version": version } } }),
                ),
                None => reply(403, json!({ "errors": ["no mount"] })),
            });
        }
        if path == "sys/leases/renew" {
            let increment = request
                .body
                .and_then(|b| b.get("increment"))
                .cloned()
                .unwrap_or(json!(0));
            return Ok(reply(200, json!({ "lease_duration": increment })));
        }
        let Some((mount, kind, version)) = s.mount_of(path) else {
            return Ok(reply(404, json!({ "errors": [] })));
        };
        let rel = &path[mount.len()..];
        Ok(match (request.method, kind, version) {
            (Method::Get, "kv", Some("2")) => s.kv2_get(&mount, rel, query),
            (Method::Get, _, _) => match s.plain.get(path) {
                Some(data) => reply(200, json!({ "data": data })),
                None => reply(404, json!({ "errors": [] })),
            },
            (Method::Post | Method::Put, "database", _) => {
                s.minted += 1;
                let n = s.minted;
                reply(
                    200,
                    json!({ "lease_id": format!("{path}/{n}"), "lease_duration": 60, "renewable": true,
                            "data": { "username": format!("user-{n}"), "password": format!("pass-{n}") } }),
                )
            }
            _ => reply(405, json!({ "errors": ["unsupported"] })),
        })
    }
}

impl State {
    fn mount_of(&self, path: &str) -> Option<(String, &'static str, Option<&'static str>)> {
        self.mounts
            .iter()
            .filter(|(m, _, _)| path.starts_with(m.as_str()))
            .max_by_key(|(m, _, _)| m.len())
            .cloned()
    }

    fn kv2_get(&self, mount: &str, rel: &str, query: &str) -> Answer {
        let (kind, name) = rel.split_once('/').unwrap_or((rel, ""));
        let Some(versions) = self.kv2.get(&format!("{mount}{name}")) else {
            return reply(404, json!({ "errors": [] }));
        };
        if kind == "metadata" {
            return reply(
                200,
                json!({ "data": { "current_version": versions.len() } }),
            );
        }
        let wanted = query
            .strip_prefix("version=")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(versions.len());
        match versions.get(wanted.wrapping_sub(1)) {
            Some(Version { state: None, data }) => reply(
                200,
                json!({ "data": { "data": data, "metadata": { "version": wanted } } }),
            ),
            Some(Version {
                state: Some(state), ..
            }) => reply(
                404,
                json!({ "data": { "data": null, "metadata": {
                    "version": wanted,
                    "destroyed": *state == "destroyed",
                    "deletion_time": if *state == "deleted" { "2026-11-30T00:00:00Z" } else { "" },
                } } }),
            ),
            None => reply(404, json!({ "errors": [] })),
        }
    }
}

fn reply(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body: body.to_string(),
    }
}

impl Transport for FakeStore {
    fn send<'a>(&'a self, request: Request<'a>) -> BoxFuture<'a, Result<Answer, StoreError>> {
        Box::pin(async move {
            // Let concurrent callers interleave, as they would over a network.
            tokio::task::yield_now().await;
            self.answer(&request)
        })
    }
}

/// A logged-in client of `store` whose retries take milliseconds.
pub(crate) fn client_of(store: &std::sync::Arc<FakeStore>) -> super::StoreClient {
    let mut config = super::StoreConfig::new("http://fake.invalid");
    config.retry = super::RetryPolicy {
        initial: std::time::Duration::from_millis(1),
        max: std::time::Duration::from_millis(5),
        deadline: std::time::Duration::from_secs(2),
    };
    let mut client = super::StoreClient::with_transport(config, store.clone());
    client.set_token("root".to_string());
    client
}
