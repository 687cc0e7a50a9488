//! References that reach a container through ConfigMaps (`valueFrom.configMapKeyRef`,
//! `envFrom.configMapRef`). The kubelet puts the literal `vault:` value into the environment
//! and rotor-init resolves it; the webhook only has to know the container needs wrapping.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use rotor_core::reference::{has_reference, parse_value};
use rotor_runtime::configmap_sources;

/// ConfigMaps one review may read (each distinct name once).
pub const MAX_CONFIGMAPS_PER_REVIEW: usize = 32;
/// Bytes of ConfigMap data one review may hold (a ConfigMap holds up to 1 MiB).
pub const MAX_CONFIGMAP_BYTES_PER_REVIEW: usize = 4 * 1024 * 1024;

/// Names of the containers whose ConfigMap-sourced env carries references, reading the
/// ConfigMaps of `namespace` (the review request's, where the pod is created: never the
/// namespace the pod object names). A reference that does not parse is an error naming the
/// ConfigMap and key. At most [`MAX_CONFIGMAPS_PER_REVIEW`] ConfigMaps and
/// [`MAX_CONFIGMAP_BYTES_PER_REVIEW`] bytes of their data per review: more refuses the pod,
/// naming the limit.
pub async fn containers_with_configmap_references(
    kube: &kube::Client,
    namespace: &str,
    pod: &Pod,
) -> Result<HashSet<String>, String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(HashSet::new());
    };
    if namespace.is_empty() {
        return Ok(HashSet::new());
    }
    let ns = namespace;
    let api: Api<ConfigMap> = Api::namespaced(kube.clone(), ns);
    let mut held = 0usize;
    let mut cache: HashMap<String, Option<BTreeMap<String, String>>> = HashMap::new();
    let mut found = HashSet::new();
    for container in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        for (configmap, key) in configmap_sources(container) {
            if !cache.contains_key(&configmap) {
                if cache.len() >= MAX_CONFIGMAPS_PER_REVIEW {
                    return Err(format!(
                        "container {:?}: the pod's env reads more than {MAX_CONFIGMAPS_PER_REVIEW} ConfigMaps, which rotor reads at most per pod to find references; put the references in fewer ConfigMaps or in the pod's env",
                        container.name
                    ));
                }
                let data = api
                    .get_opt(&configmap)
                    .await
                    .map_err(|e| {
                        format!(
                            "reading ConfigMap {ns}/{configmap} (used by container {:?}): {e}",
                            container.name
                        )
                    })?
                    .and_then(|cm| cm.data);
                held += data.as_ref().map_or(0, |d| {
                    d.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                });
                if held > MAX_CONFIGMAP_BYTES_PER_REVIEW {
                    return Err(format!(
                        "container {:?}: the ConfigMaps the pod's env reads hold more than {} MiB together (at ConfigMap {ns}/{configmap}), more than rotor reads per pod to find references; put the references in smaller ConfigMaps or in the pod's env",
                        container.name,
                        MAX_CONFIGMAP_BYTES_PER_REVIEW >> 20
                    ));
                }
                cache.insert(configmap.clone(), data);
            }
            // A missing ConfigMap is the kubelet's to report; nothing to wrap for it here.
            let Some(Some(data)) = cache.get(&configmap) else {
                continue;
            };
            let entries: Vec<(&String, &String)> = match &key {
                Some(k) => data.get_key_value(k).into_iter().collect(),
                None => data.iter().collect(),
            };
            for (k, value) in entries {
                if has_reference(value) {
                    let source = format!("{k} of ConfigMap {ns}/{configmap}");
                    parse_value(&source, value)
                        .map_err(|e| format!("container {:?}: {e}", container.name))?;
                    found.insert(container.name.clone());
                }
            }
        }
    }
    Ok(found)
}
