//! The sandbox: the OCI runtime spec an app runs under, from its validated
//! config ([`AppConfig`]), its image's config ([`ImageConfig`]) and the
//! device nodes that exist ([`HostDevices`]). Pure: it builds a value, the
//! caller hands it to containerd.
//!
//! By default an app gets:
//! - its own PID, IPC, UTS, mount, cgroup and network namespaces; the
//!   network one holds only loopback (runc brings `lo` up);
//! - a read-only root with a private `/tmp` and `/run` (tmpfs), unless
//!   [`SandboxOptions::writable_rootfs`];
//! - `no_new_privs`, the capabilities in [`DEFAULT_CAPABILITIES`] and
//!   nothing else;
//! - the seccomp profile of [`seccomp`] (`ptrace`, `unshare`, `mount`, … →
//!   `EPERM`; `clone3`, `io_uring` → `ENOSYS`);
//! - runc's masked and read-only `/proc` and `/sys` paths;
//! - no host device: the device cgroup denies everything but runc's
//!   standard pseudo-devices (`/dev/null`, `/dev/zero`, …, the pty);
//! - a pids limit ([`DEFAULT_PIDS_LIMIT`]); memory and CPU as configured.
//!
//! Each entitlement opens what it names and no more:
//! - `network` (`host`): no network namespace, and the host's
//!   `/etc/resolv.conf` read-only;
//! - `persist`: the volume directory `<volumes_root>/<name>` bound at its
//!   path (the caller creates it);
//! - device entitlements: the existing nodes of their class
//!   ([`device_class_matches`]), each created in the app and allowed in the
//!   device cgroup for read and write (never `mknod`);
//! - `bluetooth`: BlueZ through the host's system D-Bus socket. No device
//!   node, no capability, no host network: raw HCI sockets exist only in
//!   the host network namespace and need `CAP_NET_ADMIN`, which would hand
//!   the app the host's network configuration. Because the D-Bus daemon
//!   trusts uid 0 with everything (systemd, RAUC), an app with `bluetooth`
//!   must not run as root ([`SandboxError::BluetoothAsRoot`]).

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice, LinuxDeviceBuilder,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction,
    LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::app_config::{AppConfig, Entitlement, NetworkMode, CPU_PERIOD_US};
use super::{DeviceKind, HostDevice, HostDevices, ImageConfig};

/// The capabilities an app's process holds (bounding, effective,
/// permitted; none inheritable or ambient). Docker's default set without
/// `NET_RAW` (packet spoofing), `MKNOD` (no devices to make), `SETFCAP`,
/// `SETPCAP`, `SYS_CHROOT` and `AUDIT_WRITE`: what a process that runs as
/// root in its image needs to own and chmod its files, switch to its own
/// user, signal its children and bind a port below 1024.
pub const DEFAULT_CAPABILITIES: [Capability; 8] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::NetBindService,
];

/// Syscalls that fail with `EPERM`: debugging other processes (`ptrace`,
/// `process_vm_*`), new or other namespaces (`unshare`, `setns`), mounts
/// (old and new API), the kernel itself (modules, kexec, BPF, perf,
/// keyrings, reboot, swap, clocks, the log), file handles
/// (`open_by_handle_at`, the "shocker" escape) and `userfaultfd` (a
/// favourite of kernel exploits). Names a given architecture lacks are
/// skipped by runc.
pub const DENIED_SYSCALLS: [&str; 37] = [
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "unshare",
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "reboot",
    "swapon",
    "swapoff",
    "open_by_handle_at",
    "userfaultfd",
    "acct",
    "quotactl",
    "syslog",
    "settimeofday",
    "clock_settime",
];

/// Syscalls that fail with `ENOSYS`, as on a kernel without them, so that
/// libcs and runtimes take their fallback instead of reporting a failure:
/// - `clone3` takes its flags in a struct seccomp cannot read, so it cannot
///   be filtered for namespace flags; glibc and musl fall back to `clone`,
///   whose flags are filtered ([`CLONE_NAMESPACE_FLAGS`]);
/// - `io_uring_*`: a large kernel attack surface (Docker's default profile
///   blocks it too); libuv, tokio and liburing users fall back to epoll.
pub const ENOSYS_SYSCALLS: [&str; 4] = ["clone3", "io_uring_setup", "io_uring_enter", "io_uring_register"];

