//! The store clients (Vault and OpenBao; AWS in [`aws`]), their auth methods, errors and retry
//! policy.

pub mod auth;
pub mod aws;
pub mod client;
pub mod error;
#[cfg(test)]
pub(crate) mod fake;
pub mod retry;
pub mod transport;
pub mod version_listing;

pub use auth::{Auth, DEFAULT_SERVICE_ACCOUNT_TOKEN};
pub use client::{Lease, MountInfo, Secret, StoreClient, StoreConfig};
pub use error::StoreError;
pub use retry::RetryPolicy;
pub use version_listing::{ListedVersion, VersionPage};
