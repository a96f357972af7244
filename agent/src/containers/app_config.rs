//! The published app config, `wendy.json`, as the gRPC field `app_config`
//! carries it: parsed, validated, and reduced to what the device acts on.
//!
//! The format is WendyOS's (`wendy.schema.json` and `appconfig.go` in
//! wendylabsinc/wendy-agent): `appId` (required), `version`,
//! `entitlements` (objects tagged by `type`), `resources` (`memory`,
//! `cpus`, `pids`), `env`, `run.args` and `serviceName`. Keys that only the
//! CLI acts on (`hooks`, `files`, `readiness`, …; [`CLI_ONLY_KEYS`]) are
//! accepted and ignored; any other key is refused, as the published schema
//! does (`additionalProperties: false`).
//!
//! Entitlements: the twelve the device implements (`network`, `persist`,
//! `gpio`, `i2c`, `spi`, `usb`, `input`, `video`, `camera`, `audio`,
//! `bluetooth`, `gpu`) are parsed; the other published ones (`serial`,
//! `http`, `display`, …) and published options this device cannot honour
//! (network `bridge`, GPIO `pins`, …) are refused as unsupported, never
//! silently widened or dropped; anything else is unknown.
//!
//! Hostile input: at most [`MAX_CONFIG_BYTES`]; a key twice in one object
//! is refused (JSON parsers disagree on which wins); lists and strings are
//! capped; nothing panics. Every error names the field, as
//! `entitlements[2].type: unknown entitlement "foo"`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{is_safe_name, MAX_NAME_LEN};

/// The largest `wendy.json` accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// The most entitlements one app may list.
pub const MAX_ENTITLEMENTS: usize = 64;

/// The most `env` entries.
pub const MAX_ENV: usize = 256;

/// The most `run.args`.
pub const MAX_ARGS: usize = 256;

/// The longest string kept from the config (an env value, an argument).
pub const MAX_STRING: usize = 4096;

/// The longest container path (`persist` path), in bytes.
pub const MAX_PATH: usize = 1024;

/// The longest `version`.
const MAX_VERSION: usize = 128;

/// The smallest memory limit accepted: below it runc cannot even start the
/// app, and the failure would come later and less clearly.
pub const MIN_MEMORY_BYTES: u64 = 4 * 1024 * 1024;

/// The CFS period the `cpus` quota is expressed over, in microseconds
/// (100 ms, as the published schema says).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The smallest CPU quota accepted, in microseconds per period: the
/// kernel's minimum (1 ms), i.e. `cpus` ≥ 0.01.
const MIN_CPU_QUOTA_US: u64 = 1_000;

/// Digits kept after the decimal point of `cpus`: 10 µs of quota.
const CPU_FRACTION_DIGITS: usize = 5;

/// The largest `pids`, as published (the kernel's `PID_MAX_LIMIT`).
pub const MAX_PIDS: u32 = 4_194_304;

/// The longest `serviceName`, as published: `{serviceName}.local` stays a
/// DNS label.
const MAX_SERVICE_NAME: usize = 57;

/// Host trees a `persist` path may not be at or under: the sandbox mounts
/// its own `/proc`, `/sys` and `/dev` there.
pub const RESERVED_PATHS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Top-level keys of the published format that only the CLI acts on
/// (build, hooks, file sync, multi-service split, editor support): accepted
/// and ignored here. `debug` is among them: on this device it grants
/// nothing.
pub const CLI_ONLY_KEYS: [&str; 12] = [
    "$schema",
    "language",
    "xcode",
    "debug",
    "readiness",
    "hooks",
    "python",
    "files",
    "brewfile",
    "isolation",
    "frameworks",
    "services",
];

/// Published entitlement types that this device does not implement; they
/// are refused as unsupported rather than as unknown.
const UNSUPPORTED_ENTITLEMENTS: [&str; 8] =
    ["serial", "http", "mcp", "display", "notifications", "admin", "build", "profiling"];

/// Where a device node for `i2c` lives.
const I2C_PREFIX: &str = "/dev/i2c-";

