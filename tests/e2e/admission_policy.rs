//! Injection without the webhook: the chart's MutatingAdmissionPolicy and
//! ValidatingAdmissionPolicy on the real kube-apiserver, proven equal to rotor-webhook's planner.
//! Every case is created twice: in a namespace only the policies see, and in one only the
//! webhook sees; the stored pods must be equal field by field, or both refused. A third
//! namespace has both, as the chart installs them: the webhook is never called for a pod the
//! policy injects, and those pods keep being admitted while the webhook is down.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use rotor_core::reference::{Shape, shape_cases};
use rotor_e2e::fixtures::webhook_requests;
use rotor_e2e::policy::{
    BOTH_NS, NOT_INJECTED, OTHER_STORE, POLICY_NS, STORE_NAMESPACE, TwoPaths, WEBHOOK_NS,
    apply_policies, register_chart_webhook, render_chart, two_paths, wait_until_injected,
};
use serde_json::{Value, json};

/// What a case must show.
#[derive(Debug)]
enum Expect {
    /// Admitted by both paths and stored equal: injected, or untouched (plain values, opt-outs).
    Same { injected: bool },
    /// Refused by both; the policy's message holds this text (the field and the fix).
    Refused(&'static str),
    /// Outside the policy's scope: injected by the webhook, refused without it.
    WebhookOnly,
}

struct Case {
    name: String,
    pod: Value,
    expect: Expect,
}

fn base_pod(name: &str, env_value: &str) -> Value {
    json!({
        "metadata": { "name": name },
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "app", "image": "app:1", "command": ["/app"], "args": ["--serve"],
                "env": [{ "name": "DB_PASSWORD", "value": env_value }, { "name": "PLAIN", "value": "kept" }],
            }],
        },
    })
}

fn case(name: &str, expect: Expect, edit: impl FnOnce(&mut Value)) -> Case {
    let mut pod = base_pod(name, "vault:secret/data/db#password");
    edit(&mut pod);
    Case {
        name: name.to_string(),
        pod,
        expect,
    }
}

