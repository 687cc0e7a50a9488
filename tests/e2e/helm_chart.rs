//! The Helm chart: lint, templates over several values sets, the schema refusing bad values,
//! deploy/ in sync, and an install into the real kube-apiserver in a namespace that enforces
//! the restricted Pod Security Standard, with RBAC checked by SubjectAccessReviews.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use rotor_testkit::tools::{repo_root, tool};
use rotor_testkit::{Stack, StackOptions};

fn helm(args: &[&str], kubeconfig: Option<&Path>) -> Output {
    let mut cmd = Command::new(tool("helm").unwrap());
    cmd.current_dir(repo_root()).args(args);
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    cmd.env(
        "HELM_CACHE_HOME",
        std::env::temp_dir().join("rotor-helm-cache"),
    )
    .env(
        "HELM_CONFIG_HOME",
        std::env::temp_dir().join("rotor-helm-config"),
    );
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "helm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lint_templates_and_schema() {
    ok(&helm(&["lint", "charts/rotor", "--strict"], None));
    for values in [
        vec![],
        vec![
            "--set",
            "certificates.mode=certManager",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "rotations.enabled=true",
        ],
        vec![
            "--set",
            "certificates.mode=provided",
            "--set",
            "certificates.provided.secretName=tls",
            "--set",
            "certificates.provided.caBundle=Zm9v",
        ],
        vec![
            "--set",
            "reloader.enabled=false",
            "--set",
            "webhook.failurePolicy=Ignore",
            "--set",
            "webhook.acceptLiteralReferencesWhenDown=true",
            "--set",
            "store.addrAllowlist={https://a:8200,https://b*}",
        ],
        vec![
            "--set",
            "webhook.registry.pullSecrets=true",
            "--set",
            "webhook.registry.insecure={registry.local:5000}",
            "--set",
            "webhook.configMapReferences=true",
        ],
    ] {
        let mut args = vec!["template", "r", "charts/rotor", "-n", "rotor-system"];
        args.extend(values.iter().copied());
        let out = ok(&helm(&args, None));
        assert!(
            out.contains("kind: MutatingWebhookConfiguration"),
            "{values:?}"
        );
        assert!(out.contains("reinvocationPolicy: IfNeeded") && out.contains("sideEffects: None"));
        assert!(out.contains("matchConditions"));
    }
    // The schema refuses bad values with a message naming the field.
    for (set, needle) in [
        ("webhook.replicas=abc", "/webhook/replicas"),
        ("store.addr=vault:8200", "/store/addr"),
        ("certificates.mode=selfmade", "/certificates/mode"),
        ("webhook.replica=2", "replica"),
        ("webhook.failurePolicy=Maybe", "/webhook/failurePolicy"),
        ("reloader.pollInterval=0", "/reloader/pollInterval"),
        ("reloader.pollBudget=-1", "/reloader/pollBudget"),
        (
            "webhook.registry.platform=amd64",
            "/webhook/registry/platform",
        ),
        // Ignore alone: a pod beyond CEL's cost limit would start with literal references while
        // the webhook is down; the chart says so and names the value that accepts it.
        (
            "webhook.failurePolicy=Ignore",
            "webhook.acceptLiteralReferencesWhenDown=true",
        ),
    ] {
        let out = helm(&["template", "r", "charts/rotor", "--set", set], None);
        assert!(!out.status.success(), "{set} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{set}: {err}");
    }
    let out = helm(
        &[
            "template",
            "r",
            "charts/rotor",
            "--set",
            "certificates.mode=provided",
        ],
        None,
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificates.provided.caBundle is required")
    );
}

/// The rendered NetworkPolicy named `name`, as JSON.
fn network_policy(sets: &[&str], name: &str) -> serde_json::Value {
    let mut sets = sets.to_vec();
    sets.push("networkPolicy.enabled=true");
    rendered(&sets, "NetworkPolicy", name)
}

