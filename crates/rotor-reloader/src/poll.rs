//! Polling the store for the current version of each distinct path (KV v2 metadata, never the
//! secret data): by directory listing where that takes fewer requests ([`crate::listing`]), one
//! metadata request per path otherwise, with a concurrency bound and a request-rate limit.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::jiff;
use rotor_core::store::{StoreClient, StoreError};
use tokio::sync::Mutex;

use crate::backoff::Remembered;
use crate::listing::{Group, Listings, dir_and_name, list_groups, settle_refusals};

#[derive(Debug, Default)]
pub struct PollResult {
    pub versions: HashMap<String, u64>,
    /// When each path's current version was written (paths the store gave a time for).
    pub written: HashMap<String, jiff::Timestamp>,
    pub requests: usize,
    /// Distinct secrets asked about (spellings of one secret are one).
    pub distinct: usize,
    /// Paths that failed, with the error (names the path, never a value).
    pub errors: Vec<(String, StoreError)>,
    /// Spellings whose per-path read did not start within the poll's read time: their turn
    /// comes first next poll ([`ReadOrder`]).
    pub unread: Vec<String>,
    /// Paths (as asked) read with one request each this poll: what the poll cost each
    /// namespace.
    pub read_per_path: BTreeSet<String>,
}

/// When each path of one store was last read per path, so a poll that cannot read them all
/// within its read time reads the longest-waiting first: every path comes round within
/// ceil(paths / paths read per poll) polls, at any scale (a moving window).
#[derive(Debug, Default)]
pub struct ReadOrder {
    polls: u64,
    reads: u64,
    last_read: HashMap<String, u64>,
}

impl ReadOrder {
    /// `paths` ordered by their last read, never read first.
    fn order(&self, mut paths: Vec<String>) -> Vec<String> {
        paths.sort_by_key(|p| self.last_read.get(p).copied().unwrap_or(0));
        paths
    }

    fn read(&mut self, path: &str) {
        self.last_read.insert(path.to_string(), self.polls);
        self.reads += 1;
    }

    /// Paths read per path so far, with repeats (for tests and the debug log).
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Paths read by the last poll.
    pub fn last_poll_reads(&self) -> impl Iterator<Item = &String> {
        self.last_read
            .iter()
            .filter(|(_, at)| **at == self.polls)
            .map(|(p, _)| p)
    }

    /// Starts a poll and forgets paths no longer asked about.
    fn next_poll(&mut self, asked: &HashMap<String, Vec<String>>) {
        self.polls += 1;
        self.last_read.retain(|p, _| asked.contains_key(p));
    }
}

impl PollResult {
    /// True when no request got an answer from the store (it is down or unreachable).
    pub fn store_unreachable(&self) -> bool {
        !self.errors.is_empty()
            && self.versions.is_empty()
            && self
                .errors
                .iter()
                .all(|(_, e)| e.is_transient() || matches!(e, StoreError::Deadline { .. }))
    }

    /// True when the store refused a request (403): the token may be gone (expired or revoked),
    /// or the path is forbidden; the caller asks the store which.
    pub fn needs_login(&self) -> bool {
        self.errors.iter().any(|(_, e)| e.is_permission_denied())
    }
}

/// How long one poll's per-path reads may go on starting: well within the store's deadline.
pub const READ_TIME: Duration = Duration::from_secs(8);

/// The longest a budget rests a store: the old default interval, so no store is polled less
/// often than before the budget (nor more than its paths per 30 s beyond the budget).
pub const LONGEST_REST: Duration = Duration::from_secs(30);

pub struct Poller {
    concurrency: usize,
    /// Average store requests per second one store's polls may make (`--poll-budget`; zero: no
    /// budget): a store rests after an expensive poll until the budget allows the next.
    budget: f64,
    /// Time between two request starts (the rate limit), zero for none.
    gap: Duration,
    /// Per-path reads start within this much of the poll's start; the rest wait for the next
    /// poll, longest-waiting first, so a store with thousands of paths still answers each poll.
    read_time: Duration,
    last_start: Arc<Mutex<tokio::time::Instant>>,
}

