//! Two tenants on one stack, for the fairness tests and the tenant-delay bench: Deployments
//! that reference paths, their rotation state, the reloader over every namespace, and a store
//! that resets every connection.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt as _;
use kube::api::{Api, PostParams};
use rotor_testkit::{ManagedProcess, ROOT_TOKEN, Stack, StackOptions};
use serde_json::json;

use crate::fixtures::{binary, start_reloader_via};
use crate::observe::wait_until;

/// A task rotating team A's secret; stops when dropped.
pub struct Churn(tokio::task::JoinHandle<()>);

impl Drop for Churn {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A stack with two tenant namespaces, A and B.
pub struct Tenants {
    pub stack: Stack,
    pub a: String,
    pub b: String,
}

/// Starts the stack (API server, OpenBao) and the two namespaces.
pub async fn tenants() -> Result<Tenants> {
    let stack = Stack::start(StackOptions {
        controller_manager: false,
        registry: false,
        node: false,
    })
    .await?;
    let a = stack.namespace("team-a").await?;
    let b = stack.namespace("team-b").await?;
    Ok(Tenants { stack, a, b })
}

impl Tenants {
    /// Deployment `name` in `namespace` whose one container reads every path of `paths`.
    pub async fn deployment(
        &self,
        namespace: &str,
        name: &str,
        paths: &[String],
        store: Option<&str>,
    ) -> Result<()> {
        let env: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| json!({ "name": format!("S{i}"), "value": format!("vault:secret/data/{p}#value") }))
            .collect();
        let annotations = store.map_or(json!({}), |s| json!({ "rotor.dev/vault-addr": s }));
        let object: Deployment = serde_json::from_value(json!({
            "metadata": { "name": name, "annotations": { "rotor.dev/reload": "true" } },
            "spec": { "selector": { "matchLabels": { "app": name } }, "template": {
                "metadata": { "labels": { "app": name }, "annotations": annotations },
                "spec": { "containers": [{ "name": "app", "image": "app:1", "command": ["/app"], "env": env }] } } },
        }))?;
        Api::<Deployment>::namespaced(self.stack.kube.clone(), namespace)
            .create(&PostParams::default(), &object)
            .await?;
        Ok(())
    }

    pub async fn put(&self, path: &str, value: &str) -> Result<u64> {
        self.stack
            .bao_admin()?
            .put_kv2("secret", path, json!({ "value": value }))
            .await
    }

    /// (recorded versions, rolled-at) of a Deployment.
    pub async fn state(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(Option<String>, Option<String>)> {
        let d = Api::<Deployment>::namespaced(self.stack.kube.clone(), namespace)
            .get(name)
            .await?;
        let rolled = d
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("rotor.dev/rotated-at").cloned());
        Ok((
            d.annotations().get("rotor.dev/observed-versions").cloned(),
            rolled,
        ))
    }

    pub async fn recorded(&self, namespace: &str, name: &str) -> Result<()> {
        wait_until(
            &format!("{name} is recorded"),
            Duration::from_secs(90),
            || async { Ok(self.state(namespace, name).await?.0.is_some()) },
        )
        .await
    }

    /// Team A's `count` Deployments `churner-N`, all reading the secret `churn`.
    pub async fn churners(&self, count: usize) -> Result<()> {
        self.put("churn", "0").await?;
        for i in 0..count {
            let name = format!("churner-{i}");
            self.deployment(&self.a, &name, &["churn".to_string()], None)
                .await?;
        }
        Ok(())
    }

    /// Rewrites `churn` every half second until the returned task is aborted.
    pub fn churn(&self) -> Result<Churn> {
        let admin = self.stack.bao_admin()?;
        Ok(Churn(tokio::spawn(async move {
            for i in 1.. {
                let _ = admin
                    .put_kv2("secret", "churn", json!({ "value": format!("{i}") }))
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })))
    }

    /// The reloader over every namespace, with the root token, polling every second.
    pub async fn reloader(&self, extra: &[String]) -> Result<(ManagedProcess, String)> {
        let mut args = vec![
            "--auth-method=token".to_string(),
            format!("--token={ROOT_TOKEN}"),
        ];
        args.extend(extra.iter().cloned());
        // Token auth: the token file is never read.
        let unused = self.stack.dir().join("no-token-file");
        start_reloader_via(
            &self.stack,
            &binary("rotor-reloader")?,
            "reloader-fair",
            &unused,
            &self.a,
            &args,
            self.stack.kubeconfig(),
        )
        .await
    }
}

/// A store that accepts every connection and resets it at once; counts the connections.
pub async fn resetting_store() -> Result<(u16, std::sync::Arc<std::sync::atomic::AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // A zero linger resets at close without blocking (the deprecation is about others).
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        }
    });
    Ok((port, accepted))
}

/// A store that accepts every connection, reads what it is sent and never answers (a store
/// behind a black hole, or an AWS region whose endpoint never answers); counts the connections.
pub async fn hanging_store() -> Result<(u16, std::sync::Arc<std::sync::atomic::AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                // Read until the client gives up; never write.
                while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    Ok((port, accepted))
}
