//! Pods rotor injects, run for real on the node (kubelet + containerd + runc): each check reads
//! what the app itself saw (its log through the API, or its processes from the host).
//!
//! One stack for every case: a host runs one node at a time, and its start is the costly part.
//! Each case runs in its own namespace; every failure is reported, not only the first.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code fails loudly

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use rotor_core::contract::{BIN_VOLUME, BinarySource, COPY_CONTAINER};
use rotor_e2e::node_pods::{
    NodeImages, binary_source, container_status, describe, follow_log_until_end,
    processes_in_container, push_node_images, seed_app_secret, start_node_webhook, wait_for,
    wait_for_exit_code, wait_for_log, wait_for_running_container_id,
};
use rotor_test_app::env_line;
use rotor_testkit::{Stack, StackOptions};
use serde_json::{Value, json};

const CANARY: &str = "node-canary-5e1f7a";
const REFERENCE: &str = "vault:secret/data/db#password";
/// rotor-init's exit code when the store cannot be reached before its deadline (README).
const STORE_UNAVAILABLE: i32 = 69;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_pods_run_on_a_real_node() -> Result<()> {
    rotor_testkit::install_crypto_provider();
    let mut stack = Stack::start(StackOptions {
        node: true,
        ..StackOptions::default()
    })
    .await?;
    eprintln!(
        "stack with node ready in {:.1?} (node Ready {:.1?} after containerd started)",
        stack.startup,
        stack.node()?.ready_after
    );
    let images = push_node_images(&stack)?;
    seed_store(&stack).await?;
    let _webhook = start_node_webhook(&stack, &images).await?;

    let mut failures = Vec::new();
    let mut check = |name: &str, result: Result<()>| match result {
        Ok(()) => eprintln!("ok: {name}"),
        Err(e) => {
            eprintln!("FAILED: {name}: {e:#}");
            failures.push(format!("{name}: {e:#}"));
        }
    };
    check(
        "a static app with no shell, entrypoint from the registry, PID 1, SIGTERM on delete",
        static_app_is_pid_1_and_gets_sigterm(&stack, &images).await,
    );
    check(
        "restricted namespace: arbitrary uid, fsGroup, read-only root",
        restricted_pod_with_arbitrary_uid(&stack, &images).await,
    );
    check(
        "two containers with different uids",
        two_containers_with_different_uids(&stack, &images).await,
    );
    check(
        "an init container and a native sidecar",
        init_container_and_native_sidecar(&stack, &images).await,
    );
    check(
        "the store down at pod start",
        store_down_at_start(&mut stack, &images).await,
    );
    if !failures.is_empty() {
        bail!(
            "{} case(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// The secret, Kubernetes auth, and role `app` for ServiceAccount `app` in every namespace.
async fn seed_store(stack: &Stack) -> Result<()> {
    seed_app_secret(stack, "db", CANARY, "app", &["*"]).await
}

/// A namespace the webhook serves (plus `labels`), with ServiceAccount `app`.
async fn namespace(stack: &Stack, prefix: &str, labels: &[(&str, &str)]) -> Result<String> {
    let mut all = vec![("rotor-e2e", "enabled")];
    all.extend_from_slice(labels);
    let ns = stack.namespace_with_labels(prefix, &all).await?;
    stack.service_account(&ns, "app").await?;
    Ok(ns)
}

/// An app container: the test app image, no command (rotor looks the entrypoint up).
fn app_container(name: &str, images: &NodeImages, extra: Value) -> Value {
    let mut c = json!({
        "name": name,
        "image": images.app,
        "env": [{ "name": "DB_PASSWORD", "value": REFERENCE }],
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c
}

async fn create_pod(stack: &Stack, ns: &str, name: &str, spec: Value) -> Result<Api<Pod>> {
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), ns);
    let mut spec = spec;
    spec["serviceAccountName"] = json!("app");
    let pod: Pod = serde_json::from_value(json!({ "metadata": { "name": name }, "spec": spec }))?;
    pods.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {ns}/{name}"))?;
    Ok(pods)
}

fn expected_value_line() -> String {
    env_line("DB_PASSWORD", Some(CANARY))
}

fn assert_clean(log: &str) -> Result<()> {
    if log.contains(CANARY) {
        bail!("the log carries the secret value:\n{log}");
    }
    if !log.contains("app: rotor-vars=0 literal-references=0") {
        bail!("rotor settings or literal references reached the app:\n{log}");
    }
    Ok(())
}

async fn static_app_is_pid_1_and_gets_sigterm(stack: &Stack, images: &NodeImages) -> Result<()> {
    let ns = namespace(stack, "node-static", &[]).await?;
    let pods = create_pod(
        stack,
        &ns,
        "static-app",
        json!({
            "terminationGracePeriodSeconds": 30,
            "containers": [app_container("app", images, json!({}))],
        }),
    )
    .await?;
    let log = wait_for_log(
        &pods,
        "static-app",
        "app",
        &expected_value_line(),
        Duration::from_secs(90),
    )
    .await?;
    assert_clean(&log)?;
    if !log.contains("app: pid=1 ") {
        bail!("the app is not PID 1 in its container:\n{log}");
    }
    // rotor-init reached the pod the way this node supports: an image volume and no init
    // container on the newest stack, the copy init container on the older.
    let spec = pods
        .get("static-app")
        .await?
        .spec
        .context("pod without spec")?;
    let inits: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    let from_image = spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == BIN_VOLUME && v.image.is_some());
    let expected = match binary_source(stack)? {
        BinarySource::ImageVolume => (true, vec![]),
        BinarySource::Copy => (false, vec![COPY_CONTAINER.to_string()]),
    };
    if (from_image, inits.clone()) != expected {
        bail!(
            "rotor-init should come from {:?}: image volume {from_image}, init containers {inits:?}",
            binary_source(stack)?
        );
    }
    eprintln!("    rotor-init from: {}", binary_source(stack)?);
    // From the host: the container's PID namespace holds the app alone, no rotor process.
    let id = wait_for_running_container_id(&pods, "static-app", "app").await?;
    let processes = processes_in_container(stack.node()?.dir(), &id)?;
    let commands: Vec<&str> = processes.iter().map(|(_, c)| c.as_str()).collect();
    if commands != ["/app DB_PASSWORD"] {
        bail!("the container runs {commands:?}, expected the app alone");
    }
    // Deleting the pod: the kubelet's SIGTERM reaches the app, which logs it and exits at once.
    let started = Instant::now();
    let lines = follow_log_until_end(
        &pods,
        "static-app",
        "app",
        Duration::from_secs(60),
        || async {
            pods.delete("static-app", &DeleteParams::default()).await?;
            Ok(())
        },
    )
    .await?;
    if !lines.iter().any(|l| l == "app: received SIGTERM, exiting") {
        bail!(
            "the app did not log SIGTERM; its log:\n{}",
            lines.join("\n")
        );
    }
    wait_for(
        Duration::from_secs(60),
        "the deleted pod to be gone",
        || async { Ok(pods.get_opt("static-app").await?.is_none().then_some(())) },
    )
    .await?;
    // Well inside the 30 s grace period: it was the app's own exit, not the SIGKILL after it.
    let took = started.elapsed();
    if took > Duration::from_secs(25) {
        bail!("the pod took {took:?} to go: the app did not exit on SIGTERM");
    }
    eprintln!("    SIGTERM: pod deleted and gone in {took:.1?}");
    Ok(())
}

async fn restricted_pod_with_arbitrary_uid(stack: &Stack, images: &NodeImages) -> Result<()> {
    let ns = namespace(
        stack,
        "node-restricted",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await?;
    let pods = create_pod(
        stack,
        &ns,
        "restricted",
        json!({
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 4242, "runAsGroup": 4242, "fsGroup": 5353,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [app_container("app", images, json!({
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"] },
                },
            }))],
        }),
    )
    .await?;
    let log = wait_for_log(
        &pods,
        "restricted",
        "app",
        &expected_value_line(),
        Duration::from_secs(90),
    )
    .await?;
    assert_clean(&log)?;
    if !log.contains("app: pid=1 uid=4242 gid=4242 ") {
        bail!("the app does not run as 4242:4242:\n{log}");
    }
    Ok(())
}

async fn two_containers_with_different_uids(stack: &Stack, images: &NodeImages) -> Result<()> {
    let ns = namespace(stack, "node-uids", &[]).await?;
    let pods = create_pod(
        stack,
        &ns,
        "two-uids",
        json!({
            "containers": [
                app_container("first", images, json!({ "securityContext": { "runAsUser": 1001, "runAsGroup": 1001 } })),
                app_container("second", images, json!({ "securityContext": { "runAsUser": 2002, "runAsGroup": 2002 } })),
            ],
        }),
    )
    .await?;
    for (container, uid) in [("first", 1001), ("second", 2002)] {
        let log = wait_for_log(
            &pods,
            "two-uids",
            container,
            &expected_value_line(),
            Duration::from_secs(90),
        )
        .await?;
        assert_clean(&log)?;
        if !log.contains(&format!("uid={uid} ")) {
            bail!("container {container} does not run as {uid}:\n{log}");
        }
    }
    Ok(())
}

async fn init_container_and_native_sidecar(stack: &Stack, images: &NodeImages) -> Result<()> {
    let ns = namespace(stack, "node-sidecar", &[]).await?;
    let pods = create_pod(
        stack,
        &ns,
        "with-sidecar",
        json!({
            "initContainers": [
                app_container("setup", images, json!({ "args": ["--exit", "DB_PASSWORD"] })),
                app_container("sidecar", images, json!({ "restartPolicy": "Always" })),
            ],
            "containers": [app_container("app", images, json!({}))],
        }),
    )
    .await?;
    for container in ["setup", "sidecar", "app"] {
        let log = wait_for_log(
            &pods,
            "with-sidecar",
            container,
            &expected_value_line(),
            Duration::from_secs(90),
        )
        .await?;
        assert_clean(&log)?;
    }
    let exit = wait_for_exit_code(&pods, "with-sidecar", "setup").await?;
    if exit != 0 {
        let pod = pods.get("with-sidecar").await?;
        bail!("the init container exited {exit}: {}", describe(&pod));
    }
    Ok(())
}

async fn store_down_at_start(stack: &mut Stack, images: &NodeImages) -> Result<()> {
    let ns = namespace(stack, "node-store-down", &[]).await?;
    stack.bao.stop();
    let pods = create_pod(
        stack,
        &ns,
        "store-down",
        json!({
            "containers": [
                app_container("app", images, json!({})),
                { "name": "plain", "image": images.app, "args": ["PLAIN"], "env": [{ "name": "PLAIN", "value": "kept" }] },
            ],
        }),
    )
    .await?;
    // rotor-init retries until its deadline (60 s), then fails the container with its exit code.
    let failed = wait_for(
        Duration::from_secs(150),
        "the app container to fail with rotor-init's exit code",
        || async {
            let pod = pods.get("store-down").await?;
            let status = container_status(&pod, "app").cloned();
            let last = status
                .as_ref()
                .and_then(|s| s.last_state.as_ref())
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code);
            Ok(last.map(|code| (code, pod)))
        },
    )
    .await?;
    let (code, pod) = failed;
    if code != STORE_UNAVAILABLE {
        bail!(
            "rotor-init exited {code}, expected {STORE_UNAVAILABLE}: {}",
            describe(&pod)
        );
    }
    let previous = pods
        .logs(
            "store-down",
            &LogParams {
                container: Some("app".into()),
                previous: true,
                ..LogParams::default()
            },
        )
        .await
        .unwrap_or_default();
    eprintln!("    store down: rotor-init exited {code}; its log:\n{previous}");
    if previous.contains("app: ") {
        bail!("the app started although the store was down:\n{previous}");
    }
    // The store comes back (empty: dev mode), is set up again, and the next restart succeeds.
    stack.bao.restart().await?;
    seed_store(stack).await?;
    let log = wait_for_log(
        &pods,
        "store-down",
        "app",
        &expected_value_line(),
        Duration::from_secs(150),
    )
    .await?;
    assert_clean(&log)?;
    let pod = pods.get("store-down").await?;
    let plain = container_status(&pod, "plain").context("no status for plain")?;
    if plain.restart_count != 0
        || plain
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_none()
    {
        bail!(
            "the container without references was disturbed: {}",
            describe(&pod)
        );
    }
    let plain_log = wait_for_log(
        &pods,
        "store-down",
        "plain",
        "app: env PLAIN len=4 prefix=kep",
        Duration::from_secs(10),
    )
    .await?;
    if plain_log.contains("\"level\"") {
        bail!("rotor-init ran in the container without references:\n{plain_log}");
    }
    Ok(())
}

/// What a node left on the host, seen from outside the stack.
struct Leftovers {
    dir: std::path::PathBuf,
    /// (pid, start time in clock ticks): a pid the host reuses later is not the same process.
    processes: Vec<(u32, u64)>,
}

/// When process `pid` started (field 22 of /proc/PID/stat), if it runs and is not a zombie.
fn process_start(pid: u32) -> Option<u64> {
    if !rotor_testkit::process::pid_alive(pid) {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split(' ').nth(19)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_is_restored_when_a_test_panics_with_a_pod_running() -> Result<()> {
    rotor_testkit::install_crypto_provider();
    let (tx, rx) = tokio::sync::oneshot::channel::<Leftovers>();
    let task = tokio::spawn(async move {
        let stack = Stack::start(StackOptions {
            node: true,
            ..StackOptions::default()
        })
        .await
        .expect("starting the stack with a node");
        let ns = stack.namespace("node-panic").await.expect("namespace");
        let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), &ns);
        let image = format!(
            "{}/{}",
            stack.registry().unwrap().host,
            rotor_testkit::node::PAUSE_REPO_TAG
        );
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "running" },
            "spec": { "automountServiceAccountToken": false, "containers": [{ "name": "c", "image": image }] },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let node = stack.node().unwrap();
        let id = wait_for_running_container_id(&pods, "running", "c")
            .await
            .unwrap();
        let mut pids: Vec<u32> = processes_in_container(node.dir(), &id)
            .unwrap()
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        pids.extend(node.shim_pids());
        pids.extend(
            [
                node.kubelet.pid(),
                node.containerd.pid(),
                node.scheduler.pid(),
            ]
            .into_iter()
            .flatten(),
        );
        let processes = pids
            .into_iter()
            .filter_map(|pid| Some((pid, process_start(pid)?)))
            .collect();
        tx.send(Leftovers {
            dir: stack.dir().to_path_buf(),
            processes,
        })
        .ok()
        .unwrap();
        panic!("a deliberate panic while a pod runs on the node");
    });
    let err = task.await.expect_err("the task panics");
    assert!(err.is_panic());
    let left = rx.await.context("the task sent what it started")?;
    // Inspect the host under the node lock: another test's node must not start under the checks.
    let _host = rotor_testkit::host::lock_node_host()?;
    assert!(
        left.processes.len() >= 5,
        "pod, shim, kubelet, containerd, scheduler: {:?}",
        left.processes
    );
    for (pid, started) in &left.processes {
        assert_ne!(
            process_start(*pid),
            Some(*started),
            "pid {pid} (started at tick {started}) still runs"
        );
    }
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(rotor_testkit::host::BRIDGE)
            .exists(),
        "the pod bridge is gone"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dir = left.dir.display().to_string();
    assert!(
        !mountinfo.lines().any(|l| l.contains(&dir)),
        "no mount is left under {dir}"
    );
    for controller in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
        assert!(
            !controller.path().join("kubepods").exists(),
            "kubelet's cgroups are gone from {}",
            controller.path().display()
        );
    }
    assert!(
        !std::path::Path::new("/var/lib/kubelet/device-plugins/kubelet.sock").exists(),
        "kubelet's socket outside the stack dir is gone"
    );
    Ok(())
}
