//! Pods on the real node: the images they pull (assembled from rotor's static binaries as the
//! Dockerfiles describe), and waiting on what the pod really did (its status, its log read
//! through the API as `kubectl logs` does).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, ListParams, LogParams};
use rotor_core::contract::BinarySource;
use rotor_testkit::{ImageConfig, Stack, dockerfile, tools::repo_root};

use crate::fixtures::{Webhook, binary, register_webhook, start_webhook};

/// The static binaries that go into images: built with the Dockerfiles' own command.
pub struct StaticBinaries {
    pub rotor_init: PathBuf,
    pub test_app: PathBuf,
}

/// Builds rotor-init and the test app static (glibc static-pie, the `release-init` profile), as
/// `Dockerfile.init` does. Cargo skips the work when nothing changed.
pub fn build_static_binaries() -> Result<StaticBinaries> {
    cargo_build_static(&[
        "-p",
        "rotor-init",
        "-p",
        "rotor-test-app",
        "--profile",
        "release-init",
    ])?;
    let out = target_dir().join("x86_64-unknown-linux-gnu/release-init");
    Ok(StaticBinaries {
        rotor_init: out.join("rotor-init"),
        test_app: out.join("rotor-test-app"),
    })
}

/// `cargo build --locked ARGS --target x86_64-unknown-linux-gnu` with a static glibc, the
/// Dockerfiles' build command. Cargo skips the work when nothing changed.
fn cargo_build_static(args: &[&str]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(repo_root())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "--locked", "--quiet"])
        .args(args)
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .status()
        .context("running cargo build for static binaries")?;
    if !status.success() {
        bail!("the static build (cargo build {}) failed", args.join(" "));
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

/// The images pods pull from the stack's registry.
pub struct NodeImages {
    /// rotor-init, assembled as `Dockerfile.init` describes (layout, USER, ENTRYPOINT).
    pub init: String,
    /// The test app alone (no shell, no libc): ENTRYPOINT `/app`, CMD `DB_PASSWORD`.
    pub app: String,
}

/// A stack with a real node, and the rotor-init and app images pushed to its registry.
pub async fn start_node_stack() -> Result<(Stack, NodeImages)> {
    rotor_testkit::install_crypto_provider();
    let stack = Stack::start(rotor_testkit::StackOptions {
        node: true,
        ..rotor_testkit::StackOptions::default()
    })
    .await?;
    let images = push_node_images(&stack)?;
    Ok((stack, images))
}

/// Builds the static binaries and pushes the rotor-init and app images.
pub fn push_node_images(stack: &Stack) -> Result<NodeImages> {
    let binaries = build_static_binaries()?;
    let registry = stack.registry()?;
    let init = push_dockerfile_image(stack, "Dockerfile.init", "rotor-init:local")?;
    let app = registry.push_files_image(
        "app:1",
        &[(binaries.test_app, "/app".to_string())],
        &ImageConfig {
            entrypoint: vec!["/app".to_string()],
            cmd: vec!["DB_PASSWORD".to_string()],
            ..ImageConfig::default()
        },
        stack.dir(),
    )?;
    Ok(NodeImages { init, app })
}

/// Pushes the image a Dockerfile of this repository describes (its final stage: base, copied
/// files, USER, ENTRYPOINT, CMD) as `repo_tag`, from files already built in this checkout.
pub fn push_dockerfile_image(stack: &Stack, dockerfile: &str, repo_tag: &str) -> Result<String> {
    let text = std::fs::read_to_string(repo_root().join(dockerfile))
        .with_context(|| format!("reading {dockerfile}"))?;
    let stage = dockerfile::final_stage(&text).with_context(|| dockerfile.to_string())?;
    let mut files = stage
        .copies
        .iter()
        .map(|(source, dest)| Ok((built_file(source)?, dest.clone())))
        .collect::<Result<Vec<_>>>()?;
    let mut config = stage.config.clone();
    if stage.base == dockerfile::Base::DistrolessStatic {
        let base_dir = stack.dir().join("distroless-base");
        for (path, content) in dockerfile::distroless_files()? {
            let host = base_dir.join(path.trim_start_matches('/'));
            if let Some(parent) = host.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&host, content)?;
            files.push((host, path));
        }
        config.env.extend([
            "PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin".to_string(),
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".to_string(),
        ]);
    }
    stack
        .registry()?
        .push_files_image(repo_tag, &files, &config, stack.dir())
}

