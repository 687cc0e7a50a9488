//! The workloads the reloader watches (Deployments, StatefulSets, DaemonSets), cached by
//! reflectors, and the patch that rolls one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ObjectReference, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt as _};
use rotor_core::contract::workload::WorkloadError;
use rotor_core::contract::{OnRotation, StoreChoice};
use serde_json::json;

use crate::configmaps::{ConfigMaps, reads_configmaps};
use crate::decision::{OBSERVED, ROTATED_AT, Versions};
use crate::kept::Kept;
use crate::references::{Watched, opted_in, watched, watched_with};
use crate::tenancy::WatchablePaths;

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
    /// The store its pods read from, as annotated (`None`: the default).
    pub store: StoreChoice,
    /// When its pods' template last changed, as far as the object tells: the latest of its
    /// creation, rotor's and kubectl's restart annotations on the template, and (Deployments)
    /// the Progressing condition's last update.
    pub started_at: Option<k8s_openapi::jiff::Timestamp>,
    /// Paths it references that its namespace may not have watched (`--watchable-paths`).
    pub not_watched: Vec<String>,
    /// The object's uid and generation: what an announcement about its template is keyed by.
    pub uid: String,
    pub generation: i64,
    /// The version of the object this was read from: every patch is conditional on it.
    pub resource_version: Option<String>,
    /// `rotor.dev/on-rotation` of its pod template.
    pub on_rotation: OnRotation,
    /// Its pods' label selector, as the API's `labelSelector` parameter spells it.
    pub selector: Option<String>,
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
    deployments: Kept<Deployment>,
    statefulsets: Kept<StatefulSet>,
    daemonsets: Kept<DaemonSet>,
    /// Watched when references may come from ConfigMaps (`--configmap-references`).
    configmaps: Option<ConfigMaps>,
    parsed: Mutex<ParsedTemplates>,
}

/// The watched paths of each pod template (or why they cannot be read), parsed once per object
/// uid and generation (and versions of the ConfigMaps it reads): a template changes only with a
/// new generation, so a poll parses only what changed, and a template that does not parse is
/// warned about once, not on every poll.
type ParsedTemplates = HashMap<(String, i64), (String, Arc<Result<Watched, WorkloadError>>)>;

/// A workload kind whose pods come from a template.
trait Templated: Resource {
    fn pod_template(&self) -> Option<&PodTemplateSpec>;
}

macro_rules! templated {
    ($($kind:ty),*) => {$(
        impl Templated for $kind {
            fn pod_template(&self) -> Option<&PodTemplateSpec> {
                self.spec.as_ref().map(|s| &s.template)
            }
        }
    )*};
}
templated!(Deployment, StatefulSet, DaemonSet);

/// Whether the cache keeps a workload as it arrives: only one whose template references a
/// secret, takes env from ConfigMaps, or has a reference that does not parse (so the poll warns
/// about it), without its managed fields. The rest of a cluster costs nothing, so memory
/// follows rotor's workloads, not the cluster's ([`Kept`]).
fn keep<K: Templated>(object: &mut K) -> bool {
    object.meta_mut().managed_fields = None;
    object
        .pod_template()
        .is_some_and(|t| reads_configmaps(t) || !watched(t).is_ok_and(|w| w.paths.is_empty()))
}

