//! An app's standard input: a fifo next to its log file,
//! `<log dir>/<app>.stdin` ([`path`]), given as the task's `stdin`.
//! containerd's runc shim opens it for reading and copies what arrives
//! into the app's stdin pipe; `AttachContainer` writes into it.
//!
//! **The agent keeps the fifo open.** From the task's creation the agent
//! holds the fifo's write side (a *keeper*, opened read-write so that
//! opening never waits for the shim). A client that attaches and goes away
//! therefore does not close the app's stdin: the app reads end-of-file only
//! when nobody holds the write side any more. Attaching writes through the
//! keeper, one write at a time.
//!
//! **An agent restart closes it.** While the agent is down nobody holds
//! the write side, so the shim reads end-of-file and closes the app's
//! stdin, as a terminal hang-up would. An app started before the agent
//! last started has no stdin until it is started again
//! ([`StdinError::Closed`]). Output never depends on any of this: it goes
//! to the log file (see the runtime's module docs).
//!
//! A write waits while the pipe is full (the app is not reading), which
//! holds back the attached client through gRPC's flow control; the caller
//! bounds it by the app's exit and the client's presence.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::Mutex;

/// The fifo's mode: the agent and the shim run as root; nobody else.
const FIFO_MODE: u32 = 0o600;

/// Why writing to an app's stdin failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StdinError {
    /// The agent holds no write side for the app: it was started before
    /// the agent last started, or it is not running.
    #[error("its stdin is closed: it was not started by this run of the agent; start it again to attach to its stdin")]
    Closed,
    /// The fifo could not be made, opened or written.
    #[error("stdin fifo {}: {source}", path.display())]
    Io {
        /// The fifo.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The stdin fifo of app `name` in `log_dir`.
pub fn path(log_dir: &Path, name: &str) -> PathBuf {
    log_dir.join(format!("{name}.stdin"))
}

/// The write sides the agent holds, by app name. Clones share them.
#[derive(Clone, Debug, Default)]
pub struct Pipes {
    keepers: Arc<StdMutex<HashMap<String, Arc<Mutex<pipe::Sender>>>>>,
}

impl Pipes {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mutex<pipe::Sender>>>> {
        self.keepers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes app `name`'s fifo at `path` (mode 0600) unless it exists, and
    /// holds a new write side for it. An older one is closed first, so
    /// input left unread by an earlier run is dropped with its pipe.
    pub fn prepare(&self, name: &str, path: &Path) -> Result<(), StdinError> {
        self.close(name);
        let io_err = |source| StdinError::Io { path: path.to_owned(), source };
        match nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(FIFO_MODE)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(io_err(e.into())),
        }
        // Refuses anything but a fifo at the path.
        let keeper = pipe::OpenOptions::new().read_write(true).open_sender(path).map_err(io_err)?;
        self.map().insert(name.to_owned(), Arc::new(Mutex::new(keeper)));
        Ok(())
    }

    /// Closes the write side held for app `name`, if any.
    pub fn close(&self, name: &str) {
        self.map().remove(name);
    }

    /// Closes the write side and removes the fifo at `path`.
    pub async fn remove(&self, name: &str, path: &Path) -> Result<(), StdinError> {
        self.close(name);
        match tokio::fs::remove_file(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StdinError::Io { path: path.to_owned(), source }),
        }
    }

    /// Writes `data` to app `name`'s stdin; waits while the pipe is full.
    pub async fn write(&self, name: &str, path: &Path, data: &[u8]) -> Result<(), StdinError> {
        let keeper = self.map().get(name).cloned().ok_or(StdinError::Closed)?;
        let mut sender = keeper.lock().await;
        sender.write_all(data).await.map_err(|source| StdinError::Io { path: path.to_owned(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn input_reaches_a_reader_and_survives_a_writer_going_away() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "app");
        let pipes = Pipes::default();
        pipes.prepare("app", &p).unwrap();
        let mut reader = pipe::OpenOptions::new().open_receiver(&p).unwrap();
        pipes.write("app", &p, b"one\n").await.unwrap();
        // A second attach after the first went away: the keeper still
        // holds the pipe, so the reader gets no end-of-file in between.
        pipes.clone().write("app", &p, b"two\n").await.unwrap();
        let mut buf = [0u8; 8];
        reader.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"one\ntwo\n");
        let mode = std::fs::metadata(&p).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions())).unwrap();
        assert_eq!(mode & 0o777, FIFO_MODE);

        // Closing the keeper is end-of-file for the reader.
        pipes.close("app");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert!(matches!(pipes.write("app", &p, b"x").await, Err(StdinError::Closed)));

        pipes.remove("app", &p).await.unwrap();
        assert!(!p.exists());
        pipes.remove("app", &p).await.unwrap();
    }

    #[tokio::test]
    async fn a_new_run_drops_unread_input_and_a_non_fifo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "app");
        let pipes = Pipes::default();
        pipes.prepare("app", &p).unwrap();
        pipes.write("app", &p, b"stale\n").await.unwrap();
        pipes.prepare("app", &p).unwrap();
        pipes.write("app", &p, b"fresh\n").await.unwrap();
        let mut reader = pipe::OpenOptions::new().open_receiver(&p).unwrap();
        let mut buf = [0u8; 6];
        reader.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"fresh\n");

        let file = path(dir.path(), "plain");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(pipes.prepare("plain", &file), Err(StdinError::Io { .. })));
    }
}
