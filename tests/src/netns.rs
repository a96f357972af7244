//! A private network namespace per test (`ip netns`), deleted on drop, with
//! helpers to open sockets inside it from the test process.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace with loopback up.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Netns {
    /// Creates `wendy-<pid>-<n>` with loopback up. Needs root.
    pub fn new() -> Self {
        let name = format!("wendy-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    /// Adds a bridge `wbr0` at `10.213.0.1/24` with a veth pair on it, so
    /// the namespace has a multicast-capable interface with carrier.
    pub fn with_lan(self) -> Self {
        let n = self.name.as_str();
        ip(&["-n", n, "link", "add", "wbr0", "type", "bridge"]);
        ip(&["-n", n, "link", "add", "wveth0", "type", "veth", "peer", "name", "wveth1"]);
        ip(&["-n", n, "link", "set", "wveth0", "master", "wbr0"]);
        ip(&["-n", n, "addr", "add", "10.213.0.1/24", "dev", "wbr0"]);
        for dev in ["wveth0", "wveth1", "wbr0"] {
            ip(&["-n", n, "link", "set", dev, "up"]);
        }
        self
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command run inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a fresh thread that has entered the namespace; sockets it
    /// creates belong to the namespace.
    pub fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            // SAFETY: setns on this thread only; the fd is valid for the call.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread panicked")
    }

    /// Binds a TCP listener inside the namespace.
    pub fn bind(&self, addr: SocketAddr) -> std::net::TcpListener {
        let l = self.run_inside(move || std::net::TcpListener::bind(addr)).expect("bind in netns");
        l.set_nonblocking(true).expect("nonblocking");
        l
    }

    /// Connects to `addr` inside the namespace (blocking).
    pub fn connect_std(&self, addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
        let s =
            self.run_inside(move || std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)))?;
        s.set_nonblocking(true)?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// Connects to `addr` inside the namespace.
    pub async fn connect(self: &std::sync::Arc<Self>, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let me = self.clone();
        let s = tokio::task::spawn_blocking(move || me.connect_std(addr)).await.map_err(std::io::Error::other)??;
        tokio::net::TcpStream::from_std(s)
    }

    /// Whether something listens on `addr` inside the namespace.
    pub fn is_listening(&self, addr: SocketAddr) -> bool {
        self.run_inside(move || std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_ok())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: plain kill(2) of processes we started in our namespace.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
