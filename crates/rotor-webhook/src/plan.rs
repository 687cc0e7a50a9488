//! The mutation planner: a pure function from a Pod and the webhook's settings to a JSON patch.
//!
//! The patch only uses `add` (which also replaces an existing member), builds paths from
//! escaped tokens, and is idempotent: planning the patched pod again gives no operation.

use std::collections::{BTreeMap, HashMap, HashSet};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use rotor_core::reference::{has_reference, parse_from_path, parse_value};
use serde_json::{Value, json};

use crate::annotations::{self, get, get_bool};
use crate::config::InjectConfig;
use crate::registry::ImageCommand;

/// Names and paths of what rotor injects.
pub const BIN_VOLUME: &str = "rotor-bin";
pub const TOKEN_VOLUME: &str = "rotor-token";
pub const BIN_DIR: &str = "/rotor/bin";
pub const WRAPPER: &str = "/rotor/bin/rotor-init";
pub const TOKEN_DIR: &str = "/var/run/secrets/rotor";
pub const COPY_CONTAINER: &str = "rotor-init-copy";

/// What the webhook does with a pod.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Admit unchanged, with the reason (for logs and metrics).
    Unchanged(&'static str),
    /// Admit with this patch.
    Patch(json_patch::Patch),
}

/// Why a pod is refused. The message names the object, the field and the fix.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Deny(pub String);

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

/// A container whose entrypoint must be looked up before planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupNeed {
    pub container: String,
    pub image: String,
    pub always_pull: bool,
}

