//! One poll cycle's decisions, over plain values and an injected clock: which workloads get their
//! versions recorded, which roll (after the settle window, within the rollout cap), which wait.
//! The controller polls, calls [`plan_cycle`], applies the steps and publishes what happened.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::decision::{Change, Decision, Recorded, Versions, decide, record_key, recorded};
use crate::workloads::{Kind, Workload};

/// A workload's identity across polls.
pub type Key = (Kind, String, String);

/// When each workload with a pending rollout first had one (the settle window starts there).
pub type Pending = HashMap<Key, Instant>;

#[derive(Clone, Copy, Debug)]
pub struct PlanSettings {
    pub settle: Duration,
    pub max_rollouts_per_poll: usize,
}

/// Why a workload rolls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Rotated(Vec<Change>),
    /// Its record could not be read (the text says why): rolled once, record rewritten.
    UnreadableRecord(String),
    /// First seen with paths whose current version was written after its pods' template last
    /// changed: its pods started with the older values, so it rolls once.
    RotatedBeforeFirstSight(Vec<String>),
}

/// What one store answered in a poll: the current versions, and when each was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreAnswer {
    pub versions: HashMap<String, u64>,
    pub written: HashMap<String, k8s_openapi::jiff::Timestamp>,
}

/// How far the store's clock and the API server's may disagree: a version written within this
/// of the template's change is taken as older, so skew never rolls a workload on first sight.
const CLOCK_TOLERANCE: k8s_openapi::jiff::SignedDuration =
    k8s_openapi::jiff::SignedDuration::from_secs(10);

/// The paths of a workload first seen now whose current version was written after its pods'
/// template last changed (`started_at`): those pods hold an older value.
fn rotated_before_first_sight(workload: &Workload, answer: &StoreAnswer) -> Vec<String> {
    let Some(started) = workload.started_at else {
        return Vec::new();
    };
    workload
        .paths
        .iter()
        .filter(|p| {
            answer
                .written
                .get(*p)
                .is_some_and(|written| *written > started + CLOCK_TOLERANCE)
        })
        .cloned()
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Write the record without rolling (first sight, a path added or removed).
    Record { workload: usize, versions: Versions },
    /// Roll and write the record in the same conditional patch.
    Roll {
        workload: usize,
        reason: Reason,
        record: Versions,
        /// When the rollout became pending (for the detection-to-patch metric).
        since: Instant,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CyclePlan {
    pub steps: Vec<Step>,
    /// Workloads whose rotation was first seen in this cycle.
    pub detected: Vec<usize>,
    /// Workloads due to roll but held back by the rollout cap (served fairly: see `fair_order`).
    pub deferred: Vec<usize>,
    /// The wait before the next cycle should not exceed this (settle windows, deferrals).
    pub wake_within: Option<Duration>,
}

/// Plans one cycle for `workloads` given each one's store's `current` versions (`current[i]`
/// for `workloads[i]`; paths that did not answer are absent). `pending` carries
/// first-detection times between cycles; entries of workloads that no longer exist or no longer
/// need a rollout are dropped.
pub fn plan_cycle(
    workloads: &[Workload],
    current: &[&StoreAnswer],
    pending: &mut Pending,
    now: Instant,
    settings: PlanSettings,
) -> CyclePlan {
    let live: BTreeSet<Key> = workloads.iter().map(Workload::key).collect();
    pending.retain(|k, _| live.contains(k));
    let mut plan = CyclePlan::default();
    let wake = |d: Duration, plan: &mut CyclePlan| {
        plan.wake_within = Some(plan.wake_within.map_or(d, |w| w.min(d)));
    };
    let mut due = Vec::new();
    let nothing_answered = StoreAnswer::default();
    for (index, workload) in workloads.iter().enumerate() {
        let key = workload.key();
        let answer = current.get(index).copied().unwrap_or(&nothing_answered);
        let record_now = recorded(Some(&workload.annotations));
        let (reason, record) = match decide(&record_now, &workload.paths, &answer.versions) {
            Decision::Nothing => {
                pending.remove(&key);
                continue;
            }
            Decision::Record(versions) => {
                // First sight of the workload, or of a path the record lacks (its namespace's
                // paths are polled in turns, or it did not answer before): a version written
                // after the pods' template changed means the pods hold an older value.
                let stale = match &record_now {
                    Recorded::Absent => rotated_before_first_sight(workload, answer),
                    Recorded::Versions(old) => rotated_before_first_sight(workload, answer)
                        .into_iter()
                        .filter(|p| !old.contains_key(&record_key(p)))
                        .collect(),
                    Recorded::Unreadable(_) => Vec::new(),
                };
                if stale.is_empty() {
                    plan.steps.push(Step::Record {
                        workload: index,
                        versions,
                    });
                    continue;
                }
                (Reason::RotatedBeforeFirstSight(stale), versions)
            }
            Decision::Roll { changes, record } => (Reason::Rotated(changes), record),
            Decision::Repair { reason, record } => (Reason::UnreadableRecord(reason), record),
        };
        let since = *pending.entry(key).or_insert_with(|| {
            plan.detected.push(index);
            now
        });
        // An unreadable record is not a rotation in progress: nothing to settle.
        let settle = match reason {
            Reason::Rotated(_) | Reason::RotatedBeforeFirstSight(_) => settings.settle,
            Reason::UnreadableRecord(_) => Duration::ZERO,
        };
        let waited = now.saturating_duration_since(since);
        if waited < settle {
            wake(settle - waited, &mut plan);
            continue;
        }
        due.push(Step::Roll {
            workload: index,
            reason,
            record,
            since,
        });
    }
    let cap = settings.max_rollouts_per_poll.max(1);
    for (served, step) in fair_order(due, workloads).into_iter().enumerate() {
        if served < cap {
            plan.steps.push(step);
        } else if let Step::Roll { workload, .. } = step {
            plan.deferred.push(workload);
            wake(Duration::from_secs(1), &mut plan);
        }
    }
    plan
}

/// The order rollouts due are served in under the cap: in rounds, one per namespace per round,
/// each namespace's oldest (first detected) first, and within a round the namespace whose
/// rollout has waited longest first. So a tenant with many rollouts due (or one rotating every
/// second) takes one place per round and never pushes another tenant's rollout back.
fn fair_order(due: Vec<Step>, workloads: &[Workload]) -> Vec<Step> {
    let mut by_namespace: BTreeMap<&str, Vec<(Instant, usize, Step)>> = BTreeMap::new();
    for step in due {
        if let Step::Roll {
            workload, since, ..
        } = &step
        {
            let namespace = workloads[*workload].namespace.as_str();
            by_namespace
                .entry(namespace)
                .or_default()
                .push((*since, *workload, step));
        }
    }
    let mut queues: Vec<std::collections::VecDeque<(Instant, usize, Step)>> = by_namespace
        .into_values()
        .map(|mut q| {
            q.sort_by_key(|(since, index, _)| (*since, *index));
            q.into()
        })
        .collect();
    let mut ordered = Vec::new();
    loop {
        let mut round: Vec<(Instant, usize, Step)> =
            queues.iter_mut().filter_map(|q| q.pop_front()).collect();
        if round.is_empty() {
            return ordered;
        }
        round.sort_by_key(|(since, index, _)| (*since, *index));
        ordered.extend(round.into_iter().map(|(_, _, step)| step));
    }
}

#[cfg(test)]
#[path = "planner_tests.rs"]
pub(crate) mod tests;
