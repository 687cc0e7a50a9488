//! Table tests of the cycle planner: milliseconds, no API, no store.

use std::collections::BTreeMap;

use super::*;
use crate::decision::{OBSERVED, record_key};

const SETTINGS: PlanSettings = PlanSettings {
    settle: Duration::from_secs(5),
    max_rollouts_per_poll: 2,
};

pub(crate) fn workload(name: &str, paths: &[&str], record: Option<&str>) -> Workload {
    Workload {
        kind: Kind::Deployment,
        namespace: "shop".to_string(),
        name: name.to_string(),
        reference: Default::default(),
        annotations: record
            .map(|r| BTreeMap::from([(OBSERVED.to_string(), r.to_string())]))
            .unwrap_or_default(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        store: Default::default(),
        started_at: None,
        not_watched: Vec::new(),
        uid: format!("uid-{name}"),
        generation: 1,
        resource_version: Some("1".to_string()),
        on_rotation: Default::default(),
        selector: None,
    }
}

/// Plans with one store's versions for every workload.
fn plan_all(
    workloads: &[Workload],
    current: &HashMap<String, u64>,
    pending: &mut Pending,
    now: Instant,
    settings: PlanSettings,
) -> CyclePlan {
    let answer = StoreAnswer {
        versions: current.clone(),
        written: HashMap::new(),
    };
    let per_workload = vec![&answer; workloads.len()];
    plan_cycle(workloads, &per_workload, pending, now, settings)
}

fn current(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(p, v)| (p.to_string(), *v)).collect()
}

fn rolled(plan: &CyclePlan) -> Vec<usize> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::Roll { workload, .. } => Some(*workload),
            Step::Record { .. } => None,
        })
        .collect()
}

