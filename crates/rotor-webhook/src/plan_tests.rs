use super::*;
use crate::targets::select_targets;

fn config() -> InjectConfig {
    InjectConfig {
        default_addr: Some("https://vault.vault:8200".to_string()),
        addr_allowlist: vec![
            "https://vault.team-a:8200".to_string(),
            "https://*.internal:8200".to_string(),
        ],
        ..InjectConfig::default()
    }
}

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).unwrap()
}

fn app_pod() -> Value {
    json!({
        "metadata": { "name": "app", "namespace": "shop", "annotations": { "rotor.dev/vault-role": "shop" } },
        "spec": {
            "serviceAccountName": "shop-sa",
            "initContainers": [{ "name": "migrate", "image": "migrate:1", "command": ["/migrate"],
                "env": [{ "name": "DB", "value": "vault:secret/data/db#password" }] }],
            "containers": [
                { "name": "web", "image": "web:1", "command": ["/web"], "args": ["--port", "80"],
                  "env": [{ "name": "DB", "value": "vault:secret/data/db#password" }, { "name": "PLAIN", "value": "x" }],
                  "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
                  "securityContext": { "runAsUser": 1000 },
                  "readinessProbe": { "httpGet": { "path": "/", "port": 80 } } },
                { "name": "sidecar", "image": "side:1", "command": ["/side"] }
            ],
            "volumes": [{ "name": "data", "emptyDir": {} }]
        }
    })
}

fn apply(pod_json: &Value, plan: &Plan) -> Value {
    let mut doc = pod_json.clone();
    if let Plan::Patch(patch) = plan {
        json_patch::patch(&mut doc, &patch.to_json_patch().unwrap()).unwrap();
    }
    doc
}

#[test]
fn pods_without_references_mirror_pods_and_opt_outs_are_unchanged() {
    let plain = json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "c", "image": "i", "env": [{ "name": "A", "value": "http://vault:8200" }] }] } });
    assert_eq!(
        plan_mutation(&pod(plain), &config()).unwrap(),
        Plan::Unchanged("no references")
    );
    let mut mirror = app_pod();
    mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"] = json!("x");
    assert_eq!(
        plan_mutation(&pod(mirror), &config()).unwrap(),
        Plan::Unchanged("mirror pod")
    );
    let mut off = app_pod();
    off["metadata"]["annotations"]["rotor.dev/inject"] = json!("false");
    assert_eq!(
        plan_mutation(&pod(off), &config()).unwrap(),
        Plan::Unchanged("opted out")
    );
    let mut bv_off = app_pod();
    bv_off["metadata"]["annotations"]["vault.security.banzaicloud.io/mutate"] = json!("skip");
    assert_eq!(
        plan_mutation(&pod(bv_off), &config()).unwrap(),
        Plan::Unchanged("opted out")
    );
}

