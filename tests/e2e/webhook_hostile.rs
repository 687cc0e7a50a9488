//! A pod author or anyone who reaches the HTTPS port, against the real webhook process: slow
//! bodies, megabytes of reference look-alikes, a registry that answers without end. Each gets
//! its own request refused; time and memory stay bounded (generous bounds the old code failed:
//! 449 MiB under slow bodies, 157 s for a 1 MB value, 3.8 GiB for a huge ENTRYPOINT).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rotor_e2e::fixtures::{binary, connect_tls, spawn_webhook};
use rotor_testkit::Pki;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The chart's memory limit for the webhook.
const CHART_LIMIT_BYTES: u64 = 128 * 1024 * 1024;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib * 1024
}

/// Samples the process's RSS every 50 ms while `work` runs; returns the work's output and the peak.
async fn peak_rss_during<T>(pid: u32, work: impl std::future::Future<Output = T>) -> (T, u64) {
    let mut peak = 0;
    let mut work = std::pin::pin!(work);
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            () = tokio::time::sleep(Duration::from_millis(50)) => peak = peak.max(rss_bytes(pid)),
        }
    };
    (out, peak.max(rss_bytes(pid)))
}

fn review(pod: serde_json::Value) -> String {
    rotor_e2e::fixtures::pod_review(pod).to_string()
}

struct Server {
    webhook: rotor_e2e::fixtures::Webhook,
    pki: Pki,
    _dir: tempfile::TempDir,
}

/// The attack tests take turns: each measures what legitimate clients get while *its* attack
/// holds the server, and two attacks sharing the two cores starve each other's attackers (the
/// idle test once reached 434 of 512 slots in 90 s beside the stalled-body test).
static ONE_ATTACK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start(extra: &[String]) -> Server {
    rotor_testkit::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("hostile-ca").unwrap();
    let webhook = spawn_webhook(
        &binary("rotor-webhook").unwrap(),
        &pki,
        dir.path(),
        "https://vault:8200",
        &[],
        extra,
    )
    .await
    .unwrap();
    Server {
        webhook,
        pki,
        _dir: dir,
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.webhook.process.pid().unwrap()
    }

    async fn post(&self, body: String) -> (u16, serde_json::Value) {
        let ca = reqwest::Certificate::from_pem(self.pki.ca_pem().as_bytes()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .resolve("localhost", ([127, 0, 0, 1], self.webhook.port).into())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let answer = client
            .post(format!("https://localhost:{}/mutate", self.webhook.port))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or_default())
    }

    async fn metric(&self, series: &str) -> f64 {
        rotor_e2e::observe::metric(&self.webhook.admin, series)
            .await
            .unwrap()
    }
}

/// One connection that declares a body of `length` bytes, sends all but the last byte and
/// stops. Returns the status the server answers with, or 0 when it closes without one.
async fn slow_body(port: u16, ca: &str, length: usize) -> u16 {
    let tls = connect_tls(port, ca).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        rotor_e2e::slow_bodies::fill_all_but_last_byte(&mut writer, length).await?;
        // Hold the connection open without sending the last byte.
        tokio::time::sleep(Duration::from_secs(120)).await;
        Ok::<_, std::io::Error>(writer)
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    sender.abort();
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn slow_bodies_are_cut_at_the_body_timeout_and_memory_stays_under_the_chart_limit() {
    let _alone = ONE_ATTACK_AT_A_TIME.lock().await;
    // 100 connections from one address: over its default share of 64 connections.
    let server = start(&[
        "--body-timeout-ms=3000".to_string(),
        "--max-connections-per-peer=128".to_string(),
    ])
    .await;
    let (port, ca) = (server.webhook.port, server.pki.ca_pem().to_string());
    let before = rss_bytes(server.pid());
    let started = Instant::now();
    // 100 connections, each holding a body of 3 MiB - 1 byte one byte short of complete.
    let attack =
        futures::future::join_all((0..100).map(|_| slow_body(port, &ca, 3 * 1024 * 1024 - 1)));
    let (statuses, peak) = peak_rss_during(server.pid(), attack).await;
    let took = started.elapsed();
    eprintln!(
        "slow bodies: rss before {} MiB, peak {} MiB, all answered in {took:?}",
        before >> 20,
        peak >> 20
    );
    assert!(
        statuses.iter().all(|s| *s == 408),
        "every slow body is answered 408: {statuses:?}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(
        peak < CHART_LIMIT_BYTES,
        "peak RSS {} MiB under the chart's 128 MiB",
        peak >> 20
    );
    assert_eq!(
        server
            .metric("rotor_webhook_refused_total{reason=\"body_timeout\"}")
            .await,
        100.0
    );
    // The port serves the next review at once.
    let pod = json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "c", "image": "i", "command": ["/c"],
        "env": [{ "name": "A", "value": "vault:secret/data/a#k" }] }] } });
    let (status, answer) = server.post(review(pod)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
}

