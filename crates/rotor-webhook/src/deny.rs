//! Why the webhook refuses a pod: a typed reason and the message for the user, in a module of
//! their own so the planner's parts (targets, pod checks, file volumes) depend on it and not on
//! each other.

/// Why a pod is refused: the reason (the metric label, what tests match) and the message, which
/// names the object, the field and the fix.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Deny {
    pub reason: DenyReason,
    pub message: String,
}

impl Deny {
    pub fn new(reason: DenyReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The kinds of refusal, one metric label each (`rotor_webhook_denials_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// An annotation's value does not parse (a boolean, a mode, an auth method, a source).
    BadAnnotation,
    /// A reference or the pod's references as a whole are malformed or over a limit.
    BadReference,
    /// The pod names a store that is not the default nor on the allowlist, or there is none.
    StoreNotAllowed,
    /// A container sets a `ROTOR_*` variable only rotor may set.
    RotorSetting,
    /// A name or mount path rotor injects is already taken in the pod.
    ReservedName,
    /// A container to wrap has no command and its image's entrypoint cannot be known.
    NoEntrypoint,
    /// `$(VAR)` of a referenced variable in command or args (expanded before rotor-init runs).
    ExpandedReference,
    /// The pod runs on Windows.
    UnsupportedOs,
    /// The review took longer than `--review-timeout-ms`.
    ReviewTimeout,
    /// The webhook is shutting down, or planning failed inside it.
    Internal,
    /// The object under review is not a v1 Pod, or there is none.
    NotAPod,
}

impl DenyReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::BadAnnotation => "bad_annotation",
            Self::BadReference => "bad_reference",
            Self::StoreNotAllowed => "store_not_allowed",
            Self::RotorSetting => "rotor_setting",
            Self::ReservedName => "reserved_name",
            Self::NoEntrypoint => "no_entrypoint",
            Self::ExpandedReference => "expanded_reference",
            Self::UnsupportedOs => "unsupported_os",
            Self::ReviewTimeout => "review_timeout",
            Self::Internal => "internal",
            Self::NotAPod => "not_a_pod",
        }
    }
}