#[test]
fn injects_the_wrapper_and_keeps_every_existing_field() {
    let input = app_pod();
    let plan = plan_mutation(&pod(input.clone()), &config()).unwrap();
    let out = apply(&input, &plan);
    let spec = &out["spec"];
    // Our init container first, the pod's own after it, itself wrapped.
    assert_eq!(spec["initContainers"][0]["name"], COPY_CONTAINER);
    assert_eq!(
        spec["initContainers"][0]["command"],
        json!(["/rotor-init", "copy", BIN_DIR])
    );
    assert_eq!(spec["initContainers"][1]["name"], "migrate");
    assert_eq!(spec["initContainers"][1]["command"], json!([WRAPPER]));
    assert_eq!(spec["initContainers"][1]["args"], json!(["--", "/migrate"]));
    let web = &spec["containers"][0];
    assert_eq!(web["command"], json!([WRAPPER]));
    assert_eq!(web["args"], json!(["--", "/web", "--port", "80"]));
    assert_eq!(web["securityContext"]["runAsUser"], 1000);
    assert_eq!(web["readinessProbe"]["httpGet"]["port"], 80);
    assert_eq!(web["volumeMounts"][0]["name"], "data");
    assert_eq!(
        web["volumeMounts"][1],
        json!({ "name": BIN_VOLUME, "mountPath": BIN_DIR, "readOnly": true })
    );
    assert_eq!(web["volumeMounts"][2]["mountPath"], TOKEN_DIR);
    let env: Vec<(String, String)> = web["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        env.contains(&("DB".into(), "vault:secret/data/db#password".into())),
        "references stay references"
    );
    assert!(env.contains(&("ROTOR_ADDR".into(), "https://vault.vault:8200".into())));
    assert!(env.contains(&("ROTOR_ROLE".into(), "shop".into())));
    assert!(env.contains(&("ROTOR_TOKEN_FILE".into(), format!("{TOKEN_DIR}/token"))));
    // The sidecar has no references: untouched.
    assert_eq!(spec["containers"][1], input["spec"]["containers"][1]);
    // Volumes: the pod's own kept, ours added.
    let names: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["data", BIN_VOLUME, TOKEN_VOLUME]);
    assert_eq!(spec["volumes"][1]["emptyDir"]["medium"], "Memory");
    assert_eq!(
        spec["volumes"][2]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "rotor"
    );
}

#[test]
fn planning_its_own_output_changes_nothing() {
    for input in [
        app_pod(),
        json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "c", "image": "i", "command": ["/c"], "env": [{ "name": "A", "value": "x${vault:s/d#k}y" }] }] } }),
    ] {
        let once = apply(
            &input,
            &plan_mutation(&pod(input.clone()), &config()).unwrap(),
        );
        assert_eq!(
            plan_mutation(&pod(once.clone()), &config()).unwrap(),
            Plan::Unchanged("already injected")
        );
    }
}

