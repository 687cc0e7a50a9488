//! The real node's costs, measured: stack start with the node, pod create to Running, and pod
//! create to the app's first log line with rotor in the path (webhook, rotor-init from the copy
//! init container or from an image volume, login, read, execve) against the same pod without
//! references; the memory of every stack process.
//!
//! `cargo build --release -p rotor-webhook && cargo bench -p rotor-e2e --bench node_pods` (root;
//! `ROTOR_BENCH_PODS`, default 8, pods per kind; `ROTOR_TOOLS_BIN=$PWD/.tools/k8s-older/bin` for
//! the older Kubernetes minor, whose node has no image volumes, so that row is left out).
//! Prints a Markdown table for BENCHMARKS.md. Times are wall clock on a shared VM, polled every
//! 50 ms through the API: read them as "how long a user waits", not as CPU cost.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use rotor_e2e::node_pods::{push_node_images, seed_app_secret, start_node_webhook};
use rotor_testkit::{Stack, StackOptions};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<()> {
    rotor_testkit::install_crypto_provider();
    let count: usize = std::env::var("ROTOR_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let stack = Stack::start(StackOptions {
        node: true,
        ..StackOptions::default()
    })
    .await?;
    let node_ready = stack.node()?.ready_after;
    let images = push_node_images(&stack)?;
    seed_app_secret(&stack, "db", "bench-value", "app", &["*"]).await?;
    let webhook = start_node_webhook(&stack, &images).await?;
    let ns = stack
        .namespace_with_labels("bench", &[("rotor-e2e", "enabled")])
        .await?;
    stack.service_account(&ns, "app").await?;
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), &ns);

    let versions = stack.node()?.versions.clone();
    let mut kinds = vec![
        ("plain", "not-a-reference", None),
        ("copy", "vault:secret/data/db#password", Some("copy")),
    ];
    if versions.image_volumes() {
        kinds.push((
            "image-volume",
            "vault:secret/data/db#password",
            Some("image-volume"),
        ));
    }
    let mut samples: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); kinds.len()];
    // Alternate the kinds so drift on the shared VM hits all alike; one warm-up of each first.
    for i in 0..=count {
        for (k, (kind, value, source)) in kinds.iter().enumerate() {
            let name = format!("{kind}-{i}");
            let annotations = match source {
                Some(source) => json!({ "rotor.dev/init-binary-source": source }),
                None => json!({}),
            };
            let pod: Pod = serde_json::from_value(json!({
                "metadata": { "name": name, "annotations": annotations },
                "spec": {
                    "serviceAccountName": "app",
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{ "name": "app", "image": images.app, "env": [{ "name": "DB_PASSWORD", "value": value }] }],
                },
            }))?;
            let created = Instant::now();
            pods.create(&PostParams::default(), &pod).await?;
            let running = wait(&pods, &name, created, |p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .await?;
            let started = wait_log(&pods, &name, created).await?;
            if i > 0 {
                samples[k].push((running, started));
            }
            pods.delete(&name, &DeleteParams::default()).await?;
        }
    }
    let memory = stack_memory(&stack);
    println!(
        "node: kubelet {}, {}; stack start with the node: {:.2?} (node Ready {:.2?} after containerd started)",
        versions.kubelet, versions.runtime, stack.startup, node_ready
    );
    println!();
    println!(
        "| pod ({count} each) | create → Running median | min | max | create → app's first log line median | min | max |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for ((kind, _, _), samples) in kinds.iter().zip(&samples) {
        let label = match *kind {
            "plain" => "no references (webhook not called)",
            "copy" => "one reference, copy (webhook, init container, login, read, execve)",
            _ => "one reference, image volume (webhook, login, read, execve)",
        };
        let (r, s): (Vec<Duration>, Vec<Duration>) = samples.iter().copied().unzip();
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            ms(median(&r)),
            ms(min(&r)),
            ms(max(&r)),
            ms(median(&s)),
            ms(min(&s)),
            ms(max(&s))
        );
    }
    println!();
    println!("| process | VmRSS MiB |");
    println!("| --- | --- |");
    let mut total = 0.0;
    for (name, mib) in &memory {
        total += mib;
        println!("| {name} | {mib:.1} |");
    }
    println!("| **total** | **{total:.1}** |");
    drop(webhook);
    Ok(())
}

async fn wait(
    pods: &Api<Pod>,
    name: &str,
    since: Instant,
    done: impl Fn(&Pod) -> bool,
) -> Result<Duration> {
    loop {
        if let Some(pod) = pods.get_opt(name).await?
            && done(&pod)
        {
            return Ok(since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(120) {
            bail!("pod {name} did not get there in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_log(pods: &Api<Pod>, name: &str, since: Instant) -> Result<Duration> {
    let params = LogParams {
        container: Some("app".into()),
        ..LogParams::default()
    };
    loop {
        if pods
            .logs(name, &params)
            .await
            .is_ok_and(|l| l.contains("app: pid="))
        {
            return Ok(since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(120) {
            bail!("pod {name}: no app log line in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// VmRSS of each process the stack started, and of the containerd shims (one per pod).
fn stack_memory(stack: &Stack) -> Vec<(String, f64)> {
    let rss = |pid: u32| -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
            / 1024.0
    };
    let mut out = Vec::new();
    let mut add = |name: &str, pid: Option<u32>| {
        if let Some(pid) = pid {
            out.push((name.to_string(), rss(pid)));
        }
    };
    add("etcd", stack.etcd.process.pid());
    add("kube-apiserver", stack.api.process.pid());
    add(
        "kube-controller-manager",
        stack
            .controller_manager
            .as_ref()
            .and_then(|c| c.process.pid()),
    );
    add("OpenBao", stack.bao.process.pid());
    add(
        "registry",
        stack.registry.as_ref().and_then(|r| r.process.pid()),
    );
    if let Some(node) = &stack.node {
        add("containerd", node.containerd.pid());
        add("kube-scheduler", node.scheduler.pid());
        add("kubelet", node.kubelet.pid());
        let shims = node.shim_pids();
        let total: f64 = shims.iter().map(|p| rss(*p)).sum();
        out.push((format!("containerd shims ({})", shims.len()), total));
    }
    out
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s.get(s.len() / 2).copied().unwrap_or_default()
}
fn min(v: &[Duration]) -> Duration {
    v.iter().min().copied().unwrap_or_default()
}
fn max(v: &[Duration]) -> Duration {
    v.iter().max().copied().unwrap_or_default()
}
fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
