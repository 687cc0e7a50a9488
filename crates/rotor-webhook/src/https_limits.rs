//! What one client may cost the HTTPS port: the bytes of a request body and the time to send
//! it, the bytes of all bodies being read at once, connections, and HTTP/2 streams. Whoever
//! reaches the port can only get their own requests refused; memory stays bounded.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Limits on request bodies.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    /// Largest body accepted (the API server's own limit on a request is 3 MiB).
    pub max_bytes: usize,
    /// Time allowed to receive a whole body, once the headers are in.
    pub read_timeout: Duration,
    /// Bytes of all bodies being read or reviewed at once; a body waits (within
    /// `read_timeout`) for room.
    pub in_flight: Arc<Semaphore>,
}

impl BodyLimits {
    pub fn new(max_bytes: usize, read_timeout: Duration, in_flight_bytes: usize) -> Self {
        Self {
            max_bytes,
            read_timeout,
            in_flight: Arc::new(Semaphore::new(in_flight_bytes)),
        }
    }
}

/// A body that was received, and its share of the in-flight budget (released on drop).
pub struct Received {
    pub bytes: Bytes,
    pub _budget: Option<OwnedSemaphorePermit>,
}

/// Why a body was refused: the status and the message to answer with.
pub type Refusal = (StatusCode, String);

/// Reads `body` within the limits. The refusal names the flag to change. With a `declared`
/// length (already checked against the maximum) the budget is taken once, up front, and the
/// buffer sized exactly; without one it is taken chunk by chunk.
pub async fn read_body(
    body: Body,
    declared: Option<usize>,
    limits: &BodyLimits,
    metrics: &Metrics,
) -> Result<Received, Refusal> {
    let read = read_within_size(body, declared, limits);
    match tokio::time::timeout(limits.read_timeout, read).await {
        Ok(Ok(received)) => Ok(received),
        Ok(Err((reason, refusal))) => {
            metrics.refuse(reason);
            Err(refusal)
        }
        Err(_) => {
            metrics.refuse("body_timeout");
            Err((
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body was not received within {} ms (--body-timeout-ms)",
                    limits.read_timeout.as_millis()
                ),
            ))
        }
    }
}

async fn read_within_size(
    mut body: Body,
    declared: Option<usize>,
    limits: &BodyLimits,
) -> Result<Received, (&'static str, Refusal)> {
    let too_large = || {
        (
            "body_too_large",
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is over the limit of {} bytes (--max-body-bytes)",
                    limits.max_bytes
                ),
            ),
        )
    };
    let shutting_down = || {
        (
            "shutting_down",
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the webhook is shutting down".to_string(),
            ),
        )
    };
    let declared = declared.filter(|n| *n <= limits.max_bytes);
    let mut budget: Option<OwnedSemaphorePermit> = None;
    let mut reserved = 0usize;
    if let Some(length) = declared {
        let share = u32::try_from(length).map_err(|_| too_large())?;
        budget = Some(
            limits
                .in_flight
                .clone()
                .acquire_many_owned(share)
                .await
                .map_err(|_| shutting_down())?,
        );
        reserved = length;
    }
    let mut received = Vec::with_capacity(reserved);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            (
                "body_error",
                (StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if received.len() + data.len() > limits.max_bytes {
            return Err(too_large());
        }
        let beyond = (received.len() + data.len()).saturating_sub(reserved);
        if beyond > 0 {
            let share = u32::try_from(beyond).map_err(|_| too_large())?;
            let permit = limits
                .in_flight
                .clone()
                .acquire_many_owned(share)
                .await
                .map_err(|_| shutting_down())?;
            match &mut budget {
                Some(held) => held.merge(permit),
                None => budget = Some(permit),
            }
            reserved += beyond;
        }
        received.extend_from_slice(&data);
    }
    Ok(Received {
        bytes: Bytes::from(received),
        _budget: budget,
    })
}

/// Limits on connections to the HTTPS port.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Time allowed for the TLS handshake and for request headers.
    pub header_timeout: Duration,
    /// Connections served at once; one more is closed at accept.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
}
