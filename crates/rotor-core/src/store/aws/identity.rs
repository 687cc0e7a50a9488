//! Who rotor-init is to AWS: the pod itself, never static keys. Two ways, as the AWS SDKs
//! choose them: the EKS Pod Identity agent (`AWS_CONTAINER_CREDENTIALS_FULL_URI` and
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`), else IRSA's web identity (`AWS_ROLE_ARN` and
//! `AWS_WEB_IDENTITY_TOKEN_FILE`: the projected ServiceAccount token exchanged through STS
//! `AssumeRoleWithWebIdentity`).

use std::collections::HashMap;

use super::sigv4::{Credentials, parse_utc, uri_encode};
use super::xml::element;
use crate::store::StoreError;

/// How the pod proves who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwsIdentity {
    /// The EKS Pod Identity agent (or ECS's): a GET with the pod's token file as Authorization.
    PodIdentity { uri: String, token_file: String },
    /// IRSA: the projected ServiceAccount token exchanged for a role's credentials at STS.
    WebIdentity {
        role_arn: String,
        token_file: String,
        session_name: String,
    },
}

/// The Pod Identity agent's addresses (EKS: 169.254.170.23 and fd00:ec2::23; ECS:
/// 169.254.170.2), or loopback. Credentials are fetched from nowhere else over plain HTTP.
const AGENT_HOSTS: [&str; 4] = [
    "169.254.170.23",
    "[fd00:ec2::23]",
    "169.254.170.2",
    "127.0.0.1",
];

impl AwsIdentity {
    /// The identity the environment describes; the error names the variables to set.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, String> {
        let get = |name: &str| {
            env.get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(uri) = get("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            let token_file = get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").ok_or(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI is set without AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE; EKS Pod Identity sets both",
            )?;
            agent_uri_problem(&uri).map_or(Ok(()), Err)?;
            return Ok(Self::PodIdentity { uri, token_file });
        }
        match (get("AWS_ROLE_ARN"), get("AWS_WEB_IDENTITY_TOKEN_FILE")) {
            (Some(role_arn), Some(token_file)) => Ok(Self::WebIdentity {
                role_arn,
                token_file,
                session_name: get("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "rotor-init".to_string()),
            }),
            _ => Err("no AWS identity for the pod: use EKS Pod Identity (an association for the pod's ServiceAccount), or IRSA (annotate the ServiceAccount with eks.amazonaws.com/role-arn, or set AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE with a projected token of audience sts.amazonaws.com); rotor never takes static access keys".to_string()),
        }
    }

    /// What to name in logs: the role or the agent, never a token.
    pub fn describe(&self) -> String {
        match self {
            Self::PodIdentity { uri, .. } => format!("pod identity agent {uri}"),
            Self::WebIdentity { role_arn, .. } => format!("web identity for {role_arn}"),
        }
    }
}

/// Why `uri` is not an address rotor fetches credentials from, if it is not. The address is
/// parsed, not prefix-matched: `http://169.254.170.23:80@HOST/` names HOST (with user info),
/// and is refused.
fn agent_uri_problem(uri: &str) -> Option<String> {
    let refused = || {
        Some(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI {uri:?} is neither https nor the Pod Identity agent's address (169.254.170.23, fd00:ec2::23) nor loopback, without user info"
        ))
    };
    let Ok(url) = reqwest::Url::parse(uri) else {
        return refused();
    };
    if !url.username().is_empty() || url.password().is_some() {
        return refused();
    }
    match (url.scheme(), url.host_str()) {
        ("https", Some(_)) => None,
        ("http", Some(h)) if AGENT_HOSTS.contains(&h) || h == "localhost" || h == "[::1]" => None,
        _ => refused(),
    }
}

