//! A private `dbus-daemon` (system-bus style config) and `avahi-daemon` in a
//! test's network namespace. avahi-daemon runs in its own mount namespace
//! with a tmpfs on `/run` and the test's services directory bind-mounted on
//! `/etc/avahi/services`; the bus socket lives in the test directory, and
//! every client (agent, avahi-browse) gets `DBUS_SYSTEM_BUS_ADDRESS`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// One service as `avahi-browse -rpt` resolved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Browsed {
    /// Instance name.
    pub name: String,
    /// Port.
    pub port: u16,
    /// TXT records, `key=value`.
    pub txt: Vec<String>,
}

impl Browsed {
    /// The value of TXT `key`.
    pub fn txt(&self, key: &str) -> Option<&str> {
        self.txt.iter().find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
    }
}

/// The lab's daemons.
pub struct AvahiLab {
    dir: PathBuf,
    services: PathBuf,
    ns: Arc<Netns>,
    dbus: Child,
    avahi: Option<Child>,
}

impl AvahiLab {
    /// Starts dbus-daemon and avahi-daemon in `ns` (which needs a LAN, see
    /// [`Netns::with_lan`]); avahi reads `services_dir`.
    pub fn start(ns: Arc<Netns>, dir: &Path, services_dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        let bus_conf = dir.join("bus.conf");
        std::fs::write(
            &bus_conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                dir.join("bus.sock").display()
            ),
        )
        .expect("bus.conf");
        std::fs::write(
            dir.join("avahi.conf"),
            format!(
                "[server]\nhost-name=wendylab{}\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces=wbr0\nenable-dbus=yes\n\
                 [wide-area]\nenable-wide-area=no\n[publish]\npublish-hinfo=no\npublish-workstation=no\n",
                std::process::id()
            ),
        )
        .expect("avahi.conf");
        let dbus_log = std::fs::File::create(dir.join("dbus.log")).expect("log");
        let dbus = ns
            .command("dbus-daemon")
            .arg(format!("--config-file={}", bus_conf.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(dbus_log)
            .spawn()
            .expect("spawn dbus-daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join("bus.sock").exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not create its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut lab = Self { dir: dir.to_path_buf(), services: services_dir.to_path_buf(), ns, dbus, avahi: None };
        lab.start_avahi();
        lab
    }

    /// `DBUS_SYSTEM_BUS_ADDRESS` for clients.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.dir.join("bus.sock").display())
    }

    /// (Re)starts avahi-daemon and waits until it runs.
    pub fn start_avahi(&mut self) {
        assert!(self.avahi.is_none());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("avahi.log")).expect("log");
        let script = format!(
            "mount -t tmpfs tmpfs /run && mount --bind '{}' /etc/avahi/services && \
             exec avahi-daemon --no-chroot --no-drop-root --no-rlimits -f '{}'",
            self.services.display(),
            self.dir.join("avahi.conf").display()
        );
        let child = self
            .ns
            .command("unshare")
            .args(["-m", "sh", "-c", &script])
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus_address())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn avahi-daemon");
        self.avahi = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.avahi_log().contains("Server startup complete") {
            assert!(Instant::now() < deadline, "avahi-daemon did not start; log:\n{}", self.avahi_log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops avahi-daemon (to test the agent without it).
    pub fn stop_avahi(&mut self) {
        if let Some(mut c) = self.avahi.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        std::fs::write(self.dir.join("avahi.log"), "").ok();
    }

    /// avahi-daemon's log.
    pub fn avahi_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("avahi.log")).unwrap_or_default()
    }

    /// `avahi-browse -rpt <type>`: the resolved services.
    pub fn browse(&self, service_type: &str) -> Vec<Browsed> {
        let out = self
            .ns
            .command("avahi-browse")
            .args(["-rpt", service_type])
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus_address())
            .output()
            .expect("avahi-browse");
        parse_browse(&String::from_utf8_lossy(&out.stdout))
    }

    /// Browses until `pred` holds for some service, or `timeout`.
    pub fn wait_for(&self, service_type: &str, timeout: Duration, pred: impl Fn(&Browsed) -> bool) -> Option<Browsed> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(b) = self.browse(service_type).into_iter().find(&pred) {
                return Some(b);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A command inside the namespace with the lab's bus.
    pub fn command(&self, program: &str) -> Command {
        let mut c = self.ns.command(program);
        c.env("DBUS_SYSTEM_BUS_ADDRESS", self.bus_address());
        c
    }
}

impl Drop for AvahiLab {
    fn drop(&mut self) {
        self.stop_avahi();
        let _ = self.dbus.kill();
        let _ = self.dbus.wait();
    }
}

/// Parses `avahi-browse -p` resolved lines:
/// `=;iface;proto;name;type;domain;host;address;port;"txt" "txt"`.
pub fn parse_browse(text: &str) -> Vec<Browsed> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("=;")) {
        let fields: Vec<&str> = line.splitn(10, ';').collect();
        if fields.len() < 10 {
            continue;
        }
        let txt = fields[9].split("\" \"").map(|t| t.trim_matches('"').to_owned()).filter(|t| !t.is_empty()).collect();
        out.push(Browsed { name: unescape(fields[3]), port: fields[8].parse().unwrap_or(0), txt });
    }
    out.dedup();
    out
}

fn unescape(s: &str) -> String {
    // avahi-browse -p escapes as \DDD (decimal).
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n: u8 = s[i + 1..i + 4].parse().unwrap_or(b'?');
            out.push(n as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}
