//! In-process planning of typical pods (DESIGN.md budget: 5-container pod < 50 µs).

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
