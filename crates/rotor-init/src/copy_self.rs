//! `rotor-init copy DIR`: the injected init container copies the wrapper into the shared
//! in-memory volume, so no shell is needed in any image.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Why the copy failed: the step and the file, with the system's error.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}: {source}", .path.display())]
pub struct CopyError {
    pub step: &'static str,
    pub path: std::path::PathBuf,
    pub source: std::io::Error,
}

/// Copies this executable to `DIR/rotor-init` (written to a temp name, then renamed).
pub fn copy_self(dir: &Path) -> Result<std::path::PathBuf, CopyError> {
    let failed = |step, path: &Path| {
        let path = path.to_path_buf();
        move |source| CopyError { step, path, source }
    };
    let me = std::env::current_exe().map_err(failed("finding my own executable", dir))?;
    let target = dir.join("rotor-init");
    let partial = dir.join(".rotor-init.partial");
    std::fs::copy(&me, &partial).map_err(failed("copying this executable to", &partial))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        .map_err(failed("making executable", &partial))?;
    std::fs::rename(&partial, &target).map_err(failed("renaming the copy to", &target))?;
    Ok(target)
}
