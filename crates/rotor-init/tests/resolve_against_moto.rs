//! rotor-init against AWS's services as moto serves them (Secrets Manager, SSM Parameter Store,
//! STS): the pod's web identity token exchanged at STS, every AWS reference form, the failures a
//! user meets (an unknown ARN, a region mismatch, a missing key, no identity, throttling, a value
//! too large), and a canary value that must never reach rotor-init's own output.
//!
//! moto's STS accepts any web identity token (it does not verify the JWT), so what is checked
//! here is rotor-init's side of the exchange: the token read from its file, the signed reads
//! with the credentials STS answered.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use common::{app_env, assert_no_leak, stderr};
use rotor_testkit::moto::{Moto, MotoAdmin};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const CANARY: &str = "canary-aws-5c1e-never-log-me";
const REGION: &str = "eu-west-1";

struct Fixture {
    moto: Moto,
    admin: MotoAdmin,
    token_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let moto = Moto::start(dir.path()).await?;
        let admin = moto.admin()?;
        let token_file = dir.path().join("token");
        // The shape of a projected ServiceAccount token (moto does not verify it).
        std::fs::write(
            &token_file,
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXBwOmFwcCJ9.c2ln",
        )?;
        Ok(Self {
            moto,
            admin,
            token_file,
            _dir: dir,
        })
    }

    fn env(&self, endpoint: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            // Vault's settings are there as the webhook always sets them; no Vault is asked.
            ("ROTOR_ADDR", "http://127.0.0.1:1".to_string()),
            ("ROTOR_ROLE", "app".to_string()),
            ("ROTOR_DEADLINE", "10".to_string()),
            ("AWS_ENDPOINT_URL", endpoint.to_string()),
            (
                "AWS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/app".to_string(),
            ),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                self.token_file.display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        env
    }
}

/// rotor-init with exactly `env`, then `env -0` (the app prints its environment).
fn run(env: &HashMap<String, String>) -> Output {
    common::run(env, "env", &["-0"])
}

fn assert_no_canary(out: &Output) {
    assert_no_leak(out, CANARY);
}

