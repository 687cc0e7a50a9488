//! Instructions per admission review (valgrind callgrind) of the release rotor-webhook, over
//! HTTPS on one kept-alive connection: the server runs under callgrind, its counters are zeroed
//! after a warm-up, `REVIEWS` reviews are sent, and the dump's total is divided by `REVIEWS`.
//! TLS, HTTP, parsing, planning and the answer are all counted; the client is not.
//! Run: cargo bench -p rotor-e2e --bench admission_instructions
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rotor_e2e::fixtures::spawn_standalone_webhook;
use rotor_testkit::Pki;
use serde_json::{Value, json};

const REVIEWS: usize = 200;

fn bench_pod() -> Value {
    rotor_e2e::fixtures::bench_pod_spec()
}

fn plain_pod() -> Value {
    json!({ "containers": [{ "name": "app", "image": "app:1", "command": ["/app"],
        "env": [{ "name": "MODE", "value": "prod" }] }] })
}

fn review(i: usize, spec: &Value, kind: &str, operation: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{i:012}"),
            "kind": { "group": "", "version": "v1", "kind": kind },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "name": "", "namespace": "bench", "operation": operation,
            "userInfo": { "username": "bench" },
            "object": { "apiVersion": "v1", "kind": "Pod",
                        "metadata": { "generateName": "web-", "namespace": "bench" }, "spec": spec },
            "dryRun": false,
        }
    }))
    .unwrap()
}

/// The `totals:` line of a callgrind dump (all threads together).
fn totals(dump: &Path) -> u64 {
    let text = std::fs::read_to_string(dump).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .or_else(|| text.lines().find_map(|l| l.strip_prefix("summary:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no totals in {}", dump.display()))
}

fn callgrind_control(flag: &str, pid: u32) {
    let status = Command::new("callgrind_control")
        .args([flag, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "callgrind_control {flag} {pid} failed");
}

/// One connection, held by the bench itself (a pooled client may open a second one when the
/// next request races the first connection's return to its pool, and each handshake would be
/// counted): HTTP/1.1 written and read by hand.
struct Connection(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl Connection {
    async fn send(&mut self, body: &[u8], expect: &str) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let head = format!(
            "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        self.0.write_all(head.as_bytes()).await.unwrap();
        self.0.write_all(body).await.unwrap();
        self.0.flush().await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let (header_end, length) = loop {
            let n = self.0.read(&mut buf).await.unwrap();
            assert!(n > 0, "the webhook closed the connection");
            answer.extend_from_slice(&buf[..n]);
            if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("a content-length");
                break (end + 4, length);
            }
        };
        while answer.len() < header_end + length {
            let n = self.0.read(&mut buf).await.unwrap();
            assert!(n > 0, "the webhook closed the connection");
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&answer[header_end..]);
        assert!(text.contains(expect), "expected {expect} in {text}");
    }
}

/// Instructions per review of `body` kind: zero, send, dump, read.
async fn measure(
    connection: &mut Connection,
    admin: &str,
    pid: u32,
    dir: &Path,
    bodies: &[Vec<u8>],
    expect: &str,
) -> u64 {
    for body in bodies.iter().take(20) {
        connection.send(body, expect).await;
    }
    let before: Vec<_> = dump_files(dir);
    // callgrind acts on a command when the program next runs; a readyz call wakes it.
    let zero = std::thread::spawn(move || callgrind_control("-z", pid));
    tokio::time::sleep(Duration::from_millis(300)).await;
    reqwest::get(format!("{admin}/readyz")).await.unwrap();
    zero.join().unwrap();
    for i in 0..REVIEWS {
        connection.send(&bodies[i % bodies.len()], expect).await;
    }
    let dump = std::thread::spawn(move || callgrind_control("-d", pid));
    tokio::time::sleep(Duration::from_millis(300)).await;
    reqwest::get(format!("{admin}/readyz")).await.unwrap();
    dump.join().unwrap();
    let new = dump_files(dir)
        .into_iter()
        .find(|p| !before.contains(p))
        .expect("callgrind wrote no dump");
    totals(&new) / REVIEWS as u64
}

fn dump_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("callgrind.out"))
        .collect()
}

#[tokio::main]
async fn main() {
    rotor_testkit::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    // ROTOR_BENCH_WEBHOOK_BIN: a build with symbols, for callgrind_annotate.
    let webhook_bin = std::env::var_os("ROTOR_BENCH_WEBHOOK_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| rotor_e2e::fixtures::binary("rotor-webhook").unwrap());
    let wrapper = dir.path().join("under-callgrind.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={}/callgrind.out.%p \
             {} \"$@\"\n",
            dir.path().display(),
            webhook_bin.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let pki = Pki::new("bench-ca").unwrap();
    // Under callgrind the server runs ~50x slower: a longer header timeout keeps the one
    // connection alive through the pauses of the run, as the API server's would be, and the
    // certificate poll is slowed so that its reads (which scale with wall time, not
    // with reviews) do not count.
    let extra = [
        "--log-level=warn".to_string(),
        "--header-timeout-ms=120000".to_string(),
        "--cert-poll-ms=600000".to_string(),
    ];
    let webhook = spawn_standalone_webhook(&wrapper, &pki, dir.path(), &extra)
        .await
        .unwrap();
    let mut server = webhook.process;
    let pid = server.pid().unwrap();
    let mut connection = Connection(
        rotor_e2e::fixtures::connect_tls(webhook.port, pki.ca_pem())
            .await
            .unwrap(),
    );
    let cases: [(&str, Vec<Vec<u8>>, &str); 3] = [
        (
            "bench pod (2 containers, 4 references) -> patch",
            (0..16)
                .map(|i| review(i, &bench_pod(), "Pod", "CREATE"))
                .collect(),
            "\"patch\"",
        ),
        (
            "pod without references -> unchanged",
            (0..16)
                .map(|i| review(i, &plain_pod(), "Pod", "CREATE"))
                .collect(),
            "\"allowed\":true",
        ),
        (
            "minimal review (a pod UPDATE) -> unchanged",
            (0..16)
                .map(|i| review(i, &plain_pod(), "Pod", "UPDATE"))
                .collect(),
            "\"allowed\":true",
        ),
    ];
    println!("| review | instructions per review |");
    println!("| --- | --- |");
    for (name, bodies, expect) in &cases {
        let per = measure(
            &mut connection,
            &webhook.admin,
            pid,
            dir.path(),
            bodies,
            expect,
        )
        .await;
        println!("| {name} | {per} |");
    }
    server.stop(Duration::from_secs(20));
    if std::env::var_os("ROTOR_BENCH_KEEP").is_some() {
        // For callgrind_annotate: the dumps stay.
        println!("dumps kept in {}", dir.keep().display());
    }
}
