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

/// One of rotor's binaries (`rotor-webhook`, `rotor-reloader`, `rotor-init`), built by this
/// call in the profile of the running program (Cargo builds it once and finds it fresh after
/// that), so no test depends on another crate having been built first. The running program may
/// be a test or bench (`target/<profile>/deps/<name>-<hash>`) or a binary such as `rotor-demo`
/// (`target/<profile>/<name>`): either way the binaries land in `target/<profile>`.
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the running executable")?;
    let profile_dir = profile_dir_of(&exe)?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("the profile directory has no name")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut build = std::process::Command::new(cargo);
    build.args([
        "build",
        "--locked",
        "--quiet",
        "--package",
        name,
        "--bin",
        name,
        "--profile",
        // Cargo calls the `dev` profile's directory `debug`.
        if profile == "debug" { "dev" } else { profile },
    ]);
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .with_context(|| format!("running cargo build for {name}"))?;
    if !status.success() {
        bail!("cargo build --package {name} --bin {name} failed ({status})");
    }
    let built = profile_dir.join(name);
    if !built.exists() {
        bail!(
            "{} is missing after cargo built it (the running program is {}; is CARGO_TARGET_DIR \
             set differently for it?)",
            built.display(),
            exe.display()
        );
    }
    Ok(built)
}

/// `target/<profile>` for a program at `target/<profile>/deps/<test>` (tests, benches) or at
/// `target/<profile>/<bin>` (binaries).
fn profile_dir_of(exe: &Path) -> Result<PathBuf> {
    let dir = exe
        .parent()
        .with_context(|| format!("{} has no parent directory", exe.display()))?;
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
            .with_context(|| format!("{} has no parent directory", dir.display()))?
    } else {
        dir
    };
    Ok(profile_dir.to_path_buf())
}

/// An AdmissionReview of a Pod CREATE of `pod` in namespace `n`, as the API server sends it.
pub fn pod_review(pod: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "3f1a", "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "n", "operation": "CREATE", "userInfo": {}, "object": pod,
        }
    })
}

/// A one-container pod with one reference, the smallest that gets a patch.
pub fn one_reference_pod() -> serde_json::Value {
    json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "c", "image": "i",
        "command": ["/c"], "env": [{ "name": "A", "value": "vault:secret/data/a#k" }] }] } })
}

/// A TLS connection to `localhost:port` on loopback that trusts only `ca_pem`.
pub async fn connect_tls(
    port: u16,
    ca_pem: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    connect_tls_to("127.0.0.1", port, "localhost", ca_pem).await
}

/// A TLS connection to `host:port` for server name `name`, trusting only `ca_pem`.
pub async fn connect_tls_to(
    host: &str,
    port: u16,
    name: &str,
    ca_pem: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    tls_over(tcp, name, ca_pem).await
}

/// [`connect_tls`] from the loopback address `source` (any of 127.0.0.0/8), so a server sees
/// distinct peers.
pub async fn connect_tls_from(
    source: std::net::IpAddr,
    port: u16,
    ca_pem: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    let tcp = socket.connect(([127, 0, 0, 1], port).into()).await?;
    tls_over(tcp, "localhost", ca_pem).await
}

async fn tls_over(
    tcp: tokio::net::TcpStream,
    name: &str,
    ca_pem: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.context("reading the CA PEM")?)?;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(name.to_string())?;
    Ok(connector.connect(name, tcp).await?)
}

/// The DER of the leaf certificate a TLS server on `port` serves now.
pub async fn served_certificate(port: u16, ca_pem: &str) -> Result<Vec<u8>> {
    served_certificate_at("127.0.0.1", port, "localhost", ca_pem).await
}

/// [`served_certificate`] of `host:port` for server name `name`.
pub async fn served_certificate_at(
    host: &str,
    port: u16,
    name: &str,
    ca_pem: &str,
) -> Result<Vec<u8>> {
    let tls = connect_tls_to(host, port, name, ca_pem).await?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .context("the server sent no certificate")?;
    Ok(leaf.to_vec())
}

/// The DER of the first certificate in `pem`.
pub fn certificate_der(pem: &str) -> Result<Vec<u8>> {
    let cert = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .context("no certificate in the PEM")??;
    Ok(cert.to_vec())
}

