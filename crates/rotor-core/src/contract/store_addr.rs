//! Store addresses as rotor compares them: parsed into scheme, host, port and path, so an
//! allowlist entry matches what a client would connect to, not a string prefix
//! (`https://vault:8200@attacker.example` starts with `https://vault:8200` and goes elsewhere).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreAddr {
    pub scheme: &'static str,
    /// Lowercase.
    pub host: String,
    /// Explicit, or the scheme's default.
    pub port: u16,
    /// Without a trailing slash; empty for none.
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{given:?}: {problem}; expected http(s)://HOST[:PORT][/PATH], for example https://vault.vault:8200"
)]
pub struct AddrError {
    pub given: String,
    pub problem: &'static str,
}

impl StoreAddr {
    pub fn parse(given: &str) -> Result<Self, AddrError> {
        let fail = |problem| AddrError {
            given: given.to_string(),
            problem,
        };
        if given.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("no whitespace or control characters"));
        }
        let (scheme, rest, default_port) = if let Some(rest) = given.strip_prefix("https://") {
            ("https", rest, 443)
        } else if let Some(rest) = given.strip_prefix("http://") {
            ("http", rest, 80)
        } else {
            return Err(fail("the scheme must be http:// or https://"));
        };
        if rest.contains(['?', '#']) {
            return Err(fail("no query or fragment"));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(fail("no user info (user@host)"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| fail("the port must be a number from 1 to 65535"))?;
                (host, port)
            }
            _ => (authority, default_port),
        };
        if host.is_empty() {
            return Err(fail("the host is missing"));
        }
        Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// Whether this address is allowed by `entry`: the same scheme, host and port, and the same
    /// path, or a path under the entry's when the entry ends in `*`. A host `*.example.svc`
    /// stands for exactly one label in front of `example.svc`.
    pub fn allowed_by(&self, entry: &str) -> bool {
        // An address is never a pattern: a wildcard entry's own text is no server.
        if self.host.contains('*') || self.path.contains('*') {
            return false;
        }
        let (entry, prefix) = match entry.strip_suffix('*') {
            Some(e) => (e, true),
            None => (entry, false),
        };
        let Ok(allowed) = Self::parse(entry.trim_end_matches('/')) else {
            return false;
        };
        let host_ok = match allowed.host.strip_prefix("*.") {
            Some(parent) => self
                .host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => allowed.host == self.host,
        };
        let same_server = host_ok && (allowed.scheme, allowed.port) == (self.scheme, self.port);
        let path_ok = if prefix {
            allowed.path.is_empty()
                || self.path == allowed.path
                || self.path.starts_with(&format!("{}/", allowed.path))
        } else {
            self.path == allowed.path
        };
        same_server && path_ok
    }
}

impl fmt::Display for StoreAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)?;
        if !self.path.is_empty() {
            write!(f, "/{}", self.path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowlist_compares_scheme_host_port_and_path() {
        let allowed =
            |addr: &str, entry: &str| StoreAddr::parse(addr).is_ok_and(|a| a.allowed_by(entry));
        // A wildcard entry's own text is not an address it allows (the adversarial pass).
        assert!(!allowed(
            "https://*.wild.example:8200",
            "https://*.wild.example:8200"
        ));
        assert!(!allowed("https://vault:8200/*", "https://vault:8200*"));
        assert!(allowed(
            "https://eu.wild.example:8200",
            "https://*.wild.example:8200"
        ));
        assert!(allowed(
            "https://vault.vault.svc:8200",
            "https://vault.vault.svc:8200"
        ));
        assert!(allowed(
            "https://Vault.vault.svc:8200/",
            "https://vault.vault.svc:8200*"
        ));
        assert!(allowed(
            "https://vault.vault.svc",
            "https://vault.vault.svc:443"
        ));
        assert!(allowed(
            "https://vault:8200/team-a",
            "https://vault:8200/team-a*"
        ));
        assert!(allowed(
            "https://vault:8200/team-a/x",
            "https://vault:8200/team-a*"
        ));
        // Look-alikes that a string prefix would admit.
        assert!(!allowed(
            "https://vault.vault.svc:8200@attacker.example",
            "https://vault.vault.svc:8200*"
        ));
        assert!(!allowed(
            "https://vault.vault.svc:82001",
            "https://vault.vault.svc:8200*"
        ));
        assert!(!allowed(
            "https://vault.vault.svc.attacker.example:8200",
            "https://vault.vault.svc*"
        ));
        assert!(!allowed(
            "http://vault.vault.svc:8200",
            "https://vault.vault.svc:8200*"
        ));
        assert!(!allowed(
            "https://vault:8200/team-ab",
            "https://vault:8200/team-a*"
        ));
        assert!(!allowed("https://vault:8200/x", "https://vault:8200"));
        // One leftmost label may be a wildcard.
        assert!(allowed(
            "https://bao.internal:8200",
            "https://*.internal:8200"
        ));
        assert!(!allowed(
            "https://a.bao.internal:8200",
            "https://*.internal:8200"
        ));
        assert!(!allowed("https://internal:8200", "https://*.internal:8200"));
        assert!(!allowed(
            "https://bao.internal.attacker.example:8200",
            "https://*.internal:8200"
        ));
    }

    #[test]
    fn malformed_addresses_say_what_is_wrong() {
        for (given, problem) in [
            ("vault:8200", "scheme"),
            ("https://", "host is missing"),
            ("https://a:0", "port"),
            ("https://a:port", "port"),
            ("https://u:p@a", "user info"),
            ("https://a/?x=1", "query"),
            ("https://a b", "whitespace"),
        ] {
            let err = StoreAddr::parse(given).unwrap_err().to_string();
            assert!(err.contains(problem), "{given}: {err}");
        }
    }
}
