//! Rotation without a restart (`rotor.dev/on-rotation: signal`). The reloader, which polls the
//! store once per distinct path for the whole cluster, writes the new versions on each affected
//! pod (`rotor.dev/versions`); the kubelet updates the downward-API file; rotor-init checks it
//! every second. When a path its files read has a newer version there, it reads that version
//! once, renders the files again (each atomically) and sends the app its signal. The env is not
//! changed: a running process's environment cannot be.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rotor_core::contract::files::parse_versions;
use rotor_core::resolve::FileSet;
use rotor_core::store::{Auth, StoreClient};

use crate::files::{FileError, write_all};

/// How often the versions file is checked (a local read of a few bytes).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// After a failed re-read, the next attempt waits this long (the store is not hammered).
const RETRY_AFTER: Duration = Duration::from_secs(15);
/// The versions file is written by rotor; anything larger is not its.
const MAX_VERSIONS_BYTES: u64 = 256 * 1024;

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
    retry_at: Option<Instant>,
}

impl Rotation {
    pub fn new(
        files: FileSet,
        client: StoreClient,
        auth: Auth,
        dir: PathBuf,
        mode: u32,
        signal: Signal,
        versions_file: PathBuf,
    ) -> Self {
        Self {
            files,
            client,
            auth,
            dir,
            mode,
            signal,
            versions_file,
            seen: String::new(),
            retry_at: None,
        }
    }

    /// Checks for new versions until the app ends (never returns).
    pub async fn run(mut self, app: Pid) {
        tracing::info!(paths = ?self.files.watched_paths(), signal = %self.signal, versions = %self.versions_file.display(), "watching for rotations of the files' secrets");
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.check(app).await;
        }
    }

    async fn check(&mut self, app: Pid) {
        let Some(text) = self.read_versions() else {
            return;
        };
        if text == self.seen || self.retry_at.is_some_and(|at| Instant::now() < at) {
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
                    self.retry_at = Some(Instant::now() + RETRY_AFTER);
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
