//! Rotation in place (`rotor.dev/on-rotation: signal`): instead of rolling the workload, the
//! reloader writes the current versions on each of its pods (`rotor.dev/versions`). The kubelet
//! refreshes the downward-API file rotor-init reads, and rotor-init re-reads what changed once.
//! The write is idempotent (the same versions), so repeating it after a conflict or a lost
//! leadership never signals an app twice: rotor-init acts only on a newer version.
//!
//! Only the workload's own pods are told: the label selector finds candidates, and a pod counts
//! only when its controller is the workload (StatefulSet, DaemonSet) or one of the workload's
//! ReplicaSets (Deployment). A bare pod with matching labels, or another workload's pod, is never
//! written. The annotation is merged per path (other paths already on the pod are kept), under
//! the pod's resourceVersion, so two writers never lose each other's versions.

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use rotor_core::contract::files::{VERSIONS_ANNOTATION, format_versions, parse_versions};
use serde_json::json;

use std::collections::{BTreeMap, BTreeSet};

use crate::workloads::Kind;

use crate::decision::{Versions, record_key};
use crate::workloads::Workload;

/// Pods listed per page, and pods patched at once.
const PAGE: u32 = 500;
const CONCURRENCY: usize = 8;

/// The versions pods are told, by path (what rotor-init reads), from the workload's record
/// (keyed by digest).
pub fn versions_by_path(workload: &Workload, record: &Versions) -> BTreeMap<String, u64> {
    workload
        .paths
        .iter()
        .filter_map(|p| Some((p.clone(), *record.get(&record_key(p))?)))
        .collect()
}

/// Writes the versions of `record` on every running pod of `workload` that does not have them
/// yet; returns how many pods were written. A workload without a selector has no pods to tell.
pub async fn tell_pods(
    client: &kube::Client,
    workload: &Workload,
    record: &Versions,
) -> Result<usize, kube::Error> {
    let Some(selector) = workload.selector.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    let owners = owners_of_pods(client, workload, selector).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), &workload.namespace);
    let ours = versions_by_path(workload, record);
    let mut stale = Vec::new();
    for pod in list_metadata(&api, selector).await? {
        if pod.metadata.deletion_timestamp.is_some() || !is_owned(&pod.metadata, &owners) {
            continue;
        }
        if let Some(name) = pod.metadata.name.clone()
            && merged_versions(&pod.metadata, &ours).is_some()
        {
            stale.push((name, pod.metadata));
        }
    }
    let told: Vec<()> = futures::stream::iter(stale)
        .map(|(name, meta)| {
            let (api, ours) = (&api, &ours);
            async move { tell_one(api, &name, meta, ours).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_filter_map(|x| async move { Ok(x) })
        .try_collect()
        .await?;
    Ok(told.len())
}

/// Attempts at one pod's merge when another writer changed it in between.
const MERGE_ATTEMPTS: usize = 3;

/// Merges `ours` into one pod's annotation under its resourceVersion; on a conflict, reads the
/// pod again and merges again. `None` when there is nothing to tell (gone, or already told).
async fn tell_one(
    api: &Api<Pod>,
    name: &str,
    mut meta: ObjectMeta,
    ours: &BTreeMap<String, u64>,
) -> Result<Option<()>, kube::Error> {
    let mut attempt = 0;
    loop {
        let Some(text) = merged_versions(&meta, ours) else {
            return Ok(None);
        };
        let body = json!({ "metadata": {
            "resourceVersion": meta.resource_version,
            "annotations": { VERSIONS_ANNOTATION: text },
        } });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => return Ok(Some(())),
            // Gone since the list: nothing to tell.
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt + 1 < MERGE_ATTEMPTS => {
                attempt += 1;
                // Read again with the verbs the chart grants (list and patch, never get).
                let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
                meta = match api.list_metadata(&by_name).await?.items.into_iter().next() {
                    Some(fresh) => fresh.metadata,
                    None => return Ok(None),
                };
            }
            Err(e) => return Err(e),
        }
    }
}

/// Every object's metadata that `selector` matches, page by page.
async fn list_metadata<K>(
    api: &Api<K>,
    selector: &str,
) -> Result<Vec<PartialObjectMeta<K>>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut all = Vec::new();
    let mut params = ListParams::default().labels(selector).limit(PAGE);
    loop {
        let page = api.list_metadata(&params).await?;
        all.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(all),
        }
    }
}

