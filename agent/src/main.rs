//! `wendy-agent`: see the library docs. No arguments are needed; every
//! setting comes from the environment (see `wendy_agent::config`).

use std::process::ExitCode;

use wendy_agent::agent_update::RESTART_EXIT_CODE;
use wendy_agent::config::Config;
use wendy_agent::daemon::Daemon;
use wendy_agent::systemd;

const USAGE: &str = "usage: wendy-agent [--version | --help]

--version prints the version and the optional features compiled in.

Settings come from the environment:
  WENDY_AGENT_PORT            plaintext port (default 50051; mTLS = port + 1)
  WENDY_CONFIG_PATH           state directory (default /etc/wendy-agent)
  WENDY_AVAHI_SERVICES_DIR    Avahi service directory (default /etc/avahi/services)
  WENDY_CONFIG_PARTITION_DIR  first-boot seed (default /boot/config)
  WENDY_CRL_REFRESH_SECS      CRL refresh period (default 300)
  WENDY_DEVELOPMENT_MARKER    development-image marker (default /etc/wendyos/development)
  RUST_LOG                    log filter (default info)";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("--version" | "-V") => {
            let features = match wendy_agent::CARGO_FEATURES {
                [] => "none".to_owned(),
                list => list.join(" "),
            };
            println!("wendy-agent {}\nfeatures: {features}", wendy_agent::VERSION);
            return ExitCode::SUCCESS;
        }
        Some("--help" | "-h") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("wendy-agent: unknown argument {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    systemd::init_logging();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "bad configuration");
            return ExitCode::from(2);
        }
    };
    // Before anything else runs: on a development image, an agent
    // installed by UpdateAgent takes over this process (it returns only
    // when there is none or it must not run).
    wendy_agent::agent_update::replacement::exec_if_installed(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wendy-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    // Handlers first: a SIGTERM while starting must not kill the process
    // with the default action.
    let signals = Signals::install();
    tracing::info!(version = wendy_agent::VERSION, port = config.port, dir = %config.config_dir.display(), "wendy-agent starting");
    let daemon = match Daemon::start(config).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "could not start");
            return ExitCode::FAILURE;
        }
    };
    systemd::notify_ready();
    wendy_agent::agent_update::replacement::confirm_started(daemon.config());
    // After READY: marks the booted A/B slot good once the agent is healthy.
    #[cfg(feature = "rauc")]
    tokio::spawn(wendy_agent::rauc::health_gate(std::sync::Arc::downgrade(&daemon)));
    systemd::spawn_heap_trim(systemd::HEAP_TRIM_INTERVAL);
    let watched = std::sync::Arc::downgrade(&daemon);
    systemd::spawn_watchdog(move || watched.upgrade().is_some_and(|d| d.is_serving()));
    let updater = daemon.agent_updater().clone();
    let exit = tokio::select! {
        _ = signals.wait() => ExitCode::SUCCESS,
        _ = updater.restart_requested() => {
            tracing::info!(status = RESTART_EXIT_CODE, "leaving so that systemd starts the updated agent");
            ExitCode::from(RESTART_EXIT_CODE)
        }
    };
    tracing::info!("stopping");
    systemd::notify_stopping();
    daemon.withdraw();
    // Waits for the drain (bounded by SHUTDOWN_GRACE + DRAIN_TIMEOUT) before
    // the runtime is dropped.
    daemon.stop().await;
    tracing::info!("stopped");
    exit
}

/// SIGTERM and SIGINT, installed once.
struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => Self(Some((term, int))),
            _ => Self(None),
        }
    }

    async fn wait(self) {
        match self.0 {
            Some((mut term, mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => std::future::pending::<()>().await,
        }
    }
}
