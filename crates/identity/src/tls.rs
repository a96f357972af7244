//! rustls configurations: TLS 1.3 only, hybrid X25519MLKEM768 preferred,
//! ML-DSA signature schemes (0x0904-0x0906) plus ECDSA P-256.
//!
//! Verifiers:
//! - [`WendyClientVerifier`]: the agent's and pki-core's client-certificate
//!   check, with the WendyOS rollover semantics and live CRL/bundle updates;
//! - [`PinnedCaServerVerifier`]: clients of pki-core pin its CA fingerprint;
//! - [`BundleServerVerifier`]: the CLI checks a device against its CA bundle.

use std::sync::{Arc, Mutex, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::bundle::TrustBundle;
use crate::crl::VerifiedCrl;
use crate::fingerprint::Fingerprint;
use crate::key::PrivateKey;
use crate::verify::{CertificateInfo, Purpose, TrustStore, VerifyError};
use crate::Error;

/// The ALPN protocol every WendyOS endpoint speaks (gRPC over HTTP/2).
pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider: aws-lc-rs, key exchange groups in preference order
/// X25519MLKEM768 first.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate chain and its key: what an endpoint presents.
pub struct Credentials {
    /// Leaf first, then intermediates/CA.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKey,
}

impl Credentials {
    /// Builds credentials from the PEMs in `provisioning.json`. An empty
    /// `chain_pem` means the device has no usable identity: that is
    /// [`Error::EmptyChain`], which says the device may need re-provisioning.
    pub fn from_pems(key_pem: &str, cert_pem: &str, chain_pem: &str) -> Result<Self, Error> {
        if chain_pem.trim().is_empty() {
            return Err(Error::EmptyChain);
        }
        let key = PrivateKey::from_pem(key_pem)?;
        let mut chain = crate::pem::certificates(cert_pem)?;
        let leaf = crate::verify::CertificateInfo::from_der(&chain[0])?;
        if leaf.public_key_der != key.public_key_der() {
            return Err(Error::Key("the private key does not match the certificate".into()));
        }
        for ca in crate::pem::certificates(chain_pem)? {
            if !chain.contains(&ca) {
                chain.push(ca);
            }
        }
        Ok(Self { chain, key })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("chain_len", &self.chain.len()).finish_non_exhaustive()
    }
}

/// A TLS 1.3 server config presenting `credentials` and checking clients
/// with `client_verifier`.
pub fn server_config(
    credentials: &Credentials,
    client_verifier: Arc<dyn ClientCertVerifier>,
) -> Result<ServerConfig, Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(credentials.chain.clone(), credentials.key.to_rustls())
        .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A TLS 1.3 client config that checks the server with `server_verifier`
/// and presents `credentials` if given.
pub fn client_config(
    server_verifier: Arc<dyn ServerCertVerifier>,
    credentials: Option<&Credentials>,
) -> Result<ClientConfig, Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(server_verifier);
    let mut config = match credentials {
        Some(c) => {
            builder.with_client_auth_cert(c.chain.clone(), c.key.to_rustls()).map_err(|e| Error::Tls(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

fn to_rustls_error(e: &VerifyError) -> rustls::Error {
    let cert_error = match e {
        VerifyError::Expired { .. } => CertificateError::Expired,
        VerifyError::NotYetValid { .. } => CertificateError::NotValidYet,
        VerifyError::Revoked { .. } => CertificateError::Revoked,
        VerifyError::MissingClientAuth | VerifyError::MissingServerAuth | VerifyError::MissingCodeSigning => {
            CertificateError::InvalidPurpose
        }
        VerifyError::BadSignature { .. } => CertificateError::BadSignature,
        VerifyError::WrongName(_) => CertificateError::NotValidForName,
        VerifyError::IssuerNotFound | VerifyError::PinMismatch(_) => CertificateError::UnknownIssuer,
        VerifyError::Invalid(_) => CertificateError::BadEncoding,
        // Keep our message: "names X, not the expected Y" says what to do.
        VerifyError::UnexpectedSubject { .. } => CertificateError::Other(rustls::OtherError(Arc::new(e.clone()))),
    };
    rustls::Error::InvalidCertificate(cert_error)
}

/// The handshake-signature half of every verifier here: TLS 1.2 refused,
/// TLS 1.3 signatures checked by aws-lc-rs over [`supported_schemes`].
macro_rules! tls13_only_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            supported_schemes()
        }
    };
}

/// A TLS 1.3 handshake signature checked by aws-lc-rs over
/// [`supported_schemes`]: the signature half of every WendyOS verifier, for
/// custom verifiers outside this module too.
pub fn tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
    )
}

