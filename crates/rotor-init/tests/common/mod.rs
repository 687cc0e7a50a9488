//! What rotor-init's integration tests share: running the binary with exactly an environment,
//! and reading what the app and rotor-init printed.

use std::collections::HashMap;
use std::process::{Command, Output};

/// Runs rotor-init with exactly `env`, then `app` with `args`.
pub fn run(env: &HashMap<String, String>, app: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rotor-init"))
        .arg("--")
        .arg(app)
        .args(args)
        .env_clear()
        .envs(env)
        .output()
        .expect("running rotor-init")
}

/// The app's environment, as `env -0` printed it.
pub fn app_env(out: &Output) -> HashMap<String, String> {
    String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `canary` (a secret value) is nowhere in rotor-init's output.
pub fn assert_no_leak(out: &Output, canary: &str) {
    let err = stderr(out);
    assert!(
        !err.contains(canary),
        "the canary leaked into rotor-init's output:\n{err}"
    );
}
