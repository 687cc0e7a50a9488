//! References that reach a container through ConfigMaps (`valueFrom.configMapKeyRef`,
//! `envFrom.configMapRef`). The kubelet puts the literal `vault:` value into the environment
//! and rotor-init resolves it; the webhook only has to know the container needs wrapping.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use rotor_core::reference::{has_reference, parse_value};
use rotor_runtime::configmap_sources;

/// Names of the containers whose ConfigMap-sourced env carries references. A reference that does
/// not parse is an error naming the ConfigMap and key.
pub async fn containers_with_configmap_references(
    kube: &kube::Client,
    pod: &Pod,
) -> Result<HashSet<String>, String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(HashSet::new());
    };
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(kube.clone(), &ns);
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