/// File-name prefixes of camera (V4L2 / media controller) nodes in `/dev`,
/// for the `camera` and `video` entitlements and their `allowlist`.
pub const CAMERA_NODE_PREFIXES: [&str; 3] = ["video", "media", "v4l-subdev"];

/// Why a `wendy.json` was refused. `field` is the path to the offending
/// value, as `entitlements[2].type`; `wendy.json` means the whole document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Larger than [`MAX_CONFIG_BYTES`].
    #[error("wendy.json: {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Not JSON, or a key twice in one object.
    #[error("wendy.json: {0}")]
    Json(String),
    /// A required field is absent.
    #[error("{field}: required")]
    Missing {
        /// The field.
        field: String,
    },
    /// A field of the wrong JSON type.
    #[error("{field}: expected {expected}")]
    WrongType {
        /// The field.
        field: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A key the format does not have.
    #[error("{field}: unknown field")]
    UnknownField {
        /// The field.
        field: String,
    },
    /// An entitlement type nobody publishes.
    #[error("{field}: unknown entitlement \"{name}\"")]
    UnknownEntitlement {
        /// The `type` field.
        field: String,
        /// Its value.
        name: String,
    },
    /// Published, but not something this device does.
    #[error("{field}: not supported on this device: {reason}")]
    Unsupported {
        /// The field.
        field: String,
        /// What and why.
        reason: String,
    },
    /// The same entitlement twice.
    #[error("{field}: duplicate of {first}")]
    Duplicate {
        /// The second occurrence.
        field: String,
        /// The first.
        first: String,
    },
    /// A value outside its rules.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// The rule it breaks.
        reason: String,
    },
}

/// A validated app config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppConfig {
    /// `appId`: a safe name ([`is_safe_name`]).
    pub app_id: String,
    /// `serviceName`, for one service of a multi-service app.
    pub service_name: Option<String>,
    /// `version`; empty when absent (the published format makes it
    /// optional).
    pub version: String,
    /// `entitlements`, in order, without duplicates.
    pub entitlements: Vec<Entitlement>,
    /// `resources`.
    pub resources: Resources,
    /// `env`, added to (and overriding) the image's.
    pub env: BTreeMap<String, String>,
    /// `run.args`: when present, they replace the image's `Cmd`.
    pub args: Option<Vec<String>>,
}

impl AppConfig {
    /// The container id: `appId`, or `appId_serviceName` for a service of
    /// a multi-service app (as WendyOS names them). Always a safe name.
    pub fn container_id(&self) -> String {
        match &self.service_name {
            Some(service) => format!("{}_{service}", self.app_id),
            None => self.app_id.clone(),
        }
    }

    /// Whether an entitlement satisfies `pred`.
    pub fn has(&self, pred: impl Fn(&Entitlement) -> bool) -> bool {
        self.entitlements.iter().any(pred)
    }
}

/// The network an app gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// The host's network namespace (`mode` `host`, or no `mode`, as
    /// published).
    Host,
    /// Its own namespace with only loopback (`mode` `none`; also the
    /// default without a `network` entitlement).
    None,
}

/// One entitlement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entitlement {
    /// `network`.
    Network(NetworkMode),
    /// `persist`: the volume `name` (a safe name, on the data partition) at
    /// `path` in the app.
    Persist {
        /// The volume's name; apps that name the same volume share it.
        name: String,
        /// Where the app sees it: absolute, normalised, not under
        /// [`RESERVED_PATHS`].
        path: String,
    },
    /// `gpio`: the GPIO character devices (`/dev/gpiochip*`).
    Gpio,
    /// `i2c`: one bus, `device` normalised to `/dev/i2c-N`.
    I2c {
        /// The bus's device node.
        device: String,
    },
    /// `spi`: `/dev/spidev*`.
    Spi,
    /// `usb`: `/dev/bus/usb/**`.
    Usb,
    /// `input`: `/dev/input/*`.
    Input,
    /// `camera`, or the deprecated `video` (the same thing): V4L2 and media
    /// nodes, only those of `allowlist` when it is given.
    Camera {
        /// Device paths the app is limited to; empty for all cameras.
        allowlist: Vec<String>,
    },
    /// `audio`: `/dev/snd/*`.
    Audio,
    /// `bluetooth`: BlueZ over the system D-Bus (see the sandbox).
    Bluetooth,
    /// `gpu`: `/dev/dri/*`.
    Gpu,
}

