//! `rotor-webhook serve`: the HTTPS admission endpoint and the plain-HTTP admin port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{DefaultBodyLimit, State};

use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::admission::AdmissionContext;
use crate::body_budget::{BodyBudget, BudgetSizes, ConnectionBudget};
use crate::config::InjectConfig;
use crate::connection_slots::{ConnectionSlots, SlotSizes};
use crate::https_limits::{BodyLimits, ConnectionLimits, read_body};
use crate::metrics::{Metrics, RefusedLabels};
use crate::registry::{RegistryClient, RegistryConfig};
use crate::tls::{CertResolver, CertWatcher, server_config};

#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// HTTPS address of the admission endpoint (POST /mutate).
    #[arg(long, env = "ROTOR_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP admin address: /livez, /readyz, /metrics.
    #[arg(long, env = "ROTOR_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
    /// Serving certificate (PEM), reloaded when its content changes.
    #[arg(long, env = "ROTOR_TLS_CERT_FILE")]
    pub tls_cert_file: PathBuf,
    /// Serving key (PEM).
    #[arg(long, env = "ROTOR_TLS_KEY_FILE")]
    pub tls_key_file: PathBuf,
    /// How often the certificate files are checked for changes, in milliseconds.
    #[arg(long, env = "ROTOR_CERT_POLL_MS", default_value_t = 10_000)]
    pub cert_poll_ms: u64,
    /// Largest admission request body accepted, in bytes (the API server's own limit on a
    /// request is 3 MiB).
    #[arg(long, env = "ROTOR_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time allowed to receive a whole request body once its headers are in, in milliseconds.
    #[arg(long, env = "ROTOR_BODY_TIMEOUT_MS", default_value_t = 5_000)]
    pub body_timeout_ms: u64,
    /// Bytes of all request bodies being read or reviewed at once; more wait for room. Bytes
    /// are counted as they arrive, never from a declared length.
    #[arg(long, env = "ROTOR_MAX_INFLIGHT_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_inflight_body_bytes: usize,
    /// Of those, what the connections from one peer address may hold together, so a few
    /// clients that send most of a body and stall cannot hold the API server's room.
    #[arg(long, env = "ROTOR_MAX_INFLIGHT_BODY_BYTES_PER_PEER", default_value_t = 8 * 1024 * 1024)]
    pub max_inflight_body_bytes_per_peer: usize,
    /// Of those, what the streams of one connection may hold together.
    #[arg(long, env = "ROTOR_MAX_INFLIGHT_BODY_BYTES_PER_CONNECTION", default_value_t = 4 * 1024 * 1024)]
    pub max_inflight_body_bytes_per_connection: usize,
    /// Time allowed for a TLS handshake and for request headers, in milliseconds.
    #[arg(long, env = "ROTOR_HEADER_TIMEOUT_MS", default_value_t = 5_000)]
    pub header_timeout_ms: u64,
    /// Connections served at once on the HTTPS port. When all are taken, a peer address
    /// holding fewer gets the oldest idle one of the address holding the most.
    #[arg(long, env = "ROTOR_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,
    /// Connections one peer address may hold at once; more are closed at accept.
    #[arg(long, env = "ROTOR_MAX_CONNECTIONS_PER_PEER", default_value_t = 64)]
    pub max_connections_per_peer: usize,
    /// A connection with no request in flight for this long is closed, in milliseconds (before
    /// its first request the header timeout applies, counted from accept). Longer than Go's
    /// 90 s idle timeout, so the API server closes its idle HTTP/1.1 connections first and
    /// never sends a review on one the webhook is closing.
    #[arg(long, env = "ROTOR_IDLE_TIMEOUT_MS", default_value_t = 120_000)]
    pub idle_timeout_ms: u64,
    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "ROTOR_MAX_STREAMS", default_value_t = 64)]
    pub max_streams: u32,
    /// Time one review may take, registry lookups and planning together, in milliseconds; keep
    /// it under the webhook configuration's timeoutSeconds.
    #[arg(long, env = "ROTOR_REVIEW_TIMEOUT_MS", default_value_t = 4_000)]
    pub review_timeout_ms: u64,
    /// On SIGTERM, time allowed for in-flight requests to finish, in seconds.
    #[arg(long, env = "ROTOR_SHUTDOWN_GRACE", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
    /// Read the ConfigMaps pods pull env from (`configMapKeyRef`, `envFrom`) to find references
    /// there (needs RBAC to get ConfigMaps).
    #[arg(long, env = "ROTOR_CONFIGMAP_REFERENCES")]
    pub configmap_references: bool,
    #[command(flatten)]
    pub inject: InjectConfig,
    #[command(flatten)]
    pub registry: RegistryConfig,
}

