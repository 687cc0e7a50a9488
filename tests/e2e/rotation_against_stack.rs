//! rotor-reloader end to end: a real kube-apiserver + kube-controller-manager and a real
//! OpenBao. Workloads roll exactly once per rotation, restarts never roll twice, outages
//! recover, a second replica takes over, and a canary value never leaks.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

use rotor_core::contract::EventReason;
use rotor_e2e::node_pods::RELOADER_POLICY;
use rotor_reloader::decision::record_key;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use rotor_e2e::fixtures::{binary, start_reloader_via};
use rotor_e2e::observe::{metric, wait_until};
use rotor_testkit::{ManagedProcess, Stack, StackOptions};
use serde_json::{Value, json};

const CANARY: &str = "canary-reloader-5b7e-never-log-me";
const AUDIENCE: &str = "rotor-reloader-test";

struct Env {
    stack: Stack,
    ns: String,
    token_file: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> Result<Env> {
    let stack = Stack::start(StackOptions {
        controller_manager: true,
        registry: false,
        node: false,
    })
    .await?;
    let ns = stack.namespace("reload").await?;
    stack.service_account(&ns, "rotor-reloader").await?;
    stack.enable_bao_kubernetes_auth("kubernetes").await?;
    let bao = stack.bao_admin()?;
    // The reloader's whole store policy: read metadata, never data.
    bao.put_policy("rotor-reloader", RELOADER_POLICY).await?;
    bao.put_kubernetes_role(
        "kubernetes",
        "rotor-reloader",
        &["rotor-reloader"],
        &[&ns],
        &["rotor-reloader"],
        Some(AUDIENCE),
    )
    .await?;
    for path in ["a", "other", "p1", "p2"] {
        bao.put_kv2("secret", path, json!({ "value": CANARY }))
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        stack
            .service_account_token(&ns, "rotor-reloader", AUDIENCE, 3600)
            .await?,
    )?;
    Ok(Env {
        stack,
        ns,
        token_file,
        _dir: dir,
    })
}

struct Reloader {
    process: ManagedProcess,
    admin: String,
}

async fn start_reloader(env: &Env, identity: &str, extra: &[&str]) -> Result<Reloader> {
    start_reloader_with(env, identity, extra, env.stack.kubeconfig()).await
}

async fn start_reloader_with(
    env: &Env,
    identity: &str,
    extra: &[&str],
    kubeconfig: &std::path::Path,
) -> Result<Reloader> {
    let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    extra.push(format!("--watch-namespace={}", env.ns));
    let binary = binary("rotor-reloader")?;
    let (process, admin) = start_reloader_via(
        &env.stack,
        &binary,
        identity,
        &env.token_file,
        &env.ns,
        &extra,
        kubeconfig,
    )
    .await?;
    Ok(Reloader { process, admin })
}

fn template(env_value: &str) -> Value {
    json!({
        "metadata": { "labels": { "app": "x" } },
        "spec": { "containers": [{ "name": "app", "image": "app:1", "command": ["/app"],
            "env": [{ "name": "S", "value": env_value }] }] }
    })
}

fn workload_json(name: &str, env_value: &str) -> Value {
    let mut t = template(env_value);
    t["metadata"]["labels"]["app"] = json!(name);
    json!({
        "metadata": { "name": name, "annotations": { "rotor.dev/reload": "true" } },
        "spec": { "selector": { "matchLabels": { "app": name } }, "template": t, "serviceName": name },
    })
}

async fn create<K>(env: &Env, name: &str, env_value: &str) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let mut value = workload_json(name, env_value);
    if K::kind(&()) != "StatefulSet" {
        value["spec"].as_object_mut().unwrap().remove("serviceName");
    }
    let object: K = serde_json::from_value(value)?;
    Api::<K>::namespaced(env.stack.kube.clone(), &env.ns)
        .create(&PostParams::default(), &object)
        .await?;
    Ok(())
}

/// (generation, rotated-at annotation) of a workload.
async fn state<K>(env: &Env, name: &str) -> Result<(i64, Option<String>, Option<String>)>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let object = Api::<K>::namespaced(env.stack.kube.clone(), &env.ns)
        .get(name)
        .await?;
    let value = serde_json::to_value(&object)?;
    Ok((
        object.meta().generation.unwrap_or(0),
        value
            .pointer("/spec/template/metadata/annotations/rotor.dev~1rotated-at")
            .and_then(Value::as_str)
            .map(str::to_string),
        object
            .annotations()
            .get("rotor.dev/observed-versions")
            .cloned(),
    ))
}

/// A counter of the reloader's metrics, summed over its labels (0 before its first increment).
async fn counter(admin: &str, name: &str) -> Result<u64> {
    Ok(metric(admin, name).await? as u64)
}

/// Waits until the reloader has completed `more` polls after this call: evidence that it looked
/// at the store and the workloads again, so "nothing changed" afterwards means something.
async fn wait_for_polls(admin: &str, more: u64) -> Result<()> {
    let target = counter(admin, "rotor_reloader_polls_total").await? + more;
    wait_until(
        &format!("{more} more polls"),
        Duration::from_secs(60),
        || async { Ok(counter(admin, "rotor_reloader_polls_total").await? >= target) },
    )
    .await
}

async fn generations(env: &Env) -> Result<BTreeMap<&'static str, i64>> {
    Ok(BTreeMap::from([
        ("dep-a", state::<Deployment>(env, "dep-a").await?.0),
        ("sts-a", state::<StatefulSet>(env, "sts-a").await?.0),
        ("ds-a", state::<DaemonSet>(env, "ds-a").await?.0),
        ("dep-other", state::<Deployment>(env, "dep-other").await?.0),
        (
            "dep-pinned",
            state::<Deployment>(env, "dep-pinned").await?.0,
        ),
        ("dep-two", state::<Deployment>(env, "dep-two").await?.0),
    ]))
}

async fn rotate(env: &Env, path: &str, value: &str) -> Result<u64> {
    env.stack
        .bao_admin()?
        .put_kv2("secret", path, json!({ "value": value }))
        .await
}