/// Every row of the shared table of shapes, then a realistic set and every refusal.
fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = shape_cases()
        .into_iter()
        .enumerate()
        .map(|(i, (value, shape))| {
            let write = value.starts_with(">>") || value.contains("${>>");
            // The policy reads Vault's forms only; AWS references are the webhook's.
            let aws = value.contains("arn:aws");
            let expect = match shape {
                Shape::Whole | Shape::Inline if write || aws => Expect::WebhookOnly,
                Shape::Whole | Shape::Inline => Expect::Same { injected: true },
                Shape::Plain => Expect::Same { injected: false },
                Shape::Refused => Expect::Refused(""),
            };
            Case {
                name: format!("shape-{i}"),
                pod: base_pod(&format!("shape-{i}"), value),
                expect,
            }
        })
        .collect();
    cases.extend([
        case("realistic", Expect::Same { injected: true }, |p| {
            p["metadata"]["labels"] = json!({ "app": "shop" });
            p["spec"]["serviceAccountName"] = json!("shop");
            p["spec"]["volumes"] = json!([{ "name": "data", "emptyDir": {} }]);
            p["spec"]["initContainers"] = json!([
                { "name": "plain-init", "image": "init:1", "command": ["/init"] },
                { "name": "migrate", "image": "app:1", "command": ["/migrate"],
                  "env": [{ "name": "DSN", "value": "postgres://${vault:secret/data/db#user}:${vault:secret/data/db#password}@db/app" }] },
            ]);
            let c = &mut p["spec"]["containers"][0];
            c["volumeMounts"] = json!([{ "name": "data", "mountPath": "/data" }]);
            c["env"].as_array_mut().unwrap().extend([
                json!({ "name": "ROTOR_LOG_LEVEL", "value": "debug" }),
                json!({ "name": "API_KEY", "value": "bao:kv/shop#api-key#3" }),
            ]);
            p["spec"]["containers"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "name": "sidecar", "image": "side:1", "command": ["/side"] }));
        }),
        case("annotations", Expect::Same { injected: true }, |p| {
            p["metadata"]["annotations"] = json!({
                "rotor.dev/vault-role": "payments",
                "vault.security.banzaicloud.io/vault-path": "kubernetes-b",
                "rotor.dev/vault-namespace": "team-a",
                "rotor.dev/reload": "true",
            });
        }),
        case("bank-vaults-role-and-allowed-store", Expect::Same { injected: true }, |p| {
            p["metadata"]["annotations"] = json!({
                "secrets-webhook.security.bank-vaults.io/vault-role": "bv-role",
                "rotor.dev/vault-addr": OTHER_STORE,
            });
        }),
        case("generate-name", Expect::Same { injected: true }, |p| {
            p["metadata"] = json!({ "generateName": "gen-" });
        }),
        case("shell", Expect::Same { injected: true }, |p| {
            p["spec"]["containers"][0]["command"] = json!(["sh", "-c"]);
            p["spec"]["containers"][0]["args"] = json!(["exec app \"$DB_PASSWORD\" $$HOME"]);
        }),
        case("opted-out", Expect::Same { injected: false }, |p| {
            p["metadata"]["annotations"] = json!({ "rotor.dev/inject": "false" });
        }),
        case("windows", Expect::Refused("spec.os.name is windows"), |p| {
            p["spec"]["os"] = json!({ "name": "windows" });
        }),
        case("own-rotor-setting", Expect::Refused("sets ROTOR_ADDR"), |p| {
            p["spec"]["containers"][0]["env"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "name": "ROTOR_ADDR", "value": "https://evil:8200" }));
        }),
        case("expanded", Expect::Refused("$(DB_PASSWORD)"), |p| {
            p["spec"]["containers"][0]["args"] = json!(["--password=$(DB_PASSWORD)"]);
        }),
        case("reserved-volume", Expect::Refused("rotor-bin"), |p| {
            p["spec"]["volumes"] = json!([{ "name": "rotor-bin", "hostPath": { "path": "/usr/bin" } }]);
        }),
        case("reserved-mount", Expect::Refused("/rotor/bin"), |p| {
            p["spec"]["volumes"] = json!([{ "name": "tools", "emptyDir": {} }]);
            p["spec"]["containers"][0]["volumeMounts"] =
                json!([{ "name": "tools", "mountPath": "/rotor/bin/" }]);
        }),
        case("store-off-the-allowlist", Expect::Refused("vault-addr"), |p| {
            p["metadata"]["annotations"] = json!({ "rotor.dev/vault-addr": "ftp://vault:21" });
        }),
        // The policy admitted an allowlist entry's own text as an address (a literal match);
        // the webhook refused it, and rotor-init could never have reached it.
        case("store-is-a-wildcard-entry", Expect::Refused("vault-addr"), |p| {
            p["metadata"]["annotations"] =
                json!({ "rotor.dev/vault-addr": rotor_e2e::policy::WILDCARD_STORES });
        }),
        case("malformed", Expect::Refused("env DB_PASSWORD"), |p| {
            p["spec"]["containers"][0]["env"][0]["value"] = json!("vault:secret/../team-b/db#k");
        }),
        case("write", Expect::WebhookOnly, |p| {
            p["spec"]["containers"][0]["env"][0]["value"] =
                json!(">>vault:database/creds/app#username");
        }),
        case("from-path", Expect::WebhookOnly, |p| {
            p["metadata"]["annotations"] = json!({ "rotor.dev/from-path": "secret/data/app" });
        }),
    ]);
    cases
}

/// The annotation by which a user tells the policy's pods from the webhook's.
const INJECTED_BY: &str = "rotor.dev/injected-by";

/// The stored pod as both paths must agree on it: spec, labels and annotations but the mark of
/// the path (names, namespaces, uids and timestamps differ by construction).
fn stored_view(pod: &Pod) -> Value {
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(INJECTED_BY);
    let view = json!({
        "labels": pod.metadata.labels,
        "annotations": annotations,
        "spec": pod.spec,
    });
    // The ServiceAccount admission names its token volume with a random suffix.
    let text = view.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    const GENERATED: &str = "kube-api-access-";
    while let Some(at) = rest.find(GENERATED) {
        out.push_str(&rest[..at + GENERATED.len()]);
        out.push_str("xxxxx");
        rest = &rest[at + GENERATED.len() + 5..];
    }
    out.push_str(rest);
    serde_json::from_str(&out).unwrap()
}

fn wrapped(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| {
                c.command
                    .as_ref()
                    .and_then(|c| c.first())
                    .map(String::as_str)
                    == Some(rotor_core::contract::WRAPPER)
            })
    })
}

fn injected_by(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECTED_BY))
        .map(String::as_str)
}

