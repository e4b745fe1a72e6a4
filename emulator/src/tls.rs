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

/// A throwaway certificate authority for tests (feature `test-ca`, with rcgen): it signs server
/// certificates for the emulator's TLS listener, and clients under test trust its certificate
/// (the worker: `SERVICEBUS_CA_FILE`), so the TLS path runs offline with no real CA involved.
///
/// ```
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use servicebus_emulator::tls::TestCa;
/// let ca = TestCa::new()?;
/// let server = ca.issue(&["localhost", "127.0.0.1"])?;
/// let identity = server.identity()?; // for EmulatorBuilder::tls
/// std::fs::write(std::env::temp_dir().join("test-ca.pem"), ca.certificate_pem())?; // for the client
/// # let _ = identity; Ok(()) }
/// ```
#[cfg(feature = "test-ca")]
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    certificate: rcgen::Certificate,
}

/// A server certificate a [`TestCa`] signed, and its key, as PEM.
#[cfg(feature = "test-ca")]
#[derive(Clone)]
pub struct IssuedCertificate {
    pub certificate_pem: String,
    pub key_pem: String,
}

#[cfg(feature = "test-ca")]
impl TestCa {
    /// A new CA with a fresh key pair.
    pub fn new() -> Result<TestCa, rcgen::Error> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "servicebus-emulator throwaway test CA");
        let certificate = params.self_signed(&key)?;
        Ok(TestCa {
            issuer: rcgen::Issuer::new(params, key),
            certificate,
        })
    }

    /// The CA certificate, PEM: what clients trust.
    pub fn certificate_pem(&self) -> String {
        self.certificate.pem()
    }

    /// The CA certificate, DER (e.g. for `rustls::RootCertStore::add`).
    pub fn certificate_der(&self) -> CertificateDer<'static> {
        self.certificate.der().clone()
    }

    /// A server certificate for these names (DNS names or IP addresses), signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Result<IssuedCertificate, rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, *first);
        }
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(feature = "test-ca")]
impl IssuedCertificate {
    /// The certificate and key for [`crate::EmulatorBuilder::tls`].
    pub fn identity(&self) -> Result<TlsIdentity, TlsError> {
        TlsIdentity::from_pem(self.certificate_pem.as_bytes(), self.key_pem.as_bytes())
    }
}

#[cfg(all(test, feature = "test-ca"))]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_and_its_key_make_an_identity() {
        let server = TestCa::new().unwrap().issue(&["localhost"]).unwrap();
        let identity = server.identity().unwrap();
        assert!(!format!("{identity:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn problems_name_the_flag_and_the_fix() {
        let ca = TestCa::new().unwrap();
        let (one, other) = (
            ca.issue(&["localhost"]).unwrap(),
            ca.issue(&["localhost"]).unwrap(),
        );
        let (cert, key) = (one.certificate_pem.as_bytes(), one.key_pem.as_bytes());
        let no_cert = TlsIdentity::from_pem(b"not pem", key).unwrap_err();
        assert!(no_cert.to_string().contains("--tls-cert"), "{no_cert}");
        let no_key = TlsIdentity::from_pem(cert, cert).unwrap_err();
        assert!(no_key.to_string().contains("--tls-key"), "{no_key}");
        let mismatch = TlsIdentity::from_pem(cert, other.key_pem.as_bytes()).unwrap_err();
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
