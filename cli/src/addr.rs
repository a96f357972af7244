//! `HOST[:PORT]` addresses for pki-core and devices: the one grammar in
//! [`wendy_net::addr`].

pub use wendy_net::addr::HostPort;
