//! TLS configuration from PEM files: the coordinator's certificate and key
//! ([`server_config`]) and the CA a client or worker trusts
//! ([`client_config`]). Files are read and checked here, so a wrong path or
//! a file of the wrong kind is reported with its name at startup rather than
//! as a handshake failure later.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS file that could not be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("failed to read TLS {what} file {}", path.display())]
    Read {
        /// What the file should hold ("certificate", "private key", "CA certificate").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM section of the expected kind, or a broken one.
    #[error("TLS {what} file {} holds no usable PEM {what}: {reason}", path.display())]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// The coordinator's TLS settings: the certificate chain in `cert_pem` and
/// its private key in `key_pem` (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert_pem: &Path, key_pem: &Path) -> Result<ServerTlsConfig, TlsError> {
    let cert = read_certificates(cert_pem, "certificate")?;
    let key = read("private key", key_pem)?;
    if let Err(e) = PrivateKeyDer::from_pem_slice(&key) {
        // The parser's own message may quote the file; for a key, say only
        // which way it failed.
        let reason = match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY` section"
            }
            _ => "a malformed PEM section",
        };
        return Err(TlsError::Pem {
            what: "private key",
            path: key_pem.to_owned(),
            reason: reason.to_owned(),
        });
    }
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
}

/// A client's TLS settings trusting the CA certificate(s) in `ca_pem` (for
/// a coordinator whose certificate is self-signed or from a private CA).
/// `domain` overrides the name the server certificate must carry (by
/// default the address's host).
pub fn client_config(ca_pem: &Path, domain: Option<&str>) -> Result<ClientTlsConfig, TlsError> {
    let ca = read_certificates(ca_pem, "CA certificate")?;
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    Ok(match domain {
        Some(domain) => config.domain_name(domain),
        None => config,
    })
}

/// Reads `path` and checks it holds at least one well-formed certificate.
fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let pem = read(what, path)?;
    let mut count = 0usize;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        if let Err(e) = cert {
            return Err(TlsError::Pem {
                what,
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
        count += 1;
    }
    if count == 0 {
        return Err(TlsError::Pem {
            what,
            path: path.to_owned(),
            reason: "no `BEGIN CERTIFICATE` section".to_owned(),
        });
    }
    Ok(pem)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}