#[tokio::test]
async fn rolls_exactly_the_workloads_that_use_a_rotated_secret_once() -> Result<()> {
    let env = setup().await?;
    create::<Deployment>(&env, "dep-a", "vault:secret/data/a#value").await?;
    create::<StatefulSet>(&env, "sts-a", "postgres://u:${vault:secret/a#value}@db").await?;
    create::<DaemonSet>(&env, "ds-a", "bao:secret/data/a#value").await?;
    create::<Deployment>(&env, "dep-other", "vault:secret/data/other#value").await?;
    create::<Deployment>(&env, "dep-pinned", "vault:secret/data/a#value#1").await?;
    create::<Deployment>(
        &env,
        "dep-two",
        "${vault:secret/data/p1#value}-${vault:secret/data/p2#value}",
    )
    .await?;

    // A 2 s settle window: two paths rotated moments apart roll once even when a poll falls
    // between the two writes.
    let reloader = start_reloader(&env, "reloader-1", &["--settle=2"]).await?;
    // First sight: versions recorded, nothing rolls.
    wait_until(
        "every workload has its versions recorded",
        Duration::from_secs(30),
        || async {
            Ok(state::<Deployment>(&env, "dep-a").await?.2.is_some()
                && state::<StatefulSet>(&env, "sts-a").await?.2.is_some()
                && state::<DaemonSet>(&env, "ds-a").await?.2.is_some()
                && state::<Deployment>(&env, "dep-other").await?.2.is_some()
                && state::<Deployment>(&env, "dep-two").await?.2.is_some())
        },
    )
    .await?;
    assert!(
        state::<Deployment>(&env, "dep-a").await?.1.is_none(),
        "no rollout the first time a workload is seen"
    );
    assert!(
        state::<Deployment>(&env, "dep-pinned").await?.2.is_none(),
        "pinned references are not watched"
    );
    let before = generations(&env).await?;

    // Rotate secret/a: the Deployment, StatefulSet and DaemonSet roll once; the others don't.
    rotate(&env, "a", "rotated-1").await?;
    wait_until(
        "the three workloads using secret/a rolled",
        Duration::from_secs(30),
        || async {
            let now = generations(&env).await?;
            Ok(now["dep-a"] > before["dep-a"]
                && now["sts-a"] > before["sts-a"]
                && now["ds-a"] > before["ds-a"])
        },
    )
    .await?;
    wait_for_polls(&reloader.admin, 4).await?;
    let after = generations(&env).await?;
    for (name, expected) in [
        ("dep-a", 1),
        ("sts-a", 1),
        ("ds-a", 1),
        ("dep-other", 0),
        ("dep-pinned", 0),
        ("dep-two", 0),
    ] {
        assert_eq!(
            after[name] - before[name],
            expected,
            "{name}: generation {} -> {}",
            before[name],
            after[name]
        );
    }
    // The Deployment's rollout made a new ReplicaSet.
    let rs: Api<ReplicaSet> = Api::namespaced(env.stack.kube.clone(), &env.ns);
    wait_until(
        "dep-a has a second ReplicaSet",
        Duration::from_secs(30),
        || async {
            Ok(rs
                .list(&ListParams::default().labels("app=dep-a"))
                .await?
                .items
                .len()
                == 2)
        },
    )
    .await?;
    // An Event on the Deployment names the path and the versions.
    let events: Api<Event> = Api::namespaced(env.stack.kube.clone(), &env.ns);
    let find_note = || async {
        let list = events.list(&ListParams::default()).await?;
        Ok::<Option<String>, anyhow::Error>(
            list.items
                .iter()
                .find(|e| {
                    e.reason.as_deref() == Some(EventReason::SecretRotated.as_str())
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("dep-a")
                })
                .map(|e| e.note.clone().unwrap_or_default()),
        )
    };
    wait_until(
        "the SecretRotated event exists",
        Duration::from_secs(10),
        || async { Ok(find_note().await?.is_some()) },
    )
    .await?;
    let note = find_note().await?.unwrap_or_default();
    assert!(
        note.contains("secret/data/a version 1 -> 2"),
        "event note: {note}"
    );

    // Two paths of one workload rotated together: one rollout.
    let g = state::<Deployment>(&env, "dep-two").await?.0;
    rotate(&env, "p1", "x").await?;
    rotate(&env, "p2", "y").await?;
    wait_until("dep-two rolled", Duration::from_secs(30), || async {
        Ok(state::<Deployment>(&env, "dep-two").await?.0 > g)
    })
    .await?;
    // Settle is 2 s at one poll a second: four more polls would have rolled it again.
    wait_for_polls(&reloader.admin, 4).await?;
    assert_eq!(
        state::<Deployment>(&env, "dep-two").await?.0,
        g + 1,
        "one rollout for two paths"
    );

    // Metrics after a rotation.
    let metrics = reqwest::get(format!("{}/metrics", reloader.admin))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("rotor_reloader_rollouts_total{kind=\"Deployment\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rotor_reloader_store_reachable 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rotor_reloader_paths_watched 4"),
        "a, other, p1, p2: {metrics}"
    );

    // Restart with no change: nothing rolls.
    let mut reloader = reloader;
    reloader.process.stop(Duration::from_secs(5));
    let before = generations(&env).await?;
    let reloader = start_reloader(&env, "reloader-1", &[]).await?;
    wait_for_polls(&reloader.admin, 3).await?;
    assert_eq!(
        counter(&reloader.admin, "rotor_reloader_rotations_detected_total").await?,
        0,
        "a restarted reloader detects no rotation"
    );
    assert_eq!(
        generations(&env).await?,
        before,
        "a restarted reloader rolls nothing"
    );

    // A rotation while the reloader is down is acted on when it is back, once.
    let mut reloader = reloader;
    reloader.process.stop(Duration::from_secs(5));
    rotate(&env, "other", "while-down").await?;
    let reloader = start_reloader(&env, "reloader-1", &[]).await?;
    wait_until(
        "dep-other rolled after the restart",
        Duration::from_secs(30),
        || async { Ok(state::<Deployment>(&env, "dep-other").await?.0 > before["dep-other"]) },
    )
    .await?;
    wait_for_polls(&reloader.admin, 3).await?;
    assert_eq!(
        state::<Deployment>(&env, "dep-other").await?.0,
        before["dep-other"] + 1
    );

    // The canary value is nowhere: logs, events, metrics.
    let metrics = reqwest::get(format!("{}/metrics", reloader.admin))
        .await?
        .text()
        .await?;
    let all_events = serde_json::to_string(&events.list(&ListParams::default()).await?.items)?;
    let mut logs = String::new();
    for entry in std::fs::read_dir(env.stack.dir())? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("reloader"))
        {
            logs.push_str(&std::fs::read_to_string(&path)?);
        }
    }
    assert!(
        logs.contains("rollout started"),
        "the log has the rollout line"
    );
    for (what, text) in [
        ("logs", &logs),
        ("events", &all_events),
        ("metrics", &metrics),
    ] {
        assert!(!text.contains(CANARY), "the canary leaked into {what}");
    }
    Ok(())
}

