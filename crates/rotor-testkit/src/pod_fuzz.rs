//! A bounded generator of pods for fuzzing rotor's admission (the webhook's planner in its unit
//! tests, and the planner against the admission policies through the real API server): pods
//! built from the table of reference shapes, reference-like noise and arbitrary text, with
//! rotor's annotations in valid and invalid forms, containers with and without `command`.

use proptest::prelude::*;
use serde_json::{Value, json};

fn value() -> impl Strategy<Value = String> {
    use rotor_core::reference::Shape;
    let cases = rotor_core::reference::shape_cases();
    let shapes: Vec<String> = cases.iter().map(|(v, _)| v.to_string()).collect();
    // The accepted Vault shapes again on their own, so that pods both admission paths inject
    // stay common however many refused (or AWS: the webhook's alone) rows the table grows.
    let accepted: Vec<String> = cases
        .iter()
        .filter(|(v, shape)| {
            matches!(shape, Shape::Whole | Shape::Inline) && !v.contains("arn:aws")
        })
        .map(|(v, _)| v.to_string())
        .collect();
    prop_oneof![
        prop::sample::select(shapes),
        prop::sample::select(accepted),
        "(>>)?(vault|bao):[a-z/#{}\" .:0-9]{0,24}",
        "[a-z ]{0,6}\\$\\{(vault|bao|>>vault):[a-z/#{}.0-9]{0,20}\\}?[a-z ]{0,6}",
        any::<String>(),
    ]
}

/// Annotations the webhook reads (and some it does not), valid and invalid.
const ANNOTATIONS: &[&str] = &[
    "rotor.dev/inject",
    "rotor.dev/from-path",
    "rotor.dev/vault-addr",
    "rotor.dev/vault-role",
    "rotor.dev/auth-method",
    "vault.security.banzaicloud.io/vault-env-daemon",
    "vault.security.banzaicloud.io/vault-skip-verify",
];

/// Annotations the admission policy reads too, so that its pods are common.
const POLICY_ANNOTATIONS: &[&str] = &[
    "rotor.dev/inject",
    "rotor.dev/vault-addr",
    "rotor.dev/vault-role",
    "rotor.dev/vault-namespace",
    "vault.security.banzaicloud.io/vault-path",
    "secrets-webhook.security.bank-vaults.io/mutate",
];

fn annotations(keys: &'static [&'static str]) -> impl Strategy<Value = Vec<(String, String)>> {
    let keys = prop::sample::select(keys);
    let values = prop_oneof![
        prop::sample::select(vec![
            "true",
            "false",
            "yes",
            "0",
            "maybe",
            "secret/data/a,secret/data/b#2",
            "https://vault.team-a:8200",
            "http://evil:8200",
            "kubernetes",
            "jwt",
            "",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,16}",
    ];
    prop::collection::vec((keys.prop_map(str::to_string), values), 0..4)
}

/// Pods of every kind: containers with and without `command`, any annotation.
pub fn pod_json() -> impl Strategy<Value = Value> {
    pods(ANNOTATIONS, any::<bool>().boxed())
}

/// Pods shaped like the admission policy's scope: every container states `command`, the
/// annotations are those it reads (with valid and invalid values).
pub fn policy_pod_json() -> impl Strategy<Value = Value> {
    pods(POLICY_ANNOTATIONS, Just(true).boxed())
}

fn pods(
    keys: &'static [&'static str],
    has_command: BoxedStrategy<bool>,
) -> impl Strategy<Value = Value> {
    let container = (prop::collection::vec(value(), 0..4), has_command);
    (annotations(keys), prop::collection::vec(container, 1..4)).prop_map(
        |(annotations, containers)| {
            let annotations: serde_json::Map<String, Value> = annotations
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let containers: Vec<Value> = containers
                .into_iter()
                .enumerate()
                .map(|(i, (env, has_command))| {
                    let env: Vec<Value> = env
                        .into_iter()
                        .enumerate()
                        .map(|(k, v)| json!({ "name": format!("V{k}"), "value": v }))
                        .collect();
                    let mut c = json!({ "name": format!("c{i}"), "image": "app:1", "env": env });
                    if has_command {
                        c["command"] = json!(["/app"]);
                    }
                    c
                })
                .collect();
            json!({ "metadata": { "name": "p", "namespace": "n", "annotations": annotations },
                "spec": { "containers": containers } })
        },
    )
}
