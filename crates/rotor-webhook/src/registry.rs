//! Looking up an image's ENTRYPOINT and CMD in its registry (OCI distribution API): indexes
//! resolved to one platform, anonymous or Basic/Bearer auth from pull secrets, a cache with a
//! TTL (never for `:latest` or `imagePullPolicy: Always`), and a timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use rotor_core::store::transport::{Limited, read_limited};
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use crate::registry_error::RegistryError;
use serde_json::Value;

use crate::image_ref::ImageRef;
use crate::metrics::{Metrics, ResultLabels};

/// The largest manifest or index read (registries must accept manifests up to 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// The largest image config blob read.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;
/// The largest token answer read from a registry's token service.
const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;
/// The most bytes ENTRYPOINT and CMD may hold together: they end up in the pod spec.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Lookups in flight at once, over every review.
const MAX_CONCURRENT_LOOKUPS: usize = 8;
/// Lookups in flight at once against one registry host: a slow or hostile registry can hold
/// only these, never every slot.
const MAX_LOOKUPS_PER_REGISTRY: usize = 2;
/// Redirects followed (registries send blob downloads to storage), never from https to http.
const MAX_REDIRECTS: usize = 5;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// An image's entrypoint and default arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageCommand {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// Registry credentials (from a pull secret). `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct RegistryConfig {
    /// Registries reached over plain HTTP (host:port), e.g. a local test registry.
    #[arg(
        long = "registry-insecure",
        env = "ROTOR_REGISTRY_INSECURE",
        value_delimiter = ','
    )]
    pub insecure: Vec<String>,
    /// Time allowed for one image lookup, in milliseconds (keep it well inside the webhook timeout).
    #[arg(
        long = "registry-timeout-ms",
        env = "ROTOR_REGISTRY_TIMEOUT_MS",
        default_value_t = 3_000
    )]
    pub timeout_ms: u64,
    /// How long a looked-up entrypoint is reused, in seconds.
    #[arg(
        long = "image-cache-ttl-seconds",
        env = "ROTOR_IMAGE_CACHE_TTL",
        default_value_t = 600
    )]
    pub cache_ttl_seconds: u64,
    /// Platform picked from multi-platform images.
    #[arg(
        long = "image-platform",
        env = "ROTOR_IMAGE_PLATFORM",
        default_value = "linux/amd64"
    )]
    pub platform: String,
    /// Read the pod's and its ServiceAccount's imagePullSecrets through the API (needs RBAC to
    /// get Secrets and ServiceAccounts).
    #[arg(long = "registry-pull-secrets", env = "ROTOR_REGISTRY_PULL_SECRETS")]
    pub use_pull_secrets: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            insecure: Vec::new(),
            timeout_ms: 3_000,
            cache_ttl_seconds: 600,
            platform: "linux/amd64".to_string(),
            use_pull_secrets: false,
        }
    }
}

