//! One look at one rotation: the step its status calls for (see the module above), taken and
//! recorded, or nothing when it is not due.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Resource as _;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use rotor_core::contract::EventReason;
use rotor_core::store::StoreClient;
use serde_json::{Map, Value};

use super::consumers::{Target, consumers};
use super::generate::{NewValue, new_value};
use super::resource::{Checked, KIND, Phase, SecretRotation, Status, TargetStatus};
use super::{MAX_ATTEMPTS, Rotations};
use crate::metrics::ResultLabels;
use crate::workloads::Workload;

pub(super) struct Step<'a> {
    pub rotations: &'a Rotations,
    pub recorder: &'a Recorder,
    pub workloads: &'a [Workload],
}

/// How a suspended rotation's status message begins.
const SUSPENDED: &str = "suspended";

/// Why a step did not finish (never a value: store errors are masked excerpts).
type Failure = String;

fn later(now: Timestamp, wait: std::time::Duration) -> String {
    now.checked_add(SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX))
        .unwrap_or(now)
        .to_string()
}

fn reached(at: Option<&String>, now: Timestamp) -> bool {
    at.and_then(|t| t.parse::<Timestamp>().ok())
        .is_none_or(|t| now >= t)
}

fn since(at: Option<&String>, now: Timestamp) -> std::time::Duration {
    at.and_then(|t| t.parse::<Timestamp>().ok())
        .and_then(|t| std::time::Duration::try_from(now.duration_since(t)).ok())
        .unwrap_or_default()
}

/// The wait until the next rotation: the interval plus up to `jitter` of it at random.
fn next_wait(checked: &Checked) -> std::time::Duration {
    checked
        .interval
        .mul_f64(1.0 + checked.jitter * rand::random::<f64>())
}

