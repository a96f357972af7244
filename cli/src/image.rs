//! Getting an app's image into a local OCI layout for [`crate::push`]:
//! `podman build --platform` for a `Containerfile`/`Dockerfile`, then
//! `skopeo copy REF oci:DIR:TAG` for it or for a `--image` reference.
//! Established tools, run as child processes; a missing one is named with
//! how to install it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::CliError;

/// The build files looked for in the app's directory, in this order.
pub const BUILD_FILES: [&str; 2] = ["Containerfile", "Dockerfile"];

/// The containers-transport prefixes `--image` accepts.
pub const TRANSPORTS: [&str; 3] = ["oci-archive:", "docker-archive:", "containers-storage:"];

/// The build file in `dir`, if there is one.
pub fn find_build_file(dir: &Path) -> Option<PathBuf> {
    BUILD_FILES.iter().map(|f| dir.join(f)).find(|p| p.is_file())
}

/// Checks that `reference` names one of the [`TRANSPORTS`] and something
/// after it.
pub fn check_reference(reference: &str) -> Result<(), CliError> {
    match TRANSPORTS.iter().find_map(|t| reference.strip_prefix(t)) {
        Some(rest) if !rest.is_empty() => Ok(()),
        _ => Err(CliError::Usage(format!(
            "--image {reference:?}: expected a containers-transport reference, {}PATH, {}PATH or {}NAME",
            TRANSPORTS[0], TRANSPORTS[1], TRANSPORTS[2]
        ))),
    }
}

/// The OCI platform (`linux/arm64`, `linux/arm/v7`, `linux/amd64`) of a
/// device whose `GetAgentVersion.cpu_architecture` is `arch` (Go names, as
/// the published agent reports them; Rust and `uname -m` names too).
pub fn platform_for(arch: &str) -> Result<&'static str, CliError> {
    match arch {
        "arm64" | "aarch64" => Ok("linux/arm64"),
        "arm" | "armv7" | "armv7l" | "armhf" => Ok("linux/arm/v7"),
        "amd64" | "x86_64" => Ok("linux/amd64"),
        other => Err(CliError::Remote {
            context: "choosing the image's platform".into(),
            message: format!(
                "the device reports CPU architecture {:?}, which wendy run cannot build for",
                crate::error::sanitize(other)
            ),
            hint: Some("supported: arm64, arm (v7), amd64".into()),
        }),
    }
}

/// Whether an image for `image_platform` (`os/arch[/variant]`) runs on
/// `device_platform`. A missing variant matches any.
pub fn platform_matches(device_platform: &str, image_platform: &str) -> bool {
    let d: Vec<&str> = device_platform.split('/').collect();
    let i: Vec<&str> = image_platform.split('/').collect();
    d.first() == i.first()
        && d.get(1) == i.get(1)
        && match (d.get(2), i.get(2)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

/// Runs `tool args`, its output to stderr unless `quiet` (then kept and
/// shown on failure).
async fn run_tool(tool: &'static str, args: &[&str], quiet: bool, doing: &str) -> Result<(), CliError> {
    let mut cmd = tokio::process::Command::new(tool);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    if quiet {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::from(std::io::stderr())).stderr(Stdio::inherit());
    }
    let out = cmd.output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CliError::Tool {
                tool,
                message: format!("{doing} needs `{tool}`, which is not installed"),
                hint: Some(format!("install it (`apt-get install {tool}`; `scripts/setup` does)")),
            }
        } else {
            CliError::io(format!("running {tool}"), e)
        }
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    Err(CliError::Tool {
        tool,
        message: format!(
            "{doing} failed ({}){}",
            out.status,
            if tail.is_empty() { String::new() } else { format!(":\n{tail}") }
        ),
        hint: None,
    })
}

/// `podman build --platform PLATFORM -f FILE -t NAME DIR`; returns the
/// `containers-storage:` reference of the result.
pub async fn build(dir: &Path, file: &Path, platform: &str, name: &str, quiet: bool) -> Result<String, CliError> {
    let (dir, file) = (dir.to_string_lossy(), file.to_string_lossy());
    let mut args = vec!["build", "--platform", platform, "-f", &file, "-t", name];
    if quiet {
        args.push("--quiet");
    }
    args.push(&dir);
    run_tool("podman", &args, quiet, &format!("building {file} for {platform}")).await?;
    Ok(format!("containers-storage:{name}"))
}

/// `skopeo copy REFERENCE oci:LAYOUT:TAG`.
pub async fn to_oci_layout(reference: &str, layout: &Path, tag: &str, quiet: bool) -> Result<(), CliError> {
    let dest = format!("oci:{}:{tag}", layout.to_string_lossy());
    let mut args = vec!["copy"];
    if quiet {
        args.push("--quiet");
    }
    args.extend([reference, &dest]);
    run_tool("skopeo", &args, quiet, &format!("copying {reference} into an OCI layout")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        assert_eq!(platform_for("arm64").unwrap(), "linux/arm64");
        assert_eq!(platform_for("aarch64").unwrap(), "linux/arm64");
        assert_eq!(platform_for("arm").unwrap(), "linux/arm/v7");
        assert_eq!(platform_for("armv7").unwrap(), "linux/arm/v7");
        assert_eq!(platform_for("x86_64").unwrap(), "linux/amd64");
        assert!(platform_for("mips").unwrap_err().to_string().contains("\"mips\""));
        assert!(platform_matches("linux/arm64", "linux/arm64"));
        assert!(platform_matches("linux/arm/v7", "linux/arm"));
        assert!(platform_matches("linux/arm/v7", "linux/arm/v7"));
        assert!(!platform_matches("linux/arm/v7", "linux/arm/v6"));
        assert!(!platform_matches("linux/arm64", "linux/amd64"));
    }

    #[test]
    fn references() {
        assert!(check_reference("oci-archive:/tmp/x.tar").is_ok());
        assert!(check_reference("docker-archive:x.tar").is_ok());
        assert!(check_reference("containers-storage:localhost/hello:1").is_ok());
        for bad in ["docker://hello", "oci-archive:", "hello:latest", ""] {
            let e = check_reference(bad).unwrap_err();
            assert_eq!(e.exit(), crate::error::Exit::Usage, "{bad}");
        }
    }

    #[tokio::test]
    async fn tools_missing_or_failing_say_so() {
        let e = run_tool("wendy-no-such-tool", &[], true, "building x").await.unwrap_err();
        assert_eq!(e.exit(), crate::error::Exit::Generic);
        assert!(e.to_string().contains("needs `wendy-no-such-tool`, which is not installed"), "{e}");
        assert!(e.to_string().contains("scripts/setup"), "{e}");
        let e = run_tool("sh", &["-c", "echo first >&2; echo why >&2; exit 3"], true, "copying y").await.unwrap_err();
        assert!(e.to_string().starts_with("copying y failed (exit status: 3)"), "{e}");
        assert!(e.to_string().ends_with("first\nwhy"), "{e}");
        run_tool("true", &[], true, "nothing").await.unwrap();
    }

    #[test]
    fn build_files() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(find_build_file(t.path()), None);
        std::fs::write(t.path().join("Dockerfile"), "FROM scratch").unwrap();
        assert_eq!(find_build_file(t.path()), Some(t.path().join("Dockerfile")));
        std::fs::write(t.path().join("Containerfile"), "FROM scratch").unwrap();
        assert_eq!(find_build_file(t.path()), Some(t.path().join("Containerfile")));
    }
}
