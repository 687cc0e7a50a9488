//! Secrets as files, and what a workload does when a secret rotates: the pod annotations that ask
//! for them, the checks all three programs share, and the pod annotation through which the
//! reloader tells running pods that a secret has a new version.
//!
//! ```text
//! rotor.dev/file.db.conf: "host=pg password=${vault:secret/data/db#password}"
//! rotor.dev/file.tls.crt: ">>vault:pki/issue/web#certificate"   (one lease for the pod)
//! rotor.dev/files-dir: /etc/app/secrets       (default /rotor/files)
//! rotor.dev/files-mode: "0440"                (default 0400)
//! rotor.dev/files-containers: app             (default: every container)
//! rotor.dev/on-rotation: signal:SIGHUP        (default rollout)
//! ```

use std::collections::BTreeMap;
use std::fmt;

use super::annotations::{Key, PREFIX, get};
use super::choices::name_list;
use super::setting_error::SettingError;
use super::{BIN_DIR, TOKEN_DIR};

pub const FILES_DIR: Key = Key {
    rotor: "files-dir",
    bank_vaults: &[],
};
pub const FILES_MODE: Key = Key {
    rotor: "files-mode",
    bank_vaults: &[],
};
pub const FILES_CONTAINERS: Key = Key {
    rotor: "files-containers",
    bank_vaults: &[],
};
pub const ON_ROTATION: Key = Key {
    rotor: "on-rotation",
    bank_vaults: &[],
};
/// `rotor.dev/file.NAME`: one file per annotation.
pub const FILE_ANNOTATION_PREFIX: &str = "rotor.dev/file.";
/// Written by the reloader on each pod of a `signal` workload: the current version of each
/// path, as JSON (`{"secret/data/db":4}`). rotor-init reads it through the downward API.
pub const VERSIONS_ANNOTATION: &str = "rotor.dev/versions";

pub const DEFAULT_FILES_DIR: &str = "/rotor/files";
pub const DEFAULT_FILE_MODE: u32 = 0o400;
/// The bits a file's mode may have: read and write for its owner, read for its group. Never
/// for other users, never execute.
pub const ALLOWED_MODE_BITS: u32 = 0o640;
pub const MAX_FILES: usize = 32;
pub const MAX_FILE_NAME: usize = 128;

/// The memory volume of the files of the `n`th container that gets them (one per container, so
/// no container sees another's files).
pub fn files_volume(n: usize) -> String {
    format!("{FILES_VOLUME_PREFIX}{n}")
}
/// The start of every files volume's name: reserved, whatever number follows.
pub const FILES_VOLUME_PREFIX: &str = "rotor-files-";
/// The downward-API volume: the file templates (`files/NAME`) and the versions annotation
/// (`versions`), as the API server has them now.
pub const POD_INFO_VOLUME: &str = "rotor-pod-info";
pub const POD_INFO_DIR: &str = "/rotor/pod";
pub const TEMPLATES_SUBDIR: &str = "files";
pub const VERSIONS_FILE: &str = "versions";

/// The files a pod asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesRequest {
    /// `(name, template)` in name order; the template is the annotation's value.
    pub files: Vec<(String, String)>,
    pub dir: String,
    pub mode: u32,
    /// The containers that get them; `None`: every container.
    pub containers: Option<Vec<String>>,
}

/// The annotation of file `name`.
pub fn file_annotation(name: &str) -> String {
    format!("{FILE_ANNOTATION_PREFIX}{name}")
}