/// What the webhook's handlers share.
#[derive(Clone)]
pub struct AppState {
    pub admission: Arc<AdmissionContext>,
    pub resolver: Arc<CertResolver>,
    /// The HTTPS port's body budget, shown in the metrics.
    pub budget: Arc<BodyBudget>,
}

/// The webhook port's routes: `POST /mutate`, with bodies read within `limits`.
pub fn webhook_router(state: AppState, limits: BodyLimits) -> Router {
    let max = limits.max_bytes;
    Router::new()
        .route("/mutate", post(mutate))
        .with_state((state, limits))
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            max,
            refuse_declared_oversize,
        ))
}

/// The admin port's routes: `/livez`, `/readyz` (ready once a serving certificate is loaded),
/// `/metrics`.
pub fn admin_router(state: AppState) -> Router {
    rotor_runtime::admin_router(Arc::new(state))
}

impl rotor_runtime::Health for AppState {
    fn ready(&self) -> Result<(), &'static str> {
        if self.resolver.is_loaded() {
            Ok(())
        } else {
            Err("no serving certificate loaded")
        }
    }

    fn metrics(&self) -> String {
        let metrics = &self.admission.metrics;
        metrics
            .body_bytes_held
            .set(i64::try_from(self.budget.held()).unwrap_or(i64::MAX));
        metrics
            .body_peers
            .set(i64::try_from(self.budget.peers()).unwrap_or(i64::MAX));
        metrics.encode()
    }
}

impl ServeArgs {
    pub async fn run(self, cancel: CancellationToken) -> Result<()> {
        let Self {
            listen,
            admin_listen,
            tls_cert_file,
            tls_key_file,
            cert_poll_ms,
            max_body_bytes,
            body_timeout_ms,
            max_inflight_body_bytes,
            max_inflight_body_bytes_per_peer,
            max_inflight_body_bytes_per_connection,
            header_timeout_ms,
            max_connections,
            max_connections_per_peer,
            idle_timeout_ms,
            max_streams,
            review_timeout_ms,
            shutdown_grace_seconds,
            configmap_references,
            inject,
            registry,
        } = self;
        let sizes = BudgetSizes {
            total: max_inflight_body_bytes,
            per_peer: max_inflight_body_bytes_per_peer,
            per_connection: max_inflight_body_bytes_per_connection,
        };
        check_budget(sizes, max_body_bytes)?;
        let metrics = Metrics::new();
        let (watcher, seen) = CertWatcher::load(&tls_cert_file, &tls_key_file, metrics.clone())?;
        let resolver = watcher.resolver.clone();
        tokio::spawn(watcher.run(seen, Duration::from_millis(cert_poll_ms), cancel.clone()));
        let kube = if registry.use_pull_secrets || configmap_references {
            Some(kube::Client::try_default().await.context(
                "connecting to the Kubernetes API to read imagePullSecrets or ConfigMaps",
            )?)
        } else {
            None
        };
        let body_limits = BodyLimits::new(
            max_body_bytes,
            Duration::from_millis(body_timeout_ms),
            sizes,
        );
        let budget = body_limits.budget.clone();
        let state = AppState {
            admission: Arc::new(AdmissionContext {
                config: Arc::new(inject.validated()?),
                review_timeout: Duration::from_millis(review_timeout_ms),
                planners: crate::admission::default_planners(),
                metrics: metrics.clone(),
                registry: RegistryClient::new(registry).context("building the registry client")?,
                kube,
                configmap_references,
            }),
            resolver: resolver.clone(),
            budget: budget.clone(),
        };
        let app = webhook_router(state.clone(), body_limits);
        let admin: Arc<dyn rotor_runtime::Health> = Arc::new(state);

        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        tracing::info!(%listen, admin = %admin_listen, "rotor-webhook serving");
        let admin_task = rotor_runtime::serve_admin(admin_listen, admin, cancel.clone()).await?;
        serve_https(
            listener,
            server_config(resolver)?,
            app,
            cancel,
            ConnectionLimits {
                header_timeout: Duration::from_millis(header_timeout_ms),
                slots: SlotSizes {
                    total: max_connections,
                    per_peer: max_connections_per_peer,
                },
                idle_timeout: Duration::from_millis(idle_timeout_ms),
                max_streams,
                budget,
            },
            metrics,
            Duration::from_secs(shutdown_grace_seconds),
        )
        .await;
        let _ = admin_task.await;
        tracing::info!("rotor-webhook stopped");
        Ok(())
    }
}

