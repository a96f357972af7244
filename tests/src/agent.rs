//! Running `wendy-agent` in a test namespace and talking to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tonic::transport::{Channel, Endpoint, Uri};
use wendy_identity::bundle::TrustBundle;
use wendy_identity::tls::{BundleServerVerifier, Credentials};
use wendy_proto::agent::wendy_agent_service_client::WendyAgentServiceClient;
use wendy_proto::agent::wendy_provisioning_service_client::WendyProvisioningServiceClient;

use crate::netns::Netns;
use crate::notify::NotifySocket;

/// How long the agent may take to send `READY=1`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One agent's files and process.
pub struct AgentFixture {
    /// `WENDY_CONFIG_PATH`.
    pub config_dir: PathBuf,
    /// `WENDY_AVAHI_SERVICES_DIR`.
    pub avahi_dir: PathBuf,
    /// `WENDY_CONFIG_PARTITION_DIR`.
    pub seed_dir: PathBuf,
    /// stderr of every run, appended.
    pub log: PathBuf,
    /// Plaintext port (mTLS = +1).
    pub port: u16,
    /// Extra environment for every start.
    pub env: Vec<(String, String)>,
    notify: NotifySocket,
    child: Option<Child>,
    ns: Arc<Netns>,
}

impl AgentFixture {
    /// Files under `root`, the agent run inside `ns` on the default port.
    pub fn new(root: &Path, ns: Arc<Netns>) -> Self {
        let d = |n: &str| {
            let p = root.join(n);
            std::fs::create_dir_all(&p).expect("mkdir");
            p
        };
        std::fs::write(root.join("version.txt"), "9.9.9-test\n").expect("write");
        std::fs::write(root.join("device-type"), "qemu-test\n").expect("write");
        Self {
            config_dir: root.join("config"),
            avahi_dir: d("avahi"),
            seed_dir: d("seed"),
            log: root.join("agent.log"),
            port: wendy_proto::contract::DEFAULT_AGENT_PORT,
            env: vec![
                ("WENDY_OS_VERSION_FILE".into(), root.join("version.txt").display().to_string()),
                ("WENDY_DEVICE_TYPE_FILE".into(), root.join("device-type").display().to_string()),
                ("RUST_LOG".into(), "info".into()),
                // Never the host's system bus; tests with an AvahiLab push theirs.
                ("DBUS_SYSTEM_BUS_ADDRESS".into(), format!("unix:path={}", root.join("no-bus.sock").display())),
            ],
            notify: NotifySocket::bind(root),
            child: None,
            ns,
        }
    }

    /// The plaintext address (inside the namespace).
    pub fn plaintext_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The mTLS address (inside the namespace).
    pub fn mtls_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], wendy_proto::contract::mtls_port(self.port)))
    }

    /// The namespace.
    pub fn ns(&self) -> &Arc<Netns> {
        &self.ns
    }

    /// Starts the agent with `extra` environment; does not wait.
    pub fn spawn(&mut self, extra: &[(&str, &str)]) {
        assert!(self.child.is_none(), "agent already running");
        self.notify.clear();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let mut cmd: Command = self.ns.command(crate::bins::require("wendy-agent"));
        cmd.env(wendy_proto::contract::AGENT_PORT_ENV, self.port.to_string())
            .env("WENDY_CONFIG_PATH", &self.config_dir)
            .env("WENDY_AVAHI_SERVICES_DIR", &self.avahi_dir)
            .env("WENDY_CONFIG_PARTITION_DIR", &self.seed_dir)
            .env("NOTIFY_SOCKET", self.notify.path())
            .env_remove("JOURNAL_STREAM")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn wendy-agent"));
    }

    /// Starts the agent and waits for `READY=1`; panics with the log if it
    /// does not come.
    pub fn start(&mut self, extra: &[(&str, &str)]) {
        self.spawn(extra);
        if !self.notify.wait_for("READY=1", READY_TIMEOUT) {
            panic!("wendy-agent sent no READY=1 within {READY_TIMEOUT:?}; log:\n{}", self.log_text());
        }
    }

    /// Waits until the agent exits by itself (e.g. at a crash point).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            } else {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and reap (graceful stop).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) of our own child.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        c.wait().ok()
    }

    /// The agent's pid (`ip netns exec` execs it, so it is the child's).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Everything the agent logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A plaintext channel to the agent.
    pub async fn plaintext(&self) -> Result<Channel, tonic::transport::Error> {
        plaintext_channel(self.ns.clone(), self.plaintext_addr()).await
    }

    /// An mTLS channel presenting `client`, trusting `ca_pem` for the agent.
    pub async fn mtls(&self, client: &Credentials, ca_pem: &str) -> Result<Channel, tonic::transport::Error> {
        mtls_channel(self.ns.clone(), self.mtls_addr(), client, ca_pem).await
    }
}

impl Drop for AgentFixture {
    fn drop(&mut self) {
        self.kill();
    }
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
}

/// A plaintext gRPC channel to `addr` inside `ns`.
pub async fn plaintext_channel(ns: Arc<Netns>, addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    endpoint(addr)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let ns = ns.clone();
            async move { ns.connect(addr).await.map(TokioIo::new) }
        }))
        .await
}

/// The TLS client config a CLI would use: present `client`, check the
/// device against `ca_pem`.
pub fn client_tls(client: &Credentials, ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let bundle = TrustBundle::from_pem(ca_pem).expect("CA bundle");
    Arc::new(
        wendy_identity::tls::client_config(Arc::new(BundleServerVerifier::new(bundle)), Some(client))
            .expect("client config"),
    )
}

/// An mTLS gRPC channel to `addr` inside `ns`.
pub async fn mtls_channel(
    ns: Arc<Netns>,
    addr: SocketAddr,
    client: &Credentials,
    ca_pem: &str,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tokio_rustls::TlsConnector::from(client_tls(client, ca_pem));
    endpoint(addr)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (ns, connector) = (ns.clone(), connector.clone());
            async move {
                let tcp = ns.connect(addr).await?;
                let tls = connector.connect(ServerName::try_from("wendy-device").expect("name"), tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
}

/// The agent service client.
pub fn agent_client(ch: Channel) -> WendyAgentServiceClient<Channel> {
    WendyAgentServiceClient::new(ch)
}

/// The provisioning service client.
pub fn provisioning_client(ch: Channel) -> WendyProvisioningServiceClient<Channel> {
    WendyProvisioningServiceClient::new(ch)
}

/// The device administration client (our own `Unprovision`).
pub fn admin_client(
    ch: Channel,
) -> wendy_proto::agent_admin::device_admin_service_client::DeviceAdminServiceClient<Channel> {
    wendy_proto::agent_admin::device_admin_service_client::DeviceAdminServiceClient::new(ch)
}

/// An error and its sources as one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
