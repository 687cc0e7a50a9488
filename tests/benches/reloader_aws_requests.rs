//! The reloader's AWS requests per poll for 500 secrets and 500 parameters, against the real
//! kube-apiserver and moto: 100 Deployments, each referencing 5 Secrets Manager secrets and 5 SSM
//! parameters (1,000 distinct ARNs in one region). Counts the AWS API requests moto logged and
//! the reloader's `rotor_reloader_store_requests_total` over `ROTOR_BENCH_POLLS` (10) polls, and
//! prints them as Markdown beside what one request per secret would cost (`--poll-budget=0`, so
//! every cycle polls AWS).
//! Run: cargo bench -p rotor-e2e --bench reloader_aws_requests
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use rotor_e2e::fixtures::{ReloaderEnv, binary, reloader_aws_env, start_reloader_in};
use rotor_e2e::observe::{metric, wait_until};
use rotor_testkit::moto::{ACCOUNT, Moto};
use rotor_testkit::{Stack, StackOptions};
use serde_json::json;

const SECRETS: usize = 500;
const REGION: &str = "eu-west-1";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rotor_testkit::install_crypto_provider();
    let polls: u64 = std::env::var("ROTOR_BENCH_POLLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let stack = Stack::start(StackOptions {
        controller_manager: false,
        registry: false,
        node: false,
    })
    .await?;
    let ns = stack.namespace("bench").await?;
    stack.service_account(&ns, "rotor-reloader").await?;
    let moto = Moto::start(stack.dir()).await?;
    let aws = moto.admin()?;
    let started = Instant::now();
    let mut secrets = Vec::with_capacity(SECRETS);
    for i in 0..SECRETS {
        secrets.push(
            aws.create_secret(
                REGION,
                &format!("bench/s{i:04}"),
                &format!(r#"{{"k":"{i}"}}"#),
            )
            .await?,
        );
        aws.put_parameter(REGION, &format!("/bench/p{i:04}"), "v")
            .await?;
    }
    eprintln!(
        "wrote {SECRETS} secrets and {SECRETS} parameters in {:.1?}",
        started.elapsed()
    );
    let api: Api<Deployment> = Api::namespaced(stack.kube.clone(), &ns);
    for d in 0..SECRETS / 5 {
        let env: Vec<_> = (0..5)
            .flat_map(|j| {
                let i = d * 5 + j;
                [
                    json!({ "name": format!("S{j}"), "value": format!("{}#k", secrets[i]) }),
                    json!({ "name": format!("P{j}"), "value": format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/bench/p{i:04}") }),
                ]
            })
            .collect();
        let name = format!("w{d}");
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": { "name": name, "annotations": { "rotor.dev/reload": "true" } },
            "spec": { "selector": { "matchLabels": { "app": name } },
              "template": { "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "app:1", "command": ["/app"], "env": env }] } } }
        }))?;
        api.create(&PostParams::default(), &deployment).await?;
    }
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    std::fs::write(
        &token,
        stack
            .service_account_token(&ns, "rotor-reloader", "sts.amazonaws.com", 3600)
            .await?,
    )?;
    let token = token.display().to_string();
    let aws_env = reloader_aws_env(&moto.addr, &token);
    let env: Vec<(&str, &str)> = aws_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Every ARN every poll: one namespace holds all 1,000.
    let extra = vec![
        format!("--watch-namespace={ns}"),
        "--paths-per-namespace-per-poll=1000".to_string(),
        // Every cycle polls AWS (no rest), so requests per cycle are requests per poll.
        "--poll-budget=0".to_string(),
    ];
    let (_reloader, admin) = start_reloader_in(
        &stack,
        &binary("rotor-reloader")?,
        "reloader-bench",
        std::path::Path::new(&token),
        &ns,
        &extra,
        ReloaderEnv {
            kubeconfig: stack.kubeconfig(),
            env: &env,
        },
    )
    .await?;
    wait_until(
        "every Deployment has its versions recorded",
        Duration::from_secs(180),
        || async {
            let list = api.list(&Default::default()).await?;
            Ok(list.items.iter().all(|d| {
                d.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("rotor.dev/observed-versions"))
            }) && list.items.len() == SECRETS / 5)
        },
    )
    .await?;
    let polls_now = || async {
        Ok::<u64, anyhow::Error>(metric(&admin, "rotor_reloader_polls_total").await? as u64)
    };
    let first = polls_now().await?;
    wait_until("one more poll", Duration::from_secs(60), || async {
        Ok(polls_now().await? > first)
    })
    .await?;
    let (p0, r0, m0, t0) = (
        polls_now().await?,
        metric(&admin, "rotor_reloader_store_requests_total").await?,
        moto.api_requests()?,
        Instant::now(),
    );
    wait_until(
        &format!("{polls} more polls"),
        Duration::from_secs(600),
        || async { Ok(polls_now().await? >= p0 + polls) },
    )
    .await?;
    let (p1, r1, m1) = (
        polls_now().await?,
        metric(&admin, "rotor_reloader_store_requests_total").await?,
        moto.api_requests()?,
    );
    let n = (p1 - p0) as f64;
    let poll_seconds = metric(&admin, "rotor_reloader_poll_duration_seconds_sum").await?
        / metric(&admin, "rotor_reloader_poll_duration_seconds_count")
            .await?
            .max(1.0);
    println!(
        "command: cargo bench -p rotor-e2e --bench reloader_aws_requests  date: {}  machine: {} cores",
        k8s_openapi::jiff::Timestamp::now(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("\n| figure | 500 secrets + 500 parameters, 100 Deployments, one region (moto) |");
    println!("| --- | --- |");
    println!("| polls measured | {n} in {:.1?} |", t0.elapsed());
    println!(
        "| reloader's store requests per poll (`rotor_reloader_store_requests_total`) | {:.1} |",
        (r1 - r0) / n
    );
    println!(
        "| AWS API requests per poll (moto's access log) | {:.1} |",
        (m1 - m0) as f64 / n
    );
    println!(
        "| one request per secret and parameter (DescribeSecret / GetParameter) would be | {} |",
        2 * SECRETS
    );
    println!(
        "| mean AWS poll time (`poll_duration_seconds`, moto in Python) | {:.0} ms |",
        poll_seconds * 1000.0
    );
    Ok(())
}