/// Every share must hold one body of the largest size, or such a body could never be read; a
/// peer's share must leave room for other peers.
fn check_budget(sizes: BudgetSizes, max_body_bytes: usize) -> Result<()> {
    for (flag, bytes) in [
        ("--max-inflight-body-bytes", sizes.total),
        ("--max-inflight-body-bytes-per-peer", sizes.per_peer),
        (
            "--max-inflight-body-bytes-per-connection",
            sizes.per_connection,
        ),
    ] {
        if bytes < max_body_bytes {
            anyhow::bail!("{flag}={bytes} must be at least --max-body-bytes={max_body_bytes}");
        }
    }
    if sizes.per_peer > sizes.total || sizes.per_connection > sizes.per_peer {
        anyhow::bail!(
            "the body budgets must nest: --max-inflight-body-bytes-per-connection={} <= \
             --max-inflight-body-bytes-per-peer={} <= --max-inflight-body-bytes={}",
            sizes.per_connection,
            sizes.per_peer,
            sizes.total
        );
    }
    Ok(())
}

/// A declared Content-Length over the limit is answered 413 from the headers, before any body
/// byte is read; `DefaultBodyLimit` still bounds bodies without a length while they are read.
async fn refuse_declared_oversize(
    State(max): State<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = declared_length(&request);
    if let Some(length) = declared.filter(|n| *n > max as u64) {
        return (
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body of {length} bytes is over the limit of {max} bytes (--max-body-bytes)"
            ),
        )
            .into_response();
    }
    next.run(request).await
}

