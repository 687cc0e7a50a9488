//! Scheduled rotation (issue 31) against a real kube-apiserver + controller-manager and OpenBao:
//! the reloader (`--rotations`) rotates a `SecretRotation`'s targets on its schedule, writing as
//! the tenant's own ServiceAccount, follows the new version to the workloads that read it, and
//! records every step in the resource's status. A crash at each step ends in exactly one
//! rotation; a tenant cannot rotate another's secret; a consumer that does not move is named;
//! no generated value reaches a log, a status, an Event or a metric.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use rotor_e2e::fixtures::{ReloaderEnv, binary, start_reloader_in, write_reloader_token};
use rotor_e2e::node_pods::seed_reloader_role;
use rotor_e2e::observe::{metric, wait_until};
use rotor_e2e::rotations::{create_rotation, install_crd, secret, status, tenant};
use rotor_testkit::{ManagedProcess, Stack, StackOptions};
use serde_json::{Value, json};

const OLD: &str = "canary-old-value-3c1d-never-log-me";

async fn stack() -> Result<Stack> {
    let stack = Stack::start(StackOptions {
        controller_manager: true,
        registry: false,
        node: false,
    })
    .await?;
    install_crd(&stack).await?;
    Ok(stack)
}

/// The reloader with `--rotations` (interval floor 1 s, no settle, 1 s polls), logged in as its
/// own ServiceAccount in `home`, with `extra` flags and `env`.
async fn reloader(
    stack: &Stack,
    home: &str,
    identity: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<(ManagedProcess, String, tempfile::TempDir)> {
    stack.service_account(home, "rotor-reloader").await.ok();
    seed_reloader_role(stack, home).await?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    write_reloader_token(stack, home, "rotor", &token_file).await?;
    let mut args: Vec<String> = vec![
        "--rotations".into(),
        "--min-rotation-interval=1".into(),
        "--settle=0".into(),
        "--lease-duration=3".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (process, admin) = start_reloader_in(
        stack,
        &binary("rotor-reloader")?,
        identity,
        &token_file,
        home,
        &args,
        ReloaderEnv {
            kubeconfig: stack.kubeconfig(),
            env,
        },
    )
    .await?;
    Ok((process, admin, dir))
}

/// Deployment `name` with `replicas`, opted in to the reloader, reading `reference`.
async fn consumer(
    stack: &Stack,
    ns: &str,
    name: &str,
    replicas: i32,
    reference: &str,
) -> Result<()> {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": { "rotor.dev/reload": "true" } },
        "spec": { "replicas": replicas, "selector": { "matchLabels": { "app": name } }, "template": {
            "metadata": { "labels": { "app": name } },
            "spec": { "serviceAccountName": "app", "containers": [{ "name": "app", "image": "app:1", "command": ["/app"],
                "env": [{ "name": "DB_PASSWORD", "value": reference }] }] } } },
    }))?;
    Api::<Deployment>::namespaced(stack.kube.clone(), ns)
        .create(&PostParams::default(), &d)
        .await?;
    Ok(())
}

/// A rotation of `paths` (key `password`) as ServiceAccount `app` of `ns` with its role.
fn rotation_spec(ns: &str, paths: &[String], interval: &str) -> Value {
    let targets: Vec<Value> = paths
        .iter()
        .map(|p| json!({ "path": format!("secret/data/{p}"), "key": "password" }))
        .collect();
    json!({
        "serviceAccountName": "app",
        "role": format!("app-{ns}"),
        "targets": targets,
        "interval": interval,
        "generate": { "password": { "length": 24, "symbols": true } },
        "consumersTimeout": "60s",
    })
}

/// Rotations completed so far (0 before the first).
async fn completed(stack: &Stack, ns: &str, name: &str) -> Result<u64> {
    Ok(status(stack, ns, name).await?["rotations"]
        .as_u64()
        .unwrap_or_default())
}

async fn event_reasons(stack: &Stack, ns: &str, name: &str) -> Result<Vec<(String, String)>> {
    let events: Api<Event> = Api::namespaced(stack.kube.clone(), ns);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}

