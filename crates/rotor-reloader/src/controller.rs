//! The poll loop: find opted-in workloads, poll each distinct path once, and roll the
//! workloads whose versions changed, once, recording the versions in the API.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio_util::sync::CancellationToken;

use rotor_core::contract::{EventReason, OnRotation};

use crate::aws_watch::is_aws_path;
use crate::fair_share::{select_by_namespace, select_paths, waiting};
use crate::metrics::{KindLabels, Metrics, ResultLabels};
use crate::planner::{CyclePlan, Pending, PlanSettings, Reason, Step, StoreAnswer, plan_cycle};
use crate::poll::Poller;
use crate::sources::{AwsRegion, CYCLE_WAIT, Polls, Returned, Source};
use crate::stores::{Store, StoreKey, Stores};
use crate::tenancy::WatchablePaths;
use crate::workloads::{Caches, Patched, Workload, patch_workload};

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
    /// Which paths a workload's namespace may have watched.
    pub watchable: WatchablePaths,
    /// Distinct paths of one namespace polled per poll; more are polled in turns.
    pub paths_per_namespace: usize,
}

pub struct Controller {
    pub kube: kube::Client,
    pub stores: Stores,
    /// The polls under way, and the AWS regions' watches (Secrets Manager, SSM).
    pub polls: Polls,
    pub caches: std::sync::Arc<Caches>,
    pub poller: Arc<Poller>,
    pub metrics: Arc<Metrics>,
    pub config: ControllerConfig,
    /// Workload templates (uid, generation, reason) this replica announced in an Event while
    /// leading: once per template, not once per poll.
    pub announced: HashSet<(String, i64, EventReason)>,
    pub leading: Arc<AtomicBool>,
    pub ready: Arc<AtomicBool>,
    pub identity: String,
    /// Polls so far: which window of an over-budget namespace's paths is polled.
    pub turn: u64,
}

