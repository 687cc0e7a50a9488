//! The workloads the reloader watches (Deployments, StatefulSets, DaemonSets), cached by
//! reflectors, and the patch that rolls one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ObjectReference, PodTemplateSpec};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Resource, ResourceExt as _};
use serde_json::json;

use crate::decision::{OBSERVED, ROTATED_AT, Versions};
use crate::references::{opted_in, watched_paths};

pub const FIELD_MANAGER: &str = "rotor-reloader";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
        }
    }
}

/// One watched workload, as the poll loop needs it.
#[derive(Clone, Debug)]
pub struct Workload {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub reference: ObjectReference,
    pub annotations: BTreeMap<String, String>,
    pub paths: BTreeSet<String>,
    /// The version of the object this was read from: every patch is conditional on it.
    pub resource_version: Option<String>,
}

/// How a conditional patch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patched {
    Applied,
    /// The object changed since it was read (another replica acted, or the cache was stale):
    /// nothing was written; decide again from a fresh read.
    Conflict,
}

impl Workload {
    pub fn key(&self) -> (Kind, String, String) {
        (self.kind, self.namespace.clone(), self.name.clone())
    }
}

/// Reflector caches of the three kinds.
pub struct Caches {
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    daemonsets: Store<DaemonSet>,
}

fn cache<K>(api: Api<K>) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|o: &mut K| o.meta_mut().managed_fields = None),
    );
    tokio::spawn(stream.for_each(|event| async move {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watch error (retrying with backoff)");
        }
    }));
    reader
}

impl Caches {
    /// Starts watching all namespaces (or one).
    pub fn start(client: &kube::Client, namespace: Option<&str>) -> Self {
        fn api<K>(client: &kube::Client, ns: Option<&str>) -> Api<K>
        where
            K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
            K::DynamicType: Default,
        {
            match ns {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            }
        }
        Self {
            deployments: cache(api(client, namespace)),
            statefulsets: cache(api(client, namespace)),
            daemonsets: cache(api(client, namespace)),
        }
    }

    pub async fn wait_ready(&self) {
        let _ = self.deployments.wait_until_ready().await;
        let _ = self.statefulsets.wait_until_ready().await;
        let _ = self.daemonsets.wait_until_ready().await;
    }

    /// Every opted-in workload with at least one watched path.
    pub fn workloads(&self, all: bool) -> Vec<Workload> {
        let mut out = Vec::new();
        collect(
            &mut out,
            Kind::Deployment,
            &self.deployments.state(),
            |d| d.spec.as_ref().map(|s| &s.template),
            all,
        );
        collect(
            &mut out,
            Kind::StatefulSet,
            &self.statefulsets.state(),
            |d| d.spec.as_ref().map(|s| &s.template),
            all,
        );
        collect(
            &mut out,
            Kind::DaemonSet,
            &self.daemonsets.state(),
            |d| d.spec.as_ref().map(|s| &s.template),
            all,
        );
        out
    }
}

fn collect<K: Resource<DynamicType = ()>>(
    out: &mut Vec<Workload>,
    kind: Kind,
    objects: &[Arc<K>],
    template: impl Fn(&K) -> Option<&PodTemplateSpec>,
    all: bool,
) {
    for object in objects {
        let Some(template) = template(object) else {
            continue;
        };
        let meta = object.meta();
        if meta.deletion_timestamp.is_some() {
            continue;
        }
        match opted_in(meta.annotations.as_ref(), template, all) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(kind = kind.as_str(), namespace = %object.namespace().unwrap_or_default(), name = %object.name_any(), error = %e, "the reload annotation does not parse; workload skipped");
                continue;
            }
        }
        let paths = match watched_paths(template) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(kind = kind.as_str(), namespace = %object.namespace().unwrap_or_default(), name = %object.name_any(), error = %e, "a reference does not parse; workload skipped");
                continue;
            }
        };
        if paths.is_empty() {
            continue;
        }
        out.push(Workload {
            kind,
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
            reference: object.object_ref(&()),
            annotations: meta.annotations.clone().unwrap_or_default(),
            paths,
            resource_version: meta.resource_version.clone(),
        });
    }
}

/// Patches the workload: records `versions`, and when `roll_at` is set, changes the pod
/// template annotation so the normal rolling update starts. One merge patch: the record and
/// the rollout land together or not at all. The patch carries the resourceVersion the decision
/// was made from, so the API server applies it only to that exact object: a replica that lost
/// its lease, or a decision from a stale cache, gets [`Patched::Conflict`] and writes nothing.
/// Exactly once is enforced there, not by timing.
pub async fn patch_workload(
    client: &kube::Client,
    workload: &Workload,
    versions: &Versions,
    roll_at: Option<&str>,
) -> Result<Patched, kube::Error> {
    let record = serde_json::to_string(versions).unwrap_or_else(|_| "{}".to_string());
    let mut body = json!({ "metadata": {
        "resourceVersion": workload.resource_version,
        "annotations": { OBSERVED: record },
    } });
    if let Some(at) = roll_at {
        body["spec"] = json!({ "template": { "metadata": { "annotations": { ROTATED_AT: at } } } });
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    let patch = Patch::Merge(&body);
    let ns = workload.namespace.as_str();
    let outcome = match workload.kind {
        Kind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(&workload.name, &params, &patch)
            .await
            .map(drop),
        Kind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch(&workload.name, &params, &patch)
            .await
            .map(drop),
        Kind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .patch(&workload.name, &params, &patch)
            .await
            .map(drop),
    };
    match outcome {
        Ok(()) => Ok(Patched::Applied),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Patched::Conflict),
        Err(e) => Err(e),
    }
}
