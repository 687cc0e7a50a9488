//! Typed choices shared by flags, annotations and `ROTOR_*` settings. Each parses
//! case-insensitively and prints its canonical spelling, so what the webhook accepts at start-up
//! is exactly what rotor-init accepts in the pod.

use std::fmt;
use std::str::FromStr;

/// A choice that does not parse; names what was given and what is expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{given:?}: expected {expected}")]
pub struct ChoiceError {
    pub given: String,
    pub expected: &'static str,
}

macro_rules! choice {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $canonical:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            const EXPECTED: &'static str = concat!("one of:" $(, " ", $canonical)+);

            /// The canonical spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $canonical),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ChoiceError;
            fn from_str(s: &str) -> Result<Self, ChoiceError> {
                let lower = s.trim().to_ascii_lowercase();
                $(if lower == $canonical.to_ascii_lowercase() $(|| lower == $alias)* {
                    return Ok($name::$variant);
                })+
                Err(ChoiceError { given: s.to_string(), expected: Self::EXPECTED })
            }
        }
    };
}

choice!(
    /// How rotor-init logs in to the store.
    AuthMethod {
        Kubernetes => "kubernetes",
        Jwt => "jwt",
        Token => "token",
        AppRole => "approle",
    }
);

impl AuthMethod {
    /// Logs in with the pod's service-account token (the webhook mounts a projected one).
    pub fn uses_service_account_token(self) -> bool {
        matches!(self, Self::Kubernetes | Self::Jwt)
    }

    /// The auth mount when none is set: the method's own name.
    pub fn default_mount(self) -> &'static str {
        self.as_str()
    }
}

choice!(
    /// Log output format.
    LogFormat {
        Plain => "plain" | "text",
        Json => "json",
    }
);

choice!(
    /// Log verbosity.
    LogLevel {
        Error => "error",
        Warn => "warn" | "warning",
        Info => "info",
        Debug => "debug",
        Trace => "trace",
    }
);

impl LogLevel {
    pub fn to_tracing(self) -> tracing::Level {
        match self {
            Self::Error => tracing::Level::ERROR,
            Self::Warn => tracing::Level::WARN,
            Self::Info => tracing::Level::INFO,
            Self::Debug => tracing::Level::DEBUG,
            Self::Trace => tracing::Level::TRACE,
        }
    }
}

choice!(
    /// How rotor-init reaches the pod (README, "Where rotor-init comes from"): mounted read-only
    /// from the rotor-init image as an `image` volume (Kubernetes >= 1.35 with containerd >= 2.1:
    /// no init container), or copied into an in-memory volume by an init container (any cluster).
    BinarySource {
        Copy => "copy",
        ImageVolume => "image-volume" | "image",
    }
);

choice!(
    /// Kubernetes imagePullPolicy.
    PullPolicy {
        Always => "Always",
        IfNotPresent => "IfNotPresent",
        Never => "Never",
    }
);

/// The one boolean dialect of rotor's annotations and settings: `true`, `yes`, `1` or `false`,
/// `no`, `0`, `skip` (Bank-Vaults' `mutate: skip`), case-insensitive.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" | "skip" => Some(false),
        _ => None,
    }
}

/// What [`parse_bool`] accepts, for error messages.
pub const BOOL_EXPECTED: &str = "true or false (also yes/no, 1/0)";

/// A comma-separated list of names, trimmed, empty entries dropped (settings, annotations).
pub fn name_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_any_case_and_print_their_canonical_spelling() {
        for m in AuthMethod::ALL {
            assert_eq!(m.to_string().to_uppercase().parse::<AuthMethod>(), Ok(*m));
        }
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(" text ".parse::<LogFormat>(), Ok(LogFormat::Plain));
        assert_eq!(
            "ifnotpresent"
                .parse::<PullPolicy>()
                .map(|p| p.to_string())
                .as_deref(),
            Ok("IfNotPresent")
        );
        assert_eq!("WARNING".parse::<LogLevel>(), Ok(LogLevel::Warn));
        let err = "ldap".parse::<AuthMethod>().unwrap_err().to_string();
        assert_eq!(
            err,
            "\"ldap\": expected one of: kubernetes jwt token approle"
        );
        assert!("Sometimes".parse::<PullPolicy>().is_err());
    }

    #[test]
    fn one_boolean_dialect() {
        for t in ["true", "TRUE", "yes", "1", " True "] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "No", "0", "skip"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["", "maybe", "y", "on"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }
}
