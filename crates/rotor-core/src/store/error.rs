//! Errors from the store. Messages name the operation and the path, never a secret value.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store answered with an error status.
    #[error("{op}: HTTP {status}{}", if message.is_empty() { String::new() } else { format!(" ({message})") })]
    Status {
        op: String,
        status: u16,
        message: String,
    },
    /// The request did not get an answer (connection refused, reset, timeout).
    #[error("{op}: {message}")]
    Transport { op: String, message: String },
    /// Transient failures kept happening until the overall deadline passed.
    #[error("gave up after {attempts} attempts in {elapsed:?} (deadline {deadline:?}): {last}")]
    Deadline {
        attempts: u32,
        elapsed: Duration,
        deadline: Duration,
        last: Box<StoreError>,
    },
    /// The answer did not have the expected shape.
    #[error("{op}: unexpected answer: {message}")]
    Decode { op: String, message: String },
    /// A pinned KV v2 version was deleted or destroyed.
    #[error(
        "reading {path} version {version}: that version was {state}; pin a live version or drop the pin"
    )]
    VersionGone {
        path: String,
        version: u64,
        state: &'static str,
    },
    /// The secret has no such key.
    #[error("reading {path}: the secret has no key {key:?} (it has {available} keys)")]
    MissingKey {
        path: String,
        key: String,
        available: usize,
    },
    /// A setting that cannot work.
    #[error("{0}")]
    Config(String),
}

impl StoreError {
    /// Worth retrying: no answer, 5xx, 429 and 412 (a standby not yet caught up).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 412,
            _ => false,
        }
    }

    /// The HTTP status, when the store answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Deadline { last, .. } => last.status(),
            _ => None,
        }
    }

    /// Not found: 404, a missing key, or a deleted version.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::MissingKey { .. } | Self::VersionGone { .. })
            || self.status() == Some(404)
    }
}
