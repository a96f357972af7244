//! Trust-bundle PEM parsing never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wendy_identity::bundle::TrustBundle;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = TrustBundle::from_pem(text);
    }
});
