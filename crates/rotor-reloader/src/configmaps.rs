//! The ConfigMaps pods take env from (`configMapKeyRef`, `envFrom`), watched when the webhook
//! finds references there (`--configmap-references`, the chart's `webhook.configMapReferences`),
//! so a reference that reaches a pod through a ConfigMap rolls its workload like a literal one.
//! Only ConfigMaps with a value that carries a reference are kept, and of those only the ones a
//! kept workload reads hold their values: any other costs its identity, whatever its size (a
//! namespace full of large reference-like ConfigMaps no workload reads costs nothing more). A
//! ConfigMap a workload starts to read is read once with a GET, then kept by the watch.
//! The reloader watches what the ConfigMap says now; a pod started before the ConfigMap changed
//! still reads what it said then, until its workload rolls.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, PodTemplateSpec};
use kube::api::Api;
use rotor_core::reference::has_reference;

use crate::kept::Kept;

type Names = HashSet<(String, String)>;

/// How long the GET of a ConfigMap a workload starts to read may take (it is tried again at the
/// next poll).
const READ_TIME: Duration = Duration::from_secs(10);

pub struct ConfigMaps {
    /// Kept ConfigMaps; one whose `data` is `None` carries references whose values are held back
    /// because no kept workload read it at the last poll.
    store: Kept<ConfigMap>,
    client: kube::Client,
    /// The ConfigMaps kept workloads read (the last poll's, and this one's so far).
    read: Arc<RwLock<Names>>,
    /// The ConfigMaps this poll's workloads read so far.
    read_now: Mutex<Names>,
    /// GETs in flight, at most one per ConfigMap.
    reading: Arc<Mutex<Names>>,
}

/// What the reloader keeps of a ConfigMap at most: its identity and the values that carry a
/// reference (false when none does: not kept at all).
fn reduce(configmap: &mut ConfigMap) -> bool {
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

fn name_of(configmap: &ConfigMap) -> (String, String) {
    let meta = &configmap.metadata;
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Whether the watch keeps a ConfigMap as it arrives ([`reduce`]), its values only when a kept
/// workload reads it.
fn keep(configmap: &mut ConfigMap, read: &RwLock<Names>) -> bool {
    if !reduce(configmap) {
        return false;
    }
    let is_read = read
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&name_of(configmap));
    if !is_read {
        configmap.data = None;
    }
    true
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConfigMaps {
    /// Starts watching ConfigMaps in all namespaces (or one).
    pub fn start(client: &kube::Client, namespace: Option<&str>) -> Self {
        let api = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let read: Arc<RwLock<Names>> = Arc::default();
        let judged = read.clone();
        Self {
            store: Kept::start(api, move |cm| keep(cm, &judged)),
            client: client.clone(),
            read,
            read_now: Mutex::default(),
            reading: Arc::default(),
        }
    }

    pub async fn wait_ready(&self) {
        self.store.wait_until_ready().await;
    }

    fn get(&self, namespace: &str, name: &str) -> Option<std::sync::Arc<ConfigMap>> {
        self.store.get(namespace, name)
    }

    /// Notes that a kept workload reads `namespace/name`, and when its values are held back,
    /// reads them (in the background: the workload is parsed again when they arrive).
    fn note_read(&self, namespace: &str, name: &str, held: Option<&ConfigMap>) {
        let key = (namespace.to_string(), name.to_string());
        lock(&self.read_now).insert(key.clone());
        self.read
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        if held.is_none_or(|cm| cm.data.is_some()) || !lock(&self.reading).insert(key.clone()) {
            return;
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let (store, reading) = (self.store.clone(), self.reading.clone());
        tokio::spawn(async move {
            let got = tokio::time::timeout(READ_TIME, api.get_opt(&key.1)).await;
            match got.map(|r| r.map(|cm| cm.map(|mut cm| (reduce(&mut cm), cm)))) {
                Ok(Ok(Some((true, cm)))) => {
                    // Only over the version the watch holds: a newer one from the watch
                    // already carries the values (the ConfigMap is read now).
                    store.change(&key.0, &key.1, |held| {
                        (held.data.is_none()
                            && held.metadata.resource_version == cm.metadata.resource_version)
                            .then(|| cm.clone())
                    });
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(namespace = %key.0, configmap = %key.1, error = %e, "reading a ConfigMap a workload reads failed (tried again at the next poll)");
                }
                Err(_) => {
                    tracing::warn!(namespace = %key.0, configmap = %key.1, "reading a ConfigMap a workload reads took more than 10 s (tried again at the next poll)");
                }
            }
            lock(&reading).remove(&key);
        });
    }

    /// Ends a poll: the ConfigMaps its workloads did not read give up their values. Returns how
    /// many ConfigMaps are kept and the bytes of values they hold.
    pub fn end_poll(&self) -> (usize, usize) {
        let read_now = std::mem::take(&mut *lock(&self.read_now));
        let kept = self.store.state();
        let mut bytes = 0;
        for cm in &kept {
            let key = name_of(cm);
            if cm.data.is_some() && !read_now.contains(&key) {
                self.store.change(&key.0, &key.1, |held| {
                    let mut identity = held.clone();
                    identity.data = None;
                    Some(identity)
                });
            } else if let Some(data) = &cm.data {
                bytes += data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
            }
        }
        *self.read.write().unwrap_or_else(|e| e.into_inner()) = read_now;
        (kept.len(), bytes)
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
    /// besides its generation (empty when it reads none). Called for every kept workload at
    /// every poll, it also notes which ConfigMaps they read.
    pub fn fingerprint(&self, namespace: &str, template: &PodTemplateSpec) -> String {
        let mut out = String::new();
        let containers = template
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers));
        for container in containers {
            for (name, _) in rotor_runtime::configmap_sources(container) {
                let held = self.get(namespace, &name);
                self.note_read(namespace, &name, held.as_deref());
                let version = held
                    .as_ref()
                    .and_then(|cm| cm.metadata.resource_version.clone())
                    .unwrap_or_default();
                // Values held back (being read) parse as nothing: parsed again when they arrive.
                let waiting = if held.is_some_and(|cm| cm.data.is_none()) {
                    "?"
                } else {
                    ""
                };
                out.push_str(&format!("{name}={version}{waiting};"));
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
        assert!(reduce(&mut cm));
        assert_eq!(
            serde_json::to_value(&cm).unwrap(),
            json!({ "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "app", "namespace": "shop", "resourceVersion": "3" },
                "data": { "DB": "vault:secret/db#password", "URL": "https://${vault:secret/api#host}/" } })
        );
        let mut plain: ConfigMap =
            serde_json::from_value(json!({ "metadata": { "name": "p" }, "data": { "A": "1" } }))
                .unwrap();
        assert!(!reduce(&mut plain), "no reference: not kept");
        let read = RwLock::new(Names::new());
        let mut unread = cm.clone();
        assert!(keep(&mut unread, &read), "kept as its identity");
        assert_eq!(unread.data, None, "values held back: no workload reads it");
        read.write()
            .unwrap()
            .insert(("shop".to_string(), "app".to_string()));
        let mut read_one = cm.clone();
        assert!(keep(&mut read_one, &read));
        assert_eq!(read_one.data, cm.data, "a workload reads it: values held");
    }
}