impl Caches {
    /// Starts watching all namespaces (or one), and their ConfigMaps when `configmap_references`.
    pub fn start(
        client: &kube::Client,
        namespace: Option<&str>,
        configmap_references: bool,
    ) -> Self {
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
            deployments: Kept::start(api(client, namespace), keep::<Deployment>),
            statefulsets: Kept::start(api(client, namespace), keep::<StatefulSet>),
            daemonsets: Kept::start(api(client, namespace), keep::<DaemonSet>),
            configmaps: configmap_references.then(|| ConfigMaps::start(client, namespace)),
            parsed: Mutex::new(HashMap::new()),
        }
    }

    pub async fn wait_ready(&self) {
        self.deployments.wait_until_ready().await;
        self.statefulsets.wait_until_ready().await;
        self.daemonsets.wait_until_ready().await;
        if let Some(configmaps) = &self.configmaps {
            configmaps.wait_ready().await;
        }
    }

    /// Every opted-in workload with at least one watched path.
    pub fn workloads(&self, all: bool, watchable: &WatchablePaths) -> Vec<Workload> {
        let mut out = Vec::new();
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        // Entries of objects gone or changed are dropped: the cache holds this poll's only.
        let mut templates = Templates {
            previous: std::mem::take(&mut *parsed),
            current: HashMap::new(),
            watchable,
            configmaps: self.configmaps.as_ref(),
        };
        collect(
            &mut out,
            &mut templates,
            Kind::Deployment,
            &self.deployments.state(),
            |d| d.spec.as_ref().map(|s| (&s.template, &s.selector)),
            deployment_progressed_at,
            all,
        );
        collect(
            &mut out,
            &mut templates,
            Kind::StatefulSet,
            &self.statefulsets.state(),
            |d| d.spec.as_ref().map(|s| (&s.template, &s.selector)),
            |_| None,
            all,
        );
        collect(
            &mut out,
            &mut templates,
            Kind::DaemonSet,
            &self.daemonsets.state(),
            |d| d.spec.as_ref().map(|s| (&s.template, &s.selector)),
            |_| None,
            all,
        );
        *parsed = templates.current;
        out
    }

    /// Whether `kind` `namespace/name` has finished rolling out its current template: the
    /// controller saw its latest generation and every replica is updated and available (ready,
    /// for a StatefulSet), with no old one left. `false` when it is not kept.
    pub fn rolled_out(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let caught_up = |meta: &kube::api::ObjectMeta, observed: Option<i64>| {
            observed.unwrap_or_default() >= meta.generation.unwrap_or_default()
        };
        match kind {
            Kind::Deployment => self.deployments.get(namespace, name).is_some_and(|d| {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                d.status.as_ref().is_some_and(|s| {
                    caught_up(&d.metadata, s.observed_generation)
                        && s.updated_replicas.unwrap_or_default() == want
                        && s.available_replicas.unwrap_or_default() == want
                        && s.replicas.unwrap_or_default() == want
                })
            }),
            Kind::StatefulSet => self.statefulsets.get(namespace, name).is_some_and(|d| {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                d.status.as_ref().is_some_and(|s| {
                    caught_up(&d.metadata, s.observed_generation)
                        && s.updated_replicas.unwrap_or_default() == want
                        && s.ready_replicas.unwrap_or_default() == want
                        && s.current_revision == s.update_revision
                })
            }),
            Kind::DaemonSet => self.daemonsets.get(namespace, name).is_some_and(|d| {
                d.status.as_ref().is_some_and(|s| {
                    caught_up(&d.metadata, s.observed_generation)
                        && s.updated_number_scheduled.unwrap_or_default()
                            == s.desired_number_scheduled
                        && s.number_available.unwrap_or_default() == s.desired_number_scheduled
                })
            }),
        }
    }

    /// After [`Caches::workloads`]: the ConfigMaps no workload read give up their values.
    /// Returns how many reference-carrying ConfigMaps are kept and the bytes of values held.
    pub fn end_configmap_poll(&self) -> (usize, usize) {
        self.configmaps
            .as_ref()
            .map_or((0, 0), ConfigMaps::end_poll)
    }
}

struct Templates<'a> {
    previous: ParsedTemplates,
    current: ParsedTemplates,
    watchable: &'a WatchablePaths,
    configmaps: Option<&'a ConfigMaps>,
}

impl Templates<'_> {
    /// The watched paths of `template`, parsed only when its object's generation (or a
    /// ConfigMap it reads) is new. `fresh` is true when it was parsed now.
    fn paths(
        &mut self,
        meta: &kube::api::ObjectMeta,
        template: &PodTemplateSpec,
    ) -> (Arc<Result<Watched, WorkloadError>>, bool) {
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        let configmaps = self.configmaps;
        let parse = || {
            Arc::new(match configmaps {
                Some(cms) => watched_with(template, |c| cms.env_of(namespace, c)),
                None => watched(template),
            })
        };
        let Some(uid) = meta.uid.clone() else {
            return (parse(), true);
        };
        let fingerprint = configmaps
            .map(|cms| cms.fingerprint(namespace, template))
            .unwrap_or_default();
        let key = (uid, meta.generation.unwrap_or_default());
        let (paths, fresh) = match self.previous.remove(&key) {
            Some((seen, paths)) if seen == fingerprint => (paths, false),
            _ => (parse(), true),
        };
        self.current.insert(key, (fingerprint, paths.clone()));
        (paths, fresh)
    }
}

