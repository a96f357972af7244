//! gRPC channels: plaintext, and TLS through the shared connector
//! ([`wendy_net::connect`], its timeouts) so that we control verification
//! (pinned pki-core CA, device CA bundle, TOFU capture).

use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Channel, Uri};
use wendy_identity::tls::CapturingVerifier;

use crate::addr::HostPort;

pub use wendy_net::connect::{describe, dial_error, plaintext, DialError, CONNECT_TIMEOUT};

/// The fixed server name the CLI sends to devices. Devices are verified
/// against the CA bundle without a host-name check.
pub const DEVICE_SERVER_NAME: &str = "device.wendy.internal";

/// A TLS channel with `config`, sending `server_name` as SNI.
pub async fn tls(addr: &HostPort, config: ClientConfig, server_name: &str) -> Result<Channel, tonic::transport::Error> {
    let server_name = ServerName::try_from(server_name.to_owned())
        .unwrap_or_else(|_| ServerName::try_from("wendy.invalid").expect("constant is a valid DNS name"));
    wendy_net::connect::tls(addr, Arc::new(config), server_name).await
}

/// Connects once to `addr` with a [`CapturingVerifier`] and returns the
/// chain the server presented, leaf first.
pub async fn capture_chain(addr: &HostPort, server_name: &str) -> Result<Vec<CertificateDer<'static>>, DialError> {
    let verifier = Arc::new(CapturingVerifier::default());
    let config = wendy_identity::tls::client_config(verifier.clone(), None)
        .map_err(|e| DialError::Tls(std::io::Error::other(e.to_string())))?;
    let mut connector = wendy_net::connect::TlsConnector::new(
        Arc::new(config),
        ServerName::try_from(server_name.to_owned()).map_err(|_| DialError::BadUri)?,
    );
    let uri: Uri = addr.uri().parse().map_err(|_| DialError::BadUri)?;
    let result = tower::Service::call(&mut connector, uri).await;
    match (result, verifier.chain()) {
        (_, Some(chain)) => Ok(chain),
        (Err(e), None) => Err(e),
        (Ok(_), None) => Err(DialError::Tls(std::io::Error::other("server presented no certificate"))),
    }
}
