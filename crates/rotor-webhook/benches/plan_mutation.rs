//! In-process planning of typical pods (ARCHITECTURE.md budget: 5-container pod < 50 µs), planning
//! time against the size of a value (linear), and the size of an answer's patch as base64
//! against kube-core's array of numbers.

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use rotor_webhook::config::InjectConfig;
use rotor_webhook::plan::plan_mutation;
use serde_json::json;

fn pod(containers: usize) -> Pod {
    let containers: Vec<_> = (0..containers)
        .map(|i| {
            json!({
                "name": format!("c{i}"), "image": "app:1", "command": ["/app"], "args": ["--port", "8080"],
                "env": [
                    { "name": "DB_PASSWORD", "value": "vault:secret/data/db#password" },
                    { "name": "DB_URL", "value": "postgres://${vault:secret/data/db#user}:${vault:secret/data/db#password}@db/app" },
                    { "name": "PLAIN", "value": "x" },
                ],
                "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
            })
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": { "name": "p", "namespace": "n", "annotations": { "rotor.dev/vault-role": "app" } },
        "spec": { "containers": containers, "volumes": [{ "name": "data", "emptyDir": {} }] },
    }))
    .unwrap_or_default()
}

/// A one-container pod whose env value `V` is `value`.
fn pod_with_value(value: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": "p", "namespace": "n" },
        "spec": { "containers": [{ "name": "c", "image": "app:1", "command": ["/app"],
            "env": [{ "name": "V", "value": value }] }] },
    }))
    .unwrap_or_default()
}

/// A value of about `bytes` bytes: text with 64 inline references spread through it.
fn templated_value(bytes: usize) -> String {
    let filler = "x".repeat(bytes / 64);
    (0..64)
        .map(|i| format!("{filler}${{vault:secret/data/p{}#k}}", i % 8))
        .collect()
}

/// Prints the size of the answer to a 1,000-container pod with the patch as base64 (what the
/// webhook sends) and as kube-core's `Vec<u8>` would serialise it (a JSON array of numbers).
fn print_response_sizes(config: &InjectConfig) {
    use base64::Engine as _;
    let containers: Vec<_> = (0..1000)
        .map(|i| {
            json!({ "name": format!("c{i}"), "image": "app:1", "command": ["/app"],
            "env": [{ "name": "DB_PASSWORD", "value": "vault:secret/data/db#password" }] })
        })
        .collect();
    let p: Pod = serde_json::from_value(json!({ "metadata": { "name": "p", "namespace": "n" },
        "spec": { "containers": containers } }))
    .unwrap_or_default();
    if let Ok(rotor_webhook::plan::Plan::Patch(patch)) = plan_mutation(&p, config) {
        let bytes = patch.to_json();
        let base64 = base64::engine::general_purpose::STANDARD
            .encode(&bytes)
            .len()
            + 2;
        let array = serde_json::to_vec(&bytes)
            .map(|a| a.len())
            .unwrap_or_default();
        println!(
            "response patch of a 1,000-container pod: {} bytes of JSON patch; as base64 {base64} bytes, as an array of numbers {array} bytes ({:.2}x)",
            bytes.len(),
            array as f64 / base64 as f64
        );
    }
}

fn bench(c: &mut Criterion) {
    let config = InjectConfig {
        default_addr: Some("https://vault:8200".to_string()),
        ..InjectConfig::default()
    };
    for n in [1, 5] {
        let p = pod(n);
        c.bench_function(&format!("plan_mutation/{n}_containers"), |b| {
            b.iter(|| plan_mutation(std::hint::black_box(&p), &config))
        });
    }
    let plain: Pod = serde_json::from_value(json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "c", "image": "i" }] } }))
        .unwrap_or_default();
    c.bench_function("plan_mutation/no_references", |b| {
        b.iter(|| plan_mutation(std::hint::black_box(&plain), &config))
    });
    // Planning time against value size: a value with 64 references, and look-alikes that made
    // the old scanner quadratic ('${' that open nothing, up to the API server's 3 MiB).
    for kib in [8, 32, 128] {
        let p = pod_with_value(&templated_value(kib * 1024 - 2048));
        c.bench_function(&format!("plan_value/{kib}_KiB_64_references"), |b| {
            b.iter(|| plan_mutation(std::hint::black_box(&p), &config))
        });
    }
    for kib in [128, 512, 2048] {
        let p = pod_with_value(&"${x".repeat(kib * 1024 / 3));
        c.bench_function(&format!("plan_value/{kib}_KiB_lookalikes"), |b| {
            b.iter(|| plan_mutation(std::hint::black_box(&p), &config))
        });
    }
    print_response_sizes(&config);
}

criterion_group!(benches, bench);
criterion_main!(benches);