#[tokio::test]
async fn slow_bodies_from_48_clients_leave_legitimate_reviews_their_room() {
    let _alone = ONE_ATTACK_AT_A_TIME.lock().await;
    use rotor_e2e::slow_bodies::{Attack, attack, legitimate_reviews};
    let server = start(&[]).await;
    let (port, ca) = (server.webhook.port, server.pki.ca_pem().to_string());
    // 24 clients from 24 addresses declaring 3 MiB and sending a byte a second (these held the
    // whole 32 MiB budget when it was reserved from the declared length), and 24 from one
    // address sending all but the last byte and stalling (bounded by the peer's 8 MiB share).
    let _trickle = attack(port, &ca, 24, Attack::Trickle, false);
    let _filled = attack(port, &ca, 24, Attack::FillAndStall, true);
    // Evidence the attack is on: the stalling address holds its share, every address is seen.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held = server.metric("rotor_webhook_body_bytes_held").await;
        let peers = server.metric("rotor_webhook_body_peers").await;
        if held >= 6.0 * 1024.0 * 1024.0 && peers >= 25.0 {
            assert!(
                held <= 9.0 * 1024.0 * 1024.0,
                "the stalling address holds at most its 8 MiB share (and the tricklers a few \
                 bytes): {held}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the attack never took hold: {held} bytes held, {peers} peers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = std::sync::Arc::new(review(rotor_e2e::fixtures::one_reference_pod()).into_bytes());
    let (mut latencies, refused) = legitimate_reviews(port, &ca, body, 200).await.unwrap();
    latencies.sort();
    let (p50, p99) = (
        rotor_e2e::slow_bodies::quantile(&latencies, 0.5),
        rotor_e2e::slow_bodies::quantile(&latencies, 0.99),
    );
    eprintln!("under 48 slow-body clients: p50 {p50:?}, p99 {p99:?}");
    assert_eq!(refused, 0, "no legitimate review is refused");
    // Generous (the goal is p99 < 100 ms, measured ~5 ms here): with the budget held by the
    // attackers, reviews waited up to the 5 s body timeout.
    assert!(p99 < Duration::from_millis(2500), "p99 {p99:?}");
}

/// The finding: six addresses, two connections each, every one sending all but the last byte
/// of a 3 MiB body and stalling, filled the 32 MiB total (per-peer shares of 8 MiB do not stop
/// that), and legitimate reviews waited for the 5 s body timeout (p99 4.94 s). Here eight
/// addresses x two: a review that finds no room cuts a body of the address holding the most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_from_many_addresses_are_cut_for_a_review_that_needs_room() {
    let _alone = ONE_ATTACK_AT_A_TIME.lock().await;
    use rotor_e2e::slow_bodies::{Attack, attack, legitimate_reviews, quantile};
    let server = start(&[]).await;
    let (port, ca) = (server.webhook.port, server.pki.ca_pem().to_string());
    let _first = attack(port, &ca, 8, Attack::FillAndStall, false);
    let _second = attack(port, &ca, 8, Attack::FillAndStall, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held = server.metric("rotor_webhook_body_bytes_held").await;
        if held >= 28.0 * 1024.0 * 1024.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the attack never filled the total: {held} bytes held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = std::sync::Arc::new(review(rotor_e2e::fixtures::one_reference_pod()).into_bytes());
    let (mut latencies, refused) = rotor_e2e::slow_bodies::measured_apart(async move {
        legitimate_reviews(port, &ca, body, 100).await
    })
    .unwrap();
    latencies.sort();
    let (p50, p99) = (quantile(&latencies, 0.5), quantile(&latencies, 0.99));
    let cut = server
        .metric("rotor_webhook_refused_total{reason=\"body_cut\"}")
        .await;
    eprintln!(
        "under 16 stalled bodies from 8 addresses: p50 {p50:?}, p99 {p99:?}, {cut} bodies cut"
    );
    assert_eq!(refused, 0, "no legitimate review is refused");
    assert!(cut > 0.0, "room was made by cutting a stalled body");
    // Generous: waiting for the body timeout took up to 5 s.
    assert!(p99 < Duration::from_millis(2500), "p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_preface_only_connections_never_keep_new_connections_out() {
    use rotor_e2e::slow_bodies::{Attack, attack, legitimate_reviews_on_new_connections, quantile};
    let _alone = ONE_ATTACK_AT_A_TIME.lock().await;
    let server = start(&[]).await;
    let (port, ca) = (server.webhook.port, server.pki.ca_pem().to_string());
    // The finding: 520 TLS connections from one address that send nothing held all 512 slots
    // and every new connection was closed at accept. Here also 24 addresses x 22 connections
    // (half idle, half sending only the HTTP/2 preface): more than every slot, from more
    // addresses than one, all reconnecting whenever the server closes them.
    let mut attackers = vec![attack(port, &ca, 520, Attack::Idle, true)];
    for shape in [Attack::Idle, Attack::Http2Preface] {
        for _ in 0..11 {
            attackers.push(attack(port, &ca, 24, shape, false));
        }
    }
    // Evidence the attack is on: the slots are full, the one address was held to its share,
    // and idle connections are being closed.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let held = server.metric("rotor_webhook_connections").await;
        let peer_limited = server
            .metric("rotor_webhook_refused_total{reason=\"peer_connection_limit\"}")
            .await;
        let idle = server
            .metric("rotor_webhook_connections_closed_total{reason=\"idle\"}")
            .await;
        // Most slots, not all: idle ones close every 5 s and their attackers reconnect, so the
        // count churns (475 of 512 at one sample on a loaded machine). That every slot was
        // taken is shown below: the new peer's connections had to take the largest peer's.
        if held >= 448.0 && peer_limited > 0.0 && idle > 0.0 {
            assert!(held <= 512.0, "never more than --max-connections: {held}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the attack never took hold: {held} held, {peer_limited} refused for the peer share, {idle} closed idle"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = std::sync::Arc::new(review(rotor_e2e::fixtures::one_reference_pod()).into_bytes());
    // On a runtime of its own: the attackers' ~1,000 tasks must not queue the client that
    // measures (it would time the test's own scheduler, not the server).
    let (mut latencies, refused) = rotor_e2e::slow_bodies::measured_apart(async move {
        legitimate_reviews_on_new_connections(port, &ca, body, 100).await
    })
    .unwrap();
    latencies.sort();
    let (p50, p99) = (quantile(&latencies, 0.5), quantile(&latencies, 0.99));
    eprintln!("new connections under 1,048 idle ones: p50 {p50:?}, p99 {p99:?}");
    assert_eq!(refused, 0, "every new legitimate connection is served");
    assert!(
        server
            .metric("rotor_webhook_connections_closed_total{reason=\"given_to_another_peer\"}")
            .await
            > 0.0,
        "the new peer's connections took the largest peer's slots"
    );
    // Generous: a handshake each, on a loaded 2-core machine (the goal is p99 < 100 ms).
    assert!(p99 < Duration::from_millis(2500), "p99 {p99:?}");
    drop(attackers);
}

#[tokio::test]
async fn megabytes_of_reference_look_alikes_are_reviewed_in_linear_time() {
    let server = start(&[]).await;
    // Near the API server's 3 MiB limit, in the shapes that made the old scanner quadratic.
    let per_value = 120 * 1024;
    let values = [
        "${x".repeat(per_value / 3),
        format!("${{vault:a/b#c}}{}", "{".repeat(per_value)),
        format!("{}${{vault:a/b#c", "${bao".repeat(per_value / 6)),
        "vault:".repeat(per_value / 6),
    ];
    let env: Vec<serde_json::Value> = (0..20)
        .map(|i| json!({ "name": format!("V{i}"), "value": values[i % values.len()] }))
        .collect();
    let pod = json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "c", "image": "i", "command": ["/c"], "env": env }] } });
    let body = review(pod);
    assert!(body.len() > 2 * 1024 * 1024, "{}", body.len());
    let started = Instant::now();
    let (status, answer) = server.post(body).await;
    let took = started.elapsed();
    eprintln!("2.4 MB of look-alikes reviewed in {took:?}");
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("env V2") && message.contains("not closed"),
        "{message}"
    );
    assert!(
        message.len() < 1000,
        "the refusal quotes the value short: {}",
        message.len()
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // More references than a pod may hold: refused, naming the limit.
    let many: Vec<serde_json::Value> = (0..20)
        .map(|i| {
            let value: String = (0..64).map(|k| format!("${{vault:s/p{i}#k{k}}}")).collect();
            json!({ "name": format!("M{i}"), "value": value })
        })
        .collect();
    let pod = json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "c", "image": "i", "command": ["/c"], "env": many }] } });
    let (_, answer) = server.post(review(pod)).await;
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("more than 1024 references"), "{message}");
}

