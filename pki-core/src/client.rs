//! Client channels: to the frontend over TLS (pinned CA fingerprint,
//! server name [`wendy_identity::PKICORE_SERVER_NAME`], optional client
//! certificate), to the frontend in plaintext compat mode, and to the local
//! admin socket. Used by the admin subcommands, tests and benchmarks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};
use wendy_identity::fingerprint::Fingerprint;
use wendy_identity::tls::{Credentials, PinnedCaServerVerifier};

use crate::Error;

fn endpoint(uri: &'static str) -> Result<Endpoint, Error> {
    Endpoint::from_shared(uri)
        .map(|e| e.connect_timeout(std::time::Duration::from_secs(10)))
        .map_err(|e| Error::Internal(e.to_string()))
}

/// A TLS channel to a pki-core frontend at `address` (`host:port`),
/// pinning its CA fingerprint and presenting `credentials` if given
/// ([`wendy_net::connect`]: connect, handshake and call timeouts).
pub async fn connect_tls(address: &str, pin: Fingerprint, credentials: Option<&Credentials>) -> Result<Channel, Error> {
    let verifier = Arc::new(PinnedCaServerVerifier::new(pin, Some(wendy_identity::PKICORE_SERVER_NAME)));
    let config = Arc::new(wendy_identity::tls::client_config(verifier, credentials)?);
    let server_name =
        ServerName::try_from(wendy_identity::PKICORE_SERVER_NAME).map_err(|e| Error::Internal(e.to_string()))?;
    wendy_net::connect::tls(&host_port(address)?, config, server_name).await.map_err(|e| {
        Error::Unauthenticated(format!("connecting to pki-core: {e}: {:?}", std::error::Error::source(&e)))
    })
}

/// A plaintext channel (only for a frontend started with
/// `--insecure-plaintext`).
pub async fn connect_plain(address: &str) -> Result<Channel, Error> {
    wendy_net::connect::plaintext(&host_port(address)?)
        .await
        .map_err(|e| Error::Internal(format!("connecting to pki-core: {e}")))
}

fn host_port(address: &str) -> Result<wendy_net::addr::HostPort, Error> {
    wendy_net::addr::HostPort::parse(address, wendy_proto::contract::DEFAULT_PKICORE_PORT)
        .map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// A channel to the admin socket.
pub async fn connect_admin(socket: &Path) -> Result<Channel, Error> {
    let socket: PathBuf = socket.to_owned();
    let shown = socket.display().to_string();
    endpoint("http://admin.pkicore.local")?
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|e| {
            Error::Internal(format!(
                "cannot reach the admin socket {shown} ({e}); is `pkicore serve` running with this --data-dir, and may you open it?"
            ))
        })
}

/// Adds `authorization: Bearer <api_key>` to a request.
pub fn with_api_key<T>(message: T, api_key: &str) -> Result<tonic::Request<T>, Error> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {api_key}")
        .parse()
        .map_err(|_| Error::InvalidArgument("the API key contains characters not allowed in a header".into()))?;
    request.metadata_mut().insert(wendy_proto::contract::AUTHORIZATION_HEADER, value);
    Ok(request)
}
