//! The staging file: where a bundle lands on the data partition before RAUC
//! installs it, never in a root slot.
//!
//! Free space is checked before the first byte ([`Staging::create`],
//! [`Staging::expect_size`]) and on every write: the partition keeps
//! [`UpdatePolicy::reserve`](super::UpdatePolicy) free for the agent's state
//! and the apps. The bytes go to `incoming.raucb.part` (mode 0600), which is
//! removed if anything fails (its `Drop`); [`Staging::finish`] fsyncs and
//! renames it to `bundle.raucb`, which [`Staged`]'s `Drop` removes after
//! the install. Leftovers of a crash are removed at the next start
//! ([`clean`]).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// The file being written.
const PART: &str = "incoming.raucb.part";
/// The complete bundle, handed to RAUC.
const BUNDLE: &str = "bundle.raucb";

/// Why staging failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// Not enough free space on the data partition.
    #[error(
        "not enough space on the data partition for the bundle: it needs {needed} bytes plus a reserve of {reserve} \
         bytes, {available} bytes are free"
    )]
    NoSpace {
        /// The bundle's size (or what had arrived when space ran out).
        needed: u64,
        /// The reserve kept free.
        reserve: u64,
        /// Free bytes before staging.
        available: u64,
    },
    /// More bytes arrived than announced.
    #[error("the bundle is longer than the {expected} bytes announced")]
    TooLong {
        /// The announced size.
        expected: u64,
    },
    /// Fewer bytes arrived than announced.
    #[error("the bundle ended after {received} of the {expected} bytes announced")]
    TooShort {
        /// Bytes received.
        received: u64,
        /// The announced size.
        expected: u64,
    },
    /// The file system failed.
    #[error("staging the bundle in {}: {source}", dir.display())]
    Io {
        /// The staging directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Removes what an interrupted update left in `dir`.
pub fn clean(dir: &Path) {
    for name in [PART, BUNDLE] {
        let path = dir.join(name);
        if std::fs::remove_file(&path).is_ok() {
            tracing::warn!(file = %path.display(), "removed a bundle an interrupted OS update left behind");
        }
    }
}

/// Free bytes for an unprivileged writer on the file system of `dir`.
pub fn available(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// A bundle being written.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    file: Option<tokio::fs::File>,
    written: u64,
    expected: Option<u64>,
    available: u64,
    reserve: u64,
    hasher: Sha256,
}

impl Staging {
    /// Opens a new staging file in `dir` (created 0700 if missing), after
    /// checking that more than `reserve` bytes are free.
    pub async fn create(dir: &Path, reserve: u64) -> Result<Self, StageError> {
        let io = |source| StageError::Io { dir: dir.to_owned(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        clean(dir);
        let available = available(dir).map_err(io)?;
        if available <= reserve {
            return Err(StageError::NoSpace { needed: 1, reserve, available });
        }
        let file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.join(PART)).map_err(io)?;
        Ok(Self {
            dir: dir.to_owned(),
            file: Some(tokio::fs::File::from_std(file)),
            written: 0,
            expected: None,
            available,
            reserve,
            hasher: Sha256::new(),
        })
    }

    /// The bundle will be `size` bytes: refused now if that does not fit.
    pub fn expect_size(&mut self, size: u64) -> Result<(), StageError> {
        if size.saturating_add(self.reserve) > self.available {
            return Err(StageError::NoSpace { needed: size, reserve: self.reserve, available: self.available });
        }
        self.expected = Some(size);
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `data`.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StageError> {
        let total = self.written.saturating_add(data.len() as u64);
        if let Some(expected) = self.expected.filter(|e| total > *e) {
            return Err(StageError::TooLong { expected });
        }
        if total.saturating_add(self.reserve) > self.available {
            return Err(StageError::NoSpace { needed: total, reserve: self.reserve, available: self.available });
        }
        let dir = self.dir.clone();
        let file = self.file.as_mut().ok_or_else(|| StageError::Io {
            dir: dir.clone(),
            source: std::io::Error::other("the staging file is closed"),
        })?;
        file.write_all(data).await.map_err(|source| StageError::Io { dir, source })?;
        self.hasher.update(data);
        self.written = total;
        Ok(())
    }

    /// Completes the file: size checked, fsynced, renamed to `bundle.raucb`.
    pub async fn finish(mut self) -> Result<Staged, StageError> {
        if let Some(expected) = self.expected.filter(|e| *e != self.written) {
            return Err(StageError::TooShort { received: self.written, expected });
        }
        let io = |source| StageError::Io { dir: self.dir.clone(), source };
        if let Some(mut file) = self.file.take() {
            file.flush().await.map_err(io)?;
            file.sync_all().await.map_err(io)?;
        }
        let path = self.dir.join(BUNDLE);
        std::fs::rename(self.dir.join(PART), &path).map_err(io)?;
        let _ = wendy_net::atomic_write::sync_dir(&self.dir);
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        Ok(Staged { path, size: self.written, sha256 })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Unfinished (an error, a dropped stream): nothing partial stays.
        // After `finish` the file is renamed and this finds nothing.
        let _ = std::fs::remove_file(self.dir.join(PART));
    }
}

/// A complete bundle on the data partition; removed when dropped.
#[derive(Debug)]
pub struct Staged {
    /// Where it is.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bundle_is_staged_with_its_digest() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("update");
        let mut s = Staging::create(&dir, 0).await.unwrap();
        s.expect_size(6).unwrap();
        s.write(b"abc").await.unwrap();
        s.write(b"def").await.unwrap();
        let staged = s.finish().await.unwrap();
        assert_eq!(staged.size, 6);
        assert_eq!(staged.sha256, hex::encode(Sha256::digest(b"abcdef")));
        assert_eq!(std::fs::read(&staged.path).unwrap(), b"abcdef");
        let path = staged.path.clone();
        drop(staged);
        assert!(!path.exists(), "the staged bundle is removed after use");
    }

    #[tokio::test]
    async fn no_partial_file_is_left_behind() {
        let t = tempfile::tempdir().unwrap();
        let mut s = Staging::create(t.path(), 0).await.unwrap();
        s.expect_size(2).unwrap();
        assert!(matches!(s.write(b"abc").await, Err(StageError::TooLong { expected: 2 })));
        drop(s);
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);

        let mut s = Staging::create(t.path(), 0).await.unwrap();
        s.expect_size(5).unwrap();
        s.write(b"abc").await.unwrap();
        assert!(matches!(s.finish().await, Err(StageError::TooShort { received: 3, expected: 5 })));
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn space_is_checked_before_the_first_byte() {
        let t = tempfile::tempdir().unwrap();
        let free = available(t.path()).unwrap();
        // A reserve larger than the free space: refused at once.
        let e = Staging::create(t.path(), free.saturating_add(1 << 30)).await.unwrap_err();
        assert!(e.to_string().contains("not enough space"), "{e}");
        // A bundle larger than the free space: refused before any write.
        let mut s = Staging::create(t.path(), 0).await.unwrap();
        let e = s.expect_size(free.saturating_add(1 << 30)).unwrap_err();
        assert!(matches!(e, StageError::NoSpace { .. }), "{e}");
        assert_eq!(s.written(), 0);
    }

    #[tokio::test]
    async fn leftovers_are_cleaned() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join(PART), b"x").unwrap();
        std::fs::write(t.path().join(BUNDLE), b"x").unwrap();
        clean(t.path());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }
}
