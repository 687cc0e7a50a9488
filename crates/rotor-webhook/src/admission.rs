//! AdmissionReview v1 in, AdmissionReview v1 out. An unparseable body gets an `invalid`
//! response; a parseable one always gets HTTP 200 with the request's uid.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::config::InjectConfig;
use crate::deny::{Deny, DenyReason};
use crate::image_ref::ImageRef;
use crate::metrics::{Metrics, OutcomeLabels};
use crate::plan::{ImageCommands, Plan, plan_selection, pod_display_name};
use crate::registry::{RegistryClient, RegistryError};
use crate::targets::{LookupNeed, select_targets};

/// What answering a review needs.
pub struct AdmissionContext {
    pub config: Arc<InjectConfig>,
    /// How long one review may take, lookups and planning together; past it the pod is refused
    /// (the API server would have given up anyway).
    pub review_timeout: Duration,
    /// Planning is CPU work: it runs on blocking threads, this many at once, so a costly pod
    /// never holds the async workers that serve every other review.
    pub planners: Arc<tokio::sync::Semaphore>,
    pub metrics: std::sync::Arc<Metrics>,
    pub registry: RegistryClient,
    /// Set when imagePullSecrets or ConfigMaps are read through the API.
    pub kube: Option<kube::Client>,
    /// Read the ConfigMaps a pod's env pulls from, to find references there.
    pub configmap_references: bool,
}

/// The planning concurrency of a webhook: two per core.
pub fn default_planners() -> Arc<tokio::sync::Semaphore> {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    Arc::new(tokio::sync::Semaphore::new(cores * 2))
}

/// Answers one admission review body; returns the JSON to send, serialised once (no
/// intermediate `serde_json::Value`). A patch is sent base64-encoded, as the API server's own
/// types write `[]byte` (kube-core's `Vec<u8>` would write an array of numbers, 2–3 times the
/// size).
pub async fn review(body: &[u8], ctx: &AdmissionContext) -> Vec<u8> {
    let started = Instant::now();
    let (response, outcome, patch) = match decide(body, ctx).await {
        Decided::Answer(response, outcome) => (response, outcome, None),
        Decided::Patch(response, patch) => (response, "patched", Some(patch)),
    };
    ctx.metrics
        .requests
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    crate::answer::encode(&response, patch.as_deref())
}

/// The answer to a review: a response with its outcome label, or an allowed response and the
/// serialised JSON patch to add to it.
enum Decided {
    Answer(AdmissionResponse, &'static str),
    Patch(AdmissionResponse, Vec<u8>),
}

impl From<(AdmissionResponse, &'static str)> for Decided {
    fn from((response, outcome): (AdmissionResponse, &'static str)) -> Self {
        Self::Answer(response, outcome)
    }
}

async fn decide(body: &[u8], ctx: &AdmissionContext) -> Decided {
    // The common case, parsed once: a review of a Pod.
    let pod_error = match serde_json::from_slice::<AdmissionReview<Pod>>(body) {
        Ok(review) => match TryInto::<AdmissionRequest<Pod>>::try_into(review) {
            Ok(request) => return decide_pod(request, ctx).await,
            Err(e) => {
                return (
                    AdmissionResponse::invalid(format!("the AdmissionReview has no request: {e}")),
                    "invalid",
                )
                    .into();
            }
        },
        Err(e) => e,
    };
    // Anything else that is still an AdmissionReview gets an answer with its uid.
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "admission review does not parse");
            return (
                AdmissionResponse::invalid(format!("the body is not an AdmissionReview: {e}")),
                "invalid",
            )
                .into();
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            return (
                AdmissionResponse::invalid(format!("the AdmissionReview has no request: {e}")),
                "invalid",
            )
                .into();
        }
    };
    let response = AdmissionResponse::from(&request);
    if is_pod_create(
        &request.operation,
        &request.kind.kind,
        request.sub_resource.as_deref(),
    ) {
        let message = format!("rotor: the pod object does not parse as a v1 Pod: {pod_error}");
        ctx.metrics.deny(DenyReason::NotAPod);
        return (response.deny(message), "denied").into();
    }
    (response, "unchanged").into()
}

fn is_pod_create(operation: &Operation, kind: &str, sub_resource: Option<&str>) -> bool {
    *operation == Operation::Create && kind == "Pod" && sub_resource.is_none()
}

