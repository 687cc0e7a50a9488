//! Rotation without a restart (`rotor.dev/on-rotation: signal`). The reloader, which polls the
//! store for the whole cluster, writes the new versions on each affected pod
//! (`rotor.dev/versions`); the kubelet updates the downward-API file; rotor-init checks it
//! every second. When a path its files read has a newer version there, it reads that version
//! once, renders the files again (as one set) and sends the app its signal. The env is not
//! changed: a running process's environment cannot be.
//!
//! The `>>` answers only files render (a PKI certificate and key, database credentials) are
//! issued again in place: at [`RENEW_AT`] of their time left (± [`JITTER`]), the files that render
//! them rewritten as a set, the app signalled once, the old lease revoked after
//! `ROTOR_RENEW_GRACE`. A credential that cannot be issued again is tried every [`RETRY_AFTER`];
//! the app keeps the old one meanwhile.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rotor_core::contract::files::parse_versions;
use rotor_core::resolve::{FileSet, FileWrite};
use rotor_core::store::{Auth, Lease, StoreClient, StoreError};

use crate::files::{FileError, write_all};

/// How often the versions file is checked (a local read of a few bytes).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// After a failed re-read, the next attempt waits this long (the store is not hammered).
const RETRY_AFTER: Duration = Duration::from_secs(15);
/// The versions file is written by rotor; anything larger is not its.
const MAX_VERSIONS_BYTES: u64 = 256 * 1024;
/// A file credential is issued again when this fraction of its time left has passed.
pub const RENEW_AT: f64 = 2.0 / 3.0;
/// ± this fraction of that, at random, so many pods issued together do not renew together.
pub const JITTER: f64 = 0.1;
/// Renewals due within this of each other are done together (one rewrite, one signal).
const TOGETHER: Duration = Duration::from_secs(1);

pub struct Rotation {
    pub files: FileSet,
    pub client: StoreClient,
    pub auth: Auth,
    pub dir: PathBuf,
    pub mode: u32,
    pub signal: Signal,
    pub versions_file: PathBuf,
    /// The versions text last acted on (or found with nothing to do).
    seen: String,
    /// After a failed announcement: not tried again before this, while the text is the same.
    retry_at: Option<(Instant, String)>,
    /// When each re-issuable file credential is due.
    renewals: Vec<(FileWrite, Instant)>,
    renew_grace: Duration,
}

/// When a credential with `left` to live is issued again: [`RENEW_AT`] of it, moved by
/// `unit` (in -1..=1) times [`JITTER`] of that, never sooner than [`RETRY_AFTER`] (a store
/// that answers credentials already expired, or nearly, gets one issue per retry interval,
/// not one a second with a signal each).
pub fn renew_in(left: Duration, unit: f64) -> Duration {
    let unit = unit.clamp(-1.0, 1.0);
    left.mul_f64(RENEW_AT * (1.0 + JITTER * unit))
        .max(RETRY_AFTER)
}

/// A number in -1..=1 from the process's random hash keys (no dependency for it).
fn jitter_unit() -> f64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() % 2001) as f64 / 1000.0 - 1.0
}

impl Rotation {
    /// Watches `files` (rendered into `init.files_dir` with `init.files_mode`) for rotations
    /// announced in `init.pod_info_dir`, and schedules their credentials' renewals.
    pub fn new(
        files: FileSet,
        client: StoreClient,
        auth: Auth,
        signal: Signal,
        init: &rotor_core::contract::InitSettings,
    ) -> Self {
        let versions_file = std::path::Path::new(&init.pod_info_dir)
            .join(rotor_core::contract::files::VERSIONS_FILE);
        let now = Instant::now();
        let renewals = files
            .renewable_writes(SystemTime::now())
            .into_iter()
            .map(|(write, left)| (write, now + renew_in(left, jitter_unit())))
            .collect();
        Self {
            files,
            client,
            auth,
            dir: init.files_dir.clone().into(),
            mode: init.files_mode,
            signal,
            versions_file,
            seen: String::new(),
            retry_at: None,
            renewals,
            renew_grace: init.renew_grace,
        }
    }

