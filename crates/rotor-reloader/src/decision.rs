//! What to do with one workload, given the versions it last rolled for (recorded in an
//! annotation on the workload's own metadata) and the store's current versions. Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The annotation holding `{key: version}` the workload last rolled for (or first saw), where
/// the key is [`record_key`] of the path: 16 hex characters, whatever the path's length, so a
/// workload's record stays far under the API server's 256 KiB limit on all annotations (1,088
/// paths, the most a pod may reference, take about 27 KiB).
pub const OBSERVED: &str = "rotor.dev/observed-versions";

/// The record's key for `path`: the first 8 bytes of its SHA-256, in hex.
pub fn record_key(path: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, path.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_record_key(key: &str) -> bool {
    key.len() == 16
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
/// The pod-template annotation whose change starts the rolling update.
pub const ROTATED_AT: &str = "rotor.dev/rotated-at";

/// Versions by [`record_key`] of the path.
pub type Versions = BTreeMap<String, u64>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub old: u64,
    pub new: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.
    Nothing,
    /// Record versions without rolling: first time seen, or a path added or removed.
    Record(Versions),
    /// Roll the workload and record the new versions in the same patch.
    Roll {
        changes: Vec<Change>,
        record: Versions,
    },
    /// The record cannot be read, so whether a rotation was missed is unknown: roll once and
    /// rewrite it (with a Warning Event saying why).
    Repair { reason: String, record: Versions },
}

/// What a workload's record annotation says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// No record: the workload is new to the reloader.
    Absent,
    /// A record that does not parse (truncated, edited by hand, a version that is not a number).
    Unreadable(String),
    Versions(Versions),
}

/// Reads the record annotation.
pub fn recorded(annotations: Option<&BTreeMap<String, String>>) -> Recorded {
    let Some(text) = annotations.and_then(|a| a.get(OBSERVED)) else {
        return Recorded::Absent;
    };
    match serde_json::from_str::<Versions>(text) {
        // Records written before keys were digests carry paths: read them as their keys.
        Ok(v) => Recorded::Versions(
            v.into_iter()
                .map(|(k, version)| {
                    let key = if is_record_key(&k) { k } else { record_key(&k) };
                    (key, version)
                })
                .collect(),
        ),
        Err(e) => Recorded::Unreadable(format!(
            "annotation {OBSERVED} ({} bytes) does not parse as {{path: version}}: {e}",
            text.len()
        )),
    }
}

