//! The mutation planner: a pure function from a Pod and the webhook's settings to a JSON patch.
//!
//! The patch only uses `add` (which also replaces an existing member), builds paths from
//! escaped tokens, and is idempotent: planning the patched pod again gives no operation.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Container, Pod};
use rotor_core::contract::annotations::{self, get, get_bool};
pub use rotor_core::contract::{
    BIN_DIR, BIN_VOLUME, COPY_CONTAINER, TOKEN_DIR, TOKEN_VOLUME, WRAPPER,
};
use rotor_core::contract::{BinarySource, FilesRequest, InitSettings, PROJECTED_TOKEN, var};
use rotor_core::reference::PathRef;
use serde_json::{Value, json};

use crate::config::InjectConfig;
pub use crate::deny::{Deny, DenyReason};
use crate::registry::ImageCommand;
pub use crate::targets::LookupNeed;
use crate::targets::{Selection, Target, select_targets};

/// What the webhook does with a pod.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Admit unchanged, with the reason (for logs and metrics).
    Unchanged(&'static str),
    /// Admit with this patch.
    Patch(crate::patch::Patch),
}

/// Plans the mutation of `pod` (containers without `command` are denied: no registry here).
pub fn plan_mutation(pod: &Pod, config: &InjectConfig) -> Result<Plan, Deny> {
    plan_mutation_with(pod, config, &Lookups::default())
}

/// ENTRYPOINT and CMD looked up for containers without `command`, by container name.
pub type ImageCommands = HashMap<String, ImageCommand>;

/// What the admission layer read from the API and registries before planning.
#[derive(Clone, Debug, Default)]
pub struct Lookups {
    pub image_commands: ImageCommands,
    /// Containers whose env pulls references from ConfigMaps (`configMapKeyRef`, `envFrom`).
    pub configmap_references: HashSet<String>,
}

/// Plans the mutation of `pod`, with entrypoints looked up for containers without `command`.
pub fn plan_mutation_with(
    pod: &Pod,
    config: &InjectConfig,
    lookups: &Lookups,
) -> Result<Plan, Deny> {
    let selection = select_targets(pod, &lookups.configmap_references)?;
    plan_selection(pod, config, &selection, &lookups.image_commands)
}

/// Plans the mutation of `pod` for the containers `selection` chose.
pub fn plan_selection(
    pod: &Pod,
    config: &InjectConfig,
    selection: &Selection<'_>,
    image_commands: &ImageCommands,
) -> Result<Plan, Deny> {
    let (targets, from_path, files, on_rotation, annotations) = match selection {
        Selection::Skip(reason) => return Ok(Plan::Unchanged(reason)),
        Selection::Wrap {
            targets,
            from_path,
            files,
            on_rotation,
            annotations,
        } => (
            targets,
            from_path,
            files.as_ref(),
            *on_rotation,
            *annotations,
        ),
    };
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Plan::Unchanged("no spec"));
    };
    crate::pod_checks::check_pod(spec, &config.init_image)?;
    let source = binary_source(spec, annotations, config)?;
    let settings = init_settings(pod, annotations, config, from_path)?;
    let needs_token = settings.auth_method.uses_service_account_token();
    let vars = settings.to_env();
    // The containers that get files also get where the templates are, the directory, the mode
    // and what to do on rotation.
    let file_vars = files.map(|f| {
        let mut with_files = settings.clone();
        with_files.files = f.files.iter().map(|(name, _)| name.clone()).collect();
        with_files.files_dir = f.dir.clone();
        with_files.files_mode = f.mode;
        with_files.on_rotation = on_rotation;
        with_files.to_env()
    });
    let file_targets = targets.iter().filter(|t| t.files.is_some()).count();

    let mut ops = crate::patch::Patch::default();
    let file_volumes = files.map_or_else(Vec::new, |files| {
        crate::file_volumes::new_file_volumes(
            spec.volumes.as_deref(),
            files,
            file_targets,
            on_rotation,
        )
    });
    add_volumes(
        &mut ops,
        spec.volumes.as_deref(),
        config,
        source,
        needs_token,
        file_volumes,
    );
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    let needs_copy =
        source == BinarySource::Copy && !init_containers.iter().any(|c| c.name == COPY_CONTAINER);
    if needs_copy {
        let copy = copy_container(config);
        if spec.init_containers.is_none() {
            ops.add(&["spec", "initContainers"], &[copy]);
        } else {
            ops.add(&["spec", "initContainers", "0"], &copy);
        }
    }
    // Indexes of init containers shift by one when ours is prepended.
    let shift = usize::from(needs_copy);
    for target in targets {
        let (vars, files) = match (&file_vars, files, target.files) {
            (Some(file_vars), Some(files), Some(n)) => (file_vars, Some((files, n))),
            _ => (&vars, None),
        };
        wrap_container(
            &mut ops,
            target,
            shift,
            image_commands,
            needs_token,
            vars,
            files,
        )?;
    }
    if ops.is_empty() {
        return Ok(Plan::Unchanged("already injected"));
    }
    Ok(Plan::Patch(ops))
}

