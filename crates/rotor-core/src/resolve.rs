//! Resolving an environment: parse every value, read each distinct (path, version) once and
//! write each distinct `>>` request once, concurrently with a bound, then render the values.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use futures::StreamExt as _;

use crate::reference::{Action, ParseError, PathRef, Reference, Template, parse_value};
use crate::store::aws::AwsClient;
use crate::store::{Lease, Secret, StoreClient, StoreError};

/// The stores one resolution reads from, chosen per reference by its prefix: Vault/OpenBao for
/// `vault:`/`bao:`, AWS for `arn:aws:...`. A store the references need and that is absent is an
/// error naming the reference.
#[derive(Clone, Copy, Default)]
pub struct Stores<'a> {
    pub vault: Option<&'a StoreClient>,
    pub aws: Option<&'a AwsClient>,
}

#[derive(Clone, Debug)]
pub struct ResolveOptions {
    /// Remove a variable whose secret or key is missing instead of failing.
    pub ignore_missing: bool,
    /// How many store requests run at once.
    pub concurrency: usize,
    /// Names a from-path key may not become, besides [`DEFAULT_FROM_PATH_DENY`]: exact, or a
    /// prefix ending in `*`.
    pub from_path_deny: Vec<String>,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        Self {
            ignore_missing: false,
            concurrency: 8,
            from_path_deny: Vec::new(),
        }
    }
}

/// Variables a secret's key never becomes through from-path: what steers the dynamic loader and
/// libc, and the option variables through which runtimes load code at start (`*`: a prefix).
/// Always applied; `--from-path-deny` (`ROTOR_FROM_PATH_DENY`) adds to it.
pub const DEFAULT_FROM_PATH_DENY: &[&str] = &[
    "LD_*",
    "GLIBC_TUNABLES*",
    "MALLOC_*",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PYTHONHOME",
    "PERL5OPT",
    "PERL5LIB",
    "RUBYOPT",
    "RUBYLIB",
    "BASH_ENV",
    "ENV",
];

/// Whether `name` is on a deny list entry (exact, or a prefix ending in `*`).
fn denied_by(entry: &str, name: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == entry,
    }
}

/// The resolved environment.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Every variable, references replaced; in the input order, from-path keys after.
    pub env: Vec<(String, String)>,
    /// Variables removed because of ignore-missing (names and reasons, never values).
    pub removed: Vec<String>,
    /// Leases of dynamic secrets (for daemon mode).
    pub leases: Vec<Lease>,
    /// How many store requests were made.
    pub requests: usize,
    /// How many variables had references.
    pub resolved: usize,
    /// The files, with what they were rendered from (empty when none were asked for).
    pub files: FileSet,
}

/// The files a pod asked for, their templates and the secrets they were rendered from: enough
/// to render them again after one path is read at a new version. `Debug` shows no value.
#[derive(Default)]
pub struct FileSet {
    templates: Vec<(String, FileTemplate)>,
    answers: HashMap<Request, Secret>,
    /// `>>` requests the env renders too: the env cannot change, so these are never re-issued.
    env_writes: HashSet<Request>,
}

enum FileTemplate {
    Literal(String),
    References(Template),
}

impl std::fmt::Debug for FileSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSet")
            .field(
                "files",
                &self.templates.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A rendered file. `Debug` shows its name and size only.
pub struct RenderedFile {
    pub name: String,
    pub content: String,
}

impl std::fmt::Debug for RenderedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RenderedFile({}, {} bytes)",
            self.name,
            self.content.len()
        )
    }
}

impl FileSet {
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The paths the files read at their current version (not pinned, not `>>`).
    pub fn watched_paths(&self) -> BTreeSet<String> {
        self.references()
            .filter(|r| !r.is_write() && !r.is_pinned() && !r.scheme.is_aws())
            .map(|r| r.path.clone())
            .collect()
    }