pub struct RegistryClient {
    http: reqwest::Client,
    config: RegistryConfig,
    cache: Mutex<HashMap<String, (ImageCommand, Instant)>>,
    in_flight: tokio::sync::Semaphore,
    per_registry: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

/// A manifest or an index: only the fields rotor reads (serde skips the rest unallocated).
#[derive(Debug, Deserialize)]
pub struct ManifestDoc {
    pub manifests: Option<Vec<IndexEntry>>,
    pub config: Option<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub struct IndexEntry {
    pub digest: String,
    pub platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Descriptor {
    pub digest: String,
}

#[derive(Debug, Deserialize)]
struct ImageConfigDoc {
    config: Option<ImageConfigSection>,
}

#[derive(Debug, Deserialize)]
struct ImageConfigSection {
    #[serde(rename = "Entrypoint")]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd")]
    cmd: Option<Vec<String>>,
}

/// Follows up to [`MAX_REDIRECTS`] redirects, never from https to plain http (reqwest drops
/// the Authorization header itself when a redirect leaves the origin).
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            attempt.error("the registry redirected from https to plain http; refused")
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(concat!("rotor-webhook/", env!("CARGO_PKG_VERSION")))
            .redirect(redirect_policy())
            .build()?;
        Ok(Self {
            http,
            config,
            cache: Mutex::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(MAX_CONCURRENT_LOOKUPS),
            per_registry: Mutex::new(HashMap::new()),
        })
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// The image's ENTRYPOINT and CMD. `always_pull`: the pod says `imagePullPolicy: Always`.
    pub async fn image_command(
        &self,
        image: &ImageRef,
        credential: Option<&Credential>,
        always_pull: bool,
        metrics: &Metrics,
    ) -> Result<ImageCommand, RegistryError> {
        let key = format!("{image} {}", self.config.platform);
        let cacheable = !always_pull && !image.is_latest();
        if cacheable {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((command, at)) = cache.get(&key)
                && at.elapsed() < Duration::from_secs(self.config.cache_ttl_seconds)
            {
                metrics.registry_cache_hits.inc();
                return Ok(command.clone());
            }
        }
        let registry_slots = self.registry_slots(&image.registry);
        let lookup = async {
            let closed = |_| RegistryError::ShuttingDown;
            let _registry = registry_slots.acquire().await.map_err(closed)?;
            let _permit = self.in_flight.acquire().await.map_err(closed)?;
            self.fetch(image, credential).await
        };
        let result = tokio::time::timeout(self.timeout(), lookup)
            .await
            .unwrap_or_else(|_| {
                Err(RegistryError::Timeout {
                    host: image.api_host().to_string(),
                    timeout_ms: self.config.timeout_ms,
                })
            });
        let label = if result.is_ok() { "ok" } else { "error" };
        metrics
            .registry_lookups
            .get_or_create(&ResultLabels { result: label })
            .inc();
        if let (Ok(command), true) = (&result, cacheable) {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(key, (command.clone(), Instant::now()));
        }
        result
    }

    /// The semaphore of one registry host's lookups.
    fn registry_slots(&self, registry: &str) -> Arc<tokio::sync::Semaphore> {
        let mut slots = self.per_registry.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() > 10_000 {
            slots.retain(|_, s| s.available_permits() < MAX_LOOKUPS_PER_REGISTRY);
        }
        slots
            .entry(registry.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS_PER_REGISTRY)))
            .clone()
    }

    async fn fetch(
        &self,
        image: &ImageRef,
        credential: Option<&Credential>,
    ) -> Result<ImageCommand, RegistryError> {
        let scheme = if self.config.insecure.iter().any(|h| h == &image.registry) {
            "http"
        } else {
            "https"
        };
        let base = format!("{scheme}://{}/v2/{}", image.api_host(), image.repository);
        let mut auth: Option<String> = None;
        let manifest_url = format!("{base}/manifests/{}", image.reference());
        let manifest: ManifestDoc = self
            .get_capped(
                &manifest_url,
                MANIFEST_TYPES,
                MAX_MANIFEST_BYTES,
                image,
                credential,
                &mut auth,
            )
            .await?;
        let manifest = match &manifest.manifests {
            Some(entries) => {
                let digest = pick_platform(entries, &self.config.platform)?;
                let url = format!("{base}/manifests/{digest}");
                self.get_capped(
                    &url,
                    MANIFEST_TYPES,
                    MAX_MANIFEST_BYTES,
                    image,
                    credential,
                    &mut auth,
                )
                .await?
            }
            None => manifest,
        };
        let config_digest =
            manifest
                .config
                .map(|c| c.digest)
                .ok_or_else(|| RegistryError::Decode {
                    op: format!("GET {manifest_url}"),
                    message: "the manifest has no config digest".to_string(),
                })?;
        let blob_url = format!("{base}/blobs/{config_digest}");
        let config: ImageConfigDoc = self
            .get_capped(
                &blob_url,
                "*/*",
                MAX_CONFIG_BYTES,
                image,
                credential,
                &mut auth,
            )
            .await?;
        let section = config.config;
        let (entrypoint, cmd) = section
            .map(|c| (c.entrypoint.unwrap_or_default(), c.cmd.unwrap_or_default()))
            .unwrap_or_default();
        let bytes: usize = entrypoint.iter().chain(&cmd).map(String::len).sum();
        if bytes > MAX_COMMAND_BYTES {
            return Err(RegistryError::CommandTooBig {
                bytes,
                limit: MAX_COMMAND_BYTES,
            });
        }
        Ok(ImageCommand { entrypoint, cmd })
    }

