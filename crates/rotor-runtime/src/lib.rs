//! rotor-runtime: what rotor's two servers share, written once: the plain-HTTP admin port
//! (`/livez`, `/readyz`, `/metrics`) and its graceful shutdown, and how a pod's container is
//! read for references ([`container_env`]), and the log flags ([`LogArgs`]). Each server says
//! what "ready" means and what its metrics are through [`Health`]; the port behaves the same in
//! both.

mod log_args;

pub use log_args::LogArgs;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// A server's health as the admin port reports it.
pub trait Health: Send + Sync + 'static {
    /// `Ok` once the server can do its work; otherwise what it still waits for.
    fn ready(&self) -> Result<(), &'static str>;
    /// The Prometheus text exposition of its metrics.
    fn metrics(&self) -> String;
}

/// The admin routes: `/livez` (always ok), `/readyz` (200 or 503 with what is missing),
/// `/metrics` (Prometheus text).
pub fn admin_router(health: Arc<dyn Health>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(health): State<Arc<dyn Health>>) -> impl IntoResponse {
    match health.ready() {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(waiting) => (StatusCode::SERVICE_UNAVAILABLE, waiting),
    }
}

async fn metrics(State(health): State<Arc<dyn Health>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        health.metrics(),
    )
}

/// Binds the admin port at `addr` and serves `health` on it until `cancel`; the task ends once
/// the port is closed.
pub async fn serve_admin(
    addr: SocketAddr,
    health: Arc<dyn Health>,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin port {addr}"))?;
    let router = admin_router(health);
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the admin port stopped");
        }
    }))
}

/// A container as the shared reference reader sees it (rotor-core's `ContainerEnv`): its name
/// and its literal env values. The webhook (what to wrap) and the reloader (what to watch) read
/// pods through this one adapter, so they never disagree on what a container references.
pub fn container_env(
    c: &k8s_openapi::api::core::v1::Container,
) -> rotor_core::contract::ContainerEnv<'_> {
    rotor_core::contract::ContainerEnv::new(
        &c.name,
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref())),
    )
}

/// (ConfigMap, key) pairs a container's env reads; key `None` means every key (`envFrom`). The
/// webhook (which containers to wrap) and the reloader (which paths to watch) read ConfigMap
/// sources through this one function.
pub fn configmap_sources(
    container: &k8s_openapi::api::core::v1::Container,
) -> Vec<(String, Option<String>)> {
    let keyed = container.env.iter().flatten().filter_map(|e| {
        let r = e.value_from.as_ref()?.config_map_key_ref.as_ref()?;
        Some((r.name.clone(), Some(r.key.clone())))
    });
    let whole = container
        .env_from
        .iter()
        .flatten()
        .filter_map(|e| e.config_map_ref.as_ref().map(|r| (r.name.clone(), None)));
    keyed.chain(whole).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt as _;

    struct Flag(AtomicBool);

    impl Health for Flag {
        fn ready(&self) -> Result<(), &'static str> {
            if self.0.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("caches not synced yet")
            }
        }
        fn metrics(&self) -> String {
            "up 1\n".to_string()
        }
    }

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        let answer = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = answer.status();
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn ready_says_what_it_waits_for_and_metrics_are_prometheus_text() {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let router = admin_router(flag.clone());
        assert_eq!(get(&router, "/livez").await, (StatusCode::OK, "ok".into()));
        assert_eq!(
            get(&router, "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "caches not synced yet".into()
            )
        );
        flag.0.store(true, Ordering::SeqCst);
        assert_eq!(
            get(&router, "/readyz").await,
            (StatusCode::OK, "ready".into())
        );
        assert_eq!(
            get(&router, "/metrics").await,
            (StatusCode::OK, "up 1\n".into())
        );
    }
}