/// Time one store's poll may take (login, mount lookups, metadata reads); past it that store
/// counts as not answering this poll, and the others go on.
const STORE_DEADLINE: Duration = Duration::from_secs(15);

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
        let mut pending = Pending::new();
        let mut outage = 0u32;
        loop {
            let wait = if !self.leading.load(Ordering::SeqCst) {
                self.metrics.leader.set(0);
                Duration::from_secs(1)
            } else {
                self.metrics.leader.set(1);
                match self.cycle(&recorder, &mut pending).await {
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

    /// One cycle: poll each store, plan, apply the plan's steps while leading, publish. A store
    /// that does not answer holds back only its own workloads.
    async fn cycle(&mut self, recorder: &Recorder, pending: &mut Pending) -> Cycle {
        let interval = self.jittered_interval();
        let mut workloads = self
            .caches
            .workloads(self.config.all_workloads, &self.config.watchable);
        let (configmaps, held) = self.caches.end_configmap_poll();
        self.metrics
            .configmaps_kept
            .set(i64::try_from(configmaps).unwrap_or(i64::MAX));
        self.metrics
            .configmap_bytes_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
        if self.leading.load(Ordering::SeqCst) {
            self.announce_not_watched(recorder, &workloads).await;
        }
        workloads.retain(|w| !w.paths.is_empty());
        // rotor-init re-reads only Vault files in place: a workload with AWS references rolls.
        for w in workloads
            .iter_mut()
            .filter(|w| w.paths.iter().any(|p| is_aws_path(p)))
        {
            w.on_rotation = OnRotation::Rollout;
        }
        // Each workload's Vault store (none when it references AWS only).
        let mut stores: Vec<Option<StoreKey>> = Vec::with_capacity(workloads.len());
        let mut kept = Vec::with_capacity(workloads.len());
        for w in workloads {
            if w.paths.iter().all(|p| is_aws_path(p)) {
                stores.push(None);
                kept.push(w);
                continue;
            }
            match self.stores.resolve(&w.store) {
                Ok(key) => {
                    stores.push(Some(key));
                    kept.push(w);
                }
                Err(why) => self.announce_store_refused(recorder, &w, why).await,
            }
        }
        let workloads = kept;
        // Per store, per namespace: each namespace's paths are polled within its budget.
        let mut by_store: BTreeMap<StoreKey, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        let mut aws_by_ns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (w, key) in workloads.iter().zip(&stores) {
            let (aws, vault): (Vec<&String>, Vec<&String>) =
                w.paths.iter().partition(|p| is_aws_path(p));
            if !aws.is_empty() {
                aws_by_ns
                    .entry(w.namespace.clone())
                    .or_default()
                    .extend(aws.into_iter().cloned());
            }
            if let Some(key) = key {
                by_store
                    .entry(key.clone())
                    .or_default()
                    .entry(w.namespace.clone())
                    .or_default()
                    .extend(vault.into_iter().cloned());
            }
        }
        self.stores.retain(&by_store.keys().cloned().collect());
        self.metrics
            .workloads_watched
            .set(i64::try_from(workloads.len()).unwrap_or(i64::MAX));
        if by_store.is_empty() && aws_by_ns.is_empty() {
            self.metrics.paths_watched.set(0);
            return Cycle::Done(interval);
        }
        self.turn = self.turn.wrapping_add(1);
        let budget = self.config.paths_per_namespace;
        let selected: BTreeMap<StoreKey, BTreeMap<String, BTreeSet<String>>> = by_store
            .iter()
            .map(|(key, by_ns)| (key.clone(), select_by_namespace(by_ns, budget, self.turn)))
            .collect();
        let aws_selected = select_paths(&aws_by_ns, budget, self.turn);
        let waiting: usize = by_store
            .values()
            .chain(std::iter::once(&aws_by_ns))
            .map(|by_ns| waiting(by_ns, budget))
            .sum();
        self.metrics
            .paths_waiting_turn
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        let watched: BTreeMap<StoreKey, BTreeSet<String>> = by_store
            .iter()
            .map(|(key, by_ns)| (key.clone(), by_ns.values().flatten().cloned().collect()))
            .collect();
        // AWS references by region (each its own login, deadline and backoff), each namespace's
        // selected ARNs apart (asked in batches of their own).
        let mut aws_by_region: BTreeMap<AwsRegion, BTreeMap<String, BTreeSet<String>>> =
            BTreeMap::new();
        for (namespace, arns) in &aws_by_ns {
            for arn in arns.iter().filter(|a| aws_selected.contains(*a)) {
                if let Some(region) = AwsRegion::of(arn) {
                    aws_by_region
                        .entry(region)
                        .or_default()
                        .entry(namespace.clone())
                        .or_default()
                        .insert(arn.clone());
                }
            }
        }
        let used: BTreeSet<Source> = by_store
            .keys()
            .cloned()
            .map(Source::Vault)
            .chain(aws_by_region.keys().cloned().map(Source::Aws))
            .collect();
        self.polls.retain(&used);
        let polled = self.poll_sources(&selected, &watched, &aws_by_region).await;
        let mut versions: BTreeMap<StoreKey, StoreAnswer> = BTreeMap::new();
        let mut aws_answer = StoreAnswer::default();
        let mut down = 0usize;
        let mut answered = BTreeSet::new();
        for (source, outcome) in polled {
            if !used.contains(&source) {
                continue;
            }
            match outcome {
                Some((answer, asked)) => {
                    self.polls.last_distinct.insert(source.clone(), asked);
                    answered.insert(source.clone());
                    match source {
                        Source::Vault(key) => {
                            versions.insert(key, answer);
                        }
                        Source::Aws(_) => {
                            aws_answer.versions.extend(answer.versions);
                            aws_answer.written.extend(answer.written);
                        }
                    }
                }
                None => down += 1,
            }
        }
        // Distinct secrets, however they are spelled, per source (one resting, in its backoff or
        // still polling as of its last answered poll), and those whose namespace's turn has not
        // come.
        let distinct: usize = used
            .iter()
            .filter_map(|s| self.polls.last_distinct.get(s))
            .sum();
        self.metrics
            .paths_watched
            .set(i64::try_from(distinct + waiting).unwrap_or(i64::MAX));
        self.metrics.store_reachable.set(i64::from(down == 0));
        // One poll per cycle, over every source: failed when any source did not answer.
        let outcome = if down == 0 { "ok" } else { "failed" };
        self.metrics
            .polls
            .get_or_create(&ResultLabels { result: outcome })
            .inc();
        if down > 0 && answered.is_empty() {
            return Cycle::StoreDown;
        }
        let nothing_answered = StoreAnswer::default();
        // A workload reading both families gets both answers in one.
        let both: Vec<Option<StoreAnswer>> = workloads
            .iter()
            .zip(&stores)
            .map(|(w, key)| {
                let key = key.as_ref()?;
                w.paths.iter().any(|p| is_aws_path(p)).then(|| {
                    merged(
                        versions.get(key).unwrap_or(&nothing_answered),
                        &aws_answer,
                        &w.paths,
                    )
                })
            })
            .collect();
        let current: Vec<&StoreAnswer> = stores
            .iter()
            .zip(&both)
            .map(|(key, both)| match (key, both) {
                (_, Some(both)) => both,
                (Some(key), None) => versions.get(key).unwrap_or(&nothing_answered),
                (None, None) => &aws_answer,
            })
            .collect();
        let settings = PlanSettings {
            settle: self.config.settle,
            max_rollouts_per_poll: self.config.max_rollouts_per_poll,
        };
        let plan = plan_cycle(&workloads, &current, pending, Instant::now(), settings);
        self.publish_plan(&workloads, &plan);
        for step in &plan.steps {
            if !self.leading.load(Ordering::SeqCst) {
                tracing::warn!(
                    "not leading any more (lease lost or not renewed in time): the rest of this cycle is left to the next leader"
                );
                break;
            }
            self.apply(recorder, &workloads, step, pending).await;
        }
        if down > 0 {
            return Cycle::StoreDown;
        }
        Cycle::Done(plan.wake_within.map_or(interval, |w| w.min(interval)))
    }

    /// Starts a poll of every selected source that is not polling, resting after an expensive
    /// poll (`--poll-budget`) or waiting for its backoff after a failed one, each in a task of
    /// its own within its own deadline ([`crate::sources`]); waits for the polls it started, at
    /// most [`CYCLE_WAIT`]; returns every poll that has returned by then (a slow one started by
    /// an earlier cycle included). A source not returned holds back only its own workloads:
    /// nothing is recorded or rolled for them this cycle.
    async fn poll_sources(
        &mut self,
        selected: &BTreeMap<StoreKey, BTreeMap<String, BTreeSet<String>>>,
        watched: &BTreeMap<StoreKey, BTreeSet<String>>,
        aws: &BTreeMap<AwsRegion, BTreeMap<String, BTreeSet<String>>>,
    ) -> Vec<(Source, crate::sources::Outcome)> {
        let now = Instant::now();
        let cycle = self.turn;
        // As the outage wait: a recovered source is noticed within an interval.
        let backoff_cap = self.config.backoff_cap.min(self.config.poll_interval);
        for (key, by_namespace) in selected {
            let source = Source::Vault(key.clone());
            if self.polls.in_flight.contains_key(&source) {
                tracing::debug!(store = %key, "the store's last poll is still under way");
                continue;
            }
            let store = match self.stores.take(key) {
                Ok(store) => store,
                Err(e) => {
                    tracing::warn!(store = %key, error = %e, "no client for the store");
                    continue;
                }
            };
            // A namespace whose last poll cost more requests than the budget allows by now
            // rests alone (`--poll-budget`); the store's other namespaces are polled.
            let polled: BTreeMap<String, BTreeSet<String>> = by_namespace
                .iter()
                .filter(|(ns, _)| {
                    store
                        .rest_by_namespace
                        .get(*ns)
                        .is_none_or(|until| now >= *until)
                })
                .map(|(ns, paths)| (ns.clone(), paths.clone()))
                .collect();
            if polled.is_empty() || !store.poll_backoff.ready(now) {
                tracing::debug!(store = %key, "the store rests: its namespaces' last requests allow the next only later (--poll-budget), or its last poll failed and it waits for its backoff");
                self.stores.put_back(key.clone(), store);
                continue;
            }
            let paths: BTreeSet<String> = polled.values().flatten().cloned().collect();
            let key = key.clone();
            let watched = watched.get(&key).cloned().unwrap_or_default();
            let (auth, poller, metrics) = (
                self.stores.auth.clone(),
                self.poller.clone(),
                self.metrics.clone(),
            );
            self.polls.start(source, cycle, async move {
                let mut store = store;
                let started = Instant::now();
                let poll = poll_store(&mut store, &key, &paths, &auth, &poller, &metrics);
                let outcome = match tokio::time::timeout(STORE_DEADLINE, poll).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        tracing::warn!(store = %key, deadline_s = STORE_DEADLINE.as_secs(), "the store's poll did not finish within its deadline; its workloads wait for the next poll");
                        None
                    }
                };
                store
                    .poll_backoff
                    .poll_ended(outcome.is_some(), backoff_cap, &key);
                if outcome.is_some() {
                    rest_each_namespace(&mut store, &polled, &poller, started);
                }
                store.lookups.retain(|p| watched.contains(p));
                store.known.retain(|p, _| watched.contains(p));
                Returned::Vault(key, Box::new(store), outcome)
            });
        }
        for (region, by_namespace) in aws {
            let source = Source::Aws(region.clone());
            if self.polls.in_flight.contains_key(&source) {
                tracing::debug!(store = %region, "the region's last poll is still under way");
                continue;
            }
            let watch = self.polls.aws.remove(region).unwrap_or_default();
            if watch.rest_until.is_some_and(|until| now < until) || !watch.poll_backoff.ready(now) {
                tracing::debug!(store = %region, "the AWS region rests (--poll-budget) or waits for its backoff");
                self.polls.aws.insert(region.clone(), watch);
                continue;
            }
            let (region, by_namespace) = (region.clone(), by_namespace.clone());
            let (poller, metrics) = (self.poller.clone(), self.metrics.clone());
            self.polls.start(source, cycle, async move {
                let mut watch = watch;
                let started = Instant::now();
                let poll = watch.poll(&by_namespace, &metrics);
                let outcome = match tokio::time::timeout(STORE_DEADLINE, poll).await {
                    Ok(Some((answer, requests))) => {
                        watch.rest_until = Some(started + poller.rest_after(requests));
                        let asked = by_namespace.values().flatten().collect::<BTreeSet<_>>().len();
                        Some((answer, asked))
                    }
                    Ok(None) => None,
                    Err(_) => {
                        tracing::warn!(store = %region, deadline_s = STORE_DEADLINE.as_secs(), "the AWS region's poll did not finish within its deadline; its workloads wait for the next poll");
                        None
                    }
                };
                watch
                    .poll_backoff
                    .poll_ended(outcome.is_some(), backoff_cap, &region);
                Returned::Aws(region, Box::new(watch), outcome)
            });
        }
        let mut outcomes = Vec::new();
        for returned in self.polls.returned(cycle, CYCLE_WAIT).await {
            match returned {
                Returned::Vault(key, store, outcome) => {
                    self.stores.put_back(key.clone(), *store);
                    outcomes.push((Source::Vault(key), outcome));
                }
                Returned::Aws(region, watch, outcome) => {
                    self.polls.aws.insert(region.clone(), *watch);
                    outcomes.push((Source::Aws(region), outcome));
                }
            }
        }
        outcomes
    }

    /// Logs and counts what the plan found before anything is applied.
    fn publish_plan(&self, workloads: &[Workload], plan: &CyclePlan) {
        for &index in &plan.detected {
            let w = &workloads[index];
            self.metrics.rotations_detected.inc();
            tracing::info!(kind = w.kind.as_str(), namespace = %w.namespace, name = %w.name, "rotation detected");
        }
        for &index in &plan.deferred {
            let w = &workloads[index];
            tracing::info!(kind = w.kind.as_str(), namespace = %w.namespace, name = %w.name, cap = self.config.max_rollouts_per_poll, "rollout deferred: cap on rollouts per poll reached");
        }
    }

    /// Applies one step in stages: in signal mode the pods are told first, then the workload
    /// gets its conditional patch (bounded in time), then the outcome is counted and announced.
    async fn apply(
        &self,
        recorder: &Recorder,
        workloads: &[Workload],
        step: &Step,
        pending: &mut Pending,
    ) {
        let (index, record, roll) = match step {
            Step::Record { workload, versions } => (*workload, versions, None),
            Step::Roll {
                workload,
                reason,
                record,
                since,
            } => (*workload, record, Some((reason, since))),
        };
        let w = &workloads[index];
        // The record follows only when every pod was told, so a failure is retried next poll
        // (telling again is harmless: the same versions).
        let told = match (roll, w.on_rotation) {
            (Some(_), OnRotation::Signal(_)) => match self.tell(w, record).await {
                Told::Pods(n) => Some(n),
                Told::Forbidden => None,
                Told::Failed => return,
            },
            _ => None,
        };
        let at = k8s_openapi::jiff::Timestamp::now().to_string();
        let roll_at = roll.filter(|_| told.is_none()).map(|_| at.as_str());
        let outcome =
            match tokio::time::timeout(API_TIMEOUT, patch_workload(&self.kube, w, record, roll_at))
                .await
            {
                Ok(outcome) => outcome.map_err(PatchFailed::Api),
                Err(_) => Err(PatchFailed::TimedOut(API_TIMEOUT)),
            };
        match roll {
            None => self.report_record(w, outcome),
            Some((reason, since)) => {
                if self.report_roll(w, outcome, told, since) {
                    pending.remove(&w.key());
                    match told {
                        Some(pods) => self.publish_in_place(recorder, w, reason, pods).await,
                        None => self.publish_rollout(recorder, w, reason).await,
                    }
                }
            }
        }
    }

    /// Stage 1 in signal mode: every running pod of the workload told of the new versions.
    async fn tell(&self, w: &Workload, record: &BTreeMap<String, u64>) -> Told {
        let tell = crate::pods::tell_pods(&self.kube, w, record);
        match tokio::time::timeout(API_TIMEOUT * 3, tell).await {
            Ok(Ok(n)) => Told::Pods(n),
            Ok(Err(kube::Error::Api(e))) if e.code == 403 => {
                tracing::warn!(kind = w.kind.as_str(), namespace = %w.namespace, name = %w.name, error = %e.message, "may not patch pods (chart: reloader.inPlaceRotation=false): rolling the workload instead");
                Told::Forbidden
            }
            Ok(Err(e)) => {
                self.metrics.rollout_failures.inc();
                tracing::warn!(kind = w.kind.as_str(), namespace = %w.namespace, name = %w.name, error = %e, "telling the pods of the new versions failed; retrying next poll");
                Told::Failed
            }
            Err(_) => {
                self.metrics.rollout_failures.inc();
                tracing::warn!(kind = w.kind.as_str(), namespace = %w.namespace, name = %w.name, "telling the pods of the new versions timed out; retrying next poll");
                Told::Failed
            }
        }
    }

    /// The outcome of a patch that only records versions.
    fn report_record(&self, w: &Workload, outcome: Result<Patched, PatchFailed>) {
        match outcome {
            Ok(Patched::Applied) => {}
            Ok(Patched::Conflict) => {
                self.metrics.patch_conflicts.inc();
            }
            Err(e) => {
                tracing::warn!(kind = w.kind.as_str(), namespace = %w.namespace, name = %w.name, error = %e, "recording versions failed")
            }
        }
    }

    /// The outcome of a rollout (or of the record after pods were told) counted; true when it
    /// landed, so the caller announces it.
    fn report_roll(
        &self,
        w: &Workload,
        outcome: Result<Patched, PatchFailed>,
        told: Option<usize>,
        since: &Instant,
    ) -> bool {
        let kind = KindLabels {
            kind: w.kind.as_str(),
        };
        match outcome {
            Ok(Patched::Applied) => {
                match told {
                    Some(pods) => {
                        self.metrics.in_place_rotations.get_or_create(&kind).inc();
                        self.metrics.pods_told.inc_by(pods as u64);
                    }
                    None => {
                        self.metrics.rollouts.get_or_create(&kind).inc();
                    }
                }
                self.metrics
                    .detection_to_patch
                    .observe(since.elapsed().as_secs_f64());
                true
            }
            Ok(Patched::Conflict) => {
                self.metrics.patch_conflicts.inc();
                tracing::info!(kind = w.kind.as_str(), namespace = %w.namespace, name = %w.name, "not rolled: the workload changed since it was read (another replica acted, or the cache was stale); deciding again next poll");
                false
            }
            Err(e) => {
                self.metrics.rollout_failures.inc();
                tracing::warn!(kind = w.kind.as_str(), namespace = %w.namespace, name = %w.name, error = %e, "rollout patch failed; retrying next poll");
                false
            }
        }
    }

    /// A Warning Event on each workload that references paths its namespace may not have
    /// watched, once per template generation: which paths, and the rule.
    async fn announce_not_watched(&mut self, recorder: &Recorder, workloads: &[Workload]) {
        for w in workloads.iter().filter(|w| !w.not_watched.is_empty()) {
            if !self
                .announced
                .insert((w.uid.clone(), w.generation, EventReason::PathNotWatched))
            {
                continue;
            }
            self.metrics
                .paths_not_watched
                .inc_by(w.not_watched.len() as u64);
            let rule = self.config.watchable.describe();
            tracing::warn!(kind = w.kind.as_str(), namespace = %w.namespace, name = %w.name, paths = ?w.not_watched, %rule, "paths outside what the namespace may have watched; a rotation of them will not roll this workload");
            let event = Event {
                type_: EventType::Warning,
                reason: EventReason::PathNotWatched.to_string(),
                note: Some(truncate(
                    &format!(
                        "rotor does not watch {} for this {}: namespace {} may have watched only {rule} (--watchable-paths), so a rotation of it will not roll it",
                        w.not_watched.join(", "),
                        w.kind.as_str(),
                        w.namespace
                    ),
                    1000,
                )),
                action: "Watch".to_string(),
                secondary: None,
            };
            self.publish(recorder, &event, w).await;
        }
    }

    /// A Warning Event on a workload whose store the reloader may not poll, once per template
    /// generation, while leading.
    async fn announce_store_refused(
        &mut self,
        recorder: &Recorder,
        w: &Workload,
        why: crate::stores::StoreNotAllowed,
    ) {
        if !self.leading.load(Ordering::SeqCst)
            || !self
                .announced
                .insert((w.uid.clone(), w.generation, EventReason::StoreNotAllowed))
        {
            return;
        }
        tracing::warn!(kind = w.kind.as_str(), namespace = %w.namespace, name = %w.name, reason = %why, "workload not watched");
        let event = Event {
            type_: EventType::Warning,
            reason: EventReason::StoreNotAllowed.to_string(),
            note: Some(truncate(
                &format!("rotor does not watch this {}: {why}", w.kind.as_str()),
                1000,
            )),
            action: "Watch".to_string(),
            secondary: None,
        };
        self.publish(recorder, &event, w).await;
    }

    async fn publish(&self, recorder: &Recorder, event: &Event, w: &Workload) {
        match tokio::time::timeout(API_TIMEOUT, recorder.publish(event, &w.reference)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "publishing the event failed"),
            Err(_) => tracing::warn!("publishing the event timed out"),
        }
    }

    /// The log line and the Event of a rotation delivered to the running pods.
    async fn publish_in_place(
        &self,
        recorder: &Recorder,
        w: &Workload,
        reason: &Reason,
        pods: usize,
    ) {
        let (_, because) = describe(reason);
        tracing::info!(kind = w.kind.as_str(), namespace = %w.namespace, name = %w.name, pods, mode = %w.on_rotation, because = %because, "rotation delivered in place");
        let event = Event {
            type_: EventType::Normal,
            reason: EventReason::SecretRotatedInPlace.to_string(),
            note: Some(truncate(
                &format!(
                    "rotor told {pods} running pod(s) of this {} to re-read and send the app {} (rotor.dev/on-rotation), not rolling it, because {because}",
                    w.kind.as_str(),
                    match w.on_rotation {
                        OnRotation::Signal(s) => s.name(),
                        OnRotation::Rollout => "nothing",
                    }
                ),
                1000,
            )),
            action: "Signal".to_string(),
            secondary: None,
        };
        self.publish(recorder, &event, w).await;
    }

    /// The log line and the Event of a rollout that landed.
    async fn publish_rollout(&self, recorder: &Recorder, w: &Workload, reason: &Reason) {
        let (event_reason, because) = describe(reason);
        tracing::info!(kind = w.kind.as_str(), namespace = %w.namespace, name = %w.name, reason = event_reason.as_str(), because = %because, "rollout started");
        let event = Event {
            type_: if event_reason.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: event_reason.to_string(),
            note: Some(truncate(
                &format!("rotor rolled this {} because {because}", w.kind.as_str()),
                1000,
            )),
            action: "Rollout".to_string(),
            secondary: None,
        };
        self.publish(recorder, &event, w).await;
    }
}

