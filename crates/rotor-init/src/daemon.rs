//! Daemon and signal mode: rotor-init stays as the parent of the app, forwards signals, renews
//! leases, re-renders files on rotation (`rotation.rs`), and stops the app (SIGTERM, then SIGKILL
//! after a grace period) when a lease can no longer be renewed, so the kubelet restarts the
//! container with fresh credentials.
//!
//! While it stays, rotor-init is what an init should be: it reaps every orphan that reaches it
//! (as the container's PID 1, or as the app's subreaper elsewhere), and it is not dumpable, so the
//! app (even as the same user, even as root without CAP_SYS_PTRACE) cannot read its environment
//! (`/proc/<ppid>/environ`, where the pod's `ROTOR_*` settings and any `ROTOR_TOKEN` are) or its
//! memory (the token it renews with, the values it rendered).

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use rotor_core::store::{Lease, StoreClient};
use tokio::signal::unix::{SignalKind, signal};

/// Makes this process what the app cannot look into and the reaper of its orphans; call before
/// the app starts, once nothing more is read from the environment. Failures are logged, never
/// fatal (the app still starts).
pub fn harden() {
    if let Err(e) = clear_own_environment() {
        tracing::warn!(error = %e, "cannot clear rotor-init's own environment block; the app may read it");
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot make rotor-init non-dumpable; the app can read its environment");
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot make rotor-init the subreaper of the app's orphans");
    }
}

/// Overwrites with zeros the block the kernel shows as `/proc/<pid>/environ` (the environment
/// rotor-init was started with: the pod's `ROTOR_*` settings, a `ROTOR_TOKEN`). Non-dumpable
/// alone does not hide it from an app running as root. Written through `/proc/self/mem`, so no
/// unsafe code; the settings were parsed into owned values long before.
fn clear_own_environment() -> std::io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let (start, end) = environment_block(&stat)
        .ok_or_else(|| std::io::Error::other("no env_start/env_end in /proc/self/stat"))?;
    let zeros = vec![0u8; usize::try_from(end - start).map_err(std::io::Error::other)?];
    std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")?
        .write_all_at(&zeros, start)
}

/// `env_start` and `env_end` (fields 50 and 51) of a `/proc/<pid>/stat` line.
fn environment_block(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let start = fields.get(50 - 3)?.parse().ok()?;
    let end: u64 = fields.get(51 - 3)?.parse().ok()?;
    (end > start && end - start <= 64 * 1024 * 1024).then_some((start, end))
}

/// Starts `command` and runs it to completion; returns the exit code rotor-init exits with.
/// Children are waited for here (any child, so orphans too), never through `std::process`.
pub async fn supervise(
    command: &mut std::process::Command,
    client: StoreClient,
    leases: Vec<Lease>,
    grace: Duration,
    rotation: Option<crate::rotation::Rotation>,
) -> Result<i32, std::io::Error> {
    // Every handler is installed before the app starts: no exit and no signal is missed, and
    // the app starts with the default disposition of each forwarded signal even when rotor-init
    // inherited it ignored (under nohup, SIGHUP is): execve resets a handled signal, but an
    // ignored one is inherited, and the app could never trap it.
    let mut children = signal(SignalKind::child())?;
    let kinds = [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
        SignalKind::quit(),
        SignalKind::user_defined1(),
        SignalKind::user_defined2(),
        SignalKind::window_change(),
        // Not PID 1 (a shared process namespace, a debug shell), SIGALRM's default would end
        // rotor-init and leave the app running unsupervised; a stopped app needs SIGCONT.
        SignalKind::alarm(),
        SignalKind::from_raw(Signal::SIGCONT as i32),
    ];
    let mut streams = Vec::new();
    for kind in kinds {
        match signal(kind) {
            Ok(s) => streams.push((kind, s)),
            Err(e) => tracing::warn!(error = %e, "cannot forward a signal"),
        }
    }
    let pid = command.spawn().map(|child| child.id())?;
    let Ok(pid) = i32::try_from(pid).map(Pid::from_raw) else {
        return Ok(1);
    };
    let mut reaper = Reaper {
        app: pid,
        reaped: 0,
    };
    let (lost_tx, mut lost_rx) = tokio::sync::mpsc::channel::<String>(1);
    for lease in leases.into_iter().filter(|l| !l.duration.is_zero()) {
        tokio::spawn(renew_until_lost(client.clone(), lease, lost_tx.clone()));
    }
    drop(lost_tx);
    // Every delivery of every kind is forwarded, the tenth SIGHUP as the first.
    let forward = async {
        let each = streams.into_iter().map(|(kind, s)| {
            Box::pin(futures::stream::unfold(s, move |mut s| async move {
                s.recv().await.map(|()| (kind, s))
            }))
        });
        let mut all = futures::stream::select_all(each);
        while let Some(kind) = futures::StreamExt::next(&mut all).await {
            if let Ok(sig) = Signal::try_from(kind.as_raw_value()) {
                tracing::debug!(signal = %sig, "forwarding signal to the app");
                let _ = kill(pid, sig);
            }
        }
        std::future::pending::<()>().await;
    };
    let rotations = async {
        match rotation {
            Some(r) => r.run(pid).await,
            None => std::future::pending().await,
        }
    };
    let code = tokio::select! {
        code = reaper.app_exit(&mut children) => code,
        _ = forward => 1,
        () = rotations => 1,
        Some(reason) = lost_rx.recv() => {
            tracing::warn!(%reason, "a lease can no longer be renewed: stopping the app so it restarts with fresh credentials");
            let _ = kill(pid, Signal::SIGTERM);
            match tokio::time::timeout(grace, reaper.app_exit(&mut children)).await {
                Ok(code) => code,
                Err(_) => {
                    tracing::warn!(?grace, "the app did not stop within the grace period: SIGKILL");
                    let _ = kill(pid, Signal::SIGKILL);
                    reaper.app_exit(&mut children).await
                }
            }
        }
    };
    Ok(code)
}

