//! rotor-init end to end: a real service-account token from kube-apiserver, validated by a real
//! OpenBao through TokenReview; every reference form, every failure path, daemon mode, and a
//! canary value that must never reach rotor-init's own output.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::Result;
use common::{app_env, assert_no_leak, run, stderr};
use rotor_testkit::{BaoAdmin, Stack, StackOptions};
use serde_json::json;

const CANARY: &str = "canary-9d1f4e0b-never-log-me";
const AUDIENCE: &str = "rotor-init-test";

struct Fixture {
    stack: Stack,
    ns: String,
    token_file: PathBuf,
    other_token_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// A token handed to rotor-init in tests where it must never be printed or sent elsewhere.
const CANARY_TOKEN: &str = "hvs.canary-token-never-forwarded";

fn rotor_init() -> &'static str {
    env!("CARGO_BIN_EXE_rotor-init")
}

impl Fixture {
    async fn new() -> Result<Self> {
        let stack = Stack::start(StackOptions::default()).await?;
        let ns = stack.namespace("init").await?;
        stack.service_account(&ns, "app").await?;
        stack.service_account(&ns, "other").await?;
        stack.enable_bao_kubernetes_auth("kubernetes").await?;
        let bao = stack.bao_admin()?;
        bao.put_policy(
            "app",
            r#"
path "secret/data/*" { capabilities = ["read"] }
path "kv1/*" { capabilities = ["read"] }
path "pki/issue/*" { capabilities = ["create", "update"] }
path "sys/leases/renew" { capabilities = ["update"] }
"#,
        )
        .await?;
        bao.put_kubernetes_role(
            "kubernetes",
            "app",
            &["app"],
            &[&ns],
            &["app"],
            Some(AUDIENCE),
        )
        .await?;
        setup_secrets(&bao).await?;
        let dir = tempfile::tempdir()?;
        let token_file = dir.path().join("token");
        std::fs::write(
            &token_file,
            stack
                .service_account_token(&ns, "app", AUDIENCE, 3600)
                .await?,
        )?;
        let other_token_file = dir.path().join("other-token");
        std::fs::write(
            &other_token_file,
            stack
                .service_account_token(&ns, "other", AUDIENCE, 3600)
                .await?,
        )?;
        Ok(Self {
            stack,
            ns,
            token_file,
            other_token_file,
            _dir: dir,
        })
    }

    fn base_env(&self) -> HashMap<String, String> {
        HashMap::from([
            (
                "PATH".to_string(),
                std::env::var("PATH").unwrap_or_default(),
            ),
            ("ROTOR_ADDR".to_string(), self.stack.bao.addr.clone()),
            ("ROTOR_ROLE".to_string(), "app".to_string()),
            (
                "ROTOR_TOKEN_FILE".to_string(),
                self.token_file.display().to_string(),
            ),
            ("ROTOR_DEADLINE".to_string(), "10".to_string()),
        ])
    }
}

async fn setup_secrets(bao: &BaoAdmin) -> Result<()> {
    bao.put_kv2("secret", "db", json!({ "user": "app", "password": CANARY }))
        .await?;
    bao.put_kv2(
        "secret",
        "db",
        json!({ "user": "app", "password": "v2-password" }),
    )
    .await?;
    bao.put_kv2(
        "secret",
        "api",
        json!({ "key": "api-key-1", "region": "eu" }),
    )
    .await?;
    bao.put_kv2("secret", "gone", json!({ "k": "old" })).await?;
    bao.put_kv2("secret", "gone", json!({ "k": "new" })).await?;
    bao.write("secret/delete/gone", json!({ "versions": [1] }))
        .await?;
    bao.mount("kv1", "kv", json!({ "version": "1" })).await?;
    bao.write("kv1/legacy", json!({ "token": "legacy-value" }))
        .await?;
    bao.enable_pki("pki", "rotor.test", "web").await?;
    bao.write(
        "pki/roles/short",
        json!({ "allowed_domains": "rotor.test", "allow_subdomains": true, "ttl": "4s", "max_ttl": "4s", "generate_lease": true }),
    )
    .await?;
    Ok(())
}

fn assert_no_canary(out: &Output) {
    assert_no_leak(out, CANARY);
}

fn with(base: &HashMap<String, String>, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env = base.clone();
    for (k, v) in extra {
        env.insert((*k).to_string(), (*v).to_string());
    }
    env
}

