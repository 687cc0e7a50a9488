//! What the kernel refuses in an environment, checked before `execve` so the error names the
//! variable instead of "Argument list too long" for the whole app.

/// Linux's limit for one `NAME=value` string (MAX_ARG_STRLEN: 32 pages), NUL included.
pub const MAX_ENTRY: usize = 32 * 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error(
        "env {name}: its value is {len} bytes; Linux passes at most {max} bytes per variable (NAME=value); read it from a file or split it"
    )]
    TooLong {
        name: String,
        len: usize,
        max: usize,
    },
    #[error("env {name}: its value contains a NUL byte, which an environment cannot carry")]
    Nul { name: String },
    #[error("env {name:?}: a variable name cannot be empty or contain '=' or a NUL byte")]
    BadName { name: String },
}

/// Every variable fits the kernel's rules. Names only in errors, never values.
pub fn check(env: &[(String, String)]) -> Result<(), EnvError> {
    for (name, value) in env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(EnvError::BadName { name: name.clone() });
        }
        if value.contains('\0') {
            return Err(EnvError::Nul { name: name.clone() });
        }
        if name.len() + 1 + value.len() + 1 > MAX_ENTRY {
            return Err(EnvError::TooLong {
                name: name.clone(),
                len: value.len(),
                max: MAX_ENTRY,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, value: &str) -> Result<(), EnvError> {
        check(&[(name.to_string(), value.to_string())])
    }

    #[test]
    fn oversized_nul_and_misnamed_variables_are_named_and_values_never_printed() {
        assert_eq!(one("OK", &"x".repeat(MAX_ENTRY - 4)), Ok(()));
        let err = one("BIG", &"s".repeat(MAX_ENTRY)).unwrap_err().to_string();
        assert!(
            err.starts_with("env BIG: its value is 131072 bytes"),
            "{err}"
        );
        assert!(!err.contains("sss"));
        let err = one("NUL", "secret\0value").unwrap_err().to_string();
        assert!(err.contains("env NUL") && !err.contains("secret"), "{err}");
        assert!(matches!(
            one("PATH=/evil", "x"),
            Err(EnvError::BadName { .. })
        ));
        assert!(matches!(one("", "x"), Err(EnvError::BadName { .. })));
    }
}
