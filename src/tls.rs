//! TLS for the listeners: the certificate chain and private key of `[server] tls_cert` and
//! `tls_key` (PEM files, relative to the config file) become one rustls server
//! configuration per listener kind, and [`Tls::accept`] runs a handshake within
//! `tls_handshake_timeout`.
//!
//! The HTTP listener offers ALPN `http/1.1` (every SockJS transport, WebSocket included,
//! is HTTP/1.1); STOMP over TLS (`[stomp] tls_listen`) offers none. Failed handshakes are
//! counted and logged at debug: a scanner or a client that does not trust the certificate
//! is not an error of the gateway.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Why the TLS configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be read or holds no PEM certificate.
    #[error("{path}: {message} (give a PEM file with the certificate chain, leaf first)")]
    Cert {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The key file cannot be read or holds no PEM private key.
    #[error("{path}: {message} (give a PEM file with one PKCS#8, PKCS#1 or SEC1 private key)")]
    Key {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the pair (the key does not match the certificate, or is of a kind it
    /// does not support).
    #[error("the certificate and key cannot be used together: {0}")]
    Pair(String),
}

/// Which listener a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The HTTP listener: ALPN `http/1.1`.
    Http,
    /// STOMP over TLS: no ALPN.
    Stomp,
}

/// A TLS acceptor with its handshake time limit and failure counter.
#[derive(Clone)]
pub struct Tls {
    /// The rustls acceptor.
    acceptor: TlsAcceptor,
    /// How long a handshake may take.
    timeout: Duration,
    /// Handshakes that failed or timed out.
    failures: Arc<AtomicU64>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Resolve a configured file name against the config file's directory.
pub fn resolve(base_dir: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_path_buf()
    } else {
        base_dir.join(file)
    }
}

impl Tls {
    /// Load `cert` and `key` for `listener`; `failures` is shared by every listener.
    pub fn load(
        cert: &Path,
        key: &Path,
        listener: Listener,
        timeout: Duration,
        failures: Arc<AtomicU64>,
    ) -> Result<Tls, TlsError> {
        let chain = read_chain(cert)?;
        let key = read_key(key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pair(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Pair(e.to_string()))?;
        if listener == Listener::Http {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            timeout,
            failures,
        })
    }

    /// Run the server side of a handshake on `stream`; None (counted, logged at debug)
    /// when it fails or takes longer than the time limit.
    pub async fn accept(&self, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
        let peer = stream.peer_addr().ok();
        match tokio::time::timeout(self.timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?peer, timeout = ?self.timeout, "TLS handshake timed out");
                None
            }
        }
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |message: String| TlsError::Cert {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(error("holds no CERTIFICATE block".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let error = |message: String| TlsError::Key {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| error(format!("no usable private key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn bad_files_are_named_with_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("sg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let good_cert = write(&dir, "cert.pem", &cert.cert.pem());
        let good_key = write(&dir, "key.pem", &cert.signing_key.serialize_pem());
        let empty = write(&dir, "empty.pem", "nothing here\n");
        let other = rcgen::generate_simple_self_signed(vec!["other".into()]).unwrap();
        let other_key = write(&dir, "other.pem", &other.signing_key.serialize_pem());
        let load = |c: &Path, k: &Path| {
            Tls::load(c, k, Listener::Http, Duration::from_secs(1), Arc::default())
        };
        assert!(load(&good_cert, &good_key).is_ok());
        let missing = load(&dir.join("absent.pem"), &good_key).unwrap_err();
        assert!(missing.to_string().contains("absent.pem: cannot read it"));
        let no_cert = load(&empty, &good_key).unwrap_err();
        assert!(
            no_cert.to_string().contains("holds no CERTIFICATE"),
            "{no_cert}"
        );
        let no_key = load(&good_cert, &empty).unwrap_err();
        assert!(
            no_key.to_string().contains("no usable private key"),
            "{no_key}"
        );
        let mismatch = load(&good_cert, &other_key).unwrap_err();
        assert!(
            mismatch.to_string().contains("cannot be used together"),
            "{mismatch}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
