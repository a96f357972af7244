//! Apps on containerd (feature `apps`, in progress): the app config and the
//! sandbox it maps to, both pure (no I/O but what a caller passes in, so
//! every rule is unit-tested), and the runtime that runs them on containerd.
//!
//! - [`app_config`]: parsing and validating the published `wendy.json`
//!   (`appId`, `version`, `entitlements`, `resources`, `env`, `run`), as it
//!   arrives in the gRPC field `app_config`; hostile input is refused with a
//!   typed error naming the offending field;
//! - [`sandbox`]: the OCI runtime spec for a validated config: own network
//!   namespace, seccomp, `no_new_privs`, a read-only root, no host devices,
//!   and exactly what each entitlement names.
//! - [`containerd`]: the agent's one containerd client (socket, namespace
//!   `wendy`) and the registry's content store over it.
//! - [`runtime`]: an image in containerd's store to a running, sandboxed
//!   app over that client: unpack, create, start, output, stop, delete,
//!   list.
//!
//! The types both share live here: the safe-name rule (an `appId` and a
//! `persist` volume name), the host's device nodes as the sandbox sees them,
//! and what the image contributes to the process.

pub mod app_config;
pub mod containerd;
pub mod runtime;
pub mod sandbox;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

/// The longest safe name, in bytes: containerd's limit for an identifier
/// (its `identifiers.Validate`), so an `appId` is always a valid container
/// id, and well below `NAME_MAX` (255) for the directory it also names.
pub const MAX_NAME_LEN: usize = 76;

/// Whether `name` is a safe name: an `appId` or a `persist` volume name.
///
/// The grammar is containerd's for identifiers: runs of ASCII letters and
/// digits joined by single `.`, `_` or `-` (`^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$`),
/// 1 to [`MAX_NAME_LEN`] bytes. It is stricter than the published schema
/// (`^[a-zA-Z0-9._-]{1,253}$`) on purpose: the name becomes a containerd
/// container id, a snapshot key, a cgroup path element and a directory on
/// the data partition, so it can be none of `.`, `..`, empty, hidden
/// (leading `.`), option-like (leading `-`), contain `/` or NUL, or be too
/// long for containerd. Every published example (`com.example.app`,
/// `sh.wendy.examples.hellohttp`) passes.
pub fn is_safe_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let mut previous_was_separator = true; // no separator first
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => previous_was_separator = false,
            b'.' | b'_' | b'-' if !previous_was_separator => previous_was_separator = true,
            _ => return false,
        }
    }
    !previous_was_separator // no separator last
}

/// The kind of a device node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A character device (`c`).
    Char,
    /// A block device (`b`).
    Block,
}

/// A device node that exists on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDevice {
    /// Its absolute path, e.g. `/dev/gpiochip0`; the same path in the app.
    pub path: PathBuf,
    /// Character or block.
    pub kind: DeviceKind,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
}

/// The device nodes that exist on the host. The sandbox maps a device
/// entitlement only onto nodes listed here, so a test passes a fixed list
/// and the agent passes [`sandbox::DevFs`].
pub trait HostDevices {
    /// Every character and block device node under `/dev` (symbolic links
    /// not followed).
    fn list(&self) -> Vec<HostDevice>;
}

impl HostDevices for [HostDevice] {
    fn list(&self) -> Vec<HostDevice> {
        self.to_vec()
    }
}

impl HostDevices for Vec<HostDevice> {
    fn list(&self) -> Vec<HostDevice> {
        self.clone()
    }
}

/// The user the app's process runs as, resolved from the image's `User`
/// (a name is looked up in the image's `/etc/passwd` by the caller).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub additional_gids: Vec<u32>,
}

/// What the image's config contributes to the process (OCI image spec
/// `config`): the sandbox takes it as given, the app config may extend it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`: the arguments after the entrypoint, unless the app config's
    /// `run.args` replaces them.
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=value`.
    pub env: Vec<String>,
    /// `WorkingDir`; `/` when empty.
    pub working_dir: String,
    /// `User`, resolved.
    pub user: ProcessUser,
}
