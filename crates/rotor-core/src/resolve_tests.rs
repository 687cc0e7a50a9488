//! The resolver against the in-memory store: requests made, precedence, ignore-missing.

use std::sync::Arc;

use super::*;
use crate::reference::parse_from_path;
use crate::store::fake::{Failure, FakeStore, client_of};

const CANARY: &str = "canary-7f3a9c-never-printed";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn ten_references_over_five_paths_make_one_mount_lookup_and_five_reads() {
    let store = Arc::new(FakeStore::new());
    for p in 0..5 {
        store.put(&format!("p{p}"), &[("k0", "a"), ("k1", "b")]);
    }
    let vars: Vec<(String, String)> = (0..10)
        .map(|i| {
            (
                format!("SECRET_{i}"),
                format!("vault:secret/data/p{}#k{}", i % 5, i / 5),
            )
        })
        .collect();
    let resolution = resolve_environment(&client_of(&store), vars, &[], ResolveOptions::default())
        .await
        .unwrap();
    assert_eq!(resolution.resolved, 10);
    assert_eq!(resolution.requests, 5);
    assert_eq!(store.log().len(), 6, "{:?}", store.log());
    assert_eq!(resolution.env[0], ("SECRET_0".to_string(), "a".to_string()));
    assert_eq!(resolution.env[9], ("SECRET_9".to_string(), "b".to_string()));
}

#[tokio::test]
async fn explicit_variables_win_over_from_path_keys_and_earlier_paths_over_later_ones() {
    let store = Arc::new(FakeStore::new());
    store.put("first", &[("SHARED", "from-first"), ("ONLY_FIRST", "1")]);
    store.put(
        "second",
        &[("SHARED", "from-second"), ("EXPLICIT", "from-path")],
    );
    let from = parse_from_path("from-path", "secret/first,secret/data/second").unwrap();
    let resolution = resolve_environment(
        &client_of(&store),
        env(&[("EXPLICIT", "mine"), ("PLAIN", "x")]),
        &from,
        ResolveOptions::default(),
    )
    .await
    .unwrap();
    let got: std::collections::BTreeMap<_, _> = resolution.env.into_iter().collect();
    assert_eq!(got["EXPLICIT"], "mine");
    assert_eq!(got["SHARED"], "from-first");
    assert_eq!(got["ONLY_FIRST"], "1");
    assert_eq!(got["PLAIN"], "x");
    assert_eq!(got.len(), 4);
}

#[tokio::test]
async fn ignore_missing_removes_only_not_found_variables_and_errors_never_carry_values() {
    let store = Arc::new(FakeStore::new());
    store.put("db", &[("password", CANARY)]);
    let vars = env(&[
        ("GONE", "vault:secret/data/absent#x"),
        ("NO_KEY", "vault:secret/data/db#user"),
        ("OK", "pre-${vault:secret/data/db#password}"),
    ]);
    let options = ResolveOptions {
        ignore_missing: true,
        ..ResolveOptions::default()
    };
    let resolution = resolve_environment(&client_of(&store), vars.clone(), &[], options.clone())
        .await
        .unwrap();
    assert_eq!(
        resolution.env,
        vec![("OK".to_string(), format!("pre-{CANARY}"))]
    );
    assert_eq!(resolution.removed.len(), 2);
    assert!(resolution.removed.iter().all(|r| !r.contains(CANARY)));

    let err = resolve_environment(&client_of(&store), vars, &[], ResolveOptions::default())
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("env GONE") || text.contains("env NO_KEY"),
        "{text}"
    );
    assert!(!text.contains(CANARY), "{text}");

    // A permission error is not "missing": ignore-missing does not hide it.
    store.fail_next("secret/data/db", Failure::Status(403));
    let err = resolve_environment(
        &client_of(&store),
        env(&[("OK", "vault:secret/db#password")]),
        &[],
        options,
    )
    .await
    .unwrap_err();
    assert!(
        err.store_error()
            .is_some_and(StoreError::is_permission_denied),
        "{err}"
    );
}

#[tokio::test]
async fn one_write_per_distinct_request_and_its_lease_is_kept() {
    let store = Arc::new(FakeStore::new());
    let vars = env(&[
        ("USER", ">>vault:database/creds/app#username"),
        ("PASS", ">>vault:database/creds/app#password"),
    ]);
    let resolution = resolve_environment(&client_of(&store), vars, &[], ResolveOptions::default())
        .await
        .unwrap();
    assert_eq!(store.count("database/creds/app"), 1);
    assert_eq!(resolution.leases.len(), 1);
    let got: std::collections::BTreeMap<_, _> = resolution.env.into_iter().collect();
    assert_eq!(got["USER"], "user-1");
    assert_eq!(got["PASS"], "pass-1", "both keys come from one lease");
}

