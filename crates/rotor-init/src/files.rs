//! Secrets as files: the templates read from the downward-API volume, and each rendered file
//! written atomically (a temporary file in the same directory, created with its final mode by
//! this process, so as the app's uid, then renamed over the old one). A reader sees the old
//! file or the new one, never half of one.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rotor_core::contract::files::TEMPLATES_SUBDIR;
use rotor_core::reference::MAX_VALUE_BYTES;
use rotor_core::resolve::RenderedFile;

/// Why a file could not be prepared; names the file and the fix. Never holds a value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FileError(pub String);

/// Reads the template of each file in `names` from `pod_info_dir/files/NAME`.
pub fn read_templates(
    pod_info_dir: &str,
    names: &[String],
) -> Result<Vec<(String, String)>, FileError> {
    names
        .iter()
        .map(|name| {
            let path = Path::new(pod_info_dir).join(TEMPLATES_SUBDIR).join(name);
            read_bounded(&path).map(|t| (name.clone(), t))
        })
        .collect()
}

fn read_bounded(path: &Path) -> Result<String, FileError> {
    let fail = |e: &dyn std::fmt::Display| {
        FileError(format!(
            "cannot read the template {}: {e}; the webhook mounts it from the pod's rotor.dev/file.* annotation",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let mut text = String::new();
    let limit = MAX_VALUE_BYTES as u64;
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(&e))?;
    if text.len() as u64 > limit {
        return Err(fail(&format!("over the limit of {limit} bytes")));
    }
    Ok(text)
}

/// Writes every file into `dir` with `mode` as a set: each new content is written to a
/// temporary file first, and only when all of them are written are they renamed over the old
/// ones, so a failure leaves every file as it was (a certificate never beside the wrong key),
/// and a reader sees each file old or new, never half of one.
pub fn write_all(dir: &Path, mode: u32, files: &[RenderedFile]) -> Result<(), FileError> {
    let mut staged = Vec::with_capacity(files.len());
    for file in files {
        match stage(dir, &file.name, file.content.as_bytes(), mode) {
            Ok(s) => staged.push(s),
            Err(e) => {
                for s in staged {
                    let _ = std::fs::remove_file(&s.temp);
                }
                return Err(e);
            }
        }
    }
    let mut staged = staged.into_iter();
    while let Some(s) = staged.next() {
        if let Err(e) = std::fs::rename(&s.temp, &s.target) {
            for rest in std::iter::once(&s).chain(staged.as_slice()) {
                let _ = std::fs::remove_file(&rest.temp);
            }
            return Err(failure("write", &s.target, e));
        }
    }
    Ok(())
}

/// A new content written beside its target, waiting to be renamed over it.
struct Staged {
    temp: PathBuf,
    target: PathBuf,
}

fn failure(what: &str, target: &Path, e: std::io::Error) -> FileError {
    FileError(format!(
        "cannot {what} {}: {e}; the directory must be writable by the app's user (rotor mounts a memory volume there)",
        target.display()
    ))
}

/// A new temporary file beside `dir/name` (exclusive create, `mode` from the start, never
/// wider) holding `content`, synced.
fn stage(dir: &Path, name: &str, content: &[u8], mode: u32) -> Result<Staged, FileError> {
    let target = dir.join(name);
    let temp: PathBuf = dir.join(format!(".{name}.rotor-{}", std::process::id()));
    // A temporary file left by a crash of this same process id is stale.
    let _ = std::fs::remove_file(&temp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(|e| failure("create a temporary file for", &target, e))?;
    let written = out.write_all(content).and_then(|()| out.sync_all());
    drop(out);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(failure("write", &target, e));
    }
    Ok(Staged { temp, target })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn files_are_replaced_whole_with_their_mode_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let file = |content: &str| RenderedFile {
            name: "db.conf".to_string(),
            content: content.to_string(),
        };
        write_all(dir.path(), 0o400, &[file("one")]).unwrap();
        write_all(dir.path(), 0o400, &[file("two")]).unwrap();
        let path = dir.path().join("db.conf");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o400);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["db.conf"]);
        let err = write_all(
            Path::new("/nonexistent/rotor"),
            0o400,
            &[file("CANARY-a1b2")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/nonexistent/rotor/db.conf") && !err.contains("CANARY"),
            "{err}"
        );
    }

    #[test]
    fn a_set_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, content: &str| RenderedFile {
            name: name.to_string(),
            content: content.to_string(),
        };
        write_all(
            dir.path(),
            0o600,
            &[file("tls.crt", "cert-1"), file("tls.key", "key-1")],
        )
        .unwrap();
        // The second file cannot be staged (its name is a directory's): neither changes.
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let err = write_all(
            dir.path(),
            0o600,
            &[file("tls.crt", "cert-2"), file("sub/x/tls.key", "key-2")],
        );
        assert!(err.is_err());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("tls.crt")).unwrap(),
            "cert-1"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("tls.key")).unwrap(),
            "key-1"
        );
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["sub", "tls.crt", "tls.key"], "no temporary left");
        write_all(
            dir.path(),
            0o600,
            &[file("tls.crt", "cert-2"), file("tls.key", "key-2")],
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("tls.key")).unwrap(),
            "key-2"
        );
    }

    #[test]
    fn templates_are_read_bounded_and_named_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        std::fs::write(dir.path().join("files/a"), "vault:x/y#z").unwrap();
        std::fs::write(
            dir.path().join("files/big"),
            "x".repeat(MAX_VALUE_BYTES + 1),
        )
        .unwrap();
        let root = dir.path().to_str().unwrap();
        let got = read_templates(root, &["a".to_string()]).unwrap();
        assert_eq!(got, vec![("a".to_string(), "vault:x/y#z".to_string())]);
        let err = read_templates(root, &["big".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("over the limit of 131072 bytes"), "{err}");
        let err = read_templates(root, &["gone".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("files/gone") && err.contains("rotor.dev/file.*"),
            "{err}"
        );
    }
}
