//! The replacement agent: where an uploaded agent is installed, and the
//! stock agent's choice, at every start, whether to exec it.
//!
//! Everything lives in [`SUBDIR`] of the state directory (the data
//! partition, mounted without `noexec`; the unit's `ProtectSystem=strict`
//! makes it writable through `ReadWritePaths=` and leaves exec allowed):
//! the binary ([`BINARY`], 0755), the OS version it was installed on
//! ([`OS_VERSION`]) and a boot-attempt counter ([`ATTEMPTS`]).
//!
//! The stock `/usr/bin/wendy-agent` execs the replacement (same arguments
//! and environment, plus [`GUARD_ENV`] so the replacement does not exec
//! itself) only on a development image, only while the OS version is the
//! one it was installed on, and only while fewer than [`MAX_ATTEMPTS`]
//! starts in a row failed: it counts each exec, and the replacement resets
//! the count once it is READY ([`confirm_started`]).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use wendy_net::atomic_write::{self, WriteError};

use super::upload::Staged;
use crate::config::Config;

/// The directory under the state directory that holds the replacement.
pub const SUBDIR: &str = "agent-update";
/// The replacement binary.
pub const BINARY: &str = "wendy-agent";
/// The upload being received (the same directory, so it is renamed).
pub const STAGING: &str = "wendy-agent.upload";
/// The OS version the replacement was installed on (first line).
pub const OS_VERSION: &str = "os-version";
/// Starts of the replacement that have not reached READY yet.
pub const ATTEMPTS: &str = "boot-attempts";
/// After this many starts without READY, the stock agent runs instead.
pub const MAX_ATTEMPTS: u32 = 3;
/// Set (to the replacement's path) in the environment of an exec'd
/// replacement: it runs itself and resets the counter once READY.
pub const GUARD_ENV: &str = "WENDY_AGENT_REPLACEMENT";

/// The files of the replacement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    dir: PathBuf,
}

impl Paths {
    /// The files under `config_dir` (the state directory).
    pub fn new(config_dir: &Path) -> Self {
        Self { dir: config_dir.join(SUBDIR) }
    }

    /// [`SUBDIR`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// [`BINARY`].
    pub fn binary(&self) -> PathBuf {
        self.dir.join(BINARY)
    }

    /// [`STAGING`].
    pub fn staging(&self) -> PathBuf {
        self.dir.join(STAGING)
    }

    /// [`OS_VERSION`].
    pub fn os_version(&self) -> PathBuf {
        self.dir.join(OS_VERSION)
    }

    /// [`ATTEMPTS`].
    pub fn attempts(&self) -> PathBuf {
        self.dir.join(ATTEMPTS)
    }
}

/// Why installing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// Writing the OS version or the counter.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Setting the mode of, or renaming, the binary.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Installs `staged` (checked, closed, fsynced, in the same directory) as
/// the replacement: the OS version and a zero counter first, then mode
/// 0755, rename, directory fsync. A crash leaves the old replacement (or
/// none) or the new one.
pub fn install(paths: &Paths, staged: Staged, os_version: Option<&str>) -> Result<(), InstallError> {
    let err = |op, path: &Path| {
        let path = path.to_owned();
        move |source| InstallError::Io { op, path, source }
    };
    atomic_write::write(&paths.attempts(), b"0\n", Some(0o600))?;
    atomic_write::write(&paths.os_version(), format!("{}\n", os_version.unwrap_or("")).as_bytes(), Some(0o600))?;
    std::fs::set_permissions(&staged.path, std::fs::Permissions::from_mode(0o755))
        .map_err(err("chmod", &staged.path))?;
    let binary = paths.binary();
    std::fs::rename(&staged.path, &binary).map_err(err("rename", &binary))?;
    staged.keep();
    Ok(atomic_write::sync_dir(&paths.dir)?)
}

/// What is on disk, as [`choose`] reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    /// Whether the binary exists.
    pub binary: bool,
    /// The counter: `None` when it cannot be read as a number (counts as
    /// exhausted); a missing file is 0.
    pub attempts: Option<u32>,
    /// The recorded OS version: `None` when the file is missing.
    pub os_version: Option<String>,
}

