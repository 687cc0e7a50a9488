//! A real node: containerd (runc, CNI bridge), kubelet and kube-scheduler, started and stopped by
//! pid like every other process of the stack. Pods run for real: images are pulled from the
//! stack's registry, the pod network is the bridge [`host::BRIDGE`] that the stack creates, and
//! kubelet talks to the stack's apiserver with its own client certificate (Node authorizer).
//!
//! Where servers listen, so pods can reach them: the node's InternalIP and the pods' gateway is
//! [`host::GATEWAY`] (10.244.0.1), an address on the bridge the stack made. OpenBao and
//! kube-apiserver listen there (pods call both: rotor-init logs in to OpenBao, rotor's own pods
//! call the apiserver). There is no kube-proxy, so Service ClusterIPs do not route: a pod that
//! calls the apiserver is given its address in `KUBERNETES_SERVICE_HOST`/`_PORT`. Webhooks that
//! tests run as host processes stay on 127.0.0.1 (only the apiserver calls them). This VM's
//! quirks and their fixes are in the configs below: CAP_SYS_RESOURCE is withheld (oom_score_adj),
//! cgroup v1 without systemd (cgroupfs).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::api::Api;

use crate::apiserver::{ApiServer, kubeconfig_yaml};
use crate::host::{BRIDGE, CNI_NETWORK, GATEWAY, HostChanges, POD_CIDR};
use crate::pki::Pki;
use crate::ports::free_port;
use crate::process::ManagedProcess;
use crate::ready::{READY_TIMEOUT, wait_http_ok};
use crate::registry::Registry;
use crate::tools::{tool, tools_dir};

/// The node's name.
pub const NODE_NAME: &str = "rotor-node";
/// The sandbox image every pod starts with, pushed to the stack's registry.
pub const PAUSE_REPO_TAG: &str = "pause:3.10";

/// The running node. Dropping it stops kubelet and the scheduler, removes every container,
/// stops containerd and the shims, unmounts what they mounted, then restores the host.
pub struct Node {
    pub kubelet: ManagedProcess,
    pub scheduler: ManagedProcess,
    pub containerd: ManagedProcess,
    /// How long from starting containerd to the node reporting Ready.
    pub ready_after: Duration,
    /// What the node reports of itself (`status.nodeInfo`).
    pub versions: NodeVersions,
    dir: PathBuf,
    // Declared last: restored after everything above has stopped.
    _host: HostChanges,
}

/// The apiserver flags a node needs: the Node authorizer and NodeRestriction, a client
/// certificate for calls to the kubelet (logs, exec), and Service → endpoint resolution for
/// webhooks and aggregated APIs (there is no kube-proxy: a webhook registered by Service, as
/// the chart does, is called on its pod's address).
pub fn apiserver_args(dir: &Path, pki: &Pki) -> Result<Vec<String>> {
    let client = pki.client_cert("kube-apiserver-kubelet-client", Some("system:masters"))?;
    let cert = write(dir, "apiserver-kubelet-client.crt", &client.cert_pem)?;
    let key = write(dir, "apiserver-kubelet-client.key", &client.key_pem)?;
    let ca = write(dir, "kubelet-ca.crt", pki.ca_pem())?;
    Ok(vec![
        "--authorization-mode=Node,RBAC".to_string(),
        "--enable-admission-plugins=NodeRestriction".to_string(),
        format!("--kubelet-client-certificate={}", cert.display()),
        format!("--kubelet-client-key={}", key.display()),
        format!("--kubelet-certificate-authority={}", ca.display()),
        "--kubelet-preferred-address-types=InternalIP,Hostname".to_string(),
        "--enable-aggregator-routing=true".to_string(),
    ])
}

/// The kubelet's and the container runtime's versions, as the node reports them
/// (`v1.37.2`, `containerd://2.4.2`).
#[derive(Clone, Debug)]
pub struct NodeVersions {
    pub kubelet: String,
    pub runtime: String,
}

