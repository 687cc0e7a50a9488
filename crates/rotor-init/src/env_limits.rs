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
    #[error(
        "the environment holds {count} variables, {bytes} bytes with the arguments; the kernel passes at most {max} (ARG_MAX) to a program; a from-path secret with many keys is the usual cause: reference only the keys the app needs"
    )]
    TooMuch {
        count: usize,
        bytes: usize,
        max: usize,
    },
}

/// The kernel's limit on arguments and environment together (a quarter of the stack limit),
/// or 2 MiB when it cannot be read.
pub fn arg_max() -> usize {
    use nix::unistd::{SysconfVar, sysconf};
    sysconf(SysconfVar::ARG_MAX)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(2 * 1024 * 1024)
}

/// Every variable fits the kernel's rules, and all of them with `args` fit in `max` bytes
/// (strings and their pointers, as execve counts them). Names only in errors, never values.
pub fn check(env: &[(String, String)], args: &[String], max: usize) -> Result<(), EnvError> {
    let pointer = std::mem::size_of::<usize>();
    let mut bytes: usize = args.iter().map(|a| a.len() + 1 + pointer).sum();
    for (name, value) in env {
        bytes += name.len() + value.len() + 2 + pointer;
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
    if bytes > max {
        return Err(EnvError::TooMuch {
            count: env.len(),
            bytes,
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, value: &str) -> Result<(), EnvError> {
        check(&[(name.to_string(), value.to_string())], &[], arg_max())
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

    #[test]
    fn too_many_variables_together_are_named_as_such() {
        let env: Vec<(String, String)> = (0..1000)
            .map(|i| (format!("KEY_{i}"), "v".repeat(100)))
            .collect();
        assert_eq!(check(&env, &["/app".to_string()], 1 << 20), Ok(()));
        let err = check(&env, &["/app".to_string()], 64 * 1024)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1000 variables") && err.contains("ARG_MAX"),
            "{err}"
        );
        assert!(!err.contains("vvvv"), "never a value: {err}");
        assert!(arg_max() >= 128 * 1024);
    }
}
