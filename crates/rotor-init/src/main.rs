//! rotor-init: log in to Vault/OpenBao as the pod, resolve every `vault:` reference in the
//! environment, strip rotor's own settings and credentials, and `execve` the app.
//!
//! ```text
//! rotor-init copy DIR              copy this binary to DIR/rotor-init
//! rotor-init [--] COMMAND [ARGS]   resolve the environment, then exec COMMAND
//! ```

mod aws;
mod config;
mod copy_self;
mod daemon;
mod env_limits;
mod exit_code;
mod files;
mod rotation;

use std::collections::HashMap;
use std::os::unix::process::CommandExt as _;
use std::process::ExitCode;

use rotor_core::contract::OnRotation;
use rotor_core::resolve::{ResolveError, ResolveOptions, Stores, resolve_from};
use rotor_core::store::{StoreClient, StoreError};

use crate::config::Settings;

const USAGE: &str = "usage: rotor-init copy DIR | rotor-init [--] COMMAND [ARGS...]";

fn main() -> ExitCode {
    rotor_core::install_crypto_provider();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("copy") => return copy(&args[1..]),
        Some("--") => {
            args.remove(0);
        }
        Some("--help" | "-h") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("--version") => {
            println!("rotor-init {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    if args.is_empty() {
        eprintln!("rotor-init: no command to run; {USAGE}");
        return ExitCode::from(exit_code::CONFIG);
    }
    ExitCode::from(run(args))
}

fn copy(args: &[String]) -> ExitCode {
    let [dir] = args else {
        eprintln!("rotor-init copy: expected exactly one directory; {USAGE}");
        return ExitCode::from(exit_code::CONFIG);
    };
    match copy_self::copy_self(std::path::Path::new(dir)) {
        Ok(target) => {
            eprintln!("rotor-init: copied to {}", target.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rotor-init copy: {e}");
            ExitCode::from(exit_code::COPY_FAILED)
        }
    }
}

/// rotor-init's work in stages, each returning what the next needs or the exit code that stops
/// before the app starts (the reason is logged where it is found).
fn run(command: Vec<String>) -> u8 {
    let staged = configure().and_then(|c| {
        let ready = prepare(&c.settings, c.env, &command, &c.runtime)?;
        Ok(start_app(&c.settings, ready, &command, c.runtime))
    });
    staged.unwrap_or_else(|code| code)
}

/// What stage 1 gives: the settings, the process environment and the async runtime.
struct Configured {
    settings: Settings,
    env: Vec<(String, String)>,
    runtime: tokio::runtime::Runtime,
}

/// Stage 1: the settings from the environment, logging, the runtime.
fn configure() -> Result<Configured, u8> {
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let env_map: HashMap<String, String> = env.iter().cloned().collect();
    let settings = Settings::from_env(&env_map).map_err(|e| {
        eprintln!("rotor-init: configuration error: {e}");
        exit_code::CONFIG
    })?;
    rotor_core::logging::init_logging(settings.init.log_format, settings.init.log_level);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            tracing::error!(error = %e, "cannot start the async runtime");
            exit_code::CONFIG
        })?;
    Ok(Configured {
        settings,
        env,
        runtime,
    })
}

/// What the app starts with: the resolved environment, the leases daemon mode renews, the
/// client logged in, and what watches the files' secrets in signal mode.
struct Ready {
    client: StoreClient,
    env: Vec<(String, String)>,
    leases: Vec<rotor_core::store::Lease>,
    rotation: Option<rotation::Rotation>,
}

