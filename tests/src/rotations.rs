//! Scheduled rotation fixtures: the chart's `SecretRotation` CRD in the stack's API server, a
//! tenant namespace whose ServiceAccount `app` may write its own KV v2 prefix (and nothing
//! else), and reading a rotation's status.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use rotor_testkit::Stack;
use serde_json::{Value, json};

use crate::observe::wait_until;
use crate::policy::{of_kind, render_chart};

/// The tenant role's store policy: its own prefix, read and write, and nothing else.
pub fn tenant_policy(namespace: &str) -> String {
    format!(
        r#"path "secret/data/{namespace}/*" {{ capabilities = ["create", "update", "read"] }}
path "secret/metadata/{namespace}/*" {{ capabilities = ["read"] }}"#
    )
}

/// Installs the chart's CRD and waits until the API server serves it; enables the store's
/// Kubernetes auth, where tenants log in.
pub async fn install_crd(stack: &Stack) -> Result<()> {
    stack.enable_bao_kubernetes_auth("kubernetes").await?;
    let docs = render_chart(&[
        "store.addr=https://vault.example:8200".to_string(),
        "rotations.enabled=true".to_string(),
    ])?;
    let crd = of_kind(&docs, "CustomResourceDefinition")
        .first()
        .map(|v| (*v).clone())
        .context("the chart renders no CRD with rotations.enabled")?;
    let crd: CustomResourceDefinition = serde_json::from_value(crd)?;
    let api: Api<CustomResourceDefinition> = Api::all(stack.kube.clone());
    api.create(&PostParams::default(), &crd).await?;
    wait_until(
        "the CRD is established",
        Duration::from_secs(30),
        || async {
            let crd = api.get("secretrotations.rotor.dev").await?;
            Ok(crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"))
        },
    )
    .await?;
    // Established can come before discovery serves it: wait until a list answers.
    wait_until(
        "SecretRotations are served",
        Duration::from_secs(30),
        || async {
            Ok(rotations(stack, "default")
                .list(&Default::default())
                .await
                .is_ok())
        },
    )
    .await
}

/// The `SecretRotation`s of `namespace`, as dynamic objects.
pub fn rotations(stack: &Stack, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rotor.dev", "v1alpha1", "SecretRotation"),
        "secretrotations",
    );
    Api::namespaced_with(stack.kube.clone(), namespace, &resource)
}

/// Creates `SecretRotation` `name` in `namespace` with `spec`.
pub async fn create_rotation(
    stack: &Stack,
    namespace: &str,
    name: &str,
    spec: Value,
) -> Result<()> {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rotor.dev/v1alpha1", "kind": "SecretRotation",
        "metadata": { "name": name }, "spec": spec,
    }))?;
    rotations(stack, namespace)
        .create(&PostParams::default(), &object)
        .await?;
    Ok(())
}

/// The status of `SecretRotation` `namespace/name` (`null` before the first).
pub async fn status(stack: &Stack, namespace: &str, name: &str) -> Result<Value> {
    let object = rotations(stack, namespace).get(name).await?;
    Ok(object.data.get("status").cloned().unwrap_or(Value::Null))
}

/// A tenant: namespace `prefix-*` with ServiceAccount `app`, whose store role `app-<ns>` (audience
/// `rotor`, as pods) has [`tenant_policy`], at the store's Kubernetes auth (enabled by
/// [`install_crd`]). Returns the namespace.
pub async fn tenant(stack: &Stack, prefix: &str) -> Result<String> {
    let ns = stack.namespace(prefix).await?;
    stack.service_account(&ns, "app").await?;
    let bao = stack.bao_admin()?;
    let role = format!("app-{ns}");
    bao.put_policy(&role, &tenant_policy(&ns)).await?;
    bao.put_kubernetes_role(
        "kubernetes",
        &role,
        &["app"],
        &[&ns],
        &[&role],
        Some("rotor"),
    )
    .await?;
    Ok(ns)
}

/// The data and current version of KV v2 secret `secret/<path>`, read as the store's admin.
pub async fn secret(stack: &Stack, path: &str) -> Result<(serde_json::Map<String, Value>, u64)> {
    let answer = stack
        .bao_admin()?
        .read(&format!("secret/data/{path}"))
        .await?;
    let data = answer
        .pointer("/data/data")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let version = answer
        .pointer("/data/metadata/version")
        .and_then(Value::as_u64)
        .unwrap_or_default();
    Ok((data, version))
}
