//! The error of a setting read by any program: a `ROTOR_*` variable, a flag or an annotation.

/// A setting that cannot work: which one (a `ROTOR_*` variable or an annotation), and the
/// message for the user, which names it, what it holds and the fix. Callers and tests decide by
/// `setting`, never by the message's text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SettingError {
    pub setting: String,
    pub message: String,
}

impl SettingError {
    pub fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            message: message.into(),
        }
    }
}
