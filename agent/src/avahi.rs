//! The mDNS advertisement.
//!
//! The advertisement is the image's template
//! (`image/rootfs/usr/share/wendy-agent/wendyos-mdns.service.in`, see
//! decision 0001) rendered with the device's id, name and the port that is
//! *already listening*, written atomically into
//! `$WENDY_AVAHI_SERVICES_DIR/wendyos-mdns.service`. avahi-daemon reloads
//! that directory by itself (inotify); the agent then confirms over D-Bus
//! that the service resolves with exactly the port and TXT records written.
//!
//! If the system bus or avahi-daemon is missing, the agent warns and keeps
//! working; it watches `NameOwnerChanged` and confirms again once
//! avahi-daemon appears.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use wendy_proto::contract::{MDNS_SERVICE_TYPE, TXT_DISPLAYNAME, TXT_ID, TXT_NAME, TXT_TLS};

use crate::{dbus, Error};

/// The template, embedded at compile time.
pub const TEMPLATE: &str = include_str!("../../image/rootfs/usr/share/wendy-agent/wendyos-mdns.service.in");

/// File name inside the services directory.
pub const SERVICE_FILE: &str = "wendyos-mdns.service";

/// How long to wait for avahi-daemon to publish what was written.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// What is advertised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertisement {
    /// Stable device id (TXT `id`).
    pub id: String,
    /// Device name (TXT `name`).
    pub name: String,
    /// Display name (TXT `displayname`, and the instance name).
    pub display_name: String,
    /// The listening port.
    pub port: u16,
    /// Whether `port` is the mTLS port (TXT `tls=true`).
    pub tls: bool,
}

impl Advertisement {
    /// Renders the service file.
    pub fn render(&self) -> String {
        let tls = if self.tls { format!("<txt-record>{TXT_TLS}=true</txt-record>") } else { String::new() };
        strip_comments(TEMPLATE)
            .replace("@DISPLAYNAME@", &xml_escape(&self.display_name))
            .replace("@PORT@", &self.port.to_string())
            .replace("@ID@", &xml_escape(&self.id))
            .replace("@NAME@", &xml_escape(&self.name))
            .replace("@TLS_RECORD@", &tls)
    }

    /// The TXT records avahi should publish, as `key=value` strings.
    pub fn txt(&self) -> Vec<String> {
        let mut txt = vec![
            format!("{TXT_ID}={}", self.id),
            format!("{TXT_NAME}={}", self.name),
            format!("{TXT_DISPLAYNAME}={}", self.display_name),
        ];
        if self.tls {
            txt.push(format!("{TXT_TLS}=true"));
        }
        txt
    }
}

/// The template without its `<!-- -->` comments (they mention the
/// placeholders and are no use on the device).
fn strip_comments(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        match rest[start..].find("-->") {
            Some(end) => rest = rest[start + end + 3..].trim_start_matches('\n'),
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes the five XML special characters and drops control characters.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Keeps the service file and avahi-daemon in step with the agent.
#[derive(Clone)]
pub struct Advertiser {
    path: PathBuf,
    current: Arc<Mutex<Option<Advertisement>>>,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Advertiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertiser").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Advertiser {
    /// An advertiser writing into `services_dir`; starts the D-Bus watcher.
    pub fn start(services_dir: &Path) -> Self {
        let (changed, rx) = watch::channel(0);
        let me = Self { path: services_dir.join(SERVICE_FILE), current: Arc::new(Mutex::new(None)), changed };
        tokio::spawn(confirm_loop(me.current.clone(), rx));
        me
    }

    /// Writes `ad` (its port must already be listening) and asks the
    /// watcher to confirm it.
    pub fn publish(&self, ad: Advertisement) -> Result<(), Error> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        }
        crate::state::write_atomic(&self.path, ad.render().as_bytes(), 0o644, false)?;
        tracing::info!(port = ad.port, tls = ad.tls, file = %self.path.display(), "advertisement written");
        if let Ok(mut guard) = self.current.lock() {
            *guard = Some(ad);
        }
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Removes the service file (the agent stops).
    pub fn withdraw(&self) {
        if std::fs::remove_file(&self.path).is_ok() {
            tracing::info!(file = %self.path.display(), "advertisement withdrawn");
        }
    }
}

/// Connects to the system bus, confirms each new advertisement, and
/// reconfirms whenever avahi-daemon (re)appears.
async fn confirm_loop(current: Arc<Mutex<Option<Advertisement>>>, mut changed: watch::Receiver<u64>) {
    let mut warned = false;
    loop {
        let conn = match zbus::Connection::system().await {
            Ok(c) => c,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "system D-Bus unavailable: the service file is written, but publication cannot be confirmed; retrying");
                    warned = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    r = changed.changed() => if r.is_err() { return },
                }
                continue;
            }
        };
        warned = false;
        if let Err(e) = watch_bus(&conn, &current, &mut changed).await {
            tracing::warn!(error = %e, "lost the system D-Bus; reconnecting");
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else {
            return;
        }
    }
}

