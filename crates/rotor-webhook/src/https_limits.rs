//! What one client may cost the HTTPS port: the bytes of a request body and the time to send
//! it, its share of the bytes of all bodies being read at once (`body_budget`), connections,
//! and HTTP/2 streams. Whoever
//! reaches the port can only get their own requests refused; memory stays bounded.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use http_body_util::BodyExt as _;

use crate::body_budget::{BodyBudget, BudgetSizes, ConnectionBudget, Held};
use crate::metrics::Metrics;

/// Limits on request bodies.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    /// Largest body accepted (the API server's own limit on a request is 3 MiB).
    pub max_bytes: usize,
    /// Time allowed to receive a whole body, once the headers are in.
    pub read_timeout: Duration,
    /// Bytes of bodies being read or reviewed at once, in total, per peer address and per
    /// connection; a body waits (within `read_timeout`) for room.
    pub budget: Arc<BodyBudget>,
}

impl BodyLimits {
    pub fn new(max_bytes: usize, read_timeout: Duration, sizes: BudgetSizes) -> Self {
        Self {
            max_bytes,
            read_timeout,
            budget: BodyBudget::new(sizes),
        }
    }
}

/// A body that was received, and its share of the budget (released on drop).
pub struct Received {
    pub bytes: Bytes,
    pub _budget: Held,
}

/// Why a body was refused: the status and the message to answer with.
pub type Refusal = (StatusCode, String);

/// The first allocation for a body with a declared length: what is declared is not trusted
/// with memory, what arrives is.
const FIRST_ALLOCATION: usize = 64 * 1024;

/// Reads `body` within the limits, drawing on `shares` for every chunk as it arrives. The
/// refusal names the flag to change.
pub async fn read_body(
    body: Body,
    declared: Option<usize>,
    shares: &ConnectionBudget,
    limits: &BodyLimits,
    metrics: &Metrics,
) -> Result<Received, Refusal> {
    let read = read_within_size(body, declared, shares, limits);
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
    shares: &ConnectionBudget,
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
    let first = declared
        .unwrap_or(0)
        .min(limits.max_bytes)
        .min(FIRST_ALLOCATION);
    let mut received = Vec::with_capacity(first);
    let mut held = Held::default();
    let ticket = shares.begin_body();
    let cut = || {
        (
            "body_cut",
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the request body was cut before it was complete: its client address held the \
                 most of the bytes being received (--max-inflight-body-bytes) while another \
                 client waited for room"
                    .to_string(),
            ),
        )
    };
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = ticket.cut.cancelled() => return Err(cut()),
        };
        let Some(frame) = frame else { break };
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
        let reserved = tokio::select! {
            reserved = shares.reserve(data.len(), &ticket) => reserved.map_err(|_| shutting_down())?,
            () = ticket.cut.cancelled() => return Err(cut()),
        };
        held.merge(reserved);
        received.extend_from_slice(&data);
    }
    Ok(Received {
        bytes: Bytes::from(received),
        _budget: held,
    })
}

/// Limits on connections to the HTTPS port.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Time allowed for the TLS handshake and for request headers.
    pub header_timeout: Duration,
    /// Connections served at once, and of those one peer address's; see `connection_slots`.
    pub slots: crate::connection_slots::SlotSizes,
    /// A connection with no request in flight for this long is closed (before its first
    /// request: `header_timeout`, counted from accept).
    pub idle_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
    /// The body budget each connection gets its shares of.
    pub budget: Arc<BodyBudget>,
}
