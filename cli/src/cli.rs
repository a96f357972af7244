//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use wendy_identity::fingerprint::Fingerprint;
use wendy_identity::role::Role;

/// The WendyOS developer CLI.
#[derive(Debug, Parser)]
#[command(name = "wendy", version, about, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 credentials, 4 unreachable, 5 permission denied, 6 trust. See cli/README.md."
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the apps on a device, read their output, stop and remove them.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Manage the CLI's own user certificate.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Provision and talk to devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// List WendyOS devices on the local network (mDNS).
    Discover(DiscoverArgs),
    /// Update a device's operating system (RAUC A/B), show its slots.
    #[command(subcommand)]
    Os(OsCommand),
    /// Build (or take) an app's image, push it to the device, run it and
    /// stream its output until Ctrl-C (which stops it).
    Run(RunArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `wendy auth ...`
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Get a user certificate from a local pki-core.
    LoginLocal(LoginArgs),
    /// Show the stored certificate (exit 3 if none or expired).
    Status(JsonArg),
    /// Renew the certificate over mTLS before it expires.
    Refresh(JsonArg),
    /// Remove the stored key, certificate, CA bundle and pin.
    Logout(JsonArg),
}

/// `--json`.
#[derive(Debug, Args, Clone, Copy)]
pub struct JsonArg {
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// The pki-core API key.
#[derive(Debug, Args)]
pub struct ApiKeyArg {
    /// pki-core API key (also WENDY_API_KEY). Never printed.
    #[arg(long, env = "WENDY_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

/// `wendy auth login-local`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// pki-core address as this machine reaches it, HOST[:PORT].
    #[arg(long, value_name = "HOST:PORT")]
    pub cloud: String,
    /// API key.
    #[command(flatten)]
    pub api_key: ApiKeyArg,
    /// Expected pki-core CA fingerprint (SHA-256, hex, colons optional).
    /// Required when not at a terminal.
    #[arg(long, value_name = "FP")]
    pub ca_fingerprint: Option<Fingerprint>,
    /// Role for the certificate (Owner, Admin, Member, Viewer); default:
    /// the API key's own.
    #[arg(long)]
    pub role: Option<Role>,
    /// Organization id.
    #[arg(long = "org", default_value_t = 1)]
    pub organization_id: i32,
    /// JSON output.
    #[command(flatten)]
    pub json: JsonArg,
}

/// Picking a device.
#[derive(Debug, Args, Clone)]
pub struct DeviceArg {
    /// The device: NAME (mDNS or remembered) or HOST[:PORT] with the agent's
    /// base (plaintext) port; default: the only device on mDNS.
    #[arg(long, value_name = "NAME|HOST[:PORT]")]
    pub device: Option<String>,
    /// Seconds to browse mDNS when looking a device up.
    #[arg(long, value_name = "S", default_value = "3", value_parser = parse_seconds)]
    pub timeout: Duration,
}

/// `wendy device ...`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Enrol an unprovisioned device with pki-core.
    Provision(ProvisionArgs),
    /// Show the agent's version.
    Version(DeviceReadArgs),
    /// Show version and provisioning state.
    Info(DeviceReadArgs),
    /// Remove the device's identity (Admin or Owner).
    Unenroll(DeviceReadArgs),
    /// Reboot the device (Admin or Owner).
    Reboot(DeviceReadArgs),
    /// Replace the agent of a development image with BINARY and wait for
    /// it to restart (Admin or Owner; production images refuse: use
    /// `wendy os update`).
    UpdateAgent(UpdateAgentArgs),
}

/// `wendy os ...`
#[derive(Debug, Subcommand)]
pub enum OsCommand {
    /// Install a signed RAUC bundle into the other slot, reboot into it and
    /// wait for it to be marked good (exit 1 if it rolls back).
    Update(OsUpdateArgs),
    /// Show the booted slot, both slots and the last update.
    Status(DeviceReadArgs),
}

/// `wendy apps ...`
#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// List the apps: name, version, state, restart policy, failures.
    List(DeviceReadArgs),
    /// Print an app's output so far (stdout and stderr); `--follow` keeps
    /// printing new output until Ctrl-C.
    Logs(AppsLogsArgs),
    /// Send this terminal's input to a running app's stdin and print its
    /// output, until it exits or Ctrl-C (which leaves it running; Member).
    Attach(AppsAttachArgs),
    /// Stop an app; it stays stopped whatever its restart policy (Member).
    Stop(AppArgs),
    /// Remove an app and, unless `--keep-image`, its image (Member).
    Rm(AppsRmArgs),
}

