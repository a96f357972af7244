//! Helpers shared by the `wendy` CLI tests (`cli_errors`, `cli_flow`, `cli_apps`,
//! `cli_run`): running the real `wendy` binary, and a real `pkicore serve all --dev`.
//! Included with `#[path]`; on its own it is an empty test target.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use wendy_tests::bins;
use wendy_tests::netns::Netns;

/// The dev API key (`pkicore serve all --dev`).
pub const DEV_KEY: &str = wendy_proto::contract::DEV_API_KEY;

/// The `wendy` binary; panics with how to build it.
pub fn wendy_bin() -> PathBuf {
    bins::find("wendy").unwrap_or_else(|| {
        panic!(
            "the `wendy` binary is missing from {}: run `cargo build -p wendy` with the same profile and target dir first",
            bins::profile_dir().display()
        )
    })
}

/// Reports why a test cannot run here. Under `WENDY_TEST_STRICT=1` (set by
/// `scripts/test`, so CI never passes by skipping) that is a failure.
fn skip(test: &str, why: &str) {
    if std::env::var_os("WENDY_TEST_STRICT").is_some_and(|v| v == "1") {
        panic!("{test} cannot run: {why} (WENDY_TEST_STRICT=1 forbids skipping)");
    }
    eprintln!("SKIP {test}: {why}");
}

/// A binary needed by an integration part; `None` prints why the test skips.
pub fn optional_bin(name: &str, test: &str) -> Option<PathBuf> {
    let found = bins::find(name);
    if found.is_none() {
        skip(
            test,
            &format!("`{name}` is not built in {} (run `cargo build --workspace`)", bins::profile_dir().display()),
        );
    }
    found
}

/// Whether we may create network namespaces (root, `ip netns`).
pub fn can_netns(test: &str) -> bool {
    let ok =
        unsafe_free_is_root() && Command::new("ip").args(["netns", "list"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        skip(test, "needs root and `ip netns` for a private network namespace");
    }
    ok
}

fn unsafe_free_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// One CLI user: its own `$XDG_CONFIG_HOME`, optionally inside a netns.
pub struct Cli {
    /// `$XDG_CONFIG_HOME`.
    pub xdg: PathBuf,
    netns: Option<String>,
    /// Extra environment for every run.
    pub env: Vec<(String, String)>,
}

/// A finished `wendy` run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 if killed).
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Run {
    /// Parses stdout as JSON; panics with the run if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }

    /// Asserts stderr contains each of `parts`.
    #[track_caller]
    pub fn expect_stderr(&self, parts: &[&str]) -> &Self {
        for p in parts {
            assert!(self.stderr.contains(p), "stderr lacks {p:?}: {self:#?}");
        }
        self
    }
}

impl Cli {
    /// A user whose config lives under `dir`.
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        Self { xdg: dir.to_path_buf(), netns: None, env: Vec::new() }
    }

    /// Sets `key=value` in the environment of every run from now on.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs `wendy` inside `ns` from now on.
    pub fn in_netns(mut self, ns: &Netns) -> Self {
        self.netns = Some(ns.name().to_owned());
        self
    }

    /// The CLI's config directory.
    pub fn config_dir(&self) -> PathBuf {
        self.xdg.join("wendy")
    }

    /// Runs `wendy args...` with no terminal on stdin.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(wendy_bin());
                c
            }
            None => Command::new(wendy_bin()),
        };
        let out: Output = cmd
            .args(args)
            .env("XDG_CONFIG_HOME", &self.xdg)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("WENDY_API_KEY")
            .stdin(Stdio::null())
            .output()
            .expect("run wendy");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A running `pkicore serve all --dev`.
pub struct Pki {
    child: Child,
    /// Where it listens, as the CLI reaches it.
    pub addr: String,
    /// Its CA fingerprint, as it printed it.
    pub fingerprint: String,
}

impl Pki {
    /// Starts pkicore listening on `listen` (inside `ns` if given) and waits
    /// for its `CA fingerprint:` line.
    pub fn start(pkicore: &Path, data: &Path, listen: &str, ns: Option<&Netns>) -> Self {
        let mut cmd = match ns {
            Some(ns) => ns.command(pkicore),
            None => Command::new(pkicore),
        };
        let log = std::fs::File::create(data.with_extension("log")).expect("log");
        let mut child = cmd
            .args(["serve", "all", "--dev", "--listen", listen])
            .arg("--data-dir")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn pkicore");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(fp) = line.strip_prefix("CA fingerprint: ") {
                    let _ = tx.send(fp.trim().to_owned());
                }
            }
        });
        let fingerprint = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(fp) => fp,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "pkicore printed no `CA fingerprint:` line; log:\n{}",
                    std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
                );
            }
        };
        // The line comes once the frontend listens; give it a moment anyway.
        std::thread::sleep(Duration::from_millis(100));
        Self { child, addr: listen.to_owned(), fingerprint }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago, with port + 1 free too.
pub fn free_port_pair() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = l.local_addr().expect("addr").port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}