#[tokio::test]
async fn ten_references_over_five_secrets_are_read_with_the_pods_web_identity() -> Result<()> {
    let f = Fixture::new().await?;
    let a = &f.admin;
    let db = a
        .create_secret(
            REGION,
            "team/db",
            &format!(r#"{{"user":"app","password":"{CANARY}"}}"#),
        )
        .await?;
    a.put_secret_value(REGION, &db, r#"{"user":"app","password":"rotated"}"#)
        .await?;
    let api = a.create_secret(REGION, "team/api", "plain-api-key").await?;
    a.put_parameter(REGION, "/app/url", "https://one.example")
        .await?;
    a.put_parameter(REGION, "/app/url", "https://two.example")
        .await?;
    a.put_parameter(REGION, "plainname", r#"{"k":"v"}"#).await?;
    // The name without moto's random suffix: a partial ARN, as users write them.
    let db_partial = db.rsplit_once('-').unwrap().0.to_string();
    let url = "arn:aws:ssm:eu-west-1:123456789012:parameter/app/url";
    let plain = "arn:aws:ssm:eu-west-1:123456789012:parameter/plainname";
    let before = f.moto.api_requests()?;
    let refs: Vec<(&str, String)> = vec![
        ("DB_USER", format!("{db}#user")),
        ("DB_PASSWORD", format!("{db_partial}#password")),
        ("DB_PASSWORD_BEFORE", format!("{db}#password#AWSPREVIOUS")),
        ("DB_JSON", db.clone()),
        (
            "DSN",
            format!("postgres://${{{db}#user}}:${{{db}#password}}@db/app"),
        ),
        ("API_KEY", api.clone()),
        ("URL", url.to_string()),
        ("URL_V1", format!("{url}##1")),
        ("PLAIN_K", format!("{plain}#k")),
        ("PLAIN", plain.to_string()),
    ];
    let extra: Vec<(&str, &str)> = refs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run(&f.env(&f.moto.addr, &extra));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_canary(&out);
    let got = app_env(&out);
    assert_eq!(got["DB_USER"], "app");
    assert_eq!(got["DB_PASSWORD"], "rotated");
    assert_eq!(got["DB_PASSWORD_BEFORE"], CANARY);
    assert_eq!(got["DB_JSON"], r#"{"user":"app","password":"rotated"}"#);
    assert_eq!(got["DSN"], "postgres://app:rotated@db/app");
    assert_eq!(got["API_KEY"], "plain-api-key");
    assert_eq!(got["URL"], "https://two.example");
    assert_eq!(got["URL_V1"], "https://one.example");
    assert_eq!(got["PLAIN_K"], "v");
    assert_eq!(got["PLAIN"], r#"{"k":"v"}"#);
    assert!(!got.keys().any(|k| k.starts_with("ROTOR_")), "{got:?}");
    // One STS exchange and one read per distinct (secret, version): db (by full and partial ARN,
    // two texts), db at AWSPREVIOUS, api, url, url at 1, plainname.
    let requests = f.moto.api_requests()? - before;
    assert_eq!(requests, 1 + 7, "{}", stderr(&out));
    Ok(())
}

#[tokio::test]
async fn what_users_get_wrong_is_refused_with_the_arn_the_region_and_the_fix() -> Result<()> {
    let f = Fixture::new().await?;
    let db = f
        .admin
        .create_secret("us-east-1", "db", &format!(r#"{{"password":"{CANARY}"}}"#))
        .await?;
    // (case, the reference, more environment, exit code, what stderr says)
    type Case<'a> = (&'a str, String, &'a [(&'a str, &'a str)], u8, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            "unknown ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope".to_string(),
            &[],
            66,
            &[
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope",
                "ResourceNotFoundException",
            ],
        ),
        (
            "region mismatch",
            db.replace("us-east-1", "us-west-2"),
            &[],
            66,
            &["region us-west-2", "ResourceNotFoundException"],
        ),
        (
            "missing key",
            format!("{db}#user"),
            &[],
            66,
            &["no key \"user\""],
        ),
        (
            "unknown stage",
            format!("{db}#password#NOSUCHSTAGE"),
            &[],
            66,
            &["ResourceNotFoundException"],
        ),
        (
            "no identity",
            format!("{db}#password"),
            &[("AWS_ROLE_ARN", ""), ("AWS_WEB_IDENTITY_TOKEN_FILE", "")],
            78,
            &["no AWS identity", "never takes static access keys"],
        ),
        (
            "token file missing",
            format!("{db}#password"),
            &[("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token")],
            78,
            &["/nonexistent/token"],
        ),
        (
            "malformed ARN",
            "arn:aws:secretsmanager:us-east-1:12345:secret:db".to_string(),
            &[],
            78,
            &["12-digit AWS account id"],
        ),
    ];
    for (name, reference, extra, code, says) in cases {
        let mut env = f.env(&f.moto.addr, extra);
        env.insert("SECRET".to_string(), reference.clone());
        let out = run(&env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(i32::from(code)), "{name}: {err}");
        for s in says {
            assert!(err.contains(s), "{name}: {s:?} not in:\n{err}");
        }
        assert_no_canary(&out);
        assert!(out.stdout.is_empty(), "{name}: the app did not start");
    }
    Ok(())
}

/// A proxy in front of moto that answers `ThrottlingException` to the first `throttled` API
/// requests (every one when `usize::MAX`) and passes the rest through; counts what it throttled.
async fn throttling_proxy(moto: &str, throttled: usize) -> Result<(String, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = format!("http://{}", listener.local_addr()?);
    let upstream = moto.trim_start_matches("http://").to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let Some(request) = read_request(&mut client).await else {
                        return;
                    };
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let is_sts =
                        String::from_utf8_lossy(&request).contains("AssumeRoleWithWebIdentity");
                    let answer = if n < throttled && !is_sts {
                        let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
                        format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
                    } else {
                        seen.fetch_sub(usize::from(n >= throttled || is_sts), Ordering::SeqCst);
                        let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                            return;
                        };
                        if up.write_all(&request).await.is_err() {
                            return;
                        }
                        let mut answer = Vec::new();
                        let _ = up.read_to_end(&mut answer).await;
                        answer
                    };
                    if client.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, count))
}

/// One HTTP/1.1 request (head and a Content-Length body), rewritten to close the upstream
/// connection after its answer.
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).await.ok()?;
    let head = String::from_utf8_lossy(&buf).replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    Some(request)
}

