//! AdmissionReview v1 in, AdmissionReview v1 out. An unparseable body gets an `invalid`
//! response; a parseable one always gets HTTP 200 with the request's uid.

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::config::InjectConfig;
use crate::metrics::{Metrics, OutcomeLabels};
use crate::plan::{Plan, plan_mutation, pod_display_name};

/// Answers one admission review body; returns the JSON to send.
pub fn review(body: &[u8], config: &InjectConfig, metrics: &Metrics) -> serde_json::Value {
    let started = Instant::now();
    let (response, outcome) = decide(body, config);
    metrics
        .requests
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
    metrics.duration.observe(started.elapsed().as_secs_f64());
    serde_json::to_value(response.into_review()).unwrap_or_else(|_| serde_json::json!({}))
}

fn decide(body: &[u8], config: &InjectConfig) -> (AdmissionResponse, &'static str) {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "admission review does not parse");
            return (
                AdmissionResponse::invalid(format!("the body is not an AdmissionReview: {e}")),
                "invalid",
            );
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            return (
                AdmissionResponse::invalid(format!("the AdmissionReview has no request: {e}")),
                "invalid",
            );
        }
    };
    let started = Instant::now();
    let response = AdmissionResponse::from(&request);
    let namespace = request.namespace.clone().unwrap_or_default();
    if request.operation != Operation::Create
        || request.kind.kind != "Pod"
        || request.sub_resource.is_some()
    {
        return (response, "unchanged");
    }
    let pod = request
        .object
        .as_ref()
        .map(serde_json::to_value)
        .and_then(|v| v.ok())
        .map(serde_json::from_value::<Pod>);
    let mut pod = match pod {
        Some(Ok(pod)) => pod,
        Some(Err(e)) => {
            return (
                response.deny(format!(
                    "rotor: the pod object does not parse as a v1 Pod: {e}"
                )),
                "denied",
            );
        }
        None => {
            return (
                response.deny("rotor: the admission request carries no pod object"),
                "denied",
            );
        }
    };
    if pod.metadata.namespace.is_none() {
        pod.metadata.namespace = Some(namespace.clone());
    }
    let name = pod_display_name(&pod);
    let (response, outcome) = match plan_mutation(&pod, config) {
        Ok(Plan::Unchanged(reason)) => {
            tracing::debug!(%reason, "unchanged");
            (response, "unchanged")
        }
        Ok(Plan::Patch(patch)) => match response.clone().with_patch(patch) {
            Ok(r) => (r, "patched"),
            Err(e) => (
                response.deny(format!("rotor: cannot encode the patch: {e}")),
                "denied",
            ),
        },
        Err(deny) => (response.deny(format!("rotor: {deny}")), "denied"),
    };
    tracing::info!(
        %namespace,
        pod = %name,
        operation = "CREATE",
        dry_run = request.dry_run,
        %outcome,
        duration_us = started.elapsed().as_micros() as u64,
        "admission"
    );
    (response, outcome)
}
