//! rotor-webhook end to end against the real kube-apiserver (+ kube-controller-manager and
//! OpenBao): registration with matchConditions, stored pods, failure scope, certificate
//! rotation under load (the mutated pods run for real in tests/e2e/node_pods.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use rotor_e2e::fixtures::{
    INIT_IMAGE, Webhook, binary, certificate_der, register_webhook, served_certificate,
    start_webhook, webhook_requests,
};
use rotor_testkit::{Stack, StackOptions};
use serde_json::json;

const SECRET: &str = "webhook-e2e-secret-value";

fn app_pod(name: &str, env_value: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": { "rotor.dev/vault-role": "app" } },
        "spec": {
            "serviceAccountName": "app",
            "automountServiceAccountToken": false,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "app", "image": "app:1", "command": ["env"], "args": ["-0"],
                "env": [{ "name": "DB_PASSWORD", "value": env_value }, { "name": "PLAIN", "value": "kept" }],
                "securityContext": { "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": { "drop": ["ALL"] } },
            }],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn injects_pods_through_the_real_apiserver_and_the_pod_runs() -> Result<()> {
    rotor_testkit::install_crypto_provider();
    let stack = Stack::start(StackOptions {
        controller_manager: true,
        registry: false,
        node: false,
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let webhook = start_webhook(
        &stack,
        &binary("rotor-webhook")?,
        dir.path(),
        &["--token-audience=rotor-e2e".to_string()],
    )
    .await?;
    register_webhook(&stack, webhook.port).await?;
    let ns = stack
        .namespace_with_labels(
            "webhook",
            &[
                ("rotor-e2e", "enabled"),
                ("pod-security.kubernetes.io/enforce", "restricted"),
            ],
        )
        .await?;
    stack.service_account(&ns, "app").await?;
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), &ns);

    // A pod with a reference is stored mutated, and passes the restricted Pod Security level.
    let stored = pods
        .create(
            &PostParams::default(),
            &app_pod("with-ref", "vault:secret/data/db#password"),
        )
        .await?;
    let spec = stored.spec.clone().unwrap();
    assert_eq!(
        spec.init_containers.as_ref().unwrap()[0].name,
        "rotor-init-copy"
    );
    assert_eq!(
        spec.containers[0].command.as_deref(),
        Some(&["/rotor/bin/rotor-init".to_string()][..])
    );
    assert_eq!(
        spec.containers[0].args.as_deref().unwrap(),
        &["--", "env", "-0"]
    );
    let env = serde_json::to_string(&spec.containers[0].env).unwrap();
    assert!(
        env.contains("vault:secret/data/db#password"),
        "the spec keeps the reference, never a value"
    );
    assert!(!env.contains(SECRET));

    // A pod that asks for rotor-init from an image volume: stored with the image volume and no
    // init container (the API server keeps the `image` field), still `restricted`.
    let mut by_image = app_pod("by-image", "vault:secret/data/db#password");
    by_image
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(
            "rotor.dev/init-binary-source".to_string(),
            "image-volume".to_string(),
        );
    let by_image = pods.create(&PostParams::default(), &by_image).await?;
    let image_spec = by_image.spec.clone().unwrap();
    assert!(
        image_spec.init_containers.is_none(),
        "{:?}",
        image_spec.init_containers
    );
    let bin = image_spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "rotor-bin")
        .expect("the rotor-bin volume");
    assert_eq!(
        bin.image.as_ref().and_then(|i| i.reference.as_deref()),
        Some(INIT_IMAGE),
        "{bin:?}"
    );
    assert_eq!(
        image_spec.containers[0].command.as_deref(),
        Some(&["/rotor/bin/rotor-init".to_string()][..])
    );

    // A pod without references is admitted unchanged, and the webhook is not even called.
    let before = webhook_requests(&webhook.admin).await;
    let plain = pods
        .create(&PostParams::default(), &app_pod("plain", "not-a-reference"))
        .await?;
    assert!(plain.spec.unwrap().init_containers.is_none());
    assert_eq!(
        webhook_requests(&webhook.admin).await,
        before,
        "matchConditions kept the webhook out"
    );

    // Bad input from a pod author: refused with the container, the variable and the fix.
    let err = pods
        .create(
            &PostParams::default(),
            &app_pod("bad", "vault:secret/data/db"),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("container \"app\"")
            && msg.contains("env DB_PASSWORD")
            && msg.contains("expected"),
        "{msg}"
    );

    // One table of reference shapes: the chart's CEL prefilter (evaluated by the API server)
    // and the webhook agree with rotor-core's parser on every case.
    shapes_agree_with_the_chart_and_the_webhook(&pods, &webhook).await?;

    // That the mutated pod really runs (and the app sees the secret) is shown on the real node:
    // tests/e2e/node_pods.rs.
    assert_eq!(
        spec.init_containers.as_ref().unwrap()[0].image.as_deref(),
        Some(INIT_IMAGE)
    );

    // A Deployment: the pods its ReplicaSet creates are mutated.
    deployment_pods_are_mutated(&stack, &ns).await?;

    // Certificate rotation under load: no failed admission.
    rotate_certificate_under_load(&stack, &ns, &webhook).await?;

    // With the webhook down: pods without references still admit; pods with references are refused.
    let mut webhook = webhook;
    webhook.process.stop(Duration::from_secs(10));
    pods.create(&PostParams::default(), &app_pod("plain-while-down", "x"))
        .await?;
    let err = pods
        .create(
            &PostParams::default(),
            &app_pod("ref-while-down", "vault:secret/data/db#password"),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("pods.rotor.dev"),
        "the refusal names the webhook: {err}"
    );
    Ok(())
}