impl Entitlement {
    /// The published `type` (`camera` for `video` too).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Network(_) => "network",
            Self::Persist { .. } => "persist",
            Self::Gpio => "gpio",
            Self::I2c { .. } => "i2c",
            Self::Spi => "spi",
            Self::Usb => "usb",
            Self::Input => "input",
            Self::Camera { .. } => "camera",
            Self::Audio => "audio",
            Self::Bluetooth => "bluetooth",
            Self::Gpu => "gpu",
        }
    }
}

/// `resources`: cgroup limits. `None` leaves a resource to the sandbox's
/// default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// `memory`, in bytes (at least [`MIN_MEMORY_BYTES`]).
    pub memory_bytes: Option<u64>,
    /// `cpus`, as a CFS quota in microseconds per [`CPU_PERIOD_US`].
    pub cpu_quota_us: Option<u64>,
    /// `pids`.
    pub pids: Option<u32>,
}

/// Parses and validates `wendy.json` bytes.
pub fn parse(bytes: &[u8]) -> Result<AppConfig, ConfigError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge { len: bytes.len(), max: MAX_CONFIG_BYTES });
    }
    let StrictValue(value) = serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
    let Value::Object(top) = value else {
        return Err(wrong_type("wendy.json", "an object"));
    };

    let mut app_id = None;
    let mut config = AppConfig {
        app_id: String::new(),
        service_name: None,
        version: String::new(),
        entitlements: Vec::new(),
        resources: Resources::default(),
        env: BTreeMap::new(),
        args: None,
    };
    for (key, value) in &top {
        match key.as_str() {
            "appId" => app_id = Some(parse_app_id(value)?),
            "serviceName" => config.service_name = Some(parse_service_name(value)?),
            "version" => config.version = parse_version(value)?,
            "platform" => check_platform(value)?,
            "entitlements" => config.entitlements = parse_entitlements(value)?,
            "resources" => config.resources = parse_resources(value)?,
            "env" => config.env = parse_env(value)?,
            "run" => config.args = parse_run(value)?,
            k if CLI_ONLY_KEYS.contains(&k) => {}
            _ => return Err(ConfigError::UnknownField { field: key.clone() }),
        }
    }
    config.app_id = app_id.ok_or_else(|| ConfigError::Missing { field: "appId".into() })?;
    if config.container_id().len() > MAX_NAME_LEN {
        return Err(invalid(
            "serviceName",
            format!("appId_serviceName is longer than the {MAX_NAME_LEN} bytes of a container id"),
        ));
    }
    Ok(config)
}

fn parse_app_id(value: &Value) -> Result<String, ConfigError> {
    let id = as_str(value, "appId")?;
    if !is_safe_name(id) {
        return Err(invalid("appId", safe_name_rule(id)));
    }
    Ok(id.to_owned())
}

fn parse_service_name(value: &Value) -> Result<String, ConfigError> {
    let name = as_str(value, "serviceName")?;
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_SERVICE_NAME
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.last() != Some(&b'-');
    if !ok {
        return Err(invalid(
            "serviceName",
            format!(
                "{:?} is not a lowercase DNS label (a-z first, then a-z, 0-9, '-', not ending in '-', at most {MAX_SERVICE_NAME})",
                clip(name)
            ),
        ));
    }
    Ok(name.to_owned())
}

fn parse_version(value: &Value) -> Result<String, ConfigError> {
    let version = as_str(value, "version")?;
    if version.len() > MAX_VERSION || version.chars().any(char::is_control) {
        return Err(invalid("version", format!("at most {MAX_VERSION} bytes, no control characters")));
    }
    Ok(version.to_owned())
}

