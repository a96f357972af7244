//! Criterion benchmarks: keygen, sign, verify, certificate issue and chain
//! verify, for ML-DSA-65 and ECDSA P-256.
//!
//! Run: `cargo bench -p wendy-identity --bench crypto`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rustls_pki_types::UnixTime;
use time::{Duration, OffsetDateTime};
use wendy_identity::bundle::TrustBundle;
use wendy_identity::key::{KeyAlgorithm, PrivateKey};
use wendy_identity::profile::{CertificateAuthority, LeafProfile};
use wendy_identity::role::Role;
use wendy_identity::verify::{CertificateInfo, Purpose, TrustStore};

const ALGORITHMS: [KeyAlgorithm; 2] = [KeyAlgorithm::MlDsa65, KeyAlgorithm::EcdsaP256];

fn profile() -> LeafProfile {
    LeafProfile::User { organization_id: 1, user_id: "bench".into(), role: Role::Admin }
}

fn benches(c: &mut Criterion) {
    let message = [0x5au8; 256];
    for alg in ALGORITHMS {
        let name = alg.name();
        c.bench_with_input(BenchmarkId::new("keygen", name), &alg, |b, alg| {
            b.iter(|| PrivateKey::generate(*alg).unwrap())
        });

        let key = PrivateKey::generate(alg).unwrap();
        c.bench_with_input(BenchmarkId::new("sign", name), &key, |b, key| b.iter(|| key.sign(&message).unwrap()));

        // Verification of a signature, via the CA's certificate signature.
        let ca = CertificateAuthority::create_with_key(
            "Bench CA",
            PrivateKey::generate(alg).unwrap(),
            OffsetDateTime::now_utc(),
            Duration::days(3650),
        )
        .unwrap();
        let leaf_key = PrivateKey::generate(alg).unwrap();
        let spki = leaf_key.public_key_der();
        c.bench_function(&format!("issue/{name}"), |b| {
            b.iter(|| ca.issue(&profile(), &spki, OffsetDateTime::now_utc(), Duration::days(30)).unwrap())
        });

        let leaf = ca.issue(&profile(), &spki, OffsetDateTime::now_utc(), Duration::days(30)).unwrap();
        let store = TrustStore::new(TrustBundle::from_pem(&ca.certificate_pem()).unwrap());
        c.bench_function(&format!("chain_verify/{name}"), |b| {
            b.iter(|| store.verify(&leaf.der, &[], Purpose::ClientAuth, UnixTime::now()).unwrap())
        });

        let info = CertificateInfo::from_der(&leaf.der).unwrap();
        let sig = leaf_key.sign(&message).unwrap();
        c.bench_function(&format!("verify/{name}"), |b| {
            b.iter(|| {
                use aws_lc_rs::signature::{UnparsedPublicKey, VerificationAlgorithm};
                let alg: &dyn VerificationAlgorithm = match alg {
                    KeyAlgorithm::EcdsaP256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
                    _ => &aws_lc_rs::signature::ML_DSA_65,
                };
                UnparsedPublicKey::new(alg, &info.public_key_bits).verify(&message, &sig).unwrap()
            })
        });
    }
}

criterion_group! {
    name = crypto;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = benches
}
criterion_main!(crypto);