/// The rendered object of `kind` named `name`, as JSON.
fn rendered(sets: &[&str], kind: &str, name: &str) -> serde_json::Value {
    let mut args = vec!["template", "r", "charts/rotor", "-n", "rotor-system"];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = ok(&helm(&args, None));
    serde_yaml::Deserializer::from_str(&out)
        .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
        .map(|v: serde_yaml::Value| serde_json::to_value(v).unwrap())
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_reloader_may_patch_pods_only_for_in_place_rotation() {
    let rules_on = |sets: &[&str], resource: &str| -> Vec<serde_json::Value> {
        rendered(sets, "ClusterRole", "r-rotor-reloader")["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .contains(&resource.into())
            })
            .cloned()
            .collect()
    };
    let rules = rules_on(&[], "pods");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["verbs"], serde_json::json!(["list", "patch"]));
    assert!(rules_on(&["reloader.inPlaceRotation=false"], "pods").is_empty());
    // A Deployment's own pods are those of its ReplicaSets: listed, never changed.
    let rules = rules_on(&[], "replicasets");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["verbs"], serde_json::json!(["list"]));
    assert!(rules_on(&["reloader.inPlaceRotation=false"], "replicasets").is_empty());
    // ConfigMaps: read, only when the webhook finds references there; the flag goes with it.
    assert!(rules_on(&[], "configmaps").is_empty());
    let on = ["webhook.configMapReferences=true"];
    let rules = rules_on(&on, "configmaps");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        rules[0]["verbs"],
        serde_json::json!(["get", "list", "watch"])
    );
    let args = |sets: &[&str]| {
        rendered(sets, "Deployment", "r-rotor-reloader")["spec"]["template"]["spec"]["containers"]
            [0]["args"]
            .clone()
    };
    assert!(
        args(&on)
            .as_array()
            .unwrap()
            .contains(&"--configmap-references".into())
    );
    assert!(
        !args(&[])
            .as_array()
            .unwrap()
            .contains(&"--configmap-references".into())
    );
}

/// Every TCP/UDP port an egress (or ingress) rule list allows, with the peers of its rule.
fn ports(rules: &serde_json::Value) -> Vec<(u64, serde_json::Value)> {
    rules
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| {
            let peers = rule
                .get("to")
                .or(rule.get("from"))
                .cloned()
                .unwrap_or_default();
            rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |p| (p["port"].as_u64().unwrap(), peers.clone()))
        })
        .collect()
}

#[test]
fn network_policies_allow_what_the_enabled_features_need_and_no_more() {
    let webhook = network_policy(&[], "r-rotor-webhook");
    let egress = ports(&webhook["spec"]["egress"]);
    let allowed: Vec<u64> = egress.iter().map(|(p, _)| *p).collect();
    assert!(allowed.contains(&53), "DNS: {allowed:?}");
    assert!(allowed.contains(&443), "registries: {allowed:?}");
    assert!(
        !allowed.contains(&6443),
        "no API access without pull secrets or ConfigMaps: {allowed:?}"
    );

    let webhook = network_policy(
        &[
            "webhook.registry.pullSecrets=true",
            "webhook.registry.insecure={registry.local:5000}",
            "networkPolicy.apiServerCIDRs={10.0.0.1/32}",
        ],
        "r-rotor-webhook",
    );
    let egress = ports(&webhook["spec"]["egress"]);
    assert!(
        egress.iter().any(|(p, _)| *p == 5000),
        "the insecure registry's port: {egress:?}"
    );
    let api: Vec<_> = egress.iter().filter(|(p, _)| *p == 6443).collect();
    assert_eq!(api.len(), 1, "{egress:?}");
    assert_eq!(api[0].1[0]["ipBlock"]["cidr"], "10.0.0.1/32");
    let ingress = ports(&webhook["spec"]["ingress"]);
    let admission: Vec<_> = ingress.iter().filter(|(p, _)| *p == 8443).collect();
    assert_eq!(
        admission[0].1[0]["ipBlock"]["cidr"], "10.0.0.1/32",
        "only the API server calls the webhook: {ingress:?}"
    );

    let reloader = network_policy(
        &["networkPolicy.storeCIDRs={10.1.0.0/16}"],
        "r-rotor-reloader",
    );
    let egress = ports(&reloader["spec"]["egress"]);
    let store: Vec<_> = egress.iter().filter(|(p, _)| *p == 8200).collect();
    assert_eq!(
        store[0].1[0]["ipBlock"]["cidr"], "10.1.0.0/16",
        "{egress:?}"
    );
    assert!(egress.iter().any(|(p, _)| *p == 6443), "{egress:?}");
}

