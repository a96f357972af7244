//! PEM input with limits: every PEM the library accepts goes through here.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

use crate::Error;

/// The largest PEM document accepted (a bundle of many ML-DSA-87 CAs fits).
pub const MAX_PEM_BYTES: usize = 1024 * 1024;

/// The most certificates one bundle or chain may hold.
pub const MAX_CERTS: usize = 64;

pub(crate) fn check_size(input: &[u8]) -> Result<(), Error> {
    if input.len() > MAX_PEM_BYTES {
        return Err(Error::TooLarge { actual: input.len(), limit: MAX_PEM_BYTES });
    }
    Ok(())
}

/// Every `CERTIFICATE` block in `pem`, in order. Errors if there are none,
/// if the PEM is malformed, or if there are more than [`MAX_CERTS`].
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    check_size(pem.as_bytes())?;
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = item.map_err(|e| Error::Pem(e.to_string()))?;
        if out.len() == MAX_CERTS {
            return Err(Error::Pem(format!("more than {MAX_CERTS} certificates")));
        }
        out.push(cert);
    }
    if out.is_empty() {
        return Err(Error::Pem("no CERTIFICATE block".into()));
    }
    Ok(out)
}

/// Every `X509 CRL` block in `pem`. An empty input gives an empty list.
pub fn crls(pem: &str) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    check_size(pem.as_bytes())?;
    CertificateRevocationListDer::pem_slice_iter(pem.as_bytes())
        .map(|item| item.map_err(|e| Error::Pem(e.to_string())))
        .collect()
}

/// Encodes DER as PEM with the given label.
pub fn encode(label: &str, der: &[u8]) -> String {
    ::pem::encode_config(
        &::pem::Pem::new(label, der.to_vec()),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

/// Encodes a list of certificates as one PEM document.
pub fn encode_certificates<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    certs.into_iter().map(|c| encode("CERTIFICATE", c.as_ref())).collect()
}