    /// Checks for new versions, and issues file credentials again when due, until the app
    /// ends (never returns).
    pub async fn run(mut self, app: Pid) {
        let renewed: Vec<String> = self.renewals.iter().map(|(w, _)| w.to_string()).collect();
        tracing::info!(paths = ?self.files.watched_paths(), renewed_in_place = ?renewed, signal = %self.signal, versions = %self.versions_file.display(), "watching for rotations of the files' secrets");
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self.renewals.iter().map(|(_, due)| *due).min();
            let renewal_due = async {
                match next {
                    Some(due) => tokio::time::sleep_until(due.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {
                    if !self.files.watched_paths().is_empty() {
                        self.check(app).await;
                    }
                }
                () = renewal_due => self.renew(app).await,
            }
        }
    }

    /// Issues every credential due (within [`TOGETHER`]) again, rewrites the files that render
    /// them as one set and signals the app once; the old leases are revoked after the grace.
    async fn renew(&mut self, app: Pid) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.renewals)
            .into_iter()
            .partition(|(_, at)| *at <= now + TOGETHER);
        self.renewals = later;
        let mut issued = Vec::new();
        for (write, _) in due {
            match self.reissue(&write).await {
                Ok((old, left)) => issued.push((write, old, left)),
                Err(e) => {
                    tracing::warn!(credential = %write, error = %e, retry_in_s = RETRY_AFTER.as_secs(), "renewal in place: could not issue the credential again; the app keeps the current one");
                    self.renewals.push((write, Instant::now() + RETRY_AFTER));
                }
            }
        }
        if issued.is_empty() {
            return;
        }
        let names: Vec<String> = issued
            .iter()
            .flat_map(|(w, _, _)| self.files.files_rendering(w))
            .map(str::to_string)
            .collect();
        if let Err(e) = self.rewrite(&names) {
            // The new answers are held; the next attempt issues again (a fresh credential).
            // The files and the app still use the old credentials: nothing is revoked (each
            // old lease ends with its TTL, or is revoked after the set that replaces it is in
            // place).
            tracing::warn!(error = %e, retry_in_s = RETRY_AFTER.as_secs(), "renewal in place: could not rewrite the files; they keep the previous credential, which is not revoked");
            for (write, _old, _) in issued {
                self.renewals.push((write, Instant::now() + RETRY_AFTER));
            }
            return;
        }
        let signalled = kill(app, self.signal);
        let credentials: Vec<String> = issued.iter().map(|(w, _, _)| w.to_string()).collect();
        tracing::info!(credentials = ?credentials, files = ?names, signal = %self.signal, delivered = signalled.is_ok(), "renewal in place: issued again, rewrote the files as a set, signalled the app");
        let now = Instant::now();
        for (write, old, left) in issued {
            self.revoke_later(old);
            if let Some(left) = left {
                let next = renew_in(left, jitter_unit());
                tracing::debug!(credential = %write, next_in_s = next.as_secs(), "renewal scheduled");
                self.renewals.push((write, now + next));
            }
        }
    }

    /// One credential issued again; a refused token logs in again once.
    async fn reissue(
        &mut self,
        write: &FileWrite,
    ) -> Result<(Option<Lease>, Option<Duration>), StoreError> {
        let mut issued = self
            .files
            .reissue(&self.client, write, SystemTime::now())
            .await;
        if issued.as_ref().is_err_and(StoreError::is_permission_denied) {
            self.client.login(&self.auth).await?;
            issued = self
                .files
                .reissue(&self.client, write, SystemTime::now())
                .await;
        }
        issued
    }

    /// Renders every file and writes those named, as one set.
    fn rewrite(&self, names: &[String]) -> Result<(), FileError> {
        let rendered = self.files.render().map_err(|e| FileError(e.to_string()))?;
        let set: Vec<_> = rendered
            .into_iter()
            .filter(|f| names.contains(&f.name))
            .collect();
        write_all(&self.dir, self.mode, &set)
    }

    /// Revokes `old` once the grace has passed (the app's time to move to the new credential).
    fn revoke_later(&self, old: Option<Lease>) {
        let Some(lease) = old else {
            return;
        };
        let client = self.client.clone();
        let grace = self.renew_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            // The lease id names the path and a random tail; the path is enough for the logs.
            let of = lease
                .id
                .rsplit_once('/')
                .map_or("", |(path, _)| path)
                .to_string();
            let revoked =
                tokio::time::timeout(Duration::from_secs(10), client.revoke_lease(&lease.id)).await;
            match revoked {
                Ok(Ok(())) => {
                    tracing::info!(lease_of = %of, "renewal in place: the old lease revoked after the grace")
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease_of = %of, error = %e, "renewal in place: could not revoke the old lease; it ends with its TTL")
                }
                Err(_) => {
                    tracing::warn!(lease_of = %of, "renewal in place: revoking the old lease timed out; it ends with its TTL")
                }
            }
        });
    }

    async fn check(&mut self, app: Pid) {
        let Some(text) = self.read_versions() else {
            return;
        };
        // The retry interval holds back only the announcement that failed: a new one (another
        // rotation, or the bad one corrected) is tried at once.
        let retrying = self
            .retry_at
            .as_ref()
            .is_some_and(|(at, failed)| Instant::now() < *at && *failed == text);
        if text == self.seen || retrying {
            return;
        }
        let announced = match parse_versions(&text) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "the versions annotation does not parse; ignored until it changes");
                self.seen = text;
                return;
            }
        };
        let due = self.due(&announced);
        if due.is_empty() {
            tracing::debug!(
                "the versions changed, but none of the files' secrets is newer than held"
            );
        } else {
            match self.apply(&due).await {
                Ok(files) => {
                    let signalled = kill(app, self.signal);
                    tracing::info!(
                        rotated = ?due,
                        files = ?files,
                        signal = %self.signal,
                        delivered = signalled.is_ok(),
                        "rotation: read the new versions once, rewrote the files, signalled the app"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_s = RETRY_AFTER.as_secs(), "rotation: could not re-read or rewrite; the files keep the previous values");
                    self.retry_at = Some((Instant::now() + RETRY_AFTER, text));
                    return;
                }
            }
        }
        self.retry_at = None;
        self.seen = text;
    }

    /// The paths the files read whose announced version is newer than the one held.
    fn due(&self, announced: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        let held = self.files.versions();
        self.files
            .watched_paths()
            .into_iter()
            .filter_map(|p| {
                let new = *announced.get(&p)?;
                (new > held.get(&p).copied().unwrap_or(0)).then_some((p, new))
            })
            .collect()
    }

    /// Reads each due path at its version (one request each; a refused token logs in again
    /// once), then renders and writes every file that reads one.
    async fn apply(&mut self, due: &BTreeMap<String, u64>) -> Result<Vec<String>, FileError> {
        for (path, version) in due {
            let mut read = self.files.refresh(&self.client, path, *version).await;
            if read.as_ref().is_err_and(|e| e.is_permission_denied()) {
                self.client
                    .login(&self.auth)
                    .await
                    .map_err(|e| FileError(format!("logging in again: {e}")))?;
                read = self.files.refresh(&self.client, path, *version).await;
            }
            read.map_err(|e| FileError(format!("reading {path} at version {version}: {e}")))?;
        }
        let rendered = self.files.render().map_err(|e| FileError(e.to_string()))?;
        let touched: Vec<String> = due
            .keys()
            .flat_map(|p| self.files.files_reading(p))
            .map(str::to_string)
            .collect();
        let rewrite: Vec<_> = rendered
            .into_iter()
            .filter(|f| touched.contains(&f.name))
            .collect();
        write_all(&self.dir, self.mode, &rewrite)?;
        Ok(rewrite.into_iter().map(|f| f.name).collect())
    }

    fn read_versions(&self) -> Option<String> {
        use std::io::Read as _;
        let file = std::fs::File::open(&self.versions_file).ok()?;
        let mut text = String::new();
        file.take(MAX_VERSIONS_BYTES)
            .read_to_string(&mut text)
            .ok()?;
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_issued_again_at_two_thirds_of_its_life_with_a_tenth_of_jitter() {
        let hour = Duration::from_secs(3600);
        assert_eq!(renew_in(hour, 0.0), Duration::from_secs(2400));
        assert_eq!(renew_in(hour, 1.0), Duration::from_secs(2640));
        assert_eq!(renew_in(hour, -1.0), Duration::from_secs(2160));
        assert_eq!(renew_in(hour, 7.0), renew_in(hour, 1.0), "clamped");
        assert_eq!(
            renew_in(Duration::ZERO, 0.0),
            RETRY_AFTER,
            "an expired credential: never sooner than the retry interval"
        );
        assert_eq!(renew_in(Duration::from_secs(3), 1.0), RETRY_AFTER);
        for _ in 0..100 {
            let u = jitter_unit();
            assert!((-1.0..=1.0).contains(&u), "{u}");
        }
    }
}
