//! `rotor-webhook inject -f FILE`: the same planner, offline, over manifests (Pods and the pod
//! templates of Deployments, StatefulSets, DaemonSets, Jobs and CronJobs), like
//! `istioctl kube-inject`. Other documents pass through unchanged.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize as _;
use serde_json::Value;

use crate::config::InjectConfig;
use crate::plan::{Plan, plan_mutation};

#[derive(Clone, Debug, clap::Args)]
pub struct InjectArgs {
    /// The manifest file (YAML, several documents allowed); `-` reads stdin.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    #[command(flatten)]
    pub inject: InjectConfig,
}

impl InjectArgs {
    pub fn run(self) -> Result<()> {
        let Self { file, inject } = self;
        let mut text = String::new();
        if file.as_os_str() == "-" {
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
        } else {
            text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
        }
        print!("{}", inject_manifests(&text, &inject.validated()?)?);
        Ok(())
    }
}

/// Mutates every pod and pod template in the YAML stream `text`.
pub fn inject_manifests(text: &str, config: &InjectConfig) -> Result<String> {
    let mut out = String::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let mut doc = Value::deserialize(document)
            .with_context(|| format!("document {}: not valid YAML", i + 1))?;
        if doc.is_null() {
            continue;
        }
        inject_document(&mut doc, config)
            .with_context(|| format!("document {} ({})", i + 1, describe(&doc)))?;
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&doc).context("writing YAML")?);
    }
    Ok(out)
}

fn describe(doc: &Value) -> String {
    format!(
        "{} {}",
        doc["kind"].as_str().unwrap_or("<no kind>"),
        doc["metadata"]["name"].as_str().unwrap_or("<no name>")
    )
}

fn inject_document(doc: &mut Value, config: &InjectConfig) -> Result<()> {
    let namespace = doc["metadata"]["namespace"].clone();
    let pointer = match doc["kind"].as_str() {
        Some("Pod") => "",
        Some("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job") => "/spec/template",
        Some("CronJob") => "/spec/jobTemplate/spec/template",
        _ => return Ok(()),
    };
    let Some(target) = doc.pointer_mut(pointer) else {
        bail!("no pod template at {pointer}");
    };
    let mut as_pod = target.clone();
    if as_pod["metadata"]["namespace"].is_null() {
        as_pod["metadata"]["namespace"] = namespace;
    }
    let pod: Pod = serde_json::from_value(as_pod).context("the pod (template) does not parse")?;
    match plan_mutation(&pod, config).map_err(|d| anyhow::anyhow!("{d}"))? {
        Plan::Unchanged(_) => {}
        Plan::Patch(patch) => {
            json_patch::patch(target, &patch.to_json_patch().context("reading the patch")?)
                .context("applying the patch")?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injects_pods_and_every_workload_template() {
        let config = InjectConfig {
            default_addr: Some("https://vault:8200".into()),
            ..InjectConfig::default()
        };
        let container = r#"{"name": "app", "image": "app:1", "command": ["/app"], "env": [{"name": "A", "value": "vault:secret/data/a#k"}]}"#;
        let template = format!(
            r#"{{"metadata": {{"labels": {{"app": "x"}}}}, "spec": {{"containers": [{container}]}}}}"#
        );
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{containers: [{container}]}}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec: {{template: {template}}}\n---\n\
             apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: c}}\nspec: {{jobTemplate: {{spec: {{template: {template}}}}}}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm}}\ndata: {{a: b}}\n"
        );
        let out = inject_manifests(&text, &config).unwrap();
        assert_eq!(out.matches("/rotor/bin/rotor-init").count(), 3, "{out}");
        assert!(out.contains("kind: ConfigMap"));
        // Idempotent offline too.
        assert_eq!(inject_manifests(&out, &config).unwrap(), out);
    }

    #[test]
    fn files_annotations_work_offline_too() {
        let config = InjectConfig {
            default_addr: Some("https://vault:8200".into()),
            ..InjectConfig::default()
        };
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    \
                    metadata:\n      annotations:\n        rotor.dev/file.db.conf: 'pw=${vault:secret/data/db#pw}'\n    \
                    spec: {containers: [{name: app, image: 'app:1', command: [/app]}]}\n";
        let out = inject_manifests(text, &config).unwrap();
        assert!(out.contains("/rotor/bin/rotor-init"), "{out}");
        assert!(
            out.contains("metadata.annotations['rotor.dev/file.db.conf']"),
            "{out}"
        );
        assert!(
            out.contains("rotor-files-0") && out.contains("ROTOR_FILES"),
            "{out}"
        );
        assert_eq!(inject_manifests(&out, &config).unwrap(), out);
    }

    #[test]
    fn image_volume_injection_works_offline_too() {
        let config = InjectConfig {
            default_addr: Some("https://vault:8200".into()),
            init_binary_source: rotor_core::contract::BinarySource::ImageVolume,
            ..InjectConfig::default()
        };
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    \
                    spec: {containers: [{name: app, image: 'app:1', command: [/app], env: [{name: A, value: 'vault:secret/data/a#k'}]}]}\n";
        let out = inject_manifests(text, &config).unwrap();
        assert!(out.contains("/rotor/bin/rotor-init"), "{out}");
        assert!(
            out.contains("reference: ghcr.io/rotor-dev/rotor-init:0.1.0"),
            "{out}"
        );
        assert!(!out.contains("initContainers"), "{out}");
        assert_eq!(inject_manifests(&out, &config).unwrap(), out);
    }

    #[test]
    fn errors_name_the_document() {
        let config = InjectConfig::default();
        let text = "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: a, env: [{name: A, value: 'vault:x/y'}]}]}\n";
        let err = format!("{:#}", inject_manifests(text, &config).unwrap_err());
        assert!(
            err.contains("document 1 (Pod p)") && err.contains("env A"),
            "{err}"
        );
    }
}