/// How rotor-init reaches this pod. A pod rotor already injected keeps the way it was injected
/// (idempotence, reinvocation); otherwise the pod's annotation, else the webhook's flag.
fn binary_source(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    annotations: &BTreeMap<String, String>,
    config: &InjectConfig,
) -> Result<BinarySource, Deny> {
    let injected = spec.volumes.iter().flatten().find(|v| v.name == BIN_VOLUME);
    if let Some(volume) = injected {
        return Ok(if volume.image.is_some() {
            BinarySource::ImageVolume
        } else {
            BinarySource::Copy
        });
    }
    match get(annotations, &annotations::INIT_BINARY_SOURCE) {
        Some((value, name)) => value.parse().map_err(|e| {
            Deny::new(DenyReason::BadAnnotation, format!(
                "annotation {name}={e}: copy works on every cluster, image-volume needs \
                 Kubernetes >= 1.35 with containerd >= 2.1 on the node; remove the annotation for the \
                 cluster's default"
            ))
        }),
        None => Ok(config.init_binary_source),
    }
}

/// rotor-init's volume (in-memory for the copy, or the rotor-init image itself), for token-based
/// logins the projected token, and `more` (the files' volumes): all in one list, so a pod
/// without volumes gets every one.
fn add_volumes(
    ops: &mut crate::patch::Patch,
    volumes: Option<&[k8s_openapi::api::core::v1::Volume]>,
    config: &InjectConfig,
    source: BinarySource,
    needs_token: bool,
    more: Vec<Value>,
) {
    let has_volume = |name: &str| volumes.unwrap_or_default().iter().any(|v| v.name == name);
    let mut new_volumes = Vec::new();
    if !has_volume(BIN_VOLUME) {
        new_volumes.push(match source {
            BinarySource::Copy => json!({
                "name": BIN_VOLUME,
                "emptyDir": { "medium": "Memory", "sizeLimit": config.bin_volume_size },
            }),
            // The image holds /rotor-init alone; mounted at BIN_DIR it is the WRAPPER.
            BinarySource::ImageVolume => json!({
                "name": BIN_VOLUME,
                "image": {
                    "reference": config.init_image,
                    "pullPolicy": config.init_pull_policy.as_str(),
                },
            }),
        });
    }
    if needs_token && !has_volume(TOKEN_VOLUME) {
        new_volumes.push(json!({
            "name": TOKEN_VOLUME,
            "projected": { "sources": [{ "serviceAccountToken": {
                "audience": config.token_audience,
                "expirationSeconds": config.token_expiration_seconds,
                "path": "token",
            }}]},
        }));
    }
    new_volumes.extend(more);
    ops.append_all(&["spec", "volumes"], volumes.is_some(), &new_volumes);
}