/// The containers rotor would wrap that have no `command` (their image must be looked up).
pub fn containers_needing_lookup(
    pod: &Pod,
    configmap_references: &HashSet<String>,
) -> Vec<LookupNeed> {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    if annotations.contains_key("kubernetes.io/config.mirror")
        || get_bool(annotations, &annotations::INJECT) == Ok(Some(false))
        || get_bool(annotations, &annotations::MUTATE) == Ok(Some(false))
    {
        return Vec::new();
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let from_path =
        get(annotations, &annotations::FROM_PATH).is_some_and(|(v, _)| !v.trim().is_empty());
    spec.init_containers
        .iter()
        .flatten()
        .filter(|c| c.name != COPY_CONTAINER)
        .chain(spec.containers.iter())
        .filter(|c| {
            (from_path || references_in(c) || configmap_references.contains(&c.name))
                && c.command.as_ref().is_none_or(Vec::is_empty)
        })
        .map(|c| LookupNeed {
            container: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            always_pull: c.image_pull_policy.as_deref() == Some("Always"),
        })
        .collect()
}

/// Plans the mutation of `pod`, with entrypoints looked up for containers without `command`.
pub fn plan_mutation_with(
    pod: &Pod,
    config: &InjectConfig,
    lookups: &Lookups,
) -> Result<Plan, Deny> {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    if annotations.contains_key("kubernetes.io/config.mirror") {
        return Ok(Plan::Unchanged("mirror pod"));
    }
    if get_bool(annotations, &annotations::INJECT).map_err(Deny)? == Some(false)
        || get_bool(annotations, &annotations::MUTATE).map_err(Deny)? == Some(false)
    {
        return Ok(Plan::Unchanged("opted out"));
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Plan::Unchanged("no spec"));
    };
    let from_path = match get(annotations, &annotations::FROM_PATH) {
        Some((list, name)) => {
            let parsed =
                parse_from_path(&name, list).map_err(|e| Deny(format!("annotation {e}")))?;
            (!parsed.is_empty()).then_some(list.to_string())
        }
        None => None,
    };
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    let targets: Vec<(&'static str, usize, &Container)> = init_containers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name != COPY_CONTAINER)
        .map(|(i, c)| ("initContainers", i, c))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| ("containers", i, c)),
        )
        .filter(|(_, _, c)| {
            from_path.is_some()
                || references_in(c)
                || lookups.configmap_references.contains(&c.name)
        })
        .collect();
    if targets.is_empty() {
        return Ok(Plan::Unchanged("no references"));
    }
    // Validate every reference before changing anything.
    for (_, _, c) in &targets {
        for env in c.env.as_deref().unwrap_or_default() {
            if let Some(value) = &env.value {
                parse_value(&env.name, value)
                    .map_err(|e| Deny(format!("container {:?}: {e}", c.name)))?;
            }
        }
    }
    let settings = rotor_env(pod, annotations, config, from_path.as_deref())?;
    let needs_token = matches!(settings.auth_method.as_str(), "kubernetes" | "jwt");

    let mut ops: Vec<PatchOperation> = Vec::new();
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let has_volume = |name: &str| volumes.iter().any(|v| v.name == name);
    let mut new_volumes = Vec::new();
    if !has_volume(BIN_VOLUME) {
        new_volumes.push(json!({
            "name": BIN_VOLUME,
            "emptyDir": { "medium": "Memory", "sizeLimit": config.bin_volume_size },
        }));
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
    append_all(
        &mut ops,
        &["spec", "volumes"],
        spec.volumes.is_some(),
        new_volumes,
    );

    let has_copy = init_containers.iter().any(|c| c.name == COPY_CONTAINER);
    // Indexes of init containers shift by one when ours is prepended.
    let shift = usize::from(!has_copy);
    if !has_copy {
        let copy = copy_container(config);
        if spec.init_containers.is_none() {
            ops.push(add(&["spec", "initContainers"], json!([copy])));
        } else {
            ops.push(add(&["spec", "initContainers", "0"], copy));
        }
    }
    for (list, index, container) in targets {
        if container
            .command
            .as_ref()
            .and_then(|c| c.first())
            .map(String::as_str)
            == Some(WRAPPER)
        {
            continue; // already wrapped
        }
        let index = if list == "initContainers" {
            index + shift
        } else {
            index
        };
        let idx = index.to_string();
        let base = ["spec", list, idx.as_str()];
        let mut args = vec!["--".to_string()];
        match container.command.as_ref().filter(|c| !c.is_empty()) {
            Some(command) => {
                args.extend(command.iter().cloned());
                args.extend(container.args.iter().flatten().cloned());
            }
            None => {
                let Some(image) = lookups.image_commands.get(&container.name) else {
                    return Err(Deny(format!(
                        "container {:?} has references but no command: rotor must know the entrypoint to wrap it; \
                         set spec.{list}[{index}].command (and args) to the image's ENTRYPOINT and CMD",
                        container.name
                    )));
                };
                // As the runtime does: ENTRYPOINT, then the pod's args, or else the image's CMD.
                args.extend(image.entrypoint.iter().cloned());
                match container.args.as_ref().filter(|a| !a.is_empty()) {
                    Some(pod_args) => args.extend(pod_args.iter().cloned()),
                    None => args.extend(image.cmd.iter().cloned()),
                }
                if args.len() == 1 {
                    return Err(Deny(format!(
                        "container {:?}: image {:?} has neither ENTRYPOINT nor CMD; set spec.{list}[{index}].command",
                        container.name,
                        container.image.as_deref().unwrap_or_default()
                    )));
                }
            }
        }
        ops.push(add(&[&base[..], &["command"]].concat(), json!([WRAPPER])));
        ops.push(add(&[&base[..], &["args"]].concat(), json!(args)));

        let mut mounts =
            vec![json!({ "name": BIN_VOLUME, "mountPath": BIN_DIR, "readOnly": true })];
        if needs_token {
            mounts.push(json!({ "name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true }));
        }
        append_all(
            &mut ops,
            &[&base[..], &["volumeMounts"]].concat(),
            container.volume_mounts.is_some(),
            mounts,
        );

        let existing: Vec<&str> = container
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        let env: Vec<Value> = settings
            .vars
            .iter()
            .filter(|(k, _)| !existing.contains(&k.as_str()))
            .map(|(k, v)| json!({ "name": k, "value": v }))
            .collect();
        append_all(
            &mut ops,
            &[&base[..], &["env"]].concat(),
            container.env.is_some(),
            env,
        );
    }
    if ops.is_empty() {
        return Ok(Plan::Unchanged("already injected"));
    }
    Ok(Plan::Patch(json_patch::Patch(ops)))
}

fn references_in(c: &Container) -> bool {
    c.env
        .iter()
        .flatten()
        .any(|EnvVar { value, .. }| value.as_deref().is_some_and(has_reference))
}

struct RotorEnv {
    auth_method: String,
    vars: Vec<(String, String)>,
}

/// The `ROTOR_*` settings for rotor-init from annotations and webhook defaults.
fn rotor_env(
    pod: &Pod,
    annotations: &BTreeMap<String, String>,
    config: &InjectConfig,
    from_path: Option<&str>,
) -> Result<RotorEnv, Deny> {
    let pod_name = pod_display_name(pod);
    let addr = match get(annotations, &annotations::ADDR) {
        Some((addr, name)) => {
            if !config.addr_allowed(addr) {
                return Err(Deny(format!(
                    "pod {pod_name}: annotation {name}={addr:?} is not on the webhook's store allowlist; \
                     use the cluster's default store (remove the annotation) or ask the platform team to add it \
                     to --addr-allowlist"
                )));
            }
            addr.to_string()
        }
        None => config.default_addr.clone().ok_or_else(|| {
            Deny(format!(
                "pod {pod_name}: no store address: annotate rotor.dev/vault-addr or start the webhook with --default-addr"
            ))
        })?,
    };
    let method = get(annotations, &annotations::AUTH_METHOD)
        .map(|(v, _)| v.to_string())
        .unwrap_or_else(|| config.default_auth_method.clone());
    if !["kubernetes", "jwt", "token", "approle"].contains(&method.as_str()) {
        return Err(Deny(format!(
            "pod {pod_name}: annotation rotor.dev/vault-auth-method={method:?}: expected kubernetes, jwt, token or approle"
        )));
    }
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_string());
    let role = get(annotations, &annotations::ROLE)
        .map(|(v, _)| v.to_string())
        .or_else(|| config.default_role.clone())
        .unwrap_or(service_account);
    let mut vars = vec![
        ("ROTOR_ADDR".to_string(), addr),
        ("ROTOR_AUTH_METHOD".to_string(), method.clone()),
        ("ROTOR_ROLE".to_string(), role),
        (
            "ROTOR_LOG_FORMAT".to_string(),
            config.init_log_format.clone(),
        ),
    ];
    if let Some(path) = get(annotations, &annotations::AUTH_PATH)
        .map(|(v, _)| v.to_string())
        .or_else(|| config.default_auth_path.clone())
    {
        vars.push(("ROTOR_AUTH_PATH".to_string(), path));
    }
    if matches!(method.as_str(), "kubernetes" | "jwt") {
        vars.push(("ROTOR_TOKEN_FILE".to_string(), format!("{TOKEN_DIR}/token")));
    }
    if let Some((ns, _)) = get(annotations, &annotations::NAMESPACE) {
        vars.push(("ROTOR_NAMESPACE".to_string(), ns.to_string()));
    }
    if let Some(pem) = &config.store_ca_pem {
        vars.push(("ROTOR_CACERT_PEM".to_string(), pem.clone()));
    }
    for (key, var) in [
        (&annotations::IGNORE_MISSING, "ROTOR_IGNORE_MISSING"),
        (&annotations::DAEMON, "ROTOR_DAEMON"),
    ] {
        if let Some(v) =
            get_bool(annotations, key).map_err(|e| Deny(format!("pod {pod_name}: {e}")))?
        {
            vars.push((var.to_string(), v.to_string()));
        }
    }
    if let Some((v, _)) = get(annotations, &annotations::PASSTHROUGH) {
        vars.push(("ROTOR_PASSTHROUGH".to_string(), v.to_string()));
    }
    if let Some(list) = from_path {
        vars.push(("ROTOR_FROM_PATH".to_string(), list.to_string()));
    }
    Ok(RotorEnv {
        auth_method: method,
        vars,
    })
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
        "imagePullPolicy": config.init_pull_policy,
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

/// An `add` operation at the pointer built from `tokens` (each escaped per RFC 6901).
fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

/// Appends `items` to the array at `tokens`, creating it when it does not exist.
fn append_all(ops: &mut Vec<PatchOperation>, tokens: &[&str], exists: bool, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if exists {
        for item in items {
            ops.push(add(&[tokens, &["-"]].concat(), item));
        }
    } else {
        ops.push(add(tokens, Value::Array(items)));
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
