//! Every source of versions the reloader polls (one Vault/OpenBao store, one AWS region) is
//! polled in a task of its own, with its own deadline; a cycle waits for the polls it started,
//! at most [`CYCLE_WAIT`], and plans with what has answered. A source that hangs or answers
//! slowly holds back only its own workloads: its poll goes on (within its deadline) and its
//! answer is taken by a later cycle, while every other source is polled each interval.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::aws_watch::AwsWatch;
use crate::planner::StoreAnswer;
use crate::stores::{Store, StoreKey};

/// One AWS partition and region: its own login (STS is regional), deadline and backoff.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AwsRegion {
    pub partition: String,
    pub region: String,
}

impl std::fmt::Display for AwsRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "aws {} ({})", self.region, self.partition)
    }
}

impl AwsRegion {
    /// The region of an AWS reference, `None` for anything that is not an ARN rotor reads.
    pub fn of(arn: &str) -> Option<Self> {
        let parsed = rotor_core::aws_reference::parse_arn(arn).ok()?;
        Some(Self {
            partition: parsed.partition.to_string(),
            region: parsed.region.to_string(),
        })
    }
}

/// A source of versions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Vault(StoreKey),
    Aws(AwsRegion),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Vault(key) => key.fmt(f),
            Self::Aws(region) => region.fmt(f),
        }
    }
}

/// A poll's outcome: the answer and the distinct secrets it asked about, or `None` when the
/// source did not answer (login failed, every request failed, or the deadline passed).
pub type Outcome = Option<(StoreAnswer, usize)>;

/// What a source's poll task hands back: its state (moved into the task for the poll) and
/// the outcome.
pub enum Returned {
    Vault(StoreKey, Box<Store>, Outcome),
    Aws(AwsRegion, Box<AwsWatch>, Outcome),
}

/// How long a cycle waits for the polls it started before it plans with what has answered;
/// a poll still running is taken by a later cycle.
pub const CYCLE_WAIT: Duration = Duration::from_secs(3);

/// The polls under way and what they last asked about.
pub struct Polls {
    tx: mpsc::UnboundedSender<(u64, Returned)>,
    rx: mpsc::UnboundedReceiver<(u64, Returned)>,
    /// Sources with a poll under way, by the cycle that started it.
    pub in_flight: BTreeMap<Source, u64>,
    /// Distinct secrets each source's last answered poll asked about (for the watched-paths
    /// gauge while it rests or polls).
    pub last_distinct: BTreeMap<Source, usize>,
    /// The AWS regions' watches not polling now.
    pub aws: BTreeMap<AwsRegion, AwsWatch>,
}

impl Default for Polls {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx,
            in_flight: BTreeMap::new(),
            last_distinct: BTreeMap::new(),
            aws: BTreeMap::new(),
        }
    }
}

impl Polls {
    /// Starts `poll` for `source` in a task of its own, as cycle `cycle`.
    pub fn start<F>(&mut self, source: Source, cycle: u64, poll: F)
    where
        F: std::future::Future<Output = Returned> + Send + 'static,
    {
        self.in_flight.insert(source, cycle);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let returned = poll.await;
            // The receiver lives as long as the controller.
            let _ = tx.send((cycle, returned));
        });
    }

    /// Every poll that has returned: those of `cycle` waited for (at most `wait`), the others
    /// taken as they are.
    pub async fn returned(&mut self, cycle: u64, wait: Duration) -> Vec<Returned> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Ok((_, returned)) = self.rx.try_recv() {
                self.finished(&returned);
                out.push(returned);
            }
            if !self.in_flight.values().any(|c| *c == cycle) {
                return out;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((_, returned))) => {
                    self.finished(&returned);
                    out.push(returned);
                }
                Ok(None) | Err(_) => return out,
            }
        }
    }

    fn finished(&mut self, returned: &Returned) {
        let source = match returned {
            Returned::Vault(key, _, _) => Source::Vault(key.clone()),
            Returned::Aws(region, _, _) => Source::Aws(region.clone()),
        };
        self.in_flight.remove(&source);
    }

    /// Forgets what is known of sources no workload uses any more (a poll under way ends on its
    /// own; what it returns is dropped by the caller).
    pub fn retain(&mut self, used: &BTreeSet<Source>) {
        self.last_distinct.retain(|s, _| used.contains(s));
        self.aws
            .retain(|region, _| used.contains(&Source::Aws(region.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(addr: &str) -> StoreKey {
        StoreKey {
            addr: addr.to_string(),
            namespace: None,
        }
    }

    fn returned(addr: &str) -> Returned {
        let client = rotor_core::store::StoreClient::new(rotor_core::store::StoreConfig::new(
            "http://127.0.0.1:1",
        ))
        .expect("client");
        Returned::Vault(key(addr), Box::new(Store::new(client)), None)
    }

    #[tokio::test]
    async fn a_cycle_waits_for_its_own_polls_only_and_takes_a_slow_one_later() {
        let mut polls = Polls::default();
        let fast = Source::Vault(key("http://fast"));
        let slow = Source::Vault(key("http://slow"));
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        polls.start(fast.clone(), 1, async { returned("http://fast") });
        polls.start(slow.clone(), 1, async move {
            let _ = hold.await;
            returned("http://slow")
        });
        let first = polls.returned(1, Duration::from_millis(200)).await;
        assert_eq!(first.len(), 1, "the fast one, then the wait ends");
        assert!(polls.in_flight.contains_key(&slow) && !polls.in_flight.contains_key(&fast));
        // The next cycle starts nothing of its own: it does not wait for the slow one.
        let started = tokio::time::Instant::now();
        assert!(polls.returned(2, Duration::from_secs(5)).await.is_empty());
        assert!(started.elapsed() < Duration::from_secs(1));
        release.send(()).expect("the slow poll waits");
        // Waiting as cycle 1 again ends when the slow one is back.
        let later = polls.returned(1, Duration::from_secs(5)).await;
        assert_eq!(later.len(), 1, "taken by a later cycle");
        assert!(polls.in_flight.is_empty());
    }
}
