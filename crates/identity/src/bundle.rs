//! Trust bundles: every CA a verifier trusts. Several CAs may share one
//! subject DN (CA key rollover); lookups return all of them.

use rustls_pki_types::CertificateDer;

use crate::fingerprint::Fingerprint;
use crate::verify::CertificateInfo;
use crate::Error;

/// One CA in a bundle.
#[derive(Clone, Debug)]
pub struct TrustedCa {
    /// The CA certificate.
    pub certificate: CertificateDer<'static>,
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
    /// Its parsed fields.
    pub info: CertificateInfo,
}

/// An ordered set of trusted CA certificates.
#[derive(Clone, Debug, Default)]
pub struct TrustBundle {
    cas: Vec<TrustedCa>,
}

impl TrustBundle {
    /// Parses a PEM bundle. Every certificate must be a CA; duplicates (same
    /// fingerprint) are kept once.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let mut bundle = Self::default();
        for der in crate::pem::certificates(pem)? {
            bundle.add(der)?;
        }
        Ok(bundle)
    }

    /// Adds one CA certificate.
    pub fn add(&mut self, certificate: CertificateDer<'static>) -> Result<(), Error> {
        let info = CertificateInfo::from_der(&certificate)?;
        if !info.is_ca {
            return Err(Error::Certificate(format!(
                "{:?} is not a CA certificate and cannot be trusted as one",
                info.subject
            )));
        }
        let fingerprint = Fingerprint::of_der(&certificate);
        if !self.cas.iter().any(|c| c.fingerprint == fingerprint) {
            self.cas.push(TrustedCa { certificate, fingerprint, info });
        }
        Ok(())
    }

    /// Every CA, in bundle order.
    pub fn cas(&self) -> &[TrustedCa] {
        &self.cas
    }

    /// Whether the bundle is empty.
    pub fn is_empty(&self) -> bool {
        self.cas.is_empty()
    }

    /// The CAs whose subject DN equals `issuer_dn_der` (the raw DER of a
    /// certificate's issuer), in bundle order.
    pub fn cas_with_subject<'a>(&'a self, issuer_dn_der: &'a [u8]) -> impl Iterator<Item = &'a TrustedCa> + 'a {
        self.cas.iter().filter(move |c| c.info.subject_der == issuer_dn_der)
    }

    /// The CA with this fingerprint, if present.
    pub fn by_fingerprint(&self, fingerprint: &Fingerprint) -> Option<&TrustedCa> {
        self.cas.iter().find(|c| &c.fingerprint == fingerprint)
    }

    /// The bundle as PEM.
    pub fn to_pem(&self) -> String {
        crate::pem::encode_certificates(self.cas.iter().map(|c| &c.certificate))
    }
}
