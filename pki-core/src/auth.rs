//! Who is calling: an API key (`authorization: Bearer <key>`), or the local
//! operator on the admin socket. Each principal carries a role.

use tonic::metadata::MetadataMap;
use wendy_identity::role::Role;
use wendy_proto::contract::AUTHORIZATION_HEADER;

use crate::Error;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// API key id, or `local` for the admin socket.
    pub id: String,
    /// The caller's role.
    pub role: Role,
}

impl Principal {
    /// The local operator (admin socket): Owner.
    pub fn local() -> Self {
        Self { id: "local".into(), role: Role::Owner }
    }

    /// Refuses unless the caller has at least `required`.
    pub fn require(&self, required: Role) -> Result<(), Error> {
        if self.role.allows(required) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!("this needs role {required}, the API key has {}", self.role)))
        }
    }
}

/// The bearer secret in `metadata`, if any.
pub fn bearer(metadata: &MetadataMap) -> Result<Option<String>, Error> {
    let Some(value) = metadata.get(AUTHORIZATION_HEADER) else { return Ok(None) };
    let value = value.to_str().map_err(|_| Error::Unauthenticated("malformed authorization header".into()))?;
    let mut parts = value.trim().splitn(2, ' ');
    match (parts.next(), parts.next()) {
        (Some(scheme), Some(secret)) if scheme.eq_ignore_ascii_case("bearer") && !secret.trim().is_empty() => {
            Ok(Some(secret.trim().to_owned()))
        }
        _ => Err(Error::Unauthenticated("expected `authorization: Bearer <api key>`".into())),
    }
}

