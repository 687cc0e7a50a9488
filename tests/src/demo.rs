//! The whole flow on the local control plane and a real node, with progress output: the
//! README's first command (`scripts/demo.sh`, and `scripts/demo.sh aws` for AWS Secrets Manager
//! served by moto) and an end-to-end test (`tests/e2e/demo.rs`).

use rotor_core::contract::EventReason;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use rotor_core::contract::BinarySource;
use rotor_testkit::moto::Moto;
use rotor_testkit::{Stack, StackOptions};
use serde_json::json;

use crate::fixtures::{ReloaderEnv, binary, reloader_aws_env, start_reloader_in};
use crate::node_pods::{
    binary_source, pod_names, push_node_images, replica_set_count, seed_app_secret,
    seed_reloader_role, shop_deployment, start_node_webhook, wait_for, wait_for_log,
    wait_for_observed_versions, wait_for_replacement,
};

/// What the demo saw, for the test to check.
#[derive(Debug)]
pub struct DemoReport {
    pub stack_startup: Duration,
    pub total: Duration,
    /// The first pod's log (rotor-init's lines, then the app's, the value masked).
    pub first_log: String,
    /// The log of the pod the rotation brought up.
    pub rotated_log: String,
    pub first_pod: String,
    pub rotated_pod: String,
    /// The pods of the Deployment once the rollout finished.
    pub pods_after: Vec<String>,
    pub replica_sets_before: usize,
    pub replica_sets_after: usize,
    pub event_note: String,
    /// How rotor-init reached the pod (image volume on a node that mounts them, else the copy).
    pub binary_source: BinarySource,
    /// The init containers of the first pod as the API server stored it.
    pub first_pod_init_containers: Vec<String>,
}

/// Which store the demo's secret lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// OpenBao: `vault:secret/data/demo/db#password`.
    Vault,
    /// AWS Secrets Manager (moto): `arn:aws:secretsmanager:...:secret:demo/db#password`, read
    /// with the pod's web identity (IRSA's variables and projected token, as EKS sets them).
    Aws,
}

impl Family {
    /// `scripts/demo.sh [aws]`.
    pub fn from_args(args: &[String]) -> Result<Self> {
        match args {
            [] => Ok(Self::Vault),
            [one] if one == "aws" => Ok(Self::Aws),
            _ => anyhow::bail!(
                "usage: scripts/demo.sh [aws]  (no argument: OpenBao; aws: AWS Secrets Manager served by moto)"
            ),
        }
    }
}

/// Where the demo's AWS secret lives, and the IRSA role named in the pod (moto does not check it).
const AWS_REGION: &str = "eu-west-1";
const AWS_ROLE: &str = "arn:aws:iam::123456789012:role/shop";
/// Where EKS mounts the IRSA token, and its audience.
const IRSA_DIR: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
const STS_AUDIENCE: &str = "sts.amazonaws.com";

pub const NS: &str = "demo";
pub const FIRST: &str = "s3cr3t-v1-demo";
pub const ROTATED: &str = "s3cr3t-v2-demo";
/// The container's log line the app prints for a value (masked: length, prefix and digest).
pub fn app_line(value: &str) -> String {
    rotor_test_app::env_line("DB_PASSWORD", Some(value))
}

fn say(step: &str) {
    eprintln!("\x1b[1m==> {step}\x1b[0m");
}