#[tokio::test]
async fn recovers_from_a_store_outage_longer_than_the_backoff_cap() -> Result<()> {
    let env = setup().await?;
    create::<Deployment>(&env, "dep-a", "vault:secret/data/a#value").await?;
    let reloader = start_reloader(
        &env,
        "reloader-1",
        &["--backoff-cap=2", "--poll-interval=2"],
    )
    .await?;
    wait_until("versions recorded", Duration::from_secs(30), || async {
        Ok(state::<Deployment>(&env, "dep-a").await?.2.is_some())
    })
    .await?;
    let g = state::<Deployment>(&env, "dep-a").await?.0;
    env.stack.bao.pause()?; // the store hangs: no answers at all
    // Four failed polls: the backoff (1 s, 2 s, then capped at 2 s) has reached its cap.
    wait_until("four failed polls", Duration::from_secs(90), || async {
        Ok(counter(
            &reloader.admin,
            "rotor_reloader_polls_total{result=\"failed\"}",
        )
        .await?
            >= 4)
    })
    .await?;
    let metrics = reqwest::get(format!("{}/metrics", reloader.admin))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("rotor_reloader_store_reachable 0"),
        "{metrics}"
    );
    env.stack.bao.resume()?;
    rotate(&env, "a", "after-outage").await?;
    let back = Instant::now();
    wait_until(
        "dep-a rolled after the outage",
        Duration::from_secs(30),
        || async { Ok(state::<Deployment>(&env, "dep-a").await?.0 > g) },
    )
    .await?;
    let took = back.elapsed();
    eprintln!("rollout {took:?} after the store came back (poll interval 2 s, backoff cap 2 s)");
    // Within one poll interval plus one in-flight request timeout (5 s) and scheduling slack.
    assert!(took < Duration::from_secs(12), "took {took:?}");
    Ok(())
}

#[tokio::test]
async fn a_second_replica_takes_over_when_the_leader_dies() -> Result<()> {
    let env = setup().await?;
    create::<Deployment>(&env, "dep-a", "vault:secret/data/a#value").await?;
    let mut r1 = start_reloader(&env, "reloader-1", &[]).await?;
    let r2 = start_reloader(&env, "reloader-2", &[]).await?;
    wait_until("versions recorded", Duration::from_secs(30), || async {
        Ok(state::<Deployment>(&env, "dep-a").await?.2.is_some())
    })
    .await?;
    let leader_of = |admin: String| async move {
        Ok::<bool, anyhow::Error>(
            reqwest::get(format!("{admin}/metrics"))
                .await?
                .text()
                .await?
                .lines()
                .any(|l| l == "rotor_reloader_leader 1"),
        )
    };
    wait_until("exactly one leader", Duration::from_secs(15), || async {
        Ok(leader_of(r1.admin.clone()).await? != leader_of(r2.admin.clone()).await?)
    })
    .await?;
    let (mut leader, follower) = if leader_of(r1.admin.clone()).await? {
        (r1, r2)
    } else {
        (r2, r1)
    };
    leader.process.kill(); // a crash: the lease is not released
    let killed = Instant::now();
    wait_until("the follower leads", Duration::from_secs(20), || async {
        leader_of(follower.admin.clone()).await
    })
    .await?;
    eprintln!("takeover after {:?} (lease duration 3 s)", killed.elapsed());
    let g = state::<Deployment>(&env, "dep-a").await?.0;
    rotate(&env, "a", "after-takeover").await?;
    wait_until(
        "the new leader rolled dep-a",
        Duration::from_secs(30),
        || async { Ok(state::<Deployment>(&env, "dep-a").await?.0 > g) },
    )
    .await?;
    r1 = follower;
    drop(r1);
    Ok(())
}

#[tokio::test]
async fn the_settle_window_and_the_rollout_cap_hold() -> Result<()> {
    let env = setup().await?;
    create::<Deployment>(
        &env,
        "dep-two",
        "${vault:secret/data/p1#value}-${vault:secret/data/p2#value}",
    )
    .await?;
    for name in ["cap-1", "cap-2", "cap-3"] {
        create::<Deployment>(&env, name, "vault:secret/data/other#value").await?;
    }
    let reloader = start_reloader(
        &env,
        "reloader-1",
        &["--settle=4", "--max-rollouts-per-poll=1"],
    )
    .await?;
    wait_until("versions recorded", Duration::from_secs(30), || async {
        Ok(state::<Deployment>(&env, "dep-two").await?.2.is_some()
            && state::<Deployment>(&env, "cap-3").await?.2.is_some())
    })
    .await?;

    // Two paths rotated 2 s apart, inside the 4 s settle window: one rollout, for both.
    let g = state::<Deployment>(&env, "dep-two").await?.0;
    let detected = counter(&reloader.admin, "rotor_reloader_rotations_detected_total").await?;
    rotate(&env, "p1", "first").await?;
    wait_until(
        "the rotation of p1 detected",
        Duration::from_secs(30),
        || async {
            Ok(
                counter(&reloader.admin, "rotor_reloader_rotations_detected_total").await?
                    > detected,
            )
        },
    )
    .await?;
    assert_eq!(
        state::<Deployment>(&env, "dep-two").await?.0,
        g,
        "nothing rolls inside the window"
    );
    rotate(&env, "p2", "second").await?;
    wait_until("dep-two rolled", Duration::from_secs(30), || async {
        Ok(state::<Deployment>(&env, "dep-two").await?.0 > g)
    })
    .await?;
    // Settle is 4 s at one poll a second: six more polls would have rolled it again.
    wait_for_polls(&reloader.admin, 6).await?;
    let (generation, _, record) = state::<Deployment>(&env, "dep-two").await?;
    assert_eq!(generation, g + 1, "one rollout for both paths");
    assert!(
        record
            .unwrap()
            .contains(&format!("\"{}\":2", record_key("secret/data/p2"))),
        "the rollout recorded both new versions"
    );

    // Three workloads on one rotated path with a cap of one rollout per poll: all roll, once,
    // and the cap deferred some of them.
    let before = [
        state::<Deployment>(&env, "cap-1").await?.0,
        state::<Deployment>(&env, "cap-2").await?.0,
        state::<Deployment>(&env, "cap-3").await?.0,
    ];
    rotate(&env, "other", "capped").await?;
    wait_until("all three rolled", Duration::from_secs(40), || async {
        Ok(state::<Deployment>(&env, "cap-1").await?.0 > before[0]
            && state::<Deployment>(&env, "cap-2").await?.0 > before[1]
            && state::<Deployment>(&env, "cap-3").await?.0 > before[2])
    })
    .await?;
    wait_for_polls(&reloader.admin, 3).await?;
    for (i, name) in ["cap-1", "cap-2", "cap-3"].iter().enumerate() {
        assert_eq!(
            state::<Deployment>(&env, name).await?.0,
            before[i] + 1,
            "{name} rolled once"
        );
    }
    let log = std::fs::read_to_string(env.stack.dir().join("reloader-1.log"))?;
    assert!(
        log.contains("rollout deferred: cap on rollouts per poll reached"),
        "the cap held some back"
    );
    drop(reloader);
    Ok(())
}

/// ReplicaSets of a Deployment: one per pod template it ran, so rollouts + 1 (generation also
/// counts annotation patches, ReplicaSets do not).
async fn replica_sets(env: &Env, name: &str) -> Result<usize> {
    let rs: Api<ReplicaSet> = Api::namespaced(env.stack.kube.clone(), &env.ns);
    Ok(rs
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await?
        .items
        .len())
}