/// Reads the files a pod asks for; `None` when it asks for none. Errors name the annotation and
/// the fix.
pub fn files_request(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<FilesRequest>, SettingError> {
    let files: Vec<(String, String)> = annotations
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(FILE_ANNOTATION_PREFIX)?, v)))
        .map(|(name, v)| check_file_name(name).map(|()| (name.to_string(), v.clone())))
        .collect::<Result<_, _>>()?;
    let dir = get(annotations, &FILES_DIR);
    let mode = get(annotations, &FILES_MODE);
    let containers = get(annotations, &FILES_CONTAINERS);
    if files.is_empty() {
        if let Some((_, name)) = dir.or(mode).or(containers) {
            let message = format!(
                "annotation {name} is set but the pod asks for no file; add {FILE_ANNOTATION_PREFIX}NAME \
                 annotations (one per file) or remove it"
            );
            return Err(SettingError::new(name, message));
        }
        return Ok(None);
    }
    if files.len() > MAX_FILES {
        return Err(SettingError::new(
            FILE_ANNOTATION_PREFIX,
            format!(
                "the pod asks for {} files ({FILE_ANNOTATION_PREFIX}*), more than {MAX_FILES}; render several \
                 values into one file with a template",
                files.len()
            ),
        ));
    }
    let dir = match dir {
        Some((d, name)) => check_dir(&name, d)?,
        None => DEFAULT_FILES_DIR.to_string(),
    };
    let mode = match mode {
        Some((m, name)) => parse_mode(&name, m)?,
        None => DEFAULT_FILE_MODE,
    };
    let containers = containers.map(|(list, _)| name_list(list));
    Ok(Some(FilesRequest {
        files,
        dir,
        mode,
        containers,
    }))
}

/// A file name: letters, digits, `.`, `_`, `-`, not starting with `.` (no hidden files, no
/// `..`, nothing that could clash with rotor's temporary files).
pub fn check_file_name(name: &str) -> Result<(), SettingError> {
    let fine = !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fine {
        Ok(())
    } else {
        let annotation = file_annotation(name);
        let message = format!(
            "annotation {annotation}: the file name {name:?} is not allowed; use 1 to {MAX_FILE_NAME} letters, digits, \
             '.', '_' or '-', not starting with '.' (for example {FILE_ANNOTATION_PREFIX}db.conf)"
        );
        Err(SettingError::new(annotation, message))
    }
}

/// An absolute, normal directory outside rotor's own mounts.
fn check_dir(annotation: &str, dir: &str) -> Result<String, SettingError> {
    let dir = dir.trim();
    let trimmed = dir.trim_end_matches('/');
    let normal = trimmed.starts_with('/')
        && trimmed.len() > 1
        && trimmed
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && !trimmed.contains(['\0', ':']);
    if !normal {
        return Err(SettingError::new(
            annotation,
            format!(
                "annotation {annotation}={dir:?}: expected an absolute directory without '.', '..' or ':' \
                 components, for example {DEFAULT_FILES_DIR}"
            ),
        ));
    }
    let overlaps = |theirs: &str| {
        trimmed == theirs
            || trimmed.starts_with(&format!("{theirs}/"))
            || theirs.starts_with(&format!("{trimmed}/"))
    };
    if let Some(theirs) = [BIN_DIR, TOKEN_DIR, POD_INFO_DIR]
        .into_iter()
        .find(|t| overlaps(t))
    {
        return Err(SettingError::new(
            annotation,
            format!(
                "annotation {annotation}={dir:?} overlaps rotor's own mount {theirs}; choose another directory, \
                 for example {DEFAULT_FILES_DIR}"
            ),
        ));
    }
    Ok(trimmed.to_string())
}

/// An octal mode within [`ALLOWED_MODE_BITS`].
pub fn parse_mode(source: &str, text: &str) -> Result<u32, SettingError> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    let mode = u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777);
    match mode {
        Some(m) if m & !ALLOWED_MODE_BITS == 0 && m & 0o400 != 0 => Ok(m),
        Some(m) => Err(SettingError::new(
            source,
            format!(
                "{source}={text:?}: mode {m:04o} would let another user read the secret, or its owner not read \
                 it; use 0400 (the default), 0440, 0600 or 0640"
            ),
        )),
        None => Err(SettingError::new(
            source,
            format!("{source}={text:?}: expected an octal file mode such as 0400"),
        )),
    }
}

/// What a workload does when one of its secrets gets a new version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnRotation {
    /// The reloader rolls the workload (new pods read the new values).
    #[default]
    Rollout,
    /// The reloader tells each running pod; rotor-init re-reads the secret, re-renders the files
    /// and sends the app this signal. Env values cannot change in a running process.
    Signal(RotationSignal),
}

