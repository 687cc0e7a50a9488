//! rotor-webhook: the mutating admission webhook (planner, server, offline injection).

pub mod admission;
pub mod answer;
pub mod body_budget;
pub mod config;
pub mod configmap_references;
pub mod connection_slots;
pub mod deny;
pub mod file_volumes;
pub mod https_limits;
pub mod image_ref;
pub mod inject_command;
pub mod metrics;
pub mod patch;
pub mod plan;
pub mod pod_checks;
pub mod pull_secrets;
pub mod registry;
pub mod registry_error;
pub mod serve;
pub mod targets;
pub mod tls;
