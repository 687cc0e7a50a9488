//! The stores the reloader polls: the default one, and any other a workload's own
//! `rotor.dev/vault-addr` / `vault-namespace` names, when the webhook's allowlist admits it (the
//! same rule, so the reloader watches exactly the stores injected pods read from). One client
//! and one login per store; the reloader logs in to each with its own role.

use std::collections::BTreeMap;

use rotor_core::contract::{StoreAddr, StoreChoice};
use rotor_core::store::{Auth, StoreClient, StoreConfig, StoreError};

/// A workload's store that the reloader will not poll: neither the default store nor on the
/// allowlist (the webhook's own rule, so such a pod was never injected with it either).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "its store {addr} is neither the default store nor on the allowlist (--addr-allowlist, the chart's store.addrAllowlist)"
)]
pub struct StoreNotAllowed {
    pub addr: String,
}

/// A store: its address and namespace, the defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey {
    pub addr: String,
    pub namespace: Option<String>,
}

impl std::fmt::Display for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} (namespace {ns})", self.addr),
            None => f.write_str(&self.addr),
        }
    }
}

/// One store's client and whether it is logged in.
pub struct Store {
    pub client: StoreClient,
    pub logged_in: bool,
    /// Failed logins wait for this before the next attempt.
    pub login_backoff: crate::backoff::Backoff,
    /// Paths whose mount lookup failed, each waiting for its backoff.
    pub lookups: crate::backoff::Remembered<rotor_core::store::StoreError>,
    /// What listing each directory of this store cost, or that it cannot be listed.
    pub listings: crate::listing::Listings,
    /// Each namespace's paths are not polled again before this (the average request budget's
    /// rest after the requests its paths cost), so one tenant's per-path reads rest only it.
    pub rest_by_namespace: std::collections::HashMap<String, std::time::Instant>,
    /// Paths read with one request each by the last poll.
    pub last_read_per_path: std::collections::BTreeSet<String>,
    /// Which paths were read longest ago, so a poll that cannot read every path reads those.
    pub order: crate::poll::ReadOrder,
    /// The last version read of each watched path (and when it was written), the answer for a
    /// path whose turn did not come this poll.
    pub known: std::collections::HashMap<String, (u64, Option<k8s_openapi::jiff::Timestamp>)>,
    /// A poll that did not answer (deadline, store unreachable) makes the store wait this
    /// backoff before the next, so a store that hangs costs the others one deadline per
    /// backoff, not one per poll.
    pub poll_backoff: crate::backoff::Backoff,
}

impl Store {
    /// A store not logged in yet, with nothing remembered.
    pub fn new(client: StoreClient) -> Self {
        Self {
            client,
            logged_in: false,
            login_backoff: Default::default(),
            lookups: Default::default(),
            listings: Default::default(),
            rest_by_namespace: Default::default(),
            last_read_per_path: Default::default(),
            order: Default::default(),
            known: Default::default(),
            poll_backoff: Default::default(),
        }
    }
}

pub struct Stores {
    default: StoreKey,
    allowlist: Vec<String>,
    /// The settings every store's client starts from (timeouts, retries, CA).
    template: StoreConfig,
    pub auth: Auth,
    clients: BTreeMap<StoreKey, Store>,
}

impl Stores {
    pub fn new(template: StoreConfig, allowlist: Vec<String>, auth: Auth) -> Self {
        Self {
            default: StoreKey {
                addr: template.addr.clone(),
                namespace: template.namespace.clone(),
            },
            allowlist,
            template,
            auth,
            clients: BTreeMap::new(),
        }
    }

