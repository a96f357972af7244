//! Refusals counted, then summarised: one log line per interval per
//! listener, never one per peer, so a flood cannot push real events out of
//! journald's rate limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a connection was refused or dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The listener's connection cap was reached.
    OverCapacity,
    /// The peer's connection cap was reached.
    PeerOverCapacity,
    /// The peer opened connections faster than its rate.
    PeerRateLimited,
    /// The peer table was full of recent peers.
    PeerTableFull,
    /// Too many handshakes in progress; closed before the ClientHello.
    HandshakesBusy,
    /// The TLS handshake failed.
    HandshakeFailed,
    /// The TLS handshake took too long.
    HandshakeTimeout,
    /// The HTTP/2 preface did not arrive in time.
    PrefaceTimeout,
    /// The first bytes were not the HTTP/2 preface.
    NotHttp2,
    /// `accept()` failed (EMFILE, ENFILE, ENOBUFS, ...).
    AcceptError,
}

const KINDS: [(Refusal, &str); 10] = [
    (Refusal::OverCapacity, "over_capacity"),
    (Refusal::PeerOverCapacity, "peer_over_capacity"),
    (Refusal::PeerRateLimited, "peer_rate_limited"),
    (Refusal::PeerTableFull, "peer_table_full"),
    (Refusal::HandshakesBusy, "handshakes_busy"),
    (Refusal::HandshakeFailed, "handshake_failed"),
    (Refusal::HandshakeTimeout, "handshake_timeout"),
    (Refusal::PrefaceTimeout, "preface_timeout"),
    (Refusal::NotHttp2, "not_http2"),
    (Refusal::AcceptError, "accept_error"),
];

fn index(r: Refusal) -> usize {
    KINDS.iter().position(|(k, _)| *k == r).unwrap_or(0)
}

/// Counters for one listener, reported by [`Refusals::report`].
#[derive(Debug)]
pub struct Refusals {
    name: &'static str,
    counts: [AtomicU64; 10],
    sample: Mutex<Option<String>>,
}

impl Refusals {
    /// Counters for the listener called `name` (used in the log line).
    pub fn new(name: &'static str) -> Self {
        Self { name, counts: Default::default(), sample: Mutex::new(None) }
    }

    /// Counts one refusal.
    pub fn count(&self, r: Refusal) {
        self.counts[index(r)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refusal and keeps `detail` (an error message, never a peer
    /// secret) as the interval's sample if there is none yet.
    pub fn count_with(&self, r: Refusal, detail: impl FnOnce() -> String) {
        self.count(r);
        if let Ok(mut s) = self.sample.lock() {
            if s.is_none() {
                *s = Some(detail());
            }
        }
    }

    /// The counts since the last call, reset to zero.
    pub fn take(&self) -> Vec<(&'static str, u64)> {
        KINDS
            .iter()
            .zip(&self.counts)
            .map(|((_, name), c)| (*name, c.swap(0, Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Logs one line with the counts since the last report, if any.
    pub fn report(&self) {
        let counts = self.take();
        let sample = self.sample.lock().ok().and_then(|mut s| s.take());
        if counts.is_empty() {
            return;
        }
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        let detail = counts.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" ");
        tracing::warn!(
            listener = self.name,
            total,
            counts = %detail,
            sample = sample.as_deref().unwrap_or(""),
            "refused or dropped connections since the last report"
        );
    }
}

/// A log budget for events that a peer can cause (a refused client
/// certificate): each distinct reason is logged once per `interval`, at most
/// `burst` reasons per interval; repeats are counted and reported as one
/// number when the next interval starts.
#[derive(Debug)]
pub struct LogBudget {
    interval: Duration,
    burst: usize,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    started: Instant,
    seen: Vec<String>,
    suppressed: u64,
}

impl LogBudget {
    /// At most `burst` distinct reasons per `interval`.
    pub fn new(burst: usize, interval: Duration) -> Self {
        Self {
            interval,
            burst,
            state: Mutex::new(BudgetState { started: Instant::now(), seen: Vec::new(), suppressed: 0 }),
        }
    }

    /// Whether a line about `reason` may be logged now. When an interval
    /// with suppressed lines has ended, also returns how many were
    /// suppressed, so the caller can say so.
    pub fn allow(&self, reason: &str) -> (bool, u64) {
        let Ok(mut s) = self.state.lock() else { return (false, 0) };
        let now = Instant::now();
        let mut suppressed = 0;
        if now.duration_since(s.started) >= self.interval {
            suppressed = s.suppressed;
            *s = BudgetState { started: now, seen: Vec::new(), suppressed: 0 };
        }
        if s.seen.len() < self.burst && !s.seen.iter().any(|r| r == reason) {
            s.seen.push(reason.to_owned());
            (true, suppressed)
        } else {
            s.suppressed += 1;
            (false, suppressed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reset_on_take() {
        let r = Refusals::new("t");
        r.count(Refusal::OverCapacity);
        r.count(Refusal::OverCapacity);
        r.count_with(Refusal::HandshakeFailed, || "bad".into());
        assert_eq!(r.take(), vec![("over_capacity", 2), ("handshake_failed", 1)]);
        assert!(r.take().is_empty());
    }

    #[test]
    fn budget_suppresses_after_burst() {
        let b = LogBudget::new(2, Duration::from_secs(3600));
        assert!(b.allow("a").0);
        assert!(!b.allow("a").0);
        assert!(b.allow("b").0);
        assert!(!b.allow("c").0);
    }
}
