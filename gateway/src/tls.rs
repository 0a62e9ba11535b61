//! rustls server configuration from PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS certificate and key cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {}: {source}", .path.display())]
    ReadCert { path: PathBuf, source: pem::Error },
    #[error("cannot parse the TLS certificate {}: {source}", .path.display())]
    ParseCert { path: PathBuf, source: pem::Error },
    #[error("no certificate in {}", .0.display())]
    NoCert(PathBuf),
    #[error("cannot read the TLS key {}: {source}", .path.display())]
    ReadKey { path: PathBuf, source: pem::Error },
    /// rustls refused its own default protocol versions (a build problem).
    #[error("TLS: {0}")]
    Protocols(rustls::Error),
    #[error("TLS certificate and key do not match or are unusable: {0}")]
    Unusable(rustls::Error),
}

/// A TLS acceptor offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|source| TlsError::ReadCert { path: cert.to_path_buf(), source })?
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::ParseCert { path: cert.to_path_buf(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(cert.to_path_buf()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::ReadKey { path: key.to_path_buf(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocols)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Unusable)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
