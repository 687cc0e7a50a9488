//! An OCI registry on loopback (go-containerregistry's), and pushing test images with crane.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::ports::free_port;
use crate::process::ManagedProcess;
use crate::ready::wait_http_ok;
use crate::tools::tool;

pub struct Registry {
    pub process: ManagedProcess,
    /// `127.0.0.1:PORT`, the host part of image references.
    pub host: String,
    dir: PathBuf,
}

impl Registry {
    pub async fn start(dir: &Path) -> Result<Self> {
        let port = free_port()?;
        let args = vec![format!("-port={port}")];
        let mut process = ManagedProcess::spawn("registry", &tool("registry")?, &args, &[], dir)?;
        let host = format!("127.0.0.1:{port}");
        wait_http_ok(&mut process, &format!("http://{host}/v2/"), None).await?;
        Ok(Self {
            process,
            host,
            dir: dir.to_path_buf(),
        })
    }

    /// Pushes `127.0.0.1:PORT/<repo>:<tag>` with the given ENTRYPOINT and CMD (either may be
    /// empty) for `platform` (`linux/amd64`); returns the full reference.
    pub fn push_image(
        &self,
        repo_tag: &str,
        entrypoint: &[&str],
        cmd: &[&str],
        platform: &str,
    ) -> Result<String> {
        let reference = format!("{}/{repo_tag}", self.host);
        let layer = self.dir.join("empty-layer.tar");
        if !layer.exists() {
            std::fs::write(&layer, [0u8; 1024]).context("writing an empty tar layer")?;
        }
        let config = ImageConfig {
            entrypoint: entrypoint.iter().map(|s| (*s).to_string()).collect(),
            cmd: cmd.iter().map(|s| (*s).to_string()).collect(),
            ..ImageConfig::default()
        };
        push_layer(&reference, &layer, &config, platform)?;
        Ok(reference)
    }

    /// Pushes `127.0.0.1:PORT/<repo>:<tag>` for linux/amd64 with one layer holding `files`
    /// (host path, absolute path in the image; the host file's mode, owned by root) and `config`.
    /// `work` is a directory for the layer's staging tree and tarball.
    pub fn push_files_image(
        &self,
        repo_tag: &str,
        files: &[(PathBuf, String)],
        config: &ImageConfig,
        work: &Path,
    ) -> Result<String> {
        let reference = format!("{}/{repo_tag}", self.host);
        let slug: String = repo_tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let staging = work.join(format!("image-{slug}"));
        let _ = std::fs::remove_dir_all(&staging);
        for (source, target) in files {
            let Some(relative) = target.strip_prefix('/').filter(|t| !t.is_empty()) else {
                bail!("image {repo_tag}: file target {target:?} must be an absolute path");
            };
            let dest = staging.join(relative);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::copy(source, &dest)
                .with_context(|| format!("copying {} into image {repo_tag}", source.display()))?;
        }
        let layer = work.join(format!("image-{slug}.tar"));
        let status = Command::new("tar")
            .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
            .arg(&staging)
            .arg("-cf")
            .arg(&layer)
            .arg(".")
            .status()
            .context("running tar")?;
        if !status.success() {
            bail!("tar of the layer for {repo_tag} failed");
        }
        push_layer(&reference, &layer, config, "linux/amd64")?;
        Ok(reference)
    }

    /// Pushes an index (multi-platform image) at `reference` from existing image references.
    pub fn push_index(&self, repo_tag: &str, manifests: &[&str]) -> Result<String> {
        let reference = format!("{}/{repo_tag}", self.host);
        let mut args = vec!["index", "append", "--insecure", "-t", &reference];
        for m in manifests {
            args.push("-m");
            args.push(m);
        }
        crane(&args)?;
        Ok(reference)
    }
}

/// The image config fields the tests set: ENTRYPOINT, CMD, USER and ENV (`NAME=value`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub user: Option<String>,
    pub env: Vec<String>,
}

/// Appends `layer` (a tarball) to `reference` for `platform` and sets the image config.
fn push_layer(reference: &str, layer: &Path, config: &ImageConfig, platform: &str) -> Result<()> {
    let layer = layer.display().to_string();
    crane(&[
        "append",
        "--insecure",
        "--platform",
        platform,
        "-f",
        &layer,
        "-t",
        reference,
    ])?;
    // crane takes comma-separated lists; an empty list clears the field. The platform goes into
    // the image config, where `crane index append` reads it.
    let mut mutate = vec![
        "mutate".to_string(),
        "--insecure".to_string(),
        reference.to_string(),
        "-t".to_string(),
        reference.to_string(),
        format!("--entrypoint={}", config.entrypoint.join(",")),
        format!("--cmd={}", config.cmd.join(",")),
        format!("--set-platform={platform}"),
    ];
    if let Some(user) = &config.user {
        mutate.push(format!("--user={user}"));
    }
    for env in &config.env {
        mutate.push(format!("--env={env}"));
    }
    let refs: Vec<&str> = mutate.iter().map(String::as_str).collect();
    crane(&refs)?;
    Ok(())
}

/// Runs crane with `args`, failing with its output.
pub fn crane(args: &[&str]) -> Result<String> {
    let out = Command::new(tool("crane")?)
        .args(args)
        .output()
        .context("running crane")?;
    if !out.status.success() {
        bail!(
            "crane {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
