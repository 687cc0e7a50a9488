//! rotor-reloader with the AWS store family: a real kube-apiserver, a real OpenBao and moto
//! (Secrets Manager, SSM, STS). Workloads that reference AWS secrets and parameters roll exactly
//! once when a new version is written, a workload reading Vault and AWS together rolls for
//! either, pinned references never roll, a namespace's rule over which ARNs it may use holds,
//! each poll costs one listing request per service (not one per secret), and a canary value
//! never reaches the reloader's log.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use rotor_e2e::fixtures::{
    ReloaderEnv, binary, reloader_aws_env, start_reloader_in, write_reloader_token,
};
use rotor_e2e::node_pods::seed_reloader_role;
use rotor_e2e::observe::{metric, wait_until};
use rotor_testkit::moto::{ACCOUNT, Moto};
use rotor_testkit::{Stack, StackOptions};
use serde_json::{Value, json};

const CANARY: &str = "canary-aws-reloader-77e1-never-log-me";
/// The audience `seed_reloader_role` binds (the token serves as the AWS web identity too).
const AUDIENCE: &str = "rotor";
const REGION: &str = "eu-west-1";

fn deployment(name: &str, values: &[&str]) -> Result<Deployment> {
    let env: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| json!({ "name": format!("S{i}"), "value": v }))
        .collect();
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": { "rotor.dev/reload": "true" } },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "app:1", "command": ["/app"], "env": env }] }
            }
        }
    }))?)
}

/// (generation, recorded versions) of a Deployment.
async fn state(api: &Api<Deployment>, name: &str) -> Result<(i64, Option<String>)> {
    let d = api.get(name).await?;
    Ok((
        d.metadata.generation.unwrap_or(0),
        d.annotations().get("rotor.dev/observed-versions").cloned(),
    ))
}

async fn generations(api: &Api<Deployment>, names: &[&str]) -> Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for name in names {
        out.insert(name.to_string(), state(api, name).await?.0);
    }
    Ok(out)
}

async fn polls(admin: &str) -> Result<u64> {
    Ok(metric(admin, "rotor_reloader_polls_total").await? as u64)
}

/// The reloader of namespace `ns`, logged in to moto with a web identity token of its own
/// ServiceAccount, with `watchable` (a `--watchable-paths=` flag). The directory holds the token.
async fn start_aws_reloader(
    stack: &Stack,
    ns: &str,
    moto: &Moto,
    watchable: &str,
) -> Result<(rotor_testkit::ManagedProcess, String, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    write_reloader_token(stack, ns, AUDIENCE, &token_file).await?;
    let token = token_file.display().to_string();
    let aws_env = reloader_aws_env(&moto.addr, &token);
    let env: Vec<(&str, &str)> = aws_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let extra = vec![format!("--watch-namespace={ns}"), watchable.to_string()];
    let (process, admin) = start_reloader_in(
        stack,
        &binary("rotor-reloader")?,
        "reloader-aws",
        &token_file,
        ns,
        &extra,
        ReloaderEnv {
            kubeconfig: stack.kubeconfig(),
            env: &env,
        },
    )
    .await?;
    Ok((process, admin, dir))
}

