//! rotor-init's settings: the contract's `ROTOR_*` variables (rotor-core's [`InitSettings`]),
//! plus the files they name read here (CA bundle, token files), turned into a store
//! configuration and an auth method.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rotor_core::contract::{AuthMethod, CaSource, Credential, InitSettings, PROJECTED_TOKEN, var};
use rotor_core::store::{Auth, DEFAULT_SERVICE_ACCOUNT_TOKEN, RetryPolicy, StoreConfig};

#[derive(Debug)]
pub struct Settings {
    /// Everything the variables say (what to resolve, how to log, daemon mode).
    pub init: InitSettings,
    pub store: StoreConfig,
    pub auth: Auth,
}

/// A setting that cannot work; the message names the variable and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Reads the settings from `env` and the files they name.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let init = InitSettings::from_env(env).map_err(|e| ConfigError(e.to_string()))?;
        let mut store = StoreConfig::new(&init.addr);
        store.namespace = init.namespace.clone();
        store.ca_pem = match &init.ca {
            Some(CaSource::File(path)) => Some(read(var::CACERT, path)?.into_bytes()),
            Some(CaSource::Pem(pem)) => Some(pem.as_bytes().to_vec()),
            None => None,
        };
        store.retry = RetryPolicy {
            deadline: init.deadline,
            ..RetryPolicy::default()
        };
        store.request_timeout = init.request_timeout;
        let auth = auth_of(&init)?;
        Ok(Self { init, store, auth })
    }
}

fn auth_of(init: &InitSettings) -> Result<Auth, ConfigError> {
    let method = init.auth_method;
    let mount = || {
        init.auth_path
            .clone()
            .unwrap_or_else(|| method.default_mount().to_string())
    };
    // `from_env` has checked that each method has what it needs.
    let role = || init.role.clone().unwrap_or_default();
    let token_file = || {
        init.token_file
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                if Path::new(PROJECTED_TOKEN).exists() {
                    PathBuf::from(PROJECTED_TOKEN)
                } else {
                    PathBuf::from(DEFAULT_SERVICE_ACCOUNT_TOKEN)
                }
            })
    };
    let credential = |name: &str, c: &Option<Credential>| match c {
        Some(Credential::Value(v)) => Ok(v.clone()),
        Some(Credential::File(path)) => read(name, path),
        None => Err(ConfigError(format!("{name} is not set"))),
    };
    Ok(match method {
        AuthMethod::Kubernetes => Auth::Kubernetes {
            mount: mount(),
            role: role(),
            token_file: token_file(),
        },
        AuthMethod::Jwt => Auth::Jwt {
            mount: mount(),
            role: role(),
            token_file: token_file(),
        },
        AuthMethod::Token => Auth::Token(match (&init.token, &init.token_file) {
            (Some(token), _) => token.0.clone(),
            (None, Some(file)) => read(var::TOKEN_FILE, file)?,
            (None, None) => return Err(ConfigError(format!("{} is not set", var::TOKEN))),
        }),
        AuthMethod::AppRole => Auth::AppRole {
            mount: mount(),
            role_id: credential(var::APPROLE_ROLE_ID_FILE, &init.approle_role_id)?,
            secret_id: credential(var::APPROLE_SECRET_ID_FILE, &init.approle_secret_id)?,
        },
    })
}

/// A file named by `name`, trimmed.
fn read(name: &str, path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| ConfigError(format!("{name}={path}: cannot read it: {e}")))
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
    fn files_are_read_and_named_when_they_cannot_be() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s.abc\n").unwrap();
        let s = Settings::from_env(&env(&[
            ("ROTOR_ADDR", "https://a:8200"),
            ("ROTOR_AUTH_METHOD", "token"),
            ("ROTOR_TOKEN_FILE", token.to_str().unwrap()),
            ("ROTOR_CACERT_PEM", "-----BEGIN CERTIFICATE-----"),
        ]))
        .unwrap();
        assert!(matches!(&s.auth, Auth::Token(t) if t == "s.abc"));
        assert_eq!(
            s.store.ca_pem.as_deref(),
            Some(&b"-----BEGIN CERTIFICATE-----"[..])
        );
        let s = Settings::from_env(&env(&[
            ("ROTOR_ADDR", "http://a"),
            ("ROTOR_ROLE", "r"),
            ("ROTOR_AUTH_PATH", "auth/k8s-east/"),
        ]))
        .unwrap();
        assert!(matches!(&s.auth, Auth::Kubernetes { mount, .. } if mount == "k8s-east"));
        for (pairs, needle) in [
            (
                vec![("ROTOR_CACERT", "/nonexistent/ca.pem")],
                "ROTOR_CACERT=/nonexistent/ca.pem: cannot read it",
            ),
            (
                vec![
                    ("ROTOR_AUTH_METHOD", "approle"),
                    ("ROTOR_APPROLE_ROLE_ID", "id"),
                    ("ROTOR_APPROLE_SECRET_ID_FILE", "/nonexistent/secret"),
                ],
                "ROTOR_APPROLE_SECRET_ID_FILE=/nonexistent/secret",
            ),
        ] {
            let pairs: Vec<_> = [("ROTOR_ADDR", "http://a"), ("ROTOR_ROLE", "r")]
                .into_iter()
                .chain(pairs.iter().copied())
                .collect();
            let err = Settings::from_env(&env(&pairs)).unwrap_err().to_string();
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
    }
}
