//! The app the end-to-end tests run in pods on the real node. Its image holds this static binary
//! alone (no shell, no libc), so whatever it reports is what the container really got.
//!
//! `rotor-test-app [--exit] [--file PATH]... [--tls PORT CERT KEY] NAME...` prints one line per
//! line of evidence (with `--tls`, it serves TLS from the files, like nginx), then
//! either exits (`--exit`, for init containers) or waits for SIGTERM/SIGINT, logs it and exits 0.
//! On SIGHUP it logs it and prints the files' lines again (an app reloading its configuration):
//!
//! ```text
//! app: pid=1 uid=1000 gid=3000 ppid=0
//! app: env DB_PASSWORD len=14 prefix=s3c fnv=8c2b1f0e9a7d6c51
//! app: env MISSING unset
//! app: rotor-vars=0 literal-references=0
//! app: received SIGTERM, exiting
//! ```
//!
//! Values are never printed whole: a 3-character prefix, the length and an FNV-1a digest let a
//! test check the exact value without the log carrying it.

mod tls;

use std::io::Write as _;

use nix::sys::signal::{SigSet, Signal};
use rotor_test_app::{env_line, file_line};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let exit_at_once = args.first().is_some_and(|a| a == "--exit");
    if exit_at_once {
        args.remove(0);
    }
    let mut files = Vec::new();
    while args.first().is_some_and(|a| a == "--file") && args.len() > 1 {
        files.push(args.remove(1));
        args.remove(0);
    }
    let tls_files = match args.first().map(String::as_str) {
        Some("--tls") if args.len() >= 4 => {
            let mut taken: Vec<String> = args.drain(..4).skip(1).collect();
            let key = taken.pop().unwrap_or_default();
            let cert = taken.pop().unwrap_or_default();
            let port = taken.pop().and_then(|p| p.parse().ok()).unwrap_or(8443);
            Some(tls::TlsFiles { port, cert, key })
        }
        _ => None,
    };
    // Block the signals before anything else, so none is lost between the report and the wait
    // (as PID 1 a blocked signal is still delivered; an unhandled default one would be dropped).
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGHUP);
    let blocked = signals.thread_block();

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", identity_line());
    for name in &args {
        let _ = writeln!(
            out,
            "{}",
            env_line(name, std::env::var(name).ok().as_deref())
        );
    }
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let rotor_vars = vars.iter().filter(|(k, _)| k.starts_with("ROTOR_")).count();
    let literal = vars
        .iter()
        .filter(|(_, v)| v.contains("vault:") || v.contains("bao:"))
        .count();
    let _ = writeln!(
        out,
        "app: rotor-vars={rotor_vars} literal-references={literal}"
    );
    print_files(&mut out, &files);
    let served = tls_files.as_ref().map(|t| start_tls(&mut out, t));
    let _ = out.flush();
    drop(out);
    if exit_at_once {
        return;
    }
    if let Err(e) = blocked {
        eprintln!("app: blocking SIGTERM failed: {e}");
        std::process::exit(70);
    }
    loop {
        match signals.wait() {
            Ok(Signal::SIGHUP) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "app: received SIGHUP, reloading");
                print_files(&mut out, &files);
                if let (Some(t), Some(Some(served))) = (&tls_files, &served) {
                    match tls::load(t) {
                        Ok((config, line)) => {
                            if let Ok(mut current) = served.write() {
                                *current = config;
                            }
                            let _ = writeln!(out, "{line}");
                        }
                        Err(e) => {
                            let _ = writeln!(
                                out,
                                "app: tls reload failed, serving the previous certificate: {e}"
                            );
                        }
                    }
                }
                let _ = out.flush();
            }
            Ok(signal) => {
                println!("app: received {}, exiting", signal.as_str());
                return;
            }
            Err(e) => {
                eprintln!("app: waiting for a signal failed: {e}");
                std::process::exit(70);
            }
        }
    }
}

/// Loads the certificate and serves it; `None` (and a line saying why) when it cannot.
fn start_tls(out: &mut std::io::StdoutLock<'_>, files: &tls::TlsFiles) -> Option<tls::Served> {
    let started = tls::load(files).and_then(|(config, line)| {
        let served = std::sync::Arc::new(std::sync::RwLock::new(config));
        tls::serve(files.port, served.clone()).map(|()| (served, line))
    });
    match started {
        Ok((served, line)) => {
            let _ = writeln!(out, "{line}");
            Some(served)
        }
        Err(e) => {
            let _ = writeln!(out, "app: tls not served: {e}");
            None
        }
    }
}

fn print_files(out: &mut std::io::StdoutLock<'_>, files: &[String]) {
    for path in files {
        let _ = writeln!(
            out,
            "{}",
            file_line(path, std::fs::read(path).ok().as_deref())
        );
    }
    let _ = out.flush();
}

/// `app: pid=.. uid=.. gid=.. ppid=..` from /proc (no libc calls needed).
fn identity_line() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "app: pid={} uid={} gid={} ppid={}",
        std::process::id(),
        field("Uid:"),
        field("Gid:"),
        field("PPid:")
    )
}
