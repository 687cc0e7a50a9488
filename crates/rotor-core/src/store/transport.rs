//! How the store client reaches the store: one HTTP exchange at a time.
//!
//! The client's decisions (mounts, KV versions, retries, decoding) sit above this trait, so they
//! are unit-tested against an in-memory store; [`HttpTransport`] is the real one, on reqwest.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use super::error::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
}

/// One request to the store's HTTP API.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: Method,
    /// The path under `/v1/`, with its query string: `secret/data/db?version=2`.
    pub path: &'a str,
    pub body: Option<&'a Value>,
    pub token: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// What the request is for, to name in errors.
    pub op: &'a str,
}

/// The store's answer: status and body text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

pub trait Transport: Send + Sync {
    /// Sends one request; an error only when there is no answer ([`StoreError::Unreachable`]
    /// or [`StoreError::Tls`]).
    fn send<'a>(&'a self, request: Request<'a>) -> BoxFuture<'a, Result<Answer, StoreError>>;
}

/// The store over HTTP(S).
pub struct HttpTransport {
    http: reqwest::Client,
    addr: String,
}

impl HttpTransport {
    /// A client for `addr`. The platform CA bundle is loaded only for an https store without
    /// `ca_pem` (loading it is most of a short-lived process's work); redirects are never
    /// followed, so a token never goes to another origin or to plain HTTP.
    pub fn new(
        addr: &str,
        ca_pem: Option<&[u8]>,
        request_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let trust = Trust {
            ca_pem,
            plain_http_only: addr.starts_with("http://"),
            what: &format!("the store at {addr}"),
            fix: "set ROTOR_CACERT to the store's CA bundle",
        };
        Ok(Self {
            http: http_client(trust, request_timeout)?,
            addr: addr.to_string(),
        })
    }
}

/// What a store client trusts, and what to say when it cannot.
pub(crate) struct Trust<'a> {
    /// A PEM bundle that replaces the platform's CA certificates.
    pub ca_pem: Option<&'a [u8]>,
    /// Every request goes over plain HTTP: no CA certificates are loaded at all.
    pub plain_http_only: bool,
    /// What the client talks to, for messages.
    pub what: &'a str,
    /// How a user gives it CA certificates.
    pub fix: &'a str,
}

/// The HTTP client every store client uses: request and connect timeouts, redirects never
/// followed (a credential never goes to another origin or to plain HTTP), and the platform CA
/// bundle loaded only when an https endpoint needs it and no bundle is given (loading it is most
/// of a short-lived process's work, and an app image may have none).
pub(crate) fn http_client(
    trust: Trust<'_>,
    request_timeout: Duration,
) -> Result<reqwest::Client, StoreError> {
    crate::install_crypto_provider();
    let builder = reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(request_timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rotor/", env!("CARGO_PKG_VERSION")));
    let builder = match trust.ca_pem {
        Some(pem) => {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                StoreError::CaBundle(format!("parsing the CA bundle for {}: {e}", trust.what))
            })?;
            if certs.is_empty() {
                return Err(StoreError::CaBundle(format!(
                    "the CA bundle for {} holds no PEM certificate",
                    trust.what
                )));
            }
            builder.tls_certs_only(certs)
        }
        None if trust.plain_http_only => builder.tls_certs_only(Vec::new()),
        None => builder,
    };
    builder.build().map_err(|e| {
        StoreError::Client(format!(
            "building the HTTP client for {}: {}; {}",
            trust.what,
            innermost(&e),
            trust.fix
        ))
    })
}

impl Transport for HttpTransport {
    fn send<'a>(&'a self, request: Request<'a>) -> BoxFuture<'a, Result<Answer, StoreError>> {
        Box::pin(async move {
            let url = format!("{}/v1/{}", self.addr, request.path.trim_start_matches('/'));
            let method = match request.method {
                Method::Get => reqwest::Method::GET,
                Method::Post => reqwest::Method::POST,
                Method::Put => reqwest::Method::PUT,
            };
            let mut builder = self.http.request(method, &url);
            if let Some(token) = request.token {
                builder = builder.header("X-Vault-Token", token);
            }
            if let Some(ns) = request.namespace {
                builder = builder.header("X-Vault-Namespace", ns);
            }
            if let Some(body) = request.body {
                builder = builder.json(body);
            }
            let op = request.op;
            let response = builder
                .send()
                .await
                .map_err(|e| failure(op, &self.addr, &e, "", !e.is_connect()))?;
            let status = response.status().as_u16();
            let body = read_capped(response, op, &self.addr).await?;
            Ok(Answer { status, body })
        })
    }
}

/// The most a store answer may hold. A secret is a few KiB; the cap keeps a broken or hostile
/// store from growing a pod's memory without bound.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Why a body could not be read within its cap.
#[derive(Debug)]
pub enum Limited {
    /// The body (or its declared length) passed the cap.
    TooBig,
    Read(reqwest::Error),
}