#[tokio::test]
async fn a_rotation_during_an_apiserver_outage_rolls_exactly_once() -> Result<()> {
    let env = setup().await?;
    create::<Deployment>(&env, "dep-a", "vault:secret/data/a#value").await?;
    let reloader = start_reloader(&env, "reloader-1", &[]).await?;
    recorded_with_one_replica_set(&env, "dep-a").await?;
    // The apiserver hangs for 30 s (connections held open, nothing answered): the reloader's
    // lease renewals and watches hang with it. The secret rotates meanwhile.
    env.stack.api.process.pause()?;
    let resumed = scopeguard_resume(&env);
    rotate(&env, "a", "during-the-outage").await?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop(resumed);
    wait_until(
        "dep-a rolled after the outage",
        Duration::from_secs(60),
        || async { Ok(replica_sets(&env, "dep-a").await? >= 2) },
    )
    .await?;
    // Evidence that the reloader kept looking, with its cache re-listed: ten more polls.
    wait_for_polls(&reloader.admin, 10).await?;
    assert_eq!(replica_sets(&env, "dep-a").await?, 2, "exactly one rollout");
    // A patch sent just before the freeze may have had no answer in time: its outcome was
    // unknown to the reloader (counted as a failure) and the API applied it once. Either way
    // at most one rollout is counted as started.
    let started = counter(&reloader.admin, "rotor_reloader_rollouts_total").await?;
    let unknown = counter(&reloader.admin, "rotor_reloader_rollout_failures_total").await?;
    eprintln!("rollouts counted {started}, patches without an answer {unknown}");
    assert!(
        started <= 1 && started + unknown >= 1,
        "{started} {unknown}"
    );
    Ok(())
}

/// Waits until the reloader recorded `name`'s versions and the Deployment has one ReplicaSet.
async fn recorded_with_one_replica_set(env: &Env, name: &str) -> Result<()> {
    wait_until(
        &format!("{name} recorded, with one ReplicaSet"),
        Duration::from_secs(30),
        || async {
            Ok(state::<Deployment>(env, name).await?.2.is_some()
                && replica_sets(env, name).await? == 1)
        },
    )
    .await
}

/// Resumes the apiserver when dropped, so a failing test never leaves it frozen.
fn scopeguard_resume(env: &Env) -> impl Drop + '_ {
    struct Resume<'a>(&'a Env);
    impl Drop for Resume<'_> {
        fn drop(&mut self) {
            let _ = self.0.stack.api.process.resume();
        }
    }
    Resume(env)
}

#[tokio::test]
async fn an_unreadable_record_rolls_once_is_repaired_and_says_why() -> Result<()> {
    let env = setup().await?;
    create::<Deployment>(&env, "dep-a", "vault:secret/data/a#value").await?;
    let api = Api::<Deployment>::namespaced(env.stack.kube.clone(), &env.ns);
    let patch = json!({ "metadata": { "annotations": { "rotor.dev/observed-versions": "{\"secret/data/a\": \"tru" } } });
    api.patch(
        "dep-a",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    wait_until("one ReplicaSet", Duration::from_secs(30), || async {
        Ok(replica_sets(&env, "dep-a").await? == 1)
    })
    .await?;
    let reloader = start_reloader(&env, "reloader-1", &[]).await?;
    wait_until("the record repaired", Duration::from_secs(30), || async {
        Ok(state::<Deployment>(&env, "dep-a")
            .await?
            .2
            .is_some_and(|r| r.contains(&format!("\"{}\":", record_key("secret/data/a")))))
    })
    .await?;
    wait_for_polls(&reloader.admin, 5).await?;
    wait_until(
        "the rollout's ReplicaSet",
        Duration::from_secs(30),
        || async { Ok(replica_sets(&env, "dep-a").await? == 2) },
    )
    .await?;
    wait_for_polls(&reloader.admin, 3).await?;
    assert_eq!(replica_sets(&env, "dep-a").await?, 2, "rolled exactly once");
    let warnings: Vec<String> = events_with_reason(&env, EventReason::UnreadableRecord)
        .await?
        .into_iter()
        .map(|e| format!("{:?} {}", e.type_, e.note.unwrap_or_default()))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("Warning") && warnings[0].contains("could not be read"),
        "{warnings:?}"
    );
    Ok(())
}

/// The Events in the test namespace with `reason`.
async fn events_with_reason(env: &Env, reason: EventReason) -> Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(env.stack.kube.clone(), &env.ns);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason.as_str()))
        .collect())
}

/// How many tokens the store has issued and not yet revoked (root's view of the accessors).
async fn live_tokens(env: &Env) -> Result<usize> {
    Ok(env
        .stack
        .bao_admin()?
        .list("auth/token/accessors")
        .await?
        .len())
}

#[tokio::test]
async fn a_forbidden_path_does_not_make_the_reloader_log_in_again() -> Result<()> {
    let env = setup().await?;
    let bao = env.stack.bao_admin()?;
    // A mount the reloader's policy does not cover.
    bao.mount("private", "kv", json!({ "version": "2" }))
        .await?;
    bao.put_kv2("private", "x", json!({ "value": CANARY }))
        .await?;
    create::<Deployment>(&env, "dep-a", "vault:secret/data/a#value").await?;
    create::<Deployment>(&env, "dep-private", "vault:private/data/x#value").await?;
    let reloader = start_reloader(&env, "reloader-1", &[]).await?;
    wait_until("dep-a recorded", Duration::from_secs(30), || async {
        Ok(state::<Deployment>(&env, "dep-a").await?.2.is_some())
    })
    .await?;
    wait_for_polls(&reloader.admin, 2).await?;
    let tokens = live_tokens(&env).await?;
    let errors = counter(&reloader.admin, "rotor_reloader_store_errors_total").await?;
    wait_for_polls(&reloader.admin, 10).await?;
    assert!(
        counter(&reloader.admin, "rotor_reloader_store_errors_total").await? >= errors + 10,
        "the forbidden path was polled and refused each time"
    );
    assert_eq!(
        live_tokens(&env).await?,
        tokens,
        "ten polls with a forbidden path minted no token"
    );
    Ok(())
}

/// Whether the reloader at `admin` says it leads.
async fn leads(admin: &str) -> Result<bool> {
    Ok(counter(admin, "rotor_reloader_leader").await? == 1)
}

