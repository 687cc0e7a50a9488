//! The settings rotor-init runs with, as the webhook writes them (`to_env`) and rotor-init reads
//! them (`from_env`, with the standard `VAULT_*` / `BAO_*` variables as fallbacks). Parsing only:
//! files named here (CA bundle, tokens) are read by rotor-init itself.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::choices::name_list;
use super::choices::{AuthMethod, BOOL_EXPECTED, LogFormat, LogLevel, parse_bool};
use super::files::{
    DEFAULT_FILE_MODE, DEFAULT_FILES_DIR, OnRotation, POD_INFO_DIR, check_file_name, parse_mode,
};
use super::setting_error::SettingError;
use crate::reference::{PathRef, parse_from_path};

/// Every `ROTOR_*` variable rotor-init reads. The only place these names are written.
pub mod var {
    pub const ADDR: &str = "ROTOR_ADDR";
    pub const NAMESPACE: &str = "ROTOR_NAMESPACE";
    pub const CACERT: &str = "ROTOR_CACERT";
    pub const CACERT_PEM: &str = "ROTOR_CACERT_PEM";
    pub const DEADLINE: &str = "ROTOR_DEADLINE";
    pub const REQUEST_TIMEOUT: &str = "ROTOR_REQUEST_TIMEOUT";
    pub const AUTH_METHOD: &str = "ROTOR_AUTH_METHOD";
    pub const AUTH_PATH: &str = "ROTOR_AUTH_PATH";
    pub const ROLE: &str = "ROTOR_ROLE";
    pub const TOKEN_FILE: &str = "ROTOR_TOKEN_FILE";
    pub const TOKEN: &str = "ROTOR_TOKEN";
    pub const APPROLE_ROLE_ID: &str = "ROTOR_APPROLE_ROLE_ID";
    pub const APPROLE_SECRET_ID: &str = "ROTOR_APPROLE_SECRET_ID";
    pub const APPROLE_ROLE_ID_FILE: &str = "ROTOR_APPROLE_ROLE_ID_FILE";
    pub const APPROLE_SECRET_ID_FILE: &str = "ROTOR_APPROLE_SECRET_ID_FILE";
    pub const FROM_PATH: &str = "ROTOR_FROM_PATH";
    pub const CONCURRENCY: &str = "ROTOR_CONCURRENCY";
    pub const LOG_FORMAT: &str = "ROTOR_LOG_FORMAT";
    pub const LOG_LEVEL: &str = "ROTOR_LOG_LEVEL";
    pub const IGNORE_MISSING: &str = "ROTOR_IGNORE_MISSING";
    pub const PASSTHROUGH: &str = "ROTOR_PASSTHROUGH";
    pub const FROM_PATH_DENY: &str = "ROTOR_FROM_PATH_DENY";
    pub const DAEMON: &str = "ROTOR_DAEMON";
    pub const DAEMON_GRACE: &str = "ROTOR_DAEMON_GRACE";
    /// Signal mode: how long a re-issued file credential's old lease lives on before rotor-init
    /// revokes it (the app's time to move to the new one).
    pub const RENEW_GRACE: &str = "ROTOR_RENEW_GRACE";
    pub const FILES: &str = "ROTOR_FILES";
    pub const FILES_DIR: &str = "ROTOR_FILES_DIR";
    pub const FILES_MODE: &str = "ROTOR_FILES_MODE";
    pub const POD_INFO_DIR: &str = "ROTOR_POD_INFO_DIR";
    pub const ON_ROTATION: &str = "ROTOR_ON_ROTATION";
    /// The prefix every one of them shares: rotor-init removes all of them from the app's env.
    pub const PREFIX: &str = "ROTOR_";

    /// The ones a pod author may set in a container's own env: they tune rotor-init (logs,
    /// patience) but cannot change which store it trusts or who it logs in as. Every other
    /// `ROTOR_*` comes only from the webhook, which refuses a container that sets one.
    pub const POD_TUNABLE: &[&str] = &[
        LOG_LEVEL,
        LOG_FORMAT,
        DEADLINE,
        REQUEST_TIMEOUT,
        CONCURRENCY,
        DAEMON_GRACE,
        RENEW_GRACE,
    ];
}

