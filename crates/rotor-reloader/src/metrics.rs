//! Prometheus metrics of the reloader. No secret paths or workload names in labels.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Deployment, StatefulSet, DaemonSet
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// ok, failed
    pub result: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub paths_watched: Gauge,
    pub workloads_watched: Gauge,
    pub configmaps_kept: Gauge,
    pub configmap_bytes_held: Gauge,
    pub polls: Family<ResultLabels, Counter>,
    pub store_requests: Counter,
    pub store_errors: Counter,
    pub store_reachable: Gauge,
    pub store_last_success: Gauge,
    pub rotations_detected: Counter,
    pub rollouts: Family<KindLabels, Counter>,
    pub rollout_failures: Counter,
    pub in_place_rotations: Family<KindLabels, Counter>,
    pub pods_told: Counter,
    pub patch_conflicts: Counter,
    pub paths_not_watched: Counter,
    pub paths_waiting_turn: Gauge,
    pub detection_to_patch: Histogram,
    pub poll_duration: Histogram,
    pub leader: Gauge,
    pub rotations_defined: Gauge,
    pub rotations: Family<ResultLabels, Counter>,
    pub rotation_seconds: Histogram,
    pub rotation_last_success: Gauge,
    pub rotation_writes: Counter,
    pub rotation_status_writes: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut r = Registry::with_prefix("rotor_reloader");
        let m = Self {
            paths_watched: Gauge::default(),
            workloads_watched: Gauge::default(),
            configmaps_kept: Gauge::default(),
            configmap_bytes_held: Gauge::default(),
            polls: Family::default(),
            store_requests: Counter::default(),
            store_errors: Counter::default(),
            store_reachable: Gauge::default(),
            store_last_success: Gauge::default(),
            rotations_detected: Counter::default(),
            rollouts: Family::default(),
            rollout_failures: Counter::default(),
            in_place_rotations: Family::default(),
            pods_told: Counter::default(),
            patch_conflicts: Counter::default(),
            paths_not_watched: Counter::default(),
            paths_waiting_turn: Gauge::default(),
            detection_to_patch: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            poll_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            leader: Gauge::default(),
            rotations_defined: Gauge::default(),
            rotations: Family::default(),
            rotation_seconds: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            rotation_last_success: Gauge::default(),
            rotation_writes: Counter::default(),
            rotation_status_writes: Counter::default(),
            registry: Registry::default(),
        };
        r.register(
            "paths_watched",
            "Distinct store paths watched",
            m.paths_watched.clone(),
        );
        r.register(
            "rotations_defined",
            "SecretRotation resources the reloader sees",
            m.rotations_defined.clone(),
        );
        r.register(
            "rotations",
            "Scheduled rotations ended, by result: completed (every consumer runs the new version), lagging (written, some consumers did not move in time), failed (stopped after the retry budget)",
            m.rotations.clone(),
        );
        r.register(
            "rotation_seconds",
            "Seconds from a rotation's claim to every consumer running the new version (or its wait ending)",
            m.rotation_seconds.clone(),
        );
        r.register(
            "rotation_last_success_timestamp_seconds",
            "When a scheduled rotation last ended (completed or lagging), as Unix time",
            m.rotation_last_success.clone(),
        );
        r.register(
            "rotation_store_writes",
            "New secret versions written by scheduled rotations",
            m.rotation_writes.clone(),
        );
        r.register(
            "rotation_status_writes",
            "SecretRotation status writes (one per step taken; API requests per rotation)",
            m.rotation_status_writes.clone(),
        );
        r.register(
            "configmaps_kept",
            "ConfigMaps with a reference-carrying value the reloader keeps (--configmap-references)",
            m.configmaps_kept.clone(),
        );
        r.register(
            "configmap_bytes_held",
            "Bytes of ConfigMap values held: only those of ConfigMaps a watched workload reads",
            m.configmap_bytes_held.clone(),
        );
        r.register(
            "workloads_watched",
            "Workloads that opted in and reference secrets",
            m.workloads_watched.clone(),
        );
        r.register(
            "polls",
            "Poll cycles by result (one cycle polls every store; failed when one did not answer)",
            m.polls.clone(),
        );
        r.register(
            "paths_not_watched",
            "Paths workloads reference that their namespace may not have watched (--watchable-paths), counted once per template generation",
            m.paths_not_watched.clone(),
        );
        r.register(
            "paths_waiting_turn",
            "Paths not polled in the last poll because their namespace has more than --paths-per-namespace-per-poll (polled in turns)",
            m.paths_waiting_turn.clone(),
        );
        r.register(
            "store_requests",
            "Store metadata requests",
            m.store_requests.clone(),
        );
        r.register(
            "store_errors",
            "Store requests that failed",
            m.store_errors.clone(),
        );
        r.register(
            "store_reachable",
            "1 when the last poll reached the store",
            m.store_reachable.clone(),
        );
        r.register(
            "store_last_success_timestamp_seconds",
            "Unix time the store last answered",
            m.store_last_success.clone(),
        );
        r.register(
            "rotations_detected",
            "Workload rotations detected (version changes)",
            m.rotations_detected.clone(),
        );
        r.register(
            "rollouts",
            "Rollouts started, by workload kind",
            m.rollouts.clone(),
        );
        r.register(
            "in_place_rotations",
            "Rotations delivered to running pods instead of a rollout (rotor.dev/on-rotation: signal), by workload kind",
            m.in_place_rotations.clone(),
        );
        r.register(
            "pods_told",
            "Pods whose rotor.dev/versions annotation was written (on-rotation: signal); rotor-init re-reads and signals the app",
            m.pods_told.clone(),
        );
        r.register(
            "rollout_failures",
            "Rollout patches that failed (retried next poll)",
            m.rollout_failures.clone(),
        );
        r.register(
            "patch_conflicts",
            "Patches refused because the workload changed since it was read (another replica acted, or the cache was stale); decided again next poll",
            m.patch_conflicts.clone(),
        );
        r.register(
            "detection_to_patch_seconds",
            "Time from detecting a new version to patching the workload",
            m.detection_to_patch.clone(),
        );
        r.register(
            "poll_duration_seconds",
            "Time to poll every distinct path once",
            m.poll_duration.clone(),
        );
        r.register(
            "leader",
            "1 when this replica is the leader",
            m.leader.clone(),
        );
        Arc::new(Self { registry: r, ..m })
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