fn check_platform(value: &Value) -> Result<(), ConfigError> {
    let platform = as_str(value, "platform")?;
    let family = platform.split('/').next().unwrap_or_default();
    match family {
        "linux" | "wendyos" => Ok(()),
        "wendy-lite" | "darwin" => Err(unsupported("platform", format!("{platform:?} apps do not run on WendyOS"))),
        _ => Err(invalid("platform", format!("unknown platform {:?}", clip(platform)))),
    }
}

fn parse_entitlements(value: &Value) -> Result<Vec<Entitlement>, ConfigError> {
    let items = as_array(value, "entitlements")?;
    if items.len() > MAX_ENTITLEMENTS {
        return Err(invalid("entitlements", format!("more than {MAX_ENTITLEMENTS} entries")));
    }
    let mut out: Vec<Entitlement> = Vec::with_capacity(items.len());
    // What makes two entitlements the same, and where the first one was.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("entitlements[{i}]");
        let entitlement = parse_entitlement(item, &at)?;
        for key in dedup_keys(&entitlement) {
            if let Some(first) = seen.get(&key) {
                return Err(ConfigError::Duplicate { field: at, first: first.clone() });
            }
            seen.insert(key, at.clone());
        }
        if let Entitlement::Persist { path, .. } = &entitlement {
            for (j, other) in out.iter().enumerate() {
                if let Entitlement::Persist { path: other_path, .. } = other {
                    if overlaps(path, other_path) {
                        return Err(invalid(
                            &format!("{at}.path"),
                            format!("{path:?} overlaps entitlements[{j}].path {other_path:?}"),
                        ));
                    }
                }
            }
        }
        out.push(entitlement);
    }
    Ok(out)
}

/// Keys under which an entitlement may appear once: the type for most; a
/// persist volume by name (its path is checked for overlap separately);
/// an i2c bus by device. `video` and `camera` are one thing.
fn dedup_keys(entitlement: &Entitlement) -> Vec<String> {
    match entitlement {
        Entitlement::Persist { name, .. } => vec![format!("persist:{name}")],
        Entitlement::I2c { device } => vec![format!("i2c:{device}")],
        other => vec![other.type_name().to_owned()],
    }
}

/// Whether one container path is the other or lies under it.
fn overlaps(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x.strip_prefix(y).is_some_and(|rest| rest.starts_with('/'));
    a == b || under(a, b) || under(b, a)
}