#[test]
fn the_injected_container_passes_the_restricted_standard() {
    let out = apply(
        &app_pod(),
        &plan_mutation(&pod(app_pod()), &config()).unwrap(),
    );
    let sc = &out["spec"]["initContainers"][0]["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
}

#[test]
fn denials_name_the_object_the_field_and_the_fix() {
    let mut no_command = app_pod();
    no_command["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("command");
    let Deny {
        reason,
        message: msg,
    } = plan_mutation(&pod(no_command), &config()).unwrap_err();
    assert_eq!(reason, DenyReason::NoEntrypoint);
    assert!(
        msg.contains("\"web\"") && msg.contains("spec.containers[0].command"),
        "{msg}"
    );

    let mut bad_ref = app_pod();
    bad_ref["spec"]["containers"][0]["env"][0]["value"] = json!("vault:secret/data/db");
    let Deny {
        reason,
        message: msg,
    } = plan_mutation(&pod(bad_ref), &config()).unwrap_err();
    assert_eq!(reason, DenyReason::BadReference);
    assert!(
        msg.contains("container \"web\"") && msg.contains("env DB") && msg.contains("expected"),
        "{msg}"
    );

    let mut evil = app_pod();
    evil["metadata"]["annotations"]["rotor.dev/vault-addr"] =
        json!("https://attacker.example:8200");
    let Deny {
        reason,
        message: msg,
    } = plan_mutation(&pod(evil), &config()).unwrap_err();
    assert_eq!(reason, DenyReason::StoreNotAllowed);
    assert!(
        msg.contains("rotor.dev/vault-addr") && msg.contains("allowlist"),
        "{msg}"
    );

    let mut bad_bool = app_pod();
    bad_bool["metadata"]["annotations"]["rotor.dev/daemon"] = json!("sometimes");
    let Deny {
        reason,
        message: msg,
    } = plan_mutation(&pod(bad_bool), &config()).unwrap_err();
    assert_eq!(reason, DenyReason::BadAnnotation);
    assert!(
        msg.contains("rotor.dev/daemon") && msg.contains("expected"),
        "{msg}"
    );

    let no_default = InjectConfig {
        default_addr: None,
        ..config()
    };
    let Deny {
        reason,
        message: msg,
    } = plan_mutation(&pod(app_pod()), &no_default).unwrap_err();
    assert_eq!(reason, DenyReason::StoreNotAllowed);
    assert!(
        msg.contains("shop/app") && msg.contains("--default-addr"),
        "{msg}"
    );
}

#[test]
fn allowlisted_addresses_and_bank_vaults_annotations_are_honoured() {
    let mut input = app_pod();
    let ann = input["metadata"]["annotations"].as_object_mut().unwrap();
    ann.remove("rotor.dev/vault-role");
    ann.insert(
        "vault.security.banzaicloud.io/vault-addr".into(),
        json!("https://bao.internal:8200"),
    );
    ann.insert(
        "vault.security.banzaicloud.io/vault-role".into(),
        json!("bv-role"),
    );
    ann.insert(
        "vault.security.banzaicloud.io/vault-path".into(),
        json!("k8s-prod"),
    );
    ann.insert(
        "secrets-webhook.security.bank-vaults.io/vault-env-daemon".into(),
        json!("true"),
    );
    ann.insert(
        "vault.security.banzaicloud.io/vault-env-passthrough".into(),
        json!("VAULT_ADDR"),
    );
    let out = apply(
        &input,
        &plan_mutation(&pod(input.clone()), &config()).unwrap(),
    );
    let env = out["spec"]["containers"][0]["env"].to_string();
    for expected in [
        r#"{"name":"ROTOR_ADDR","value":"https://bao.internal:8200"}"#,
        r#"{"name":"ROTOR_ROLE","value":"bv-role"}"#,
        r#"{"name":"ROTOR_AUTH_PATH","value":"k8s-prod"}"#,
        r#"{"name":"ROTOR_DAEMON","value":"true"}"#,
        r#"{"name":"ROTOR_PASSTHROUGH","value":"VAULT_ADDR"}"#,
    ] {
        assert!(env.contains(expected), "{expected} in {env}");
    }
}

#[test]
fn from_path_wraps_every_container_and_token_auth_mounts_no_token() {
    let input = json!({
        "metadata": { "name": "p", "namespace": "n", "annotations": {
            "rotor.dev/from-path": "secret/data/app", "rotor.dev/vault-auth-method": "token" } },
        "spec": { "containers": [{ "name": "a", "image": "a", "command": ["/a"] }, { "name": "b", "image": "b", "command": ["/b"] }] }
    });
    let out = apply(
        &input,
        &plan_mutation(&pod(input.clone()), &config()).unwrap(),
    );
    for c in out["spec"]["containers"].as_array().unwrap() {
        assert_eq!(c["command"], json!([WRAPPER]));
        assert!(c["env"].to_string().contains("ROTOR_FROM_PATH"));
        assert!(!c["volumeMounts"].to_string().contains(TOKEN_DIR));
    }
    assert_eq!(out["spec"]["volumes"].as_array().unwrap().len(), 1);

    // The webhook's extra deny list reaches rotor-init with the from-path list.
    let config = InjectConfig {
        from_path_deny: vec!["INTERNAL_*".to_string(), "DEBUG".to_string()],
        ..config()
    };
    let out = apply(
        &input,
        &plan_mutation(&pod(input.clone()), &config).unwrap(),
    );
    let env = &out["spec"]["containers"][0]["env"];
    let deny = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "ROTOR_FROM_PATH_DENY")
        .expect("the deny list is passed");
    assert_eq!(deny["value"], "INTERNAL_*,DEBUG");
}

#[test]
fn the_store_ca_reaches_rotor_init() {
    let with_ca = InjectConfig {
        store_ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n".to_string()),
        ..config()
    };
    let out = apply(
        &app_pod(),
        &plan_mutation(&pod(app_pod()), &with_ca).unwrap(),
    );
    assert!(
        out["spec"]["containers"][0]["env"]
            .to_string()
            .contains("ROTOR_CACERT_PEM")
    );
    let without = apply(
        &app_pod(),
        &plan_mutation(&pod(app_pod()), &config()).unwrap(),
    );
    assert!(
        !without["spec"]["containers"][0]["env"]
            .to_string()
            .contains("ROTOR_CACERT")
    );
}

#[test]
fn looked_up_entrypoints_are_wrapped_like_the_runtime_runs_them() {
    let mut input = app_pod();
    input["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("command");
    input["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("args");
    input["spec"]["initContainers"][0]
        .as_object_mut()
        .unwrap()
        .remove("command");
    let p = pod(input.clone());
    let needs = select_targets(&p, &HashSet::new()).unwrap().lookup_needs();
    assert_eq!(
        needs
            .iter()
            .map(|n| n.container.as_str())
            .collect::<Vec<_>>(),
        vec!["migrate", "web"]
    );
    let commands = ImageCommands::from([
        (
            "web".to_string(),
            ImageCommand {
                entrypoint: vec!["/bin/web".into()],
                cmd: vec!["--port".into(), "80".into()],
            },
        ),
        (
            "migrate".to_string(),
            ImageCommand {
                entrypoint: vec![],
                cmd: vec!["/migrate".into(), "up".into()],
            },
        ),
    ]);
    let out = apply(
        &input,
        &plan_mutation_with(&p, &config(), &lookups(&commands)).unwrap(),
    );
    assert_eq!(
        out["spec"]["containers"][0]["args"],
        json!(["--", "/bin/web", "--port", "80"])
    );
    assert_eq!(
        out["spec"]["initContainers"][1]["args"],
        json!(["--", "/migrate", "up"])
    );
    // The pod's own args replace the image's CMD, after its ENTRYPOINT.
    input["spec"]["containers"][0]["args"] = json!(["--debug"]);
    let out = apply(
        &input,
        &plan_mutation_with(&pod(input.clone()), &config(), &lookups(&commands)).unwrap(),
    );
    assert_eq!(
        out["spec"]["containers"][0]["args"],
        json!(["--", "/bin/web", "--debug"])
    );
    // An image with neither is refused with the fix.
    let empty = ImageCommands::from([
        ("web".to_string(), ImageCommand::default()),
        (
            "migrate".to_string(),
            ImageCommand {
                entrypoint: vec!["/m".into()],
                cmd: vec![],
            },
        ),
    ]);
    input["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("args");
    let Deny {
        reason,
        message: msg,
    } = plan_mutation_with(&pod(input), &config(), &lookups(&empty)).unwrap_err();
    assert_eq!(reason, DenyReason::NoEntrypoint);
    assert!(
        msg.contains("neither ENTRYPOINT nor CMD") && msg.contains("command"),
        "{msg}"
    );
    // Opted-out pods need no lookup.
    let mut off = app_pod();
    off["metadata"]["annotations"]["rotor.dev/inject"] = json!("false");
    off["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("command");
    let off = pod(off);
    assert!(
        select_targets(&off, &HashSet::new())
            .unwrap()
            .lookup_needs()
            .is_empty()
    );
    // A malformed opt-out is refused once, by selection, before any lookup.
    let mut bad = app_pod();
    bad["metadata"]["annotations"]["rotor.dev/inject"] = json!("sometimes");
    let bad = pod(bad);
    let denied = select_targets(&bad, &HashSet::new()).unwrap_err();
    assert_eq!(denied.reason, DenyReason::BadAnnotation);
    assert!(
        denied.message.contains("rotor.dev/inject=\"sometimes\""),
        "{denied}"
    );
    assert_eq!(plan_mutation(&bad, &config()).unwrap_err(), denied);
}

fn lookups(commands: &ImageCommands) -> Lookups {
    Lookups {
        image_commands: commands.clone(),
        ..Lookups::default()
    }
}

#[test]
fn containers_with_configmap_references_are_wrapped() {
    let input = json!({
        "metadata": { "name": "p", "namespace": "n" },
        "spec": { "containers": [
            { "name": "a", "image": "a", "command": ["/a"], "envFrom": [{ "configMapRef": { "name": "refs" } }] },
            { "name": "b", "image": "b", "command": ["/b"] },
        ] }
    });
    let p = pod(input.clone());
    assert_eq!(
        plan_mutation(&p, &config()).unwrap(),
        Plan::Unchanged("no references")
    );
    let found = Lookups {
        configmap_references: HashSet::from(["a".to_string()]),
        ..Lookups::default()
    };
    let out = apply(&input, &plan_mutation_with(&p, &config(), &found).unwrap());
    assert_eq!(out["spec"]["containers"][0]["command"], json!([WRAPPER]));
    assert_eq!(out["spec"]["containers"][1], input["spec"]["containers"][1]);
}

#[test]
fn a_container_cannot_set_rotors_store_settings_itself() {
    let mut input = app_pod();
    input["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "ROTOR_ADDR", "value": "https://attacker.example" }));
    let Deny {
        reason,
        message: msg,
    } = plan_mutation(&pod(input), &config()).unwrap_err();
    assert_eq!(reason, DenyReason::RotorSetting);
    assert!(
        msg.contains("sets ROTOR_ADDR") && msg.contains("remove it"),
        "{msg}"
    );
    // Tuning rotor-init's patience or logs is the pod's own business.
    let mut input = app_pod();
    input["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "ROTOR_LOG_LEVEL", "value": "debug" }));
    let Plan::Patch(_) = plan_mutation(&pod(input), &config()).unwrap() else {
        panic!("a tunable setting is kept")
    };
}

#[test]
fn what_would_fail_later_is_refused_now_with_the_field_and_the_fix() {
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "windows",
            Box::new(|p: &mut Value| p["spec"]["os"] = json!({ "name": "windows" })),
            "spec.os.name is windows",
        ),
        (
            "a user volume named like rotor's",
            Box::new(|p: &mut Value| {
                p["spec"]["volumes"] =
                    json!([{ "name": "rotor-bin", "configMap": { "name": "x" } }])
            }),
            "spec.volumes has \"rotor-bin\"",
        ),
        (
            "a user hostPath named like rotor's files volume",
            Box::new(|p: &mut Value| {
                p["spec"]["volumes"] =
                    json!([{ "name": "rotor-files-7", "hostPath": { "path": "/var/tmp" } }])
            }),
            "spec.volumes has \"rotor-files-7\"",
        ),
        (
            "a user volume named like rotor's pod info",
            Box::new(|p: &mut Value| {
                p["spec"]["volumes"] = json!([{ "name": "rotor-pod-info", "emptyDir": {} }])
            }),
            "spec.volumes has \"rotor-pod-info\"",
        ),
        (
            "a user init container named like rotor's",
            Box::new(|p: &mut Value| {
                p["spec"]["initContainers"] =
                    json!([{ "name": "rotor-init-copy", "image": "busybox", "command": ["true"] }])
            }),
            "spec.initContainers has \"rotor-init-copy\"",
        ),
        (
            "a mount at rotor's path",
            Box::new(|p: &mut Value| {
                p["spec"]["containers"][0]["volumeMounts"] =
                    json!([{ "name": "data", "mountPath": "/rotor/bin/" }])
            }),
            "mounts \"data\" at /rotor/bin",
        ),
        (
            "$(VAR) of a referenced variable",
            Box::new(|p: &mut Value| {
                p["spec"]["containers"][0]["args"] = json!(["--password=$(DB)"])
            }),
            "uses $(DB) in command or args",
        ),
    ];
    for (what, change, needle) in cases {
        let mut input = app_pod();
        change(&mut input);
        let Deny {
            reason,
            message: msg,
        } = plan_mutation(&pod(input), &config()).unwrap_err();
        let expected = match what {
            "windows" => DenyReason::UnsupportedOs,
            "$(VAR) of a referenced variable" => DenyReason::ExpandedReference,
            _ => DenyReason::ReservedName,
        };
        assert_eq!(reason, expected, "{what}");
        assert!(msg.contains(needle), "{what}: {msg}");
    }
    // An escaped $$(VAR) is the app's own business.
    let mut input = app_pod();
    input["spec"]["containers"][0]["args"] = json!(["--password=$$(DB)", "$(PLAIN)"]);
    assert!(matches!(
        plan_mutation(&pod(input), &config()),
        Ok(Plan::Patch(_))
    ));
}

mod fuzz {
    //! A bounded fuzz of the planner (runs in CI with a fixed number of cases): pods built from
    //! the table of reference shapes, reference-like noise and arbitrary text, with rotor's
    //! annotations in valid and invalid forms. Planning never panics; a patch always applies and
    //! yields a valid Pod; planning that Pod again changes nothing.
    use proptest::prelude::*;
    use rotor_testkit::pod_fuzz::pod_json;

    use super::*;

    /// The property must see patches, not only refusals: the generator, run with a fixed seed
    /// (so the count is the same on every run), yields patched pods among 512.
    #[test]
    fn the_generated_pods_include_patched_ones() {
        use proptest::strategy::ValueTree as _;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = pod_json();
        let patched = (0..512)
            .filter(|_| {
                let input = strategy.new_tree(&mut runner).unwrap().current();
                matches!(plan_mutation(&pod(input), &config()), Ok(Plan::Patch(_)))
            })
            .count();
        assert!(
            patched >= 10,
            "only {patched} of 512 generated pods were patched"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn planning_never_panics_and_patches_apply_once(input in pod_json()) {
            let plan = plan_mutation(&pod(input.clone()), &config());
            if let Ok(plan @ Plan::Patch(_)) = plan {
                let once = apply(&input, &plan);
                let mutated: Pod = serde_json::from_value(once.clone()).expect("a valid Pod");
                prop_assert_eq!(
                    plan_mutation(&mutated, &config()).unwrap(),
                    Plan::Unchanged("already injected")
                );
            }
        }
    }
}

fn env_of(container: &Value) -> std::collections::BTreeMap<String, String> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn files_get_a_memory_volume_per_container_and_their_templates_through_the_downward_api() {
    let mut input = app_pod();
    let annotations = &mut input["metadata"]["annotations"];
    annotations["rotor.dev/file.db.conf"] = json!("pw=${vault:secret/data/db#password}");
    annotations["rotor.dev/files-containers"] = json!("web,sidecar");
    annotations["rotor.dev/files-mode"] = json!("0440");
    annotations["rotor.dev/on-rotation"] = json!("signal:SIGUSR1");
    let plan = plan_mutation(&pod(input.clone()), &config()).unwrap();
    let out = apply(&input, &plan);
    let spec = &out["spec"];
    let volumes = spec["volumes"].as_array().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).cloned();
    for name in ["rotor-files-0", "rotor-files-1"] {
        assert_eq!(volume(name).unwrap()["emptyDir"]["medium"], "Memory");
    }
    let info = volume("rotor-pod-info").unwrap();
    let items = info["downwardAPI"]["items"].as_array().unwrap();
    assert_eq!(items[0]["path"], "files/db.conf");
    assert_eq!(
        items[0]["fieldRef"]["fieldPath"],
        "metadata.annotations['rotor.dev/file.db.conf']"
    );
    assert_eq!(items[1]["path"], "versions");
    // Each container mounts its own files volume; the migrate init container gets none.
    let (web, side) = (&spec["containers"][0], &spec["containers"][1]);
    let mounts_of = |c: &Value| -> Vec<(String, String)> {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["mountPath"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert!(mounts_of(web).contains(&("rotor-files-0".into(), "/rotor/files".into())));
    assert!(mounts_of(side).contains(&("rotor-files-1".into(), "/rotor/files".into())));
    assert!(mounts_of(side).contains(&("rotor-pod-info".into(), "/rotor/pod".into())));
    assert!(
        !mounts_of(&spec["initContainers"][1])
            .iter()
            .any(|(n, _)| n.starts_with("rotor-files"))
    );
    let env = env_of(web);
    assert_eq!(env["ROTOR_FILES"], "db.conf");
    assert_eq!(env["ROTOR_FILES_MODE"], "0440");
    assert_eq!(env["ROTOR_ON_ROTATION"], "signal:SIGUSR1");
    assert!(!env_of(&spec["initContainers"][1]).contains_key("ROTOR_FILES"));
    // The template never becomes an env value, and planning the output again changes nothing.
    assert!(!out.to_string().contains("\"value\":\"pw=${vault"));
    assert_eq!(
        plan_mutation(&pod(out), &config()).unwrap(),
        Plan::Unchanged("already injected")
    );
}

#[test]
fn a_pod_without_volumes_gets_every_volume_its_mounts_name() {
    let input = json!({
        "metadata": { "name": "web", "namespace": "shop", "annotations": {
            "rotor.dev/file.db.conf": "pw=${vault:secret/data/db#password}",
        } },
        "spec": { "containers": [{ "name": "web", "image": "web:1", "command": ["/web"] }] }
    });
    let plan = plan_mutation(&pod(input.clone()), &config()).unwrap();
    let out = apply(&input, &plan);
    let volumes: Vec<&str> = out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for list in ["initContainers", "containers"] {
        for c in out["spec"][list].as_array().unwrap() {
            for m in c["volumeMounts"].as_array().unwrap() {
                let name = m["name"].as_str().unwrap();
                assert!(volumes.contains(&name), "{name} not in {volumes:?}");
            }
        }
    }
    assert_eq!(
        volumes,
        vec![
            "rotor-bin",
            "rotor-token",
            "rotor-files-0",
            "rotor-pod-info"
        ]
    );
}

#[test]
fn signal_mode_with_a_secret_in_env_only_and_clashing_mounts_are_refused() {
    let mut input = app_pod();
    input["metadata"]["annotations"]["rotor.dev/on-rotation"] = json!("signal");
    let err = plan_mutation(&pod(input.clone()), &config()).unwrap_err();
    assert_eq!(err.reason, DenyReason::BadReference);
    let err = err.message;
    assert!(
        err.contains("secret/data/db is read at its current version in env only")
            && err.contains("rotor.dev/on-rotation: rollout"),
        "{err}"
    );
    input["metadata"]["annotations"]["rotor.dev/file.db"] = json!("vault:secret/data/db#password");
    input["metadata"]["annotations"]["rotor.dev/files-dir"] = json!("/data");
    let err = plan_mutation(&pod(input), &config()).unwrap_err();
    assert_eq!(err.reason, DenyReason::ReservedName);
    let err = err.message;
    assert!(
        err.contains(
            "container \"web\" already mounts data at /data (spec.containers[0].volumeMounts)"
        ) && err.contains("rotor.dev/files-dir"),
        "{err}"
    );
}

fn image_volume_config() -> InjectConfig {
    InjectConfig {
        init_binary_source: BinarySource::ImageVolume,
        init_image: "registry.local/rotor-init:1".to_string(),
        ..config()
    }
}

#[test]
fn image_volume_injection_mounts_the_init_image_and_adds_no_init_container() {
    let input = app_pod();
    let plan = plan_mutation(&pod(input.clone()), &image_volume_config()).unwrap();
    let out = apply(&input, &plan);
    let spec = &out["spec"];
    // The pod's own init container is first and still wrapped; nothing of rotor runs before it.
    let inits = spec["initContainers"].as_array().unwrap();
    assert_eq!(inits.len(), 1);
    assert_eq!(inits[0]["name"], "migrate");
    assert_eq!(inits[0]["command"], json!([WRAPPER]));
    assert_eq!(inits[0]["args"], json!(["--", "/migrate"]));
    let bin = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == BIN_VOLUME)
        .unwrap();
    assert_eq!(
        bin,
        &json!({ "name": BIN_VOLUME, "image": { "reference": "registry.local/rotor-init:1", "pullPolicy": "IfNotPresent" } })
    );
    let web = &spec["containers"][0];
    assert_eq!(web["command"], json!([WRAPPER]));
    assert_eq!(
        web["volumeMounts"][1],
        json!({ "name": BIN_VOLUME, "mountPath": BIN_DIR, "readOnly": true })
    );
    assert_eq!(env_of(web)["ROTOR_ADDR"], "https://vault.vault:8200");
    // Planned again (reinvocation, or the other webhook setting): nothing changes, no copy added.
    let copy_config = InjectConfig {
        init_binary_source: BinarySource::Copy,
        ..image_volume_config()
    };
    for config in [image_volume_config(), copy_config] {
        assert_eq!(
            plan_mutation(&pod(out.clone()), &config).unwrap(),
            Plan::Unchanged("already injected")
        );
    }
    // And a pod injected by copy stays a copy pod when the flag says image-volume.
    let copied = apply(
        &input,
        &plan_mutation(&pod(input.clone()), &config()).unwrap(),
    );
    assert_eq!(
        plan_mutation(&pod(copied), &image_volume_config()).unwrap(),
        Plan::Unchanged("already injected")
    );
}

#[test]
fn a_pod_chooses_its_binary_source_and_a_wrong_choice_is_refused() {
    let with = |value: &str| {
        let mut input = app_pod();
        input["metadata"]["annotations"]["rotor.dev/init-binary-source"] = json!(value);
        input
    };
    let has_copy = |input: &Value, config: &InjectConfig| {
        let out = apply(input, &plan_mutation(&pod(input.clone()), config).unwrap());
        out["spec"]["initContainers"][0]["name"] == COPY_CONTAINER
    };
    assert!(!has_copy(&with("image-volume"), &config()));
    assert!(has_copy(&with("copy"), &image_volume_config()));
    assert!(has_copy(&app_pod(), &config()));
    assert!(!has_copy(&app_pod(), &image_volume_config()));
    let Deny {
        reason,
        message: msg,
    } = plan_mutation(&pod(with("oci")), &config()).unwrap_err();
    assert_eq!(reason, DenyReason::BadAnnotation);
    assert!(
        msg.contains("rotor.dev/init-binary-source=\"oci\"") && msg.contains("image-volume"),
        "{msg}"
    );
}

#[test]
fn a_rotor_bin_image_volume_of_another_image_is_not_rotors() {
    let mut input = app_pod();
    input["spec"]["volumes"] = json!([{ "name": BIN_VOLUME, "image": { "reference": "evil:1" } }]);
    let Deny {
        reason,
        message: msg,
    } = plan_mutation(&pod(input), &image_volume_config()).unwrap_err();
    assert_eq!(reason, DenyReason::ReservedName);
    assert!(
        msg.contains("spec.volumes") && msg.contains("rotor-bin"),
        "{msg}"
    );
}

#[test]
fn the_default_store_namespace_reaches_pods_and_an_annotation_overrides_it() {
    let config = InjectConfig {
        default_namespace: Some("team-a".to_string()),
        ..config()
    };
    let injected = |input: &Value| {
        let plan = plan_mutation(&pod(input.clone()), &config).unwrap();
        env_of(&apply(input, &plan)["spec"]["containers"][0])
    };
    let input = app_pod();
    assert_eq!(
        injected(&input).get("ROTOR_NAMESPACE").map(String::as_str),
        Some("team-a")
    );
    let mut annotated = app_pod();
    annotated["metadata"]["annotations"]["rotor.dev/vault-namespace"] = json!("team-b");
    assert_eq!(
        injected(&annotated)
            .get("ROTOR_NAMESPACE")
            .map(String::as_str),
        Some("team-b")
    );
    // Without a default, a pod that names none reads the root namespace.
    let plan = plan_mutation(&pod(input.clone()), &self::config()).unwrap();
    assert_eq!(
        env_of(&apply(&input, &plan)["spec"]["containers"][0]).get("ROTOR_NAMESPACE"),
        None
    );
}
