//! The AWS store family: Secrets Manager and SSM Parameter Store, read with the pod's own
//! identity (IRSA's web identity through STS, or the EKS Pod Identity agent), requests signed
//! with SigV4. The same [`Secret`](super::Secret) comes out as from Vault, so resolving, rendering
//! and the errors' classes are shared.

pub mod client;
pub mod identity;
pub mod sigv4;
pub mod versions;
mod xml;

pub use client::{AwsClient, AwsConfig};
pub use identity::AwsIdentity;
pub use sigv4::Credentials;
pub use versions::AwsVersions;