/// `clone` flags that create a namespace; `clone` with any of them fails
/// with `EPERM`, as `unshare` does. (`CLONE_NEWTIME` is not among them: it
/// shares its bit with `clone`'s exit signal and is honoured only by
/// `clone3` and `unshare`, both denied.)
pub const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// The architectures the seccomp filter covers: the boards' (aarch64, arm)
/// and the development hosts' (x86_64), each with its compat ABIs (arm on
/// aarch64; i386 and x32 on x86_64), so a 32-bit syscall cannot go around
/// the filter.
pub const SECCOMP_ARCHES: [Arch; 5] =
    [Arch::ScmpArchAarch64, Arch::ScmpArchArm, Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32];

/// Paths hidden from the app (runc's and Docker's defaults): kernel memory,
/// keys, timers, firmware.
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths the app sees read-only (runc's defaults).
pub const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// The pids limit when the config sets none: room for a threaded runtime,
/// not for a fork bomb.
pub const DEFAULT_PIDS_LIMIT: i64 = 1024;

/// `PATH` when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The host's system D-Bus socket, bound at the same path for `bluetooth`.
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// The host's resolver configuration, bound read-only for `network` `host`.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The mode of a device node the app gets: read and write for any user in
/// the app (the entitlement is the app's, not one user's); the device
/// cgroup still forbids `mknod`.
const DEVICE_NODE_MODE: u32 = 0o666;

/// What the device cgroup allows on an entitled node.
const DEVICE_ACCESS: &str = "rw";

/// Sizes of the tmpfs mounts (they count against the memory limit).
const DEV_TMPFS_SIZE: &str = "size=65536k";
const TMP_TMPFS_SIZE: &str = "size=65536k";
const RUN_TMPFS_SIZE: &str = "size=16384k";

/// The longest hostname the kernel takes (`__NEW_UTS_LEN`).
const MAX_HOSTNAME: usize = 64;

/// The most device nodes [`DevFs`] lists, and how deep it looks.
const MAX_DEV_NODES: usize = 4096;
const MAX_DEV_DEPTH: usize = 4;

/// Why no spec could be built.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Neither the image nor the config gives a command.
    #[error("no command: the image has no Entrypoint or Cmd and wendy.json no run.args")]
    NoCommand,
    /// The image's working directory is not absolute or has NUL.
    #[error("image WorkingDir {0:?} is not an absolute path")]
    BadWorkingDir(String),
    /// An image `Env` entry is not `KEY=value`, or has NUL.
    #[error("image Env entry {0:?} is not KEY=value")]
    BadImageEnv(String),
    /// An argument (image or config) has NUL.
    #[error("an argument contains NUL")]
    BadArgument,
    /// `bluetooth` for a process that runs as uid 0.
    #[error("the bluetooth entitlement needs the app to run as a non-root user (the image's User is root)")]
    BluetoothAsRoot,
    /// A root or volumes directory that is not absolute.
    #[error("{0}: not an absolute path")]
    NotAbsolute(&'static str),
    /// oci-spec refused a value.
    #[error("OCI spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// Where things are on the host, and what the caller decides.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// The root filesystem, as containerd passes it (usually `rootfs`,
    /// relative to the bundle).
    pub rootfs: PathBuf,
    /// The directory of persist volumes on the data partition (absolute).
    pub volumes_root: PathBuf,
    /// Whether the root filesystem is writable. The published `wendy.json`
    /// has no field for it, so it is the caller's (a later `wendy run`
    /// option); off by default.
    pub writable_rootfs: bool,
}

/// The volume directory of `persist` volume `name` (a safe name, so one
/// path component).
pub fn volume_dir(volumes_root: &Path, name: &str) -> PathBuf {
    volumes_root.join(name)
}

/// The OCI runtime spec for an app.
pub fn build_spec(
    config: &AppConfig,
    image: &ImageConfig,
    devices: &dyn HostDevices,
    options: &SandboxOptions,
) -> Result<Spec, SandboxError> {
    if !options.volumes_root.is_absolute() {
        return Err(SandboxError::NotAbsolute("volumes root"));
    }
    let network = network_mode(config);
    let granted = entitled_devices(config, &devices.list());

    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ] {
        namespaces.push(namespace(typ)?);
    }
    if network == NetworkMode::None {
        namespaces.push(namespace(LinuxNamespaceType::Network)?);
    }

    let mut device_rules = vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build()?];
    let mut linux_devices = Vec::with_capacity(granted.len());
    for device in &granted {
        let typ = match device.kind {
            DeviceKind::Char => LinuxDeviceType::C,
            DeviceKind::Block => LinuxDeviceType::B,
        };
        linux_devices.push(linux_device(device, typ)?);
        device_rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(device.major)
                .minor(device.minor)
                .access(DEVICE_ACCESS)
                .build()?,
        );
    }

    let mut resources = LinuxResourcesBuilder::default()
        .devices(device_rules)
        .pids(LinuxPidsBuilder::default().limit(config.resources.pids.map_or(DEFAULT_PIDS_LIMIT, i64::from)).build()?);
    if let Some(bytes) = config.resources.memory_bytes {
        // Validated to fit an i64. Swap = limit: no swap on top.
        let limit = i64::try_from(bytes).unwrap_or(i64::MAX);
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit).swap(limit).build()?);
    }
    if let Some(quota) = config.resources.cpu_quota_us {
        let quota = i64::try_from(quota).unwrap_or(i64::MAX);
        resources = resources.cpu(LinuxCpuBuilder::default().quota(quota).period(CPU_PERIOD_US).build()?);
    }

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .devices(linux_devices)
        .resources(resources.build()?)
        .seccomp(seccomp()?)
        .masked_paths(strings(&MASKED_PATHS))
        .readonly_paths(strings(&READONLY_PATHS))
        .build()?;

    let id = config.container_id();
    let hostname: String = id.chars().take(MAX_HOSTNAME).collect();

    Ok(SpecBuilder::default()
        .version(Spec::default().version().clone())
        .hostname(hostname)
        .root(RootBuilder::default().path(options.rootfs.clone()).readonly(!options.writable_rootfs).build()?)
        .mounts(mounts(config, network, options)?)
        .process(process(config, image)?)
        .linux(linux)
        .build()?)
}

