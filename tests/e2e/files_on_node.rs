//! Secrets as files and rotation without a restart, on the real node (kubelet + containerd +
//! runc): the webhook mounts the templates and a memory volume, rotor-init renders a config file
//! and a certificate with its key (one PKI lease) as the app's uid, and when the secret rotates
//! the reloader tells the pod, rotor-init rewrites the file in place and sends SIGHUP: the app
//! logs the new file's digest, the pod is the same, nothing restarts, nothing rolls.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code fails loudly

use rotor_core::contract::EventReason;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use rotor_e2e::fixtures::{binary, certificate_der, served_certificate_at, start_reloader};
use rotor_e2e::node_pods::{
    container_status, pod_names, processes_in_container, replica_set_count, seed_app_secret,
    seed_reloader_role, start_node_stack, start_node_webhook, wait_for, wait_for_log,
    wait_for_record, wait_for_running_container_id,
};
use rotor_e2e::observe::metric;
use rotor_test_app::{file_line, fnv1a};
use serde_json::json;

const FIRST: &str = "files-canary-v1";
const ROTATED: &str = "files-canary-v2";
const CONF: &str = "/rotor/files/db.conf";
const CERT: &str = "/rotor/files/tls.crt";
const KEY: &str = "/rotor/files/tls.key";

