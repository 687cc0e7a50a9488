//! Reads the final stage of one of rotor's Dockerfiles, so the images the tests push have the
//! layout, entrypoint and user the Dockerfile describes (there is no Docker engine to build it).
//!
//! Only what rotor's Dockerfiles use is understood: `FROM scratch` or distroless/static,
//! `COPY --from=STAGE SRC DST`, `USER`, `ENTRYPOINT` and `CMD` in JSON form. Anything else in the
//! final stage is an error, so a Dockerfile change that the tests cannot mirror fails loudly
//! instead of being ignored.

use anyhow::{Context, Result, bail};

use crate::registry::ImageConfig;

/// The distroless base `Dockerfile.webhook` builds on (no registry here to pull it from).
pub const DISTROLESS_STATIC: &str = "gcr.io/distroless/static-debian12:nonroot";

/// The base image of the final stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Base {
    /// Nothing: the image holds only what the stage copies.
    #[default]
    Scratch,
    /// distroless/static: `/etc/passwd` and `/etc/group` with `nonroot` (65532), CA certificates,
    /// no shell, no libc. Assembled locally from its documented contents ([`distroless_files`]).
    DistrolessStatic,
}

/// The files of the distroless/static base that rotor's programs rely on: (path in the image,
/// content). The CA bundle is this host's (Debian's, as distroless ships).
pub fn distroless_files() -> Result<Vec<(String, Vec<u8>)>> {
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    let certs = std::fs::read(bundle)
        .with_context(|| format!("reading {bundle} for the distroless/static stand-in base"))?;
    Ok(vec![
        (
            "/etc/passwd".to_string(),
            b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n".to_vec(),
        ),
        (
            "/etc/group".to_string(),
            b"root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n".to_vec(),
        ),
        (bundle.to_string(), certs),
    ])
}

/// What the final stage of a Dockerfile puts in the image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinalStage {
    pub base: Base,
    /// `(source path in the build stage, destination path in the image)`.
    pub copies: Vec<(String, String)>,
    pub config: ImageConfig,
}

/// Parses the final stage of `text`.
pub fn final_stage(text: &str) -> Result<FinalStage> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .context("the Dockerfile has no FROM")?;
    let base = match lines[start].trim_start_matches("FROM ").trim() {
        "scratch" => Base::Scratch,
        DISTROLESS_STATIC => Base::DistrolessStatic,
        other => bail!(
            "final stage FROM {other}: only scratch and {DISTROLESS_STATIC} can be assembled here"
        ),
    };
    let mut stage = FinalStage {
        base,
        ..FinalStage::default()
    };
    for line in &lines[start + 1..] {
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        match instruction {
            "COPY" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let [from, source, dest] = words.as_slice() else {
                    bail!("{line:?}: expected COPY --from=STAGE SRC DST");
                };
                if !from.starts_with("--from=") {
                    bail!("{line:?}: expected COPY --from=STAGE SRC DST");
                }
                stage
                    .copies
                    .push(((*source).to_string(), (*dest).to_string()));
            }
            "USER" => stage.config.user = Some(rest.trim().to_string()),
            "ENTRYPOINT" => stage.config.entrypoint = json_list(line, rest)?,
            "CMD" => stage.config.cmd = json_list(line, rest)?,
            other => bail!("{line:?}: {other} is not understood in the final stage"),
        }
    }
    Ok(stage)
}

fn json_list(line: &str, rest: &str) -> Result<Vec<String>> {
    serde_json::from_str(rest.trim())
        .with_context(|| format!("{line:?}: expected the JSON (exec) form"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rotor_inits_dockerfile() {
        let text = std::fs::read_to_string(crate::tools::repo_root().join("Dockerfile.init"))
            .unwrap_or_default();
        let stage = final_stage(&text).unwrap_or_default();
        assert_eq!(stage.copies.len(), 1);
        assert_eq!(stage.copies[0].1, "/rotor-init");
        assert!(stage.copies[0].0.ends_with("/release-init/rotor-init"));
        assert_eq!(stage.config.user.as_deref(), Some("65532:65532"));
        assert_eq!(stage.config.entrypoint, vec!["/rotor-init".to_string()]);
    }

    #[test]
    fn reads_the_webhook_dockerfile_on_distroless() {
        let text = std::fs::read_to_string(crate::tools::repo_root().join("Dockerfile.webhook"))
            .unwrap_or_default();
        let stage = final_stage(&text).unwrap_or_default();
        assert_eq!(stage.base, Base::DistrolessStatic);
        let dests: Vec<&str> = stage.copies.iter().map(|(_, d)| d.as_str()).collect();
        assert_eq!(dests, ["/rotor-webhook", "/rotor-reloader"]);
        assert_eq!(stage.config.entrypoint, vec!["/rotor-webhook".to_string()]);
        assert_eq!(stage.config.user.as_deref(), Some("65532:65532"));
    }

    #[test]
    fn refuses_what_it_cannot_mirror() {
        assert!(final_stage("FROM debian\nCOPY a b\n").is_err());
        assert!(final_stage("FROM scratch\nRUN true\n").is_err());
        assert!(final_stage("FROM scratch\nENTRYPOINT /x\n").is_err());
        assert!(final_stage("FROM scratch\nCOPY a b\n").is_err());
    }
}
