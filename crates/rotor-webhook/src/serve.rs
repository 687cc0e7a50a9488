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
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::admission::AdmissionContext;
use crate::body_budget::{BodyBudget, BudgetSizes, ConnectionBudget};
use crate::config::InjectConfig;
use crate::https_limits::{BodyLimits, ConnectionLimits, read_body};
use crate::metrics::Metrics;
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
    /// Connections served at once on the HTTPS port; more are closed at accept.
    #[arg(long, env = "ROTOR_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,
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
                max_connections,
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
/// At most `limits.max_connections` are served at once: one more is closed at accept.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    cancel: CancellationToken,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    grace: Duration,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let header_timeout = limits.header_timeout;
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.refuse("connection_limit");
            if !std::mem::replace(&mut warned_full, true) {
                tracing::warn!(
                    max = limits.max_connections,
                    %peer,
                    "connection limit reached; closing new connections (--max-connections)"
                );
            }
            drop(stream);
            continue;
        };
        warned_full = false;
        let acceptor = acceptor.clone();
        let shares = limits.budget.connect(peer.ip());
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(shares.clone());
                request
            },
        ));
        let watcher = graceful.watcher();
        let max_streams = limits.max_streams;
        tokio::spawn(async move {
            let _slot = slot;
            let tls_stream =
                match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(max_streams);
            let conn = builder
                .serve_connection(TokioIo::new(tls_stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(?grace, "stopped accepting; draining in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
