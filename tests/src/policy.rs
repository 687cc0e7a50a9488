//! The chart's admission policies on the testkit's API server: rendered by real helm with the
//! capability the API server has, applied as they are, and the webhook registered with the
//! chart's own matchConditions, so tests judge what users install.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use rotor_testkit::{Stack, StackOptions};

use crate::fixtures::{Webhook, binary, start_webhook};
use rotor_testkit::tools::{repo_root, tool};
use serde_json::{Value, json};

/// The namespace the chart is "installed" in (where the policies' params live).
pub const RELEASE_NAMESPACE: &str = "rotor-system";
/// In [`two_paths`]: a namespace only the policies see, one only the webhook sees, one both see.
pub const POLICY_NS: &str = "by-policy";
pub const WEBHOOK_NS: &str = "by-webhook";
pub const BOTH_NS: &str = "by-both";
/// The ValidatingAdmissionPolicy's refusal of a reference rotor did not inject.
pub const NOT_INJECTED: &str = "carries references but rotor did not inject it";
/// A second store on the allowlist (never called: admission only writes it into pods).
pub const OTHER_STORE: &str = "https://vault-b.example:8200";
/// An allowlist entry with a wildcard: addresses it admits, never its own text.
pub const WILDCARD_STORES: &str = "https://*.wild.example:8200";

/// The chart's `store.namespace` in [`two_paths`] (the webhook's `--default-namespace`): every
/// pod that names no store namespace of its own gets this one, by either path.
pub const STORE_NAMESPACE: &str = "tenants/shop";

/// A stack with both admission paths, as [`two_paths`] sets them up.
pub struct TwoPaths {
    pub stack: Stack,
    pub webhook: Webhook,
}

/// The stack with the chart's policies (for every namespace but [`WEBHOOK_NS`]) and rotor-webhook
/// registered with the chart's conditions (for [`WEBHOOK_NS`] and [`BOTH_NS`]), each namespace
/// with ServiceAccounts `default` and `shop`, and checked to inject a probe pod.
pub async fn two_paths() -> Result<TwoPaths> {
    rotor_testkit::install_crypto_provider();
    let stack = Stack::start(StackOptions::default()).await?;
    let docs = render_chart(&[
        format!("store.addr={}", stack.bao.addr),
        format!("store.addrAllowlist={{{OTHER_STORE},{WILDCARD_STORES}}}"),
        format!("store.namespace={STORE_NAMESPACE}"),
        "initImage.repository=rotor-init".to_string(),
        "initImage.tag=local".to_string(),
        format!("webhook.excludeNamespaces={{{WEBHOOK_NS}}}"),
    ])?;
    apply_policies(&stack, &docs).await?;
    let webhook = start_webhook(
        &stack,
        &binary("rotor-webhook")?,
        stack.dir(),
        &[
            format!("--addr-allowlist={OTHER_STORE},{WILDCARD_STORES}"),
            format!("--default-namespace={STORE_NAMESPACE}"),
        ],
    )
    .await?;
    register_chart_webhook(&stack, &docs, webhook.port).await?;
    create_namespace(&stack, POLICY_NS, &[], &["shop"]).await?;
    create_namespace(&stack, WEBHOOK_NS, &[("rotor-e2e", "enabled")], &["shop"]).await?;
    create_namespace(&stack, BOTH_NS, &[("rotor-e2e", "enabled")], &["shop"]).await?;
    for ns in [POLICY_NS, WEBHOOK_NS, BOTH_NS] {
        wait_until_injected(&stack, ns, &probe_pod()?).await?;
    }
    // The validating policy fails open until its params are synced: wait until it refuses a
    // pod only the webhook can inject.
    let mut write = serde_json::to_value(probe_pod()?)?;
    write["spec"]["containers"][0]["env"][0]["value"] =
        json!(">>vault:database/creds/app#username");
    let write: Pod = serde_json::from_value(write)?;
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), POLICY_NS);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    crate::observe::wait_until(
        "the ValidatingAdmissionPolicy to refuse a pod it cannot inject",
        Duration::from_secs(30),
        || async {
            Ok(pods
                .create(&dry, &write)
                .await
                .is_err_and(|e| e.to_string().contains(NOT_INJECTED)))
        },
    )
    .await?;
    Ok(TwoPaths { stack, webhook })
}

/// A pod both paths inject: one container stating its command, one whole reference.
pub fn probe_pod() -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": { "name": "probe" },
        "spec": { "automountServiceAccountToken": false, "containers": [{
            "name": "app", "image": "app:1", "command": ["/app"],
            "env": [{ "name": "DB_PASSWORD", "value": "vault:secret/data/db#password" }],
        }]},
    }))?)
}

