//! Registry credentials from the pod's and its ServiceAccount's imagePullSecrets (read through
//! the API only when `--registry-pull-secrets` is on; the chart grants that RBAC only then).

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::Api;

use crate::registry::{Credential, RegistryError, credential_from_docker_config};

/// The first pull secret (the pod's, then its ServiceAccount's) holding credentials for `registry`.
pub async fn credential_for(
    kube: &kube::Client,
    pod: &Pod,
    registry: &str,
) -> Result<Option<Credential>, RegistryError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let mut names: Vec<String> = spec
        .and_then(|s| s.image_pull_secrets.clone())
        .into_iter()
        .flatten()
        .map(|r| r.name)
        .collect();
    let sa_name = spec
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_string());
    match Api::<ServiceAccount>::namespaced(kube.clone(), &ns)
        .get_opt(&sa_name)
        .await
    {
        Ok(Some(sa)) => names.extend(sa.image_pull_secrets.into_iter().flatten().map(|r| r.name)),
        Ok(None) => {}
        Err(e) => {
            return Err(RegistryError::PullSecret(format!(
                "reading ServiceAccount {ns}/{sa_name} for its imagePullSecrets: {e}"
            )));
        }
    }
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), &ns);
    for name in names {
        let secret = match secrets.get_opt(&name).await {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                return Err(RegistryError::PullSecret(format!(
                    "reading imagePullSecret {ns}/{name}: {e}"
                )));
            }
        };
        let data = secret.data.unwrap_or_default();
        let doc = data
            .get(".dockerconfigjson")
            .or_else(|| data.get(".dockercfg"));
        if let Some(found) = doc.and_then(|d| credential_from_docker_config(&d.0, registry)) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}
