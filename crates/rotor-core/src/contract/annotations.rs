//! Pod annotations rotor reads, with their Bank-Vaults equivalents so Bank-Vaults users migrate
//! without editing manifests. `rotor.dev/*` wins when both are set.

use std::collections::BTreeMap;

use super::choices::{BOOL_EXPECTED, parse_bool};
use super::setting_error::SettingError;

pub const PREFIX: &str = "rotor.dev/";
const BANZAI: &str = "vault.security.banzaicloud.io/";
const BANK_VAULTS: &str = "secrets-webhook.security.bank-vaults.io/";

/// One setting: its rotor key and the Bank-Vaults keys that mean the same.
pub struct Key {
    pub rotor: &'static str,
    pub bank_vaults: &'static [&'static str],
}

pub const INJECT: Key = Key {
    rotor: "inject",
    bank_vaults: &[],
};
pub const ADDR: Key = Key {
    rotor: "vault-addr",
    bank_vaults: &["vault-addr"],
};
pub const ROLE: Key = Key {
    rotor: "vault-role",
    bank_vaults: &["vault-role"],
};
pub const AUTH_PATH: Key = Key {
    rotor: "vault-auth-path",
    bank_vaults: &["vault-path"],
};
pub const AUTH_METHOD: Key = Key {
    rotor: "vault-auth-method",
    bank_vaults: &["vault-auth-method"],
};
pub const NAMESPACE: Key = Key {
    rotor: "vault-namespace",
    bank_vaults: &["vault-namespace"],
};
pub const FROM_PATH: Key = Key {
    rotor: "from-path",
    bank_vaults: &["vault-env-from-path"],
};
pub const IGNORE_MISSING: Key = Key {
    rotor: "ignore-missing",
    bank_vaults: &["vault-ignore-missing-secrets"],
};
pub const PASSTHROUGH: Key = Key {
    rotor: "passthrough",
    bank_vaults: &["vault-env-passthrough"],
};
pub const DAEMON: Key = Key {
    rotor: "daemon",
    bank_vaults: &["vault-env-daemon"],
};
pub const RELOAD: Key = Key {
    rotor: "reload",
    bank_vaults: &[],
};
/// Per-pod choice of how rotor-init reaches the pod (`copy` or `image-volume`), over the
/// webhook's `--init-binary-source`.
pub const INIT_BINARY_SOURCE: Key = Key {
    rotor: "init-binary-source",
    bank_vaults: &[],
};
pub const MUTATE: Key = Key {
    rotor: "mutate",
    bank_vaults: &["mutate"],
};

/// Every key, for the documentation table.
pub const ALL: &[&Key] = &[
    &INJECT,
    &ADDR,
    &ROLE,
    &AUTH_PATH,
    &AUTH_METHOD,
    &NAMESPACE,
    &FROM_PATH,
    &IGNORE_MISSING,
    &PASSTHROUGH,
    &DAEMON,
    &RELOAD,
    &INIT_BINARY_SOURCE,
];

/// The value of `key`: `rotor.dev/<key>` first, then the Bank-Vaults spellings. Compares the
/// names in place (no key is built per lookup: this runs for every setting of every pod).
pub fn get<'a>(annotations: &'a BTreeMap<String, String>, key: &Key) -> Option<(&'a str, String)> {
    if annotations.is_empty() {
        return None;
    }
    let named = |prefix: &str, suffix: &str| {
        annotations
            .iter()
            .find(|(name, _)| name.strip_prefix(prefix).is_some_and(|rest| rest == suffix))
    };
    let found = named(PREFIX, key.rotor).or_else(|| {
        key.bank_vaults.iter().find_map(|bv| {
            [BANZAI, BANK_VAULTS]
                .into_iter()
                .find_map(|prefix| named(prefix, bv))
        })
    });
    found.map(|(name, value)| (value.as_str(), name.clone()))
}

/// A boolean annotation: `Ok(None)` when absent, an error naming the annotation otherwise.
pub fn get_bool(
    annotations: &BTreeMap<String, String>,
    key: &Key,
) -> Result<Option<bool>, SettingError> {
    match get(annotations, key) {
        None => Ok(None),
        Some((v, name)) => parse_bool(v).map(Some).ok_or_else(|| {
            let message = format!("annotation {name}={v:?}: expected {BOOL_EXPECTED}");
            SettingError::new(name, message)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotor_keys_win_over_bank_vaults_spellings_and_booleans_name_the_annotation() {
        let a = BTreeMap::from([
            (
                "vault.security.banzaicloud.io/vault-addr".to_string(),
                "https://bv:8200".to_string(),
            ),
            (
                "secrets-webhook.security.bank-vaults.io/vault-role".to_string(),
                "bv".to_string(),
            ),
            ("rotor.dev/vault-role".to_string(), "mine".to_string()),
            (
                "vault.security.banzaicloud.io/mutate".to_string(),
                "skip".to_string(),
            ),
            ("rotor.dev/daemon".to_string(), "perhaps".to_string()),
        ]);
        assert_eq!(get(&a, &ADDR).map(|(v, _)| v), Some("https://bv:8200"));
        assert_eq!(
            get(&a, &ROLE),
            Some(("mine", "rotor.dev/vault-role".to_string()))
        );
        assert_eq!(get_bool(&a, &MUTATE), Ok(Some(false)));
        assert_eq!(get_bool(&a, &RELOAD), Ok(None));
        let err = get_bool(&a, &DAEMON).unwrap_err();
        assert_eq!(err.setting, "rotor.dev/daemon");
        let err = err.message;
        assert!(
            err.contains("rotor.dev/daemon=\"perhaps\"") && err.contains("true or false"),
            "{err}"
        );
    }
}