/// Standard variables read when the `ROTOR_*` one is not set.
const ADDR_FALLBACKS: &[&str] = &["VAULT_ADDR", "BAO_ADDR"];
const NAMESPACE_FALLBACKS: &[&str] = &["VAULT_NAMESPACE", "BAO_NAMESPACE"];
const CACERT_FALLBACKS: &[&str] = &["VAULT_CACERT", "BAO_CACERT"];
/// Store tokens: read as fallbacks for token auth, and always removed from the app's env.
pub const CREDENTIAL_VARS: &[&str] = &["VAULT_TOKEN", "BAO_TOKEN"];

pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_DAEMON_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_RENEW_GRACE: Duration = Duration::from_secs(60);
pub const DEFAULT_CONCURRENCY: usize = 8;
pub const MAX_CONCURRENCY: usize = 256;

/// Where the store's CA bundle comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSource {
    /// A file path (`ROTOR_CACERT`, or `VAULT_CACERT`).
    File(String),
    /// The PEM itself (`ROTOR_CACERT_PEM`, which the webhook injects).
    Pem(String),
}

/// A credential given inline or as a file (`NAME` or `NAME_FILE`). `Debug` hides inline values.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Value(String),
    File(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value(<hidden>)"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// A value that `Debug` does not print.
#[derive(Clone, PartialEq, Eq)]
pub struct Hidden(pub String);

impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitSettings {
    pub addr: String,
    pub namespace: Option<String>,
    pub ca: Option<CaSource>,
    /// One deadline for all of rotor-init's store requests, retries included.
    pub deadline: Duration,
    pub request_timeout: Duration,
    pub auth_method: AuthMethod,
    /// The auth mount, without `auth/` (defaults to the method's name).
    pub auth_path: Option<String>,
    pub role: Option<String>,
    pub token_file: Option<String>,
    /// Token auth: the token itself (or else the token file holds it).
    pub token: Option<Hidden>,
    pub approle_role_id: Option<Credential>,
    pub approle_secret_id: Option<Credential>,
    pub from_path: Vec<PathRef>,
    pub concurrency: usize,
    pub log_format: LogFormat,
    pub log_level: LogLevel,
    pub ignore_missing: bool,
    /// Variables the app keeps although they are rotor's own or credentials.
    pub passthrough: Vec<String>,
    /// Names a from-path key may not become, besides the defaults (exact, or `PREFIX*`).
    pub from_path_deny: Vec<String>,
    pub daemon: bool,
    pub daemon_grace: Duration,
    /// Signal mode: how long a re-issued file credential's old lease lives on before revoking.
    pub renew_grace: Duration,
    /// The files to render (names; each template is read from `pod_info_dir/files/NAME`).
    pub files: Vec<String>,
    pub files_dir: String,
    pub files_mode: u32,
    /// The downward-API volume: file templates and the versions the reloader announces.
    pub pod_info_dir: String,
    pub on_rotation: OnRotation,
}

impl InitSettings {
    /// Settings for `addr` with every default.
    pub fn new(addr: &str, auth_method: AuthMethod) -> Self {
        Self {
            addr: addr.to_string(),
            namespace: None,
            ca: None,
            deadline: DEFAULT_DEADLINE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            auth_method,
            auth_path: None,
            role: None,
            token_file: None,
            token: None,
            approle_role_id: None,
            approle_secret_id: None,
            from_path: Vec::new(),
            concurrency: DEFAULT_CONCURRENCY,
            log_format: LogFormat::Plain,
            log_level: LogLevel::Info,
            ignore_missing: false,
            passthrough: Vec::new(),
            from_path_deny: Vec::new(),
            daemon: false,
            daemon_grace: DEFAULT_DAEMON_GRACE,
            renew_grace: DEFAULT_RENEW_GRACE,
            files: Vec::new(),
            files_dir: DEFAULT_FILES_DIR.to_string(),
            files_mode: DEFAULT_FILE_MODE,
            pod_info_dir: POD_INFO_DIR.to_string(),
            on_rotation: OnRotation::Rollout,
        }
    }

    /// The variables that carry these settings: the address, the auth method and the log format
    /// always, everything else only when it differs from the default.
    pub fn to_env(&self) -> Vec<(String, String)> {
        let mut out: Vec<(&str, String)> = vec![
            (var::ADDR, self.addr.clone()),
            (var::AUTH_METHOD, self.auth_method.to_string()),
            (var::LOG_FORMAT, self.log_format.to_string()),
        ];
        let mut optional = |name: &'static str, value: Option<String>| {
            if let Some(v) = value {
                out.push((name, v));
            }
        };
        let seconds =
            |d: Duration, default: Duration| (d != default).then(|| d.as_secs().to_string());
        optional(var::ROLE, self.role.clone());
        optional(var::AUTH_PATH, self.auth_path.clone());
        optional(var::TOKEN_FILE, self.token_file.clone());
        optional(var::NAMESPACE, self.namespace.clone());
        match &self.ca {
            Some(CaSource::File(path)) => optional(var::CACERT, Some(path.clone())),
            Some(CaSource::Pem(pem)) => optional(var::CACERT_PEM, Some(pem.clone())),
            None => {}
        }
        optional(var::DEADLINE, seconds(self.deadline, DEFAULT_DEADLINE));
        optional(
            var::REQUEST_TIMEOUT,
            seconds(self.request_timeout, DEFAULT_REQUEST_TIMEOUT),
        );
        optional(var::TOKEN, self.token.as_ref().map(|t| t.0.clone()));
        for (name, file_name, credential) in [
            (
                var::APPROLE_ROLE_ID,
                var::APPROLE_ROLE_ID_FILE,
                &self.approle_role_id,
            ),
            (
                var::APPROLE_SECRET_ID,
                var::APPROLE_SECRET_ID_FILE,
                &self.approle_secret_id,
            ),
        ] {
            match credential {
                Some(Credential::Value(v)) => optional(name, Some(v.clone())),
                Some(Credential::File(path)) => optional(file_name, Some(path.clone())),
                None => {}
            }
        }
        let from_path: Vec<String> = self.from_path.iter().map(PathRef::to_string).collect();
        optional(
            var::FROM_PATH,
            (!from_path.is_empty()).then(|| from_path.join(",")),
        );
        optional(
            var::CONCURRENCY,
            (self.concurrency != DEFAULT_CONCURRENCY).then(|| self.concurrency.to_string()),
        );
        optional(
            var::LOG_LEVEL,
            (self.log_level != LogLevel::Info).then(|| self.log_level.to_string()),
        );
        optional(
            var::IGNORE_MISSING,
            self.ignore_missing.then(|| "true".to_string()),
        );
        optional(
            var::PASSTHROUGH,
            (!self.passthrough.is_empty()).then(|| self.passthrough.join(",")),
        );
        optional(
            var::FROM_PATH_DENY,
            (!self.from_path_deny.is_empty()).then(|| self.from_path_deny.join(",")),
        );
        optional(var::DAEMON, self.daemon.then(|| "true".to_string()));
        optional(
            var::DAEMON_GRACE,
            seconds(self.daemon_grace, DEFAULT_DAEMON_GRACE),
        );
        optional(
            var::RENEW_GRACE,
            seconds(self.renew_grace, DEFAULT_RENEW_GRACE),
        );
        optional(
            var::FILES,
            (!self.files.is_empty()).then(|| self.files.join(",")),
        );
        optional(
            var::FILES_DIR,
            (self.files_dir != DEFAULT_FILES_DIR).then(|| self.files_dir.clone()),
        );
        optional(
            var::FILES_MODE,
            (self.files_mode != DEFAULT_FILE_MODE).then(|| format!("{:04o}", self.files_mode)),
        );
        optional(
            var::POD_INFO_DIR,
            (self.pod_info_dir != POD_INFO_DIR).then(|| self.pod_info_dir.clone()),
        );
        optional(
            var::ON_ROTATION,
            (self.on_rotation != OnRotation::Rollout).then(|| self.on_rotation.to_string()),
        );
        out.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Reads the settings from `env`, with the standard variables as fallbacks. Every error
    /// names the variable and the fix.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, SettingError> {
        let env = Env(env);
        let addr = env.first(var::ADDR, ADDR_FALLBACKS).ok_or_else(|| {
            SettingError::new(var::ADDR, format!(
                "no store address: set {} (or VAULT_ADDR / BAO_ADDR), for example https://vault.vault:8200",
                var::ADDR
            ))
        })?;
        check_addr(var::ADDR, addr)?;
        let auth_method = env.parsed(var::AUTH_METHOD, AuthMethod::Kubernetes)?;
        let mut settings = Self::new(addr, auth_method);
        settings.namespace = env
            .first(var::NAMESPACE, NAMESPACE_FALLBACKS)
            .map(str::to_string);
        settings.ca = env
            .get(var::CACERT)
            .map(|f| CaSource::File(f.to_string()))
            .or_else(|| {
                env.get(var::CACERT_PEM)
                    .map(|p| CaSource::Pem(p.to_string()))
            })
            .or_else(|| {
                env.first("", CACERT_FALLBACKS)
                    .map(|f| CaSource::File(f.to_string()))
            });
        settings.deadline = env.seconds(var::DEADLINE, DEFAULT_DEADLINE)?;
        settings.request_timeout = env.seconds(var::REQUEST_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)?;
        settings.auth_path = env
            .get(var::AUTH_PATH)
            .map(|p| p.trim_start_matches("auth/").trim_matches('/').to_string())
            .filter(|p| !p.is_empty());
        settings.role = env.get(var::ROLE).map(str::to_string);
        settings.token_file = env.get(var::TOKEN_FILE).map(str::to_string);
        settings.token = env
            .first(var::TOKEN, CREDENTIAL_VARS)
            .map(|t| Hidden(t.to_string()));
        settings.approle_role_id = env.credential(var::APPROLE_ROLE_ID, var::APPROLE_ROLE_ID_FILE);
        settings.approle_secret_id =
            env.credential(var::APPROLE_SECRET_ID, var::APPROLE_SECRET_ID_FILE);
        settings.check_auth()?;
        if let Some(list) = env.get(var::FROM_PATH) {
            settings.from_path = parse_from_path(var::FROM_PATH, list)
                .map_err(|e| SettingError::new(var::FROM_PATH, e.to_string()))?;
        }
        settings.concurrency = env.count(var::CONCURRENCY, DEFAULT_CONCURRENCY, MAX_CONCURRENCY)?;
        settings.log_format = env.parsed(var::LOG_FORMAT, LogFormat::Plain)?;
        settings.log_level = env.parsed(var::LOG_LEVEL, LogLevel::Info)?;
        settings.ignore_missing = env.flag(var::IGNORE_MISSING)?;
        settings.passthrough = env.get(var::PASSTHROUGH).map(name_list).unwrap_or_default();
        settings.from_path_deny = env
            .get(var::FROM_PATH_DENY)
            .map(name_list)
            .unwrap_or_default();
        settings.daemon = env.flag(var::DAEMON)?;
        settings.daemon_grace = env.seconds(var::DAEMON_GRACE, DEFAULT_DAEMON_GRACE)?;
        settings.renew_grace = env.seconds(var::RENEW_GRACE, DEFAULT_RENEW_GRACE)?;
        settings.files = env.get(var::FILES).map(name_list).unwrap_or_default();
        for name in &settings.files {
            check_file_name(name).map_err(|e| {
                SettingError::new(var::FILES, format!("{}: {}", var::FILES, e.message))
            })?;
        }
        if let Some(dir) = env.get(var::FILES_DIR) {
            settings.files_dir = absolute(var::FILES_DIR, dir)?;
        }
        if let Some(mode) = env.get(var::FILES_MODE) {
            settings.files_mode = parse_mode(var::FILES_MODE, mode)?;
        }
        if let Some(dir) = env.get(var::POD_INFO_DIR) {
            settings.pod_info_dir = absolute(var::POD_INFO_DIR, dir)?;
        }
        if let Some(mode) = env.get(var::ON_ROTATION) {
            settings.on_rotation = mode.parse().map_err(|e| {
                SettingError::new(var::ON_ROTATION, format!("{}={e}", var::ON_ROTATION))
            })?;
        }
        Ok(settings)
    }

    /// Each auth method has what it needs to log in.
    fn check_auth(&self) -> Result<(), SettingError> {
        let method = self.auth_method;
        let (setting, missing) = match method {
            AuthMethod::Kubernetes | AuthMethod::Jwt if self.role.is_none() => (
                var::ROLE,
                format!(
                    "{method} auth needs a role: set {} (annotation rotor.dev/vault-role)",
                    var::ROLE
                ),
            ),
            AuthMethod::Token if self.token.is_none() && self.token_file.is_none() => (
                var::TOKEN,
                format!(
                    "token auth needs {}, VAULT_TOKEN or {}",
                    var::TOKEN,
                    var::TOKEN_FILE
                ),
            ),
            AuthMethod::AppRole if self.approle_role_id.is_none() => (
                var::APPROLE_ROLE_ID,
                format!(
                    "approle auth needs {} or {}",
                    var::APPROLE_ROLE_ID,
                    var::APPROLE_ROLE_ID_FILE
                ),
            ),
            AuthMethod::AppRole if self.approle_secret_id.is_none() => (
                var::APPROLE_SECRET_ID,
                format!(
                    "approle auth needs {} or {}",
                    var::APPROLE_SECRET_ID,
                    var::APPROLE_SECRET_ID_FILE
                ),
            ),
            _ => return Ok(()),
        };
        Err(SettingError::new(setting, missing))
    }

    /// Whether `name` leaves the app's environment: every `ROTOR_*` variable and store token,
    /// unless the passthrough list names it.
    pub fn strips(&self, name: &str) -> bool {
        (name.starts_with(var::PREFIX) || CREDENTIAL_VARS.contains(&name))
            && !self.passthrough.iter().any(|p| p == name)
    }
}

