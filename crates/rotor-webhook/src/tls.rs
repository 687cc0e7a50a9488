//! Serving certificates that reload without a restart: a rustls resolver over an `ArcSwap`,
//! refreshed by polling the files' content (a Secret volume swaps a symlink, which file
//! watches miss). A new pair that does not parse is logged and the last good one kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwapOption;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, ReloadLabels};

#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwapOption<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

impl CertResolver {
    /// A resolver serving `pair` (none: not ready).
    pub fn new(pair: Option<CertifiedKey>) -> Self {
        Self {
            current: ArcSwapOption::new(pair.map(Arc::new)),
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }
}

/// Parses a PEM certificate chain and private key.
pub fn parse_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey> {
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .context("reading the certificate PEM")?;
    if certs.is_empty() {
        bail!("the certificate file holds no PEM certificate");
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .context("reading the key PEM")?
        .context("the key file holds no PEM private key")?;
    let key =
        rustls::crypto::ring::sign::any_supported_type(&key).context("unsupported private key")?;
    let pair = CertifiedKey::new(certs, key);
    pair.keys_match()
        .context("the key does not match the certificate")?;
    Ok(pair)
}

/// Watches a certificate and key file pair.
pub struct CertWatcher {
    cert: PathBuf,
    key: PathBuf,
    pub resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
}

impl CertWatcher {
    /// Loads the pair once; a missing or bad pair is an error at start-up.
    pub fn load(cert: &Path, key: &Path, metrics: Arc<Metrics>) -> Result<(Self, Vec<u8>)> {
        let (cert_pem, key_pem) = read_pair(cert, key)?;
        let pair = parse_pair(&cert_pem, &key_pem)
            .with_context(|| format!("loading {} and {}", cert.display(), key.display()))?;
        metrics.cert_loaded.set(1);
        let resolver = Arc::new(CertResolver::new(Some(pair)));
        let mut fingerprint = cert_pem;
        fingerprint.extend_from_slice(&key_pem);
        Ok((
            Self {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                resolver,
                metrics,
            },
            fingerprint,
        ))
    }

    /// Polls the files every `interval` until cancelled, swapping in new pairs that parse.
    pub async fn run(self, mut seen: Vec<u8>, interval: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let Ok((cert_pem, key_pem)) = read_pair(&self.cert, &self.key) else {
                continue; // mid-swap or briefly missing: try next time
            };
            let mut now = cert_pem.clone();
            now.extend_from_slice(&key_pem);
            if now == seen {
                continue;
            }
            match parse_pair(&cert_pem, &key_pem) {
                Ok(pair) => {
                    self.resolver.current.store(Some(Arc::new(pair)));
                    self.metrics
                        .cert_reloads
                        .get_or_create(&ReloadLabels { result: "loaded" })
                        .inc();
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                    seen = now;
                }
                Err(e) => {
                    self.metrics
                        .cert_reloads
                        .get_or_create(&ReloadLabels {
                            result: "invalid_kept_last_good",
                        })
                        .inc();
                    tracing::warn!(cert = %self.cert.display(), error = %format!("{e:#}"), "new serving certificate does not load; keeping the last good one");
                    seen = now;
                }
            }
        }
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    Ok((cert_pem, key_pem))
}

/// A rustls server config over the resolver, with ALPN h2 and http/1.1.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
