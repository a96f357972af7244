//! `wendy discover`: browse mDNS for `_wendyos._udp` with a pure-Rust
//! client (no avahi-daemon needed on the developer's machine).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use wendy_proto::contract::{MDNS_SERVICE_TYPE, TXT_DISPLAYNAME, TXT_ID, TXT_NAME, TXT_TLS};

use crate::addr::HostPort;
use crate::error::CliError;

/// A device seen on mDNS.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Found {
    /// The DNS-SD instance name.
    pub instance: String,
    /// TXT `name`, else the instance name.
    pub name: String,
    /// TXT `displayname`.
    pub displayname: Option<String>,
    /// TXT `id`.
    pub id: Option<String>,
    /// The advertised host name.
    pub hostname: String,
    /// Addresses, IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// The advertised port (the mTLS port when `tls`).
    pub port: u16,
    /// TXT `tls=true`: the port is mTLS.
    pub tls: bool,
}

impl Found {
    /// The agent's base (plaintext) port: the advertised port, or one
    /// below it when the advertisement is mTLS.
    pub fn base_port(&self) -> u16 {
        if self.tls {
            self.port.saturating_sub(1)
        } else {
            self.port
        }
    }

    /// The address to dial at the base port, preferring IPv4.
    pub fn base_addr(&self) -> Option<HostPort> {
        self.addresses.first().map(|ip| HostPort { host: ip.to_string(), port: self.base_port() })
    }

    /// Whether `query` names this device (TXT name, display name, id or
    /// instance, case-insensitive).
    pub fn matches(&self, query: &str) -> bool {
        let q = query.trim_end_matches('.');
        [Some(&self.name), self.displayname.as_ref(), self.id.as_ref(), Some(&self.instance)]
            .into_iter()
            .flatten()
            .any(|v| v.eq_ignore_ascii_case(q))
    }

    fn from_info(info: &ServiceInfo) -> Self {
        let fullname = info.get_fullname();
        let suffix = format!(".{}", service_domain());
        let instance = fullname.strip_suffix(&suffix).unwrap_or(fullname).to_owned();
        let txt = |k: &str| info.get_property_val_str(k).map(clean).filter(|v| !v.is_empty());
        let mut addresses: Vec<IpAddr> = info.get_addresses().iter().copied().collect();
        addresses.sort_by_key(|a| (a.is_ipv6(), *a));
        Self {
            name: txt(TXT_NAME).unwrap_or_else(|| clean(&instance)),
            displayname: txt(TXT_DISPLAYNAME),
            id: txt(TXT_ID),
            tls: info.get_property_val_str(TXT_TLS).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
            hostname: clean(info.get_hostname()),
            port: info.get_port(),
            instance: clean(&instance),
            addresses,
        }
    }
}

/// Strips control characters from advertised strings before printing.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(255).collect()
}

/// `_wendyos._udp.local.`
pub fn service_domain() -> String {
    format!("{MDNS_SERVICE_TYPE}.local.")
}

/// Browses for `timeout`, or until `stop` says a device is the one wanted.
pub fn browse(timeout: Duration, stop: impl Fn(&Found) -> bool) -> Result<Vec<Found>, CliError> {
    let daemon = ServiceDaemon::new().map_err(|e| CliError::Mdns(e.to_string()))?;
    // Loopback too: a device (or test) on this machine is still a device.
    let _ = daemon.enable_interface(IfKind::LoopbackV4);
    let rx = daemon.browse(&service_domain()).map_err(|e| CliError::Mdns(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    while let Ok(event) = rx.recv_deadline(deadline) {
        match event {
            ServiceEvent::ServiceResolved(info) => {
                let f = Found::from_info(&info);
                let done = stop(&f);
                found.insert(info.get_fullname().to_owned(), f);
                if done {
                    break;
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                found.remove(&fullname);
            }
            _ => {}
        }
    }
    let _ = daemon.stop_browse(&service_domain());
    let _ = daemon.shutdown();
    Ok(found.into_values().filter(|f| !f.addresses.is_empty()).collect())
}

/// Runs [`browse`] off the async runtime.
pub async fn browse_async(
    timeout: Duration,
    stop: impl Fn(&Found) -> bool + Send + 'static,
) -> Result<Vec<Found>, CliError> {
    tokio::task::spawn_blocking(move || browse(timeout, stop))
        .await
        .map_err(|e| CliError::Mdns(format!("browser task failed: {e}")))?
}

/// The `discover` report.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct DiscoverReport(pub Vec<Found>);

impl fmt::Display for DiscoverReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "no WendyOS devices found");
        }
        writeln!(f, "{:<24} {:<30} {:>5}  {:<5} ID", "NAME", "ADDRESSES", "PORT", "TLS")?;
        for (i, d) in self.0.iter().enumerate() {
            let addrs: Vec<String> = d.addresses.iter().map(ToString::to_string).collect();
            write!(
                f,
                "{:<24} {:<30} {:>5}  {:<5} {}",
                d.name,
                addrs.join(","),
                d.port,
                d.tls,
                d.id.as_deref().unwrap_or("-")
            )?;
            if i + 1 < self.0.len() {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(props: &[(&str, &str)], port: u16) -> ServiceInfo {
        ServiceInfo::new(&service_domain(), "kitchen-pi", "kitchen.local.", "10.0.0.9", port, props).unwrap()
    }

    #[test]
    fn parses_txt_and_tls() {
        let f = Found::from_info(&info(&[("id", "abc"), ("name", "pi"), ("tls", "true")], 50052));
        assert!(f.tls);
        assert_eq!(f.name, "pi");
        assert_eq!(f.id.as_deref(), Some("abc"));
        assert_eq!(f.base_port(), 50051);
        assert_eq!(f.base_addr().unwrap().to_string(), "10.0.0.9:50051");
        assert!(f.matches("PI") && f.matches("abc") && f.matches("kitchen-pi"));
    }

    #[test]
    fn missing_tls_means_plaintext_and_name_falls_back() {
        let f = Found::from_info(&info(&[], 50051));
        assert!(!f.tls);
        assert_eq!(f.name, "kitchen-pi");
        assert_eq!(f.base_port(), 50051);
        let f = Found::from_info(&info(&[("tls", "false")], 50051));
        assert!(!f.tls);
    }

    #[test]
    fn json_shape() {
        let f = Found::from_info(&info(&[("tls", "true")], 50052));
        let v = serde_json::to_value(DiscoverReport(vec![f])).unwrap();
        assert_eq!(v[0]["tls"], true);
        assert_eq!(v[0]["port"], 50052);
        assert_eq!(v[0]["addresses"][0], "10.0.0.9");
    }
}
