//! Pod annotations rotor reads, with their Bank-Vaults equivalents so Bank-Vaults users migrate
//! without editing manifests. `rotor.dev/*` wins when both are set.

use std::collections::BTreeMap;

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
];

/// The value of `key`: `rotor.dev/<key>` first, then the Bank-Vaults spellings.
pub fn get<'a>(annotations: &'a BTreeMap<String, String>, key: &Key) -> Option<(&'a str, String)> {
    let rotor = format!("{PREFIX}{}", key.rotor);
    if let Some(v) = annotations.get(&rotor) {
        return Some((v.as_str(), rotor));
    }
    for bv in key.bank_vaults {
        for prefix in [BANZAI, BANK_VAULTS] {
            let name = format!("{prefix}{bv}");
            if let Some(v) = annotations.get(&name) {
                return Some((v.as_str(), name));
            }
        }
    }
    None
}

/// A boolean annotation: `Ok(None)` when absent, an error naming the annotation otherwise.
pub fn get_bool(annotations: &BTreeMap<String, String>, key: &Key) -> Result<Option<bool>, String> {
    match get(annotations, key) {
        None => Ok(None),
        Some((v, name)) => match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Some(true)),
            "false" | "0" | "no" | "skip" => Ok(Some(false)),
            _ => Err(format!(
                "annotation {name}={v:?}: expected \"true\" or \"false\""
            )),
        },
    }
}