/// The app's network: host only with a `network` entitlement in mode host.
fn network_mode(config: &AppConfig) -> NetworkMode {
    if config.has(|e| *e == Entitlement::Network(NetworkMode::Host)) {
        NetworkMode::Host
    } else {
        NetworkMode::None
    }
}

fn namespace(typ: LinuxNamespaceType) -> Result<LinuxNamespace, SandboxError> {
    Ok(LinuxNamespaceBuilder::default().typ(typ).build()?)
}

fn linux_device(device: &HostDevice, typ: LinuxDeviceType) -> Result<LinuxDevice, SandboxError> {
    Ok(LinuxDeviceBuilder::default()
        .path(device.path.clone())
        .typ(typ)
        .major(device.major)
        .minor(device.minor)
        .file_mode(DEVICE_NODE_MODE)
        .uid(0u32)
        .gid(0u32)
        .build()?)
}

/// The host devices the config's entitlements name, that exist: sorted,
/// each once. A node with an odd path (relative, `.`/`..`, not UTF-8) is
/// never granted.
pub fn entitled_devices(config: &AppConfig, existing: &[HostDevice]) -> Vec<HostDevice> {
    let mut granted: Vec<HostDevice> = existing
        .iter()
        .filter(|d| is_clean_dev_path(&d.path))
        .filter(|d| config.entitlements.iter().any(|e| device_class_matches(e, &d.path)))
        .cloned()
        .collect();
    granted.sort_by(|a, b| a.path.cmp(&b.path));
    granted.dedup_by(|a, b| a.path == b.path);
    granted
}

/// Whether `path` is an absolute, normalised, UTF-8 path under `/dev`
/// (checked on the text: `Path::components` hides a `.`).
fn is_clean_dev_path(path: &Path) -> bool {
    path.to_str()
        .and_then(|p| p.strip_prefix("/dev/"))
        .is_some_and(|rest| rest.split('/').all(|segment| !matches!(segment, "" | "." | "..")))
}