fn rendered(password: &str) -> String {
    format!("host=pg user=app password={password}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_render_and_rotate_in_place_on_a_real_node() -> Result<()> {
    let (stack, images, ns) = node_with_shop(
        "files",
        r#"
path "secret/data/demo/db" { capabilities = ["read"] }
path "pki/issue/web" { capabilities = ["create", "update"] }
"#,
    )
    .await?;
    let bao = stack.bao_admin()?;
    bao.enable_pki("pki", "rotor.test", "web").await?;
    let _webhook = start_node_webhook(&stack, &images).await?;
    stack.service_account(&ns, "shop").await?;
    stack.service_account(&ns, "rotor-reloader").await?;
    seed_reloader_role(&stack, &ns).await?;
    let token_file = stack.dir().join("files-reloader-token");
    std::fs::write(
        &token_file,
        stack
            .service_account_token(&ns, "rotor-reloader", "rotor", 3600)
            .await?,
    )?;
    let (reloader, admin) = start_reloader(
        &stack,
        &binary("rotor-reloader")?,
        "files-reloader",
        &token_file,
        &ns,
        &[format!("--watch-namespace={ns}")],
    )
    .await?;

    let apps: Api<Deployment> = Api::namespaced(stack.kube.clone(), &ns);
    apps.create(&PostParams::default(), &deployment(&images.app)?)
        .await?;
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), &ns);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(stack.kube.clone(), &ns);
    let created = wait_for(Duration::from_secs(60), "the web pod", || async {
        Ok(pod_names(&pods, "app=web").await?.into_iter().next())
    })
    .await;
    let name = match created {
        Ok(name) => name,
        Err(e) => {
            // Why the ReplicaSet could not create it (a refusal by the webhook, say).
            let why: Vec<String> = replica_sets
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .flat_map(|rs| rs.status.and_then(|s| s.conditions).unwrap_or_default())
                .map(|c| format!("{}: {}", c.type_, c.message.unwrap_or_default()))
                .collect();
            bail!("{e}: {why:?}");
        }
    };
    let first_line = file_line(CONF, Some(rendered(FIRST).as_bytes()));
    let log = wait_for_log(&pods, &name, "web", &first_line, Duration::from_secs(90)).await?;
    assert!(!log.contains(FIRST), "{log}");
    let pod = pods.get(&name).await?;
    let uid = pod.metadata.uid.clone().context("pod uid")?;
    let spec_text = serde_json::to_string(&pod.spec)?;
    assert!(!spec_text.contains(FIRST), "a value reached the pod spec");

    // On the node: the files sit on the pod's memory volume, owned by the app's uid, mode 0400,
    // and the certificate matches its key (one lease).
    let volume = stack
        .node()?
        .dir()
        .join("kubelet/pods")
        .join(&uid)
        .join("volumes/kubernetes.io~empty-dir/rotor-files-0");
    let meta = std::fs::metadata(volume.join("db.conf"))
        .with_context(|| format!("{}", volume.display()))?;
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (1000, 0o400),
        "owner and mode"
    );
    assert_eq!(
        std::fs::read_to_string(volume.join("db.conf"))?,
        rendered(FIRST)
    );
    assert_cert_matches_key(&volume.join("tls.crt"), &volume.join("tls.key"))?;
    assert!(
        log.contains(&format!("app: file {CERT} len=")),
        "the app read the certificate: {log}"
    );
    assert_mount_is_tmpfs(&volume)?;

    // Like nginx, the app serves TLS with them: what it serves is the certificate in the file,
    // trusted through the PKI's CA.
    let cert_der = certificate_der(&std::fs::read_to_string(volume.join("tls.crt"))?)?;
    let serving = format!("app: tls port=8443 cert-fnv={:016x}", fnv1a(&cert_der));
    wait_for_log(&pods, &name, "web", &serving, Duration::from_secs(30)).await?;
    let ca = bao.read("pki/cert/ca").await?["data"]["certificate"]
        .as_str()
        .context("the PKI CA")?
        .to_string();
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("pod IP")?;
    let served = served_certificate_at(&pod_ip, 8443, "web.rotor.test", &ca).await?;
    assert_eq!(
        served, cert_der,
        "the app serves the certificate rotor wrote"
    );

    // The reloader has recorded the version; rotate it and time store write -> app signal.
    wait_for_record(&apps, "web").await?;
    let polled_before = metric(&admin, "rotor_reloader_store_requests_total").await?;
    let audited_before = stack.bao.audited_requests()?.len();
    let written = Instant::now();
    bao.put_kv2("secret", "demo/db", json!({ "password": ROTATED }))
        .await?;
    let rotated_line = file_line(CONF, Some(rendered(ROTATED).as_bytes()));
    let log = wait_for_log(&pods, &name, "web", &rotated_line, Duration::from_secs(120)).await?;
    let delay = written.elapsed();
    assert!(log.contains("app: received SIGHUP, reloading"), "{log}");
    assert!(!log.contains(ROTATED), "{log}");
    assert_eq!(
        std::fs::read_to_string(volume.join("db.conf"))?,
        rendered(ROTATED)
    );

    // rotor-init stays as the app's parent (PID 1 of the container, the app its child): its
    // memory is the cost of signal mode.
    let container_id = wait_for_running_container_id(&pods, &name, "web").await?;
    let processes = processes_in_container(stack.node()?.dir(), &container_id)?;
    let parent = processes
        .iter()
        .find(|(_, cmd)| cmd.starts_with("/rotor/bin/rotor-init"))
        .with_context(|| format!("{processes:?}"))?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", parent.0))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    assert!(
        processes.iter().any(|(_, cmd)| cmd.starts_with("/app")),
        "{processes:?}"
    );
    eprintln!("rotor-init as the app's parent in signal mode: VmRSS {rss}");

    // The same pod, never restarted, no rollout, and an Event and metrics that say so.
    let pod = pods.get(&name).await?;
    assert_eq!(pod.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        container_status(&pod, "web").map(|s| s.restart_count),
        Some(0)
    );
    assert_eq!(replica_set_count(&replica_sets, "app=web").await?, 1);
    let events: Api<Event> = Api::namespaced(stack.kube.clone(), &ns);
    let notes: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(EventReason::SecretRotatedInPlace.as_str()))
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("told 1 running pod(s)") && notes[0].contains("SIGHUP"),
        "{notes:?}"
    );
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("rotor_reloader_pods_told_total 1"),
        "{metrics}"
    );
    assert!(!metrics.contains(ROTATED) && !notes[0].contains(ROTATED));

    // Store requests for this rotation: the reloader's metadata reads (one per poll, its
    // metric) and the pod's one read of the new version (rotor-init's one rotation line, which
    // names the version it read).
    let metadata_reads =
        metric(&admin, "rotor_reloader_store_requests_total").await? - polled_before;
    let audited = stack.bao.audited_requests()?;
    let during = &audited[audited_before.min(audited.len())..];
    let count = |operation: &str, path: &str| {
        during
            .iter()
            .filter(|r| r.operation == operation && r.path == path)
            .count()
    };
    // The admin's write, the reloader's metadata reads, the pod's one data read; nothing else
    // touched the secret.
    assert_eq!(count("read", "secret/data/demo/db"), 1, "{during:?}");
    let audited_metadata_reads = count("read", "secret/metadata/demo/db");
    assert!(audited_metadata_reads >= 1, "{during:?}");
    let rotations: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rotation: read the new versions once"))
        .collect();
    assert_eq!(rotations.len(), 1, "{log}");
    assert!(
        rotations[0].contains("secret/data/demo/db") && rotations[0].contains('2'),
        "{rotations:?}"
    );
    // Where the delay comes from: the reloader's poll, then (its log's time to rotor-init's)
    // the kubelet's refresh of the downward-API file and rotor-init's 1 s check.
    let told_at = log_time(
        &std::fs::read_to_string(reloader.log_path())?,
        "rotation delivered in place",
    )?;
    let acted_at = log_time(&log, "rotation: read the new versions once")?;
    eprintln!(
        "pods told -> rotor-init re-read and signalled: {} ms",
        acted_at.duration_since(told_at).as_millis()
    );
    eprintln!(
        "rotation in place: store write -> app SIGHUP {delay:.1?}; store requests: 1 data read by the pod, \
         {metadata_reads} metadata read(s) by the reloader in that time by its metric, {audited_metadata_reads} in the \
         store's audit log (one per 1 s poll, cluster-wide)"
    );
    Ok(())
}