#[tokio::test]
async fn a_partitioned_leader_stops_acting_and_a_late_patch_changes_nothing() -> Result<()> {
    let env = setup().await?;
    create::<Deployment>(&env, "dep-a", "vault:secret/data/a#value").await?;
    // reloader-1 reaches the API through a proxy that can hold traffic; reloader-2 directly.
    let api: std::net::SocketAddr = env.stack.api.url.trim_start_matches("https://").parse()?;
    let proxy = rotor_testkit::partition::TcpProxy::start(api).await?;
    let kubeconfig = env.stack.dir().join("through-the-proxy.kubeconfig");
    std::fs::write(
        &kubeconfig,
        rotor_testkit::apiserver::kubeconfig_yaml(
            &format!("https://{}", proxy.addr),
            &env.stack.api.ca_pem,
            &env.stack.api.admin,
        ),
    )?;
    let r1 = start_reloader_with(&env, "reloader-1", &[], &kubeconfig).await?;
    wait_until("reloader-1 leads", Duration::from_secs(30), || {
        leads(&r1.admin)
    })
    .await?;
    recorded_with_one_replica_set(&env, "dep-a").await?;
    let r2 = start_reloader(&env, "reloader-2", &[]).await?;

    // The partition: reloader-1's connections stay open and nothing passes. The store is not
    // partitioned, so reloader-1 still sees the rotation.
    proxy.hold();
    rotate(&env, "a", "during-the-partition").await?;
    wait_until(
        "reloader-1 stops acting",
        Duration::from_secs(30),
        || async { Ok(!leads(&r1.admin).await?) },
    )
    .await?;
    wait_until("reloader-2 leads", Duration::from_secs(30), || {
        leads(&r2.admin)
    })
    .await?;
    wait_until("dep-a rolled", Duration::from_secs(60), || async {
        Ok(replica_sets(&env, "dep-a").await? >= 2)
    })
    .await?;

    // Healing delivers whatever reloader-1 had sent: a late renewal, perhaps a rollout patch
    // decided from its old cache. The resourceVersion precondition refuses it.
    proxy.heal();
    wait_for_polls(&r2.admin, 10).await?;
    assert_eq!(replica_sets(&env, "dep-a").await?, 2, "exactly one rollout");
    let rollouts = counter(&r1.admin, "rotor_reloader_rollouts_total").await?
        + counter(&r2.admin, "rotor_reloader_rollouts_total").await?;
    assert_eq!(rollouts, 1, "one rollout started across both replicas");
    eprintln!(
        "reloader-1 patch conflicts: {}",
        counter(&r1.admin, "rotor_reloader_patch_conflicts_total").await?
    );
    assert!(!leads(&r1.admin).await?, "the healed replica follows");
    Ok(())
}

#[tokio::test]
async fn a_path_outside_the_namespaces_rule_is_not_watched_and_an_event_says_why() -> Result<()> {
    let env = setup().await?;
    let bao = env.stack.bao_admin()?;
    let own = format!("{}/db", env.ns);
    bao.put_kv2("secret", &own, json!({ "value": CANARY }))
        .await?;
    bao.put_kv2("secret", "other-team/db", json!({ "value": CANARY }))
        .await?;
    create::<Deployment>(&env, "dep-own", &format!("vault:secret/data/{own}#value")).await?;
    create::<Deployment>(&env, "dep-foreign", "vault:secret/data/other-team/db#value").await?;
    // Under the namespace's prefix as text, another team's secret once normalised: refused by
    // the shared path rule, so never polled for it.
    let sneaky = format!("vault:secret/data/{}/%2e%2e/other-team/db#value", env.ns);
    create::<Deployment>(&env, "dep-sneaky", &sneaky).await?;
    let reloader = start_reloader(
        &env,
        "reloader-1",
        &["--watchable-paths=secret/data/{namespace}/*"],
    )
    .await?;
    recorded_with_one_replica_set(&env, "dep-own").await?;
    wait_until(
        "the reloader says dep-sneaky's reference does not parse",
        Duration::from_secs(30),
        || async {
            let log = std::fs::read_to_string(reloader.process.log_path())?;
            Ok(log
                .lines()
                .any(|l| l.contains("dep-sneaky") && l.contains("percent-encoding")))
        },
    )
    .await?;
    let not_watched = || async {
        let notes: Vec<String> = events_with_reason(&env, EventReason::PathNotWatched)
            .await?
            .into_iter()
            .map(|e| {
                format!(
                    "{:?} {:?} {}",
                    e.type_,
                    e.regarding.and_then(|r| r.name),
                    e.note.unwrap_or_default()
                )
            })
            .collect();
        Ok::<_, anyhow::Error>(notes)
    };
    wait_until(
        "the PathNotWatched event",
        Duration::from_secs(30),
        || async { Ok(!not_watched().await?.is_empty()) },
    )
    .await?;
    // Only the namespace's own path is polled.
    assert_eq!(
        counter(&reloader.admin, "rotor_reloader_paths_watched").await?,
        1
    );
    // Both rotate: only the workload on its own path rolls.
    rotate(&env, "other-team/db", "rotated-foreign").await?;
    rotate(&env, &own, "rotated-own").await?;
    wait_until("dep-own rolled", Duration::from_secs(30), || async {
        Ok(replica_sets(&env, "dep-own").await? == 2)
    })
    .await?;
    wait_for_polls(&reloader.admin, 3).await?;
    for name in ["dep-foreign", "dep-sneaky"] {
        assert_eq!(replica_sets(&env, name).await?, 1, "{name} never rolled");
        assert!(
            state::<Deployment>(&env, name).await?.2.is_none(),
            "{name} never recorded"
        );
    }
    let notes = not_watched().await?;
    assert_eq!(
        notes.len(),
        1,
        "announced once, not once per poll: {notes:?}"
    );
    assert!(
        notes[0].contains("Warning")
            && notes[0].contains("dep-foreign")
            && notes[0].contains("secret/data/other-team/db")
            && notes[0].contains("--watchable-paths"),
        "{notes:?}"
    );
    assert!(!notes[0].contains(CANARY));
    Ok(())
}

/// Creates Deployment `name` whose pods name `store` in `rotor.dev/vault-addr`.
async fn create_on_store(env: &Env, name: &str, env_value: &str, store: &str) -> Result<()> {
    let mut value = workload_json(name, env_value);
    value["spec"].as_object_mut().unwrap().remove("serviceName");
    value["spec"]["template"]["metadata"]["annotations"] = json!({ "rotor.dev/vault-addr": store });
    let object: Deployment = serde_json::from_value(value)?;
    Api::<Deployment>::namespaced(env.stack.kube.clone(), &env.ns)
        .create(&PostParams::default(), &object)
        .await?;
    Ok(())
}