async fn shapes_agree_with_the_chart_and_the_webhook(
    pods: &Api<Pod>,
    webhook: &Webhook,
) -> Result<()> {
    use rotor_core::reference::{Shape, shape_cases};
    for (i, (value, shape)) in shape_cases().into_iter().enumerate() {
        let before = webhook_requests(&webhook.admin).await;
        let created = pods
            .create(
                &PostParams::default(),
                &app_pod(&format!("shape-{i}"), value),
            )
            .await;
        let called = webhook_requests(&webhook.admin).await - before;
        match shape {
            Shape::Whole | Shape::Inline => {
                let pod = created.map_err(|e| anyhow::anyhow!("{value:?}: {e}"))?;
                assert!(
                    pod.spec.unwrap().init_containers.is_some(),
                    "{value:?} is injected"
                );
            }
            Shape::Plain => {
                let pod = created.map_err(|e| anyhow::anyhow!("{value:?}: {e}"))?;
                let spec = pod.spec.unwrap();
                assert!(spec.init_containers.is_none(), "{value:?} is left alone");
                let env = spec.containers[0].env.as_ref().unwrap();
                assert_eq!(env[0].value.as_deref(), Some(value), "byte for byte");
                assert_eq!(
                    called, 0.0,
                    "{value:?}: the chart's CEL kept the webhook out"
                );
            }
            Shape::Refused => {
                let err = created.expect_err(value).to_string();
                assert!(
                    err.contains("env DB_PASSWORD") && err.contains("expected"),
                    "{value:?}: {err}"
                );
            }
        }
        if shape != Shape::Plain {
            assert_eq!(
                called, 1.0,
                "{value:?}: the chart's CEL sent it to the webhook"
            );
        }
    }
    Ok(())
}

