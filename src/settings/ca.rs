//! CA files (`--ca-file`, `ca_file:`): read with a size cap, regular files only, every
//! certificate checked as a trust anchor.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// Why a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaFileError {
    /// The file could not be read.
    #[error("cannot read CA file {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    /// The file holds no certificate.
    #[error("CA file {path} holds no PEM certificate")]
    Empty { path: String },
    /// A device, a pipe or a directory.
    #[error("CA file {path} is not a regular file (a PEM file of CA certificates is expected)")]
    NotAFile { path: String },
    /// Larger than any bundle of CA certificates.
    #[error("CA file {path} is {bytes} bytes; a CA file is at most 1 MiB (all public roots take about 200 KiB)")]
    TooLarge { path: String, bytes: u64 },
    /// A certificate in it is not usable as a trust anchor.
    #[error("CA file {path}: {reason}")]
    NotACa { path: String, reason: String },
}

/// Largest CA file read: a bundle of every public root is about 200 KiB.
pub const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// Reads every certificate of a PEM file (`--ca-file`, `ca_file:`): a regular file of at most
/// `MAX_CA_FILE_BYTES` (a device or a pipe could be endless).
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    use std::io::Read as _;
    let shown = path.display().to_string();
    let unreadable = |source| CaFileError::Unreadable {
        path: shown.clone(),
        source,
    };
    // Looked at before it is opened: opening a named pipe blocks until someone writes to it.
    if !std::fs::metadata(path).map_err(unreadable)?.is_file() {
        return Err(CaFileError::NotAFile { path: shown });
    }
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(CaFileError::NotAFile { path: shown });
    }
    if metadata.len() > MAX_CA_FILE_BYTES {
        return Err(CaFileError::TooLarge {
            path: shown,
            bytes: metadata.len(),
        });
    }
    let mut bytes = Vec::new();
    // Bounded again while reading: the file may grow after the check.
    file.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(CaFileError::TooLarge {
            path: shown,
            bytes: bytes.len() as u64,
        });
    }
    let certs = pem_certificates(&bytes);
    if certs.is_empty() {
        return Err(CaFileError::Empty { path: shown });
    }
    for der in &certs {
        RootCertStore::empty()
            .add(der.clone())
            .map_err(|e| CaFileError::NotACa {
                path: shown.clone(),
                reason: format!("not a usable CA certificate ({e})"),
            })?;
    }
    Ok(certs)
}

pub fn pem_certificates(bytes: &[u8]) -> Vec<CertificateDer<'static>> {
    let mut reader = bytes;
    rustls_pemfile::certs(&mut reader)
        .filter_map(Result::ok)
        .collect()
}