/// The uids a pod's controller must have for the pod to be the workload's own: the workload's
/// (StatefulSet, DaemonSet), or its ReplicaSets' (Deployment).
async fn owners_of_pods(
    client: &kube::Client,
    workload: &Workload,
    selector: &str,
) -> Result<BTreeSet<String>, kube::Error> {
    if workload.kind != Kind::Deployment {
        return Ok(BTreeSet::from([workload.uid.clone()]));
    }
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &workload.namespace);
    let owned = list_metadata(&api, selector)
        .await?
        .into_iter()
        .filter(|rs| is_owned(&rs.metadata, &BTreeSet::from([workload.uid.clone()])))
        .filter_map(|rs| rs.metadata.uid)
        .collect();
    Ok(owned)
}

/// Whether the object's controller (the owner reference with `controller: true`) is one of
/// `owners`.
fn is_owned(meta: &ObjectMeta, owners: &BTreeSet<String>) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o: &&OwnerReference| o.controller == Some(true))
        .is_some_and(|o| owners.contains(&o.uid))
}

/// The pod's annotation with `ours` merged in per path (other paths kept; an unreadable
/// annotation, which only rotor writes, is replaced); `None` when it already says all of ours.
fn merged_versions(meta: &ObjectMeta, ours: &BTreeMap<String, u64>) -> Option<String> {
    let current = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(VERSIONS_ANNOTATION));
    let mut merged = current
        .and_then(|text| parse_versions(text).ok())
        .unwrap_or_default();
    if ours.iter().all(|(path, v)| merged.get(path) == Some(v)) && current.is_some() {
        return None;
    }
    merged.extend(ours.iter().map(|(p, v)| (p.clone(), *v)));
    Some(format_versions(&merged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_told_versions_by_path() {
        let mut w = crate::planner::tests::workload("w", &["secret/data/a", "secret/data/b"], None);
        w.paths.insert("secret/data/unanswered".to_string());
        let record = Versions::from([
            (record_key("secret/data/a"), 3),
            (record_key("secret/data/b"), 1),
        ]);
        assert_eq!(
            format_versions(&versions_by_path(&w, &record)),
            r#"{"secret/data/a":3,"secret/data/b":1}"#
        );
    }

    fn meta(owner: Option<(&str, bool)>, versions: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            owner_references: owner.map(|(uid, controller)| {
                vec![OwnerReference {
                    uid: uid.to_string(),
                    controller: Some(controller),
                    ..Default::default()
                }]
            }),
            annotations: versions
                .map(|v| BTreeMap::from([(VERSIONS_ANNOTATION.to_string(), v.to_string())])),
            ..Default::default()
        }
    }

    #[test]
    fn only_pods_whose_controller_is_an_owner_are_the_workloads() {
        let owners = BTreeSet::from(["rs-1".to_string()]);
        assert!(is_owned(&meta(Some(("rs-1", true)), None), &owners));
        assert!(!is_owned(&meta(None, None), &owners), "a bare pod");
        assert!(
            !is_owned(&meta(Some(("rs-2", true)), None), &owners),
            "another workload's"
        );
        assert!(
            !is_owned(&meta(Some(("rs-1", false)), None), &owners),
            "an owner that is not the controller"
        );
    }

    #[test]
    fn versions_are_merged_per_path_and_unchanged_pods_are_not_written() {
        let ours = BTreeMap::from([("secret/data/a".to_string(), 3)]);
        let other = meta(None, Some(r#"{"secret/data/a":2,"secret/data/b":7}"#));
        assert_eq!(
            merged_versions(&other, &ours).as_deref(),
            Some(r#"{"secret/data/a":3,"secret/data/b":7}"#)
        );
        let told = meta(None, Some(r#"{"secret/data/a":3,"secret/data/b":7}"#));
        assert_eq!(merged_versions(&told, &ours), None);
        assert_eq!(
            merged_versions(&meta(None, None), &ours).as_deref(),
            Some(r#"{"secret/data/a":3}"#)
        );
        assert_eq!(
            merged_versions(&meta(None, Some("not json")), &ours).as_deref(),
            Some(r#"{"secret/data/a":3}"#)
        );
        assert_eq!(
            merged_versions(&meta(None, None), &BTreeMap::new()).as_deref(),
            Some("{}"),
            "a pod without the annotation gets it, even empty (as before)"
        );
    }

    #[tokio::test]
    async fn a_deployments_own_pods_are_told_and_a_conflict_is_merged_again() {
        use crate::api_mock::{exchange, scripted, status};
        let mut w = crate::planner::tests::workload("web", &["secret/data/a"], None);
        w.selector = Some("app=web".to_string());
        let record = Versions::from([(record_key("secret/data/a"), 3)]);
        let owner = |uid: &str| {
            json!([{ "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": "x", "uid": uid, "controller": true }])
        };
        let replica_sets = json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": {}, "items": [
                { "metadata": { "name": "web-1", "uid": "rs-web", "ownerReferences": [{ "apiVersion": "apps/v1",
                    "kind": "Deployment", "name": "web", "uid": "uid-web", "controller": true }] } },
                { "metadata": { "name": "other-1", "uid": "rs-other", "ownerReferences": [{ "apiVersion": "apps/v1",
                    "kind": "Deployment", "name": "other", "uid": "uid-other", "controller": true }] } },
            ] });
        let pods = json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": {}, "items": [
                { "metadata": { "name": "web-a", "resourceVersion": "10", "ownerReferences": owner("rs-web"),
                    "annotations": { VERSIONS_ANNOTATION: r#"{"secret/data/other":5}"# } } },
                { "metadata": { "name": "foreign", "resourceVersion": "12", "ownerReferences": owner("rs-other") } },
                { "metadata": { "name": "bare", "resourceVersion": "13" } },
            ] });
        let fresh = json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": {}, "items": [{ "metadata": { "name": "web-a", "resourceVersion": "11",
                "ownerReferences": owner("rs-web"),
                "annotations": { VERSIONS_ANNOTATION: r#"{"secret/data/other":6}"# } } }] });
        let pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web-a" } });
        let (client, script) = scripted(vec![
            exchange(
                "GET",
                "/apis/apps/v1/namespaces/shop/replicasets?",
                200,
                replica_sets,
            ),
            exchange("GET", "/api/v1/namespaces/shop/pods?", 200, pods),
            exchange(
                "PATCH",
                "/api/v1/namespaces/shop/pods/web-a?",
                409,
                status(409, "Conflict"),
            ),
            exchange("GET", "/api/v1/namespaces/shop/pods?", 200, fresh),
            exchange("PATCH", "/api/v1/namespaces/shop/pods/web-a?", 200, pod),
        ]);
        let told = tell_pods(&client, &w, &record).await.unwrap();
        let sent = script.done(client).await;
        assert_eq!(told, 1, "only the Deployment's own pod");
        assert!(
            sent[3].uri.contains("fieldSelector=metadata.name%3Dweb-a"),
            "{}",
            sent[3].uri
        );
        let versions =
            |i: usize| sent[i].body["metadata"]["annotations"][VERSIONS_ANNOTATION].clone();
        assert_eq!(sent[2].body["metadata"]["resourceVersion"], "10");
        assert_eq!(versions(2), r#"{"secret/data/a":3,"secret/data/other":5}"#);
        assert_eq!(
            sent[4].body["metadata"]["resourceVersion"], "11",
            "merged again, on the fresh pod"
        );
        assert_eq!(versions(4), r#"{"secret/data/a":3,"secret/data/other":6}"#);
    }
}
