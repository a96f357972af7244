//! Everything systemd: readiness, the watchdog, and where logs go.
//!
//! - `READY=1` is sent once the listeners are bound ([`notify_ready`]).
//! - If `WATCHDOG_USEC` is set, [`spawn_watchdog`] pets at half of it, but
//!   only while the serving tasks are alive: a dead server stops the pets,
//!   and systemd restarts the agent.
//! - Under journald (`JOURNAL_STREAM` set) logs go through
//!   tracing-journald, otherwise to stderr.

use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global logger: journald if started by systemd with its
/// output connected to the journal, stderr otherwise. `RUST_LOG` filters
/// (default `info`).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journald) => {
                registry.with(journald.with_syslog_identifier("wendy-agent".into())).init();
                return;
            }
            Err(e) => eprintln!("wendy-agent: journald unavailable ({e}), logging to stderr"),
        }
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi)).init();
}

/// Tells the service manager the agent is ready. A no-op outside systemd
/// (no `NOTIFY_SOCKET`).
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "sd_notify READY=1 failed");
    } else if std::env::var_os("NOTIFY_SOCKET").is_some() {
        tracing::info!("sent READY=1 to the service manager");
    }
}

/// Sends a free-form status line (`STATUS=`), never blocking.
pub fn notify_status(status: &str) {
    let line: String = status.chars().filter(|c| *c != '\n').collect();
    notify_nonblocking(&format!("STATUS={line}\n"));
}

/// Tells the service manager the agent is stopping, never blocking.
pub fn notify_stopping() {
    notify_nonblocking("STOPPING=1\n");
}

/// Sends `message` to `NOTIFY_SOCKET` without blocking: if the manager's
/// queue is full the message is dropped rather than stalling the runtime
/// (the sd-notify crate's send blocks). Informational messages only.
fn notify_nonblocking(message: &str) {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let addr = match path.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => <SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = UnixDatagram::unbound().and_then(|s| {
        s.set_nonblocking(true)?;
        s.send_to_addr(message.as_bytes(), &addr?)
    });
    if let Err(e) = sent {
        tracing::debug!(error = %e, "sd_notify message dropped");
    }
}

/// Pets the watchdog at half of `WATCHDOG_USEC`, if the unit has one, while
/// `alive()` says the serving tasks run. Once it says no, the pets stop for
/// good (one error line) and systemd's watchdog restarts the agent.
pub fn spawn_watchdog(alive: impl Fn() -> bool + Send + 'static) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    tracing::info!(?period, "watchdog enabled");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            if !alive() {
                tracing::error!(
                    "the server is no longer running: no more watchdog pets, systemd will restart the agent"
                );
                notify_status("server stopped; waiting for the watchdog");
                return;
            }
            if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]) {
                tracing::warn!(error = %e, "watchdog ping failed");
            }
        }
    });
}

/// How often [`spawn_heap_trim`] trims the heap.
pub const HEAP_TRIM_INTERVAL: Duration = Duration::from_secs(2);

/// Every `period`, hands heap pages freed since the last call back to the
/// kernel (glibc keeps them otherwise): after a connection flood the RSS
/// returns to what the live state needs. A no-op without glibc.
pub fn spawn_heap_trim(period: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            trim_heap();
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_heap() {
    // SAFETY: malloc_trim(3) takes no pointers and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}
