//! Which containers of a pod rotor wraps, decided once per admission: the registry lookups and
//! the planner both work from this one answer.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, Pod};
use rotor_core::contract::annotations::{self, get_bool};
use rotor_core::contract::{
    COPY_CONTAINER, ContainerEnv, FilesRequest, OnRotation, PullPolicy, workload_references,
};
use rotor_core::reference::PathRef;

use crate::deny::{Deny, DenyReason};

/// `initContainers` or `containers`.
pub type ListName = &'static str;

/// A container rotor wraps, with where it sits in the pod spec.
#[derive(Debug)]
pub struct Target<'a> {
    pub list: ListName,
    pub index: usize,
    pub container: &'a Container,
    /// The `n`th container that gets the pod's files (`rotor.dev/file.*`), if it gets them.
    pub files: Option<usize>,
}

/// What a pod asks of rotor.
#[derive(Debug)]
pub enum Selection<'a> {
    /// Nothing to do, and why (for logs).
    Skip(&'static str),
    Wrap {
        targets: Vec<Target<'a>>,
        /// The from-path secrets, as annotated.
        from_path: Vec<PathRef>,
        /// The files the pod asks for, and what its workload does on rotation.
        files: Option<FilesRequest>,
        on_rotation: OnRotation,
        annotations: &'a BTreeMap<String, String>,
    },
}

/// A container whose entrypoint must be looked up before planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupNeed {
    pub container: String,
    pub image: String,
    pub always_pull: bool,
}

static NO_ANNOTATIONS: BTreeMap<String, String> = BTreeMap::new();

/// Selects the containers to wrap: every container with a reference in its env (or in a
/// ConfigMap its env reads, `configmap_references`), or every container when from-path is set,
/// as rotor-core's workload model reads them (the reloader reads workloads the same way).
/// Opt-outs, mirror pods and malformed annotations are decided here, and every env value is
/// parsed once, so a malformed reference is refused before anything is planned.
pub fn select_targets<'a>(
    pod: &'a Pod,
    configmap_references: &HashSet<String>,
) -> Result<Selection<'a>, Deny> {
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&NO_ANNOTATIONS);
    if annotations.contains_key("kubernetes.io/config.mirror") {
        return Ok(Selection::Skip("mirror pod"));
    }
    let flag = |key| {
        get_bool(annotations, key).map_err(|e| Deny::new(DenyReason::BadAnnotation, e.message))
    };
    if flag(&annotations::INJECT)? == Some(false) || flag(&annotations::MUTATE)? == Some(false) {
        return Ok(Selection::Skip("opted out"));
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Selection::Skip("no spec"));
    };
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let candidates: Vec<Target<'a>> = init
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name != COPY_CONTAINER)
        .map(|(index, container)| Target {
            list: "initContainers",
            index,
            container,
            files: None,
        })
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(index, container)| Target {
                    list: "containers",
                    index,
                    container,
                    files: None,
                }),
        )
        .collect();
    let envs: Vec<ContainerEnv<'_>> = candidates
        .iter()
        .map(|t| rotor_runtime::container_env(t.container))
        .collect();
    let references = workload_references(annotations, &envs)
        .map_err(|e| Deny::new(DenyReason::BadReference, e.to_string()))?;
    let mut wrapped = references.containers.iter().copied().peekable();
    let mut with_files = 0usize;
    let targets: Vec<Target<'a>> = candidates
        .into_iter()
        .enumerate()
        .filter(|(i, t)| {
            let referenced = wrapped.next_if_eq(i).is_some();
            referenced || configmap_references.contains(&t.container.name)
        })
        .map(|(i, mut t)| {
            if references.file_containers.contains(&i) {
                t.files = Some(with_files);
                with_files += 1;
            }
            t
        })
        .collect();
    if targets.is_empty() {
        return Ok(Selection::Skip("no references"));
    }
    Ok(Selection::Wrap {
        targets,
        from_path: references.from_path,
        files: references.files,
        on_rotation: references.on_rotation,
        annotations,
    })
}

impl Selection<'_> {
    /// The wrapped containers without `command`: their image's entrypoint must be looked up.
    pub fn lookup_needs(&self) -> Vec<LookupNeed> {
        let Selection::Wrap { targets, .. } = self else {
            return Vec::new();
        };
        targets
            .iter()
            .map(|t| t.container)
            .filter(|c| c.command.as_ref().is_none_or(Vec::is_empty))
            .map(|c| LookupNeed {
                container: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                always_pull: c.image_pull_policy.as_deref() == Some(PullPolicy::Always.as_str()),
            })
            .collect()
    }
}