/// The signature schemes every WendyOS verifier offers (ML-DSA and ECDSA
/// among them), for custom verifiers outside this module.
pub fn supported_schemes() -> Vec<SignatureScheme> {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes()
}

/// Called with every refused client certificate, so the daemon can log the
/// exact reason (rustls only sends the peer a generic alert).
pub type RejectionHook = Arc<dyn Fn(&VerifyError) + Send + Sync>;

/// Client-certificate verification with the WendyOS semantics. Its trust
/// bundle and CRLs can be replaced while servers keep running: a revocation
/// takes effect at the next handshake.
pub struct WendyClientVerifier {
    store: RwLock<Arc<TrustStore>>,
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    on_reject: Option<RejectionHook>,
}

impl std::fmt::Debug for WendyClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WendyClientVerifier").field("mandatory", &self.mandatory).finish_non_exhaustive()
    }
}

impl WendyClientVerifier {
    /// A verifier over `bundle`. With `mandatory`, clients without a
    /// certificate are refused; otherwise they may connect anonymously.
    pub fn new(bundle: TrustBundle, mandatory: bool) -> Self {
        let hints = bundle.cas().iter().map(|c| DistinguishedName::from(c.info.subject_der.clone())).collect();
        Self { store: RwLock::new(Arc::new(TrustStore::new(bundle))), mandatory, hints, on_reject: None }
    }

    /// Sets a hook that sees every refusal.
    pub fn with_rejection_hook(mut self, hook: RejectionHook) -> Self {
        self.on_reject = Some(hook);
        self
    }

    /// Replaces the CRLs; they must verify under this verifier's bundle.
    pub fn set_crls(&self, crls: &[VerifiedCrl]) -> Result<(), Error> {
        let mut guard = self.store.write().map_err(|_| Error::Tls("verifier lock poisoned".into()))?;
        let mut next = (**guard).clone();
        next.set_crls(crls)?;
        *guard = Arc::new(next);
        Ok(())
    }

    /// Replaces the trust bundle (keeps no CRLs: set them again after).
    pub fn set_bundle(&self, bundle: TrustBundle) -> Result<(), Error> {
        let mut guard = self.store.write().map_err(|_| Error::Tls("verifier lock poisoned".into()))?;
        *guard = Arc::new(TrustStore::new(bundle));
        Ok(())
    }

    /// The current trust store.
    pub fn store(&self) -> Arc<TrustStore> {
        self.store.read().map(|g| Arc::clone(&g)).unwrap_or_default()
    }
}

impl ClientCertVerifier for WendyClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.store().verify(end_entity, intermediates, Purpose::ClientAuth, now) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(e) => {
                if let Some(hook) = &self.on_reject {
                    hook(&e);
                }
                Err(to_rustls_error(&e))
            }
        }
    }

    tls13_only_signature_checks!();
}

/// Verifies a server whose CA the client pins by fingerprint (like ssh's
/// known_hosts). The server must send its CA in its chain; the leaf must
/// chain to it, have serverAuth, and be valid for `server_name` if set.
#[derive(Debug)]
pub struct PinnedCaServerVerifier {
    pins: Vec<Fingerprint>,
    server_name: Option<String>,
}

impl PinnedCaServerVerifier {
    /// Pins `pin`; checks the leaf names `server_name` if given.
    pub fn new(pin: Fingerprint, server_name: Option<&str>) -> Self {
        Self::any_of(vec![pin], server_name)
    }

