//! A watch cache that holds only the objects worth keeping. A reflector's store holds every
//! object of a kind, and even an object stripped of its spec costs the whole struct (a
//! Deployment's inline spec and status types are kilobytes): at 50,000 Deployments that is
//! most of the reloader's memory. Here each object is judged as it arrives (`keep` may also
//! reduce it); one not kept costs nothing, and an update that stops an object being kept removes
//! it. Each watch event carries the whole object, so an object that becomes worth keeping is
//! kept from that event on.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt as _;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Resource, ResourceExt as _};

type Objects<K> = HashMap<(String, String), Arc<K>>;

/// The kept objects of one kind, by (namespace, name).
pub struct Kept<K> {
    objects: Arc<RwLock<Objects<K>>>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl<K> Clone for Kept<K> {
    fn clone(&self) -> Self {
        Self {
            objects: self.objects.clone(),
            ready: self.ready.clone(),
        }
    }
}

fn key<K: Resource>(object: &K) -> (String, String) {
    (object.namespace().unwrap_or_default(), object.name_any())
}

impl<K> Kept<K>
where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Default,
{
    /// Watches `api` (relisting with backoff after errors) and keeps the objects `keep` says to.
    pub fn start(api: Api<K>, keep: impl Fn(&mut K) -> bool + Send + 'static) -> Self {
        let objects: Arc<RwLock<Objects<K>>> = Arc::default();
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let shared = objects.clone();
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            // A relist builds the new set beside the old, which serves until it is complete.
            let mut relisted: Option<Objects<K>> = None;
            while let Some(event) = stream.next().await {
                let objects = || shared.write().unwrap_or_else(|e| e.into_inner());
                match event {
                    Ok(Event::Init) => relisted = Some(HashMap::new()),
                    Ok(Event::InitApply(mut object)) => {
                        if keep(&mut object) {
                            relisted
                                .get_or_insert_default()
                                .insert(key(&object), Arc::new(object));
                        }
                    }
                    Ok(Event::InitDone) => {
                        *objects() = relisted.take().unwrap_or_default();
                        let _ = ready_tx.send(true);
                    }
                    Ok(Event::Apply(mut object)) => {
                        let k = key(&object);
                        if keep(&mut object) {
                            objects().insert(k, Arc::new(object));
                        } else {
                            objects().remove(&k);
                        }
                    }
                    Ok(Event::Delete(object)) => {
                        objects().remove(&key(&object));
                    }
                    Err(e) => tracing::warn!(error = %e, "watch error (retrying with backoff)"),
                }
            }
        });
        Self { objects, ready }
    }
}

impl<K> Kept<K> {
    /// Every kept object.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The kept object `namespace/name`, if any.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Replaces the kept object `namespace/name` with what `change` makes of it (nothing when it
    /// returns `None`, or when no such object is kept).
    pub fn change(&self, namespace: &str, name: &str, change: impl FnOnce(&K) -> Option<K>) {
        let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), name.to_string());
        if let Some(changed) = objects.get(&key).and_then(|kept| change(kept)) {
            objects.insert(key, Arc::new(changed));
        }
    }

    /// Waits for the first complete list.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }
}