#[tokio::test]
async fn from_path_keys_that_would_steer_the_loader_or_forge_a_name_are_refused() {
    for key in [
        "LD_PRELOAD",
        "PATH=/evil:/bin",
        "GLIBC_TUNABLES",
        "",
        "NODE_OPTIONS",
        "JAVA_TOOL_OPTIONS",
        "PYTHONSTARTUP",
    ] {
        let store = Arc::new(FakeStore::new());
        store.put("shared", &[(key, CANARY), ("FINE", "ok")]);
        let from = parse_from_path("from-path", "secret/shared").unwrap();
        let err = resolve_environment(&client_of(&store), vec![], &from, ResolveOptions::default())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, ResolveError::FromPathKey { .. }),
            "{key}: {text}"
        );
        assert!(
            text.contains("cannot become an environment variable") && !text.contains(CANARY),
            "{text}"
        );
    }
}

#[tokio::test]
async fn rotor_init_treats_the_table_of_shapes_as_the_webhook_does() {
    use crate::reference::{Shape, shape_cases};
    for (value, shape) in shape_cases() {
        let store = Arc::new(FakeStore::new());
        let vars = env(&[("V", value)]);
        let result =
            resolve_environment(&client_of(&store), vars, &[], ResolveOptions::default()).await;
        match shape {
            Shape::Plain => {
                let resolution = result.unwrap();
                assert_eq!(resolution.env, env(&[("V", value)]), "byte for byte");
                assert_eq!(store.log().len(), 0, "{value:?}: no request");
            }
            Shape::Refused => {
                assert!(matches!(result, Err(ResolveError::Parse(_))), "{value:?}");
                assert_eq!(
                    store.log().len(),
                    0,
                    "{value:?}: refused before any request"
                );
            }
            // AWS references go to the AWS store, never to Vault's (none is given here).
            Shape::Whole | Shape::Inline if value.contains("arn:aws") => {
                let err = result.unwrap_err().to_string();
                assert!(err.contains("no AWS store"), "{value:?}: {err}");
                assert_eq!(store.log().len(), 0, "{value:?}: Vault was not asked");
            }
            // The empty store answers "missing": what matters is that the store was asked.
            Shape::Whole | Shape::Inline => {
                assert!(!store.log().is_empty(), "{value:?}: {result:?}")
            }
        }
    }
}

#[tokio::test]
async fn a_from_path_secret_with_100000_keys_resolves_in_linear_time() {
    let store = Arc::new(FakeStore::new());
    let keys: Vec<(String, String)> = (0..100_000)
        .map(|i| (format!("KEY_{i:06}"), "v".to_string()))
        .collect();
    let pairs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    store.put("many", &pairs);
    let from = parse_from_path("from-path", "secret/data/many").unwrap();
    let started = std::time::Instant::now();
    let resolution = resolve_environment(
        &client_of(&store),
        env(&[("KEY_000001", "explicit")]),
        &from,
        ResolveOptions::default(),
    )
    .await
    .unwrap();
    // A generous bound: the quadratic check it replaces never finished.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(resolution.env.len(), 100_000);
    assert_eq!(
        resolution.env[0],
        ("KEY_000001".to_string(), "explicit".to_string())
    );
}

#[tokio::test]
async fn the_deny_list_grows_with_the_webhooks_entries_and_keeps_its_defaults() {
    let store = Arc::new(FakeStore::new());
    store.put("app", &[("INTERNAL_DEBUG_HOOK", CANARY), ("FINE", "ok")]);
    let from = parse_from_path("from-path", "secret/app").unwrap();
    let ok = resolve_environment(&client_of(&store), vec![], &from, ResolveOptions::default())
        .await
        .unwrap();
    assert_eq!(ok.env.len(), 2);
    let options = ResolveOptions {
        from_path_deny: vec!["INTERNAL_*".to_string()],
        ..ResolveOptions::default()
    };
    let err = resolve_environment(&client_of(&store), vec![], &from, options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("INTERNAL_DEBUG_HOOK") && err.contains("--from-path-deny"),
        "{err}"
    );
    assert!(!err.contains(CANARY));
}

