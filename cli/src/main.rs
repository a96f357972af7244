//! `wendy`: the WendyOS developer CLI.
//!
//! Logs in against a local pki-core (`wendy auth`), finds devices on mDNS
//! (`wendy discover`), provisions them and talks to them over
//! post-quantum mTLS (`wendy device`), updates their OS (`wendy os`),
//! runs apps on them (`wendy run`) and manages them (`wendy apps`). Exit codes are in [`error::Exit`]
//! and `cli/README.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod addr;
mod agent_update;
mod apps;
mod auth;
mod cli;
mod cloud;
mod config;
mod connect;
mod device;
mod discover;
mod error;
mod image;
mod oci_layout;
mod os;
mod push;
mod run;

use std::io::Write;

use clap::{CommandFactory, Parser};

use crate::cli::{AppsCommand, AuthCommand, Cli, Command, DeviceCommand, OsCommand};
use crate::config::Store;
use crate::error::{CliError, Exit};

/// Prints a report as JSON or as text.
fn emit<T: serde::Serialize + std::fmt::Display>(json: bool, report: &T) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let r = if json {
        serde_json::to_writer_pretty(&mut out, report).map_err(std::io::Error::other).and_then(|()| writeln!(out))
    } else {
        writeln!(out, "{report}")
    };
    match r {
        // A closed pipe (`wendy discover | head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| CliError::io("writing output", e)),
    }
}

async fn run(cli: Cli) -> Result<Exit, CliError> {
    let store = || Store::from_env();
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "wendy", &mut std::io::stdout());
        }
        Command::Discover(a) => {
            let found = discover::browse_async(a.timeout, |_| false).await?;
            if found.is_empty() && !a.json.json {
                eprintln!("no WendyOS devices found on mDNS within {:.1}s", a.timeout.as_secs_f64());
                return Ok(Exit::Ok);
            }
            emit(a.json.json, &discover::DiscoverReport(found))?;
        }
        Command::Auth(AuthCommand::LoginLocal(a)) => {
            let opts = auth::LoginOptions {
                cloud: a.cloud,
                api_key: a.api_key.api_key,
                ca_fingerprint: a.ca_fingerprint,
                role: a.role,
                organization_id: a.organization_id,
            };
            let status = auth::login_local(&store()?, opts).await?;
            if !a.json.json {
                println!("logged in to pki-core at {}", status.cloud_host);
            }
            emit(a.json.json, &status)?;
        }
        Command::Auth(AuthCommand::Status(j)) => {
            let status = auth::status(&store()?)?;
            let expired = status.expired;
            emit(j.json, &status)?;
            if expired {
                return Ok(Exit::Auth);
            }
        }
        Command::Auth(AuthCommand::Refresh(j)) => emit(j.json, &auth::refresh(&store()?).await?)?,
        Command::Auth(AuthCommand::Logout(j)) => emit(j.json, &auth::logout(&store()?)?)?,
        Command::Device(cmd) => {
            let store = store()?;
            match cmd {
                DeviceCommand::Provision(a) => {
                    let target = device::resolve(&store, a.device.device.as_deref(), a.device.timeout).await?;
                    let opts = device::ProvisionOptions {
                        cloud: a.cloud,
                        cli_cloud: a.cli_cloud,
                        api_key: a.api_key.api_key,
                        name: a.name,
                        organization_id: a.organization_id,
                        wait: a.wait,
                    };
                    emit(a.json.json, &device::provision(&store, &target, opts).await?)?;
                }
                DeviceCommand::Version(a) => {
                    let target = device::resolve(&store, a.device.device.as_deref(), a.device.timeout).await?;
                    emit(a.json.json, &device::version(&store, &target).await?)?;
                }
                DeviceCommand::Info(a) => {
                    let target = device::resolve(&store, a.device.device.as_deref(), a.device.timeout).await?;
                    emit(a.json.json, &device::info(&store, &target).await?)?;
                }
                DeviceCommand::Unenroll(a) => {
                    let target = device::resolve(&store, a.device.device.as_deref(), a.device.timeout).await?;
                    emit(a.json.json, &device::unenroll(&store, &target).await?)?;
                }
                DeviceCommand::Reboot(a) => {
                    let target = device::resolve(&store, a.device.device.as_deref(), a.device.timeout).await?;
                    emit(a.json.json, &os::reboot(&store, &target).await?)?;
                }
                DeviceCommand::UpdateAgent(a) => {
                    let target = device::resolve(&store, a.device.device.as_deref(), a.device.timeout).await?;
                    emit(a.json.json, &agent_update::update(&store, &target, &a.binary, !a.json.json).await?)?;
                }
            }
        }
        Command::Apps(cmd) => {
            let store = store()?;
            match cmd {
                AppsCommand::List(a) => {
                    let target = device::resolve(&store, a.device.device.as_deref(), a.device.timeout).await?;
                    emit(a.json.json, &apps::list(&store, &target).await?)?;
                }
                AppsCommand::Logs(a) => {
                    let target = device::resolve(&store, a.device.device.as_deref(), a.device.timeout).await?;
                    apps::logs(&store, &target, &a.app, a.follow).await?;
                }
                AppsCommand::Attach(a) => {
                    let target = device::resolve(&store, a.device.device.as_deref(), a.device.timeout).await?;
                    apps::attach(&store, &target, &a.app).await?;
                }
                AppsCommand::Stop(a) => {
                    let target = device::resolve(&store, a.device.device.as_deref(), a.device.timeout).await?;
                    emit(a.json.json, &apps::stop(&store, &target, &a.app, !a.json.json).await?)?;
                }
                AppsCommand::Rm(a) => {
                    let target = device::resolve(&store, a.app.device.device.as_deref(), a.app.device.timeout).await?;
                    let opts = apps::RemoveOptions {
                        keep_image: a.keep_image,
                        volumes: a.volumes,
                        progress: !a.app.json.json,
                    };
                    emit(a.app.json.json, &apps::remove(&store, &target, &a.app.app, opts).await?)?;
                }
            }
        }
        Command::Run(a) => {
            let store = store()?;
            let target = device::resolve(&store, a.device.device.as_deref(), a.device.timeout).await?;
            let opts = run::RunOptions {
                dir: a.dir,
                image: a.image,
                name: a.name,
                restart: a.restart,
                detach: a.detach || a.json.json,
                json: a.json.json,
            };
            if let Some(report) = run::run(&store, &target, opts).await? {
                emit(a.json.json, &report)?;
            }
        }
        Command::Os(cmd) => {
            let store = store()?;
            match cmd {
                OsCommand::Update(a) => {
                    let target = device::resolve(&store, a.device.device.as_deref(), a.device.timeout).await?;
                    let opts = os::UpdateOptions {
                        source: os::Source::parse(&a.bundle),
                        no_reboot: a.no_reboot,
                        wait: a.wait,
                        progress: !a.json.json,
                    };
                    emit(a.json.json, &os::update(&store, &target, opts).await?)?;
                }
                OsCommand::Status(a) => {
                    let target = device::resolve(&store, a.device.device.as_deref(), a.device.timeout).await?;
                    emit(a.json.json, &os::status(&store, &target).await?)?;
                }
            }
        }
    }
    Ok(Exit::Ok)
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { Exit::Usage.into() } else { Exit::Ok.into() };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Generic.into();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("error: {e}");
            e.exit().into()
        }
    }
}