#[test]
fn deploy_manifests_are_rendered_from_the_chart() {
    let rendered = ok(&helm(
        &[
            "template",
            "rotor",
            "charts/rotor",
            "--namespace",
            "rotor-system",
            "--set",
            "certificates.mode=certManager",
        ],
        None,
    ));
    let committed = std::fs::read_to_string(repo_root().join("deploy/rotor.yaml")).unwrap();
    let body: String = committed
        .lines()
        .filter(|l| !l.starts_with("# Rendered") && !l.starts_with("# Needs"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        body == rendered,
        "deploy/rotor.yaml is out of date: run scripts/render-deploy.sh"
    );
}

async fn allowed(
    stack: &Stack,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> Result<bool> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_string()),
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                namespace: namespace.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = Api::<SubjectAccessReview>::all(stack.kube.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.map(|s| s.allowed).unwrap_or(false))
}

#[tokio::test]
async fn installs_into_a_restricted_namespace_with_least_privilege_rbac() -> Result<()> {
    let stack = Stack::start(StackOptions {
        controller_manager: true,
        registry: false,
        node: false,
    })
    .await?;
    let ns = stack
        .namespace_with_labels(
            "rotor-system",
            &[
                ("pod-security.kubernetes.io/enforce", "restricted"),
                ("pod-security.kubernetes.io/enforce-version", "latest"),
            ],
        )
        .await?;
    let kubeconfig = stack.kubeconfig().to_path_buf();
    ok(&helm(
        &["install", "rotor", "charts/rotor", "-n", &ns],
        Some(&kubeconfig),
    ));

    let deployments: Api<Deployment> = Api::namespaced(stack.kube.clone(), &ns);
    let names: Vec<String> = deployments
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|d| d.metadata.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let mwc = Api::<MutatingWebhookConfiguration>::all(stack.kube.clone())
        .get("rotor")
        .await?;
    let hook = &mwc.webhooks.as_ref().unwrap()[0];
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
    assert!(
        hook.match_conditions
            .as_ref()
            .is_some_and(|m| !m.is_empty())
    );
    let ca = hook.client_config.ca_bundle.clone().unwrap();
    let secrets: Api<Secret> = Api::namespaced(stack.kube.clone(), &ns);
    let tls = secrets.get("rotor-webhook-tls").await?;
    assert_eq!(
        tls.data.as_ref().unwrap()["ca.crt"],
        ca,
        "the caBundle matches the served certificate's CA"
    );

    // helm upgrade keeps the generated certificate.
    ok(&helm(
        &[
            "upgrade",
            "rotor",
            "charts/rotor",
            "-n",
            &ns,
            "--set",
            "webhook.logLevel=debug",
        ],
        Some(&kubeconfig),
    ));
    let after = secrets.get("rotor-webhook-tls").await?;
    assert_eq!(
        after.data, tls.data,
        "the certificate is not regenerated on upgrade"
    );
    let mwc = Api::<MutatingWebhookConfiguration>::all(stack.kube.clone())
        .get("rotor")
        .await?;
    assert_eq!(
        mwc.webhooks.unwrap()[0].client_config.ca_bundle.as_ref(),
        Some(&ca)
    );

    // Every rendered pod passes the restricted standard: the ReplicaSets create the pods of
    // both components (after the upgrade, also the new revision's surge pods).
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), &ns);
    let start = Instant::now();
    loop {
        let count = |component: &str| {
            let pods = pods.clone();
            let selector = format!("app.kubernetes.io/component={component}");
            async move {
                Ok::<usize, anyhow::Error>(
                    pods.list(&ListParams::default().labels(&selector))
                        .await?
                        .items
                        .len(),
                )
            }
        };
        let (webhook_pods, reloader_pods) = (count("webhook").await?, count("reloader").await?);
        if webhook_pods >= 2 && reloader_pods >= 2 {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "pods admitted in a restricted namespace: webhook {webhook_pods}, reloader {reloader_pods} (want 2 each)"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The namespace really enforces the standard: a non-compliant pod is refused.
    let loose: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "loose" },
        "spec": { "containers": [{ "name": "c", "image": "busybox", "securityContext": { "privileged": true } }] }
    }))?;
    let refused = pods
        .create(&PostParams::default(), &loose)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("violates PodSecurity"), "{refused}");
    let replica_sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::namespaced(stack.kube.clone(), &ns);
    for rs in replica_sets.list(&ListParams::default()).await?.items {
        let failure = rs
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "ReplicaFailure");
        assert!(
            failure.is_none(),
            "a ReplicaSet could not create pods: {failure:?}"
        );
    }

    // Least privilege, checked by the API server itself.
    let reloader = format!("system:serviceaccount:{ns}:rotor-reloader");
    let webhook = format!("system:serviceaccount:{ns}:rotor-webhook");
    for (user, verb, group, resource, namespace, expected) in [
        (
            &reloader,
            "patch",
            "apps",
            "deployments",
            Some("shop"),
            true,
        ),
        (&reloader, "watch", "apps", "statefulsets", None, true),
        (&reloader, "list", "apps", "daemonsets", None, true),
        (
            &reloader,
            "create",
            "events.k8s.io",
            "events",
            Some("shop"),
            true,
        ),
        (
            &reloader,
            "update",
            "coordination.k8s.io",
            "leases",
            Some(ns.as_str()),
            true,
        ),
        (
            &reloader,
            "update",
            "coordination.k8s.io",
            "leases",
            Some("shop"),
            false,
        ),
        (&reloader, "get", "", "secrets", Some("shop"), false),
        (&reloader, "list", "", "secrets", None, false),
        // Pods: list and patch only, to write rotor.dev/versions (reloader.inPlaceRotation).
        (&reloader, "list", "", "pods", None, true),
        (&reloader, "patch", "", "pods", Some("shop"), true),
        (&reloader, "get", "", "pods", Some("shop"), false),
        (&reloader, "delete", "", "pods", Some("shop"), false),
        (&reloader, "create", "", "pods", Some("shop"), false),
        (&reloader, "list", "apps", "replicasets", None, true),
        (
            &reloader,
            "patch",
            "apps",
            "replicasets",
            Some("shop"),
            false,
        ),
        (
            &reloader,
            "delete",
            "apps",
            "deployments",
            Some("shop"),
            false,
        ),
        (
            &reloader,
            "update",
            "apps",
            "deployments",
            Some("shop"),
            false,
        ),
        (&webhook, "get", "", "secrets", Some("shop"), false),
        (&webhook, "get", "", "pods", Some("shop"), false),
        (&webhook, "get", "", "configmaps", Some("shop"), false),
    ] {
        assert_eq!(
            allowed(&stack, user, verb, group, resource, namespace).await?,
            expected,
            "{user} {verb} {group}/{resource} in {namespace:?}"
        );
    }
    ok(&helm(&["uninstall", "rotor", "-n", &ns], Some(&kubeconfig)));
    Ok(())
}