    /// The KV version each watched path was last read at.
    pub fn versions(&self) -> BTreeMap<String, u64> {
        self.answers
            .iter()
            .filter_map(|(req, secret)| match req {
                Request::Read {
                    path,
                    version: None,
                } => Some((path.clone(), secret.version?)),
                _ => None,
            })
            .collect()
    }

    /// The names of the files that read `path` at its current version.
    pub fn files_reading(&self, path: &str) -> Vec<&str> {
        self.templates
            .iter()
            .filter(|(_, t)| match t {
                FileTemplate::References(t) => t
                    .references()
                    .iter()
                    .any(|r| r.path == path && !r.is_write() && !r.is_pinned()),
                FileTemplate::Literal(_) => false,
            })
            .map(|(n, _)| n.as_str())
            .collect()
    }

    fn references(&self) -> impl Iterator<Item = &Reference> {
        self.templates.iter().flat_map(|(_, t)| match t {
            FileTemplate::References(t) => t.references(),
            FileTemplate::Literal(_) => Vec::new(),
        })
    }

    /// Reads `path` at `version` (one request) and keeps the answer for the next render.
    pub async fn refresh(
        &mut self,
        client: &StoreClient,
        path: &str,
        version: u64,
    ) -> Result<(), StoreError> {
        let secret = client.read(path, Some(version)).await?;
        self.answers.insert(
            Request::Read {
                path: path.to_string(),
                version: None,
            },
            secret,
        );
        Ok(())
    }

    /// Every file, rendered from the answers held; refused when together they would pass
    /// [`MAX_RENDERED_BYTES`].
    pub fn render(&self) -> Result<Vec<RenderedFile>, ResolveError> {
        let mut total = 0usize;
        self.templates
            .iter()
            .map(|(name, t)| {
                let content = match t {
                    FileTemplate::Literal(text) => text.clone(),
                    FileTemplate::References(t) => t
                        .render_within(MAX_RENDERED_BYTES.saturating_sub(total), |r| {
                            self.answers
                                .get(&Request::of(r))
                                .ok_or_else(|| no_answer(r))
                                .and_then(|secret| secret.get(&r.path, &r.key))
                                .map_err(|source| (r.to_string(), source))
                        })
                        .map_err(|failed| match failed {
                            Ok((reference, source)) => ResolveError::Store {
                                var: format!("file {name}"),
                                reference,
                                source,
                            },
                            // Stopped before it grew past the limit.
                            Err(bytes) => ResolveError::FilesTooLarge {
                                name: name.clone(),
                                total: total + bytes,
                            },
                        })?,
                };
                total += content.len();
                if total > MAX_RENDERED_BYTES {
                    return Err(ResolveError::FilesTooLarge {
                        name: name.clone(),
                        total,
                    });
                }
                Ok(RenderedFile {
                    name: name.clone(),
                    content,
                })
            })
            .collect()
    }
}

/// The most all of a container's rendered files may hold together: half of its 8 MiB memory
/// volume, so that rewriting every file (new beside old, then renamed) still fits.
pub const MAX_RENDERED_BYTES: usize = 4 << 20;

fn no_store(path: &str, family: &str) -> StoreError {
    StoreError::Client(format!(
        "{path}: no {family} store is configured for this reference (a bug in rotor: the caller chooses the stores by the references)"
    ))
}

fn no_answer(r: &Reference) -> StoreError {
    StoreError::Decode {
        op: format!("reading {}", r.path),
        message: "no answer was recorded for this reference (a bug in rotor)".to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(
        "from-path {path}: key {key:?} cannot become an environment variable: {why}; rename the key or reference the value explicitly (env NAME: vault:PATH#KEY)"
    )]
    FromPathKey {
        path: String,
        key: String,
        why: &'static str,
    },
    #[error(
        "file {name}: the files rendered so far hold {total} bytes, more than rotor's limit of {} bytes for all files of a container (its memory volume is 8 MiB and a rewrite needs room for old and new); render fewer or smaller secrets as files, or read large ones in the app",
        MAX_RENDERED_BYTES
    )]
    FilesTooLarge { name: String, total: usize },
    #[error("env {var}: reference {reference:?}: {source}")]
    Store {
        var: String,
        reference: String,
        #[source]
        source: StoreError,
    },
}

