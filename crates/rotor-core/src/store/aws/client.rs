//! The AWS client: log in as the pod, read a Secrets Manager secret or an SSM parameter at its
//! current version or a pinned one, and report current versions (for the reloader).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use super::identity::{AwsIdentity, fetch_credentials};
use super::sigv4::{Credentials, Signable, sign};
use crate::aws_reference::{AwsArn, AwsService, parse_arn};
use crate::store::transport::{Trust, failure, http_client, read_capped};
use crate::store::{RetryPolicy, Secret, StoreError};

/// Where the AWS services are and who the pod is.
#[derive(Clone, Debug)]
pub struct AwsConfig {
    pub identity: AwsIdentity,
    /// `AWS_ENDPOINT_URL`: one endpoint for every service (a VPC endpoint proxy, or moto in
    /// tests); `AWS_ENDPOINT_URL_<SERVICE>` per service wins over it. None: AWS's regional
    /// endpoints.
    pub endpoint: Option<String>,
    pub service_endpoints: HashMap<&'static str, String>,
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`: where STS is asked (default: the first
    /// reference's region). Each secret is read in its ARN's region.
    pub region: Option<String>,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// `AWS_CA_BUNDLE` (the AWS SDKs' variable): the CA bundle to trust instead of the
    /// container's own (an app image without CA certificates, or a TLS-inspecting proxy).
    pub ca_pem: Option<Vec<u8>>,
}

impl AwsConfig {
    /// The configuration the environment describes (the AWS SDKs' variable names).
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, String> {
        let get = |name: &str| {
            env.get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let endpoint = get("AWS_ENDPOINT_URL");
        let mut service_endpoints = HashMap::new();
        for (service, var) in [
            ("secretsmanager", "AWS_ENDPOINT_URL_SECRETS_MANAGER"),
            ("ssm", "AWS_ENDPOINT_URL_SSM"),
            ("sts", "AWS_ENDPOINT_URL_STS"),
        ] {
            if let Some(url) = get(var) {
                service_endpoints.insert(service, url);
            }
        }
        for url in endpoint.iter().chain(service_endpoints.values()) {
            endpoint_problem(url).map_or(Ok(()), Err)?;
        }
        let ca_pem = match get("AWS_CA_BUNDLE") {
            None => None,
            Some(path) => Some(read_ca_bundle(&path)?),
        };
        Ok(Self {
            identity: AwsIdentity::from_env(env)?,
            endpoint,
            service_endpoints,
            region: match get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")) {
                Some(r) if !crate::aws_reference::is_region(&r) => {
                    return Err(format!(
                        "AWS_REGION {r:?} is not a region name such as us-east-1 (lower-case letters, digits and -)"
                    ));
                }
                region => region,
            },
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            ca_pem,
        })
    }

    /// Whether every request goes to a plain-HTTP endpoint (no TLS trust is needed).
    fn plain_http_only(&self) -> bool {
        let all = |url: &String| url.starts_with("http://");
        match &self.endpoint {
            Some(url) => all(url) && self.service_endpoints.values().all(all),
            None => {
                ["secretsmanager", "ssm", "sts"].len() == self.service_endpoints.len()
                    && self.service_endpoints.values().all(all)
            }
        }
    }

    /// The endpoint of `service` in `region` of `partition`.
    fn endpoint_of(&self, service: &str, region: &str, partition: &str) -> String {
        if let Some(url) = self
            .service_endpoints
            .get(service)
            .or(self.endpoint.as_ref())
        {
            return url.trim_end_matches('/').to_string();
        }
        let suffix = if partition == "aws-cn" {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        format!("https://{service}.{region}.{suffix}")
    }
}

/// The most a CA bundle file may hold.
const MAX_CA_BUNDLE_BYTES: u64 = 1 << 20;

fn read_ca_bundle(path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CA_BUNDLE_BYTES).read_to_end(&mut pem))
        .map_err(|e| format!("AWS_CA_BUNDLE {path}: {e}"))?;
    Ok(pem)
}

/// Why `url` cannot be an endpoint: http(s), a host, and a path of plain characters only.
fn endpoint_problem(url: &str) -> Option<String> {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return Some(format!("the AWS endpoint {url:?} is not a URL: {e}")),
    };
    let plain_path = parsed
        .path()
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b));
    let ok = matches!(parsed.scheme(), "http" | "https")
        && parsed.host_str().is_some()
        && plain_path
        && parsed.query().is_none();
    (!ok).then(|| {
        format!("the AWS endpoint {url:?} must be http(s)://HOST[:PORT][/PATH] without a query")
    })
}

/// Logged in to AWS as the pod; reads secrets and parameters.
pub struct AwsClient {
    http: reqwest::Client,
    config: AwsConfig,
    creds: Option<Credentials>,
}

/// An AWS error text as rotor may log it: the same masked excerpt as a Vault store's (anything
/// token-like `<redacted>`, at most 300 characters), so an AWS endpoint or a proxy that echoes
/// what it was sent (a web identity token, a session token) never puts it in a log.
pub(super) fn short(message: &str) -> String {
    crate::store::client::store_text_excerpt(message)
}

/// Sends a request; the status and the body (capped like every store answer).
pub(super) async fn send(
    request: reqwest::RequestBuilder,
    op: &str,
) -> Result<(u16, String), StoreError> {
    let response = request
        .send()
        .await
        .map_err(|e| failure(op, "AWS", &e, "", !e.is_connect()))?;
    let status = response.status().as_u16();
    let body = read_capped(response, op, "AWS").await?;
    Ok((status, body))
}

impl AwsClient {
    /// A client; redirects are never followed (signed requests go nowhere else).
    pub fn new(config: AwsConfig) -> Result<Self, StoreError> {
        // AWS_CA_BUNDLE replaces the container's CA certificates.
        let trust = Trust {
            ca_pem: config.ca_pem.as_deref(),
            plain_http_only: config.plain_http_only(),
            what: "AWS",
            fix: "the container has no usable CA certificates for AWS's https endpoints: set AWS_CA_BUNDLE to a PEM bundle",
        };
        let http = http_client(trust, config.request_timeout)?;
        Ok(Self {
            http,
            config,
            creds: None,
        })
    }

    pub fn identity(&self) -> &AwsIdentity {
        &self.config.identity
    }

    /// When the credentials end (seconds since the epoch), when the issuer said.
    pub fn expires_at(&self) -> Option<u64> {
        self.creds.as_ref().and_then(|c| c.expires_at)
    }

    /// Fetches the pod's credentials (STS in `default_region` unless AWS_REGION says).
    pub async fn login(&mut self, default_region: &str, partition: &str) -> Result<(), StoreError> {
        let region = self
            .config
            .region
            .clone()
            .unwrap_or_else(|| default_region.to_string());
        let sts = self.config.endpoint_of("sts", &region, partition);
        let creds = self
            .config
            .retry
            .run(|| fetch_credentials(&self.http, &self.config.identity, &sts))
            .await?;
        self.creds = Some(creds);
        Ok(())
    }

    /// Reads the secret or parameter `arn` at its current version, a pinned `version` (SSM) or
    /// `label` (a Secrets Manager stage or version id, an SSM label). The [`Secret`]'s data has
    /// the whole value under the key `""` and, when the value is a JSON object, each of its keys.
    pub async fn read(
        &self,
        arn: &str,
        version: Option<u64>,
        label: Option<&str>,
    ) -> Result<Secret, StoreError> {
        let parsed = parse_arn(arn).map_err(|message| StoreError::Decode {
            op: format!("reading {arn}"),
            message,
        })?;
        let (target, body) = match parsed.service {
            AwsService::SecretsManager => {
                let mut body = json!({ "SecretId": arn });
                if let Some(label) = label {
                    let field = if looks_like_version_id(label) {
                        "VersionId"
                    } else {
                        "VersionStage"
                    };
                    body[field] = json!(label);
                }
                ("secretsmanager.GetSecretValue", body)
            }
            AwsService::Ssm => {
                let mut name = parsed.parameter_name();
                if let Some(selector) = version.map(|v| v.to_string()).or(label.map(str::to_string))
                {
                    name = format!("{name}:{selector}");
                }
                (
                    "AmazonSSM.GetParameter",
                    json!({ "Name": name, "WithDecryption": true }),
                )
            }
        };
        let op = format!(
            "reading {arn} (region {}, account {})",
            parsed.region, parsed.account
        );
        let answer = self.call(&parsed, target, &body, &op).await?;
        secret_of(parsed.service, &answer).map_err(|message| StoreError::Decode { op, message })
    }

    /// One signed JSON API call, retried while AWS throttles or fails transiently.
    pub(crate) async fn call(
        &self,
        arn: &AwsArn<'_>,
        target: &str,
        body: &Value,
        op: &str,
    ) -> Result<Value, StoreError> {
        let creds = self.creds.as_ref().ok_or_else(|| {
            StoreError::Client(
                "the AWS client is used before logging in (a bug in rotor)".to_string(),
            )
        })?;
        let service = arn.service.endpoint_name();
        let endpoint = self.config.endpoint_of(service, arn.region, arn.partition);
        let body = serde_json::to_vec(body).map_err(|e| StoreError::BadBody {
            op: op.to_string(),
            message: e.to_string(),
        })?;
        self.config
            .retry
            .run(|| async {
                let url = reqwest::Url::parse(&format!("{endpoint}/")).map_err(|e| {
                    StoreError::Client(format!("the AWS endpoint {endpoint:?}: {e}"))
                })?;
                let host = match (url.host_str(), url.port()) {
                    (Some(h), Some(p)) => format!("{h}:{p}"),
                    (Some(h), None) => h.to_string(),
                    (None, _) => {
                        return Err(StoreError::Client(format!(
                            "the AWS endpoint {endpoint:?} has no host"
                        )));
                    }
                };
                let headers = [
                    ("content-type", "application/x-amz-json-1.1"),
                    ("host", host.as_str()),
                    ("x-amz-target", target),
                ];
                let signed = sign(
                    &Signable {
                        method: "POST",
                        path: url.path(),
                        query: "",
                        headers: &headers,
                        body: &body,
                        region: arn.region,
                        service,
                    },
                    creds,
                    SystemTime::now(),
                );
                let mut request = self.http.post(url.clone()).body(body.clone());
                for (k, v) in headers.iter().filter(|(k, _)| *k != "host") {
                    request = request.header(*k, *v);
                }
                for (k, v) in &signed {
                    request = request.header(k.as_str(), v.as_str());
                }
                let (status, text) = send(request, op).await?;
                if status == 200 {
                    return serde_json::from_str(&text).map_err(|_| StoreError::Decode {
                        op: op.to_string(),
                        message: "the answer is not JSON".to_string(),
                    });
                }
                Err(aws_error(op, status, &text))
            })
            .await
    }
}

/// A Secrets Manager version id is a UUID; anything else is a stage label.
fn looks_like_version_id(label: &str) -> bool {
    label.len() == 36
        && label.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The error an AWS JSON API answered with: `__type` (maybe `namespace#Code`) and `message`.
fn aws_error(op: &str, status: u16, body: &str) -> StoreError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    // JSON APIs answer `{"__type": "...#Code", "message": ...}`; what stands in front of them
    // (IAM's authorisation, some proxies) may answer the query APIs' XML `<Code>`/`<Message>`.
    let code = v
        .get("__type")
        .and_then(Value::as_str)
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        .or_else(|| super::xml::element(body, "Code"))
        .unwrap_or_default();
    let xml_message = super::xml::element(body, "Message");
    let message = ["message", "Message"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .or(xml_message.as_deref())
        .unwrap_or_default();
    if code.is_empty() && (300..400).contains(&status) {
        return StoreError::Status {
            op: op.to_string(),
            status,
            message: "a redirect, which rotor never follows; set the endpoint itself".to_string(),
        };
    }
    StoreError::Aws {
        op: op.to_string(),
        status,
        code: short(&code).into(),
        message: short(message).into(),
    }
}

/// The value of a GetSecretValue or GetParameter answer, as a [`Secret`].
fn secret_of(service: AwsService, answer: &Value) -> Result<Secret, String> {
    let (value, version) = match service {
        AwsService::SecretsManager => match answer.get("SecretString").and_then(Value::as_str) {
            Some(s) => (s, None),
            None if answer.get("SecretBinary").is_some() => {
                return Err("the secret holds SecretBinary; rotor reads SecretString values (store the value as a string)".to_string());
            }
            None => return Err("the answer has no SecretString".to_string()),
        },
        AwsService::Ssm => {
            let p = answer
                .get("Parameter")
                .ok_or("the answer has no Parameter")?;
            let value = p
                .get("Value")
                .and_then(Value::as_str)
                .ok_or("the parameter has no Value")?;
            (value, p.get("Version").and_then(Value::as_u64))
        }
    };
    let mut data = match serde_json::from_str::<Value>(value) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    data.insert(String::new(), Value::String(value.to_string()));
    Ok(Secret {
        data,
        version,
        lease: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_value_gives_its_keys_and_the_whole_text() {
        let s = secret_of(
            AwsService::SecretsManager,
            &json!({ "SecretString": r#"{"password":"p","port":5432}"# }),
        )
        .unwrap();
        assert_eq!(s.get("x", "password").unwrap(), "p");
        assert_eq!(s.get("x", "port").unwrap(), "5432");
        assert_eq!(s.get("x", "").unwrap(), r#"{"password":"p","port":5432}"#);
        let p = secret_of(
            AwsService::Ssm,
            &json!({ "Parameter": { "Value": "plain", "Version": 4 } }),
        )
        .unwrap();
        assert_eq!(
            (p.get("x", "").unwrap().as_str(), p.version),
            ("plain", Some(4))
        );
        assert!(p.get("x", "k").is_err());
        let e = secret_of(
            AwsService::SecretsManager,
            &json!({ "SecretBinary": "AAA=" }),
        )
        .unwrap_err();
        assert!(e.contains("SecretBinary"), "{e}");
    }

    #[test]
    fn errors_are_classified_by_code_and_name_no_value() {
        let e = aws_error(
            "reading x",
            400,
            r#"{"__type":"ResourceNotFoundException","message":"Secrets Manager can't find the specified secret."}"#,
        );
        assert!(e.is_not_found() && !e.is_transient(), "{e}");
        let e = aws_error(
            "reading x",
            400,
            r#"{"__type":"com.amazonaws.ssm#ThrottlingException","message":"Rate exceeded"}"#,
        );
        assert!(e.is_transient() && e.store_did_not_act(), "{e}");
        assert_eq!(
            e.to_string(),
            "reading x: ThrottlingException (HTTP 400): Rate exceeded"
        );
        let e = aws_error(
            "reading x",
            400,
            r#"{"__type":"AccessDeniedException","Message":"no"}"#,
        );
        assert!(e.is_permission_denied(), "{e}");
        let e = aws_error(
            "reading x",
            403,
            "<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>not authorized</Message></Error></Errors></ErrorResponse>",
        );
        assert!(e.is_permission_denied(), "{e}");
        assert_eq!(
            e.to_string(),
            "reading x: AccessDenied (HTTP 403): not authorized"
        );
        let e = aws_error("reading x", 500, "<html>");
        assert!(e.is_transient(), "{e}");
    }

    #[test]
    fn an_echoing_endpoint_never_puts_a_token_in_the_error() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJlMTIzNDU2";
        let session = "FwoGZXIvYXdzEJr2CANARYSESSION0123456789abcdef";
        let body = format!(
            r#"{{"__type":"AccessDeniedException","message":"token {jwt} and {session} were refused for secret app/db"}}"#
        );
        let text = aws_error("reading app/db", 400, &body).to_string();
        assert!(!text.contains(jwt) && !text.contains("CANARY"), "{text}");
        assert!(
            text.contains("<redacted>") && text.contains("app/db"),
            "{text}"
        );
        let xml = format!(
            "<ErrorResponse><Error><Code>{session}</Code><Message>{jwt}</Message></Error></ErrorResponse>"
        );
        let text = aws_error("assuming a role", 403, &xml).to_string();
        assert!(!text.contains("CANARY") && !text.contains("eyJ"), "{text}");
    }

    #[test]
    fn a_region_that_is_not_a_region_name_is_refused_before_it_builds_a_host() {
        let mut env: HashMap<String, String> = [
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for bad in ["x@localhost:1234/", "US-EAST-1", "eu west", "a/b"] {
            env.insert("AWS_REGION".to_string(), bad.to_string());
            let err = AwsConfig::from_env(&env).map(drop).expect_err(bad);
            assert!(err.contains("AWS_REGION"), "{err}");
        }
        env.insert("AWS_REGION".to_string(), "eu-west-1".to_string());
        assert!(AwsConfig::from_env(&env).is_ok());
    }

    #[test]
    fn endpoints_are_http_urls_and_default_to_the_regional_ones() {
        assert!(endpoint_problem("http://127.0.0.1:5000").is_none());
        assert!(endpoint_problem("https://vpce.example/x").is_none());
        for bad in ["ftp://x", "http://x/?a=b", "not a url", "http://x/a b"] {
            assert!(endpoint_problem(bad).is_some(), "{bad}");
        }
        let env: HashMap<String, String> = [
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/app"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
            ("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = AwsConfig::from_env(&env).unwrap();
        assert_eq!(
            c.endpoint_of("ssm", "eu-west-1", "aws"),
            "http://127.0.0.1:1"
        );
        assert_eq!(
            c.endpoint_of("secretsmanager", "eu-west-1", "aws"),
            "https://secretsmanager.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            c.endpoint_of("sts", "cn-north-1", "aws-cn"),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        assert!(looks_like_version_id(
            "a1b2c3d4-5678-90ab-cdef-000011112222"
        ));
        assert!(!looks_like_version_id("AWSPREVIOUS"));
    }
}