/// Decides for a workload watching `watched`, given `current` versions (paths the store did not
/// answer for this time are absent: their recorded version is kept and they never roll).
pub fn decide(
    recorded: &Recorded,
    watched: &BTreeSet<String>,
    current: &HashMap<String, u64>,
) -> Decision {
    let recorded = match recorded {
        Recorded::Absent => None,
        Recorded::Versions(v) => Some(v),
        Recorded::Unreadable(reason) => {
            let record: Versions = watched
                .iter()
                .filter_map(|p| Some((record_key(p), *current.get(p)?)))
                .collect();
            // Wait until the store answers for every path, so the rewritten record is whole.
            return if record.len() == watched.len() && !record.is_empty() {
                Decision::Repair {
                    reason: reason.clone(),
                    record,
                }
            } else {
                Decision::Nothing
            };
        }
    };
    let mut record = Versions::new();
    let mut changes = Vec::new();
    for path in watched {
        let key = record_key(path);
        let old = recorded.and_then(|r| r.get(&key)).copied();
        match (old, current.get(path).copied()) {
            (Some(old), Some(new)) => {
                if old != new {
                    changes.push(Change {
                        path: path.clone(),
                        old,
                        new,
                    });
                }
                record.insert(key, new);
            }
            (None, Some(new)) => {
                record.insert(key, new);
            }
            (Some(old), None) => {
                record.insert(key, old);
            }
            (None, None) => {}
        }
    }
    let Some(recorded) = recorded else {
        return if record.is_empty() {
            Decision::Nothing
        } else {
            Decision::Record(record)
        };
    };
    if !changes.is_empty() {
        return Decision::Roll { changes, record };
    }
    if &record != recorded {
        Decision::Record(record)
    } else {
        Decision::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }
    fn map(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(p, v)| (p.to_string(), *v)).collect()
    }
    fn versions(pairs: &[(&str, u64)]) -> Versions {
        pairs.iter().map(|(p, v)| (record_key(p), *v)).collect()
    }

    #[test]
    fn first_sight_records_without_rolling() {
        let d = decide(
            &Recorded::Absent,
            &set(&["a", "b"]),
            &map(&[("a", 1), ("b", 4)]),
        );
        assert_eq!(d, Decision::Record(versions(&[("a", 1), ("b", 4)])));
        assert_eq!(
            decide(&Recorded::Absent, &set(&["a"]), &map(&[])),
            Decision::Nothing
        );
    }

    #[test]
    fn a_changed_version_rolls_once_and_the_record_makes_it_idempotent() {
        let rec = versions(&[("a", 1), ("b", 4)]);
        let d = decide(
            &Recorded::Versions(rec.clone()),
            &set(&["a", "b"]),
            &map(&[("a", 2), ("b", 5)]),
        );
        let Decision::Roll { changes, record } = d else {
            panic!("expected a rollout")
        };
        assert_eq!(changes.len(), 2, "two paths changed together: one rollout");
        assert_eq!(record, versions(&[("a", 2), ("b", 5)]));
        // After the patch the record says 2 and 5: no second rollout (a restarted reloader too).
        assert_eq!(
            decide(
                &Recorded::Versions(record.clone()),
                &set(&["a", "b"]),
                &map(&[("a", 2), ("b", 5)])
            ),
            Decision::Nothing
        );
    }

    #[test]
    fn unanswered_paths_keep_their_record_and_new_paths_are_recorded_quietly() {
        let rec = versions(&[("a", 1)]);
        assert_eq!(
            decide(&Recorded::Versions(rec.clone()), &set(&["a"]), &map(&[])),
            Decision::Nothing
        );
        assert_eq!(
            decide(
                &Recorded::Versions(rec.clone()),
                &set(&["a", "new"]),
                &map(&[("a", 1), ("new", 7)])
            ),
            Decision::Record(versions(&[("a", 1), ("new", 7)]))
        );
        // A path the workload no longer uses is dropped from the record, without a rollout.
        assert_eq!(
            decide(
                &Recorded::Versions(versions(&[("a", 1), ("gone", 3)])),
                &set(&["a"]),
                &map(&[("a", 1)])
            ),
            Decision::Record(versions(&[("a", 1)]))
        );
    }

    #[test]
    fn an_unreadable_record_rolls_once_and_is_rewritten() {
        for bad in [
            "{not json",
            r#"{"a":"3"}"#,
            r#"{"a":-1}"#,
            r#"{"a":99999999999999999999999}"#,
            "[]",
        ] {
            let annotations = BTreeMap::from([(OBSERVED.to_string(), bad.to_string())]);
            let rec = recorded(Some(&annotations));
            let Recorded::Unreadable(reason) = &rec else {
                panic!("{bad}: {rec:?}")
            };
            assert!(reason.contains(OBSERVED), "{reason}");
            match decide(&rec, &set(&["a"]), &map(&[("a", 4)])) {
                Decision::Repair { record, .. } => assert_eq!(record, versions(&[("a", 4)])),
                other => panic!("{bad}: {other:?}"),
            }
            // Not every path answered: wait rather than write a partial record.
            assert_eq!(
                decide(&rec, &set(&["a", "b"]), &map(&[("a", 4)])),
                Decision::Nothing
            );
        }
        // A record written with paths as keys (before digests) reads as the same versions.
        let by_path = BTreeMap::from([(OBSERVED.to_string(), r#"{"a":3}"#.to_string())]);
        assert_eq!(
            recorded(Some(&by_path)),
            Recorded::Versions(versions(&[("a", 3)]))
        );
        let by_key = serde_json::to_string(&versions(&[("a", 3)])).unwrap();
        let by_key = BTreeMap::from([(OBSERVED.to_string(), by_key)]);
        assert_eq!(recorded(Some(&by_key)), recorded(Some(&by_path)));
        assert_eq!(recorded(None), Recorded::Absent);
    }

    #[test]
    fn the_largest_record_stays_far_under_the_annotation_limit() {
        // The most paths a pod may reference, each 1 KiB long: the old path-keyed record
        // was over 1 MiB, which the API server refuses (256 KiB for all annotations).
        let paths: Vec<String> = (0..1088)
            .map(|i| format!("secret/data/{i:04}/{}", "p".repeat(1000)))
            .collect();
        let watched: BTreeSet<String> = paths.iter().cloned().collect();
        let current: HashMap<String, u64> = paths.iter().map(|p| (p.clone(), 12_345_678)).collect();
        let Decision::Record(record) = decide(&Recorded::Absent, &watched, &current) else {
            panic!("first sight records")
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(record.len(), 1088, "no two paths share a key");
        assert!(text.len() < 32 * 1024, "{} bytes", text.len());
        assert_eq!(record_key("secret/data/a").len(), 16);
    }
}
