//! One tenant's rotation delay (secret written -> its Deployment's template patched) while
//! another tenant churns, and beside an allowlisted store that resets every connection, against
//! the release reloader, a real API server and OpenBao (poll interval 1 s, settle 0). Each row is
//! 5 rotations of team B's secret. Prints a Markdown table.
//! Run: cargo bench -p rotor-e2e --bench tenant_rotation_delay
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::time::{Duration, Instant};

use rotor_e2e::observe::wait_until;
use rotor_e2e::tenants::{Tenants, resetting_store, tenants};

const ROTATIONS: usize = 5;

/// Rotates team B's secret `ROTATIONS` times; the delay until each rollout.
async fn team_b_delays(t: &Tenants) -> Vec<Duration> {
    let mut delays = Vec::new();
    for i in 0..ROTATIONS {
        let before = t.state(&t.b, "quiet").await.unwrap().1;
        t.put("quiet", &format!("rotated-{i}")).await.unwrap();
        let started = Instant::now();
        wait_until("team B rolled", Duration::from_secs(120), || async {
            Ok(t.state(&t.b, "quiet").await?.1 != before)
        })
        .await
        .unwrap();
        delays.push(started.elapsed());
        // Rollouts are stamped to the second: the next one must carry a new stamp.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    delays
}

fn row(name: &str, mut delays: Vec<Duration>) {
    delays.sort();
    let s = |d: Duration| d.as_secs_f64();
    println!(
        "| {name} | {ROTATIONS} | {:.1} | {:.1} | {:.1} |",
        s(delays[0]),
        s(delays[delays.len() / 2]),
        s(delays[delays.len() - 1])
    );
}

async fn quiet_tenant(t: &Tenants) {
    t.put("quiet", "0").await.unwrap();
    t.deployment(&t.b.clone(), "quiet", &["quiet".to_string()], None)
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    println!("| beside team B | rotations | min s | median s | max s |");
    println!("| --- | --- | --- | --- | --- |");
    {
        let t = tenants().await.unwrap();
        quiet_tenant(&t).await;
        let _reloader = t
            .reloader(&["--max-rollouts-per-poll=1".to_string()])
            .await
            .unwrap();
        t.recorded(&t.b, "quiet").await.unwrap();
        row("nothing", team_b_delays(&t).await);
    }
    {
        let t = tenants().await.unwrap();
        quiet_tenant(&t).await;
        t.churners(4).await.unwrap();
        let _reloader = t
            .reloader(&["--max-rollouts-per-poll=1".to_string()])
            .await
            .unwrap();
        t.recorded(&t.b, "quiet").await.unwrap();
        let churn = t.churn().unwrap();
        row(
            "team A: 4 workloads, its secret rotated every 0.5 s, 1 rollout per poll",
            team_b_delays(&t).await,
        );
        drop(churn);
    }
    {
        let t = tenants().await.unwrap();
        quiet_tenant(&t).await;
        let (port, _accepted) = resetting_store().await.unwrap();
        let bad = format!("http://127.0.0.1:{port}");
        t.deployment(&t.a.clone(), "on-bad-store", &["x".to_string()], Some(&bad))
            .await
            .unwrap();
        let _reloader = t
            .reloader(&[format!("--addr-allowlist={bad}")])
            .await
            .unwrap();
        t.recorded(&t.b, "quiet").await.unwrap();
        row(
            "team A's allowlisted store resets every connection",
            team_b_delays(&t).await,
        );
    }
}