impl ResolveError {
    /// The store error, if this is one.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            Self::Store { source, .. } => Some(source),
            Self::Parse(_) | Self::FromPathKey { .. } | Self::FilesTooLarge { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Request {
    Read {
        path: String,
        version: Option<u64>,
    },
    Write {
        path: String,
        body: Option<String>,
    },
    /// An AWS secret or parameter, current or pinned by version or label.
    ReadAws {
        arn: String,
        version: Option<u64>,
        label: Option<String>,
    },
}

impl Request {
    fn of(reference: &Reference) -> Self {
        if reference.scheme.is_aws() {
            let (version, label) = match &reference.action {
                Action::ReadLabel { label } => (None, Some(label.clone())),
                other => (
                    match other {
                        Action::Read { version } => *version,
                        _ => None,
                    },
                    None,
                ),
            };
            return Self::ReadAws {
                arn: reference.path.clone(),
                version,
                label,
            };
        }
        match &reference.action {
            Action::ReadLabel { label } => Self::ReadAws {
                arn: reference.path.clone(),
                version: None,
                label: Some(label.clone()),
            },
            Action::Read { version } => Self::Read {
                path: reference.path.clone(),
                version: *version,
            },
            Action::Write { body } => Self::Write {
                path: reference.path.clone(),
                body: body.clone(),
            },
        }
    }
}

/// Which store families the env and the files read from: `(vault, aws)`. The first AWS
/// reference's ARN is returned too (where rotor-init logs in to STS by default).
pub fn store_families(
    env: &[(String, String)],
    files: &[(String, String)],
) -> Result<(bool, Option<String>), ParseError> {
    let env_templates = parse_environment(env)?;
    let file_templates = parse_files(files)?;
    let references = env_templates
        .iter()
        .flat_map(|(_, t)| t.references())
        .chain(file_templates.iter().flat_map(|(_, t)| match t {
            FileTemplate::References(t) => t.references(),
            FileTemplate::Literal(_) => Vec::new(),
        }));
    let (mut vault, mut aws) = (false, None);
    for r in references {
        if r.scheme.is_aws() {
            aws.get_or_insert_with(|| r.path.clone());
        } else {
            vault = true;
        }
    }
    Ok((vault, aws))
}

/// Parses every value of `env`; `(name, template)` for those with references.
pub fn parse_environment(env: &[(String, String)]) -> Result<Vec<(usize, Template)>, ParseError> {
    let mut out = Vec::new();
    for (i, (name, value)) in env.iter().enumerate() {
        if let Some(t) = parse_value(name, value)? {
            out.push((i, t));
        }
    }
    Ok(out)
}

type Answers = HashMap<Request, Result<Secret, StoreError>>;

/// Why a from-path key cannot be a variable name: a secret's author must not be able to set
/// what changes how the app is loaded, nor smuggle a second `NAME=` into the environment.
fn unfit_variable_name(key: &str, extra_deny: &[String]) -> Option<&'static str> {
    if key.is_empty() || key.contains(['=', '\0']) {
        return Some("a variable name cannot be empty or contain '=' or a NUL byte");
    }
    if DEFAULT_FROM_PATH_DENY.iter().any(|e| denied_by(e, key)) {
        return Some(
            "variables that steer the dynamic loader, libc or a runtime's start are never set from a secret",
        );
    }
    if extra_deny.iter().any(|e| denied_by(e, key)) {
        return Some("the webhook's --from-path-deny list names it");
    }
    None
}

/// Resolves `env` and the `from_paths` secrets against the store: parse, make each distinct
/// request once, then render the variables and add the from-path keys.
pub async fn resolve_environment(
    client: &StoreClient,
    env: Vec<(String, String)>,
    from_paths: &[PathRef],
    options: ResolveOptions,
) -> Result<Resolution, ResolveError> {
    resolve_with_files(client, env, &[], from_paths, options).await
}

/// [`resolve_environment`], plus `files` (`(name, template)`): one request per distinct
/// reference across the env and the files, so a `>>` request used by several files (a
/// certificate and its key) is one lease.
pub async fn resolve_with_files(
    client: &StoreClient,
    env: Vec<(String, String)>,
    files: &[(String, String)],
    from_paths: &[PathRef],
    options: ResolveOptions,
) -> Result<Resolution, ResolveError> {
    let stores = Stores {
        vault: Some(client),
        aws: None,
    };
    resolve_from(stores, env, files, from_paths, options).await
}

/// [`resolve_with_files`] over any mix of stores.
pub async fn resolve_from(
    stores: Stores<'_>,
    env: Vec<(String, String)>,
    files: &[(String, String)],
    from_paths: &[PathRef],
    options: ResolveOptions,
) -> Result<Resolution, ResolveError> {
    let templates = parse_environment(&env)?;
    let file_templates = parse_files(files)?;
    let file_references = file_templates.iter().flat_map(|(_, t)| match t {
        FileTemplate::References(t) => t.references(),
        FileTemplate::Literal(_) => Vec::new(),
    });
    let requests = distinct_requests(&templates, file_references, from_paths);
    let request_count = requests.len();
    let answers = fetch(stores, requests, options.concurrency).await;
    let mut resolution = Resolution {
        requests: request_count,
        resolved: templates.len(),
        leases: answers
            .values()
            .flatten()
            .filter_map(|a| a.lease.clone())
            .collect(),
        ..Resolution::default()
    };
    render_env(&mut resolution, env, &templates, &answers, &options)?;
    add_from_paths(&mut resolution, from_paths, &answers, &options)?;
    resolution.files = file_set(file_templates, answers)?;
    resolution.files.env_writes = templates
        .iter()
        .flat_map(|(_, t)| t.references().into_iter().map(Request::of))
        .filter(|r| matches!(r, Request::Write { .. }))
        .collect();
    Ok(resolution)
}

fn parse_files(files: &[(String, String)]) -> Result<Vec<(String, FileTemplate)>, ParseError> {
    files
        .iter()
        .map(|(name, text)| {
            let source = crate::contract::files::file_annotation(name);
            Ok((
                name.clone(),
                match parse_value(&source, text)? {
                    Some(t) => FileTemplate::References(t),
                    None => FileTemplate::Literal(text.clone()),
                },
            ))
        })
        .collect()
}

/// The files' templates with the answers they need; a failed answer a file needs is an error
/// naming the file (files have no ignore-missing: a half-written config is worse than none).
fn file_set(
    templates: Vec<(String, FileTemplate)>,
    answers: Answers,
) -> Result<FileSet, ResolveError> {
    let mut set = FileSet {
        templates,
        answers: HashMap::new(),
        env_writes: HashSet::new(),
    };
    let needed: HashSet<Request> = set.references().map(Request::of).collect();
    for (request, answer) in answers {
        if needed.contains(&request) {
            let secret = answer.map_err(|source| ResolveError::Store {
                var: "file".to_string(),
                reference: match &request {
                    Request::Read { path, .. }
                    | Request::ReadAws { arn: path, .. }
                    | Request::Write { path, .. } => path.clone(),
                },
                source,
            })?;
            set.answers.insert(request, secret);
        }
    }
    set.render()?;
    Ok(set)
}

fn from_path_request(p: &PathRef) -> Request {
    Request::Read {
        path: p.path.clone(),
        version: p.version,
    }
}

/// Each distinct request once, in first-use order.
fn distinct_requests<'a>(
    templates: &'a [(usize, Template)],
    file_references: impl Iterator<Item = &'a Reference>,
    from_paths: &[PathRef],
) -> Vec<Request> {
    let mut seen: HashSet<Request> = HashSet::new();
    templates
        .iter()
        .flat_map(|(_, t)| t.references().into_iter().map(Request::of))
        .chain(file_references.map(Request::of))
        .chain(from_paths.iter().map(from_path_request))
        .filter(|req| seen.insert(req.clone()))
        .collect()
}

