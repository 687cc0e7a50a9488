//! The reasons of the Kubernetes Events rotor publishes: what a user filters on
//! (`kubectl get events --field-selector reason=SecretRotated`), so written once, here, and
//! matched by variant in the controller and the tests.

/// One Event reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventReason {
    /// A workload was rolled because secrets it uses got new versions.
    SecretRotated,
    /// A rotation was delivered to the running pods (signal mode) instead of a rollout.
    SecretRotatedInPlace,
    /// A path changed before rotor first saw it, after the template last changed: rolled once.
    RotatedBeforeWatched,
    /// The workload's version record could not be read; it is rewritten (Warning).
    UnreadableRecord,
    /// A referenced path is outside what the namespace may have watched (Warning).
    PathNotWatched,
    /// The workload's store is not one the reloader may poll (Warning).
    StoreNotAllowed,
    /// A scheduled rotation was claimed: the targets' versions before it are recorded.
    RotationStarted,
    /// A rotation's new value was written to every target.
    RotationWritten,
    /// Every consumer of a rotation runs the version written.
    RotationCompleted,
    /// A rotation stopped after its retry budget; consumers keep a working value (Warning).
    RotationFailed,
    /// A rotation's spec cannot be rotated as written (Warning).
    RotationInvalid,
    /// Consumers of a rotation did not run the new version within its wait (Warning).
    ConsumersLagging,
}

impl EventReason {
    pub const ALL: [Self; 12] = [
        Self::SecretRotated,
        Self::SecretRotatedInPlace,
        Self::RotatedBeforeWatched,
        Self::UnreadableRecord,
        Self::PathNotWatched,
        Self::StoreNotAllowed,
        Self::RotationStarted,
        Self::RotationWritten,
        Self::RotationCompleted,
        Self::RotationFailed,
        Self::RotationInvalid,
        Self::ConsumersLagging,
    ];

    /// The reason as the Event carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecretRotated => "SecretRotated",
            Self::SecretRotatedInPlace => "SecretRotatedInPlace",
            Self::RotatedBeforeWatched => "RotatedBeforeWatched",
            Self::UnreadableRecord => "UnreadableRecord",
            Self::PathNotWatched => "PathNotWatched",
            Self::StoreNotAllowed => "StoreNotAllowed",
            Self::RotationStarted => "RotationStarted",
            Self::RotationWritten => "RotationWritten",
            Self::RotationCompleted => "RotationCompleted",
            Self::RotationFailed => "RotationFailed",
            Self::RotationInvalid => "RotationInvalid",
            Self::ConsumersLagging => "ConsumersLagging",
        }
    }

    /// A Warning (something for the user to fix) rather than a Normal Event.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Self::UnreadableRecord
                | Self::PathNotWatched
                | Self::StoreNotAllowed
                | Self::RotationFailed
                | Self::RotationInvalid
                | Self::ConsumersLagging
        )
    }
}

impl std::fmt::Display for EventReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_upper_camel_case_words() {
        let names: std::collections::HashSet<&str> =
            EventReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), EventReason::ALL.len());
        for name in names {
            assert!(
                name.chars().all(|c| c.is_ascii_alphabetic())
                    && name.starts_with(|c: char| c.is_ascii_uppercase()),
                "{name}"
            );
        }
    }
}