/// Runs the demo; everything it starts stops when it returns (also on error).
pub async fn run_demo(family: Family) -> Result<DemoReport> {
    let started = Instant::now();
    // Both binaries must be built before anything starts.
    binary("rotor-webhook")?;
    let reloader_bin = binary("rotor-reloader")?;
    say(
        "starting the local control plane and a real node: etcd, kube-apiserver, kube-controller-manager, \
         kube-scheduler, OpenBao, an OCI registry, containerd + runc + CNI bridge, kubelet (needs root)",
    );
    let stack = Stack::start(StackOptions {
        node: true,
        ..StackOptions::default()
    })
    .await?;
    let registry = stack.registry()?.host.clone();
    eprintln!(
        "    ready in {:.1?}; kube-apiserver {}  OpenBao {}  registry {registry}  node rotor-node Ready",
        stack.startup, stack.api.url, stack.bao.addr
    );
    let dir = stack.dir().to_path_buf();

    say(
        "building the images: rotor-init as Dockerfile.init describes, and a static demo app (no shell, no libc)",
    );
    let images = push_node_images(&stack)?;
    eprintln!("    pushed {} and {}", images.init, images.app);

    say(
        "configuring OpenBao: KV v2 secret, Kubernetes auth, policies for the app and the reloader",
    );
    seed_app_secret(&stack, "demo/db", FIRST, "shop", &[NS]).await?;
    let system = create_namespace(&stack, "rotor-system", &[]).await?;
    stack.service_account(&system, "rotor-reloader").await?;
    seed_reloader_role(&stack, &system).await?;
    let bao = stack.bao_admin()?;
    eprintln!(
        "    secret/demo/db version 1 written; roles shop and rotor-reloader bound to their ServiceAccounts"
    );
    let aws = match family {
        Family::Vault => None,
        Family::Aws => {
            say(
                "starting moto (AWS Secrets Manager, SSM and STS) where pods reach it; writing secret demo/db",
            );
            let moto = Moto::start_on(&dir, rotor_testkit::host::GATEWAY).await?;
            let arn = moto
                .admin()?
                .create_secret(AWS_REGION, "demo/db", &password_json(FIRST))
                .await?;
            eprintln!("    moto {}; {arn} written", moto.addr);
            Some((moto, arn))
        }
    };

    say("starting rotor-webhook and rotor-reloader as local processes; registering the webhook");
    let webhook = start_node_webhook(&stack, &images).await?;
    let source = binary_source(&stack)?;
    let node = &stack.node()?.versions;
    eprintln!(
        "    node: kubelet {}, {}; rotor-init reaches pods by: {}",
        node.kubelet,
        node.runtime,
        match source {
            BinarySource::ImageVolume =>
                "image-volume (the rotor-init image mounted read-only, no init container)",
            BinarySource::Copy =>
                "copy (an init container copies rotor-init into an in-memory volume; this node has no image volumes)",
        }
    );
    let token_file = dir.join("reloader-token");
    std::fs::write(
        &token_file,
        stack
            .service_account_token(&system, "rotor-reloader", "rotor", 3600)
            .await?,
    )?;
    // With AWS, the reloader's own web identity (an IRSA token for its ServiceAccount).
    let aws_token = dir.join("reloader-aws-token");
    std::fs::write(
        &aws_token,
        stack
            .service_account_token(&system, "rotor-reloader", STS_AUDIENCE, 3600)
            .await?,
    )?;
    let aws_token = aws_token.display().to_string();
    let aws_env = match &aws {
        None => Vec::new(),
        Some((moto, _)) => reloader_aws_env(&moto.addr, &aws_token),
    };
    let aws_env: Vec<(&str, &str)> = aws_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_reloader, _reloader_admin) = start_reloader_in(
        &stack,
        &reloader_bin,
        "rotor-reloader",
        &token_file,
        &system,
        &[],
        ReloaderEnv {
            kubeconfig: stack.kubeconfig(),
            env: &aws_env,
        },
    )
    .await?;
    eprintln!(
        "    webhook https://127.0.0.1:{} (admin {}), reloader polling every 1 s",
        webhook.port, webhook.admin
    );

    let reference = match &aws {
        None => "vault:secret/data/demo/db#password".to_string(),
        Some((_, arn)) => format!("{arn}#password"),
    };
    say(&format!(
        "creating Deployment demo/shop (image app:1, no command: rotor looks the entrypoint up) that references {reference}"
    ));
    create_namespace(&stack, NS, &[("rotor-e2e", "enabled")]).await?;
    stack.service_account(NS, "shop").await?;
    let mut deployment = shop_deployment(&images.app, None)?;
    if let Some((moto, _)) = &aws {
        with_web_identity(&mut deployment, &reference, &moto.addr)?;
    }
    let deployments: Api<Deployment> = Api::namespaced(stack.kube.clone(), NS);
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), NS);
    let first_pod = wait_for(Duration::from_secs(30), "the Deployment's pod", || async {
        Ok(pod_names(&pods, "app=shop").await?.into_iter().next())
    })
    .await?;
    let pod = pods.get(&first_pod).await?;

    say("the pod as stored by the API server (mutated by rotor-webhook; the spec holds no value)");
    let spec = pod.spec.clone().context("pod without spec")?;
    let first_pod_init_containers: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    let shown = json!({
        "initContainers": spec.init_containers.iter().flatten().map(|c| json!({ "name": c.name, "image": c.image, "command": c.command })).collect::<Vec<_>>(),
        "containers": spec.containers.iter().map(|c| json!({ "name": c.name, "command": c.command, "args": c.args, "env": c.env })).collect::<Vec<_>>(),
        "volumes": spec.volumes.iter().flatten().map(|v| match &v.image {
            Some(image) => format!("{} (image volume: {})", v.name, image.reference.as_deref().unwrap_or_default()),
            None => v.name.clone(),
        }).collect::<Vec<_>>(),
    });
    eprint!("{}", indent(&serde_yaml::to_string(&shown)?));

    say(&format!(
        "kubelet runs pod {first_pod}: {}, rotor-init logs in and execs the app; its log (kubectl logs):",
        match source {
            BinarySource::ImageVolume => "rotor-init runs straight from the image volume",
            BinarySource::Copy => "the init container copies rotor-init",
        }
    ));
    let first_log = wait_for_log(
        &pods,
        &first_pod,
        "shop",
        &app_line(FIRST),
        Duration::from_secs(90),
    )
    .await?;
    eprint!("{}", indent(&first_log));

    let recorded =
        wait_for_observed_versions(&deployments, "shop", Duration::from_secs(30)).await?;
    eprintln!("    rotor-reloader watches it: rotor.dev/observed-versions={recorded}");

    let rs: Api<ReplicaSet> = Api::namespaced(stack.kube.clone(), NS);
    let replica_sets_before = replica_set_count(&rs, "app=shop").await?;
    match &aws {
        None => {
            say("rotating the secret in OpenBao (version 2)");
            bao.put_kv2("secret", "demo/db", json!({ "password": ROTATED }))
                .await?;
        }
        Some((moto, arn)) => {
            say("rotating the secret in AWS Secrets Manager (a new version becomes AWSCURRENT)");
            moto.admin()?
                .put_secret_value(AWS_REGION, arn, &password_json(ROTATED))
                .await?;
        }
    }
    let replica_sets_after = wait_for(Duration::from_secs(30), "a new ReplicaSet", || async {
        let n = replica_set_count(&rs, "app=shop").await?;
        Ok((n > replica_sets_before).then_some(n))
    })
    .await?;
    let events: Api<Event> = Api::namespaced(stack.kube.clone(), NS);
    let event_note = wait_for(
        Duration::from_secs(10),
        "the SecretRotated event",
        || async {
            Ok(events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(EventReason::SecretRotated.as_str()))
                .and_then(|e| e.note))
        },
    )
    .await?;
    say("rotor-reloader rolled the Deployment");
    for r in rs
        .list(&ListParams::default().labels("app=shop"))
        .await?
        .items
    {
        eprintln!(
            "    ReplicaSet {} (revision {})",
            r.metadata.name.unwrap_or_default(),
            r.metadata
                .annotations
                .unwrap_or_default()
                .get("deployment.kubernetes.io/revision")
                .cloned()
                .unwrap_or_default()
        );
    }
    eprintln!("    Event SecretRotated: {event_note}");

    say("the new ReplicaSet's pod reads version 2; the old pod is gone");
    let rotated_pod = wait_for_replacement(&pods, "app=shop", &first_pod).await?;
    let rotated_log = wait_for_log(
        &pods,
        &rotated_pod,
        "shop",
        &app_line(ROTATED),
        Duration::from_secs(90),
    )
    .await?;
    eprint!("{}", indent(&rotated_log));
    let pods_after = pod_names(&pods, "app=shop").await?;

    say("stopping everything the demo started");
    let report = DemoReport {
        stack_startup: stack.startup,
        total: started.elapsed(),
        first_log,
        rotated_log,
        first_pod,
        rotated_pod,
        pods_after,
        replica_sets_before,
        replica_sets_after,
        event_note,
        binary_source: source,
        first_pod_init_containers,
    };
    drop(webhook);
    drop(aws);
    drop(stack);
    eprintln!("    done in {:.1?}", report.total);
    Ok(report)
}