#[tokio::test]
async fn files_share_requests_with_the_env_and_render_again_after_one_read() {
    let store = Arc::new(FakeStore::new());
    store.put("db", &[("password", CANARY), ("user", "app")]);
    let files = vec![
        (
            "db.conf".to_string(),
            "user=${vault:secret/data/db#user} password=${vault:secret/data/db#password}\n"
                .to_string(),
        ),
        (
            "tls.crt".to_string(),
            ">>vault:database/creds/app#username".to_string(),
        ),
        (
            "tls.key".to_string(),
            ">>vault:database/creds/app#password".to_string(),
        ),
        ("plain.txt".to_string(), "no references".to_string()),
    ];
    let vars = env(&[("DB_USER", "vault:secret/data/db#user")]);
    let mut resolution = resolve_with_files(
        &client_of(&store),
        vars,
        &files,
        &[],
        ResolveOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(resolution.requests, 2, "the env and a file share one read");
    assert_eq!(
        store.count("database/creds/app"),
        1,
        "one lease for key and cert"
    );
    let rendered = resolution.files.render().unwrap();
    let by_name: std::collections::BTreeMap<_, _> = rendered
        .iter()
        .map(|f| (f.name.as_str(), f.content.as_str()))
        .collect();
    assert_eq!(by_name["db.conf"], format!("user=app password={CANARY}\n"));
    assert_eq!(
        (by_name["tls.crt"], by_name["tls.key"]),
        ("user-1", "pass-1")
    );
    assert_eq!(by_name["plain.txt"], "no references");
    assert!(!format!("{resolution:?} {rendered:?}").contains(CANARY));
    let set = &mut resolution.files;
    assert_eq!(
        set.watched_paths().into_iter().collect::<Vec<_>>(),
        vec!["secret/data/db"]
    );
    assert_eq!(set.versions().get("secret/data/db"), Some(&1));
    assert_eq!(set.files_reading("secret/data/db"), vec!["db.conf"]);

    store.put("db", &[("password", "rotated"), ("user", "app")]);
    let before = store.log().len();
    set.refresh(&client_of(&store), "secret/data/db", 2)
        .await
        .unwrap();
    assert_eq!(store.log().len() - before, 2, "{:?}", store.log()); // mount lookup + one read
    let again = set.render().unwrap();
    assert_eq!(again[0].content, "user=app password=rotated\n");
    assert_eq!(set.versions().get("secret/data/db"), Some(&2));
}

#[tokio::test]
async fn a_file_whose_secret_is_missing_is_an_error_naming_the_file() {
    let store = Arc::new(FakeStore::new());
    store.put("db", &[("password", CANARY)]);
    let files = vec![(
        "db.conf".to_string(),
        "vault:secret/data/db#nope".to_string(),
    )];
    let options = ResolveOptions {
        ignore_missing: true,
        ..ResolveOptions::default()
    };
    let err = resolve_with_files(&client_of(&store), Vec::new(), &files, &[], options)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("env file db.conf: reference"), "{err}");
    assert!(!err.contains(CANARY));
}

#[tokio::test]
async fn files_that_together_pass_the_cap_are_refused_naming_the_file_never_the_value() {
    let store = Arc::new(FakeStore::new());
    // A 1 MiB value, referenced five times in one template: 5 MiB once rendered.
    let big = format!("{CANARY}{}", "x".repeat((1 << 20) - CANARY.len()));
    store.put("big", &[("blob", big.as_str())]);
    let files = vec![
        ("small.txt".to_string(), "no references".to_string()),
        (
            "big.txt".to_string(),
            "${vault:secret/data/big#blob}".repeat(5),
        ),
    ];
    let err = resolve_with_files(
        &client_of(&store),
        Vec::new(),
        &files,
        &[],
        ResolveOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(store.count("secret/data/big"), 1, "one read for five uses");
    let err = format!("{err} {err:?}");
    assert!(
        err.starts_with("file big.txt:") && err.contains(&MAX_RENDERED_BYTES.to_string()),
        "{err}"
    );
    assert!(!err.contains(CANARY));
}

#[test]
fn a_template_stops_growing_at_the_limit_whatever_it_repeats() {
    use crate::reference::parse_value;
    let template = parse_value("T", &"${vault:secret/data/big#blob}".repeat(60))
        .unwrap()
        .unwrap();
    let mut resolved = 0;
    let err = template
        .render_within(MAX_RENDERED_BYTES, |_| {
            resolved += 1;
            Ok::<_, ()>("x".repeat(1 << 20))
        })
        .unwrap_err();
    // The finding: 60 copies of a 1 MiB value were rendered (244 MiB RSS) before the cap was
    // checked. Now rendering stops at the fifth.
    assert_eq!(err, Err(5 << 20), "stopped at the first value past 4 MiB");
    assert_eq!(resolved, 5, "nothing resolved past the limit");
    let small = parse_value("T", "a ${vault:secret/data/x#k} b")
        .unwrap()
        .unwrap();
    assert_eq!(
        small.render_within(5, |_| Ok::<_, ()>("v".to_string())),
        Ok("a v b".to_string())
    );
    assert_eq!(
        small.render_within(4, |_| Ok::<_, ()>("v".to_string())),
        Err(Err(5))
    );
}