/// Builds rotor-webhook and rotor-reloader static, as `Dockerfile.webhook` and
/// `scripts/check-static.sh` do, and pushes the webhook image.
pub fn push_webhook_image(stack: &Stack) -> Result<String> {
    cargo_build_static(&["--release", "-p", "rotor-webhook", "-p", "rotor-reloader"])?;
    push_dockerfile_image(stack, "Dockerfile.webhook", "rotor-webhook:local")
}

/// A `COPY --from=build /src/...` source: the same file in this checkout's build output.
fn built_file(source: &str) -> Result<PathBuf> {
    let relative = source
        .strip_prefix("/src/")
        .with_context(|| format!("COPY source {source} is not under the build stage's /src"))?;
    let path = match relative.strip_prefix("target/") {
        Some(in_target) => target_dir().join(in_target),
        None => repo_root().join(relative),
    };
    if !path.exists() {
        bail!("{} (COPY {source}) was not built", path.display());
    }
    Ok(path)
}

/// Starts rotor-webhook as a local process for pods on the node (token audience `rotor`, the
/// rotor-init image and the plain-HTTP registry of `images`) and registers it.
pub async fn start_node_webhook(stack: &Stack, images: &NodeImages) -> Result<Webhook> {
    let webhook = start_webhook(
        stack,
        &binary("rotor-webhook")?,
        stack.dir(),
        &[
            "--token-audience=rotor".to_string(),
            format!("--init-image={}", images.init),
            format!("--init-binary-source={}", binary_source(stack)?),
            format!("--registry-insecure={}", stack.registry()?.host),
        ],
    )
    .await?;
    register_webhook(stack, webhook.port).await?;
    Ok(webhook)
}

/// How the webhook injects rotor-init on this stack's node: from an image volume where the node
/// mounts them (Kubernetes >= 1.35 with containerd >= 2.1), else by the copy init container. So
/// every node test runs the image-volume path on the newest stack and the copy path on the older.
pub fn binary_source(stack: &Stack) -> Result<BinarySource> {
    Ok(if stack.node()?.versions.image_volumes() {
        BinarySource::ImageVolume
    } else {
        BinarySource::Copy
    })
}

/// Waits until the reloader has recorded the versions Deployment `name` uses, and returns the
/// record (`rotor.dev/observed-versions`).
pub async fn wait_for_observed_versions(
    deployments: &Api<Deployment>,
    name: &str,
    timeout: Duration,
) -> Result<String> {
    wait_for(
        timeout,
        &format!("the reloader to record the versions of Deployment {name}"),
        || async {
            Ok(deployments
                .get(name)
                .await?
                .metadata
                .annotations
                .unwrap_or_default()
                .get("rotor.dev/observed-versions")
                .cloned())
        },
    )
    .await
}

/// Polls `probe` every 200 ms until it gives a value, failing after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The status of container `name` (init, sidecar or app container) of a pod.
pub fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find(|s| s.name == name)
}

/// Waits until the API reports container `container` of pod `name` running and returns its
/// containerd id. The API lags the kubelet: a container's log can be readable before its status
/// (and id) reaches the pod object.
pub async fn wait_for_running_container_id(
    pods: &Api<Pod>,
    name: &str,
    container: &str,
) -> Result<String> {
    wait_for(
        Duration::from_secs(30),
        &format!("pod {name}: the API to report container {container} running"),
        || async {
            let pod = pods.get(name).await?;
            Ok(container_status(&pod, container)
                .filter(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
                .and_then(|s| s.container_id.clone())
                .map(|id| id.trim_start_matches("containerd://").to_string()))
        },
    )
    .await
}

/// Waits until the API reports container `container` of pod `name` terminated and returns its
/// exit code.
pub async fn wait_for_exit_code(pods: &Api<Pod>, name: &str, container: &str) -> Result<i32> {
    wait_for(
        Duration::from_secs(30),
        &format!("pod {name}: the API to report container {container} terminated"),
        || async {
            let pod = pods.get(name).await?;
            Ok(container_status(&pod, container)
                .and_then(|s| s.state.as_ref())
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code))
        },
    )
    .await
}

