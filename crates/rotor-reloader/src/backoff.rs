//! Remembered failures: a store login or a mount lookup that failed is not tried again until
//! its backoff has passed (1 s, doubling, at most 5 min), so a store that resets or hangs costs
//! one failed attempt per backoff, not one per path per poll.

use std::collections::HashMap;
use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_secs(1);
const CAP: Duration = Duration::from_secs(300);

/// One thing's consecutive failures and when it may be tried again.
#[derive(Clone, Debug, Default)]
pub struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    /// Whether it may be tried at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| now >= until)
    }

    /// Records a failure at `now`; returns the wait before the next try.
    pub fn failed(&mut self, now: Instant) -> Duration {
        self.failed_within(now, CAP)
    }

    /// [`Backoff::failed`], the wait at most `cap`.
    pub fn failed_within(&mut self, now: Instant, cap: Duration) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = FIRST
            .saturating_mul(2u32.saturating_pow(self.failures.saturating_sub(1).min(20)))
            .min(CAP)
            .min(cap);
        self.until = Some(now + wait);
        wait
    }

    /// Records how a source's poll ended: answered resets the backoff; not answered waits (at
    /// most `cap`) and says so, naming `source`.
    pub fn poll_ended(&mut self, answered: bool, cap: Duration, source: &dyn std::fmt::Display) {
        if answered {
            self.succeeded();
        } else {
            let wait = self.failed_within(Instant::now(), cap);
            tracing::warn!(store = %source, retry_in_s = wait.as_secs_f64(), "the source did not answer; it is polled again after its backoff, the other sources every poll");
        }
    }

    pub fn succeeded(&mut self) {
        *self = Self::default();
    }
}

/// Failed lookups by key, each with its last error (given again while it waits).
#[derive(Debug)]
pub struct Remembered<E> {
    failed: HashMap<String, (Backoff, E)>,
}

impl<E> Default for Remembered<E> {
    fn default() -> Self {
        Self {
            failed: HashMap::new(),
        }
    }
}

impl<E: Clone> Remembered<E> {
    /// The remembered error of `key` while its backoff has not passed.
    pub fn waiting(&self, key: &str, now: Instant) -> Option<E> {
        self.failed
            .get(key)
            .filter(|(backoff, _)| !backoff.ready(now))
            .map(|(_, e)| e.clone())
    }

    pub fn failed(&mut self, key: &str, error: E, now: Instant) {
        let entry = self
            .failed
            .entry(key.to_string())
            .or_insert_with(|| (Backoff::default(), error.clone()));
        entry.0.failed(now);
        entry.1 = error;
    }

    pub fn succeeded(&mut self, key: &str) {
        self.failed.remove(key);
    }

    /// Forgets keys no longer asked about (paths no workload references any more).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.failed.retain(|k, _| keep(k));
    }

    pub fn len(&self) -> usize {
        self.failed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.failed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_one_second_up_to_five_minutes_and_reset_on_success() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(b.ready(t0));
        let waits: Vec<u64> = (0..12).map(|_| b.failed(t0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert!(!b.ready(t0 + Duration::from_secs(299)));
        assert!(b.ready(t0 + Duration::from_secs(300)));
        b.succeeded();
        assert!(b.ready(t0));
        assert_eq!(b.failed(t0), FIRST);
    }

    #[test]
    fn a_remembered_failure_is_given_again_until_its_backoff_passes() {
        let t0 = Instant::now();
        let mut r = Remembered::<String>::default();
        r.failed("secret/a", "reset".to_string(), t0);
        assert_eq!(r.waiting("secret/a", t0).as_deref(), Some("reset"));
        assert_eq!(r.waiting("secret/b", t0), None);
        assert_eq!(r.waiting("secret/a", t0 + FIRST), None, "tried again");
        r.failed("secret/a", "reset again".to_string(), t0 + FIRST);
        assert_eq!(
            r.waiting("secret/a", t0 + FIRST + Duration::from_secs(1))
                .as_deref(),
            Some("reset again"),
            "the second wait is 2 s"
        );
        r.retain(|k| k != "secret/a");
        assert!(r.is_empty());
    }
}
