//! The README's first command: the local control plane with rotor on it.
//!
//! Starts etcd, kube-apiserver, kube-controller-manager and OpenBao on loopback, prints how to
//! reach them, and stops everything it started on Ctrl-C.

use anyhow::Result;
use rotor_testkit::{Stack, StackOptions};

#[tokio::main]
async fn main() -> Result<()> {
    eprintln!("rotor demo: starting the local control plane ...");
    let stack = Stack::start(StackOptions {
        controller_manager: true,
        registry: true,
    })
    .await?;
    eprintln!("rotor demo: ready in {:.1?}", stack.startup);
    eprintln!(
        "  kube-apiserver  {}  (kubeconfig {})",
        stack.api.url,
        stack.kubeconfig().display()
    );
    eprintln!(
        "  OpenBao         {}  (root token {})",
        stack.bao.addr,
        rotor_testkit::ROOT_TOKEN
    );
    if let Ok(registry) = stack.registry() {
        eprintln!("  OCI registry    {}", registry.host);
    }
    eprintln!("  logs            {}", stack.dir().display());
    eprintln!("rotor demo: press Ctrl-C to stop everything");
    tokio::signal::ctrl_c().await?;
    eprintln!("rotor demo: stopping");
    Ok(())
}
