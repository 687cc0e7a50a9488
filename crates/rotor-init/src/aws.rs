//! Logging in to AWS as the pod, when a reference names an AWS secret or parameter.

use std::collections::HashMap;

use rotor_core::store::aws::{AwsClient, AwsConfig};

use crate::exit_code;

/// The AWS client logged in with the pod's identity (from the environment: EKS Pod Identity or
/// IRSA), STS asked in `first_arn`'s region unless AWS_REGION says otherwise. The exit code
/// when it cannot be.
pub async fn login(first_arn: &str) -> Result<AwsClient, u8> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = AwsConfig::from_env(&env).map_err(|e| {
        tracing::error!(error = %e, "AWS configuration; the app is not started");
        exit_code::CONFIG
    })?;
    let arn = rotor_core::aws_reference::parse_arn(first_arn).map_err(|e| {
        tracing::error!(error = %e, reference = %first_arn, "an AWS reference does not parse");
        exit_code::CONFIG
    })?;
    let mut client = AwsClient::new(config).map_err(|e| {
        tracing::error!(error = %e, "AWS client");
        exit_code::CONFIG
    })?;
    let identity = client.identity().describe();
    client.login(arn.region, arn.partition).await.map_err(|e| {
        tracing::error!(identity = %identity, error = %e, "AWS login failed");
        crate::login_error_code(&e)
    })?;
    tracing::debug!(identity = %identity, "logged in to AWS");
    Ok(client)
}
