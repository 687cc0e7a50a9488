//! Running rotor's programs against the local stack.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use rotor_testkit::{ManagedProcess, Stack, ports::free_port};
use serde_json::json;

/// The image name the webhook injects in tests; "pulling" it means using our rotor-init build.
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

/// What a pod printed when run the way a kubelet would.
pub struct PodRun {
    pub stdout: String,
    pub stderr: String,
}

impl PodRun {
    /// `env -0` output as a map.
    pub fn env(&self) -> BTreeMap<String, String> {
        self.stdout
            .split('\0')
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// Runs a stored (mutated) pod the way a kubelet would: its volumes at their mount paths under
/// `dir` (the projected token from a real TokenRequest), the injected init container with our
/// rotor-init build as the image's `/rotor-init`, then the first app container with the pod's
/// command, args and env. Mount paths in commands and env are mapped under `dir`.
pub async fn run_pod_like_a_kubelet(
    stack: &Stack,
    pod: &Pod,
    init_bin: &Path,
    dir: &Path,
) -> Result<PodRun> {
    let spec = pod.spec.clone().context("the pod has no spec")?;
    let ns = pod
        .metadata
        .namespace
        .clone()
        .context("the pod has no namespace")?;
    let root = dir.join("pod-root");
    let host_path = |mount: &str| root.join(mount.trim_start_matches('/'));
    let app = spec
        .containers
        .first()
        .context("the pod has no container")?;
    let mounts: Vec<(String, String)> = app
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone()))
        .collect();
    for volume in spec.volumes.iter().flatten() {
        let Some(mount) = mounts
            .iter()
            .find(|(n, _)| *n == volume.name)
            .map(|(_, p)| p.clone())
        else {
            continue;
        };
        std::fs::create_dir_all(host_path(&mount))?;
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(token) = &source.service_account_token {
                let sa = spec.service_account_name.as_deref().unwrap_or("default");
                let jwt = stack
                    .service_account_token(
                        &ns,
                        sa,
                        token
                            .audience
                            .as_deref()
                            .unwrap_or("https://kubernetes.default.svc.cluster.local"),
                        token.expiration_seconds.unwrap_or(3600),
                    )
                    .await?;
                std::fs::write(host_path(&mount).join(&token.path), jwt)?;
            }
        }
    }
    let mapped: Vec<String> = mounts.iter().map(|(_, p)| p.clone()).collect();
    let map = |s: &str| -> String {
        if mapped.iter().any(|m| s.starts_with(m.as_str())) {
            host_path(s).display().to_string()
        } else {
            s.to_string()
        }
    };
    for init in spec.init_containers.iter().flatten() {
        if init.image.as_deref() != Some(INIT_IMAGE) {
            bail!(
                "init container {} runs image {:?}, which this kubelet stand-in cannot run",
                init.name,
                init.image
            );
        }
        let command = init.command.clone().unwrap_or_default();
        let [_, verb, target] = command.as_slice() else {
            bail!("unexpected init command {command:?}")
        };
        std::fs::create_dir_all(host_path(target))?;
        let status = Command::new(init_bin)
            .arg(verb)
            .arg(host_path(target))
            .status()?;
        if !status.success() {
            bail!("init container {} failed: {status}", init.name);
        }
    }
    let program = map(app
        .command
        .as_ref()
        .and_then(|c| c.first())
        .context("the app has no command")?);
    let mut command = Command::new(&program);
    command
        .args(app.args.iter().flatten())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for e in app.env.iter().flatten() {
        command.env(&e.name, map(e.value.as_deref().unwrap_or("")));
    }
    let out = command
        .output()
        .with_context(|| format!("running {program}"))?;
    let run = PodRun {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if !out.status.success() {
        bail!(
            "the app container exited with {}: {}",
            out.status,
            run.stderr
        );
    }
    Ok(run)
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
    args.retain(|a| {
        !extra
            .iter()
            .any(|e| e.split('=').next() == a.split('=').next())
    });
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
