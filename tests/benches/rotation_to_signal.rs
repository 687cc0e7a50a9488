//! Store write -> app signalled, on the real node, at the reloader's default poll interval
//! (5 s, 10% jitter; settle 0): one Deployment in signal mode with a file rendered from
//! `secret/demo/db`; the secret is written `ROTOR_BENCH_ROTATIONS` (20) times, each time after
//! the previous one reached the app; the delay runs from the write to rotor-init's log line
//! "rotation: read the new versions once, rewrote the files, signalled the app" (its timestamp).
//! Prints median, p90 and max as Markdown.
//! Run (as root): cargo bench -p rotor-e2e --bench rotation_to_signal
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, LogParams, PostParams};
use rotor_e2e::fixtures::{binary, start_reloader};
use rotor_e2e::node_pods::{
    pod_names, seed_app_secret, seed_reloader_role, start_node_stack, start_node_webhook, wait_for,
    wait_for_log, wait_for_record,
};
use serde_json::json;

const SIGNALLED: &str = "rotation: read the new versions once";

/// The timestamps of rotor-init's rotation lines in `log`.
fn rotations(log: &str) -> Vec<Timestamp> {
    log.lines()
        .filter(|l| l.contains(SIGNALLED))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["timestamp"].as_str()?.parse().ok())
        .collect()
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("ROTOR_BENCH_ROTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (stack, images) = start_node_stack().await.unwrap();
    let ns = stack
        .namespace_with_labels("signal", &[("rotor-e2e", "enabled")])
        .await
        .unwrap();
    seed_app_secret(&stack, "demo/db", "v0", "shop", &[&ns])
        .await
        .unwrap();
    let _webhook = start_node_webhook(&stack, &images).await.unwrap();
    stack.service_account(&ns, "shop").await.unwrap();
    stack.service_account(&ns, "rotor-reloader").await.unwrap();
    seed_reloader_role(&stack, &ns).await.unwrap();
    let token_file = stack.dir().join("signal-reloader-token");
    std::fs::write(
        &token_file,
        stack
            .service_account_token(&ns, "rotor-reloader", "rotor", 3600)
            .await
            .unwrap(),
    )
    .unwrap();
    let (_reloader, _admin) = start_reloader(
        &stack,
        &binary("rotor-reloader").unwrap(),
        "signal-reloader",
        &token_file,
        &ns,
        &[
            format!("--watch-namespace={ns}"),
            "--poll-interval=5".to_string(),
            "--poll-jitter=0.1".to_string(),
        ],
    )
    .await
    .unwrap();
    let web: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web", "annotations": { "rotor.dev/reload": "true" } },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "web" } }, "template": {
            "metadata": { "labels": { "app": "web" }, "annotations": {
                "rotor.dev/vault-role": "shop",
                "rotor.dev/file.db.conf": "password=${vault:secret/data/demo/db#password}\n",
                "rotor.dev/on-rotation": "signal",
            } },
            "spec": { "serviceAccountName": "shop", "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 5,
                "securityContext": { "runAsUser": 1000, "runAsGroup": 3000, "runAsNonRoot": true },
                "containers": [{ "name": "web", "image": images.app,
                    "command": ["/app", "--file", "/rotor/files/db.conf"] }] } } },
    }))
    .unwrap();
    let apps: Api<Deployment> = Api::namespaced(stack.kube.clone(), &ns);
    apps.create(&PostParams::default(), &web).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), &ns);
    let name = wait_for(Duration::from_secs(60), "the web pod", || async {
        Ok(pod_names(&pods, "app=web").await?.into_iter().next())
    })
    .await
    .unwrap();
    wait_for_log(
        &pods,
        &name,
        "web",
        "app: file /rotor/files/db.conf",
        Duration::from_secs(90),
    )
    .await
    .unwrap();
    wait_for_record(&apps, "web").await.unwrap();
    let bao = stack.bao_admin().unwrap();
    let params = LogParams {
        container: Some("web".to_string()),
        ..LogParams::default()
    };
    let mut delays = Vec::new();
    for round in 1..=rounds {
        // Writes land at spread points of the poll cycle (a fixed sequence over 0..5 s).
        tokio::time::sleep(Duration::from_millis((round as u64 * 2_711) % 5_000)).await;
        let written = Timestamp::now();
        bao.put_kv2(
            "secret",
            "demo/db",
            json!({ "password": format!("v{round}") }),
        )
        .await
        .unwrap();
        let at = wait_for(Duration::from_secs(120), "the app signalled", || async {
            let log = pods.logs(&name, &params).await?;
            Ok(rotations(&log).get(round - 1).copied())
        })
        .await
        .unwrap();
        let delay = at.duration_since(written).as_secs_f64();
        eprintln!("rotation {round}: {delay:.2} s");
        delays.push(delay);
    }
    delays.sort_by(f64::total_cmp);
    let at =
        |p: f64| delays[((p * delays.len() as f64).ceil() as usize).clamp(1, delays.len()) - 1];
    println!("| rotations | poll interval | median s | p90 s | max s |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| {} | 5 s (10% jitter), settle 0 | {:.2} | {:.2} | {:.2} |",
        delays.len(),
        at(0.5),
        at(0.9),
        at(1.0)
    );
}
