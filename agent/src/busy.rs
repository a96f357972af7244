//! One operation at a time: a flag taken with [`OneAtATime::begin`] and
//! cleared when its [`Busy`] guard drops, however the operation ends. The
//! OS updater and the agent updater each hold one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The flag. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct OneAtATime(Arc<AtomicBool>);

/// Held while the operation runs; dropping it clears the flag.
#[derive(Debug)]
pub struct Busy(Arc<AtomicBool>);

impl OneAtATime {
    /// The guard, or `None` while another operation holds it.
    pub fn begin(&self) -> Option<Busy> {
        self.0.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).ok().map(|_| Busy(self.0.clone()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_at_a_time_until_the_guard_drops() {
        let flag = OneAtATime::default();
        let first = flag.begin().expect("free");
        assert!(flag.clone().begin().is_none());
        drop(first);
        assert!(flag.begin().is_some());
    }
}