    /// Pins each of `pins` (the CAs of a trust bundle): a server chaining to
    /// any one of them is accepted.
    pub fn any_of(pins: Vec<Fingerprint>, server_name: Option<&str>) -> Self {
        Self { pins, server_name: server_name.map(str::to_owned) }
    }

    /// The CA in `intermediates` matching a pin, as a one-CA bundle.
    pub fn pinned_ca(&self, intermediates: &[CertificateDer<'_>]) -> Result<TrustBundle, VerifyError> {
        let ca = intermediates.iter().find(|c| self.pins.contains(&Fingerprint::of_der(c))).ok_or_else(|| {
            VerifyError::PinMismatch(self.pins.iter().map(ToString::to_string).collect::<Vec<_>>().join(" or "))
        })?;
        let mut bundle = TrustBundle::default();
        bundle.add(ca.clone().into_owned()).map_err(|e| VerifyError::Invalid(e.to_string()))?;
        Ok(bundle)
    }
}

impl ServerCertVerifier for PinnedCaServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let check = || -> Result<(), VerifyError> {
            let store = TrustStore::new(self.pinned_ca(intermediates)?);
            store.verify(end_entity, &[], Purpose::ServerAuth, now)?;
            if let Some(name) = &self.server_name {
                let cert =
                    webpki::EndEntityCert::try_from(end_entity).map_err(|e| VerifyError::Invalid(format!("{e:?}")))?;
                let sn = ServerName::try_from(name.as_str()).map_err(|_| VerifyError::WrongName(name.clone()))?;
                cert.verify_is_valid_for_subject_name(&sn).map_err(|_| VerifyError::WrongName(name.clone()))?;
            }
            Ok(())
        };
        check().map(|()| ServerCertVerified::assertion()).map_err(|e| to_rustls_error(&e))
    }

    tls13_only_signature_checks!();
}

/// Verifies a device's server certificate against a CA bundle, with the
/// rollover semantics and serverAuth, without a host-name check (devices are
/// reached by mDNS address; their certificates name the asset, not a host).
#[derive(Debug)]
pub struct BundleServerVerifier {
    store: TrustStore,
    expected_cn: Option<String>,
}

impl BundleServerVerifier {
    /// A verifier over `bundle`.
    pub fn new(bundle: TrustBundle) -> Self {
        Self { store: TrustStore::new(bundle), expected_cn: None }
    }

    /// Also requires the leaf's common name to be `cn` (a device whose
    /// asset the client knows: `sh/wendy/<org>/<asset>`).
    pub fn expecting_common_name(mut self, cn: String) -> Self {
        self.expected_cn = Some(cn);
        self
    }
}

impl ServerCertVerifier for BundleServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.store.verify(end_entity, intermediates, Purpose::ServerAuth, now).map_err(|e| to_rustls_error(&e))?;
        if let Some(expected) = &self.expected_cn {
            let info = CertificateInfo::from_der(end_entity)
                .map_err(|e| to_rustls_error(&VerifyError::Invalid(e.to_string())))?;
            if info.common_name.as_deref() != Some(expected.as_str()) {
                let found = info.common_name.unwrap_or_default();
                return Err(to_rustls_error(&VerifyError::UnexpectedSubject { found, expected: expected.clone() }));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    tls13_only_signature_checks!();
}

/// A verifier that records the server's chain and then refuses, so the
/// connection carries nothing after the ClientHello. Used to learn a
/// server's CA before deciding to trust it (the CLI's trust on first use).
#[derive(Debug, Default)]
pub struct CapturingVerifier {
    chain: Mutex<Option<Vec<CertificateDer<'static>>>>,
}

impl CapturingVerifier {
    /// The captured chain, leaf first.
    pub fn chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.chain.lock().ok().and_then(|g| g.clone())
    }
}

impl ServerCertVerifier for CapturingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        if let Ok(mut g) = self.chain.lock() {
            *g = Some(chain);
        }
        Err(rustls::Error::General("certificate captured for the trust decision".into()))
    }

    tls13_only_signature_checks!();
}