impl Step<'_> {
    pub async fn run(&self, r: &SecretRotation) {
        let now = Timestamp::now();
        let status = r.status.clone().unwrap_or_default();
        let generation = r.metadata.generation.unwrap_or_default();
        let checked = match self.check(r) {
            Ok(c) => c,
            Err(why) => {
                let unchanged = status.phase == Phase::Invalid
                    && status.message.as_deref() == Some(why.as_str())
                    && status.observed_generation == generation;
                // A rotation already written is not followed further (the reloader still rolls
                // its consumers); it starts again from its schedule once the spec is fixed.
                if !unchanged {
                    let s = Status {
                        phase: Phase::Invalid,
                        message: Some(why.clone()),
                        observed_generation: generation,
                        retry_at: None,
                        attempt: 0,
                        ..status
                    };
                    if self.save(r, s).await {
                        self.event(r, EventReason::RotationInvalid, &why).await;
                    }
                }
                return;
            }
        };
        match status.phase {
            Phase::Idle | Phase::Invalid
                if status.next_rotation_at.is_none()
                    || status.phase == Phase::Invalid
                    || status.observed_generation != generation =>
            {
                let from = status
                    .last_rotated_at
                    .as_ref()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .unwrap_or(now);
                let s = Status {
                    phase: Phase::Idle,
                    next_rotation_at: Some(later(from, next_wait(&checked))),
                    observed_generation: generation,
                    message: Some("scheduled".to_string()),
                    attempt: 0,
                    retry_at: None,
                    ..status
                };
                self.save(r, s).await;
            }
            Phase::Idle | Phase::Failed | Phase::Invalid => {
                let due = reached(status.next_rotation_at.as_ref(), now)
                    && reached(status.retry_at.as_ref(), now);
                if due && !r.spec.suspend {
                    self.claim(r, status, &checked, now).await;
                } else if due
                    && !status
                        .message
                        .as_deref()
                        .is_some_and(|m| m.starts_with(SUSPENDED))
                {
                    let s = Status {
                        message: Some(format!(
                            "{SUSPENDED}: the rotation due at {} did not start (spec.suspend)",
                            status.next_rotation_at.clone().unwrap_or_default()
                        )),
                        ..status
                    };
                    self.save(r, s).await;
                }
            }
            Phase::Writing => {
                if reached(status.retry_at.as_ref(), now) {
                    self.write(r, status, &checked, now).await;
                }
            }
            Phase::Moving => self.confirm(r, status, &checked, now).await,
        }
    }

    /// The spec's own checks, then the namespace's right to its targets (`--watchable-paths`).
    fn check(&self, r: &SecretRotation) -> Result<Checked, String> {
        let settings = &self.rotations.settings;
        let checked = r.spec.check(settings.min_interval)?;
        let ns = r.metadata.namespace.as_deref().unwrap_or_default();
        for (i, t) in r.spec.targets.iter().enumerate() {
            if !settings.watchable.allows(ns, &t.path) {
                return Err(format!(
                    "spec.targets[{i}].path {:?}: namespace {ns} may not rotate it (the reloader's --watchable-paths: {}); rotate a path of this namespace",
                    t.path,
                    settings.watchable.describe()
                ));
            }
        }
        Ok(checked)
    }

    async fn login(&self, r: &SecretRotation) -> Result<StoreClient, Failure> {
        let ns = r.metadata.namespace.as_deref().unwrap_or_default();
        let sa = &r.spec.service_account_name;
        let role = r.spec.role.as_deref().unwrap_or(sa);
        self.rotations
            .settings
            .login
            .login(&self.rotations.kube, ns, sa, role)
            .await
            .map_err(|e| format!("logging in as ServiceAccount {ns}/{sa} (role {role}): {e}"))
    }

    /// Idle -> Writing: each target's version before the write, recorded.
    async fn claim(&self, r: &SecretRotation, status: Status, checked: &Checked, now: Timestamp) {
        let targets = match self.versions_before(r).await {
            Ok(t) => t,
            Err(why) => return self.failed(r, status, checked, now, why).await,
        };
        let s = Status {
            phase: Phase::Writing,
            attempt: 0,
            retry_at: None,
            started_at: Some(now.to_string()),
            written_at: None,
            targets,
            consumers: None,
            lagging: Vec::new(),
            message: Some("claimed: writing the new value".to_string()),
            ..status
        };
        if self.save(r, s).await {
            self.event(
                r,
                EventReason::RotationStarted,
                "rotation started: each target's current version recorded",
            )
            .await;
            self.rotations.failpoint("rotation-after-claim");
        }
    }

    async fn versions_before(&self, r: &SecretRotation) -> Result<Vec<TargetStatus>, Failure> {
        let client = self.login(r).await?;
        let mut out = Vec::with_capacity(r.spec.targets.len());
        for t in &r.spec.targets {
            let mount = client
                .mount_info(&t.path)
                .await
                .map_err(|e| e.to_string())?;
            let path = format!("{}{}", mount.path, mount.relative(&t.path));
            out.push(TargetStatus {
                from_version: current_version(&client, &path).await?,
                path,
                mount: mount.path,
                key: t.key.clone(),
                version: None,
            });
        }
        Ok(out)
    }

    /// Writing -> Moving: the value written to every target not written yet.
    async fn write(&self, r: &SecretRotation, status: Status, checked: &Checked, now: Timestamp) {
        match self.write_targets(r, &status.targets).await {
            Ok(targets) => {
                self.rotations.failpoint("rotation-after-write");
                let versions: Vec<String> = targets
                    .iter()
                    .map(|t| format!("{} v{}", t.path, t.version.unwrap_or_default()))
                    .collect();
                let message = format!("written: {}", versions.join(", "));
                let s = Status {
                    phase: Phase::Moving,
                    attempt: 0,
                    retry_at: None,
                    written_at: Some(now.to_string()),
                    targets,
                    message: Some(message.clone()),
                    ..status
                };
                if self.save(r, s).await {
                    self.event(r, EventReason::RotationWritten, &message).await;
                }
            }
            Err(why) => self.failed(r, status, checked, now, why).await,
        }
    }

    async fn write_targets(
        &self,
        r: &SecretRotation,
        targets: &[TargetStatus],
    ) -> Result<Vec<TargetStatus>, Failure> {
        let client = self.login(r).await?;
        let mut targets = targets.to_vec();
        let mut currents = Vec::with_capacity(targets.len());
        for t in &targets {
            currents.push(current_version(&client, &t.path).await?);
        }
        // Resumed after a crash between targets: every target gets the value already written.
        let mut value: Option<NewValue> = None;
        if let Some((t, current)) = targets
            .iter()
            .zip(&currents)
            .find(|(t, current)| **current > t.from_version)
            && targets
                .iter()
                .zip(&currents)
                .any(|(t, current)| *current == t.from_version)
        {
            let secret = client
                .read(&t.path, Some(*current))
                .await
                .map_err(|e| e.to_string())?;
            let text = secret.get(&t.path, &t.key).map_err(|e| e.to_string())?;
            value = Some(NewValue::from_store(text));
        }
        for (i, (t, current)) in targets.iter_mut().zip(currents).enumerate() {
            if current > t.from_version {
                // Written before (by this rotation before a crash, or by someone else: the
                // store's check-and-set kept either from overwriting the other).
                t.version = Some(current);
                continue;
            }
            let value = match &value {
                Some(v) => v,
                None => value.insert(new_value(&r.spec.generate).map_err(|e| e.to_string())?),
            };
            let mut data = if t.from_version == 0 {
                Map::new()
            } else {
                client
                    .read(&t.path, Some(t.from_version))
                    .await
                    .map_err(|e| e.to_string())?
                    .data
            };
            data.insert(t.key.clone(), Value::String(value.expose().to_string()));
            let written = client
                .write_kv2_cas(&t.path, &data, t.from_version)
                .await
                .map_err(|e| e.to_string())?;
            self.rotations.metrics.rotation_writes.inc();
            t.version = Some(written);
            if i == 0 {
                self.rotations.failpoint("rotation-after-first-write");
            }
        }
        Ok(targets)
    }

    /// Moving -> Idle once every consumer runs the version written, or its wait is over.
    async fn confirm(&self, r: &SecretRotation, status: Status, checked: &Checked, now: Timestamp) {
        let ns = r.metadata.namespace.as_deref().unwrap_or_default();
        let targets: Vec<Target> = status
            .targets
            .iter()
            .map(|t| Target::from_status(t, &t.mount))
            .collect();
        let caches = &self.rotations.caches;
        let list = consumers(self.workloads, ns, &targets, |kind, ns, name| {
            caches.rolled_out(kind, ns, name)
        });
        let current = list.iter().filter(|c| c.current).count();
        let lagging: Vec<String> = list
            .iter()
            .filter(|c| !c.current)
            .take(10)
            .map(|c| c.name.clone())
            .collect();
        let counted = format!("{current}/{}", list.len());
        let waited = since(status.written_at.as_ref(), now);
        if lagging.is_empty() || waited >= checked.consumers_timeout {
            let completed = lagging.is_empty();
            let message = if completed {
                format!("rotated: {counted} consumers run the new version")
            } else {
                format!(
                    "rotated, but {} of {} consumers did not run the new version within {} s: {}",
                    list.len() - current,
                    list.len(),
                    checked.consumers_timeout.as_secs(),
                    lagging.join(", ")
                )
            };
            let took = since(status.started_at.as_ref(), now);
            let s = Status {
                phase: Phase::Idle,
                rotations: status.rotations + 1,
                attempt: 0,
                retry_at: None,
                last_rotated_at: Some(now.to_string()),
                next_rotation_at: Some(later(now, next_wait(checked))),
                consumers: Some(counted),
                lagging,
                message: Some(message.clone()),
                ..status
            };
            if self.save(r, s).await {
                let metrics = &self.rotations.metrics;
                let result = if completed { "completed" } else { "lagging" };
                metrics
                    .rotations
                    .get_or_create(&ResultLabels { result })
                    .inc();
                metrics.rotation_seconds.observe(took.as_secs_f64());
                metrics.rotation_last_success.set(now.as_second());
                let reason = if completed {
                    EventReason::RotationCompleted
                } else {
                    EventReason::ConsumersLagging
                };
                self.event(r, reason, &message).await;
            }
        } else if status.consumers.as_deref() != Some(counted.as_str()) || status.lagging != lagging
        {
            let s = Status {
                consumers: Some(counted),
                lagging,
                ..status
            };
            self.save(r, s).await;
        }
    }

    /// A step that did not finish: tried again after a backoff, or `Failed` after the budget
    /// (until the next scheduled time; consumers keep the value they have).
    async fn failed(
        &self,
        r: &SecretRotation,
        status: Status,
        checked: &Checked,
        now: Timestamp,
        why: Failure,
    ) {
        let attempt = status.attempt + 1;
        let name = format!(
            "{}/{}",
            r.metadata.namespace.as_deref().unwrap_or_default(),
            r.metadata.name.as_deref().unwrap_or_default()
        );
        tracing::warn!(rotation = %name, phase = ?status.phase, attempt, error = %why, "a rotation step failed");
        if attempt >= MAX_ATTEMPTS {
            let message =
                format!("failed after {attempt} attempts (the next rotation is scheduled): {why}");
            let s = Status {
                phase: Phase::Failed,
                attempt: 0,
                retry_at: None,
                next_rotation_at: Some(later(now, next_wait(checked))),
                message: Some(message.clone()),
                ..status
            };
            if self.save(r, s).await {
                self.rotations
                    .metrics
                    .rotations
                    .get_or_create(&ResultLabels { result: "failed" })
                    .inc();
                self.event(r, EventReason::RotationFailed, &message).await;
            }
            return;
        }
        let backoff = std::time::Duration::from_secs(10 * (1 << (attempt - 1).min(6)));
        let s = Status {
            attempt,
            retry_at: Some(later(now, backoff)),
            message: Some(format!(
                "attempt {attempt} of {MAX_ATTEMPTS} failed, tried again in {} s: {why}",
                backoff.as_secs()
            )),
            ..status
        };
        self.save(r, s).await;
    }

    /// Writes `status` over the one `r` was read with (the resourceVersion precondition): false
    /// when it changed since (another replica or a person acted; decided again next tick).
    async fn save(&self, r: &SecretRotation, status: Status) -> bool {
        let ns = r.metadata.namespace.as_deref().unwrap_or_default();
        let name = r.metadata.name.as_deref().unwrap_or_default();
        let mut object = r.clone();
        object.api_version = SecretRotation::api_version(&()).to_string();
        object.kind = KIND.to_string();
        object.status = Some(status);
        let api: Api<SecretRotation> = Api::namespaced(self.rotations.kube.clone(), ns);
        match api
            .replace_status(name, &PostParams::default(), &object)
            .await
        {
            Ok(_) => {
                self.rotations.metrics.rotation_status_writes.inc();
                if let (Some(uid), Some(rv)) = (&r.metadata.uid, &r.metadata.resource_version) {
                    self.rotations
                        .superseded
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(uid.clone(), rv.clone());
                }
                true
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::debug!(rotation = %format!("{ns}/{name}"), "changed since read; decided again at the next tick");
                false
            }
            Err(e) => {
                tracing::warn!(rotation = %format!("{ns}/{name}"), error = %e, "writing a rotation's status failed");
                false
            }
        }
    }

    async fn event(&self, r: &SecretRotation, reason: EventReason, note: &str) {
        let event = Event {
            type_: if reason.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: "Rotate".to_string(),
            secondary: None,
        };
        let reference = r.object_ref(&());
        match tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.recorder.publish(&event, &reference),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "publishing the rotation's event failed"),
            Err(_) => tracing::warn!("publishing the rotation's event timed out"),
        }
        let ns = r.metadata.namespace.as_deref().unwrap_or_default();
        let name = r.metadata.name.as_deref().unwrap_or_default();
        tracing::info!(rotation = %format!("{ns}/{name}"), reason = reason.as_str(), note, "rotation");
    }
}

/// A KV v2 secret's current version (0 when it does not exist yet).
async fn current_version(client: &StoreClient, path: &str) -> Result<u64, Failure> {
    match client.current_version(path).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_not_found() => Ok(0),
        Err(e) => Err(e.to_string()),
    }
}