/// Stage 2: templates read, every reference resolved within one deadline, the environment
/// checked against the kernel's limits, the files written.
fn prepare(
    settings: &Settings,
    env: Vec<(String, String)>,
    command: &[String],
    runtime: &tokio::runtime::Runtime,
) -> Result<Ready, u8> {
    let app_env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| !settings.init.strips(k))
        .collect();
    let templates = files::read_templates(&settings.init.pod_info_dir, &settings.init.files)
        .map_err(|e| {
            tracing::error!(error = %e, "the app is not started");
            exit_code::CONFIG
        })?;
    // One deadline for the whole resolution (login, every read and write, retries included),
    // not per request: many failing paths cannot add up past it.
    let deadline = settings.init.deadline;
    let (client, resolution) = runtime.block_on(async {
        tokio::time::timeout(deadline, resolve(settings, app_env, &templates))
            .await
            .unwrap_or_else(|_| {
                tracing::error!(deadline_s = deadline.as_secs(), "the store did not answer everything within ROTOR_DEADLINE; the app is not started");
                Err(exit_code::STORE_UNAVAILABLE)
            })
    })?;
    if let Err(e) = env_limits::check(&resolution.env, command, env_limits::arg_max()) {
        tracing::error!(error = %e, "the environment cannot be passed to the app; the app is not started");
        return Err(exit_code::CONFIG);
    }
    let rotor_core::resolve::Resolution {
        env, leases, files, ..
    } = resolution;
    write_files(settings, &files)?;
    let reissued = files.renewable_lease_ids();
    let rotation = rotation_of(settings, &client, files);
    // In signal mode the files' own credentials are issued again before they end, not renewed
    // (and never a reason to stop the app); the env's leases are daemon mode's as before.
    let leases = match rotation {
        Some(_) => leases
            .into_iter()
            .filter(|l| !reissued.contains(&l.id))
            .collect(),
        None => leases,
    };
    Ok(Ready {
        client,
        env,
        leases,
        rotation,
    })
}

/// Stage 3: the login token revoked when nothing needs it, then the app: exec'd (rotor-init
/// is gone), or supervised in daemon and signal mode. Returns the exit code to leave with.
fn start_app(
    settings: &Settings,
    ready: Ready,
    command: &[String],
    runtime: tokio::runtime::Runtime,
) -> u8 {
    let Ready {
        mut client,
        env,
        leases,
        rotation,
    } = ready;
    let stays = settings.init.daemon || rotation.is_some();
    if !stays && leases.is_empty() {
        revoke_login_token(settings, &mut client, &runtime);
    }
    let program = &command[0];
    let mut cmd = std::process::Command::new(program);
    cmd.args(&command[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));
    if stays {
        tracing::info!(%program, leases = leases.len(), signal_mode = rotation.is_some(), "starting the app under rotor-init (daemon or signal mode)");
        daemon::harden();
        let grace = settings.init.daemon_grace;
        let code = runtime.block_on(async {
            match daemon::supervise(&mut cmd, client, leases, grace, rotation).await {
                Ok(code) => code,
                Err(e) => {
                    tracing::error!(%program, error = %e, "cannot start the app");
                    i32::from(exec_error_code(&e))
                }
            }
        });
        return u8::try_from(code.clamp(0, 255)).unwrap_or(1);
    }
    drop(runtime);
    tracing::info!(%program, "exec");
    // On success exec does not return: the app replaces rotor-init as the process.
    let err = cmd.exec();
    eprintln!("rotor-init: cannot exec {program:?}: {err}");
    exec_error_code(&err)
}

/// The token rotor-init logged in with is of no use to the app: revoked before exec, unless
/// daemon mode keeps renewing with it, signal mode re-reads with it, or a dynamic secret's lease
/// hangs from it (revoking the token would revoke those credentials too; the caller decides). A
/// token the pod was given (token auth) is not rotor-init's to revoke.
fn revoke_login_token(
    settings: &Settings,
    client: &mut StoreClient,
    runtime: &tokio::runtime::Runtime,
) {
    let minted = !matches!(settings.auth, rotor_core::store::Auth::Token(_));
    if !minted || client.token().is_none() {
        return;
    }
    let revoke = runtime.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(2), client.revoke_self()).await
    });
    match revoke {
        Ok(Ok(())) => tracing::debug!("login token revoked"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not revoke the login token; it expires with its TTL")
        }
        Err(_) => tracing::warn!("revoking the login token timed out; it expires with its TTL"),
    }
}

