//! TLS for `amqps://<namespace>:5671`, on rustls with the ring provider and the webpki roots
//! (the process installs ring as the default provider at start; see `main`), plus any extra CA the
//! configuration trusts ([`TrustedCa`]: a private CA, or the throwaway CA of an emulator's test
//! certificate).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// CA certificates trusted in addition to the public web roots. Cheap to clone.
#[derive(Clone)]
pub struct TrustedCa {
    /// Where they came from, for `Debug` and errors.
    source: String,
    certificates: Arc<Vec<CertificateDer<'static>>>,
}

impl fmt::Debug for TrustedCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedCa")
            .field("source", &self.source)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

/// Why a CA file cannot be trusted. The messages name the problem; the caller names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustedCaError {
    #[error("cannot be read: {0}")]
    Unreadable(String),
    #[error("is not valid PEM: {0}")]
    NotPem(String),
    #[error("holds no certificate (no -----BEGIN CERTIFICATE----- block)")]
    NoCertificate,
    #[error("holds a certificate that cannot be a trust anchor: {0}")]
    Unusable(String),
}

impl TrustedCa {
    /// Reads a PEM file of one or more CA certificates.
    pub fn from_pem_file(path: &Path) -> Result<TrustedCa, TrustedCaError> {
        let pem = std::fs::read(path).map_err(|e| TrustedCaError::Unreadable(e.to_string()))?;
        Self::from_pem(&pem, path.display().to_string())
    }

    /// The same from PEM text; `source` names it in `Debug` output.
    pub fn from_pem(pem: &[u8], source: impl Into<String>) -> Result<TrustedCa, TrustedCaError> {
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TrustedCaError::NotPem(e.to_string()))?;
        if certificates.is_empty() {
            return Err(TrustedCaError::NoCertificate);
        }
        // Parse them now, so a bad file is a configuration error and not a failure at connect time.
        let mut roots = rustls::RootCertStore::empty();
        for certificate in &certificates {
            roots
                .add(certificate.clone())
                .map_err(|e| TrustedCaError::Unusable(e.to_string()))?;
        }
        Ok(TrustedCa {
            source: source.into(),
            certificates: Arc::new(certificates),
        })
    }
}

/// The TLS handshake with `server_name` (SNI and the name the certificate must carry) on `tcp`.
pub(crate) async fn connect(
    server_name: &str,
    tcp: TcpStream,
    trusted: Option<&TrustedCa>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(trusted) = trusted {
        // Checked when the configuration was read.
        let (_added, _ignored) = roots.add_parsable_certificates(trusted.certificates.to_vec());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string()).map_err(std::io::Error::other)?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Whether a TLS failure was our refusal of the server's certificate (untrusted issuer, wrong name,
/// expired), as opposed to the network; its reason if so.
pub(crate) fn refused_certificate(error: &std::io::Error) -> Option<String> {
    use rustls::CertificateError as E;
    let rustls::Error::InvalidCertificate(reason) =
        error.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    let code = format!("{reason:?}");
    Some(match reason {
        E::UnknownIssuer => "UnknownIssuer: it is signed by a CA this job does not trust".into(),
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            format!("{code}: it is not issued for the host name connected to")
        }
        E::Expired | E::ExpiredContext { .. } => format!("{code}: it has expired"),
        // webpki's CaUsedAsEndEntity: what `openssl req -x509` makes by default (CA:TRUE).
        E::Other(_) if code.contains("CaUsedAsEndEntity") => {
            "CaUsedAsEndEntity: the server presents a CA certificate as its own; issue it a \
             certificate from that CA, or make the self-signed one with basicConstraints=CA:FALSE"
                .into()
        }
        _ => code,
    })
}

/// Installs ring as the process-wide rustls provider. reqwest (used by `azure_identity` for the
/// managed-identity endpoint) is built without a provider of its own and panics without one.
/// Call once at start; later calls are no-ops.
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_is_checked_when_read() {
        assert_eq!(
            TrustedCa::from_pem(b"", "empty").unwrap_err(),
            TrustedCaError::NoCertificate
        );
        let garbage =
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            TrustedCa::from_pem(garbage, "garbage"),
            Err(TrustedCaError::Unusable(_))
        ));
        assert!(matches!(
            TrustedCa::from_pem_file(Path::new("/nonexistent/ca.pem")),
            Err(TrustedCaError::Unreadable(_))
        ));
    }
}
