//! Capped exponential backoff with full jitter, within an overall deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use super::error::StoreError;

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Overall deadline for one operation, all attempts included.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempt counts from 1): a random duration up to
    /// `min(max, initial * 2^(attempt-1))`, never zero.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
        let ceiling = exp.min(self.max);
        let millis = u64::try_from(ceiling.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(rand::random_range(millis / 2..=millis).max(1))
    }

    /// Runs `op` until it succeeds, fails with a non-transient error, or the deadline passes.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.run_when(StoreError::is_transient, op).await
    }

    /// Runs `op` until it succeeds, fails with an error `retryable` refuses, or the deadline passes.
    pub async fn run_when<T, F, Fut>(
        &self,
        retryable: fn(&StoreError) -> bool,
        mut op: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match op().await {
                Ok(v) => return Ok(v),
                Err(err) if !retryable(&err) => return Err(err),
                Err(err) => {
                    let wait = self.backoff(attempt);
                    if start.elapsed() + wait >= self.deadline {
                        return Err(StoreError::Deadline {
                            attempts: attempt,
                            elapsed: start.elapsed(),
                            deadline: self.deadline,
                            last: Box::new(err),
                        });
                    }
                    tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, error = %err, "store request failed, retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            deadline: Duration::from_secs(60),
        };
        for attempt in 1..40 {
            let b = p.backoff(attempt);
            assert!(b <= Duration::from_secs(2), "attempt {attempt}: {b:?}");
            assert!(b > Duration::ZERO);
        }
        assert!(p.backoff(1) <= Duration::from_millis(100));
        assert!(
            p.backoff(10) >= Duration::from_secs(1),
            "half of the cap at least once capped"
        );
    }

    #[tokio::test]
    async fn permanent_errors_fail_at_once_and_transient_ones_stop_at_the_deadline() {
        let p = RetryPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            deadline: Duration::from_millis(200),
        };
        let mut calls = 0;
        let err = p
            .run(|| {
                calls += 1;
                async {
                    Err::<(), _>(StoreError::Status {
                        op: "reading x".into(),
                        status: 403,
                        message: "permission denied".into(),
                    })
                }
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(err.status(), Some(403));

        let mut calls = 0;
        let err = p
            .run(|| {
                calls += 1;
                async {
                    Err::<(), _>(StoreError::Status {
                        op: "reading x".into(),
                        status: 503,
                        message: "sealed".into(),
                    })
                }
            })
            .await
            .unwrap_err();
        assert!(calls > 2, "retried {calls} times");
        assert!(matches!(err, StoreError::Deadline { .. }), "{err}");
        assert!(err.to_string().contains("HTTP 503"), "{err}");
    }
}
