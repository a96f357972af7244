//! The setup every app test shares (`apps_service`, `cli_apps`): a private
//! containerd ([`crate::containerd`]) with the busybox image imported as
//! [`IMAGE`], the in-process fake pki-core, and an agent in its own network
//! namespace, provisioned on loopback and pointed at the containerd
//! (`WENDY_CONTAINERD_SOCKET`), with a Member and a Viewer identity from
//! the fake pki-core's CA. [`AppsLab::start`] returns once the agent
//! reports `containers` in its featureset.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use wendy_agent::containers::containerd::ContainerdStore;
use wendy_identity::role::Role;
use wendy_proto::agent::GetAgentVersionRequest;

use crate::agent::{agent_client, provisioning_client, AgentFixture};
use crate::containerd::{import_busybox, Containerd};
use crate::fake_pki::{FakePki, UserCert};
use crate::netns::Netns;

/// The image every app test runs (busybox, imported without a pull).
pub const IMAGE: &str = "wendy/busybox:v1";

/// The organization the fake pki-core provisions into.
pub const ORGANIZATION_ID: i32 = 1;

/// The lab device's asset id.
pub const ASSET_ID: i32 = 3;

/// The bound on every wait of the setup.
pub const STEP: Duration = Duration::from_secs(60);

/// containerd, fake pki-core and a provisioned agent; torn down on drop
/// (agent first, then containerd).
pub struct AppsLab {
    /// The agent (provisioned, serving mTLS).
    pub agent: AgentFixture,
    /// The fake pki-core that provisioned it.
    pub pki: FakePki,
    /// The agent's network namespace.
    pub ns: Arc<Netns>,
    /// The CA's certificate, PEM: what clients trust the agent with.
    pub ca_pem: String,
    /// A Member identity.
    pub member: UserCert,
    /// A Viewer identity.
    pub viewer: UserCert,
    /// The registry's view of containerd's store.
    pub store: ContainerdStore,
    /// containerd (dropped after the agent: fields drop in order).
    pub ctrd: Containerd,
    /// The agent's files.
    pub dir: tempfile::TempDir,
}

impl AppsLab {
    /// Starts containerd (or returns `None` after [`crate::skip`] says why
    /// this host cannot), imports [`IMAGE`], starts and provisions the
    /// agent, and waits until it has reached containerd.
    pub async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, &[]).await
    }

    /// [`AppsLab::start`] with extra environment for the agent.
    pub async fn start_with(test: &str, agent_env: &[(&str, &str)]) -> Option<Self> {
        let ctrd = Containerd::start(test)?;
        let store = ContainerdStore::connect(&ctrd.socket).await.expect("connect to containerd");
        let (repo, tag) = IMAGE.split_once(':').expect("IMAGE is repo:tag");
        import_busybox(&store, &ctrd.dir.path().join("image"), repo, tag).await;

        let dir = tempfile::tempdir().expect("tempdir");
        let ns = Arc::new(Netns::new());
        let pki = FakePki::start(ns.bind("127.0.0.1:0".parse().expect("addr")), time::Duration::hours(1));
        pki.add_token("tok-apps");
        let mut agent = AgentFixture::new(dir.path(), ns.clone());
        agent.env.push(("WENDY_CONTAINERD_SOCKET".into(), ctrd.socket.display().to_string()));
        agent.start(agent_env);
        let plain = agent.plaintext().await.expect("plaintext channel");
        provisioning_client(plain)
            .start_provisioning(pki.provisioning_request("tok-apps", ASSET_ID))
            .await
            .expect("provision");
        let ca_pem = pki.ca().ca.certificate_pem();
        let member = pki.ca().user(Role::Member);
        let viewer = pki.ca().user(Role::Viewer);
        let lab = Self { agent, pki, ns, ca_pem, member, viewer, store, ctrd, dir };
        let ch = lab.viewer_channel().await;
        lab.wait_for_containers(&ch).await;
        Some(lab)
    }

    /// The device certificate's common name (what a TLS client checks).
    pub fn device_cn(&self) -> String {
        wendy_identity::profile::device_common_name(ORGANIZATION_ID, ASSET_ID)
    }

    /// The agent's OCI registry (the default port, in its namespace).
    pub fn registry_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.agent.mtls_addr().ip(), wendy_proto::contract::DEFAULT_REGISTRY_PORT)
    }

    /// A new mTLS channel to the agent as the Member.
    pub async fn member_channel(&self) -> Channel {
        self.agent.mtls(&self.member.credentials, &self.ca_pem).await.expect("mTLS as Member")
    }

    /// A new mTLS channel to the agent as the Viewer.
    pub async fn viewer_channel(&self) -> Channel {
        self.agent.mtls(&self.viewer.credentials, &self.ca_pem).await.expect("mTLS as Viewer")
    }

    /// Waits until `GetAgentVersion.featureset` lists `containers`.
    pub async fn wait_for_containers(&self, ch: &Channel) {
        let deadline = Instant::now() + STEP;
        loop {
            let v = agent_client(ch.clone()).get_agent_version(GetAgentVersionRequest {}).await.unwrap().into_inner();
            if v.featureset.iter().any(|f| f == wendy_agent::container_service::FEATURE) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no `containers` in {:?}; log:\n{}",
                v.featureset,
                self.agent.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Writes a `wendy` CLI login for `user` into the config directory
    /// `dir` (`$XDG_CONFIG_HOME/wendy`): its key and certificate, the CA
    /// bundle, and `config.json` pinning the CA (no pki-core is dialled by
    /// the app commands).
    pub fn write_cli_login(&self, user: &UserCert, dir: &std::path::Path) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join("key.pem"), &user.key_pem).expect("key");
        std::fs::write(dir.join("cert.pem"), &user.cert_pem).expect("cert");
        std::fs::write(dir.join("ca.pem"), &self.ca_pem).expect("ca");
        let config = serde_json::json!({
            "cloud_host": self.pki.addr.to_string(),
            "ca_fingerprint": self.pki.fingerprint().to_string(),
            "organization_id": 1,
        });
        std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    }
}
