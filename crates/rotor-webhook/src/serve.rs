//! `rotor-webhook serve`: the HTTPS admission endpoint and the plain-HTTP admin port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::AdmissionContext;
use crate::config::InjectConfig;
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
    /// Largest admission request body accepted, in bytes.
    #[arg(long, env = "ROTOR_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time allowed for a TLS handshake and for request headers, in milliseconds.
    #[arg(long, env = "ROTOR_HEADER_TIMEOUT_MS", default_value_t = 5_000)]
    pub header_timeout_ms: u64,
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
}

/// The webhook port's routes: `POST /mutate`, with bodies over `max_body_bytes` refused (413).
pub fn webhook_router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            max_body_bytes,
            refuse_declared_oversize,
        ))
        .with_state(state)
}

/// The admin port's routes: `/livez`, `/readyz` (ready once a serving certificate is loaded),
/// `/metrics`.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
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
            header_timeout_ms,
            shutdown_grace_seconds,
            configmap_references,
            inject,
            registry,
        } = self;
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
        let state = AppState {
            admission: Arc::new(AdmissionContext {
                config: inject.validated()?,
                metrics,
                registry: RegistryClient::new(registry).context("building the registry client")?,
                kube,
                configmap_references,
            }),
            resolver: resolver.clone(),
        };
        let app = webhook_router(state.clone(), max_body_bytes);
        let admin = admin_router(state);

        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let admin_listener = TcpListener::bind(admin_listen)
            .await
            .with_context(|| format!("binding {admin_listen}"))?;
        tracing::info!(%listen, admin = %admin_listen, "rotor-webhook serving");
        let admin_cancel = cancel.clone();
        let admin_task = tokio::spawn(async move {
            axum::serve(admin_listener, admin)
                .with_graceful_shutdown(async move { admin_cancel.cancelled().await })
                .await
        });
        serve_https(
            listener,
            server_config(resolver)?,
            app,
            cancel,
            Duration::from_millis(header_timeout_ms),
            Duration::from_secs(shutdown_grace_seconds),
        )
        .await;
        let _ = admin_task.await;
        tracing::info!("rotor-webhook stopped");
        Ok(())
    }
}

/// A declared Content-Length over the limit is answered 413 from the headers, before any body
/// byte is read; `DefaultBodyLimit` still bounds bodies without a length while they are read.
async fn refuse_declared_oversize(
    State(max): State<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
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

async fn mutate(State(state): State<AppState>, body: Bytes) -> impl IntoResponse {
    let answer = crate::admission::review(&body, &state.admission).await;
    axum::Json(answer)
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.resolver.is_loaded() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no serving certificate loaded",
        )
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        state.admission.metrics.encode(),
    )
}

/// Accepts TLS connections until `cancel`, then drains in-flight requests for up to `grace`.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    cancel: CancellationToken,
    header_timeout: Duration,
    grace: Duration,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
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
            builder.http2().timer(TokioTimer::new());
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
