//! rotor-init's settings, read from `ROTOR_*` env vars (standard `VAULT_*`/`BAO_*` as fallbacks).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use rotor_core::reference::{PathRef, parse_from_path};
use rotor_core::store::{Auth, DEFAULT_SERVICE_ACCOUNT_TOKEN, RetryPolicy, StoreConfig};

/// Where the webhook mounts the projected service-account token for rotor-init.
pub const PROJECTED_TOKEN: &str = "/var/run/secrets/rotor/token";

/// Env vars that carry store credentials: removed from the app's environment.
pub const CREDENTIAL_VARS: &[&str] = &["VAULT_TOKEN", "BAO_TOKEN"];

#[derive(Debug)]
pub struct Settings {
    pub store: StoreConfig,
    pub auth: Auth,
    pub from_path: Vec<PathRef>,
    pub ignore_missing: bool,
    pub passthrough: Vec<String>,
    pub daemon: bool,
    pub daemon_grace: Duration,
    pub concurrency: usize,
    pub json_logs: bool,
    pub log_level: tracing::Level,
}

/// A setting that cannot work; the message names the variable and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Reads the settings from `env`.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let first = |keys: &[&str]| keys.iter().find_map(|k| get(k).map(str::to_string));
        let flag = |k: &str| -> Result<bool, ConfigError> {
            match get(k) {
                None => Ok(false),
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => Ok(true),
                    "false" | "0" | "no" => Ok(false),
                    _ => Err(ConfigError(format!("{k}={v:?}: expected true or false"))),
                },
            }
        };
        let addr = first(&["ROTOR_ADDR", "VAULT_ADDR", "BAO_ADDR"]).ok_or_else(|| {
            ConfigError(
                "no store address: set ROTOR_ADDR (or VAULT_ADDR / BAO_ADDR), for example https://vault.vault:8200"
                    .to_string(),
            )
        })?;
        if !(addr.starts_with("https://") || addr.starts_with("http://")) {
            return Err(ConfigError(format!(
                "ROTOR_ADDR={addr:?}: expected an http:// or https:// URL"
            )));
        }
        let mut store = StoreConfig::new(&addr);
        store.namespace = first(&["ROTOR_NAMESPACE", "VAULT_NAMESPACE", "BAO_NAMESPACE"]);
        // A CA bundle file, or the PEM itself (the webhook injects ROTOR_CACERT_PEM).
        if let Some(ca) = get("ROTOR_CACERT") {
            let pem = std::fs::read(ca)
                .map_err(|e| ConfigError(format!("ROTOR_CACERT={ca}: cannot read it: {e}")))?;
            store.ca_pem = Some(pem);
        } else if let Some(pem) = get("ROTOR_CACERT_PEM") {
            store.ca_pem = Some(pem.as_bytes().to_vec());
        } else if let Some(ca) = first(&["VAULT_CACERT", "BAO_CACERT"]) {
            let pem = std::fs::read(&ca)
                .map_err(|e| ConfigError(format!("VAULT_CACERT={ca}: cannot read it: {e}")))?;
            store.ca_pem = Some(pem);
        }
        let seconds = |k: &str, default: u64| -> Result<Duration, ConfigError> {
            match get(k) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Duration::from_secs)
                    .ok_or_else(|| {
                        ConfigError(format!("{k}={v:?}: expected a positive number of seconds"))
                    }),
            }
        };
        store.retry = RetryPolicy {
            deadline: seconds("ROTOR_DEADLINE", 60)?,
            ..RetryPolicy::default()
        };
        store.request_timeout = seconds("ROTOR_REQUEST_TIMEOUT", 10)?;

        let method = get("ROTOR_AUTH_METHOD")
            .unwrap_or("kubernetes")
            .to_ascii_lowercase();
        let mount = get("ROTOR_AUTH_PATH")
            .map(|p| p.trim_start_matches("auth/").trim_matches('/').to_string());
        let role = || {
            first(&["ROTOR_ROLE"]).ok_or_else(|| {
                ConfigError(format!(
                    "{method} auth needs a role: set ROTOR_ROLE (annotation rotor.dev/vault-role)"
                ))
            })
        };
        let token_file = || {
            get("ROTOR_TOKEN_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    if std::path::Path::new(PROJECTED_TOKEN).exists() {
                        PathBuf::from(PROJECTED_TOKEN)
                    } else {
                        PathBuf::from(DEFAULT_SERVICE_ACCOUNT_TOKEN)
                    }
                })
        };
        let auth = match method.as_str() {
            "kubernetes" => Auth::Kubernetes {
                mount: mount.unwrap_or_else(|| "kubernetes".to_string()),
                role: role()?,
                token_file: token_file(),
            },
            "jwt" => Auth::Jwt {
                mount: mount.unwrap_or_else(|| "jwt".to_string()),
                role: role()?,
                token_file: token_file(),
            },
            "token" => {
                let token = match first(&["ROTOR_TOKEN", "VAULT_TOKEN", "BAO_TOKEN"]) {
                    Some(t) => t,
                    None => {
                        let file = get("ROTOR_TOKEN_FILE").ok_or_else(|| {
                            ConfigError(
                                "token auth needs ROTOR_TOKEN, VAULT_TOKEN or ROTOR_TOKEN_FILE"
                                    .to_string(),
                            )
                        })?;
                        std::fs::read_to_string(file)
                            .map_err(|e| {
                                ConfigError(format!("ROTOR_TOKEN_FILE={file}: cannot read it: {e}"))
                            })?
                            .trim()
                            .to_string()
                    }
                };
                Auth::Token(token)
            }
            "approle" => {
                let value_or_file = |k: &str| -> Result<String, ConfigError> {
                    if let Some(v) = get(k) {
                        return Ok(v.to_string());
                    }
                    let fk = format!("{k}_FILE");
                    let file = get(&fk)
                        .ok_or_else(|| ConfigError(format!("approle auth needs {k} or {fk}")))?;
                    std::fs::read_to_string(file)
                        .map(|s| s.trim().to_string())
                        .map_err(|e| ConfigError(format!("{fk}={file}: cannot read it: {e}")))
                };
                Auth::AppRole {
                    mount: mount.unwrap_or_else(|| "approle".to_string()),
                    role_id: value_or_file("ROTOR_APPROLE_ROLE_ID")?,
                    secret_id: value_or_file("ROTOR_APPROLE_SECRET_ID")?,
                }
            }
            other => {
                return Err(ConfigError(format!(
                    "ROTOR_AUTH_METHOD={other:?}: expected kubernetes, jwt, token or approle"
                )));
            }
        };
        let from_path = match get("ROTOR_FROM_PATH") {
            Some(list) => {
                parse_from_path("ROTOR_FROM_PATH", list).map_err(|e| ConfigError(e.to_string()))?
            }
            None => Vec::new(),
        };
        let concurrency = match get("ROTOR_CONCURRENCY") {
            None => 8,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=256).contains(n))
                .ok_or_else(|| {
                    ConfigError(format!("ROTOR_CONCURRENCY={v:?}: expected 1 to 256"))
                })?,
        };
        let json_logs = match get("ROTOR_LOG_FORMAT").unwrap_or("plain") {
            "json" => true,
            "plain" | "text" => false,
            other => {
                return Err(ConfigError(format!(
                    "ROTOR_LOG_FORMAT={other:?}: expected plain or json"
                )));
            }
        };
        let log_level = match get("ROTOR_LOG_LEVEL")
            .unwrap_or("info")
            .to_ascii_lowercase()
            .as_str()
        {
            "error" => tracing::Level::ERROR,
            "warn" | "warning" => tracing::Level::WARN,
            "info" => tracing::Level::INFO,
            "debug" => tracing::Level::DEBUG,
            "trace" => tracing::Level::TRACE,
            other => {
                return Err(ConfigError(format!(
                    "ROTOR_LOG_LEVEL={other:?}: expected error, warn, info, debug or trace"
                )));
            }
        };
        Ok(Self {
            store,
            auth,
            from_path,
            ignore_missing: flag("ROTOR_IGNORE_MISSING")?,
            passthrough: get("ROTOR_PASSTHROUGH")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            daemon: flag("ROTOR_DAEMON")?,
            daemon_grace: seconds("ROTOR_DAEMON_GRACE", 10)?,
            concurrency,
            json_logs,
            log_level,
        })
    }

    /// Whether `name` leaves the app's environment: every `ROTOR_*` and store token, unless
    /// the passthrough list names it.
    pub fn strips(&self, name: &str) -> bool {
        (name.starts_with("ROTOR_") || CREDENTIAL_VARS.contains(&name))
            && !self.passthrough.iter().any(|p| p == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_rotor_vars_with_vault_fallbacks() {
        let s = Settings::from_env(&env(&[
            ("VAULT_ADDR", "http://127.0.0.1:8200"),
            ("ROTOR_ROLE", "app"),
        ]))
        .unwrap();
        assert_eq!(s.store.addr, "http://127.0.0.1:8200");
        assert_eq!(s.auth.method(), "kubernetes");
        let s = Settings::from_env(&env(&[
            ("ROTOR_ADDR", "https://a:8200"),
            ("VAULT_ADDR", "https://b:8200"),
            ("ROTOR_AUTH_METHOD", "token"),
            ("VAULT_TOKEN", "t"),
            ("ROTOR_PASSTHROUGH", "VAULT_TOKEN, ROTOR_ADDR"),
            ("ROTOR_DEADLINE", "5"),
        ]))
        .unwrap();
        assert_eq!(s.store.addr, "https://a:8200");
        assert_eq!(s.store.retry.deadline, Duration::from_secs(5));
        assert!(!s.strips("VAULT_TOKEN"));
        assert!(!s.strips("ROTOR_ADDR"));
        assert!(s.strips("ROTOR_ROLE"));
        assert!(s.strips("BAO_TOKEN"));
        assert!(!s.strips("VAULT_ADDR"));
    }

    #[test]
    fn the_ca_comes_from_a_file_or_inline_pem() {
        let s = Settings::from_env(&env(&[
            ("ROTOR_ADDR", "https://a:8200"),
            ("ROTOR_ROLE", "r"),
            ("ROTOR_CACERT_PEM", "-----BEGIN CERTIFICATE-----"),
        ]))
        .unwrap();
        assert_eq!(
            s.store.ca_pem.as_deref(),
            Some(&b"-----BEGIN CERTIFICATE-----"[..])
        );
        assert!(s.strips("ROTOR_CACERT_PEM"));
    }

    #[test]
    fn bad_settings_name_the_variable_and_the_fix() {
        for (pairs, needle) in [
            (vec![], "set ROTOR_ADDR"),
            (
                vec![("ROTOR_ADDR", "vault:8200")],
                "expected an http:// or https:// URL",
            ),
            (vec![("ROTOR_ADDR", "http://a")], "set ROTOR_ROLE"),
            (
                vec![("ROTOR_ADDR", "http://a"), ("ROTOR_AUTH_METHOD", "ldap")],
                "expected kubernetes, jwt, token or approle",
            ),
            (
                vec![
                    ("ROTOR_ADDR", "http://a"),
                    ("ROTOR_ROLE", "r"),
                    ("ROTOR_DEADLINE", "soon"),
                ],
                "ROTOR_DEADLINE",
            ),
            (
                vec![
                    ("ROTOR_ADDR", "http://a"),
                    ("ROTOR_ROLE", "r"),
                    ("ROTOR_DAEMON", "maybe"),
                ],
                "ROTOR_DAEMON",
            ),
            (
                vec![
                    ("ROTOR_ADDR", "http://a"),
                    ("ROTOR_ROLE", "r"),
                    ("ROTOR_FROM_PATH", "a#x"),
                ],
                "ROTOR_FROM_PATH",
            ),
            (
                vec![
                    ("ROTOR_ADDR", "http://a"),
                    ("ROTOR_ROLE", "r"),
                    ("ROTOR_CACERT", "/nonexistent/ca.pem"),
                ],
                "ROTOR_CACERT",
            ),
        ] {
            let err = Settings::from_env(&env(&pairs)).unwrap_err().to_string();
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
    }
}
