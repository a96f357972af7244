//! Atomic file replacement: a temp file in the same directory, write,
//! fsync, rename over the target, fsync the directory. A crash at any point
//! leaves the old file or the new one, never a partial one; a temp file a
//! crash left behind ends in [`TEMP_SUFFIX`] and can be removed at start.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Suffix of temp files; anything `*.<TEMP_SUFFIX>` is an interrupted write.
pub const TEMP_SUFFIX: &str = "wendy-tmp";

/// A step of [`write_with`], for crash-point tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Half of the bytes are in the temp file.
    MidTempWrite,
    /// The temp file is complete and fsynced.
    AfterTempFsync,
    /// The temp file has replaced the target.
    AfterRename,
    /// The directory is fsynced: the write is durable.
    AfterDirFsync,
}

/// A failed write; the target is unchanged (or, after the rename, replaced
/// but perhaps not yet durable).
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
#[non_exhaustive]
pub struct WriteError {
    /// What was being done.
    pub op: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// The temp file a write of `path` uses.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{TEMP_SUFFIX}", std::process::id()));
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` atomically. With `Some(mode)` the file gets
/// exactly that mode (not filtered by the umask); `None` leaves the default
/// (for FAT, which has no modes).
pub fn write(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), WriteError> {
    write_with(path, bytes, mode, &mut |_| {})
}

/// [`write`], calling `step` between the steps (crash points).
pub fn write_with(path: &Path, bytes: &[u8], mode: Option<u32>, step: &mut dyn FnMut(Step)) -> Result<(), WriteError> {
    let tmp = temp_path(path);
    fn err<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> WriteError + 'a {
        move |source| WriteError { op, path: p.to_path_buf(), source }
    }
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if let Some(mode) = mode {
            options.mode(mode);
        }
        let mut f = options.open(&tmp).map_err(err("create", &tmp))?;
        if let Some(mode) = mode {
            // The mode given to open() is filtered by the umask and applies
            // only at creation; set it exactly.
            f.set_permissions(fs::Permissions::from_mode(mode)).map_err(err("chmod", &tmp))?;
        }
        let (first, second) = bytes.split_at(bytes.len() / 2);
        f.write_all(first).map_err(err("write", &tmp))?;
        step(Step::MidTempWrite);
        f.write_all(second).map_err(err("write", &tmp))?;
        f.sync_all().map_err(err("fsync", &tmp))?;
        drop(f);
        step(Step::AfterTempFsync);
        fs::rename(&tmp, path).map_err(err("rename", &tmp))?;
        step(Step::AfterRename);
        sync_parent(path)?;
        step(Step::AfterDirFsync);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs the directory holding `path`.
pub fn sync_parent(path: &Path) -> Result<(), WriteError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// fsyncs a directory so renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| WriteError {
        op: "fsync directory",
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_exact_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"old").unwrap();
        let mut steps = Vec::new();
        write_with(&p, b"new contents", Some(0o600), &mut |s| steps.push(s)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new contents");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(steps, [Step::MidTempWrite, Step::AfterTempFsync, Step::AfterRename, Step::AfterDirFsync]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failure_leaves_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let e = write(&dir.path().join("missing/f"), b"x", None).unwrap_err();
        assert_eq!(e.op, "create");
    }
}