// Multi-threaded: the proxy answers while this thread waits for rotor-init.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_within_the_deadline_and_then_reported() -> Result<()> {
    let f = Fixture::new().await?;
    let db = f
        .admin
        .create_secret(REGION, "db", r#"{"password":"p"}"#)
        .await?;
    // Throttled twice, then answered: the app starts.
    let (proxy, throttled) = throttling_proxy(&f.moto.addr, 2).await?;
    let out = run(&f.env(&proxy, &[("SECRET", &format!("{db}#password"))]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(app_env(&out)["SECRET"], "p");
    assert_eq!(
        throttled.load(Ordering::SeqCst),
        2,
        "both throttled answers were seen"
    );
    assert!(
        stderr(&out).contains("ThrottlingException"),
        "the retries are logged"
    );
    // Throttled for ever: rotor-init gives up at its deadline, as for a store that is down.
    let (proxy, _) = throttling_proxy(&f.moto.addr, usize::MAX).await?;
    let started = std::time::Instant::now();
    let out = run(&f.env(
        &proxy,
        &[
            ("SECRET", &format!("{db}#password")),
            ("ROTOR_DEADLINE", "3"),
        ],
    ));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ThrottlingException"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "bounded by the deadline"
    );
    Ok(())
}

#[tokio::test]
async fn a_value_too_large_for_the_environment_is_refused_without_printing_it() -> Result<()> {
    let f = Fixture::new().await?;
    // 200 KiB: more than one environment string may hold (128 KiB).
    let huge = format!("{CANARY}{}", "x".repeat(200 * 1024));
    let arn = f.admin.create_secret(REGION, "huge", &huge).await?;
    let out = run(&f.env(&f.moto.addr, &[("HUGE", &arn)]));
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("HUGE"), "{}", stderr(&out));
    assert_no_canary(&out);
    Ok(())
}

/// The text of the first `<tag>` in an XML answer.
fn xml(doc: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = doc.find(&open).expect(tag) + open.len();
    let end = doc[start..].find(&format!("</{tag}>")).expect(tag);
    doc[start..start + end].to_string()
}

/// A stand-in for the EKS Pod Identity agent (not available off EKS): answers each GET whose
/// Authorization is `token` with `credentials` (JSON, as the agent does), 401 otherwise;
/// counts the authorised answers.
async fn pod_identity_agent(
    token: String,
    credentials: String,
) -> Result<(String, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let uri = format!("http://{}/v1/credentials", listener.local_addr()?);
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let Some(request) = read_request(&mut s).await else {
                continue;
            };
            let head = String::from_utf8_lossy(&request).to_string();
            let authorised = head.lines().any(|l| {
                l.to_ascii_lowercase().starts_with("authorization:") && l[14..].trim() == token
            });
            let answer = if authorised {
                count.fetch_add(1, Ordering::SeqCst);
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{credentials}",
                    credentials.len()
                )
            } else {
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    Ok((uri, served))
}