#[test]
fn the_binary_source_reaches_the_webhook_and_image_volumes_need_kubernetes_1_35() {
    let args = |sets: &[&str], kube: &str| -> Output {
        let mut args = vec!["template", "r", "charts/rotor", "--kube-version", kube];
        for set in sets {
            args.extend(["--set", set]);
        }
        helm(&args, None)
    };
    let flag = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.contains("--init-binary-source="))
            .map(|l| l.trim().to_string())
            .collect()
    };
    assert_eq!(
        flag(&ok(&args(&[], "1.34.0"))),
        vec!["- --init-binary-source=copy"]
    );
    assert_eq!(
        flag(&ok(&args(&["initImage.source=image-volume"], "1.37.2"))),
        vec!["- --init-binary-source=image-volume"]
    );
    let out = args(&["initImage.source=image-volume"], "1.34.0");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("initImage.source=image-volume") && err.contains("set initImage.source=copy"),
        "{err}"
    );
    let out = args(&["initImage.source=oci"], "1.37.2");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/initImage/source"));
}

#[test]
fn the_admission_policy_is_on_where_the_api_server_serves_it() {
    let render = |kube: &str, apis: &[&str], sets: &[&str]| -> String {
        let mut args = vec!["template", "r", "charts/rotor", "--kube-version", kube];
        for api in apis {
            args.extend(["--api-versions", api]);
        }
        for set in sets {
            args.extend(["--set", set]);
        }
        ok(&helm(&args, None))
    };
    let served = ["admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"];
    let kinds = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .filter(|k| k.contains("AdmissionPolicy"))
            .map(str::to_string)
            .collect()
    };
    let narrowed = |out: &str| out.contains("name: not-in-policy-scope");

    let on = render("1.37.2", &served, &[]);
    assert_eq!(
        kinds(&on),
        [
            "MutatingAdmissionPolicy",
            "MutatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
    );
    assert!(
        on.contains("name: r-rotor-policy-params"),
        "the params ConfigMap"
    );
    assert!(narrowed(&on), "the webhook leaves the policy's pods alone");
    // The ROTOR_* variables a pod author may set: rotor-core's list, as the refusal says it.
    let tunables = rotor_core::contract::init_settings::var::POD_TUNABLE.join(", ");
    assert!(
        on.contains(&format!("(only {tunables} may be set there)")),
        "the policy's tunables differ from var::POD_TUNABLE ({tunables})"
    );
    let as_cel: Vec<String> = rotor_core::contract::init_settings::var::POD_TUNABLE
        .iter()
        .map(|v| format!("'{v}'"))
        .collect();
    assert_eq!(
        on.matches(&format!("e.name in [{}]", as_cel.join(", ")))
            .count(),
        4,
        "the CEL list decides and names the culprit, in both policies' shared variables"
    );

    // Not served (Kubernetes 1.34, or 1.36+ with the API off): the webhook does everything.
    for off in [
        render("1.34.0", &[], &[]),
        render("1.37.2", &served, &["admissionPolicy.enabled=false"]),
        render("1.37.2", &served, &["store.caConfigMap=vault-ca"]),
    ] {
        assert!(kinds(&off).is_empty(), "{:?}", kinds(&off));
        assert!(!narrowed(&off));
    }
}