    /// GET with the registry's auth dance: anonymous, then Bearer (token service) or Basic as
    /// the challenge asks. `auth` keeps the header for the next requests.
    async fn get_capped<T: DeserializeOwned>(
        &self,
        url: &str,
        accept: &str,
        cap: usize,
        image: &ImageRef,
        credential: Option<&Credential>,
        auth: &mut Option<String>,
    ) -> Result<T, RegistryError> {
        let op = || format!("GET {url}");
        for attempt in 0..2 {
            let mut request = self.http.get(url).header(ACCEPT, accept);
            if let Some(header) = auth.as_deref() {
                request = request.header(AUTHORIZATION, header);
            }
            let response = request
                .send()
                .await
                .map_err(|e| RegistryError::Unreachable {
                    op: op(),
                    message: transport(&e),
                })?;
            let status = response.status();
            if status.as_u16() == 401 && attempt == 0 {
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                *auth = Some(self.authorize(&challenge, image, credential).await?);
                continue;
            }
            if !status.is_success() {
                return Err(RegistryError::Status { op: op(), status });
            }
            return json_within(response, cap, op()).await;
        }
        Err(RegistryError::StillUnauthorized { op: op() })
    }

    async fn authorize(
        &self,
        challenge: &str,
        image: &ImageRef,
        credential: Option<&Credential>,
    ) -> Result<String, RegistryError> {
        use base64::Engine as _;
        let basic = credential.map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        });
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return basic.ok_or_else(|| RegistryError::NoCredentials {
                registry: image.registry.clone(),
            });
        };
        let param = |name: &str| {
            params
                .split(',')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.trim_matches('"').to_string())
        };
        let token_service = |message: String| RegistryError::TokenService {
            registry: image.registry.clone(),
            message,
        };
        let realm = param("realm")
            .ok_or_else(|| token_service("the Bearer challenge has no realm".to_string()))?;
        let insecure = self.config.insecure.iter().any(|h| h == &image.registry);
        let realm_url = token_realm(&realm, basic.is_some(), insecure).map_err(token_service)?;
        let op = || format!("getting a registry token from {realm}");
        let mut request = self
            .http
            .get(realm_url)
            .query(&[("scope", format!("repository:{}:pull", image.repository))]);
        if let Some(service) = param("service") {
            request = request.query(&[("service", service)]);
        }
        if let Some(b) = &basic {
            request = request.header(AUTHORIZATION, b);
        }
        let response = request
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable {
                op: op(),
                message: transport(&e),
            })?;
        if !response.status().is_success() {
            return Err(RegistryError::Status {
                op: op(),
                status: response.status(),
            });
        }
        let body: Value = json_within(response, MAX_TOKEN_ANSWER_BYTES, op()).await?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(Value::as_str)
            .ok_or_else(|| RegistryError::Decode {
                op: op(),
                message: "the answer has no token".to_string(),
            })?;
        Ok(format!("Bearer {token}"))
    }
}

/// The answer's JSON, read no further than `cap` bytes.
async fn json_within<T: DeserializeOwned>(
    response: reqwest::Response,
    cap: usize,
    op: String,
) -> Result<T, RegistryError> {
    let body = match read_limited(response, cap).await {
        Ok(body) => body,
        Err(Limited::TooBig) => return Err(RegistryError::TooBig { op, cap }),
        Err(Limited::Read(e)) => {
            return Err(RegistryError::Unreachable {
                op,
                message: format!("reading the answer: {}", transport(&e)),
            });
        }
    };
    serde_json::from_slice(&body).map_err(|e| RegistryError::Decode {
        op,
        message: format!("the answer does not parse: {e}"),
    })
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        e.to_string()
    }
}

/// The digest of the manifest for `platform` (`os/arch[/variant]`) in an index.
pub fn pick_platform(manifests: &[IndexEntry], platform: &str) -> Result<String, RegistryError> {
    let mut parts = platform.split('/');
    let (os, arch, variant) = (
        parts.next().unwrap_or("linux"),
        parts.next().unwrap_or("amd64"),
        parts.next(),
    );
    manifests
        .iter()
        .find(|m| {
            m.platform.as_ref().is_some_and(|p| {
                p.os == os
                    && p.architecture == arch
                    && (variant.is_none() || p.variant.as_deref() == variant)
            })
        })
        .map(|m| m.digest.clone())
        .ok_or_else(|| {
            let available: Vec<String> = manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .take(20)
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            RegistryError::NoPlatform {
                platform: platform.to_string(),
                available: available.join(", "),
            }
        })
}

