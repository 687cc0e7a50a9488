//! Which workloads the reloader watches, and which store paths each one depends on.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::PodTemplateSpec;
use rotor_core::reference::{ParseError, parse_from_path, parse_value};

pub const RELOAD: &str = "rotor.dev/reload";
pub const FROM_PATH: &str = "rotor.dev/from-path";
const BANK_VAULTS_FROM_PATH: &[&str] = &[
    "vault.security.banzaicloud.io/vault-env-from-path",
    "secrets-webhook.security.bank-vaults.io/vault-env-from-path",
];

/// Whether a workload opted in: `rotor.dev/reload: "true"` on the workload or its pod template,
/// or every workload with references when `all` is set. `"false"` always opts out.
pub fn opted_in(
    workload_annotations: Option<&BTreeMap<String, String>>,
    template: &PodTemplateSpec,
    all: bool,
) -> bool {
    let template_annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref());
    let value = workload_annotations
        .and_then(|a| a.get(RELOAD))
        .or_else(|| template_annotations.and_then(|a| a.get(RELOAD)))
        .map(|v| v.trim().to_ascii_lowercase());
    match value.as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => all,
    }
}

/// The store paths a pod template reads at their current version: env values (whole and
/// inline) and the from-path annotation. Pinned versions and `>>` writes never roll.
pub fn watched_paths(template: &PodTemplateSpec) -> Result<BTreeSet<String>, ParseError> {
    let mut paths = BTreeSet::new();
    let Some(spec) = template.spec.as_ref() else {
        return Ok(paths);
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for container in containers {
        for env in container.env.iter().flatten() {
            let Some(value) = env.value.as_deref() else {
                continue;
            };
            if let Some(template) = parse_value(&env.name, value)? {
                for r in template.references() {
                    if !r.is_write() && r.pinned_version().is_none() {
                        paths.insert(r.path.clone());
                    }
                }
            }
        }
    }
    let annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref());
    if let Some(annotations) = annotations {
        for key in std::iter::once(&FROM_PATH).chain(BANK_VAULTS_FROM_PATH) {
            if let Some(list) = annotations.get(*key) {
                for p in parse_from_path(key, list)? {
                    if p.version.is_none() {
                        paths.insert(p.path);
                    }
                }
            }
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(value: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn pinned_and_written_references_are_not_watched() {
        let t = template(serde_json::json!({
            "metadata": { "annotations": { "rotor.dev/from-path": "secret/data/all,secret/data/pinned#3" } },
            "spec": { "containers": [{ "name": "a", "env": [
                { "name": "A", "value": "vault:secret/data/db#password" },
                { "name": "B", "value": "x ${bao:secret/data/api#key} y" },
                { "name": "C", "value": "vault:secret/data/old#k#2" },
                { "name": "D", "value": ">>vault:database/creds/app#username" },
                { "name": "E", "value": "http://vault:8200" },
            ]}], "initContainers": [{ "name": "i", "env": [{ "name": "F", "value": "vault:kv/init#x" }] }] }
        }));
        let paths: Vec<String> = watched_paths(&t).unwrap().into_iter().collect();
        assert_eq!(
            paths,
            vec![
                "kv/init",
                "secret/data/all",
                "secret/data/api",
                "secret/data/db"
            ]
        );
    }

    #[test]
    fn opt_in_on_the_workload_or_the_template_and_opt_out_wins() {
        let yes = BTreeMap::from([(RELOAD.to_string(), "true".to_string())]);
        let no = BTreeMap::from([(RELOAD.to_string(), "false".to_string())]);
        let plain = template(serde_json::json!({ "spec": { "containers": [] } }));
        let annotated = template(
            serde_json::json!({ "metadata": { "annotations": { RELOAD: "true" } }, "spec": { "containers": [] } }),
        );
        assert!(opted_in(Some(&yes), &plain, false));
        assert!(opted_in(None, &annotated, false));
        assert!(!opted_in(None, &plain, false));
        assert!(opted_in(None, &plain, true));
        assert!(!opted_in(Some(&no), &plain, true));
    }
}