#[test]
fn first_sight_is_recorded_and_an_unchanged_workload_needs_nothing() {
    let t0 = Instant::now();
    let workloads = [
        workload("new", &["a"], None),
        workload("same", &["a"], Some(r#"{"a":1}"#)),
    ];
    let mut pending = Pending::new();
    let plan = plan_all(
        &workloads,
        &current(&[("a", 1)]),
        &mut pending,
        t0,
        SETTINGS,
    );
    assert_eq!(
        plan.steps,
        vec![Step::Record {
            workload: 0,
            versions: [(record_key("a"), 1)].into()
        }]
    );
    assert!(plan.detected.is_empty() && pending.is_empty() && plan.wake_within.is_none());
}

#[test]
fn a_rotation_waits_out_the_settle_window_then_rolls_once_for_all_its_paths() {
    let t0 = Instant::now();
    let workloads = [workload("web", &["a", "b"], Some(r#"{"a":1,"b":1}"#))];
    let mut pending = Pending::new();
    let plan = plan_all(
        &workloads,
        &current(&[("a", 2), ("b", 1)]),
        &mut pending,
        t0,
        SETTINGS,
    );
    assert_eq!(plan.detected, vec![0]);
    assert!(rolled(&plan).is_empty(), "inside the window");
    assert_eq!(plan.wake_within, Some(Duration::from_secs(5)));
    // Two seconds later b rotates too: still waiting, not detected again.
    let t2 = t0 + Duration::from_secs(2);
    let plan = plan_all(
        &workloads,
        &current(&[("a", 2), ("b", 2)]),
        &mut pending,
        t2,
        SETTINGS,
    );
    assert!(plan.detected.is_empty() && rolled(&plan).is_empty());
    assert_eq!(plan.wake_within, Some(Duration::from_secs(3)));
    // The window has passed: one rollout carrying both changes, timed from the first detection.
    let t5 = t0 + Duration::from_secs(5);
    let plan = plan_all(
        &workloads,
        &current(&[("a", 2), ("b", 2)]),
        &mut pending,
        t5,
        SETTINGS,
    );
    let [
        Step::Roll {
            reason: Reason::Rotated(changes),
            record,
            since,
            ..
        },
    ] = &plan.steps[..]
    else {
        panic!("{plan:?}")
    };
    assert_eq!(changes.len(), 2);
    assert_eq!(
        record,
        &Versions::from([(record_key("a"), 2), (record_key("b"), 2)])
    );
    assert_eq!(*since, t0);
}

#[test]
fn the_cap_defers_rollouts_to_the_next_cycle() {
    let t0 = Instant::now();
    let workloads: Vec<Workload> = (0..3)
        .map(|i| workload(&format!("w{i}"), &["a"], Some(r#"{"a":1}"#)))
        .collect();
    let settings = PlanSettings {
        settle: Duration::ZERO,
        max_rollouts_per_poll: 1,
    };
    let mut pending = Pending::new();
    let plan = plan_all(
        &workloads,
        &current(&[("a", 2)]),
        &mut pending,
        t0,
        settings,
    );
    assert_eq!(rolled(&plan), vec![0]);
    assert_eq!(plan.deferred, vec![1, 2]);
    assert_eq!(plan.detected, vec![0, 1, 2]);
    assert_eq!(plan.wake_within, Some(Duration::from_secs(1)));
}

#[test]
fn an_unreadable_record_rolls_at_once_and_says_why() {
    let t0 = Instant::now();
    let workloads = [workload("web", &["a"], Some("{truncated"))];
    let mut pending = Pending::new();
    let plan = plan_all(
        &workloads,
        &current(&[("a", 7)]),
        &mut pending,
        t0,
        SETTINGS,
    );
    let [
        Step::Roll {
            reason: Reason::UnreadableRecord(why),
            record,
            ..
        },
    ] = &plan.steps[..]
    else {
        panic!("{plan:?}")
    };
    assert!(why.contains(OBSERVED), "{why}");
    assert_eq!(record, &Versions::from([(record_key("a"), 7)]));
}

#[test]
fn pending_entries_go_with_their_workload_or_their_rotation() {
    let t0 = Instant::now();
    let web = workload("web", &["a"], Some(r#"{"a":1}"#));
    let mut pending = Pending::new();
    plan_all(
        std::slice::from_ref(&web),
        &current(&[("a", 2)]),
        &mut pending,
        t0,
        SETTINGS,
    );
    assert_eq!(pending.len(), 1);
    // Deleted: forgotten.
    plan_all(&[], &current(&[("a", 2)]), &mut pending, t0, SETTINGS);
    assert!(pending.is_empty());
    // Rolled back to the recorded version (or rolled by another replica): forgotten too.
    plan_all(
        std::slice::from_ref(&web),
        &current(&[("a", 2)]),
        &mut pending,
        t0,
        SETTINGS,
    );
    plan_all(
        std::slice::from_ref(&web),
        &current(&[("a", 1)]),
        &mut pending,
        t0,
        SETTINGS,
    );
    assert!(pending.is_empty());
}

#[test]
fn each_workload_follows_its_own_stores_versions() {
    let t0 = Instant::now();
    // The same path name on two stores, both recorded at version 1.
    let on_default = workload("on-default", &["a"], Some(r#"{"a":1}"#));
    let on_team = workload("on-team", &["a"], Some(r#"{"a":1}"#));
    let default_store = StoreAnswer {
        versions: current(&[("a", 1)]),
        written: HashMap::new(),
    };
    let team_store = StoreAnswer {
        versions: current(&[("a", 2)]),
        written: HashMap::new(),
    };
    let plan = plan_cycle(
        &[on_default, on_team],
        &[&default_store, &team_store],
        &mut Pending::new(),
        t0,
        PlanSettings {
            settle: Duration::ZERO,
            ..SETTINGS
        },
    );
    let rolled: Vec<usize> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Roll { workload, .. } => Some(*workload),
            _ => None,
        })
        .collect();
    assert_eq!(rolled, vec![1], "only the workload whose own store rotated");
}

#[test]
fn a_workload_first_seen_after_its_secret_rotated_rolls_once() {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    let t0 = Instant::now();
    let template_changed: Timestamp = "2026-11-30T10:00:00Z".parse().unwrap();
    let before = template_changed - SignedDuration::from_hours(1);
    let after = template_changed + SignedDuration::from_hours(1);
    let first_seen = |started_at| {
        let mut w = workload("web", &["a", "b"], None);
        w.started_at = started_at;
        w
    };
    let answer = |written_a| StoreAnswer {
        versions: current(&[("a", 3), ("b", 1)]),
        written: HashMap::from([("a".to_string(), written_a), ("b".to_string(), before)]),
    };
    let settings = PlanSettings {
        settle: Duration::ZERO,
        ..SETTINGS
    };
    let plan_one = |w: &Workload, a: &StoreAnswer| {
        plan_cycle(
            std::slice::from_ref(w),
            &[a],
            &mut Pending::new(),
            t0,
            settings,
        )
        .steps
    };
    // "a" was written after the pods' template last changed: its pods hold the older value.
    let steps = plan_one(&first_seen(Some(template_changed)), &answer(after));
    let [
        Step::Roll {
            reason: Reason::RotatedBeforeFirstSight(paths),
            record,
            ..
        },
    ] = steps.as_slice()
    else {
        panic!("{steps:?}")
    };
    assert_eq!(paths, &vec!["a".to_string()]);
    assert_eq!(
        record,
        &Versions::from([(record_key("a"), 3), (record_key("b"), 1)])
    );
    // Written before: recorded quietly, as any first sight.
    let steps = plan_one(&first_seen(Some(template_changed)), &answer(before));
    assert!(
        matches!(steps.as_slice(), [Step::Record { .. }]),
        "{steps:?}"
    );
    // No sign of when the template changed: recorded quietly.
    let steps = plan_one(&first_seen(None), &answer(after));
    assert!(
        matches!(steps.as_slice(), [Step::Record { .. }]),
        "{steps:?}"
    );
    // Already recorded: the record decides, not the timestamps.
    let mut known = workload("web", &["a", "b"], Some(r#"{"a":3,"b":1}"#));
    known.started_at = Some(template_changed);
    assert!(plan_one(&known, &answer(after)).is_empty());
    // A path the record lacks (polled in turns, or silent until now) is first seen now: the
    // same rule holds for it alone.
    let mut partial = workload("web", &["a", "b"], Some(r#"{"b":1}"#));
    partial.started_at = Some(template_changed);
    let steps = plan_one(&partial, &answer(after));
    assert!(
        matches!(steps.as_slice(), [Step::Roll { reason: Reason::RotatedBeforeFirstSight(p), .. }] if p == &vec!["a".to_string()]),
        "{steps:?}"
    );
    let steps = plan_one(&partial, &answer(before));
    assert!(
        matches!(steps.as_slice(), [Step::Record { .. }]),
        "{steps:?}"
    );
}

fn in_namespace(namespace: &str, name: &str, paths: &[&str], record: &str) -> Workload {
    let mut w = workload(name, paths, Some(record));
    w.namespace = namespace.to_string();
    w
}

#[test]
fn a_tenant_with_many_rollouts_due_takes_one_place_per_round() {
    let t0 = Instant::now();
    // Cache order puts the noisy tenant first (the old planner served it first every cycle).
    let mut workloads: Vec<Workload> = (0..4)
        .map(|i| in_namespace("noisy", &format!("n{i}"), &["noisy/a"], r#"{"noisy/a":1}"#))
        .collect();
    workloads.push(in_namespace("quiet", "q", &["quiet/b"], r#"{"quiet/b":1}"#));
    let settings = PlanSettings {
        settle: Duration::ZERO,
        max_rollouts_per_poll: 2,
    };
    let mut pending = Pending::new();
    let plan = plan_all(
        &workloads,
        &current(&[("noisy/a", 2), ("quiet/b", 2)]),
        &mut pending,
        t0,
        settings,
    );
    assert_eq!(rolled(&plan), vec![0, 4], "one of each tenant");
    assert_eq!(plan.deferred, vec![1, 2, 3]);
}

#[test]
fn the_rollout_waiting_longest_is_served_first() {
    let t0 = Instant::now();
    let workloads = vec![
        in_namespace("a", "late", &["p"], r#"{"p":1}"#),
        in_namespace("b", "early", &["q"], r#"{"q":1}"#),
    ];
    let settings = PlanSettings {
        settle: Duration::ZERO,
        max_rollouts_per_poll: 1,
    };
    let mut pending = Pending::new();
    // "early" became due a minute before "late" (both still pending from earlier cycles).
    pending.insert(workloads[1].key(), t0);
    pending.insert(workloads[0].key(), t0 + Duration::from_secs(60));
    let plan = plan_all(
        &workloads,
        &current(&[("p", 2), ("q", 2)]),
        &mut pending,
        t0 + Duration::from_secs(61),
        settings,
    );
    assert_eq!(rolled(&plan), vec![1]);
    assert_eq!(plan.deferred, vec![0]);
}
