//! Legitimate review latency on the release rotor-webhook while slow-body clients hold the
//! HTTPS port: 0, 12 and 24 attackers of each shape (a byte a second from as many addresses;
//! all but the last byte then a stall, from one address and from as many addresses). Each row
//! is 300 reviews sent one after another from 127.0.0.1 after the attack took hold. Prints a
//! Markdown table. Run: cargo bench -p rotor-e2e --bench admission_under_attack
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::sync::Arc;
use std::time::Duration;

use rotor_e2e::fixtures::{one_reference_pod, pod_review, spawn_webhook};
use rotor_e2e::observe::metric;
use rotor_e2e::slow_bodies::{Attack, attack, legitimate_reviews, quantile};
use rotor_testkit::Pki;

const REVIEWS: usize = 300;

#[tokio::main]
async fn main() {
    rotor_testkit::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("bench-ca").unwrap();
    let mut webhook = spawn_webhook(
        &rotor_e2e::fixtures::binary("rotor-webhook").unwrap(),
        &pki,
        dir.path(),
        "https://vault:8200",
        &[],
        &["--log-level=warn".to_string()],
    )
    .await
    .unwrap();
    let (port, ca) = (webhook.port, pki.ca_pem().to_string());
    let body = Arc::new(serde_json::to_vec(&pod_review(one_reference_pod())).unwrap());
    println!(
        "| attackers | shape | from | body bytes held (MiB) | p50 ms | p99 ms | max ms | refused |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let shapes = [
        (
            Attack::Trickle,
            false,
            "a byte a second",
            "one address each",
        ),
        (
            Attack::FillAndStall,
            true,
            "all but one byte, stall",
            "one address",
        ),
        (
            Attack::FillAndStall,
            false,
            "all but one byte, stall",
            "one address each",
        ),
    ];
    for (shape, shared, name, from) in shapes {
        for count in [0usize, 12, 24] {
            if count == 0 && shape != Attack::Trickle {
                continue;
            }
            let attackers = attack(port, &ca, count, shape, shared);
            // Let the attack take hold: connections open, bodies as full as they will get.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let held = metric(&webhook.admin, "rotor_webhook_body_bytes_held")
                .await
                .unwrap();
            let (mut latencies, refused) = legitimate_reviews(port, &ca, body.clone(), REVIEWS)
                .await
                .unwrap();
            drop(attackers);
            latencies.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "| {count} | {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {refused} |",
                if count == 0 { "none" } else { name },
                if count == 0 { "-" } else { from },
                held / 1024.0 / 1024.0,
                ms(quantile(&latencies, 0.5)),
                ms(quantile(&latencies, 0.99)),
                ms(latencies.last().copied().unwrap_or_default()),
            );
            // Let the cut connections go before the next row.
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
    }
    webhook.process.stop(Duration::from_secs(5));
}