/// The token service a registry's Bearer challenge names, judged by its parsed scheme (so
/// `HTTP://` is plain http too): https always; plain http only without credentials or for a
/// registry listed in --registry-insecure; nothing else.
fn token_realm(
    realm: &str,
    with_credentials: bool,
    insecure: bool,
) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(realm)
        .map_err(|e| format!("the Bearer challenge's realm {realm:?} is not a URL ({e})"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if !with_credentials || insecure => Ok(url),
        "http" => Err(format!(
            "sends credentials to a plain-http token service ({realm}); refused (list the \
             registry in --registry-insecure only if that is intended)"
        )),
        other => Err(format!(
            "the Bearer challenge's realm {realm:?} has scheme {other:?}; only https (or http \
             for a registry in --registry-insecure) is used"
        )),
    }
}

/// Credentials for `registry` in a `.dockerconfigjson` document.
pub fn credential_from_docker_config(json: &[u8], registry: &str) -> Option<Credential> {
    use base64::Engine as _;
    let doc: Value = serde_json::from_slice(json).ok()?;
    let auths = doc.get("auths")?.as_object()?;
    let wanted = |key: &str| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        host == registry
            || (registry == "docker.io"
                && (host == "index.docker.io" || host == "registry-1.docker.io"))
    };
    let entry = auths.iter().find(|(k, _)| wanted(k)).map(|(_, v)| v)?;
    if let (Some(u), Some(p)) = (
        entry.get("username").and_then(Value::as_str),
        entry.get("password").and_then(Value::as_str),
    ) {
        return Some(Credential {
            username: u.to_string(),
            password: p.to_string(),
        });
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.get("auth")?.as_str()?)
        .ok()?;
    let (u, p) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(Credential {
        username: u.to_string(),
        password: p.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_go_to_a_token_service_by_its_parsed_scheme() {
        for realm in [
            "http://auth.example/token",
            "HTTP://auth.example/token",
            "Http://a/t",
        ] {
            let err = token_realm(realm, true, false).unwrap_err();
            assert!(err.contains("plain-http token service"), "{realm}: {err}");
            assert!(
                token_realm(realm, false, false).is_ok(),
                "{realm}: no credentials"
            );
            assert!(
                token_realm(realm, true, true).is_ok(),
                "{realm}: insecure registry"
            );
        }
        assert!(token_realm("HTTPS://auth.example/token", true, false).is_ok());
        let err = token_realm("file:///etc/passwd", false, true).unwrap_err();
        assert!(err.contains("scheme \"file\""), "{err}");
        let err = token_realm("not a url", false, false).unwrap_err();
        assert!(err.contains("is not a URL"), "{err}");
    }

    #[test]
    fn picks_the_configured_platform_and_says_what_exists() {
        let index: ManifestDoc = serde_json::from_value(json!({ "manifests": [
            { "digest": "sha256:arm", "platform": { "os": "linux", "architecture": "arm64", "variant": "v8" } },
            { "digest": "sha256:amd", "platform": { "os": "linux", "architecture": "amd64" } },
        ]}))
        .unwrap();
        let index = index.manifests.unwrap();
        assert_eq!(pick_platform(&index, "linux/amd64").unwrap(), "sha256:amd");
        assert_eq!(
            pick_platform(&index, "linux/arm64/v8").unwrap(),
            "sha256:arm"
        );
        let err = pick_platform(&index, "windows/amd64").unwrap_err();
        assert!(matches!(err, RegistryError::NoPlatform { .. }));
        let err = err.to_string();
        assert!(
            err.contains("windows/amd64") && err.contains("linux/arm64"),
            "{err}"
        );
    }

    #[test]
    fn reads_docker_config_credentials() {
        let doc = json!({ "auths": {
            "https://index.docker.io/v1/": { "auth": "dXNlcjpwYXNz" },
            "ghcr.io": { "username": "bot", "password": "tok" },
        }});
        let bytes = serde_json::to_vec(&doc).unwrap();
        assert_eq!(
            credential_from_docker_config(&bytes, "docker.io")
                .unwrap()
                .username,
            "user"
        );
        assert_eq!(
            credential_from_docker_config(&bytes, "ghcr.io")
                .unwrap()
                .password,
            "tok"
        );
        assert!(credential_from_docker_config(&bytes, "quay.io").is_none());
        assert!(credential_from_docker_config(b"not json", "ghcr.io").is_none());
        assert!(
            !format!(
                "{:?}",
                credential_from_docker_config(&bytes, "ghcr.io").unwrap()
            )
            .contains("tok")
        );
    }
}
