//! How a client logs in to the store.

use std::path::PathBuf;

use super::error::StoreError;

/// The default in-pod service-account token path.
pub const DEFAULT_SERVICE_ACCOUNT_TOKEN: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// One auth method. The credentials here are secrets themselves: `Debug` hides them.
#[derive(Clone)]
pub enum Auth {
    /// Kubernetes auth with a service-account token read from a file.
    Kubernetes {
        mount: String,
        role: String,
        token_file: PathBuf,
    },
    /// JWT/OIDC auth with a JWT read from a file.
    Jwt {
        mount: String,
        role: String,
        token_file: PathBuf,
    },
    /// Kubernetes auth with a ServiceAccount token held in memory (one rotor requested for a
    /// tenant's ServiceAccount with TokenRequest, never written to disk).
    KubernetesToken {
        mount: String,
        role: String,
        jwt: String,
    },
    /// A store token given directly.
    Token(String),
    /// AppRole auth.
    AppRole {
        mount: String,
        role_id: String,
        secret_id: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kubernetes {
                mount,
                role,
                token_file,
            } => f
                .debug_struct("Kubernetes")
                .field("mount", mount)
                .field("role", role)
                .field("token_file", token_file)
                .finish(),
            Self::Jwt {
                mount,
                role,
                token_file,
            } => f
                .debug_struct("Jwt")
                .field("mount", mount)
                .field("role", role)
                .field("token_file", token_file)
                .finish(),
            Self::KubernetesToken { mount, role, .. } => f
                .debug_struct("KubernetesToken")
                .field("mount", mount)
                .field("role", role)
                .finish_non_exhaustive(),
            Self::Token(_) => f.write_str("Token(<hidden>)"),
            Self::AppRole { mount, .. } => f
                .debug_struct("AppRole")
                .field("mount", mount)
                .finish_non_exhaustive(),
        }
    }
}

impl Auth {
    /// A short name for logs: `kubernetes`, `jwt`, `token`, `approle`.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Kubernetes { .. } | Self::KubernetesToken { .. } => "kubernetes",
            Self::Jwt { .. } => "jwt",
            Self::Token(_) => "token",
            Self::AppRole { .. } => "approle",
        }
    }

    /// The login request: (path under /v1, JSON body), or `None` for a direct token.
    pub(crate) fn login_request(&self) -> Result<Option<(String, serde_json::Value)>, StoreError> {
        let read = |path: &PathBuf| read_credential_file(path);
        Ok(match self {
            Self::Kubernetes {
                mount,
                role,
                token_file,
            }
            | Self::Jwt {
                mount,
                role,
                token_file,
            } => Some((
                format!("auth/{}/login", mount.trim_matches('/')),
                serde_json::json!({ "role": role, "jwt": read(token_file)? }),
            )),
            Self::KubernetesToken { mount, role, jwt } => Some((
                format!("auth/{}/login", mount.trim_matches('/')),
                serde_json::json!({ "role": role, "jwt": jwt }),
            )),
            Self::AppRole {
                mount,
                role_id,
                secret_id,
            } => Some((
                format!("auth/{}/login", mount.trim_matches('/')),
                serde_json::json!({ "role_id": role_id, "secret_id": secret_id }),
            )),
            Self::Token(_) => None,
        })
    }
}

/// At most this many bytes of a credential file (a projected ServiceAccount token is about 1 KiB).
const MAX_CREDENTIAL_FILE_BYTES: u64 = 64 * 1024;

/// A token from a file (a projected ServiceAccount token, an agent's token), trimmed, read up to
/// [`MAX_CREDENTIAL_FILE_BYTES`]; the error names the file, never its content.
pub(crate) fn read_credential_file(path: &std::path::Path) -> Result<String, StoreError> {
    use std::io::Read as _;
    let mut text = String::new();
    // A regular file only (a projected token's symlink is followed): opening a FIFO would wait
    // for a writer past any deadline, a device could be read without end.
    std::fs::metadata(path)
        .and_then(|m| {
            if m.is_file() {
                Ok(())
            } else {
                Err(std::io::Error::other(
                    "not a regular file (a FIFO, device or directory is never read)",
                ))
            }
        })
        .and_then(|()| std::fs::File::open(path))
        .and_then(|f| f.take(MAX_CREDENTIAL_FILE_BYTES).read_to_string(&mut text))
        .map_err(|e| StoreError::CredentialFile {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_file_that_is_a_fifo_or_a_directory_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("token");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        // Opening a FIFO without a writer would block this test forever.
        let err = read_credential_file(&fifo).expect_err("a FIFO is refused");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = read_credential_file(dir.path()).expect_err("a directory is refused");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let file = dir.path().join("real");
        std::fs::write(&file, "tok\n").expect("write");
        assert_eq!(read_credential_file(&file).expect("read"), "tok");
    }
}
