//! What a workload references, read once from its pod annotations and containers' env: which
//! containers rotor wraps, which paths it reads, and on which store. The webhook selects the
//! containers to wrap from this; the reloader watches the paths from it. Plain values only: the
//! callers turn their Kubernetes types into [`ContainerEnv`].

use std::collections::{BTreeMap, BTreeSet};

use super::annotations::{self, PREFIX, get};
use super::files::{
    FILES_CONTAINERS, FilesRequest, OnRotation, file_annotation, files_request, on_rotation,
};
use super::setting_error::SettingError;
use crate::reference::{ParseError, PathRef, Reference, parse_from_path, parse_value};

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
    /// The files the pod asks for (`rotor.dev/file.NAME`).
    pub files: Option<FilesRequest>,
    /// Indexes (into the containers given) of those that get the files.
    pub file_containers: Vec<usize>,
    /// The watched paths the files read.
    pub file_paths: BTreeSet<String>,
    pub on_rotation: OnRotation,
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
    #[error("{0}")]
    Files(SettingError),
    #[error(
        "rotor.dev/on-rotation is {mode}, but {} read at its current version in env only, and an environment cannot \
         change in a running process; read it from a file (rotor.dev/file.NAME), pin its version (vault:PATH#KEY#VERSION) \
         or use rotor.dev/on-rotation: rollout",
        describe_env_only(.paths)
    )]
    SignalEnvOnly { mode: String, paths: Vec<String> },
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
                count_and_watch(&mut count, r, &mut out.watched_paths)?;
            }
        }
        if referenced || !out.from_path.is_empty() {
            out.containers.push(index);
        }
    }
    let env_watched = out.watched_paths.clone();
    add_files(&mut out, annotations, containers, count)?;
    out.on_rotation = on_rotation(annotations).map_err(WorkloadError::Files)?;
    if let OnRotation::Signal(_) = out.on_rotation {
        let paths: Vec<String> = env_watched.difference(&out.file_paths).cloned().collect();
        if !paths.is_empty() {
            return Err(WorkloadError::SignalEnvOnly {
                mode: out.on_rotation.to_string(),
                paths,
            });
        }
    }
    Ok(out)
}

/// Counts `r` against the pod's cap and, when it reads a current version, watches its path.
fn count_and_watch(
    count: &mut usize,
    r: &Reference,
    watched: &mut BTreeSet<String>,
) -> Result<(), WorkloadError> {
    *count += 1;
    if *count > MAX_REFERENCES_PER_WORKLOAD {
        return Err(WorkloadError::TooMany {
            what: "references",
            limit: MAX_REFERENCES_PER_WORKLOAD,
        });
    }
    if !r.is_write() && !r.is_pinned() {
        watched.insert(r.path.clone());
    }
    Ok(())
}

fn describe_env_only(paths: &[String]) -> String {
    match paths {
        [one] => format!("{one} is"),
        many => format!("{} are", many.join(", ")),
    }
}

/// Reads the files a pod asks for: their references count toward the pod's cap, their
/// watched paths are watched, and the containers that get them are wrapped.
fn add_files(
    out: &mut WorkloadReferences,
    annotations: &BTreeMap<String, String>,
    containers: &[ContainerEnv<'_>],
    mut count: usize,
) -> Result<(), WorkloadError> {
    let Some(files) = files_request(annotations).map_err(WorkloadError::Files)? else {
        return Ok(());
    };
    for (name, template) in &files.files {
        let annotation = file_annotation(name);
        let template = parse_value(&annotation, template).map_err(|e| {
            let message = format!(
                "annotation {annotation}: reference {:?}: {}; expected {}",
                e.reference, e.problem, e.expected
            );
            WorkloadError::Files(SettingError::new(&annotation, message))
        })?;
        for r in template.iter().flat_map(|t| t.references()) {
            count_and_watch(&mut count, r, &mut out.file_paths)?;
        }
    }
    out.file_containers = match &files.containers {
        None => (0..containers.len()).collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                containers.iter().position(|c| c.name == n).ok_or_else(|| {
                    let annotation = format!("{PREFIX}{}", FILES_CONTAINERS.rotor);
                    let message = format!(
                        "annotation {annotation}: the pod has no container {n:?}; name containers of the pod"
                    );
                    WorkloadError::Files(SettingError::new(annotation, message))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    out.watched_paths.extend(out.file_paths.iter().cloned());
    let wrapped: BTreeSet<usize> = out
        .containers
        .iter()
        .chain(&out.file_containers)
        .copied()
        .collect();
    out.containers = wrapped.into_iter().collect();
    out.files = Some(files);
    Ok(())
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
    fn files_are_watched_wrap_their_containers_and_signal_refuses_env_only_paths() {
        let mut annotations = BTreeMap::from([
            (
                "rotor.dev/file.db.conf".to_string(),
                "pw=${vault:secret/data/db#pw} old=${vault:secret/data/old#k#2}".to_string(),
            ),
            (
                "rotor.dev/file.tls.key".to_string(),
                ">>vault:pki/issue/web#private_key".to_string(),
            ),
            ("rotor.dev/files-containers".to_string(), "web".to_string()),
            ("rotor.dev/on-rotation".to_string(), "signal".to_string()),
        ]);
        let containers = [
            c("side", &[("A", "vault:secret/data/db#user")]),
            c("web", &[("X", "plain")]),
            c("other", &[]),
        ];
        let refs = workload_references(&annotations, &containers).unwrap();
        assert_eq!(refs.containers, vec![0, 1]);
        assert_eq!(refs.file_containers, vec![1]);
        assert_eq!(
            refs.file_paths.iter().collect::<Vec<_>>(),
            vec!["secret/data/db"]
        );
        assert!(refs.watched_paths.contains("secret/data/db"));
        assert_eq!(
            refs.on_rotation,
            OnRotation::Signal(super::super::RotationSignal::Hup)
        );

        // A path read in env only cannot change in place: refused, naming it and the ways out.
        let env_only = [c("web", &[("T", "vault:secret/data/api#token")])];
        annotations.remove("rotor.dev/files-containers");
        let err = workload_references(&annotations, &env_only)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("rotor.dev/on-rotation is signal:SIGHUP, but secret/data/api is read")
                && err.contains("pin its version"),
            "{err}"
        );
        annotations.insert("rotor.dev/files-containers".to_string(), "nope".to_string());
        let err = workload_references(&annotations, &containers)
            .unwrap_err()
            .to_string();
        assert!(err.contains("the pod has no container \"nope\""), "{err}");
        let bad = BTreeMap::from([("rotor.dev/file.x".to_string(), "${vault:a#}".to_string())]);
        let err = workload_references(&bad, &containers)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("annotation rotor.dev/file.x: reference"),
            "{err}"
        );
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
