//! CRL parsing and signature checks never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wendy_identity::bundle::TrustBundle;
use wendy_identity::crl::VerifiedCrl;
use wendy_identity::key::KeyAlgorithm;
use wendy_identity::profile::CertificateAuthority;

fn bundle() -> &'static TrustBundle {
    static BUNDLE: OnceLock<TrustBundle> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let ca = CertificateAuthority::create("Fuzz CA", KeyAlgorithm::MlDsa44, time::Duration::days(365))
            .expect("CA");
        TrustBundle::from_pem(&ca.certificate_pem()).expect("bundle")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = VerifiedCrl::from_der(data, bundle());
});