impl NodeVersions {
    /// Whether pods on this node can mount an image volume: kubelet >= 1.35 (on by default)
    /// and containerd >= 2.1 (which mounts them).
    pub fn image_volumes(&self) -> bool {
        let minor = |v: &str| -> Option<(u32, u32)> {
            let mut parts = v.trim_start_matches('v').split('.');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        };
        let containerd = self
            .runtime
            .strip_prefix("containerd://")
            .and_then(minor)
            .is_some_and(|v| v >= (2, 1));
        containerd && minor(&self.kubelet).is_some_and(|v| v >= (1, 35))
    }
}

impl Node {
    /// Prepares the host (root, lock, bridge) before anything that must listen on the bridge.
    pub fn prepare_host(stack_dir: &Path) -> Result<HostChanges> {
        HostChanges::prepare(&stack_dir.join("node"))
    }

    /// Starts containerd, kube-scheduler and kubelet, and waits until the node is Ready.
    pub async fn start(
        stack_dir: &Path,
        pki: &Pki,
        api: &ApiServer,
        registry: &Registry,
        kube: &kube::Client,
        host: HostChanges,
    ) -> Result<Self> {
        let dir = stack_dir.join("node");
        for sub in [
            "cni/net.d",
            "cni/ipam",
            "kubelet",
            "pod-logs",
            "volume-plugins",
        ] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        push_pause_image(registry, &dir)?;
        let started = Instant::now();
        let containerd = start_containerd(&dir, &registry.host)?;
        let scheduler = start_scheduler(&dir, pki, api).await?;
        let mut kubelet = start_kubelet(&dir, pki, api, &containerd).await?;
        let versions = wait_node_ready(kube, &mut kubelet).await?;
        Ok(Self {
            kubelet,
            scheduler,
            containerd,
            ready_after: started.elapsed(),
            versions,
            dir,
            _host: host,
        })
    }

