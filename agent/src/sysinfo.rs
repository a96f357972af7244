//! What the device reports about itself: `GetAgentVersion` (v1),
//! `GetDeviceInfo` (v2) and `ListHardwareCapabilities` (both).
//!
//! Everything is read from the running system; what is not found is left
//! out (the published optional fields stay absent), never guessed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use wendy_proto::agent::list_hardware_capabilities_response::HardwareCapability;
use wendy_proto::agent::GetAgentVersionResponse;
use wendy_proto::agent_v2::GetDeviceInfoResponse;

/// Features this agent offers, reported in `featureset`.
pub const FEATURES: &[&str] = &["provisioning", "mtls", "ml-dsa-65", "unprovision", "crl", "renewal"];

/// Where RAUC's system configuration is looked for.
#[cfg(feature = "rauc")]
const RAUC_SYSTEM_CONF: &str = crate::rauc::SYSTEM_CONF;
/// Without the `rauc` feature the path is never read.
#[cfg(not(feature = "rauc"))]
const RAUC_SYSTEM_CONF: &str = "/etc/rauc/system.conf";

/// Longest line kept from a system file.
const MAX_LINE: usize = 200;

/// Reads the first line of a small text file, if present and not empty.
pub(crate) fn first_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line: String = text.lines().next()?.trim().chars().take(MAX_LINE).collect();
    (!line.is_empty()).then_some(line)
}

/// Go's name for this CPU architecture, as published agents and CLIs use it.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "powerpc64" => "ppc64",
        "riscv64" => "riscv64",
        "mips" => "mips",
        "s390x" => "s390x",
        other => other,
    }
}

/// Where the facts come from (tests point these at fixtures).
#[derive(Clone, Debug)]
pub struct Sources {
    /// `/etc/wendy/version.txt`.
    pub os_version_file: PathBuf,
    /// `/etc/wendyos/device-type`.
    pub device_type_file: PathBuf,
    /// `/sys`.
    pub sys: PathBuf,
    /// `/dev`.
    pub dev: PathBuf,
    /// `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
    /// RAUC's system configuration (`/etc/rauc/system.conf`): with the
    /// `rauc` feature, `featureset` lists `rauc` only if it exists.
    pub rauc_system_conf: PathBuf,
}

impl Sources {
    /// The running system, with the two WendyOS files at these paths.
    pub fn system(os_version_file: &Path, device_type_file: &Path) -> Self {
        Self {
            os_version_file: os_version_file.to_owned(),
            device_type_file: device_type_file.to_owned(),
            sys: "/sys".into(),
            dev: "/dev".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            rauc_system_conf: RAUC_SYSTEM_CONF.into(),
        }
    }
}

/// The facts both versions report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Agent version.
    pub version: String,
    /// OS image version.
    pub os_version: Option<String>,
    /// Board / machine.
    pub device_type: Option<String>,
    /// Public key (PEM) once provisioned.
    pub public_key: Option<String>,
    /// Whether a GPU was found.
    pub has_gpu: bool,
    /// Its vendor, if known.
    pub gpu_vendor: Option<String>,
    /// How the root file system is attached.
    pub storage_medium: Option<String>,
    /// What `featureset` reports: [`FEATURES`], plus `rauc` when built
    /// with the feature and RAUC is configured.
    pub featureset: Vec<String>,
}

impl DeviceFacts {
    /// Reads the facts from `src`.
    pub fn read(src: &Sources, public_key: Option<String>) -> Self {
        let gpu_vendor = gpu(src);
        Self {
            version: crate::VERSION.to_owned(),
            os_version: first_line(&src.os_version_file),
            device_type: first_line(&src.device_type_file),
            public_key,
            has_gpu: gpu_vendor.is_some(),
            gpu_vendor: gpu_vendor.filter(|v| !v.is_empty()),
            storage_medium: storage_medium(src),
            featureset: features(src),
        }
    }