impl Poller {
    pub fn new(concurrency: usize, max_requests_per_second: u32) -> Self {
        let gap = if max_requests_per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / max_requests_per_second
        };
        Self {
            concurrency: concurrency.max(1),
            budget: 0.0,
            gap,
            read_time: READ_TIME,
            last_start: Arc::new(Mutex::new(tokio::time::Instant::now())),
        }
    }

    /// The current version of every path in `paths`: each distinct secret once, however it is
    /// spelled (`secret/db` and `secret/data/db` are one), by listing its directory where
    /// `listings` says that is cheaper, by one request otherwise.
    /// A path whose mount lookup failed is not looked up again until its backoff in
    /// `lookups` has passed (its last error stands for it meanwhile); lookups run concurrently.
    pub async fn poll_versions(
        &self,
        client: &StoreClient,
        paths: &BTreeSet<String>,
        lookups: &mut Remembered<StoreError>,
        listings: &mut Listings,
        order: &mut ReadOrder,
    ) -> PollResult {
        // Spellings → canonical paths (the mount lookup is cached per mount).
        let now = std::time::Instant::now();
        let reads_until = tokio::time::Instant::now() + self.read_time;
        let mut spellings: HashMap<String, Vec<String>> = HashMap::new();
        let mut failed = Vec::new();
        let mut to_look_up = Vec::new();
        for path in paths {
            match lookups.waiting(path, now) {
                Some(e) => failed.push((path.clone(), e)),
                None => to_look_up.push(path.clone()),
            }
        }
        // Owned items: the poll runs in a task of its own, whose future must not borrow from a
        // stream item (a higher-ranked lifetime the spawn cannot prove).
        let looked_up: Vec<(String, Result<String, StoreError>)> =
            futures::stream::iter(to_look_up)
                .map(|path: String| async move {
                    let canonical = client.canonical_path(&path).await;
                    (path, canonical)
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
        for (path, canonical) in looked_up {
            match canonical {
                Ok(canonical) => {
                    lookups.succeeded(&path);
                    spellings.entry(canonical).or_default().push(path);
                }
                Err(e) => {
                    lookups.failed(&path, e.clone(), std::time::Instant::now());
                    failed.push((path, e));
                }
            }
        }
        let distinct = spellings.len();
        order.next_poll(&spellings);
        let (groups, mut per_path) = group_by_directory(client, spellings.keys()).await;
        let listed = list_groups(self, client, groups, listings).await;
        per_path.extend(listed.unanswered);
        let per_path = order.order(per_path);
        type Answer = Result<(u64, Option<String>), StoreError>;
        // A read starts only before `reads_until`; one started finishes (within the client's
        // timeouts), so what was asked is never lost.
        let mut answers: Vec<(String, Answer)> = futures::stream::iter(per_path.clone())
            .take_while(|_: &String| std::future::ready(tokio::time::Instant::now() < reads_until))
            .map(|path: String| async move {
                self.pace().await;
                let answer = client.current_version_info(&path).await;
                (path, answer)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let read_per_path: BTreeSet<String> = answers.iter().map(|(p, _)| p.clone()).collect();
        for path in &read_per_path {
            order.read(path);
        }
        let unread: Vec<String> = per_path
            .iter()
            .filter(|p| !read_per_path.contains(*p))
            .flat_map(|p| spellings.get(p).into_iter().flatten().cloned())
            .collect();
        let answered: BTreeSet<&str> = answers
            .iter()
            .filter(|(_, a)| a.is_ok())
            .map(|(p, _)| p.as_str())
            .collect();
        settle_refusals(
            &client.config().addr,
            listed.refused,
            |p| answered.contains(p),
            listings,
        );
        let mut result = PollResult {
            requests: answers.len() + listed.requests,
            distinct,
            errors: failed,
            unread,
            read_per_path: read_per_path
                .iter()
                .flat_map(|p| spellings.get(p).into_iter().flatten().cloned())
                .collect(),
            ..PollResult::default()
        };
        answers.extend(
            listed
                .found
                .into_iter()
                .map(|(path, version, written)| (path, Ok((version, written)))),
        );
        answers.extend(listed.errors.into_iter().map(|(path, e)| (path, Err(e))));
        for (canonical, answer) in answers {
            match answer {
                Ok((v, written)) => {
                    let written = written.and_then(|t| t.parse::<jiff::Timestamp>().ok());
                    for spelling in spellings.get(&canonical).into_iter().flatten() {
                        result.versions.insert(spelling.clone(), v);
                        if let Some(t) = written {
                            result.written.insert(spelling.clone(), t);
                        }
                    }
                }
                Err(e) => result.errors.push((canonical, e)),
            }
        }
        result
    }

    /// One store's polls make at most `per_second` requests per second on average (but for
    /// [`LONGEST_REST`]): a store read path by path (Vault) with many secrets is polled less
    /// often than the interval, one whose versions are listed every interval.
    pub fn with_budget(mut self, per_second: f64) -> Self {
        self.budget = per_second;
        self
    }

    /// How long a store rests after a poll that made `requests` requests: what the budget
    /// needs, at most [`LONGEST_REST`]; zero without a budget.
    pub fn rest_after(&self, requests: usize) -> Duration {
        if self.budget.is_nan() || self.budget <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(requests as f64 / self.budget).min(LONGEST_REST)
    }

    /// How long per-path reads of one poll may go on starting ([`READ_TIME`] by default).
    pub fn with_read_time(mut self, read_time: Duration) -> Self {
        self.read_time = read_time;
        self
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Waits for the rate limit's next request start.
    pub async fn pace(&self) {
        if self.gap.is_zero() {
            return;
        }
        let mut last = self.last_start.lock().await;
        let next = *last + self.gap;
        let now = tokio::time::Instant::now();
        if next > now {
            tokio::time::sleep_until(next).await;
            *last = next;
        } else {
            *last = now;
        }
    }
}

/// Canonical paths on KV v2 mounts grouped by (mount, directory); the others (other engines,
/// a failed mount lookup) are read per path, which reports their error as before.
async fn group_by_directory(
    client: &StoreClient,
    canonical: impl Iterator<Item = &String>,
) -> (Vec<Group>, Vec<String>) {
    let mut groups: HashMap<(String, String), Group> = HashMap::new();
    let mut per_path = Vec::new();
    for path in canonical {
        // Cached by the canonical lookup: no request.
        let mount = match client.mount_info(path).await {
            Ok(m) if m.kv_version == Some(2) => m,
            _ => {
                per_path.push(path.clone());
                continue;
            }
        };
        let Some((dir, name)) = dir_and_name(&mount, path) else {
            per_path.push(path.clone());
            continue;
        };
        let (dir, name) = (dir.to_string(), name.to_string());
        groups
            .entry((mount.path.clone(), dir.clone()))
            .or_insert_with(|| Group {
                mount,
                dir,
                names: Default::default(),
            })
            .names
            .insert(name, path.clone());
    }
    (groups.into_values().collect(), per_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_rests_as_long_as_its_budget_needs_and_never_longer_than_the_old_interval() {
        let poller = Poller::new(8, 0).with_budget(10.0);
        assert_eq!(poller.rest_after(3), Duration::from_millis(300), "listed");
        assert_eq!(poller.rest_after(100), Duration::from_secs(10));
        assert_eq!(poller.rest_after(5_000), LONGEST_REST, "never longer");
        assert_eq!(
            Poller::new(8, 0).rest_after(5_000),
            Duration::ZERO,
            "no budget"
        );
    }
}