/// With IAM enforced by moto: credentials from the Pod Identity agent (a role moto issued, allowed
/// to read Secrets Manager secrets and nothing else) read a secret, and a parameter the role may
/// not read is refused with AWS's AccessDenied, exit 66, no value printed. (moto checks the
/// action, not the resource, of a policy: the denied read is another service's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_identity_credentials_read_what_the_role_allows_and_a_denied_read_is_refused()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    // Seven setup requests, then every request is checked against IAM.
    let moto = Moto::start_with_iam(dir.path(), 7).await?;
    let a = moto.admin()?;
    let allowed = a.create_secret(REGION, "allowed", "allowed-value").await?;
    a.put_parameter(REGION, "/denied", CANARY).await?;
    let denied = format!("arn:aws:ssm:{REGION}:123456789012:parameter/denied");
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"secretsmanager:GetSecretValue","Resource":"*"}]}"#.to_string();
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#;
    let iam = |params: Vec<(&'static str, String)>| {
        let a = a.clone();
        async move {
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            a.query("iam", "us-east-1", &params, None).await
        }
    };
    let v = ("Version", "2010-05-08".to_string());
    iam(vec![
        ("Action", "CreateRole".into()),
        v.clone(),
        ("RoleName", "app".into()),
        ("AssumeRolePolicyDocument", trust.into()),
    ])
    .await?;
    iam(vec![
        ("Action", "PutRolePolicy".into()),
        v.clone(),
        ("RoleName", "app".into()),
        ("PolicyName", "read-allowed".into()),
        ("PolicyDocument", policy),
    ])
    .await?;
    iam(vec![
        ("Action", "CreateUser".into()),
        v.clone(),
        ("UserName", "admin".into()),
    ])
    .await?;
    let admin_policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}"#;
    iam(vec![
        ("Action", "PutUserPolicy".into()),
        v.clone(),
        ("UserName", "admin".into()),
        ("PolicyName", "assume".into()),
        ("PolicyDocument", admin_policy.into()),
    ])
    .await?;
    let key = iam(vec![
        ("Action", "CreateAccessKey".into()),
        v,
        ("UserName", "admin".into()),
    ])
    .await?;
    let admin = rotor_core::store::aws::Credentials {
        access_key_id: xml(&key, "AccessKeyId"),
        secret_access_key: xml(&key, "SecretAccessKey"),
        session_token: None,
        expires_at: None,
    };
    let assumed = a
        .query(
            "sts",
            REGION,
            &[
                ("Action", "AssumeRole"),
                ("Version", "2011-06-15"),
                ("RoleArn", "arn:aws:iam::123456789012:role/app"),
                ("RoleSessionName", "pod"),
            ],
            Some(&admin),
        )
        .await?;
    let credentials = serde_json::json!({
        "AccessKeyId": xml(&assumed, "AccessKeyId"),
        "SecretAccessKey": xml(&assumed, "SecretAccessKey"),
        "Token": xml(&assumed, "SessionToken"),
        "Expiration": xml(&assumed, "Expiration"),
    })
    .to_string();
    let agent_token = "pod-identity-token-for-the-agent";
    let token_file = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, agent_token)?;
    let (agent, served) = pod_identity_agent(agent_token.to_string(), credentials).await?;
    let env = |reference: &str| -> HashMap<String, String> {
        [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("ROTOR_ADDR", "http://127.0.0.1:1".to_string()),
            ("ROTOR_ROLE", "app".to_string()),
            ("ROTOR_DEADLINE", "10".to_string()),
            ("AWS_ENDPOINT_URL", moto.addr.clone()),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.clone()),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            ("SECRET", reference.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    let out = run(&env(&allowed));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(app_env(&out)["SECRET"], "allowed-value");
    assert_eq!(
        served.load(Ordering::SeqCst),
        1,
        "the agent was asked once, with the pod's token"
    );
    let out = run(&env(&denied));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(66), "{err}");
    assert!(
        err.contains("AccessDenied") && err.contains(&denied),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "the app did not start");
    assert_no_canary(&out);
    Ok(())
}