    /// The v1 `GetAgentVersion` answer.
    pub fn v1(self) -> GetAgentVersionResponse {
        GetAgentVersionResponse {
            version: self.version,
            os_version: self.os_version,
            os: std::env::consts::OS.to_owned(),
            cpu_architecture: go_arch(std::env::consts::ARCH).to_owned(),
            public_key: self.public_key,
            featureset: self.featureset,
            device_type: self.device_type,
            has_gpu: Some(self.has_gpu),
            gpu_vendor: self.gpu_vendor,
            jetpack_version: None,
            cuda_version: None,
            storage_medium: self.storage_medium,
        }
    }

    /// The v2 `GetDeviceInfo` answer.
    pub fn v2(self) -> GetDeviceInfoResponse {
        GetDeviceInfoResponse {
            version: self.version,
            os_version: self.os_version,
            os: std::env::consts::OS.to_owned(),
            cpu_architecture: go_arch(std::env::consts::ARCH).to_owned(),
            public_key: self.public_key,
            featureset: self.featureset,
            device_type: self.device_type,
            has_gpu: Some(self.has_gpu),
            gpu_vendor: self.gpu_vendor,
            jetpack_version: None,
            cuda_version: None,
        }
    }
}

/// [`FEATURES`], plus the optional features that are compiled in and
/// usable on this system.
#[cfg_attr(not(feature = "rauc"), allow(unused_variables))]
fn features(src: &Sources) -> Vec<String> {
    let optional = [
        #[cfg(feature = "rauc")]
        ("rauc", src.rauc_system_conf.is_file()),
    ];
    let usable = optional.into_iter().filter(|(_, usable)| *usable).map(|(name, _)| name);
    FEATURES.iter().copied().chain(usable).map(str::to_owned).collect()
}

/// `Some(vendor)` if a DRM render device exists (vendor may be empty when
/// unknown), else `None`.
fn gpu(src: &Sources) -> Option<String> {
    let entries = std::fs::read_dir(src.sys.join("class/drm")).ok()?;
    let mut found = None;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("card") || name.contains('-') {
            continue;
        }
        let device = e.path().join("device");
        let vendor = first_line(&device.join("vendor")).and_then(|v| pci_vendor(&v).map(str::to_owned));
        let driver = std::fs::read_link(device.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let vendor = vendor.or_else(|| driver.as_deref().and_then(driver_vendor).map(str::to_owned));
        found = Some(vendor.unwrap_or_default());
        if found.as_deref().is_some_and(|v| !v.is_empty()) {
            break;
        }
    }
    found
}

fn pci_vendor(id: &str) -> Option<&'static str> {
    match id.trim().to_ascii_lowercase().as_str() {
        "0x10de" => Some("nvidia"),
        "0x1002" => Some("amd"),
        "0x8086" => Some("intel"),
        _ => None,
    }
}

fn driver_vendor(driver: &str) -> Option<&'static str> {
    match driver {
        "vc4-drm" | "vc4_v3d" | "v3d" | "vc4" => Some("broadcom"),
        "panfrost" | "lima" => Some("arm"),
        "nouveau" | "nvidia" | "tegra" => Some("nvidia"),
        "amdgpu" | "radeon" => Some("amd"),
        "i915" | "xe" => Some("intel"),
        "msm" => Some("qualcomm"),
        "etnaviv" => Some("vivante"),
        _ => None,
    }
}

/// The block device the root file system is on (`vda2`), from mountinfo.
fn root_device(src: &Sources) -> Option<String> {
    let text = std::fs::read_to_string(&src.mountinfo).ok()?;
    for line in text.lines() {
        // id parent major:minor root mountpoint ... - fstype source options
        let mut fields = line.split(' ');
        let majmin = fields.nth(2)?;
        let mountpoint = fields.nth(1)?;
        if mountpoint != "/" {
            continue;
        }
        let (_, source) = line.split_once(" - ")?;
        let source = source.split(' ').nth(1)?;
        if let Some(dev) = source.strip_prefix("/dev/") {
            return Some(dev.to_owned());
        }
        // Fall back on the device number (e.g. `/dev/root`).
        let link = std::fs::read_link(src.sys.join("dev/block").join(majmin)).ok()?;
        return link.file_name().map(|n| n.to_string_lossy().into_owned());
    }
    None
}