/// The Event reason and explanation of why a workload's secrets are taken anew.
fn describe(reason: &Reason) -> (EventReason, String) {
    match reason {
        Reason::Rotated(changes) => {
            let summary: Vec<String> = changes
                .iter()
                .map(|c| {
                    // A Secrets Manager version is an id, recorded as its digest: not worth showing.
                    if c.path.contains(":secretsmanager:") {
                        format!("{} has a new AWSCURRENT version", c.path)
                    } else {
                        format!("{} version {} -> {}", c.path, c.old, c.new)
                    }
                })
                .collect();
            (EventReason::SecretRotated, summary.join(", "))
        }
        Reason::RotatedBeforeFirstSight(paths) => (
            EventReason::RotatedBeforeWatched,
            format!(
                "{} changed after its pods' template last changed, before rotor first saw it, so its pods hold older values",
                paths.join(", ")
            ),
        ),
        Reason::UnreadableRecord(why) => (
            EventReason::UnreadableRecord,
            format!(
                "its record could not be read, so a rotation may have been missed ({why}); the record is rewritten"
            ),
        ),
    }
}

/// What telling a workload's pods came to.
enum Told {
    /// Every running pod was told (this many).
    Pods(usize),
    /// The reloader may not patch pods: the workload is rolled instead.
    Forbidden,
    /// Telling failed or timed out: nothing is recorded, the next poll tries again.
    Failed,
}

