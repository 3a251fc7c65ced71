//! Reading TLS credentials from PEM files, with errors that name the file.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct PemError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

fn error(path: &Path, problem: impl ToString) -> PemError {
    PemError {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

/// Reads every certificate of a PEM file (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(path, e))?;
    if certs.is_empty() {
        return Err(error(path, "no certificate in this file"));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| error(path, e))
}