/// The node stack, a namespace `name` for the webhook, `secret/demo/db` and the app role
/// `shop` with `policy`.
async fn node_with_shop(
    name: &str,
    policy: &str,
) -> Result<(
    rotor_testkit::Stack,
    rotor_e2e::node_pods::NodeImages,
    String,
)> {
    let (stack, images) = start_node_stack().await?;
    let ns = stack
        .namespace_with_labels(name, &[("rotor-e2e", "enabled")])
        .await?;
    seed_app_secret(&stack, "demo/db", FIRST, "shop", &[&ns]).await?;
    stack.bao_admin()?.put_policy("shop", policy).await?;
    Ok((stack, images, ns))
}

fn deployment(image: &str) -> Result<Deployment> {
    let issue = r#"{"common_name":"web.rotor.test"}"#;
    Ok(serde_json::from_value(json!({
        "metadata": { "name": "web", "annotations": { "rotor.dev/reload": "true" } },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" }, "annotations": {
                    "rotor.dev/vault-role": "shop",
                    "rotor.dev/file.db.conf": "host=pg user=app password=${vault:secret/data/demo/db#password}\n",
                    "rotor.dev/file.tls.crt": format!(">>vault:pki/issue/web#certificate#{issue}"),
                    "rotor.dev/file.tls.key": format!(">>vault:pki/issue/web#private_key#{issue}"),
                    "rotor.dev/on-rotation": "signal",
                } },
                "spec": {
                    "serviceAccountName": "shop",
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 5,
                    "securityContext": { "runAsUser": 1000, "runAsGroup": 3000, "runAsNonRoot": true },
                    "containers": [{
                        "name": "web", "image": image,
                        "command": ["/app", "--file", CONF, "--file", CERT, "--tls", "8443", CERT, KEY],
                        "ports": [{ "containerPort": 8443 }],
                    }],
                },
            },
        },
    }))?)
}

/// The timestamp of the first JSON log line containing `needle`.
fn log_time(log: &str, needle: &str) -> Result<k8s_openapi::jiff::Timestamp> {
    let line = log
        .lines()
        .find(|l| l.contains(needle))
        .with_context(|| format!("no log line with {needle:?}"))?;
    let value: serde_json::Value = serde_json::from_str(line)?;
    Ok(value["timestamp"]
        .as_str()
        .context("a timestamp")?
        .parse()?)
}

fn assert_cert_matches_key(cert: &Path, key: &Path) -> Result<()> {
    let pubkey = |args: &[&str], file: &PathBuf| -> Result<Vec<u8>> {
        let out = Command::new("openssl").args(args).arg(file).output()?;
        if !out.status.success() {
            bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    };
    let from_cert = pubkey(&["x509", "-noout", "-pubkey", "-in"], &cert.to_path_buf())?;
    let from_key = pubkey(&["pkey", "-pubout", "-in"], &key.to_path_buf())?;
    assert!(!from_cert.is_empty());
    assert_eq!(
        from_cert, from_key,
        "certificate and key come from one lease"
    );
    Ok(())
}

/// The files volume is memory (tmpfs), never a disk.
fn assert_mount_is_tmpfs(volume: &Path) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let target = volume.display().to_string();
    let fs = mounts.lines().rev().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
        (at == target).then(|| kind.to_string())
    });
    assert_eq!(fs.as_deref(), Some("tmpfs"), "{target}");
    Ok(())
}

