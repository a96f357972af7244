//! Per-peer state for the listener: live connections and a token bucket of
//! new connections, in a table whose size is bounded.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::limits::Limits;
use crate::refusals::Refusal;

/// The unit a per-peer cap applies to: an IPv4 address, or an IPv6 /64
/// (what one LAN host can freely choose addresses from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PeerKey(IpAddr);

impl PeerKey {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Self(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
                }
            },
        }
    }
}

#[derive(Debug)]
struct Entry {
    live: usize,
    handshaking: usize,
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub(crate) struct PeerTable {
    limits: Limits,
    peers: Mutex<HashMap<PeerKey, Entry>>,
}

/// One live connection counted against its peer; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct PeerSlot {
    table: Arc<PeerTable>,
    key: PeerKey,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Ok(mut peers) = self.table.peers.lock() {
            if let Some(e) = peers.get_mut(&self.key) {
                e.live = e.live.saturating_sub(1);
            }
        }
    }
}

impl PeerSlot {
    /// Counts one handshake (or preface read) in progress against the peer.
    pub(crate) fn begin_handshake(&self) -> Result<HandshakeSlot, Refusal> {
        let mut peers = self.table.peers.lock().map_err(|_| Refusal::PeerTableFull)?;
        let e = peers.get_mut(&self.key).ok_or(Refusal::PeerTableFull)?;
        if e.handshaking >= self.table.limits.max_handshakes_per_peer {
            return Err(Refusal::HandshakesBusy);
        }
        e.handshaking += 1;
        Ok(HandshakeSlot { table: Arc::clone(&self.table), key: self.key })
    }
}

/// One handshake in progress counted against its peer.
#[derive(Debug)]
pub(crate) struct HandshakeSlot {
    table: Arc<PeerTable>,
    key: PeerKey,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if let Ok(mut peers) = self.table.peers.lock() {
            if let Some(e) = peers.get_mut(&self.key) {
                e.handshaking = e.handshaking.saturating_sub(1);
            }
        }
    }
}

impl PeerTable {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self { limits, peers: Mutex::new(HashMap::new()) })
    }

    /// Admits one new connection from `ip`, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<PeerSlot, Refusal> {
        let key = PeerKey::of(ip);
        let now = Instant::now();
        let l = &self.limits;
        let burst = f64::from(l.peer_connection_burst.max(1));
        let rate = f64::from(l.peer_connections_per_sec.max(1));
        let mut peers = self.peers.lock().map_err(|_| Refusal::PeerTableFull)?;
        if !peers.contains_key(&key) && peers.len() >= l.max_tracked_peers {
            // Forget peers with no connection whose bucket has refilled.
            peers.retain(|_, e| {
                let refilled = e.tokens + now.duration_since(e.last).as_secs_f64() * rate >= burst;
                e.live > 0 || !refilled
            });
            if peers.len() >= l.max_tracked_peers {
                return Err(Refusal::PeerTableFull);
            }
        }
        let e = peers.entry(key).or_insert(Entry { live: 0, handshaking: 0, tokens: burst, last: now });
        e.tokens = (e.tokens + now.duration_since(e.last).as_secs_f64() * rate).min(burst);
        e.last = now;
        if e.live >= l.max_connections_per_peer {
            return Err(Refusal::PeerOverCapacity);
        }
        if e.tokens < 1.0 {
            return Err(Refusal::PeerRateLimited);
        }
        e.tokens -= 1.0;
        e.live += 1;
        drop(peers);
        Ok(PeerSlot { table: Arc::clone(self), key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections_per_peer: 2,
            max_handshakes_per_peer: 1,
            peer_connection_burst: 3,
            peer_connections_per_sec: 1,
            max_tracked_peers: 2,
            ..Limits::default()
        }
    }

    #[test]
    fn per_peer_cap_and_release() {
        let t = PeerTable::new(limits());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = t.admit(ip).unwrap();
        let _b = t.admit(ip).unwrap();
        assert_eq!(t.admit(ip).unwrap_err(), Refusal::PeerOverCapacity);
        drop(a);
        let _c = t.admit(ip).unwrap();
        let h = _c.begin_handshake().unwrap();
        assert_eq!(_c.begin_handshake().unwrap_err(), Refusal::HandshakesBusy);
        drop(h);
        // The burst of 3 is spent.
        drop(_c);
        assert_eq!(t.admit(ip).unwrap_err(), Refusal::PeerRateLimited);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        assert_eq!(PeerKey::of(a), PeerKey::of(b));
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(PeerKey::of(m), PeerKey::of("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn table_is_bounded() {
        let t = PeerTable::new(limits());
        let _a = t.admit("10.0.0.1".parse().unwrap()).unwrap();
        let _b = t.admit("10.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(t.admit("10.0.0.3".parse().unwrap()).unwrap_err(), Refusal::PeerTableFull);
    }
}