/// Fetches credentials for `identity`. `sts_endpoint` is where STS is (web identity only).
pub(super) async fn fetch_credentials(
    http: &reqwest::Client,
    identity: &AwsIdentity,
    sts_endpoint: &str,
) -> Result<Credentials, StoreError> {
    match identity {
        AwsIdentity::PodIdentity { uri, token_file } => {
            let op = format!("fetching credentials from the pod identity agent {uri}");
            let token = crate::store::auth::read_credential_file(std::path::Path::new(token_file))?;
            let (status, body) =
                super::client::send(http.get(uri).header("authorization", token), &op).await?;
            if status != 200 {
                return Err(StoreError::Status {
                    op,
                    status,
                    message: String::new(),
                });
            }
            pod_identity_answer(&body).map_err(|message| StoreError::Decode { op, message })
        }
        AwsIdentity::WebIdentity {
            role_arn,
            token_file,
            session_name,
        } => {
            let op =
                format!("assuming {role_arn} with the pod's web identity token at {sts_endpoint}");
            let token = crate::store::auth::read_credential_file(std::path::Path::new(token_file))?;
            let form = format!(
                "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}&WebIdentityToken={}",
                uri_encode(role_arn),
                uri_encode(session_name),
                uri_encode(&token)
            );
            let request = http
                .post(format!("{}/", sts_endpoint.trim_end_matches('/')))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form);
            let (status, body) = super::client::send(request, &op).await?;
            if status != 200 {
                return Err(StoreError::Aws {
                    op,
                    status,
                    code: super::client::short(&element(&body, "Code").unwrap_or_default()).into(),
                    message: super::client::short(&element(&body, "Message").unwrap_or_default())
                        .into(),
                });
            }
            sts_answer(&body).map_err(|message| StoreError::Decode { op, message })
        }
    }
}

fn sts_answer(body: &str) -> Result<Credentials, String> {
    let field = |tag: &str| element(body, tag).ok_or(format!("the answer has no {tag}"));
    Ok(Credentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: Some(field("SessionToken")?),
        expires_at: element(body, "Expiration").and_then(|e| parse_utc(&e)),
    })
}

fn pod_identity_answer(body: &str) -> Result<Credentials, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|_| "the answer is not JSON".to_string())?;
    let field = |name: &str| {
        v.get(name)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or(format!("the answer has no {name}"))
    };
    Ok(Credentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: field("Token").ok(),
        expires_at: v
            .get("Expiration")
            .and_then(|x| x.as_str())
            .and_then(parse_utc),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pod_identity_wins_then_web_identity_and_static_keys_are_never_an_identity() {
        let both = env(&[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials",
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
            ),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/app"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
        ]);
        assert!(matches!(
            AwsIdentity::from_env(&both),
            Ok(AwsIdentity::PodIdentity { .. })
        ));
        let irsa = env(&[
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/app"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
        ]);
        let AwsIdentity::WebIdentity { role_arn, .. } = AwsIdentity::from_env(&irsa).unwrap()
        else {
            panic!("web identity")
        };
        assert_eq!(role_arn, "arn:aws:iam::123456789012:role/app");
        let keys = env(&[
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]);
        let e = AwsIdentity::from_env(&keys).unwrap_err();
        assert!(e.contains("never takes static access keys"), "{e}");
    }

    #[test]
    fn credentials_come_only_from_the_agent_https_or_loopback() {
        for ok in [
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
            "http://127.0.0.1:8080/creds",
            "https://creds.example/x",
        ] {
            assert_eq!(agent_uri_problem(ok), None, "{ok}");
        }
        for bad in [
            "http://evil.example/creds",
            "http://10.0.0.1:80/x",
            "ftp://127.0.0.1/",
            // The adversarial pass: user info before the real host passed a prefix match.
            "http://169.254.170.23:80@evil.example/creds",
            "http://127.0.0.1@evil.example/creds",
            "https://user:pw@creds.example/x",
            "not a url",
        ] {
            assert!(agent_uri_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn answers_decode_and_debug_shows_no_secret() {
        let sts = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><SessionToken>tok</SessionToken><SecretAccessKey>canary-secret</SecretAccessKey><Expiration>2026-12-04T06:00:00Z</Expiration><AccessKeyId>ASIA1</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        let c = sts_answer(sts).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.expires_at),
            ("ASIA1", parse_utc("2026-12-04T06:00:00Z"))
        );
        assert!(!format!("{c:?}").contains("canary"));
        assert!(sts_answer("<x/>").unwrap_err().contains("AccessKeyId"));
        let agent = r#"{"AccessKeyId":"ASIA2","SecretAccessKey":"s","Token":"t","Expiration":"2026-12-04T06:00:00Z"}"#;
        assert_eq!(
            pod_identity_answer(agent).unwrap().session_token.as_deref(),
            Some("t")
        );
        assert!(pod_identity_answer("nope").is_err());
    }
}