/// Whether the device node at `path` belongs to what `entitlement` names:
/// - `gpio`: `/dev/gpiochip*`;
/// - `i2c`: its one `/dev/i2c-N`;
/// - `spi`: `/dev/spidev*`;
/// - `usb`: everything under `/dev/bus/usb`;
/// - `input`: `/dev/input/*`;
/// - `camera`/`video`: `/dev/video*`, `/dev/media*`, `/dev/v4l-subdev*`,
///   or only the `allowlist`;
/// - `audio`: `/dev/snd/*`;
/// - `gpu`: `/dev/dri/*`;
/// - `network`, `persist`, `bluetooth`: no device.
pub fn device_class_matches(entitlement: &Entitlement, path: &Path) -> bool {
    let in_dir = |dir: &str, prefix: &str| {
        path.parent() == Some(Path::new(dir))
            && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix))
    };
    match entitlement {
        Entitlement::Gpio => in_dir("/dev", "gpiochip"),
        Entitlement::I2c { device } => path == Path::new(device),
        Entitlement::Spi => in_dir("/dev", "spidev"),
        Entitlement::Usb => path.starts_with("/dev/bus/usb") && path != Path::new("/dev/bus/usb"),
        Entitlement::Input => in_dir("/dev/input", ""),
        Entitlement::Camera { allowlist } if allowlist.is_empty() => {
            super::app_config::CAMERA_NODE_PREFIXES.iter().any(|p| in_dir("/dev", p))
        }
        Entitlement::Camera { allowlist } => allowlist.iter().any(|a| path == Path::new(a)),
        Entitlement::Audio => in_dir("/dev/snd", ""),
        Entitlement::Gpu => in_dir("/dev/dri", ""),
        Entitlement::Network(_) | Entitlement::Persist { .. } | Entitlement::Bluetooth => false,
    }
}

/// The default seccomp profile: allow, except [`DENIED_SYSCALLS`] and
/// namespace-creating `clone` (`EPERM`) and [`ENOSYS_SYSCALLS`] (`ENOSYS`),
/// on [`SECCOMP_ARCHES`].
///
/// A deny list rather than Docker's allow list: apps are arbitrary
/// runtimes (Python, Swift, CUDA), an allow list breaks them opaquely with
/// every new libc or kernel, and what is denied here is the escape and
/// kernel-attack surface that the dropped capabilities do not already
/// close. The cost is that a syscall added to a future kernel is allowed
/// until it is listed here.
pub fn seccomp() -> Result<LinuxSeccomp, SandboxError> {
    let eperm = libc::EPERM.unsigned_abs();
    let mut syscalls =
        vec![deny(&DENIED_SYSCALLS, eperm, None)?, deny(&ENOSYS_SYSCALLS, libc::ENOSYS.unsigned_abs(), None)?];
    for flag in CLONE_NAMESPACE_FLAGS {
        // SCMP_CMP_MASKED_EQ: (arg0 & value) == valueTwo. `clone`'s flags
        // are its first argument on every architecture covered.
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(flag)
            .value_two(flag)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()?;
        syscalls.push(deny(&["clone"], eperm, Some(arg))?);
    }
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(SECCOMP_ARCHES.to_vec())
        .syscalls(syscalls)
        .build()?)
}

fn deny(
    names: &[&str],
    errno: u32,
    arg: Option<oci_spec::runtime::LinuxSeccompArg>,
) -> Result<LinuxSyscall, SandboxError> {
    let mut builder =
        LinuxSyscallBuilder::default().names(strings(names)).action(LinuxSeccompAction::ScmpActErrno).errno_ret(errno);
    if let Some(arg) = arg {
        builder = builder.args(vec![arg]);
    }
    Ok(builder.build()?)
}

