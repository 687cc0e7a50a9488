//! The Helm chart installed into the cluster with the images from the local registry: the webhook
//! and the reloader run as pods on the real node (2 replicas each, PDB), the apiserver calls the
//! webhook through its Service, a Deployment's pod is injected and runs, and a rotation rolls it.
//! Everything of rotor runs in pods here; the test only creates objects and reads what happened.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code fails loudly

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, PostParams};
use rotor_e2e::node_pods::{
    describe, pod_names, push_webhook_image, replica_set_count, seed_app_secret,
    seed_reloader_role, shop_deployment, start_node_stack, wait_for, wait_for_log,
    wait_for_observed_versions, wait_for_replacement,
};
use rotor_test_app::env_line;
use rotor_testkit::tools::{repo_root, tool};
use serde_json::json;

const FIRST: &str = "chart-canary-v1";
const ROTATED: &str = "chart-canary-v2";

fn helm(args: &[&str], kubeconfig: &Path, home: &Path) -> Result<String> {
    let out = Command::new(tool("helm")?)
        .current_dir(repo_root())
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .context("running helm")?;
    if !out.status.success() {
        bail!(
            "helm {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn ready_replicas(deployments: &Api<Deployment>, name: &str) -> Result<i32> {
    Ok(deployments
        .get(name)
        .await?
        .status
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_rotor_as_pods_on_the_node() -> Result<()> {
    let (stack, images) = start_node_stack().await?;
    let webhook_image = push_webhook_image(&stack)?;
    let registry = stack.registry()?.host.clone();

    // The store: the app's secret, Kubernetes auth, a role for the app and one for the reloader.
    let system = stack
        .namespace_with_labels(
            "rotor-system",
            &[("pod-security.kubernetes.io/enforce", "restricted")],
        )
        .await?;
    let app_ns = stack.namespace("shop").await?;
    stack.service_account(&app_ns, "shop").await?;
    seed_app_secret(&stack, "demo/db", FIRST, "shop", &[&app_ns]).await?;
    seed_reloader_role(&stack, &system).await?;

    // No kube-proxy here: rotor's pods get the apiserver's address on the pod bridge.
    let api = url_host_port(&stack.api.url)?;
    let api_env = json!([
        { "name": "KUBERNETES_SERVICE_HOST", "value": api.0 },
        { "name": "KUBERNETES_SERVICE_PORT", "value": api.1 },
    ])
    .to_string();
    let (repo, tag) = webhook_image.rsplit_once(':').context("image tag")?;
    let (init_repo, init_tag) = images.init.rsplit_once(':').context("image tag")?;
    let home = stack.dir().join("helm");
    helm(
        &[
            "install",
            "rotor",
            "charts/rotor",
            "-n",
            &system,
            "--wait=false",
            "--set",
            &format!("image.repository={repo}"),
            "--set",
            &format!("image.tag={tag}"),
            "--set",
            &format!("initImage.repository={init_repo}"),
            "--set",
            &format!("initImage.tag={init_tag}"),
            "--set",
            &format!("store.addr={}", stack.bao.addr),
            "--set",
            &format!("webhook.registry.insecure={{{registry}}}"),
            "--set",
            "reloader.pollInterval=1",
            "--set",
            "reloader.settle=0",
            "--set-json",
            &format!("webhook.extraEnv={api_env}"),
            "--set-json",
            &format!("reloader.extraEnv={api_env}"),
        ],
        stack.kubeconfig(),
        &home,
    )?;
    let deployments: Api<Deployment> = Api::namespaced(stack.kube.clone(), &system);
    let system_pods: Api<Pod> = Api::namespaced(stack.kube.clone(), &system);
    for name in ["rotor-webhook", "rotor-reloader"] {
        let waited = wait_for(
            Duration::from_secs(120),
            &format!("{name}: 2 ready replicas"),
            || async { Ok((ready_replicas(&deployments, name).await? >= 2).then_some(())) },
        )
        .await;
        if let Err(e) = waited {
            let pods = system_pods.list(&ListParams::default()).await?;
            let states: Vec<String> = pods
                .items
                .iter()
                .map(|p| {
                    format!(
                        "{}: {}",
                        p.metadata.name.clone().unwrap_or_default(),
                        describe(p)
                    )
                })
                .collect();
            bail!("{e}\n{}", states.join("\n"));
        }
    }
    let pdb = Api::<PodDisruptionBudget>::namespaced(stack.kube.clone(), &system)
        .get("rotor-webhook")
        .await
        .context("the webhook's PodDisruptionBudget")?;
    assert_eq!(
        pdb.spec
            .and_then(|s| s.min_available)
            .map(|m| serde_json::to_value(m).unwrap()),
        Some(json!(1))
    );

    // A Deployment that references the secret: the apiserver calls the webhook through its
    // Service (resolved to the webhook pods), the pod runs on the node with the value.
    // The webhook pod cannot reach the registry on the host's loopback: the command is given.
    let deployment = shop_deployment(&images.app, Some(&["/app", "DB_PASSWORD"]))?;
    let apps: Api<Deployment> = Api::namespaced(stack.kube.clone(), &app_ns);
    apps.create(&PostParams::default(), &deployment).await?;
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), &app_ns);
    let first = wait_for(Duration::from_secs(60), "the shop pod", || async {
        Ok(pod_names(&pods, "app=shop").await?.into_iter().next())
    })
    .await?;
    let stored = pods.get(&first).await?;
    let init_image = stored
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.image.clone());
    assert_eq!(
        init_image.as_deref(),
        Some(images.init.as_str()),
        "injected by the chart's webhook"
    );
    let log = wait_for_log(
        &pods,
        &first,
        "shop",
        &env_line("DB_PASSWORD", Some(FIRST)),
        Duration::from_secs(90),
    )
    .await?;
    assert!(!log.contains(FIRST), "{log}");

    // The reloader (a pod, leader-elected) records the version, then rolls on rotation, once.
    let recorded = wait_for_observed_versions(&apps, "shop", Duration::from_secs(90)).await?;
    assert!(
        recorded.contains(&rotor_reloader::decision::record_key("secret/data/demo/db")),
        "{recorded}"
    );
    stack
        .bao_admin()?
        .put_kv2("secret", "demo/db", json!({ "password": ROTATED }))
        .await?;
    let replica_sets: Api<ReplicaSet> = Api::namespaced(stack.kube.clone(), &app_ns);
    wait_for(Duration::from_secs(60), "a second ReplicaSet", || async {
        Ok((replica_set_count(&replica_sets, "app=shop").await? == 2).then_some(()))
    })
    .await?;
    let rotated = wait_for_replacement(&pods, "app=shop", &first).await?;
    wait_for_log(
        &pods,
        &rotated,
        "shop",
        &env_line("DB_PASSWORD", Some(ROTATED)),
        Duration::from_secs(90),
    )
    .await?;
    assert_eq!(
        replica_set_count(&replica_sets, "app=shop").await?,
        2,
        "one rotation, one rollout"
    );
    Ok(())
}

/// `https://HOST:PORT` → (HOST, PORT).
fn url_host_port(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("https://").context("an https URL")?;
    let (host, port) = rest.rsplit_once(':').context("a port in the URL")?;
    Ok((host.to_string(), port.to_string()))
}