/// Waits for children: the app's exit status is the answer, every other child (an orphan that
/// reached rotor-init) is reaped and counted.
struct Reaper {
    app: Pid,
    reaped: u64,
}

impl Reaper {
    /// The exit code of the app (its code, or 128 + the signal that ended it).
    async fn app_exit(&mut self, children: &mut tokio::signal::unix::Signal) -> i32 {
        loop {
            if let Some(code) = self.reap_ready() {
                return code;
            }
            if children.recv().await.is_none() {
                tracing::error!("SIGCHLD can no longer be received; cannot wait for the app");
                return 1;
            }
        }
    }

    /// Reaps every child that has ended; the app's exit code once it has.
    fn reap_ready(&mut self) -> Option<i32> {
        loop {
            let (pid, code) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32),
                Ok(WaitStatus::StillAlive) => return None,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    // ECHILD: no child left, so the app is gone without a status we saw.
                    tracing::error!(error = %e, "waiting for the app failed");
                    return Some(1);
                }
            };
            if pid == self.app {
                if self.reaped > 0 {
                    tracing::debug!(orphans = self.reaped, "reaped orphans of the app");
                }
                return Some(code);
            }
            self.reaped += 1;
            tracing::debug!(%pid, reaped = self.reaped, "reaped an orphan");
        }
    }
}

async fn renew_until_lost(
    client: StoreClient,
    lease: Lease,
    lost: tokio::sync::mpsc::Sender<String>,
) {
    let requested = lease.duration;
    let mut remaining = lease.duration;
    loop {
        // Renew at two thirds of what is left.
        tokio::time::sleep(remaining * 2 / 3).await;
        if !lease.renewable {
            let _ = lost
                .send(format!(
                    "lease {} is not renewable and expires",
                    short(&lease.id)
                ))
                .await;
            return;
        }
        match client.renew_lease(&lease.id, requested).await {
            Ok(granted) if granted >= requested => {
                tracing::info!(lease = %short(&lease.id), granted_s = granted.as_secs(), "lease renewed");
                remaining = granted;
            }
            Ok(granted) => {
                // Capped by the lease's max TTL: it ends in `granted`; stop the app before that.
                tracing::info!(lease = %short(&lease.id), ends_in_s = granted.as_secs(), "lease reached its max TTL");
                tokio::time::sleep(granted * 2 / 3).await;
                let _ = lost
                    .send(format!("lease {} reaches its max TTL", short(&lease.id)))
                    .await;
                return;
            }
            Err(e) => {
                let _ = lost
                    .send(format!("renewing lease {}: {e}", short(&lease.id)))
                    .await;
                return;
            }
        }
    }
}

/// Lease ids name the path (`database/creds/app/AbC...`); the random tail is not secret but is
/// long, so logs show the path part.
fn short(id: &str) -> &str {
    id.rsplit_once('/').map_or(id, |(path, _)| path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_environment_block_is_read_after_the_command_name() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (start, end) = super::environment_block(&stat).unwrap();
        assert!(end > start);
        let spaced = "1 (a b) c) S".to_string() + &" 0".repeat(46) + " 100 200 0";
        assert_eq!(super::environment_block(&spaced), Some((100, 200)));
        assert_eq!(super::environment_block("1 (x) S 2 3"), None);
    }
}
