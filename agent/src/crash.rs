//! Test-only crash injection.
//!
//! When `WENDY_AGENT_CRASH_POINT` names a point the agent reaches, the agent
//! kills itself with `SIGKILL` there, exactly like `kill -9`. The crash
//! consistency test uses this to stop provisioning between any two steps.
//! It is always compiled in (one environment lookup per point); production
//! units never set the variable.

/// The environment variable naming the crash point.
pub const CRASH_POINT_ENV: &str = "WENDY_AGENT_CRASH_POINT";

/// Every crash point, in the order provisioning reaches them.
pub const POINTS: &[&str] = &[
    "after-keygen",
    "after-issue",
    "mid-temp-write",
    "after-temp-fsync",
    "after-rename",
    "after-dir-fsync",
    "after-mtls-bind",
    "after-advertise",
];

/// Dies with `SIGKILL` if `point` is the configured crash point.
pub fn point(point: &str) {
    if std::env::var(CRASH_POINT_ENV).is_ok_and(|p| p == point) {
        tracing::error!(point, "test crash point reached: killing myself with SIGKILL");
        kill_self();
    }
}

#[allow(unsafe_code)]
fn kill_self() -> ! {
    // SAFETY: kill(2) with our own pid and SIGKILL has no memory effects.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}