/// Wraps one container: command and args through rotor-init, the mounts and the settings.
fn wrap_container(
    ops: &mut crate::patch::Patch,
    target: &Target<'_>,
    shift: usize,
    image_commands: &ImageCommands,
    needs_token: bool,
    vars: &[(String, String)],
    files: Option<(&FilesRequest, usize)>,
) -> Result<(), Deny> {
    let Target {
        list,
        index,
        container,
        ..
    } = target;
    if container
        .command
        .as_ref()
        .and_then(|c| c.first())
        .map(String::as_str)
        == Some(WRAPPER)
    {
        return Ok(()); // already wrapped
    }
    crate::pod_checks::check_container(container, list, *index)?;
    // The store address, CA and identity come from annotations checked against the webhook's
    // allowlist, never from the container: its own ROTOR_ADDR would bypass that check.
    if let Some(own) =
        container.env.iter().flatten().find(|e| {
            e.name.starts_with(var::PREFIX) && !var::POD_TUNABLE.contains(&e.name.as_str())
        })
    {
        return Err(Deny::new(
            DenyReason::RotorSetting,
            format!(
                "container {:?} sets {} in its env: rotor's store settings come from the pod's \
             annotations (rotor.dev/vault-addr, …) and the webhook's flags; remove it (only {} may be set there)",
                container.name,
                own.name,
                var::POD_TUNABLE.join(", ")
            ),
        ));
    }
    let index = if *list == "initContainers" {
        index + shift
    } else {
        *index
    };
    let idx = index.to_string();
    let base = ["spec", list, idx.as_str()];
    let args = wrapped_args(container, list, index, image_commands)?;
    ops.add(&[&base[..], &["command"]].concat(), &[WRAPPER]);
    ops.add(&[&base[..], &["args"]].concat(), &args);

    let mut mounts = vec![json!({ "name": BIN_VOLUME, "mountPath": BIN_DIR, "readOnly": true })];
    if needs_token {
        mounts.push(json!({ "name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true }));
    }
    if let Some((files, n)) = files {
        mounts.extend(crate::file_volumes::file_mounts(
            container, list, index, files, n,
        )?);
    }
    ops.append_all(
        &[&base[..], &["volumeMounts"]].concat(),
        container.volume_mounts.is_some(),
        &mounts,
    );
    let existing: HashSet<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    let env: Vec<EnvValue<'_>> = vars
        .iter()
        .filter(|(k, _)| !existing.contains(k.as_str()))
        .map(|(name, value)| EnvValue { name, value })
        .collect();
    ops.append_all(
        &[&base[..], &["env"]].concat(),
        container.env.is_some(),
        &env,
    );
    Ok(())
}

/// `["--", entrypoint..., args...]`: the pod's command and args, or else (as the runtime does)
/// the image's ENTRYPOINT, then the pod's args or the image's CMD.
fn wrapped_args(
    container: &Container,
    list: &str,
    index: usize,
    image_commands: &ImageCommands,
) -> Result<Vec<String>, Deny> {
    let mut args = vec!["--".to_string()];
    if let Some(command) = container.command.as_ref().filter(|c| !c.is_empty()) {
        args.extend(command.iter().cloned());
        args.extend(container.args.iter().flatten().cloned());
        return Ok(args);
    }
    let Some(image) = image_commands.get(&container.name) else {
        return Err(Deny::new(
            DenyReason::NoEntrypoint,
            format!(
                "container {:?} has references but no command: rotor must know the entrypoint to wrap it; \
             set spec.{list}[{index}].command (and args) to the image's ENTRYPOINT and CMD",
                container.name
            ),
        ));
    };
    args.extend(image.entrypoint.iter().cloned());
    match container.args.as_ref().filter(|a| !a.is_empty()) {
        Some(pod_args) => args.extend(pod_args.iter().cloned()),
        None => args.extend(image.cmd.iter().cloned()),
    }
    if args.len() == 1 {
        return Err(Deny::new(
            DenyReason::NoEntrypoint,
            format!(
                "container {:?}: image {:?} has neither ENTRYPOINT nor CMD; set spec.{list}[{index}].command",
                container.name,
                container.image.as_deref().unwrap_or_default()
            ),
        ));
    }
    Ok(args)
}

/// The settings rotor-init gets, from the pod's annotations and the webhook's defaults.
fn init_settings(
    pod: &Pod,
    annotations: &BTreeMap<String, String>,
    config: &InjectConfig,
    from_path: &[PathRef],
) -> Result<InitSettings, Deny> {
    let pod_name = pod_display_name(pod);
    let addr = match get(annotations, &annotations::ADDR) {
        Some((addr, name)) => {
            if !config.addr_allowed(addr) {
                return Err(Deny::new(DenyReason::StoreNotAllowed, format!(
                    "pod {pod_name}: annotation {name}={addr:?} is not on the webhook's store allowlist; \
                     use the cluster's default store (remove the annotation) or ask the platform team to add it \
                     to --addr-allowlist"
                )));
            }
            addr.to_string()
        }
        None => config.default_addr.clone().ok_or_else(|| {
            Deny::new(DenyReason::StoreNotAllowed, format!(
                "pod {pod_name}: no store address: annotate rotor.dev/vault-addr or start the webhook with --default-addr"
            ))
        })?,
    };
    let method = match get(annotations, &annotations::AUTH_METHOD) {
        Some((v, name)) => v.parse().map_err(|e| {
            Deny::new(
                DenyReason::BadAnnotation,
                format!("pod {pod_name}: annotation {name}={e}"),
            )
        })?,
        None => config.default_auth_method,
    };
    let mut settings = InitSettings::new(&addr, method);
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_string());
    settings.role = Some(
        get(annotations, &annotations::ROLE)
            .map(|(v, _)| v.to_string())
            .or_else(|| config.default_role.clone())
            .unwrap_or(service_account),
    );
    settings.log_format = config.init_log_format;
    settings.auth_path = get(annotations, &annotations::AUTH_PATH)
        .map(|(v, _)| v.to_string())
        .or_else(|| config.default_auth_path.clone());
    if method.uses_service_account_token() {
        settings.token_file = Some(PROJECTED_TOKEN.to_string());
    }
    settings.namespace = get(annotations, &annotations::NAMESPACE)
        .map(|(v, _)| v.to_string())
        .or_else(|| config.default_namespace.clone());
    settings.ca = config
        .store_ca_pem
        .clone()
        .map(rotor_core::contract::CaSource::Pem);
    let flag = |key| {
        get_bool(annotations, key)
            .map_err(|e| Deny::new(DenyReason::BadAnnotation, format!("pod {pod_name}: {e}")))
    };
    settings.ignore_missing = flag(&annotations::IGNORE_MISSING)?.unwrap_or(false);
    settings.daemon = flag(&annotations::DAEMON)?.unwrap_or(false);
    settings.passthrough = get(annotations, &annotations::PASSTHROUGH)
        .map(|(v, _)| rotor_core::contract::choices::name_list(v))
        .unwrap_or_default();
    settings.from_path_deny = config.from_path_deny.clone();
    settings.from_path = from_path.to_vec();
    Ok(settings)
}

/// `namespace/name`, or `namespace/generateName*` for pods not yet named.
pub fn pod_display_name(pod: &Pod) -> String {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(name), _) => format!("{ns}/{name}"),
        (None, Some(generate)) => format!("{ns}/{generate}*"),
        (None, None) => format!("{ns}/<unnamed>"),
    }
}

/// The init container that copies rotor-init into the shared volume. It passes the
/// `restricted` Pod Security Standard.
fn copy_container(config: &InjectConfig) -> Value {
    json!({
        "name": COPY_CONTAINER,
        "image": config.init_image,
        "imagePullPolicy": config.init_pull_policy.as_str(),
        "command": ["/rotor-init", "copy", BIN_DIR],
        "volumeMounts": [{ "name": BIN_VOLUME, "mountPath": BIN_DIR }],
        "resources": {
            "requests": { "cpu": "10m", "memory": "16Mi" },
            "limits": { "memory": "32Mi" },
        },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
    })
}

/// An env entry with a literal value (rotor's settings).
#[derive(serde::Serialize)]
struct EnvValue<'a> {
    name: &'a str,
    value: &'a str,
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
