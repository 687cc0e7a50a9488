//! The reloader at scale against the real kube-apiserver and OpenBao: 5,000 Deployments
//! referencing 500 distinct path names (`secret/scale/pN`) on two stores (every other block of
//! 500 Deployments names the second store in `rotor.dev/vault-addr`; `ROTOR_BENCH_STORES=1` for
//! one store). `ROTOR_BENCH_WORKLOADS` (5000) Deployments of which the first
//! `ROTOR_BENCH_REFERENCING` (all) reference a secret; `ROTOR_BENCH_PER_PATH=1` gives the
//! reloader a token without `list` on `detailed-metadata` (and no request budget), so it reads
//! one path at a time as before issue 21; `ROTOR_BENCH_RELOADER` runs another reloader binary.
//! Prints peak RSS, store requests and store CPU per poll, poll time, detection-to-patch latency
//! and store write -> rollout start over `ROTOR_BENCH_ROTATIONS` (20) rotations as Markdown.
//! Run: cargo bench -p rotor-e2e --bench reloader_scale
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use rotor_e2e::observe::{cpu_seconds, peak_rss_kib};
use rotor_testkit::{Stack, StackOptions};
use serde_json::json;

const PATHS: usize = 500;
/// The token id the per-path mode creates on each store (metadata read, no list).
const PER_PATH_TOKEN: &str = "rotor-bench-per-path";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
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
    let workloads = env_or("ROTOR_BENCH_WORKLOADS", 5_000);
    let referencing = env_or("ROTOR_BENCH_REFERENCING", workloads).min(workloads);
    let rotations = env_or("ROTOR_BENCH_ROTATIONS", 20).min(PATHS - 10);
    let per_path = std::env::var("ROTOR_BENCH_PER_PATH").is_ok_and(|v| v == "1");
    for admin in std::iter::once(&bao).chain(team_admin.as_ref()) {
        for p in 0..PATHS {
            admin
                .put_kv2("secret", &format!("scale/p{p}"), json!({ "v": "x" }))
                .await
                .unwrap();
        }
        if per_path {
            admin
                .put_policy(
                    "meta-only",
                    r#"path "secret/metadata/*" { capabilities = ["read"] }"#,
                )
                .await
                .unwrap();
            admin
                .write(
                    "auth/token/create",
                    json!({ "id": PER_PATH_TOKEN, "policies": ["meta-only"], "ttl": "4h" }),
                )
                .await
                .unwrap();
        }
    }
    // Deployment i references path i % PATHS on store (i / PATHS) % stores, when i < referencing.
    let store_of = |i: usize| (i / PATHS) % stores;
    let rolled_by = |path: usize| {
        (0..referencing)
            .filter(|&i| i % PATHS == path && store_of(i) == 0)
            .count() as f64
    };
    let team_addr = team.as_ref().map(|t| t.addr.clone());
    let api: Api<Deployment> = Api::namespaced(stack.kube.clone(), &ns);
    let created = Instant::now();
    futures::stream::iter(0..workloads)
        .map(|i| {
            let api = api.clone();
            // Every other block of PATHS workloads reads from the second store.
            let annotations = match (&team_addr, store_of(i)) {
                (Some(addr), 1) => json!({ "rotor.dev/vault-addr": addr }),
                _ => json!({}),
            };
            let value = if i < referencing {
                format!("vault:secret/data/scale/p{}#v", i % PATHS)
            } else {
                "plain".to_string()
            };
            async move {
                let d: Deployment = serde_json::from_value(json!({
                    "metadata": { "name": format!("w{i}"), "annotations": { "rotor.dev/reload": "true" } },
                    "spec": { "selector": { "matchLabels": { "app": format!("w{i}") } }, "template": {
                        "metadata": { "labels": { "app": format!("w{i}") }, "annotations": annotations },
                        "spec": { "containers": [{ "name": "c", "image": "app:1", "command": ["/app"],
                            "env": [{ "name": "S", "value": value }] }] } } },
                }))
                .unwrap();
                api.create(&PostParams::default(), &d).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    eprintln!("created {workloads} Deployments in {:?}", created.elapsed());

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, rotor_testkit::ROOT_TOKEN).unwrap();
    let binary = match std::env::var("ROTOR_BENCH_RELOADER") {
        Ok(path) => std::path::PathBuf::from(path),
        Err(_) => rotor_e2e::fixtures::binary("rotor-reloader").unwrap(),
    };
    let token = if per_path {
        PER_PATH_TOKEN
    } else {
        rotor_testkit::ROOT_TOKEN
    };
    // The store request rate limit (the chart's default is 100/s); ROTOR_BENCH_RPS=0 lifts it.
    let rps: u32 = std::env::var("ROTOR_BENCH_RPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut extra = vec![
        "--auth-method=token".to_string(),
        format!("--token={token}"),
        "--poll-interval=5".to_string(),
        "--max-rollouts-per-poll=100".to_string(),
        // Every path every poll (the namespace holds them all; the default window is 200).
        "--paths-per-namespace-per-poll=1000".to_string(),
        format!("--max-requests-per-second={rps}"),
        format!("--watch-namespace={ns}"),
        "--log-level=warn".to_string(),
    ];
    if let Some(addr) = &team_addr {
        extra.push(format!("--addr-allowlist={addr}"));
    }
    // The budget is this change's (an older binary has no such flag and no budget).
    if per_path && std::env::var("ROTOR_BENCH_RELOADER").is_err() {
        extra.push("--poll-budget=0".to_string());
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
    let store_pids: Vec<u32> = std::iter::once(&stack.bao)
        .chain(team.as_ref())
        .filter_map(|b| b.process.pid())
        .collect();
    let store_cpu = || store_pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
    let cpu0 = store_cpu();
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
    let store_cpu_per_poll = store_cpu() - cpu0;
    let polls = metric(&m1, "rotor_reloader_polls_total{result=\"ok\"}")
        - metric(&m0, "rotor_reloader_polls_total{result=\"ok\"}");
    let requests = metric(&m1, "rotor_reloader_store_requests_total")
        - metric(&m0, "rotor_reloader_store_requests_total");
    let poll_seconds = (metric(&m1, "rotor_reloader_poll_duration_seconds_sum")
        - metric(&m0, "rotor_reloader_poll_duration_seconds_sum"))
        / polls.max(1.0);

    // Rotate one path on one store: the Deployments that read it from that store roll (10 with
    // one store, 5 with two: the other 5 read the same path name from the other store).
    let expected = rolled_by(7);
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
    // Store write -> rollout start, one path at a time (each rolls its Deployments on the
    // default store), at the bench's poll interval.
    let mut delays = Vec::new();
    let mut rolled = expected;
    for path in (10..).take(rotations) {
        let more = rolled_by(path);
        if more == 0.0 {
            continue;
        }
        // Writes land at spread points of the poll cycle (a fixed sequence over 0..5 s), not
        // right after the poll that saw the previous rotation.
        tokio::time::sleep(Duration::from_millis((path as u64 * 2_711) % 5_000)).await;
        let written = Instant::now();
        bao.put_kv2("secret", &format!("scale/p{path}"), json!({ "v": "y" }))
            .await
            .unwrap();
        while metric(
            &metrics().await,
            "rotor_reloader_rollouts_total{kind=\"Deployment\"}",
        ) < rolled + 1.0
        {
            assert!(written.elapsed() < Duration::from_secs(120), "no rollout");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        delays.push(written.elapsed().as_secs_f64());
        while metric(
            &metrics().await,
            "rotor_reloader_rollouts_total{kind=\"Deployment\"}",
        ) < rolled + more
        {
            assert!(
                written.elapsed() < Duration::from_secs(120),
                "rollouts stopped"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        rolled += more;
    }
    delays.sort_by(f64::total_cmp);
    let detect_sum = metric(&m2, "rotor_reloader_detection_to_patch_seconds_sum");
    let detect_count = metric(&m2, "rotor_reloader_detection_to_patch_seconds_count");
    let rss = peak_rss_kib(pid);
    println!(
        "| workloads (referencing) | stores | distinct paths per store | mode | rate limit req/s | store requests per poll | store CPU per poll ms | poll time s | first two cycles s | rotation to all {expected} patched s | detection to patch, mean s | write to rollout start, median / p90 s ({} rotations) | peak RSS MiB |",
        delays.len()
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {workloads} ({referencing}) | {stores} | {PATHS} | {} | {rps} | {:.0} | {:.1} | {:.3} | {:.1} | {:.2} | {:.3} | {:.2} / {:.2} | {:.1} |",
        if per_path { "per path" } else { "listing" },
        requests / polls.max(1.0),
        store_cpu_per_poll * 1000.0 / polls.max(1.0),
        poll_seconds,
        first_cycles.as_secs_f64(),
        to_all_patched.as_secs_f64(),
        detect_sum / detect_count.max(1.0),
        percentile(&delays, 0.5),
        percentile(&delays, 0.9),
        rss as f64 / 1024.0
    );
    drop(process);
    drop(team);
}
