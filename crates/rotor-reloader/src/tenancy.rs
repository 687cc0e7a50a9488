//! Which paths the reloader watches for a workload, by the workload's namespace. Watching a
//! path tells the workload's namespace (through Events and rollouts) when that path rotates, and
//! makes the reloader poll it: so a team may only have watched what its own role may read. The
//! store's policies are not visible to the reloader, so the platform states the rule once, as
//! path patterns with a `{namespace}` placeholder, the way Vault policies are commonly templated.

/// Path patterns a workload's paths must match to be watched: exact, or a prefix ending in `*`;
/// `{namespace}` stands for the workload's namespace. No patterns: every path (one tenant).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchablePaths {
    patterns: Vec<String>,
}

impl WatchablePaths {
    /// From the `--watchable-paths` entries. An entry with whitespace, or empty once trimmed of
    /// `/`, is refused with the fix.
    pub fn parse(entries: &[String]) -> Result<Self, rotor_core::contract::SettingError> {
        let mut patterns = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let pattern = entry.trim_matches('/');
            if pattern.is_empty() || pattern == "*" || pattern.chars().any(char::is_whitespace) {
                return Err(rotor_core::contract::SettingError::new(
                    "--watchable-paths",
                    format!(
                        "--watchable-paths entry {entry:?}: expected a store path or a prefix ending in '*', \
                         with {{namespace}} for the workload's namespace (for example secret/data/{{namespace}}/*)"
                    ),
                ));
            }
            patterns.push(pattern.to_string());
        }
        Ok(Self { patterns })
    }

    /// Whether every path may be watched for every namespace.
    pub fn is_open(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a workload in `namespace` may have `path` watched.
    pub fn allows(&self, namespace: &str, path: &str) -> bool {
        if self.is_open() {
            return true;
        }
        let path = path.trim_matches('/');
        self.patterns.iter().any(|pattern| {
            let pattern = pattern.replace("{namespace}", namespace);
            match pattern.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == pattern,
            }
        })
    }

    /// The patterns as configured, for messages.
    pub fn describe(&self) -> String {
        self.patterns.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(entries: &[&str]) -> WatchablePaths {
        WatchablePaths::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_namespace_may_watch_only_its_own_paths() {
        let rule = rule(&[
            "secret/data/{namespace}/*",
            "kv/{namespace}/*",
            "shared/data/ca",
        ]);
        assert!(rule.allows("team-a", "secret/data/team-a/db"));
        assert!(rule.allows("team-a", "/kv/team-a/api/"));
        assert!(rule.allows("team-b", "shared/data/ca"));
        assert!(
            !rule.allows("team-a", "secret/data/team-b/db"),
            "another team's path"
        );
        assert!(
            !rule.allows("team-a", "secret/data/team-a-evil/db"),
            "a namespace that only starts alike"
        );
        assert!(
            !rule.allows("team-a", "shared/data/ca-key"),
            "exact entries are exact"
        );
        assert!(
            !rule.allows("team-a", "secret/data/team-a"),
            "the prefix needs its '/'"
        );
    }

    #[test]
    fn no_patterns_watch_everything_and_bad_entries_say_how_to_write_them() {
        assert!(rule(&[]).allows("any", "any/path"));
        for bad in ["*", "/", "secret/data/{namespace} /*"] {
            let err = WatchablePaths::parse(&[bad.to_string()]).unwrap_err();
            assert_eq!(err.setting, "--watchable-paths");
            assert!(err.message.contains("{namespace}"), "{err}");
        }
    }
}