/// A conditional patch of a workload that did not land.
#[derive(Debug, thiserror::Error)]
enum PatchFailed {
    #[error("{0}")]
    Api(kube::Error),
    #[error(
        "no answer within {0:?}; the outcome is unknown and the next poll decides again from a fresh read"
    )]
    TimedOut(Duration),
}

/// The longest any one API call of the control loop may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Polls every selected path of one store once (logging in first when needed and its backoff
/// allows, and again once if the token was refused): the versions and the distinct secrets
/// asked about, or `None` when the store did not answer or the login failed. An answered poll
/// sets the store's rest (`Poller::rest_after` its requests).
async fn poll_store(
    store: &mut Store,
    key: &StoreKey,
    paths: &BTreeSet<String>,
    auth: &rotor_core::store::Auth,
    poller: &Poller,
    metrics: &Metrics,
) -> Option<(StoreAnswer, usize)> {
    let started = Instant::now();
    if !store.logged_in {
        if !store.login_backoff.ready(started) {
            tracing::debug!(store = %key, "the store's login waits for its backoff");
            return None;
        }
        match store.client.login(auth).await {
            Ok(()) => {
                store.logged_in = true;
                store.login_backoff.succeeded();
            }
            Err(e) => {
                let wait = store.login_backoff.failed(Instant::now());
                tracing::warn!(store = %key, error = %e, retry_in_s = wait.as_secs(), "store login failed");
                return None;
            }
        }
    }
    let mut result = poller
        .poll_versions(
            &store.client,
            paths,
            &mut store.lookups,
            &mut store.listings,
            &mut store.order,
        )
        .await;
    // A 403 is either a path this reloader may not read or a token that is gone: log in
    // again only for the second, so one forbidden path does not mint a token per poll.
    let token_refused =
        result.needs_login() && matches!(store.client.token_accepted().await, Ok(false));
    if token_refused {
        match store.client.login(auth).await {
            Ok(()) => {
                result = poller
                    .poll_versions(
                        &store.client,
                        paths,
                        &mut store.lookups,
                        &mut store.listings,
                        &mut store.order,
                    )
                    .await;
            }
            Err(e) => {
                tracing::warn!(store = %key, error = %e, "store login failed");
                store.logged_in = false;
            }
        }
    }
    metrics
        .poll_duration
        .observe(started.elapsed().as_secs_f64());
    // Listing pages and per-path reads.
    metrics.store_requests.inc_by(result.requests as u64);
    metrics.store_errors.inc_by(result.errors.len() as u64);
    for (path, error) in result.errors.iter().take(5) {
        tracing::warn!(store = %key, %path, %error, "polling a path failed");
    }
    if result.store_unreachable() {
        return None;
    }
    metrics.store_last_success.set(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .unwrap_or(0),
    );
    tracing::debug!(
        store = %key,
        paths = paths.len(),
        requests = result.requests,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "poll done"
    );
    if !result.unread.is_empty() {
        tracing::info!(store = %key, unread = result.unread.len(), read_s = crate::poll::READ_TIME.as_secs(), "not every path could be read this poll; the rest are read first next poll (their last versions stand meanwhile)");
    }
    let answer = answer_with_known(
        store,
        result.versions,
        result.written,
        &result.unread,
        &result.errors,
    );
    store.last_read_per_path = std::mem::take(&mut result.read_per_path);
    Some((answer, result.distinct))
}

