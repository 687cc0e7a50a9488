//! The two admission paths side by side, same run, same API server: a referencing pod created
//! (dry-run: full admission, no etcd write) in a namespace only the chart's
//! MutatingAdmissionPolicy/ValidatingAdmissionPolicy see, and in one only rotor-webhook sees
//! (registered with the chart's conditions, over HTTPS on loopback). Reports the client's latency
//! (median, p90, p99) and the CPU time per create of kube-apiserver and of rotor-webhook, read
//! from /proc (stable where wall time on a shared VM is not).
//! Run: cargo bench -p rotor-e2e --bench admission_paths
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use rotor_e2e::policy::{POLICY_NS, TwoPaths, WEBHOOK_NS, two_paths};
use serde_json::json;

const WARMUP: usize = 30;
const CREATES: usize = 400;

/// The bench pod of the webhook's benches: 2 containers stating their command, 4 references.
fn bench_pod() -> Pod {
    let mut pod = json!({ "metadata": { "generateName": "web-" } });
    pod["spec"] = rotor_e2e::fixtures::bench_pod_spec();
    pod["spec"]["automountServiceAccountToken"] = json!(false);
    serde_json::from_value(pod).unwrap()
}

fn plain_pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": { "generateName": "plain-" },
        "spec": { "automountServiceAccountToken": false, "containers": [{
            "name": "app", "image": "app:1", "command": ["/app"],
            "env": [{ "name": "MODE", "value": "prod" }] }] },
    }))
    .unwrap()
}

/// User + system CPU time of process `pid` so far.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SC_CLK_TCK is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

struct Row {
    what: &'static str,
    median: Duration,
    p90: Duration,
    p99: Duration,
    apiserver_cpu: Duration,
    webhook_cpu: Duration,
}

async fn measure(paths: &TwoPaths, what: &'static str, ns: &str, pod: &Pod) -> Row {
    let pods: Api<Pod> = Api::namespaced(paths.stack.kube.clone(), ns);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    for _ in 0..WARMUP {
        pods.create(&dry, pod).await.unwrap();
    }
    let apiserver = paths.stack.api.process.pid().unwrap();
    let webhook = paths.webhook.process.pid().unwrap();
    let (api_before, hook_before) = (cpu(apiserver), cpu(webhook));
    let mut took = Vec::with_capacity(CREATES);
    for _ in 0..CREATES {
        let start = Instant::now();
        let created = pods.create(&dry, pod).await.unwrap();
        took.push(start.elapsed());
        assert!(created.spec.is_some());
    }
    let per = |d: Duration| d / CREATES as u32;
    took.sort();
    Row {
        what,
        median: took[CREATES / 2],
        p90: took[CREATES * 9 / 10],
        p99: took[CREATES * 99 / 100],
        apiserver_cpu: per(cpu(apiserver) - api_before),
        webhook_cpu: per(cpu(webhook) - hook_before),
    }
}

#[tokio::main]
async fn main() {
    let paths = two_paths().await.unwrap();
    let mut rows = Vec::new();
    // Twice, alternating, so that a noisy neighbour on the VM shows as a spread between runs.
    for _ in 0..2 {
        rows.push(measure(&paths, "bench pod, policy", POLICY_NS, &bench_pod()).await);
        rows.push(measure(&paths, "bench pod, webhook", WEBHOOK_NS, &bench_pod()).await);
        rows.push(measure(&paths, "pod without references", POLICY_NS, &plain_pod()).await);
    }
    println!(
        "| create (dry-run), {CREATES} in a row | median | p90 | p99 | kube-apiserver CPU per create | rotor-webhook CPU per create |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in rows {
        println!(
            "| {} | {:.2?} | {:.2?} | {:.2?} | {} µs | {} µs |",
            r.what,
            r.median,
            r.p90,
            r.p99,
            r.apiserver_cpu.as_micros(),
            r.webhook_cpu.as_micros()
        );
    }
}
