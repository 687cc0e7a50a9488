//! The volumes of `rotor.dev/file.*`: one memory volume per container that gets the files (so
//! no other container sees them, and nothing reaches a disk), and one downward-API volume with
//! the templates and, in signal mode, the versions the reloader announces on the pod.

use k8s_openapi::api::core::v1::{Container, Volume};
use rotor_core::contract::files::{
    POD_INFO_DIR, POD_INFO_VOLUME, TEMPLATES_SUBDIR, VERSIONS_ANNOTATION, VERSIONS_FILE,
    file_annotation, files_volume,
};
use rotor_core::contract::{FilesRequest, OnRotation};
use serde_json::{Value, json};

use crate::deny::{Deny, DenyReason};

/// The memory volumes are small: 32 files of at most 128 KiB each fit in 4 MiB.
const FILES_VOLUME_SIZE: &str = "8Mi";

/// The volumes that are not there yet.
pub fn new_file_volumes(
    volumes: Option<&[Volume]>,
    files: &FilesRequest,
    containers: usize,
    on_rotation: OnRotation,
) -> Vec<Value> {
    let has_volume = |name: &str| volumes.unwrap_or_default().iter().any(|v| v.name == name);
    let mut new_volumes: Vec<Value> = (0..containers)
        .map(files_volume)
        .filter(|name| !has_volume(name))
        .map(|name| {
            json!({
                "name": name,
                "emptyDir": { "medium": "Memory", "sizeLimit": FILES_VOLUME_SIZE },
            })
        })
        .collect();
    if !has_volume(POD_INFO_VOLUME) {
        let mut items: Vec<Value> = files
            .files
            .iter()
            .map(|(name, _)| {
                json!({
                    "path": format!("{TEMPLATES_SUBDIR}/{name}"),
                    "fieldRef": { "fieldPath": format!("metadata.annotations['{}']", file_annotation(name)) },
                })
            })
            .collect();
        if let OnRotation::Signal(_) = on_rotation {
            items.push(json!({
                "path": VERSIONS_FILE,
                "fieldRef": { "fieldPath": format!("metadata.annotations['{VERSIONS_ANNOTATION}']") },
            }));
        }
        new_volumes.push(json!({ "name": POD_INFO_VOLUME, "downwardAPI": { "items": items } }));
    }
    new_volumes
}

/// The mounts of the `n`th container that gets the files; refused when the container already
/// mounts something at the files directory or at rotor's.
pub fn file_mounts(
    container: &Container,
    list: &str,
    index: usize,
    files: &FilesRequest,
    n: usize,
) -> Result<Vec<Value>, Deny> {
    for mount in container.volume_mounts.iter().flatten() {
        let path = mount.mount_path.trim_end_matches('/');
        if path == files.dir || path == POD_INFO_DIR {
            return Err(Deny::new(
                DenyReason::ReservedName,
                format!(
                    "container {:?} already mounts {} at {path} (spec.{list}[{index}].volumeMounts); \
                 choose another directory for the files with rotor.dev/files-dir",
                    container.name, mount.name
                ),
            ));
        }
    }
    Ok(vec![
        json!({ "name": files_volume(n), "mountPath": files.dir }),
        json!({ "name": POD_INFO_VOLUME, "mountPath": POD_INFO_DIR, "readOnly": true }),
    ])
}