async fn decide_pod(mut request: AdmissionRequest<Pod>, ctx: &AdmissionContext) -> Decided {
    let started = Instant::now();
    let response = AdmissionResponse::from(&request);
    if !is_pod_create(
        &request.operation,
        &request.kind.kind,
        request.sub_resource.as_deref(),
    ) {
        return (response, "unchanged").into();
    }
    let Some(mut pod) = request.object.take() else {
        ctx.metrics.deny(DenyReason::NotAPod);
        return (
            response.deny("rotor: the admission request carries no pod object"),
            "denied",
        )
            .into();
    };
    let namespace = request.namespace.clone().unwrap_or_default();
    if pod.metadata.namespace.is_none() {
        pod.metadata.namespace = Some(namespace.clone());
    }
    let name = pod_display_name(&pod);
    // ConfigMaps are read in the namespace the API server put in the request (the one the pod
    // is created in), never in one the pod object names.
    let planned = tokio::time::timeout(
        ctx.review_timeout,
        plan_with_lookups(Arc::new(pod), &namespace, ctx),
    )
    .await
    .unwrap_or_else(|_| {
        Err(Deny::new(
            DenyReason::ReviewTimeout,
            format!(
                "reviewing the pod took longer than {} ms (--review-timeout-ms); \
                     look for image lookups that hang or references far beyond the usual",
                ctx.review_timeout.as_millis()
            ),
        ))
    });
    let decided = match planned {
        Ok(Plan::Unchanged(reason)) => {
            tracing::debug!(%reason, "unchanged");
            Decided::Answer(response, "unchanged")
        }
        Ok(Plan::Patch(patch)) => Decided::Patch(response, patch.to_json()),
        Err(deny) => {
            ctx.metrics.deny(deny.reason);
            Decided::Answer(response.deny(format!("rotor: {deny}")), "denied")
        }
    };
    let outcome = match &decided {
        Decided::Answer(_, outcome) => *outcome,
        Decided::Patch(..) => "patched",
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
    decided
}

/// What the first planning pass found: the final plan, or the containers whose image
/// entrypoint must be looked up first.
enum FirstPass {
    Done(Plan),
    LookUp(Vec<LookupNeed>),
}

/// Runs `work` on a blocking thread once one of the planning permits is free.
async fn plan_off_the_workers<T: Send + 'static>(
    ctx: &AdmissionContext,
    work: impl FnOnce() -> Result<T, Deny> + Send + 'static,
) -> Result<T, Deny> {
    let _permit = ctx
        .planners
        .acquire()
        .await
        .map_err(|_| Deny::new(DenyReason::Internal, "the webhook is shutting down"))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Deny::new(DenyReason::Internal, format!("planning failed: {e}")))?
}

/// Selects the containers to wrap, reads what planning needs from outside (containers with
/// references in ConfigMaps, when the API is available; the ENTRYPOINT and CMD of wrapped
/// containers without `command`), then plans. Selection and planning run off the async
/// workers; when no lookup is needed (the usual case) both happen in one pass.
async fn plan_with_lookups(
    pod: Arc<Pod>,
    namespace: &str,
    ctx: &AdmissionContext,
) -> Result<Plan, Deny> {
    let configmap_references = match (&ctx.kube, ctx.configmap_references) {
        (Some(kube), true) => {
            crate::configmap_references::containers_with_configmap_references(kube, namespace, &pod)
                .await
                .map_err(|e| Deny::new(DenyReason::BadReference, e))?
        }
        _ => HashSet::new(),
    };
    let configmap_references = Arc::new(configmap_references);
    let first = {
        let (pod, config, cms) = (
            pod.clone(),
            ctx.config.clone(),
            configmap_references.clone(),
        );
        plan_off_the_workers(ctx, move || {
            let selection = select_targets(&pod, &cms)?;
            let needs = selection.lookup_needs();
            if needs.is_empty() {
                plan_selection(&pod, &config, &selection, &ImageCommands::new())
                    .map(FirstPass::Done)
            } else {
                Ok(FirstPass::LookUp(needs))
            }
        })
        .await?
    };
    let needs = match first {
        FirstPass::Done(plan) => return Ok(plan),
        FirstPass::LookUp(needs) => needs,
    };
    let image_commands = look_up_entrypoints(&pod, &needs, ctx).await?;
    let config = ctx.config.clone();
    plan_off_the_workers(ctx, move || {
        let selection = select_targets(&pod, &configmap_references)?;
        plan_selection(&pod, &config, &selection, &image_commands)
    })
    .await
}

/// Lookups of one review in flight at once.
const LOOKUPS_PER_REVIEW: usize = 4;

