//! rotor-testkit: the real local control plane for rotor's tests.
//!
//! [`Stack::start`] brings up etcd, kube-apiserver (own PKI, RBAC, service-account issuer),
//! optionally kube-controller-manager and an OCI registry, and an OpenBao dev server, all on
//! 127.0.0.1 on free ports in a temp dir. With [`StackOptions::node`] it also runs a real node
//! (containerd, runc, CNI bridge, kubelet, kube-scheduler; root only, see [`node`]), and the
//! servers pods must reach listen on the bridge's gateway instead. Dropping the stack (also while
//! a test panics) stops exactly the processes it started, by pid, and undoes the node's host
//! changes ([`host`]). A missing tool is an error, never a skip.

pub mod apiserver;
pub mod controller_manager;
pub mod dockerfile;
pub mod etcd;
pub mod host;
pub mod moto;
pub mod node;
pub mod openbao;
pub mod partition;
pub mod pki;
pub mod pod_fuzz;
pub mod ports;
pub mod process;
pub mod ready;
pub mod registry;
pub mod tools;

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};

pub use apiserver::{ApiServer, SERVICE_ACCOUNT_ISSUER};
pub use controller_manager::ControllerManager;
pub use etcd::Etcd;
pub use node::Node;
pub use openbao::{AuditedRequest, BaoAdmin, OpenBao, ROOT_TOKEN};
pub use pki::{CertifiedKey, Pki};
pub use process::ManagedProcess;
pub use registry::{ImageConfig, Registry};

/// What to start besides etcd, kube-apiserver and OpenBao.
#[derive(Clone, Copy, Debug, Default)]
pub struct StackOptions {
    pub controller_manager: bool,
    pub registry: bool,
    /// A real node (implies the controller manager and the registry). Needs root.
    pub node: bool,
}

/// The running stack. Fields drop in declaration order: clients first, servers after.
pub struct Stack {
    pub kube: kube::Client,
    pub node: Option<Node>,
    pub registry: Option<Registry>,
    pub controller_manager: Option<ControllerManager>,
    pub bao: OpenBao,
    pub api: ApiServer,
    pub etcd: Etcd,
    pub pki: Pki,
    /// How long the stack took to become ready.
    pub startup: Duration,
    dir: tempfile::TempDir,
}

/// Installs ring as the process's rustls provider (the only one in the dependency graph).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A plain HTTP(S) client with the platform roots.
pub fn http_client() -> Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .build()
        .context("building an HTTP client")
}

/// A client that accepts any certificate: only for health checks of self-signed test servers.
pub fn insecure_http_client() -> Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .context("building an HTTP client")
}

impl Stack {
    /// Starts etcd, kube-apiserver and OpenBao (and what `options` asks for).
    pub async fn start(options: StackOptions) -> Result<Self> {
        install_crypto_provider();
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("rotor-stack-")
            .tempdir()
            .context("creating the stack's temp dir")?;
        let pki = Pki::new("rotor-test-ca")?;
        // The node's bridge exists before OpenBao, which listens on it for the pods.
        let host = if options.node {
            Some(Node::prepare_host(dir.path()).context("preparing the host for the node")?)
        } else {
            None
        };
        // With a node, the servers pods must reach listen on the bridge's gateway address.
        let server_ip = if options.node {
            host::GATEWAY
        } else {
            std::net::Ipv4Addr::LOCALHOST
        };
        // etcd and OpenBao are independent: start them together.
        let (etcd, bao) = tokio::join!(
            Etcd::start(dir.path()),
            OpenBao::start_on(dir.path(), server_ip)
        );
        let etcd = etcd.context("starting etcd")?;
        let bao = bao.context("starting OpenBao")?;
        let api_args = if options.node {
            node::apiserver_args(dir.path(), &pki)?
        } else {
            Vec::new()
        };
        let api = ApiServer::start(dir.path(), &pki, &etcd.client_url, server_ip, &api_args)
            .await
            .context("starting kube-apiserver")?;
        let registry = if options.registry || options.node {
            Some(
                Registry::start(dir.path())
                    .await
                    .context("starting the OCI registry")?,
            )
        } else {
            None
        };
        let controller_manager = if options.controller_manager || options.node {
            Some(
                ControllerManager::start(dir.path(), &api)
                    .await
                    .context("starting kube-controller-manager")?,
            )
        } else {
            None
        };
        let kube = client_from_kubeconfig(&api.kubeconfig).await?;
        let node = match (host, &registry) {
            (Some(host), Some(registry)) => Some(
                Node::start(dir.path(), &pki, &api, registry, &kube, host)
                    .await
                    .context("starting the node (containerd, kube-scheduler, kubelet)")?,
            ),
            _ => None,
        };
        let startup = started.elapsed();
        tracing::info!(?startup, "stack ready");
        Ok(Self {
            kube,
            node,
            registry,
            controller_manager,
            bao,
            api,
            etcd,
            pki,
            startup,
            dir,
        })
    }