#[tokio::test]
async fn aws_references_roll_their_workloads_once_per_new_version() -> Result<()> {
    let stack = Stack::start(StackOptions {
        controller_manager: false,
        registry: false,
        node: false,
    })
    .await?;
    // Not "aws...": SSM reserves names that begin with aws or ssm.
    let ns = stack.namespace("tenant").await?;
    stack.service_account(&ns, "rotor-reloader").await?;
    stack.enable_bao_kubernetes_auth("kubernetes").await?;
    seed_reloader_role(&stack, &ns).await?;
    let bao = stack.bao_admin()?;
    bao.put_kv2("secret", "v", json!({ "value": CANARY }))
        .await?;
    let moto = Moto::start(stack.dir()).await?;
    let aws = moto.admin()?;
    let db = aws
        .create_secret(
            REGION,
            &format!("{ns}/db"),
            &format!(r#"{{"password":"{CANARY}"}}"#),
        )
        .await?;
    // A partial ARN (no random suffix), as users write them.
    let db_partial = db.rsplit_once('-').unwrap().0.to_string();
    aws.put_parameter(REGION, &format!("/{ns}/url"), CANARY)
        .await?;
    let url = format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{ns}/url");
    let theirs = aws.create_secret(REGION, "team-b/db", CANARY).await?;

    let api: Api<Deployment> = Api::namespaced(stack.kube.clone(), &ns);
    let workloads: Vec<(&str, Vec<String>)> = vec![
        ("sm", vec![format!("{db}#password")]),
        ("sm-partial", vec![format!("{db_partial}#password")]),
        ("ssm", vec![url.clone()]),
        (
            "both",
            vec![
                "vault:secret/data/v#value".to_string(),
                format!("{db}#password"),
            ],
        ),
        ("pinned", vec![format!("{db}#password#AWSPREVIOUS")]),
        ("theirs", vec![theirs.clone()]),
    ];
    for (name, values) in &workloads {
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        api.create(&PostParams::default(), &deployment(name, &values)?)
            .await?;
    }
    let names: Vec<&str> = workloads.iter().map(|(n, _)| *n).collect();

    // Each namespace may have watched only its own ARNs (and its Vault paths).
    let watchable = format!(
        "--watchable-paths=arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{{namespace}}/*,arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{{namespace}}/*,secret/data/*"
    );
    let (process, admin, _dir) = start_aws_reloader(&stack, &ns, &moto, &watchable).await?;

    // First sight: versions recorded, nothing rolls; the other tenant's ARN is not watched.
    let watched = ["sm", "sm-partial", "ssm", "both"];
    wait_until(
        "the AWS workloads have versions recorded",
        Duration::from_secs(60),
        || async {
            for name in watched {
                if state(&api, name).await?.1.is_none() {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    assert!(
        state(&api, "pinned").await?.1.is_none(),
        "pinned references are not watched"
    );
    let events: Api<Event> = Api::namespaced(stack.kube.clone(), &ns);
    wait_until(
        "an Event says the other tenant's ARN is not watched",
        Duration::from_secs(30),
        || async {
            let list = events.list(&ListParams::default()).await?;
            Ok(list.items.iter().any(|e| {
                e.reason.as_deref() == Some("PathNotWatched")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("theirs")
                    && e.note.as_deref().is_some_and(|n| n.contains(&theirs))
            }))
        },
    )
    .await?;
    let before = generations(&api, &names).await?;

    // Requests per poll: one ListSecrets and one DescribeParameters, however many ARNs.
    let (polls_before, requests_before) = (polls(&admin).await?, moto.api_requests()?);
    let target = polls_before + 5;
    wait_until("5 more polls", Duration::from_secs(60), || async {
        Ok(polls(&admin).await? >= target)
    })
    .await?;
    let polled = polls(&admin).await? - polls_before;
    let requests = (moto.api_requests()? - requests_before) as u64;
    assert!(
        requests <= 2 * (polled + 1),
        "{requests} AWS requests in {polled} polls: more than one per service per poll"
    );

    // A new version of the secret: the three workloads reading it roll once, nothing else.
    aws.put_secret_value(REGION, &db, r#"{"password":"rotated"}"#)
        .await?;
    wait_until(
        "the workloads reading the secret rolled",
        Duration::from_secs(60),
        || async {
            let now = generations(&api, &names).await?;
            Ok(["sm", "sm-partial", "both"]
                .iter()
                .all(|n| now[*n] > before[*n]))
        },
    )
    .await?;
    let target = polls(&admin).await? + 4;
    wait_until("4 more polls", Duration::from_secs(60), || async {
        Ok(polls(&admin).await? >= target)
    })
    .await?;
    let after = generations(&api, &names).await?;
    for (name, rolled) in [
        ("sm", 1),
        ("sm-partial", 1),
        ("both", 1),
        ("ssm", 0),
        ("pinned", 0),
        ("theirs", 0),
    ] {
        assert_eq!(
            after[name] - before[name],
            rolled,
            "{name}: {before:?} -> {after:?}"
        );
    }
    let list = events.list(&ListParams::default()).await?;
    assert!(
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("SecretRotated")
                && e.note.as_deref().is_some_and(|n| n.contains(&db))),
        "an Event names the ARN that rotated"
    );

    // A new parameter version rolls its workload once.
    aws.put_parameter(REGION, &format!("/{ns}/url"), "v2")
        .await?;
    wait_until(
        "the parameter's workload rolled",
        Duration::from_secs(60),
        || async { Ok(state(&api, "ssm").await?.0 > after["ssm"]) },
    )
    .await?;
    let target = polls(&admin).await? + 4;
    wait_until("4 more polls", Duration::from_secs(60), || async {
        Ok(polls(&admin).await? >= target)
    })
    .await?;
    let last = generations(&api, &names).await?;
    assert_eq!(last["ssm"] - after["ssm"], 1);
    assert_eq!(last["sm"], after["sm"], "the secret did not change again");

    let log = std::fs::read_to_string(process.log_path())?;
    assert!(
        !log.contains(CANARY) && !log.contains("rotated\""),
        "a value reached the reloader's log"
    );
    Ok(())
}

/// Issue 32: a `ListSecrets` name filter is a prefix, so a short name (`...:secret:NS/p`)
/// matching over 1,000 secrets used up the batch's pages and a name beside it in the batch was
/// never listed (never rolled in 40 s, 276 requests). Now an unreached name is described on
/// its own: it rolls, and each poll costs at most one request more per such name.
#[tokio::test]
async fn a_short_name_matching_a_thousand_secrets_hides_no_other_name() -> Result<()> {
    let stack = Stack::start(StackOptions {
        controller_manager: false,
        registry: false,
        node: false,
    })
    .await?;
    let ns = stack.namespace("flood").await?;
    stack.service_account(&ns, "rotor-reloader").await?;
    stack.enable_bao_kubernetes_auth("kubernetes").await?;
    seed_reloader_role(&stack, &ns).await?;
    let moto = Moto::start(stack.dir()).await?;
    let aws = moto.admin()?;
    let short = aws.create_secret(REGION, &format!("{ns}/p"), "x").await?;
    for i in 0..1_010 {
        aws.create_secret(REGION, &format!("{ns}/p{i:04}"), "x")
            .await?;
    }
    let victim = aws
        .create_secret(REGION, &format!("{ns}/victim"), CANARY)
        .await?;
    let short_partial = short.rsplit_once('-').unwrap().0.to_string();
    let api: Api<Deployment> = Api::namespaced(stack.kube.clone(), &ns);
    for (name, arn) in [("flood", &short_partial), ("victim", &victim)] {
        api.create(&PostParams::default(), &deployment(name, &[arn])?)
            .await?;
    }
    let watchable = "--watchable-paths=arn:aws:secretsmanager:*".to_string();
    let (process, admin, _dir) = start_aws_reloader(&stack, &ns, &moto, &watchable).await?;
    wait_until(
        "the victim's version recorded",
        Duration::from_secs(60),
        || async { Ok(state(&api, "victim").await?.1.is_some()) },
    )
    .await?;
    let before = state(&api, "victim").await?.0;
    aws.put_secret_value(REGION, &victim, "rotated").await?;
    wait_until("the victim rolled", Duration::from_secs(60), || async {
        Ok(state(&api, "victim").await?.0 > before)
    })
    .await?;
    // Per poll: the batch's 10 pages and one DescribeSecret for each name they did not reach.
    let (polls_before, requests_before) = (polls(&admin).await?, moto.api_requests()?);
    let target = polls_before + 3;
    wait_until("3 more polls", Duration::from_secs(60), || async {
        Ok(polls(&admin).await? >= target)
    })
    .await?;
    let polled = polls(&admin).await? - polls_before;
    let requests = (moto.api_requests()? - requests_before) as u64;
    assert!(
        requests <= 12 * (polled + 1),
        "{requests} AWS requests in {polled} polls"
    );
    let log = std::fs::read_to_string(process.log_path())?;
    assert!(!log.contains(CANARY), "a value reached the reloader's log");
    Ok(())
}
