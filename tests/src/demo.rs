//! The whole flow on the local control plane, with progress output: the README's first command
//! (`scripts/demo.sh`) and an end-to-end test (`tests/e2e/demo.rs`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use rotor_testkit::{Stack, StackOptions};
use serde_json::json;

use crate::fixtures::{
    binary, register_webhook, run_pod_like_a_kubelet, start_reloader, start_webhook,
};

/// What the demo saw, for the test to check.
#[derive(Debug)]
pub struct DemoReport {
    pub stack_startup: Duration,
    pub total: Duration,
    /// The app's own output line (the value masked).
    pub app_line: String,
    /// rotor-init's log lines from the pod run.
    pub init_log: String,
    pub replica_sets_before: usize,
    pub replica_sets_after: usize,
    pub event_note: String,
}

const NS: &str = "demo";
const FIRST: &str = "s3cr3t-v1-demo";
const ROTATED: &str = "s3cr3t-v2-demo";

fn say(step: &str) {
    eprintln!("\x1b[1m==> {step}\x1b[0m");
}

/// Runs the demo; everything it starts stops when it returns (also on error).
pub async fn run_demo() -> Result<DemoReport> {
    let started = Instant::now();
    let (webhook_bin, reloader_bin, init_bin) = (
        binary("rotor-webhook")?,
        binary("rotor-reloader")?,
        binary("rotor-init")?,
    );
    say("starting the local control plane: etcd, kube-apiserver, kube-controller-manager, OpenBao");
    let stack = Stack::start(StackOptions {
        controller_manager: true,
        registry: false,
    })
    .await?;
    eprintln!(
        "    ready in {:.1?}; kube-apiserver {}  OpenBao {}",
        stack.startup, stack.api.url, stack.bao.addr
    );
    let dir = stack.dir().to_path_buf();

    say(
        "configuring OpenBao: KV v2 secret, Kubernetes auth, policies for the app and the reloader",
    );
    let bao = stack.bao_admin()?;
    bao.put_kv2("secret", "demo/db", json!({ "password": FIRST }))
        .await?;
    stack.enable_bao_kubernetes_auth("kubernetes").await?;
    bao.put_policy(
        "demo-app",
        r#"path "secret/data/demo/*" { capabilities = ["read"] }"#,
    )
    .await?;
    bao.put_policy(
        "rotor-reloader",
        r#"path "secret/metadata/*" { capabilities = ["read"] }"#,
    )
    .await?;
    let system = create_namespace(&stack, "rotor-system", &[]).await?;
    stack.service_account(&system, "rotor-reloader").await?;
    bao.put_kubernetes_role(
        "kubernetes",
        "rotor-reloader",
        &["rotor-reloader"],
        &[&system],
        &["rotor-reloader"],
        Some("rotor"),
    )
    .await?;
    bao.put_kubernetes_role(
        "kubernetes",
        "shop",
        &["shop"],
        &[NS],
        &["demo-app"],
        Some("rotor"),
    )
    .await?;
    eprintln!(
        "    secret/demo/db version 1 written; roles shop and rotor-reloader bound to their ServiceAccounts"
    );

    say("starting rotor-webhook and rotor-reloader as local processes; registering the webhook");
    let webhook = start_webhook(
        &stack,
        &webhook_bin,
        &dir,
        &["--token-audience=rotor".to_string()],
    )
    .await?;
    register_webhook(&stack, webhook.port).await?;
    let token_file = dir.join("reloader-token");
    std::fs::write(
        &token_file,
        stack
            .service_account_token(&system, "rotor-reloader", "rotor", 3600)
            .await?,
    )?;
    let (_reloader, _reloader_admin) = start_reloader(
        &stack,
        &reloader_bin,
        "rotor-reloader",
        &token_file,
        &system,
        &[],
    )
    .await?;
    eprintln!(
        "    webhook https://127.0.0.1:{} (admin {}), reloader polling every 1 s",
        webhook.port, webhook.admin
    );

    say("creating Deployment demo/shop that references vault:secret/data/demo/db#password");
    create_namespace(&stack, NS, &[("rotor-e2e", "enabled")]).await?;
    stack.service_account(NS, "shop").await?;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "shop", "annotations": { "rotor.dev/reload": "true" } },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "shop" } },
            "template": {
                "metadata": { "labels": { "app": "shop" }, "annotations": { "rotor.dev/vault-role": "shop" } },
                "spec": {
                    "serviceAccountName": "shop",
                    "automountServiceAccountToken": false,
                    "containers": [{
                        "name": "shop", "image": "shop:1",
                        "command": ["sh", "-c"],
                        "args": ["echo \"shop: DB_PASSWORD=$(printf %s \"$DB_PASSWORD\" | cut -c1-3)*** (${#DB_PASSWORD} characters)\""],
                        "env": [{ "name": "DB_PASSWORD", "value": "vault:secret/data/demo/db#password" }],
                    }],
                },
            },
        },
    }))?;
    let deployments: Api<Deployment> = Api::namespaced(stack.kube.clone(), NS);
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), NS);
    let pod = wait_for(Duration::from_secs(30), "the Deployment's pod", || async {
        Ok(pods
            .list(&ListParams::default().labels("app=shop"))
            .await?
            .items
            .into_iter()
            .next())
    })
    .await?;

    say("the pod as stored by the API server (mutated by rotor-webhook; the spec holds no value)");
    let spec = pod.spec.clone().context("pod without spec")?;
    let shown = json!({
        "initContainers": spec.init_containers.iter().flatten().map(|c| json!({ "name": c.name, "image": c.image, "command": c.command })).collect::<Vec<_>>(),
        "containers": spec.containers.iter().map(|c| json!({ "name": c.name, "command": c.command, "args": c.args, "env": c.env })).collect::<Vec<_>>(),
        "volumes": spec.volumes.iter().flatten().map(|v| v.name.clone()).collect::<Vec<_>>(),
    });
    eprint!("{}", indent(&serde_yaml::to_string(&shown)?));

    say(
        "running the pod the way a kubelet would: init container copies rotor-init, the app runs under it",
    );
    let run = run_pod_like_a_kubelet(&stack, &pod, &init_bin, &dir.join("kubelet")).await?;
    let app_line = run.stdout.trim().to_string();
    eprintln!("    {app_line}");
    for line in run.stderr.lines() {
        eprintln!("    rotor-init: {line}");
    }

    let recorded = wait_for(
        Duration::from_secs(30),
        "the reloader to record the Deployment's versions",
        || async {
            Ok(deployments
                .get("shop")
                .await?
                .metadata
                .annotations
                .unwrap_or_default()
                .get("rotor.dev/observed-versions")
                .cloned())
        },
    )
    .await?;
    eprintln!("    rotor-reloader watches it: rotor.dev/observed-versions={recorded}");

    say("rotating the secret in OpenBao (version 2)");
    let rs: Api<ReplicaSet> = Api::namespaced(stack.kube.clone(), NS);
    let replica_sets_before = rs
        .list(&ListParams::default().labels("app=shop"))
        .await?
        .items
        .len();
    bao.put_kv2("secret", "demo/db", json!({ "password": ROTATED }))
        .await?;
    let replica_sets_after = wait_for(Duration::from_secs(30), "a new ReplicaSet", || async {
        let n = rs
            .list(&ListParams::default().labels("app=shop"))
            .await?
            .items
            .len();
        Ok((n > replica_sets_before).then_some(n))
    })
    .await?;
    let events: Api<Event> = Api::namespaced(stack.kube.clone(), NS);
    let event_note = wait_for(
        Duration::from_secs(10),
        "the SecretRotated event",
        || async {
            Ok(events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("SecretRotated"))
                .and_then(|e| e.note))
        },
    )
    .await?;
    say("rotor-reloader rolled the Deployment");
    for r in rs
        .list(&ListParams::default().labels("app=shop"))
        .await?
        .items
    {
        eprintln!(
            "    ReplicaSet {} (revision {})",
            r.metadata.name.unwrap_or_default(),
            r.metadata
                .annotations
                .unwrap_or_default()
                .get("deployment.kubernetes.io/revision")
                .cloned()
                .unwrap_or_default()
        );
    }
    eprintln!("    Event SecretRotated: {event_note}");

    say("stopping everything the demo started");
    let report = DemoReport {
        stack_startup: stack.startup,
        total: started.elapsed(),
        app_line,
        init_log: run.stderr,
        replica_sets_before,
        replica_sets_after,
        event_note,
    };
    drop(webhook);
    drop(stack);
    eprintln!("    done in {:.1?}", report.total);
    Ok(report)
}

async fn create_namespace(stack: &Stack, name: &str, labels: &[(&str, &str)]) -> Result<String> {
    let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>() }
    }))?;
    match Api::<k8s_openapi::api::core::v1::Namespace>::all(stack.kube.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).with_context(|| format!("creating namespace {name}")),
    }
    Ok(name.to_string())
}

async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
