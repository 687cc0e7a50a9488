//! The poll loop: find opted-in workloads, poll each distinct path once, and roll the
//! workloads whose versions changed, once, recording the versions in the API.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use rotor_core::store::{Auth, StoreClient};
use tokio_util::sync::CancellationToken;

use crate::decision::{Decision, decide, recorded};
use crate::metrics::{KindLabels, Metrics, ResultLabels};
use crate::poll::Poller;
use crate::workloads::{Caches, Kind, Workload, patch_workload};

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub poll_interval: Duration,
    /// Random extra wait, as a fraction of the interval (0.1 = up to 10 %).
    pub jitter: f64,
    /// Wait this long after the first change of a workload before rolling it, so that several
    /// paths rotated together produce one rollout.
    pub settle: Duration,
    /// At most this many rollouts start in one poll; the rest wait for the next.
    pub max_rollouts_per_poll: usize,
    /// The longest wait between attempts while the store is unreachable.
    pub backoff_cap: Duration,
    /// Watch every workload with references, not only those annotated `rotor.dev/reload`.
    pub all_workloads: bool,
}

pub struct Controller {
    pub kube: kube::Client,
    pub store: StoreClient,
    pub auth: Auth,
    pub caches: Caches,
    pub poller: Poller,
    pub metrics: Arc<Metrics>,
    pub config: ControllerConfig,
    pub leading: Arc<AtomicBool>,
    pub ready: Arc<AtomicBool>,
    pub identity: String,
}

enum Cycle {
    /// Polled; wake again after this long.
    Done(Duration),
    StoreDown,
}

