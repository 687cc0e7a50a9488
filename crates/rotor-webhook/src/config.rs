//! What the webhook injects and which defaults it applies: flags of `rotor-webhook serve` and
//! `rotor-webhook inject`. Every value that ends up in an injected pod is checked at start-up
//! with the same parsers rotor-init uses, so a bad flag stops the webhook, not every pod.

use rotor_core::contract::init_settings::check_addr;
use rotor_core::contract::{AuthMethod, BinarySource, LogFormat, PullPolicy, StoreAddr};

/// The mutation settings (pure data, used by the planner).
#[derive(Clone, Debug, clap::Args)]
pub struct InjectConfig {
    /// The rotor-init image that the injected init container runs.
    #[arg(
        long,
        env = "ROTOR_INIT_IMAGE",
        default_value = "ghcr.io/rotor-dev/rotor-init:0.1.0"
    )]
    pub init_image: String,
    /// imagePullPolicy of the injected init container (or of the image volume).
    #[arg(long, env = "ROTOR_INIT_PULL_POLICY", default_value = "IfNotPresent")]
    pub init_pull_policy: PullPolicy,
    /// How rotor-init reaches the pod: `copy` (an init container copies it into an in-memory
    /// volume; any cluster) or `image-volume` (the rotor-init image mounted read-only, no init
    /// container; every node needs Kubernetes >= 1.35 with image volumes on and containerd >=
    /// 2.1). A pod may choose with the annotation rotor.dev/init-binary-source.
    #[arg(long, env = "ROTOR_INIT_BINARY_SOURCE", default_value = "copy")]
    pub init_binary_source: BinarySource,
    /// Default store address when a pod names none.
    #[arg(long, env = "ROTOR_DEFAULT_ADDR")]
    pub default_addr: Option<String>,
    /// Store addresses a pod annotation may choose (comma-separated URLs, compared by scheme,
    /// host, port and path; a trailing `*` allows paths under the entry's, a host `*.domain`
    /// one label in front of it).
    #[arg(long, env = "ROTOR_ADDR_ALLOWLIST", value_delimiter = ',')]
    pub addr_allowlist: Vec<String>,
    /// Default auth method: kubernetes, jwt, token, approle.
    #[arg(long, env = "ROTOR_DEFAULT_AUTH_METHOD", default_value = "kubernetes")]
    pub default_auth_method: AuthMethod,
    /// Default auth mount path (defaults to the method name).
    #[arg(long, env = "ROTOR_DEFAULT_AUTH_PATH")]
    pub default_auth_path: Option<String>,
    /// Default store role (defaults to the pod's ServiceAccount name).
    #[arg(long, env = "ROTOR_DEFAULT_ROLE")]
    pub default_role: Option<String>,
    /// Default Vault Enterprise / OpenBao namespace of the store when a pod names none (the
    /// chart's `store.namespace`; the reloader's `--store-namespace`).
    #[arg(long, env = "ROTOR_DEFAULT_NAMESPACE")]
    pub default_namespace: Option<String>,
    /// Audience of the projected service-account token mounted for rotor-init.
    #[arg(long, env = "ROTOR_TOKEN_AUDIENCE", default_value = "rotor")]
    pub token_audience: String,
    /// Lifetime of the projected token in seconds (the kubelet refreshes it).
    #[arg(long, env = "ROTOR_TOKEN_EXPIRATION", default_value_t = 600)]
    pub token_expiration_seconds: i64,
    /// Log format rotor-init uses: plain or json.
    #[arg(long, env = "ROTOR_INIT_LOG_FORMAT", default_value = "json")]
    pub init_log_format: LogFormat,
    /// PEM CA bundle of the store, passed to rotor-init (ROTOR_CACERT_PEM) in every injected pod.
    #[arg(long, env = "ROTOR_STORE_CA_FILE")]
    pub store_ca_file: Option<std::path::PathBuf>,
    /// The content of `store_ca_file`, read once at start-up.
    #[arg(skip)]
    pub store_ca_pem: Option<String>,
    /// Names a from-path secret's key may not become, besides rotor's defaults (the loader, libc
    /// and runtime option variables): exact, or a prefix ending in `*` (comma-separated).
    #[arg(long, env = "ROTOR_DEFAULT_FROM_PATH_DENY", value_delimiter = ',')]
    pub from_path_deny: Vec<String>,
    /// sizeLimit of the in-memory volume holding rotor-init.
    #[arg(long, env = "ROTOR_BIN_VOLUME_SIZE", default_value = "32Mi")]
    pub bin_volume_size: String,
}