#[tokio::test]
async fn resolves_every_reference_form_and_execs_the_app() -> Result<()> {
    let f = Fixture::new().await?;
    let env = with(
        &f.base_env(),
        &[
            ("DB_PASSWORD_V1", "vault:secret/data/db#password#1"),
            ("DB_PASSWORD", "vault:secret/data/db#password"),
            ("DB_PASSWORD_NO_DATA", "vault:secret/db#password"),
            (
                "DB_URL",
                "postgres://${vault:secret/data/db#user}:${bao:secret/db#password}@db:5432/app",
            ),
            ("API_KEY", "bao:secret/data/api#key"),
            ("LEGACY", "vault:kv1/legacy#token"),
            (
                "CERT",
                r#">>vault:pki/issue/web#certificate#{"common_name":"a.rotor.test"}"#,
            ),
            (
                "CERT_KEY",
                r#">>vault:pki/issue/web#private_key#{"common_name":"a.rotor.test"}"#,
            ),
            ("PLAIN", "http://vault:8200 costs $5"),
            ("ROTOR_FROM_PATH", "secret/data/api"),
            ("VAULT_TOKEN", "must-not-reach-the-app"),
            ("ROTOR_LOG_FORMAT", "json"),
        ],
    );
    let out = run(&env, "env", &["-0"]);
    assert!(out.status.success(), "rotor-init failed: {}", stderr(&out));
    let seen = app_env(&out);
    assert_eq!(
        seen["DB_PASSWORD_V1"], CANARY,
        "a pinned version reads that version"
    );
    assert_eq!(seen["DB_PASSWORD"], "v2-password");
    assert_eq!(
        seen["DB_PASSWORD_NO_DATA"], "v2-password",
        "KV v2 without /data/"
    );
    assert_eq!(seen["DB_URL"], "postgres://app:v2-password@db:5432/app");
    assert_eq!(seen["API_KEY"], "api-key-1");
    assert_eq!(seen["LEGACY"], "legacy-value", "KV v1");
    assert!(seen["CERT"].contains("BEGIN CERTIFICATE"));
    assert!(seen["CERT_KEY"].contains("PRIVATE KEY"));
    assert_eq!(
        seen["PLAIN"], "http://vault:8200 costs $5",
        "look-alikes are left alone"
    );
    assert_eq!(
        seen["region"], "eu",
        "from-path: every key becomes a variable"
    );
    assert_eq!(seen["key"], "api-key-1");
    assert!(
        !seen.contains_key("VAULT_TOKEN"),
        "store tokens are stripped"
    );
    assert!(
        seen.keys().all(|k| !k.starts_with("ROTOR_")),
        "ROTOR_* are stripped: {seen:?}"
    );
    // Each distinct (path, version) and each distinct write is one request:
    // db#1, secret/data/db, secret/db (another spelling, read once itself), kv1/legacy, api
    // (env and from-path share it), and one pki write -> 6.
    let err = stderr(&out);
    assert!(
        err.contains("\"requests\":6"),
        "request count in the log: {err}"
    );
    assert!(err.contains("\"variables\":8"), "{err}");
    assert_no_canary(&out);
    // The certificate and its key came from one response: the key matches the certificate.
    assert_cert_matches_key(&seen["CERT"], &seen["CERT_KEY"])?;
    Ok(())
}

fn assert_cert_matches_key(cert: &str, key: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("c.pem"), cert)?;
    std::fs::write(dir.path().join("k.pem"), key)?;
    let pubkey = |args: &[&str]| -> Result<Vec<u8>> {
        Ok(Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()?
            .stdout)
    };
    let from_cert = pubkey(&["x509", "-in", "c.pem", "-noout", "-pubkey"])?;
    let from_key = pubkey(&["pkey", "-in", "k.pem", "-pubout"])?;
    assert!(!from_cert.is_empty());
    assert_eq!(
        from_cert, from_key,
        "certificate and key come from one write"
    );
    Ok(())
}

/// One way rotor-init must refuse to start the app: the extra environment, the exit code, what
/// stderr says and what it must never say.
struct Refusal {
    what: &'static str,
    env: Vec<(String, String)>,
    command: &'static str,
    code: i32,
    says: &'static [&'static str],
    never_says: &'static [&'static str],
}

fn refusal(
    what: &'static str,
    env: &[(&str, &str)],
    code: i32,
    says: &'static [&'static str],
) -> Refusal {
    Refusal {
        what,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        command: "echo",
        code,
        says,
        never_says: &[],
    }
}

/// A plain-HTTP listener that answers every request with `answer` and closes; the count of
/// connections it got.
fn answering(answer: String) -> Result<(u16, std::sync::Arc<std::sync::atomic::AtomicUsize>)> {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = reached.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer.as_bytes());
        }
    });
    Ok((port, reached))
}

