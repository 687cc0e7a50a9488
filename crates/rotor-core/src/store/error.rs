//! Errors from the store. Messages name the operation and the path, never a secret value.
//!
//! Callers decide by variant (retry, exit code, re-login), never by message text.

use std::time::Duration;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The store answered with an error status.
    #[error("{op}: HTTP {status}{}", if message.is_empty() { String::new() } else { format!(" ({message})") })]
    Status {
        op: String,
        status: u16,
        message: String,
    },
    /// No answer. `sent` is false when the connection was never made, so the store cannot
    /// have acted on the request; true when it may have (a timeout or reset after sending).
    #[error("{op}: {message}")]
    Unreachable {
        op: String,
        message: String,
        sent: bool,
    },
    /// The TLS handshake failed: retrying cannot make an untrusted certificate trusted.
    #[error(
        "{op}: TLS: {message}; trust the store's CA with ROTOR_CACERT (or the chart's store.caConfigMap)"
    )]
    Tls { op: String, message: String },
    /// The address says `http://` and the store serves HTTPS there (Go's servers, Vault's and
    /// OpenBao's, answer 400 "Client sent an HTTP request to an HTTPS server"): a setting, never
    /// retried.
    #[error(
        "{op}: the store serves HTTPS at this address but the address says http://; change it to https:// (ROTOR_ADDR, the chart's store.address or rotor.dev/vault-addr)"
    )]
    PlainHttpToHttps { op: String },
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
    /// The operation needs a KV v2 mount (versions, metadata) and the path is on another.
    #[error("{op}: {mount} is not a KV v2 mount, so it has no versions; {fix}")]
    NotKv2 {
        op: String,
        mount: String,
        fix: &'static str,
    },
    /// The JSON body of a `>>` write does not parse.
    #[error("{op}: the body is not JSON: {message}")]
    BadBody { op: String, message: String },
    /// The CA bundle given to trust the store cannot be used.
    #[error("{0}")]
    CaBundle(String),
    /// A credential file cannot be read.
    #[error(
        "reading the credential file {path}: {message}; mount a token there or set the token path"
    )]
    CredentialFile { path: String, message: String },
    /// The HTTP client cannot be built (no usable CA certificates on an https store).
    #[error("{0}")]
    Client(String),
    /// AWS answered with an error: its code (`ResourceNotFoundException`, `AccessDeniedException`,
    /// `ThrottlingException`, ...) and message, which name the resource, never its value.
    #[error("{op}: {code} (HTTP {status}){}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Aws {
        op: String,
        status: u16,
        code: Box<str>,
        message: Box<str>,
    },
}

/// The HTTP status an AWS error code means for rotor's decisions: not found (404), denied
/// (403), throttled (429), else the status AWS sent.
fn aws_class(code: &str, status: u16) -> u16 {
    match code {
        "ResourceNotFoundException"
        | "ParameterNotFound"
        | "ParameterVersionNotFound"
        | "ParameterVersionLabelNotFound" => 404,
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "InvalidIdentityToken" => 403,
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "ThrottledException" => 429,
        _ => status,
    }
}

impl StoreError {
    /// Worth retrying: no answer, 5xx, 429 and 412 (a standby not yet caught up).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 412,
            Self::Aws { .. } => self.status().is_some_and(|s| s >= 500 || s == 429),
            _ => false,
        }
    }

    /// The store cannot have acted on the request: the connection was never made, or the store
    /// refused to process it (429 rate limit, 503 sealed or standby). Only these are safe to
    /// repeat for a write, which is not idempotent (each `>>` write mints a credential).
    pub fn store_did_not_act(&self) -> bool {
        match self {
            Self::Unreachable { sent, .. } => !sent,
            Self::Status { status, .. } => *status == 429 || *status == 503,
            Self::Aws { .. } => self.status() == Some(429),
            _ => false,
        }
    }

    /// A setting on rotor's side is wrong (TLS trust, CA bundle, a credential file, a path on
    /// the wrong kind of mount, a malformed body): fixing the configuration is the only remedy.
    pub fn is_setup(&self) -> bool {
        match self {
            Self::Tls { .. }
            | Self::PlainHttpToHttps { .. }
            | Self::NotKv2 { .. }
            | Self::BadBody { .. }
            | Self::CaBundle(_)
            | Self::CredentialFile { .. }
            | Self::Client(_) => true,
            // A redirect is never followed (a token must not go to another origin): the
            // address names something other than the store itself.
            Self::Status { status, .. } => (300..400).contains(status),
            Self::Deadline { last, .. } => last.is_setup(),
            _ => false,
        }
    }

    /// The store could not be reached in time (no answer, or transient failures until the deadline).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Deadline { .. })
    }

    /// The HTTP status, when the store answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Aws { status, code, .. } => Some(aws_class(code, *status)),
            Self::Deadline { last, .. } => last.status(),
            _ => None,
        }
    }

    /// The token may not do this (403).
    pub fn is_permission_denied(&self) -> bool {
        self.status() == Some(403)
    }

    /// Not found: 404, a missing key, or a deleted version.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::MissingKey { .. } | Self::VersionGone { .. })
            || self.status() == Some(404)
    }
}