/// How the root device is attached: `sd`, `emmc`, `nvme`, `usb`, `virtio`,
/// `sata`, or `None` when unknown.
fn storage_medium(src: &Sources) -> Option<String> {
    let part = root_device(src)?;
    let part = part.rsplit('/').next()?.to_owned();
    // The disk a partition belongs to is its parent in /sys/class/block.
    let class = src.sys.join("class/block").join(&part);
    let disk = if class.join("partition").exists() {
        std::fs::canonicalize(&class).ok()?.parent()?.file_name()?.to_string_lossy().into_owned()
    } else {
        part
    };
    let block = src.sys.join("block").join(&disk);
    let path = std::fs::canonicalize(&block).ok().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let medium = if disk.starts_with("mmcblk") {
        match first_line(&block.join("device/type")).as_deref() {
            Some("MMC") => "emmc",
            _ => "sd",
        }
    } else if disk.starts_with("nvme") {
        "nvme"
    } else if disk.starts_with("vd") {
        "virtio"
    } else if path.contains("/usb") {
        "usb"
    } else if disk.starts_with("sd") {
        "sata"
    } else {
        return None;
    };
    Some(medium.to_owned())
}

/// Device-node families reported by `ListHardwareCapabilities`: category,
/// `/dev` sub-directory (or `""`), file-name prefix, description.
const NODES: &[(&str, &str, &str, &str)] = &[
    ("gpu", "dri", "card", "DRM graphics device"),
    ("gpio", "", "gpiochip", "GPIO controller"),
    ("i2c", "", "i2c-", "I2C bus"),
    ("spi", "", "spidev", "SPI device"),
    ("video", "", "video", "V4L2 video device"),
    ("audio", "snd", "pcm", "ALSA PCM device"),
    ("input", "input", "event", "input event device"),
    ("serial", "", "ttyUSB", "USB serial port"),
    ("serial", "", "ttyACM", "USB CDC-ACM serial port"),
];

/// The hardware this device has, optionally only `category`.
pub fn capabilities(src: &Sources, category: Option<&str>) -> Vec<HardwareCapability> {
    let wanted = |c: &str| category.is_none_or(|w| w.eq_ignore_ascii_case(c));
    let mut out = Vec::new();
    for (cat, dir, prefix, description) in NODES {
        if !wanted(cat) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(src.dev.join(dir)) else { continue };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        for name in names {
            let path = Path::new("/dev").join(dir).join(&name);
            out.push(HardwareCapability {
                category: (*cat).to_owned(),
                device_path: path.to_string_lossy().into_owned(),
                description: (*description).to_owned(),
                properties: HashMap::new(),
            });
        }
    }
    if wanted("usb") {
        out.extend(usb_devices(src));
    }
    if wanted("bluetooth") {
        if let Ok(entries) = std::fs::read_dir(src.sys.join("class/bluetooth")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                out.push(HardwareCapability {
                    category: "bluetooth".into(),
                    device_path: name,
                    description: "Bluetooth controller".into(),
                    properties: HashMap::new(),
                });
            }
        }
    }
    out
}