/// A registry stand-in that answers without end: a manifest of `manifest_bytes` (no declared
/// length), or a config whose ENTRYPOINT is `entrypoint_bytes` long.
async fn hostile_registry() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                match path.as_str() {
                    "/v2/big/manifests/1" => {
                        endless(&mut stream, "{\"schemaVersion\":2,\"x\":\"", b'a').await
                    }
                    "/v2/huge/manifests/1" => {
                        let body = r#"{"schemaVersion":2,"config":{"digest":"sha256:c"}}"#;
                        let _ = stream
                            .write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes())
                            .await;
                    }
                    "/v2/good/manifests/1" => {
                        let body = r#"{"schemaVersion":2,"config":{"digest":"sha256:g"}}"#;
                        let _ = stream
                            .write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes())
                            .await;
                    }
                    "/v2/good/blobs/sha256:g" => {
                        let body = r#"{"config":{"Entrypoint":["/good"]}}"#;
                        let _ = stream
                            .write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes())
                            .await;
                    }
                    // Never answers.
                    slow if slow.starts_with("/v2/slow/") => {
                        tokio::time::sleep(Duration::from_secs(600)).await
                    }
                    "/v2/huge/blobs/sha256:c" => {
                        endless(&mut stream, "{\"config\":{\"Entrypoint\":[\"", b'e').await
                    }
                    _ => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                            .await;
                    }
                }
            });
        }
    });
    port
}

