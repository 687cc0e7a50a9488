//! The release rotor-init is static and runs in an empty root (no libc, no shell), resolving a
//! store host name from /etc/hosts, against a real OpenBao on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use rotor_testkit::{OpenBao, ROOT_TOKEN};
use serde_json::json;

/// Builds rotor-init the way the Dockerfile and CI do and returns the binary.
fn build_static() -> Result<PathBuf> {
    let root = rotor_testkit::tools::repo_root();
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--locked",
            "-p",
            "rotor-init",
            "--profile",
            "release-init",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("the static release build of rotor-init failed");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("x86_64-unknown-linux-gnu/release-init/rotor-init"))
}

#[tokio::test]
async fn static_release_binary_runs_in_an_empty_root() -> Result<()> {
    let binary = build_static()?;
    let file = String::from_utf8(Command::new("file").arg(&binary).output()?.stdout)?;
    assert!(
        file.contains("static-pie linked") || file.contains("statically linked"),
        "{file}"
    );
    let size = std::fs::metadata(&binary)?.len();
    eprintln!(
        "rotor-init static release binary: {size} bytes; {}",
        file.trim()
    );
    assert!(
        size < 5 * 1000 * 1000,
        "ARCHITECTURE.md budget: < 5 MB, got {size}"
    );

    let dir = tempfile::tempdir()?;
    let bao = OpenBao::start(dir.path()).await?;
    bao.admin()?
        .put_kv2("secret", "db", json!({ "password": "static-test-value" }))
        .await?;
    let port = bao.addr.rsplit(':').next().unwrap().to_string();

    // The empty root: the binary, and /etc/hosts naming the store. Nothing else.
    let root = dir.path().join("empty-root");
    std::fs::create_dir_all(root.join("etc"))?;
    std::fs::copy(&binary, root.join("rotor-init"))?;
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 bao.rotor.test\n")?;
    let chroot = ["/usr/sbin/chroot", "/sbin/chroot", "/usr/bin/chroot"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .context("chroot is not installed (coreutils)")?;
    let out = Command::new(chroot)
        .arg(&root)
        .args(["/rotor-init", "--", "/rotor-init", "--version"])
        .env_clear()
        .env("ROTOR_ADDR", format!("http://bao.rotor.test:{port}"))
        .env("ROTOR_AUTH_METHOD", "token")
        .env("ROTOR_TOKEN", ROOT_TOKEN)
        .env("ROTOR_DEADLINE", "10")
        .env("DB", "vault:secret/data/db#password")
        .output()
        .context("running chroot (the test needs root)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rotor-init in an empty root failed: {stderr}"
    );
    assert!(
        stderr.contains("requests=1"),
        "it read the secret through bao.rotor.test: {stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("rotor-init "),
        "then exec'd the app"
    );
    assert!(!stderr.contains("static-test-value"));
    Ok(())
}