/// A rotor-webhook process on loopback.
pub struct Webhook {
    pub process: ManagedProcess,
    pub port: u16,
    pub admin: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How many admission reviews the webhook at `admin` has answered.
pub async fn webhook_requests(admin: &str) -> f64 {
    crate::observe::metric(admin, "rotor_webhook_admission_requests_total")
        .await
        .unwrap_or(f64::NAN)
}

/// The bench pod's spec (the webhook's benches): 2 containers with a stated command, 4
/// references (a whole value and an inline template with one reference in each), one plain value.
pub fn bench_pod_spec() -> serde_json::Value {
    let containers: Vec<_> = (0..2)
        .map(|c| {
            json!({ "name": format!("c{c}"), "image": "app:1", "command": ["/app"],
            "env": [{ "name": "DB", "value": "vault:secret/data/db#password" },
                    { "name": "URL", "value": "x${vault:secret/data/db#user}y" },
                    { "name": "MODE", "value": "prod" }] })
        })
        .collect();
    json!({ "containers": containers })
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

/// [`spawn_webhook`] with no stack behind it: the default store address is only written into
/// patches, never called, and the environment adds nothing.
pub async fn spawn_standalone_webhook(
    webhook_bin: &Path,
    pki: &rotor_testkit::Pki,
    dir: &Path,
    extra: &[String],
) -> Result<Webhook> {
    spawn_webhook(webhook_bin, pki, dir, "https://vault:8200", &[], extra).await
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
    start_reloader_via(
        stack,
        reloader_bin,
        name,
        token_file,
        lease_namespace,
        extra,
        stack.kubeconfig(),
    )
    .await
}

/// [`start_reloader`] reaching the API through `kubeconfig` (a proxy, for partitions).
pub async fn start_reloader_via(
    stack: &Stack,
    reloader_bin: &Path,
    name: &str,
    token_file: &Path,
    lease_namespace: &str,
    extra: &[String],
    kubeconfig: &Path,
) -> Result<(ManagedProcess, String)> {
    let how = ReloaderEnv {
        kubeconfig,
        env: &[],
    };
    start_reloader_in(
        stack,
        reloader_bin,
        name,
        token_file,
        lease_namespace,
        extra,
        how,
    )
    .await
}

/// The AWS environment a reloader logs in to moto with, as IRSA would set it: the endpoint, a
/// role, and a web identity token file (moto takes any token).
pub fn reloader_aws_env(endpoint: &str, token_file: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/rotor-reloader".to_string(),
        ),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_string()),
    ]
}

/// How a reloader process reaches its world: the API (`kubeconfig`) and more environment (AWS's
/// settings, for the AWS store family).
pub struct ReloaderEnv<'a> {
    pub kubeconfig: &'a Path,
    pub env: &'a [(&'a str, &'a str)],
}

/// Writes a token of ServiceAccount `rotor-reloader` in `namespace` for `audience`, valid an
/// hour, to `path` (the reloader's `--token-file`).
pub async fn write_reloader_token(
    stack: &Stack,
    namespace: &str,
    audience: &str,
    path: &Path,
) -> Result<()> {
    let token = stack
        .service_account_token(namespace, "rotor-reloader", audience, 3600)
        .await?;
    std::fs::write(path, token)?;
    Ok(())
}

/// [`start_reloader_via`] with more environment.
pub async fn start_reloader_in(
    stack: &Stack,
    reloader_bin: &Path,
    name: &str,
    token_file: &Path,
    lease_namespace: &str,
    extra: &[String],
    how: ReloaderEnv<'_>,
) -> Result<(ManagedProcess, String)> {
    let ReloaderEnv { kubeconfig, env } = how;
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
    let kubeconfig = kubeconfig.display().to_string();
    let mut envs = vec![("KUBECONFIG", kubeconfig.as_str())];
    envs.extend_from_slice(env);
    let mut process = ManagedProcess::spawn(name, reloader_bin, &args, &envs, stack.dir())?;
    let admin = format!("http://127.0.0.1:{admin_port}");
    rotor_testkit::ready::wait_http_ok(&mut process, &format!("{admin}/readyz"), None).await?;
    Ok((process, admin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_found_beside_tests_benches_and_binaries() {
        for (exe, want) in [
            ("/r/target/debug/deps/node_pods-0123abcd", "/r/target/debug"),
            (
                "/r/target/release/deps/node_pods-0123abcd",
                "/r/target/release",
            ),
            ("/r/target/debug/rotor-demo", "/r/target/debug"),
            (
                "/r/target/release-init/rotor-demo",
                "/r/target/release-init",
            ),
        ] {
            assert_eq!(
                profile_dir_of(Path::new(exe)).unwrap(),
                PathBuf::from(want),
                "{exe}"
            );
        }
    }
}
