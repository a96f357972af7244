//! Downloading a bundle from `artifact_url` into a staging file.
//!
//! One plain HTTP/1.1 `GET` with hyper (the HTTP stack tonic already
//! brings), over TCP or TLS (rustls with the system's CA bundle, for
//! `https`). No redirects, no retries: the URL is the operator's, and a
//! wrong one should say so. Every wait has a deadline ([`FetchPolicy`]): a
//! server that does not answer, or stops sending, fails the download
//! instead of holding the update slot forever. The body goes to a
//! [`Staging`](super::stage::Staging) file, which enforces the space limit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::stage::{StageError, Staging};

/// The system's CA bundle (Debian's `ca-certificates`), the trust for
/// `https` artifact URLs.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The most of [`SYSTEM_CA_BUNDLE`] that is read.
const MAX_CA_BUNDLE_BYTES: u64 = 4 * 1024 * 1024;

/// The longest URL accepted.
pub const MAX_URL_BYTES: usize = 4096;

/// Deadlines of one download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchPolicy {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// From the request to the response's status line and headers.
    pub response: Duration,
    /// The longest pause between two pieces of the body.
    pub stall: Duration,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self { connect: Duration::from_secs(20), response: Duration::from_secs(30), stall: Duration::from_secs(30) }
    }
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is not one this agent fetches.
    #[error("artifact_url {url:?}: {why}")]
    BadUrl {
        /// The URL as given (capped).
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// Connecting (TCP or TLS) failed or took too long.
    #[error("cannot connect to {authority}: {why}")]
    Connect {
        /// host:port.
        authority: String,
        /// Why.
        why: String,
    },
    /// The server answered with something other than 200.
    #[error("the server answered HTTP {status} for {url}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The URL.
        url: String,
    },
    /// The HTTP exchange failed.
    #[error("downloading {url}: {why}")]
    Http {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// A deadline passed.
    #[error("downloading {url}: {what} took longer than {after:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// What was waited for.
        what: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// Staging the body failed (space, size, disk).
    #[error(transparent)]
    Stage(#[from] StageError),
}

/// A URL this agent fetches: `http` or `https`, a host, a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactUrl {
    uri: http::Uri,
    https: bool,
    host: String,
    port: u16,
}