#[tokio::test]
async fn a_scheduled_rotation_writes_as_the_tenant_and_follows_its_consumers() -> Result<()> {
    let stack = stack().await?;
    let ns = tenant(&stack, "rot").await?;
    let bao = stack.bao_admin()?;
    let path = format!("{ns}/db");
    bao.put_kv2("secret", &path, json!({ "password": OLD, "user": "app" }))
        .await?;
    consumer(
        &stack,
        &ns,
        "shop",
        0,
        &format!("vault:secret/data/{path}#password"),
    )
    .await?;
    let (process, admin, _dir) = reloader(&stack, &ns, "reloader-1", &[], &[]).await?;
    create_rotation(
        &stack,
        &ns,
        "db",
        rotation_spec(&ns, std::slice::from_ref(&path), "3s"),
    )
    .await?;

    let waited = wait_until(
        "two rotations completed",
        Duration::from_secs(120),
        || async { Ok(completed(&stack, &ns, "db").await? >= 2) },
    )
    .await;
    if let Err(e) = waited {
        anyhow::bail!(
            "{e}: status {}\n{}",
            status(&stack, &ns, "db").await?,
            process.log_tail(20)
        );
    }
    let s = status(&stack, &ns, "db").await?;
    assert_eq!(s["consumers"], "1/1", "{s}");
    let (data, version) = secret(&stack, &path).await?;
    let value = data["password"].as_str().unwrap().to_string();
    assert_eq!(value.len(), 24);
    assert_ne!(value, OLD);
    assert_eq!(data["user"], "app", "the secret's other keys are kept");
    // Exactly once: every version after the first is one write of rotor's.
    let writes = metric(&admin, "rotor_reloader_rotation_store_writes_total").await?;
    assert_eq!(
        version - 1,
        writes as u64,
        "{version} versions, {writes} writes"
    );
    assert!(writes >= 2.0);
    // The consumer rolled to the new version and records it.
    let shop = Api::<Deployment>::namespaced(stack.kube.clone(), &ns)
        .get("shop")
        .await?;
    let observed =
        shop.metadata.annotations.unwrap_or_default()["rotor.dev/observed-versions"].clone();
    assert!(
        observed.contains(&format!(":{}", s["targets"][0]["version"])),
        "{observed} {s}"
    );
    let reasons = event_reasons(&stack, &ns, "db").await?;
    for wanted in ["RotationStarted", "RotationWritten", "RotationCompleted"] {
        assert!(
            reasons.iter().any(|(r, _)| r == wanted),
            "{wanted}: {reasons:?}"
        );
    }
    assert!(
        metric(
            &admin,
            "rotor_reloader_rotations_total{result=\"completed\"}"
        )
        .await?
            >= 2.0
    );
    assert!(
        metric(
            &admin,
            "rotor_reloader_rotation_last_success_timestamp_seconds"
        )
        .await?
            > 0.0
    );

    // Suspended: no new rotation starts (evidence: the reloader keeps looking at it, its
    // status stays Idle past its next time).
    let api = rotor_e2e::rotations::rotations(&stack, &ns);
    api.patch(
        "db",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({ "spec": { "suspend": true } })),
    )
    .await?;
    wait_until(
        "idle after the one in progress",
        Duration::from_secs(60),
        || async { Ok(status(&stack, &ns, "db").await?["phase"] == "Idle") },
    )
    .await?;
    let (_, suspended_at) = secret(&stack, &path).await?;
    let done = completed(&stack, &ns, "db").await?;
    // Evidence the reloader saw it due and held it back: the status says so.
    wait_until(
        "the status says the due rotation did not start",
        Duration::from_secs(30),
        || async {
            Ok(status(&stack, &ns, "db").await?["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("suspended")))
        },
    )
    .await?;
    assert_eq!(
        secret(&stack, &path).await?.1,
        suspended_at,
        "suspended: nothing written"
    );
    assert_eq!(completed(&stack, &ns, "db").await?, done);

    // No value anywhere: not the old one, not the current one.
    let log = std::fs::read_to_string(process.log_path())?;
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await?
        .text()
        .await?;
    let status_text = status(&stack, &ns, "db").await?.to_string();
    let notes: String = event_reasons(&stack, &ns, "db")
        .await?
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    for (place, text) in [
        ("log", &log),
        ("metrics", &metrics),
        ("status", &status_text),
        ("events", &notes),
    ] {
        for v in [OLD, value.as_str()] {
            assert!(!text.contains(v), "a value reached the reloader's {place}");
        }
    }
    Ok(())
}

/// A crash (the process aborts: no cleanup, as SIGKILL) right after each step is recorded or
/// done ends, once a new reloader takes over, in exactly one rotation: each target written once
/// (from version 1 to 2), both with the same value, nothing written twice.
#[tokio::test]
async fn a_crash_at_each_step_ends_in_exactly_one_rotation() -> Result<()> {
    let stack = stack().await?;
    let ns = tenant(&stack, "crash").await?;
    let bao = stack.bao_admin()?;
    for (i, failpoint) in [
        "rotation-after-claim",
        "rotation-after-first-write",
        "rotation-after-write",
    ]
    .into_iter()
    .enumerate()
    {
        let paths = [format!("{ns}/a{i}"), format!("{ns}/b{i}")];
        for p in &paths {
            bao.put_kv2("secret", p, json!({ "password": OLD })).await?;
        }
        let name = format!("crash-{i}");
        let (mut crashing, _admin, _dir) = reloader(
            &stack,
            &ns,
            &format!("crashing-{i}"),
            &[],
            &[("ROTOR_FAILPOINT", failpoint)],
        )
        .await?;
        create_rotation(&stack, &ns, &name, rotation_spec(&ns, &paths, "2s")).await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while crashing.exited().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the reloader never reached {failpoint}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let phase = status(&stack, &ns, &name).await?["phase"].clone();
        assert_eq!(
            phase, "Writing",
            "{failpoint}: the crash left it mid-rotation"
        );
        // A long interval now, so the one rotation that completes is the one interrupted.
        rotor_e2e::rotations::rotations(&stack, &ns)
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({ "spec": { "interval": "1h" } })),
            )
            .await?;
        let (_taking_over, admin, _dir2) =
            reloader(&stack, &ns, &format!("taking-over-{i}"), &[], &[]).await?;
        wait_until(
            &format!("{failpoint}: the rotation completed"),
            Duration::from_secs(90),
            || async { Ok(completed(&stack, &ns, &name).await? == 1) },
        )
        .await?;
        let (a, va) = secret(&stack, &paths[0]).await?;
        let (b, vb) = secret(&stack, &paths[1]).await?;
        assert_eq!(
            (va, vb),
            (2, 2),
            "{failpoint}: each target written exactly once"
        );
        assert_eq!(
            a["password"], b["password"],
            "{failpoint}: both targets got the same value"
        );
        assert_ne!(a["password"], OLD);
        let writes = metric(&admin, "rotor_reloader_rotation_store_writes_total").await? as u64;
        let expected = match failpoint {
            "rotation-after-claim" => 2,
            "rotation-after-first-write" => 1,
            _ => 0,
        };
        assert_eq!(
            writes, expected,
            "{failpoint}: writes by the reloader that took over"
        );
        let log = std::fs::read_to_string(crashing.log_path())?;
        assert!(
            log.contains(failpoint),
            "{failpoint}: the crash was the failpoint's"
        );
        drop(crashing);
    }
    Ok(())
}