#[tokio::test]
async fn each_workload_follows_its_own_stores_versions() -> Result<()> {
    let env = setup().await?;
    // A second store, set up as the platform would: Kubernetes auth through this cluster, the
    // reloader's metadata-only policy and role.
    let dir = tempfile::tempdir()?;
    let team = rotor_testkit::OpenBao::start(dir.path()).await?;
    let team_admin = team.admin()?;
    env.stack
        .enable_kubernetes_auth_on(&team_admin, "kubernetes")
        .await?;
    team_admin
        .put_policy("rotor-reloader", RELOADER_POLICY)
        .await?;
    team_admin
        .put_kubernetes_role(
            "kubernetes",
            "rotor-reloader",
            &["rotor-reloader"],
            &[&env.ns],
            &["rotor-reloader"],
            Some(AUDIENCE),
        )
        .await?;
    // The same path name on both stores.
    team_admin
        .put_kv2("secret", "a", json!({ "value": CANARY }))
        .await?;
    create::<Deployment>(&env, "dep-default", "vault:secret/data/a#value").await?;
    create_on_store(&env, "dep-team", "vault:secret/data/a#value", &team.addr).await?;
    create_on_store(
        &env,
        "dep-rogue",
        "vault:secret/data/a#value",
        "http://127.0.0.1:9",
    )
    .await?;
    let allow = format!("--addr-allowlist={}", team.addr);
    let reloader = start_reloader(&env, "reloader-1", &[allow.as_str()]).await?;
    recorded_with_one_replica_set(&env, "dep-default").await?;
    recorded_with_one_replica_set(&env, "dep-team").await?;
    assert_eq!(
        counter(&reloader.admin, "rotor_reloader_paths_watched").await?,
        2,
        "one request per store for the one path name"
    );

    // Rotated on the team store only: only the workload on that store rolls.
    team_admin
        .put_kv2("secret", "a", json!({ "value": "rotated-on-team" }))
        .await?;
    wait_until("dep-team rolled", Duration::from_secs(30), || async {
        Ok(replica_sets(&env, "dep-team").await? == 2)
    })
    .await?;
    wait_for_polls(&reloader.admin, 3).await?;
    assert_eq!(replica_sets(&env, "dep-default").await?, 1);

    // Rotated on the default store: only the default store's workload rolls.
    rotate(&env, "a", "rotated-on-default").await?;
    wait_until("dep-default rolled", Duration::from_secs(30), || async {
        Ok(replica_sets(&env, "dep-default").await? == 2)
    })
    .await?;
    wait_for_polls(&reloader.admin, 3).await?;
    assert_eq!(
        replica_sets(&env, "dep-team").await?,
        2,
        "rolled once, for its own store"
    );

    // A store neither default nor allowed is never polled, and an Event says why.
    let refused: Vec<String> = events_with_reason(&env, EventReason::StoreNotAllowed)
        .await?
        .into_iter()
        .map(|e| e.note.unwrap_or_default())
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("http://127.0.0.1:9") && refused[0].contains("allowlist"),
        "{refused:?}"
    );
    assert_eq!(replica_sets(&env, "dep-rogue").await?, 1);
    drop(team);
    Ok(())
}

#[tokio::test]
async fn a_workload_first_seen_after_its_secret_rotated_rolls_once() -> Result<()> {
    let env = setup().await?;
    create::<Deployment>(&env, "dep-stale", "vault:secret/data/a#value").await?;
    wait_until("one ReplicaSet", Duration::from_secs(30), || async {
        Ok(replica_sets(&env, "dep-stale").await? == 1)
    })
    .await?;
    // The secret changes well after the Deployment's pods were made (past the 10 s allowed for
    // clock skew), before any reloader runs.
    tokio::time::sleep(Duration::from_secs(12)).await;
    rotate(&env, "a", "rotated-before-watched").await?;
    create::<Deployment>(&env, "dep-fresh", "vault:secret/data/a#value").await?;
    let reloader = start_reloader(&env, "reloader-1", &[]).await?;
    wait_until("dep-stale rolled", Duration::from_secs(30), || async {
        Ok(replica_sets(&env, "dep-stale").await? == 2)
    })
    .await?;
    recorded_with_one_replica_set(&env, "dep-fresh").await?;
    wait_for_polls(&reloader.admin, 3).await?;
    assert_eq!(replica_sets(&env, "dep-stale").await?, 2, "once");
    assert_eq!(
        replica_sets(&env, "dep-fresh").await?,
        1,
        "made after the rotation: not rolled"
    );
    let notes: Vec<String> = events_with_reason(&env, EventReason::RotatedBeforeWatched)
        .await?
        .into_iter()
        .map(|e| e.note.unwrap_or_default())
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("secret/data/a"), "{notes:?}");
    Ok(())
}

/// `rotor.dev/on-rotation: signal`: the pods are told the new version (their
/// `rotor.dev/versions` annotation, merged with other paths already there), the workload is not
/// rolled, and with two replicas running it happens once: one Event, one in-place rotation
/// counted. A pod with the same labels that another controller owns is not told.
#[tokio::test]
async fn signal_mode_tells_every_pod_and_never_rolls() -> Result<()> {
    let env = setup().await?;
    let mut value = workload_json("sig", "plain");
    value["spec"]["replicas"] = json!(2);
    let annotations = json!({
        "rotor.dev/file.app.conf": "token=${vault:secret/data/p1#value}",
        "rotor.dev/on-rotation": "signal:SIGUSR1",
    });
    value["spec"]["template"]["metadata"]["annotations"] = annotations;
    value["spec"].as_object_mut().unwrap().remove("serviceName");
    let deployment: Deployment = serde_json::from_value(value)?;
    Api::<Deployment>::namespaced(env.stack.kube.clone(), &env.ns)
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(env.stack.kube.clone(), &env.ns);
    let pod_versions = || async {
        let list = pods.list(&ListParams::default().labels("app=sig")).await?;
        Ok::<Vec<Option<String>>, anyhow::Error>(
            list.items
                .iter()
                .map(|p| p.annotations().get("rotor.dev/versions").cloned())
                .collect(),
        )
    };
    wait_until("two pods exist", Duration::from_secs(30), || async {
        Ok(pod_versions().await?.len() == 2)
    })
    .await?;
    let first = start_reloader(&env, "reloader-sig-1", &[]).await?;
    let second = start_reloader(&env, "reloader-sig-2", &[]).await?;
    wait_until(
        "the versions are recorded",
        Duration::from_secs(30),
        || async { Ok(state::<Deployment>(&env, "sig").await?.2.is_some()) },
    )
    .await?;
    assert_eq!(
        pod_versions().await?,
        vec![None, None],
        "first sight tells nobody"
    );
    // A pod with the same labels that another controller owns (a Job's, say) is not this
    // Deployment's and is never told; a version of another path on one of its own pods is kept.
    let owner = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
            "metadata": { "name": "owner-of-foreign" },
            "spec": { "containers": [{ "name": "c", "image": "busybox" }] } }))?,
        )
        .await?;
    let foreign = json!({
        "metadata": { "name": "foreign", "labels": { "app": "sig" },
            "ownerReferences": [{ "apiVersion": "v1", "kind": "Pod", "name": "owner-of-foreign",
                "uid": owner.uid().unwrap(), "controller": true }] },
        "spec": { "containers": [{ "name": "c", "image": "busybox" }] } });
    pods.create(&PostParams::default(), &serde_json::from_value(foreign)?)
        .await?;
    let own = pods
        .list(&ListParams::default().labels("app=sig"))
        .await?
        .items
        .into_iter()
        .find(|p| p.name_any() != "foreign")
        .unwrap();
    let other_path = json!({ "metadata": { "annotations": {
        "rotor.dev/versions": "{\"secret/data/other\":5}" } } });
    pods.patch(
        &own.name_any(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&other_path),
    )
    .await?;

    let version = rotate(&env, "p1", "rotated-in-place").await?;
    let want = format!("{{\"secret/data/p1\":{version}}}");
    let merged = format!("{{\"secret/data/other\":5,\"secret/data/p1\":{version}}}");
    let told = wait_until("both pods are told", Duration::from_secs(30), || async {
        let list = pods.list(&ListParams::default().labels("app=sig")).await?;
        Ok(list.items.iter().all(|p| {
            let v = p
                .annotations()
                .get("rotor.dev/versions")
                .map(String::as_str);
            match p.name_any() {
                n if n == "foreign" => true,
                n if n == own.name_any() => v == Some(merged.as_str()),
                _ => v == Some(want.as_str()),
            }
        }))
    })
    .await;
    if let Err(e) = told {
        bail!(
            "{e}: {:?}\nreloader 1:\n{}\nreloader 2:\n{}",
            pod_versions().await?,
            first.process.log_tail(30),
            second.process.log_tail(30)
        );
    }
    wait_until(
        "the new version is recorded",
        Duration::from_secs(30),
        || async {
            Ok(state::<Deployment>(&env, "sig")
                .await?
                .2
                .is_some_and(|r| r.contains(&format!(":{version}"))))
        },
    )
    .await?;
    // Several polls of both replicas later: still no rollout, and the rotation counted once.
    let polls = || async {
        Ok::<u64, anyhow::Error>(
            counter(&first.admin, "rotor_reloader_polls_total").await?
                + counter(&second.admin, "rotor_reloader_polls_total").await?,
        )
    };
    let target = polls().await? + 3;
    wait_until(
        "3 more polls by the leader",
        Duration::from_secs(60),
        || async { Ok(polls().await? >= target) },
    )
    .await?;
    // (A Deployment's generation also moves with its annotations, the record among them: the
    // pod template and the ReplicaSets say whether it rolled.)
    let (_, rotated_at, _) = state::<Deployment>(&env, "sig").await?;
    assert_eq!(rotated_at, None, "not rolled");
    let replica_sets = Api::<ReplicaSet>::namespaced(env.stack.kube.clone(), &env.ns)
        .list(&ListParams::default().labels("app=sig"))
        .await?;
    assert_eq!(replica_sets.items.len(), 1, "no new ReplicaSet");
    let in_place = counter(&first.admin, "rotor_reloader_in_place_rotations_total").await?
        + counter(&second.admin, "rotor_reloader_in_place_rotations_total").await?;
    let told = counter(&first.admin, "rotor_reloader_pods_told_total").await?
        + counter(&second.admin, "rotor_reloader_pods_told_total").await?;
    assert_eq!((in_place, told), (1, 2));
    let foreign = pods.get("foreign").await?;
    assert_eq!(
        foreign.annotations().get("rotor.dev/versions"),
        None,
        "a pod another controller owns is never told"
    );
    let notes: Vec<String> = events_with_reason(&env, EventReason::SecretRotatedInPlace)
        .await?
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("told 2 running pod(s)")
            && notes[0].contains("SIGUSR1")
            && !notes[0].contains("rotated-in-place"),
        "{notes:?}"
    );
    Ok(())
}

