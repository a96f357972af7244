//! The published-protocol client, `tests/compat/published_client.py`: a
//! Python grpcio client whose stubs are generated at every run from the
//! published WendyOS definitions (`../shared/reference/wendyos-proto/Proto`
//! from the repository root). It runs in the test's namespace from the venv
//! `scripts/setup` makes, one step per run, and prints JSON.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// Deadline of each gRPC call (and of connecting), given to the client.
pub const CALL_TIMEOUT_SECS: u32 = 20;
/// Wall-clock bound of one client run (stub generation + call).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// The venv: `$WENDY_PYCLIENT_VENV`, else `<wendy cache>/pyclient-venv`.
pub fn venv() -> PathBuf {
    std::env::var_os("WENDY_PYCLIENT_VENV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::wendy_cache().join("pyclient-venv"))
}

/// The repository root: the workspace (the directory with `Cargo.lock`)
/// above the manifest directory cargo or nextest names at run time. Not
/// `env!("CARGO_MANIFEST_DIR")`: clones at other paths share cargo's target
/// directory, and a test binary that did not need rebuilding would carry
/// the path of the clone that built it.
pub fn repo_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.ancestors().find(|d| d.join("Cargo.lock").is_file()).map(Path::to_path_buf).unwrap_or(manifest)
}

/// The published definitions: `$WENDY_PROTO_REFERENCE`, else
/// `<repo>/../shared/reference/wendyos-proto/Proto`.
pub fn proto_dir() -> PathBuf {
    std::env::var_os("WENDY_PROTO_REFERENCE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/reference/wendyos-proto/Proto"))
}

/// One finished client run.
#[derive(Debug)]
pub struct PyRun {
    /// The arguments after the script.
    pub args: Vec<String>,
    /// Exit code: 0 ok, 2 gRPC error, 3 unreachable, -1 killed.
    pub code: i32,
    /// stdout (JSON).
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl PyRun {
    /// stdout as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// The JSON of a successful run, or a one-line description of the failure.
    pub fn ok(&self) -> Result<serde_json::Value, String> {
        match self.code {
            0 => Ok(self.json()),
            _ => Err(self.describe()),
        }
    }

    /// `(code name, details)` if the server answered with a gRPC error.
    pub fn grpc_error(&self) -> Option<(String, String)> {
        let j = self.json();
        let e = j.get("grpc_error")?;
        Some((e["code"].as_str().unwrap_or_default().to_owned(), e["details"].as_str().unwrap_or_default().to_owned()))
    }

    /// What happened, for reports.
    pub fn describe(&self) -> String {
        match (self.code, self.grpc_error()) {
            (0, _) => "ok".into(),
            (_, Some((code, details))) => format!("gRPC {code}: {details}"),
            (c, None) => format!("exit {c}: {}", self.stderr.trim().lines().last().unwrap_or_default()),
        }
    }
}

/// The client, run inside a namespace.
pub struct PyClient {
    python: PathBuf,
    script: PathBuf,
    ns: Arc<Netns>,
}

impl PyClient {
    /// Why the client cannot run here, if it cannot (venv, script or the
    /// published definitions missing).
    pub fn unavailable() -> Option<String> {
        let python = venv().join("bin/python");
        let script = repo_root().join("tests/compat/published_client.py");
        if !python.is_file() {
            return Some(format!("no venv at {} (run scripts/setup)", venv().display()));
        }
        if !script.is_file() {
            return Some(format!("{} is missing", script.display()));
        }
        if !proto_dir().join("cloud/certificates.proto").is_file() {
            return Some(format!("the published definitions are not at {}", proto_dir().display()));
        }
        None
    }

    /// The client for `ns`; panics if [`PyClient::unavailable`].
    pub fn new(ns: Arc<Netns>) -> Self {
        if let Some(why) = Self::unavailable() {
            panic!("published client unavailable: {why}");
        }
        Self { python: venv().join("bin/python"), script: repo_root().join("tests/compat/published_client.py"), ns }
    }

    /// Runs one step against the plaintext `target`, bounded by [`RUN_TIMEOUT`].
    pub fn run(&self, target: SocketAddr, step: &[&str]) -> PyRun {
        let mut args: Vec<String> = vec![
            "--proto-dir".into(),
            proto_dir().display().to_string(),
            "--target".into(),
            target.to_string(),
            "--timeout".into(),
            CALL_TIMEOUT_SECS.to_string(),
        ];
        args.extend(step.iter().map(|s| s.to_string()));
        let mut child = self
            .ns
            .command(&self.python)
            .arg(&self.script)
            .args(&args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("WENDY_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the published client");
        let out = reader(&mut child, true);
        let err = reader(&mut child, false);
        let deadline = Instant::now() + RUN_TIMEOUT;
        let code = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s.code().unwrap_or(-1),
                _ if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break -1;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut stderr = err.join().unwrap_or_default();
        if code == -1 {
            stderr.push_str(&format!("\n(killed after {RUN_TIMEOUT:?})"));
        }
        PyRun { args, code, stdout: out.join().unwrap_or_default(), stderr }
    }
}

fn reader(child: &mut Child, stdout: bool) -> std::thread::JoinHandle<String> {
    let mut pipe: Box<dyn Read + Send> = if stdout {
        Box::new(child.stdout.take().expect("stdout"))
    } else {
        Box::new(child.stderr.take().expect("stderr"))
    };
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}
