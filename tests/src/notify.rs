//! A `NOTIFY_SOCKET` for a child process: what systemd gives a
//! `Type=notify` service, so tests check the real sd_notify messages.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A bound datagram socket collecting notifications.
#[derive(Debug)]
pub struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    /// Binds `dir/notify.sock`.
    pub fn bind(dir: &Path) -> Self {
        let path = dir.join(format!("notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        Self { path, socket, seen: Vec::new() }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until a message containing the line `line` (e.g. `READY=1`)
    /// arrives; `false` on timeout.
    pub fn wait_for(&mut self, line: &str, timeout: Duration) -> bool {
        if self.seen.iter().any(|m| m.lines().any(|l| l == line)) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            self.socket.set_read_timeout(Some(left)).ok();
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let hit = msg.lines().any(|l| l == line);
                    self.seen.push(msg);
                    if hit {
                        return true;
                    }
                }
                Err(_) => break,
            }
        }
        false
    }

    /// Forgets messages seen so far (before a restart).
    pub fn clear(&mut self) {
        self.seen.clear();
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
