//! Reading files an attacker may have planted (the FAT config partition,
//! the state directory): regular files only, symlinks not followed, FIFOs
//! never block, and the size cap checked on the open descriptor, not on the
//! path, then enforced again while reading.
//!
//! A refused file is set aside by [`set_aside`] (renamed to
//! `<name>.rejected`), or left in place on a read-only medium, with a
//! warning naming the file and the limit.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// Suffix a refused file gets.
pub const REJECTED_SUFFIX: &str = "rejected";

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// There is no such file.
    #[error("{}: no such file", path.display())]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// The path is a symbolic link; it was not followed.
    #[error("{}: is a symbolic link (not followed)", path.display())]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// The path is not a regular file.
    #[error("{}: is a {kind}, not a regular file", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is (`FIFO`, `directory`, ...).
        kind: &'static str,
    },
    /// The file is larger than the limit.
    #[error("{}: larger than the {limit}-byte limit ({size} bytes)", path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size (at least `limit + 1` if it grew while being read).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The file is not UTF-8 ([`read_to_string`]).
    #[error("{}: is not UTF-8 text", path.display())]
    NotText {
        /// The path.
        path: PathBuf,
    },
    /// Any other I/O error.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ReadError {
    /// The path concerned.
    pub fn path(&self) -> &Path {
        match self {
            Self::NotFound { path }
            | Self::Symlink { path }
            | Self::NotRegular { path, .. }
            | Self::TooLarge { path, .. }
            | Self::NotText { path }
            | Self::Io { path, .. } => path,
        }
    }

    /// Whether the file is hostile or unusable as such (a link, not a
    /// regular file, too large) and should be set aside.
    pub fn is_hostile(&self) -> bool {
        matches!(self, Self::Symlink { .. } | Self::NotRegular { .. } | Self::TooLarge { .. })
    }
}

fn kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

/// Opens `path` as a regular file of at most `limit` bytes: `O_NOFOLLOW`,
/// `O_NONBLOCK` (a FIFO cannot block the open), `O_CLOEXEC`; then `fstat` on
/// the descriptor. Returns the file (blocking again) and its size.
pub fn open(path: &Path, limit: u64) -> Result<(File, u64), ReadError> {
    let p = || path.to_path_buf();
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => ReadError::Symlink { path: p() },
            Some(libc::ENOENT) => ReadError::NotFound { path: p() },
            _ => ReadError::Io { op: "open", path: p(), source },
        })?;
    let meta = f.metadata().map_err(|source| ReadError::Io { op: "fstat", path: p(), source })?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular { path: p(), kind: kind(meta.file_type()) });
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge { path: p(), size: meta.len(), limit });
    }
    fcntl(f.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty())).map_err(|e| ReadError::Io {
        op: "fcntl",
        path: p(),
        source: std::io::Error::from_raw_os_error(e as i32),
    })?;
    Ok((f, meta.len()))
}

/// Reads `path` whole if it is a regular file of at most `limit` bytes
/// (see [`open`]). Reads at most `limit + 1` bytes, so a file that grows
/// meanwhile is refused too.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let (f, size) = open(path, limit)?;
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    f.take(limit.saturating_add(1)).read_to_end(&mut out).map_err(|source| ReadError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?;
    if out.len() as u64 > limit {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), size: out.len() as u64, limit });
    }
    Ok(out)
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path, limit: u64) -> Result<String, ReadError> {
    String::from_utf8(read(path, limit)?).map_err(|_| ReadError::NotText { path: path.to_path_buf() })
}

/// What [`set_aside`] did with a refused file.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Renamed to this path.
    SetAside(PathBuf),
    /// Left where it is: the medium is read-only.
    LeftReadOnly,
    /// Left where it is: the rename failed for another reason.
    Left(String),
}