/// When a Deployment's latest rollout last progressed (its Progressing condition).
fn deployment_progressed_at(d: &Deployment) -> Option<Timestamp> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Progressing")
        .and_then(|c| c.last_update_time.as_ref())
        .map(|t| t.0)
}

/// The latest sign of the pod template changing: the object's creation, rotor's and kubectl's
/// restart annotations on the template, and `rolled_at`.
fn template_changed_at(
    meta: &kube::api::ObjectMeta,
    template: &PodTemplateSpec,
    rolled_at: Option<Timestamp>,
) -> Option<Timestamp> {
    let annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref());
    let annotated = [ROTATED_AT, "kubectl.kubernetes.io/restartedAt"]
        .into_iter()
        .filter_map(|key| annotations?.get(key)?.parse::<Timestamp>().ok());
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .into_iter()
        .chain(annotated)
        .chain(rolled_at)
        .max()
}

fn collect<K: Resource<DynamicType = ()>>(
    out: &mut Vec<Workload>,
    templates: &mut Templates<'_>,
    kind: Kind,
    objects: &[Arc<K>],
    template: impl Fn(&K) -> Option<(&PodTemplateSpec, &LabelSelector)>,
    rolled_at: impl Fn(&K) -> Option<Timestamp>,
    all: bool,
) {
    for object in objects {
        let Some((template, selector)) = template(object) else {
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
        let (parsed, fresh) = templates.paths(meta, template);
        let namespace = object.namespace().unwrap_or_default();
        let (paths, not_watched, store, on_rotation) = match parsed.as_ref() {
            Ok(w) => {
                let (kept, refused): (Vec<String>, Vec<String>) = w
                    .paths
                    .iter()
                    .cloned()
                    .partition(|path| templates.watchable.allows(&namespace, path));
                (
                    kept.into_iter().collect::<BTreeSet<_>>(),
                    refused,
                    w.store.clone(),
                    w.on_rotation,
                )
            }
            Err(e) => {
                if fresh {
                    tracing::warn!(kind = kind.as_str(), namespace = %object.namespace().unwrap_or_default(), name = %object.name_any(), error = %e, "a reference does not parse; workload skipped");
                }
                continue;
            }
        };
        if paths.is_empty() && not_watched.is_empty() {
            continue;
        }
        out.push(Workload {
            kind,
            namespace,
            name: object.name_any(),
            reference: object.object_ref(&()),
            annotations: meta.annotations.clone().unwrap_or_default(),
            paths,
            store,
            started_at: template_changed_at(meta, template, rolled_at(object)),
            not_watched,
            uid: meta.uid.clone().unwrap_or_default(),
            generation: meta.generation.unwrap_or_default(),
            resource_version: meta.resource_version.clone(),
            on_rotation,
            // As the API's `labelSelector` parameter spells it (kube-core's Selector); one
            // the API server would not have admitted selects no pods.
            selector: kube::core::Selector::try_from(selector.clone())
                .ok()
                .map(|s| s.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_is_parsed_once_per_generation_and_forgotten_when_gone() {
        let template: PodTemplateSpec = serde_json::from_value(json!({ "spec": { "containers": [
            { "name": "a", "env": [{ "name": "A", "value": "vault:secret/data/db#password" }] },
        ] } }))
        .unwrap();
        let meta = |generation| kube::api::ObjectMeta {
            uid: Some("u-1".to_string()),
            generation: Some(generation),
            ..Default::default()
        };
        let open = WatchablePaths::default();
        let mut templates = Templates {
            previous: HashMap::new(),
            current: HashMap::new(),
            watchable: &open,
            configmaps: None,
        };
        let poll = |templates: &mut Templates, generation| {
            let (paths, fresh) = templates.paths(&meta(generation), &template);
            assert_eq!(paths.as_ref().as_ref().unwrap().paths.len(), 1);
            templates.previous = std::mem::take(&mut templates.current);
            fresh
        };
        assert!(poll(&mut templates, 1), "parsed when first seen");
        assert!(!poll(&mut templates, 1), "the next poll reuses it");
        assert!(poll(&mut templates, 2), "a new generation is parsed again");
        templates.previous.clear();
        assert!(
            poll(&mut templates, 2),
            "an object gone from a poll is forgotten"
        );
    }

    #[test]
    fn only_an_object_with_references_is_kept_and_without_its_managed_fields() {
        let deployment = |env: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({
                "metadata": { "name": "web", "namespace": "shop", "managedFields": [{ "manager": "kubectl" }] },
                "spec": { "selector": { "matchLabels": { "app": "web" } }, "template": { "spec": {
                    "containers": [{ "name": "a", "env": [env] }] } } },
            }))
            .unwrap()
        };
        let mut plain = deployment(json!({ "name": "A", "value": "hello" }));
        assert!(!keep(&mut plain), "no reference: not kept, costs nothing");
        for kept in [
            json!({ "name": "A", "value": "vault:secret/db#password" }),
            json!({ "name": "A", "value": "vault:secret/db#" }),
            json!({ "name": "A", "valueFrom": { "configMapKeyRef": { "name": "cm", "key": "A" } } }),
        ] {
            let mut object = deployment(kept.clone());
            assert!(
                keep(&mut object),
                "{kept}: a reference, one that does not parse (warned about), or ConfigMap env"
            );
            assert!(object.meta().managed_fields.is_none());
            assert!(object.spec.is_some());
        }
    }

    #[test]
    fn the_template_changed_at_its_latest_sign() {
        let meta = kube::api::ObjectMeta {
            creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            )),
            ..Default::default()
        };
        let template: PodTemplateSpec =
            serde_json::from_value(json!({ "metadata": { "annotations": {
            "kubectl.kubernetes.io/restartedAt": "2026-03-01T00:00:00Z",
            ROTATED_AT: "2026-02-01T00:00:00Z",
        } } }))
            .unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            template_changed_at(&meta, &template, None),
            Some(at("2026-03-01T00:00:00Z"))
        );
        assert_eq!(
            template_changed_at(&meta, &template, Some(at("2026-04-01T00:00:00Z"))),
            Some(at("2026-04-01T00:00:00Z")),
            "a Deployment's last rollout"
        );
        assert_eq!(
            template_changed_at(&meta, &PodTemplateSpec::default(), None),
            Some(at("2026-01-01T00:00:00Z"))
        );
    }

    #[tokio::test]
    async fn a_patch_carries_the_resource_version_it_was_decided_from_and_a_409_is_a_conflict() {
        use crate::api_mock::{exchange, scripted, status};
        let mut w = crate::planner::tests::workload("web", &["secret/data/a"], None);
        w.resource_version = Some("41".to_string());
        let versions =
            crate::decision::Versions::from([(crate::decision::record_key("secret/data/a"), 2)]);
        let deployment =
            json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" } });
        let (client, script) = scripted(vec![
            exchange(
                "PATCH",
                "/apis/apps/v1/namespaces/shop/deployments/web?",
                409,
                status(409, "Conflict"),
            ),
            exchange(
                "PATCH",
                "/apis/apps/v1/namespaces/shop/deployments/web?",
                200,
                deployment,
            ),
        ]);
        let first = patch_workload(&client, &w, &versions, Some("2026-12-03T17:00:00Z"))
            .await
            .unwrap();
        let second = patch_workload(&client, &w, &versions, None).await.unwrap();
        let sent = script.done(client).await;
        assert_eq!((first, second), (Patched::Conflict, Patched::Applied));
        assert_eq!(sent[0].body["metadata"]["resourceVersion"], "41");
        assert_eq!(
            sent[0].body["spec"]["template"]["metadata"]["annotations"][ROTATED_AT],
            "2026-12-03T17:00:00Z"
        );
        assert_eq!(
            sent[0].body["metadata"]["annotations"][OBSERVED],
            serde_json::to_string(&versions).unwrap()
        );
        assert!(
            sent[1].body.get("spec").is_none(),
            "a record alone rolls nothing"
        );
        assert!(sent[0].uri.contains("fieldManager="), "{}", sent[0].uri);
    }
}