/// After an answered poll that started at `started`, each polled namespace rests as long as
/// the budget needs for the per-path reads of its own paths (a namespace whose paths were
/// listed, or that shares them, costs next to nothing); namespaces no longer polled are
/// forgotten.
fn rest_each_namespace(
    store: &mut Store,
    polled: &BTreeMap<String, BTreeSet<String>>,
    poller: &Poller,
    started: Instant,
) {
    for (namespace, paths) in polled {
        let requests = paths
            .iter()
            .filter(|p| store.last_read_per_path.contains(*p))
            .count();
        let rest = poller.rest_after(requests);
        if rest.is_zero() {
            store.rest_by_namespace.remove(namespace);
        } else {
            store
                .rest_by_namespace
                .insert(namespace.clone(), started + rest);
        }
    }
    let now = Instant::now();
    store.rest_by_namespace.retain(|_, until| *until > now);
}

/// The answer of one poll: the versions read, and for each path whose turn did not come, the
/// version last read (none when it was never read: its workloads wait). Remembers what was
/// read; a path that failed is forgotten, so it is never answered from memory.
fn answer_with_known(
    store: &mut Store,
    versions: std::collections::HashMap<String, u64>,
    written: std::collections::HashMap<String, k8s_openapi::jiff::Timestamp>,
    unread: &[String],
    failed: &[(String, rotor_core::store::StoreError)],
) -> StoreAnswer {
    let mut answer = StoreAnswer { versions, written };
    for path in unread {
        if let Some((version, at)) = store.known.get(path) {
            answer.versions.insert(path.clone(), *version);
            if let Some(at) = at {
                answer.written.insert(path.clone(), *at);
            }
        }
    }
    for (path, _) in failed {
        store.known.remove(path);
    }
    for (path, version) in &answer.versions {
        store
            .known
            .insert(path.clone(), (*version, answer.written.get(path).copied()));
    }
    answer
}

/// One answer for a workload that reads from a Vault store and from AWS: each of its paths
/// as the family it belongs to answered it.
fn merged(vault: &StoreAnswer, aws: &StoreAnswer, paths: &BTreeSet<String>) -> StoreAnswer {
    let mut out = StoreAnswer::default();
    for path in paths {
        let from = if is_aws_path(path) { aws } else { vault };
        if let Some(v) = from.versions.get(path) {
            out.versions.insert(path.clone(), *v);
        }
        if let Some(at) = from.written.get(path) {
            out.written.insert(path.clone(), *at);
        }
    }
    out
}

#[cfg(test)]
#[path = "controller_store_tests.rs"]
mod store_tests;