/// `wendy apps logs`.
#[derive(Debug, Args)]
pub struct AppsLogsArgs {
    /// The app's name (`wendy apps list`).
    #[arg(value_name = "APP")]
    pub app: String,
    /// Keep printing new output until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Which device.
    #[command(flatten)]
    pub device: DeviceArg,
}

/// `wendy apps attach`.
#[derive(Debug, Args)]
pub struct AppsAttachArgs {
    /// The app's name (`wendy apps list`).
    #[arg(value_name = "APP")]
    pub app: String,
    /// Which device.
    #[command(flatten)]
    pub device: DeviceArg,
}

/// A command on one app.
#[derive(Debug, Args)]
pub struct AppArgs {
    /// The app's name (`wendy apps list`).
    #[arg(value_name = "APP")]
    pub app: String,
    /// Which device.
    #[command(flatten)]
    pub device: DeviceArg,
    /// JSON output.
    #[command(flatten)]
    pub json: JsonArg,
}

/// `wendy apps rm`.
#[derive(Debug, Args)]
pub struct AppsRmArgs {
    /// The app.
    #[command(flatten)]
    pub app: AppArgs,
    /// Keep the app's image in the device's store.
    #[arg(long)]
    pub keep_image: bool,
    /// Also delete the app's `persist` volumes (unless another app uses them).
    #[arg(long)]
    pub volumes: bool,
}

/// `wendy run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The app's directory: its `wendy.json`, and a `Containerfile` or
    /// `Dockerfile` unless `--image` is given.
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: std::path::PathBuf,
    /// Run this image instead of building one: oci-archive:PATH,
    /// docker-archive:PATH or containers-storage:NAME.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// The app's name on the device (default: `appId` of wendy.json;
    /// required without one).
    #[arg(long)]
    pub name: Option<String>,
    /// Restart policy: no, unless-stopped, on-failure[:N] (N retries, none
    /// or 0 without limit).
    #[arg(long, value_name = "POLICY", default_value = "unless-stopped")]
    pub restart: crate::run::Restart,
    /// Return once the app has started; it keeps running.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Which device.
    #[command(flatten)]
    pub device: DeviceArg,
    /// Print one JSON object once the app has started (implies --detach).
    #[command(flatten)]
    pub json: JsonArg,
}

/// `wendy os update`.
#[derive(Debug, Args)]
pub struct OsUpdateArgs {
    /// The bundle: a local .raucb file (uploaded over mTLS) or an http(s)
    /// URL the device downloads itself.
    #[arg(value_name = "BUNDLE|URL")]
    pub bundle: String,
    /// Install only; the new slot boots at the next reboot.
    #[arg(long)]
    pub no_reboot: bool,
    /// Seconds to wait for the device to come back after the reboot. The
    /// default outlasts the device's boot deadline (10 min, image/rootfs's
    /// wendyos-boot-deadline.timer) plus a boot of the old slot, so a new
    /// slot whose agent never starts is still seen rolled back.
    #[arg(long, value_name = "S", default_value = "900", value_parser = parse_seconds)]
    pub wait: Duration,
    /// Which device.
    #[command(flatten)]
    pub device: DeviceArg,
    /// JSON output.
    #[command(flatten)]
    pub json: JsonArg,
}

/// `wendy device update-agent`.
#[derive(Debug, Args)]
pub struct UpdateAgentArgs {
    /// The wendy-agent binary, built for the device's architecture.
    #[arg(value_name = "BINARY")]
    pub binary: PathBuf,
    /// Which device.
    #[command(flatten)]
    pub device: DeviceArg,
    /// JSON output.
    #[command(flatten)]
    pub json: JsonArg,
}

/// A device command that only reads (plus unenroll).
#[derive(Debug, Args)]
pub struct DeviceReadArgs {
    /// Which device.
    #[command(flatten)]
    pub device: DeviceArg,
    /// JSON output.
    #[command(flatten)]
    pub json: JsonArg,
}

/// `wendy device provision`.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// pki-core address as the DEVICE reaches it, HOST[:PORT].
    #[arg(long, value_name = "HOST:PORT")]
    pub cloud: String,
    /// pki-core address as this machine reaches it; default: the one
    /// `wendy auth login-local` used.
    #[arg(long, value_name = "HOST:PORT")]
    pub cli_cloud: Option<String>,
    /// API key.
    #[command(flatten)]
    pub api_key: ApiKeyArg,
    /// The device's name.
    #[arg(long)]
    pub name: String,
    /// Organization id.
    #[arg(long = "org", default_value_t = 1)]
    pub organization_id: i32,
    /// Seconds to wait for the device to answer over mTLS.
    #[arg(long, value_name = "S", default_value = "60", value_parser = parse_seconds)]
    pub wait: Duration,
    /// Which device.
    #[command(flatten)]
    pub device: DeviceArg,
    /// JSON output.
    #[command(flatten)]
    pub json: JsonArg,
}