/// The signals an app may ask for on rotation: the ones apps use to reload configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationSignal {
    Hup,
    Usr1,
    Usr2,
    Winch,
}

impl RotationSignal {
    pub const ALL: [Self; 4] = [Self::Hup, Self::Usr1, Self::Usr2, Self::Winch];

    pub fn name(self) -> &'static str {
        match self {
            Self::Hup => "SIGHUP",
            Self::Usr1 => "SIGUSR1",
            Self::Usr2 => "SIGUSR2",
            Self::Winch => "SIGWINCH",
        }
    }
}

impl fmt::Display for OnRotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rollout => f.write_str("rollout"),
            Self::Signal(s) => write!(f, "signal:{}", s.name()),
        }
    }
}

const ON_ROTATION_EXPECTED: &str =
    "rollout, signal (SIGHUP) or signal:SIGHUP|SIGUSR1|SIGUSR2|SIGWINCH";

impl std::str::FromStr for OnRotation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let (mode, signal) = match lower.split_once(':') {
            Some((m, s)) => (m, Some(s.trim())),
            None => (lower.as_str(), None),
        };
        match (mode.trim(), signal) {
            ("rollout", None) => Ok(Self::Rollout),
            ("signal", None) => Ok(Self::Signal(RotationSignal::Hup)),
            ("signal", Some(s)) => {
                let s = s.strip_prefix("sig").unwrap_or(s);
                RotationSignal::ALL
                    .into_iter()
                    .find(|k| k.name()[3..].eq_ignore_ascii_case(s))
                    .map(Self::Signal)
                    .ok_or_else(|| format!("{text:?}: expected {ON_ROTATION_EXPECTED}"))
            }
            _ => Err(format!("{text:?}: expected {ON_ROTATION_EXPECTED}")),
        }
    }
}

/// The workload's `rotor.dev/on-rotation`, rollout when absent.
pub fn on_rotation(annotations: &BTreeMap<String, String>) -> Result<OnRotation, SettingError> {
    match get(annotations, &ON_ROTATION) {
        None => Ok(OnRotation::Rollout),
        Some((v, name)) => v
            .parse()
            .map_err(|e| SettingError::new(&name, format!("annotation {name}={e}"))),
    }
}

/// The versions annotation's value: `{"path":version,...}`.
pub fn format_versions(versions: &BTreeMap<String, u64>) -> String {
    serde_json::to_string(versions).unwrap_or_else(|_| "{}".to_string())
}

/// Reads the versions annotation; empty (not yet written) is no versions.
pub fn parse_versions(text: &str) -> Result<BTreeMap<String, u64>, String> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(text).map_err(|e| {
        format!("annotation {VERSIONS_ANNOTATION}: expected {{\"PATH\":VERSION,...}}: {e}")
    })
}

