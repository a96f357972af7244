//! CSR parsing and proof-of-possession checks never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wendy_identity::csr::VerifiedCsr;

fuzz_target!(|data: &[u8]| {
    let _ = VerifiedCsr::from_der(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = VerifiedCsr::from_pem(text);
    }
});
