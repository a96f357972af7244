//! Certificate DER parsing and verification never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::{CertificateDer, UnixTime};
use wendy_identity::bundle::TrustBundle;
use wendy_identity::verify::{CertificateInfo, Purpose, TrustStore};

fuzz_target!(|data: &[u8]| {
    let _ = CertificateInfo::from_der(data);
    let store = TrustStore::new(TrustBundle::default());
    let _ = store.verify(&CertificateDer::from(data), &[], Purpose::ClientAuth, UnixTime::now());
});
