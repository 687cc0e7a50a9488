//! rotor-core: the reference grammar, the store client and its auth methods.
//! No Kubernetes and no server here; rotor-webhook, rotor-init and rotor-reloader share it.

pub mod aws_reference;
pub mod contract;
pub mod logging;
pub mod reference;
pub mod resolve;
#[cfg(feature = "shutdown-signal")]
pub mod shutdown;
pub mod store;

/// Installs ring as the process's rustls provider (the only one in rotor's dependency graph).
/// Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
