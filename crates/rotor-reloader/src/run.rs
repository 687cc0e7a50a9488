//! `rotor-reloader`: flags, the admin port, leader election and the controller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use rotor_core::store::{Auth, RetryPolicy, StoreClient, StoreConfig};
use tokio_util::sync::CancellationToken;

use crate::controller::{Controller, ControllerConfig};
use crate::leader::LeaderElector;
use rotor_core::contract::{AuthMethod, var};

use crate::metrics::Metrics;
use crate::poll::Poller;
use crate::rotation::tenant::TenantLogin;
use crate::rotation::{RotationSettings, Rotations};
use crate::stores::Stores;
use crate::workloads::Caches;

#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Store address.
    #[arg(long, env = var::ADDR)]
    pub store_addr: String,
    /// Store namespace (Vault Enterprise / OpenBao).
    #[arg(long, env = var::NAMESPACE)]
    pub store_namespace: Option<String>,
    /// Other stores a workload may name in `rotor.dev/vault-addr` (comma-separated; the webhook's
    /// `--addr-allowlist`, same rule): the reloader polls each one a workload uses, logging in
    /// with its own role.
    #[arg(long, env = "ROTOR_ADDR_ALLOWLIST", value_delimiter = ',')]
    pub addr_allowlist: Vec<String>,
    /// PEM CA bundle for the store.
    #[arg(long, env = var::CACERT)]
    pub store_cacert: Option<PathBuf>,
    /// Auth method: kubernetes or token.
    #[arg(long, env = var::AUTH_METHOD, default_value = "kubernetes")]
    pub auth_method: AuthMethod,
    /// Auth mount path.
    #[arg(long, env = var::AUTH_PATH, default_value = "kubernetes")]
    pub auth_path: String,
    /// Store role of the reloader (Kubernetes auth).
    #[arg(long, env = var::ROLE, default_value = "rotor-reloader")]
    pub role: String,
    /// Service-account token file (Kubernetes auth).
    #[arg(long, env = var::TOKEN_FILE, default_value = rotor_core::store::DEFAULT_SERVICE_ACCOUNT_TOKEN)]
    pub token_file: PathBuf,
    /// Store token (token auth).
    #[arg(long, env = var::TOKEN, hide_env_values = true)]
    pub token: Option<String>,
    /// Seconds between polls.
    #[arg(long, env = "ROTOR_POLL_INTERVAL", default_value_t = DEFAULT_POLL_INTERVAL_S)]
    pub poll_interval: f64,
    /// Average store requests per second the polls of one namespace's paths may make on a
    /// store: after N per-path reads of its paths the namespace rests N / budget seconds (at
    /// most 30 s, the old interval) before they are polled again; the store's other namespaces
    /// do not wait. Listed versions (OpenBao) cost next to nothing. 0: no budget.
    #[arg(long, env = "ROTOR_POLL_BUDGET", default_value_t = 10.0)]
    pub poll_budget: f64,
    /// Random extra wait per poll, as a fraction of the interval.
    #[arg(long, env = "ROTOR_POLL_JITTER", default_value_t = 0.1)]
    pub poll_jitter: f64,
    /// Seconds to wait after a workload's first change before rolling it (one rollout for
    /// several paths rotated together).
    #[arg(long, env = "ROTOR_SETTLE", default_value_t = 5.0)]
    pub settle: f64,
    /// Most rollouts started in one poll.
    #[arg(long, env = "ROTOR_MAX_ROLLOUTS_PER_POLL", default_value_t = 10)]
    pub max_rollouts_per_poll: usize,
    /// Longest wait between attempts while the store is unreachable, in seconds.
    #[arg(long, env = "ROTOR_BACKOFF_CAP", default_value_t = 120.0)]
    pub backoff_cap: f64,
    /// Store requests in flight at once.
    #[arg(long, env = var::CONCURRENCY, default_value_t = 8)]
    pub concurrency: usize,
    /// Store requests started per second at most (0: no limit).
    #[arg(long, env = "ROTOR_MAX_REQUESTS_PER_SECOND", default_value_t = 100)]
    pub max_requests_per_second: u32,
    /// Distinct paths of one namespace polled per poll; a namespace with more has them polled
    /// in turns, so its size delays its own rotations, not other namespaces'.
    #[arg(
        long,
        env = "ROTOR_PATHS_PER_NAMESPACE_PER_POLL",
        default_value_t = 200
    )]
    pub paths_per_namespace_per_poll: usize,
    /// Watch every workload that has references, not only those annotated rotor.dev/reload.
    #[arg(long, env = "ROTOR_ALL_WORKLOADS")]
    pub all_workloads: bool,
    /// Watch the ConfigMaps pods take env from (`configMapKeyRef`, `envFrom`), so references
    /// there roll their workloads too: set with the webhook's `--configmap-references`.
    #[arg(long, env = "ROTOR_CONFIGMAP_REFERENCES")]
    pub configmap_references: bool,
    /// Paths a workload's namespace may have watched: exact, or a prefix ending in `*`, with
    /// `{namespace}` for the workload's namespace (comma-separated; for example
    /// `secret/data/{namespace}/*`). Other paths are not polled for it, and an Event on the
    /// workload says so. Empty: every path (a cluster with one tenant).
    #[arg(long, env = "ROTOR_WATCHABLE_PATHS", value_delimiter = ',')]
    pub watchable_paths: Vec<String>,
    /// Rotate secrets on the schedule of each `SecretRotation` (the chart's `rotations.enabled`,
    /// which installs the CRD and lets the reloader request tokens for tenants' ServiceAccounts).
    #[arg(long, env = "ROTOR_ROTATIONS")]
    pub rotations: bool,
    /// The shortest `spec.interval` a `SecretRotation` may ask for, in seconds.
    #[arg(long, env = "ROTOR_MIN_ROTATION_INTERVAL", default_value_t = 60.0)]
    pub min_rotation_interval: f64,
    /// The store's Kubernetes auth mount a rotation logs in at as its ServiceAccount (the one
    /// that namespace's pods use; the webhook's default auth path).
    #[arg(long, env = "ROTOR_ROTATION_AUTH_PATH", default_value = "kubernetes")]
    pub rotation_auth_path: String,
    /// The audience of the tokens requested for a rotation's ServiceAccount (the pods' token
    /// audience, which the store's roles expect; never the API server's).
    #[arg(long, env = "ROTOR_ROTATION_TOKEN_AUDIENCE", default_value = "rotor")]
    pub rotation_token_audience: String,
    /// Watch one namespace only (default: all).
    #[arg(long, env = "ROTOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "ROTOR_LEASE_NAMESPACE", default_value = "rotor-system")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "ROTOR_LEASE_NAME", default_value = "rotor-reloader")]
    pub lease_name: String,
    /// Lease duration in seconds: a dead leader is replaced after this long.
    #[arg(long, env = "ROTOR_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,
    /// This replica's identity (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Plain-HTTP admin address: /livez, /readyz, /metrics.
    #[arg(long, env = "ROTOR_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
}