async fn create_namespace(stack: &Stack, name: &str, labels: &[(&str, &str)]) -> Result<String> {
    let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>() }
    }))?;
    match Api::<k8s_openapi::api::core::v1::Namespace>::all(stack.kube.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).with_context(|| format!("creating namespace {name}")),
    }
    Ok(name.to_string())
}

fn password_json(value: &str) -> String {
    json!({ "password": value }).to_string()
}

/// The pod of `deployment` reads `reference` from AWS with its own web identity, the way EKS's
/// IRSA webhook would set it up: a projected ServiceAccount token of audience sts.amazonaws.com,
/// `AWS_ROLE_ARN` and `AWS_WEB_IDENTITY_TOKEN_FILE`; plus `AWS_ENDPOINT_URL`, here moto.
fn with_web_identity(deployment: &mut Deployment, reference: &str, endpoint: &str) -> Result<()> {
    let mut value = serde_json::to_value(&*deployment)?;
    let spec = value
        .pointer_mut("/spec/template/spec")
        .context("the Deployment has a pod spec")?;
    spec["volumes"] = json!([{ "name": "aws-iam-token", "projected": { "sources": [
        { "serviceAccountToken": { "audience": STS_AUDIENCE, "expirationSeconds": 3600, "path": "token" } }
    ] } }]);
    let container = &mut spec["containers"][0];
    container["env"] = json!([
        { "name": "DB_PASSWORD", "value": reference },
        { "name": "AWS_ENDPOINT_URL", "value": endpoint },
        { "name": "AWS_ROLE_ARN", "value": AWS_ROLE },
        { "name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": format!("{IRSA_DIR}/token") },
    ]);
    container["volumeMounts"] =
        json!([{ "name": "aws-iam-token", "mountPath": IRSA_DIR, "readOnly": true }]);
    *deployment = serde_json::from_value(value)?;
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