/// A short account of a pod's state for failure messages: phase and each container's state.
pub fn describe(pod: &Pod) -> String {
    let Some(status) = pod.status.as_ref() else {
        return "no status yet".to_string();
    };
    let containers: Vec<String> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .map(|c| {
            format!(
                "{}: {}",
                c.name,
                serde_json::to_string(&c.state).unwrap_or_default()
            )
        })
        .collect();
    format!(
        "phase {:?}; {}",
        status.phase.as_deref().unwrap_or("?"),
        containers.join("; ")
    )
}

/// Waits until container `container` of pod `name` logs a line containing `needle` (read
/// through the API, as `kubectl logs` does) and returns the whole log.
pub async fn wait_for_log(
    pods: &Api<Pod>,
    name: &str,
    container: &str,
    needle: &str,
    timeout: Duration,
) -> Result<String> {
    let start = Instant::now();
    loop {
        let params = LogParams {
            container: Some(container.to_string()),
            ..LogParams::default()
        };
        if let Ok(log) = pods.logs(name, &params).await
            && log.contains(needle)
        {
            return Ok(log);
        }
        if start.elapsed() > timeout {
            let pod = pods
                .get(name)
                .await
                .map(|p| describe(&p))
                .unwrap_or_default();
            let log = pods.logs(name, &params).await.unwrap_or_default();
            bail!(
                "pod {name} container {container}: no log line with {needle:?} after {timeout:?}; {pod}; log:\n{log}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Follows container `container`'s log (`kubectl logs -f`) until the stream ends, calling
/// `started` once the stream is open; returns every line read.
pub async fn follow_log_until_end<F, Fut>(
    pods: &Api<Pod>,
    name: &str,
    container: &str,
    timeout: Duration,
    started: F,
) -> Result<Vec<String>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let params = LogParams {
        container: Some(container.to_string()),
        follow: true,
        ..LogParams::default()
    };
    let stream = pods
        .log_stream(name, &params)
        .await
        .with_context(|| format!("following the log of pod {name} container {container}"))?;
    started().await?;
    let mut lines = stream.lines();
    let mut seen = Vec::new();
    let read = async {
        while let Some(line) = lines.next().await {
            seen.push(line?);
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(timeout, read)
        .await
        .with_context(|| format!("the log of pod {name} did not end within {timeout:?}"))??;
    Ok(seen)
}

/// The pids in a container's PID namespace, from the host: the tasks of its init process's
/// namespace (read through /proc, no tool in the container needed).
pub fn processes_in_container(node_dir: &Path, container_id: &str) -> Result<Vec<(u32, String)>> {
    let pid_file = node_dir
        .join("containerd/state/io.containerd.runtime.v2.task/k8s.io")
        .join(container_id)
        .join("init.pid");
    let init: u32 = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("reading {}", pid_file.display()))?
        .trim()
        .parse()
        .context("parsing init.pid")?;
    let ns =
        std::fs::read_link(format!("/proc/{init}/ns/pid")).context("reading the pid namespace")?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|n| n == ns) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            found.push((
                pid,
                String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .trim()
                    .to_string(),
            ));
        }
    }
    Ok(found)
}

/// Sets the store up for an app: the secret `secret/<path>` (KV v2) with `password`, Kubernetes
/// auth against the stack's apiserver, and role `role` (policy reading that path) for the
/// ServiceAccount named `role` in `namespaces`, audience `rotor` (the webhook's token audience).
pub async fn seed_app_secret(
    stack: &Stack,
    path: &str,
    password: &str,
    role: &str,
    namespaces: &[&str],
) -> Result<()> {
    let bao = stack.bao_admin()?;
    bao.put_kv2("secret", path, serde_json::json!({ "password": password }))
        .await?;
    stack.enable_bao_kubernetes_auth("kubernetes").await?;
    bao.put_policy(
        role,
        &format!(r#"path "secret/data/{path}" {{ capabilities = ["read"] }}"#),
    )
    .await?;
    bao.put_kubernetes_role(
        "kubernetes",
        role,
        &[role],
        namespaces,
        &[role],
        Some("rotor"),
    )
    .await
}

/// The reloader's store policy, as the README gives it: KV v2 metadata only (never data), read
/// per path and listed per directory (OpenBao's `detailed-metadata`).
pub const RELOADER_POLICY: &str = r#"path "secret/metadata/*" { capabilities = ["read"] }
path "secret/detailed-metadata/*" { capabilities = ["list"] }"#;

/// The reloader's store role: [`RELOADER_POLICY`], for ServiceAccount `rotor-reloader` in
/// `namespace`, audience `rotor`.
pub async fn seed_reloader_role(stack: &Stack, namespace: &str) -> Result<()> {
    let bao = stack.bao_admin()?;
    bao.put_policy("rotor-reloader", RELOADER_POLICY).await?;
    bao.put_kubernetes_role(
        "kubernetes",
        "rotor-reloader",
        &["rotor-reloader"],
        &[namespace],
        &["rotor-reloader"],
        Some("rotor"),
    )
    .await
}

/// Deployment `shop` (label `app=shop`, opted in to the reloader, store role `shop`): one
/// replica of `image` reading `DB_PASSWORD` from `vault:secret/data/demo/db#password`, with
/// `command` when given (else rotor looks the entrypoint up in the registry).
pub fn shop_deployment(image: &str, command: Option<&[&str]>) -> Result<Deployment> {
    let mut container = serde_json::json!({
        "name": "shop", "image": image,
        "env": [{ "name": "DB_PASSWORD", "value": "vault:secret/data/demo/db#password" }],
    });
    if let Some(command) = command {
        container["command"] = serde_json::json!(command);
    }
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": { "name": "shop", "annotations": { "rotor.dev/reload": "true" } },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "shop" } },
            "template": {
                "metadata": { "labels": { "app": "shop" }, "annotations": { "rotor.dev/vault-role": "shop" } },
                "spec": {
                    "serviceAccountName": "shop",
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 10,
                    "containers": [container],
                },
            },
        },
    }))?)
}