    /// The store a workload's pods read from, or why the reloader will not poll it.
    pub fn resolve(&self, choice: &StoreChoice) -> Result<StoreKey, StoreNotAllowed> {
        // One judgement with the webhook's (InjectConfig::addr_allowed): parsed scheme, host,
        // port and path, the default store first, so an address the webhook lets a pod use is
        // one the reloader watches, and one server is one client however it is spelled.
        let addr = match &choice.addr {
            None => self.default.addr.clone(),
            Some(addr) => match StoreAddr::parse(addr) {
                Ok(parsed) if parsed.allowed_by(&self.default.addr) => self.default.addr.clone(),
                Ok(parsed) if self.allowlist.iter().any(|entry| parsed.allowed_by(entry)) => {
                    parsed.to_string()
                }
                _ => return Err(StoreNotAllowed { addr: addr.clone() }),
            },
        };
        Ok(StoreKey {
            addr,
            namespace: choice
                .namespace
                .clone()
                .or_else(|| self.default.namespace.clone()),
        })
    }

    /// The store of `key` (built on first use), to poll in a task of its own; give it back
    /// with [`Stores::put_back`]. Taken twice without giving back, it starts anew.
    pub fn take(&mut self, key: &StoreKey) -> Result<Store, StoreError> {
        match self.clients.remove(key) {
            Some(store) => Ok(store),
            None => {
                let mut config = self.template.clone();
                config.addr = key.addr.clone();
                config.namespace = key.namespace.clone();
                Ok(Store::new(StoreClient::new(config)?))
            }
        }
    }

    /// Gives back a store taken to poll.
    pub fn put_back(&mut self, key: StoreKey, store: Store) {
        self.clients.insert(key, store);
    }

    /// Forgets the clients of stores no workload uses any more.
    pub fn retain(&mut self, used: &std::collections::BTreeSet<StoreKey>) {
        self.clients.retain(|key, _| used.contains(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores() -> Stores {
        let mut template = StoreConfig::new("https://vault.vault:8200");
        template.namespace = Some("root-ns".to_string());
        Stores::new(
            template,
            vec![
                "https://vault.team-a:8200".to_string(),
                "https://*.internal:8200".to_string(),
            ],
            Auth::Token("t".to_string()),
        )
    }

    fn choice(addr: Option<&str>, namespace: Option<&str>) -> StoreChoice {
        StoreChoice {
            addr: addr.map(str::to_string),
            namespace: namespace.map(str::to_string),
        }
    }

    #[test]
    fn a_workload_uses_its_own_allowed_store_or_the_default() {
        let s = stores();
        assert_eq!(
            s.resolve(&choice(None, None)).unwrap(),
            StoreKey {
                addr: "https://vault.vault:8200".into(),
                namespace: Some("root-ns".into())
            }
        );
        assert_eq!(
            s.resolve(&choice(Some("https://vault.team-a:8200/"), Some("team-a")))
                .unwrap(),
            StoreKey {
                addr: "https://vault.team-a:8200".into(),
                namespace: Some("team-a".into())
            }
        );
        assert_eq!(
            s.resolve(&choice(Some("https://vault.vault:8200/"), None))
                .unwrap()
                .addr,
            "https://vault.vault:8200",
            "the default spelled with a slash is the default"
        );
        assert!(
            s.resolve(&choice(Some("https://eu.internal:8200"), None))
                .is_ok()
        );
        // Spelled differently, judged as the webhook judges it: the same server.
        assert_eq!(
            s.resolve(&choice(Some("https://VAULT.vault:8200"), None))
                .unwrap()
                .addr,
            "https://vault.vault:8200"
        );
        let team = Stores::new(
            StoreConfig::new("https://vault.vault:8200"),
            vec!["https://vault.team-b".to_string()],
            Auth::Token("t".to_string()),
        );
        for spelling in ["https://vault.team-b:443", "https://Vault.Team-B/"] {
            assert_eq!(
                team.resolve(&choice(Some(spelling), None)).unwrap().addr,
                "https://vault.team-b:443",
                "{spelling}"
            );
        }
        let err = s
            .resolve(&choice(
                Some("https://vault.team-a:8200@evil.example"),
                None,
            ))
            .unwrap_err();
        assert_eq!(err.addr, "https://vault.team-a:8200@evil.example");
        assert!(err.to_string().contains("allowlist"), "{err}");
    }
}
