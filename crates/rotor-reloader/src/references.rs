//! Which workloads the reloader watches, and which store paths each one depends on.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use rotor_core::contract::annotations::{self, get_bool};
use rotor_core::contract::workload::WorkloadError;
use rotor_core::contract::{ContainerEnv, StoreChoice, workload_references};

/// Whether a workload opted in: `rotor.dev/reload` true on the workload or its pod template
/// (the workload's own annotation first), or every workload with references when `all` is set.
/// False always opts out. A value that is not a boolean (the webhook's dialect) is an error
/// naming the annotation.
pub fn opted_in(
    workload_annotations: Option<&BTreeMap<String, String>>,
    template: &PodTemplateSpec,
    all: bool,
) -> Result<bool, rotor_core::contract::SettingError> {
    let template_annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref());
    for found in [workload_annotations, template_annotations]
        .into_iter()
        .flatten()
    {
        if let Some(choice) = get_bool(found, &annotations::RELOAD)? {
            return Ok(choice);
        }
    }
    Ok(all)
}

/// What a pod template makes the reloader watch: the paths its pods read at their current
/// version, on the store they read them from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watched {
    pub paths: BTreeSet<String>,
    pub store: StoreChoice,
    pub on_rotation: rotor_core::contract::OnRotation,
}

/// The store paths a pod template reads at their current version: env values (whole and
/// inline) and the from-path annotation, read by rotor-core's workload model as the webhook
/// reads them. Pinned versions and `>>` writes never roll.
pub fn watched_paths(template: &PodTemplateSpec) -> Result<BTreeSet<String>, WorkloadError> {
    watched(template).map(|w| w.paths)
}

/// The paths a pod template reads and the store it reads them from (its own
/// `rotor.dev/vault-addr` and namespace annotations, as the webhook honours them).
pub fn watched(template: &PodTemplateSpec) -> Result<Watched, WorkloadError> {
    watched_with(template, |_| Vec::new())
}

/// [`watched`], with the env each container takes from ConfigMaps (`(variable, value)`, as
/// `from_configmaps` finds it) read like its literal env.
pub fn watched_with(
    template: &PodTemplateSpec,
    from_configmaps: impl Fn(&Container) -> Vec<(String, String)>,
) -> Result<Watched, WorkloadError> {
    let Some(spec) = template.spec.as_ref() else {
        return Ok(Watched::default());
    };
    let annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .unwrap_or(&NO_ANNOTATIONS);
    let all = || {
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
    };
    let sourced: Vec<Vec<(String, String)>> = all().map(&from_configmaps).collect();
    let containers: Vec<ContainerEnv<'_>> = all()
        .zip(&sourced)
        .map(|(container, sourced)| {
            let mut env = rotor_runtime::container_env(container);
            env.env
                .extend(sourced.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            env
        })
        .collect();
    let references = workload_references(annotations, &containers)?;
    Ok(Watched {
        paths: references.watched_paths,
        store: references.store,
        on_rotation: references.on_rotation,
    })
}

static NO_ANNOTATIONS: BTreeMap<String, String> = BTreeMap::new();

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
    fn the_table_of_shapes_decides_what_is_watched() {
        use rotor_core::reference::{Shape, shape_cases};
        for (value, shape) in shape_cases() {
            let t = template(
                serde_json::json!({ "spec": { "containers": [{ "name": "a", "env": [
                { "name": "V", "value": value },
            ]}] } }),
            );
            let watched = watched_paths(&t);
            // Reads at the current version are watched; pinned reads and writes never roll.
            let unpinned_reads = |value: &str| -> BTreeSet<String> {
                let template = rotor_core::reference::parse_value("V", value)
                    .unwrap()
                    .unwrap();
                let references = template.references();
                references
                    .into_iter()
                    .filter(|r| !r.is_write() && !r.is_pinned())
                    .map(|r| r.path.clone())
                    .collect()
            };
            match shape {
                Shape::Whole | Shape::Inline => {
                    assert_eq!(watched.unwrap(), unpinned_reads(value), "{value:?}")
                }
                Shape::Plain => assert!(watched.unwrap().is_empty(), "{value:?}"),
                Shape::Refused => assert!(watched.is_err(), "{value:?}"),
            }
        }
    }

    #[test]
    fn opt_in_on_the_workload_or_the_template_and_opt_out_wins() {
        let reload = |v: &str| BTreeMap::from([("rotor.dev/reload".to_string(), v.to_string())]);
        let plain = template(serde_json::json!({ "spec": { "containers": [] } }));
        let annotated = template(
            serde_json::json!({ "metadata": { "annotations": { "rotor.dev/reload": "yes" } }, "spec": { "containers": [] } }),
        );
        assert_eq!(opted_in(Some(&reload("true")), &plain, false), Ok(true));
        assert_eq!(
            opted_in(Some(&reload("1")), &plain, false),
            Ok(true),
            "the webhook's dialect"
        );
        assert_eq!(opted_in(None, &annotated, false), Ok(true));
        assert_eq!(opted_in(None, &plain, false), Ok(false));
        assert_eq!(opted_in(None, &plain, true), Ok(true));
        assert_eq!(
            opted_in(Some(&reload("false")), &annotated, true),
            Ok(false)
        );
        let err = opted_in(Some(&reload("sure")), &plain, true).unwrap_err();
        assert_eq!(err.setting, "rotor.dev/reload");
        assert!(err.message.contains("rotor.dev/reload=\"sure\""), "{err}");
    }
}