/// Issue 32: `store.namespace` reached only the reloader, so pods read the root namespace while
/// the reloader polled another. It reaches all three now: the webhook's default, the policies'
/// params, the reloader.
#[test]
fn the_store_namespace_reaches_the_webhook_the_policies_and_the_reloader() {
    let out = ok(&helm(
        &[
            "template",
            "r",
            "charts/rotor",
            "--kube-version",
            "1.37.2",
            "--api-versions",
            "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
            "--set",
            "store.namespace=team-a",
        ],
        None,
    ));
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    for wanted in [
        "- --default-namespace=team-a",
        "- --store-namespace=team-a",
        "namespace: \"team-a\"",
    ] {
        assert!(lines.contains(&wanted), "{wanted} not rendered");
    }
}

/// Issue 31: `rotations.enabled` installs the CRD (kept on uninstall), starts the reloader's
/// rotations with the pods' auth path and audience, grants it SecretRotations, their status and
/// tokens for tenants' ServiceAccounts, and adds the rotation alerts. Off by default: none of it.
#[test]
fn rotations_install_the_crd_the_reloader_flags_its_rbac_and_alerts() {
    let render = |sets: &[&str]| {
        let mut args = vec!["template", "r", "charts/rotor", "--kube-version", "1.37.2"];
        for set in sets {
            args.extend(["--set", set]);
        }
        ok(&helm(&args, None))
    };
    let off = render(&["metrics.prometheusRule.enabled=true"]);
    for absent in [
        "secretrotations",
        "--rotations",
        "serviceaccounts/token",
        "RotorRotation",
    ] {
        assert!(
            !off.contains(absent),
            "{absent} rendered while rotations are off"
        );
    }
    let on = render(&[
        "metrics.prometheusRule.enabled=true",
        "rotations.enabled=true",
        "webhook.tokenAudience=bao-pods",
        "webhook.authPath=k8s-prod",
    ]);
    let lines: Vec<&str> = on.lines().map(str::trim).collect();
    for wanted in [
        "kind: CustomResourceDefinition",
        "name: secretrotations.rotor.dev",
        "helm.sh/resource-policy: keep",
        "- --rotations",
        "- --min-rotation-interval=60",
        "- --rotation-auth-path=k8s-prod",
        "- --rotation-token-audience=bao-pods",
        "resources: [\"serviceaccounts/token\"]",
        "resources: [\"secretrotations/status\"]",
        "- alert: RotorRotationFailed",
        "- alert: RotorRotationConsumersLagging",
        "- alert: RotorRotationStalled",
    ] {
        assert!(lines.contains(&wanted), "{wanted} not rendered");
    }
    let out = helm(
        &[
            "template",
            "r",
            "charts/rotor",
            "--set",
            "rotations.minInterval=0",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/rotations/minInterval"));
}