/// Patches the env value of a Deployment's container (a new template generation).
async fn set_env_value(env: &Env, name: &str, value: &str) -> Result<()> {
    let patch = json!({ "spec": { "template": { "spec": { "containers": [
        { "name": "app", "env": [{ "name": "S", "value": value }] }
    ] } } } });
    Api::<Deployment>::namespaced(env.stack.kube.clone(), &env.ns)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&patch),
        )
        .await?;
    Ok(())
}

/// The reloader keeps a workload without references as its identity only (issue 21): one that
/// gains a reference later is watched from that change on and rolls once on rotation; one that
/// loses it is forgotten and never rolls again.
#[tokio::test]
async fn a_workload_that_gains_a_reference_is_watched_and_one_that_loses_it_is_not() -> Result<()> {
    let env = setup().await?;
    rotate(&env, "gain", "v1").await?;
    create::<Deployment>(&env, "dep-plain", "plain").await?;
    create::<Deployment>(&env, "dep-ref", "vault:secret/data/gain#value").await?;
    let reloader = start_reloader(&env, "reloader-1", &[]).await?;
    let watched = || async { metric(&reloader.admin, "rotor_reloader_workloads_watched").await };
    wait_until("dep-ref recorded", Duration::from_secs(30), || async {
        Ok(state::<Deployment>(&env, "dep-ref").await?.2.is_some())
    })
    .await?;
    assert_eq!(watched().await?, 1.0);
    assert_eq!(state::<Deployment>(&env, "dep-plain").await?.2, None);

    set_env_value(&env, "dep-plain", "vault:secret/data/gain#value").await?;
    wait_until("dep-plain recorded", Duration::from_secs(30), || async {
        Ok(state::<Deployment>(&env, "dep-plain").await?.2.is_some())
    })
    .await?;
    assert_eq!(watched().await?, 2.0);
    rotate(&env, "gain", "v2").await?;
    wait_until("both rolled", Duration::from_secs(30), || async {
        Ok(state::<Deployment>(&env, "dep-plain").await?.1.is_some()
            && state::<Deployment>(&env, "dep-ref").await?.1.is_some())
    })
    .await?;

    set_env_value(&env, "dep-plain", "plain again").await?;
    wait_until("dep-plain forgotten", Duration::from_secs(30), || async {
        Ok(watched().await? == 1.0)
    })
    .await?;
    let plain_rolled_at = state::<Deployment>(&env, "dep-plain").await?.1;
    let ref_rolled_at = state::<Deployment>(&env, "dep-ref").await?.1;
    rotate(&env, "gain", "v3").await?;
    wait_until("dep-ref rolled again", Duration::from_secs(30), || async {
        Ok(state::<Deployment>(&env, "dep-ref").await?.1 != ref_rolled_at)
    })
    .await?;
    wait_for_polls(&reloader.admin, 2).await?;
    assert_eq!(
        state::<Deployment>(&env, "dep-plain").await?.1,
        plain_rolled_at,
        "a workload without references any more does not roll"
    );
    Ok(())
}

/// A Deployment whose container takes its env as `env_json` says (`env`, `envFrom`).
async fn create_reading_configmaps(env: &Env, name: &str, env_json: Value) -> Result<()> {
    let mut value = workload_json(name, "plain");
    value["spec"].as_object_mut().unwrap().remove("serviceName");
    let container = &mut value["spec"]["template"]["spec"]["containers"][0];
    container.as_object_mut().unwrap().remove("env");
    for (k, v) in env_json.as_object().unwrap() {
        container[k] = v.clone();
    }
    Api::<Deployment>::namespaced(env.stack.kube.clone(), &env.ns)
        .create(&PostParams::default(), &serde_json::from_value(value)?)
        .await?;
    Ok(())
}

