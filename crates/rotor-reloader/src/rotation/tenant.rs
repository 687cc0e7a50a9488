//! Writing as the tenant: a short-lived token for the ServiceAccount a rotation names, in the
//! rotation's own namespace (TokenRequest, audience the store's, so the API server itself does
//! not accept it), exchanged at the store's Kubernetes auth like that namespace's pods do. The
//! store's policies for that role decide what it may read and write; rotor holds no write
//! access of its own.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use rotor_core::store::{Auth, StoreClient, StoreConfig, StoreError};

/// The shortest lifetime the API server grants a requested token.
const TOKEN_SECONDS: i64 = 600;

/// How rotor logs in as a tenant.
#[derive(Clone, Debug)]
pub struct TenantLogin {
    /// The store's settings (address, namespace, CA).
    pub store: StoreConfig,
    /// The store's Kubernetes auth mount the tenant's pods use.
    pub auth_mount: String,
    /// The audience the store's Kubernetes auth roles expect (the pods' token audience).
    pub audience: String,
}

/// Why rotor could not act as the tenant.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(
        "requesting a token for ServiceAccount {namespace}/{service_account} failed: {source} (does it exist? the reloader needs create on serviceaccounts/token)"
    )]
    Token {
        namespace: String,
        service_account: String,
        source: kube::Error,
    },
    #[error("the API server's TokenRequest answer for {0} carried no token")]
    NoToken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TenantLogin {
    /// A store client logged in as ServiceAccount `service_account` of `namespace` with `role`.
    pub async fn login(
        &self,
        kube: &kube::Client,
        namespace: &str,
        service_account: &str,
        role: &str,
    ) -> Result<StoreClient, TenantError> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![self.audience.clone()],
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<ServiceAccount>::namespaced(kube.clone(), namespace)
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .map_err(|source| TenantError::Token {
                namespace: namespace.to_string(),
                service_account: service_account.to_string(),
                source,
            })?;
        let jwt = answer
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| TenantError::NoToken(format!("{namespace}/{service_account}")))?;
        let mut client = StoreClient::new(self.store.clone())?;
        client
            .login(&Auth::KubernetesToken {
                mount: self.auth_mount.clone(),
                role: role.to_string(),
                jwt,
            })
            .await?;
        Ok(client)
    }
}
