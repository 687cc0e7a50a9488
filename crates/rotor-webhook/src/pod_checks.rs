//! What would make an injected pod fail later, refused at admission with the field and the fix:
//! a Windows pod, a user's object using one of rotor's reserved names or mount paths, and
//! `$(VAR)` of a referenced variable in command or args (the kubelet would expand it to the
//! literal reference, silently).

use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};
use rotor_core::contract::files::{FILES_VOLUME_PREFIX, POD_INFO_VOLUME};
use rotor_core::contract::{BIN_DIR, BIN_VOLUME, COPY_CONTAINER, TOKEN_DIR, TOKEN_VOLUME};
use rotor_core::reference::has_reference;

use crate::deny::{Deny, DenyReason};

/// Pod-wide checks, before anything is planned. `init_image` is the rotor-init image the webhook
/// injects (a `rotor-bin` image volume of another image is not rotor's).
pub fn check_pod(spec: &PodSpec, init_image: &str) -> Result<(), Deny> {
    if spec.os.as_ref().is_some_and(|os| os.name == "windows") {
        return Err(Deny::new(
            DenyReason::UnsupportedOs,
            "spec.os.name is windows: rotor-init is a Linux binary; run this workload without references (rotor.dev/inject: \"false\")"
                .to_string(),
        ));
    }
    for v in spec.volumes.iter().flatten() {
        let ours = match v.name.as_str() {
            BIN_VOLUME => {
                in_memory(v)
                    || v.image
                        .as_ref()
                        .is_some_and(|i| i.reference.as_deref() == Some(init_image))
            }
            TOKEN_VOLUME => v.projected.as_ref().is_some_and(|p| {
                p.sources
                    .iter()
                    .flatten()
                    .any(|s| s.service_account_token.is_some())
            }),
            POD_INFO_VOLUME => v.downward_api.is_some(),
            // rotor-files-N: the rendered secrets land there, so a user's hostPath or PVC of that
            // name would receive them.
            name if name.starts_with(FILES_VOLUME_PREFIX) => in_memory(v),
            _ => true,
        };
        if !ours {
            return Err(reserved("spec.volumes", &v.name));
        }
    }
    for c in spec.init_containers.iter().flatten() {
        let copy_command = ["/rotor-init", "copy", BIN_DIR].map(str::to_string);
        if c.name == COPY_CONTAINER && c.command.as_deref() != Some(&copy_command[..]) {
            return Err(reserved("spec.initContainers", &c.name));
        }
    }
    Ok(())
}

fn in_memory(v: &Volume) -> bool {
    v.empty_dir
        .as_ref()
        .is_some_and(|e| e.medium.as_deref() == Some("Memory"))
}

fn reserved(field: &str, name: &str) -> Deny {
    Deny::new(
        DenyReason::ReservedName,
        format!("{field} has {name:?}, a name rotor reserves for what it injects; rename yours"),
    )
}

/// Checks of a container rotor is about to wrap.
pub fn check_container(c: &Container, list: &str, index: usize) -> Result<(), Deny> {
    for m in c.volume_mounts.iter().flatten() {
        let path = m.mount_path.trim_end_matches('/');
        if path == BIN_DIR || path == TOKEN_DIR {
            return Err(Deny::new(
                DenyReason::ReservedName,
                format!(
                    "spec.{list}[{index}] ({:?}) mounts {:?} at {path}, where rotor mounts its own volume; mount it elsewhere",
                    c.name, m.name
                ),
            ));
        }
    }
    let referenced: Vec<&str> = c
        .env
        .iter()
        .flatten()
        .filter(|e| e.value.as_deref().is_some_and(has_reference))
        .map(|e| e.name.as_str())
        .collect();
    if referenced.is_empty() {
        return Ok(());
    }
    let words = c.command.iter().flatten().chain(c.args.iter().flatten());
    for word in words {
        if let Some(name) = expanded_names(word).find(|n| referenced.contains(n)) {
            return Err(Deny::new(
                DenyReason::ExpandedReference,
                format!(
                    "spec.{list}[{index}] ({:?}) uses $({name}) in command or args: the kubelet expands it before rotor-init runs, \
                 to the literal reference, not the secret; read {name} from the environment in the app (or run it through a shell: \
                 sh -c 'exec app \"${name}\"')",
                    c.name
                ),
            ));
        }
    }
    Ok(())
}

/// The names in `$(NAME)` the kubelet would expand in `word` (`$$(NAME)` is an escape).
fn expanded_names(word: &str) -> impl Iterator<Item = &str> {
    let bytes = word.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i + 1 < bytes.len() {
            if bytes[i] == b'$' && bytes[i + 1] == b'$' {
                i += 2;
                continue;
            }
            if bytes[i] == b'$' && bytes[i + 1] == b'(' {
                let start = i + 2;
                if let Some(len) = word[start..].find(')') {
                    i = start + len + 1;
                    return Some(&word[start..start + len]);
                }
                return None;
            }
            i += 1;
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_expansions_are_found_and_escapes_are_not() {
        let names: Vec<&str> = expanded_names("--pw=$(DB) $$(ESCAPED) $(B)x $(").collect();
        assert_eq!(names, vec!["DB", "B"]);
        assert_eq!(expanded_names("plain").count(), 0);
    }
}
