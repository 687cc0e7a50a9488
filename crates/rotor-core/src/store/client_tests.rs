//! The store client against the in-memory store: paths, mounts, versions, retry classes.

use std::sync::Arc;

use super::*;
use crate::store::fake::{Failure, FakeStore, client_of};

fn store() -> Arc<FakeStore> {
    let store = Arc::new(FakeStore::new());
    store.put("db", &[("password", "v1")]);
    store.put("db", &[("password", "v2"), ("user", "app")]);
    store.put_v1("legacy", &[("key", "old")]);
    store
}

#[tokio::test]
async fn kv2_paths_read_with_or_without_data_and_kv1_as_written() {
    let store = store();
    let client = client_of(&store);
    for path in ["secret/db", "secret/data/db"] {
        let secret = client.read(path, None).await.unwrap();
        assert_eq!(secret.get(path, "password").unwrap(), "v2");
        assert_eq!(secret.version, Some(2));
    }
    let pinned = client.read("secret/db", Some(1)).await.unwrap();
    assert_eq!(pinned.get("secret/db", "password").unwrap(), "v1");
    let legacy = client.read("kv1/legacy", None).await.unwrap();
    assert_eq!(legacy.get("kv1/legacy", "key").unwrap(), "old");
    assert_eq!(
        client.canonical_path("secret/data/db").await.unwrap(),
        "secret/db"
    );
    assert_eq!(client.current_version("secret/data/db").await.unwrap(), 2);
    // Two mounts, each looked up once.
    assert_eq!(
        store.count("sys/internal/ui/mounts/"),
        2,
        "{:?}",
        store.log()
    );
    assert_eq!(store.count("secret/metadata/db"), 1);
}

#[tokio::test]
async fn concurrent_reads_on_one_mount_look_it_up_once() {
    let store = store();
    for p in 0..5 {
        store.put(&format!("p{p}"), &[("k", "v")]);
    }
    let client = client_of(&store);
    let reads = (0..5).map(|p| {
        let client = client.clone();
        async move { client.read(&format!("secret/data/p{p}"), None).await }
    });
    for answer in futures::future::join_all(reads).await {
        answer.unwrap();
    }
    assert_eq!(
        store.count("sys/internal/ui/mounts/"),
        1,
        "{:?}",
        store.log()
    );
    assert_eq!(store.log().len(), 6);
}

