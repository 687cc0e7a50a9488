//! rotor-reloader: polls the store for new versions of referenced secrets and rolls exactly
//! the workloads that use them, once; with `--rotations`, also rotates secrets on the schedule of
//! each `SecretRotation`. State lives in the API (an annotation on each workload, a rotation's
//! status).

#[cfg(test)]
pub mod api_mock;
pub mod aws_watch;
pub mod backoff;
pub mod configmaps;
pub mod controller;
pub mod decision;
pub mod fair_share;
pub mod kept;
pub mod leader;
pub mod listing;
pub mod metrics;
pub mod planner;
pub mod pods;
pub mod poll;
pub mod references;
pub mod rotation;
pub mod run;
pub mod sources;
pub mod stores;
pub mod tenancy;
pub mod workloads;