    /// The stack's temp dir (logs, kubeconfig, certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.api.kubeconfig
    }

    pub fn bao_admin(&self) -> Result<BaoAdmin> {
        self.bao.admin()
    }

    /// The node, when the stack was started with one.
    pub fn node(&self) -> Result<&Node> {
        self.node
            .as_ref()
            .context("the stack was started without a node (StackOptions::node)")
    }

    /// The OCI registry, when the stack was started with one.
    pub fn registry(&self) -> Result<&Registry> {
        self.registry
            .as_ref()
            .context("the stack was started without a registry (StackOptions::registry)")
    }

    /// A fresh namespace for one test, `<prefix>-<n>`, with its `default` ServiceAccount.
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        self.namespace_with_labels(prefix, &[]).await
    }

    /// A fresh namespace carrying `labels` (for example a Pod Security level).
    pub async fn namespace_with_labels(
        &self,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> Result<String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.kube.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        self.service_account(&name, "default").await?;
        Ok(name)
    }

    /// Creates a ServiceAccount (an existing one is fine).
    pub async fn service_account(&self, namespace: &str, name: &str) -> Result<()> {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match Api::<ServiceAccount>::namespaced(self.kube.clone(), namespace)
            .create(&PostParams::default(), &sa)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("creating ServiceAccount {namespace}/{name}")),
        }
    }

    /// A token for a ServiceAccount from the TokenRequest API.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audience: &str,
        ttl_seconds: i64,
    ) -> Result<String> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_string()],
                expiration_seconds: Some(ttl_seconds),
                bound_object_ref: None,
            },
            ..TokenRequest::default()
        };
        let answer: TokenRequest = Api::<ServiceAccount>::namespaced(self.kube.clone(), namespace)
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for ServiceAccount {namespace}/{name}"))?;
        answer
            .status
            .map(|s| s.token)
            .context("TokenRequest answered without a status")
    }

    /// Enables Kubernetes auth in OpenBao at `auth/<mount>`, pointed at this kube-apiserver,
    /// with a token-reviewer ServiceAccount bound to `system:auth-delegator`.
    pub async fn enable_bao_kubernetes_auth(&self, mount: &str) -> Result<()> {
        self.enable_kubernetes_auth_on(&self.bao_admin()?, mount)
            .await
    }

    /// Enables Kubernetes auth at `mount` on the store `admin` manages (the stack's OpenBao or
    /// another one a test started), reviewing tokens through this stack's API server.
    pub async fn enable_kubernetes_auth_on(&self, admin: &BaoAdmin, mount: &str) -> Result<()> {
        let ns = "kube-system";
        let reviewer = "rotor-test-token-reviewer";
        self.service_account(ns, reviewer).await?;
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(reviewer.to_string()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_string(),
                kind: "ClusterRole".to_string(),
                name: "system:auth-delegator".to_string(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_string(),
                name: reviewer.to_string(),
                namespace: Some(ns.to_string()),
                ..Subject::default()
            }]),
        };
        match Api::<ClusterRoleBinding>::all(self.kube.clone())
            .create(&PostParams::default(), &binding)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("binding the token reviewer to system:auth-delegator"),
        }
        let jwt = self
            .service_account_token(
                ns,
                reviewer,
                "https://kubernetes.default.svc.cluster.local",
                86_400,
            )
            .await?;
        admin
            .enable_kubernetes_auth(mount, &self.api.url, &self.api.ca_pem, &jwt)
            .await
    }
}

/// A kube client for a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("building a kube config")?;
    kube::Client::try_from(config).context("building a kube client")
}
