use proptest::prelude::*;

use super::*;

fn read(path: &str, key: &str, version: Option<u64>) -> Reference {
    Reference {
        scheme: Scheme::Vault,
        path: path.to_string(),
        key: key.to_string(),
        action: Action::Read { version },
    }
}

#[test]
fn whole_references() {
    let t = parse_value("DB", "vault:secret/data/db#password").unwrap();
    assert_eq!(
        t,
        Some(Template::Whole(read("secret/data/db", "password", None)))
    );
    let t = parse_value("DB", "vault:secret/db#password#3").unwrap();
    assert_eq!(
        t,
        Some(Template::Whole(read("secret/db", "password", Some(3))))
    );
    let t = parse_value("DB", "bao:kv/app#user").unwrap().unwrap();
    assert_eq!(t.references()[0].scheme, Scheme::Bao);
    assert_eq!(t.to_string(), "bao:kv/app#user");
}

#[test]
fn write_references() {
    let t = parse_value("X", ">>vault:database/creds/app#username")
        .unwrap()
        .unwrap();
    assert_eq!(t.references()[0].action, Action::Write { body: None });
    let t = parse_value(
        "X",
        r##">>vault:pki/issue/web#certificate#{"common_name":"a#b.example"}"##,
    )
    .unwrap()
    .unwrap();
    let r = t.references()[0];
    assert_eq!(r.key, "certificate");
    assert_eq!(
        r.action,
        Action::Write {
            body: Some(r#"{"common_name":"a#b.example"}"#.to_string())
        }
    );
}

#[test]
fn inline_references_keep_surrounding_text() {
    let v = "postgres://${vault:secret/data/db#user}:${bao:secret/data/db#password}@db:5432/app";
    let t = parse_value("URL", v).unwrap().unwrap();
    assert_eq!(t.references().len(), 2);
    assert_eq!(t.to_string(), v);
    let rendered: Result<String, ()> = t.render(|r| Ok(format!("<{}>", r.key)));
    assert_eq!(
        rendered.unwrap(),
        "postgres://<user>:<password>@db:5432/app"
    );
}

#[test]
fn inline_write_with_json_body_containing_braces() {
    let v = r#"cert=${>>vault:pki/issue/web#certificate#{"common_name":"x","alt":{"a":"}"}}} end"#;
    let t = parse_value("C", v).unwrap().unwrap();
    assert_eq!(t.to_string(), v);
    assert_eq!(t.references().len(), 1);
}

#[test]
fn look_alikes_are_left_alone() {
    for v in [
        "http://vault:8200",
        "https://vault.example.com:8200/v1/secret",
        "price is $5",
        "$",
        "${HOME}/bin",
        "plain",
        "",
        "myvault:thing#x",
        "{vault:secret#x}",
    ] {
        assert_eq!(
            parse_value("V", v).unwrap(),
            None,
            "{v:?} must be left alone"
        );
    }
}

#[test]
fn errors_name_the_var_quote_the_reference_and_say_what_is_expected() {
    let e = parse_value("DB_PASSWORD", "vault:secret/data/db").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("env DB_PASSWORD"), "{msg}");
    assert!(msg.contains("\"vault:secret/data/db\""), "{msg}");
    assert!(msg.contains("'#KEY' part is missing"), "{msg}");
    assert!(msg.contains("expected vault:PATH#KEY"), "{msg}");

    for (value, problem) in [
        ("vault:/#key", "path is empty"),
        ("vault:secret/db#", "key after '#' is empty"),
        ("vault:secret/db#k#latest", "not a positive integer"),
        ("vault:secret/db#k#0", "not a positive integer"),
        ("vault:secret//db#k", "empty, '.' or '..' segment"),
        ("vault:secret/../sys#k", "empty, '.' or '..' segment"),
        ("vault:secret/./sys#k", "empty, '.' or '..' segment"),
        ("vault:secret/%2e%2e/team-b#k", "contains '%'"),
        ("vault:secret/.%2E/team-b#k", "contains '%'"),
        ("vault:secret/db?version=2#k", "contains '?'"),
        ("vault:secret\\db#k", "contains '\\\\'"),
        ("x${vault:sec ret#k}", "whitespace"),
        (">>vault:pki/issue/x#k#not json", "not a JSON object"),
        (">>vault:pki/issue/x#k#[1]", "not a JSON object"),
        ("a ${vault:secret/db#k", "not closed"),
        ("a ${vault:secret/db} b", "'#KEY' part is missing"),
    ] {
        let msg = parse_value("V", value).unwrap_err().to_string();
        assert!(msg.contains(problem), "{value:?}: {msg}");
    }
}

#[test]
fn from_path_entries_follow_the_same_path_rule() {
    for (list, problem) in [
        ("secret/%2e%2e/team-b", "contains '%'"),
        ("secret/./team-b", "empty, '.' or '..' segment"),
        ("secret/../team-b", "empty, '.' or '..' segment"),
        ("secret/a?b", "contains '?'"),
        ("secret/a b", "whitespace"),
    ] {
        let msg = parse_from_path("rotor.dev/from-path", list)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(problem), "{list:?}: {msg}");
    }
}

#[test]
fn from_path_lists() {
    let list = parse_from_path(
        "rotor.dev/from-path",
        "secret/data/a, secret/b#2,,vault:kv/c",
    )
    .unwrap();
    assert_eq!(
        list,
        vec![
            PathRef {
                path: "secret/data/a".into(),
                version: None
            },
            PathRef {
                path: "secret/b".into(),
                version: Some(2)
            },
            PathRef {
                path: "kv/c".into(),
                version: None
            },
        ]
    );
    let msg = parse_from_path("rotor.dev/from-path", "secret/a#x")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("rotor.dev/from-path") && msg.contains("secret/a#x"),
        "{msg}"
    );
}