/// A tenant cannot rotate another's secret: outside `--watchable-paths` the resource is
/// `Invalid` (nothing asked of the store); inside them, the store's policy for the tenant's own
/// role refuses, and after its retry budget the rotation is `Failed`, the secret untouched.
#[tokio::test]
async fn a_tenant_cannot_rotate_another_tenants_secret() -> Result<()> {
    let stack = stack().await?;
    let thief = tenant(&stack, "thief").await?;
    let victim = tenant(&stack, "victim").await?;
    let bao = stack.bao_admin()?;
    let path = format!("{victim}/db");
    bao.put_kv2("secret", &path, json!({ "password": OLD }))
        .await?;
    // The reloader watches every namespace here (no --watch-namespace).
    let (_p, admin, _dir) = reloader(
        &stack,
        &thief,
        "reloader-1",
        &["--watchable-paths=secret/data/{namespace}/*"],
        &[],
    )
    .await?;
    create_rotation(
        &stack,
        &thief,
        "steal",
        rotation_spec(&thief, std::slice::from_ref(&path), "2s"),
    )
    .await?;
    wait_until(
        "Invalid, naming the field",
        Duration::from_secs(30),
        || async {
            let s = status(&stack, &thief, "steal").await?;
            Ok(s["phase"] == "Invalid"
                && s["message"].as_str().is_some_and(|m| {
                    m.contains("spec.targets[0].path")
                        && m.contains(&format!("namespace {thief} may not rotate it"))
                }))
        },
    )
    .await?;
    assert!(
        event_reasons(&stack, &thief, "steal")
            .await?
            .iter()
            .any(|(r, _)| r == "RotationInvalid")
    );
    drop(_p);

    // Without the reloader's rule, the store decides: the thief's role may not touch it.
    rotor_e2e::rotations::rotations(&stack, &thief)
        .delete("steal", &Default::default())
        .await?;
    let (_p2, admin2, _dir2) = reloader(&stack, &thief, "reloader-2", &[], &[]).await?;
    create_rotation(
        &stack,
        &thief,
        "steal-2",
        rotation_spec(&thief, std::slice::from_ref(&path), "2s"),
    )
    .await?;
    wait_until(
        "Failed after its retry budget",
        Duration::from_secs(120),
        || async { Ok(status(&stack, &thief, "steal-2").await?["phase"] == "Failed") },
    )
    .await?;
    let s = status(&stack, &thief, "steal-2").await?;
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("failed after 3 attempts"),
        "{s}"
    );
    assert_eq!(
        secret(&stack, &path).await?,
        (json!({ "password": OLD }).as_object().unwrap().clone(), 1),
        "untouched"
    );
    assert_eq!(
        metric(&admin2, "rotor_reloader_rotations_total{result=\"failed\"}").await?,
        1.0
    );
    assert_eq!(
        metric(&admin2, "rotor_reloader_rotation_store_writes_total").await?,
        0.0
    );
    let _ = admin;
    Ok(())
}

