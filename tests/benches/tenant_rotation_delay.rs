//! One tenant's rotation delay (secret written -> its Deployment's template patched) while
//! another tenant churns, beside an allowlisted store that resets every connection or never
//! answers, and beside 2,000 watched paths read path by path, against the release reloader, a
//! real API server and OpenBao (poll interval 1 s, settle 0). Each row is 5 rotations of team
//! B's secret, with the reloader's polls completed between the write and the rollout. Prints a
//! Markdown table.
//! Run: cargo bench -p rotor-e2e --bench tenant_rotation_delay
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::time::{Duration, Instant};

use rotor_e2e::observe::{metric, wait_until};
use rotor_e2e::tenants::{Tenants, hanging_store, resetting_store, tenants};

const ROTATIONS: usize = 5;

/// Rotates team B's secret `ROTATIONS` times; the delay until each rollout and the polls the
/// reloader (admin address `admin`) completed meanwhile.
async fn team_b_delays(t: &Tenants, admin: &str) -> Vec<(Duration, u64)> {
    let mut delays = Vec::new();
    for i in 0..ROTATIONS {
        let before = t.state(&t.b, "quiet").await.unwrap().1;
        let polls = metric(admin, "rotor_reloader_polls_total").await.unwrap();
        t.put("quiet", &format!("rotated-{i}")).await.unwrap();
        let started = Instant::now();
        wait_until("team B rolled", Duration::from_secs(120), || async {
            Ok(t.state(&t.b, "quiet").await?.1 != before)
        })
        .await
        .unwrap();
        let took = started.elapsed();
        let polled = metric(admin, "rotor_reloader_polls_total").await.unwrap() - polls;
        delays.push((took, polled as u64));
        // Rollouts are stamped to the second: the next one must carry a new stamp.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    delays
}

fn row(name: &str, mut delays: Vec<(Duration, u64)>) {
    let most_polls = delays.iter().map(|(_, p)| *p).max().unwrap_or_default();
    delays.sort();
    let s = |d: &(Duration, u64)| d.0.as_secs_f64();
    println!(
        "| {name} | {ROTATIONS} | {:.1} | {:.1} | {:.1} | {most_polls} |",
        s(&delays[0]),
        s(&delays[delays.len() / 2]),
        s(&delays[delays.len() - 1])
    );
}

async fn quiet_tenant(t: &Tenants) {
    t.put("quiet", "0").await.unwrap();
    t.deployment(&t.b.clone(), "quiet", &["quiet".to_string()], None)
        .await
        .unwrap();
}

/// The row `name`: team B's delays while team A's workload names the allowlisted store on
/// `port`, which misbehaves.
async fn beside_a_bad_store(name: &str, port: u16) {
    let t = tenants().await.unwrap();
    quiet_tenant(&t).await;
    let bad = format!("http://127.0.0.1:{port}");
    t.deployment(&t.a.clone(), "on-bad-store", &["x".to_string()], Some(&bad))
        .await
        .unwrap();
    let (_reloader, admin) = t
        .reloader(&[format!("--addr-allowlist={bad}")])
        .await
        .unwrap();
    t.recorded(&t.b, "quiet").await.unwrap();
    row(name, team_b_delays(&t, &admin).await);
}

#[tokio::main]
async fn main() {
    println!("| beside team B | rotations | min s | median s | max s | most polls write -> roll |");
    println!("| --- | --- | --- | --- | --- | --- |");
    {
        let t = tenants().await.unwrap();
        quiet_tenant(&t).await;
        let (_reloader, admin) = t
            .reloader(&["--max-rollouts-per-poll=1".to_string()])
            .await
            .unwrap();
        t.recorded(&t.b, "quiet").await.unwrap();
        row("nothing", team_b_delays(&t, &admin).await);
    }
    {
        let t = tenants().await.unwrap();
        quiet_tenant(&t).await;
        t.churners(4).await.unwrap();
        let (_reloader, admin) = t
            .reloader(&["--max-rollouts-per-poll=1".to_string()])
            .await
            .unwrap();
        t.recorded(&t.b, "quiet").await.unwrap();
        let churn = t.churn().unwrap();
        row(
            "team A: 4 workloads, its secret rotated every 0.5 s, 1 rollout per poll",
            team_b_delays(&t, &admin).await,
        );
        drop(churn);
    }
    let (port, _accepted) = resetting_store().await.unwrap();
    beside_a_bad_store("team A's allowlisted store resets every connection", port).await;
    let (port, _accepted) = hanging_store().await.unwrap();
    beside_a_bad_store("team A's allowlisted store accepts and never answers", port).await;
    {
        // The third pass's scale finding: 2,000 watched paths, each in a directory of its own,
        // so the store is read path by path (10 Deployments of 200).
        let t = tenants().await.unwrap();
        quiet_tenant(&t).await;
        let paths: Vec<String> = (0..2_000).map(|i| format!("wide/{i:04}/s")).collect();
        for chunk in paths.chunks(100) {
            for put in futures::future::join_all(chunk.iter().map(|p| t.put(p, "0"))).await {
                put.unwrap();
            }
        }
        for (i, workload) in paths.chunks(200).enumerate() {
            t.deployment(&t.a.clone(), &format!("wide-{i}"), workload, None)
                .await
                .unwrap();
        }
        let (_reloader, admin) = t.reloader(&[]).await.unwrap();
        t.recorded(&t.b, "quiet").await.unwrap();
        // Team A's reads are on: two polls' worth of its per-path reads (its own workloads are
        // recorded in turns of 200 paths, each followed by its namespace's rest: by design its
        // size delays only itself).
        wait_until(
            "team A's per-path reads",
            Duration::from_secs(120),
            || async { Ok(metric(&admin, "rotor_reloader_store_requests_total").await? >= 400.0) },
        )
        .await
        .unwrap();
        row(
            "team A: 2,000 paths read path by path (10 Deployments of 200)",
            team_b_delays(&t, &admin).await,
        );
    }
}