/// The chart rendered for Kubernetes 1.37 with `sets` (helm `--set`), as JSON documents.
pub fn render_chart(sets: &[String]) -> Result<Vec<Value>> {
    let mut cmd = Command::new(tool("helm")?);
    cmd.current_dir(repo_root()).args([
        "template",
        "rotor",
        "charts/rotor",
        "--namespace",
        RELEASE_NAMESPACE,
        "--kube-version",
        "1.37.2",
        "--api-versions",
        "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
    ]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().context("running helm template")?;
    if !out.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let mut docs = Vec::new();
    for doc in text.split("\n---") {
        let value: Value = serde_yaml::from_str(doc).context("parsing helm's output")?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The documents of `kind` in `docs`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn resource(kind: &str) -> Result<ApiResource> {
    let (group, version, plural) = match kind {
        "ConfigMap" => ("", "v1", "configmaps"),
        "MutatingAdmissionPolicy" => (
            "admissionregistration.k8s.io",
            "v1",
            "mutatingadmissionpolicies",
        ),
        "MutatingAdmissionPolicyBinding" => (
            "admissionregistration.k8s.io",
            "v1",
            "mutatingadmissionpolicybindings",
        ),
        "ValidatingAdmissionPolicy" => (
            "admissionregistration.k8s.io",
            "v1",
            "validatingadmissionpolicies",
        ),
        "ValidatingAdmissionPolicyBinding" => (
            "admissionregistration.k8s.io",
            "v1",
            "validatingadmissionpolicybindings",
        ),
        other => bail!("no resource for {other}"),
    };
    Ok(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

/// Creates the release namespace and applies the chart's policies and their params.
pub async fn apply_policies(stack: &Stack, docs: &[Value]) -> Result<()> {
    create_namespace(stack, RELEASE_NAMESPACE, &[], &[]).await?;
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let is_params = kind == "ConfigMap"
            && doc["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-policy-params"));
        if !(is_params || kind.contains("AdmissionPolicy")) {
            continue;
        }
        let ar = resource(kind)?;
        let object: DynamicObject = serde_json::from_value(doc.clone())?;
        let api: Api<DynamicObject> = match object.metadata.namespace.as_deref() {
            Some(ns) => Api::namespaced_with(stack.kube.clone(), ns, &ar),
            None => Api::all_with(stack.kube.clone(), &ar),
        };
        api.create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("creating {kind} {:?}", object.metadata.name))?;
    }
    Ok(())
}

/// Creates namespace `name` with `labels`, its default ServiceAccount (no controller manager
/// needed) and the ServiceAccounts `accounts`.
pub async fn create_namespace(
    stack: &Stack,
    name: &str,
    labels: &[(&str, &str)],
    accounts: &[&str],
) -> Result<()> {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } }))?;
    Api::<Namespace>::all(stack.kube.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    let api =
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(stack.kube.clone(), name);
    for account in std::iter::once(&"default").chain(accounts) {
        let sa = serde_json::from_value(json!({ "metadata": { "name": account } }))?;
        match api.create(&PostParams::default(), &sa).await {
            // A controller manager may have made `default` already.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            created => {
                created.with_context(|| format!("creating ServiceAccount {name}/{account}"))?;
            }
        }
    }
    Ok(())
}

/// Registers the webhook on loopback `port` with the chart's rules, failure policy and
/// matchConditions (from the rendered MutatingWebhookConfiguration), for namespaces labelled
/// `rotor-e2e=enabled`.
pub async fn register_chart_webhook(stack: &Stack, docs: &[Value], port: u16) -> Result<()> {
    let rendered = of_kind(docs, "MutatingWebhookConfiguration");
    let rendered = rendered
        .first()
        .context("the chart renders no MutatingWebhookConfiguration")?;
    let mut hook = rendered["webhooks"][0].clone();
    hook["clientConfig"] = json!({
        "url": format!("https://127.0.0.1:{port}/mutate"),
        "caBundle": base64::engine::general_purpose::STANDARD.encode(stack.pki.ca_pem()),
    });
    hook["namespaceSelector"] = json!({ "matchLabels": { "rotor-e2e": "enabled" } });
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": "rotor-e2e" },
        "webhooks": [hook],
    });
    Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(
        stack.kube.clone(),
    )
    .create(&PostParams::default(), &serde_json::from_value(config)?)
    .await
    .context("registering the chart's MutatingWebhookConfiguration")?;
    Ok(())
}

/// Waits until a dry-run create of `probe` in `namespace` comes back wrapped by rotor-init:
/// the API server has picked the policy (or webhook) up.
pub async fn wait_until_injected(stack: &Stack, namespace: &str, probe: &Pod) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), namespace);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    crate::observe::wait_until(
        &format!("admission in {namespace} to inject a probe pod"),
        Duration::from_secs(30),
        || async {
            Ok(pods.create(&dry, probe).await.is_ok_and(|p| {
                p.spec
                    .and_then(|s| s.containers.first().and_then(|c| c.command.clone()))
                    .is_some_and(|c| {
                        c.first().map(String::as_str) == Some(rotor_core::contract::WRAPPER)
                    })
            }))
        },
    )
    .await
}
