//! Rotation in place (`rotor.dev/on-rotation: signal`): instead of rolling the workload, the
//! reloader writes the current versions on each of its pods (`rotor.dev/versions`). The kubelet
//! refreshes the downward-API file rotor-init reads, and rotor-init re-reads what changed once.
//! The write is idempotent (the same versions, whole), so repeating it after a conflict or a
//! lost leadership never signals an app twice: rotor-init acts only on a newer version.

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, Patch, PatchParams};
use rotor_core::contract::files::{VERSIONS_ANNOTATION, format_versions};
use serde_json::json;

use std::collections::BTreeMap;

use crate::decision::{Versions, record_key};
use crate::workloads::Workload;

/// Pods listed per page, and pods patched at once.
const PAGE: u32 = 500;
const CONCURRENCY: usize = 8;

/// A label selector as the API's `labelSelector` parameter spells it.
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    terms.join(",")
}

/// The versions pods are told, by path (what rotor-init reads), from the workload's record
/// (keyed by digest).
pub fn versions_by_path(workload: &Workload, record: &Versions) -> BTreeMap<String, u64> {
    workload
        .paths
        .iter()
        .filter_map(|p| Some((p.clone(), *record.get(&record_key(p))?)))
        .collect()
}

/// Writes the versions of `record` on every running pod of `workload` whose annotation differs;
/// returns how many pods were written. A workload without a selector has no pods to tell.
pub async fn tell_pods(
    client: &kube::Client,
    workload: &Workload,
    record: &Versions,
) -> Result<usize, kube::Error> {
    let Some(selector) = workload.selector.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &workload.namespace);
    let text = format_versions(&versions_by_path(workload, record));
    let mut stale = Vec::new();
    let mut params = ListParams::default().labels(selector).limit(PAGE);
    loop {
        let page = api.list_metadata(&params).await?;
        stale.extend(
            page.items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(VERSIONS_ANNOTATION))
                        != Some(&text)
                })
                .filter_map(|p| p.metadata.name),
        );
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let body = json!({ "metadata": { "annotations": { VERSIONS_ANNOTATION: text } } });
    let patch_params = PatchParams::default();
    let told: Vec<()> = futures::stream::iter(stale)
        .map(|name| {
            let (api, body, params) = (&api, &body, &patch_params);
            async move {
                match api.patch(&name, params, &Patch::Merge(body)).await {
                    Ok(_) => Ok(Some(())),
                    // Gone since the list: nothing to tell.
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_filter_map(|x| async move { Ok(x) })
        .try_collect()
        .await?;
    Ok(told.len())
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

    #[test]
    fn selectors_are_spelled_as_the_api_reads_them() {
        let selector: LabelSelector = serde_json::from_value(json!({
            "matchLabels": { "app": "web", "tier": "front" },
            "matchExpressions": [
                { "key": "env", "operator": "In", "values": ["a", "b"] },
                { "key": "canary", "operator": "DoesNotExist" },
                { "key": "zone", "operator": "Exists" },
            ],
        }))
        .unwrap();
        assert_eq!(
            selector_string(&selector),
            "app=web,tier=front,env in (a,b),!canary,zone"
        );
    }
}