impl Installed {
    /// Reads the files of `paths`.
    pub fn read(paths: &Paths) -> Self {
        let attempts = match std::fs::read_to_string(paths.attempts()) {
            Ok(text) => text.trim().parse().ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
            Err(_) => None,
        };
        let os_version =
            std::fs::read_to_string(paths.os_version()).ok().map(|t| t.lines().next().unwrap_or("").trim().to_owned());
        Self { binary: paths.binary().is_file(), attempts, os_version }
    }
}

/// The stock agent's choice at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// No replacement is installed.
    NotInstalled,
    /// A production image never runs one.
    Production,
    /// It failed [`MAX_ATTEMPTS`] starts in a row (or its counter is
    /// unreadable).
    Exhausted,
    /// An OS update changed the OS version since it was installed.
    OsChanged {
        /// Recorded at install (`None`: no record).
        installed_on: Option<String>,
        /// Now.
        now: String,
    },
    /// Exec it; this is start number `attempt` (from 1).
    Run {
        /// The attempt this start is.
        attempt: u32,
    },
}

/// The rules: development image, same OS version, fewer than
/// [`MAX_ATTEMPTS`] failed starts.
pub fn choose(installed: &Installed, development: bool, os_version: Option<&str>) -> Choice {
    if !installed.binary {
        return Choice::NotInstalled;
    }
    if !development {
        return Choice::Production;
    }
    let now = os_version.unwrap_or("");
    if installed.os_version.as_deref() != Some(now) {
        return Choice::OsChanged { installed_on: installed.os_version.clone(), now: now.to_owned() };
    }
    match installed.attempts {
        Some(n) if n < MAX_ATTEMPTS => Choice::Run { attempt: n + 1 },
        _ => Choice::Exhausted,
    }
}

/// At the start of `main`: execs the replacement when [`choose`] says so,
/// after counting the attempt. Returns (and the stock agent runs) when there
/// is none, when the rules refuse it (logged, naming the path), when this
/// process is the replacement ([`GUARD_ENV`] is set), or when the exec
/// fails.
pub fn exec_if_installed(config: &Config) {
    if let Some(me) = std::env::var_os(GUARD_ENV) {
        tracing::info!(path = %Path::new(&me).display(), "running the replacement agent installed by UpdateAgent");
        return;
    }
    let paths = Paths::new(&config.config_dir);
    let installed = Installed::read(&paths);
    let os_version = crate::sysinfo::first_line(&config.os_version_file);
    let binary = paths.binary();
    let attempt = match choose(&installed, config.is_development_image(), os_version.as_deref()) {
        Choice::NotInstalled => return,
        Choice::Run { attempt } => attempt,
        Choice::Production => {
            tracing::warn!(path = %binary.display(), "ignoring the replacement agent: this is a production image");
            return;
        }
        Choice::Exhausted => {
            tracing::error!(
                path = %binary.display(),
                max = MAX_ATTEMPTS,
                "the replacement agent did not become ready in {MAX_ATTEMPTS} starts in a row: running the stock \
                 agent; upload a working one with `wendy device update-agent`, or remove it"
            );
            return;
        }
        Choice::OsChanged { installed_on, now } => {
            tracing::warn!(
                path = %binary.display(),
                installed_on = installed_on.as_deref().unwrap_or("<unknown>"),
                now,
                "ignoring the replacement agent: it was installed on another OS version; the stock agent of this \
                 OS runs"
            );
            return;
        }
    };
    if let Err(e) = atomic_write::write(&paths.attempts(), format!("{attempt}\n").as_bytes(), Some(0o600)) {
        tracing::error!(error = %e, path = %binary.display(), "cannot count the replacement's start: running the stock agent");
        return;
    }
    tracing::info!(path = %binary.display(), attempt, max = MAX_ATTEMPTS, "starting the replacement agent installed by UpdateAgent");
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| OsString::from(BINARY));
    let e = std::process::Command::new(&binary).arg0(argv0).args(args).env(GUARD_ENV, &binary).exec();
    tracing::error!(error = %e, path = %binary.display(), "cannot exec the replacement agent: running the stock agent");
}

/// Once READY: when this process is the replacement, its start succeeded,
/// and the counter goes back to 0.
pub fn confirm_started(config: &Config) {
    if std::env::var_os(GUARD_ENV).is_none() {
        return;
    }
    let paths = Paths::new(&config.config_dir);
    if let Err(e) = atomic_write::write(&paths.attempts(), b"0\n", Some(0o600)) {
        tracing::warn!(error = %e, "cannot reset the replacement agent's start counter");
    }
}
