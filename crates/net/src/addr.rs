//! `HOST[:PORT]` addresses for pki-core and devices: one grammar for the
//! CLI's arguments and the agent's `cloud_host`.

use std::fmt;
use std::net::IpAddr;

/// A host and port. IPv6 literals are written in brackets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct HostPort {
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Why an address did not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {reason} (expected HOST[:PORT] or [IPv6]:PORT)")]
pub struct AddrError {
    input: String,
    reason: &'static str,
}

impl HostPort {
    /// Parses `HOST`, `HOST:PORT`, `IPv6`, `[IPv6]` or `[IPv6]:PORT`,
    /// using `default_port` when none is given.
    pub fn parse(input: &str, default_port: u16) -> Result<Self, AddrError> {
        let s = input.trim();
        let err = |reason| AddrError { input: s.chars().take(100).collect(), reason };
        if s.is_empty() {
            return Err(err("empty"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| err("missing ']'"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| err("junk after ']'"))?),
            };
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("not an IPv6 address in brackets"));
            }
            (h, port)
        } else if s.matches(':').count() > 1 {
            if s.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("bare IPv6 addresses cannot carry a port; use [IPv6]:PORT"));
            }
            (s, None)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        if host.is_empty() {
            return Err(err("empty host"));
        }
        if host.parse::<IpAddr>().is_err()
            && !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return Err(err("host has characters no host name has"));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(err("port must be 1-65535")),
                Ok(n) => n,
            },
        };
        Ok(Self { host: host.to_owned(), port })
    }

    /// The same host with another port.
    pub fn with_port(&self, port: u16) -> Self {
        Self { host: self.host.clone(), port }
    }

    /// An `http://` URI for tonic (TLS, when used, is done by our connector).
    pub fn uri(&self) -> String {
        format!("http://{self}")
    }

    /// Whether the host part looks like an address (IP literal, dotted or
    /// `localhost`) rather than a bare device name.
    pub fn looks_like_address(input: &str) -> bool {
        let s = input.trim();
        s.contains(':') || s.contains('.') || s.starts_with('[') || s.eq_ignore_ascii_case("localhost")
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        assert_eq!(HostPort::parse("10.0.0.1:7", 1).unwrap(), HostPort { host: "10.0.0.1".into(), port: 7 });
        assert_eq!(HostPort::parse("dev.local", 50051).unwrap().port, 50051);
        assert_eq!(HostPort::parse("[::1]:9", 1).unwrap(), HostPort { host: "::1".into(), port: 9 });
        assert_eq!(HostPort::parse("fe80::1", 5).unwrap(), HostPort { host: "fe80::1".into(), port: 5 });
        assert_eq!(HostPort::parse("[::1]", 5).unwrap().to_string(), "[::1]:5");
        assert_eq!(HostPort::parse(" localhost:80 ", 1).unwrap().to_string(), "localhost:80");
    }

    #[test]
    fn rejects_bad() {
        for bad in ["", ":80", "h:0", "h:99999", "h:x", "[::1", "[zz]:1", "a b:1", "[::1]x", "1::2::3"] {
            assert!(HostPort::parse(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn address_heuristic() {
        assert!(HostPort::looks_like_address("10.0.0.1"));
        assert!(HostPort::looks_like_address("localhost"));
        assert!(HostPort::looks_like_address("pi:50051"));
        assert!(!HostPort::looks_like_address("kitchen-pi"));
    }
}