/// `wendy discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// Seconds to browse.
    #[arg(long, value_name = "S", default_value = "3", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// JSON output.
    #[command(flatten)]
    pub json: JsonArg,
}

/// Parses seconds (fractions allowed), 0 < s <= 3600.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v > 0.0 && v <= 3600.0) {
        return Err("seconds must be more than 0 and at most 3600".into());
    }
    Ok(Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wendy").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn login_local_parses() {
        let fp = "AB:".repeat(31) + "AB";
        let cli = parse(&[
            "auth",
            "login-local",
            "--cloud",
            "h:1",
            "--api-key",
            "k",
            "--ca-fingerprint",
            &fp,
            "--role",
            "viewer",
        ])
        .unwrap();
        let Command::Auth(AuthCommand::LoginLocal(a)) = cli.command else { panic!("wrong command") };
        assert_eq!(a.role, Some(Role::Viewer));
        assert_eq!(a.ca_fingerprint.unwrap().to_string(), "ab".repeat(32));
        assert_eq!(a.organization_id, 1);
    }

    #[test]
    fn bad_inputs_are_usage_errors() {
        for args in [
            &["auth", "login-local", "--cloud", "h", "--api-key", "k", "--ca-fingerprint", "xyz"][..],
            &["auth", "login-local", "--cloud", "h", "--api-key", "k", "--role", "root"],
            &["discover", "--timeout", "-1"],
            &["device", "provision", "--cloud", "h"],
            &["completions", "tcsh"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn device_commands_take_json_and_device() {
        let cli = parse(&["device", "version", "--device", "10.0.0.1:7", "--json"]).unwrap();
        let Command::Device(DeviceCommand::Version(a)) = cli.command else { panic!("wrong command") };
        assert!(a.json.json);
        assert_eq!(a.device.device.as_deref(), Some("10.0.0.1:7"));
        assert_eq!(a.device.timeout, Duration::from_secs(3));
        let cli = parse(&["device", "update-agent", "build/wendy-agent", "--device", "h:1", "--json"]).unwrap();
        let Command::Device(DeviceCommand::UpdateAgent(a)) = cli.command else { panic!("wrong command") };
        assert_eq!(a.binary, PathBuf::from("build/wendy-agent"));
        assert!(a.json.json && a.device.device.as_deref() == Some("h:1"));
        assert_eq!(parse(&["device", "update-agent"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn apps_commands_parse() {
        let cli = parse(&["apps", "rm", "hello", "--keep-image", "--volumes", "--device", "h:1", "--json"]).unwrap();
        let Command::Apps(AppsCommand::Rm(a)) = cli.command else { panic!("wrong command") };
        assert_eq!(a.app.app, "hello");
        assert!(a.keep_image && a.volumes && a.app.json.json);
        assert_eq!(a.app.device.device.as_deref(), Some("h:1"));
        let cli = parse(&["apps", "logs", "hello", "-f"]).unwrap();
        let Command::Apps(AppsCommand::Logs(a)) = cli.command else { panic!("wrong command") };
        assert!(a.follow);
        assert!(parse(&["apps", "list", "--json"]).is_ok());
        assert_eq!(parse(&["apps", "stop"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["apps", "logs", "x", "--json"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn run_parses() {
        let cli = parse(&["run"]).unwrap();
        let Command::Run(a) = cli.command else { panic!("wrong command") };
        assert_eq!(a.dir, std::path::PathBuf::from("."));
        assert_eq!(a.restart, crate::run::Restart::UnlessStopped);
        assert!(!a.detach && !a.json.json && a.image.is_none());
        let cli = parse(&[
            "run",
            "app",
            "--image",
            "oci-archive:x.tar",
            "--name",
            "hello",
            "--restart",
            "on-failure:2",
            "-d",
            "--json",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else { panic!("wrong command") };
        assert_eq!(a.restart, crate::run::Restart::OnFailure(2));
        assert_eq!(a.image.as_deref(), Some("oci-archive:x.tar"));
        assert!(a.detach && a.json.json);
        assert_eq!(parse(&["run", "--restart", "always"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("0.5").unwrap(), Duration::from_millis(500));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("nan").is_err());
        assert!(parse_seconds("1e9").is_err());
    }
}
