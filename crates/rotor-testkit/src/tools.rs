//! Locates the control-plane binaries installed by `scripts/install-tools.sh`.

use std::path::PathBuf;

use anyhow::{Result, bail};

/// The directory holding the tools: `$ROTOR_TOOLS_BIN`, else `<repo>/.tools/bin`.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ROTOR_TOOLS_BIN") {
        return PathBuf::from(dir);
    }
    repo_root().join(".tools").join("bin")
}

/// The repository root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The path of one tool. A missing tool is an error that says how to install it: tests that
/// need the stack fail, they never skip.
pub fn tool(name: &str) -> Result<PathBuf> {
    let path = tools_dir().join(name);
    if !path.exists() {
        bail!(
            "{name} not found at {}: run scripts/install-tools.sh (or set ROTOR_TOOLS_BIN) \
             before the tests that need the local control plane",
            path.display()
        );
    }
    Ok(path)
}
