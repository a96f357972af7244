//! The restart supervisor: every [`INTERVAL`] it reads every app back from
//! [`Runtime::list`](crate::containers::runtime::Runtime::list) and applies
//! its [`RestartPolicy`] (a container label, so it survives an agent
//! restart and a reboot):
//!
//! | policy | an exited task | no task, at agent start |
//! |---|---|---|
//! | `no` | left as it is | left stopped |
//! | `unless-stopped` | restarted (a non-zero exit counts as a failure) | started |
//! | `on-failure:N` | restarted after a non-zero exit, while `failure_count` < N (N = 0: without limit) | started |
//!
//! An app stopped on purpose (`StopContainer`, or created and not yet
//! started) is never touched. `failure_count` ([`LABEL_FAILURES`]) counts
//! restarts after a non-zero exit (a kill is one: 128 + signal); it starts
//! at 0 when the app is created.
//!
//! "No task" means containerd has none: after a reboot, or when a task was
//! deleted while the agent was down. Those apps are started in the first
//! pass only, when the agent starts (it is the first thing the supervisor
//! does), so a start that fails is not retried every interval; a task that
//! exits is seen in every pass. Polling (rather than `Tasks/Wait` per app)
//! keeps one loop for every case, and a restart waits at most [`INTERVAL`].
//!
//! The supervisor takes the app's lock ([`super::AppLocks`]) before it
//! acts, and skips the app this round if a call holds it; it reads the
//! app's state again under the lock.
//!
//! [`LABEL_FAILURES`]: crate::containers::runtime::LABEL_FAILURES

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::containers::runtime::{AppState, AppStatus, RestartPolicy};

use super::Apps;

/// How often the supervisor looks at the apps.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// What the supervisor does with an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Leave it.
    Nothing,
    /// Start it (no failure counted).
    Start,
    /// Start it again after a failed exit, counting one more failure.
    RestartAfterFailure,
}

/// The action for `app`; `first` in the pass at agent start.
pub fn decide(app: &AppStatus, first: bool) -> Action {
    if app.stopped_on_purpose {
        return Action::Nothing;
    }
    match (app.state, app.restart) {
        (_, RestartPolicy::No) => Action::Nothing,
        (AppState::Exited { code }, RestartPolicy::UnlessStopped) => {
            if code == 0 {
                Action::Start
            } else {
                Action::RestartAfterFailure
            }
        }
        (AppState::Exited { code }, RestartPolicy::OnFailure { max_retries })
            if code != 0 && (max_retries == 0 || app.failures < max_retries) =>
        {
            Action::RestartAfterFailure
        }
        (AppState::Stopped, RestartPolicy::UnlessStopped | RestartPolicy::OnFailure { .. }) if first => Action::Start,
        _ => Action::Nothing,
    }
}

/// Runs the supervisor over `apps` until aborted.
pub async fn run(apps: Arc<Apps>) {
    let mut failing = HashSet::new();
    pass(&apps, true, &mut failing).await;
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        pass(&apps, false, &mut failing).await;
    }
}

/// One look at every app. `failing` holds the apps whose last restart
/// failed, so that is logged once, not every interval.
async fn pass(apps: &Apps, first: bool, failing: &mut HashSet<String>) {
    let list = match apps.runtime().list().await {
        Ok(l) => l,
        Err(e) => {
            if failing.insert(String::new()) {
                tracing::warn!(error = %e, "supervisor: listing the apps failed");
            }
            return;
        }
    };
    failing.remove("");
    failing.retain(|name| list.iter().any(|a| &a.name == name));
    for app in list {
        if decide(&app, first) == Action::Nothing {
            continue;
        }
        let Some(_guard) = apps.locks().try_lock(&app.name) else { continue };
        // Again under the lock: a call may have changed it meanwhile.
        let current = match apps.runtime().list().await {
            Ok(l) => l.into_iter().find(|a| a.name == app.name),
            Err(_) => None,
        };
        let Some(app) = current else { continue };
        let action = decide(&app, first);
        if action == Action::Nothing {
            continue;
        }
        match restart(apps, &app, action).await {
            Ok(()) => {
                failing.remove(&app.name);
            }
            Err(e) => {
                if failing.insert(app.name.clone()) {
                    tracing::warn!(app = %app.name, error = %e, "supervisor: the app could not be started");
                }
            }
        }
    }
}

async fn restart(apps: &Apps, app: &AppStatus, action: Action) -> Result<(), super::AppsError> {
    let rt = apps.runtime();
    let failures = if action == Action::RestartAfterFailure { app.failures.saturating_add(1) } else { app.failures };
    let exit = match app.state {
        AppState::Exited { code } => Some(code),
        _ => None,
    };
    let pid = rt.start(&app.name).await?;
    if failures != app.failures {
        rt.set_failures(&app.name, failures).await?;
    }
    tracing::info!(
        app = %app.name,
        ?exit,
        restart = %app.restart.label(),
        failure_count = failures,
        pid,
        "supervisor: app started by its restart policy"
    );
    Ok(())
}