#[tokio::test]
async fn the_policy_stores_the_pods_the_webhook_stores_and_needs_no_webhook() -> Result<()> {
    let TwoPaths { stack, webhook } = two_paths().await?;

    let api = |ns: &str| Api::<Pod>::namespaced(stack.kube.clone(), ns);
    let (mut same, mut default_namespace) = (0, 0);
    for case in cases() {
        let pod: Pod = serde_json::from_value(case.pod.clone())?;
        let by_policy = api(POLICY_NS).create(&PostParams::default(), &pod).await;
        let by_webhook = api(WEBHOOK_NS).create(&PostParams::default(), &pod).await;
        let before = webhook_requests(&webhook.admin).await;
        let by_both = api(BOTH_NS).create(&PostParams::default(), &pod).await;
        let webhook_called = webhook_requests(&webhook.admin).await > before;
        let name = &case.name;
        match case.expect {
            Expect::Same { injected } => {
                let policy = by_policy.map_err(|e| anyhow::anyhow!("{name}: policy: {e}"))?;
                let webhook = by_webhook.map_err(|e| anyhow::anyhow!("{name}: webhook: {e}"))?;
                let both = by_both.map_err(|e| anyhow::anyhow!("{name}: both: {e}"))?;
                assert_eq!(stored_view(&policy), stored_view(&webhook), "{name}");
                assert_eq!(stored_view(&both), stored_view(&webhook), "{name}");
                assert_eq!(wrapped(&policy), injected, "{name}");
                assert_eq!(
                    injected_by(&policy),
                    injected.then_some("admission-policy"),
                    "{name}"
                );
                assert_eq!(
                    injected_by(&both),
                    injected.then_some("admission-policy"),
                    "{name}"
                );
                assert_eq!(injected_by(&webhook), None, "{name}");
                if injected {
                    same += 1;
                    if store_namespace(&policy).as_deref() == Some(STORE_NAMESPACE) {
                        default_namespace += 1;
                    }
                    assert!(
                        !webhook_called,
                        "{name}: the policy injected it, the webhook was called"
                    );
                }
            }
            Expect::Refused(text) => {
                let policy = by_policy.expect_err(name).to_string();
                let webhook = by_webhook.expect_err(name).to_string();
                assert!(by_both.is_err(), "{name}: admitted where both run");
                assert!(policy.contains(text), "{name}: {policy}");
                assert!(webhook.contains("pods.rotor.dev"), "{name}: {webhook}");
            }
            Expect::WebhookOnly => {
                let policy = by_policy.expect_err(name).to_string();
                assert!(
                    policy.contains(NOT_INJECTED) && policy.contains("container app"),
                    "{name}: {policy}"
                );
                let webhook = by_webhook.map_err(|e| anyhow::anyhow!("{name}: webhook: {e}"))?;
                let both = by_both.map_err(|e| anyhow::anyhow!("{name}: both: {e}"))?;
                assert!(wrapped(&webhook), "{name}: the webhook injected it");
                assert_eq!(stored_view(&both), stored_view(&webhook), "{name}");
                assert!(
                    webhook_called,
                    "{name}: outside the policy, the webhook decides"
                );
            }
        }
    }
    assert!(same >= 11, "only {same} injected pods compared");
    assert!(
        default_namespace >= 10,
        "the chart's store.namespace reached only {default_namespace} pods"
    );

    // The webhook goes away (as with 0 replicas): pods in the policy's scope are still injected;
    // the others are refused, never admitted with a literal reference.
    let mut webhook = webhook;
    webhook.process.kill();
    let pod: Pod = serde_json::from_value(base_pod("while-down", "vault:secret/data/db#password"))?;
    let stored = api(BOTH_NS).create(&PostParams::default(), &pod).await?;
    assert!(
        wrapped(&stored),
        "injected by the policy while the webhook is down"
    );
    let write: Pod = serde_json::from_value(base_pod(
        "write-while-down",
        ">>vault:database/creds/app#username",
    ))?;
    refused_for_the_absent_webhook(&api(BOTH_NS), &write).await;
    Ok(())
}

/// The store namespace `pod`'s first container reads (`ROTOR_NAMESPACE`), if any.
fn store_namespace(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "ROTOR_NAMESPACE")?
        .value
        .clone()
}

/// `pod` is refused because only the webhook can inject it and it does not answer.
async fn refused_for_the_absent_webhook(pods: &Api<Pod>, pod: &Pod) {
    let err = pods
        .create(&PostParams::default(), pod)
        .await
        .expect_err("a pod only the webhook injects is refused while it is down")
        .to_string();
    assert!(err.contains("pods.rotor.dev"), "{err}");
}