/// Answers 200 with `prefix` and then 100 MB of `filler`, without a declared length: the old
/// webhook read it all.
async fn endless(stream: &mut tokio::net::TcpStream, prefix: &str, filler: u8) {
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
    if stream.write_all(head).await.is_err() || stream.write_all(prefix.as_bytes()).await.is_err() {
        return;
    }
    let chunk = vec![filler; 64 * 1024];
    for _ in 0..(100 * 1024 / 64) {
        if stream.write_all(&chunk).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_registry_that_answers_without_end_gets_only_that_pod_refused() {
    let registry = hostile_registry().await;
    let server = start(&[
        format!("--registry-insecure=127.0.0.1:{registry}"),
        "--registry-timeout-ms=20000".to_string(),
        "--review-timeout-ms=25000".to_string(),
    ])
    .await;
    let pod = |image: &str| {
        json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "c", "image": format!("127.0.0.1:{registry}/{image}:1"),
            "env": [{ "name": "A", "value": "vault:secret/data/a#k" }] }] } })
    };
    for (image, limit) in [("big", "4194304"), ("huge", "4194304")] {
        let started = Instant::now();
        let ((status, answer), peak) =
            peak_rss_during(server.pid(), server.post(review(pod(image)))).await;
        eprintln!(
            "registry {image}: answered in {:?}, peak RSS {} MiB",
            started.elapsed(),
            peak >> 20
        );
        assert_eq!(status, 200);
        assert_eq!(answer["response"]["allowed"], false, "{answer}");
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("over the limit of {limit} bytes"))
                && message.contains("set command"),
            "{message}"
        );
        assert!(peak < CHART_LIMIT_BYTES, "{} MiB", peak >> 20);
    }
}

