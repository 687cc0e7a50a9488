//! The reloader's store poll when the store fails part-way through a cycle: a scripted store
//! on loopback (HTTP/1.1, keep-alive) answers the mount lookup and one path, and fails the other
//! path with 503 until told to recover. Like Vault, it has no `detailed-metadata` listing.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rotor_core::store::{Auth, RetryPolicy, StoreClient, StoreConfig};

use super::poll_store;
use crate::metrics::Metrics;
use crate::poll::Poller;
use crate::stores::{Store, StoreKey};

/// The scripted store: `failing` makes `secret/metadata/b` answer 503; `requests` counts.
struct ScriptedStore {
    addr: String,
    failing: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
}

fn answer(path: &str, failing: bool) -> (u16, String) {
    match path {
        p if p.starts_with("/v1/sys/internal/ui/mounts/") => (
            200,
            r#"{"data":{"path":"secret/","type":"kv","options":{"version":"2"}}}"#.to_string(),
        ),
        "/v1/secret/metadata/a" => (200, r#"{"data":{"current_version":3}}"#.to_string()),
        "/v1/secret/metadata/b" if failing => (503, r#"{"errors":["sealed"]}"#.to_string()),
        "/v1/secret/metadata/b" => (200, r#"{"data":{"current_version":7}}"#.to_string()),
        _ => (404, r#"{"errors":[]}"#.to_string()),
    }
}

fn scripted_store() -> ScriptedStore {
    scripted_store_with(answer)
}

/// A scripted store answering each request path with `answer(path, failing)`.
fn scripted_store_with(answer: fn(&str, bool) -> (u16, String)) -> ScriptedStore {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let failing = Arc::new(AtomicBool::new(true));
    let requests = Arc::new(AtomicUsize::new(0));
    let (f, r) = (failing.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (f, r) = (f.clone(), r.clone());
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    // GET requests only: headers up to the blank line, no body.
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 2 {
                        line.clear();
                    }
                    r.fetch_add(1, Ordering::SeqCst);
                    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
                    let (status, body) = answer(path, f.load(Ordering::SeqCst));
                    let sent = write!(
                        writer,
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sent.is_err() {
                        return;
                    }
                }
            });
        }
    });
    ScriptedStore {
        addr,
        failing,
        requests,
    }
}

#[tokio::test]
async fn a_store_that_fails_mid_cycle_keeps_what_answered_and_the_failed_path_is_polled_again() {
    let stub = scripted_store();
    let mut config = StoreConfig::new(&stub.addr);
    // A 503 is retried; keep the whole operation short so the test is quick.
    config.retry = RetryPolicy {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(20),
        deadline: Duration::from_millis(200),
    };
    let mut store = Store::new(StoreClient::new(config).expect("client"));
    let key = StoreKey {
        addr: stub.addr.clone(),
        namespace: None,
    };
    let paths: BTreeSet<String> = ["secret/data/a", "secret/data/b"]
        .into_iter()
        .map(String::from)
        .collect();
    let auth = Auth::Token("t".to_string());
    let poller = Poller::new(4, 0);
    let metrics = Metrics::new();

    let (answer, distinct) = poll_store(&mut store, &key, &paths, &auth, &poller, &metrics)
        .await
        .expect("a store that answered one path is not unreachable");
    assert_eq!(distinct, 2);
    assert_eq!(answer.versions.get("secret/data/a"), Some(&3));
    assert!(
        !answer.versions.contains_key("secret/data/b"),
        "no version is made up for the path that failed"
    );
    assert_eq!(
        metrics.store_requests.get(),
        3,
        "a directory listing the store does not serve (as Vault), then one metadata request per path"
    );
    assert_eq!(metrics.store_errors.get(), 1);
    assert!(store.logged_in, "a failed read is not a failed login");
    let after_first = stub.requests.load(Ordering::SeqCst);
    assert!(
        after_first >= 4,
        "the failing path was retried: {after_first} requests"
    );

    // The store recovers: the next poll reads both, without a new login.
    stub.failing.store(false, Ordering::SeqCst);
    let (answer, _) = poll_store(&mut store, &key, &paths, &auth, &poller, &metrics)
        .await
        .expect("answered");
    assert_eq!(
        metrics.store_requests.get(),
        3 + 2,
        "the unlisted directory is remembered: per path only"
    );
    assert_eq!(answer.versions.get("secret/data/a"), Some(&3));
    assert_eq!(answer.versions.get("secret/data/b"), Some(&7));
    assert_eq!(metrics.store_errors.get(), 1, "no new error");

    // Down for every path: the poll says so (None) and nothing is recorded as answered.
    stub.failing.store(true, Ordering::SeqCst);
    let only_b: BTreeSet<String> = ["secret/data/b".to_string()].into_iter().collect();
    assert!(
        poll_store(&mut store, &key, &only_b, &auth, &poller, &metrics)
            .await
            .is_none(),
        "a store whose every answer failed is unreachable for this cycle"
    );
}