/// A consumer that never runs the new version (one replica and no node: never available) is
/// named when the wait is over, with a Warning, and counted as lagging.
#[tokio::test]
async fn a_consumer_that_does_not_move_is_named() -> Result<()> {
    let stack = stack().await?;
    let ns = tenant(&stack, "lag").await?;
    let bao = stack.bao_admin()?;
    let path = format!("{ns}/db");
    bao.put_kv2("secret", &path, json!({ "password": OLD }))
        .await?;
    let reference = format!("vault:secret/data/{path}#password");
    consumer(&stack, &ns, "moves", 0, &reference).await?;
    consumer(&stack, &ns, "stuck", 1, &reference).await?;
    let (_p, admin, _dir) = reloader(&stack, &ns, "reloader-1", &[], &[]).await?;
    let mut spec = rotation_spec(&ns, std::slice::from_ref(&path), "2s");
    spec["consumersTimeout"] = json!("8s");
    create_rotation(&stack, &ns, "db", spec).await?;
    wait_until(
        "the rotation ended lagging",
        Duration::from_secs(90),
        || async { Ok(completed(&stack, &ns, "db").await? >= 1) },
    )
    .await?;
    let s = status(&stack, &ns, "db").await?;
    assert_eq!(s["consumers"], "1/2", "{s}");
    assert_eq!(s["lagging"], json!(["Deployment/stuck"]), "{s}");
    let reasons = event_reasons(&stack, &ns, "db").await?;
    assert!(
        reasons
            .iter()
            .any(|(r, n)| r == "ConsumersLagging" && n.contains("Deployment/stuck")),
        "{reasons:?}"
    );
    assert!(metric(&admin, "rotor_reloader_rotations_total{result=\"lagging\"}").await? >= 1.0);
    Ok(())
}