/// The names of the pods matching `selector`.
pub async fn pod_names(pods: &Api<Pod>, selector: &str) -> Result<Vec<String>> {
    Ok(pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect())
}

/// Waits until exactly one pod matches `selector` and it is not `old` (a rollout replaced it).
pub async fn wait_for_replacement(pods: &Api<Pod>, selector: &str, old: &str) -> Result<String> {
    wait_for(
        Duration::from_secs(90),
        &format!("one pod of {selector} other than {old}, {old} gone"),
        || async {
            Ok(match pod_names(pods, selector).await?.as_slice() {
                [only] if only != old => Some(only.clone()),
                _ => None,
            })
        },
    )
    .await
}

/// How many ReplicaSets match `selector`.
pub async fn replica_set_count(replica_sets: &Api<ReplicaSet>, selector: &str) -> Result<usize> {
    Ok(replica_sets
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .len())
}

/// Waits (60 s at most) until the reloader has recorded the versions of Deployment `name`.
pub async fn wait_for_record(apps: &Api<Deployment>, name: &str) -> Result<()> {
    wait_for(Duration::from_secs(60), "the reloader's record", || async {
        let d = apps.get(name).await?;
        Ok(d.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("rotor.dev/observed-versions")
            .then_some(()))
    })
    .await
}
