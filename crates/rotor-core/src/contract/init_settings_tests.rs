use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::contract::RotationSignal;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,12}"
}

fn credential() -> impl Strategy<Value = Option<Credential>> {
    prop_oneof![
        Just(None),
        word().prop_map(|w| Some(Credential::Value(w))),
        word().prop_map(|w| Some(Credential::File(format!("/etc/{w}")))),
    ]
}

fn settings() -> impl Strategy<Value = InitSettings> {
    let connection = (
        prop_oneof![Just("http"), Just("https")],
        word(),
        proptest::option::of(word()),
        prop_oneof![
            Just(None),
            word().prop_map(|w| Some(CaSource::File(format!("/ca/{w}.pem")))),
            word().prop_map(|w| Some(CaSource::Pem(format!("-----BEGIN CERTIFICATE-----{w}")))),
        ],
        1u64..100_000,
        1u64..86_400,
    );
    let auth = (
        proptest::sample::select(AuthMethod::ALL),
        proptest::option::of(word()),
        word(),
        proptest::option::of(word().prop_map(|w| format!("/var/run/{w}"))),
        proptest::option::of(word()),
        credential(),
        credential(),
    );
    let behaviour = (
        proptest::collection::vec("[a-z]{1,6}/[a-z]{1,6}(#[0-9]{1,3})?", 0..4),
        1usize..=MAX_CONCURRENCY,
        proptest::sample::select(LogFormat::ALL),
        proptest::sample::select(LogLevel::ALL),
        any::<(bool, bool)>(),
        proptest::collection::vec("[A-Z_]{1,8}", 0..3),
        1u64..3600,
        proptest::collection::vec("[A-Z_]{1,8}\\*?", 0..3),
    );
    let files = (
        proptest::collection::vec("[a-z][a-z0-9._-]{0,8}", 0..4),
        proptest::option::of(word().prop_map(|w| format!("/etc/{w}"))),
        proptest::sample::select(vec![0o400u32, 0o440, 0o600, 0o640]),
        proptest::sample::select(vec![
            OnRotation::Rollout,
            OnRotation::Signal(RotationSignal::Hup),
            OnRotation::Signal(RotationSignal::Usr2),
        ]),
    );
    (connection, auth, behaviour, files).prop_map(|(c, a, b, f)| {
        let (scheme, host, namespace, ca, deadline, timeout) = c;
        let (method, auth_path, role, token_file, token, role_id, secret_id) = a;
        let (from_path, concurrency, log_format, log_level, flags, passthrough, grace, deny) = b;
        let mut s = InitSettings::new(&format!("{scheme}://{host}:8200"), method);
        s.namespace = namespace;
        s.ca = ca;
        s.deadline = Duration::from_secs(deadline.min(86_400));
        s.request_timeout = Duration::from_secs(timeout);
        s.auth_path = auth_path;
        s.role = Some(role);
        s.token_file = token_file.or_else(|| Some("/var/run/token".to_string()));
        s.token = token.map(Hidden);
        s.approle_role_id = role_id.or(Some(Credential::Value("id".to_string())));
        s.approle_secret_id = secret_id.or(Some(Credential::File("/s".to_string())));
        s.from_path = parse_from_path("test", &from_path.join(",")).unwrap_or_default();
        s.concurrency = concurrency;
        s.log_format = log_format;
        s.log_level = log_level;
        (s.ignore_missing, s.daemon) = flags;
        s.passthrough = passthrough;
        s.from_path_deny = deny;
        s.daemon_grace = Duration::from_secs(grace);
        let (files, dir, mode, on_rotation) = f;
        s.files = files;
        if let Some(dir) = dir {
            s.files_dir = dir;
        }
        s.files_mode = mode;
        s.on_rotation = on_rotation;
        s
    })
}

proptest! {
    #[test]
    fn what_the_webhook_writes_rotor_init_reads_back(s in settings()) {
        let written: HashMap<String, String> = s.to_env().into_iter().collect();
        prop_assert!(written.keys().all(|k| k.starts_with(var::PREFIX)));
        prop_assert_eq!(InitSettings::from_env(&written), Ok(s));
    }
}