    /// The node's directory (containerd and kubelet state, pod logs, configs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's CRI socket, for `ctr --address`.
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// Runs `ctr -n k8s.io ARGS` against this node's containerd.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let socket = self.containerd_socket().display().to_string();
        let mut all = vec!["--address", socket.as_str(), "-n", "k8s.io"];
        all.extend_from_slice(args);
        let out = std::process::Command::new(tool("ctr")?)
            .args(&all)
            .output()
            .context("running ctr")?;
        if !out.status.success() {
            bail!(
                "ctr {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The containerd shims serving this node's containers: the parents of the containers'
    /// init processes (shims re-parent to PID 1, so they are not our children).
    pub fn shim_pids(&self) -> Vec<u32> {
        let state = self
            .dir
            .join("containerd/state/io.containerd.runtime.v2.task/k8s.io");
        let mut pids: Vec<u32> = std::fs::read_dir(state)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|bundle| std::fs::read_to_string(bundle.path().join("init.pid")).ok())
            .filter_map(|pid| parent_pid(pid.trim()))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        let socket = self.containerd_socket().display().to_string();
        pids.retain(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let line = String::from_utf8_lossy(&c).replace('\0', " ");
                line.contains("containerd-shim") && line.contains(&socket)
            })
        });
        pids
    }

    fn teardown(&mut self) {
        self.scheduler.stop(Duration::from_secs(3));
        self.kubelet.stop(Duration::from_secs(10));
        let shims = self.shim_pids();
        // Whatever containers are left (pods of the test): killed and removed through containerd.
        if self.containerd.exited().is_none() {
            let tasks = self.ctr(&["tasks", "ls", "-q"]).unwrap_or_default();
            for id in tasks.lines() {
                let _ = self.ctr(&["tasks", "kill", "-s", "KILL", id]);
            }
            for id in tasks.lines() {
                let _ = self.ctr(&["tasks", "rm", "-f", id]);
            }
            let containers = self.ctr(&["containers", "ls", "-q"]).unwrap_or_default();
            for id in containers.lines() {
                let _ = self.ctr(&["containers", "rm", id]);
            }
        }
        for pid in shims {
            crate::process::stop_pid(pid, Duration::from_secs(3));
        }
        self.containerd.stop(Duration::from_secs(10));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn parent_pid(pid: &str) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The sandbox image: the static pause binary alone.
fn push_pause_image(registry: &Registry, dir: &Path) -> Result<()> {
    registry.push_files_image(
        PAUSE_REPO_TAG,
        &[(tool("pause")?, "/pause".to_string())],
        &crate::registry::ImageConfig {
            entrypoint: vec!["/pause".to_string()],
            ..Default::default()
        },
        dir,
    )?;
    Ok(())
}

fn start_containerd(dir: &Path, registry_host: &str) -> Result<ManagedProcess> {
    let certs = dir.join("certs.d").join(registry_host);
    std::fs::create_dir_all(&certs).context("creating containerd's certs.d")?;
    write(
        &certs,
        "hosts.toml",
        &format!(
            "server = \"http://{registry_host}\"\n[host.\"http://{registry_host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )?;
    let runc = tool("runc")?;
    let cni_bin = tools_dir().join("..").join("cni");
    if !cni_bin.join("bridge").exists() {
        bail!(
            "the CNI plugins are not at {}: run scripts/install-tools.sh",
            cni_bin.display()
        );
    }
    let config = containerd_config(
        containerd_version(&tool("containerd")?)?,
        dir,
        registry_host,
        &runc,
        &cni_bin,
    );
    let config_file = write(dir, "containerd.toml", &config)?;
    // No masquerade: no iptables binary is needed, and pods only talk to the host and each other.
    write(
        &dir.join("cni/net.d"),
        "10-rotor.conflist",
        &serde_json::json!({
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": false, "hairpinMode": true,
                "ipam": {
                    "type": "host-local", "dataDir": dir.join("cni/ipam"),
                    "ranges": [[{ "subnet": POD_CIDR, "gateway": GATEWAY.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                },
            }],
        })
        .to_string(),
    )?;
    // containerd finds its shim on PATH.
    let path = format!(
        "{}:{}",
        tools_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    ManagedProcess::spawn(
        "containerd",
        &tool("containerd")?,
        &["--config".to_string(), config_file.display().to_string()],
        &[("PATH", path.as_str())],
        dir,
    )
}

/// `containerd --version` as (major, minor): "containerd github.com/containerd/containerd/v2
/// v2.4.2 release" or Debian's "containerd github.com/containerd/containerd 1.6.20~ds1".
fn containerd_version(containerd: &Path) -> Result<(u32, u32)> {
    let out = std::process::Command::new(containerd)
        .arg("--version")
        .output()
        .context("running containerd --version")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .and_then(|v| {
            let mut parts = v.trim_start_matches('v').split(['.', '~', '-', '+']);
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .with_context(|| format!("reading containerd's version from {text:?}"))
}

/// containerd's configuration in the schema its version reads without migrating: version 2
/// for containerd 1.x (one `cri` plugin), version 3 for 2.0-2.3 (CRI split into images and
/// runtime), version 4 for 2.4+ (the gRPC and ttrpc servers are plugins too). Nothing is
/// imported from the host's /etc/containerd.
fn containerd_config(
    (major, minor): (u32, u32),
    dir: &Path,
    registry_host: &str,
    runc: &Path,
    cni_bin: &Path,
) -> String {
    let d = dir.display();
    let runc = runc.display();
    let cni = cni_bin.display();
    let head = format!(
        r#"root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
"#
    );
    // This VM withholds CAP_SYS_RESOURCE, so no process may lower its oom_score_adj below 0;
    // kubelet asks -998 for sandboxes and runc fails: clamp to containerd's own score (0).
    // Layers are plain copies ("native"): no overlay mounts to leak if a test is killed.
    if major < 2 {
        return format!(
            r#"version = 2
{head}[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{registry_host}/{PAUSE_REPO_TAG}"
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  systemd_cgroup = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{d}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}"
    conf_dir = "{d}/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"#
        );
    }
    let (version, grpc, ttrpc) = if minor >= 4 {
        (
            4,
            r#"plugins."io.containerd.server.v1.grpc""#,
            r#"plugins."io.containerd.server.v1.ttrpc""#,
        )
    } else {
        (3, "grpc", "ttrpc")
    };
    format!(
        r#"version = {version}
imports = []
{head}[{grpc}]
  address = "{d}/containerd.sock"
[{ttrpc}]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "native"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{registry_host}/{PAUSE_REPO_TAG}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{d}/certs.d"
[plugins."io.containerd.cri.v1.runtime"]
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{d}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni}"]
    conf_dir = "{d}/cni/net.d"
    max_conf_num = 1
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
# containerd 2 pulls through the transfer service, which unpacks only into the snapshotters
# listed here (by default overlayfs): without this entry every pull fails with "no unpack
# platforms defined".
[plugins."io.containerd.transfer.v1.local"]
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "native"
    differ = "walking"
"#
    )
}

async fn start_scheduler(dir: &Path, pki: &Pki, api: &ApiServer) -> Result<ManagedProcess> {
    let identity = pki.client_cert("system:kube-scheduler", None)?;
    let kubeconfig = write(
        dir,
        "scheduler.kubeconfig",
        &kubeconfig_yaml(&api.url, pki.ca_pem(), &identity),
    )?;
    let port = free_port()?;
    let k = kubeconfig.display();
    let args = vec![
        format!("--kubeconfig={k}"),
        format!("--authentication-kubeconfig={k}"),
        format!("--authorization-kubeconfig={k}"),
        "--bind-address=127.0.0.1".to_string(),
        format!("--secure-port={port}"),
        "--leader-elect=false".to_string(),
        "--v=1".to_string(),
    ];
    let mut process =
        ManagedProcess::spawn("kube-scheduler", &tool("kube-scheduler")?, &args, &[], dir)?;
    let http = crate::insecure_http_client()?;
    wait_http_ok(
        &mut process,
        &format!("https://127.0.0.1:{port}/healthz"),
        Some(&http),
    )
    .await?;
    Ok(process)
}

async fn start_kubelet(
    dir: &Path,
    pki: &Pki,
    api: &ApiServer,
    containerd: &ManagedProcess,
) -> Result<ManagedProcess> {
    // Node authorizer identity: user system:node:<name> in group system:nodes.
    let client = pki.client_cert(&format!("system:node:{NODE_NAME}"), Some("system:nodes"))?;
    let kubeconfig = write(
        dir,
        "kubelet.kubeconfig",
        &kubeconfig_yaml(&api.url, pki.ca_pem(), &client),
    )?;
    let serving =
        pki.server_cert_with_ips(NODE_NAME, &[NODE_NAME, "localhost"], &[IpAddr::V4(GATEWAY)])?;
    let cert = write(dir, "kubelet.crt", &serving.cert_pem)?;
    let key = write(dir, "kubelet.key", &serving.key_pem)?;
    let ca = write(dir, "ca.crt", pki.ca_pem())?;
    let port = free_port()?;
    let healthz = free_port()?;
    let d = dir.display();
    let config = format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {GATEWAY}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
tlsCertFile: {cert}
tlsPrivateKeyFile: {key}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
containerRuntimeEndpoint: unix://{d}/containerd.sock
# No systemd here; containerd's runc uses cgroupfs too. The test VM's kernel has cgroup v1,
# which kubelet >= 1.35 refuses unless told otherwise: a property of this machine, not of rotor.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# The default -999 needs CAP_SYS_RESOURCE, which this VM withholds.
oomScoreAdj: 0
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
podLogsDir: {d}/pod-logs
volumePluginDir: {d}/volume-plugins
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
makeIPTablesUtilChains: false
serializeImagePulls: false
imageMinimumGCAge: 24h
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}}
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
"#,
        cert = cert.display(),
        key = key.display(),
        ca = ca.display(),
    );
    let config_file = write(dir, "kubelet-config.yaml", &config)?;
    // kubelet needs containerd's socket before it starts.
    let socket = dir.join("containerd.sock");
    let start = Instant::now();
    while !socket.exists() {
        if start.elapsed() > READY_TIMEOUT {
            bail!(
                "containerd did not create {} within {READY_TIMEOUT:?}; log tail:\n{}",
                socket.display(),
                containerd.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let args = vec![
        format!("--config={}", config_file.display()),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--root-dir={d}/kubelet"),
        format!("--cert-dir={d}/kubelet/pki"),
        format!("--hostname-override={NODE_NAME}"),
        format!("--node-ip={GATEWAY}"),
        "--v=1".to_string(),
    ];
    let path = format!(
        "{}:{}",
        tools_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut process = ManagedProcess::spawn(
        "kubelet",
        &tool("kubelet")?,
        &args,
        &[("PATH", path.as_str())],
        dir,
    )?;
    wait_http_ok(
        &mut process,
        &format!("http://127.0.0.1:{healthz}/healthz"),
        None,
    )
    .await?;
    Ok(process)
}

async fn wait_node_ready(
    kube: &kube::Client,
    kubelet: &mut ManagedProcess,
) -> Result<NodeVersions> {
    let nodes: Api<NodeObject> = Api::all(kube.clone());
    let start = Instant::now();
    loop {
        if let Some(status) = kubelet.exited() {
            bail!(
                "kubelet exited ({status}) before node {NODE_NAME} was Ready; log tail:\n{}",
                kubelet.log_tail(40)
            );
        }
        let status = nodes
            .get_opt(NODE_NAME)
            .await
            .ok()
            .flatten()
            .and_then(|n| n.status);
        let ready = status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if let (true, Some(info)) = (ready, status.and_then(|s| s.node_info)) {
            return Ok(NodeVersions {
                kubelet: info.kubelet_version,
                runtime: info.container_runtime_version,
            });
        }
        if start.elapsed() > READY_TIMEOUT {
            bail!(
                "node {NODE_NAME} not Ready after {READY_TIMEOUT:?}; kubelet log tail:\n{}",
                kubelet.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_containerd_gets_the_config_schema_it_reads_without_migrating() {
        let config = |v| {
            containerd_config(
                v,
                Path::new("/n"),
                "127.0.0.1:5000",
                Path::new("/bin/runc"),
                Path::new("/cni"),
            )
        };
        let old = config((1, 6));
        assert!(old.starts_with("version = 2\n") && old.contains("sandbox_image = "));
        let v3 = config((2, 1));
        assert!(v3.starts_with("version = 3\n") && v3.contains("\n[grpc]\n"));
        let v4 = config((2, 4));
        assert!(v4.starts_with("version = 4\n"));
        assert!(v4.contains(r#"[plugins."io.containerd.server.v1.grpc"]"#));
        for c in [&v3, &v4] {
            assert!(c.contains("sandbox = \"127.0.0.1:5000/pause:3.10\""), "{c}");
            assert!(c.contains("restrict_oom_score_adj = true") && c.contains("imports = []"));
        }
    }

    #[test]
    fn image_volumes_need_kubelet_1_35_and_containerd_2_1() {
        let v = |kubelet: &str, runtime: &str| NodeVersions {
            kubelet: kubelet.into(),
            runtime: runtime.into(),
        };
        assert!(v("v1.37.2", "containerd://2.4.2").image_volumes());
        assert!(v("v1.35.0", "containerd://2.1.0").image_volumes());
        assert!(!v("v1.34.4", "containerd://2.4.2").image_volumes());
        assert!(!v("v1.37.2", "containerd://2.0.5").image_volumes());
        assert!(!v("v1.34.4", "containerd://1.6.20~ds1").image_volumes());
        assert!(!v("v1.37.2", "cri-o://1.33.0").image_volumes());
    }
}