impl Default for InjectConfig {
    fn default() -> Self {
        Self {
            init_image: "ghcr.io/rotor-dev/rotor-init:0.1.0".to_string(),
            init_pull_policy: PullPolicy::IfNotPresent,
            init_binary_source: BinarySource::Copy,
            default_addr: None,
            addr_allowlist: Vec::new(),
            default_auth_method: AuthMethod::Kubernetes,
            default_auth_path: None,
            default_role: None,
            default_namespace: None,
            token_audience: "rotor".to_string(),
            token_expiration_seconds: 600,
            init_log_format: LogFormat::Json,
            bin_volume_size: "32Mi".to_string(),
            from_path_deny: Vec::new(),
            store_ca_file: None,
            store_ca_pem: None,
        }
    }
}

impl InjectConfig {
    /// Checks every setting that ends up in injected pods and reads `--store-ca-file` into
    /// `store_ca_pem`. Errors name the flag and the fix.
    pub fn validated(mut self) -> anyhow::Result<Self> {
        if let Some(addr) = &self.default_addr {
            check_addr("--default-addr", addr)?;
        }
        for entry in &self.addr_allowlist {
            check_addr("--addr-allowlist entry", entry.trim_end_matches('*'))?;
        }
        if let Some(bad) = self
            .from_path_deny
            .iter()
            .find(|e| e.trim().is_empty() || e.contains(['=', ' ']))
        {
            anyhow::bail!(
                "--from-path-deny entry {bad:?}: must be a variable name or a prefix ending in '*'"
            );
        }
        if let Some(ns) = &self.default_namespace
            && (ns.is_empty() || ns.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            anyhow::bail!(
                "--default-namespace={ns:?}: a store namespace is a path such as team-a or team-a/app, without spaces or control characters"
            );
        }
        if !(600..=86_400 * 2).contains(&self.token_expiration_seconds) {
            anyhow::bail!(
                "--token-expiration={}: the API server accepts 600 to 172800 seconds for a projected token",
                self.token_expiration_seconds
            );
        }
        for (flag, value) in [
            ("--init-image", &self.init_image),
            ("--token-audience", &self.token_audience),
            ("--bin-volume-size", &self.bin_volume_size),
        ] {
            if value.trim().is_empty() || value.chars().any(char::is_whitespace) {
                anyhow::bail!("{flag}={value:?}: must be a non-empty value without spaces");
            }
        }
        if let Some(path) = &self.store_ca_file {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading --store-ca-file {}: {e}", path.display()))?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                anyhow::bail!(
                    "--store-ca-file {} holds no PEM certificate",
                    path.display()
                );
            }
            self.store_ca_pem = Some(pem);
        }
        Ok(self)
    }

    /// Whether a pod annotation may point rotor-init at `addr`: the default store, or an
    /// allowlist entry with the same scheme, host, port (and path, or a path under it for an
    /// entry ending in `*`). Compared parsed, never as strings.
    pub fn addr_allowed(&self, addr: &str) -> bool {
        let Ok(parsed) = StoreAddr::parse(addr) else {
            return false;
        };
        self.default_addr
            .iter()
            .chain(&self.addr_allowlist)
            .any(|entry| parsed.allowed_by(entry))
    }
}
