//! Scheduled rotation (`SecretRotation`, issue 31): the leading reloader rotates each resource's
//! targets on its schedule, as the tenant, and follows the new version to its consumers.
//!
//! Every step is recorded in the resource's status with the API server's resourceVersion
//! precondition before the next one starts, so a crash or a change of leader at any point
//! resumes from the status, and two replicas never both act:
//!
//! 1. **Idle -> Writing** (claim): each target's current version is recorded (`fromVersion`).
//! 2. **Writing -> Moving**: the new value is written to each target with KV v2 check-and-set on
//!    `fromVersion`, so it is written at most once; a target whose version already moved past
//!    `fromVersion` was written before a crash and is not written again (a resumed rotation reads
//!    the value back from a written target, so every target gets the same one).
//! 3. **Moving -> Idle**: when every consumer (a watched workload of the namespace reading a
//!    target) records the new version and has rolled out, or when `consumersTimeout` passes
//!    (then a Warning names the laggards). `replace` has nothing to retire.
//!
//! A failed step is retried with backoff (10 s doubling) up to [`MAX_ATTEMPTS`], then the
//! resource is `Failed` until its next scheduled time; before the write nothing changed, so
//! consumers keep a working value. Values are never logged, put in a status, an Event or a
//! metric.

pub mod consumers;
pub mod generate;
pub mod resource;
mod steps;
pub mod tenant;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use tokio_util::sync::CancellationToken;

use crate::kept::Kept;
use crate::metrics::Metrics;
use crate::tenancy::WatchablePaths;
use crate::workloads::Caches;

use resource::SecretRotation;
use tenant::TenantLogin;

/// Attempts of one step before the rotation is `Failed`.
pub const MAX_ATTEMPTS: u32 = 3;
/// How often the leader looks at every rotation.
const TICK: Duration = Duration::from_secs(1);
/// One rotation's step may take this long (token request, login, reads, writes, status).
const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// Rotations stepped at once.
const CONCURRENT_STEPS: usize = 8;

/// The reloader's settings for rotations.
#[derive(Clone, Debug)]
pub struct RotationSettings {
    pub login: TenantLogin,
    /// The shortest `spec.interval` accepted.
    pub min_interval: Duration,
    /// What each namespace may have watched: also what it may rotate.
    pub watchable: WatchablePaths,
    /// Consumers: every workload with references, not only those annotated `rotor.dev/reload`.
    pub all_workloads: bool,
    /// Test builds of the failure paths: the process aborts at this step (`ROTOR_FAILPOINT`).
    pub failpoint: Option<String>,
}

pub struct Rotations {
    kube: kube::Client,
    resources: Kept<SecretRotation>,
    caches: Arc<Caches>,
    metrics: Arc<Metrics>,
    leading: Arc<AtomicBool>,
    settings: RotationSettings,
    /// The resourceVersion each resource had when rotor last wrote its status: a cached object
    /// still at that version is stale (the watch has not delivered the write yet), skipped.
    superseded: Mutex<HashMap<String, String>>,
}

fn keep(_: &mut SecretRotation) -> bool {
    true
}

impl Rotations {
    /// Starts watching `SecretRotation`s in all namespaces (or one).
    pub fn start(
        kube: &kube::Client,
        namespace: Option<&str>,
        caches: Arc<Caches>,
        metrics: Arc<Metrics>,
        leading: Arc<AtomicBool>,
        settings: RotationSettings,
    ) -> Self {
        let api = match namespace {
            Some(ns) => Api::namespaced(kube.clone(), ns),
            None => Api::all(kube.clone()),
        };
        Self {
            kube: kube.clone(),
            resources: Kept::start(api, keep),
            caches,
            metrics,
            leading,
            settings,
            superseded: Mutex::default(),
        }
    }

    pub async fn run(self, identity: String, cancel: CancellationToken) {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = self.resources.wait_until_ready() => {}
        }
        let recorder = Recorder::new(
            self.kube.clone(),
            Reporter {
                controller: "rotor-reloader".to_string(),
                instance: Some(identity),
            },
        );
        loop {
            if self.leading.load(Ordering::SeqCst) {
                self.tick(&recorder).await;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn tick(&self, recorder: &Recorder) {
        let all = self.resources.state();
        let resources: Vec<Arc<SecretRotation>> = {
            let mut superseded = self.superseded.lock().unwrap_or_else(|e| e.into_inner());
            // Resources deleted since are forgotten.
            let present: std::collections::HashSet<&str> = all
                .iter()
                .filter_map(|r| r.metadata.uid.as_deref())
                .collect();
            superseded.retain(|uid, _| present.contains(uid.as_str()));
            all.iter()
                .filter(|r| {
                    let uid = r.metadata.uid.as_deref().unwrap_or_default();
                    superseded.get(uid) != r.metadata.resource_version.as_ref()
                })
                .cloned()
                .collect()
        };
        self.metrics
            .rotations_defined
            .set(i64::try_from(all.len()).unwrap_or(i64::MAX));
        // The last rotation ended, as the resources record it: a restarted reloader reports it.
        let last = all
            .iter()
            .filter_map(|r| r.status.as_ref()?.last_rotated_at.as_ref())
            .filter_map(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_second())
            .max()
            .unwrap_or_default();
        if last > self.metrics.rotation_last_success.get() {
            self.metrics.rotation_last_success.set(last);
        }
        if resources.is_empty() {
            return;
        }
        // The consumers matter only to rotations waiting for them.
        let moving = resources.iter().any(|r| {
            r.status
                .as_ref()
                .is_some_and(|s| s.phase == resource::Phase::Moving)
        });
        let workloads = Arc::new(if moving {
            self.caches
                .workloads(self.settings.all_workloads, &self.settings.watchable)
        } else {
            Vec::new()
        });
        futures::stream::iter(resources)
            .map(|r| {
                let workloads = workloads.clone();
                async move {
                    let name = format!(
                        "{}/{}",
                        r.metadata.namespace.as_deref().unwrap_or_default(),
                        r.metadata.name.as_deref().unwrap_or_default()
                    );
                    let step = steps::Step {
                        rotations: self,
                        recorder,
                        workloads: &workloads,
                    };
                    if tokio::time::timeout(STEP_DEADLINE, step.run(&r)).await.is_err() {
                        tracing::warn!(rotation = %name, "a rotation step took more than 30 s; tried again at the next tick");
                    }
                }
            })
            .buffer_unordered(CONCURRENT_STEPS)
            .collect::<Vec<()>>()
            .await;
    }

    /// Aborts the process here when the failpoint `name` is set (tests of crash recovery).
    fn failpoint(&self, name: &str) {
        if self.settings.failpoint.as_deref() == Some(name) {
            tracing::warn!(failpoint = name, "failpoint reached: aborting");
            std::process::abort();
        }
    }
}