#[tokio::test]
async fn one_http2_connection_with_100_stalled_streams_is_bounded_too() {
    let _alone = ONE_ATTACK_AT_A_TIME.lock().await;
    // 100 connections from one address: over its default share of 64 connections.
    let server = start(&[
        "--body-timeout-ms=3000".to_string(),
        "--max-connections-per-peer=128".to_string(),
    ])
    .await;
    let ca = reqwest::Certificate::from_pem(server.pki.ca_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve("localhost", ([127, 0, 0, 1], server.webhook.port).into())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/mutate", server.webhook.port);
    let length = 3 * 1024 * 1024 - 1;
    let stalled = |client: reqwest::Client, url: String| async move {
        // All but the last byte, then nothing.
        let chunks = futures::stream::iter((0..length - 1).step_by(64 * 1024).map(move |at| {
            let n = (length - 1 - at).min(64 * 1024);
            Ok::<_, std::io::Error>(bytes_of(n))
        }))
        .chain(futures::stream::pending());
        let answer = client
            .post(url)
            .header("content-length", length.to_string())
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await;
        match answer {
            Ok(a) => Ok((a.version(), a.status().as_u16())),
            Err(e) => Err((e.is_timeout(), error_chain(&e))),
        }
    };
    let started = Instant::now();
    let attack = futures::future::join_all((0..100).map(|_| stalled(client.clone(), url.clone())));
    let (answers, peak) = peak_rss_during(server.pid(), attack).await;
    eprintln!(
        "100 stalled HTTP/2 streams: answered in {:?}, peak RSS {} MiB",
        started.elapsed(),
        peak >> 20
    );
    // The server answers 408 and resets the stream while the client is still sending; the
    // client sometimes sees the reset before it reads the answer (an HTTP/2 race on its side).
    // Either way the stream ended, not by the client's own timeout, and the server's count
    // says it cut every one at the body timeout.
    for answer in &answers {
        match answer {
            Ok((version, status)) => {
                assert_eq!((*version, *status), (reqwest::Version::HTTP_2, 408));
            }
            Err((timed_out, chain)) => {
                assert!(
                    !timed_out && chain.contains("stream"),
                    "not a stream reset: {chain}"
                );
            }
        }
    }
    let answered = answers.iter().filter(|a| a.is_ok()).count();
    eprintln!("{answered} of 100 read the 408 before the reset");
    // Every stream the server's handler saw was cut at the body timeout and counted before its
    // 408. A stream the client opened before it had read the server's SETTINGS (at most
    // --max-streams at once) can instead be reset by the HTTP/2 layer without reaching a
    // handler: seen once in CI, 65 counted, 35 reset. Either way it ended, none by the client's
    // own timeout (asserted above), and memory stayed bounded (below).
    let counted = server
        .metric("rotor_webhook_refused_total{reason=\"body_timeout\"}")
        .await;
    assert!(
        counted >= answered as f64 && counted <= 100.0,
        "{counted} counted, {answered} answered 408"
    );
    assert!(peak < CHART_LIMIT_BYTES, "{} MiB", peak >> 20);
}

/// An error and its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn bytes_of(n: usize) -> Vec<u8> {
    vec![b' '; n]
}

#[tokio::test]
async fn a_registry_that_never_answers_holds_only_its_own_lookup_slots() {
    let slow = hostile_registry().await;
    let good = hostile_registry().await;
    let server = start(&[
        format!("--registry-insecure=127.0.0.1:{slow},127.0.0.1:{good}"),
        "--registry-timeout-ms=8000".to_string(),
        "--review-timeout-ms=9000".to_string(),
    ])
    .await;
    let pod = |image: String| {
        review(
            json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "c", "image": image,
            "env": [{ "name": "A", "value": "vault:secret/data/a#k" }] }] } }),
        )
    };
    // Twelve pods on the registry that never answers: more than every lookup slot.
    let stuck: Vec<_> = (0..12)
        .map(|i| {
            let body = pod(format!("127.0.0.1:{slow}/slow:1-{i}"));
            let server = &server;
            async move { server.post(body).await }
        })
        .collect();
    let stuck = futures::future::join_all(stuck);
    let other = async {
        // Let the stuck lookups take their slots first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let answer = server.post(pod(format!("127.0.0.1:{good}/good:1"))).await;
        (answer, started.elapsed())
    };
    let (stuck, ((status, answer), took)) = tokio::join!(stuck, other);
    eprintln!("a lookup on another registry while one hangs: {took:?}");
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["patchType"], "JSONPatch", "{answer}");
    assert!(
        took < Duration::from_secs(4),
        "not held behind the hanging registry: {took:?}"
    );
    for (_, answer) in stuck {
        let message = answer["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains("/slow:1-")
                && (message.contains("no answer from") || message.contains("timed out")),
            "{message}"
        );
    }
}
