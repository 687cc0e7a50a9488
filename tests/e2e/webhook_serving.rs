//! Serving the way production clusters need: ALPN h2 and http/1.1, a request body limit, answers
//! (never 5xx) for bad bodies, and SIGTERM that stops accepting but finishes in-flight requests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

use std::process::Command;
use std::time::{Duration, Instant};

use rotor_e2e::fixtures::{binary, connect_tls, spawn_standalone_webhook};
use rotor_testkit::{ManagedProcess, Pki};

struct Server {
    process: ManagedProcess,
    port: u16,
    admin: String,
    pki: Pki,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    rotor_testkit::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("serving-ca").unwrap();
    let extra = [
        "--max-body-bytes=65536".to_string(),
        "--shutdown-grace-seconds=10".to_string(),
    ];
    let webhook =
        spawn_standalone_webhook(&binary("rotor-webhook").unwrap(), &pki, dir.path(), &extra)
            .await
            .unwrap();
    Server {
        process: webhook.process,
        port: webhook.port,
        admin: webhook.admin,
        pki,
        _dir: dir,
    }
}

fn client(server: &Server, http1_only: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(server.pki.ca_pem().as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve("localhost", ([127, 0, 0, 1], server.port).into());
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

fn review_body() -> String {
    rotor_e2e::fixtures::pod_review(rotor_e2e::fixtures::one_reference_pod()).to_string()
}

/// Sends `head` (request line and headers, no body) over TLS and HTTP/1.1, and returns the status
/// of the answer, which must come before any body is sent.
async fn status_for_head_alone(server: &Server, head: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tls = connect_tls(server.port, server.pki.ca_pem()).await.unwrap();
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 256];
    // The status line is all we need; a generous bound guards against a server that never answers.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed without answering: {answer:?}");
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("an answer to the request head within 10 s");
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {line:?}"))
}

#[tokio::test]
async fn negotiates_h2_and_http1_limits_bodies_and_answers_bad_input() {
    let server = start().await;
    let url = format!("https://localhost:{}/mutate", server.port);
    let h2 = client(&server, false)
        .post(&url)
        .body(review_body())
        .send()
        .await
        .unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2, "ALPN h2");
    assert_eq!(
        h2.json::<serde_json::Value>().await.unwrap()["response"]["uid"],
        "3f1a"
    );
    let h1 = client(&server, true)
        .post(&url)
        .body(review_body())
        .send()
        .await
        .unwrap();
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(h1.status(), 200);

    // The limit is checked against the declared Content-Length before any body byte is read:
    // send the head alone, so the answer cannot race a client still writing (no BrokenPipe).
    let too_big = status_for_head_alone(
        &server,
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n",
    )
    .await;
    assert_eq!(too_big, 413, "the body limit answers 413, not 5xx");

    for bad in ["", "{", "null", "\u{0}\u{1}", "{\"request\":{}}"] {
        let answer = client(&server, true)
            .post(&url)
            .body(bad.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{bad:?}");
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["response"]["allowed"], false, "{bad:?}: {body}");
    }
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_stops_accepting() {
    let mut server = start().await;
    let url = format!("https://localhost:{}/mutate", server.port);
    let body = review_body();
    let (first, rest) = body.split_at(body.len() / 2);
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    tx.unbounded_send(Ok(first.as_bytes().to_vec())).unwrap();
    let request = tokio::spawn(
        client(&server, true)
            .post(&url)
            .body(reqwest::Body::wrap_stream(rx))
            .send(),
    );
    // Evidence the first half is in: the webhook holds its bytes.
    rotor_e2e::observe::wait_until(
        "the first half arrived",
        Duration::from_secs(30),
        || async {
            Ok(
                rotor_e2e::observe::metric(&server.admin, "rotor_webhook_body_bytes_held").await?
                    > 0.0,
            )
        },
    )
    .await
    .unwrap();

    // SIGTERM while the request is half sent.
    let pid = server.process.pid().unwrap();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    // Evidence that the server acted on SIGTERM, then that it still runs for the request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(server.process.log_path())
        .unwrap_or_default()
        .contains("stopped accepting; draining in-flight requests")
    {
        assert!(Instant::now() < deadline, "no drain log line within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server.process.exited().is_none(),
        "still draining the in-flight request"
    );
    let refused = client(&server, true)
        .post(&url)
        .body(review_body())
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "no new connections after SIGTERM");

    tx.unbounded_send(Ok(rest.as_bytes().to_vec())).unwrap();
    drop(tx);
    let answer = request.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    let value: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(
        value["response"]["patchType"], "JSONPatch",
        "the in-flight request was answered in full"
    );

    let start = Instant::now();
    let status = loop {
        if let Some(status) = server.process.exited() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "exits within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean exit: {status}");
}