/// Failed API-key calls: counted per source address and summarised in one
/// log line per interval (never the key), and a source that keeps failing
/// is refused for a while before its key is even looked at.
pub mod throttle {
    use std::collections::HashMap;
    use std::future::Future;
    use std::net::IpAddr;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, Weak};
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant};

    use wendy_proto::contract::AUTHORIZATION_HEADER;

    use crate::net::PeerInfo;

    /// Failures a source may have within [`FAILURE_WINDOW`] before it is
    /// refused outright.
    pub const FREE_FAILURES: u32 = 10;
    /// How long a source's failures are remembered after its last one.
    pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
    /// Longest refusal period (it doubles with each failure past the free ones).
    pub const MAX_PENALTY: Duration = Duration::from_secs(60);
    /// Sources tracked at once.
    pub const MAX_TRACKED: usize = 4096;
    /// What of a refused call's request body is read (and dropped) before
    /// the refusal is sent, and for how long at most. A client still
    /// sending when the answer comes can see its stream reset instead of
    /// the refusal; a unary request is far below this.
    pub const DRAIN_LIMIT: usize = 64 * 1024;
    /// See [`DRAIN_LIMIT`].
    pub const DRAIN_TIME: Duration = Duration::from_secs(2);

    #[derive(Debug)]
    struct Entry {
        failures: u32,
        last: Instant,
    }

    #[derive(Debug, Default)]
    struct State {
        peers: Mutex<HashMap<IpAddr, Entry>>,
        failed: AtomicU64,
        throttled: AtomicU64,
    }

    impl State {
        /// How long `ip` is still refused, if it is.
        fn penalty(&self, ip: IpAddr) -> Option<Duration> {
            let peers = self.peers.lock().ok()?;
            let e = peers.get(&ip)?;
            let over = e.failures.checked_sub(FREE_FAILURES + 1)?;
            let penalty = Duration::from_secs(1u64 << over.min(6)).min(MAX_PENALTY);
            penalty.checked_sub(e.last.elapsed()).filter(|d| !d.is_zero())
        }

        fn failed(&self, ip: Option<IpAddr>) {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let (Some(ip), Ok(mut peers)) = (ip, self.peers.lock()) else { return };
            let now = Instant::now();
            if !peers.contains_key(&ip) && peers.len() >= MAX_TRACKED {
                peers.retain(|_, e| now.duration_since(e.last) < FAILURE_WINDOW);
                if peers.len() >= MAX_TRACKED {
                    return;
                }
            }
            let e = peers.entry(ip).or_insert(Entry { failures: 0, last: now });
            if now.duration_since(e.last) >= FAILURE_WINDOW {
                e.failures = 0;
            }
            e.failures = e.failures.saturating_add(1);
            e.last = now;
        }

        fn report(&self) {
            let failed = self.failed.swap(0, Ordering::Relaxed);
            let throttled = self.throttled.swap(0, Ordering::Relaxed);
            if failed + throttled == 0 {
                return;
            }
            let now = Instant::now();
            let penalised = self
                .peers
                .lock()
                .map(|p| {
                    p.values()
                        .filter(|e| e.failures > FREE_FAILURES && now.duration_since(e.last) < MAX_PENALTY)
                        .count()
                })
                .unwrap_or(0);
            tracing::warn!(
                failed,
                throttled,
                penalised_sources = penalised,
                "API-key calls refused since the last report (failed authentication; throttled sources)"
            );
        }
    }

    /// The layer; add it to the frontend server.
    #[derive(Clone, Debug)]
    pub struct AuthThrottleLayer {
        state: Arc<State>,
    }

    impl AuthThrottleLayer {
        /// A layer whose counts are logged every `interval` (needs a Tokio
        /// runtime; the reporter ends with the last layer clone).
        pub fn new(interval: Duration) -> Self {
            let state = Arc::new(State::default());
            let weak: Weak<State> = Arc::downgrade(&state);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(state) = weak.upgrade() else { return };
                    state.report();
                }
            });
            Self { state }
        }
    }

    impl<S> tower::Layer<S> for AuthThrottleLayer {
        type Service = AuthThrottle<S>;

        fn layer(&self, inner: S) -> AuthThrottle<S> {
            AuthThrottle { inner, state: Arc::clone(&self.state) }
        }
    }

    /// See [`AuthThrottleLayer`].
    #[derive(Clone, Debug)]
    pub struct AuthThrottle<S> {
        inner: S,
        state: Arc<State>,
    }

    impl<S, B, RB> tower::Service<http::Request<B>> for AuthThrottle<S>
    where
        S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
        S::Future: Send,
        B: http_body::Body + Send + Unpin + 'static,
        RB: Default + Send + 'static,
    {
        type Response = http::Response<RB>;
        type Error = S::Error;
        type Future = Pin<Box<dyn Future<Output = Result<http::Response<RB>, S::Error>> + Send>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, req: http::Request<B>) -> Self::Future {
            let keyed = req.headers().contains_key(AUTHORIZATION_HEADER);
            let ip = req.extensions().get::<PeerInfo>().and_then(|p| p.remote).map(|a| a.ip());
            let state = Arc::clone(&self.state);
            if keyed {
                if let Some(wait) = ip.and_then(|ip| state.penalty(ip)) {
                    state.throttled.fetch_add(1, Ordering::Relaxed);
                    let status = tonic::Status::resource_exhausted(format!(
                        "too many failed API-key calls from this address; retry in {} s",
                        wait.as_secs().max(1)
                    ));
                    return Box::pin(async move {
                        drain(req.into_body()).await;
                        Ok(status.into_http())
                    });
                }
            }
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            Box::pin(async move {
                let response = inner.call(req).await?;
                let unauthenticated = response.headers().get("grpc-status").is_some_and(|v| v.as_bytes() == b"16");
                if keyed && unauthenticated {
                    state.failed(ip);
                }
                Ok(response)
            })
        }
    }

    /// Reads and drops a refused call's request body, at most
    /// [`DRAIN_LIMIT`] bytes within [`DRAIN_TIME`].
    async fn drain<B: http_body::Body + Unpin>(mut body: B) {
        use http_body_util::BodyExt;
        let mut left = DRAIN_LIMIT;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                let len = frame.data_ref().map_or(0, bytes::Buf::remaining);
                left = left.saturating_sub(len);
                if left == 0 {
                    break;
                }
            }
        })
        .await;
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn penalty_starts_after_the_free_failures() {
            let s = State::default();
            let ip: IpAddr = "10.0.0.9".parse().unwrap();
            for _ in 0..FREE_FAILURES {
                s.failed(Some(ip));
            }
            assert_eq!(s.penalty(ip), None);
            s.failed(Some(ip));
            assert!(s.penalty(ip).is_some());
            assert_eq!(s.penalty("10.0.0.10".parse().unwrap()), None);
        }
    }
}
