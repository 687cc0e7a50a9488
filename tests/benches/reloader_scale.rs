//! The reloader at scale against the real kube-apiserver and OpenBao: 5,000 Deployments
//! referencing 500 distinct path names on two stores (every other block of 500 Deployments names
//! the second store in `rotor.dev/vault-addr`; `ROTOR_BENCH_STORES=1` for one store). Prints
//! peak RSS, store requests per poll, poll time and detection-to-patch latency as Markdown.
//! Run: cargo bench -p rotor-e2e --bench reloader_scale
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use rotor_testkit::{Stack, StackOptions};
use serde_json::json;

const WORKLOADS: usize = 5_000;
const PATHS: usize = 500;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    rotor_testkit::install_crypto_provider();
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let ns = stack.namespace("scale").await.unwrap();
    let bao = stack.bao_admin().unwrap();
    let stores: usize = std::env::var("ROTOR_BENCH_STORES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .clamp(1, 2);
    let team_dir = tempfile::tempdir().unwrap();
    let team = if stores == 2 {
        Some(
            rotor_testkit::OpenBao::start(team_dir.path())
                .await
                .unwrap(),
        )
    } else {
        None
    };
    let team_admin = team.as_ref().map(|t| t.admin().unwrap());
    for p in 0..PATHS {
        for admin in std::iter::once(&bao).chain(team_admin.as_ref()) {
            admin
                .put_kv2("secret", &format!("scale/p{p}"), json!({ "v": "x" }))
                .await
                .unwrap();
        }
    }
    let team_addr = team.as_ref().map(|t| t.addr.clone());
    let api: Api<Deployment> = Api::namespaced(stack.kube.clone(), &ns);
    let created = Instant::now();
    futures::stream::iter(0..WORKLOADS)
        .map(|i| {
            let api = api.clone();
            // Every other block of PATHS workloads reads from the second store.
            let annotations = match (&team_addr, (i / PATHS) % 2) {
                (Some(addr), 1) => json!({ "rotor.dev/vault-addr": addr }),
                _ => json!({}),
            };
            async move {
                let d: Deployment = serde_json::from_value(json!({
                    "metadata": { "name": format!("w{i}"), "annotations": { "rotor.dev/reload": "true" } },
                    "spec": { "selector": { "matchLabels": { "app": format!("w{i}") } }, "template": {
                        "metadata": { "labels": { "app": format!("w{i}") }, "annotations": annotations },
                        "spec": { "containers": [{ "name": "c", "image": "app:1", "command": ["/app"],
                            "env": [{ "name": "S", "value": format!("vault:secret/data/scale/p{}#v", i % PATHS) }] }] } } },
                }))
                .unwrap();
                api.create(&PostParams::default(), &d).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    eprintln!("created {WORKLOADS} Deployments in {:?}", created.elapsed());

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, rotor_testkit::ROOT_TOKEN).unwrap();
    let binary = rotor_e2e::fixtures::binary("rotor-reloader").unwrap();
    // The store request rate limit (the chart's default is 100/s); ROTOR_BENCH_RPS=0 lifts it.
    let rps: u32 = std::env::var("ROTOR_BENCH_RPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut extra = vec![
        "--auth-method=token".to_string(),
        format!("--token={}", rotor_testkit::ROOT_TOKEN),
        "--poll-interval=5".to_string(),
        "--max-rollouts-per-poll=100".to_string(),
        format!("--max-requests-per-second={rps}"),
        format!("--watch-namespace={ns}"),
        "--log-level=warn".to_string(),
    ];
    if let Some(addr) = &team_addr {
        extra.push(format!("--addr-allowlist={addr}"));
    }
    let (process, admin) =
        rotor_e2e::fixtures::start_reloader(&stack, &binary, "reloader", &token_file, &ns, &extra)
            .await
            .unwrap();
    let pid = process.pid().unwrap();
    let metrics = || async {
        reqwest::get(format!("{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // Wait for the first full cycle (every workload recorded), then measure steady polls.
    let start = Instant::now();
    loop {
        let m = metrics().await;
        if metric(&m, "rotor_reloader_polls_total{result=\"ok\"}") >= 2.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no poll completed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let first_cycles = start.elapsed();
    let m0 = metrics().await;
    // Two steady polls (each one covers every store).
    let before = metric(&m0, "rotor_reloader_polls_total{result=\"ok\"}");
    let m1 = loop {
        let m = metrics().await;
        if metric(&m, "rotor_reloader_polls_total{result=\"ok\"}") >= before + 2.0 {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(900), "polls stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let polls = metric(&m1, "rotor_reloader_polls_total{result=\"ok\"}")
        - metric(&m0, "rotor_reloader_polls_total{result=\"ok\"}");
    let requests = metric(&m1, "rotor_reloader_store_requests_total")
        - metric(&m0, "rotor_reloader_store_requests_total");
    let poll_seconds = (metric(&m1, "rotor_reloader_poll_duration_seconds_sum")
        - metric(&m0, "rotor_reloader_poll_duration_seconds_sum"))
        / polls.max(1.0);

    // Rotate one path on one store: the Deployments that read it from that store roll (10 with
    // one store, 5 with two: the other 5 read the same path name from the other store).
    let expected = (WORKLOADS / PATHS / stores) as f64;
    let rotated = Instant::now();
    bao.put_kv2("secret", "scale/p7", json!({ "v": "y" }))
        .await
        .unwrap();
    loop {
        let m = metrics().await;
        if metric(&m, "rotor_reloader_rollouts_total{kind=\"Deployment\"}") >= expected {
            break;
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(120),
            "rollouts did not happen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let to_all_patched = rotated.elapsed();
    // Two more polls: no Deployment of the other store rolls.
    let polled = metric(
        &metrics().await,
        "rotor_reloader_polls_total{result=\"ok\"}",
    );
    while metric(
        &metrics().await,
        "rotor_reloader_polls_total{result=\"ok\"}",
    ) < polled + 2.0
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m2 = metrics().await;
    assert_eq!(
        metric(&m2, "rotor_reloader_rollouts_total{kind=\"Deployment\"}"),
        expected,
        "only the rotated store's Deployments rolled"
    );
    let detect_sum = metric(&m2, "rotor_reloader_detection_to_patch_seconds_sum");
    let detect_count = metric(&m2, "rotor_reloader_detection_to_patch_seconds_count");
    let rss = peak_rss_kib(pid);
    println!(
        "| workloads | stores | distinct paths per store | rate limit req/s | store requests per poll | poll time s | first two cycles s | rotation to all {expected} patched s | detection to patch, mean s | peak RSS MiB |",
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {WORKLOADS} | {stores} | {PATHS} | {rps} | {:.0} | {:.3} | {:.1} | {:.2} | {:.3} | {:.1} |",
        requests / polls.max(1.0),
        poll_seconds,
        first_cycles.as_secs_f64(),
        to_all_patched.as_secs_f64(),
        detect_sum / detect_count.max(1.0),
        rss as f64 / 1024.0
    );
    drop(process);
    drop(team);
}
