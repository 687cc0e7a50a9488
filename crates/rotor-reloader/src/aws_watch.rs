//! Watching AWS references (Secrets Manager secrets, SSM parameters): the reloader logs in as
//! itself (IRSA or EKS Pod Identity on its own ServiceAccount, from its environment like any AWS
//! SDK) and asks for the current versions of the watched ARNs in batches
//! ([`rotor_core::store::aws::versions`]: 10 secrets or 50 parameters per request), never for a
//! value. The answer feeds the same planner, records and Events as a Vault store's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use rotor_core::store::aws::{AwsClient, AwsConfig};

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::planner::StoreAnswer;

/// Whether a watched path is an AWS reference (an ARN) rather than a Vault path.
pub fn is_aws_path(path: &str) -> bool {
    rotor_core::aws_reference::aws_attempt(path)
}

/// Credentials are fetched again this long before they end.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// The reloader's AWS client for one region, logged in when needed.
#[derive(Default)]
pub struct AwsWatch {
    client: Option<AwsClient>,
    /// When the credentials end (seconds since the epoch), when STS said.
    expires_at: Option<u64>,
    login_backoff: Backoff,
    /// A configuration error, logged once.
    told: bool,
    /// Not polled again before this (`--poll-budget`, as for a Vault store).
    pub rest_until: Option<Instant>,
    /// A poll that did not answer makes the region wait this before the next.
    pub poll_backoff: Backoff,
}

impl AwsWatch {
    /// The current versions of the ARNs of one region, each namespace's asked in batches of its
    /// own (a name filter is a prefix: one tenant's short name that matches thousands of secrets
    /// uses up only its own batch's pages), or `None` when AWS did not answer (login failed, or
    /// every request failed transiently); `(answer, requests)`.
    pub async fn poll(
        &mut self,
        by_namespace: &BTreeMap<String, BTreeSet<String>>,
        metrics: &Metrics,
    ) -> Option<(StoreAnswer, usize)> {
        let started = Instant::now();
        let first = by_namespace.values().flatten().next()?.clone();
        if self.needs_login() && !self.login(&first).await {
            return None;
        }
        let mut result = self.versions_by_namespace(by_namespace).await?;
        if result.errors.iter().any(|(_, e)| e.is_permission_denied()) && result.versions.is_empty()
        {
            // Credentials refused (expired early, or revoked): log in again once.
            self.expires_at = Some(0);
            if self.login(&first).await
                && let Some(again) = self.versions_by_namespace(by_namespace).await
            {
                result = again;
            }
        }
        metrics
            .poll_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.store_requests.inc_by(result.requests as u64);
        metrics.store_errors.inc_by(result.errors.len() as u64);
        for (arn, error) in result.errors.iter().take(5) {
            tracing::warn!(store = "aws", path = %arn, %error, "polling an AWS reference failed");
        }
        let unreachable = !result.errors.is_empty()
            && result.versions.is_empty()
            && result
                .errors
                .iter()
                .all(|(_, e)| e.is_transient() || e.is_unavailable());
        if unreachable {
            return None;
        }
        tracing::debug!(
            store = "aws",
            paths = by_namespace.values().map(BTreeSet::len).sum::<usize>(),
            requests = result.requests,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "poll done"
        );
        let written = result
            .written
            .into_iter()
            .filter_map(|(arn, secs)| {
                let at =
                    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).ok()?).ok()?;
                Some((arn, at))
            })
            .collect();
        Some((
            StoreAnswer {
                versions: result.versions.into_iter().collect::<HashMap<_, _>>(),
                written,
            },
            result.requests,
        ))
    }

    /// Each namespace's ARNs asked apart; `None` without a client.
    async fn versions_by_namespace(
        &self,
        by_namespace: &BTreeMap<String, BTreeSet<String>>,
    ) -> Option<rotor_core::store::aws::AwsVersions> {
        let client = self.client.as_ref()?;
        let mut all = rotor_core::store::aws::AwsVersions::default();
        for arns in by_namespace.values() {
            let arns: Vec<String> = arns.iter().cloned().collect();
            all.extend(client.current_versions(&arns).await);
        }
        Some(all)
    }

    fn needs_login(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.client.is_none()
            || self
                .expires_at
                .is_some_and(|end| now + REFRESH_BEFORE.as_secs() >= end)
    }

    /// Logs in (within the login backoff); true when logged in.
    async fn login(&mut self, first_arn: &str) -> bool {
        if !self.login_backoff.ready(Instant::now()) {
            tracing::debug!(store = "aws", "the AWS login waits for its backoff");
            return false;
        }
        let env: HashMap<String, String> = std::env::vars().collect();
        let built = AwsConfig::from_env(&env)
            .map_err(|e| e.to_string())
            .and_then(|config| AwsClient::new(config).map_err(|e| e.to_string()));
        let mut client = match built {
            Ok(c) => c,
            Err(e) => {
                let wait = self.login_backoff.failed(Instant::now());
                if !self.told {
                    tracing::error!(store = "aws", error = %e, retry_in_s = wait.as_secs(), "workloads reference AWS secrets, but the reloader has no AWS identity: give its ServiceAccount one (chart: aws.reloaderRoleArn for IRSA, or an EKS Pod Identity association)");
                    self.told = true;
                }
                return false;
            }
        };
        let Ok(arn) = rotor_core::aws_reference::parse_arn(first_arn) else {
            return false;
        };
        match client.login(arn.region, arn.partition).await {
            Ok(()) => {
                self.expires_at = client.expires_at();
                self.client = Some(client);
                self.login_backoff.succeeded();
                self.told = false;
                true
            }
            Err(e) => {
                let wait = self.login_backoff.failed(Instant::now());
                tracing::warn!(store = "aws", identity = %client.identity().describe(), error = %e, retry_in_s = wait.as_secs(), "AWS login failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_are_aws_paths_and_vault_paths_are_not() {
        assert!(is_aws_path(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db"
        ));
        assert!(is_aws_path(
            "arn:aws:ssm:eu-west-1:123456789012:parameter/app/db"
        ));
        assert!(!is_aws_path("secret/data/db"));
        assert!(!is_aws_path("arn:aws:iam::123456789012:role/x"));
    }
}
