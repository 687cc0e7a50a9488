//! `--tls PORT CERT KEY`: serve TLS with the certificate and key from files, like nginx, and
//! load them again on SIGHUP. Each connection gets a one-line HTTP answer and is closed.

use std::io::Write as _;
use std::net::TcpListener;
use std::sync::{Arc, RwLock};

use rotor_test_app::fnv1a;

pub struct TlsFiles {
    pub port: u16,
    pub cert: String,
    pub key: String,
}

/// The configuration served, swapped whole on reload.
pub type Served = Arc<RwLock<Arc<rustls::ServerConfig>>>;

/// Loads the files; the line the app prints says which certificate it serves.
pub fn load(files: &TlsFiles) -> Result<(Arc<rustls::ServerConfig>, String), String> {
    let cert_pem = std::fs::read(&files.cert).map_err(|e| format!("{}: {e}", files.cert))?;
    let key_pem = std::fs::read(&files.key).map_err(|e| format!("{}: {e}", files.key))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", files.cert))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("{}: {e}", files.key))?
        .ok_or_else(|| format!("{}: no private key", files.key))?;
    let digest = certs.first().map(|c| fnv1a(c.as_ref())).unwrap_or_default();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("certificate and key: {e}"))?;
    Ok((
        Arc::new(config),
        format!("app: tls port={} cert-fnv={digest:016x}", files.port),
    ))
}

/// Serves on all addresses of `port` in a thread of its own.
pub fn serve(port: u16, served: Served) -> Result<(), String> {
    let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("port {port}: {e}"))?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = served.read().map(|c| c.clone());
            let Ok(config) = config else { continue };
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let _ = tls.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 15\r\n\r\nrotor test app\n");
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    Ok(())
}