/// What the admin port reports: ready once the workload caches synced, and the metrics.
struct AdminState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

impl rotor_runtime::Health for AdminState {
    fn ready(&self) -> Result<(), &'static str> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("workload caches not synced yet")
        }
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }
}

impl RunArgs {
    pub async fn run(self, cancel: CancellationToken) -> Result<()> {
        let Self {
            store_addr,
            store_namespace,
            addr_allowlist,
            store_cacert,
            auth_method,
            auth_path,
            role,
            token_file,
            token,
            poll_interval,
            poll_budget,
            poll_jitter,
            settle,
            max_rollouts_per_poll,
            backoff_cap,
            concurrency,
            max_requests_per_second,
            paths_per_namespace_per_poll,
            all_workloads,
            configmap_references,
            watchable_paths,
            rotations,
            min_rotation_interval,
            rotation_auth_path,
            rotation_token_audience,
            watch_namespace,
            lease_namespace,
            lease_name,
            lease_duration,
            identity,
            admin_listen,
        } = self;
        let seconds = |v: f64, flag: &str| -> Result<Duration> {
            Duration::try_from_secs_f64(v)
                .with_context(|| format!("--{flag}={v}: expected a non-negative number of seconds"))
        };
        for entry in &addr_allowlist {
            rotor_core::contract::init_settings::check_addr(
                "--addr-allowlist entry",
                entry.trim_end_matches('*'),
            )?;
        }
        let (store, auth) = store_config(StoreArgs {
            addr: &store_addr,
            namespace: store_namespace,
            cacert: store_cacert,
            auth_method,
            auth_path,
            role,
            token_file,
            token,
        })?;
        let kube = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        let identity = identity.unwrap_or_else(|| format!("rotor-reloader-{}", std::process::id()));
        let metrics = Metrics::new();
        let ready = Arc::new(AtomicBool::new(false));
        let leading = Arc::new(AtomicBool::new(false));

        let health = Arc::new(AdminState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        });
        let admin_task = rotor_runtime::serve_admin(admin_listen, health, cancel.clone()).await?;