async fn watch_bus(
    conn: &zbus::Connection,
    current: &Arc<Mutex<Option<Advertisement>>>,
    changed: &mut watch::Receiver<u64>,
) -> zbus::Result<()> {
    let bus = zbus::fdo::DBusProxy::new(conn).await?;
    let mut owners = bus.receive_name_owner_changed().await?;
    let avahi = dbus::AvahiServerProxy::new(conn).await?;
    let mut avahi_up = report_avahi(&avahi).await;
    let mut pending = true;
    loop {
        if pending && avahi_up {
            let ad = current.lock().ok().and_then(|g| g.clone());
            if let Some(ad) = ad {
                match confirm(&avahi, &ad).await {
                    Ok(()) => tracing::info!(port = ad.port, tls = ad.tls, "avahi-daemon publishes the advertisement"),
                    Err(e) => tracing::warn!(error = %e, "avahi-daemon did not confirm the advertisement"),
                }
            }
            pending = false;
        }
        tokio::select! {
            r = changed.changed() => {
                if r.is_err() { return Ok(()) }
                pending = true;
            }
            signal = owners.next() => {
                let Some(signal) = signal else { return Err(zbus::Error::Failure("bus closed".into())) };
                let Ok(args) = signal.args() else { continue };
                if args.name().as_str() != dbus::AVAHI_BUS_NAME { continue }
                if args.new_owner().is_some() {
                    tracing::info!("avahi-daemon appeared on the bus");
                    // Give it a moment to load the services directory.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    avahi_up = report_avahi(&avahi).await;
                    pending = true;
                } else {
                    tracing::warn!("avahi-daemon left the bus; the device is not advertised until it returns");
                    avahi_up = false;
                }
            }
        }
    }
}

async fn report_avahi(avahi: &dbus::AvahiServerProxy<'_>) -> bool {
    match avahi.get_version_string().await {
        Ok(v) => {
            let state = avahi.get_state().await.unwrap_or(-1);
            tracing::info!(version = %v, state, "avahi-daemon is running");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "avahi-daemon is not available; the device is not advertised until it starts");
            false
        }
    }
}

/// Polls `ResolveService` until avahi-daemon publishes `ad` exactly
/// (port and TXT), or [`CONFIRM_TIMEOUT`] passes.
async fn confirm(avahi: &dbus::AvahiServerProxy<'_>, ad: &Advertisement) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
    let mut want_txt = ad.txt();
    want_txt.sort();
    let mut last = String::from("not resolved yet");
    while tokio::time::Instant::now() < deadline {
        match avahi.get_state().await {
            Ok(dbus::SERVER_RUNNING) => {}
            Ok(s) => {
                last = format!("avahi-daemon state {s} (not running yet)");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(e) => return Err(e.to_string()),
        }
        let resolved = avahi
            .resolve_service(dbus::UNSPEC, dbus::UNSPEC, &ad.display_name, MDNS_SERVICE_TYPE, "local", dbus::UNSPEC, 0)
            .await;
        match resolved {
            Ok((_, _, _, _, _, _, _, _, port, txt, _)) => {
                let mut got: Vec<String> = txt.iter().map(|t| String::from_utf8_lossy(t).into_owned()).collect();
                got.sort();
                if port == ad.port && got == want_txt {
                    return Ok(());
                }
                last = format!("resolved port {port} txt {got:?}, want port {} txt {want_txt:?}", ad.port);
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_escaped_values_and_tls() {
        let ad = Advertisement {
            id: "abc".into(),
            name: "n<&>".into(),
            display_name: "Dev's \"x\"".into(),
            port: 50052,
            tls: true,
        };
        let xml = ad.render();
        assert!(xml.contains("<port>50052</port>"));
        assert!(xml.contains("<txt-record>name=n&lt;&amp;&gt;</txt-record>"));
        assert!(xml.contains("Dev&apos;s &quot;x&quot;"));
        assert!(xml.contains("<txt-record>tls=true</txt-record>"));
        assert!(!xml.contains('@'), "unrendered placeholder in {xml}");
        let plain = Advertisement { tls: false, port: 50051, ..ad };
        assert!(!plain.render().contains("tls=true"));
    }
}