/// The webhook's bounded fuzz generator (rotor_testkit::pod_fuzz, fixed seed) through both
/// paths: wherever the webhook admits a pod the policy stores the same pod, or refuses it as
/// outside its scope; wherever the webhook refuses, the policy refuses too. Never the policy
/// admitting what the webhook refuses, never a different stored pod.
#[tokio::test]
async fn fuzzed_pods_are_judged_alike_by_the_policy_and_the_webhook() -> Result<()> {
    use proptest::strategy::{Strategy as _, ValueTree as _};
    let TwoPaths {
        stack,
        webhook: _webhook,
    } = two_paths().await?;
    let api = |ns: &str| Api::<Pod>::namespaced(stack.kube.clone(), ns);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let any_pod = rotor_testkit::pod_fuzz::pod_json();
    let policy_pod = rotor_testkit::pod_fuzz::policy_pod_json();
    let (mut injected, mut untouched, mut refused, mut webhook_only) = (0, 0, 0, 0);
    // More with ROTOR_FUZZ_PODS=N (a longer hunt for drift than CI's fixed 600).
    let count: usize = std::env::var("ROTOR_FUZZ_PODS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(600);
    for i in 0..count {
        let mut input = if i % 2 == 0 {
            any_pod.new_tree(&mut runner).unwrap().current()
        } else {
            policy_pod.new_tree(&mut runner).unwrap().current()
        };
        input["metadata"]["name"] = json!(format!("fuzz-{i}"));
        input["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("namespace");
        let pod: Pod = serde_json::from_value(input.clone())?;
        let by_policy = api(POLICY_NS).create(&PostParams::default(), &pod).await;
        let by_webhook = api(WEBHOOK_NS).create(&PostParams::default(), &pod).await;
        match (by_policy, by_webhook) {
            (Ok(policy), Ok(webhook)) => {
                assert_eq!(stored_view(&policy), stored_view(&webhook), "{input}");
                if wrapped(&policy) {
                    injected += 1;
                } else {
                    untouched += 1;
                }
            }
            (Err(policy), Ok(webhook)) => {
                let policy = policy.to_string();
                assert!(
                    policy.contains(NOT_INJECTED) && wrapped(&webhook),
                    "the policy refused what the webhook admits: {policy}\n{input}"
                );
                webhook_only += 1;
            }
            (Ok(_), Err(webhook)) => {
                panic!("the policy admitted what the webhook refuses: {webhook}\n{input}")
            }
            (Err(_), Err(_)) => refused += 1,
        }
    }
    eprintln!(
        "fuzz: {injected} injected alike, {untouched} untouched alike, {refused} refused by both, \
         {webhook_only} left to the webhook"
    );
    assert!(injected >= 20, "only {injected} injected pods compared");
    Ok(())
}

/// A pod of `containers` containers, each with `vars` env values made by `value(i)`.
fn sized_pod(name: &str, containers: usize, vars: usize, value: impl Fn(usize) -> String) -> Pod {
    let containers: Vec<Value> = (0..containers)
        .map(|c| {
            let env: Vec<Value> = (0..vars)
                .map(|i| json!({ "name": format!("V{i}"), "value": value(i) }))
                .collect();
            json!({ "name": format!("c{c}"), "image": "app:1", "command": ["/app"], "env": env })
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "automountServiceAccountToken": false, "containers": containers },
    }))
    .unwrap()
}