/// Reads `response`'s body, stopping as soon as it passes `cap` bytes (a declared
/// Content-Length over the cap is refused before any byte is read). The webhook's registry
/// client uses it too.
pub async fn read_limited(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, Limited> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(Limited::TooBig);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Limited::Read)? {
        if body.len() + chunk.len() > cap {
            return Err(Limited::TooBig);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The answer's body, refused as soon as it passes [`MAX_ANSWER_BYTES`].
pub(crate) async fn read_capped(
    response: reqwest::Response,
    op: &str,
    addr: &str,
) -> Result<String, StoreError> {
    let body = read_limited(response, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| match e {
            Limited::TooBig => StoreError::Decode {
                op: op.to_string(),
                message: format!("the answer from {addr} is over {MAX_ANSWER_BYTES} bytes"),
            },
            Limited::Read(e) => failure(op, addr, &e, "reading the answer: ", true),
        })?;
    String::from_utf8(body).map_err(|_| StoreError::Decode {
        op: op.to_string(),
        message: "the answer is not UTF-8 text".to_string(),
    })
}

/// A request without an answer, classified by the error's type (never its text).
pub(crate) fn failure(
    op: &str,
    addr: &str,
    e: &reqwest::Error,
    context: &str,
    sent: bool,
) -> StoreError {
    if let Some(tls) = tls_error_in(e) {
        return StoreError::Tls {
            op: op.to_string(),
            message: format!("{context}{addr}: {tls}"),
        };
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let detail = innermost(e);
    StoreError::Unreachable {
        op: op.to_string(),
        message: if detail.is_empty() {
            format!("{context}{kind} to {addr}")
        } else {
            format!("{context}{kind} to {addr}: {detail}")
        },
        sent,
    }
}

/// The rustls error in `e`'s source chain. `std::io::Error` hides the error it wraps from
/// `source()` (it returns that error's own source), so look inside each one too.
pub(crate) fn tls_error_in<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(current) = next {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| tls_error_in(inner))
        {
            return Some(tls);
        }
        next = current.source();
    }
    None
}

/// The innermost cause's text (reqwest's own message is "error sending request").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e.source();
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_rustls_error_is_found_inside_io_errors_and_nothing_else_counts_as_tls() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let chain = Outer(std::io::Error::other(tls));
        assert!(matches!(
            tls_error_in(&chain),
            Some(rustls::Error::InvalidCertificate(_))
        ));
        let refused = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused to vault.certificates.svc",
        ));
        assert!(tls_error_in(&refused).is_none());
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_refused_without_being_held() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // Read the request head first, as a server does.
            let mut seen = Vec::new();
            let mut byte = [0u8; 1];
            while !seen.ends_with(b"\r\n\r\n") {
                if tokio::io::AsyncReadExt::read(&mut s, &mut byte)
                    .await
                    .unwrap_or(0)
                    == 0
                {
                    return;
                }
                seen.push(byte[0]);
            }
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            let _ = s.write_all(head.as_bytes()).await;
            let chunk = vec![b'x'; 64 * 1024];
            // Endless: the client must stop reading by itself.
            loop {
                let size = format!("{:x}\r\n", chunk.len());
                if s.write_all(size.as_bytes()).await.is_err()
                    || s.write_all(&chunk).await.is_err()
                    || s.write_all(b"\r\n").await.is_err()
                {
                    return;
                }
            }
        });
        let addr = format!("http://127.0.0.1:{port}");
        let transport = HttpTransport::new(&addr, None, Duration::from_secs(20)).expect("client");
        let err = transport
            .send(Request {
                method: Method::Get,
                path: "secret/data/x",
                body: None,
                token: None,
                namespace: None,
                op: "reading secret/data/x",
            })
            .await
            .expect_err("over the cap");
        assert!(err.to_string().contains("is over 4194304 bytes"), "{err}");
        assert!(!err.is_transient());
    }

    #[tokio::test]
    async fn https_to_a_plain_http_store_is_a_tls_error_not_retried() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let addr = format!("https://127.0.0.1:{port}");
        let transport = HttpTransport::new(&addr, None, Duration::from_secs(5)).expect("client");
        let err = transport
            .send(Request {
                method: Method::Get,
                path: "sys/health",
                body: None,
                token: None,
                namespace: None,
                op: "reading",
            })
            .await
            .expect_err("no TLS there");
        assert!(matches!(err, StoreError::Tls { .. }), "{err:?}");
        assert!(!err.is_transient() && err.is_setup());
    }

    #[tokio::test]
    async fn a_refused_connection_to_a_store_named_like_certificates_is_unreachable_not_tls() {
        // A port that was free a moment ago: the connection is refused, the store never saw it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let addr = format!("http://127.0.0.1:{port}/vault.certificates.svc");
        let transport = HttpTransport::new(&addr, None, Duration::from_secs(2)).expect("client");
        let err = transport
            .send(Request {
                method: Method::Post,
                path: "auth/kubernetes/login",
                body: None,
                token: None,
                namespace: None,
                op: "logging in",
            })
            .await
            .expect_err("nothing listens there");
        assert!(
            matches!(err, StoreError::Unreachable { sent: false, .. }),
            "{err:?}"
        );
        assert!(err.is_transient() && err.store_did_not_act() && !err.is_setup());
    }
}