fn parse_entitlement(value: &Value, at: &str) -> Result<Entitlement, ConfigError> {
    let obj = as_object(value, at)?;
    let type_field = format!("{at}.type");
    let name = as_str(obj.get("type").ok_or_else(|| ConfigError::Missing { field: type_field.clone() })?, &type_field)?;
    let (allowed, unsupported_keys): (&[&str], &[&str]) = match name {
        "network" => (&["mode"], &["ports", "serviceCIDR"]),
        "persist" => (&["name", "path"], &[]),
        "gpio" => (&[], &["pins"]),
        "i2c" => (&["device"], &[]),
        "video" | "camera" => (&["allowlist"], &["mode", "user", "password"]),
        "bluetooth" => (&["mode"], &[]),
        "spi" | "usb" | "input" | "audio" | "gpu" => (&[], &[]),
        n if UNSUPPORTED_ENTITLEMENTS.contains(&n) => {
            return Err(unsupported(&type_field, format!("the {n:?} entitlement")));
        }
        n => return Err(ConfigError::UnknownEntitlement { field: type_field, name: clip(n).to_owned() }),
    };
    for key in obj.keys() {
        let field = format!("{at}.{key}");
        if unsupported_keys.contains(&key.as_str()) {
            return Err(unsupported_option(&field, name, key));
        }
        if key != "type" && !allowed.contains(&key.as_str()) {
            return Err(ConfigError::UnknownField { field });
        }
    }
    let field = |key: &str| format!("{at}.{key}");
    let required = |key: &str| obj.get(key).ok_or_else(|| ConfigError::Missing { field: field(key) });
    Ok(match name {
        "network" => Entitlement::Network(match obj.get("mode") {
            None => NetworkMode::Host,
            Some(mode) => match as_str(mode, &field("mode"))? {
                "host" => NetworkMode::Host,
                "none" => NetworkMode::None,
                m @ ("host-admin" | "bridge" | "mesh") => {
                    return Err(unsupported(&field("mode"), format!("network mode {m:?}")));
                }
                m => return Err(invalid(&field("mode"), format!("unknown network mode {:?}", clip(m)))),
            },
        }),
        "persist" => {
            let name = as_str(required("name")?, &field("name"))?;
            if !is_safe_name(name) {
                return Err(invalid(&field("name"), safe_name_rule(name)));
            }
            let path = as_str(required("path")?, &field("path"))?;
            check_container_path(path, &field("path"))?;
            Entitlement::Persist { name: name.to_owned(), path: path.to_owned() }
        }
        "gpio" => Entitlement::Gpio,
        "i2c" => Entitlement::I2c { device: parse_i2c_device(required("device")?, &field("device"))? },
        "spi" => Entitlement::Spi,
        "usb" => Entitlement::Usb,
        "input" => Entitlement::Input,
        "audio" => Entitlement::Audio,
        "gpu" => Entitlement::Gpu,
        "bluetooth" => {
            match obj.get("mode").map(|m| as_str(m, &field("mode"))).transpose()? {
                None | Some("bluez") => {}
                Some("kernel") => {
                    return Err(unsupported(
                        &field("mode"),
                        "bluetooth mode \"kernel\" (raw HCI sockets need the host network and CAP_NET_ADMIN)".into(),
                    ));
                }
                Some(m) => return Err(invalid(&field("mode"), format!("unknown bluetooth mode {:?}", clip(m)))),
            }
            Entitlement::Bluetooth
        }
        // "video" | "camera"
        _ => {
            let mut allowlist = Vec::new();
            if let Some(list) = obj.get("allowlist") {
                let items = as_array(list, &field("allowlist"))?;
                if items.len() > MAX_ENTITLEMENTS {
                    return Err(invalid(&field("allowlist"), format!("more than {MAX_ENTITLEMENTS} entries")));
                }
                for (k, item) in items.iter().enumerate() {
                    let item_field = format!("{at}.allowlist[{k}]");
                    let path = as_str(item, &item_field)?;
                    if !is_camera_node(path) {
                        return Err(invalid(
                            &item_field,
                            format!(
                                "{:?} is not a camera node (/dev/video*, /dev/media*, /dev/v4l-subdev*)",
                                clip(path)
                            ),
                        ));
                    }
                    if !allowlist.iter().any(|p: &String| p == path) {
                        allowlist.push(path.to_owned());
                    }
                }
            }
            Entitlement::Camera { allowlist }
        }
    })
}