/// CEL has a cost limit per evaluation. Pods without references up to the API server's 3 MiB
/// request limit (created dry-run) are never refused for it (the conditions scan each value once); a referencing
/// pod within it (1,000 references) is injected by the policy; one beyond it (20 references of
/// 100 KB) is left to the webhook, which injects it, never a refusal for cost and never a pod
/// admitted with a literal reference where the webhook is registered.
#[tokio::test]
async fn the_cel_cost_limit_never_refuses_a_pod_the_webhook_accepts() -> Result<()> {
    let TwoPaths { stack, webhook } = two_paths().await?;
    let api = |ns: &str| Api::<Pod>::namespaced(stack.kube.clone(), ns);
    // Dry-run: the whole admission chain, without etcd's own (smaller) limit on a stored object.
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let plain = [
        sized_pod("one-huge-value", 1, 1, |_| "x".repeat(3_100_000)),
        sized_pod("many-values", 1, 60, |_| "/usr/lib/app:".repeat(3_800)),
        // Shell templates scan twice as often (every value holding `${` is looked at for the
        // four reference prefixes): 1 MB of them is within the limit (README, "Limits").
        sized_pod("shell-templates", 1, 60, |_| "${HOME}/x ".repeat(1_700)),
    ];
    for pod in &plain {
        let size = serde_json::to_vec(pod)?.len();
        for ns in [POLICY_NS, WEBHOOK_NS, BOTH_NS] {
            let stored = api(ns).create(&dry, pod).await.map_err(|e| {
                anyhow::anyhow!("a {size}-byte pod without references in {ns}: {e}")
            })?;
            assert!(!wrapped(&stored));
        }
    }
    let within = sized_pod("thousand-references", 1, 1000, |i| {
        format!("vault:secret/data/app{i}#password")
    });
    let by_policy = api(POLICY_NS).create(&dry, &within).await?;
    let by_webhook = api(WEBHOOK_NS).create(&dry, &within).await?;
    assert!(wrapped(&by_policy));
    assert_eq!(stored_view(&by_policy), stored_view(&by_webhook));

    let beyond = sized_pod("huge-references", 1, 20, |i| {
        format!("vault:secret/data/app{i}#{}", "k".repeat(100_000))
    });
    let before = webhook_requests(&webhook.admin).await;
    let by_both = api(BOTH_NS).create(&dry, &beyond).await?;
    assert!(
        wrapped(&by_both),
        "the webhook injected what CEL could not afford"
    );
    assert!(webhook_requests(&webhook.admin).await > before);
    let by_webhook = api(WEBHOOK_NS).create(&dry, &beyond).await?;
    assert_eq!(stored_view(&by_both), stored_view(&by_webhook));
    Ok(())
}

const NODE_CANARY: &str = "policy-node-canary-31c9";