async fn deployment_pods_are_mutated(stack: &Stack, ns: &str) -> Result<()> {
    let pod = app_pod("unused", "vault:secret/data/db#password");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" }, "annotations": { "rotor.dev/vault-role": "app" } }, "spec": pod.spec },
        },
    }))?;
    Api::<Deployment>::namespaced(stack.kube.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), ns);
    for _ in 0..150 {
        let list = pods.list(&ListParams::default().labels("app=web")).await?;
        if list.items.len() == 2 {
            for p in &list.items {
                let spec = p.spec.as_ref().unwrap();
                assert_eq!(
                    spec.init_containers.as_ref().unwrap()[0].name,
                    "rotor-init-copy"
                );
                assert_eq!(
                    spec.containers[0].command.as_ref().unwrap()[0],
                    "/rotor/bin/rotor-init"
                );
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the Deployment's pods did not appear within 30 s")
}

/// Polls `check` every 100 ms until it holds, for at most 30 s.
async fn wait_for<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("timed out after 30 s waiting until {what}")
}

async fn rotate_certificate_under_load(stack: &Stack, ns: &str, webhook: &Webhook) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), ns);
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut workers = Vec::new();
    for w in 0..4 {
        let (pods, failures, done, stop) =
            (pods.clone(), failures.clone(), done.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.is_cancelled() {
                let pp = PostParams {
                    dry_run: true,
                    ..PostParams::default()
                };
                match pods
                    .create(
                        &pp,
                        &app_pod(&format!("load-{w}-{i}"), "vault:secret/data/db#password"),
                    )
                    .await
                {
                    Ok(p)
                        if p.spec
                            .as_ref()
                            .and_then(|s| s.init_containers.as_ref())
                            .is_some() => {}
                    Ok(_) | Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let admissions = |n: usize| {
        let done = done.clone();
        async move {
            wait_for(&format!("{n} admissions under load"), || async {
                Ok(done.load(Ordering::Relaxed) >= n)
            })
            .await
        }
    };
    admissions(5).await?;
    let ca = stack.pki.ca_pem();
    let reloads = |result: &'static str| async move {
        let text = reqwest::get(format!("{}/metrics", webhook.admin))
            .await?
            .text()
            .await?;
        Ok::<_, anyhow::Error>(
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!(
                        "rotor_webhook_certificate_reloads_total{{result=\"{result}\"}} "
                    ))
                    .map(str::to_string)
                })
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0),
        )
    };
    let first = served_certificate(webhook.port, ca).await?;
    // A new certificate (same CA): served once the watcher has loaded it.
    let next = stack
        .pki
        .server_cert("rotor-webhook-rotated", &["localhost"])?;
    let next_der = certificate_der(&next.cert_pem)?;
    assert_ne!(first, next_der);
    std::fs::write(&webhook.key, &next.key_pem)?;
    std::fs::write(&webhook.cert, &next.cert_pem)?;
    wait_for("the rotated certificate served", || async {
        Ok(served_certificate(webhook.port, ca).await? == next_der)
    })
    .await?;
    let served = done.load(Ordering::Relaxed);
    admissions(served + 5).await?;
    // Garbage: counted as invalid, and the last good certificate is still served.
    let invalid = reloads("invalid_kept_last_good").await?;
    std::fs::write(&webhook.cert, "not a certificate")?;
    wait_for("the garbage file counted as invalid", || async {
        Ok(reloads("invalid_kept_last_good").await? > invalid)
    })
    .await?;
    assert_eq!(served_certificate(webhook.port, ca).await?, next_der);
    let served = done.load(Ordering::Relaxed);
    admissions(served + 5).await?;
    // Another good one replaces it.
    let last = stack
        .pki
        .server_cert("rotor-webhook-rotated-again", &["localhost"])?;
    let last_der = certificate_der(&last.cert_pem)?;
    std::fs::write(&webhook.key, &last.key_pem)?;
    std::fs::write(&webhook.cert, &last.cert_pem)?;
    wait_for("the second rotated certificate served", || async {
        Ok(served_certificate(webhook.port, ca).await? == last_der)
    })
    .await?;
    let served = done.load(Ordering::Relaxed);
    admissions(served + 5).await?;
    assert!(reloads("loaded").await? >= 2.0);
    stop.cancel();
    for w in workers {
        w.await?;
    }
    let metrics = reqwest::get(format!("{}/metrics", webhook.admin))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("rotor_webhook_certificate_reloads_total{result=\"loaded\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("result=\"invalid_kept_last_good\""),
        "{metrics}"
    );
    assert!(
        done.load(Ordering::Relaxed) > 20,
        "load ran: {}",
        done.load(Ordering::Relaxed)
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no failed admission during rotation"
    );
    Ok(())
}

fn pod_without_command(name: &str, image: &str, pull: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": { "rotor.dev/vault-role": "app" } },
        "spec": { "containers": [{ "name": "app", "image": image, "imagePullPolicy": pull,
            "env": [{ "name": "DB_PASSWORD", "value": "vault:secret/data/db#password" }] }] },
    }))
    .unwrap()
}

fn wrapped_args(pod: &Pod) -> Vec<String> {
    pod.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap_or_default()
}