#[test]
fn rotor_vars_win_and_standard_vault_vars_are_fallbacks() {
    let s = InitSettings::from_env(&env(&[
        ("VAULT_ADDR", "http://127.0.0.1:8200"),
        ("ROTOR_ROLE", "app"),
        ("BAO_NAMESPACE", "team"),
        ("VAULT_CACERT", "/ca.pem"),
    ]))
    .unwrap();
    assert_eq!(s.addr, "http://127.0.0.1:8200");
    assert_eq!(s.auth_method, AuthMethod::Kubernetes);
    assert_eq!(s.namespace.as_deref(), Some("team"));
    assert_eq!(s.ca, Some(CaSource::File("/ca.pem".into())));
    let s = InitSettings::from_env(&env(&[
        ("ROTOR_ADDR", "https://a:8200"),
        ("VAULT_ADDR", "https://b:8200"),
        ("ROTOR_AUTH_METHOD", "TOKEN"),
        ("VAULT_TOKEN", "t"),
        ("ROTOR_PASSTHROUGH", "VAULT_TOKEN, ROTOR_ADDR"),
        ("ROTOR_DEADLINE", "5"),
        ("ROTOR_LOG_FORMAT", "JSON"),
    ]))
    .unwrap();
    assert_eq!(s.addr, "https://a:8200");
    assert_eq!(s.deadline, Duration::from_secs(5));
    assert_eq!(s.log_format, LogFormat::Json);
    assert!(!format!("{s:?}").contains("\"t\""), "Debug hides the token");
    assert!(!s.strips("VAULT_TOKEN"));
    assert!(!s.strips("ROTOR_ADDR"));
    assert!(s.strips("ROTOR_ROLE"));
    assert!(s.strips("BAO_TOKEN"));
    assert!(!s.strips("VAULT_ADDR"));
}

#[test]
fn bad_settings_name_the_variable_and_the_fix() {
    let base = [("ROTOR_ADDR", "http://a"), ("ROTOR_ROLE", "r")];
    for (extra, needle) in [
        (
            vec![("ROTOR_DEADLINE", "soon")],
            "ROTOR_DEADLINE=\"soon\": expected a whole number",
        ),
        (vec![("ROTOR_DEADLINE", "0")], "ROTOR_DEADLINE"),
        (
            vec![("ROTOR_DAEMON", "maybe")],
            "ROTOR_DAEMON=\"maybe\": expected true or false",
        ),
        (vec![("ROTOR_FROM_PATH", "a#x")], "ROTOR_FROM_PATH"),
        (
            vec![("ROTOR_AUTH_METHOD", "ldap")],
            "ROTOR_AUTH_METHOD=\"ldap\": expected one of: kubernetes",
        ),
        (
            vec![("ROTOR_LOG_FORMAT", "xml")],
            "ROTOR_LOG_FORMAT=\"xml\"",
        ),
        (
            vec![("ROTOR_CONCURRENCY", "1000")],
            "ROTOR_CONCURRENCY=\"1000\": expected 1 to 256",
        ),
        (
            vec![("ROTOR_AUTH_METHOD", "token")],
            "token auth needs ROTOR_TOKEN",
        ),
        (
            vec![("ROTOR_AUTH_METHOD", "approle")],
            "approle auth needs ROTOR_APPROLE_ROLE_ID",
        ),
    ] {
        let pairs: Vec<_> = base.iter().copied().chain(extra.iter().copied()).collect();
        let err = InitSettings::from_env(&env(&pairs))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    for (pairs, needle) in [
        (vec![], "set ROTOR_ADDR"),
        (
            vec![("ROTOR_ADDR", "vault:8200")],
            "the scheme must be http:// or https://",
        ),
        (vec![("ROTOR_ADDR", "https://")], "the host is missing"),
        (
            vec![("ROTOR_ADDR", "https://vault:8200@attacker.example")],
            "no user info",
        ),
        (vec![("ROTOR_ADDR", "http://a")], "set ROTOR_ROLE"),
    ] {
        let err = InitSettings::from_env(&env(&pairs))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{pairs:?}: {err}");
    }
}