/// Makes every request, `concurrency` at a time.
async fn fetch(stores: Stores<'_>, requests: Vec<Request>, concurrency: usize) -> Answers {
    futures::stream::iter(requests)
        .map(|req| async move {
            let answer = match (&req, stores.vault, stores.aws) {
                (Request::Read { path, version }, Some(client), _) => {
                    client.read(path, *version).await
                }
                (Request::Write { path, body }, Some(client), _) => {
                    client.write(path, body.as_deref()).await
                }
                (
                    Request::ReadAws {
                        arn,
                        version,
                        label,
                    },
                    _,
                    Some(aws),
                ) => aws.read(arn, *version, label.as_deref()).await,
                (Request::ReadAws { arn, .. }, _, None) => Err(no_store(arn, "AWS")),
                (Request::Read { path, .. } | Request::Write { path, .. }, None, _) => {
                    Err(no_store(path, "Vault/OpenBao"))
                }
            };
            (req, answer)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// The variables in input order, references replaced; missing ones removed under ignore-missing.
fn render_env(
    resolution: &mut Resolution,
    env: Vec<(String, String)>,
    templates: &[(usize, Template)],
    answers: &Answers,
    options: &ResolveOptions,
) -> Result<(), ResolveError> {
    let mut rendered: BTreeMap<usize, Option<String>> = BTreeMap::new();
    for (i, template) in templates {
        let var = &env[*i].0;
        let value = template.render(|r| {
            let answer = answers.get(&Request::of(r)).ok_or_else(|| no_answer(r));
            answer
                .and_then(|a| a.clone())
                .and_then(|secret| secret.get(&r.path, &r.key))
                .map_err(|source| (r.to_string(), source))
        });
        match value {
            Ok(v) => {
                rendered.insert(*i, Some(v));
            }
            Err((reference, source)) if options.ignore_missing && source.is_not_found() => {
                tracing::warn!(%var, %reference, error = %source, "secret missing, variable removed (ignore-missing)");
                resolution.removed.push(format!("{var}: {source}"));
                rendered.insert(*i, None);
            }
            Err((reference, source)) => {
                return Err(ResolveError::Store {
                    var: var.clone(),
                    reference,
                    source,
                });
            }
        }
    }
    for (i, (name, value)) in env.into_iter().enumerate() {
        match rendered.remove(&i) {
            Some(Some(v)) => resolution.env.push((name, v)),
            Some(None) => {}
            None => resolution.env.push((name, value)),
        }
    }
    Ok(())
}

/// Adds the keys of the from-path secrets. An explicit variable wins over a from-path key of
/// the same name, and an earlier from-path secret over a later one.
fn add_from_paths(
    resolution: &mut Resolution,
    from_paths: &[PathRef],
    answers: &Answers,
    options: &ResolveOptions,
) -> Result<(), ResolveError> {
    let mut names: HashSet<String> = resolution.env.iter().map(|(n, _)| n.clone()).collect();
    for p in from_paths {
        match answers.get(&from_path_request(p)) {
            Some(Ok(secret)) => {
                for (key, value) in &secret.data {
                    if let Some(why) = unfit_variable_name(key, &options.from_path_deny) {
                        return Err(ResolveError::FromPathKey {
                            path: p.to_string(),
                            key: key.clone(),
                            why,
                        });
                    }
                    if !names.insert(key.clone()) {
                        continue;
                    }
                    let value = match value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    resolution.env.push((key.clone(), value));
                }
            }
            Some(Err(e)) if options.ignore_missing && e.is_not_found() => {
                resolution.removed.push(format!("from-path {p}: {e}"));
            }
            Some(Err(e)) => {
                return Err(ResolveError::Store {
                    var: "from-path".to_string(),
                    reference: p.to_string(),
                    source: e.clone(),
                });
            }
            None => {}
        }
    }
    Ok(())
}

#[path = "resolve_renewal.rs"]
mod renewal;
pub use renewal::FileWrite;

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