        let elector = LeaderElector::new(
            kube.clone(),
            &lease_namespace,
            &lease_name,
            &identity,
            Duration::from_secs(lease_duration.max(2)),
        );
        let retry = Duration::from_secs(lease_duration.max(2)) / 3;
        let leader_task = tokio::spawn(elector.run(leading.clone(), retry, cancel.clone()));
        tracing::info!(%identity, admin = %admin_listen, store = %store_addr, "rotor-reloader starting");
        let watchable =
            crate::tenancy::WatchablePaths::parse(&watchable_paths).map_err(anyhow::Error::msg)?;
        let caches = Arc::new(Caches::start(
            &kube,
            watch_namespace.as_deref(),
            configmap_references,
        ));
        let rotations_task = if rotations {
            if rotation_token_audience.trim().is_empty() {
                anyhow::bail!(
                    "--rotation-token-audience is empty: give the audience the store's Kubernetes auth roles expect (the pods' token audience, rotor by default)"
                );
            }
            let settings = RotationSettings {
                login: TenantLogin {
                    store: store.clone(),
                    auth_mount: rotation_auth_path,
                    audience: rotation_token_audience,
                },
                min_interval: seconds(min_rotation_interval, "min-rotation-interval")?,
                watchable: watchable.clone(),
                all_workloads,
                failpoint: std::env::var("ROTOR_FAILPOINT").ok(),
            };
            let rotations = Rotations::start(
                &kube,
                watch_namespace.as_deref(),
                caches.clone(),
                metrics.clone(),
                leading.clone(),
                settings,
            );
            Some(tokio::spawn(
                rotations.run(identity.clone(), cancel.clone()),
            ))
        } else {
            None
        };
        let controller = Controller {
            kube: kube.clone(),
            stores: Stores::new(store, addr_allowlist, auth),
            polls: Default::default(),
            caches,
            poller: std::sync::Arc::new(
                Poller::new(concurrency, max_requests_per_second)
                    .with_budget(checked_budget(poll_budget)?),
            ),
            metrics,
            config: ControllerConfig {
                poll_interval: checked_poll_interval(seconds(poll_interval, "poll-interval")?)?,
                jitter: poll_jitter,
                settle: seconds(settle, "settle")?,
                max_rollouts_per_poll: max_rollouts_per_poll.max(1),
                backoff_cap: seconds(backoff_cap, "backoff-cap")?,
                all_workloads,
                watchable,
                paths_per_namespace: paths_per_namespace_per_poll.max(1),
            },
            announced: std::collections::HashSet::new(),
            leading,
            ready,
            turn: 0,
            identity,
        };
        controller.run(cancel.clone()).await;
        if let Some(task) = rotations_task {
            let _ = task.await;
        }
        let _ = leader_task.await;
        let _ = admin_task.await;
        tracing::info!("rotor-reloader stopped");
        Ok(())
    }
}

