//! What a real node changes on the host, recorded before and undone on drop: the pod bridge, the
//! sysctls kubelet and the CNI bridge plugin set, kubelet's cgroups, and the few paths kubelet,
//! containerd and libcni hard-code outside the stack's temp dir.
//!
//! Only one node runs on a host at a time (kubelet's cgroups and device-plugin socket are
//! host-wide): [`HostChanges::prepare`] takes an exclusive lock that the guard holds.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The Linux bridge the pods attach to; the stack creates it and deletes it.
pub const BRIDGE: &str = "rotor0";
/// The pods' subnet on [`BRIDGE`].
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The bridge's own address: the pods' gateway, the node's InternalIP, and where the servers
/// that pods must reach (OpenBao) listen.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);

const LOCK_FILE: &str = "/tmp/rotor-testkit-node.lock";
/// Sysctls kubelet sets (protectKernelDefaults is off) and the bridge plugin sets (ip_forward).
const SYSCTLS: [&str; 5] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "net/ipv4/ip_forward",
];
/// Paths kubelet, containerd 1.6 and libcni use whatever their configuration says.
const HARD_CODED_DIRS: [&str; 4] = [
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/lib/cni",
    "/run/containerd",
];
const CNI_RESULTS: &str = "/var/lib/cni/results";
/// The CNI network's name (libcni caches results as `<name>-<container>-<ifname>`).
pub const CNI_NETWORK: &str = "rotor-pods";

/// The host's state before the node, restored when this guard drops (also during a panic).
pub struct HostChanges {
    sysctls: Vec<(String, String)>,
    /// libcni's result cache before the node: what is new afterwards is ours.
    cni_results_before: Vec<PathBuf>,
    created_dirs: Vec<PathBuf>,
    node_dir: PathBuf,
    _lock: File,
}

impl HostChanges {
    /// Checks that we are root, takes the host-wide node lock, records the state to restore, and
    /// creates the pod bridge with [`GATEWAY`].
    pub fn prepare(node_dir: &Path) -> Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("?");
        if uid != "0" {
            bail!(
                "the real node (StackOptions::node) needs root: kubelet, containerd and runc create \
                 cgroups, mounts and network namespaces; this process runs as uid {uid}. Run the \
                 tests as root (CI does)"
            );
        }
        let lock = lock_node_host()?;
        let sysctls = SYSCTLS
            .iter()
            .map(|k| {
                let value = std::fs::read_to_string(Path::new("/proc/sys").join(k))
                    .with_context(|| format!("reading sysctl {k}"))?;
                Ok(((*k).to_string(), value.trim().to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let created_dirs = HARD_CODED_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|d| !d.exists())
            .collect();
        let changes = Self {
            sysctls,
            cni_results_before: list_dir(CNI_RESULTS),
            created_dirs,
            node_dir: node_dir.to_path_buf(),
            _lock: lock,
        };
        // A bridge left by a stack that was killed (no drop ran) goes first.
        if Path::new("/sys/class/net").join(BRIDGE).exists() {
            ip(&["link", "del", BRIDGE])?;
        }
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE])?;
        ip(&["link", "set", BRIDGE, "up"])?;
        Ok(changes)
    }

    fn restore(&mut self) {
        unmount_under(&self.node_dir);
        if Path::new("/sys/class/net").join(BRIDGE).exists() {
            let _ = ip(&["link", "del", BRIDGE]);
        }
        remove_kubepods_cgroups();
        for (key, value) in &self.sysctls {
            let path = Path::new("/proc/sys").join(key);
            if std::fs::read_to_string(&path).is_ok_and(|now| now.trim() != value) {
                let _ = std::fs::write(&path, value);
            }
        }
        // Our entries in the hard-coded paths; the directories themselves when we made them.
        let _ = std::fs::remove_file("/var/lib/kubelet/device-plugins/kubelet.sock");
        let _ = std::fs::remove_file("/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint");
        remove_matching("/var/log/containers", |p| {
            std::fs::read_link(p).is_ok_and(|t| t.starts_with(&self.node_dir))
        });
        // Our pods' results (network rotor-pods, and containerd's own cni-loopback).
        remove_matching(CNI_RESULTS, |p| {
            !self.cni_results_before.iter().any(|b| b == p)
        });
        for dir in &self.created_dirs {
            remove_empty_dirs(dir);
        }
    }
}

impl Drop for HostChanges {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Takes the host-wide node lock: blocks while a stack on this host runs a node, and is released
/// when the file drops (or the process exits). Tests that inspect the host after a node hold it,
/// so that the next node does not start under their checks.
pub fn lock_node_host() -> Result<File> {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .with_context(|| format!("opening {LOCK_FILE}"))?;
    lock.lock()
        .with_context(|| format!("locking {LOCK_FILE} (one node per host)"))?;
    Ok(lock)
}

/// Runs `ip ARGS`, failing with its output.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Unmounts every mount point at or below `dir`, deepest first (lazily when busy).
pub fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort();
    points.dedup();
    for point in points.iter().rev() {
        let ok = Command::new("umount")
            .arg(point)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(point)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(field: &str) -> PathBuf {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    PathBuf::from(out)
}

/// kubelet's `kubepods` cgroup tree under every cgroup v1 controller (and v2), leaves first.
fn remove_kubepods_cgroups() {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut roots: Vec<PathBuf> = controllers
        .flatten()
        .map(|c| c.path().join("kubepods"))
        .collect();
    roots.push(PathBuf::from("/sys/fs/cgroup/kubepods"));
    for root in roots.iter().filter(|r| r.is_dir()) {
        let mut dirs = Vec::new();
        collect_dirs(root, &mut dirs);
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// `dir` and every directory below it, parents before children.
fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry
                .file_type()
                .is_ok_and(|t| t.is_dir() && !t.is_symlink())
            {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

fn list_dir(dir: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn remove_matching(dir: &str, matches: impl Fn(&Path) -> bool) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if matches(&entry.path()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Removes `dir` and the directories below it that are empty (files keep theirs).
fn remove_empty_dirs(dir: &Path) {
    let mut dirs = Vec::new();
    collect_dirs(dir, &mut dirs);
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path(r"/tmp/a\040b/c\134d"),
            PathBuf::from("/tmp/a b/c\\d")
        );
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }
}
