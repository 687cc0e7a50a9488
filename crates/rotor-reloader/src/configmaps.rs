//! The ConfigMaps pods take env from (`configMapKeyRef`, `envFrom`), watched when the webhook
//! finds references there (`--configmap-references`, the chart's `webhook.configMapReferences`),
//! so a reference that reaches a pod through a ConfigMap rolls its workload like a literal one.
//! Only the values that carry a reference are cached: a cluster's ConfigMaps cost their identity.
//! The reloader watches what the ConfigMap says now; a pod started before the ConfigMap changed
//! still reads what it said then, until its workload rolls.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, PodTemplateSpec};
use kube::api::Api;
use rotor_core::reference::has_reference;

use crate::kept::Kept;

pub struct ConfigMaps {
    store: Kept<ConfigMap>,
}

/// What the cache keeps of a ConfigMap: one with a value that carries a reference, as its
/// identity and those values.
fn keep(configmap: &mut ConfigMap) -> bool {
    let meta = &mut configmap.metadata;
    *meta = kube::api::ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        ..Default::default()
    };
    configmap.binary_data = None;
    configmap.immutable = None;
    if let Some(data) = configmap.data.as_mut() {
        data.retain(|_, value| has_reference(value));
    }
    if configmap.data.as_ref().is_some_and(BTreeMap::is_empty) {
        configmap.data = None;
    }
    configmap.data.is_some()
}

impl ConfigMaps {
    /// Starts watching ConfigMaps in all namespaces (or one).
    pub fn start(client: &kube::Client, namespace: Option<&str>) -> Self {
        let api = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        Self {
            store: Kept::start(api, keep),
        }
    }

    pub async fn wait_ready(&self) {
        self.store.wait_until_ready().await;
    }

    fn get(&self, namespace: &str, name: &str) -> Option<std::sync::Arc<ConfigMap>> {
        self.store.get(namespace, name)
    }

    /// The env `container` takes from ConfigMaps in `namespace` that carries references, as
    /// (variable, value): a `configMapKeyRef` under its variable's name, an `envFrom` entry under
    /// its key with the source's prefix. A missing ConfigMap or key gives nothing (the kubelet
    /// reports it).
    pub fn env_of(&self, namespace: &str, container: &Container) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for var in container.env.iter().flatten() {
            let Some(r) = var
                .value_from
                .as_ref()
                .and_then(|v| v.config_map_key_ref.as_ref())
            else {
                continue;
            };
            if let Some(value) = self
                .get(namespace, &r.name)
                .and_then(|cm| cm.data.as_ref()?.get(&r.key).cloned())
            {
                out.push((var.name.clone(), value));
            }
        }
        for source in container.env_from.iter().flatten() {
            let Some(r) = source.config_map_ref.as_ref() else {
                continue;
            };
            let prefix = source.prefix.as_deref().unwrap_or_default();
            if let Some(cm) = self.get(namespace, &r.name) {
                out.extend(
                    cm.data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (format!("{prefix}{k}"), v.clone())),
                );
            }
        }
        out
    }

    /// The versions of the ConfigMaps `template` reads in `namespace`: what its parse depends on
    /// besides its generation (empty when it reads none).
    pub fn fingerprint(&self, namespace: &str, template: &PodTemplateSpec) -> String {
        let mut out = String::new();
        let containers = template
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers));
        for container in containers {
            for (name, _) in rotor_runtime::configmap_sources(container) {
                let version = self
                    .get(namespace, &name)
                    .and_then(|cm| cm.metadata.resource_version.clone())
                    .unwrap_or_default();
                out.push_str(&format!("{name}={version};"));
            }
        }
        out
    }
}

/// Whether `template` takes env from any ConfigMap.
pub fn reads_configmaps(template: &PodTemplateSpec) -> bool {
    template.spec.iter().any(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(&s.containers)
            .any(|c| !rotor_runtime::configmap_sources(c).is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_configmap_is_kept_as_its_identity_and_its_referencing_values() {
        let mut cm: ConfigMap = serde_json::from_value(json!({
            "metadata": { "name": "app", "namespace": "shop", "resourceVersion": "3", "labels": { "a": "b" } },
            "data": { "DB": "vault:secret/db#password", "BIG": "x".repeat(100_000), "URL": "https://${vault:secret/api#host}/" },
            "binaryData": { "blob": "AAAA" }
        }))
        .unwrap();
        assert!(keep(&mut cm));
        assert_eq!(
            serde_json::to_value(&cm).unwrap(),
            json!({ "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "app", "namespace": "shop", "resourceVersion": "3" },
                "data": { "DB": "vault:secret/db#password", "URL": "https://${vault:secret/api#host}/" } })
        );
        let mut plain: ConfigMap =
            serde_json::from_value(json!({ "metadata": { "name": "p" }, "data": { "A": "1" } }))
                .unwrap();
        assert!(!keep(&mut plain), "no reference: not kept");
    }
}