#[tokio::test]
async fn looks_up_entrypoints_in_the_real_registry() -> Result<()> {
    rotor_testkit::install_crypto_provider();
    let stack = Stack::start(StackOptions {
        controller_manager: false,
        registry: true,
        node: false,
    })
    .await?;
    let registry = stack.registry()?;
    let dir = tempfile::tempdir()?;
    let extra = [
        format!("--registry-insecure={}", registry.host),
        "--image-cache-ttl-seconds=600".to_string(),
    ];
    let webhook = start_webhook(&stack, &binary("rotor-webhook")?, dir.path(), &extra).await?;
    register_webhook(&stack, webhook.port).await?;
    let ns = stack
        .namespace_with_labels("registry", &[("rotor-e2e", "enabled")])
        .await?;
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), &ns);
    let create = |name: &str, image: &str, pull: &str| {
        let (pods, pod) = (pods.clone(), pod_without_command(name, image, pull));
        async move { pods.create(&PostParams::default(), &pod).await }
    };

    // ENTRYPOINT + CMD of a tagged image.
    let app = registry.push_image(
        "app:v1",
        &["/bin/app", "--serve"],
        &["--port", "80"],
        "linux/amd64",
    )?;
    let stored = create("tagged", &app, "IfNotPresent").await?;
    assert_eq!(
        wrapped_args(&stored),
        ["--", "/bin/app", "--serve", "--port", "80"]
    );

    // A multi-platform index resolves to linux/amd64.
    let amd = registry.push_image("multi:amd64", &["/amd64-app"], &[], "linux/amd64")?;
    let arm = registry.push_image("multi:arm64", &["/arm64-app"], &[], "linux/arm64")?;
    let index = registry.push_index("multi:v1", &[&amd, &arm])?;
    assert_eq!(
        wrapped_args(&create("multi", &index, "IfNotPresent").await?),
        ["--", "/amd64-app"]
    );

    // The tag's content changes: a cached tag keeps its lookup, `Always` and `:latest` look again.
    registry.push_image("app:v1", &["/bin/changed"], &[], "linux/amd64")?;
    assert_eq!(
        wrapped_args(&create("cached", &app, "IfNotPresent").await?)[1],
        "/bin/app",
        "served from the cache"
    );
    assert_eq!(
        wrapped_args(&create("always", &app, "Always").await?)[1],
        "/bin/changed",
        "imagePullPolicy Always is not cached"
    );
    let latest = registry.push_image("app:latest", &["/one"], &[], "linux/amd64")?;
    assert_eq!(
        wrapped_args(&create("latest-1", &latest, "IfNotPresent").await?)[1],
        "/one"
    );
    registry.push_image("app:latest", &["/two"], &[], "linux/amd64")?;
    assert_eq!(
        wrapped_args(&create("latest-2", &latest, "IfNotPresent").await?)[1],
        "/two",
        ":latest is not cached"
    );

    // A missing image: refused, saying why and how to avoid the lookup.
    let missing = format!("{}/nope:v1", registry.host);
    let msg = create("missing", &missing, "IfNotPresent")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("nope:v1") && msg.contains("404") && msg.contains("set command"),
        "{msg}"
    );

    let metrics = reqwest::get(format!("{}/metrics", webhook.admin))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("rotor_webhook_registry_cache_hits_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rotor_webhook_registry_lookups_total{result=\"error\"} 1"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn finds_references_in_configmaps() -> Result<()> {
    rotor_testkit::install_crypto_provider();
    let stack = Stack::start(StackOptions::default()).await?;
    let dir = tempfile::tempdir()?;
    let webhook = start_webhook(
        &stack,
        &binary("rotor-webhook")?,
        dir.path(),
        &["--configmap-references".to_string()],
    )
    .await?;
    rotor_e2e::fixtures::register_webhook_with(&stack, webhook.port, true).await?;
    let ns = stack
        .namespace_with_labels("configmaps", &[("rotor-e2e", "enabled")])
        .await?;
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(stack.kube.clone(), &ns);
    for (name, data) in [
        (
            "refs",
            json!({ "DB_PASSWORD": "vault:secret/data/db#password", "MODE": "prod" }),
        ),
        ("plain", json!({ "MODE": "prod" })),
        ("broken", json!({ "DB": "vault:secret/data/db" })),
    ] {
        configmaps
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({ "metadata": { "name": name }, "data": data }))?,
            )
            .await?;
    }
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), &ns);
    let pod = |name: &str, container: serde_json::Value| -> Pod {
        let mut c = json!({ "name": "app", "image": "app:1", "command": ["/app"] });
        c.as_object_mut()
            .unwrap()
            .extend(container.as_object().unwrap().clone());
        serde_json::from_value(
            json!({ "metadata": { "name": name }, "spec": { "containers": [c] } }),
        )
        .unwrap()
    };
    let wrapped = |p: &Pod| {
        p.spec.as_ref().unwrap().containers[0].command.as_deref()
            == Some(&["/rotor/bin/rotor-init".to_string()][..])
    };

    let from = pods
        .create(
            &PostParams::default(),
            &pod(
                "env-from",
                json!({ "envFrom": [{ "configMapRef": { "name": "refs" } }] }),
            ),
        )
        .await?;
    assert!(
        wrapped(&from),
        "envFrom a ConfigMap holding a reference: wrapped; webhook log:\n{}",
        std::fs::read_to_string(dir.path().join("rotor-webhook.log")).unwrap_or_default()
    );
    let key = json!({ "env": [{ "name": "DB", "valueFrom": { "configMapKeyRef": { "name": "refs", "key": "DB_PASSWORD" } } }] });
    assert!(
        wrapped(
            &pods
                .create(&PostParams::default(), &pod("key-ref", key))
                .await?
        ),
        "configMapKeyRef to a reference: wrapped"
    );
    let plain = json!({ "env": [{ "name": "M", "valueFrom": { "configMapKeyRef": { "name": "refs", "key": "MODE" } } }] });
    assert!(
        !wrapped(
            &pods
                .create(&PostParams::default(), &pod("key-plain", plain))
                .await?
        ),
        "a plain key is not wrapped"
    );
    let missing =
        json!({ "envFrom": [{ "configMapRef": { "name": "absent", "optional": true } }] });
    assert!(!wrapped(
        &pods
            .create(&PostParams::default(), &pod("absent", missing))
            .await?
    ));
    let err = pods
        .create(
            &PostParams::default(),
            &pod(
                "broken",
                json!({ "envFrom": [{ "configMapRef": { "name": "broken" } }] }),
            ),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ConfigMap") && err.contains("broken") && err.contains("expected"),
        "{err}"
    );
    // More ConfigMaps than one review reads: refused, naming the limit.
    let many: Vec<serde_json::Value> = (0..33)
        .map(|i| json!({ "configMapRef": { "name": format!("cm-{i}"), "optional": true } }))
        .collect();
    let err = pods
        .create(
            &PostParams::default(),
            &pod("many", json!({ "envFrom": many })),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than 32 ConfigMaps"), "{err}");

    // A review sent to the webhook directly, whose pod object names another namespace: the
    // ConfigMaps are read in the request's namespace (where the API server creates the pod),
    // never the object's, so another tenant's ConfigMap is neither read nor quoted.
    let other = stack
        .namespace_with_labels("configmaps-other", &[("rotor-e2e", "enabled")])
        .await?;
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(stack.kube.clone(), &other)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "theirs" },
                "data": { "K": "vault:OTHER-TENANT-CANARY" } }))?,
        )
        .await?;
    let mut review = rotor_e2e::fixtures::pod_review(json!({
        "metadata": { "name": "direct", "namespace": other },
        "spec": { "containers": [{ "name": "app", "image": "app:1", "command": ["/app"],
            "envFrom": [{ "configMapRef": { "name": "theirs" } }] }] } }));
    review["request"]["namespace"] = json!(ns);
    let ca = reqwest::Certificate::from_pem(stack.pki.ca_pem().as_bytes())?;
    let answer: serde_json::Value = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve("localhost", ([127, 0, 0, 1], webhook.port).into())
        .build()?
        .post(format!("https://localhost:{}/mutate", webhook.port))
        .json(&review)
        .send()
        .await?
        .json()
        .await?;
    let text = answer.to_string();
    assert!(!text.contains("OTHER-TENANT-CANARY"), "{text}");
    assert_eq!(
        answer["response"]["allowed"], true,
        "{ns} has no ConfigMap \"theirs\": nothing to wrap: {text}"
    );
    assert!(answer["response"]["patch"].is_null(), "{text}");
    Ok(())
}
