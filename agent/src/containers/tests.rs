//! Unit tests of the app config and the sandbox: every refusal, the
//! default sandbox, and each entitlement opening only what it names.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxDeviceType, LinuxNamespaceType, LinuxSeccompAction, LinuxSeccompOperator, Spec,
};

use super::app_config::{self, AppConfig, ConfigError, Entitlement, NetworkMode, MAX_CONFIG_BYTES};
use super::sandbox::{self, build_spec, DevFs, SandboxError, SandboxOptions, DEFAULT_CAPABILITIES};
use super::{is_safe_name, DeviceKind, HostDevice, HostDevices, ImageConfig, ProcessUser};

// ---- helpers ---------------------------------------------------------------

fn parse(json: &str) -> Result<AppConfig, ConfigError> {
    app_config::parse(json.as_bytes())
}

fn ok(json: &str) -> AppConfig {
    match parse(json) {
        Ok(c) => c,
        Err(e) => panic!("{json} refused: {e}"),
    }
}

/// The error message for `json`, which must be refused.
fn refused(json: &str) -> String {
    match parse(json) {
        Ok(c) => panic!("{json} accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// A config with these entitlements (JSON array items).
fn with(entitlements: &str) -> String {
    format!(r#"{{"appId":"com.example.app","version":"1.0.0","entitlements":[{entitlements}]}}"#)
}

fn with_resources(resources: &str) -> String {
    format!(r#"{{"appId":"a","resources":{resources}}}"#)
}

fn dev(path: &str, kind: DeviceKind, major: i64, minor: i64) -> HostDevice {
    HostDevice { path: PathBuf::from(path), kind, major, minor }
}

/// One or more nodes of every class, and some no entitlement names.
fn host_devices() -> Vec<HostDevice> {
    use DeviceKind::{Block, Char};
    vec![
        dev("/dev/null", Char, 1, 3),
        dev("/dev/mem", Char, 1, 1),
        dev("/dev/mmcblk0", Block, 179, 0),
        dev("/dev/ttyS0", Char, 4, 64),
        dev("/dev/gpiochip0", Char, 254, 0),
        dev("/dev/gpiochip1", Char, 254, 1),
        dev("/dev/i2c-0", Char, 89, 0),
        dev("/dev/i2c-1", Char, 89, 1),
        dev("/dev/spidev0.0", Char, 153, 0),
        dev("/dev/bus/usb/001/001", Char, 189, 0),
        dev("/dev/bus/usb/001/002", Char, 189, 1),
        dev("/dev/input/event0", Char, 13, 64),
        dev("/dev/input/mice", Char, 13, 63),
        dev("/dev/video0", Char, 81, 0),
        dev("/dev/video1", Char, 81, 1),
        dev("/dev/media0", Char, 237, 0),
        dev("/dev/v4l-subdev0", Char, 81, 2),
        dev("/dev/snd/controlC0", Char, 116, 0),
        dev("/dev/snd/pcmC0D0p", Char, 116, 16),
        dev("/dev/dri/card0", Char, 226, 0),
        dev("/dev/dri/renderD128", Char, 226, 128),
        dev("/dev/rfkill", Char, 10, 242),
        // What a hostile or buggy lister might return: never granted.
        dev("/dev/../etc/gpiochip9", Char, 254, 9),
        dev("dev/gpiochip8", Char, 254, 8),
        dev("/dev/./gpiochip7", Char, 254, 7),
    ]
}

fn image() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/app".into()],
        cmd: vec!["--serve".into()],
        env: vec!["PATH=/usr/bin:/bin".into(), "LANG=C.UTF-8".into()],
        working_dir: "/srv".into(),
        user: ProcessUser { uid: 1000, gid: 1000, additional_gids: vec![44] },
    }
}

fn options() -> SandboxOptions {
    SandboxOptions {
        rootfs: PathBuf::from("rootfs"),
        volumes_root: PathBuf::from("/data/wendy/volumes"),
        writable_rootfs: false,
    }
}

fn spec_for(json: &str) -> Spec {
    let config = ok(json);
    match build_spec(&config, &image(), &host_devices(), &options()) {
        Ok(spec) => spec,
        Err(e) => panic!("{json}: no spec: {e}"),
    }
}

fn device_paths(spec: &Spec) -> Vec<String> {
    let linux = spec.linux().as_ref().expect("linux");
    linux.devices().as_ref().map(|d| d.iter().map(|d| d.path().display().to_string()).collect()).unwrap_or_default()
}

fn namespaces(spec: &Spec) -> Vec<LinuxNamespaceType> {
    let linux = spec.linux().as_ref().expect("linux");
    linux.namespaces().as_ref().expect("namespaces").iter().map(|n| n.typ()).collect()
}

fn mount_destinations(spec: &Spec) -> Vec<String> {
    spec.mounts().as_ref().expect("mounts").iter().map(|m| m.destination().display().to_string()).collect()
}

// ---- safe names ------------------------------------------------------------

#[test]
fn safe_names() {
    for good in ["a", "com.example.app", "sh.wendy.examples.hellohttp", "hello-python-ai", "a_b", "A1", &"x".repeat(76)]
    {
        assert!(is_safe_name(good), "{good}");
    }
    for bad in
        ["", ".", "..", "...", ".a", "a.", "-a", "a-", "_a", "a..b", "a.-b", "a/b", "a b", "é", "a\0b", &"x".repeat(77)]
    {
        assert!(!is_safe_name(bad), "{bad:?}");
    }
}

// ---- the published format --------------------------------------------------

#[test]
fn minimal_config() {
    let c = ok(r#"{"appId":"com.example.app","version":"1.0.0"}"#);
    assert_eq!(c.app_id, "com.example.app");
    assert_eq!(c.version, "1.0.0");
    assert_eq!(c.container_id(), "com.example.app");
    assert!(c.entitlements.is_empty());
    assert_eq!(c.resources, app_config::Resources::default());
    assert!(c.env.is_empty() && c.args.is_none());
}

#[test]
fn version_is_optional_as_published() {
    assert_eq!(ok(r#"{"appId":"a"}"#).version, "");
}

#[test]
fn published_examples() {
    // wendylabsinc/wendy-agent Examples/HelloVideo/wendy.json and
    // Examples/PythonAI/wendy.json.
    let c = ok(r#"{
        "appId": "sh.wendy.examples.hellohttp", "version": "1.0.0", "language": "swift",
        "entitlements": [ { "type": "network", "mode": "host" }, { "type": "video" } ]
    }"#);
    assert_eq!(c.entitlements, [Entitlement::Network(NetworkMode::Host), Entitlement::Camera { allowlist: vec![] }]);
    let c = ok(r#"{
        "appId": "engineer.edge.examples.hello-python-ai", "version": "1.0.0",
        "entitlements": [ { "type": "network", "mode": "host" }, { "type": "audio" } ]
    }"#);
    assert_eq!(c.entitlements, [Entitlement::Network(NetworkMode::Host), Entitlement::Audio]);
}

#[test]
fn every_entitlement() {
    let c = ok(&with(
        r#"{"type":"network","mode":"none"},
           {"type":"persist","name":"data","path":"/data"},
           {"type":"gpio"},{"type":"i2c","device":"i2c-1"},{"type":"spi"},{"type":"usb"},
           {"type":"input"},{"type":"camera","allowlist":["/dev/video0"]},{"type":"audio"},
           {"type":"bluetooth","mode":"bluez"},{"type":"gpu"}"#,
    ));
    assert_eq!(
        c.entitlements,
        [
            Entitlement::Network(NetworkMode::None),
            Entitlement::Persist { name: "data".into(), path: "/data".into() },
            Entitlement::Gpio,
            Entitlement::I2c { device: "/dev/i2c-1".into() },
            Entitlement::Spi,
            Entitlement::Usb,
            Entitlement::Input,
            Entitlement::Camera { allowlist: vec!["/dev/video0".into()] },
            Entitlement::Audio,
            Entitlement::Bluetooth,
            Entitlement::Gpu,
        ]
    );
}

#[test]
fn network_without_mode_is_host_as_published() {
    assert_eq!(ok(&with(r#"{"type":"network"}"#)).entitlements, [Entitlement::Network(NetworkMode::Host)]);
}

#[test]
fn i2c_device_forms() {
    for form in ["i2c-3", "/dev/i2c-3"] {
        let c = ok(&with(&format!(r#"{{"type":"i2c","device":"{form}"}}"#)));
        assert_eq!(c.entitlements, [Entitlement::I2c { device: "/dev/i2c-3".into() }]);
    }
    // Two different buses are two entitlements.
    let c = ok(&with(r#"{"type":"i2c","device":"i2c-0"},{"type":"i2c","device":"i2c-1"}"#));
    assert_eq!(c.entitlements.len(), 2);
}

#[test]
fn cli_only_keys_are_ignored() {
    let c = ok(r#"{
        "$schema": "https://wendy.dev/schemas/wendy.json", "appId": "a", "platform": "linux/arm64",
        "language": "python", "debug": true, "readiness": {"tcpSocket": {"port": 8080}},
        "hooks": {"postStart": {"cli": "echo"}}, "python": {"sourceRoot": "src"},
        "files": [{"path": "x"}], "brewfile": "Brewfile", "isolation": "isolated",
        "frameworks": {"ros2": {}}, "services": {}, "xcode": {"scheme": "A"}
    }"#);
    assert!(c.entitlements.is_empty(), "debug grants nothing");
}

#[test]
fn service_name_names_the_container() {
    let c = ok(r#"{"appId":"com.example.app","serviceName":"web-1"}"#);
    assert_eq!(c.container_id(), "com.example.app_web-1");
    assert!(is_safe_name(&c.container_id()));
}

#[test]
fn resources() {
    let c = ok(&with_resources(r#"{"memory":"512Mi","cpus":"1.5","pids":64}"#));
    assert_eq!(c.resources.memory_bytes, Some(512 << 20));
    assert_eq!(c.resources.cpu_quota_us, Some(150_000));
    assert_eq!(c.resources.pids, Some(64));
    for (memory, bytes) in [("1G", 1_000_000_000u64), ("4194304", 4 << 20), ("1Ti", 1 << 40), ("5M", 5_000_000)] {
        let c = ok(&with_resources(&format!(r#"{{"memory":"{memory}"}}"#)));
        assert_eq!(c.resources.memory_bytes, Some(bytes), "{memory}");
    }
    for (cpus, quota) in [("2", 200_000u64), ("0.5", 50_000), ("0.01", 1_000), ("0.123456", 12_345), ("0002", 200_000)]
    {
        let c = ok(&with_resources(&format!(r#"{{"cpus":"{cpus}"}}"#)));
        assert_eq!(c.resources.cpu_quota_us, Some(quota), "{cpus}");
    }
}

#[test]
fn env_and_run_args() {
    let c = ok(r#"{"appId":"a","env":{"LOG_LEVEL":"debug","_X1":""},"run":{"args":["--port","8080"]}}"#);
    assert_eq!(c.env.get("LOG_LEVEL").map(String::as_str), Some("debug"));
    assert_eq!(c.env.len(), 2);
    assert_eq!(c.args, Some(vec!["--port".to_owned(), "8080".to_owned()]));
}

#[test]
fn repeated_camera_allowlist_entries_collapse() {
    let c = ok(&with(r#"{"type":"camera","allowlist":["/dev/video0","/dev/video0"]}"#));
    assert_eq!(c.entitlements, [Entitlement::Camera { allowlist: vec!["/dev/video0".into()] }]);
}

// ---- refusals: the document --------------------------------------------------

#[test]
fn refuses_oversized() {
    let mut json = String::from(r#"{"appId":"a","version":""#);
    json.push_str(&"x".repeat(MAX_CONFIG_BYTES));
    json.push_str(r#""}"#);
    assert!(matches!(parse(&json), Err(ConfigError::TooLarge { .. })));
}

#[test]
fn refuses_non_json() {
    for bad in ["", "{", "appId: a", "{\"appId\":\"a\",}", "\u{feff}{}", "{\"appId\":\"a\"} x"] {
        assert!(matches!(parse(bad), Err(ConfigError::Json(_))), "{bad:?}");
    }
    assert!(matches!(app_config::parse(&[0xff, 0xfe]), Err(ConfigError::Json(_))));
}

#[test]
fn refuses_deep_nesting_without_overflow() {
    let deep = format!(r#"{{"appId":"a","hooks":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(parse(&deep[..deep.len().min(MAX_CONFIG_BYTES)]), Err(ConfigError::Json(_))));
    let deep = format!(r#"{{"appId":"a","hooks":{}{}}}"#, "[".repeat(200), "]".repeat(200));
    assert!(matches!(parse(&deep), Err(ConfigError::Json(_))));
}

#[test]
fn refuses_duplicate_keys() {
    let msg = refused(r#"{"appId":"a","appId":"b"}"#);
    assert!(msg.contains(r#"duplicate key "appId""#), "{msg}");
    let msg = refused(&with(r#"{"type":"gpu","type":"network"}"#));
    assert!(msg.contains(r#"duplicate key "type""#), "{msg}");
}

#[test]
fn refuses_non_object() {
    for bad in ["[]", "\"a\"", "null", "1"] {
        assert_eq!(refused(bad), "wendy.json: expected an object");
    }
}

#[test]
fn refuses_missing_app_id() {
    assert_eq!(refused(r#"{"version":"1"}"#), "appId: required");
}

#[test]
fn refuses_bad_app_id() {
    assert_eq!(refused(r#"{"appId":1}"#), "appId: expected a string");
    for bad in ["", "..", "../etc", "a/b", "-rf", "a b", ".hidden", &"x".repeat(77)] {
        let msg = refused(&format!(r#"{{"appId":"{bad}"}}"#));
        assert!(msg.starts_with("appId: ") && msg.contains("not a safe name"), "{msg}");
    }
}

#[test]
fn refuses_bad_service_name() {
    for bad in ["Web", "1web", "web-", "we_b", "", &"a".repeat(58)] {
        let msg = refused(&format!(r#"{{"appId":"a","serviceName":"{bad}"}}"#));
        assert!(msg.starts_with("serviceName: "), "{msg}");
    }
    let long_id = "a".repeat(60);
    let msg = refused(&format!(r#"{{"appId":"{long_id}","serviceName":"{}"}}"#, "b".repeat(20)));
    assert!(msg.starts_with("serviceName: ") && msg.contains("container id"), "{msg}");
}

#[test]
fn refuses_bad_version() {
    assert_eq!(refused(r#"{"appId":"a","version":1}"#), "version: expected a string");
    assert!(refused(r#"{"appId":"a","version":"1\n2"}"#).starts_with("version: "));
    assert!(refused(&format!(r#"{{"appId":"a","version":"{}"}}"#, "1".repeat(129))).starts_with("version: "));
}

#[test]
fn refuses_foreign_platforms() {
    assert!(matches!(parse(r#"{"appId":"a","platform":"wendy-lite"}"#), Err(ConfigError::Unsupported { .. })));
    assert!(matches!(parse(r#"{"appId":"a","platform":"darwin"}"#), Err(ConfigError::Unsupported { .. })));
    assert!(refused(r#"{"appId":"a","platform":"windows"}"#).starts_with("platform: unknown platform"));
    assert_eq!(refused(r#"{"appId":"a","platform":3}"#), "platform: expected a string");
}

#[test]
fn refuses_unknown_top_level_field() {
    assert_eq!(refused(r#"{"appId":"a","privileged":true}"#), "privileged: unknown field");
}

// ---- refusals: entitlements ----------------------------------------------------

#[test]
fn refuses_unknown_entitlement_naming_it() {
    assert_eq!(
        refused(&with(r#"{"type":"network"},{"type":"gpu"},{"type":"foo"}"#)),
        r#"entitlements[2].type: unknown entitlement "foo""#
    );
}

#[test]
fn refuses_unsupported_published_entitlements() {
    for name in ["serial", "http", "mcp", "display", "notifications", "admin", "build", "profiling"] {
        let msg = refused(&with(&format!(r#"{{"type":"{name}"}}"#)));
        assert!(msg.starts_with("entitlements[0].type: not supported on this device"), "{msg}");
    }
}

#[test]
fn refuses_malformed_entitlements() {
    assert_eq!(refused(r#"{"appId":"a","entitlements":{}}"#), "entitlements: expected an array");
    assert_eq!(refused(&with(r#""gpu""#)), "entitlements[0]: expected an object");
    assert_eq!(refused(&with(r#"{"mode":"host"}"#)), "entitlements[0].type: required");
    assert_eq!(refused(&with(r#"{"type":7}"#)), "entitlements[0].type: expected a string");
    assert_eq!(refused(&with(r#"{"type":"gpu","all":true}"#)), "entitlements[0].all: unknown field");
    let many = vec![r#"{"type":"gpu"}"#; app_config::MAX_ENTITLEMENTS + 1].join(",");
    assert!(refused(&with(&many)).starts_with("entitlements: more than"));
}

#[test]
fn refuses_duplicate_entitlements() {
    assert_eq!(
        refused(&with(r#"{"type":"gpu"},{"type":"audio"},{"type":"gpu"}"#)),
        "entitlements[2]: duplicate of entitlements[0]"
    );
    // network twice, even with different modes: which would win is not obvious.
    assert_eq!(
        refused(&with(r#"{"type":"network","mode":"host"},{"type":"network","mode":"none"}"#)),
        "entitlements[1]: duplicate of entitlements[0]"
    );
    // video is the deprecated name of camera.
    assert_eq!(
        refused(&with(r#"{"type":"video"},{"type":"camera"}"#)),
        "entitlements[1]: duplicate of entitlements[0]"
    );
    assert_eq!(
        refused(&with(r#"{"type":"i2c","device":"i2c-1"},{"type":"i2c","device":"/dev/i2c-1"}"#)),
        "entitlements[1]: duplicate of entitlements[0]"
    );
    assert_eq!(
        refused(&with(r#"{"type":"persist","name":"d","path":"/a"},{"type":"persist","name":"d","path":"/b"}"#)),
        "entitlements[1]: duplicate of entitlements[0]"
    );
}

#[test]
fn refuses_network_modes_this_device_lacks() {
    for mode in ["host-admin", "bridge", "mesh"] {
        let msg = refused(&with(&format!(r#"{{"type":"network","mode":"{mode}"}}"#)));
        assert!(msg.starts_with("entitlements[0].mode: not supported"), "{msg}");
    }
    assert!(
        refused(&with(r#"{"type":"network","mode":"HOST"}"#)).starts_with("entitlements[0].mode: unknown network mode")
    );
    assert_eq!(refused(&with(r#"{"type":"network","mode":1}"#)), "entitlements[0].mode: expected a string");
    assert!(refused(&with(r#"{"type":"network","ports":[]}"#)).starts_with("entitlements[0].ports: not supported"));
    assert!(refused(&with(r#"{"type":"network","serviceCIDR":"10.0.0.0/8"}"#))
        .starts_with("entitlements[0].serviceCIDR: not supported"));
}

#[test]
fn refuses_bad_persist() {
    assert_eq!(refused(&with(r#"{"type":"persist","path":"/data"}"#)), "entitlements[0].name: required");
    assert_eq!(refused(&with(r#"{"type":"persist","name":"data"}"#)), "entitlements[0].path: required");
    assert_eq!(
        refused(&with(r#"{"type":"persist","name":["x"],"path":"/d"}"#)),
        "entitlements[0].name: expected a string"
    );
    for name in ["..", "a/b", "", ".x", "../../etc"] {
        let msg = refused(&with(&format!(r#"{{"type":"persist","name":"{name}","path":"/data"}}"#)));
        assert!(msg.starts_with("entitlements[0].name: ") && msg.contains("not a safe name"), "{msg}");
    }
    for path in [
        "data",
        "/",
        "",
        "/data/../etc",
        "/data/./x",
        "/data//x",
        "/data/",
        "/proc",
        "/proc/self",
        "/sys",
        "/sys/fs",
        "/dev",
        "/dev/shm",
        "/da\\u0000ta",
        "/da\\nta",
    ] {
        let msg = refused(&with(&format!(r#"{{"type":"persist","name":"data","path":"{path}"}}"#)));
        assert!(msg.starts_with("entitlements[0].path: "), "{path}: {msg}");
    }
    let long = format!("/{}", "a".repeat(app_config::MAX_PATH));
    assert!(refused(&with(&format!(r#"{{"type":"persist","name":"d","path":"{long}"}}"#))).contains("longer than"));
    // Similar-looking but fine.
    ok(&with(r#"{"type":"persist","name":"d","path":"/devices"}"#));
    ok(&with(r#"{"type":"persist","name":"d","path":"/var/lib/proc"}"#));
}

#[test]
fn refuses_overlapping_persist_paths() {
    let msg = refused(&with(
        r#"{"type":"persist","name":"a","path":"/data"},{"type":"persist","name":"b","path":"/data/sub"}"#,
    ));
    assert!(msg.starts_with("entitlements[1].path: ") && msg.contains("overlaps entitlements[0].path"), "{msg}");
    let msg =
        refused(&with(r#"{"type":"persist","name":"a","path":"/data"},{"type":"persist","name":"b","path":"/data"}"#));
    assert!(msg.starts_with("entitlements[1].path: "), "{msg}");
    ok(&with(r#"{"type":"persist","name":"a","path":"/data"},{"type":"persist","name":"b","path":"/data2"}"#));
}

#[test]
fn refuses_gpio_pins() {
    let msg = refused(&with(r#"{"type":"gpio","pins":[4]}"#));
    assert!(msg.starts_with("entitlements[0].pins: not supported") && msg.contains("per-pin"), "{msg}");
}

#[test]
fn refuses_bad_i2c() {
    assert_eq!(refused(&with(r#"{"type":"i2c"}"#)), "entitlements[0].device: required");
    for device in ["i2c", "i2c-", "i2c-x", "/dev/i2c-1/../mem", "/dev/mem", "i2c-12345", "/etc/i2c-1"] {
        let msg = refused(&with(&format!(r#"{{"type":"i2c","device":"{device}"}}"#)));
        assert!(msg.starts_with("entitlements[0].device: ") && msg.contains("not an I2C bus"), "{msg}");
    }
}

#[test]
fn refuses_bad_camera() {
    for entry in ["/dev/mem", "video0", "/dev/video0/../mem", "/dev/../dev/video0", "/dev/snd/pcm"] {
        let msg = refused(&with(&format!(r#"{{"type":"camera","allowlist":["{entry}"]}}"#)));
        assert!(msg.starts_with("entitlements[0].allowlist[0]: ") && msg.contains("not a camera node"), "{msg}");
    }
    assert_eq!(
        refused(&with(r#"{"type":"camera","allowlist":"/dev/video0"}"#)),
        "entitlements[0].allowlist: expected an array"
    );
    assert_eq!(
        refused(&with(r#"{"type":"video","allowlist":[1]}"#)),
        "entitlements[0].allowlist[0]: expected a string"
    );
    for key in ["user", "password", "mode"] {
        let msg = refused(&with(&format!(r#"{{"type":"camera","{key}":"x"}}"#)));
        assert!(msg.starts_with(&format!("entitlements[0].{key}: not supported")), "{msg}");
    }
}

#[test]
fn refuses_bluetooth_kernel_mode() {
    assert!(
        refused(&with(r#"{"type":"bluetooth","mode":"kernel"}"#)).starts_with("entitlements[0].mode: not supported")
    );
    assert!(refused(&with(r#"{"type":"bluetooth","mode":"raw"}"#))
        .starts_with("entitlements[0].mode: unknown bluetooth mode"));
}

// ---- refusals: resources, env, run ------------------------------------------------

#[test]
fn refuses_bad_resources() {
    assert_eq!(refused(r#"{"appId":"a","resources":[]}"#), "resources: expected an object");
    assert_eq!(refused(&with_resources(r#"{"disk":"1G"}"#)), "resources.disk: unknown field");
    assert_eq!(refused(&with_resources(r#"{"memory":512}"#)), "resources.memory: expected a string");
    for memory in ["", "Mi", "512mb", "512 Mi", "-1", "1.5G", "99999999999999999999", "16Ti0", "9000000Ti"] {
        let msg = refused(&with_resources(&format!(r#"{{"memory":"{memory}"}}"#)));
        assert!(msg.starts_with("resources.memory: "), "{memory}: {msg}");
    }
    assert!(refused(&with_resources(r#"{"memory":"1Mi"}"#)).contains("minimum"));
    assert_eq!(refused(&with_resources(r#"{"cpus":1}"#)), "resources.cpus: expected a string");
    for cpus in
        ["", ".5", "1.", "1.2.3", "-1", "1e3", "one", "0", "0.001", "0.00999", "10000", "99999999999999999999999"]
    {
        let msg = refused(&with_resources(&format!(r#"{{"cpus":"{cpus}"}}"#)));
        assert!(msg.starts_with("resources.cpus: "), "{cpus}: {msg}");
    }
    for pids in ["0", "4194305", "-1", "18446744073709551616"] {
        let msg = refused(&with_resources(&format!(r#"{{"pids":{pids}}}"#)));
        assert!(msg.starts_with("resources.pids: "), "{pids}: {msg}");
    }
    assert_eq!(refused(&with_resources(r#"{"pids":"12"}"#)), "resources.pids: expected an integer");
    assert_eq!(refused(&with_resources(r#"{"pids":1.5}"#)), "resources.pids: expected an integer");
}

#[test]
fn refuses_bad_env() {
    assert_eq!(refused(r#"{"appId":"a","env":["A=1"]}"#), "env: expected an object");
    for key in ["1A", "A-B", "A=B", "", "Ä"] {
        let msg = refused(&format!(r#"{{"appId":"a","env":{{"{key}":"x"}}}}"#));
        assert!(msg.starts_with("env.") && msg.contains("not a variable name"), "{key}: {msg}");
    }
    assert_eq!(refused(r#"{"appId":"a","env":{"A":1}}"#), "env.A: expected a string");
    assert!(refused(r#"{"appId":"a","env":{"A":"x\u0000y"}}"#).starts_with("env.A: "));
    let many: Vec<String> = (0..=app_config::MAX_ENV).map(|i| format!(r#""V{i}":"""#)).collect();
    assert!(refused(&format!(r#"{{"appId":"a","env":{{{}}}}}"#, many.join(","))).starts_with("env: more than"));
}

#[test]
fn refuses_bad_run() {
    assert_eq!(refused(r#"{"appId":"a","run":[]}"#), "run: expected an object");
    assert_eq!(refused(r#"{"appId":"a","run":{"args":"x"}}"#), "run.args: expected an array");
    assert_eq!(refused(r#"{"appId":"a","run":{"args":[1]}}"#), "run.args[0]: expected a string");
    assert!(refused(r#"{"appId":"a","run":{"args":["a\u0000"]}}"#).starts_with("run.args[0]: "));
    assert_eq!(refused(r#"{"appId":"a","run":{"cmd":[]}}"#), "run.cmd: unknown field");
    let many = vec![r#""x""#; app_config::MAX_ARGS + 1].join(",");
    assert!(refused(&format!(r#"{{"appId":"a","run":{{"args":[{many}]}}}}"#)).starts_with("run.args: more than"));
}

#[test]
fn errors_quote_input_clipped() {
    let long = "f".repeat(10_000);
    let msg = refused(&with(&format!(r#"{{"type":"{long}"}}"#)));
    assert!(msg.len() < 200, "{}", msg.len());
}

// ---- the sandbox: defaults ---------------------------------------------------------

#[test]
fn default_sandbox() {
    let spec = spec_for(r#"{"appId":"com.example.app"}"#);
    let linux = spec.linux().as_ref().expect("linux");

    // Own network namespace (loopback only), and the others.
    let ns = namespaces(&spec);
    for typ in [
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ] {
        assert!(ns.contains(&typ), "{typ:?}");
    }
    assert!(!ns.contains(&LinuxNamespaceType::User), "runc cannot map ids it was not given");

    // No host devices: no nodes, and the device cgroup denies all.
    assert!(device_paths(&spec).is_empty());
    let rules = linux.resources().as_ref().and_then(|r| r.devices().clone()).expect("device rules");
    assert_eq!(rules.len(), 1);
    assert!(!rules[0].allow());
    assert_eq!(rules[0].access().as_deref(), Some("rwm"));
    assert!(rules[0].major().is_none() && rules[0].minor().is_none());

    // Read-only root, with a writable /tmp and /run.
    let root = spec.root().as_ref().expect("root");
    assert_eq!(root.readonly(), Some(true));
    assert_eq!(root.path(), Path::new("rootfs"));
    let mounts = mount_destinations(&spec);
    for m in ["/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/tmp", "/run"] {
        assert!(mounts.contains(&m.to_owned()), "{m}");
    }
    assert!(!mounts.contains(&"/etc/resolv.conf".to_owned()));
    assert!(!spec.mounts().as_ref().expect("mounts").iter().any(|m| m.typ().as_deref() == Some("bind")));

    // no_new_privs and the minimal capabilities.
    let process = spec.process().as_ref().expect("process");
    assert_eq!(process.no_new_privileges(), Some(true));
    let caps = process.capabilities().as_ref().expect("caps");
    for set in [caps.bounding(), caps.effective(), caps.permitted()] {
        let set = set.as_ref().expect("set");
        assert_eq!(set.len(), DEFAULT_CAPABILITIES.len());
        assert!(DEFAULT_CAPABILITIES.iter().all(|c| set.contains(c)));
        for dangerous in
            [Capability::SysAdmin, Capability::NetAdmin, Capability::NetRaw, Capability::SysPtrace, Capability::Mknod]
        {
            assert!(!set.contains(&dangerous), "{dangerous:?}");
        }
    }
    assert!(caps.inheritable().as_ref().is_some_and(|s| s.is_empty()));
    assert!(caps.ambient().as_ref().is_some_and(|s| s.is_empty()));

    // Seccomp: ptrace and unshare denied with EPERM.
    assert_denied(&spec, "ptrace", libc::EPERM);
    assert_denied(&spec, "unshare", libc::EPERM);
    for name in [
        "setns",
        "mount",
        "umount2",
        "pivot_root",
        "kexec_load",
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
    ] {
        assert_denied(&spec, name, libc::EPERM);
    }
    for name in ["clone3", "io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert_denied(&spec, name, libc::ENOSYS);
    }

    // Masked and read-only paths, pids cap, no memory/CPU limit.
    let masked = linux.masked_paths().as_ref().expect("masked");
    assert!(masked.contains(&"/proc/kcore".to_owned()) && masked.contains(&"/sys/firmware".to_owned()));
    assert!(linux.readonly_paths().as_ref().expect("ro").contains(&"/proc/sys".to_owned()));
    let resources = linux.resources().as_ref().expect("resources");
    assert_eq!(resources.pids().as_ref().map(|p| p.limit()), Some(sandbox::DEFAULT_PIDS_LIMIT));
    assert!(resources.memory().is_none() && resources.cpu().is_none());

    assert_eq!(spec.hostname().as_deref(), Some("com.example.app"));
}

fn assert_denied(spec: &Spec, name: &str, errno: i32) {
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()).expect("seccomp");
    assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
    let rule = seccomp
        .syscalls()
        .as_ref()
        .and_then(|s| s.iter().find(|r| r.names().iter().any(|n| n == name)))
        .unwrap_or_else(|| panic!("{name} not in the profile"));
    assert_eq!(rule.action(), LinuxSeccompAction::ScmpActErrno, "{name}");
    assert_eq!(rule.errno_ret(), Some(errno.unsigned_abs()), "{name}");
    assert!(rule.args().is_none(), "{name} is denied whatever its arguments");
}

#[test]
fn seccomp_covers_the_boards_and_filters_clone_namespaces() {
    let seccomp = sandbox::seccomp().expect("seccomp");
    let arches = seccomp.architectures().as_ref().expect("arches");
    use oci_spec::runtime::Arch;
    for arch in [Arch::ScmpArchAarch64, Arch::ScmpArchArm, Arch::ScmpArchX86_64] {
        assert!(arches.contains(&arch), "{arch:?}");
    }
    let syscalls = seccomp.syscalls().as_ref().expect("syscalls");
    let clone_rules: Vec<_> = syscalls.iter().filter(|r| r.names() == &["clone".to_owned()]).collect();
    assert_eq!(clone_rules.len(), sandbox::CLONE_NAMESPACE_FLAGS.len());
    let newuser = libc::CLONE_NEWUSER as u64;
    let rule = clone_rules
        .iter()
        .find(|r| r.args().as_ref().is_some_and(|a| a.len() == 1 && a[0].value() == newuser))
        .expect("CLONE_NEWUSER rule");
    let arg = rule.args().as_ref().expect("args")[0];
    assert_eq!(arg.index(), 0);
    assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
    assert_eq!(arg.value_two(), Some(newuser));
    assert_eq!(rule.action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(rule.errno_ret(), Some(libc::EPERM.unsigned_abs()));
}

#[test]
fn spec_serialises_as_oci_json() {
    let spec = spec_for(&with(r#"{"type":"gpu"},{"type":"persist","name":"data","path":"/data"}"#));
    let json = serde_json::to_value(&spec).expect("json");
    assert_eq!(json["process"]["noNewPrivileges"], true);
    assert_eq!(json["root"]["readonly"], true);
    assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
    assert!(json["linux"]["namespaces"].as_array().expect("ns").iter().any(|n| n["type"] == "network"));
    let back: Spec = serde_json::from_value(json).expect("round trip");
    assert_eq!(back, spec);
}

// ---- the sandbox: entitlements ---------------------------------------------------

#[test]
fn network_host_drops_the_network_namespace_only() {
    let spec = spec_for(&with(r#"{"type":"network","mode":"host"}"#));
    let ns = namespaces(&spec);
    assert!(!ns.contains(&LinuxNamespaceType::Network));
    assert!(ns.contains(&LinuxNamespaceType::Pid) && ns.contains(&LinuxNamespaceType::Mount));
    let resolv =
        spec.mounts().as_ref().expect("mounts").iter().find(|m| m.destination() == Path::new("/etc/resolv.conf"));
    let resolv = resolv.expect("resolv.conf");
    assert!(resolv.options().as_ref().expect("options").contains(&"ro".to_owned()));
    assert!(device_paths(&spec).is_empty());
    let caps = spec.process().as_ref().and_then(|p| p.capabilities().clone()).expect("caps");
    assert!(!caps.effective().as_ref().expect("eff").contains(&Capability::NetAdmin));
}

#[test]
fn network_none_keeps_the_namespace() {
    let spec = spec_for(&with(r#"{"type":"network","mode":"none"}"#));
    assert!(namespaces(&spec).contains(&LinuxNamespaceType::Network));
}

#[test]
fn each_device_entitlement_opens_only_its_nodes() {
    let cases: [(&str, &[&str]); 10] = [
        (r#"{"type":"gpio"}"#, &["/dev/gpiochip0", "/dev/gpiochip1"]),
        (r#"{"type":"i2c","device":"i2c-1"}"#, &["/dev/i2c-1"]),
        (r#"{"type":"spi"}"#, &["/dev/spidev0.0"]),
        (r#"{"type":"usb"}"#, &["/dev/bus/usb/001/001", "/dev/bus/usb/001/002"]),
        (r#"{"type":"input"}"#, &["/dev/input/event0", "/dev/input/mice"]),
        (r#"{"type":"camera"}"#, &["/dev/media0", "/dev/v4l-subdev0", "/dev/video0", "/dev/video1"]),
        (r#"{"type":"video"}"#, &["/dev/media0", "/dev/v4l-subdev0", "/dev/video0", "/dev/video1"]),
        (r#"{"type":"camera","allowlist":["/dev/video1","/dev/video7"]}"#, &["/dev/video1"]),
        (r#"{"type":"audio"}"#, &["/dev/snd/controlC0", "/dev/snd/pcmC0D0p"]),
        (r#"{"type":"gpu"}"#, &["/dev/dri/card0", "/dev/dri/renderD128"]),
    ];
    for (entitlement, expected) in cases {
        let spec = spec_for(&with(entitlement));
        assert_eq!(device_paths(&spec), *expected, "{entitlement}");

        // The device cgroup: deny all, then exactly these nodes, rw only.
        let linux = spec.linux().as_ref().expect("linux");
        let rules = linux.resources().as_ref().and_then(|r| r.devices().clone()).expect("rules");
        assert!(!rules[0].allow());
        assert_eq!(rules.len(), expected.len() + 1, "{entitlement}");
        for (rule, node) in rules[1..].iter().zip(linux.devices().as_ref().expect("devices")) {
            assert!(rule.allow());
            assert_eq!(rule.access().as_deref(), Some("rw"), "no mknod");
            assert_eq!((rule.major(), rule.minor()), (Some(node.major()), Some(node.minor())));
            assert_eq!(rule.typ(), Some(LinuxDeviceType::C));
        }
        // Devices open nothing else.
        assert!(namespaces(&spec).contains(&LinuxNamespaceType::Network), "{entitlement}");
        assert!(!spec.mounts().as_ref().expect("mounts").iter().any(|m| m.typ().as_deref() == Some("bind")));
    }
}

#[test]
fn block_devices_keep_their_type() {
    let config = ok(&with(r#"{"type":"usb"}"#));
    let devices = vec![dev("/dev/bus/usb/002/001", DeviceKind::Block, 8, 0)];
    let spec = build_spec(&config, &image(), &devices, &options()).expect("spec");
    let linux = spec.linux().as_ref().expect("linux");
    assert_eq!(linux.devices().as_ref().expect("devices")[0].typ(), LinuxDeviceType::B);
}

#[test]
fn device_entitlements_without_nodes_map_nothing() {
    let config = ok(&with(r#"{"type":"gpu"},{"type":"gpio"},{"type":"i2c","device":"i2c-9"},{"type":"audio"}"#));
    let none: Vec<HostDevice> = vec![dev("/dev/null", DeviceKind::Char, 1, 3)];
    let spec = build_spec(&config, &image(), &none, &options()).expect("spec");
    assert!(device_paths(&spec).is_empty());
    // And with the full host list, i2c-9 (absent) maps nothing.
    let spec = spec_for(&with(r#"{"type":"i2c","device":"i2c-9"}"#));
    assert!(device_paths(&spec).is_empty());
}

#[test]
fn odd_paths_from_the_lister_are_never_granted() {
    let spec = spec_for(&with(r#"{"type":"gpio"}"#));
    let paths = device_paths(&spec);
    assert!(paths.iter().all(|p| !p.contains("..") && !p.contains("/./") && p.starts_with("/dev/")), "{paths:?}");
    // Listed twice: granted once.
    let config = ok(&with(r#"{"type":"gpio"}"#));
    let twice = vec![dev("/dev/gpiochip0", DeviceKind::Char, 254, 0), dev("/dev/gpiochip0", DeviceKind::Char, 254, 0)];
    assert_eq!(sandbox::entitled_devices(&config, &twice).len(), 1);
}

#[test]
fn persist_binds_its_volume_only() {
    let spec = spec_for(&with(
        r#"{"type":"persist","name":"data","path":"/data"},{"type":"persist","name":"cache","path":"/var/cache/app"}"#,
    ));
    let binds: Vec<_> =
        spec.mounts().as_ref().expect("mounts").iter().filter(|m| m.typ().as_deref() == Some("bind")).collect();
    assert_eq!(binds.len(), 2);
    assert_eq!(binds[0].destination(), Path::new("/data"));
    assert_eq!(binds[0].source().as_deref(), Some(Path::new("/data/wendy/volumes/data")));
    assert_eq!(binds[1].destination(), Path::new("/var/cache/app"));
    assert_eq!(binds[1].source().as_deref(), Some(Path::new("/data/wendy/volumes/cache")));
    let opts = binds[0].options().as_ref().expect("options");
    for o in ["rw", "nosuid", "nodev"] {
        assert!(opts.contains(&o.to_owned()), "{o}");
    }
    assert!(device_paths(&spec).is_empty());
    assert!(namespaces(&spec).contains(&LinuxNamespaceType::Network));
    assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(true));
}

#[test]
fn bluetooth_is_the_system_bus_for_a_non_root_app() {
    let spec = spec_for(&with(r#"{"type":"bluetooth"}"#));
    let binds: Vec<_> =
        spec.mounts().as_ref().expect("mounts").iter().filter(|m| m.typ().as_deref() == Some("bind")).collect();
    assert_eq!(binds.len(), 1);
    assert_eq!(binds[0].destination(), Path::new(sandbox::SYSTEM_BUS_SOCKET));
    assert!(device_paths(&spec).is_empty(), "no /dev/rfkill, no HCI");
    assert!(namespaces(&spec).contains(&LinuxNamespaceType::Network));
    let caps = spec.process().as_ref().and_then(|p| p.capabilities().clone()).expect("caps");
    assert_eq!(caps.effective().as_ref().expect("eff").len(), DEFAULT_CAPABILITIES.len());

    let config = ok(&with(r#"{"type":"bluetooth"}"#));
    let root_image = ImageConfig { user: ProcessUser::default(), ..image() };
    assert!(matches!(
        build_spec(&config, &root_image, &host_devices(), &options()),
        Err(SandboxError::BluetoothAsRoot)
    ));
}

#[test]
fn resources_become_cgroup_limits() {
    let spec = spec_for(&with_resources(r#"{"memory":"256Mi","cpus":"0.5","pids":100}"#));
    let resources = spec.linux().as_ref().and_then(|l| l.resources().clone()).expect("resources");
    let memory = resources.memory().expect("memory");
    assert_eq!(memory.limit(), Some(256 << 20));
    assert_eq!(memory.swap(), Some(256 << 20), "no swap on top");
    let cpu = resources.cpu().as_ref().expect("cpu");
    assert_eq!(cpu.quota(), Some(50_000));
    assert_eq!(cpu.period(), Some(app_config::CPU_PERIOD_US));
    assert_eq!(resources.pids().as_ref().map(|p| p.limit()), Some(100));
}

// ---- the sandbox: the process ------------------------------------------------------

#[test]
fn process_from_the_image() {
    let spec = spec_for(r#"{"appId":"a","env":{"LANG":"en_US.UTF-8","MODE":"prod"}}"#);
    let process = spec.process().as_ref().expect("process");
    assert_eq!(process.args().as_deref(), Some(&["/app".to_owned(), "--serve".to_owned()][..]));
    let env = process.env().as_ref().expect("env");
    assert!(env.contains(&"PATH=/usr/bin:/bin".to_owned()));
    assert!(env.contains(&"LANG=en_US.UTF-8".to_owned()) && !env.contains(&"LANG=C.UTF-8".to_owned()));
    assert!(env.contains(&"MODE=prod".to_owned()));
    assert_eq!(process.cwd(), Path::new("/srv"));
    assert_eq!((process.user().uid(), process.user().gid()), (1000, 1000));
    assert_eq!(process.user().additional_gids().as_deref(), Some(&[44u32][..]));
    assert_eq!(process.terminal(), Some(false));
}

#[test]
fn run_args_replace_cmd_and_defaults_fill_gaps() {
    let config = ok(r#"{"appId":"a","run":{"args":["--port","9"]}}"#);
    let bare = ImageConfig { env: vec![], working_dir: String::new(), ..image() };
    let spec = build_spec(&config, &bare, &host_devices(), &options()).expect("spec");
    let process = spec.process().as_ref().expect("process");
    assert_eq!(process.args().as_deref(), Some(&["/app".to_owned(), "--port".to_owned(), "9".to_owned()][..]));
    assert_eq!(process.env().as_deref(), Some(&[sandbox::DEFAULT_PATH.to_owned()][..]));
    assert_eq!(process.cwd(), Path::new("/"));
}

#[test]
fn refuses_unrunnable_processes() {
    let config = ok(r#"{"appId":"a"}"#);
    let devices = host_devices();
    let build = |image: ImageConfig| build_spec(&config, &image, &devices, &options());
    let nothing = ImageConfig { entrypoint: vec![], cmd: vec![], ..image() };
    assert!(matches!(build(nothing), Err(SandboxError::NoCommand)));
    for dir in ["srv", "/s\0rv"] {
        assert!(matches!(
            build(ImageConfig { working_dir: dir.into(), ..image() }),
            Err(SandboxError::BadWorkingDir(_))
        ));
    }
    for entry in ["NOEQUALS", "=x", "A=\0"] {
        assert!(matches!(build(ImageConfig { env: vec![entry.into()], ..image() }), Err(SandboxError::BadImageEnv(_))));
    }
    assert!(matches!(build(ImageConfig { cmd: vec!["a\0b".into()], ..image() }), Err(SandboxError::BadArgument)));
    let relative = SandboxOptions { volumes_root: PathBuf::from("volumes"), ..options() };
    assert!(matches!(build_spec(&config, &image(), &devices, &relative), Err(SandboxError::NotAbsolute(_))));
}

#[test]
fn writable_root_only_when_the_caller_says() {
    let config = ok(r#"{"appId":"a"}"#);
    let writable = SandboxOptions { writable_rootfs: true, ..options() };
    let spec = build_spec(&config, &image(), &host_devices(), &writable).expect("spec");
    assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(false));
    assert!(!mount_destinations(&spec).contains(&"/tmp".to_owned()));
}

#[test]
fn long_container_ids_fit_the_hostname() {
    let id = format!("{}.{}", "a".repeat(40), "b".repeat(35));
    let spec = spec_for(&format!(r#"{{"appId":"{id}"}}"#));
    assert_eq!(spec.hostname().as_ref().map(String::len), Some(64));
}

#[test]
fn devfs_lists_real_nodes() {
    // /dev/null exists wherever these tests run; its numbers are fixed.
    let nodes = DevFs::default().list();
    let null = nodes.iter().find(|d| d.path == Path::new("/dev/null")).expect("/dev/null listed");
    assert_eq!((null.kind, null.major, null.minor), (DeviceKind::Char, 1, 3));
    assert!(nodes.iter().all(|d| d.path.starts_with("/dev")));
}