#[test]
fn has_reference_agrees_with_the_parser() {
    assert!(has_reference("vault:a#b"));
    assert!(has_reference(">>bao:a#b"));
    assert!(has_reference("x${vault:a#b}"));
    assert!(!has_reference("http://vault:8200"));
}

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,12}"
}

fn reference() -> impl Strategy<Value = Reference> {
    (
        prop_oneof![Just(Scheme::Vault), Just(Scheme::Bao)],
        prop::collection::vec(segment(), 1..5),
        "[a-zA-Z0-9_.-]{1,16}",
        prop_oneof![
            (prop::option::of(1u64..10_000)).prop_map(|version| Action::Read { version }),
            prop::option::of("[a-z]{1,8}").prop_map(|b| Action::Write {
                body: b.map(|v| format!("{{\"v\":\"{v}\"}}"))
            }),
        ],
    )
        .prop_filter("no dot segments", |(_, segs, _, _)| {
            segs.iter().all(|s| s != "." && s != "..")
        })
        .prop_map(|(scheme, segs, key, action)| Reference {
            scheme,
            path: segs.join("/"),
            key,
            action,
        })
}

proptest! {
    #[test]
    fn printing_and_parsing_a_reference_round_trips(r in reference()) {
        let printed = r.to_string();
        let parsed = parse_reference("V", &printed).unwrap();
        prop_assert_eq!(parsed, r);
    }

    #[test]
    fn printing_and_parsing_an_inline_template_round_trips(
        refs in prop::collection::vec(reference(), 1..4),
        texts in prop::collection::vec("[a-z :/@=]{0,8}", 4),
    ) {
        let mut segments = Vec::new();
        for (i, r) in refs.into_iter().enumerate() {
            if !texts[i].is_empty() {
                segments.push(Segment::Text(texts[i].clone()));
            }
            segments.push(Segment::Reference(r));
        }
        let template = Template::Inline(segments);
        // A template that starts with a reference prints as "${...", still inline.
        let printed = template.to_string();
        let parsed = parse_value("V", &printed).unwrap().unwrap();
        prop_assert_eq!(parsed.to_string(), printed);
        prop_assert_eq!(parsed.references().len(), template.references().len());
    }

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        let _ = parse_value("V", &s);
        let _ = parse_from_path("V", &s);
    }

    #[test]
    fn arbitrary_reference_like_strings_never_panic(s in "(>>)?(vault|bao):[ -~]{0,40}", t in "[ -~]{0,20}") {
        let _ = parse_value("V", &s);
        let _ = parse_value("V", &format!("{t}${{{s}}}{t}"));
    }

    /// The cheap check (the webhook's prefilter) and the parser agree on every value: a value
    /// is left alone exactly when has_reference says no.
    #[test]
    fn has_reference_is_exactly_what_the_parser_takes(
        s in prop_oneof!["(>>)?(vault|bao):[ -~]{0,30}", "[ -~]{0,8}\\$\\{(>>)?(vault|bao):[ -~]{0,20}", any::<String>()],
    ) {
        let left_alone = matches!(parse_value("V", &s), Ok(None));
        prop_assert_eq!(has_reference(&s), !left_alone, "{:?}", s);
    }
}

#[test]
fn the_table_of_shapes_is_what_the_parser_does() {
    let cases = shape_cases();
    assert!(cases.len() >= 25, "the table was read: {}", cases.len());
    for (value, shape) in cases {
        let parsed = parse_value("V", value);
        let got = match &parsed {
            Ok(Some(Template::Whole(_))) => Shape::Whole,
            Ok(Some(Template::Inline(_))) => Shape::Inline,
            Ok(None) => Shape::Plain,
            Err(_) => Shape::Refused,
        };
        assert_eq!(got, shape, "{value:?}: {parsed:?}");
        assert_eq!(has_reference(value), shape != Shape::Plain, "{value:?}");
    }
}

#[test]
fn scanning_is_linear_and_capped() {
    // 64 references at the cap parse; one more is refused with the limit named.
    let at_cap: String = (0..MAX_REFERENCES_PER_VALUE)
        .map(|i| format!("${{vault:s/p#k{i}}},"))
        .collect();
    assert_eq!(
        parse_value("V", &at_cap)
            .unwrap()
            .unwrap()
            .references()
            .len(),
        MAX_REFERENCES_PER_VALUE
    );
    let over = format!("{at_cap}${{vault:s/p#last}}");
    let msg = parse_value("V", &over).unwrap_err().to_string();
    assert!(msg.contains("more than 64 references"), "{msg}");
    // A value over the byte cap is refused at once, quoted short.
    let big = format!("${{vault:s/p#k}}{}", "x".repeat(MAX_VALUE_BYTES));
    let msg = parse_value("V", &big).unwrap_err().to_string();
    assert!(msg.contains("over the limit") && msg.len() < 600, "{msg}");
    // What made the old scanner quadratic: many '${' that open nothing, an unclosed brace after
    // a reference, a prefix that never appears. A generous bound that catches O(n^2).
    let started = std::time::Instant::now();
    for hostile in [
        "${x".repeat(40_000),
        format!("${{vault:a/b#c{}", "{".repeat(120_000)),
        format!("${{>>vault:a/b#c#{{\"{}", "\"".repeat(120_000)),
        "vault:".repeat(20_000),
    ] {
        let _ = parse_value("V", &hostile);
        let _ = has_reference(&hostile);
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
