//! Receiving an uploaded agent binary: the chunks go to one staging file in
//! the agent's state directory (the data partition), hashed as they come;
//! `control.update` ends the upload and names the SHA-256 it must have.
//!
//! Free space is checked before the first byte and on every write (the data
//! reserve stays free), the size is capped, every message must come within
//! the stall limit, and the staging file is removed on every failure
//! ([`Staged`]'s and the writer's `Drop`) and at the next start ([`clean`]).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tonic::Status;

use super::{Limits, Message};

/// The request field that carries the expected digest, as errors name it.
pub const SHA256_FIELD: &str = "control.update.sha256";

/// Why an upload was refused; the staging file is gone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The stream failed (the caller left, a transport error).
    #[error("the upload stream failed: {}", .0.message())]
    Stream(Status),
    /// No message within the stall limit.
    #[error("no upload message arrived within {0:?}")]
    Stalled(Duration),
    /// The stream ended before `control.update`.
    #[error("the upload ended without control.update: send the chunks, then control.update with {SHA256_FIELD}")]
    MissingControl,
    /// A message with neither `chunk` nor `control.update`.
    #[error("an upload message has neither chunk nor control.update")]
    EmptyMessage,
    /// `control.update` came before any byte.
    #[error("control.update arrived before any chunk: the binary is empty")]
    NoBytes,
    /// The digest field is not 64 hex digits.
    #[error("{SHA256_FIELD} must be 64 hex digits (the SHA-256 of the whole binary), got {got:?}")]
    BadDigest {
        /// What was sent (at most 80 characters of it).
        got: String,
    },
    /// The bytes do not hash to the digest sent.
    #[error("{SHA256_FIELD} is {expected}, but the {size} bytes received hash to {actual}; nothing was installed")]
    Mismatch {
        /// The digest sent.
        expected: String,
        /// The digest of the bytes.
        actual: String,
        /// Bytes received.
        size: u64,
    },
    /// The binary is larger than the cap.
    #[error("the binary is larger than the {max} bytes an agent update may have")]
    TooLarge {
        /// The cap.
        max: u64,
    },
    /// Not enough free space on the data partition.
    #[error(
        "not enough space on the data partition: {needed} bytes plus a reserve of {reserve} bytes are needed, \
         {available} bytes are free"
    )]
    NoSpace {
        /// Bytes written when space ran out.
        needed: u64,
        /// The reserve kept free.
        reserve: u64,
        /// Free bytes before the upload.
        available: u64,
    },
    /// The file system failed.
    #[error("staging the binary at {}: {source}", path.display())]
    Io {
        /// The staging file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Removes a staging file a crash left behind.
pub fn clean(staging: &Path) {
    if std::fs::remove_file(staging).is_ok() {
        tracing::warn!(file = %staging.display(), "removed an agent upload an interrupted update left behind");
    }
}

/// Free bytes for an unprivileged writer on the file system of `dir`.
fn available(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// A complete, closed and fsynced upload whose digest matched; removed when
/// dropped unless [`Staged::keep`] says it was moved.
#[derive(Debug)]
pub struct Staged {
    /// The staging file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
    kept: bool,
}

impl Staged {
    /// The file was renamed into place: nothing to remove.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The staging file while bytes arrive; removed when dropped unfinished.
struct Writer {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    written: u64,
    hasher: Sha256,
    available: u64,
    limits: Limits,
}

impl Writer {
    async fn create(path: &Path, limits: &Limits) -> Result<Self, UploadError> {
        let io = |source| UploadError::Io { path: path.to_owned(), source };
        let dir = path.parent().ok_or_else(|| io(std::io::Error::other("no parent directory")))?;
        std::fs::DirBuilder::new().recursive(true).create(dir).map_err(io)?;
        let available = available(dir).map_err(io)?;
        if available <= limits.reserve {
            return Err(UploadError::NoSpace { needed: 1, reserve: limits.reserve, available });
        }
        // Owner-executable, for the `--version` check; 0755 once installed.
        let file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o700).open(path).map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            file: Some(tokio::fs::File::from_std(file)),
            written: 0,
            hasher: Sha256::new(),
            available,
            limits: limits.clone(),
        })
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), UploadError> {
        let total = self.written.saturating_add(data.len() as u64);
        if total > self.limits.max_bytes {
            return Err(UploadError::TooLarge { max: self.limits.max_bytes });
        }
        if total.saturating_add(self.limits.reserve) > self.available {
            return Err(UploadError::NoSpace {
                needed: total,
                reserve: self.limits.reserve,
                available: self.available,
            });
        }
        let io = |source| UploadError::Io { path: self.path.clone(), source };
        let file = self.file.as_mut().ok_or_else(|| io(std::io::Error::other("the staging file is closed")))?;
        file.write_all(data).await.map_err(io)?;
        self.hasher.update(data);
        self.written = total;
        Ok(())
    }

    /// Closes the file (fsynced) and checks `expected` against the bytes.
    async fn finish(mut self, expected: &str) -> Result<Staged, UploadError> {
        let io = |source| UploadError::Io { path: self.path.clone(), source };
        if let Some(mut file) = self.file.take() {
            file.flush().await.map_err(io)?;
            file.sync_all().await.map_err(io)?;
            // Dropped here: a file open for writing cannot be executed.
        }
        let staged = Staged {
            path: std::mem::take(&mut self.path),
            size: self.written,
            sha256: hex::encode(std::mem::take(&mut self.hasher).finalize()),
            kept: false,
        };
        if staged.sha256 != expected {
            return Err(UploadError::Mismatch {
                expected: expected.to_owned(),
                actual: staged.sha256.clone(),
                size: staged.size,
            });
        }
        Ok(staged)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Unfinished (an error, a dropped stream): nothing partial stays.
        // After `finish` the path is empty and the file is [`Staged`]'s.
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The expected digest from `control.update.sha256`: 64 hex digits,
/// lowercased.
pub fn parse_digest(sent: &str) -> Result<String, UploadError> {
    let digest = sent.trim().to_ascii_lowercase();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(UploadError::BadDigest { got: sent.chars().take(80).collect() });
    }
    Ok(digest)
}

/// The next message within `stall`, or `None` at the end of the stream.
async fn next<S>(upload: &mut S, stall: Duration) -> Result<Option<Message>, UploadError>
where
    S: Stream<Item = Result<Message, Status>> + Unpin,
{
    match tokio::time::timeout(stall, upload.next()).await {
        Err(_) => Err(UploadError::Stalled(stall)),
        Ok(None) => Ok(None),
        Ok(Some(Err(status))) => Err(UploadError::Stream(status)),
        Ok(Some(Ok(message))) => Ok(Some(message)),
    }
}

/// Receives the chunks into `staging` until `control.update`, whose digest
/// the bytes must have. Whatever follows `control.update` is not read.
pub async fn receive<S>(mut upload: S, staging: &Path, limits: &Limits) -> Result<Staged, UploadError>
where
    S: Stream<Item = Result<Message, Status>> + Unpin,
{
    let mut writer = Writer::create(staging, limits).await?;
    loop {
        match next(&mut upload, limits.stall).await? {
            Some(Message::Chunk(data)) => writer.write(&data).await?,
            Some(Message::Update { sha256 }) => {
                let expected = parse_digest(&sha256)?;
                if writer.written == 0 {
                    return Err(UploadError::NoBytes);
                }
                return writer.finish(&expected).await;
            }
            Some(Message::Empty) => return Err(UploadError::EmptyMessage),
            None => return Err(UploadError::MissingControl),
        }
    }
}
