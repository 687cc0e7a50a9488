//! Running rotor's programs against the local stack.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, PostParams};
use rotor_testkit::{ManagedProcess, Stack, ports::free_port};
use serde_json::json;

/// The image name the webhook injects in tests that never run the pod (no node).
pub const INIT_IMAGE: &str = "rotor-init:local";

/// The directory holding rotor's binaries next to the running executable (target/debug).
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the running executable")?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} is not built next to {}: run `cargo build --workspace --bins` first",
        exe.display()
    )
}

/// A rotor-webhook process on loopback.
pub struct Webhook {
    pub process: ManagedProcess,
    pub port: u16,
    pub admin: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Starts rotor-webhook on loopback against the stack: serving certificate from the stack's CA,
/// OpenBao as the default store, [`INIT_IMAGE`] as the injected image, the admin kubeconfig.
pub async fn start_webhook(
    stack: &Stack,
    webhook_bin: &Path,
    dir: &Path,
    extra: &[String],
) -> Result<Webhook> {
    let mut args: Vec<String> = vec![
        "--cert-poll-ms=200".into(),
        "--shutdown-grace-seconds=5".into(),
        format!("--init-image={INIT_IMAGE}"),
    ];
    // A flag given in `extra` replaces the default one.
    args.retain(|a| !extra.iter().any(|e| flag_name(e) == flag_name(a)));
    args.extend(extra.iter().cloned());
    let kubeconfig = stack.kubeconfig().display().to_string();
    spawn_webhook(
        webhook_bin,
        &stack.pki,
        dir,
        &stack.bao.addr,
        &[("KUBECONFIG", kubeconfig.as_str())],
        &args,
    )
    .await
}

/// Starts `rotor-webhook serve` on free loopback ports with a serving certificate from `pki`
/// written into `dir`, and waits until it is ready. `extra` flags are appended.
pub async fn spawn_webhook(
    webhook_bin: &Path,
    pki: &rotor_testkit::Pki,
    dir: &Path,
    default_addr: &str,
    envs: &[(&str, &str)],
    extra: &[String],
) -> Result<Webhook> {
    let serving = pki.server_cert("rotor-webhook", &["localhost"])?;
    let cert = dir.join("webhook-tls.crt");
    let key = dir.join("webhook-tls.key");
    std::fs::write(&cert, &serving.cert_pem)?;
    std::fs::write(&key, &serving.key_pem)?;
    let port = free_port()?;
    let admin_port = free_port()?;
    let mut args: Vec<String> = vec![
        "serve".into(),
        format!("--listen=127.0.0.1:{port}"),
        format!("--admin-listen=127.0.0.1:{admin_port}"),
        format!("--tls-cert-file={}", cert.display()),
        format!("--tls-key-file={}", key.display()),
        format!("--default-addr={default_addr}"),
    ];
    args.extend(extra.iter().cloned());
    let mut process = ManagedProcess::spawn("rotor-webhook", webhook_bin, &args, envs, dir)?;
    let admin = format!("http://127.0.0.1:{admin_port}");
    rotor_testkit::ready::wait_http_ok(&mut process, &format!("{admin}/readyz"), None).await?;
    Ok(Webhook {
        process,
        port,
        admin,
        cert,
        key,
    })
}

fn flag_name(arg: &str) -> &str {
    arg.split('=').next().unwrap_or(arg)
}

/// A CEL expression defined in the chart's helpers (the one source of the webhook's conditions).
pub fn chart_condition(name: &str) -> Result<String> {
    let helpers = std::fs::read_to_string(
        rotor_testkit::tools::repo_root().join("charts/rotor/templates/_helpers.tpl"),
    )?;
    let start = helpers
        .find(&format!("{{{{- define \"{name}\" -}}}}"))
        .with_context(|| format!("no {name} in the chart"))?;
    let body = helpers[start..]
        .lines()
        .nth(1)
        .with_context(|| format!("empty {name}"))?;
    Ok(body.trim().to_string())
}

/// The chart's matchCondition: pods whose env values carry references (and, with
/// `configmaps`, pods taking env from ConfigMaps) reach the webhook.
pub fn has_reference_condition(configmaps: bool) -> Result<String> {
    let refs = chart_condition("rotor.hasReference")?;
    if configmaps {
        Ok(format!(
            "{refs} || {}",
            chart_condition("rotor.hasConfigMapEnv")?
        ))
    } else {
        Ok(refs)
    }
}

/// Registers the webhook like the chart does, with a URL on loopback, for namespaces labelled
/// `rotor-e2e=enabled`.
pub async fn register_webhook(stack: &Stack, port: u16) -> Result<()> {
    register_webhook_with(stack, port, false).await
}

/// [`register_webhook`], optionally also for pods taking env from ConfigMaps.
pub async fn register_webhook_with(stack: &Stack, port: u16, configmaps: bool) -> Result<()> {
    let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": { "name": "rotor-e2e" },
        "webhooks": [{
            "name": "pods.rotor.dev",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {
                "url": format!("https://127.0.0.1:{port}/mutate"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(stack.pki.ca_pem()),
            },
            "rules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced" }],
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "matchPolicy": "Equivalent",
            "namespaceSelector": { "matchLabels": { "rotor-e2e": "enabled" } },
            "objectSelector": { "matchExpressions": [{ "key": "rotor.dev/inject", "operator": "NotIn", "values": ["false"] }] },
            "matchConditions": [{ "name": "has-references", "expression": has_reference_condition(configmaps)? }],
        }],
    }))?;
    Api::<MutatingWebhookConfiguration>::all(stack.kube.clone())
        .create(&PostParams::default(), &config)
        .await
        .context("registering the MutatingWebhookConfiguration")?;
    // The apiserver picks the configuration up asynchronously.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// Starts rotor-reloader against the stack, logging in to OpenBao with `token_file`.
pub async fn start_reloader(
    stack: &Stack,
    reloader_bin: &Path,
    name: &str,
    token_file: &Path,
    lease_namespace: &str,
    extra: &[String],
) -> Result<(ManagedProcess, String)> {
    let admin_port = free_port()?;
    let mut args: Vec<String> = vec![
        format!("--store-addr={}", stack.bao.addr),
        format!("--token-file={}", token_file.display()),
        "--role=rotor-reloader".into(),
        "--poll-interval=1".into(),
        "--poll-jitter=0".into(),
        "--settle=0".into(),
        format!("--lease-namespace={lease_namespace}"),
        "--lease-duration=3".into(),
        format!("--identity={name}"),
        format!("--admin-listen=127.0.0.1:{admin_port}"),
    ];
    // A flag given in `extra` replaces the default one.
    args.retain(|a| !extra.iter().any(|e| flag_name(e) == flag_name(a)));
    args.extend(extra.iter().cloned());
    let kubeconfig = stack.kubeconfig().display().to_string();
    let mut process = ManagedProcess::spawn(
        name,
        reloader_bin,
        &args,
        &[("KUBECONFIG", kubeconfig.as_str())],
        stack.dir(),
    )?;
    let admin = format!("http://127.0.0.1:{admin_port}");
    rotor_testkit::ready::wait_http_ok(&mut process, &format!("{admin}/readyz"), None).await?;
    Ok((process, admin))
}
