//! Why an image's ENTRYPOINT could not be looked up: shaped like the store's `StoreError`, so
//! callers (the refusal, the metric, tests) decide by variant and never by message text.

use reqwest::StatusCode;

#[derive(Clone, Debug, thiserror::Error)]
pub enum RegistryError {
    /// The image text is not a reference the runtime would pull.
    #[error("{0}")]
    BadImage(String),
    /// The pod's imagePullSecrets could not be read.
    #[error("{0}")]
    PullSecret(String),
    /// The whole lookup passed `--registry-timeout-ms`.
    #[error("no answer from {host} within {timeout_ms} ms")]
    Timeout { host: String, timeout_ms: u64 },
    /// One request got no answer (connect, reset, its own timeout).
    #[error("{op}: {message}")]
    Unreachable { op: String, message: String },
    /// The registry (or its token service) answered with an error status.
    #[error("{op}: HTTP {status}{}", status_hint(*status))]
    Status { op: String, status: StatusCode },
    /// A 401 again after authenticating as the challenge asked.
    #[error("{op}: still unauthorized after authenticating")]
    StillUnauthorized { op: String },
    /// The registry asks for credentials and the pod has none for it.
    #[error("{registry} asks for credentials and none were found in the pod's imagePullSecrets")]
    NoCredentials { registry: String },
    /// The registry's Bearer challenge or its token service cannot be used (no realm, a realm
    /// that is not a URL, credentials to plain http, another scheme).
    #[error("{registry}: {message}")]
    TokenService { registry: String, message: String },
    /// An answer over its byte cap (manifests 4 MiB, configs 1 MiB, tokens 64 KiB).
    #[error("{op}: the answer is over the limit of {cap} bytes")]
    TooBig { op: String, cap: usize },
    /// An answer without the expected shape.
    #[error("{op}: {message}")]
    Decode { op: String, message: String },
    /// The index has no manifest for the webhook's `--platform`.
    #[error("the image has no {platform} variant (it has: {available})")]
    NoPlatform { platform: String, available: String },
    /// ENTRYPOINT and CMD together over the cap on what is put into a pod.
    #[error("the image's ENTRYPOINT and CMD hold {bytes} bytes, over the limit of {limit}")]
    CommandTooBig { bytes: usize, limit: usize },
    /// The webhook stops: lookups in flight are abandoned.
    #[error("the webhook is shutting down")]
    ShuttingDown,
}

fn status_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => " (no access: add an imagePullSecret the webhook can read)",
        404 => " (no such image or tag)",
        _ => "",
    }
}

impl RegistryError {
    /// The registry did not answer in time or at all: worth trying again later, unlike a
    /// refusal or a bad image.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Unreachable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_their_hint_and_unreachable_is_told_apart() {
        let missing = RegistryError::Status {
            op: "GET https://r/v2/a/manifests/1".into(),
            status: StatusCode::NOT_FOUND,
        };
        assert_eq!(
            missing.to_string(),
            "GET https://r/v2/a/manifests/1: HTTP 404 Not Found (no such image or tag)"
        );
        assert!(!missing.is_unreachable());
        let slow = RegistryError::Timeout {
            host: "r".into(),
            timeout_ms: 3000,
        };
        assert!(slow.is_unreachable());
        assert_eq!(slow.to_string(), "no answer from r within 3000 ms");
    }
}