/// Renewal in place (issue 21): in signal mode a certificate and key from one PKI `>>` answer
/// (24 s, with a lease) are issued again at two thirds of their life, written as a set, the app
/// signalled once each time, the old lease revoked after `ROTOR_RENEW_GRACE`: the app serves TLS
/// across three renewals with no restart and no failed handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_issued_again_in_place_without_a_restart_or_a_failed_handshake()
-> Result<()> {
    const RENEWALS: usize = 3;
    let (stack, images, ns) = node_with_shop(
        "renew",
        r#"
path "pki/issue/short" { capabilities = ["create", "update"] }
path "sys/leases/revoke/pki/issue/short/*" { capabilities = ["update"] }
"#,
    )
    .await?;
    let bao = stack.bao_admin()?;
    bao.enable_pki("pki", "rotor.test", "web").await?;
    bao.write(
        "pki/roles/short",
        json!({ "allowed_domains": "rotor.test", "allow_subdomains": true, "ttl": "24s",
            "max_ttl": "1h", "generate_lease": true }),
    )
    .await?;
    let ca = bao.read("pki/cert/ca").await?["data"]["certificate"]
        .as_str()
        .context("the PKI CA")?
        .to_string();
    let _webhook = start_node_webhook(&stack, &images).await?;
    stack.service_account(&ns, "shop").await?;
    let mut web = deployment(&images.app)?;
    let template = web
        .spec
        .as_mut()
        .and_then(|s| s.template.metadata.as_mut())
        .context("template")?;
    let issue = r#"{"common_name":"web.rotor.test"}"#;
    let annotations = template.annotations.get_or_insert_default();
    annotations.remove("rotor.dev/file.db.conf");
    annotations.insert(
        "rotor.dev/file.tls.crt".into(),
        format!(">>vault:pki/issue/short#certificate#{issue}"),
    );
    annotations.insert(
        "rotor.dev/file.tls.key".into(),
        format!(">>vault:pki/issue/short#private_key#{issue}"),
    );
    let container = &mut web
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .context("pod spec")?
        .containers[0];
    container.command = Some(
        ["/app", "--file", CERT, "--tls", "8443", CERT, KEY]
            .map(String::from)
            .to_vec(),
    );
    container.env = Some(vec![serde_json::from_value(
        json!({ "name": "ROTOR_RENEW_GRACE", "value": "3" }),
    )?]);
    let apps: Api<Deployment> = Api::namespaced(stack.kube.clone(), &ns);
    apps.create(&PostParams::default(), &web).await?;
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), &ns);
    let name = wait_for(Duration::from_secs(60), "the web pod", || async {
        Ok(pod_names(&pods, "app=web").await?.into_iter().next())
    })
    .await?;
    wait_for_log(
        &pods,
        &name,
        "web",
        "app: tls port=8443",
        Duration::from_secs(90),
    )
    .await?;
    let pod = pods.get(&name).await?;
    let uid = pod.metadata.uid.clone().context("pod uid")?;
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("pod IP")?;

    // Handshakes every 200 ms, each verified against the PKI's CA, until the app has served
    // the first certificate and three more.
    let mut served: Vec<Vec<u8>> = Vec::new();
    let mut handshakes = 0usize;
    let mut failed = Vec::new();
    let started = Instant::now();
    while served.len() < RENEWALS + 1 {
        if started.elapsed() > Duration::from_secs(150) {
            bail!(
                "{} certificates served in 150 s ({handshakes} handshakes, failures {failed:?})",
                served.len()
            );
        }
        match served_certificate_at(&pod_ip, 8443, "web.rotor.test", &ca).await {
            Ok(der) => {
                if served.last() != Some(&der) {
                    served.push(der);
                }
            }
            Err(e) => failed.push(e.to_string()),
        }
        handshakes += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        failed.is_empty(),
        "{} handshakes failed: {failed:?}",
        failed.len()
    );

    // The same pod, never restarted; rotor-init says what it did, three times, once each.
    let pod = pods.get(&name).await?;
    assert_eq!(pod.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        container_status(&pod, "web").map(|s| s.restart_count),
        Some(0)
    );
    let log = wait_for_log(
        &pods,
        &name,
        "web",
        "renewal in place: the old lease revoked after the grace",
        Duration::from_secs(30),
    )
    .await?;
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let renewals = count("renewal in place: issued again, rewrote the files as a set");
    assert!(renewals >= RENEWALS, "{log}");
    assert!(count("app: received SIGHUP") >= RENEWALS, "{log}");
    assert_eq!(count("lease can no longer be renewed"), 0, "{log}");
    assert!(!log.contains("PRIVATE KEY"), "{log}");
    // The old leases are revoked by rotor-init after the grace (the store's own record).
    wait_for(
        Duration::from_secs(30),
        "the old leases revoked",
        || async {
            let revoked = stack
                .bao
                .audited_requests()?
                .iter()
                .filter(|r| r.path.starts_with("sys/leases/revoke/pki/issue/short/"))
                .count();
            Ok((revoked >= RENEWALS).then_some(()))
        },
    )
    .await?;
    eprintln!(
        "renewal in place: {} certificates served across {renewals} renewals in {:.0?}, {handshakes} handshakes, 0 failed, 0 restarts",
        served.len(),
        started.elapsed()
    );
    Ok(())
}