/// Whether `path` is `/dev/<camera node>` with nothing odd in the name.
pub fn is_camera_node(path: &str) -> bool {
    path.strip_prefix("/dev/").is_some_and(|name| {
        CAMERA_NODE_PREFIXES.iter().any(|p| name.starts_with(p))
            && name.len() <= MAX_NAME_LEN
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// `i2c-N` or `/dev/i2c-N` (the published forms) → `/dev/i2c-N`.
fn parse_i2c_device(value: &Value, field: &str) -> Result<String, ConfigError> {
    let device = as_str(value, field)?;
    let bus = device.strip_prefix("/dev/").unwrap_or(device).strip_prefix("i2c-");
    match bus {
        Some(n) if !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(format!("{I2C_PREFIX}{n}"))
        }
        _ => Err(invalid(field, format!("{:?} is not an I2C bus (i2c-N or /dev/i2c-N)", clip(device)))),
    }
}

/// A path in the app: absolute, normalised (no empty, `.` or `..`
/// components, no trailing `/`), not `/`, printable, and not at or under a
/// [`RESERVED_PATHS`] tree.
pub fn check_container_path(path: &str, field: &str) -> Result<(), ConfigError> {
    let fail = |why: &str| Err(invalid(field, format!("{:?}: {why}", clip(path))));
    if path.len() > MAX_PATH {
        return fail(&format!("longer than {MAX_PATH} bytes"));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return fail("not absolute");
    };
    if rest.is_empty() {
        return fail("the root itself");
    }
    if path.chars().any(char::is_control) {
        return fail("control characters");
    }
    for component in rest.split('/') {
        match component {
            "" => return fail("empty component (// or a trailing /)"),
            "." | ".." => return fail("'.' or '..' component"),
            _ => {}
        }
    }
    if let Some(reserved) = RESERVED_PATHS.iter().find(|r| overlaps(path, r)) {
        return fail(&format!("overlaps {reserved}"));
    }
    Ok(())
}

fn parse_resources(value: &Value) -> Result<Resources, ConfigError> {
    let obj = as_object(value, "resources")?;
    let mut resources = Resources::default();
    for (key, value) in obj {
        let field = format!("resources.{key}");
        match key.as_str() {
            "memory" => resources.memory_bytes = Some(parse_memory(as_str(value, &field)?, &field)?),
            "cpus" => resources.cpu_quota_us = Some(parse_cpus(as_str(value, &field)?, &field)?),
            "pids" => {
                let pids = value.as_u64().ok_or_else(|| wrong_type(&field, "an integer"))?;
                match u32::try_from(pids) {
                    Ok(p) if (1..=MAX_PIDS).contains(&p) => resources.pids = Some(p),
                    _ => return Err(invalid(&field, format!("{pids} is not in 1..={MAX_PIDS}"))),
                }
            }
            _ => return Err(ConfigError::UnknownField { field }),
        }
    }
    Ok(resources)
}

/// `512Mi`, `1G`, `1048576`: bytes with an optional binary (`Ki`…`Ti`) or
/// decimal (`K`…`T`) suffix.
fn parse_memory(text: &str, field: &str) -> Result<u64, ConfigError> {
    let digits_end = text.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    let multiplier: u64 = match suffix {
        "" => 1,
        "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(invalid(field, format!("{:?} is not a size like \"512Mi\"", clip(text)))),
    };
    if digits.is_empty() {
        return Err(invalid(field, format!("{:?} is not a size like \"512Mi\"", clip(text))));
    }
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|b| i64::try_from(*b).is_ok())
        .ok_or_else(|| invalid(field, format!("{:?} is too large", clip(text))))?;
    if bytes < MIN_MEMORY_BYTES {
        return Err(invalid(field, format!("{bytes} bytes is less than the {MIN_MEMORY_BYTES} minimum")));
    }
    Ok(bytes)
}

