//! The quota: bytes are accepted only while the data partition stays above
//! its reserve. [`SpaceCheck`] is consulted before an upload starts (with
//! the declared size when the client gives one) and before every piece of
//! a body is written, so the refusal comes before the disk fills.
//!
//! A refusal is HTTP 507 Insufficient Storage with code `DENIED` and a
//! message naming the bytes needed and available; the upload is aborted
//! (no partial bytes stay) and the registry keeps serving.

use std::path::PathBuf;

/// How many bytes the registry may still write.
pub trait SpaceCheck: Send + Sync + 'static {
    /// Free bytes on the data partition minus the reserve (0 when below).
    fn available(&self) -> std::io::Result<u64>;
}

/// Why bytes are refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// Writing `needed` bytes would take the partition below its reserve.
    #[error("not enough space on the device: {needed} bytes needed, {available} available above the reserve")]
    NoSpace {
        /// Bytes asked for.
        needed: u64,
        /// Bytes available above the reserve.
        available: u64,
    },
    /// The free space cannot be read.
    #[error("cannot read the free space: {0}")]
    Io(#[from] std::io::Error),
}

/// Refuses unless `needed` bytes fit above the reserve.
pub fn ensure(space: &dyn SpaceCheck, needed: u64) -> Result<(), QuotaError> {
    let available = space.available()?;
    if needed > available {
        return Err(QuotaError::NoSpace { needed, available });
    }
    Ok(())
}

/// The real check: `statvfs` on a directory of the data partition.
#[derive(Clone, Debug)]
pub struct DataPartition {
    /// A directory on the partition (containerd's root).
    pub dir: PathBuf,
    /// Bytes that must stay free.
    pub reserve: u64,
}

impl SpaceCheck for DataPartition {
    fn available(&self) -> std::io::Result<u64> {
        let st = nix::sys::statvfs::statvfs(&self.dir).map_err(std::io::Error::from)?;
        #[allow(clippy::useless_conversion)] // the field widths differ between targets
        let free = u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
        Ok(free.saturating_sub(self.reserve))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_partition_subtracts_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let all = DataPartition { dir: dir.path().into(), reserve: 0 }.available().unwrap();
        let reserved = DataPartition { dir: dir.path().into(), reserve: u64::MAX }.available().unwrap();
        assert!(all > 0);
        assert_eq!(reserved, 0);
        let space = DataPartition { dir: dir.path().into(), reserve: u64::MAX };
        assert!(matches!(ensure(&space, 1), Err(QuotaError::NoSpace { needed: 1, available: 0 })));
        assert!(ensure(&space, 0).is_ok());
    }
}
