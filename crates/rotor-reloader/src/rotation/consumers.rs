//! The consumers of a rotation: the watched workloads of its namespace that read one of its
//! targets, and whether each runs the version written (its record holds that version or a later
//! one, and its rollout is complete).

use crate::decision::{Recorded, record_key, recorded};
use crate::workloads::{Kind, Workload};

use super::resource::TargetStatus;

/// Whether the path `path` as a workload spells it names the target (`canonical` on `mount`):
/// `secret/app/db` and `secret/data/app/db` are the same KV v2 secret.
pub fn names_target(path: &str, target: &Target) -> bool {
    path == target.canonical || path == target.data_path
}

/// A target as consumers may spell it.
pub struct Target {
    pub canonical: String,
    pub data_path: String,
    pub version: u64,
}

impl Target {
    /// From a target's status, whose path is canonical (`mount` + relative path).
    pub fn from_status(t: &TargetStatus, mount: &str) -> Self {
        let relative = t.path.strip_prefix(mount).unwrap_or(&t.path);
        Self {
            canonical: t.path.clone(),
            data_path: format!("{mount}data/{relative}"),
            version: t.version.unwrap_or_default(),
        }
    }
}

/// One consumer and whether it runs the version written.
pub struct Consumer {
    pub name: String,
    pub current: bool,
}

/// The consumers among `workloads` (those of the rotation's namespace), with `rolled_out` telling
/// whether a workload's rollout is complete.
pub fn consumers(
    workloads: &[Workload],
    namespace: &str,
    targets: &[Target],
    rolled_out: impl Fn(Kind, &str, &str) -> bool,
) -> Vec<Consumer> {
    let mut out = Vec::new();
    for w in workloads.iter().filter(|w| w.namespace == namespace) {
        let reads: Vec<(&String, &Target)> = w
            .paths
            .iter()
            .filter_map(|p| Some((p, targets.iter().find(|t| names_target(p, t))?)))
            .collect();
        if reads.is_empty() {
            continue;
        }
        let versions = match recorded(Some(&w.annotations)) {
            Recorded::Versions(v) => v,
            _ => Default::default(),
        };
        let recorded_new = reads.iter().all(|(path, target)| {
            versions
                .get(&record_key(path))
                .is_some_and(|v| *v >= target.version)
        });
        out.push(Consumer {
            name: format!("{}/{}", w.kind.as_str(), w.name),
            current: recorded_new && rolled_out(w.kind, &w.namespace, &w.name),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use k8s_openapi::api::core::v1::ObjectReference;
    use rotor_core::contract::{OnRotation, StoreChoice};

    use super::*;
    use crate::decision::OBSERVED;

    fn workload(name: &str, namespace: &str, path: &str, recorded: Option<u64>) -> Workload {
        let mut annotations = BTreeMap::new();
        if let Some(v) = recorded {
            annotations.insert(
                OBSERVED.to_string(),
                format!("{{\"{}\":{v}}}", record_key(path)),
            );
        }
        Workload {
            kind: Kind::Deployment,
            namespace: namespace.to_string(),
            name: name.to_string(),
            reference: ObjectReference::default(),
            annotations,
            paths: BTreeSet::from([path.to_string()]),
            store: StoreChoice::default(),
            started_at: None,
            not_watched: Vec::new(),
            uid: name.to_string(),
            generation: 1,
            resource_version: None,
            on_rotation: OnRotation::Rollout,
            selector: None,
        }
    }

    #[test]
    fn a_consumer_counts_as_moved_when_it_records_the_version_and_rolled_out() {
        let target = Target::from_status(
            &TargetStatus {
                path: "secret/shop/db".into(),
                mount: "secret/".into(),
                key: "password".into(),
                from_version: 3,
                version: Some(4),
            },
            "secret/",
        );
        assert!(names_target("secret/data/shop/db", &target));
        assert!(names_target("secret/shop/db", &target));
        assert!(!names_target("secret/data/shop/db2", &target));
        let workloads = vec![
            workload("moved", "shop", "secret/data/shop/db", Some(4)),
            workload("old", "shop", "secret/shop/db", Some(3)),
            workload("unrolled", "shop", "secret/data/shop/db", Some(5)),
            workload("never-seen", "shop", "secret/data/shop/db", None),
            workload("other-path", "shop", "secret/data/shop/api", Some(9)),
            workload("other-ns", "bank", "secret/data/shop/db", Some(4)),
        ];
        let list = consumers(&workloads, "shop", &[target], |_, _, name| {
            name != "unrolled"
        });
        let got: Vec<(&str, bool)> = list.iter().map(|c| (c.name.as_str(), c.current)).collect();
        assert_eq!(
            got,
            vec![
                ("Deployment/moved", true),
                ("Deployment/old", false),
                ("Deployment/unrolled", false),
                ("Deployment/never-seen", false),
            ]
        );
    }
}