/// The store settings from the flags.
struct StoreArgs<'a> {
    addr: &'a str,
    namespace: Option<String>,
    cacert: Option<PathBuf>,
    auth_method: AuthMethod,
    auth_path: String,
    role: String,
    token_file: PathBuf,
    token: Option<String>,
}

/// The settings every store's client starts from, and how the reloader logs in. The reloader's
/// `--poll-budget`, refused when negative or not a number.
fn checked_budget(budget: f64) -> Result<f64> {
    if budget.is_finite() && budget >= 0.0 {
        return Ok(budget);
    }
    anyhow::bail!(
        "--poll-budget={budget}: expected a non-negative number of store requests per second (0: no budget)"
    )
}

/// `--poll-interval`'s default, in seconds (the refusal names it from here).
pub const DEFAULT_POLL_INTERVAL_S: f64 = 5.0;

/// The shortest poll interval: each poll reads the version of every watched path, so a zero or
/// sub-second interval would give the store no rest (`--poll-interval 0` used to be accepted).
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// `--poll-interval`, refused below [`MIN_POLL_INTERVAL`] with the flag and the fix.
fn checked_poll_interval(interval: Duration) -> Result<Duration> {
    if interval < MIN_POLL_INTERVAL {
        anyhow::bail!(
            "--poll-interval={}: must be at least {} s (each poll reads the version of every watched \
             path); the default is {}",
            interval.as_secs_f64(),
            MIN_POLL_INTERVAL.as_secs(),
            DEFAULT_POLL_INTERVAL_S
        );
    }
    Ok(interval)
}

/// requests are short and retried by the next poll, so its deadline is seconds, not
/// rotor-init's minute.
fn store_config(args: StoreArgs<'_>) -> Result<(StoreConfig, Auth)> {
    let StoreArgs {
        addr,
        namespace,
        cacert,
        auth_method,
        auth_path,
        role,
        token_file,
        token,
    } = args;
    let mut store = StoreConfig::new(addr);
    store.namespace = namespace;
    if let Some(ca) = cacert {
        store.ca_pem = Some(
            std::fs::read(&ca)
                .with_context(|| format!("reading --store-cacert {}", ca.display()))?,
        );
    }
    store.request_timeout = Duration::from_secs(5);
    store.retry = RetryPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        deadline: Duration::from_secs(5),
    };
    let auth = match auth_method {
        AuthMethod::Kubernetes => Auth::Kubernetes {
            mount: auth_path,
            role,
            token_file,
        },
        AuthMethod::Token => Auth::Token(
            token.with_context(|| format!("--auth-method=token needs --token ({})", var::TOKEN))?,
        ),
        other => anyhow::bail!("--auth-method={other}: the reloader supports kubernetes or token"),
    };
    // Built once here so a bad CA or address stops the reloader at start-up.
    StoreClient::new(store.clone()).context("building the store client")?;
    Ok((store, auth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_budget_that_is_negative_or_not_a_number_is_refused_with_the_flag() {
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let err = checked_budget(bad).unwrap_err().to_string();
            assert!(err.contains("--poll-budget="), "{err}");
        }
        assert_eq!(checked_budget(0.0).unwrap(), 0.0);
        assert_eq!(checked_budget(10.0).unwrap(), 10.0);
    }

    #[test]
    fn a_poll_interval_below_one_second_is_refused_with_the_flag() {
        for bad in [0.0, 0.2, 0.999] {
            let err = checked_poll_interval(Duration::from_secs_f64(bad))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--poll-interval=") && err.contains("at least 1 s"),
                "{err}"
            );
            assert!(err.ends_with("the default is 5"), "the real default: {err}");
        }
        assert_eq!(
            checked_poll_interval(Duration::from_secs(1)).unwrap(),
            Duration::from_secs(1)
        );
    }
}
