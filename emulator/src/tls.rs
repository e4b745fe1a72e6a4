//! The optional TLS listener: AMQP over TLS as Azure serves it on 5671 (TLS first, then the AMQP or
//! SASL header inside it; no AMQP TLS-upgrade header), so a client's production path (`amqps://`,
//! certificate checks, SNI) can be exercised offline.
//!
//! The certificate and key come from PEM files (`--tls-cert`, `--tls-key`) or PEM bytes (tests make a
//! throwaway CA). rustls with the ring provider: the workspace's one TLS stack (no aws-lc, no openssl).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A client that opens TCP and never finishes the handshake must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS certificate or key cannot be used. Each names the file (or the in-memory source)
/// and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read the TLS certificate {source_name}: {reason}; pass --tls-cert (SERVICEBUS_EMULATOR_TLS_CERT) a PEM file with the server certificate first, then any intermediates"
    )]
    Certificate { source_name: String, reason: String },
    #[error(
        "cannot read the TLS private key {source_name}: {reason}; pass --tls-key (SERVICEBUS_EMULATOR_TLS_KEY) the certificate's private key as PEM (PKCS#8, PKCS#1 or SEC1)"
    )]
    Key { source_name: String, reason: String },
    #[error(
        "the TLS certificate and key cannot be served together: {0}; check that --tls-key is the key of --tls-cert"
    )]
    Mismatch(rustls::Error),
}

/// The server's certificate chain and key, ready to accept TLS connections. Cheap to clone.
#[derive(Clone)]
pub struct TlsIdentity {
    config: Arc<rustls::ServerConfig>,
    /// Where it came from, for logs.
    source: String,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("TlsIdentity")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Reads a PEM certificate chain (server certificate first) and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
        let cert_name = cert.display().to_string();
        let key_name = key.display().to_string();
        let cert_pem = std::fs::read(cert).map_err(|e| TlsError::Certificate {
            source_name: cert_name.clone(),
            reason: e.to_string(),
        })?;
        let key_pem = std::fs::read(key).map_err(|e| TlsError::Key {
            source_name: key_name.clone(),
            reason: e.to_string(),
        })?;
        Self::build(&cert_pem, &cert_name, &key_pem, &key_name)
    }

    /// The same from PEM text in memory (e.g. certificates a test generated).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsIdentity, TlsError> {
        Self::build(
            cert_pem,
            "(PEM given to TlsIdentity::from_pem)",
            key_pem,
            "(PEM given to TlsIdentity::from_pem)",
        )
    }

    fn build(
        cert_pem: &[u8],
        cert_name: &str,
        key_pem: &[u8],
        key_name: &str,
    ) -> Result<TlsIdentity, TlsError> {
        let certificate_error = |reason: String| TlsError::Certificate {
            source_name: cert_name.to_string(),
            reason,
        };
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| certificate_error(format!("it is not valid PEM ({e})")))?;
        if chain.is_empty() {
            return Err(certificate_error(
                "it holds no -----BEGIN CERTIFICATE----- block".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
            source_name: key_name.to_string(),
            reason: format!("no usable private key in it ({e})"),
        })?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Mismatch)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Mismatch)?;
        Ok(TlsIdentity {
            config: Arc::new(config),
            source: cert_name.to_string(),
        })
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }
}

/// The server side of the TLS handshake on an accepted socket, bounded by [`HANDSHAKE_TIMEOUT`].
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the TLS handshake did not finish within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_certificate_and_its_key_make_an_identity() {
        let (cert, key) = self_signed();
        let identity = TlsIdentity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert!(!format!("{identity:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn problems_name_the_flag_and_the_fix() {
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let no_cert = TlsIdentity::from_pem(b"not pem", key.as_bytes()).unwrap_err();
        assert!(no_cert.to_string().contains("--tls-cert"), "{no_cert}");
        let no_key = TlsIdentity::from_pem(cert.as_bytes(), cert.as_bytes()).unwrap_err();
        assert!(no_key.to_string().contains("--tls-key"), "{no_key}");
        let mismatch = TlsIdentity::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(
            matches!(mismatch, TlsError::Mismatch(_)),
            "a key of another certificate: {mismatch}"
        );
        let missing = TlsIdentity::from_pem_files(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/cert.pem"),
            "{missing}"
        );
    }
}