/// Done-when of the policy path: on the newest stack with the webhook registered as the chart
/// registers it but nothing behind its address (0 replicas), pods that state their command are
/// injected by the API server and run on the real node with their secret; a pod only the
/// webhook can inject is refused, never started with a literal reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_webhook_down_policy_pods_run_on_the_node_with_their_secret() -> Result<()> {
    use rotor_e2e::node_pods::{binary_source, seed_app_secret, start_node_stack, wait_for_log};
    use rotor_test_app::env_line;
    let (stack, images) = start_node_stack().await?;
    seed_app_secret(&stack, "db", NODE_CANARY, "app", &["*"]).await?;
    let (repository, tag) = images.init.rsplit_once(':').expect("repo:tag");
    let docs = render_chart(&[
        format!("store.addr={}", stack.bao.addr),
        format!("initImage.repository={repository}"),
        format!("initImage.tag={tag}"),
        format!("initImage.source={}", binary_source(&stack)?),
    ])?;
    apply_policies(&stack, &docs).await?;
    let nobody_listens = rotor_testkit::ports::free_port()?;
    register_chart_webhook(&stack, &docs, nobody_listens).await?;
    let ns = stack
        .namespace_with_labels("policy-node", &[("rotor-e2e", "enabled")])
        .await?;
    stack.service_account(&ns, "app").await?;
    let pods = Api::<Pod>::namespaced(stack.kube.clone(), &ns);
    let app = |name: &str, env: Value, args: Value, command: bool| -> Result<Pod> {
        let mut container = json!({ "name": "app", "image": images.app, "env": env, "args": args });
        if command {
            container["command"] = json!(["/app"]);
        }
        Ok(serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "serviceAccountName": "app", "containers": [container] },
        }))?)
    };
    wait_until_injected(
        &stack,
        &ns,
        &app(
            "probe",
            json!([{ "name": "DB_PASSWORD", "value": "vault:secret/data/db#password" }]),
            json!(["DB_PASSWORD"]),
            true,
        )?,
    )
    .await?;

    // The store holds what the table of shapes reads: secret/data/db in three versions (version
    // 1 is the canary seed_app_secret wrote), kv/app in a second KV v2 mount.
    let bao = stack.bao_admin()?;
    let latest = format!("{NODE_CANARY}-v3");
    for password in [format!("{NODE_CANARY}-v2"), latest.clone()] {
        bao.put_kv2(
            "secret",
            "db",
            json!({ "password": password, "user": "app-user" }),
        )
        .await?;
    }
    bao.mount("kv", "kv", json!({ "version": "2" })).await?;
    bao.put_kv2("kv", "app", json!({ "k": "kay", "j": "jay" }))
        .await?;
    bao.put_policy(
        "app",
        r#"path "secret/data/db" { capabilities = ["read"] }
path "kv/data/app" { capabilities = ["read"] }"#,
    )
    .await?;
    let value_of = |r: &rotor_core::reference::Reference| -> Result<String, String> {
        let version = match &r.action {
            rotor_core::reference::Action::Read { version } => *version,
            other => return Err(format!("{other:?}")),
        };
        Ok(match (r.path.as_str(), r.key.as_str(), version) {
            ("secret/data/db", "password", Some(1)) => NODE_CANARY.to_string(),
            ("secret/data/db", "password", _) => latest.clone(),
            ("secret/data/db", "user", _) => "app-user".to_string(),
            ("kv/app", key @ ("k" | "j"), None) => {
                if key == "k" { "kay" } else { "jay" }.to_string()
            }
            other => return Err(format!("{other:?} is not in the store")),
        })
    };
    // Every row of the table of shapes that reads and names a path of this store (the row
    // `vault:db#password` names a mount-less path, a grammar case only; writes are the
    // webhook's), plus a pinned version 1.
    let mut cases: Vec<(String, String, String)> = Vec::new();
    let mut rows: Vec<&str> = shape_cases()
        .into_iter()
        .filter(|(value, shape)| {
            matches!(shape, Shape::Whole | Shape::Inline)
                && !value.contains(">>")
                && !value.contains("arn:aws")
                && *value != "vault:db#password"
        })
        .map(|(value, _)| value)
        .collect();
    rows.push("vault:secret/data/db#password#1");
    for (i, reference) in rows.into_iter().enumerate() {
        let template =
            rotor_core::reference::parse_value("V", reference)?.expect("a reference row");
        let expected = template.render(value_of).map_err(anyhow::Error::msg)?;
        let name = format!("row-{i}");
        let pod = app(
            &name,
            json!([{ "name": "V", "value": reference }]),
            json!(["V"]),
            true,
        )?;
        pods.create(&PostParams::default(), &pod).await?;
        cases.push((name, "V".to_string(), expected));
    }
    assert!(cases.len() >= 6, "{cases:?}");
    let dsn = "postgres://${vault:secret/data/db#user}:${vault:secret/data/db#password}@db/app";
    let dsn_value = format!("postgres://app-user:{latest}@db/app");
    let mut realistic = serde_json::to_value(app(
        "realistic",
        json!([{ "name": "DB_PASSWORD", "value": "vault:secret/data/db#password" }]),
        json!(["DB_PASSWORD"]),
        true,
    )?)?;
    realistic["metadata"]["annotations"] = json!({
        "rotor.dev/vault-role": "app",
        "vault.security.banzaicloud.io/vault-path": "kubernetes",
    });
    realistic["spec"]["initContainers"] = json!([{
        "name": "migrate", "image": images.app, "command": ["/app"], "args": ["--exit", "DSN"],
        "env": [{ "name": "DSN", "value": dsn }],
    }]);
    pods.create(&PostParams::default(), &serde_json::from_value(realistic)?)
        .await?;
    let all = cases
        .iter()
        .map(|(pod, var, value)| (pod.as_str(), "app", var.as_str(), value.clone()))
        .chain([
            ("realistic", "migrate", "DSN", dsn_value.clone()),
            ("realistic", "app", "DB_PASSWORD", latest.clone()),
        ]);
    for (name, container, var, expected) in all {
        let log = wait_for_log(
            &pods,
            name,
            container,
            &env_line(var, Some(&expected)),
            std::time::Duration::from_secs(90),
        )
        .await?;
        assert!(log.contains("literal-references=0"), "{name}: {log}");
        assert!(
            !log.contains(NODE_CANARY),
            "{name}: the value reached the log: {log}"
        );
        let stored = pods.get(name).await?;
        assert_eq!(injected_by(&stored), Some("admission-policy"), "{name}");
    }
    let no_command = app(
        "no-command",
        json!([{ "name": "DB_PASSWORD", "value": "vault:secret/data/db#password" }]),
        json!(["DB_PASSWORD"]),
        false,
    )?;
    refused_for_the_absent_webhook(&pods, &no_command).await;
    Ok(())
}
