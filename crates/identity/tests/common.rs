//! Fixtures shared by the identity tests.
#![allow(dead_code)]

use time::{Duration, OffsetDateTime};
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_identity::profile::{CertificateAuthority, IssuedCertificate, LeafProfile};
use wendy_identity::role::Role;

pub const TEN_YEARS: Duration = Duration::days(3650);

pub fn ca(name: &str) -> CertificateAuthority {
    CertificateAuthority::create_with_key(
        name,
        PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap(),
        OffsetDateTime::now_utc() - Duration::days(365),
        TEN_YEARS,
    )
    .unwrap()
}

pub fn user(ca: &CertificateAuthority, role: Role) -> (PrivateKey, IssuedCertificate) {
    leaf_at(ca, &user_profile(role), OffsetDateTime::now_utc(), Duration::days(30))
}

pub fn user_profile(role: Role) -> LeafProfile {
    LeafProfile::User { organization_id: 1, user_id: "alice".into(), role }
}

pub fn device_profile() -> LeafProfile {
    LeafProfile::Device { organization_id: 1, asset_id: 42 }
}

pub fn leaf_at(
    ca: &CertificateAuthority,
    profile: &LeafProfile,
    now: OffsetDateTime,
    validity: Duration,
) -> (PrivateKey, IssuedCertificate) {
    let key = PrivateKey::generate(KeyAlgorithm::MlDsa65).unwrap();
    let issued = ca.issue(profile, &key.public_key_der(), now, validity).unwrap();
    (key, issued)
}