impl Controller {
    pub async fn run(mut self, cancel: CancellationToken) {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = self.caches.wait_ready() => {}
        }
        self.ready.store(true, Ordering::SeqCst);
        tracing::info!("workload caches synced");
        let recorder = Recorder::new(
            self.kube.clone(),
            Reporter {
                controller: "rotor-reloader".to_string(),
                instance: Some(self.identity.clone()),
            },
        );
        let mut pending: HashMap<(Kind, String, String), Instant> = HashMap::new();
        let mut logged_in = false;
        let mut outage = 0u32;
        loop {
            let wait = if !self.leading.load(Ordering::SeqCst) {
                self.metrics.leader.set(0);
                Duration::from_secs(1)
            } else {
                self.metrics.leader.set(1);
                if !logged_in {
                    match self.store.login(&self.auth).await {
                        Ok(()) => logged_in = true,
                        Err(e) => tracing::warn!(error = %e, "store login failed; retrying"),
                    }
                }
                match self.cycle(&recorder, &mut pending, &mut logged_in).await {
                    _ if !logged_in => self.outage_wait(&mut outage),
                    Cycle::Done(next) => {
                        if outage > 0 {
                            tracing::info!(attempts = outage, "store reachable again");
                        }
                        outage = 0;
                        next
                    }
                    Cycle::StoreDown => self.outage_wait(&mut outage),
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The wait while the store is unreachable: exponential from 1 s, never more than the
    /// backoff cap nor one poll interval, so a recovered store is noticed within an interval.
    fn outage_wait(&self, attempts: &mut u32) -> Duration {
        *attempts = attempts.saturating_add(1);
        let exp =
            Duration::from_secs(1).saturating_mul(2u32.saturating_pow((*attempts - 1).min(20)));
        let wait = exp
            .min(self.config.backoff_cap)
            .min(self.config.poll_interval);
        tracing::warn!(
            attempt = *attempts,
            wait_s = wait.as_secs_f64(),
            "store unreachable; backing off"
        );
        wait
    }

    fn jittered_interval(&self) -> Duration {
        let extra = self
            .config
            .poll_interval
            .mul_f64(self.config.jitter.clamp(0.0, 1.0) * rand::random::<f64>());
        self.config.poll_interval + extra
    }

    async fn cycle(
        &mut self,
        recorder: &Recorder,
        pending: &mut HashMap<(Kind, String, String), Instant>,
        logged_in: &mut bool,
    ) -> Cycle {
        if !*logged_in {
            return Cycle::StoreDown;
        }
        let workloads = self.caches.workloads(self.config.all_workloads);
        let paths: BTreeSet<String> = workloads
            .iter()
            .flat_map(|w| w.paths.iter().cloned())
            .collect();
        self.metrics
            .workloads_watched
            .set(i64::try_from(workloads.len()).unwrap_or(i64::MAX));
        if paths.is_empty() {
            self.metrics.paths_watched.set(0);
            return Cycle::Done(self.jittered_interval());
        }
        let started = Instant::now();
        let mut result = self.poller.poll_versions(&self.store, &paths).await;
        if result.needs_login() {
            // The token expired or was revoked: log in again once and re-poll.
            match self.store.login(&self.auth).await {
                Ok(()) => result = self.poller.poll_versions(&self.store, &paths).await,
                Err(e) => {
                    tracing::warn!(error = %e, "store login failed");
                    *logged_in = false;
                }
            }
        }
        self.metrics
            .poll_duration
            .observe(started.elapsed().as_secs_f64());
        // Distinct secrets, however they are spelled: one request each per poll.
        self.metrics
            .paths_watched
            .set(i64::try_from(result.requests).unwrap_or(i64::MAX));
        self.metrics.store_requests.inc_by(result.requests as u64);
        self.metrics.store_errors.inc_by(result.errors.len() as u64);
        for (path, error) in result.errors.iter().take(5) {
            tracing::warn!(%path, %error, "polling a path failed");
        }
        if result.store_unreachable() {
            self.metrics.store_reachable.set(0);
            self.metrics
                .polls
                .get_or_create(&ResultLabels { result: "failed" })
                .inc();
            return Cycle::StoreDown;
        }
        self.metrics.store_reachable.set(1);
        self.metrics.store_last_success.set(
            i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            )
            .unwrap_or(0),
        );
        self.metrics
            .polls
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        tracing::debug!(
            paths = paths.len(),
            requests = result.requests,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "poll done"
        );

        let mut rollouts_started = 0usize;
        let mut next = self.jittered_interval();
        let live: BTreeSet<_> = workloads.iter().map(Workload::key).collect();
        pending.retain(|k, _| live.contains(k));
        for workload in &workloads {
            if !self.leading.load(Ordering::SeqCst) {
                break;
            }
            let key = workload.key();
            match decide(
                recorded(Some(&workload.annotations)).as_ref(),
                &workload.paths,
                &result.versions,
            ) {
                Decision::Nothing => {
                    pending.remove(&key);
                }
                Decision::Record(versions) => {
                    if let Err(e) = patch_workload(&self.kube, workload, &versions, None).await {
                        tracing::warn!(kind = workload.kind.as_str(), namespace = %workload.namespace, name = %workload.name, error = %e, "recording versions failed");
                    }
                }
                Decision::Roll { changes, record } => {
                    let now = Instant::now();
                    let first = *pending.entry(key.clone()).or_insert_with(|| {
                        self.metrics.rotations_detected.inc();
                        for c in &changes {
                            tracing::info!(kind = workload.kind.as_str(), namespace = %workload.namespace, name = %workload.name, path = %c.path, old = c.old, new = c.new, "rotation detected");
                        }
                        now
                    });
                    let waited = now.duration_since(first);
                    if waited < self.config.settle {
                        next = next.min(self.config.settle - waited);
                        continue;
                    }
                    if rollouts_started >= self.config.max_rollouts_per_poll {
                        tracing::info!(kind = workload.kind.as_str(), namespace = %workload.namespace, name = %workload.name, cap = self.config.max_rollouts_per_poll, "rollout deferred: cap on rollouts per poll reached");
                        next = next.min(Duration::from_secs(1));
                        continue;
                    }
                    rollouts_started += 1;
                    let at = k8s_openapi::jiff::Timestamp::now().to_string();
                    match patch_workload(&self.kube, workload, &record, Some(&at)).await {
                        Ok(()) => {
                            pending.remove(&key);
                            self.metrics
                                .rollouts
                                .get_or_create(&KindLabels {
                                    kind: workload.kind.as_str(),
                                })
                                .inc();
                            self.metrics
                                .detection_to_patch
                                .observe(first.elapsed().as_secs_f64());
                            let summary: Vec<String> = changes
                                .iter()
                                .map(|c| format!("{} version {} -> {}", c.path, c.old, c.new))
                                .collect();
                            tracing::info!(kind = workload.kind.as_str(), namespace = %workload.namespace, name = %workload.name, changes = %summary.join(", "), "rollout started");
                            let event = Event {
                                type_: EventType::Normal,
                                reason: "SecretRotated".to_string(),
                                note: Some(truncate(
                                    &format!(
                                        "rotor rolled this {} because {}",
                                        workload.kind.as_str(),
                                        summary.join(", ")
                                    ),
                                    1000,
                                )),
                                action: "Rollout".to_string(),
                                secondary: None,
                            };
                            if let Err(e) = recorder.publish(&event, &workload.reference).await {
                                tracing::warn!(error = %e, "publishing the event failed");
                            }
                        }
                        Err(e) => {
                            self.metrics.rollout_failures.inc();
                            tracing::warn!(kind = workload.kind.as_str(), namespace = %workload.namespace, name = %workload.name, error = %e, "rollout patch failed; retrying next poll");
                        }
                    }
                }
            }
        }
        Cycle::Done(next)
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
