//! Leader election on a coordination.k8s.io/v1 Lease: only the leader polls and patches.
//! A lease not renewed within its duration is taken over by another replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    /// The other holder's record as last seen, and when this replica saw it change.
    observed: Option<Observed>,
}

#[derive(Clone, Debug, PartialEq)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    seen_at: Instant,
}

/// Another holder's lease has expired when its record has not changed for a whole lease
/// duration of *this* replica's clock (as client-go judges it): the two clocks never need to
/// agree.
pub fn lease_expired(seen_at: Instant, now: Instant, lease_duration: Duration) -> bool {
    now.saturating_duration_since(seen_at) > lease_duration
}

/// A leader keeps acting only while its last successful renewal is younger than the renew
/// deadline, which is shorter than the lease: it stops before anyone else may take over.
pub fn may_act(last_renewed: Option<Instant>, now: Instant, renew_deadline: Duration) -> bool {
    last_renewed.is_some_and(|t| now.saturating_duration_since(t) < renew_deadline)
}

impl LeaderElector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration,
            observed: None,
        }
    }

    /// The renew deadline: two thirds of the lease (client-go's default ratio, 10 s of 15 s).
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }

    /// Acquires or renews the lease; `Ok(true)` when this replica leads.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let existing = self.api.get_opt(&self.name).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !mine {
            let held = spec.holder_identity.is_some() && spec.renew_time.is_some();
            let seen = Instant::now();
            let record = (spec.holder_identity.clone(), spec.renew_time.clone());
            let seen_at = match &self.observed {
                Some(o) if (o.holder.clone(), o.renew_time.clone()) == record => o.seen_at,
                _ => seen,
            };
            self.observed = Some(Observed {
                holder: record.0,
                renew_time: record.1,
                seen_at,
            });
            if held && !lease_expired(seen_at, seen, self.lease_duration) {
                return Ok(false);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            tracing::info!(identity = %self.identity, "taking over the leader lease");
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds);
        // The resourceVersion makes this a compare-and-swap: two replicas cannot both win.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Keeps `leading` up to date until cancelled, renewing every `retry`. Each attempt is
    /// bounded by the renew deadline; a leader whose renewals fail or hang stops acting once
    /// its last renewal is older than the deadline, before the lease can pass to another.
    pub async fn run(
        mut self,
        leading: Arc<AtomicBool>,
        retry: Duration,
        cancel: CancellationToken,
    ) {
        let deadline = self.renew_deadline();
        let mut last_renewed: Option<Instant> = None;
        loop {
            let attempt = tokio::time::timeout(deadline, self.try_acquire_or_renew()).await;
            let now = Instant::now();
            let now_leading = match attempt {
                Ok(Ok(true)) => {
                    last_renewed = Some(now);
                    true
                }
                Ok(Ok(false)) => {
                    last_renewed = None;
                    false
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "leader lease: API error");
                    may_act(last_renewed, now, deadline)
                }
                Err(_) => {
                    tracing::warn!(timeout = ?deadline, "leader lease: no answer from the API");
                    may_act(last_renewed, now, deadline)
                }
            };
            if now_leading != leading.swap(now_leading, Ordering::SeqCst) {
                tracing::info!(leading = now_leading, identity = %self.identity, "leadership changed");
            }
            // While leading, wake in time to stop acting at the deadline if renewals keep failing.
            let wait = match last_renewed.filter(|_| now_leading) {
                Some(t) => retry.min((t + deadline).saturating_duration_since(now)),
                None => retry,
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
            }
        }
        // Step down: let another replica take over at once.
        leading.store(false, Ordering::SeqCst);
        let release = async {
            if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
                && let Some(spec) = lease.spec.as_mut()
                && spec.holder_identity.as_deref() == Some(self.identity.as_str())
            {
                spec.renew_time = None;
                spec.holder_identity = None;
                let _ = self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await;
            }
        };
        let _ = tokio::time::timeout(deadline, release).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_renew_deadline_are_judged_on_the_local_clock() {
        let t0 = Instant::now();
        let lease = Duration::from_secs(15);
        assert!(!lease_expired(t0, t0 + Duration::from_secs(15), lease));
        assert!(lease_expired(t0, t0 + Duration::from_secs(16), lease));
        let deadline = Duration::from_secs(10);
        assert!(may_act(Some(t0), t0 + Duration::from_secs(9), deadline));
        assert!(!may_act(Some(t0), t0 + Duration::from_secs(10), deadline));
        assert!(!may_act(None, t0, deadline));
        // A leader stops acting (10 s) before a follower may take over (15 s).
        assert!(deadline < lease);
    }

    const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/rotor";

    /// The elector's first request when no lease exists yet: GET, 404.
    fn no_lease_yet() -> crate::api_mock::Exchange {
        use crate::api_mock::{exchange, status};
        exchange("GET", LEASE_PATH, 404, status(404, "NotFound"))
    }

    /// Its second: the create, answered with `code`.
    fn create_answered(code: u16, answer: serde_json::Value) -> crate::api_mock::Exchange {
        let leases = "/apis/coordination.k8s.io/v1/namespaces/ns/leases?";
        crate::api_mock::exchange("POST", leases, code, answer)
    }

    fn lease(holder: Option<&str>) -> serde_json::Value {
        serde_json::json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": "rotor", "namespace": "ns", "resourceVersion": "7" },
            "spec": { "holderIdentity": holder, "renewTime": "2026-12-03T17:00:00.000000Z",
                "leaseDurationSeconds": 15 } })
    }

    #[tokio::test]
    async fn a_fresh_lease_of_another_is_left_alone_and_a_lost_race_is_not_leading() {
        use crate::api_mock::{exchange, scripted, status};
        let path = LEASE_PATH;
        let (client, script) = scripted(vec![
            no_lease_yet(),
            create_answered(409, status(409, "AlreadyExists")),
            exchange("GET", path, 200, lease(Some("other"))),
            exchange("GET", path, 200, lease(Some("me"))),
            exchange("PUT", path, 409, status(409, "Conflict")),
            exchange("GET", path, 200, lease(Some("me"))),
            exchange("PUT", path, 200, lease(Some("me"))),
        ]);
        let mut elector =
            LeaderElector::new(client.clone(), "ns", "rotor", "me", Duration::from_secs(15));
        assert!(
            !elector.try_acquire_or_renew().await.unwrap(),
            "another created it first"
        );
        assert!(
            !elector.try_acquire_or_renew().await.unwrap(),
            "another holds a fresh lease"
        );
        assert!(
            !elector.try_acquire_or_renew().await.unwrap(),
            "a renewal that lost the race"
        );
        assert!(elector.try_acquire_or_renew().await.unwrap(), "renewed");
        drop(elector);
        let sent = script.done(client).await;
        assert_eq!(
            sent[4].body["metadata"]["resourceVersion"], "7",
            "a compare-and-swap"
        );
        assert_eq!(sent[6].body["spec"]["holderIdentity"], "me");
    }

    #[tokio::test]
    async fn a_leader_steps_down_on_cancel_and_releases_the_lease() {
        use crate::api_mock::{exchange, scripted};
        let path = LEASE_PATH;
        let (client, script) = scripted(vec![
            no_lease_yet(),
            create_answered(201, lease(Some("me"))),
            exchange("GET", path, 200, lease(Some("me"))),
            exchange("PUT", path, 200, lease(None)),
        ]);
        let elector =
            LeaderElector::new(client.clone(), "ns", "rotor", "me", Duration::from_secs(15));
        let leading = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let run =
            tokio::spawn(elector.run(leading.clone(), Duration::from_secs(60), cancel.clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !leading.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "never led");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
        run.await.unwrap();
        assert!(!leading.load(Ordering::SeqCst));
        let sent = script.done(client).await;
        assert_eq!(sent[3].method, "PUT");
        assert!(
            sent[3].body["spec"]["holderIdentity"].is_null(),
            "released: {}",
            sent[3].body
        );
    }
}