fn usb_devices(src: &Sources) -> Vec<HardwareCapability> {
    let Ok(entries) = std::fs::read_dir(src.sys.join("bus/usb/devices")) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let dir = e.path();
        let (Some(vendor), Some(product)) = (first_line(&dir.join("idVendor")), first_line(&dir.join("idProduct")))
        else {
            continue;
        };
        let mut properties = HashMap::from([("vendor_id".to_owned(), vendor), ("product_id".to_owned(), product)]);
        if let Some(name) = first_line(&dir.join("product")) {
            properties.insert("product".into(), name);
        }
        let description = properties.get("product").cloned().unwrap_or_else(|| "USB device".into());
        out.push(HardwareCapability {
            category: "usb".into(),
            device_path: e.file_name().to_string_lossy().into_owned(),
            description,
            properties,
        });
    }
    out.sort_by(|a, b| a.device_path.cmp(&b.device_path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, Sources) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let src = Sources {
            os_version_file: root.join("version.txt"),
            device_type_file: root.join("device-type"),
            sys: root.join("sys"),
            dev: root.join("dev"),
            mountinfo: root.join("mountinfo"),
            rauc_system_conf: root.join("rauc/system.conf"),
        };
        (t, src)
    }

    #[test]
    fn featureset_lists_rauc_only_when_configured() {
        let (_t, src) = fixture();
        let base: Vec<String> = FEATURES.iter().map(|f| (*f).to_owned()).collect();
        assert_eq!(DeviceFacts::read(&src, None).v1().featureset, base);
        std::fs::create_dir_all(src.rauc_system_conf.parent().unwrap()).unwrap();
        std::fs::write(&src.rauc_system_conf, "[system]\n").unwrap();
        let with = DeviceFacts::read(&src, None).v2().featureset;
        if cfg!(feature = "rauc") {
            assert_eq!(with.last().map(String::as_str), Some("rauc"));
            assert_eq!(with.len(), base.len() + 1);
        } else {
            assert_eq!(with, base);
        }
    }

    #[test]
    fn architectures_use_go_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("arm"), "arm");
    }

    #[test]
    fn absent_facts_stay_absent() {
        let (_t, src) = fixture();
        let v = DeviceFacts::read(&src, None).v1();
        assert_eq!((v.os_version, v.device_type, v.public_key, v.storage_medium), (None, None, None, None));
        assert_eq!(v.has_gpu, Some(false));
        assert!(capabilities(&src, None).is_empty());
    }

    #[test]
    fn root_on_virtio_and_a_gpu() {
        let (t, src) = fixture();
        let root = t.path();
        std::fs::write(&src.os_version_file, "1.2.3\n").unwrap();
        std::fs::write(&src.mountinfo, "22 1 254:2 / / rw,relatime shared:1 - ext4 /dev/vda2 rw\n").unwrap();
        let disk = root.join("sys/devices/pci0/virtio1/block/vda");
        std::fs::create_dir_all(disk.join("vda2")).unwrap();
        std::fs::write(disk.join("vda2/partition"), "2\n").unwrap();
        std::fs::create_dir_all(root.join("sys/class/block")).unwrap();
        std::fs::create_dir_all(root.join("sys/block")).unwrap();
        std::os::unix::fs::symlink(disk.join("vda2"), root.join("sys/class/block/vda2")).unwrap();
        std::os::unix::fs::symlink(&disk, root.join("sys/block/vda")).unwrap();
        std::fs::create_dir_all(root.join("sys/class/drm/card0/device")).unwrap();
        std::fs::write(root.join("sys/class/drm/card0/device/vendor"), "0x10de\n").unwrap();
        std::fs::create_dir_all(root.join("dev/dri")).unwrap();
        std::fs::write(root.join("dev/dri/card0"), "").unwrap();
        std::fs::write(root.join("dev/i2c-1"), "").unwrap();
        let v = DeviceFacts::read(&src, Some("pk".into())).v2();
        assert_eq!(v.os_version.as_deref(), Some("1.2.3"));
        assert_eq!((v.has_gpu, v.gpu_vendor.as_deref()), (Some(true), Some("nvidia")));
        assert_eq!(DeviceFacts::read(&src, None).storage_medium.as_deref(), Some("virtio"));
        let caps = capabilities(&src, None);
        let paths: Vec<_> = caps.iter().map(|c| (c.category.as_str(), c.device_path.as_str())).collect();
        assert_eq!(paths, vec![("gpu", "/dev/dri/card0"), ("i2c", "/dev/i2c-1")]);
        assert_eq!(capabilities(&src, Some("I2C")).len(), 1);
    }
}