/// `0.5`, `2`: cores, as microseconds of quota per [`CPU_PERIOD_US`].
fn parse_cpus(text: &str, field: &str) -> Result<u64, ConfigError> {
    let bad = || invalid(field, format!("{:?} is not a number of cores like \"1.5\"", clip(text)));
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || (text.contains('.') && fraction.is_empty()) {
        return Err(bad());
    }
    // At most 9999 cores: no overflow below.
    if whole.trim_start_matches('0').len() > 4 {
        return Err(invalid(field, format!("{:?} is too many cores", clip(text))));
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let mut micro = 0u64; // fraction, in units of 10^-CPU_FRACTION_DIGITS cores
    for b in fraction.bytes().chain(std::iter::repeat(b'0')).take(CPU_FRACTION_DIGITS) {
        micro = micro * 10 + u64::from(b - b'0');
    }
    let quota = whole * CPU_PERIOD_US + micro; // CPU_PERIOD_US = 10^CPU_FRACTION_DIGITS
    if quota < MIN_CPU_QUOTA_US {
        return Err(invalid(field, format!("{:?} is less than 0.01 cores", clip(text))));
    }
    Ok(quota)
}

fn parse_env(value: &Value) -> Result<BTreeMap<String, String>, ConfigError> {
    let obj = as_object(value, "env")?;
    if obj.len() > MAX_ENV {
        return Err(invalid("env", format!("more than {MAX_ENV} variables")));
    }
    let mut env = BTreeMap::new();
    for (key, value) in obj {
        let field = format!("env.{key}");
        if !is_env_name(key) {
            return Err(invalid(
                &format!("env.{}", clip(key)),
                "not a variable name (letters, digits, '_', not starting with a digit)".into(),
            ));
        }
        let value = as_str(value, &field)?;
        check_string(value, &field)?;
        env.insert(key.clone(), value.to_owned());
    }
    Ok(env)
}

/// A POSIX-portable environment variable name, at most 256 bytes.
pub fn is_env_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 256
        && !bytes[0].is_ascii_digit()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

fn parse_run(value: &Value) -> Result<Option<Vec<String>>, ConfigError> {
    let obj = as_object(value, "run")?;
    let mut args = None;
    for (key, value) in obj {
        match key.as_str() {
            "args" => {
                let items = as_array(value, "run.args")?;
                if items.len() > MAX_ARGS {
                    return Err(invalid("run.args", format!("more than {MAX_ARGS} arguments")));
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let field = format!("run.args[{i}]");
                    let arg = as_str(item, &field)?;
                    check_string(arg, &field)?;
                    out.push(arg.to_owned());
                }
                args = Some(out);
            }
            _ => return Err(ConfigError::UnknownField { field: format!("run.{key}") }),
        }
    }
    Ok(args)
}

/// A string handed to the process: no NUL (it would cut it short), capped.
fn check_string(value: &str, field: &str) -> Result<(), ConfigError> {
    if value.len() > MAX_STRING || value.contains('\0') {
        return Err(invalid(field, format!("at most {MAX_STRING} bytes, no NUL")));
    }
    Ok(())
}

fn safe_name_rule(name: &str) -> String {
    format!(
        "{:?} is not a safe name: letters and digits, joined by single '.', '_' or '-', 1 to {MAX_NAME_LEN} bytes",
        clip(name)
    )
}

fn unsupported_option(field: &str, entitlement: &str, key: &str) -> ConfigError {
    let reason = match (entitlement, key) {
        ("gpio", "pins") => "per-pin GPIO access (device access is per chip; omit pins to get the GPIO chips)".into(),
        ("network", _) => format!("network {key:?} (port publishing and mesh need a bridge network)"),
        (_, "user" | "password") => "IP camera credentials".into(),
        _ => format!("{entitlement} {key:?}"),
    };
    unsupported(field, reason)
}

fn unsupported(field: &str, reason: String) -> ConfigError {
    ConfigError::Unsupported { field: field.to_owned(), reason }
}

fn invalid(field: &str, reason: String) -> ConfigError {
    ConfigError::Invalid { field: field.to_owned(), reason }
}

fn wrong_type(field: &str, expected: &'static str) -> ConfigError {
    ConfigError::WrongType { field: field.to_owned(), expected }
}

fn as_str<'a>(value: &'a Value, field: &str) -> Result<&'a str, ConfigError> {
    value.as_str().ok_or_else(|| wrong_type(field, "a string"))
}

fn as_array<'a>(value: &'a Value, field: &str) -> Result<&'a Vec<Value>, ConfigError> {
    value.as_array().ok_or_else(|| wrong_type(field, "an array"))
}

fn as_object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    value.as_object().ok_or_else(|| wrong_type(field, "an object"))
}

/// The longest piece of input quoted back in an error.
const MAX_QUOTED: usize = 80;

/// `text` cut to [`MAX_QUOTED`] bytes on a character boundary, so an error
/// never echoes a huge value.
fn clip(text: &str) -> &str {
    if text.len() <= MAX_QUOTED {
        return text;
    }
    let mut cut = MAX_QUOTED;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// A JSON value that refuses a key twice in one object, at any depth.
/// Nesting is bounded by serde_json's recursion limit (128).
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(A::Error::custom(format_args!("duplicate key {:?}", clip(&key))));
            }
            let StrictValue(value) = map.next_value()?;
            obj.insert(key, value);
        }
        Ok(Value::Object(obj))
    }
}
