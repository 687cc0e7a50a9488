//! What a workload references, read once from its pod annotations and containers' env: which
//! containers rotor wraps, which paths it reads, and on which store. The webhook selects the
//! containers to wrap from this; the reloader watches the paths from it. Plain values only: the
//! callers turn their Kubernetes types into [`ContainerEnv`].

use std::collections::{BTreeMap, BTreeSet};

use super::annotations::{self, get};
use crate::reference::{ParseError, PathRef, parse_from_path, parse_value};

/// At most this many references (inline ones counted singly) in one pod or pod template.
pub const MAX_REFERENCES_PER_WORKLOAD: usize = 1024;
/// At most this many entries in a from-path list.
pub const MAX_FROM_PATHS: usize = 64;

/// One container's env as the pod spec writes it: `(name, value)` for each variable with a
/// literal value (variables from Secrets, ConfigMaps or fields have none).
#[derive(Clone, Debug, Default)]
pub struct ContainerEnv<'a> {
    pub name: &'a str,
    pub env: Vec<(&'a str, &'a str)>,
}

impl<'a> ContainerEnv<'a> {
    /// From `(name, value)` pairs, keeping those with a literal value.
    pub fn new(name: &'a str, env: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Self {
        Self {
            name,
            env: env.into_iter().filter_map(|(n, v)| Some((n, v?))).collect(),
        }
    }
}

/// The store a workload's pods use: the annotated address and namespace, `None` for the
/// webhook's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreChoice {
    pub addr: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadReferences {
    /// Indexes (into the containers given) of those rotor wraps: every one with a reference in
    /// its env, or every one when the from-path annotation names secrets.
    pub containers: Vec<usize>,
    /// The from-path secrets, as annotated.
    pub from_path: Vec<PathRef>,
    /// Paths read at their current version (not pinned, not `>>` writes): what a rotation of
    /// which should roll the workload.
    pub watched_paths: BTreeSet<String>,
    pub store: StoreChoice,
}

/// The error names the annotation or the container and variable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    #[error("annotation {}: entry {:?}: {}; expected {}", .0.var, .0.reference, .0.problem, .0.expected)]
    FromPath(ParseError),
    #[error("container {container:?}: {error}")]
    Reference {
        container: String,
        error: ParseError,
    },
    #[error(
        "the pod holds more than {limit} {what}; split the secrets over fewer, larger ones (a from-path secret gives every key) or over several workloads"
    )]
    TooMany { what: &'static str, limit: usize },
}

/// Reads what a workload references. Every env value is parsed once; a value that looks like a
/// reference and does not parse is an error naming the container and variable.
pub fn workload_references(
    annotations: &BTreeMap<String, String>,
    containers: &[ContainerEnv<'_>],
) -> Result<WorkloadReferences, WorkloadError> {
    let mut out = WorkloadReferences {
        store: StoreChoice {
            addr: get(annotations, &annotations::ADDR).map(|(v, _)| v.to_string()),
            namespace: get(annotations, &annotations::NAMESPACE).map(|(v, _)| v.to_string()),
        },
        ..WorkloadReferences::default()
    };
    if let Some((list, name)) = get(annotations, &annotations::FROM_PATH) {
        out.from_path = parse_from_path(&name, list).map_err(WorkloadError::FromPath)?;
        if out.from_path.len() > MAX_FROM_PATHS {
            return Err(WorkloadError::TooMany {
                what: "from-path entries",
                limit: MAX_FROM_PATHS,
            });
        }
        out.watched_paths.extend(
            out.from_path
                .iter()
                .filter(|p| p.version.is_none())
                .map(|p| p.path.clone()),
        );
    }
    let mut count = 0usize;
    for (index, container) in containers.iter().enumerate() {
        let mut referenced = false;
        for (var, value) in &container.env {
            let template = parse_value(var, value).map_err(|error| WorkloadError::Reference {
                container: container.name.to_string(),
                error,
            })?;
            for r in template.iter().flat_map(|t| t.references()) {
                referenced = true;
                count += 1;
                if count > MAX_REFERENCES_PER_WORKLOAD {
                    return Err(WorkloadError::TooMany {
                        what: "references",
                        limit: MAX_REFERENCES_PER_WORKLOAD,
                    });
                }
                if !r.is_write() && r.pinned_version().is_none() {
                    out.watched_paths.insert(r.path.clone());
                }
            }
        }
        if referenced || !out.from_path.is_empty() {
            out.containers.push(index);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c<'a>(name: &'a str, env: &[(&'a str, &'a str)]) -> ContainerEnv<'a> {
        ContainerEnv {
            name,
            env: env.to_vec(),
        }
    }

    #[test]
    fn containers_paths_and_store_of_a_workload() {
        let annotations = BTreeMap::from([
            (
                "vault.security.banzaicloud.io/vault-addr".to_string(),
                "https://team:8200".to_string(),
            ),
            (
                "rotor.dev/vault-namespace".to_string(),
                "team-a".to_string(),
            ),
        ]);
        let containers = [
            c("init", &[("F", "vault:kv/init#x")]),
            c("plain", &[("URL", "http://vault:8200"), ("P", "$5")]),
            c(
                "app",
                &[
                    ("A", "vault:secret/data/db#password"),
                    ("B", "x ${bao:secret/data/api#key} y"),
                    ("C", "vault:secret/data/old#k#2"),
                    ("D", ">>vault:database/creds/app#username"),
                ],
            ),
        ];
        let refs = workload_references(&annotations, &containers).unwrap();
        assert_eq!(refs.containers, vec![0, 2]);
        let watched: Vec<&str> = refs.watched_paths.iter().map(String::as_str).collect();
        assert_eq!(
            watched,
            vec!["kv/init", "secret/data/api", "secret/data/db"]
        );
        assert_eq!(refs.store.addr.as_deref(), Some("https://team:8200"));
        assert_eq!(refs.store.namespace.as_deref(), Some("team-a"));
    }

    #[test]
    fn from_path_wraps_every_container_and_errors_name_their_source() {
        let annotations = BTreeMap::from([(
            "rotor.dev/from-path".to_string(),
            "secret/data/all,secret/data/pinned#3".to_string(),
        )]);
        let containers = [c("a", &[]), c("b", &[("X", "y")])];
        let refs = workload_references(&annotations, &containers).unwrap();
        assert_eq!(refs.containers, vec![0, 1]);
        assert_eq!(refs.from_path.len(), 2);
        assert_eq!(
            refs.watched_paths.into_iter().collect::<Vec<_>>(),
            vec!["secret/data/all"]
        );

        let bad = [c("app", &[("DB", "vault:secret/data/db")])];
        let err = workload_references(&BTreeMap::new(), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("container \"app\": env DB"), "{err}");
        let bad_list = BTreeMap::from([("rotor.dev/from-path".to_string(), "a#x".to_string())]);
        let err = workload_references(&bad_list, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("annotation rotor.dev/from-path: entry \"a#x\": the version"),
            "{err}"
        );
    }
}
