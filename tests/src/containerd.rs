//! A private `containerd` for tests (own root, state and socket, no CRI
//! plugin), and a tiny busybox image built here (`FROM scratch` with the
//! host's static busybox and a few applet links) put into its store
//! through the registry's `ContainerdStore`: no network pull.
//!
//! The one fixture for every test that needs containerd
//! (`containerd_registry`, `containerd_runtime`, `apps_service`,
//! `cli_apps`; the last two through [`crate::apps`]). Those
//! tests share runc's state directory and the `wendy` cgroup, so nextest
//! runs them one at a time (test group `containerd` in
//! `.config/nextest.toml`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wendy_agent::containers::containerd::{ContainerdStore, NAMESPACE};
use wendy_agent::containers::runtime::image::host_platform;
use wendy_agent::registry::digest::Digest;
use wendy_agent::registry::manifests::OCI_MANIFEST;
use wendy_agent::registry::names::{RepoName, Tag};
use wendy_agent::registry::store::{BlobWriter, ContentStore, StoredManifest};

/// The applets the image links to `/bin/busybox`.
pub const APPLETS: [&str; 14] =
    ["sh", "echo", "cat", "grep", "nc", "unshare", "sleep", "touch", "true", "false", "ls", "ip", "date", "kill"];

/// `name` on `$PATH` or in the usual system directories.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/bin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Our own containerd; killed on drop.
pub struct Containerd {
    child: Child,
    /// Its root, state, socket, log and whatever the test puts there.
    pub dir: tempfile::TempDir,
    /// Its socket.
    pub socket: PathBuf,
    ctr: PathBuf,
}

