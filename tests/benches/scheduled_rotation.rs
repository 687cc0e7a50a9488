//! Scheduled rotation (issue 31) against the release reloader, a real kube-apiserver +
//! controller-manager and OpenBao: (1) one `SecretRotation` every 2 s with one consumer
//! (a Deployment of 0 replicas, so its rollout completes without a node): claim -> every consumer
//! on the new version, store writes and status writes per rotation, over 10 rotations; (2) 1,000
//! `SecretRotation`s (interval 1h): time until every one is scheduled, then the reloader's peak
//! RSS and CPU per second while it looks at them every second. Prints Markdown.
//! Run: cargo bench -p rotor-e2e --bench scheduled_rotation
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use rotor_e2e::fixtures::{ReloaderEnv, binary, start_reloader_in, write_reloader_token};
use rotor_e2e::node_pods::seed_reloader_role;
use rotor_e2e::observe::{cpu_seconds, metric, peak_rss_kib, wait_until};
use rotor_e2e::rotations::{create_rotation, install_crd, status, tenant};
use rotor_testkit::{Stack, StackOptions};
use serde_json::json;

const ROTATIONS: f64 = 10.0;
const RESOURCES: usize = 1_000;

#[tokio::main]
async fn main() {
    rotor_testkit::install_crypto_provider();
    let stack = Stack::start(StackOptions {
        controller_manager: true,
        registry: false,
        node: false,
    })
    .await
    .unwrap();
    install_crd(&stack).await.unwrap();
    let ns = tenant(&stack, "bench").await.unwrap();
    stack.service_account(&ns, "rotor-reloader").await.unwrap();
    seed_reloader_role(&stack, &ns).await.unwrap();
    let path = format!("{ns}/db");
    stack
        .bao_admin()
        .unwrap()
        .put_kv2("secret", &path, json!({ "password": "0" }))
        .await
        .unwrap();
    let consumer: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "shop", "annotations": { "rotor.dev/reload": "true" } },
        "spec": { "replicas": 0, "selector": { "matchLabels": { "app": "shop" } }, "template": {
            "metadata": { "labels": { "app": "shop" } },
            "spec": { "containers": [{ "name": "app", "image": "app:1", "command": ["/app"],
                "env": [{ "name": "P", "value": format!("vault:secret/data/{path}#password") }] }] } } },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(stack.kube.clone(), &ns)
        .create(&PostParams::default(), &consumer)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    write_reloader_token(&stack, &ns, "rotor", &token_file)
        .await
        .unwrap();
    let args: Vec<String> = [
        "--rotations",
        "--min-rotation-interval=1",
        "--settle=0",
        "--poll-interval=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (process, admin) = start_reloader_in(
        &stack,
        &binary("rotor-reloader").unwrap(),
        "reloader-bench",
        &token_file,
        &ns,
        &args,
        ReloaderEnv {
            kubeconfig: stack.kubeconfig(),
            env: &[],
        },
    )
    .await
    .unwrap();
    let pid = process.pid().unwrap();

    create_rotation(
        &stack,
        &ns,
        "db",
        json!({ "serviceAccountName": "app", "role": format!("app-{ns}"),
            "targets": [{ "path": format!("secret/data/{path}"), "key": "password" }],
            "interval": "2s", "generate": { "password": { "length": 32 } } }),
    )
    .await
    .unwrap();
    wait_until("10 rotations", Duration::from_secs(300), || async {
        Ok(status(&stack, &ns, "db").await?["rotations"]
            .as_f64()
            .unwrap_or_default()
            >= ROTATIONS)
    })
    .await
    .unwrap();
    let m = |name: &'static str| {
        let admin = admin.clone();
        async move { metric(&admin, name).await.unwrap() }
    };
    let completed = m("rotor_reloader_rotations_total").await;
    let seconds = m("rotor_reloader_rotation_seconds_sum").await;
    let writes = m("rotor_reloader_rotation_store_writes_total").await;
    let status_writes = m("rotor_reloader_rotation_status_writes_total").await;
    println!(
        "| rotations | claim -> consumer on the new version, mean s | store writes per rotation | status writes per rotation |"
    );
    println!("| --- | --- | --- | --- |");
    println!(
        "| {completed} | {:.2} | {:.2} | {:.2} |",
        seconds / completed,
        writes / completed,
        status_writes / completed
    );

    // 1,000 resources, an hour apart: what looking at them every second costs.
    let before = m("rotor_reloader_rotation_status_writes_total").await;
    rotor_e2e::rotations::rotations(&stack, &ns)
        .patch(
            "db",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "spec": { "interval": "1h" } })),
        )
        .await
        .unwrap();
    let started = Instant::now();
    futures::stream::iter(0..RESOURCES)
        .map(|i| {
            let (stack, ns, path) = (&stack, &ns, &path);
            async move {
                create_rotation(
                    stack,
                    ns,
                    &format!("idle-{i}"),
                    json!({ "serviceAccountName": "app", "role": format!("app-{ns}"),
                        "targets": [{ "path": format!("secret/data/{path}-{i}"), "key": "k" }],
                        "interval": "1h", "generate": { "randomBytes": { "bytes": 32 } } }),
                )
                .await
                .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let created = started.elapsed();
    wait_until(
        "every resource scheduled",
        Duration::from_secs(300),
        || async {
            Ok(m("rotor_reloader_rotation_status_writes_total").await - before >= RESOURCES as f64)
        },
    )
    .await
    .unwrap();
    let scheduled = started.elapsed();
    let cpu_before = cpu_seconds(pid);
    let window = Duration::from_secs(30);
    tokio::time::sleep(window).await;
    let cpu = (cpu_seconds(pid) - cpu_before) / window.as_secs_f64();
    println!();
    println!(
        "| SecretRotations | created in s | all scheduled after s | reloader CPU while idle, % of a core | reloader peak RSS MiB |"
    );
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| {} | {:.1} | {:.1} | {:.2} | {:.1} |",
        RESOURCES + 1,
        created.as_secs_f64(),
        scheduled.as_secs_f64(),
        cpu * 100.0,
        peak_rss_kib(pid) as f64 / 1024.0
    );
}