/// ENTRYPOINT and CMD of every wrapped container without `command`: each distinct image once,
/// [`LOOKUPS_PER_REVIEW`] at a time.
async fn look_up_entrypoints(
    pod: &Pod,
    needs: &[LookupNeed],
    ctx: &AdmissionContext,
) -> Result<ImageCommands, Deny> {
    use futures::StreamExt as _;
    if needs.is_empty() {
        return Ok(ImageCommands::new());
    }
    let mut distinct: Vec<(String, bool)> = needs
        .iter()
        .map(|n| (n.image.clone(), n.always_pull))
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    let lookups = distinct.into_iter().map(|(image_text, always_pull)| async move {
        let image_text = image_text.as_str();
        let fail = |why: RegistryError| {
            let containers: Vec<&str> = needs
                .iter()
                .filter(|n| n.image == image_text)
                .map(|n| n.container.as_str())
                .collect();
            Deny::new(
                DenyReason::NoEntrypoint,
                format!(
                    "container {:?} has no command, so rotor looked up the ENTRYPOINT of image {image_text:?}: {why}; \
                     set command (and args) in the pod spec to skip the lookup",
                    containers.join(", ")
                ),
            )
        };
        let image = ImageRef::parse(image_text)
            .map_err(fail)?;
        let credential = match &ctx.kube {
            Some(kube) => crate::pull_secrets::credential_for(kube, pod, &image.registry)
                .await
                .map_err(fail)?,
            None => None,
        };
        ctx.registry
            .image_command(&image, credential.as_ref(), always_pull, &ctx.metrics)
            .await
            .map(|command| ((image_text.to_string(), always_pull), command))
            .map_err(fail)
    });
    let lookups: Vec<_> = lookups.collect();
    let found: HashMap<(String, bool), _> = futures::stream::iter(lookups)
        .buffer_unordered(LOOKUPS_PER_REVIEW)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, Deny>>()?;
    Ok(needs
        .iter()
        .filter_map(|n| {
            let command = found.get(&(n.image.clone(), n.always_pull))?;
            Some((n.container.clone(), command.clone()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn review(object: serde_json::Value, kind: &str, operation: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "7c4d2e0a-0000-0000-0000-000000000001",
                "kind": { "group": "", "version": "v1", "kind": kind },
                "resource": { "group": "", "version": "v1", "resource": "pods" },
                "namespace": "shop", "operation": operation, "userInfo": {}, "object": object, "dryRun": true,
            }
        }))
        .unwrap()
    }

    fn context() -> AdmissionContext {
        AdmissionContext {
            config: Arc::new(InjectConfig {
                default_addr: Some("https://vault:8200".into()),
                ..InjectConfig::default()
            }),
            review_timeout: Duration::from_secs(4),
            planners: default_planners(),
            metrics: Metrics::new(),
            registry: RegistryClient::new(crate::registry::RegistryConfig::default()).unwrap(),
            kube: None,
            configmap_references: false,
        }
    }

    #[tokio::test]
    async fn bad_input_never_panics_and_always_answers_with_the_uid_when_it_can() {
        rotor_core::install_crypto_provider();
        let ctx = context();
        for garbage in [
            &b""[..],
            b"{",
            b"null",
            b"[]",
            b"{\"request\": 5}",
            &[0xff, 0xfe][..],
        ] {
            let out = review_json(garbage, &ctx).await;
            assert_eq!(out["response"]["allowed"], false, "{out}");
            assert!(
                out["response"]["status"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
        // A pod whose spec has the wrong shape: denied, with the uid.
        let out = review_json(
            &review(
                serde_json::json!({ "metadata": {}, "spec": { "containers": "nope" } }),
                "Pod",
                "CREATE",
            ),
            &ctx,
        )
        .await;
        assert_eq!(
            out["response"]["uid"],
            "7c4d2e0a-0000-0000-0000-000000000001"
        );
        assert_eq!(out["response"]["allowed"], false);
        assert!(
            out["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("does not parse as a v1 Pod")
        );
        // Another kind or operation: allowed unchanged.
        let out = review_json(
            &review(serde_json::json!({ "metadata": {} }), "ConfigMap", "CREATE"),
            &ctx,
        )
        .await;
        assert_eq!(out["response"]["allowed"], true);
        assert!(out["response"].get("patch").is_none());
        // A dry-run pod with references: patched like any other (the planner has no side effects).
        let pod = serde_json::json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "c", "image": "i", "command": ["/c"], "env": [{ "name": "A", "value": "vault:s/d#k" }] }] } });
        let out = review_json(&review(pod.clone(), "Pod", "CREATE"), &ctx).await;
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        // The patch is a base64 string, as the API server decodes `[]byte`, and applies.
        let encoded = out["response"]["patch"].as_str().expect("a base64 string");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut applied = pod;
        json_patch::patch(&mut applied, &patch).unwrap();
        assert_eq!(
            applied["spec"]["initContainers"][0]["name"],
            rotor_core::contract::COPY_CONTAINER
        );
    }

    #[tokio::test]
    async fn the_table_of_shapes_is_what_the_webhook_does() {
        use rotor_core::reference::{Shape, shape_cases};
        rotor_core::install_crypto_provider();
        let ctx = context();
        for (value, shape) in shape_cases() {
            let pod = serde_json::json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "c", "image": "i", "command": ["/c"], "env": [{ "name": "A", "value": value }] }] } });
            let out = review_json(&review(pod, "Pod", "CREATE"), &ctx).await;
            let response = &out["response"];
            match shape {
                Shape::Whole | Shape::Inline => {
                    assert_eq!(response["patchType"], "JSONPatch", "{value:?}: {out}")
                }
                Shape::Plain => {
                    assert_eq!(response["allowed"], true, "{value:?}");
                    assert!(response.get("patch").is_none(), "{value:?}: {out}");
                }
                Shape::Refused => {
                    assert_eq!(response["allowed"], false, "{value:?}");
                    let message = response["status"]["message"].as_str().unwrap();
                    assert!(
                        message.contains("env A") && message.contains("expected"),
                        "{message}"
                    );
                }
            }
        }
    }

    async fn review_json(body: &[u8], ctx: &AdmissionContext) -> serde_json::Value {
        serde_json::from_slice(&super::review(body, ctx).await).unwrap()
    }
}