impl Containerd {
    /// Starts containerd and waits for its socket; `None` (after
    /// [`crate::skip`] says why) when this host cannot run it.
    pub fn start(test: &str) -> Option<Self> {
        let needed = ["containerd", "containerd-shim-runc-v2", "runc", "ctr", "busybox", "tar", "gzip", "ip"];
        let missing: Vec<&str> = needed.into_iter().filter(|b| on_path(b).is_none()).collect();
        if !missing.is_empty() {
            crate::skip(test, &format!("not installed: {missing:?} (Debian: containerd runc busybox-static)"));
            return None;
        }
        if !is_root() {
            crate::skip(test, "containerd and runc need root");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("wendy-ctrd-").tempdir().expect("tempdir");
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = d.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{}\"\n",
                d.join("opt").display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("log");
        let child = Command::new(on_path("containerd").expect("containerd"))
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(d.join("root"))
            .arg("--state")
            .arg(d.join("state"))
            .arg("--address")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let mut me = Self { child, dir, socket, ctr: on_path("ctr").expect("ctr") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.socket.exists() || !me.ctr_ok(&["version"]) {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("containerd exited ({status}) before listening:\n{}", me.log());
            }
            assert!(Instant::now() < deadline, "containerd did not listen within 30 s:\n{}", me.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(me)
    }

    /// What containerd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --namespace wendy <args>` against this containerd.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("--address").arg(&self.socket).arg("--namespace").arg(NAMESPACE).args(args);
        c
    }

    /// What `ctr <args>` prints; panics when it fails.
    pub fn ctr(&self, args: &[&str]) -> Vec<u8> {
        let out = self.ctr_cmd(args).output().expect("run ctr");
        assert!(out.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// [`Containerd::ctr`] as text.
    pub fn ctr_text(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.ctr(args)).into_owned()
    }

    /// Whether `ctr <args>` succeeds.
    pub fn ctr_ok(&self, args: &[&str]) -> bool {
        self.ctr_cmd(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    /// The rows `ctr -n wendy <args>` prints (its header, a line starting
    /// with an upper-case word, left out).
    pub fn ctr_rows(&self, args: &[&str]) -> Vec<String> {
        let out = self.ctr_cmd(args).output().expect("run ctr");
        assert!(out.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter(|l| !l.split_whitespace().next().is_some_and(|w| w.chars().all(|c| c.is_ascii_uppercase())))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks first (killed and deleted), so no shim and no runc state
        // (runc's root is shared by every containerd on the host) outlives
        // the test, even one that failed half-way.
        for task in self.ctr_rows_quiet(&["tasks", "ls", "-q"]) {
            let _ = self
                .ctr_cmd(&["tasks", "delete", "--force", &task])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Containerd {
    fn ctr_rows_quiet(&self, args: &[&str]) -> Vec<String> {
        self.ctr_cmd(args)
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?}: {status}");
}

/// The layer: `/bin/busybox`, its applet links and an empty `/etc`;
/// returns (the gzip blob, the uncompressed tar's digest).
fn busybox_layer(dir: &Path) -> (Vec<u8>, Digest) {
    let src = dir.join("rootfs");
    std::fs::create_dir_all(src.join("bin")).expect("mkdir");
    std::fs::create_dir_all(src.join("etc")).expect("mkdir");
    std::fs::copy(on_path("busybox").expect("busybox"), src.join("bin/busybox")).expect("copy busybox");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", src.join("bin").join(applet)).expect("symlink");
    }
    let tar = dir.join("layer.tar");
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "--sort=name", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .args(["bin", "etc"]));
    let diff_id = Digest::of(&std::fs::read(&tar).expect("read tar"));
    run(Command::new("gzip").args(["-n", "-f"]).arg(&tar));
    (std::fs::read(dir.join("layer.tar.gz")).expect("read layer"), diff_id)
}

/// Writes the busybox image (as [`import_busybox`] builds it) as an OCI
/// image layout in `dir` (`oci-layout`, `index.json`, `blobs/sha256/`)
/// under the tag `tag`, for standard clients (`skopeo copy oci:DIR:TAG`);
/// returns the manifest's digest.
pub fn write_busybox_layout(dir: &Path, tag: &str) -> Digest {
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    let work = dir.join("build");
    std::fs::create_dir_all(&work).expect("mkdir");
    let (layer, diff_id) = busybox_layer(&work);
    std::fs::remove_dir_all(&work).expect("rm build dir");
    let config = busybox_config(&diff_id);
    let blob = |data: &[u8]| {
        let d = Digest::of(data);
        std::fs::write(dir.join("blobs/sha256").join(d.hex()), data).expect("write blob");
        d
    };
    let layer_digest = blob(&layer);
    let config_digest = blob(&config);
    let manifest = busybox_manifest(&config_digest, config.len(), &layer_digest, layer.len()).to_string();
    let manifest_digest = blob(manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest.as_str(), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index.json");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    manifest_digest
}

/// The busybox image's config (entrypoint `/bin/busybox`, `Cmd` `echo
/// hello`) for the host's platform.
fn busybox_config(diff_id: &Digest) -> Vec<u8> {
    let platform = host_platform();
    serde_json::json!({
        "architecture": platform.architecture, "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox"], "Cmd": ["echo", "hello"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.as_str()]},
    })
    .to_string()
    .into_bytes()
}

/// The busybox image's manifest.
fn busybox_manifest(config: &Digest, config_len: usize, layer: &Digest, layer_len: usize) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.as_str(), "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.as_str(), "size": layer_len}],
    })
}

/// Pushes `data` as a blob through the registry's store.
pub async fn push_blob(store: &ContainerdStore, data: &[u8]) -> Digest {
    let digest = Digest::of(data);
    let mut w = store.writer(&format!("test-{}", digest.hex()), Some(data.len() as u64)).await.expect("writer");
    w.write(0, Bytes::copy_from_slice(data)).await.expect("write");
    w.commit(&digest, data.len() as u64).await.expect("commit");
    digest
}

/// Stores `body` as the manifest (or index) `<repo>:<tag>`; returns its
/// digest and size.
pub async fn push_manifest(
    store: &ContainerdStore,
    repo: &str,
    tag: &str,
    media_type: &str,
    body: serde_json::Value,
) -> (Digest, usize) {
    let bytes = Bytes::from(body.to_string());
    let (digest, size) = (Digest::of(&bytes), bytes.len());
    let m = StoredManifest { media_type: media_type.to_owned(), digest: digest.clone(), bytes };
    let repo = RepoName::parse(repo).expect("repo");
    let tag = Tag::parse(tag).expect("tag");
    store.put_manifest(&repo, Some(&tag), m).await.expect("put manifest");
    (digest, size)
}

/// Builds the busybox image in `dir` (entrypoint `/bin/busybox`, `Cmd`
/// `echo hello`) and stores it in containerd as `<repo>:<tag>`; returns
/// the manifest's digest and size.
pub async fn import_busybox(store: &ContainerdStore, dir: &Path, repo: &str, tag: &str) -> (Digest, usize) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let (layer, diff_id) = busybox_layer(dir);
    let config = busybox_config(&diff_id);
    let layer_digest = push_blob(store, &layer).await;
    let config_digest = push_blob(store, &config).await;
    let manifest = busybox_manifest(&config_digest, config.len(), &layer_digest, layer.len());
    push_manifest(store, repo, tag, OCI_MANIFEST, manifest).await
}