/// runc's standard mounts, then a private `/tmp` and `/run` on a read-only
/// root, then what the entitlements add.
fn mounts(config: &AppConfig, network: NetworkMode, options: &SandboxOptions) -> Result<Vec<Mount>, SandboxError> {
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", DEV_TMPFS_SIZE])?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", DEV_TMPFS_SIZE])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", "ro"])?,
    ];
    if !options.writable_rootfs {
        mounts.push(mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777", TMP_TMPFS_SIZE])?);
        mounts.push(mount("/run", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=755", RUN_TMPFS_SIZE])?);
    }
    if network == NetworkMode::Host {
        mounts.push(bind(
            HOST_RESOLV_CONF,
            Path::new(HOST_RESOLV_CONF),
            &["rbind", "ro", "nosuid", "nodev", "noexec"],
        )?);
    }
    for entitlement in &config.entitlements {
        match entitlement {
            Entitlement::Persist { name, path } => {
                let source = volume_dir(&options.volumes_root, name);
                mounts.push(bind(path, &source, &["rbind", "rw", "nosuid", "nodev"])?);
            }
            Entitlement::Bluetooth => {
                mounts.push(bind(
                    SYSTEM_BUS_SOCKET,
                    Path::new(SYSTEM_BUS_SOCKET),
                    &["bind", "rw", "nosuid", "nodev", "noexec"],
                )?);
            }
            _ => {}
        }
    }
    Ok(mounts)
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SandboxError> {
    Ok(MountBuilder::default().destination(destination).typ(typ).source(source).options(strings(options)).build()?)
}

fn bind(destination: &str, source: &Path, options: &[&str]) -> Result<Mount, SandboxError> {
    Ok(MountBuilder::default().destination(destination).typ("bind").source(source).options(strings(options)).build()?)
}

/// The process: the image's entrypoint and command (or `run.args`), its
/// env with the config's on top, its working directory and user; no new
/// privileges, [`DEFAULT_CAPABILITIES`].
fn process(config: &AppConfig, image: &ImageConfig) -> Result<oci_spec::runtime::Process, SandboxError> {
    let mut args = image.entrypoint.clone();
    args.extend(config.args.clone().unwrap_or_else(|| image.cmd.clone()));
    if args.is_empty() {
        return Err(SandboxError::NoCommand);
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(SandboxError::BadArgument);
    }

    let mut env: Vec<String> = Vec::with_capacity(image.env.len() + config.env.len() + 1);
    for entry in &image.env {
        match entry.split_once('=') {
            Some((key, _)) if !key.is_empty() && !entry.contains('\0') => {
                if !config.env.contains_key(key) {
                    env.push(entry.clone());
                }
            }
            _ => return Err(SandboxError::BadImageEnv(entry.chars().take(80).collect())),
        }
    }
    env.extend(config.env.iter().map(|(k, v)| format!("{k}={v}")));
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_owned());
    }

    let cwd = if image.working_dir.is_empty() { "/" } else { image.working_dir.as_str() };
    if !cwd.starts_with('/') || cwd.contains('\0') {
        return Err(SandboxError::BadWorkingDir(cwd.chars().take(80).collect()));
    }

    let user = &image.user;
    if user.uid == 0 && config.has(|e| *e == Entitlement::Bluetooth) {
        return Err(SandboxError::BluetoothAsRoot);
    }

    let caps: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;

    Ok(ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(env)
        .cwd(cwd)
        .user(UserBuilder::default().uid(user.uid).gid(user.gid).additional_gids(user.additional_gids.clone()).build()?)
        .capabilities(capabilities)
        .no_new_privileges(true)
        .build()?)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The host's `/dev`, walked (symbolic links not followed; at most
/// [`MAX_DEV_NODES`] nodes, [`MAX_DEV_DEPTH`] levels).
#[derive(Clone, Debug)]
pub struct DevFs {
    root: PathBuf,
}

impl Default for DevFs {
    fn default() -> Self {
        Self { root: PathBuf::from("/dev") }
    }
}

impl HostDevices for DevFs {
    fn list(&self) -> Vec<HostDevice> {
        let mut out = Vec::new();
        let mut pending = vec![(self.root.clone(), 0usize)];
        while let Some((dir, depth)) = pending.pop() {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if out.len() >= MAX_DEV_NODES {
                    return out;
                }
                let path = entry.path();
                let Ok(meta) = fs::symlink_metadata(&path) else { continue };
                let file_type = meta.file_type();
                let kind = if file_type.is_char_device() {
                    DeviceKind::Char
                } else if file_type.is_block_device() {
                    DeviceKind::Block
                } else {
                    if file_type.is_dir() && depth < MAX_DEV_DEPTH {
                        pending.push((path, depth + 1));
                    }
                    continue;
                };
                let (major, minor) = split_dev(meta.rdev());
                out.push(HostDevice { path, kind, major, minor });
            }
        }
        out
    }
}

/// glibc's `major()`/`minor()` of a `dev_t`.
fn split_dev(dev: u64) -> (i64, i64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    // Both fit in 32 bits.
    (major as i64, minor as i64)
}