/// A hostile store whose listing pages never end (always full, the same keys): the listing
/// stops at one page fewer than the watched names and the rest are read per path, so it never
/// costs more than per-path reads plus that bound.
fn endless_listing(path: &str, _failing: bool) -> (u16, String) {
    if path.starts_with("/v1/sys/internal/ui/mounts/") {
        return (
            200,
            r#"{"data":{"path":"secret/","type":"kv","options":{"version":"2"}}}"#.to_string(),
        );
    }
    if path.starts_with("/v1/secret/detailed-metadata/") {
        let keys: Vec<String> = (0..crate::listing::PAGE_KEYS)
            .map(|i| format!("\"junk{i:03}\""))
            .collect();
        return (
            200,
            format!(r#"{{"data":{{"keys":[{}]}}}}"#, keys.join(",")),
        );
    }
    if path.starts_with("/v1/secret/metadata/") {
        return (200, r#"{"data":{"current_version":1}}"#.to_string());
    }
    (404, r#"{"errors":[]}"#.to_string())
}

#[tokio::test]
async fn a_listing_that_never_ends_is_bounded_and_the_paths_are_read_one_by_one() {
    let stub = scripted_store_with(endless_listing);
    let mut store = Store::new(StoreClient::new(StoreConfig::new(&stub.addr)).expect("client"));
    let key = StoreKey {
        addr: stub.addr.clone(),
        namespace: None,
    };
    let paths: BTreeSet<String> = (0..4).map(|i| format!("secret/z{i}")).collect();
    let auth = Auth::Token("t".to_string());
    let poller = Poller::new(4, 0);
    let metrics = Metrics::new();
    let (answer, distinct) = poll_store(&mut store, &key, &paths, &auth, &poller, &metrics)
        .await
        .expect("answered");
    assert_eq!(distinct, 4);
    assert_eq!(answer.versions.len(), 4, "every path read, one by one");
    assert_eq!(
        metrics.store_requests.get(),
        3 + 4,
        "at most one page fewer than the names, then each name"
    );
    // Remembered as costing as many pages as names: per path only from now on.
    let (answer, _) = poll_store(&mut store, &key, &paths, &auth, &poller, &metrics)
        .await
        .expect("answered");
    assert_eq!(answer.versions.len(), 4);
    assert_eq!(metrics.store_requests.get(), 7 + 4);
}

/// Every path `secret/metadata/pNN` is at version NN + `failing` (a rotation of every path).
fn many_paths(path: &str, failing: bool) -> (u16, String) {
    match path.strip_prefix("/v1/secret/metadata/p") {
        Some(n) => match n.parse::<u64>() {
            Ok(n) => (
                200,
                format!(
                    r#"{{"data":{{"current_version":{}}}}}"#,
                    n + u64::from(failing)
                ),
            ),
            Err(_) => (404, r#"{"errors":[]}"#.to_string()),
        },
        None => answer(path, failing),
    }
}

/// The finding: a store read path by path with more paths than a poll can read before its
/// deadline answered nothing, ever. Now a poll reads what its read time allows, the
/// longest-waiting paths first, answers the others with their last versions, and every path is
/// read again within ceil(paths / reads per poll) polls.
#[tokio::test]
async fn a_poll_that_cannot_read_every_path_reads_the_longest_waiting_and_every_path_comes_round() {
    let stub = scripted_store_with(many_paths);
    stub.failing.store(false, Ordering::SeqCst);
    let mut store = Store::new(StoreClient::new(StoreConfig::new(&stub.addr)).expect("client"));
    let key = StoreKey {
        addr: stub.addr.clone(),
        namespace: None,
    };
    let paths: BTreeSet<String> = (10..40).map(|n| format!("secret/data/p{n}")).collect();
    let auth = Auth::Token("t".to_string());
    // 20 requests a second, reads start within 240 ms: about 5 paths per poll of 30.
    let poller = Poller::new(1, 20).with_read_time(Duration::from_millis(240));
    let metrics = Metrics::new();
    let mut polls = 0;
    let mut answered_fresh = BTreeSet::new();
    while answered_fresh.len() < paths.len() {
        polls += 1;
        assert!(polls <= 12, "every path within ceil(30 / 3) polls: {polls}");
        let before = store.order.reads();
        let (answer, _) = poll_store(&mut store, &key, &paths, &auth, &poller, &metrics)
            .await
            .expect("a poll that read some paths answered");
        let read_now = store.order.reads() - before;
        assert!((1..30).contains(&read_now), "a window, not all: {read_now}");
        // The order knows canonical paths (`secret/pNN`); the answer, the spellings asked.
        answered_fresh.extend(
            store
                .order
                .last_poll_reads()
                .map(|p| p.replacen("secret/", "secret/data/", 1)),
        );
        // Every path read so far is answered, from this poll or from memory.
        for path in &answered_fresh {
            let n: u64 = path
                .trim_start_matches("secret/data/p")
                .parse()
                .expect(path);
            assert_eq!(answer.versions.get(path), Some(&n), "{path}");
        }
    }
    eprintln!("30 paths read in {polls} polls");
    // A rotation of every path reaches every answer within as many polls again.
    stub.failing.store(true, Ordering::SeqCst);
    let mut rotated = BTreeSet::new();
    for _ in 0..=polls {
        let (answer, _) = poll_store(&mut store, &key, &paths, &auth, &poller, &metrics)
            .await
            .expect("answered");
        rotated.extend(paths.iter().filter(|p| {
            let n: u64 = p.trim_start_matches("secret/data/p").parse().unwrap();
            answer.versions.get(*p) == Some(&(n + 1))
        }));
    }
    assert_eq!(rotated.len(), paths.len(), "every rotation seen");
}

#[test]
fn each_namespace_rests_for_its_own_per_path_reads_only() {
    let mut store =
        Store::new(StoreClient::new(StoreConfig::new("http://127.0.0.1:1")).expect("client"));
    let big: BTreeSet<String> = (0..100).map(|i| format!("secret/data/big/{i}/s")).collect();
    let small: BTreeSet<String> = ["secret/data/small/a".to_string()].into();
    store.last_read_per_path = big.clone();
    let polled = [("big".to_string(), big), ("small".to_string(), small)].into();
    let poller = Poller::new(4, 0).with_budget(10.0);
    let started = std::time::Instant::now();
    super::rest_each_namespace(&mut store, &polled, &poller, started);
    let rest = store
        .rest_by_namespace
        .get("big")
        .expect("the big one rests");
    assert_eq!(
        *rest - started,
        Duration::from_secs(10),
        "100 reads at 10 a second"
    );
    assert!(
        !store.rest_by_namespace.contains_key("small"),
        "a namespace whose path was not read per path does not rest"
    );
}