/// Renders and writes the files (none: nothing to do); the exit code when they cannot be.
fn write_files(settings: &Settings, file_set: &rotor_core::resolve::FileSet) -> Result<(), u8> {
    if file_set.is_empty() {
        return Ok(());
    }
    let dir = std::path::Path::new(&settings.init.files_dir);
    let written = file_set
        .render()
        .map_err(|e| e.to_string())
        .and_then(|rendered| {
            files::write_all(dir, settings.init.files_mode, &rendered).map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        tracing::error!(error = %e, "the files cannot be written; the app is not started");
        return Err(exit_code::CANT_CREATE);
    }
    tracing::info!(files = settings.init.files.len(), dir = %settings.init.files_dir, mode = format!("{:04o}", settings.init.files_mode), "wrote the files");
    Ok(())
}

/// In signal mode with files that read secrets at their current version, or render `>>`
/// credentials that end: what watches for their rotation and issues those again. `None`
/// otherwise (nothing could change in place).
fn rotation_of(
    settings: &Settings,
    client: &StoreClient,
    files: rotor_core::resolve::FileSet,
) -> Option<rotation::Rotation> {
    let OnRotation::Signal(signal) = settings.init.on_rotation else {
        return None;
    };
    if files.watched_paths().is_empty()
        && files
            .renewable_writes(std::time::SystemTime::now())
            .is_empty()
    {
        tracing::info!(
            "on-rotation is signal, but no file reads a secret at its current version or renders a credential that ends: nothing to watch"
        );
        return None;
    }
    let signal = signal.name().parse::<nix::sys::signal::Signal>().ok()?;
    Some(rotation::Rotation::new(
        files,
        client.clone(),
        settings.auth.clone(),
        signal,
        &settings.init,
    ))
}

async fn resolve(
    settings: &Settings,
    app_env: Vec<(String, String)>,
    files: &[(String, String)],
) -> Result<(StoreClient, rotor_core::resolve::Resolution), u8> {
    let started = std::time::Instant::now();
    let mut client = StoreClient::new(settings.store.clone()).map_err(|e| {
        tracing::error!(error = %e, "store client");
        exit_code::CONFIG
    })?;
    let references = rotor_core::resolve::parse_environment(&app_env).map_err(|e| {
        tracing::error!(error = %e, "a reference does not parse");
        exit_code::CONFIG
    })?;
    if references.is_empty() && settings.init.from_path.is_empty() && files.is_empty() {
        tracing::info!("no references in the environment; nothing to resolve");
        return Ok((
            client,
            rotor_core::resolve::Resolution {
                env: app_env,
                ..Default::default()
            },
        ));
    }
    let (reads_vault, first_arn) =
        rotor_core::resolve::store_families(&app_env, files).map_err(|e| {
            tracing::error!(error = %e, "a reference does not parse");
            exit_code::CONFIG
        })?;
    let aws = match first_arn {
        Some(arn) => Some(aws::login(&arn).await?),
        None => None,
    };
    if reads_vault || !settings.init.from_path.is_empty() {
        client.login(&settings.auth).await.map_err(|e| {
            tracing::error!(method = settings.auth.method(), addr = %settings.store.addr, error = %e, "login failed");
            login_error_code(&e)
        })?;
    }
    let options = ResolveOptions {
        ignore_missing: settings.init.ignore_missing,
        concurrency: settings.init.concurrency,
        from_path_deny: settings.init.from_path_deny.clone(),
    };
    let stores = Stores {
        vault: Some(&client),
        aws: aws.as_ref(),
    };
    let resolution = match resolve_from(stores, app_env, files, &settings.init.from_path, options)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            // A 403 with token auth may mean the token itself is refused: ask the store.
            let refused = e
                .store_error()
                .is_some_and(StoreError::is_permission_denied)
                && matches!(client.token_accepted().await, Ok(false));
            if refused {
                tracing::error!(error = %e, "the store refused the token; the app is not started");
                return Err(exit_code::AUTH);
            }
            tracing::error!(error = %e, "cannot resolve the environment; the app is not started");
            return Err(resolve_error_code(&e));
        }
    };
    tracing::info!(
        variables = resolution.resolved,
        requests = resolution.requests,
        removed = resolution.removed.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "resolved the environment"
    );
    Ok((client, resolution))
}

pub(crate) fn login_error_code(e: &StoreError) -> u8 {
    if e.is_setup() {
        exit_code::CONFIG
    } else if matches!(e, StoreError::Decode { .. }) {
        exit_code::PROTOCOL
    } else if e.is_unavailable() {
        exit_code::STORE_UNAVAILABLE
    } else {
        exit_code::AUTH
    }
}

fn resolve_error_code(e: &ResolveError) -> u8 {
    match e.store_error() {
        None => exit_code::CONFIG,
        Some(e) if e.is_setup() => exit_code::CONFIG,
        Some(StoreError::Decode { .. }) => exit_code::PROTOCOL,
        Some(e) if e.is_unavailable() => exit_code::STORE_UNAVAILABLE,
        Some(_) => exit_code::MISSING_SECRET,
    }
}

fn exec_error_code(e: &std::io::Error) -> u8 {
    if e.kind() == std::io::ErrorKind::NotFound {
        exit_code::EXEC_NOT_FOUND
    } else {
        exit_code::EXEC_FAILED
    }
}