#[tokio::test]
async fn failures_are_clear_and_the_app_never_starts() -> Result<()> {
    let f = Fixture::new().await?;
    let base = f.base_env();
    let admin = f.stack.bao_admin()?;
    admin
        .put_kv2("secret", "big", json!({ "v": "B".repeat(200 * 1024) }))
        .await?;
    // Keys that together pass the kernel's ARG_MAX (400 of 6 KiB; OpenBao itself refuses JSON
    // with more than 1,000 strings; the 100,000-key case is a resolver test in rotor-core).
    let many: serde_json::Map<String, serde_json::Value> = (0..400)
        .map(|i| (format!("KEY_{i:03}"), json!("k".repeat(6 * 1024))))
        .collect();
    admin
        .put_kv2("secret", "many-keys", serde_json::Value::Object(many))
        .await?;
    let (garbage, _) = answering(
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello".to_string(),
    )?;
    // A store that redirects to another origin, which counts every connection it gets.
    let (elsewhere, reached) = answering(String::new())?;
    let (redirecting, _) = answering(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{elsewhere}/v1/secret/data/db\r\n\
         content-length: 0\r\nconnection: close\r\n\r\n"
    ))?;
    let closed = format!("http://127.0.0.1:{}", rotor_testkit::ports::free_port()?);
    let other_token = f.other_token_file.display().to_string();
    let garbage = format!("http://127.0.0.1:{garbage}");
    let redirecting = format!("http://127.0.0.1:{redirecting}");
    let token_auth = [("ROTOR_AUTH_METHOD", "token"), ("ROTOR_TOKEN", "t")];
    // One deadline for everything: 200 paths on a store that never answers stop at 2 s (per
    // request, 8 at a time, this took 50 s).
    let mut unanswered = refusal(
        "200 paths on a closed port, deadline 2 s",
        &[("ROTOR_ADDR", &closed), ("ROTOR_DEADLINE", "2")],
        69,
        &[],
    );
    unanswered.env.extend(
        token_auth
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    unanswered
        .env
        .extend((0..200).map(|i| (format!("S{i}"), format!("vault:secret/data/p{i}#k"))));
    let cases = vec![
        refusal(
            "a missing path names the variable, the reference and the status",
            &[("DB", "vault:secret/data/nope#password")],
            66,
            &["env DB", "vault:secret/data/nope#password", "404"],
        ),
        refusal(
            "a missing key on the secret holding the canary",
            &[("DB", "vault:secret/data/db#nokey")],
            66,
            &["no key \"nokey\""],
        ),
        refusal(
            "a percent-encoded path that would normalise into another path, refused before any request",
            &[("DB", "vault:secret/data/api/%2e%2e/db#password")],
            78,
            &["DB", "percent-encoding"],
        ),
        refusal(
            "a deleted version",
            &[("G", "vault:secret/data/gone#k#1")],
            66,
            &["version 1: that version was deleted"],
        ),
        refusal(
            "the wrong role (another ServiceAccount's real token)",
            &[
                ("DB", "vault:secret/data/db#password"),
                ("ROTOR_TOKEN_FILE", &other_token),
            ],
            77,
            &["login failed"],
        ),
        refusal(
            "a reference that does not parse",
            &[("DB", "vault:secret/data/db")],
            78,
            &["env DB", "expected"],
        ),
        refusal(
            "a token the store does not know (token auth): the token is refused, not the path",
            &[
                ("DB", "vault:secret/data/db#password"),
                ("ROTOR_AUTH_METHOD", "token"),
                ("ROTOR_TOKEN", "s.not-a-token-the-store-issued"),
            ],
            77,
            &["refused the token"],
        ),
        Refusal {
            never_says: &["BBBB"],
            ..refusal(
                "a value the kernel would refuse (over 128 KiB), named, not shown",
                &[("BIG", "vault:secret/data/big#v")],
                78,
                &["env BIG: its value is 204800 bytes"],
            )
        },
        Refusal {
            never_says: &["kkkk"],
            ..refusal(
                "from-path keys past ARG_MAX: the count and the cause, not E2BIG",
                &[("ROTOR_FROM_PATH", "secret/data/many-keys")],
                78,
                &["variables", "ARG_MAX"],
            )
        },
        refusal(
            "something that is not a store answers 200 with text",
            &[
                ("DB", "vault:secret/data/db#password"),
                ("ROTOR_ADDR", &garbage),
                token_auth[0],
                token_auth[1],
            ],
            76,
            &["not JSON"],
        ),
        refusal(
            "a redirect to another origin: the token never follows, the address is to fix (78)",
            &[
                ("DB", "vault:secret/data/db#password"),
                ("ROTOR_ADDR", &redirecting),
                ("ROTOR_AUTH_METHOD", "token"),
                ("ROTOR_TOKEN", CANARY_TOKEN),
            ],
            78,
            &["redirect"],
        ),
        unanswered,
        refusal(
            "the store down past the deadline",
            &[
                ("DB", "vault:secret/data/db#password"),
                ("ROTOR_ADDR", &closed),
                ("ROTOR_DEADLINE", "2"),
            ],
            69,
            &["gave up after"],
        ),
        Refusal {
            command: "/nonexistent/app",
            ..refusal(
                "a command that does not exist",
                &[("DB", "vault:secret/data/api#key")],
                127,
                &[],
            )
        },
    ];
    let marker = "APP-RAN";
    for case in &cases {
        let env: HashMap<String, String> =
            base.clone().into_iter().chain(case.env.clone()).collect();
        let started = Instant::now();
        let out = run(&env, case.command, &[marker]);
        let err = stderr(&out);
        let what = case.what;
        // Generous: every case here ends in seconds (deadlines are 2 s); 30 s catches a hang.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: took {:?}",
            started.elapsed()
        );
        assert_eq!(out.status.code(), Some(case.code), "{what}: {err}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(marker),
            "{what}: the app ran"
        );
        for needle in case.says {
            assert!(err.contains(needle), "{what}: no {needle:?} in {err}");
        }
        // The canary value itself is checked by assert_no_canary below.
        for secret in case.never_says.iter().chain([&CANARY_TOKEN]) {
            assert!(!err.contains(secret), "{what}: printed {secret:?}");
        }
        assert_no_canary(&out);
    }
    assert_eq!(
        reached.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request reached the origin the store redirected to"
    );
    Ok(())
}

