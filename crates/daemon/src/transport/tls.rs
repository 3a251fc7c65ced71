//! TLS for listeners: the server configuration from PEM files, with client certificates
//! (mutual TLS) verified against a client CA when one is configured.

use std::sync::Arc;

use ferry_io::pem::{read_certificates, read_private_key};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::config::{DaemonError, TlsFiles};

/// Builds the acceptor for `files`.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, DaemonError> {
    let config_error = |e: &dyn std::fmt::Display| DaemonError::Config(format!("TLS: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(&e))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certificates(ca).map_err(|e| config_error(&e))? {
                roots.add(cert).map_err(|e| {
                    config_error(&format!(
                        "{}: not a usable CA certificate: {e}",
                        ca.display()
                    ))
                })?;
            }
            // Clients without a certificate may still authenticate with the token.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| config_error(&e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let certs = read_certificates(&files.cert).map_err(|e| config_error(&e))?;
    let key = read_private_key(&files.key).map_err(|e| config_error(&e))?;
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| config_error(&e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The common name of a client certificate, if it is usable as a name and a directory name.
pub fn common_name(cert: &rustls::pki_types::CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let name = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    let usable = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    usable.then_some(name)
}