/// The request's Content-Length, when it declares one.
fn declared_length(request: &axum::extract::Request) -> Option<u64> {
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

async fn mutate(
    State((state, limits)): State<(AppState, BodyLimits)>,
    shares: Option<Extension<Arc<ConnectionBudget>>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let metrics = &state.admission.metrics;
    let declared = declared_length(&request).and_then(|n| usize::try_from(n).ok());
    let shares = shares.map_or_else(|| limits.budget.unattributed(), |Extension(s)| s);
    match read_body(request.into_body(), declared, &shares, &limits, metrics).await {
        Ok(received) => {
            let answer = crate::admission::review(&received.bytes, &state.admission).await;
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                answer,
            )
                .into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// Accepts TLS connections until `cancel`, then drains in-flight requests for up to `grace`.
/// Connections hold slots (`connection_slots`: a total, a share per peer address, and a new
/// peer's claim on the largest peer's oldest idle slot), and a connection that has no request
/// in flight is closed after the header timeout (before its first request) or the idle timeout.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    cancel: CancellationToken,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    grace: Duration,
) {
    let parts = Arc::new(ConnectionParts {
        acceptor: tokio_rustls::TlsAcceptor::from(tls),
        app,
        limits: limits.clone(),
        metrics: metrics.clone(),
        grace,
        stop: cancel.clone(),
    });
    let tracker = tokio_util::task::TaskTracker::new();
    let slots = ConnectionSlots::new(limits.slots, metrics.connections.clone());
    let mut warned_full = false;
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match slots.accept(peer.ip(), &cancel) {
            Ok(slot) => slot,
            Err(refused) => {
                metrics.refuse(refused.reason());
                if !std::mem::replace(&mut warned_full, true) {
                    tracing::warn!(
                        max = limits.slots.total,
                        per_peer = limits.slots.per_peer,
                        %peer,
                        reason = refused.reason(),
                        "connection refused at accept (--max-connections, --max-connections-per-peer)"
                    );
                }
                drop(stream);
                continue;
            }
        };
        warned_full = false;
        let shares = limits.budget.connect(peer.ip());
        tracker.spawn(serve_connection(stream, peer, slot, shares, parts.clone()));
    }
    drop(listener);
    tracker.close();
    tracing::info!(?grace, "stopped accepting; draining in-flight requests");
    // Every connection's close token is a child of `cancel`: each drains on its own.
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
}

/// What every connection's task shares.
struct ConnectionParts {
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    grace: Duration,
    /// The server's stop: every slot's close token is its child.
    stop: CancellationToken,
}

/// A connection's count of requests in flight, and when the last one ended.
#[derive(Clone, Debug)]
struct Busy(
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::Mutex<tokio::time::Instant>>,
);

struct BusyGuard(Busy);

impl BusyGuard {
    fn enter(busy: Busy) -> Self {
        busy.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(busy)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        *self.0.1.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        self.0.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Busy {
    /// Returns once the connection has had no request in flight for `first` since `accepted`
    /// (no request yet) or `idle` since its last request ended.
    async fn idle_for(&self, accepted: tokio::time::Instant, first: Duration, idle: Duration) {
        loop {
            let last = *self.1.lock().unwrap_or_else(|p| p.into_inner());
            let deadline = if last <= accepted {
                accepted + first
            } else {
                last + idle
            };
            tokio::time::sleep_until(deadline).await;
            let last_now = *self.1.lock().unwrap_or_else(|p| p.into_inner());
            if self.0.load(std::sync::atomic::Ordering::SeqCst) == 0 && last_now == last {
                return;
            }
            if self.0.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                // Busy: look again after the shortest wait that could make it idle.
                tokio::time::sleep(first.min(idle)).await;
            }
        }
    }
}

/// Serves one connection until it ends, is idle past its timeout, or its slot's close token
/// is cancelled (the server stops, or the slot went to another peer); then lets the requests
/// in flight finish, within `grace`.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: crate::connection_slots::Slot,
    shares: Arc<ConnectionBudget>,
    parts: Arc<ConnectionParts>,
) {
    let ConnectionParts {
        acceptor,
        app,
        limits,
        metrics,
        grace,
        stop,
    } = parts.as_ref();
    let accepted = tokio::time::Instant::now();
    let header_timeout = limits.header_timeout;
    let tls_stream = tokio::select! {
        () = slot.close.cancelled() => return,
        handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream)) => match handshake {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    let busy = Busy(slot.busy.clone(), Arc::new(std::sync::Mutex::new(accepted)));
    let counted = busy.clone();
    let app = app.clone();
    // Each request carries the connection's body shares; the busy count covers it until its
    // response is ready.
    let service = hyper::service::service_fn(
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(shares.clone());
            let guard = BusyGuard::enter(counted.clone());
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await;
                drop(guard);
                response
            }
        },
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams);
    let conn = builder
        .serve_connection(TokioIo::new(tls_stream), service)
        .into_owned();
    let mut conn = std::pin::pin!(conn);
    let why = tokio::select! {
        ended = conn.as_mut() => {
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        () = slot.close.cancelled() => "given_to_another_peer",
        () = busy.idle_for(accepted, header_timeout, limits.idle_timeout) => "idle",
    };
    // A slot closed because the server stops is not counted.
    if !stop.is_cancelled() {
        metrics
            .connections_closed
            .get_or_create(&RefusedLabels { reason: why })
            .inc();
    }
    tracing::debug!(%peer, why, "closing the connection");
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(*grace, conn).await;
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