impl ArtifactUrl {
    /// Parses and checks `url`.
    pub fn parse(url: &str) -> Result<Self, FetchError> {
        let url = url.trim();
        let shown = url.split_once('?').map_or(url.to_owned(), |(base, _)| format!("{base}?…"));
        let bad = |why: &str| FetchError::BadUrl { url: cap(&shown), why: why.to_owned() };
        if url.is_empty() {
            return Err(bad("empty: give the http(s) URL of a RAUC bundle"));
        }
        if url.len() > MAX_URL_BYTES {
            return Err(bad(&format!("longer than {MAX_URL_BYTES} bytes")));
        }
        let uri: http::Uri = url.parse().map_err(|e| bad(&format!("not a URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(bad(&format!("scheme {other:?} is not supported: use http or https"))),
            None => return Err(bad("no scheme: use http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Self { uri, https, host, port })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Scheme, authority and path only: a query string often carries a
/// credential (a pre-signed URL's signature), and this form goes into logs,
/// errors and `last-install.json`.
impl std::fmt::Display for ArtifactUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.uri.path())?;
        if self.uri.query().is_some() {
            f.write_str("?…")?;
        }
        Ok(())
    }
}

/// `s`, at most 200 characters, for messages.
fn cap(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Downloads `url` into `staging`, calling `progress(received, total)` as
/// bytes arrive (`total` from `Content-Length`, if sent).
pub async fn download(
    url: &ArtifactUrl,
    staging: &mut Staging,
    policy: &FetchPolicy,
    progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Result<(), FetchError> {
    let authority = url.authority();
    let connect_err = |why: String| FetchError::Connect { authority: authority.clone(), why };
    let tcp = tokio::time::timeout(policy.connect, TcpStream::connect((url.host.as_str(), url.port)))
        .await
        .map_err(|_| connect_err(format!("no connection within {:?}", policy.connect)))?
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let request = http::Request::get(url.uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, url.authority())
        .header(http::header::USER_AGENT, format!("wendy-agent/{}", crate::VERSION))
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http { url: url.to_string(), why: e.to_string() })?;
    if url.https {
        let tls = tokio::time::timeout(policy.connect, tls_connect(url, tcp))
            .await
            .map_err(|_| connect_err(format!("no TLS handshake within {:?}", policy.connect)))??;
        exchange(url, TokioIo::new(tls), request, staging, policy, progress).await
    } else {
        exchange(url, TokioIo::new(tcp), request, staging, policy, progress).await
    }
}

async fn tls_connect(
    url: &ArtifactUrl,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, FetchError> {
    let authority = url.authority();
    let connect_err = |why: String| FetchError::Connect { authority: authority.clone(), why };
    let pem = wendy_net::safe_read::read(std::path::Path::new(SYSTEM_CA_BUNDLE), MAX_CA_BUNDLE_BYTES)
        .map_err(|e| connect_err(format!("https needs the system CA bundle: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(connect_err(format!("no CA certificates in {SYSTEM_CA_BUNDLE}")));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| connect_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| connect_err(format!("host {:?}: {e}", url.host)))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| connect_err(format!("TLS: {e}")))
}

async fn exchange<IO>(
    url: &ArtifactUrl,
    io: IO,
    request: http::Request<Empty<Bytes>>,
    staging: &mut Staging,
    policy: &FetchPolicy,
    progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Result<(), FetchError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http_err = |why: String| FetchError::Http { url: url.to_string(), why };
    let timeout = |what: &'static str, after: Duration| FetchError::Timeout { url: url.to_string(), what, after };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| http_err(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let response = tokio::time::timeout(policy.response, sender.send_request(request))
            .await
            .map_err(|_| timeout("the response", policy.response))?
            .map_err(|e| http_err(e.to_string()))?;
        let status = response.status();
        if status != http::StatusCode::OK {
            return Err(FetchError::Status { status: status.as_u16(), url: url.to_string() });
        }
        let total = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(total) = total {
            staging.expect_size(total)?;
        }
        let mut body = response.into_body();
        let mut received: u64 = 0;
        loop {
            let frame = tokio::time::timeout(policy.stall, body.frame())
                .await
                .map_err(|_| timeout("the next piece of the body", policy.stall))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| http_err(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                staging.write(&data).await?;
                received = received.saturating_add(data.len() as u64);
                progress(received, total);
            }
        }
        if let Some(total) = total {
            if received != total {
                return Err(http_err(format!("the body ended after {received} of {total} bytes")));
            }
        }
        Ok(())
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let u = ArtifactUrl::parse("http://10.0.2.2:8080/b/wendyos-qemuarm64-2.raucb").unwrap();
        assert!(!u.https);
        assert_eq!(u.authority(), "10.0.2.2:8080");
        assert_eq!(ArtifactUrl::parse("https://h/x").unwrap().port, 443);
        assert_eq!(ArtifactUrl::parse("http://[::1]/x").unwrap().authority(), "[::1]:80");
        for (bad, says) in [
            ("", "empty"),
            ("ftp://h/x", "scheme"),
            ("/just/a/path", "no scheme"),
            ("http://user:pw@h/x", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let e = ArtifactUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let signed = ArtifactUrl::parse("https://s3.example/b.raucb?X-Amz-Signature=secret").unwrap();
        assert_eq!(signed.to_string(), "https://s3.example:443/b.raucb?…");
        let e = ArtifactUrl::parse("ftp://h/b?token=secret").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
        let long = format!("http://h/{}", "a".repeat(MAX_URL_BYTES));
        assert!(ArtifactUrl::parse(&long).unwrap_err().to_string().contains("longer than"));
    }
}
