//! The upload session table: at most `max` sessions at once, each dropped
//! (and its partial bytes aborted) after `idle` without a request.
//!
//! A session sits behind its own async mutex: one request works on it at a
//! time (a second one is refused, not queued), and a request that is
//! cancelled mid-body (the client went away) leaves the session in the
//! table at its last committed offset, to be resumed or to expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::names::RepoName;

/// The default cap on concurrent uploads.
pub const DEFAULT_MAX_SESSIONS: usize = 16;

/// The default idle time after which a session is dropped.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(10 * 60);

/// One upload.
#[derive(Debug)]
pub struct Session<W> {
    /// The repository it was started for; only that one may use it.
    pub repo: RepoName,
    /// The store's writer.
    pub writer: W,
    /// The last request on it.
    pub last_used: Instant,
}

/// A session locked for one request; `None` once finished.
pub type Held<W> = OwnedMutexGuard<Option<Session<W>>>;

type Slot<W> = Arc<AsyncMutex<Option<Session<W>>>>;

/// Why a session cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// No such session for this repository.
    #[error("no such upload session")]
    Unknown,
    /// Another request is using it.
    #[error("another request is writing to this upload session")]
    Busy,
    /// The table is full.
    #[error("too many uploads in progress (at most {0})")]
    TooMany(usize),
}

/// The session table.
#[derive(Debug)]
pub struct Sessions<W> {
    table: Mutex<HashMap<String, Slot<W>>>,
    max: usize,
    idle: Duration,
}

impl<W> Sessions<W> {
    /// An empty table.
    pub fn new(max: usize, idle: Duration) -> Self {
        Self { table: Mutex::new(HashMap::new()), max, idle }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot<W>>> {
        // A panic elsewhere cannot leave the map itself inconsistent.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions in the table.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses if the table is full (checked before a writer is opened).
    pub fn ensure_room(&self) -> Result<(), SessionError> {
        if self.len() >= self.max {
            return Err(SessionError::TooMany(self.max));
        }
        Ok(())
    }

    /// Adds a session; returns its id, or gives it back if the table is full.
    pub fn insert(&self, session: Session<W>) -> Result<String, (SessionError, Session<W>)> {
        let mut table = self.lock();
        if table.len() >= self.max {
            return Err((SessionError::TooMany(self.max), session));
        }
        let id = loop {
            let id = format!("{:032x}", rand::random::<u128>());
            if !table.contains_key(&id) {
                break id;
            }
        };
        table.insert(id.clone(), Arc::new(AsyncMutex::new(Some(session))));
        Ok(id)
    }

    /// Locks session `id` of `repo` for one request.
    pub fn hold(&self, id: &str, repo: &RepoName) -> Result<Held<W>, SessionError> {
        let slot = self.lock().get(id).cloned().ok_or(SessionError::Unknown)?;
        let held = slot.try_lock_owned().map_err(|_| SessionError::Busy)?;
        match held.as_ref() {
            Some(s) if &s.repo == repo => Ok(held),
            _ => Err(SessionError::Unknown),
        }
    }

    /// Forgets session `id` (after its writer was taken out of the guard).
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Removes the sessions idle since before `now - idle` and returns
    /// their writers, for the caller to abort.
    pub fn expire(&self, now: Instant) -> Vec<W> {
        let mut table = self.lock();
        let mut writers = Vec::new();
        table.retain(|_, slot| {
            let Ok(mut held) = slot.try_lock() else {
                return true; // in use: not idle
            };
            match held.as_ref() {
                Some(s) if now.saturating_duration_since(s.last_used) < self.idle => true,
                Some(_) => {
                    if let Some(s) = held.take() {
                        writers.push(s.writer);
                    }
                    false
                }
                None => false,
            }
        });
        writers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(repo: &str, at: Instant) -> Session<u32> {
        Session { repo: RepoName::parse(repo).unwrap(), writer: 7, last_used: at }
    }

    #[test]
    fn cap_busy_wrong_repo_and_expiry() {
        let now = Instant::now();
        let t = Sessions::new(2, Duration::from_secs(60));
        let a = t.insert(session("a", now)).unwrap();
        let _b = t.insert(session("b", now)).unwrap();
        assert_eq!(t.ensure_room(), Err(SessionError::TooMany(2)));
        assert!(matches!(t.insert(session("c", now)), Err((SessionError::TooMany(2), _))));

        let repo_a = RepoName::parse("a").unwrap();
        let held = t.hold(&a, &repo_a).unwrap();
        assert_eq!(t.hold(&a, &repo_a).err(), Some(SessionError::Busy));
        // In use: never expired; the idle one is.
        assert_eq!(t.expire(now + Duration::from_secs(3600)), vec![7]);
        assert_eq!(t.len(), 1);
        drop(held);
        assert_eq!(t.hold(&a, &RepoName::parse("b").unwrap()).err(), Some(SessionError::Unknown));
        assert_eq!(t.hold("nope", &repo_a).err(), Some(SessionError::Unknown));

        assert!(t.expire(now + Duration::from_secs(59)).is_empty());
        assert_eq!(t.expire(now + Duration::from_secs(61)), vec![7]);
        assert!(t.is_empty());
        assert!(t.ensure_room().is_ok());
    }
}
