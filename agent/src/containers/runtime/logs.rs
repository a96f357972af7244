//! App output: the per-app log file containerd's shim writes, and a stream
//! of its lines.
//!
//! The task's stdout and stderr are both given as the same `file://` URI
//! (see the runtime's module docs for why files rather than fifos). The
//! shim opens the file in append mode and copies both streams into it, so
//! lines from stdout and stderr interleave in the order the shim copied
//! them; a line written in several pieces by one stream can be split by
//! the other stream's output.
//!
//! [`lines`] follows the file by polling ([`POLL_INTERVAL`]): an app's
//! output is small and a poll costs one `read` at EOF, so the complexity
//! of inotify is not worth it. A line longer than [`MAX_LINE`] arrives in
//! pieces of that size. If the file shrinks (truncated or replaced by a
//! new run), reading starts again at its beginning.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How often [`lines`] looks for new output when following.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The longest line [`lines`] yields whole; longer ones come in pieces.
pub const MAX_LINE: usize = 64 * 1024;

/// Bytes read from the file at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The `file://` URI of `path` (absolute) for containerd's `stdout` and
/// `stderr`: every byte but ASCII letters, digits and `/._-~` is
/// percent-encoded, so containerd's URL parser gets the path back exactly.
pub fn file_uri(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    if !path.is_absolute() {
        return None;
    }
    let mut uri = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'~') {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    Some(uri)
}

/// Whether [`lines`] ends at the end of the file or waits for more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// The output so far, then the stream ends (a last line without a
    /// newline included).
    No,
    /// The output so far, then new output as it is written, until the
    /// stream is dropped. A file that does not exist yet is waited for.
    Yes,
}

/// The lines of the log file at `path`, without their `\n`.
pub fn lines(path: PathBuf, follow: Follow) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    lines_from(path, follow, 0)
}

/// [`lines`], starting `offset` bytes into the file (its length before a
/// new run, so only that run's output is read); a file shorter than
/// `offset` is read from its beginning.
pub fn lines_from(
    path: PathBuf,
    follow: Follow,
    offset: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let reader = LineReader { path, follow, file: None, pos: offset, pending: Vec::new(), done: false };
    futures::stream::unfold(reader, |mut r| async move {
        let item = r.next_line().await?;
        Some((item, r))
    })
}

struct LineReader {
    path: PathBuf,
    follow: Follow,
    file: Option<File>,
    /// How far into the file `pending` reaches.
    pos: u64,
    /// Bytes read but not yet yielded.
    pending: Vec<u8>,
    done: bool,
}

impl LineReader {
    async fn next_line(&mut self) -> Option<io::Result<Bytes>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(line) = take_line(&mut self.pending) {
                return Some(Ok(line));
            }
            match self.read_more().await {
                Ok(0) if self.follow == Follow::No => {
                    self.done = true;
                    let rest = std::mem::take(&mut self.pending);
                    return (!rest.is_empty()).then(|| Ok(Bytes::from(rest)));
                }
                Ok(0) => tokio::time::sleep(POLL_INTERVAL).await,
                Ok(_) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// Reads what is new; 0 at the end of the file (or while it does not
    /// exist and we follow).
    async fn read_more(&mut self) -> io::Result<usize> {
        if self.file.is_none() {
            match File::open(&self.path).await {
                Ok(mut f) => {
                    if self.pos > 0 && f.metadata().await?.len() >= self.pos {
                        f.seek(SeekFrom::Start(self.pos)).await?;
                    }
                    self.file = Some(f);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.follow == Follow::Yes => return Ok(0),
                Err(e) => return Err(e),
            }
        }
        let Some(file) = self.file.as_mut() else { return Ok(0) };
        if file.metadata().await?.len() < self.pos {
            // Truncated or rewritten: start over.
            file.seek(SeekFrom::Start(0)).await?;
            self.pos = 0;
            self.pending.clear();
        }
        let mut buf = vec![0u8; READ_CHUNK];
        let n = file.read(&mut buf).await?;
        self.pending.extend_from_slice(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// The first whole line of `pending` (removed from it), or its first
/// [`MAX_LINE`] bytes when no newline comes that soon.
fn take_line(pending: &mut Vec<u8>) -> Option<Bytes> {
    match pending.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') {
        Some(i) => {
            let mut line: Vec<u8> = pending.drain(..=i).collect();
            line.pop();
            Some(Bytes::from(line))
        }
        None if pending.len() >= MAX_LINE => Some(Bytes::from(pending.drain(..MAX_LINE).collect::<Vec<u8>>())),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[test]
    fn uris_encode_what_a_url_parser_would_change() {
        assert_eq!(file_uri(Path::new("/var/log/a.b_c-d~e.log")).unwrap(), "file:///var/log/a.b_c-d~e.log");
        assert_eq!(file_uri(Path::new("/tmp/a b%?#")).unwrap(), "file:///tmp/a%20b%25%3F%23");
        assert!(file_uri(Path::new("relative.log")).is_none());
    }

    #[test]
    fn lines_are_split_and_capped() {
        let mut p = b"one\ntwo\npartial".to_vec();
        assert_eq!(take_line(&mut p).unwrap(), "one");
        assert_eq!(take_line(&mut p).unwrap(), "two");
        assert!(take_line(&mut p).is_none());
        assert_eq!(p, b"partial");
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        assert_eq!(take_line(&mut long).unwrap().len(), MAX_LINE);
        assert_eq!(take_line(&mut long).unwrap().len(), 10);
        assert!(long.is_empty());
    }

    #[tokio::test]
    async fn follows_appends_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let all: Vec<_> = lines(path.clone(), Follow::No).collect().await;
        assert!(matches!(&all[..], [Err(e)] if e.kind() == io::ErrorKind::NotFound));

        let mut stream = Box::pin(lines(path.clone(), Follow::Yes));
        async fn next(s: &mut (impl Stream<Item = io::Result<Bytes>> + Unpin)) -> Bytes {
            tokio::time::timeout(Duration::from_secs(5), s.next()).await.unwrap().unwrap().unwrap()
        }
        std::fs::write(&path, b"first\nsec").unwrap();
        assert_eq!(next(&mut stream).await, "first");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"ond\n").unwrap();
        assert_eq!(next(&mut stream).await, "second");
        std::fs::write(&path, b"new\n").unwrap();
        assert_eq!(next(&mut stream).await, "new");

        let all: Vec<_> = lines(path.clone(), Follow::No).collect().await;
        assert_eq!(all.into_iter().map(Result::unwrap).collect::<Vec<_>>(), ["new"]);
        std::fs::write(&path, b"a\nlast").unwrap();
        let all: Vec<_> = lines(path, Follow::No).collect().await;
        assert_eq!(all.into_iter().map(Result::unwrap).collect::<Vec<_>>(), ["a", "last"]);
    }
}
