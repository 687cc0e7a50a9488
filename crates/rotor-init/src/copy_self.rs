//! `rotor-init copy DIR`: the injected init container copies the wrapper into the shared
//! in-memory volume, so no shell is needed in any image.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Copies this executable to `DIR/rotor-init` (written to a temp name, then renamed).
pub fn copy_self(dir: &Path) -> Result<std::path::PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("finding my own executable: {e}"))?;
    let target = dir.join("rotor-init");
    let partial = dir.join(".rotor-init.partial");
    std::fs::copy(&me, &partial)
        .map_err(|e| format!("copying {} to {}: {e}", me.display(), partial.display()))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("making {} executable: {e}", partial.display()))?;
    std::fs::rename(&partial, &target).map_err(|e| {
        format!(
            "renaming {} to {}: {e}",
            partial.display(),
            target.display()
        )
    })?;
    Ok(target)
}
