//! `last-install.json`: what the last OS update did, on the data partition
//! so that it survives the reboot into the new slot (and a rollback).
//!
//! Written atomically (mode 0600) at each step: `installed` once RAUC has
//! written the other slot, then `booted` when that slot was marked good,
//! `rolled_back` when it was not, or `failed` when the install itself
//! failed. [`GetUpdateStatus`](super::OsUpdate) reports it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wendy_proto::agent_admin::last_install::Result as WireResult;
use wendy_proto::agent_admin::LastInstall;

/// The record's file name in the update directory.
pub const FILE: &str = "last-install.json";

/// The largest record read back; anything larger is not ours.
const MAX_BYTES: u64 = 16 * 1024;

/// The longest message kept (a RAUC error can quote a long path).
const MAX_MESSAGE: usize = 1024;

/// What became of the last install.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Written to the other slot; it boots next.
    Installed,
    /// Booted and marked good.
    Booted,
    /// Booted, never healthy; the device went back to the old slot.
    RolledBack,
    /// The install failed; the slot in use was never switched.
    Failed,
}

/// One record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// What happened.
    pub outcome: Outcome,
    /// The bundle's version, if known.
    #[serde(default)]
    pub version: String,
    /// Boot name of the slot written (`A`, `B`), if known.
    #[serde(default)]
    pub slot: String,
    /// Why, for a failure or a rollback; what, otherwise.
    #[serde(default)]
    pub message: String,
    /// When this was recorded (Unix seconds).
    pub recorded_unix: i64,
    /// Seconds to stage the bundle (download or upload).
    #[serde(default)]
    pub stage_seconds: u32,
    /// Seconds RAUC took to install it.
    #[serde(default)]
    pub install_seconds: u32,
}

impl Record {
    /// A record of `outcome` now, the message capped.
    pub fn new(outcome: Outcome, version: &str, slot: &str, message: &str) -> Self {
        let mut message = message.to_owned();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        Self {
            outcome,
            version: version.to_owned(),
            slot: slot.to_owned(),
            message,
            recorded_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
            stage_seconds: 0,
            install_seconds: 0,
        }
    }

    /// The same record with the timings of `earlier` (a later step of the
    /// same install keeps them).
    pub fn timed_like(mut self, earlier: &Record) -> Self {
        self.stage_seconds = earlier.stage_seconds;
        self.install_seconds = earlier.install_seconds;
        self
    }

    /// The wire form.
    pub fn to_wire(&self) -> LastInstall {
        let result = match self.outcome {
            Outcome::Installed => WireResult::Installed,
            Outcome::Booted => WireResult::Booted,
            Outcome::RolledBack => WireResult::RolledBack,
            Outcome::Failed => WireResult::Failed,
        };
        LastInstall {
            result: result.into(),
            version: self.version.clone(),
            slot: self.slot.clone(),
            message: self.message.clone(),
            recorded_unix: self.recorded_unix,
            stage_seconds: self.stage_seconds,
            install_seconds: self.install_seconds,
        }
    }
}

/// The record's path in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Reads the record in `dir`; `None` if there is none or it is unreadable
/// (logged: a record is a report, never a reason to stop).
pub fn load(dir: &Path) -> Option<Record> {
    let path = path(dir);
    match wendy_net::safe_read::read(&path, MAX_BYTES) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable OS update record");
                None
            }
        },
        Err(wendy_net::safe_read::ReadError::NotFound { .. }) => None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable OS update record");
            None
        }
    }
}

/// Replaces the record in `dir` (atomically, mode 0600). A failure is
/// logged and otherwise ignored: the update itself is what matters.
pub fn store(dir: &Path, record: &Record) {
    let path = path(dir);
    let result = serde_json::to_vec_pretty(record)
        .map_err(|e| e.to_string())
        .and_then(|bytes| wendy_net::atomic_write::write(&path, &bytes, Some(0o600)).map_err(|e| e.to_string()));
    match result {
        Ok(()) => {
            tracing::info!(outcome = ?record.outcome, version = %record.version, slot = %record.slot, message = %record.message, "OS update recorded")
        }
        Err(e) => tracing::warn!(file = %path.display(), error = %e, "could not record the OS update result"),
    }
}

/// At boot, once the booted slot is known: an `installed` record for the
/// other slot means the boot loader did not take (or gave up on) the new
/// slot. Records that as a rollback and returns it.
pub fn note_boot(dir: &Path, booted: &str) -> Option<Record> {
    let r = load(dir)?;
    if r.outcome != Outcome::Installed || r.slot.is_empty() || r.slot == booted {
        return None;
    }
    let rolled = Record::new(
        Outcome::RolledBack,
        &r.version,
        &r.slot,
        &format!(
            "slot {} was installed but the device booted slot {booted}: the new slot was not marked good in time, so the boot loader returned to the old one",
            r.slot
        ),
    )
    .timed_like(&r);
    store(dir, &rolled);
    Some(rolled)
}

/// After the booted slot was marked good: an `installed` record for it
/// becomes `booted`.
pub fn note_good(dir: &Path, booted: &str) {
    if let Some(r) = load(dir).filter(|r| r.outcome == Outcome::Installed && r.slot == booted) {
        store(dir, &Record::new(Outcome::Booted, &r.version, &r.slot, "booted and marked good").timed_like(&r));
    }
}

/// Whether the booted slot is the one the last install wrote and has not
/// yet been judged (a trial boot of a new slot).
pub fn is_trial_boot(dir: &Path, booted: &str) -> bool {
    load(dir).is_some_and(|r| r.outcome == Outcome::Installed && r.slot == booted)
}
