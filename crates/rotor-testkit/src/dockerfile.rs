//! Reads the final stage of one of rotor's Dockerfiles, so the images the tests push have the
//! layout, entrypoint and user the Dockerfile describes (there is no Docker engine to build it).
//!
//! Only what rotor's Dockerfiles use is understood: `FROM scratch`, `COPY --from=STAGE SRC DST`,
//! `USER`, `ENTRYPOINT` and `CMD` in JSON form. Anything else in the final stage is an error, so
//! a Dockerfile change that the tests cannot mirror fails loudly instead of being ignored.

use anyhow::{Context, Result, bail};

use crate::registry::ImageConfig;

/// What the final stage of a Dockerfile puts in the image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinalStage {
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
    let base = lines[start].trim_start_matches("FROM ").trim();
    if base != "scratch" {
        bail!("final stage FROM {base}: only `FROM scratch` images can be assembled here");
    }
    let mut stage = FinalStage::default();
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
    fn refuses_what_it_cannot_mirror() {
        assert!(final_stage("FROM debian\nCOPY a b\n").is_err());
        assert!(final_stage("FROM scratch\nRUN true\n").is_err());
        assert!(final_stage("FROM scratch\nENTRYPOINT /x\n").is_err());
        assert!(final_stage("FROM scratch\nCOPY a b\n").is_err());
    }
}
