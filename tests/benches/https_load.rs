//! HTTPS load on loopback: 64 concurrent clients (one connection each), 20,000 admission
//! reviews of a 5-container pod against the release rotor-webhook binary. Prints throughput,
//! p50/p99 latency, errors and the server's peak RSS (VmHWM) as a Markdown table.
//! Run: cargo bench -p rotor-webhook --bench https_load
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::sync::Arc;
use std::time::{Duration, Instant};

use rotor_e2e::fixtures::spawn_standalone_webhook;
use rotor_testkit::Pki;
use serde_json::json;

const REQUESTS: usize = 20_000;

fn review(i: usize) -> serde_json::Value {
    let containers: Vec<_> = (0..5)
        .map(|c| json!({ "name": format!("c{c}"), "image": "app:1", "command": ["/app"],
            "env": [{ "name": "DB", "value": "vault:secret/data/db#password" }, { "name": "URL", "value": "x${vault:secret/data/db#user}y" }] }))
        .collect();
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{i:012}"),
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
            "requestResource": { "group": "", "version": "v1", "resource": "pods" },
            "name": "", "namespace": "bench", "operation": "CREATE",
            "userInfo": { "username": "bench" },
            "object": { "apiVersion": "v1", "kind": "Pod", "metadata": { "generateName": "web-", "namespace": "bench" }, "spec": { "containers": containers } },
            "dryRun": false,
        }
    })
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    // 64 by default (the budget's load); ROTOR_BENCH_CLIENTS=8 shows latency below saturation.
    let clients: usize = std::env::var("ROTOR_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    rotor_testkit::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("bench-ca").unwrap();
    let extra = ["--log-level=warn".to_string()];
    let webhook = spawn_standalone_webhook(
        &rotor_e2e::fixtures::binary("rotor-webhook").unwrap(),
        &pki,
        dir.path(),
        &extra,
    )
    .await
    .unwrap();
    let (mut server, port) = (webhook.process, webhook.port);
    let pid = server.pid().unwrap();
    let idle_rss = peak_rss_kib(pid);

    let url = format!("https://localhost:{port}/mutate");
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..256)
            .map(|i| serde_json::to_vec(&review(i)).unwrap())
            .collect(),
    );
    let ca = reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = reqwest::Client::builder()
            .tls_certs_only([ca.clone()])
            .http1_only()
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .build()
            .unwrap();
        let (url, bodies, next) = (url.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= REQUESTS {
                    break;
                }
                let t = Instant::now();
                let ok = match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(bodies[i % bodies.len()].clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => r
                        .bytes()
                        .await
                        .map(|b| b.windows(5).any(|w| w == b"patch"))
                        .unwrap_or(false),
                    _ => false,
                };
                latencies.push(t.elapsed());
                if !ok {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let rss = peak_rss_kib(pid);
    server.stop(Duration::from_secs(5));
    println!(
        "| clients | requests | seconds | req/s | p50 ms | p99 ms | max ms | errors | peak RSS MiB (idle) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {clients} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {errors} | {:.1} ({:.1}) |",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*latencies.last().unwrap()),
        rss as f64 / 1024.0,
        idle_rss as f64 / 1024.0,
    );
}
