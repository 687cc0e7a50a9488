//! Legitimate review latency on the release rotor-webhook while slow-body clients hold the
//! HTTPS port: 0, 12 and 24 attackers of each shape (a byte a second from as many addresses;
//! all but the last byte then a stall, from one address and from as many addresses). Each row
//! is 300 reviews sent one after another from 127.0.0.1 after the attack took hold. Then the
//! third adversarial pass's shapes (issue 32): 6 and 8 addresses x 2 stalled bodies (they filled
//! the total), and 520 idle TLS / HTTP/2-preface-only connections from one address plus 24
//! addresses x 22 (they held every connection slot), the reviews each on a new connection,
//! measured on a runtime of their own. Prints a Markdown table.
//! Run: cargo bench -p rotor-e2e --bench admission_under_attack
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::sync::Arc;
use std::time::Duration;

use rotor_e2e::fixtures::{one_reference_pod, pod_review, spawn_webhook};
use rotor_e2e::observe::metric;
use rotor_e2e::slow_bodies::{
    Attack, Attackers, attack, legitimate_reviews, legitimate_reviews_on_new_connections,
    measured_apart, quantile,
};
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
    // The third pass's shapes: (label, attack calls (shape, count, one address), new connections).
    type Calls = Vec<(Attack, usize, bool)>;
    let many = |shape| -> Calls { (0..11).map(|_| (shape, 24, false)).collect() };
    let rows: Vec<(&str, Calls, bool)> = vec![
        (
            "6 addresses x 2, all but one byte, stall",
            vec![(Attack::FillAndStall, 6, false); 2],
            false,
        ),
        (
            "8 addresses x 2, all but one byte, stall",
            vec![(Attack::FillAndStall, 8, false); 2],
            false,
        ),
        (
            "520 idle TLS, one address",
            vec![(Attack::Idle, 520, true)],
            true,
        ),
        (
            "520 HTTP/2 preface only, one address",
            vec![(Attack::Http2Preface, 520, true)],
            true,
        ),
        (
            "520 idle from one address + 24 addresses x 11 idle + 24 x 11 preface",
            std::iter::once((Attack::Idle, 520, true))
                .chain(many(Attack::Idle))
                .chain(many(Attack::Http2Preface))
                .collect(),
            true,
        ),
    ];
    for (label, calls, new_connections) in rows {
        let attackers: Vec<Attackers> = calls
            .iter()
            .map(|(shape, count, shared)| attack(port, &ca, *count, *shape, *shared))
            .collect();
        tokio::time::sleep(Duration::from_secs(6)).await;
        let held = metric(&webhook.admin, "rotor_webhook_body_bytes_held")
            .await
            .unwrap();
        let (port, ca, body) = (port, ca.clone(), body.clone());
        let (mut latencies, refused) = measured_apart(async move {
            if new_connections {
                legitimate_reviews_on_new_connections(port, &ca, body, 100).await
            } else {
                legitimate_reviews(port, &ca, body, REVIEWS).await
            }
        })
        .unwrap();
        drop(attackers);
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {} | {label} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {refused} |",
            calls.iter().map(|(_, n, _)| n).sum::<usize>(),
            if new_connections {
                "new connection per review"
            } else {
                "one connection"
            },
            held / 1024.0 / 1024.0,
            ms(quantile(&latencies, 0.5)),
            ms(quantile(&latencies, 0.99)),
            ms(latencies.last().copied().unwrap_or_default()),
        );
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    for reason in ["body_cut", "peer_connection_limit", "connection_limit"] {
        let series = format!("rotor_webhook_refused_total{{reason=\"{reason}\"}}");
        let n = metric(&webhook.admin, &series).await.unwrap_or(0.0);
        println!("\n{series}: {n}");
    }
    webhook.process.stop(Duration::from_secs(5));
}