/// References that reach pods through ConfigMaps (`configMapKeyRef`, `envFrom` with a prefix)
/// are watched with `--configmap-references` (issue 21): each workload rolls once when its own
/// secret rotates, and a reference the ConfigMap gains later is watched from then on.
#[tokio::test]
async fn references_from_configmaps_roll_their_workloads_once() -> Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let env = setup().await?;
    rotate(&env, "cmref", "v1").await?;
    rotate(&env, "cmall", "v1").await?;
    rotate(&env, "cmlater", "v1").await?;
    let configmaps: Api<ConfigMap> = Api::namespaced(env.stack.kube.clone(), &env.ns);
    for (name, data) in [
        (
            "refs",
            json!({ "S": "vault:secret/data/cmref#value", "OTHER": "plain" }),
        ),
        (
            "all",
            json!({ "T": "x ${vault:secret/data/cmall#value} y", "PLAIN": "1" }),
        ),
    ] {
        let cm: ConfigMap =
            serde_json::from_value(json!({ "metadata": { "name": name }, "data": data }))?;
        configmaps.create(&PostParams::default(), &cm).await?;
    }
    create_reading_configmaps(
        &env,
        "dep-cm-key",
        json!({ "env": [{ "name": "S", "valueFrom": { "configMapKeyRef": { "name": "refs", "key": "S" } } }] }),
    )
    .await?;
    create_reading_configmaps(
        &env,
        "dep-cm-from",
        json!({ "envFrom": [{ "prefix": "P_", "configMapRef": { "name": "all" } }] }),
    )
    .await?;
    let reloader = start_reloader(&env, "reloader-1", &["--configmap-references"]).await?;
    let record = |name: &'static str| {
        let env = &env;
        async move {
            Ok::<_, anyhow::Error>(state::<Deployment>(env, name).await?.2.unwrap_or_default())
        }
    };
    wait_until("both recorded", Duration::from_secs(30), || async {
        Ok(record("dep-cm-key")
            .await?
            .contains(&record_key("secret/data/cmref"))
            && record("dep-cm-from")
                .await?
                .contains(&record_key("secret/data/cmall")))
    })
    .await?;
    recorded_with_one_replica_set(&env, "dep-cm-key").await?;
    recorded_with_one_replica_set(&env, "dep-cm-from").await?;

    rotate(&env, "cmref", "v2").await?;
    wait_until("dep-cm-key rolled", Duration::from_secs(30), || async {
        Ok(replica_sets(&env, "dep-cm-key").await? == 2)
    })
    .await?;
    wait_for_polls(&reloader.admin, 3).await?;
    assert_eq!(replica_sets(&env, "dep-cm-key").await?, 2, "once");
    assert_eq!(
        replica_sets(&env, "dep-cm-from").await?,
        1,
        "not its secret"
    );

    rotate(&env, "cmall", "v2").await?;
    wait_until("dep-cm-from rolled", Duration::from_secs(30), || async {
        Ok(replica_sets(&env, "dep-cm-from").await? == 2)
    })
    .await?;

    // The ConfigMap gains a reference: watched from then on.
    configmaps
        .patch(
            "all",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "data": { "U": "vault:secret/data/cmlater#value" } })),
        )
        .await?;
    wait_until(
        "the new reference recorded",
        Duration::from_secs(30),
        || async {
            Ok(record("dep-cm-from")
                .await?
                .contains(&record_key("secret/data/cmlater")))
        },
    )
    .await?;
    rotate(&env, "cmlater", "v2").await?;
    wait_until(
        "dep-cm-from rolled again",
        Duration::from_secs(30),
        || async { Ok(replica_sets(&env, "dep-cm-from").await? == 3) },
    )
    .await?;
    wait_for_polls(&reloader.admin, 3).await?;
    assert_eq!(replica_sets(&env, "dep-cm-from").await?, 3, "once more");
    assert_eq!(replica_sets(&env, "dep-cm-key").await?, 2);
    Ok(())
}

/// Issue 32: the reloader cached every reference-like ConfigMap of the cluster whether or not a
/// workload read it (15 -> 77 MiB for 60 unused ones of ~0.9 MB). Now one no kept workload
/// reads costs its identity; its values are read (GET) when a workload starts to read it, and
/// given up when none reads it any more.
#[tokio::test]
async fn configmaps_no_workload_reads_hold_no_values() -> Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let env = setup().await?;
    rotate(&env, "cmbig", "v1").await?;
    // A workload of its own, so the reloader polls (and counts its polls).
    rotate(&env, "a", "v1").await?;
    create::<Deployment>(&env, "dep-a", "vault:secret/data/a#value").await?;
    let configmaps: Api<ConfigMap> = Api::namespaced(env.stack.kube.clone(), &env.ns);
    let big = format!("${{vault:secret/data/cmbig#value}}{}", "x".repeat(900_000));
    for i in 0..8 {
        let cm: ConfigMap = serde_json::from_value(
            json!({ "metadata": { "name": format!("big-{i}") }, "data": { "S": big } }),
        )?;
        configmaps.create(&PostParams::default(), &cm).await?;
    }
    let small: ConfigMap = serde_json::from_value(
        json!({ "metadata": { "name": "small" }, "data": { "S": "vault:secret/data/cmbig#value", "PLAIN": "1" } }),
    )?;
    configmaps.create(&PostParams::default(), &small).await?;
    let reloader = start_reloader(&env, "reloader-1", &["--configmap-references"]).await?;
    let admin = reloader.admin.as_str();
    wait_until("the 9 ConfigMaps kept", Duration::from_secs(30), || async {
        Ok(metric(admin, "rotor_reloader_configmaps_kept").await? >= 9.0)
    })
    .await?;
    wait_for_polls(admin, 2).await?;
    assert_eq!(
        metric(admin, "rotor_reloader_configmap_bytes_held").await?,
        0.0,
        "no workload reads them: no values held"
    );

    // A workload starts to read one (its values were held back too): they are read, and its
    // rotation rolls it.
    create_reading_configmaps(
        &env,
        "dep-big",
        json!({ "env": [{ "name": "S", "valueFrom": { "configMapKeyRef": { "name": "small", "key": "S" } } }] }),
    )
    .await?;
    wait_until("dep-big recorded", Duration::from_secs(30), || async {
        Ok(state::<Deployment>(&env, "dep-big")
            .await?
            .2
            .unwrap_or_default()
            .contains(&record_key("secret/data/cmbig")))
    })
    .await?;
    let held = metric(admin, "rotor_reloader_configmap_bytes_held").await?;
    assert_eq!(
        held,
        ("S".len() + "vault:secret/data/cmbig#value".len()) as f64,
        "the one ConfigMap read holds its referencing value, the 8 others nothing"
    );
    recorded_with_one_replica_set(&env, "dep-big").await?;
    rotate(&env, "cmbig", "v2").await?;
    wait_until("dep-big rolled", Duration::from_secs(30), || async {
        Ok(replica_sets(&env, "dep-big").await? == 2)
    })
    .await?;

    // No workload reads it any more: its values are given up.
    Api::<Deployment>::namespaced(env.stack.kube.clone(), &env.ns)
        .delete("dep-big", &Default::default())
        .await?;
    wait_until("values given up", Duration::from_secs(30), || async {
        Ok(metric(admin, "rotor_reloader_configmap_bytes_held").await? == 0.0)
    })
    .await?;
    assert!(metric(admin, "rotor_reloader_configmaps_kept").await? >= 9.0);
    Ok(())
}