/// Whether `key` is one of the annotations on this page (for the documentation table).
pub fn is_files_annotation(key: &str) -> bool {
    key.strip_prefix(PREFIX).is_some_and(|k| {
        k.starts_with("file.")
            || [&FILES_DIR, &FILES_MODE, &FILES_CONTAINERS, &ON_ROTATION]
                .iter()
                .any(|a| a.rotor == k)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn files_with_their_defaults_and_settings() {
        assert_eq!(files_request(&a(&[("rotor.dev/inject", "true")])), Ok(None));
        let r = files_request(&a(&[
            ("rotor.dev/file.db.conf", "pw=${vault:secret/data/db#pw}"),
            (
                "rotor.dev/file.tls.crt",
                ">>vault:pki/issue/web#certificate",
            ),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(r.dir, DEFAULT_FILES_DIR);
        assert_eq!(r.mode, 0o400);
        assert_eq!(r.containers, None);
        assert_eq!(r.files[0].0, "db.conf");
        let r = files_request(&a(&[
            ("rotor.dev/file.x", "vault:a/b#c"),
            ("rotor.dev/files-dir", "/etc/app/"),
            ("rotor.dev/files-mode", "0640"),
            ("rotor.dev/files-containers", "app, web"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((r.dir.as_str(), r.mode), ("/etc/app", 0o640));
        assert_eq!(
            r.containers,
            Some(vec!["app".to_string(), "web".to_string()])
        );
    }

    #[test]
    fn bad_files_name_the_annotation_and_the_fix() {
        for (pairs, needle) in [
            (
                vec![("rotor.dev/file.../x", "v")],
                "annotation rotor.dev/file.../x: the file name \"../x\" is not allowed",
            ),
            (
                vec![("rotor.dev/file..hidden", "v")],
                "not starting with '.'",
            ),
            (
                vec![("rotor.dev/files-dir", "/x")],
                "annotation rotor.dev/files-dir is set but the pod asks for no file",
            ),
            (
                vec![("rotor.dev/file.a", "v"), ("rotor.dev/files-dir", "rel")],
                "expected an absolute directory",
            ),
            (
                vec![
                    ("rotor.dev/file.a", "v"),
                    ("rotor.dev/files-dir", "/a/../b"),
                ],
                "expected an absolute directory",
            ),
            (
                vec![("rotor.dev/file.a", "v"), ("rotor.dev/files-dir", "/rotor")],
                "overlaps rotor's own mount /rotor/bin",
            ),
            (
                vec![("rotor.dev/file.a", "v"), ("rotor.dev/files-mode", "0644")],
                "mode 0644 would let another user read the secret",
            ),
            (
                vec![("rotor.dev/file.a", "v"), ("rotor.dev/files-mode", "0200")],
                "or its owner not read it",
            ),
            (
                vec![("rotor.dev/file.a", "v"), ("rotor.dev/files-mode", "rw")],
                "expected an octal file mode",
            ),
        ] {
            let err = files_request(&a(&pairs)).unwrap_err();
            assert!(err.message.contains(needle), "{pairs:?}: {err}");
            assert!(
                pairs.iter().any(|(k, _)| *k == err.setting),
                "{pairs:?}: the error names {:?}",
                err.setting
            );
        }
        let many: Vec<(String, String)> = (0..=MAX_FILES)
            .map(|i| (format!("rotor.dev/file.f{i}"), "v".to_string()))
            .collect();
        let err = files_request(&many.into_iter().collect()).unwrap_err();
        assert!(err.message.contains("more than 32"), "{err}");
        assert_eq!(err.setting, FILE_ANNOTATION_PREFIX);
    }

    #[test]
    fn on_rotation_reads_a_mode_and_a_signal() {
        assert_eq!(on_rotation(&a(&[])), Ok(OnRotation::Rollout));
        for (text, want) in [
            ("rollout", OnRotation::Rollout),
            ("signal", OnRotation::Signal(RotationSignal::Hup)),
            ("Signal:SIGUSR1", OnRotation::Signal(RotationSignal::Usr1)),
            ("signal:usr2", OnRotation::Signal(RotationSignal::Usr2)),
        ] {
            assert_eq!(text.parse::<OnRotation>(), Ok(want), "{text}");
            assert_eq!(want.to_string().parse::<OnRotation>(), Ok(want));
        }
        let err = on_rotation(&a(&[("rotor.dev/on-rotation", "signal:KILL")])).unwrap_err();
        assert_eq!(err.setting, "rotor.dev/on-rotation");
        assert!(
            err.message
                .starts_with("annotation rotor.dev/on-rotation=\"signal:KILL\": expected rollout"),
            "{err}"
        );
    }

    #[test]
    fn versions_round_trip_and_empty_is_none() {
        let v = BTreeMap::from([("secret/data/db".to_string(), 4u64)]);
        assert_eq!(parse_versions(&format_versions(&v)), Ok(v));
        assert_eq!(parse_versions("\n"), Ok(BTreeMap::new()));
        assert!(
            parse_versions("db=4")
                .unwrap_err()
                .contains("rotor.dev/versions")
        );
    }
}
