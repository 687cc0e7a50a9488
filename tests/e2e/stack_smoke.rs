//! Proves the local control plane is real: a ServiceAccount token from the TokenRequest API logs
//! in to OpenBao through Kubernetes auth (OpenBao calls TokenReview on our kube-apiserver), reads
//! a KV v2 secret, and a token of another ServiceAccount is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

use anyhow::Result;
use rotor_testkit::{Stack, StackOptions};
use serde_json::json;

#[tokio::test]
async fn service_account_logs_in_to_openbao_and_reads_a_secret() -> Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    eprintln!("stack ready in {:?}", stack.startup);

    // The version the installed binary was built as (scripts/install-tools.sh sets it), which
    // is the newest minor or the older one by ROTOR_TOOLS_BIN: never a number written here.
    let version = stack.kube.apiserver_version().await?;
    let built = std::process::Command::new(rotor_testkit::tools::tool("kube-apiserver")?)
        .arg("--version")
        .output()?;
    let built = String::from_utf8_lossy(&built.stdout);
    assert_eq!(
        built.split_whitespace().nth(1),
        Some(version.git_version.as_str()),
        "the apiserver reports the version it was built as ({built:?})"
    );
    assert!(
        version.git_version.starts_with("v1."),
        "{}",
        version.git_version
    );

    let ns = stack.namespace("smoke").await?;
    stack.service_account(&ns, "app").await?;
    stack.service_account(&ns, "other").await?;

    let bao = stack.bao_admin()?;
    stack.enable_bao_kubernetes_auth("kubernetes").await?;
    bao.put_policy(
        "read-db",
        r#"path "secret/data/db" { capabilities = ["read"] }"#,
    )
    .await?;
    bao.put_kubernetes_role(
        "kubernetes",
        "app",
        &["app"],
        &[&ns],
        &["read-db"],
        Some("rotor-smoke"),
    )
    .await?;
    let version = bao
        .put_kv2("secret", "db", json!({ "password": "smoke-value-1" }))
        .await?;
    assert_eq!(version, 1);

    let jwt = stack
        .service_account_token(&ns, "app", "rotor-smoke", 600)
        .await?;
    let token = bao.login_kubernetes("kubernetes", "app", &jwt).await?;
    let secret = bao.with_token(&token).read("secret/data/db").await?;
    assert_eq!(secret["data"]["data"]["password"], "smoke-value-1");

    // The same role refuses another ServiceAccount's real token.
    let other = stack
        .service_account_token(&ns, "other", "rotor-smoke", 600)
        .await?;
    let refused = bao.login_kubernetes("kubernetes", "app", &other).await;
    let message = format!(
        "{:#}",
        refused.expect_err("another ServiceAccount must be refused")
    );
    assert!(
        message.contains("403") || message.contains("400"),
        "refusal: {message}"
    );
    assert!(
        message.contains("not authorized"),
        "refusal names the reason: {message}"
    );

    // A token with the wrong audience is refused too.
    let wrong_audience = stack
        .service_account_token(&ns, "app", "someone-else", 600)
        .await?;
    assert!(
        bao.login_kubernetes("kubernetes", "app", &wrong_audience)
            .await
            .is_err()
    );
    Ok(())
}