/// `<path>.rejected`, or `<path>.rejected-<n>` if that exists.
pub fn rejected_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_os_string();
    for n in 0u32.. {
        let mut candidate = name.clone();
        candidate.push(".");
        candidate.push(REJECTED_SUFFIX);
        if n > 0 {
            candidate.push(format!("-{n}"));
        }
        let candidate = path.with_file_name(candidate);
        if std::fs::symlink_metadata(&candidate).is_err() {
            return candidate;
        }
    }
    path.with_file_name(name)
}

/// Sets aside the file `error` refused (renames it to [`rejected_path`], or
/// leaves it on a read-only medium) and logs one warning naming the file,
/// the reason and the limit. Call it only for [`ReadError::is_hostile`].
pub fn set_aside(error: &ReadError) -> Disposition {
    let path = error.path();
    let to = rejected_path(path);
    let disposition = match std::fs::rename(path, &to) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                let _ = crate::atomic_write::sync_dir(dir);
            }
            Disposition::SetAside(to)
        }
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => Disposition::LeftReadOnly,
        Err(e) => Disposition::Left(e.to_string()),
    };
    match &disposition {
        Disposition::SetAside(to) => tracing::warn!(
            file = %path.display(),
            reason = %error,
            kept_at = %to.display(),
            "refused a file: not read, set aside"
        ),
        Disposition::LeftReadOnly => tracing::warn!(
            file = %path.display(),
            reason = %error,
            "refused a file: not read, left in place (read-only medium)"
        ),
        Disposition::Left(why) => tracing::warn!(
            file = %path.display(),
            reason = %error,
            rename_error = %why,
            "refused a file: not read, and it could not be set aside"
        ),
    }
    disposition
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn reads_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read(&p, 5).unwrap(), b"hello");
        assert_eq!(read_to_string(&p, 10).unwrap(), "hello");
        assert!(matches!(read(&p, 4), Err(ReadError::TooLarge { size: 5, limit: 4, .. })));
    }

    #[test]
    fn refuses_fifo_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let start = Instant::now();
        let e = read(&p, 1024).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(matches!(e, ReadError::NotRegular { kind: "FIFO", .. }), "{e}");
        assert!(e.is_hostile());
        assert_eq!(set_aside(&e), Disposition::SetAside(dir.path().join("fifo.rejected")));
        assert!(std::fs::symlink_metadata(&p).is_err());
    }

    #[test]
    fn refuses_symlink_and_directory_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secret");
        std::fs::write(&target, b"s").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = read(&link, 1024).unwrap_err();
        assert!(matches!(e, ReadError::Symlink { .. }), "{e}");
        assert_eq!(set_aside(&e), Disposition::SetAside(dir.path().join("link.rejected")));
        // The link itself moved; its target is untouched.
        assert_eq!(std::fs::read(&target).unwrap(), b"s");
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(read(&sub, 1024), Err(ReadError::NotRegular { kind: "directory", .. })));
        let missing = read(&dir.path().join("none"), 1).unwrap_err();
        assert!(matches!(missing, ReadError::NotFound { .. }) && !missing.is_hostile());
    }

    #[test]
    fn sparse_huge_file_is_refused_by_fstat() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let f = File::create(&p).unwrap();
        f.set_len(3 << 30).unwrap();
        let e = read(&p, 64 * 1024).unwrap_err();
        assert!(e.to_string().contains("65536-byte limit"), "{e}");
        assert_eq!(set_aside(&e), Disposition::SetAside(dir.path().join("big.rejected")));
        // A second refusal of the same name does not overwrite the first.
        File::create(&p).unwrap().set_len(10).unwrap();
        let e = read(&p, 1).unwrap_err();
        assert_eq!(set_aside(&e), Disposition::SetAside(dir.path().join("big.rejected-1")));
    }

    #[test]
    fn truncation_at_every_length_is_handled() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let text = "[device]\nname=pi\n";
        for n in 0..=text.len() {
            std::fs::write(&p, &text.as_bytes()[..n]).unwrap();
            assert_eq!(read(&p, 64).unwrap().len(), n);
        }
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_to_string(&p, 64), Err(ReadError::NotText { .. })));
    }
}