#[tokio::test]
async fn missing_keys_and_retired_versions_are_not_found_and_pins_need_kv2() {
    let store = store();
    store.retire("db", 1, "deleted");
    let client = client_of(&store);
    let err = client.read("secret/db", Some(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::VersionGone {
                state: "deleted",
                version: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_not_found());
    store.retire("db", 1, "destroyed");
    let err = client.read("secret/db", Some(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::VersionGone {
                state: "destroyed",
                ..
            }
        ),
        "{err}"
    );
    let err = client.read("secret/nothing", None).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert!(err.is_not_found());
    let err = client
        .read("secret/db", None)
        .await
        .unwrap()
        .get("secret/db", "nope")
        .unwrap_err();
    assert!(
        matches!(err, StoreError::MissingKey { available: 2, .. }),
        "{err}"
    );
    let err = client.read("kv1/legacy", Some(3)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotKv2 { .. }), "{err}");
    assert!(err.is_setup());
    let err = client.current_version("kv1/legacy").await.unwrap_err();
    assert!(err.is_setup(), "{err}");
}

#[tokio::test]
async fn reads_retry_transient_failures_and_stop_at_permanent_ones() {
    let store = store();
    let client = client_of(&store);
    client.mount_info("secret/db").await.unwrap();
    store.fail_next("secret/data/db", Failure::Status(503));
    store.fail_next("secret/data/db", Failure::LostAnswer);
    store.fail_next("secret/data/db", Failure::Refused);
    assert_eq!(
        client.read("secret/db", None).await.unwrap().version,
        Some(2)
    );
    assert_eq!(store.count("secret/data/db"), 4);

    store.fail_next("secret/data/db", Failure::Status(403));
    let err = client.read("secret/db", None).await.unwrap_err();
    assert!(err.is_permission_denied() && !err.is_transient(), "{err}");
    assert_eq!(store.count("secret/data/db"), 5);
}

#[tokio::test]
async fn a_write_is_repeated_only_when_the_store_cannot_have_acted() {
    let store = store();
    let client = client_of(&store);
    // Answered 502: the store may have minted a credential. One request, an error.
    store.fail_next("database/creds/app", Failure::Status(502));
    let err = client.write("database/creds/app", None).await.unwrap_err();
    assert_eq!(err.status(), Some(502), "{err}");
    assert_eq!(store.count("database/creds/app"), 1);
    // Sent and no answer: the same.
    store.fail_next("database/creds/app", Failure::LostAnswer);
    let err = client.write("database/creds/app", None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unreachable { sent: true, .. }),
        "{err}"
    );
    assert_eq!(store.count("database/creds/app"), 2);
    // Refused connection, 429 and 503: never processed, so repeated, and one lease comes back.
    store.fail_next("database/creds/app", Failure::Refused);
    store.fail_next("database/creds/app", Failure::Status(429));
    store.fail_next("database/creds/app", Failure::Status(503));
    let secret = client
        .write("database/creds/app", Some(r#"{"ttl":"1h"}"#))
        .await
        .unwrap();
    assert_eq!(store.count("database/creds/app"), 6);
    let lease = secret.lease.clone().expect("a lease");
    assert!(lease.renewable && lease.id.starts_with("database/creds/app/"));
    assert!(secret.get("database/creds/app", "username").is_ok());
    let err = client
        .write("database/creds/app", Some("{not json"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::BadBody { .. }) && err.is_setup(),
        "{err}"
    );
    assert_eq!(
        store.count("database/creds/app"),
        6,
        "a bad body is never sent"
    );
}

#[tokio::test]
async fn login_keeps_the_token_and_a_redirect_is_an_error_not_followed() {
    let store = Arc::new(FakeStore::new());
    let mut client =
        StoreClient::with_transport(StoreConfig::new("http://fake.invalid"), store.clone());
    let token = std::env::temp_dir().join(format!("rotor-core-token-{}", std::process::id()));
    std::fs::write(&token, "jwt\n").unwrap();
    let auth = Auth::Kubernetes {
        mount: "kubernetes".into(),
        role: "app".into(),
        token_file: token.clone(),
    };
    client.login(&auth).await.unwrap();
    assert_eq!(client.token(), Some("token-1"));
    std::fs::remove_file(&token).unwrap();
    let err = client.login(&auth).await.unwrap_err();
    assert!(
        matches!(err, StoreError::CredentialFile { .. }) && err.is_setup(),
        "{err}"
    );

    let answer = Answer {
        status: 307,
        body: String::new(),
    };
    let err = decode(&answer, "reading secret/db").unwrap_err();
    assert!(err.to_string().contains("never follows"), "{err}");
    assert!(!err.is_transient());
}

#[test]
fn a_store_that_echoes_what_it_was_sent_gets_no_token_or_value_into_rotors_errors() {
    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmF0dXJlLWNhbmFyeQ";
    const TOKEN: &str = "hvs.CAESIcanary0token9f8e7d6c5b4a";
    const VALUE: &str = "s3cr3t-canary-Value-9f8e7d6c";
    let body = serde_json::json!({ "errors": [
        format!("invalid JWT {JWT} for role \"shop\""),
        format!("token={TOKEN}; value:{VALUE}"),
        "no handler for route \"secret/data/team-a/db\"",
    ]})
    .to_string();
    let err = decode(&Answer { status: 400, body }, "logging in").unwrap_err();
    let msg = err.to_string();
    for canary in [JWT, TOKEN, VALUE, "canary"] {
        assert!(!msg.contains(canary), "{canary} leaked: {msg}");
    }
    assert!(msg.contains("role \"shop\""), "{msg}");
    assert!(msg.contains("\"secret/data/team-a/db\""), "{msg}");
    let long = "x ".repeat(1000);
    let err = decode(
        &Answer {
            status: 500,
            body: serde_json::json!({ "errors": [long] }).to_string(),
        },
        "reading",
    )
    .unwrap_err();
    assert!(err.to_string().len() < 400, "{err}");
}

#[tokio::test]
async fn a_forbidden_path_is_not_a_refused_token() {
    let store = store();
    let client = client_of(&store);
    let err = client.read("forbidden/x", None).await.unwrap_err();
    assert!(err.is_permission_denied(), "{err}");
    assert!(
        client.token_accepted().await.unwrap(),
        "the token itself is fine"
    );
    store.revoke("root");
    assert!(!client.token_accepted().await.unwrap());
}

#[tokio::test]
async fn a_revoked_token_is_forgotten_and_refused() {
    let store = store();
    let mut client = client_of(&store);
    client.revoke_self().await.unwrap();
    assert_eq!(client.token(), None);
    let mut other = client_of(&store); // the same token, "root", now revoked
    assert!(!other.token_accepted().await.unwrap());
    assert!(
        other
            .revoke_self()
            .await
            .unwrap_err()
            .is_permission_denied()
    );
}

#[test]
fn plain_http_to_an_https_store_is_named_as_the_address_and_never_retried() {
    // What Go's servers (Vault, OpenBao) answer to plain HTTP on a TLS port.
    let body = "Client sent an HTTP request to an HTTPS server.\n".to_string();
    let err = decode(&Answer { status: 400, body }, "logging in").unwrap_err();
    assert!(err.to_string().contains("change it to https://"), "{err}");
    assert!(err.is_setup() && !err.is_transient(), "{err:?}");
}

#[test]
fn a_lease_id_is_plain_path_segments_or_it_is_not_revoked() {
    for good in [
        "pki/issue/short/AbC123xyz",
        "database/creds/app/k8H2-_.x",
        "auth/kubernetes/login/h1a2",
    ] {
        assert!(is_lease_id(good), "{good}");
    }
    for bad in [
        "",
        "../../auth/token/revoke-self",
        "pki/issue/./x",
        "pki//x",
        "pki/issue/x?y=1",
        "pki/issue/x#f",
        "pki%2F..%2Fsys",
        "pki\\..\\sys",
        "pki/issue/x y",
        "pki/issue/x\n",
    ] {
        assert!(!is_lease_id(bad), "{bad:?}");
    }
}