/// `ROTOR_IGNORE_MISSING` removes the variable, warns with its name, and runs the app;
/// `ROTOR_PASSTHROUGH` keeps the variables it names.
#[tokio::test]
async fn ignore_missing_and_passthrough_start_the_app() -> Result<()> {
    let f = Fixture::new().await?;
    let base = f.base_env();
    let out = run(
        &with(
            &base,
            &[
                ("DB", "vault:secret/data/nope#password"),
                ("OK", "vault:secret/data/api#key"),
                ("ROTOR_IGNORE_MISSING", "true"),
            ],
        ),
        "env",
        &["-0"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = app_env(&out);
    assert!(!seen.contains_key("DB"));
    assert_eq!(seen["OK"], "api-key-1");
    assert!(stderr(&out).contains("DB"), "{}", stderr(&out));

    let out = run(
        &with(
            &base,
            &[
                ("VAULT_TOKEN", "kept"),
                ("ROTOR_PASSTHROUGH", "VAULT_TOKEN,ROTOR_ROLE"),
            ],
        ),
        "env",
        &["-0"],
    );
    let seen = app_env(&out);
    assert_eq!(seen.get("VAULT_TOKEN").map(String::as_str), Some("kept"));
    assert_eq!(seen.get("ROTOR_ROLE").map(String::as_str), Some("app"));
    assert!(!seen.contains_key("ROTOR_ADDR"));
    Ok(())
}

#[tokio::test]
async fn store_down_then_up_within_the_deadline_succeeds() -> Result<()> {
    let f = Fixture::new().await?;
    let env = with(
        &f.base_env(),
        &[
            ("DB", "vault:secret/data/db#password"),
            ("ROTOR_DEADLINE", "30"),
            ("ROTOR_REQUEST_TIMEOUT", "1"),
        ],
    );
    f.stack.bao.pause()?;
    let child = Command::new(rotor_init())
        .args(["--", "env", "-0"])
        .env_clear()
        .envs(&env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    f.stack.bao.resume()?;
    let out = child.wait_with_output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(app_env(&out)["DB"], "v2-password");
    assert!(
        stderr(&out).contains("retrying"),
        "it retried: {}",
        stderr(&out)
    );
    Ok(())
}

#[tokio::test]
async fn daemon_mode_stops_the_app_when_its_lease_ends() -> Result<()> {
    let f = Fixture::new().await?;
    let env = with(
        &f.base_env(),
        &[
            (
                "CERT",
                r#">>vault:pki/issue/short#certificate#{"common_name":"d.rotor.test"}"#,
            ),
            ("ROTOR_DAEMON", "true"),
            ("ROTOR_DAEMON_GRACE", "2"),
        ],
    );
    let started = Instant::now();
    let out = run(&env, "sleep", &["60"]);
    // SIGTERM from rotor-init: exit status 128 + 15.
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        stderr(&out).contains("can no longer be renewed"),
        "{}",
        stderr(&out)
    );

    // Without daemon mode no parent stays: the app runs as rotor-init's own process (execve).
    let child = Command::new(rotor_init())
        .args(["--", "sh", "-c", "echo $$"])
        .env_clear()
        .envs(with(&f.base_env(), &[("DB", "vault:secret/data/api#key")]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pid.to_string());
    Ok(())
}

#[test]
fn copy_puts_an_executable_copy_in_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(rotor_init())
        .args(["copy", &dir.path().display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let copied = dir.path().join("rotor-init");
    let out = Command::new(&copied).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rotor-init "));
    let out = Command::new(rotor_init())
        .args(["copy", "/nonexistent/dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(73));
}

#[tokio::test]
async fn approle_jwt_and_token_auth_log_in() -> Result<()> {
    let f = Fixture::new().await?;
    let bao = f.stack.bao_admin()?;
    let refs = [("DB", "vault:secret/data/api#key")];

    // AppRole, with the secret id from a file.
    bao.write("sys/auth/approle", json!({ "type": "approle" }))
        .await?;
    bao.write("auth/approle/role/ci", json!({ "token_policies": ["app"] }))
        .await?;
    let role_id = bao.read("auth/approle/role/ci/role-id").await?["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = bao
        .write("auth/approle/role/ci/secret-id", json!({}))
        .await?["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_file = f._dir.path().join("secret-id");
    std::fs::write(&secret_file, &secret_id)?;
    let mut env = with(&f.base_env(), &refs);
    env.insert("ROTOR_AUTH_METHOD".into(), "approle".into());
    env.insert("ROTOR_APPROLE_ROLE_ID".into(), role_id);
    env.insert(
        "ROTOR_APPROLE_SECRET_ID_FILE".into(),
        secret_file.display().to_string(),
    );
    let out = run(&env, "env", &["-0"]);
    assert!(out.status.success(), "approle: {}", stderr(&out));
    assert_eq!(app_env(&out)["DB"], "api-key-1");
    assert!(
        !stderr(&out).contains(&secret_id),
        "the secret id is never printed"
    );

    // JWT auth validating the ServiceAccount token with the apiserver's public key.
    let public_key = std::fs::read_to_string(f.stack.dir().join("service-account.pub"))?;
    bao.write("sys/auth/jwt", json!({ "type": "jwt" })).await?;
    bao.write("auth/jwt/config", json!({ "jwt_validation_pubkeys": [public_key], "bound_issuer": rotor_testkit::SERVICE_ACCOUNT_ISSUER })).await?;
    bao.write(
        "auth/jwt/role/app",
        json!({ "role_type": "jwt", "bound_audiences": [AUDIENCE], "user_claim": "sub",
                "bound_subject": format!("system:serviceaccount:{}:app", f.ns), "token_policies": ["app"] }),
    )
    .await?;
    let env = with(&f.base_env(), &[refs[0], ("ROTOR_AUTH_METHOD", "jwt")]);
    let out = run(&env, "env", &["-0"]);
    assert!(out.status.success(), "jwt: {}", stderr(&out));
    assert_eq!(app_env(&out)["DB"], "api-key-1");
    // Another ServiceAccount's token does not match the bound subject.
    let other = f.other_token_file.display().to_string();
    let out = run(&with(&env, &[("ROTOR_TOKEN_FILE", &other)]), "env", &["-0"]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));

    // A token from a file.
    let token_file = f._dir.path().join("store-token");
    std::fs::write(&token_file, rotor_testkit::ROOT_TOKEN)?;
    let token_path = token_file.display().to_string();
    let env = with(
        &f.base_env(),
        &[
            refs[0],
            ("ROTOR_AUTH_METHOD", "token"),
            ("ROTOR_TOKEN_FILE", &token_path),
        ],
    );
    let out = run(&env, "env", &["-0"]);
    assert!(out.status.success(), "token file: {}", stderr(&out));
    assert_eq!(app_env(&out)["DB"], "api-key-1");
    Ok(())
}

#[tokio::test]
async fn verifies_tls_with_the_injected_ca() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bao = rotor_testkit::OpenBao::start_tls(dir.path()).await?;
    bao.admin()?
        .put_kv2("secret", "db", json!({ "password": "tls-value" }))
        .await?;
    let ca = bao.ca_pem.clone().unwrap();
    let base = [
        ("PATH", "/usr/bin:/bin"),
        ("ROTOR_ADDR", bao.addr.as_str()),
        ("ROTOR_AUTH_METHOD", "token"),
        ("ROTOR_TOKEN", rotor_testkit::ROOT_TOKEN),
        ("ROTOR_DEADLINE", "10"),
        ("DB", "vault:secret/data/db#password"),
    ];
    let env: HashMap<String, String> = base
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // The CA as PEM (what the webhook injects): verified and read.
    let out = run(&with(&env, &[("ROTOR_CACERT_PEM", &ca)]), "env", &["-0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(app_env(&out)["DB"], "tls-value");
    assert!(!app_env(&out).contains_key("ROTOR_CACERT_PEM"));
    // Without the CA: refused at once (no retries until the deadline), saying what to set.
    let out = run(&env, "env", &["-0"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("ROTOR_CACERT"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("retrying"),
        "a certificate error is not retried"
    );
    // http:// to the HTTPS store: named at once as the address's mistake, not retried.
    let plain = bao.addr.replacen("https://", "http://", 1);
    let started = Instant::now();
    let out = run(
        &with(&env, &[("ROTOR_ADDR", &plain), ("ROTOR_CACERT_PEM", &ca)]),
        "env",
        &["-0"],
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("change it to https://"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("retrying"), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "before the deadline"
    );
    Ok(())
}

/// Tokens the store has issued and not revoked (root's view of the accessors).
async fn live_tokens(f: &Fixture) -> Result<usize> {
    Ok(f.stack
        .bao_admin()?
        .list("auth/token/accessors")
        .await?
        .len())
}

#[tokio::test]
async fn the_login_token_is_revoked_before_exec_unless_a_lease_hangs_from_it() -> Result<()> {
    let f = Fixture::new().await?;
    let before = live_tokens(&f).await?;
    let out = run(
        &with(&f.base_env(), &[("KEY", "vault:secret/data/api#key")]),
        "env",
        &["-0"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(app_env(&out)["KEY"], "api-key-1");
    assert_eq!(
        live_tokens(&f).await?,
        before,
        "the kubernetes login's token was revoked before exec"
    );
    // A dynamic secret's lease belongs to the token: revoking it would revoke the credentials.
    let out = run(
        &with(
            &f.base_env(),
            &[(
                "CERT",
                r#">>vault:pki/issue/short#certificate#{"common_name":"b.rotor.test"}"#,
            )],
        ),
        "env",
        &["-0"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The token the lease hangs from is kept (it expires with its own TTL).
    assert_eq!(
        live_tokens(&f).await?,
        before + 1,
        "a token with a lease is kept"
    );
    Ok(())
}

/// Lines of a child's stdout, gathered by a thread, waited for with a deadline.
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Lines {
    fn of(out: impl std::io::Read + Send + 'static) -> Self {
        use std::io::BufRead as _;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self(lines)
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn wait_for(&self, count: usize, prefix: &str) -> Vec<String> {
        // Generous: a re-read that fails under load is retried after 15 s (RETRY_AFTER), and
        // this binary runs ten stacks at once.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let got: Vec<String> = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with(prefix))
                .cloned()
                .collect();
            if got.len() >= count || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn cksum(content: &str) -> String {
    let mut child = Command::new("cksum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(content.as_bytes())
        .unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// Writes `text` to `path` as the kubelet updates a downward-API file: whole, by a rename.
fn replace(path: &std::path::Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[tokio::test]
async fn files_are_rendered_and_a_rotation_rewrites_them_in_place_and_signals_the_app() -> Result<()>
{
    use std::os::unix::fs::PermissionsExt as _;
    let f = Fixture::new().await?;
    let bao = f.stack.bao_admin()?;
    bao.put_kv2(
        "secret",
        "rot",
        json!({ "password": format!("{CANARY}-v1") }),
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let info = dir.path().join("pod");
    let out_dir = dir.path().join("files");
    std::fs::create_dir_all(info.join("files"))?;
    std::fs::create_dir_all(&out_dir)?;
    let issue = r#"{"common_name":"f.rotor.test"}"#;
    for (name, template) in [
        (
            "db.conf",
            "password=${vault:secret/data/rot#password}\n".to_string(),
        ),
        (
            "tls.crt",
            format!(">>vault:pki/issue/web#certificate#{issue}"),
        ),
        (
            "tls.key",
            format!(">>vault:pki/issue/web#private_key#{issue}"),
        ),
    ] {
        std::fs::write(info.join("files").join(name), template)?;
    }
    std::fs::write(info.join("versions"), "")?;
    let conf = out_dir.join("db.conf");
    let script = format!(
        "trap 'echo \"HUP $(cksum < {c})\"' HUP; echo \"START $$ $(cksum < {c})\"; while :; do sleep 0.1; done",
        c = conf.display()
    );
    let env = with(
        &f.base_env(),
        &[
            ("ROTOR_FILES", "db.conf,tls.crt,tls.key"),
            ("ROTOR_FILES_DIR", out_dir.to_str().unwrap()),
            ("ROTOR_POD_INFO_DIR", info.to_str().unwrap()),
            ("ROTOR_ON_ROTATION", "signal:SIGHUP"),
            ("ROTOR_LOG_LEVEL", "debug"),
        ],
    );
    let mut child = Command::new(rotor_init())
        .args(["--", "sh", "-c", &script])
        .env_clear()
        .envs(&env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let lines = Lines::of(child.stdout.take().unwrap());
    let logs = Lines::of(child.stderr.take().unwrap());
    let v1 = format!("password={CANARY}-v1\n");
    let start = lines.wait_for(1, "START ");
    assert_eq!(start.len(), 1, "the app did not start");
    assert!(start[0].ends_with(&cksum(&v1)), "{start:?}");
    assert_eq!(std::fs::read_to_string(&conf)?, v1);
    let mode = std::fs::metadata(&conf)?.permissions().mode() & 0o7777;
    assert_eq!(mode, 0o400);
    assert_cert_matches_key(
        &std::fs::read_to_string(out_dir.join("tls.crt"))?,
        &std::fs::read_to_string(out_dir.join("tls.key"))?,
    )?;

    // The reloader announces version 2 (the pod annotation, through the downward API).
    bao.put_kv2(
        "secret",
        "rot",
        json!({ "password": format!("{CANARY}-v2") }),
    )
    .await?;
    replace(&info.join("versions"), r#"{"secret/data/rot":2}"#);
    let v2 = format!("password={CANARY}-v2\n");
    let hups = lines.wait_for(1, "HUP ");
    assert_eq!(
        hups,
        vec![format!("HUP {}", cksum(&v2))],
        "rotor-init said:\n{}",
        logs.all().join("\n")
    );
    assert_eq!(std::fs::read_to_string(&conf)?, v2);

    // The same version again (another path added) is no rotation; version 3 is exactly one more.
    replace(
        &info.join("versions"),
        r#"{"secret/data/other":7,"secret/data/rot":2}"#,
    );
    let seen_nothing_new = |logs: &Lines| {
        logs.all()
            .iter()
            .any(|l| l.contains("none of the files' secrets is newer"))
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !seen_nothing_new(&logs) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen_nothing_new(&logs), "{:?}", logs.all());
    // A bad announcement (a version the store does not have) waits 15 s before it is tried
    // again; a new announcement behind it is tried at once.
    replace(&info.join("versions"), r#"{"secret/data/rot":9}"#);
    let failed = |logs: &Lines| {
        logs.all()
            .iter()
            .any(|l| l.contains("rotation: could not re-read or rewrite"))
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !failed(&logs) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(failed(&logs), "{:?}", logs.all());
    bao.put_kv2(
        "secret",
        "rot",
        json!({ "password": format!("{CANARY}-v3") }),
    )
    .await?;
    replace(&info.join("versions"), r#"{"secret/data/rot":3}"#);
    let announced = Instant::now();
    let v3 = format!("password={CANARY}-v3\n");
    let hups = lines.wait_for(2, "HUP ");
    let took = announced.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the valid announcement waited behind the bad one's retry: {took:?}"
    );
    assert_eq!(
        hups,
        vec![format!("HUP {}", cksum(&v2)), format!("HUP {}", cksum(&v3))]
    );
    assert_eq!(
        lines.wait_for(1, "START ").len(),
        1,
        "the app was never restarted"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    assert!(child.wait()?.code().is_some());
    let err = logs.all().join("\n");
    assert!(
        err.contains("rotation: read the new versions once"),
        "{err}"
    );
    assert!(!err.contains(CANARY), "the canary leaked:\n{err}");
    Ok(())
}

/// The app's view of rotor-init staying resident: its signals start at their defaults, orphans
/// it creates are adopted and reaped,
/// and `/proc/<ppid>/environ` shows none of rotor-init's `ROTOR_*` settings (it started with
/// ROTOR_ADDR and others). It polls (up to 10 s) until the orphans it saw
/// adopted are gone and none is left a zombie, then prints what it saw.
const PROBE: &str = r#"p=$PPID
for i in $(seq 30); do (sleep 1 &); done
adopted=0; n=0
while [ $n -lt 100 ]; do
  z=0; alive=0
  for f in /proc/[0-9]*/stat; do
    set -- $(cat "$f" 2>/dev/null)
    [ "$4" = "$p" ] && [ "$2" = "(sleep)" ] || continue
    if [ "$3" = Z ]; then z=$((z+1)); else alive=$((alive+1)); fi
  done
  [ $alive -gt $adopted ] && adopted=$alive
  [ $alive -eq 0 ] && [ $z -eq 0 ] && break
  sleep 0.1; n=$((n+1))
done
echo "adopted=$adopted zombies=$z"
grep '^SigIgn:' /proc/self/status
if tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -q '^ROTOR_'; then echo environ=exposed; else echo environ=clear; fi"#;

#[tokio::test]
async fn resident_rotor_init_reaps_orphans_and_its_environment_is_unreadable() -> Result<()> {
    let f = Fixture::new().await?;
    let env = with(
        &f.base_env(),
        &[
            ("DB", "vault:secret/data/api#key"),
            ("ROTOR_DAEMON", "true"),
        ],
    );
    // Started with SIGHUP ignored (nohup), as rotor-init may be: the app must still start with
    // the default disposition, or it could never trap the rotation signal. As root, the test's
    // CAP_SYS_PTRACE would read any process: drop it as a container does.
    let mut command = Command::new("nohup");
    if nix_is_root() {
        command.args(["setpriv", "--bounding-set=-sys_ptrace", "--"]);
    }
    command.arg(rotor_init());
    let out = command
        .args(["--", "sh", "-c", PROBE])
        .env_clear()
        .envs(&env)
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", stderr(&out));
    let adopted: usize = said
        .split_whitespace()
        .find_map(|w| w.strip_prefix("adopted="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(adopted > 0, "the orphans reached rotor-init: {said}");
    assert!(said.contains("zombies=0"), "every orphan reaped: {said}");
    let ignored = said
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .expect("the app's SigIgn line");
    assert_eq!(ignored & 1, 0, "SIGHUP is not ignored in the app: {said}");
    assert!(
        said.contains("environ=clear"),
        "rotor-init's ROTOR_* settings are not in its /proc/<pid>/environ: {said}"
    );
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        == Some("0")
}

/// Resident rotor-init forwards every delivery of a signal, not only the first of each kind, and
/// forwards SIGALRM and SIGCONT too (SIGALRM's default would end rotor-init when it is not PID 1
/// and leave the app unsupervised: exit 142). Each signal is sent once the app has shown it
/// handled the one before.
#[tokio::test]
async fn resident_rotor_init_forwards_every_signal_every_time() -> Result<()> {
    use std::io::BufRead as _;
    let f = Fixture::new().await?;
    let env = with(
        &f.base_env(),
        &[
            ("DB", "vault:secret/data/api#key"),
            ("ROTOR_DAEMON", "true"),
        ],
    );
    let app = r#"n=0
trap 'n=$((n+1)); echo "hup $n"' HUP
trap 'echo alrm' ALRM
trap 'echo cont' CONT
echo ready
while [ "$n" -lt 3 ]; do sleep 0.05; done
echo done"#;
    let mut child = Command::new(rotor_init())
        .args(["--", "sh", "-c", app])
        .env_clear()
        .envs(&env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let expect = |want: &str| -> Result<()> {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|e| anyhow::anyhow!("waiting for {want:?}: {e}"))?;
        anyhow::ensure!(line == want, "expected {want:?}, the app said {line:?}");
        Ok(())
    };
    use nix::sys::signal::{Signal, kill};
    expect("ready")?;
    kill(pid, Signal::SIGHUP)?;
    expect("hup 1")?;
    kill(pid, Signal::SIGHUP)?;
    expect("hup 2")?;
    kill(pid, Signal::SIGALRM)?;
    expect("alrm")?;
    kill(pid, Signal::SIGCONT)?;
    expect("cont")?;
    kill(pid, Signal::SIGHUP)?;
    expect("hup 3")?;
    expect("done")?;
    let status = child.wait()?;
    assert_eq!(
        status.code(),
        Some(0),
        "rotor-init exits with the app's code"
    );
    Ok(())
}