/// An absolute path.
fn absolute(name: &str, dir: &str) -> Result<String, SettingError> {
    if dir.starts_with('/') {
        Ok(dir.to_string())
    } else {
        Err(SettingError::new(
            name,
            format!("{name}={dir:?}: expected an absolute directory"),
        ))
    }
}

/// A store address: an http:// or https:// URL with a host, no user info, query or fragment.
pub fn check_addr(name: &str, addr: &str) -> Result<(), SettingError> {
    super::store_addr::StoreAddr::parse(addr)
        .map(drop)
        .map_err(|e| SettingError::new(name, format!("{name}={e}")))
}

/// Lookups in the environment: trimmed, empty means unset.
struct Env<'a>(&'a HashMap<String, String>);

impl Env<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn first(&self, name: &str, fallbacks: &[&str]) -> Option<&str> {
        std::iter::once(&name)
            .chain(fallbacks)
            .find_map(|n| self.get(n))
    }

    fn credential(&self, name: &str, file_name: &str) -> Option<Credential> {
        self.get(name)
            .map(|v| Credential::Value(v.to_string()))
            .or_else(|| self.get(file_name).map(|f| Credential::File(f.to_string())))
    }

    fn parsed<T>(&self, name: &str, default: T) -> Result<T, SettingError>
    where
        T: std::str::FromStr<Err = super::choices::ChoiceError>,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| SettingError::new(name, format!("{name}={e}"))),
        }
    }

    fn flag(&self, name: &str) -> Result<bool, SettingError> {
        match self.get(name) {
            None => Ok(false),
            Some(v) => parse_bool(v).ok_or_else(|| {
                SettingError::new(name, format!("{name}={v:?}: expected {BOOL_EXPECTED}"))
            }),
        }
    }

    fn seconds(&self, name: &str, default: Duration) -> Result<Duration, SettingError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=86_400).contains(n))
                .map(Duration::from_secs)
                .ok_or_else(|| {
                    SettingError::new(
                        name,
                        format!("{name}={v:?}: expected a whole number of seconds from 1 to 86400"),
                    )
                }),
        }
    }

    fn count(&self, name: &str, default: usize, max: usize) -> Result<usize, SettingError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    SettingError::new(name, format!("{name}={v:?}: expected 1 to {max}"))
                }),
        }
    }
}

#[cfg(test)]
#[path = "init_settings_tests.rs"]
mod tests;
